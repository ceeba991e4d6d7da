#!/usr/bin/env bash
# scripts/bench-deflate.sh [--quick]
#
# The WebSocket compression benchmarks of issue 11, on loopback, with
# WebSocket members and chat-like JSON pushes of 600 bytes:
#
#   1. fan-out, 1 room x 1,000 and 100 rooms x 100, saturated (8 publishers
#      x 16 pipelined), one server shard, the generator pinned to the other
#      CPU; three ways, alternated ROUNDS times (default 3):
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
    "$SERVER" --config "$WORK/server.toml" >"$WORK/server.out" 2>"$WORK/server.err" &
    PID=$!
    local line=""
    for _ in $(seq 1 100); do
        line=$(grep -m1 '^corecast ready' "$WORK/server.out" 2>/dev/null) && break
        sleep 0.1
    done
    [[ -n $line ]] || { echo "server did not start: $(tail -3 "$WORK/server.err")" >&2; exit 1; }
    WS=$(sed -n 's/.*ws=\([^ ]*\).*/\1/p' <<<"$line")
    HTTP=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' <<<"$line")
}

stop() {
    kill -TERM "$PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
    PID=""
}

# fanout MODE ROOMS PER_ROOM -> "deliveries_per_cpu_s wire_bytes_per_delivery compressed missing"
fanout() {
    local mode=$1 rooms=$2 per_room=$3 per_member=false flags=(--websocket --body-json --body-bytes 600)
    [[ $mode != plain ]] && flags+=(--deflate)
    [[ $mode == per-member ]] && per_member=true
    start 1 "$per_member"
    local j
    j=$(timeout 300 taskset -c 1 "$GEN" fanout --tcp "$WS" --http "$HTTP" --server-pid "$PID" \
        --members-per-room "$per_room" --rooms "$rooms" --publishers 8 --pipeline 16 --duration-s "$DUR" \
        --heartbeat-s 60 --json --label "$mode" "${flags[@]}" 2>"$WORK/gen.err" | grep '^{' | tail -1)
    stop
    [[ -n $j ]] || { echo "generator failed: $(tail -3 "$WORK/gen.err")" >&2; echo "0 0 0 -1"; return; }
    echo "$(json_num "$j" deliveries_per_server_cpu_s) $(json_num "$j" wire_bytes_per_delivery)" \
        "$(json_num "$j" compressed_messages) $(json_num "$j" missing)"
}

echo "## WebSocket compression (scripts/bench-deflate.sh$([[ $DUR == 3 ]] && echo ' --quick'))"
echo
echo "corecast $(git rev-parse --short HEAD), $(nproc) CPUs, one server shard, generator pinned to CPU 1. WebSocket members, pushes of 600 bytes of chat-like JSON (a 20-byte binary header the generator reads, then JSON), saturated: 8 publishers x 16 pipelined, $DUR s. Wire bytes are what members read per delivery (WebSocket and op-9 headers and heartbeat replies included). ws.compression_level = 1 (the default)."
echo
echo "| round | members | mode | wire bytes / delivery | deliveries / server CPU-s | vs plain | compressed messages received | missing |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
    for shape in "1 1000" "100 100"; do
        read -r rooms per_room <<<"$shape"
        plain=""
        for mode in plain shared per-member; do
            read -r rate wire compressed missing < <(fanout "$mode" "$rooms" "$per_room")
            [[ $mode == plain ]] && plain=$rate
            printf '| %s | %s x %s | %s | %.1f | %.0f | %.3f | %s | %s |\n' "$r" "$rooms" "$per_room" "$mode" \
                "$wire" "$rate" "$(awk -v a="$rate" -v b="$plain" 'BEGIN { print (b > 0 ? a / b : 0) }')" \
                "$compressed" "$missing"
        done
    done
done
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
