#!/usr/bin/env bash
# stop-cluster.sh - stops the nodes start-cluster.sh started, by their recorded PIDs, waits
# (at most 5 s each) for them to exit, and removes their directory.
set -uo pipefail
dir=${CLUSTER_DIR:-/tmp/meltemi-redis-cluster}
# CLUSTER_BASE_PORT (default 7000): the nodes listen on it and the five ports after it (the
# seeds in service-entry.yaml name 7000-7002: change them with it).
base=${CLUSTER_BASE_PORT:-7000}
ports=$(seq "$base" $((base + 5)))
pids=()
for port in $ports; do
    pidfile="$dir/$port/redis.pid"
    [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done
rm -rf "$dir"
