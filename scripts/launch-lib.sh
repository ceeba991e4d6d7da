# Starting and stopping one corecast for the scripts (sourced by
# bench-lib.sh, bench-deflate.sh, bench-cluster.sh, soak.sh and others, not
# run).
#
# launch_corecast BINARY CONFIG OUT ERR: starts BINARY --config CONFIG with
# stdout to OUT and stderr to ERR, waits up to 10 s for its
# "corecast ready" line, and sets LAUNCHED_PID, TCP, HTTP and WS (WS is
# empty when the config has no WebSocket port). Returns 1, with the server
# killed, if it does not become ready.
launch_corecast() {
    local binary=$1 config=$2 out=$3 err=$4 line="" _
    : >"$out"
    "$binary" --config "$config" >"$out" 2>"$err" &
    LAUNCHED_PID=$!
    for _ in $(seq 1 100); do
        line=$(grep -m1 '^corecast ready' "$out" 2>/dev/null) && break
        kill -0 "$LAUNCHED_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $line ]]; then
        kill -KILL "$LAUNCHED_PID" 2>/dev/null
        wait "$LAUNCHED_PID" 2>/dev/null
        LAUNCHED_PID=""
        return 1
    fi
    TCP=$(sed -n 's/.*tcp=\([^ ]*\).*/\1/p' <<<"$line")
    HTTP=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' <<<"$line")
    WS=$(sed -n 's/.*ws=\([^ ]*\).*/\1/p' <<<"$line")
}

# stop_corecast PID: SIGTERM, up to 5 s to exit (the drain), then SIGKILL;
# reaps it either way.
stop_corecast() {
    local pid=$1 _
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
