#!/usr/bin/env bash
# compare.sh - the mrpc Lua codec against its C twin (see compare.py): builds rpcload into a
# temporary directory and meltemi_bench_mrpc in build/ (Release-like timing needs a
# RelWithDebInfo or Release build dir: MELTEMI_BENCH_BIN).
#   tests/bench/lua_codec/compare.sh                      callgrind, depths 1 and 16
#   tests/bench/lua_codec/compare.sh --mode throughput    calls/s (a quiet machine only)
set -euo pipefail
cd "$(dirname "$0")/../../.."
tmp=$(mktemp -d -t meltemi-rpcload.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -std=gnu11 -O2 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
    -o "$tmp/rpcload" tests/bench/rpcload.c
if [[ -z "${MELTEMI_BENCH_BIN:-}" ]]; then
    cmake --build build -j2 --target meltemi_bench_mrpc >/dev/null
fi
/usr/bin/python3 tests/bench/lua_codec/compare.py --rpcload "$tmp/rpcload" "$@"
