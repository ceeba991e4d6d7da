#!/usr/bin/env bash
# scripts/fuzz.sh SECONDS [TARGET...]
#
# Runs every cargo-fuzz target in fuzz/ (or the ones named) for SECONDS
# each, starting from the seed corpus in fuzz/corpus/<target> (read only:
# new inputs go to a scratch copy). Exits non-zero on the first crash; the
# crashing input is kept in fuzz/artifacts/<target>/, to be turned into a
# regression test. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`, installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --quiet cargo-fuzz
cd fuzz
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || mapfile -t TARGETS < <(cargo +nightly fuzz list)
# One build of every target (sanitizers, coverage); the binaries are then run
# directly, so no run rebuilds the crate with other flags.
cargo +nightly fuzz build >&2
BIN_DIR=target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release
WORK=$(mktemp -d "${TMPDIR:-/tmp}/corecast-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
for target in "${TARGETS[@]}"; do
    mkdir -p "$WORK/$target"
    echo "== $target: ${SECONDS_EACH} s" >&2
    mkdir -p "artifacts/$target"
    if ! "$BIN_DIR/$target" "$WORK/$target" "corpus/$target" -max_total_time="$SECONDS_EACH" \
        -print_final_stats=1 -artifact_prefix="artifacts/$target/" 2>"$WORK/$target.log"; then
        tail -40 "$WORK/$target.log" >&2
        echo "fuzz.sh: $target crashed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E "stat::number_of_executed_units|cov:" "$WORK/$target.log" | tail -2 >&2
done
echo "fuzz.sh: ${#TARGETS[@]} targets, ${SECONDS_EACH} s each, no crash" >&2
