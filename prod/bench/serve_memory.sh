#!/usr/bin/env bash
# serve's memory with N containers observed: `payperplay serve` on a fresh database with
# one dedicated node on the test engine (scripts/start-services.sh), N servers started
# through the REST API (the test image), then serve's RSS once all run and a few player
# polls and reconciles have passed.
#
#   source scripts/start-services.sh
#   prod/bench/serve_memory.sh [N_SERVERS]      # default 500 (as many as the engine holds)
#
# Prints serve's RSS idle, with N running, and per container. Loopback only.
set -euo pipefail

n_servers="${1:-500}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${DATABASE_URL:?set DATABASE_URL (source scripts/start-services.sh)}"
: "${PAYPERPLAY_TEST_DOCKER_SOCKET:?source scripts/start-services.sh (the test engine)}"
: "${PAYPERPLAY_TEST_IMAGE:?source scripts/start-services.sh (the test image)}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_root/target}"
# PAYPERPLAY_BIN: a release `payperplay` already built (skips the build).
binary="${PAYPERPLAY_BIN:-}"
if [ -z "$binary" ]; then
    cargo build --release -q -p payperplay-prod --manifest-path "$repo_root/Cargo.toml"
    binary="$(find "$CARGO_TARGET_DIR" -path '*/release/payperplay' -type f | head -n1)"
fi

database="payperplay_memory_$$"
psql "$DATABASE_URL" -q -c "CREATE DATABASE $database" >/dev/null
bench_url="${DATABASE_URL%/*}/$database"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
platform="payperplay-memory-$$"
work_dir="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    # Every container and volume of this run (its platform label).
    local ids
    ids="$(docker -H "unix://$PAYPERPLAY_TEST_DOCKER_SOCKET" ps -aq --filter "label=payperplay.platform=$platform" 2>/dev/null || true)"
    [ -n "$ids" ] && docker -H "unix://$PAYPERPLAY_TEST_DOCKER_SOCKET" rm -f $ids >/dev/null 2>&1 || true
    ids="$(docker -H "unix://$PAYPERPLAY_TEST_DOCKER_SOCKET" volume ls -q --filter "label=payperplay.platform=$platform" 2>/dev/null || true)"
    [ -n "$ids" ] && docker -H "unix://$PAYPERPLAY_TEST_DOCKER_SOCKET" volume rm -f $ids >/dev/null 2>&1 || true
    psql "$DATABASE_URL" -q -c "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
    rm -rf "$work_dir"
}
trap cleanup EXIT

# The core keeps a system reserve (5% of a large node, 8% of a medium one): room for
# N servers of 2 GiB after it.
capacity_mib=$(( (n_servers + 1) * 2048 * 100 / 90 ))
cat >"$work_dir/memory.toml" <<TOML
[http]
listen = "127.0.0.1:$port"
[smtp]
port = 1
[auth]
login_per_minute = 100000
register_per_minute = 100000
mutations_per_user_per_minute = 100000
servers_per_user_max = 100000
[router]
enabled = false
[containers]
platform = "$platform"
image = "$PAYPERPLAY_TEST_IMAGE"
player_poll_interval_ms = 2000
boot_timeout_ms = 1800000   # 500 boots on a loaded machine: never kill a slow one
[[fleet.dedicated_nodes]]
name = "memory"
capacity_mib = $capacity_mib
is_system = false
bind_address = "127.0.0.1"
# Below the ephemeral port range (32768-) and clear of the tests' slices.
game_ports = "24000-$((24000 + n_servers + 10))"
rcon_ports_first = 26000
data_path = "/"
[fleet.dedicated_nodes.engine]
socket_path = "$PAYPERPLAY_TEST_DOCKER_SOCKET"
TOML

export PAYPERPLAY_DATABASE_URL="$bench_url"
export PAYPERPLAY_SECRET_KEY="1:$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
export RUST_LOG="${RUST_LOG:-warn}"
"$binary" --config "$work_dir/memory.toml" migrate
"$binary" --config "$work_dir/memory.toml" serve >"$work_dir/serve.log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 1200); do
    curl -fsS "$base/v1/health/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$base/v1/health/ready" >/dev/null
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status"; }

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
account() { # email -> token
    curl -fsS -H 'content-type: application/json' -d "{\"email\":\"$1\",\"password\":\"memory password 1\"}" "$base/v1/accounts/register" >/dev/null
    local code
    code="$(psql "$bench_url" -Atc "SELECT body FROM email_outbox WHERE recipient='$1'" | grep -oE '[0-9a-f]{64}' | head -n1)"
    curl -fsS -H 'content-type: application/json' -d "{\"token\":\"$code\"}" "$base/v1/accounts/verify" >/dev/null
    curl -fsS -H 'content-type: application/json' -d "{\"email\":\"$1\",\"password\":\"memory password 1\"}" "$base/v1/accounts/login" | json "['token']"
}
admin="$(account memory-admin@example.com)"
"$binary" --config "$work_dir/memory.toml" admin grant memory-admin@example.com >/dev/null
sleep 6 # past the 5-second cache of verified principals
token="$(account memory@example.com)"
user_id="$(curl -fsS -H "authorization: Bearer $token" "$base/v1/accounts/me" | json "['id']")"
curl -fsS -H "authorization: Bearer $admin" -H 'content-type: application/json' \
    -d '{"amount_micros": 1000000000}' "$base/v1/admin/users/$user_id/credit" >/dev/null
sleep 1
echo "serve RSS with no container: $(rss_mib) MiB"

for i in $(seq 1 "$n_servers"); do
    # Retried with the same Idempotency-Key when a busy serve answers 503.
    id="$(curl -fsS --retry 10 --retry-all-errors -H "authorization: Bearer $token" \
        -H 'content-type: application/json' -H "idempotency-key: memory-create-$$-$i" \
        -d "{\"name\":\"memory-$i\",\"ram_mib\":2048}" "$base/v1/servers" | json "['id']")"
    curl -fsS --retry 10 --retry-all-errors -X POST -H "authorization: Bearer $token" \
        -H "idempotency-key: memory-start-$$-$i" "$base/v1/servers/$id/start" >/dev/null
done
echo "started $n_servers servers; waiting until they run"
running=0
wait_s="${SERVE_MEMORY_WAIT_S:-3600}"
for second in $(seq 1 "$wait_s"); do
    # A busy serve may answer 503: count again next time instead of ending the run.
    running="$(curl -fsS -m 30 -H "authorization: Bearer $token" "$base/v1/servers" 2>/dev/null \
        | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s["status"]["state"] == "running"))' \
        2>/dev/null || echo "$running")"
    [ "$running" -ge "$n_servers" ] && break
    [ $((second % 60)) -eq 0 ] && echo "after ${second} s: $running running, serve RSS $(rss_mib) MiB"
    sleep 1
done
sleep 10 # a few player polls (2 s) and reconciles
rss="$(rss_mib)"
echo "running: $running of $n_servers"
echo "serve RSS with $running containers observed: $rss MiB ($(python3 -c "print(round($rss * 1024 / max($running, 1), 1))") KiB per container)"
