#!/usr/bin/env bash
# run.sh - the blog's first two Redis steps on one machine, no Kubernetes:
#   a redis-server with requirepass "testredis" on 127.0.0.1:6390 (own temp dir, no
#   persistence), and meltemi in front of it on the service's VIP 127.0.0.10:6379
#   (service-entry.yaml), admin on 127.0.0.1:15000.
# Step 1 (redis-destination.yaml): meltemi authenticates to Redis with the Secret's password,
#   so `redis-cli -h 127.0.0.10 -p 6379 set foo bar` works without one.
# Step 2 (redis-service.yaml): copied into meltemi's live config directory and reloaded;
#   clients now need their own password, `AUTH testredis123!`.
#
#   examples/redis-demo/run.sh           interactive: prints what to try, Enter applies
#                                        step 2, Ctrl-C stops everything
#   examples/redis-demo/run.sh --check   runs the walk-through itself, prints the
#                                        transcript, exits 0 if every reply was the expected one
# MELTEMI_BIN selects the binary (default build/meltemi); MELTEMI_WORKERS (default 2).
# Addresses and ports, so that two demos (or CI and a developer) can run side by side:
#   DEMO_VIP (127.0.0.10), DEMO_PORT (6379)   the service address meltemi listens on
#   DEMO_REDIS_PORT (6390)                    redis-server on 127.0.0.1
#   MELTEMI_ADMIN (127.0.0.1:15000)           meltemi's admin server
# The YAML in this directory holds the defaults; the copies meltemi reads are rewritten with
# the values chosen.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${MELTEMI_BIN:-$repo/build/meltemi}
workers=${MELTEMI_WORKERS:-2}
vip=${DEMO_VIP:-127.0.0.10}
port=${DEMO_PORT:-6379}
redis_port=${DEMO_REDIS_PORT:-6390}
redis_password=testredis
client_password='testredis123!'
admin=${MELTEMI_ADMIN:-127.0.0.1:15000}

check=0
case "${1:-}" in
--check) check=1 ;;
"") ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

if [[ ! -x "$bin" ]]; then
    echo "meltemi binary not found at $bin: run 'make build' (or set MELTEMI_BIN)" >&2
    exit 1
fi

port_busy() { # host port
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}
for hp in "127.0.0.1 $redis_port" "$vip $port" "${admin%:*} ${admin#*:}"; do
    if port_busy $hp; then
        echo "${hp// /:} is already in use (an earlier demo still running?); stop it first" >&2
        exit 1
    fi
done

tmp=$(mktemp -d /tmp/meltemi-demo.XXXXXX)
conf=$tmp/config
mkdir -p "$conf"
redis_pid=
meltemi_pid=

stop_pid() { # pid name: SIGTERM, wait up to 10 s, then SIGKILL
    local pid=$1 i
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$2 (pid $pid) did not stop on SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    trap - EXIT INT TERM
    stop_pid "$meltemi_pid" meltemi
    stop_pid "$redis_pid" redis-server
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo; echo "stopping"; exit 0' INT TERM

wait_for() { # seconds description command...
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "timed out after ${secs}s waiting for $what" >&2
    return 1
}

redis_pong() {
    [[ $(redis-cli -h 127.0.0.1 -p $redis_port --no-auth-warning -a "$redis_password" ping) == PONG ]]
}

# ---- start redis-server and meltemi (step 1: no RedisService yet) --------------------------
redis-server --port $redis_port --bind 127.0.0.1 --requirepass "$redis_password" \
    --save '' --appendonly no --daemonize no --dir "$tmp" --logfile "$tmp/redis.log" &
redis_pid=$!
wait_for 10 "redis-server on 127.0.0.1:$redis_port" redis_pong || {
    tail -20 "$tmp/redis.log" >&2
    exit 1
}

# install_yaml FILE: copies FILE into the live config directory with the chosen addresses
# (the defaults written in the YAML replaced).
install_yaml() {
    sed -e "s/^\\([[:space:]]*- \\)127\\.0\\.0\\.10\$/\\1$vip/" \
        -e "s/^\\([[:space:]]*- number: \\)6379\$/\\1$port/" \
        -e "s/^\\([[:space:]]*tcp-redis: \\)6390\$/\\1$redis_port/" "$here/$1" >"$conf/$1"
}
install_yaml service-entry.yaml
install_yaml redis-destination.yaml
"$bin" run -c "$conf" --admin "$admin" --workers "$workers" 2>"$tmp/meltemi.log" &
meltemi_pid=$!
if ! wait_for 15 "meltemi /ready on $admin" curl -fsS "http://$admin/ready"; then
    echo "--- meltemi log ---" >&2
    tail -40 "$tmp/meltemi.log" >&2
    exit 1
fi

apply_step2() {
    install_yaml redis-service.yaml
    # meltemi also notices the new file by itself; POST /reload makes the switch immediate
    # and reports validation errors, if any.
    curl -fsS -X POST "http://$admin/reload" >/dev/null
}

say() {
    if [[ -t 1 ]]; then printf '\n\033[1m%s\033[0m\n' "$*"; else printf '\n%s\n' "$*"; fi
}

if [[ $check -eq 0 ]]; then
    cat <<EOF

meltemi is serving redis-single on $vip:$port (redis-server: 127.0.0.1:$redis_port,
password "$redis_password"; admin: http://$admin/).
Config directory (edit it live; meltemi reloads): $conf

Step 1 - the proxy authenticates to Redis for you:
  redis-cli -h $vip -p $port set foo bar
  redis-cli -h 127.0.0.1 -p $redis_port set foo bar        # Redis itself: NOAUTH

Also:  curl -s http://$admin/stats/prometheus | grep -v '^#'
       curl -s http://$admin/config_dump
EOF
    if [[ -t 0 ]]; then
        printf '\nPress Enter to apply step 2 (RedisService: a client password), Ctrl-C to stop. '
        read -r _ || true
        apply_step2
        cat <<EOF

Step 2 applied ($conf/redis-service.yaml). Clients now authenticate to meltemi:
  redis-cli -h $vip -p $port
  $vip:$port> AUTH testredis        # (error) ERR invalid password
  $vip:$port> AUTH $client_password    # OK
  $vip:$port> get foo               # "bar"
EOF
    else
        echo
        echo "Step 2: cp $here/redis-service.yaml $conf/  (then AUTH $client_password)"
    fi
    printf '\nCtrl-C stops meltemi and redis-server.\n'
    wait "$meltemi_pid" || true
    echo "meltemi exited; see the log above" >&2
    tail -20 "$tmp/meltemi.log" >&2
    exit 1
fi

# ---- --check: run the walk-through and compare every reply ---------------------------------
failures=0
expect() { # expected-output description command...
    local want=$1 got
    shift
    got=$("$@" 2>&1 | sed '/^[[:space:]]*$/d') || true
    printf '%s\n' "$got" | sed 's/^/  /'
    if [[ "$got" != "$want" ]]; then
        printf '  ^ expected: %s\n' "$want"
        failures=$((failures + 1))
    fi
}
cli() { redis-cli -h $vip -p $port "$@"; }

say "Without meltemi, Redis wants a password:"
echo "\$ redis-cli -h 127.0.0.1 -p $redis_port set a a"
expect "NOAUTH Authentication required." redis-cli -h 127.0.0.1 -p $redis_port set a a

say "Step 1: meltemi authenticates upstream with the Secret (redis-destination.yaml):"
echo "\$ redis-cli -h $vip -p $port set foo bar"
expect "OK" cli set foo bar
echo "\$ redis-cli -h $vip -p $port get foo"
expect "bar" cli get foo

say "Step 2: add redis-service.yaml (client password), reload:"
echo "\$ cp redis-service.yaml $conf/ && curl -X POST http://$admin/reload"
apply_step2
echo "\$ redis-cli -h $vip -p $port get foo"
expect "NOAUTH Authentication required." cli get foo
echo "\$ redis-cli -h $vip -p $port   # AUTH testredis / AUTH $client_password / get foo"
expect "$(printf 'ERR invalid password\nOK\nbar')" \
    cli <<<"$(printf 'AUTH testredis\nAUTH %s\nget foo\n' "$client_password")"

say "Admin:"
echo "\$ curl -s http://$admin/ready"
expect "ready" curl -sS "http://$admin/ready"
if curl -sS "http://$admin/config_dump" | grep -q -e "$redis_password" -e "testredis123"; then
    echo "  /config_dump shows a password"
    failures=$((failures + 1))
else
    echo "  /config_dump: passwords redacted"
fi

echo
if [[ $failures -ne 0 ]]; then
    echo "demo check: $failures unexpected replies"
    echo "--- meltemi log ---"
    tail -40 "$tmp/meltemi.log"
    exit 1
fi
echo "demo check: every reply as expected"
