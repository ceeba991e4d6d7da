#!/usr/bin/env bash
# scripts/bench-deflate.sh [--quick]
#
# The WebSocket compression benchmarks, on loopback, with
# WebSocket members and chat-like JSON pushes of 600 bytes:
#
#   1. fan-out, 1 room x 1,000 at 1,000 pushes/s and 100 rooms x 100 at
#      10,000 pushes/s (1 M deliveries/s each: a rate the generator reads
#      whole, uncompressed, on its one CPU), one server shard, the generator
#      pinned to the other CPU; three ways, alternated ROUNDS times (default 3):
#        plain      members offer no extension (goim's bytes);
#        shared     members negotiate permessage-deflate; each push is
#                   compressed once per shard and shared (corecast's way);
#        per-member the same, compressed again for every member
#                   (ws.compression_per_member = true: the naive way);
#      with wire bytes per delivery (what members read, frame headers and
#      heartbeat replies included) and deliveries per server CPU-second;
#   2. idle RSS per WebSocket connection, 10,000 connections, with and
#      without compression negotiated.
#
# Prints a Markdown section on stdout (scripts/bench.sh appends it to
# docs/benchmarks.md). Every server listens on 127.0.0.1 port 0 and is
# stopped by its PID; every generator run is bounded by `timeout`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DUR=10
IDLE_N=10000
[[ ${1:-} == --quick ]] && { DUR=3; IDLE_N=2000; }
ROUNDS=${ROUNDS:-3}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
SERVER=$ROOT/target/release/corecast
GEN=$ROOT/target/release/corecast-bench
[[ -x $SERVER && -x $GEN ]] || nice -n 10 cargo build --release --workspace >&2 || exit 1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/corecast-deflate.XXXXXX")
PID=""
cleanup() {
    [[ -n $PID ]] && kill -KILL "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=scripts/launch-lib.sh
source "$ROOT/scripts/launch-lib.sh"

json_num() { grep -o "\"$2\":[-0-9.e+]*" <<<"$1" | head -1 | cut -d: -f2; }

# start SHARDS PER_MEMBER(true|false): sets PID, WS, HTTP.
start() {
    cat >"$WORK/server.toml" <<EOF
[server]
shards = $1
log_level = "warn"
shutdown_grace_ms = 200
[tcp]
bind = "127.0.0.1:0"
[http]
bind = "127.0.0.1:0"
[ws]
bind = "127.0.0.1:0"
compression_per_member = $2
[protocol]
heartbeat_s = 60
EOF
    launch_corecast "$SERVER" "$WORK/server.toml" "$WORK/server.out" "$WORK/server.err" ||
        { echo "server did not start: $(tail -3 "$WORK/server.err")" >&2; exit 1; }
    PID=$LAUNCHED_PID
}

stop() {
    stop_corecast "$PID"
    PID=""
}

metric() { curl -s "http://$HTTP/metrics" | awk -v n="$1" '$1 == n {print $2}'; }

# fanout MODE ROOMS PER_ROOM RATE(0 = saturated) ->
#   "deliveries_per_cpu_s wire_bytes_per_delivery compressed_received missing server_compressions"
fanout() {
    local mode=$1 rooms=$2 per_room=$3 rate=$4 per_member=false flags=(--websocket --body-json --body-bytes 600)
    if [[ $rate == 0 ]]; then flags+=(--pipeline 16); else flags+=(--rate "$rate"); fi
    [[ $mode != plain ]] && flags+=(--deflate)
    [[ $mode == per-member ]] && per_member=true
    start 1 "$per_member"
    local j
    j=$(timeout 300 taskset -c 1 "$GEN" fanout --tcp "$WS" --http "$HTTP" --server-pid "$PID" \
        --members-per-room "$per_room" --rooms "$rooms" --publishers 8 --duration-s "$DUR" \
        --heartbeat-s 60 --json --label "$mode" "${flags[@]}" 2>"$WORK/gen.err" | grep '^{' | tail -1)
    sleep 0.3 # one online_sync_ms for the shard's counters to reach /metrics
    local compressions
    compressions=$(metric corecast_ws_compressed_messages_total)
    stop
    [[ -n $j ]] || { echo "generator failed: $(tail -3 "$WORK/gen.err")" >&2; echo "0 0 0 -1 0"; return; }
    echo "$(json_num "$j" deliveries_per_server_cpu_s) $(json_num "$j" wire_bytes_per_delivery)" \
        "$(json_num "$j" compressed_messages) $(json_num "$j" missing) ${compressions:-0}"
}

echo "## WebSocket compression (scripts/bench-deflate.sh$([[ $DUR == 3 ]] && echo ' --quick'))"
echo
echo "corecast $(git rev-parse --short HEAD), $(nproc) CPUs, one server shard, generator pinned to CPU 1. WebSocket members, pushes of 600 bytes of chat-like JSON (a 20-byte binary header the generator reads, then a different window of a run of chat and gift events for every push), 1 M deliveries/s from 8 publishers, $DUR s. Wire bytes are what members read per delivery (WebSocket and op-9 headers and heartbeat replies included). ws.compression_level = 1 (the default)."
echo
table() { # SHAPES MODES...: one Markdown table, the first mode the baseline
    local shapes=$1
    shift
    echo "| round | members (pushes/s) | mode | wire bytes / delivery | deliveries / server CPU-s | vs $1 | compressed messages received | compressions by the server | missing |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for r in $(seq 1 "$ROUNDS"); do
        for shape in $shapes; do
            IFS=: read -r rooms per_room push_rate <<<"$shape"
            base=""
            for mode in "$@"; do
                read -r rate wire compressed missing compressions < <(fanout "$mode" "$rooms" "$per_room" "$push_rate")
                [[ -z $base ]] && base=$rate
                printf '| %s | %s x %s (%s) | %s | %.1f | %.0f | %.3f | %s | %s | %s |\n' "$r" "$rooms" "$per_room" \
                    "$([[ $push_rate == 0 ]] && echo saturated || echo "$push_rate")" "$mode" "$wire" "$rate" \
                    "$(awk -v a="$rate" -v b="$base" 'BEGIN { print (b > 0 ? a / b : 0) }')" "$compressed" \
                    "$compressions" "$missing"
            done
        done
    done
}
echo "### At 1 M deliveries/s: plain, shared and per-member"
echo
echo "At 1 x 1000 the server is at its write-call ceiling either way (one push per pass, one write per member, one CPU-second per second at 1 M deliveries/s), so the CPU ratio there is 1 by construction and only the wire bytes differ. At 100 x 100 it cannot reach the offered rate (the API side is the bound), so that ratio compares work done per CPU-second at saturation."
echo
table "1:1000:1000 100:100:10000" plain shared per-member
echo
echo "### Saturated: compressing once per shard against once per member"
echo
echo "Both ways members read compressed bytes (plain WebSocket members cannot be saturated from one generator CPU: the server writes faster than it reads 600-byte messages). At 1 x 1000 compressed once, the server still outruns the generator (the missing column): those rows count only what members read before the end, so they are a floor for the shared way."
echo
table "1:1000:0 100:100:0" shared per-member
echo
echo "### Idle WebSocket connections, with and without compression negotiated"
echo
echo "| connections | negotiated | server RSS / connection (bytes) |"
echo "|---|---|---|"
for deflate in no yes; do
    start 1 false
    flags=(--websocket)
    [[ $deflate == yes ]] && flags+=(--deflate)
    j=$(timeout 300 "$GEN" idle --tcp "$WS" --http "$HTTP" --server-pid "$PID" --conns "$IDLE_N" --rooms 1000 \
        --heartbeat-s 10 --hold-s 5 --json --label "idle-ws-$deflate" "${flags[@]}" 2>"$WORK/gen.err" | grep '^{' | tail -1)
    stop
    printf '| %s | %s | %.0f |\n' "$(json_num "$j" authed)" "$deflate" "$(json_num "$j" rss_per_conn_bytes)"
done
