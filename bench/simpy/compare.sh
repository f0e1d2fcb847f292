#!/usr/bin/env bash
# Side by side with SimPy (issue 3's speed goal): builds payperplay-sim (release), makes
# sure the project's Python venv has SimPy, then runs our simulator and the SimPy model
# (bench/simpy/model.py) on the same scenario and seed, and prints wall and CPU times,
# simulated events, a few outcomes side by side and "speed ratio: N x".
#
#     bench/simpy/compare.sh [SCENARIO.toml] [--seed N] [--tolerance PCT]
#
# Default scenario: bench/simpy/dedicated-fleet.toml. The venv is
# ${PAYPERPLAY_VENV:-$HOME/.cache/payperplay-venv}, shared with scripts/start-services.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
scenario="$here/dedicated-fleet.toml"
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then
    scenario="$1"
    shift
fi

venv="${PAYPERPLAY_VENV:-$HOME/.cache/payperplay-venv}"
requirements="$here/requirements.txt"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/.simpy-requirements.txt"; then
    echo "compare: preparing Python venv in $venv" >&2
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        apt-get install -y -qq python3-venv >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-venv; }
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.simpy-requirements.txt"
fi

cd "$repo_root"
cargo build --release --quiet -p payperplay-sim
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
exec "$venv/bin/python" "$here/compare.py" "$target_dir/release/payperplay-sim" "$scenario" "$@"
