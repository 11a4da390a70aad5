#!/usr/bin/env bash
# run.sh - one command for the peer benchmark: redis-benchmark against direct redis-server,
# meltemi (--workers 1), twemproxy and haproxy; see bench.py for what it measures.
#   tests/bench/run.sh            full run (3 repetitions, ~5 s per run), writes RESULTS.md
#   tests/bench/run.sh --quick    smoke run (1 repetition, ~1 s per run), prints only
# MELTEMI_BIN selects the binary (default build/meltemi). txload (tests/bench/txload.c, the
# MULTI row's load generator) is compiled here into a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d -t meltemi-txload.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -std=gnu11 -O2 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
    -o "$tmp/txload" tests/bench/txload.c
/usr/bin/python3 tests/bench/bench.py --txload "$tmp/txload" "$@"
