#!/usr/bin/env bash
# outlier.sh - issue 12's outlier detection goal: one of three Dubbo providers (rpcload serve)
# killed by PID mid-run behind meltemi; the failure rate of the calls sent after the first
# ejection interval must stay under 1% (outlier.py says how it is counted). Exit 1 otherwise.
#   tests/bench/outlier.sh [--seconds 8] [--kill-at 2] [--conns 8] [--depth 4] [--out FILE]
# MELTEMI_BIN selects the binary (default build/meltemi). rpcload is compiled here, into a
# temporary directory, as rpc.sh does.
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d -t meltemi-outlier.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -std=gnu11 -O2 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
    -o "$tmp/rpcload" tests/bench/rpcload.c
/usr/bin/python3 tests/bench/outlier.py --rpcload "$tmp/rpcload" "$@"
