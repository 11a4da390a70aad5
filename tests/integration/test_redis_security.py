"""
Attacks on a Redis listener (issue 13): what a client that is not a Redis client, or has not
authenticated, can make meltemi do. Each test reproduces the attack against a real
redis-server behind meltemi and checks that it no longer works.
"""

import re
import socket
import time

import pytest

import configs
from harness import RespConn


def metric(meltemi, name):
    """Sum of a counter over its series in /stats/prometheus."""
    status, body = meltemi.http_get("/stats/prometheus")
    assert status == 200
    total = 0.0
    for ln in body.splitlines():
        m = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", ln)
        if m and m.group(1) == name:
            total += float(m.group(3))
    return total


# ---- cross-protocol requests (HTTP to a Redis port) --------------------------------------

# A browser form or an SSRF posting to the Redis port: the headers are inline commands to
# Redis and the body, without this check, runs with the password meltemi holds upstream.
HTTP_POST = (b"POST / HTTP/1.1\r\n"
             b"Host: 127.0.0.1:6379\r\n"
             b"Content-Type: text/plain\r\n"
             b"Content-Length: 15\r\n"
             b"\r\n"
             b"SET pwned yes\r\n")
# A GET has no body, but the Host: header line still comes before anything else useful.
HTTP_GET_THEN_BODY = (b"GET / HTTP/1.1\r\n"
                      b"Host: 127.0.0.1:6379\r\n"
                      b"\r\n"
                      b"SET pwned yes\r\n")


@pytest.mark.parametrize("request_bytes", [HTTP_POST, HTTP_GET_THEN_BODY], ids=["post", "host"])
def test_http_request_to_redis_port_is_closed_and_never_runs(blog_env, request_bytes):
    # step 1: meltemi authenticates upstream with the Secret; the client needs no password.
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    c.send_raw(request_bytes)
    assert c.closed_by_peer(timeout=5), "meltemi must close the connection"
    c.close()
    # The body never reached the real server, which meltemi holds the password of.
    assert env.redis.client().get("pwned") is None
    assert metric(env.meltemi, "meltemi_cross_protocol_closed_total") == 1
    log = env.meltemi.stderr()
    assert re.search(r"security attack from 127\.0\.0\.1:\d+", log), log[-2000:]
    # An ordinary client on the same listener is unaffected.
    ok = RespConn(env.host, env.port)
    assert ok.call("SET", "after", "1") == b"OK"
    ok.close()
    assert env.redis.client().get("after") == b"1"


def test_post_as_a_multibulk_command_also_closes(blog_env):
    # redis-server reacts to the command, whatever framing it came in.
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    c.send_raw(b"*1\r\n$4\r\npost\r\n*3\r\n$3\r\nSET\r\n$5\r\npwned\r\n$3\r\nyes\r\n")
    assert c.closed_by_peer(timeout=5)
    c.close()
    assert env.redis.client().get("pwned") is None


# ---- unauthenticated clients and memory ---------------------------------------------------

def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_unauthenticated_huge_bulk_gets_redis_error_and_close(blog_env):
    env = blog_env(step=2)  # the listener requires a client password
    c = RespConn(env.host, env.port)
    c.send_raw(b"*3\r\n$3\r\nSET\r\n$5\r\npwned\r\n$104857600\r\n")
    assert c.read_reply() == "ERR Protocol error: unauthenticated bulk length"
    assert c.closed_by_peer(timeout=5)
    c.close()
    c = RespConn(env.host, env.port)
    c.send_raw(b"*100000\r\n")
    assert c.read_reply() == "ERR Protocol error: unauthenticated multibulk length"
    assert c.closed_by_peer(timeout=5)
    c.close()


def test_unauthenticated_clients_cannot_grow_meltemi_memory(blog_env):
    env = blog_env(step=2)
    pid = env.meltemi.proc.pid
    before = status_kib(pid, "VmRSS")
    chunk = b"x" * (1 << 20)
    socks = []
    for _ in range(3):  # 3 x 20 MiB of a bulk that never ends, no AUTH
        s = socket.create_connection((env.host, env.port), timeout=10)
        socks.append(s)
        try:
            s.sendall(b"*3\r\n$3\r\nSET\r\n$5\r\npwned\r\n$104857600\r\n")
            for _ in range(20):
                s.sendall(chunk)
        except OSError:
            pass  # meltemi closed the connection: that is the point
    peak = status_kib(pid, "VmHWM")
    for s in socks:
        s.close()
    # Without the pre-auth limits meltemi buffers all 60 MiB; allow far less than that.
    assert peak - before < 24 * 1024, f"RSS grew from {before} KiB to a peak of {peak} KiB"
    assert env.redis.client().get("pwned") is None


def test_authenticated_client_keeps_big_values(blog_env):
    env = blog_env(step=2)
    c = RespConn(env.host, env.port)
    assert c.call("AUTH", "testredis123!") == b"OK"
    value = b"v" * (1 << 20)
    assert c.call("SET", "big", value) == b"OK"
    assert c.call("STRLEN", "big") == len(value)
    c.close()


# ---- auth and idle timeouts -----------------------------------------------------------------

def service_with_settings(settings):
    """The blog's RedisService (client password testredis123!) plus meltemi settings."""
    return configs.BLOG_STEP2 + "".join(f"    {ln}\n" for ln in settings)


def deploy_timeouts(blog_env, settings):
    files = {"redis-single.yaml": configs.STEP1,
             "redis-service.yaml": service_with_settings(settings)}
    return blog_env(files=files)


def test_unauthenticated_connection_is_closed_after_auth_timeout(blog_env):
    env = deploy_timeouts(blog_env, ["authTimeout: 500ms"])
    idle = RespConn(env.host, env.port)
    talker = RespConn(env.host, env.port)  # talking does not help: only AUTH does
    assert talker.call("PING") == "NOAUTH Authentication required."
    authed = RespConn(env.host, env.port)
    assert authed.call("AUTH", configs.CLIENT_PASSWORD) == b"OK"
    assert idle.closed_by_peer(timeout=10), "an unauthenticated connection must be closed"
    assert talker.closed_by_peer(timeout=10)
    # The authenticated one, older than the timeout by now, is still served.
    assert authed.call("SET", "k", "v") == b"OK"
    for c in (idle, talker, authed):
        c.close()
    assert metric(env.meltemi, "meltemi_auth_timeouts_total") == 2
    assert re.search(r"closing 127\.0\.0\.1:\d+: not authenticated after 500 ms",
                     env.meltemi.stderr())


def test_idle_connection_is_closed_after_idle_timeout(blog_env):
    env = deploy_timeouts(blog_env, ["idleTimeout: 1s"])
    c = RespConn(env.host, env.port)
    assert c.call("AUTH", configs.CLIENT_PASSWORD) == b"OK"
    assert c.call("SET", "k", "v") == b"OK"
    assert c.closed_by_peer(timeout=10), "an idle connection must be closed"
    c.close()
    assert metric(env.meltemi, "meltemi_idle_timeouts_total") == 1
    assert metric(env.meltemi, "meltemi_auth_timeouts_total") == 0


def test_active_authenticated_connection_is_kept(blog_env):
    # idleTimeout is long against the gaps between commands, so only a broken idle clock
    # (counting from the accept or the AUTH, not from the last command) closes it.
    env = deploy_timeouts(blog_env, ["authTimeout: 300ms", "idleTimeout: 2s"])
    c = RespConn(env.host, env.port)
    assert c.call("AUTH", configs.CLIENT_PASSWORD) == b"OK"
    deadline = time.monotonic() + 5
    n = 0
    while time.monotonic() < deadline:
        assert c.call("INCR", "n") == n + 1
        n += 1
        time.sleep(0.1)
    c.close()
    assert metric(env.meltemi, "meltemi_idle_timeouts_total") == 0
    assert metric(env.meltemi, "meltemi_auth_timeouts_total") == 0
