#!/usr/bin/env bash
# cluster.sh - redis-benchmark through meltemi (--workers 1 and 2) in front of a 6-node Redis
# Cluster, beside `redis-benchmark --cluster` straight to the nodes; see cluster.py.
#   tests/bench/cluster.sh                 3 repetitions, ~3 s per run, writes RESULTS-cluster.md
#   tests/bench/cluster.sh --reps 1 --seconds 1 --out /tmp/x.md    a smoke run
# MELTEMI_BIN selects the binary (default build/meltemi).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 tests/bench/cluster.py "$@"
