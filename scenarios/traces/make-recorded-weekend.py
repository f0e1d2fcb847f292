#!/usr/bin/env python3
"""Writes recorded-weekend.jsonl: a small recorded-style trace (format v1) of a weekend
on a 30-server community. Unlike a generated trace, players join a running server one
after another, owners start and stop servers from the API, and the provider's measured
provisioning latencies are included. Deterministic (fixed seed); run it from this folder.
"""
import json
import math
import random

rng = random.Random(20260110)
START = 1767916800000  # 2026-01-09T00:00:00Z, a Friday
END = START + 3 * 86_400_000
lines = [{"format": "payperplay-trace", "version": 1, "start_ms": START, "end_ms": END,
          "source": "recorded-style sample: Friday to Sunday, 30 servers"}]
events = []
for u in range(1, 21):
    events.append((START, 0, {"event": "user_registered", "at_ms": START, "user": 100 + u}))
    events.append((START, 1, {"event": "balance_topped_up", "at_ms": START, "user": 100 + u, "amount_eur": 15.0}))
servers = []
for s in range(1, 31):
    owner = 100 + (s - 1) % 20 + 1
    ram = rng.choice([2, 4, 4, 8, 8, 16])
    servers.append(s)
    events.append((START, 2, {"event": "server_created", "at_ms": START, "server": 5000 + s, "owner": owner, "ram_gb": ram}))
# A server created during the weekend.
events.append((START + 30 * 3_600_000, 2, {"event": "server_created", "at_ms": START + 30 * 3_600_000,
                                           "server": 5031, "owner": 101, "ram_gb": 4}))
servers.append(31)
session = 0
for day in range(3):
    for s in servers:
        if s == 31 and day < 2:
            continue
        if rng.random() < 0.35:
            continue
        evening = START + day * 86_400_000 + int((17 + rng.random() * 5) * 3_600_000)
        # A group: the first player wakes the server, friends follow over ten minutes.
        first = evening
        for k in range(rng.choice([1, 1, 2, 3, 4])):
            session += 1
            join = first + int(k * rng.random() * 600_000)
            length = int(rng.weibullvariate(60, 0.7) * 60_000) + 60_000
            events.append((join, 3, {"event": "player_joined", "at_ms": join, "server": 5000 + s,
                                     "session": session, "players": 1}))
            events.append((join + length, 4, {"event": "player_left", "at_ms": join + length,
                                              "server": 5000 + s, "session": session}))
# Owners starting a server from the panel to set it up, and stopping it.
for s in rng.sample(servers[:30], 5):
    at = START + int(rng.random() * 2.5 * 86_400_000)
    events.append((at, 5, {"event": "start_requested", "at_ms": at, "server": 5000 + s}))
    events.append((at + 1_200_000, 6, {"event": "stop_requested", "at_ms": at + 1_200_000, "server": 5000 + s}))
# Measured provisioning latencies (seconds), as the shell records them.
for i in range(24):
    at = START + i * 3 * 3_600_000
    for t, loc, median in (("cpx32", "fsn1", 70), ("cpx42", "fsn1", 95), ("cpx42", "nbg1", 120)):
        secs = round(median * math.exp(rng.gauss(0, 0.35)), 1)
        events.append((at, 7, {"event": "provisioning_observed", "at_ms": at, "server_type": t,
                               "location": loc, "seconds": secs}))
events.sort(key=lambda e: (e[0], e[1]))
with open("recorded-weekend.jsonl", "w") as f:
    for line in lines + [e[2] for e in events]:
        f.write(json.dumps(line, separators=(",", ":")) + "\n")
