#!/usr/bin/env bash
# Installs what the tests need beyond Rust, only when it is missing:
# Debian's chromium (browser test) and nats-server (cluster tests), Python's
# `websockets` (an independent WebSocket client for the conformance test),
# playwright-core (npm).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[[ $(id -u) == 0 ]] || SUDO="sudo"
MISSING=()
command -v chromium >/dev/null 2>&1 || MISSING+=(chromium)
command -v nats-server >/dev/null 2>&1 || [[ -x /usr/sbin/nats-server ]] || MISSING+=(nats-server)
if [[ ${#MISSING[@]} -gt 0 ]]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MISSING[@]}" >/dev/null
fi
if ! python3 -c "import websockets" 2>/dev/null; then
    python3 -m pip install -q websockets
fi
if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
