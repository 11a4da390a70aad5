#!/usr/bin/env bash
# stop-cluster.sh - stops the nodes start-cluster.sh started, by their recorded PIDs, waits
# (at most 5 s each) for them to exit, and removes their directory.
set -uo pipefail
dir=${CLUSTER_DIR:-/tmp/meltemi-redis-cluster}
pids=()
for port in 7000 7001 7002 7003 7004 7005; do
    pidfile="$dir/$port/redis.pid"
    [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done
rm -rf "$dir"
