#!/usr/bin/env bash
# Records a perf profile of the server under one load-generator scenario.
#
#   scripts/profile.sh [--shards N] [--seconds S] -- <corecast-bench scenario and flags>
#   e.g. scripts/profile.sh --shards 1 -- fanout --members-per-room 1000 --rate 100 --publishers 1
#
# Writes perf.data and a flat report (top symbols, kernel and user) to a
# temporary directory it prints. Needs `perf` (Debian: linux-perf).
# CORECAST_BIN=PATH profiles another server binary (an older build, say);
# EXTRA_TOML='...' is appended to the server's config (a [cluster] section, say).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS=1
SECONDS_TO_RECORD=5
while [[ $# -gt 0 ]]; do
    case $1 in
        --shards) SHARDS=$2; shift 2 ;;
        --seconds) SECONDS_TO_RECORD=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [--shards N] [--seconds S] -- <scenario> [flags]" >&2; exit 2 ;;
    esac
done
[[ $# -gt 0 ]] || { echo "give a corecast-bench scenario after --" >&2; exit 2; }
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release --workspace -q
WORK=$(mktemp -d /tmp/corecast-profile.XXXXXX)
cat >"$WORK/server.toml" <<TOML
[server]
shards = $SHARDS
log_level = "warn"
[tcp]
bind = "127.0.0.1:0"
[http]
bind = "127.0.0.1:0"
[ws]
bind = ""
TOML
printf '%b\n' "${EXTRA_TOML:-}" >>"$WORK/server.toml"
ulimit -n "$(ulimit -Hn)"
# shellcheck source=scripts/launch-lib.sh
source scripts/launch-lib.sh
launch_corecast "${CORECAST_BIN:-target/release/corecast}" "$WORK/server.toml" "$WORK/server.out" "$WORK/server.err" ||
    { echo "profile: the server did not start: $(tail -3 "$WORK/server.err")" >&2; exit 1; }
SERVER=$LAUNCHED_PID
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
PIN=()
[[ $SHARDS == 1 ]] && PIN=(taskset -c 1)
"${PIN[@]}" target/release/corecast-bench "$@" --duration-s $((SECONDS_TO_RECORD + 4)) \
    --tcp "$TCP" --http "$HTTP" --server-pid "$SERVER" >"$WORK/bench.out" 2>&1 &
BENCH=$!
sleep 2
perf record -F 1999 -g -p "$SERVER" -o "$WORK/perf.data" -- sleep "$SECONDS_TO_RECORD" 2>/dev/null
wait $BENCH || true
perf report -i "$WORK/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' >"$WORK/report.txt" || true
perf report -i "$WORK/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9]' | head -40 >>"$WORK/report.txt" || true
cat "$WORK/report.txt"
echo "profile: $WORK/perf.data (perf report -i $WORK/perf.data); generator output: $WORK/bench.out"
