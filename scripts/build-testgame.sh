#!/usr/bin/env bash
# Builds the test game server (payperplay-testgame) as a static binary for an image
# built FROM scratch, checks that it is static, and prints its absolute path on stdout.
#
# glibc with crt-static, not musl: no musl target is installed with the toolchain and
# the test setup cannot count on fetching one. Building with an explicit --target keeps
# these RUSTFLAGS out of the normal target/release cache (its own directory
# target/x86_64-unknown-linux-gnu/release), so ordinary builds are not invalidated.
# The binary resolves no host names (it binds and serves IP addresses only), so glibc's
# static NSS caveat does not apply.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p payperplay-testgame \
    --target x86_64-unknown-linux-gnu >&2
binary="$(cd "$target_dir/x86_64-unknown-linux-gnu/release" && pwd)/payperplay-testgame"

# Static means: no program interpreter (no ld-linux) and no needed shared libraries.
if command -v readelf >/dev/null 2>&1; then
    if readelf --program-headers "$binary" | grep -q 'INTERP'; then
        echo "build-testgame: $binary has a program interpreter: it is not static" >&2
        exit 1
    fi
    if readelf --dynamic "$binary" | grep -q '(NEEDED)'; then
        echo "build-testgame: $binary needs shared libraries:" >&2
        readelf --dynamic "$binary" | grep '(NEEDED)' >&2
        exit 1
    fi
fi
if command -v ldd >/dev/null 2>&1; then
    ldd_output="$(ldd "$binary" 2>&1 || true)"
    case "$ldd_output" in
        *"not a dynamic executable"* | *"statically linked"*) ;;
        *) echo "build-testgame: ldd lists dependencies of $binary:" >&2; echo "$ldd_output" >&2; exit 1 ;;
    esac
fi
if command -v file >/dev/null 2>&1; then
    file "$binary" >&2
fi
echo "$binary"
