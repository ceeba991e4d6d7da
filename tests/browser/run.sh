#!/usr/bin/env bash
# Browser tests: the demo page (examples/web) and the JS client (clients/js)
# in headless Chromium. demo.test.mjs runs the real corecast binary
# (CORECAST_BIN, default target/debug/corecast: build it first); fake.test.mjs
# runs against a Node stand-in. Needs Node >= 20 and Debian's chromium
# (apt-get install -y chromium, or set CHROMIUM_BIN).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ ! -d "$here/node_modules/playwright-core" ]; then
  if [ -f "$here/package-lock.json" ]; then
    (cd "$here" && npm ci --no-audit --no-fund)
  else
    (cd "$here" && npm install --no-audit --no-fund)
  fi
fi
cd "$root"
exec node --test tests/browser/*.test.mjs
