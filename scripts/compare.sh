#!/usr/bin/env bash
# scripts/compare.sh BEFORE_BIN AFTER_BIN [SECONDS]
#
# Runs the same scenarios against two corecast binaries in one run on this
# machine, alternating before/after for every scenario (twice each), and prints
# a Markdown table of the figures with their after/before ratio. The machine is
# shared and noisy: read the ratios, not the absolute figures.
#
#   BEFORE_BIN, AFTER_BIN   release server binaries (build the old one from a
#                           git worktree with its own CARGO_TARGET_DIR)
#   SECONDS                 window of each throughput run (default 5)
#
# The generator is this tree's target/release/corecast-bench (built here).
# Environment: KEEP_WORK=1 keeps the scratch directory; ONLY="LABEL ..." runs
# only those scenarios; ROUNDS=N alternates N times (default 2); AA=1 adds
# an A/A run: BEFORE_BIN once more in every round (before, after, again), so
# the table shows the spread of the old binary against itself beside the
# change. The table gives every run, the medians' ratio and the means' ratio.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
if [[ $# -lt 2 ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
BEFORE=$(realpath "$1")
AFTER=$(realpath "$2")
DUR=${3:-5}
HB=10
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nice -n 10 cargo build --release -p corecast-bench || exit 1
GEN=$ROOT/target/release/corecast-bench
WORK=$(mktemp -d "${TMPDIR:-/tmp}/corecast-compare.XXXXXX")
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
NOTES=()
SERVER_PID=""
note() {
    echo "!! $*" >&2
    NOTES+=("$*")
}
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        sleep 1
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    [[ ${KEEP_WORK:-0} == 1 ]] && echo "scratch directory kept: $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

# scenario LABEL SHARDS GENERATOR-ARGS...: before, after, before, after.
scenario() {
    local label=$1 shards=$2
    shift 2
    [[ -n ${ONLY:-} && " $ONLY " != *" $label "* ]] && return
    local round version versions="before after"
    [[ ${AA:-0} == 1 ]] && versions="before after again"
    for round in $(seq 1 "${ROUNDS:-2}"); do
        for version in $versions; do
            if [[ $version == after ]]; then SERVER=$AFTER; else SERVER=$BEFORE; fi
            run "$version" "$label" "$shards" "$@"
        done
    done
}

scenario fanout-1x1000 1 fanout --members-per-room 1000 --rooms 1 --publishers 8 --pipeline 16 \
    --duration-s "$DUR" --heartbeat-s "$HB"
scenario rooms-100x100 1 fanout --members-per-room 100 --rooms 100 --publishers 8 --pipeline 16 \
    --duration-s "$DUR" --heartbeat-s "$HB"
scenario fanout-1x1000-s2 2 fanout --members-per-room 1000 --rooms 1 --publishers 8 --pipeline 16 \
    --duration-s "$DUR" --heartbeat-s "$HB"
for ep in room keys; do
    scenario "api-$ep-8x16" 1 api --endpoint "$ep" --conns 8 --pipeline 16 --duration-s "$DUR" --heartbeat-s "$HB"
    scenario "api-$ep-8x16-s2" 2 api --endpoint "$ep" --conns 8 --pipeline 16 --duration-s "$DUR" \
        --heartbeat-s "$HB"
done
scenario idle-10000 1 idle --conns 10000 --rooms 1000 --heartbeat-s "$HB" --hold-s 5
scenario sequential-s2 2 sequential --members 1 --duration-s "$DUR" --heartbeat-s "$HB"

python3 - "$RESULTS" <<'EOF'
import json, sys
from collections import defaultdict
FIGURES = ["deliveries_per_server_cpu_s", "requests_per_server_cpu_s", "rss_per_conn_bytes",
           "requests_per_s", "reply_p50_us", "reply_p99_us", "inversions", "missing", "out_of_order"]
runs = defaultdict(lambda: defaultdict(list))
order = []
for line in open(sys.argv[1]):
    row = json.loads(line)
    if "failed" in row:
        print(f"- {row['label']} ({row['section']}): FAILED {row['failed']}")
        continue
    if row["label"] not in order:
        order.append(row["label"])
    runs[row["label"]][row["section"]].append(row)
aa = any(runs[label]["again"] for label in order)
median = lambda xs: sorted(xs)[len(xs) // 2] if len(xs) % 2 else sum(sorted(xs)[len(xs) // 2 - 1:len(xs) // 2 + 1]) / 2
mean = lambda xs: sum(xs) / len(xs)
fmt = lambda xs: ", ".join(f"{x:,.0f}" for x in xs) or "-"
ratio = lambda f, a, b: f"{f(a) / f(b):.3f}" if a and b and f(b) else "-"
head = "| scenario | figure | before (runs) | after (runs) | after/before (medians) | after/before (means) |"
if aa:
    head += " again (runs) | again/before (medians) |"
print(head)
print("|---" * (head.count("|") - 1) + "|")
for label in order:
    for figure in FIGURES:
        pick = lambda section: [r[figure] for r in runs[label][section] if isinstance(r.get(figure), (int, float))]
        before, after, again = pick("before"), pick("after"), pick("again")
        if not before and not after:
            continue
        row = f"| {label} | {figure} | {fmt(before)} | {fmt(after)} | {ratio(median, after, before)} | {ratio(mean, after, before)} |"
        if aa:
            row += f" {fmt(again)} | {ratio(median, again, before)} |"
        print(row)
EOF
for n in "${NOTES[@]+"${NOTES[@]}"}"; do echo "note: $n"; done
