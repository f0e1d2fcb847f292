#!/usr/bin/env bash
# Restart time of `payperplay serve` against a journal of N inputs (default 1 000 000):
# from the process start to /v1/health/ready answering 200 (lock, replay, reconcile).
#
#   source scripts/start-services.sh   # or set DATABASE_URL to a superuser URL
#   prod/bench/restart_time.sh [N_INPUTS]
#
# Builds `payperplay` (release), creates a fresh database, migrates it, writes a
# journal of N inputs with SQL (1 000 users registered, then top-ups and timeouts
# alternating) and a command log that already holds every command the replay issues,
# then starts `serve` three times and prints each time to ready and the replay time it
# logged. There are no snapshots yet: this is the time without one. Measured on the
# 2-core dev machine under load (other builds running): 2.9 to 4.4 s to ready for
# 1,000,000 inputs (cheap ones: registrations, top-ups, timeouts).
set -euo pipefail

n_inputs="${1:-1000000}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${DATABASE_URL:?set DATABASE_URL (source scripts/start-services.sh)}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_root/target}"
cargo build --release -q -p payperplay-prod --manifest-path "$repo_root/Cargo.toml"
binary="$CARGO_TARGET_DIR/release/payperplay"

database="payperplay_restart_$$"
psql "$DATABASE_URL" -q -c "CREATE DATABASE $database" >/dev/null
bench_url="${DATABASE_URL%/*}/$database"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
router_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
work_dir="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    psql "$DATABASE_URL" -q -c "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
    rm -rf "$work_dir"
}
trap cleanup EXIT

cat >"$work_dir/bench.toml" <<TOML
[http]
listen = "127.0.0.1:$port"
[router]
listen = "127.0.0.1:$router_port"
[smtp]
port = 1
TOML

export PAYPERPLAY_DATABASE_URL="$bench_url"
export RUST_LOG="${RUST_LOG:-info}"
"$binary" --config "$work_dir/bench.toml" migrate
echo "== writing a journal of $n_inputs inputs"
psql "$bench_url" -q <<SQL
INSERT INTO journal (seq, at_ms, input)
SELECT n, 1790000000000 + n * 10, jsonb_build_object('type', 'register_user', 'user_id', n)
FROM generate_series(1, 1000) AS n;
INSERT INTO journal (seq, at_ms, input)
SELECT n, 1790000000000 + n * 10,
       CASE WHEN n % 2 = 0
            THEN jsonb_build_object('type', 'top_up', 'user_id', 1 + n % 1000, 'amount_micros', 1000)
            ELSE jsonb_build_object('type', 'timeout') END
FROM generate_series(1001, $n_inputs) AS n;
-- Every command the replay issues counts as recorded already (only its id matters).
INSERT INTO commands (id, kind, command, status, attempts, issued_at_ms)
VALUES ($n_inputs * 10, 'send_email', '{}', 'succeeded', 1, 0);
SQL
for run in 1 2 3; do
    started_ns="$(date +%s%N)"
    "$binary" --config "$work_dir/bench.toml" serve >"$work_dir/serve.log" 2>&1 &
    server_pid=$!
    until curl -fsS "http://127.0.0.1:$port/v1/health/ready" >/dev/null 2>&1; do
        kill -0 "$server_pid" 2>/dev/null || { cat "$work_dir/serve.log"; exit 1; }
        sleep 0.05
    done
    ready_ms=$(( ($(date +%s%N) - started_ns) / 1000000 ))
    replay="$(sed 's/\x1b\[[0-9;]*m//g' "$work_dir/serve.log" | grep -o 'elapsed_ms=[0-9]*' | head -n1 || true)"
    echo "run $run: ready after ${ready_ms} ms (replay: ${replay:-?})"
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
done
