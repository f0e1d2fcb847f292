#!/usr/bin/env bash
# Latency of GET /v1/servers/{id} (and of one POST) at a fixed request rate, on loopback.
#
#   source scripts/start-services.sh   # or set DATABASE_URL to a superuser URL
#   prod/bench/get_server_latency.sh [RATE_PER_S] [DURATION_S] [get|post|both]
#
# PAYPERPLAY_BIN=path measures that `payperplay` binary instead of building one.
# `post` (or `both`, the default) also sends POST /v1/admin/users/{id}/credit (a
# journaled input with a ledger command and its posting) at the same rate.
#
# Builds `payperplay` (release), creates a fresh database, migrates it, serves on a
# free loopback port, makes a verified user with a server, then
#   - hey at a fixed rate: RATE_PER_S requests/s (default 1000) for DURATION_S
#     (default 30) over 10 connections, printing the latency distribution (p99);
#   - wrk at full speed (saturation) for 10 s over 10 connections, for reference.
# Installs hey and wrk with apt-get when missing. Sends traffic to 127.0.0.1 only.
set -euo pipefail

rate="${1:-1000}"
duration_s="${2:-30}"
which="${3:-both}"
connections=10
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${DATABASE_URL:?set DATABASE_URL (source scripts/start-services.sh)}"

for tool in hey wrk curl psql; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        case "$tool" in
            psql) package=postgresql-client ;;
            *) package="$tool" ;;
        esac
        apt-get install -y -qq "$package" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$package"; }
    fi
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_root/target}"
if [ -n "${PAYPERPLAY_BIN:-}" ]; then
    binary="$PAYPERPLAY_BIN" # a build to measure as it is (no cargo build)
else
    cargo build --release -q -p payperplay-prod --manifest-path "$repo_root/Cargo.toml"
    binary="$CARGO_TARGET_DIR/release/payperplay"
fi

database="payperplay_bench_$$"
psql "$DATABASE_URL" -q -c "CREATE DATABASE $database" >/dev/null
bench_url="${DATABASE_URL%/*}/$database"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
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
[smtp]
port = 1
[auth]
admin_emails = ["bench-admin@example.com"]
mutations_per_user_per_minute = 100000000
[[fleet.dedicated_nodes]]
name = "bench"
capacity_mib = 65536
is_system = false
TOML

export PAYPERPLAY_DATABASE_URL="$bench_url"
export RUST_LOG="${RUST_LOG:-warn}"
"$binary" --config "$work_dir/bench.toml" migrate
"$binary" --config "$work_dir/bench.toml" serve >"$work_dir/serve.log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    curl -fsS "$base/v1/health/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$base/v1/health/ready" >/dev/null

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
curl -fsS -H 'content-type: application/json' -d '{"email":"bench@example.com","password":"bench password 1"}' "$base/v1/accounts/register" >/dev/null
code="$(psql "$bench_url" -Atc "SELECT body FROM email_outbox WHERE recipient='bench@example.com'" | grep -oE '[0-9a-f]{64}' | head -n1)"
curl -fsS -H 'content-type: application/json' -d "{\"token\":\"$code\"}" "$base/v1/accounts/verify" >/dev/null
token="$(curl -fsS -H 'content-type: application/json' -d '{"email":"bench@example.com","password":"bench password 1"}' "$base/v1/accounts/login" | json "['token']")"
admin_session() { # email -> token of a verified user made admin
    curl -fsS -H 'content-type: application/json' -d "{\"email\":\"$1\",\"password\":\"bench password 1\"}" "$base/v1/accounts/register" >/dev/null
    local code
    code="$(psql "$bench_url" -Atc "SELECT body FROM email_outbox WHERE recipient='$1'" | grep -oE '[0-9a-f]{64}' | head -n1)"
    curl -fsS -H 'content-type: application/json' -d "{\"token\":\"$code\"}" "$base/v1/accounts/verify" >/dev/null
    "$binary" --config "$work_dir/bench.toml" admin grant "$1" >/dev/null
    curl -fsS -H 'content-type: application/json' -d "{\"email\":\"$1\",\"password\":\"bench password 1\"}" "$base/v1/accounts/login" | json "['token']"
}
server_id="$(curl -fsS -H "authorization: Bearer $token" -H 'content-type: application/json' -d '{"name":"bench","ram_mib":4096}' "$base/v1/servers" | json "['id']")"
url="$base/v1/servers/$server_id"
curl -fsS -H "authorization: Bearer $token" "$url" >/dev/null

per_connection=$((rate / connections))
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$which" != post ]; then
    echo "== hey: $rate req/s for ${duration_s}s over $connections connections: GET /v1/servers/$server_id"
    echo "   command: hey -z ${duration_s}s -c $connections -q $per_connection -H 'Authorization: Bearer ...' $url"
    hey -z "${duration_s}s" -c "$connections" -q "$per_connection" -H "Authorization: Bearer $token" "$url" \
        | sed -n '/Summary/,/Details/p;/Status code distribution/,$p'
    echo "== load average after GET: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
if [ "$which" != get ]; then
    admin_token="$(admin_session bench-admin@example.com)"
    user_id="$(psql "$bench_url" -Atc "SELECT id FROM users WHERE email='bench@example.com'")"
    credit_url="$base/v1/admin/users/$user_id/credit"
    echo "== hey: $rate req/s for ${duration_s}s over $connections connections: POST /v1/admin/users/$user_id/credit"
    echo "   command: hey -z ${duration_s}s -c $connections -q $per_connection -m POST -T application/json -d '{\"amount_micros\":1000}' -H 'Authorization: Bearer ...' $credit_url"
    hey -z "${duration_s}s" -c "$connections" -q "$per_connection" -m POST -T application/json \
        -d '{"amount_micros":1000}' -H "Authorization: Bearer $admin_token" "$credit_url" \
        | sed -n '/Summary/,/Details/p;/Status code distribution/,$p'
    echo "== load average after POST: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "   journal rows now: $(psql "$bench_url" -Atc "SELECT COUNT(*) FROM journal")"
fi
if [ "$which" = post ]; then exit 0; fi

echo "== wrk: saturation for 10s over $connections connections, 2 threads"
echo "   command: wrk -t2 -c$connections -d10s --latency -H 'Authorization: Bearer ...' $url"
wrk -t2 -c"$connections" -d10s --latency -H "Authorization: Bearer $token" "$url"
