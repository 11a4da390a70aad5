#!/usr/bin/env bash
# start-cluster.sh - six redis-server processes on 127.0.0.1:7000-7005 (cluster bus on
# 17000-17005), joined into a cluster of 3 masters with one replica each, like the blog's
# redis-cluster StatefulSet. State and logs live in ${CLUSTER_DIR:-/tmp/meltemi-redis-cluster};
# stop-cluster.sh stops the processes by the PIDs recorded there.
set -euo pipefail
dir=${CLUSTER_DIR:-/tmp/meltemi-redis-cluster}
# CLUSTER_BASE_PORT (default 7000): the nodes listen on it and the five ports after it (the
# seeds in service-entry.yaml name 7000-7002: change them with it).
base=${CLUSTER_BASE_PORT:-7000}
ports=$(seq "$base" $((base + 5)))
mkdir -p "$dir"
nodes=()
for port in $ports; do
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file "$dir/$port/nodes.conf" --cluster-node-timeout 5000 \
        --save "" --appendonly no --dir "$dir/$port" --logfile "$dir/$port/redis.log" \
        --daemonize yes --pidfile "$dir/$port/redis.pid"
    nodes+=("127.0.0.1:$port")
done
for port in $ports; do
    for _ in $(seq 50); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes
for _ in $(seq 100); do
    redis-cli -p "$base" cluster info | grep -q cluster_state:ok && exit 0
    sleep 0.1
done
echo "the cluster did not reach cluster_state:ok" >&2
exit 1
