#!/usr/bin/env bash
# Installs what the tests need beyond Rust, only when it is missing:
# Debian's chromium (browser test), Python's `websockets` (an independent
# WebSocket client for the conformance test), playwright-core (npm).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[[ $(id -u) == 0 ]] || SUDO="sudo"
if ! command -v chromium >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if ! python3 -c "import websockets" 2>/dev/null; then
    python3 -m pip install -q websockets
fi
if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
