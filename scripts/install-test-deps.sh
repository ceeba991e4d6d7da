#!/usr/bin/env bash
# Installs what the tests need beyond Rust, only when it is missing:
# Debian's chromium (browser test) and nats-server (cluster tests), Python's
# `websockets` (an independent WebSocket client for the conformance test) and
# `prometheus_client` (the exposition parser) in a virtual environment,
# playwright-core (npm); and it checks the Node version.
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
# Python test tools live in a virtual environment of their own (plain pip as
# root fights the system Python on Debian): target/test-venv, which the tests
# use when it exists (tests/common/mod.rs: python()).
VENV=target/test-venv
if [[ ! -x $VENV/bin/python3 ]] || ! "$VENV/bin/python3" -c "import websockets, prometheus_client" 2>/dev/null; then
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python3" -m pip install -q websockets prometheus_client
fi
# The Node version the client tests and the browser test need.
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [[ $NODE_MAJOR -lt 18 ]]; then
    echo "install-test-deps: Node.js 18 or newer is needed (found: $(node --version 2>/dev/null || echo none))" >&2
    exit 1
fi
if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
