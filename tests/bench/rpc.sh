#!/usr/bin/env bash
# rpc.sh - one command for the Thrift/Dubbo benchmark: rpcload (tests/bench/rpcload.c, a C
# load generator and echo-like server) direct, through meltemi (--workers 1) and through
# haproxy (mode tcp, one thread); see rpc_bench.py for what it measures.
#   tests/bench/rpc.sh            full run (3 repetitions, 3 s per run), writes RESULTS-rpc.md
#   tests/bench/rpc.sh --quick    smoke run (1 repetition, 1 s per run), prints only
# MELTEMI_BIN selects the binary (default build/meltemi). rpcload is compiled here, into a
# temporary directory, with the project's warning flags (no CMake target needed).
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d -t meltemi-rpcload.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -std=gnu11 -O2 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
    -o "$tmp/rpcload" tests/bench/rpcload.c
/usr/bin/python3 tests/bench/rpc_bench.py --rpcload "$tmp/rpcload" "$@"
