#!/usr/bin/env python3
"""Run `payperplay-sim run` and the SimPy model (model.py) on the same scenario and seed,
in this process, and print their timings, a few outcomes side by side and our speed as
a ratio. Called by compare.sh (which builds and sets up the venv).

Our run takes about a second and the SimPy model's about forty, and a shared machine's
speed drifts over minutes, so one run of ours could land in a fast or a slow spell that
the SimPy run averages out. Ours therefore runs `--repeat` times (default 5), half before
the SimPy model and half after, and its median time is the one compared. Every repeat
must write the same outcome.json, byte for byte (the simulator is deterministic).

Usage: compare.py SIM_BINARY SCENARIO.toml [--seed N] [--tolerance PCT] [--repeat N]
Exit status 1 when a compared outcome differs by more than the tolerance, 2 when the
repeats disagree.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(cmd, **kwargs):
    """Run cmd; return (completed process, wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.run(cmd, check=False, **kwargs)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, wall, cpu


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("scenario")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--tolerance", type=float, default=5.0, help="percent (default 5)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of ours; the median counts (default 5)")
    args = parser.parse_args()
    with open(args.scenario, "rb") as f:
        seed = args.seed if args.seed is not None else int(tomllib.load(f).get("seed", 1))

    repeat = max(1, args.repeat)
    runs = []  # (wall, cpu, outcome.json bytes)

    def run_ours():
        with tempfile.TemporaryDirectory() as out:
            proc, wall, cpu = timed(
                [args.binary, "run", args.scenario, "--seed", str(seed), "--quiet", "--out", out],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            if proc.returncode not in (0, 1):  # 1: an [expect] bound failed, still an outcome
                sys.stderr.write(proc.stderr)
                sys.exit(f"compare: payperplay-sim failed with status {proc.returncode}")
            with open(os.path.join(out, "outcome.json"), "rb") as f:
                runs.append((wall, cpu, f.read()))

    before = (repeat + 1) // 2
    for _ in range(before):
        run_ours()
    proc, simpy_wall, simpy_cpu = timed(
        [sys.executable, os.path.join(HERE, "model.py"), args.scenario, "--seed", str(seed)],
        stdout=subprocess.PIPE,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"compare: the SimPy model failed with status {proc.returncode}")
    simpy = json.loads(proc.stdout)
    for _ in range(repeat - before):
        run_ours()
    if any(outcome != runs[0][2] for _, _, outcome in runs):
        print("compare: repeated runs of payperplay-sim wrote different outcomes", file=sys.stderr)
        sys.exit(2)
    ours = json.loads(runs[0][2])
    walls = sorted(wall for wall, _, _ in runs)
    ours_wall = statistics.median(walls)
    ours_cpu = statistics.median(cpu for _, cpu, _ in runs)

    hours = ours["simulated_hours"]
    print(f"scenario {args.scenario}, seed {seed}, {hours:.0f} simulated hours\n")
    print(f"{'':34} {'payperplay-sim':>16} {'SimPy':>16} {'diff':>8}")
    rows = [
        ("sessions", ours["sessions"]["total"], simpy["sessions"], True),
        ("starts requested", ours["starts"]["requested"], simpy["starts_requested"], True),
        ("mean servers holding RAM", ours["servers"]["holding_ram_mean"], simpy["holding_ram_mean"], True),
        ("start wait mean (s)", ours["start_wait"]["mean_s"], simpy["start_wait_mean_s"], True),
        ("start wait p95 (s)", ours["start_wait"]["p95_s"], simpy["start_wait_p95_s"], False),
        ("capacity wait mean (s)", ours["capacity_wait"]["mean_s"], simpy["capacity_wait_mean_s"], False),
        ("queue length mean", ours["queue"]["length_mean"], simpy["queue_length_mean"], False),
        ("revenue RAM (EUR)", ours["revenue"]["ram_eur"], simpy["revenue_ram_eur"], True),
        ("revenue total (EUR)", ours["revenue"]["total_eur"], simpy["revenue_total_eur"], True),
    ]
    disagree = []
    for name, a, b, checked in rows:
        diff = 100.0 * (b - a) / a if a else 0.0
        mark = "" if checked else "  (not checked)"
        print(f"{name:34} {a:16.3f} {b:16.3f} {diff:+7.2f}%{mark}")
        if checked and abs(diff) > args.tolerance:
            disagree.append(name)
    print()
    print(f"{'simulated events':34} {ours['sim']['events']:16d} {simpy['events']:16d}")
    print(f"{'wall time (s)':34} {ours_wall:16.3f} {simpy_wall:16.3f}")
    if len(walls) > 1:
        print(f"ours: the median of {len(walls)} runs ({', '.join(f'{w:.3f}' for w in walls)} s)")
    print(f"{'CPU time (s)':34} {ours_cpu:16.3f} {simpy_cpu:16.3f}")
    print(f"{'simulated hours per wall second':34} {hours / ours_wall:16.1f} {simpy['simulated_hours'] / simpy_wall:16.1f}")
    print(f"{'events per CPU second':34} {ours['sim']['events'] / ours_cpu:16.0f} {simpy['events'] / simpy_cpu:16.0f}")
    ratio_wall = (hours / ours_wall) / (simpy["simulated_hours"] / simpy_wall)
    ratio_cpu = (hours / ours_cpu) / (simpy["simulated_hours"] / simpy_cpu)
    print()
    print(f"speed ratio: {ratio_wall:.0f} x (simulated time per wall second, ours / SimPy)")
    print(f"speed ratio (CPU time): {ratio_cpu:.0f} x")
    if disagree:
        print(f"\nthe models disagree by more than {args.tolerance}% on: {', '.join(disagree)}")
        sys.exit(1)
    print(f"\nthe models agree within {args.tolerance}% on the checked outcomes")


if __name__ == "__main__":
    main()
