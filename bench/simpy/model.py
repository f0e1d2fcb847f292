#!/usr/bin/env python3
"""A SimPy model of a PayPerPlay scenario with a static dedicated fleet.

It reads the same scenario file as `payperplay-sim run` and models the same workload
and lifecycle as `sim/src/run.rs` driving `core/`, so the two can be timed side by
side (bench/simpy/compare.sh):

- sessions arrive as a non-homogeneous Poisson process (thinning against the peak of
  the daily x weekly profile); each picks one server uniformly; session lengths and
  player counts come from the scenario's distributions;
- a session on a server that is not running asks for a start: placed at once on the
  dedicated node with the most free RAM (spread) when nothing waits, otherwise queued
  FIFO for RAM with the core's backfill rule (smaller starts may overtake the head until
  it has waited `head_bypass_max`, then the head claims the emptiest node);
- a placed server holds its RAM through container start, Minecraft boot, running and
  the clean stop; sessions waiting for it join when it has booted;
- a server with no players for `idle_sleep_after` (and up for at least `min_run`) is
  stopped and sleeps; a start asked for while it stops is queued once it has stopped;
- billing: RAM per GiB-hour while held; world storage per GiB-month while stopped or
  sleeping after the first run (archive price after `archive_after` asleep).

Not modelled (the scenario must not need them): cloud VMs and autoscaling, balances
running out (give users a large balance), failures. Random numbers come from Python's
generator, not ChaCha, so outcomes agree statistically, not bit for bit.

Usage: model.py SCENARIO.toml [--seed N]  -> prints a JSON summary on stdout.
"""

import argparse
import json
import math
import random
import re
import sys
import time
import tomllib

import simpy

HOUR = 3600.0
DAY = 24 * HOUR
MONTH = 730 * HOUR
GIB = 1024

_UNITS = {
    "ns": 1e-9, "nsec": 1e-9, "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": DAY, "day": DAY, "days": DAY, "w": 7 * DAY, "week": 7 * DAY, "weeks": 7 * DAY,
    "M": 30.44 * DAY, "month": 30.44 * DAY, "months": 30.44 * DAY,
    "y": 365.25 * DAY, "year": 365.25 * DAY, "years": 365.25 * DAY,
}


def seconds(text):
    """A humantime duration ("7days", "10m", "1h 30m") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)", text)
    if not parts or re.sub(r"[\d.\sA-Za-z]", "", text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def sampler(spec, rng):
    """A function drawing from a scenario distribution table."""
    kind = spec["kind"]
    if kind == "const":
        value = float(spec["value"])
        return lambda: value
    if kind == "uniform":
        lo, hi = float(spec["min"]), float(spec["max"])
        return lambda: rng.uniform(lo, hi)
    if kind == "exponential":
        rate = 1.0 / float(spec["mean"])
        return lambda: rng.expovariate(rate)
    if kind == "weibull":
        scale, shape = float(spec["scale"]), float(spec["shape"])
        return lambda: rng.weibullvariate(scale, shape)
    if kind == "lognormal":
        mu, sigma = math.log(float(spec["median"])), float(spec["sigma"])
        return lambda: rng.lognormvariate(mu, sigma)
    if kind == "empirical":
        samples = [float(v) for v in spec["samples"]]
        return lambda: rng.choice(samples)
    raise ValueError(f"unknown distribution kind {kind!r}")


def days_from_civil(y, m, d):
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def reserve_mib(capacity, is_system, r):
    if capacity <= r["small_node_max_mib"]:
        base = r["small_fixed_mib"]
    elif capacity <= r["medium_node_max_mib"]:
        base = capacity * r["medium_pct"] // 100
    else:
        base = capacity * r["large_pct"] // 100
    return min(capacity, base + (r["system_extra_mib"] if is_system else 0))


class Node:
    __slots__ = ("index", "usable", "allocated")

    def __init__(self, index, usable):
        self.index, self.usable, self.allocated = index, usable, 0

    @property
    def free(self):
        return self.usable - self.allocated


class Server:
    __slots__ = (
        "ram", "state", "players", "waiting", "epoch", "node", "requested_at", "placed_at",
        "running_since", "idle_gen", "start_after_stop", "has_world", "resting_since",
    )

    def __init__(self, ram):
        self.ram = ram
        self.state = "stopped"
        self.players = 0
        self.waiting = []  # (players, session seconds) waiting for the server to run
        self.epoch = 0  # bumped when the server stops: older session ends are ignored
        self.node = None
        self.requested_at = self.placed_at = self.running_since = None
        self.idle_gen = 0  # bumped to cancel an armed idle timer
        self.start_after_stop = None
        self.has_world = False
        self.resting_since = None  # stopped or sleeping since (storage billing)


class Model:
    def __init__(self, scenario, seed):
        self.sc = scenario
        core = scenario.get("core", {})
        life = core.get("lifecycle", {})
        billing = core.get("billing", {})
        queue = core.get("queue", {})
        if core.get("policy", {}).get("reactive") is not None:
            sys.exit("model.py: the SimPy model has no autoscaling; use a static dedicated fleet")
        self.idle_after = seconds(life.get("idle_sleep_after", "10m"))
        self.min_run = seconds(life.get("min_run", "5m"))
        self.archive_after = seconds(life.get("archive_after", "30days"))
        self.ram_eur_gib_hour = float(billing.get("ram_eur_per_gb_hour", 0.01))
        self.storage_eur_gib_month = float(billing.get("storage_eur_per_gb_month", 0.05))
        self.archive_eur_gib_month = float(billing.get("archive_eur_per_gb_month", 0.01))
        self.world_gib = billing.get("world_size_mib", 1024) / GIB
        self.head_bypass = seconds(queue.get("head_bypass_max", "5m"))
        self.scan_max = int(queue.get("scan_max", 64))
        reserve = {
            "small_node_max_mib": 16 * 1024, "small_fixed_mib": 1024, "medium_node_max_mib": 64 * 1024,
            "medium_pct": 8, "large_pct": 5, "system_extra_mib": 2048,
        } | core.get("reserve", {})

        self.end = seconds(scenario["duration"])
        self.measure_from = seconds(scenario.get("warmup", "0s"))
        self.slo = seconds(scenario.get("slo_start_wait", "60s"))
        y, m, d = (int(p) for p in scenario.get("start_date", "2026-01-05").split("-"))
        self.start_day = days_from_civil(y, m, d)

        rngs = {name: random.Random(f"{seed}/{name}") for name in
                ("arrivals", "choice", "length", "players", "tiers", "timing")}
        self.rng_arrivals, self.rng_choice = rngs["arrivals"], rngs["choice"]
        timing = {"container_start_seconds": {"kind": "const", "value": 2},
                  "boot_seconds": {"kind": "uniform", "min": 30, "max": 60},
                  "stop_seconds": {"kind": "const", "value": 10}} | scenario.get("servers", {})
        self.container_start = sampler(timing["container_start_seconds"], rngs["timing"])
        self.boot = sampler(timing["boot_seconds"], rngs["timing"])
        self.stop = sampler(timing["stop_seconds"], rngs["timing"])

        w = scenario["workload"]
        self.session_minutes = sampler(w["session_minutes"], rngs["length"])
        self.players_dist = sampler(w.get("players", {"kind": "const", "value": 1}), rngs["players"])
        self.daily = w.get("daily_profile", [1.0] * 24)
        self.weekly = w.get("weekly_profile", [1.0] * 7)
        self.per_hour = float(w["sessions_per_hour"])
        self.rate_max = self.per_hour * max(self.daily) * max(self.weekly) / HOUR

        self.nodes = []
        for spec in scenario.get("fleet", {}).get("dedicated", []):
            capacity = int(spec["ram_gb"]) * GIB
            usable = capacity - reserve_mib(capacity, spec.get("is_system", False), reserve)
            for _ in range(int(spec.get("count", 1))):
                self.nodes.append(Node(len(self.nodes), usable))
        tiers = w["tiers"]
        total_weight = sum(t["weight"] for t in tiers)
        self.servers = []
        for _ in range(int(w["users"]) * int(w.get("servers_per_user", 1))):
            pick = rngs["tiers"].random() * total_weight
            chosen = tiers[-1]
            for t in tiers:
                pick -= t["weight"]
                if pick < 0:
                    chosen = t
                    break
            self.servers.append(Server(int(chosen["gb"]) * GIB))

        self.queue = []  # servers waiting for RAM, FIFO
        self.env = simpy.Environment()
        # Outcomes.
        self.sessions = 0
        self.starts_requested = 0
        self.waits = []
        self.capacity_waits = []
        self.slo_misses = 0
        self.ram_gib_hours = 0.0
        self.storage_eur = 0.0
        self.holding = 0
        self.holding_integral = 0.0
        self.queue_integral = 0.0
        self.last_change = 0.0

    # ---------------------------------------------------------------- bookkeeping

    def integrate(self):
        now = self.env.now
        start = max(self.last_change, self.measure_from)
        if now > start:
            self.holding_integral += self.holding * (now - start)
            self.queue_integral += len(self.queue) * (now - start)
        self.last_change = now

    def end_rest(self, s, until):
        """Bill the world storage of a stopped or sleeping server up to `until`."""
        if s.resting_since is None:
            return
        since, s.resting_since = s.resting_since, None
        since_m = max(since, self.measure_from)
        if not s.has_world or until <= since_m:
            return
        archive_at = since + self.archive_after
        hot = max(0.0, min(until, archive_at) - since_m)
        cold = max(0.0, until - max(archive_at, since_m))
        self.storage_eur += self.world_gib * (hot * self.storage_eur_gib_month + cold * self.archive_eur_gib_month) / MONTH

    def release_ram(self, s):
        self.integrate()
        s.node.allocated -= s.ram
        s.node = None
        self.holding -= 1
        held = self.env.now - max(s.placed_at, self.measure_from)
        if held > 0:
            self.ram_gib_hours += s.ram / GIB * held / HOUR

    # ---------------------------------------------------------------- workload

    def rate_at(self, t):
        hour = int(t // HOUR) % 24
        weekday = (self.start_day + int(t // DAY) + 3) % 7
        return self.per_hour * self.daily[hour] * self.weekly[weekday] / HOUR

    def arrivals(self):
        env, rng, rate_max = self.env, self.rng_arrivals, self.rate_max
        t = 0.0
        while True:
            t += rng.expovariate(rate_max)
            if t > self.end:
                return
            if rng.random() * rate_max <= self.rate_at(t):
                yield env.timeout(t - env.now)
                self.arrive()

    def arrive(self):
        s = self.servers[self.rng_choice.randrange(len(self.servers))]
        length = self.session_minutes() * 60.0
        players = max(1, round(self.players_dist()))
        if self.env.now >= self.measure_from:
            self.sessions += 1
        if s.state == "running":
            s.players += players
            s.idle_gen += 1  # players: the idle timer is off
            self.env.process(self.session(s, players, length, s.epoch))
            return
        s.waiting.append((players, length))
        if s.state in ("queued", "starting"):
            return
        if self.env.now >= self.measure_from:
            self.starts_requested += 1
        if s.state == "stopping":
            if s.start_after_stop is None:
                s.start_after_stop = self.env.now
            return
        self.request_start(s, self.env.now)

    def session(self, s, players, length, epoch):
        yield self.env.timeout(length)
        if s.epoch != epoch:
            return
        s.players -= players
        if s.state == "running" and s.players == 0:
            self.arm_idle(s, self.env.now)

    # ---------------------------------------------------------------- lifecycle

    def request_start(self, s, requested_at, dispatch=True):
        self.end_rest(s, self.env.now)
        s.requested_at = requested_at
        if not self.queue and dispatch:
            node = self.choose_node(s.ram, None)
            if node is not None:
                self.place(s, node)
                return
        self.integrate()
        s.state = "queued"
        self.queue.append(s)
        if dispatch:
            self.dispatch()

    def choose_node(self, need, claimed):
        """Spread: the node with the most free RAM (ties: the later node), never `claimed`."""
        best = None
        for n in self.nodes:
            if n is not claimed and n.free >= need and (best is None or n.free >= best.free):
                best = n
        return best

    def claim_node_for(self, need):
        best = None
        for n in self.nodes:
            if n.usable >= need and (best is None or n.free >= best.free):
                best = n
        return best

    def dispatch(self):
        if not self.queue:
            return
        max_free = max(n.free for n in self.nodes)
        if min(s.ram for s in self.queue) > max_free:
            return
        claimed, head_seen = None, False
        for s in self.queue[: self.scan_max]:
            node = self.choose_node(s.ram, claimed)
            if node is not None:
                self.integrate()
                self.queue.remove(s)
                self.place(s, node)
                continue
            if not head_seen:
                head_seen = True
                if self.env.now - s.requested_at >= self.head_bypass:
                    claimed = self.claim_node_for(s.ram)
                    if claimed is None:
                        break

    def place(self, s, node):
        self.integrate()
        node.allocated += s.ram
        s.node = node
        self.holding += 1
        s.state = "starting"
        s.players = 0
        s.placed_at = self.env.now
        s.has_world = True
        self.env.process(self.start_server(s))

    def start_server(self, s):
        env = self.env
        yield env.timeout(self.container_start())
        yield env.timeout(self.boot())
        now = env.now
        s.state = "running"
        s.running_since = now
        if s.requested_at >= self.measure_from and now >= self.measure_from:
            wait = now - s.requested_at
            self.waits.append(wait)
            self.capacity_waits.append(s.placed_at - s.requested_at)
            if wait > self.slo:
                self.slo_misses += 1
        waiting, s.waiting = s.waiting, []
        for players, length in waiting:
            s.players += players
            env.process(self.session(s, players, length, s.epoch))
        if s.players == 0:
            self.arm_idle(s, now)

    def arm_idle(self, s, idle_since):
        s.idle_gen += 1
        at = max(idle_since + self.idle_after, s.running_since + self.min_run)
        self.env.process(self.idle_timer(s, s.idle_gen, at))

    def idle_timer(self, s, gen, at):
        yield self.env.timeout(at - self.env.now)
        if s.idle_gen == gen and s.state == "running" and s.players == 0:
            yield from self.stop_server(s)

    def stop_server(self, s):
        s.state = "stopping"
        yield self.env.timeout(self.stop())
        self.release_ram(s)
        s.state = "sleeping"
        s.epoch += 1
        s.players = 0
        s.running_since = None
        s.resting_since = self.env.now
        if s.start_after_stop is not None:
            requested_at, s.start_after_stop = s.start_after_stop, None
            self.request_start(s, requested_at, dispatch=False)
        self.dispatch()

    # ---------------------------------------------------------------- run

    def run(self):
        self.env.process(self.arrivals())
        self.env.run(until=self.end)
        self.integrate()
        for s in self.servers:
            if s.node is not None:
                self.release_ram(s)
            self.end_rest(s, self.end)
        measured = self.end - self.measure_from
        waits = sorted(self.waits)
        ram_eur = self.ram_gib_hours * self.ram_eur_gib_hour
        return {
            "simulated_hours": measured / HOUR,
            "events": next(self.env._eid),  # every event SimPy scheduled
            "sessions": self.sessions,
            "starts_requested": self.starts_requested,
            "starts_running": len(waits),
            "holding_ram_mean": self.holding_integral / measured,
            "queue_length_mean": self.queue_integral / measured,
            "start_wait_mean_s": sum(waits) / max(1, len(waits)),
            "start_wait_p95_s": waits[int(0.95 * (len(waits) - 1))] if waits else 0.0,
            "capacity_wait_mean_s": sum(self.capacity_waits) / max(1, len(self.capacity_waits)),
            "slo_misses": self.slo_misses,
            "revenue_ram_eur": ram_eur,
            "revenue_storage_eur": self.storage_eur,
            "revenue_total_eur": ram_eur + self.storage_eur,
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    with open(args.scenario, "rb") as f:
        scenario = tomllib.load(f)
    seed = args.seed if args.seed is not None else int(scenario.get("seed", 1))
    began = time.perf_counter()
    summary = Model(scenario, seed).run()
    summary["wall_s"] = time.perf_counter() - began
    summary["seed"] = seed
    json.dump(summary, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
