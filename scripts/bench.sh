#!/usr/bin/env bash
# Benchmarks: criterion figures for placement, policies, the large scenario and trace
# replay, and the peak
# memory of the large scenario as simulated time grows (it must stay flat).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== criterion: placement (payperplay-core)"
cargo bench -p payperplay-core --bench placement -- --noplot
echo "== criterion: one policy evaluation on 1,000 VMs (payperplay-core)"
cargo bench -p payperplay-core --bench policies -- --noplot
echo "== criterion: large scenario (payperplay-sim)"
cargo bench -p payperplay-sim --bench large_scenario -- --noplot
# Criterion's headline is the mean; on a shared VM a few slow samples drag it down, so
# also print events per second at the median and at the fastest sample.
python3 - <<'PY'
import json, statistics
d = "target/criterion/large-fleet/28 days, 10000 servers/new/"
events = json.load(open(d + "benchmark.json"))["throughput"]["Elements"]
sample = json.load(open(d + "sample.json"))
per_run = sorted(t / i for t, i in zip(sample["times"], sample["iters"]))
median = statistics.median(per_run)
print(f"  large scenario: {events} events; median {median / 1e6:.0f} ms per run = {events / median * 1e3:.2f} M events/s; "
      f"fastest {per_run[0] / 1e6:.0f} ms = {events / per_run[0] * 1e3:.2f} M events/s")
PY
echo "== criterion: replaying a 30-day trace of 10,000 servers (payperplay-sim)"
cargo bench -p payperplay-sim --bench replay -- --noplot

echo "== peak memory of the large scenario by simulated duration"
cargo build --release -q -p payperplay-sim
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for days in 7 28 112 224; do
    sed "s/^duration = .*/duration = \"${days}days\"/" scenarios/large-fleet.toml > "$tmp/large-$days.toml"
    /usr/bin/time -f "%M" -o "$tmp/rss-$days" ./target/release/payperplay-sim run --quiet --out "$tmp/out-$days" "$tmp/large-$days.toml" >/dev/null 2>&1 || true
    events=$(grep -o '"events": [0-9]*' "$tmp/out-$days/outcome.json" | grep -o '[0-9]*')
    echo "  ${days} days: ${events} engine events, peak RSS $(cat "$tmp/rss-$days") KiB"
done
# Flat means the longest run needs about what the shortest does (32 times the events).
echo "  peak RSS, 224 days / 7 days: $(python3 -c "print(f'{$(cat "$tmp/rss-224") / $(cat "$tmp/rss-7"):.3f}')")"
