#!/usr/bin/env bash
# run.sh - fuzz every libFuzzer target of a clang build for a bounded time each.
#
#   tests/fuzz/run.sh BUILD_DIR [SECONDS_PER_TARGET]      (default 30)
#
# BUILD_DIR is a clang build (MELTEMI_FUZZ is on by default with clang). Each target starts
# from its seeds (tests/fuzz/seeds/<target>, and for Thrift the unit-test fixtures with a mode
# byte in front) in a fresh corpus under $TMPDIR, so runs do not depend on one another. A
# crash, leak or sanitizer report fails the script; the reproducer is left in the corpus
# directory, whose path is printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:?usage: tests/fuzz/run.sh BUILD_DIR [SECONDS]}
seconds=${2:-30}
work=$(mktemp -d "${TMPDIR:-/tmp}/meltemi-fuzz.XXXXXX")

targets=()
for f in tests/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
rc=0
for t in "${targets[@]}"; do
    bin="$build/$t"
    [[ -x "$bin" ]] || { echo "fuzz: $bin missing (configure $build with CC=clang)" >&2; exit 2; }
    corpus="$work/${t#fuzz_}"
    mkdir -p "$corpus"
    seeds="tests/fuzz/seeds/${t#fuzz_}"
    [[ -d "$seeds" ]] && cp "$seeds"/* "$corpus"/ 2>/dev/null || true
    if [[ "$t" == fuzz_thrift ]]; then
        for s in tests/unit/thrift/fixtures/*.bin; do
            [[ -e "$s" ]] && { printf '\x00'; cat "$s"; } >"$corpus/$(basename "$s")"
        done
    fi
    max_len=4096
    [[ "$t" == fuzz_lua_pattern ]] && max_len=300 # a pattern and a subject, not a stream
    start=$(date +%s)
    if "$bin" -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 \
        -artifact_prefix="$corpus/" "$corpus" >"$work/$t.log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' || echo "?")
        echo "fuzz: $t ok: $runs runs in $(($(date +%s) - start)) s, corpus $(ls "$corpus" | wc -l) inputs"
    else
        echo "fuzz: $t FAILED after $(($(date +%s) - start)) s; reproducer and corpus in $corpus" >&2
        tail -40 "$work/$t.log" >&2
        rc=1
    fi
done
[[ $rc -eq 0 ]] && rm -rf "$work"
exit $rc
