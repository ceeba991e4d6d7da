#!/usr/bin/env bash
# The project's test command: formatting, lints, unit and end-to-end tests
# (Rust, the whole workspace: the server and the bench crate), the
# JavaScript client's unit tests, the demo page in headless Chromium against
# the real server, and a short smoke of every fuzz target (3 s each, when the
# nightly toolchain is there). Installs missing test tools first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo fmt --all --check
cargo fmt --check --manifest-path fuzz/Cargo.toml
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
node --test clients/js/
CORECAST_BIN=target/debug/corecast tests/browser/run.sh
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    scripts/fuzz.sh 3
else
    echo "test.sh: no nightly toolchain: fuzz smoke skipped (scripts/fuzz.sh needs cargo +nightly)" >&2
fi
