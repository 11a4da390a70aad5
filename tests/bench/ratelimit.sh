#!/usr/bin/env bash
# ratelimit.sh - local rate limit accuracy (issue 12): a RedisService localRateLimit driven
# above its rate for 10 s; allowed/s against the configured rate (ratelimit.py). Exit 1 when
# outside 5%. MELTEMI_BIN selects the binary (default build/meltemi).
#   tests/bench/ratelimit.sh [--rate 1000] [--seconds 10] [--workers 2] [--clients 4]
set -euo pipefail
cd "$(dirname "$0")/../.."
export MELTEMI_BIN="$(realpath "${MELTEMI_BIN:-build/meltemi}")"
exec /usr/bin/python3 tests/bench/ratelimit.py "$@"
