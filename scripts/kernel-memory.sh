#!/usr/bin/env bash
# scripts/kernel-memory.sh [CONNS]
#
# Measures what one idle client connection costs the kernel, for
# docs/operations.md: starts a release server (2 shards) on loopback, holds
# CONNS (default 10000) authenticated idle connections with corecast-bench,
# and reads /proc/slabinfo (root) and /proc/net/sockstat before and while
# they are held. Both ends of every connection are on this host, so the
# growth is divided by 2 x CONNS: the cost of one server-side socket.
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[[ -x target/release/corecast && -x target/release/corecast-bench ]] || cargo build --release --workspace >&2 || exit 1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/corecast-kmem.XXXXXX")
trap 'kill -TERM $SP 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
cat >"$WORK/c.toml" <<EOF
[server]
shards = 2
[tcp]
bind = "127.0.0.1:0"
[http]
bind = "127.0.0.1:0"
[ws]
bind = ""
[protocol]
heartbeat_s = 60
EOF
# shellcheck source=scripts/launch-lib.sh
source scripts/launch-lib.sh
launch_corecast target/release/corecast "$WORK/c.toml" "$WORK/out" "$WORK/err" ||
    { echo "kernel-memory: the server did not start: $(tail -3 "$WORK/err")" >&2; exit 1; }
SP=$LAUNCHED_PID
# Slab caches a TCP connection allocates from, in bytes in use.
SLABS="TCP|sock_inode_cache|eventpoll_epi|filp|dentry|kmalloc-(64|96|128|192|256|512|1k|2k|4k|8k)|skbuff_head_cache|tcp_bind_bucket|inet_peer_cache|request_sock_TCP"
slab_bytes() { awk -v re="^($SLABS)\$" '$1 ~ re { total += $2 * $4 } END { print total + 0 }' /proc/slabinfo; }
tcp_mem_pages() { awk '$1 == "TCP:" { for (i = 2; i <= NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
sync
S0=$(slab_bytes); M0=$(tcp_mem_pages)
target/release/corecast-bench idle --tcp "$TCP" --server-pid "$SP" --conns "$N" --hold-s 6 --heartbeat-s 60 --json \
    >"$WORK/idle.json" 2>"$WORK/idle.err" &
BP=$!
for _ in $(seq 1 300); do
    [[ $(curl -s "http://$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$WORK/out")/goim/online/total" | grep -o '"conn_count":[0-9]*' | cut -d: -f2) == "$N" ]] && break
    sleep 0.1
done
sleep 2
S1=$(slab_bytes); M1=$(tcp_mem_pages)
wait $BP
USER=$(grep -o '"rss_per_conn_bytes":[0-9.]*' "$WORK/idle.json" | cut -d: -f2)
awk -v n="$N" -v s0="$S0" -v s1="$S1" -v m0="$M0" -v m1="$M1" -v user="$USER" 'BEGIN {
    slab = (s1 - s0) / (2 * n); buffers = (m1 - m0) * 4096 / (2 * n);
    printf "connections: %d (both ends on this host; figures per server-side socket)\n", n;
    printf "kernel slab objects: %.0f B per socket\n", slab;
    printf "TCP buffer memory (sockstat mem): %.0f B per socket\n", buffers;
    printf "corecast user space (RSS growth): %s B per connection\n", user;
    printf "total per idle connection: about %.0f B\n", slab + buffers + user;
}'
