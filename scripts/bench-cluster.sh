#!/usr/bin/env bash
# scripts/bench-cluster.sh [--quick]
#
# The cluster benchmarks, on loopback, against a real
# nats-server (Debian package) and corecast nodes started here:
#
#   1. connections: 3 nodes (2 shards each) holding 3 x 19,000 authenticated
#      connections at once (more than one process can hold under the
#      20,000-file cap), with the cluster-wide online/total seen by node 1
#      while they are held, and the RSS of each node and of nats-server;
#   2. fan-out across nodes: one room whose members are spread over the 3
#      nodes, pushed through node 1's API: deliveries per second, latency
#      p50/p99 at a fixed rate, and bus messages per push;
#   3. cost of clustering: one node, 1 room x 1,000 members, at a fixed
#      rate and saturated (8 x 16 and 16 x 16 pipelined publishers),
#      with and without [cluster], alternated ROUNDS times (default 3):
#      deliveries per server CPU-second (node alone, and node + nats-server).
#
# Prints a Markdown section on stdout (scripts/bench.sh appends it to
# docs/benchmarks.md). Every process it starts listens on 127.0.0.1 and is
# stopped by its PID; every generator run is bounded by `timeout`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
QUICK=0
[[ ${1:-} == --quick ]] && QUICK=1
ROUNDS=${ROUNDS:-3}
# SECTIONS="connections fanout cost" (the default) or any subset.
SECTIONS=${SECTIONS:-connections fanout cost}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
[[ -x $NATS_BIN ]] || { echo "bench-cluster: nats-server not installed (apt-get install nats-server)" >&2; exit 1; }
SERVER=$ROOT/target/release/corecast
GEN=$ROOT/target/release/corecast-bench
[[ -x $SERVER && -x $GEN ]] || nice -n 10 cargo build --release --workspace >&2 || exit 1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/corecast-cluster.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    sleep 0.5
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null
    done
    [[ ${KEEP_WORK:-0} == 1 ]] && echo "scratch directory kept: $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=scripts/launch-lib.sh
source "$ROOT/scripts/launch-lib.sh"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
json_num() { grep -o "\"$2\":[-0-9.e+]*" <<<"$1" | head -1 | cut -d: -f2; }
metric() { curl -s "http://$1/metrics" | awk -v n="$2" '$1 == n {print $2}'; }

NATS_PORT=""
NATS_PID=""
start_nats() {
    NATS_PORT=$(free_port)
    "$NATS_BIN" -a 127.0.0.1 -p "$NATS_PORT" >"$WORK/nats.log" 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nats-server did not start" >&2
    exit 1
}

# start_node NAME SHARDS CLUSTER(0|1): sets NODE_PID, NODE_TCP, NODE_HTTP.
start_node() {
    local name=$1 shards=$2 clustered=$3 cfg=$WORK/$1.toml
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
bind = ""
[protocol]
heartbeat_s = 60
[node]
hostname = "$name"
EOF
    if [[ $clustered == 1 ]]; then
        printf '[cluster]\nnats_urls = ["nats://127.0.0.1:%s"]\nnode_id = "%s"\n' "$NATS_PORT" "$name" >>"$cfg"
    fi
    launch_corecast "$SERVER" "$cfg" "$WORK/$name.out" "$WORK/$name.err" ||
        { echo "node $name did not start: $(tail -3 "$WORK/$name.err")" >&2; exit 1; }
    NODE_PID=$LAUNCHED_PID
    PIDS+=("$NODE_PID")
    NODE_TCP=$TCP
    NODE_HTTP=$HTTP
}


wait_live() { # HTTP COUNT
    for _ in $(seq 1 100); do
        [[ $(metric "$1" corecast_cluster_nodes_live) == "$2" ]] && return 0
        sleep 0.1
    done
    echo "node at $1 did not see $2 live nodes" >&2
    return 1
}

echo "## Cluster (scripts/bench-cluster.sh$([[ $QUICK == 1 ]] && echo ' --quick'))"
echo
echo "nats-server $("$NATS_BIN" --version | awk '{print $2}'), corecast $(git rev-parse --short HEAD), $(nproc) CPUs. Every node: shards = 2 unless noted, heartbeat_s = 60."
echo

# ---- 1. connections across nodes ----
start_nats
declare -a NP NT NH
if want connections; then
for i in 1 2 3; do
    start_node "node$i" 2 1
    NP[$i]=$NODE_PID NT[$i]=$NODE_TCP NH[$i]=$NODE_HTTP
done
for i in 1 2 3; do wait_live "${NH[$i]}" 3 || exit 1; done
PER_NODE=19000
[[ $QUICK == 1 ]] && PER_NODE=5000
HOLD_S=25
echo "== connections: 3 x $PER_NODE" >&2
IDLE_PIDS=()
for i in 1 2 3; do
    timeout 300 "$GEN" idle --tcp "${NT[$i]}" --http "${NH[$i]}" --server-pid "${NP[$i]}" --conns "$PER_NODE" \
        --rooms 1000 --hold-s "$HOLD_S" --heartbeat-s 60 --json --label "node$i" \
        >"$WORK/idle$i.json" 2>"$WORK/idle$i.err" &
    IDLE_PIDS+=($!)
done
TOTAL=""
for _ in $(seq 1 400); do
    TOTAL=$(curl -s "http://${NH[1]}/goim/online/total" | grep -o '"conn_count":[0-9]*' | cut -d: -f2)
    [[ $TOTAL == $((3 * PER_NODE)) ]] && break
    sleep 0.25
done
sleep 2
TOTAL=$(curl -s "http://${NH[1]}/goim/online/total" | grep -o '"conn_count":[0-9]*' | cut -d: -f2)
RSS_LINE=""
for i in 1 2 3; do RSS_LINE+="node$i $(( $(rss_kib "${NP[$i]}") / 1024 )) MiB, "; done
NATS_RSS=$(( $(rss_kib "$NATS_PID") / 1024 ))
SUBS=$(metric "${NH[1]}" corecast_cluster_bus_subscriptions)
wait "${IDLE_PIDS[@]}"
echo "### Connections across nodes"
echo
echo "| node | authenticated | connects/s | RSS per connection |"
echo "|---|---|---|---|"
for i in 1 2 3; do
    j=$(grep '^{' "$WORK/idle$i.json" | tail -1)
    printf '| node%s | %s | %.0f | %.0f B |\n' "$i" "$(json_num "$j" authed)" "$(json_num "$j" connects_per_s)" \
        "$(json_num "$j" rss_per_conn_bytes)"
done
echo
echo "- online/total on node 1 while all were held: conn_count = **$TOTAL** (3 processes, one per node; one process holds at most about 19,900 here)."
echo "- RSS while held: ${RSS_LINE}nats-server $NATS_RSS MiB; node 1 held $SUBS bus subscriptions (a key and a mid per connection, its rooms, 4 fixed per shard)."
echo
for i in 1 2 3; do stop_corecast "${NP[$i]}"; done
fi

# ---- 2. fan-out across nodes ----
DUR=10
[[ $QUICK == 1 ]] && DUR=3
if want fanout; then
for i in 1 2 3; do
    start_node "node$i" 2 1
    NP[$i]=$NODE_PID NT[$i]=$NODE_TCP NH[$i]=$NODE_HTTP
done
for i in 1 2 3; do wait_live "${NH[$i]}" 3 || exit 1; done
fanout_cluster() { # LABEL EXTRA-ARGS...
    local label=$1
    shift
    local out0 in0 seq0
    out0=$(metric "${NH[1]}" corecast_cluster_bus_messages_out_total)
    timeout 300 "$GEN" fanout --tcp "${NT[1]}" --also-tcp "${NT[2]},${NT[3]}" --http "${NH[1]}" \
        --server-pid "${NP[1]}" --also-server-pids "${NP[2]},${NP[3]},$NATS_PID" --members-per-room 999 \
        --rooms 1 --duration-s "$DUR" --json --label "$label" "$@" >"$WORK/$label.json" 2>"$WORK/$label.err"
    sleep 1.5
    local j out1 pushes
    j=$(grep '^{' "$WORK/$label.json" | tail -1)
    out1=$(metric "${NH[1]}" corecast_cluster_bus_messages_out_total)
    pushes=$(json_num "$j" requests_ok)
    printf '| %s | %s | %.0f | %s | %s | %s | %.2f |\n' "$label" "$*" "$(json_num "$j" delivered_per_s)" \
        "$(json_num "$j" lat_p50_us)" "$(json_num "$j" lat_p99_us)" "$(json_num "$j" missing)" \
        "$(awk -v a="$out0" -v b="$out1" -v p="$pushes" 'BEGIN { if (p > 0) print (b - a) / p; else print 0 }')"
}
echo "### Fan-out across nodes"
echo
echo "One room, 999 members: 333 on each node; pushes through node 1's API at a fixed rate (a cluster's publishers are paced by the sequencer's reply, not by the member nodes' fan-out: pushed flat out, members fall behind and are closed as slow consumers, as they should be). Latency is push sent to member received."
echo
echo "| run | flags | delivered/s | p50 µs | p99 µs | missing | node-1 bus messages out per push |"
echo "|---|---|---|---|---|---|---|"
fanout_cluster cluster-rate-100 --rate 100 --publishers 1
fanout_cluster cluster-rate-1000 --rate 1000 --publishers 2
fanout_cluster cluster-rate-3000 --rate 3000 --publishers 4
echo
echo "Node 1 publishes, per room push, one request to the sequencer when another node sequences the room, or the numbered push and the reply when it does; node 1 also reports every second."
echo
for i in 1 2 3; do stop_corecast "${NP[$i]}"; done
fi

# ---- 3. cost of clustering on one node ----
want cost || exit 0
echo "### Cost of clustering (one node, 1 room x 1,000 members, shards = 1)"
echo
echo "Each round runs the same fan-out on a fresh node without and with [cluster] (nats-server on loopback, pinned to CPU 0 with the node's shard; the generator alone on CPU 1): at a fixed 4,000 pushes/s (4 M deliveries/s: both must sustain it; on a 2-CPU machine it fills a core either way, so this row only shows that both sustain it), and saturated in a closed loop with 8 publishers x 16 pipelined and with 16 x 16. In this closed loop the clustered node waits for the bus round trip every cycle (nats-server shares the two CPUs with the node and the generator). Measured with perf stat and the server's counters (docs/performance.md, Cost of clustering): with 128 pushes in flight it was idle about 3 % of the time, with 7 times the context switches, and carried 86 to 121 frames per write against 128; with 256 in flight, 224 to 256 frames per write against 255, so the wait is a smaller share of the work."
echo
echo "| round | load | without: deliveries / node CPU-s | with: / node CPU-s | with: / node + nats-server CPU-s | ratio (node) |"
echo "|---|---|---|---|---|---|"
one_node() { # CLUSTERED GENERATOR-ARGS... -> "deliveries_per_cpu_s delivered"
    local clustered=$1
    shift
    start_node single 1 "$clustered"
    [[ $clustered == 1 ]] && { wait_live "$NODE_HTTP" 1 || return 1; }
    local j0
    j0=$(timeout 300 taskset -c 1 "$GEN" fanout --tcp "$NODE_TCP" --http "$NODE_HTTP" --server-pid "$NODE_PID" \
        --members-per-room 1000 --rooms 1 --duration-s "$DUR" --json --label "one-$clustered" "$@" \
        2>"$WORK/one-$clustered.err" | grep '^{' | tail -1)
    stop_corecast "$NODE_PID"
    echo "$(json_num "$j0" deliveries_per_server_cpu_s) $(json_num "$j0" delivered)"
}
# nats-server is server-side infrastructure: here it shares CPU 0 with the
# node, and the generator (standing in for the clients) keeps CPU 1 alone.
# Floating over both CPUs, it took its time from the generator as often as
# from the node, which slowed the closed loop itself (docs/performance.md).
taskset -a -p -c 0 "$NATS_PID" >/dev/null || echo "bench-cluster: could not pin nats-server to CPU 0" >&2
TICKS=$(getconf CLK_TCK)
nats_cpu() { awk '{print $14 + $15}' "/proc/$NATS_PID/stat"; }
for r in $(seq 1 "$ROUNDS"); do
    for load in "rate 4000/s" "saturated 8x16" "saturated 16x16"; do
        args=()
        [[ $load == "rate 4000/s" ]] && args=(--rate 4000 --publishers 8)
        [[ $load == "saturated 16x16" ]] && args=(--publishers 16)
        read -r plain _ < <(one_node 0 "${args[@]}")
        n0=$(nats_cpu)
        read -r clustered delivered < <(one_node 1 "${args[@]}")
        n1=$(nats_cpu)
        with_nats=$(awk -v d="$delivered" -v c="$clustered" -v n0="$n0" -v n1="$n1" -v t="$TICKS" \
            'BEGIN { node = d / c; nats = (n1 - n0) / t; printf "%.0f", d / (node + nats) }')
        printf '| %s | %s | %.0f | %.0f | %s | %.3f |\n' "$r" "$load" "$plain" "$clustered" "$with_nats" \
            "$(awk -v a="$clustered" -v b="$plain" 'BEGIN { print a / b }')" | tee -a "$WORK/cost-rows.md"
    done
done
echo
echo "nats-server's CPU in the fifth column covers the whole clustered run (connects, reports and pushes)."
echo
# One round swings widely on this shared machine; the verdict is on medians.
python3 - "$WORK/cost-rows.md" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    rows.setdefault(cells[1], []).append((float(cells[2]), float(cells[3]), float(cells[5])))
for load, runs in rows.items():
    ratios = sorted(r[2] for r in runs)
    plain = statistics.median(r[0] for r in runs)
    clustered = statistics.median(r[1] for r in runs)
    print(f"- {load}, {len(runs)} rounds: median ratio {statistics.median(ratios):.3f} "
          f"(from {ratios[0]:.3f} to {ratios[-1]:.3f}); ratio of the medians {clustered / plain:.3f} "
          f"({clustered / 1e6:.2f} M / {plain / 1e6:.2f} M deliveries per node CPU-second)")
PY
