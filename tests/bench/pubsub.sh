#!/usr/bin/env bash
# pubsub.sh - the pub/sub fan-out row: 1 publisher, 1000 subscribers of one channel, direct vs
# through meltemi (one worker); delivered messages/s and memory per subscriber (see
# pubsub_bench.py). Needs a quiet machine for its figures, like run.sh.
#   tests/bench/pubsub.sh            3 repetitions of 2000 messages
#   tests/bench/pubsub.sh --quick    1 repetition of 200 messages
# MELTEMI_BIN selects the binary (default build/meltemi). pubsubload is compiled here, into a
# temporary directory, with the project's warning flags.
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d -t meltemi-pubsubload.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -std=gnu11 -O2 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
    -o "$tmp/pubsubload" tests/bench/pubsubload.c
/usr/bin/python3 tests/bench/pubsub_bench.py --load "$tmp/pubsubload" \
    --binary "$(realpath "${MELTEMI_BIN:-build/meltemi}")" "$@"
