#!/usr/bin/env bash
# scripts/soak.sh MINUTES
#
# A bounded loopback soak of one corecast (2 shards, TCP and WebSocket):
# scripts/soak_client.py holds 200 stable members for the whole run and 300
# churning ones (each lives 2-10 s, changes rooms, reconnects), half TCP and
# half WebSocket, while four sequential publishers push at a steady rate:
# 100 room pushes/s over 10 rooms, 40 key pushes/s and 40 mid pushes/s to
# stable members, 5 broadcasts/s.
#
# Passes (exit 0) when:
#   - the server's resident memory at the end of the load is within 5 % of
#     its level after warm-up (the first fifth of the run, at least 30 s);
#   - once every client is gone, /proc/PID/fd holds as many descriptors as
#     before the first client came (no leak);
#   - every stable member got every push addressed to it once and in order,
#     no member saw a stream go backwards, and every push was answered 0.
# Prints a Markdown report on stdout. Everything listens on 127.0.0.1; the
# server is stopped by its PID.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MINUTES=${1:?usage: scripts/soak.sh MINUTES}
SECONDS_TOTAL=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
SERVER=$ROOT/target/release/corecast
[[ -x $SERVER ]] || nice -n 10 cargo build --release >&2 || exit 1
PYTHON=$ROOT/target/test-venv/bin/python3
[[ -x $PYTHON ]] || { bash scripts/install-test-deps.sh >&2 || exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/corecast-soak.XXXXXX")
PID=""
CLIENT=""
cleanup() {
    [[ -n $CLIENT ]] && kill "$CLIENT" 2>/dev/null
    [[ -n $PID ]] && kill -KILL "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/soak.toml" <<EOF
[server]
shards = 2
log_level = "warn"
online_sync_ms = 100
[tcp]
bind = "127.0.0.1:0"
[http]
bind = "127.0.0.1:0"
[ws]
bind = "127.0.0.1:0"
EOF
# shellcheck source=scripts/launch-lib.sh
source "$ROOT/scripts/launch-lib.sh"
launch_corecast "$SERVER" "$WORK/soak.toml" "$WORK/server.out" "$WORK/server.err" ||
    { echo "server did not start: $(tail -3 "$WORK/server.err")" >&2; exit 1; }
PID=$LAUNCHED_PID

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
fds() { find "/proc/$PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
connections() { curl -s "http://$HTTP/metrics" | awk '$1 == "corecast_connections" {print $2}'; }

FDS_BEFORE=$(fds)
RSS_BEFORE=$(rss_kib)
"$PYTHON" scripts/soak_client.py "$TCP" "$WS" "$HTTP" "$SECONDS_TOTAL" >"$WORK/client.out" 2>"$WORK/client.err" &
CLIENT=$!
WARM_S=$((SECONDS_TOTAL / 5))
((WARM_S < 30)) && WARM_S=30
START=$(date +%s)
SAMPLES=()
RSS_WARM=""
RSS_END=""
while kill -0 "$CLIENT" 2>/dev/null; do
    sleep 10
    kill -0 "$PID" 2>/dev/null || { echo "the server died: $(tail -5 "$WORK/server.err")" >&2; exit 1; }
    t=$(($(date +%s) - START))
    rss=$(rss_kib)
    conns=$(connections)
    SAMPLES+=("| $t | $conns | $rss | $(fds) |")
    if [[ -z $RSS_WARM ]] && ((t >= WARM_S)); then RSS_WARM=$rss; fi
    # The last sample taken while the publishers still run.
    if ((t <= SECONDS_TOTAL)); then RSS_END=$rss; fi
done
wait "$CLIENT"
CLIENT_RC=$?
CLIENT=""
# Every client is gone: the server's descriptors must be back where they were.
for _ in $(seq 1 100); do
    [[ $(connections) == 0 ]] && break
    sleep 0.1
done
sleep 0.5
FDS_AFTER=$(fds)
RSS_AFTER=$(rss_kib)
RESULT=$(grep '"phase": "done"' "$WORK/client.out" | tail -1)

echo "## Soak (scripts/soak.sh $MINUTES)"
echo
echo "corecast $(git rev-parse --short HEAD), $(nproc) CPUs, 2 shards. 200 stable members and 300 churning ones (2-10 s lives, room changes), half TCP, half WebSocket; 100 room pushes/s over 10 rooms, 40 key and 40 mid pushes/s to stable members, 5 broadcasts/s, each publisher sequential."
echo
echo "| seconds | connections | server RSS (KiB) | server fds |"
echo "|---|---|---|---|"
printf '%s\n' "${SAMPLES[@]}"
echo
echo "- Before the first client: RSS $RSS_BEFORE KiB, $FDS_BEFORE descriptors."
echo "- RSS after warm-up (${WARM_S} s): ${RSS_WARM:-?} KiB; at the end of the load: ${RSS_END:-?} KiB."
echo "- Once every client had gone: RSS $RSS_AFTER KiB, $FDS_AFTER descriptors."
echo "- Client: \`$RESULT\`"
ok=1
growth=$(awk -v a="${RSS_END:-0}" -v b="${RSS_WARM:-1}" 'BEGIN { printf "%.3f", a / b }')
awk -v g="$growth" 'BEGIN { exit !(g <= 1.05) }' || { echo "- FAIL: RSS grew to $growth of its warm-up level"; ok=0; }
[[ $FDS_AFTER == "$FDS_BEFORE" ]] || { echo "- FAIL: $FDS_BEFORE descriptors before, $FDS_AFTER after"; ok=0; }
[[ $CLIENT_RC == 0 ]] || { echo "- FAIL: the client's checks failed (exit $CLIENT_RC): $(tail -3 "$WORK/client.err")"; ok=0; }
if [[ $ok == 1 ]]; then
    echo "- PASS: RSS at the end $growth of its warm-up level, no descriptor leaked, every push arrived once and in order."
fi
kill -TERM "$PID"
wait "$PID"
PID=""
[[ $ok == 1 ]]
