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
# and, for the node drivers (nodes/), installs `docker.io` and `openssh-server` when
# missing and starts
#   - a Docker engine of its own (data and exec roots in the temp dir, its own unix
#     socket, no bridge, no iptables; overlay2, or vfs where overlay2 does not work),
#   - the test image: scripts/build-testgame.sh's static binary imported as a
#     `FROM scratch`-like image (no registry needed),
#   - an OpenSSH server on 127.0.0.1 (own config, host key and a client key made here,
#     authorized for root, stream-local forwarding allowed: a "remote node"),
# exporting
#   PAYPERPLAY_TEST_DOCKER_SOCKET  the engine's unix socket path
#   PAYPERPLAY_TEST_IMAGE          the test image's tag (payperplay/testgame:test)
#   PAYPERPLAY_TEST_SSH_PORT       sshd's port on 127.0.0.1
#   PAYPERPLAY_TEST_SSH_KEY        the client's private key file (user root)
#   PAYPERPLAY_TEST_SSH_HOST_KEY   sshd's public host key ("ssh-ed25519 AAAA...", to pin)
# and stops everything on exit through an EXIT trap (chained to any trap already set).
# Services already configured (DATABASE_URL, PAYPERPLAY_TEST_DOCKER_SOCKET, ... set) are
# left alone.

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

    payperplay_start_node_services "$repo_root" "$state_dir" || return 1
}

# A Docker engine, the test image and sshd for nodes/ (see the header).
payperplay_start_node_services() {
    local repo_root="$1" state_dir="$2"
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "start-services: installing ${missing[*]}" >&2
        # policy-rc.d or no systemd: the packages' own services may not start; we start ours.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
            || return 1
    fi

    # --- Docker engine ---
    if [ -z "${PAYPERPLAY_TEST_DOCKER_SOCKET:-}" ]; then
        local docker_dir="$state_dir/docker"
        local socket="$docker_dir/docker.sock"
        mkdir -p "$docker_dir"
        local driver started=""
        for driver in overlay2 vfs; do
            dockerd --data-root "$docker_dir/data" --exec-root "$docker_dir/exec" \
                -H "unix://$socket" --pidfile "$docker_dir/docker.pid" \
                --bridge=none --iptables=false --ip6tables=false --ip-masq=false --userland-proxy=false \
                --storage-driver="$driver" --shutdown-timeout 5 --log-level warn \
                --containerd-namespace payperplay-test --containerd-plugins-namespace payperplay-test-plugins \
                >"$docker_dir/dockerd-$driver.log" 2>&1 &
            local dockerd_pid=$!
            local i
            for i in $(seq 1 300); do
                if docker -H "unix://$socket" version >/dev/null 2>&1; then
                    started="$driver"
                    break
                fi
                kill -0 "$dockerd_pid" 2>/dev/null || break
                sleep 0.1
            done
            if [ -n "$started" ]; then
                export PAYPERPLAY_DOCKERD_PID="$dockerd_pid"
                break
            fi
            kill "$dockerd_pid" 2>/dev/null || true
            wait "$dockerd_pid" 2>/dev/null || true
            echo "start-services: dockerd with $driver did not come up (log: $docker_dir/dockerd-$driver.log)" >&2
        done
        if [ -z "$started" ]; then
            cat "$docker_dir"/dockerd-*.log >&2
            return 1
        fi
        export PAYPERPLAY_TEST_DOCKER_SOCKET="$socket"
        echo "start-services: Docker engine ($started) on unix://$socket" >&2
    fi

    # --- the test image: the static test game server, alone in the image ---
    if [ -z "${PAYPERPLAY_TEST_IMAGE:-}" ]; then
        local testgame_bin
        testgame_bin="$(bash "$repo_root/scripts/build-testgame.sh")" || return 1
        local rootfs="$state_dir/testgame-rootfs"
        mkdir -p "$rootfs/data" "$rootfs/tmp"
        cp "$testgame_bin" "$rootfs/testgame"
        local image="payperplay/testgame:test"
        tar -C "$rootfs" -c . | docker -H "unix://$PAYPERPLAY_TEST_DOCKER_SOCKET" import \
            --change 'ENTRYPOINT ["/testgame"]' --change 'WORKDIR /data' --change 'VOLUME /data' \
            - "$image" >/dev/null || return 1
        export PAYPERPLAY_TEST_IMAGE="$image"
        echo "start-services: test image $image" >&2
    fi

    # --- OpenSSH server in front of the engine (a "remote node") ---
    if [ -z "${PAYPERPLAY_TEST_SSH_PORT:-}" ]; then
        local ssh_dir="$state_dir/sshd"
        mkdir -p "$ssh_dir" /run/sshd
        chmod 700 "$ssh_dir"
        ssh-keygen -q -t ed25519 -N '' -C payperplay-test-host -f "$ssh_dir/host_ed25519" || return 1
        ssh-keygen -q -t ed25519 -N '' -C payperplay-test-client -f "$ssh_dir/client_ed25519" || return 1
        cp "$ssh_dir/client_ed25519.pub" "$ssh_dir/authorized_keys"
        local ssh_port
        ssh_port="$("$PAYPERPLAY_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
        cat >"$ssh_dir/sshd_config" <<SSHD
ListenAddress 127.0.0.1:$ssh_port
HostKey $ssh_dir/host_ed25519
PidFile $ssh_dir/sshd.pid
AuthorizedKeysFile $ssh_dir/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
AllowTcpForwarding yes
MaxSessions 64
MaxStartups 64:30:128
ClientAliveInterval 15
# Sessions get a HOME of their own: root's ~/.bashrc on this image runs pyenv's init,
# whose rehash takes a lock; concurrent SSH commands then queue behind it for seconds.
SetEnv HOME=$ssh_dir/home
SSHD
        mkdir -p "$ssh_dir/home"
        /usr/sbin/sshd -D -e -f "$ssh_dir/sshd_config" >"$ssh_dir/sshd.log" 2>&1 &
        export PAYPERPLAY_SSHD_PID=$!
        local i
        for i in $(seq 1 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$ssh_port") 2>/dev/null; then
                break
            fi
            kill -0 "$PAYPERPLAY_SSHD_PID" 2>/dev/null || { cat "$ssh_dir/sshd.log" >&2; return 1; }
            sleep 0.1
        done
        export PAYPERPLAY_TEST_SSH_PORT="$ssh_port"
        export PAYPERPLAY_TEST_SSH_KEY="$ssh_dir/client_ed25519"
        PAYPERPLAY_TEST_SSH_HOST_KEY="$(cut -d' ' -f1,2 "$ssh_dir/host_ed25519.pub")"
        export PAYPERPLAY_TEST_SSH_HOST_KEY
        echo "start-services: sshd on 127.0.0.1:$ssh_port (user root, key $PAYPERPLAY_TEST_SSH_KEY)" >&2
    fi
}

# Stops what payperplay_start_node_services started: sshd, every container of our engine,
# the engine (and its containerd), then unmounts what the engine left mounted.
payperplay_stop_node_services() {
    if [ -n "${PAYPERPLAY_SSHD_PID:-}" ]; then
        kill "$PAYPERPLAY_SSHD_PID" 2>/dev/null || true
    fi
    if [ -n "${PAYPERPLAY_DOCKERD_PID:-}" ]; then
        local socket="unix://$PAYPERPLAY_TEST_DOCKER_SOCKET"
        local ids
        ids="$(docker -H "$socket" ps -aq 2>/dev/null || true)"
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086
            docker -H "$socket" rm -f $ids >/dev/null 2>&1 || true
        fi
        kill "$PAYPERPLAY_DOCKERD_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 150); do
            kill -0 "$PAYPERPLAY_DOCKERD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$PAYPERPLAY_DOCKERD_PID" 2>/dev/null || true
    fi
    if [ -n "${PAYPERPLAY_SERVICES_DIR:-}" ] && [ -d "$PAYPERPLAY_SERVICES_DIR/docker" ]; then
        local mount_point
        awk -v dir="$PAYPERPLAY_SERVICES_DIR/docker" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r |
            while read -r mount_point; do umount -l "$mount_point" 2>/dev/null || true; done
    fi
}

payperplay_stop_services() {
    payperplay_stop_node_services
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
