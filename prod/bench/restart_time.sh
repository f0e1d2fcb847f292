#!/usr/bin/env bash
# Restart time of `payperplay serve` against a journal of N inputs (default 1 000 000):
# from the process start to /v1/health/ready answering 200 (lock, replay, reconcile),
# without a snapshot and with one.
#
#   source scripts/start-services.sh   # or set DATABASE_URL to a superuser URL
#   prod/bench/restart_time.sh [N_INPUTS] [RUNS]
#
# Builds `payperplay` (release) and the core's `journal_mix` example, which writes a
# realistic journal: 2,000 users registered and topped up, 2,000 servers created,
# started (container start answered, booted), players coming and going, stopped,
# billed; idle-sleep and balance timers firing; ending with every server stopped and
# every command answered. The users and servers are written to their tables too (so
# reconciliation finds them), and the command log holds the largest command id (the
# replay issues nothing new). Then `serve` starts RUNS times (default 3) with no
# snapshot (snapshots deleted before each run), once more to take one (on its graceful
# stop), and RUNS times from it; each time to ready and the replay time it logged.
# Measured on the 2-core dev machine under load (other builds running), journal of
# 993,597 inputs (the example keeps room for its quiet ending): without a snapshot
# 2.86 s to ready (replay 2.76 s), with one 67 ms to ready (replay of nothing, the
# snapshot 1.3 MB).
set -euo pipefail

n_inputs="${1:-1000000}"
runs="${2:-3}"
n_users=2000
n_servers=2000
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${DATABASE_URL:?set DATABASE_URL (source scripts/start-services.sh)}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_root/target}"
cargo build --release -q -p payperplay-prod --manifest-path "$repo_root/Cargo.toml"
cargo build --release -q -p payperplay-core --example journal_mix --manifest-path "$repo_root/Cargo.toml"
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
[runtime]
# snapshots only on a graceful stop (the bench chooses when one exists)
snapshot_every_inputs = 0
snapshot_every_ms = 0
TOML

export PAYPERPLAY_DATABASE_URL="$bench_url"
export RUST_LOG="${RUST_LOG:-info}"
"$binary" --config "$work_dir/bench.toml" migrate
echo "== writing a journal of $n_inputs inputs ($n_users users, $n_servers servers)"
"$CARGO_TARGET_DIR/release/examples/journal_mix" "$n_inputs" "$n_users" "$n_servers" "$work_dir/config.json" \
    >"$work_dir/journal.tsv" 2>"$work_dir/journal.info"
cat "$work_dir/journal.info"
command_id_max="$(sed -n 's/.*command_id_max=\([0-9]*\).*/\1/p' "$work_dir/journal.info")"
psql "$bench_url" -q -v config="$(cat "$work_dir/config.json")" <<SQL
-- The rules the journal was written under, recorded as a runtime start would.
INSERT INTO runtime_starts (started_at_ms, first_seq, core_config) VALUES (1790000000000, 1, :'config'::jsonb);
\copy journal (seq, at_ms, input) FROM '$work_dir/journal.tsv'
INSERT INTO users (id, email, email_verified, password_hash, role, balance_micros, created_at_ms)
SELECT n, 'bench' || n || '@example.com', TRUE, 'x', 'user', 0, 0 FROM generate_series(1, $n_users) AS n;
INSERT INTO servers (id, owner_id, name, ram_mib, created_at_ms, updated_at_ms)
SELECT n, 1 + n % $n_users, 's' || n, (ARRAY[2048, 4096, 8192])[1 + n % 3], 0, 0
FROM generate_series(1, $n_servers) AS n;
-- Every command the replay issues counts as recorded already (only its id matters).
INSERT INTO commands (id, kind, command, status, attempts, issued_at_ms)
VALUES ($command_id_max, 'send_email', '{}', 'succeeded', 1, 0);
SQL
echo "journal rows: $(psql "$bench_url" -tA -c 'SELECT COUNT(*) FROM journal')," \
     "kinds: $(psql "$bench_url" -tA -c "SELECT string_agg(kind || '=' || n, ' ') FROM (SELECT input->>'type' AS kind, COUNT(*) AS n FROM journal GROUP BY 1 ORDER BY 2 DESC) k")"

# One start of `serve` until ready, then a graceful stop (SIGTERM: a snapshot if the
# runtime handled inputs since the last one).
start_once() {
    local label="$1"
    started_ns="$(date +%s%N)"
    "$binary" --config "$work_dir/bench.toml" serve >"$work_dir/serve.log" 2>&1 &
    server_pid=$!
    until curl -fsS "http://127.0.0.1:$port/v1/health/ready" >/dev/null 2>&1; do
        kill -0 "$server_pid" 2>/dev/null || { cat "$work_dir/serve.log"; exit 1; }
        sleep 0.05
    done
    ready_ms=$(( ($(date +%s%N) - started_ns) / 1000000 ))
    log="$(sed 's/\x1b\[[0-9;]*m//g' "$work_dir/serve.log")"
    replay="$(grep 'journal replayed' <<<"$log" | grep -o 'n_replayed=[0-9]*\|elapsed_ms=[0-9]*' | tr '\n' ' ' || true)"
    echo "$label: ready after ${ready_ms} ms (replay: ${replay:-?})"
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
}

echo "== without a snapshot"
for run in $(seq 1 "$runs"); do
    psql "$bench_url" -q -c "DELETE FROM core_snapshots"
    start_once "run $run"
done
echo "== taking a snapshot (a full replay, then a graceful stop)"
psql "$bench_url" -q -c "DELETE FROM core_snapshots"
start_once "setup"
echo "snapshot: $(psql "$bench_url" -tA -c 'SELECT seq, length(state) FROM core_snapshots ORDER BY seq DESC LIMIT 1') (seq|bytes)"
echo "== with the snapshot"
for run in $(seq 1 "$runs"); do
    start_once "run $run"
done
