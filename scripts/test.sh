#!/usr/bin/env bash
# The project's test command: formatting, lints, unit and end-to-end tests
# (Rust), the JavaScript client's unit tests, and the demo page in headless
# Chromium against the real server. Installs missing test tools first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --no-fail-fast
node --test clients/js/
CORECAST_BIN=target/debug/corecast tests/browser/run.sh
