#!/usr/bin/env bash
# callgrind.sh - instructions per request in the meltemi process (Valgrind's callgrind) for
# Redis GET at pipeline depth 1 and 16 and a Dubbo call at depth 1; see callgrind.py for the
# method. Prints a markdown table; the baseline is in tests/bench/RESULTS.md.
#   tests/bench/callgrind.sh [--requests N] [--rows redis-p1,redis-p16,dubbo-d1,redis-tls-p1,redis-tls-p16]
# MELTEMI_BIN selects the binary (default build/meltemi, RelWithDebInfo). rpcload is
# compiled here, into a temporary directory, as rpc.sh does.
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d -t meltemi-rpcload.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -std=gnu11 -O2 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
    -o "$tmp/rpcload" tests/bench/rpcload.c
/usr/bin/python3 tests/bench/callgrind.py --rpcload "$tmp/rpcload" "$@"
