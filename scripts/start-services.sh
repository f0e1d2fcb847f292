# shellcheck shell=bash
# Starts the services prod/'s tests need and exports where they are. SOURCE it:
#
#     source scripts/start-services.sh
#
# On a fresh Debian 12 machine (as root or a user with sudo-less apt) it installs what
# is missing: PostgreSQL server binaries (apt-get) and a Python venv with aiosmtpd and
# schemathesis (pip, prod/tests/py/requirements.txt). It then starts
#   - a throwaway PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only,
#   - an aiosmtpd SMTP sink on 127.0.0.1 writing every mail into a Maildir,
# exports
#   DATABASE_URL                 postgres://postgres@127.0.0.1:PORT/postgres (superuser,
#                                so #[sqlx::test] can create a database per test)
#   PAYPERPLAY_TEST_SMTP_PORT    port of the SMTP sink
#   PAYPERPLAY_TEST_MAILDIR      its Maildir (new mail in $PAYPERPLAY_TEST_MAILDIR/new)
#   PAYPERPLAY_PYTHON            the venv's python (tests start their own sinks with it)
#   PAYPERPLAY_SCHEMATHESIS      the venv's `st` (schemathesis CLI)
# and stops everything on exit through an EXIT trap (chained to any trap already set).
# Services already configured (DATABASE_URL set) are left alone.

payperplay_services_main() {
    local repo_root
    repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local state_dir
    state_dir="$(mktemp -d /tmp/payperplay-services.XXXXXX)"
    chmod 755 "$state_dir"
    export PAYPERPLAY_SERVICES_DIR="$state_dir"

    # --- Python venv with aiosmtpd and schemathesis ---
    local venv="${PAYPERPLAY_VENV:-$HOME/.cache/payperplay-venv}"
    local requirements="$repo_root/prod/tests/py/requirements.txt"
    if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/.requirements.txt"; then
        echo "start-services: preparing Python venv in $venv" >&2
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            apt-get install -y -qq python3-venv >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-venv; }
            python3 -m venv "$venv"
        fi
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" || return 1
        cp "$requirements" "$venv/.requirements.txt"
    fi
    export PAYPERPLAY_PYTHON="$venv/bin/python"
    export PAYPERPLAY_SCHEMATHESIS="$venv/bin/st"

    # --- PostgreSQL ---
    if [ -z "${DATABASE_URL:-}" ]; then
        local pg_bin=""
        if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
            pg_bin="$(dirname "$(command -v initdb)")"
        else
            pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
        fi
        if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
            echo "start-services: installing PostgreSQL" >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || return 1
            pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
        fi
        local pg_port
        pg_port="$("$PAYPERPLAY_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
        local pg_dir="$state_dir/pg"
        mkdir -p "$pg_dir"
        # initdb refuses to run as root: run the cluster as `postgres` then.
        local run_as=()
        if [ "$(id -u)" = 0 ]; then
            id postgres >/dev/null 2>&1 || useradd --system --home-dir "$state_dir" postgres
            chown -R postgres "$pg_dir"
            run_as=(runuser -u postgres --)
        fi
        "${run_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >"$state_dir/initdb.log" 2>&1 \
            || { cat "$state_dir/initdb.log" >&2; return 1; }
        "${run_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 \
            -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start >/dev/null || { cat "$pg_dir/postgres.log" >&2; return 1; }
        export PAYPERPLAY_PG_CTL="$pg_bin/pg_ctl"
        export PAYPERPLAY_PG_DATA="$pg_dir/data"
        export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
        echo "start-services: PostgreSQL on 127.0.0.1:$pg_port" >&2
    fi

    # --- SMTP sink ---
    if [ -z "${PAYPERPLAY_TEST_SMTP_PORT:-}" ]; then
        local smtp_port
        smtp_port="$("$PAYPERPLAY_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
        export PAYPERPLAY_TEST_MAILDIR="$state_dir/maildir"
        "$PAYPERPLAY_PYTHON" -m aiosmtpd -n -l "127.0.0.1:$smtp_port" -c aiosmtpd.handlers.Mailbox "$PAYPERPLAY_TEST_MAILDIR" \
            >"$state_dir/smtp.log" 2>&1 &
        export PAYPERPLAY_SMTP_SINK_PID=$!
        local i
        for i in $(seq 1 100); do
            if "$PAYPERPLAY_PYTHON" -c "import socket,sys; socket.create_connection(('127.0.0.1',$smtp_port),0.2)" 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
        export PAYPERPLAY_TEST_SMTP_PORT="$smtp_port"
        echo "start-services: SMTP sink on 127.0.0.1:$smtp_port, mail in $PAYPERPLAY_TEST_MAILDIR" >&2
    fi
}

payperplay_stop_services() {
    if [ -n "${PAYPERPLAY_SMTP_SINK_PID:-}" ]; then
        kill "$PAYPERPLAY_SMTP_SINK_PID" 2>/dev/null || true
    fi
    if [ -n "${PAYPERPLAY_PG_DATA:-}" ] && [ -d "${PAYPERPLAY_PG_DATA}" ]; then
        if [ "$(id -u)" = 0 ]; then
            runuser -u postgres -- "$PAYPERPLAY_PG_CTL" -D "$PAYPERPLAY_PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
        else
            "$PAYPERPLAY_PG_CTL" -D "$PAYPERPLAY_PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
        fi
    fi
    if [ -n "${PAYPERPLAY_SERVICES_DIR:-}" ]; then
        rm -rf "$PAYPERPLAY_SERVICES_DIR"
    fi
}

payperplay_services_previous_trap="$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")"
# shellcheck disable=SC2064
trap "payperplay_stop_services; ${payperplay_services_previous_trap:-:}" EXIT
payperplay_services_main || { echo "start-services: failed" >&2; return 1 2>/dev/null || exit 1; }

# --- Node clients for the test game server's login tests (testgame/tests/js) ---
payperplay_testgame_js="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/testgame/tests/js"
if [ ! -d "$payperplay_testgame_js/node_modules" ]; then
    echo "start-services: installing node-minecraft-protocol (npm ci in $payperplay_testgame_js)" >&2
    (cd "$payperplay_testgame_js" && npm ci --no-audit --no-fund --loglevel=error >&2) \
        || echo "start-services: npm ci failed in $payperplay_testgame_js (Node.js 20+ and npm needed)" >&2
fi
