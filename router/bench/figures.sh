#!/usr/bin/env bash
# The player router's figures: wake path latency, 10,000 idle players held (router RSS
# and new clients' ping latency meanwhile), proxied throughput against direct.
# Raises the open-file limit first (the router holds two sockets per player).
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n)" >&2
cargo build --release -p payperplay-testgame
cargo bench -p payperplay-router --bench router
