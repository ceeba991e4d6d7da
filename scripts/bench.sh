#!/usr/bin/env bash
# scripts/bench.sh [--quick]
#
# Builds the workspace in release, runs the standard benchmark scenarios of
# corecast against a fresh server per run on 127.0.0.1, and writes
# docs/benchmarks.md (machine, config, bars, every figure).
#
#   --quick   smaller windows (3 s) and holds; finishes in a few minutes.
#
# Environment: KEEP_WORK=1 keeps the scratch directory (configs, server and
# generator logs, results.jsonl) and prints its path.
#
# Every server listens on 127.0.0.1 port 0 and is stopped with SIGTERM (by PID)
# after its run; every generator run is bounded by `timeout`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MODE=full
case "${1:-}" in
    --quick) MODE=quick ;;
    "") ;;
    -h | --help)
        sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: scripts/bench.sh [--quick]" >&2
        exit 2
        ;;
esac

# The generator and the server both want every file descriptor they can get.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== building (release, workspace)" >&2
nice -n 10 cargo build --release --workspace || exit 1

SERVER=$ROOT/target/release/corecast
GEN=$ROOT/target/release/corecast-bench
WORK=$(mktemp -d "${TMPDIR:-/tmp}/corecast-bench.XXXXXX")
RESULTS=$WORK/results.jsonl
META=$WORK/meta.tsv
: >"$RESULTS"
NOTES=()
SERVER_PID=""
T_START=$(date +%s)

cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        sleep 1
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    if [[ ${KEEP_WORK:-0} == 1 ]]; then
        echo "scratch directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() {
    echo "!! $*" >&2
    NOTES+=("$*")
}

# Scenario sizes.
HB=10 # [protocol] heartbeat_s of the server and the generator's heartbeat interval
if [[ $MODE == quick ]]; then
    DUR=3
    HOLD=3
    IDLE_NS=(2000 5000 10000 19000)
    API_MODES=("64 1" "8 16")
    SCALE_API_MODES=("8 16")
else
    DUR=10
    HOLD=12
    IDLE_NS=(2000 5000 10000 19000)
    API_MODES=("64 1" "8 16")
    SCALE_API_MODES=("64 1" "8 16")
fi

# start_server, stop_server, run.
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

# Machine description (and what else was using the CPUs when we started).
{
    printf 'mode\t%s\n' "$MODE"
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    printf 'uname\t%s\n' "$(uname -a)"
    printf 'cpu\t%s\n' "$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    printf 'cpus\t%s online (%s)\n' "$(nproc --all)" "$(lscpu | sed -n 's/^Hypervisor vendor: *//p' | sed 's/^/hypervisor: /')"
    printf 'memory\t%s total\n' "$(free -h | awk '/^Mem:/ {print $2}')"
    printf 'rustc\t%s\n' "$(rustc --version)"
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -n $(git status --porcelain 2>/dev/null) ]] && commit="$commit (working tree has uncommitted changes)"
    printf 'commit\t%s\n' "$commit"
    printf 'load_before\t%s; busiest other processes: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" \
        "$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 > 20 && $2 != "ps" {printf "%s (%s%% CPU) ", $2, $1}')"
    printf 'nofile\t%s (generator and server raise soft to hard)\n' "$(ulimit -n)"
} >"$META"

# 1. Idle connections: a fresh server per N.
for n in "${IDLE_NS[@]}"; do
    run idle "idle-$n" 1 idle --conns "$n" --rooms 1000 --heartbeat-s "$HB" --hold-s "$HOLD"
done
# The same top N spread over two generator processes (--procs).
run idle "idle-19000-p2" 1 idle --conns 19000 --procs 2 --rooms 1000 --heartbeat-s "$HB" --hold-s "$HOLD"
# The same over WebSocket: a WebSocket connection should cost what a TCP one costs.
run idle "idle-ws-10000" 1 idle --websocket --conns 10000 --rooms 1000 --heartbeat-s "$HB" --hold-s "$HOLD"

# 2. Room fan-out at saturation.
for c in 1000 10000; do
    run fanout "fanout-c$c" 1 fanout --members-per-room "$c" --rooms 1 --publishers 8 --pipeline 16 \
        --duration-s "$DUR" --heartbeat-s "$HB"
done

# 3. Latency at a steady rate.
run latency latency-c1000-r100 1 fanout --members-per-room 1000 --rooms 1 --rate 100 --publishers 1 \
    --duration-s "$DUR" --heartbeat-s "$HB"
run latency latency-c100-r1000 1 fanout --members-per-room 100 --rooms 1 --rate 1000 --publishers 1 \
    --duration-s "$DUR" --heartbeat-s "$HB"
# The same spread over two shards (a way to the bar: each shard's pass covers
# half the room), the generator with two receiving threads; and one shard with
# a generator whose receivers never sleep (a receiver's wake-up is part of
# each loopback send's cost).
run latency latency-c1000-r100-s2 2 fanout --members-per-room 1000 --rooms 1 --rate 100 --publishers 1 \
    --recv-threads 2 --duration-s "$DUR" --heartbeat-s "$HB"
run latency latency-c100-r1000-s2 2 fanout --members-per-room 100 --rooms 1 --rate 1000 --publishers 1 \
    --recv-threads 2 --duration-s "$DUR" --heartbeat-s "$HB"
run latency latency-c1000-r100-busypoll 1 fanout --members-per-room 1000 --rooms 1 --rate 100 --publishers 1 \
    --busy-poll --duration-s "$DUR" --heartbeat-s "$HB"

# 4. Many rooms.
run rooms rooms-100x100 1 fanout --members-per-room 100 --rooms 100 --publishers 8 --pipeline 16 \
    --duration-s "$DUR" --heartbeat-s "$HB"
# The many-rooms scenario wants 10,000 rooms of 10 (100,000 connections); the open-file
# hard limit of 20,000 per process (server included: one shard holds at most
# 19,928 clients) caps this machine at 19,000, so: 1,900 rooms of 10.
run rooms rooms-1900x10 1 fanout --members-per-room 10 --rooms 1900 --publishers 8 --pipeline 16 \
    --duration-s "$DUR" --heartbeat-s "$HB"

# 5. Push API.
for mode in "${API_MODES[@]}"; do
    read -r conns pipe <<<"$mode"
    for ep in keys mids room; do
        run api "api-$ep-${conns}x$pipe" 1 api --endpoint "$ep" --conns "$conns" --pipeline "$pipe" \
            --duration-s "$DUR" --heartbeat-s "$HB"
    done
done

# 6. Broadcast.
for speed in 0 20000; do
    run broadcast "broadcast-speed$speed" 1 broadcast --conns 19000 --speed "$speed" --rooms 1000 \
        --heartbeat-s "$HB"
done

# 7. Scaling: the same with two shards.
run scaling fanout-c1000-s2 2 fanout --members-per-room 1000 --rooms 1 --publishers 8 --pipeline 16 \
    --duration-s "$DUR" --heartbeat-s "$HB"
for mode in "${SCALE_API_MODES[@]}"; do
    read -r conns pipe <<<"$mode"
    for ep in keys mids room; do
        run scaling "api-$ep-${conns}x$pipe-s2" 2 api --endpoint "$ep" --conns "$conns" --pipeline "$pipe" \
            --duration-s "$DUR" --heartbeat-s "$HB"
    done
done

# 8. Sequential: one request at a time, a new connection per request (a simple
# back end), one member checking every push arrives and in order.
run sequential sequential-s2 2 sequential --members 1 --duration-s "$DUR" --heartbeat-s "$HB"

# 9. The cluster: connections, fan-out and the cost of clustering
# over a real nats-server, when it is installed. Appended to the report.
CLUSTER_MD=$WORK/cluster.md
if command -v nats-server >/dev/null 2>&1 || [[ -x /usr/sbin/nats-server ]]; then
    echo "== cluster: scripts/bench-cluster.sh" >&2
    quick=()
    [[ $MODE == quick ]] && quick=(--quick)
    bash scripts/bench-cluster.sh "${quick[@]}" >"$CLUSTER_MD" || note "bench-cluster.sh failed (exit $?)"
else
    note "nats-server not installed: cluster benchmarks skipped"
fi

# 10. WebSocket compression: plain, shared and per-member
# deflate, and idle RSS with compression negotiated. Appended to the report.
DEFLATE_MD=$WORK/deflate.md
echo "== compression: scripts/bench-deflate.sh" >&2
quick=()
[[ $MODE == quick ]] && quick=(--quick)
bash scripts/bench-deflate.sh "${quick[@]}" >"$DEFLATE_MD" || note "bench-deflate.sh failed (exit $?)"

ELAPSED=$(($(date +%s) - T_START))
{
    printf 'elapsed\t%d s\n' "$ELAPSED"
    joined=""
    for n in "${NOTES[@]+"${NOTES[@]}"}"; do
        joined+="${joined:+ ;; }${n//$'\t'/ }"
    done
    printf 'notes\t%s\n' "$joined"
} >>"$META"

mkdir -p docs
"$GEN" report --results "$RESULTS" --meta "$META" --out docs/benchmarks.md || exit 1
if [[ -s $CLUSTER_MD ]]; then
    { echo; cat "$CLUSTER_MD"; } >>docs/benchmarks.md
fi
if [[ -s $DEFLATE_MD ]]; then
    { echo; cat "$DEFLATE_MD"; } >>docs/benchmarks.md
fi
echo "== done in ${ELAPSED} s: docs/benchmarks.md" >&2
