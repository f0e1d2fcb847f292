#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, clippy with warnings denied, then
# every test of the workspace against the real services they need (PostgreSQL, an
# SMTP sink, Python test clients), which scripts/start-services.sh installs when
# missing and starts on loopback. Tests build with the release profile: the queueing
# theory checks simulate millions of events.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --release -- -D warnings

echo "== services"
# shellcheck source=scripts/start-services.sh
source scripts/start-services.sh

echo "== cargo test"
cargo test --workspace --release --no-fail-fast

echo "== scenarios: every shipped scenario meets its [expect] bounds and its baseline (reports/baselines)"
"${CARGO_TARGET_DIR:-target}/release/payperplay-sim" check scenarios/
