#!/usr/bin/env bash
# Speed work must not change what the simulator computes. This runs every scenario in
# scenarios/ and the SimPy benchmark's scenario with two payperplay-sim binaries and
# diffs their outcome.json, summary.md and report.md byte for byte (plots left out).
#
#     scripts/same-outcomes.sh OLD_BINARY NEW_BINARY
#
# Build the old one from the commit before your change, e.g.
#     git worktree add /tmp/before HEAD~1 && (cd /tmp/before && cargo build --release -p payperplay-sim)
# Exits 1 and prints the differences when any output differs.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 OLD_BINARY NEW_BINARY" >&2
    exit 2
fi
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for side in old new; do
    if [ "$side" = old ]; then bin="$1"; else bin="$2"; fi
    for scenario in "$repo"/scenarios/*.toml "$repo"/bench/simpy/dedicated-fleet.toml; do
        name="$(basename "$scenario" .toml)"
        # A failing [expect] bound exits 1 but still writes the outcome.
        "$bin" run --quiet "$scenario" --out "$work/$side/$name" >/dev/null 2>&1 || true
        rm -f "$work/$side/$name"/*.svg
    done
done
if diff -r "$work/old" "$work/new"; then
    echo "same outcomes: $(ls "$work/new" | wc -l) scenarios, byte for byte"
else
    echo "outcomes differ (above)" >&2
    exit 1
fi
