# Shared by scripts/bench.sh and scripts/compare.sh (sourced, not run).
#
# Expects: WORK (scratch directory), RESULTS (JSON lines file), GEN (the
# generator), SERVER (the server binary), HB (heartbeat_s), NOTES (array) and
# a note() function. Every server listens on 127.0.0.1 port 0 and is stopped
# with SIGTERM by PID; every generator run is bounded by `timeout`.

# shellcheck source=scripts/launch-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/launch-lib.sh"

SERVER_CONFIG=""
# start_server SHARDS: a fresh server from a generated config; sets SERVER_PID, TCP, HTTP.
start_server() {
    local shards=$1 cfg=$WORK/server.toml
    cat >"$cfg" <<EOF
[server]
shards = $shards
log_level = "warn"
shutdown_grace_ms = 200

[tcp]
bind = "127.0.0.1:0"

[http]
bind = "127.0.0.1:0"

[ws]
bind = "127.0.0.1:0"

[protocol]
heartbeat_s = $HB
EOF
    SERVER_CONFIG="shards = $shards, heartbeat_s = $HB, log_level = warn; other keys default (heartbeat_max = 2, slow_consumer_policy = close, outbound_bytes_per_connection_max = 262144)"
    if ! launch_corecast "$SERVER" "$cfg" "$WORK/server.out" "$WORK/server.err"; then
        note "server did not become ready (shards=$shards): $(tail -3 "$WORK/server.err" | tr '\n' ' ')"
        SERVER_PID=""
        return 1
    fi
    SERVER_PID=$LAUNCHED_PID
    sleep 0.2
}

# stop_server LABEL: SIGTERM by PID, bounded wait, note anything odd.
stop_server() {
    local label=$1 rc i
    [[ -z $SERVER_PID ]] && return
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID"
        rc=$?
        note "$label: the server had exited by itself before SIGTERM (exit code $rc): $(tail -3 "$WORK/server.err" | tr '\n' ' ')"
    else
        kill -TERM "$SERVER_PID"
        for i in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            note "$label: the server did not exit within 10 s of SIGTERM; killed"
            kill -KILL "$SERVER_PID" 2>/dev/null
        fi
        wait "$SERVER_PID"
        rc=$?
        [[ $rc != 0 ]] && note "$label: server exit code $rc after SIGTERM"
    fi
    # Anything the server logged at warn level or above, except the
    # open-file ceiling line it prints at every start.
    local logged
    logged=$(grep -v 'open-file ceiling' "$WORK/server.err" | grep -E 'WARN|ERROR|panic' | head -3 | tr '\n' ' ')
    [[ -n $logged ]] && note "$label: server stderr: ${logged:0:400}"
    cp "$WORK/server.err" "$WORK/server-$label.err" 2>/dev/null
    SERVER_PID=""
}

# run SECTION LABEL SHARDS GENERATOR-ARGS...: one run against a fresh server.
run() {
    local section=$1 label=$2 shards=$3
    shift 3
    echo "== $label (shards=$shards): corecast-bench $*" >&2
    if ! start_server "$shards"; then
        printf '{"section":"%s","label":"%s","shards":%s,"failed":"server did not start"}\n' \
            "$section" "$label" "$shards" >>"$RESULTS"
        return
    fi
    local pin=()
    [[ $shards == 1 ]] && pin=(taskset -c 1)
    local out rc target=$TCP
    # The WebSocket idle run connects to the WebSocket port instead.
    [[ " $* " == *" --websocket "* ]] && target=$WS
    out=$(timeout 300 "${pin[@]}" "$GEN" "$@" --tcp "$target" --http "$HTTP" --server-pid "$SERVER_PID" \
        --json --label "$label" 2>"$WORK/gen.err")
    rc=$?
    local json
    json=$(grep '^{' <<<"$out" | tail -1)
    if [[ $rc == 0 && -n $json ]]; then
        printf '{"section":"%s","shards":%s,"server_config":"%s",%s\n' \
            "$section" "$shards" "$SERVER_CONFIG" "${json#\{}" >>"$RESULTS"
        grep -E '^  (authed|requests_per_s|reply_p99_us|server_cpu_us_per_request|inversions|delivered_per_s|deliveries_per_server_cpu_s|requests_per_server_cpu_s|missing|out_of_order|members_closed|lat_p99_us|last_recv_ms|connects_per_s|rss_per_conn_bytes|gen_limited|errors) ' \
            "$WORK/gen.err" >&2
        local errs
        errs=$(grep -o '"errors":"[^"]\+"' <<<"$json" | sed 's/^"errors":"//; s/"$//')
        [[ -n $errs ]] && note "$label: generator saw: ${errs:0:400}"
    else
        local why
        why=$(tail -2 "$WORK/gen.err" | tr '\n' ' ' | sed 's/"/'"'"'/g')
        [[ $rc == 124 ]] && why="timed out after 300 s; $why"
        note "$label: generator failed (exit $rc): $why"
        printf '{"section":"%s","label":"%s","shards":%s,"failed":"exit %s: %s"}\n' \
            "$section" "$label" "$shards" "$rc" "${why:0:300}" >>"$RESULTS"
    fi
    stop_server "$label"
}

