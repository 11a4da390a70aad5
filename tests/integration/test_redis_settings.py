"""RedisService settings on a single Redis: enableCommandStats (per-command totals, errors
and latency in /stats/prometheus) and maxBufferSizeBeforeFlush + bufferFlushTimeout
(upstream writes held until enough bytes or the timeout; every command still answered,
in order)."""

import re

import configs
from harness import VIP, RespConn, RespError, free_port


def deploy(redis_factory, config_dir, meltemi_factory, settings):
    redis = redis_factory()
    port = free_port(VIP)
    files = {
        "se.yaml": configs.service_entry("redis-single", VIP, port, redis.port),
        "rs.yaml": f"""
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {{name: redis-single, namespace: redis}}
spec:
  host: [redis-single.redis.svc.cluster.local]
  settings: {settings}
""",
    }
    return redis, port, meltemi_factory(config_dir(files))


def metric(body, name, command):
    for ln in body.splitlines():
        m = re.match(r'^(\w+)\{listener="[^"]*",command="([^"]*)"\} (\S+)$', ln)
        if m and m.group(1) == name and m.group(2) == command:
            return float(m.group(3))
    return None


def test_command_stats_count_totals_errors_and_latency(redis_factory, config_dir,
                                                       meltemi_factory):
    redis, port, m = deploy(redis_factory, config_dir, meltemi_factory,
                            "{enableCommandStats: true}")
    c = RespConn(VIP, port)
    for i in range(7):
        assert c.call("SET", f"k{i}", "v") == b"OK"
    for i in range(3):
        assert c.call("GET", f"k{i}") == b"v"
    assert isinstance(c.call("LPUSH", "k0", "x"), RespError)  # WRONGTYPE from Redis
    status, body = m.http_get("/stats/prometheus")
    assert status == 200
    assert metric(body, "meltemi_redis_command_total", "set") == 7
    assert metric(body, "meltemi_redis_command_total", "get") == 3
    assert metric(body, "meltemi_redis_command_errors_total", "lpush") == 1
    assert metric(body, "meltemi_redis_command_errors_total", "set") == 0
    assert metric(body, "meltemi_redis_command_duration_milliseconds_count", "get") == 3


def test_command_stats_are_off_by_default(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    assert c.call("SET", "a", "b") == b"OK"
    status, body = env.meltemi.http_get("/stats/prometheus")
    assert status == 200
    assert "meltemi_redis_command_total{" not in body


def test_buffered_upstream_flushes_answer_everything_in_order(redis_factory, config_dir,
                                                              meltemi_factory):
    # A buffer far larger than anything sent here: only the timeout flushes.
    redis, port, m = deploy(redis_factory, config_dir, meltemi_factory,
                            "{maxBufferSizeBeforeFlush: 1048576, bufferFlushTimeout: 2ms}")
    c = RespConn(VIP, port)
    for i in range(50):
        assert c.call("SET", f"k{i}", str(i)) == b"OK"
    # Pipelined from two clients at once: each gets its replies, in its order.
    d = RespConn(VIP, port)
    c.send_raw(b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\nk%d\r\n" % (len(str(i)) + 1, i)
                        for i in range(50)))
    d.send_raw(b"".join(b"*2\r\n$4\r\nINCR\r\n$3\r\nctr\r\n" for _ in range(20)))
    assert [c.read_reply() for _ in range(50)] == [str(i).encode() for i in range(50)]
    assert [d.read_reply() for _ in range(20)] == list(range(1, 21))
    # A buffer smaller than one command flushes at once.
    redis2, port2, _ = deploy(redis_factory, config_dir, meltemi_factory,
                              "{maxBufferSizeBeforeFlush: 1, bufferFlushTimeout: 10s}")
    e = RespConn(VIP, port2)
    assert e.call("PING") == b"PONG"
    assert e.call("SET", "x", "y") == b"OK"
    assert e.call("GET", "x") == b"y"
