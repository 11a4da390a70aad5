#!/usr/bin/env bash
# install-deps.sh - install the Debian 12 packages meltemi needs to build, test, benchmark and
# run its demo. Idempotent: when every package is present it only says so and exits 0.
# Needs root to install (prints the sudo command otherwise and exits 1).
#
# One list for the whole project: append packages here, with a word of why, when a new part
# of the build or the tests needs one.
set -euo pipefail

PACKAGES=(
    # build
    build-essential cmake pkg-config
    # the second compiler of the CI build matrix, whose libFuzzer builds tests/fuzz;
    # libclang-rt-dev holds its ASan/UBSan/libFuzzer runtimes (only a Recommends of clang),
    # llvm the llvm-symbolizer that turns their reports into file:line
    clang libclang-rt-dev llvm
    libluajit-5.1-dev luajit libuv1-dev libssl-dev libyaml-dev lua-lpeg-dev libpcre2-dev
    lua-cjson-dev # /config_dump JSON (liblua5.1-cjson.a, linked statically like lpeg)
    libxxhash-dev # XXH3 for hash tables and MetaRouter rings (header-only use)
    libhttp-parser-dev # the admin server's HTTP/1.1 request parser (runtime/server/admin.c)
    # unit tests, lint
    libcriterion-dev lua-check clang-format
    # integration tests and the demo: real servers and real clients
    redis-server redis-tools python3 python3-redis python3-pytest
    # Sentinel discovery tests (tests/integration/test_redis_sentinel.py): real redis-sentinel
    redis-sentinel
    # MetaProtocol integration tests: Thrift peers (Apache Thrift's Python library and the
    # compiler that generates their code from tests/integration/peers/hello.thrift), Dubbo
    # peers in Node (hessian.js, dubbo2.js; npm installs them from the lockfile)
    python3-thrift thrift-compiler nodejs
    # Kafka / ZooKeeper metrics tests (test_kafka_zookeeper.py): Debian's ZooKeeper server
    # (Java; its daemon never starts here) with the kazoo client, and kafka-python against
    # the test's own broker fixture (Kafka is not packaged)
    zookeeper python3-kazoo python3-kafka
    # a third real Redis client for the refused-command tests: redis-rb (pulls in ruby)
    ruby-redis
    # benchmark peers
    nutcracker haproxy
    # tests/bench/callgrind.sh: instructions per request under callgrind
    valgrind
    # observability tests: promtool checks /stats/prometheus (its daemon never starts here);
    # headless Chromium renders the admin status page
    prometheus chromium chromium-driver
    # scripts: admin HTTP checks, process handling
    curl procps psmisc
    # transparent interception: tools/meltemi-iptables and its network-namespace test
    # (tests/integration/test_sidecar_netns.py; ip and setpriv come with iproute2/util-linux)
    iptables iproute2
    # the container image without a registry (tools/build-rootfs.sh, tools/image-check.sh):
    # a Debian root filesystem from Debian's packages, imported as an image
    mmdebstrap podman
)

# Packages needed only for a command they provide: present when the command is, whoever
# installed it (a NodeSource nodejs ships npm itself and conflicts with Debian's npm).
COMMAND_PACKAGES=(
    npm:npm
    # deploy/kubernetes dry runs (tools/k8s-dry-run.py): Debian's kubectl, unless one is there
    kubectl:kubernetes-client
)

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "installed" ]] || missing+=("$p")
done
for entry in "${COMMAND_PACKAGES[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all $((${#PACKAGES[@]} + ${#COMMAND_PACKAGES[@]})) packages present"
    exit 0
fi

echo "install-deps: missing: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: run as root:" >&2
    echo "  sudo env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update && apt-get install -y ${missing[*]}'" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Packaged daemons (redis-server, haproxy, nutcracker) must not start from their postinst:
# there may be no systemd, and a stray Debian redis would sit on 127.0.0.1:6379. A
# policy-rc.d that answers 101 ("action forbidden") is what invoke-rc.d and
# deb-systemd-invoke consult; install one only for the duration of this run.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# installed by meltemi tools/install-deps.sh for one apt run\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
fi
cleanup() { if [[ $own_policy -eq 1 ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
