"""
What Redis clients see through meltemi beyond auth: Redis's own error texts, the commands
clients send at connect time, inline commands, pipelining order, protocol limits, and
redis-benchmark running pipelined without an error.
"""

import re
import subprocess

from harness import RespConn, RespError, cli_lines, redis_cli, resp_encode


def test_unknown_command_has_redis_text(blog_env):
    env = blog_env(step=1)
    out = redis_cli(env.host, env.port, "foo", "bar")
    assert cli_lines(out) == ["ERR unknown command 'foo', with args beginning with: 'bar'"]
    # The connection stays usable after an unknown command.
    c = RespConn(env.host, env.port)
    assert c.call("NOPE").startswith("ERR unknown command 'NOPE'")
    assert c.call("SET", "a", "1") == b"OK"
    c.close()


def test_wrong_arity_has_redis_text(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    assert c.call("GET") == RespError("ERR wrong number of arguments for 'get' command")
    assert c.call("PING") == b"PONG"
    c.close()


def test_hello_4_is_noproto_and_hello_2_works(blog_env):
    # HELLO 3 switches to RESP3 (test_redis_resp3.py); an unknown version is Redis's NOPROTO.
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    reply = c.call("HELLO", "4")
    assert isinstance(reply, RespError) and reply.startswith("NOPROTO"), reply
    reply = c.call("HELLO", "2")
    assert isinstance(reply, list), reply
    fields = dict(zip(reply[0::2], reply[1::2]))
    assert fields[b"proto"] == 2
    assert c.call("PING") == b"PONG"  # still RESP2, still open
    c.close()


def test_connect_time_commands(blog_env):
    # What redis-cli, redis-py, Jedis, Lettuce and redis-benchmark send when they connect.
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    assert c.call("PING") == b"PONG"
    assert c.call("PING", "hi") == b"hi"
    assert c.call("ECHO", "hello") == b"hello"
    assert c.call("SELECT", "0") == b"OK"
    assert c.call("CLIENT", "SETNAME", "itest") == b"OK"
    assert c.call("CLIENT", "GETNAME") == b"itest"
    assert isinstance(c.call("CLIENT", "ID"), int)
    info = c.call("INFO")
    assert isinstance(info, bytes) and b"redis_version" in info
    cfg = c.call("CONFIG", "GET", "save")
    assert isinstance(cfg, list), cfg
    cmd = c.call("COMMAND", "COUNT")
    assert isinstance(cmd, int) and cmd > 0, cmd
    assert c.call("QUIT") == b"OK"
    assert c.closed_by_peer(timeout=5)
    c.close()


def test_inline_commands(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    c.send_raw(b"PING\r\nSET inl value\r\nGET inl\r\n")
    assert [c.read_reply() for _ in range(3)] == [b"PONG", b"OK", b"value"]
    c.close()


def test_pipelined_raw_stream_keeps_order(blog_env):
    # One write carrying 500 commands of mixed kinds (forwarded and answered locally): replies
    # come back in request order.
    env = blog_env(step=1)
    c = RespConn(env.host, env.port, timeout=10)
    stream = b"".join(
        resp_encode("SET", f"p{i}", str(i)) + resp_encode("PING") + resp_encode("GET", f"p{i}")
        for i in range(500))
    c.send_raw(stream)
    replies = [c.read_reply() for _ in range(1500)]
    for i in range(500):
        assert replies[3 * i: 3 * i + 3] == [b"OK", b"PONG", str(i).encode()]
    c.close()


def test_large_value_round_trip(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port, timeout=10)
    value = bytes(range(256)) * 8192  # 2 MiB, every byte value
    assert c.call("SET", "big", value) == b"OK"
    assert c.call("GET", "big") == value
    c.close()


def test_bulk_length_over_limit_is_a_protocol_error_and_closes(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    c.send_raw(b"*2\r\n$3\r\nGET\r\n$99999999999\r\n")
    reply = c.read_reply()
    assert isinstance(reply, RespError) and reply.startswith("ERR Protocol error"), reply
    assert c.closed_by_peer(timeout=5)
    c.close()


def test_garbage_is_a_protocol_error_and_closes(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    c.send_raw(b"*1\r\n+notabulk\r\n")
    reply = c.read_reply()
    assert isinstance(reply, RespError) and reply.startswith("ERR Protocol error"), reply
    assert c.closed_by_peer(timeout=5)
    c.close()


def test_redis_benchmark_pipelined_without_errors(blog_env):
    env = blog_env(step=1, workers=2)
    run = subprocess.run(
        ["redis-benchmark", "-h", env.host, "-p", str(env.port), "-P", "16", "-n", "20000",
         "-c", "20", "-t", "ping,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,mset",
         "--csv"],
        capture_output=True, text=True, timeout=180)
    text = run.stdout + run.stderr
    assert run.returncode == 0, text
    bad = [ln for ln in text.splitlines() if re.search(r"error|WARN", ln, re.I)]
    assert not bad, "\n".join(bad[:20])
    rows = [ln for ln in run.stdout.splitlines() if ln.startswith('"') and "rps" not in ln]
    assert len(rows) >= 13, run.stdout  # every test ran and reported a rate
    # The writes really reached redis-server.
    assert env.redis.client().dbsize() > 0


def _docs_names(reply):
    assert isinstance(reply, list) and len(reply) % 2 == 0, reply
    return [reply[i].decode() for i in range(0, len(reply), 2)]


def test_command_docs_are_redis_docs_of_what_meltemi_lets_through(blog_env):
    """COMMAND DOCS comes from Redis (the one endpoint), kept to the commands COMMAND lists:
    refused ones (SHUTDOWN, MONITOR, PSYNC...) are left out, as from COMMAND, INFO, COUNT."""
    env = blog_env(step=1)
    c = RespConn(env.host, env.port, timeout=10)
    d = RespConn("127.0.0.1", env.redis.port, timeout=10)
    assert d.call("AUTH", env.redis.password) == b"OK"
    get = c.call("COMMAND", "DOCS", "get")
    assert get == d.call("COMMAND", "DOCS", "get")
    assert _docs_names(get) == ["get"] and b"summary" in get[1]
    assert _docs_names(c.call("COMMAND", "DOCS", "shutdown", "get", "monitor")) == ["get"]
    everything = set(_docs_names(c.call("COMMAND", "DOCS")))
    listed = {n.decode() for n in c.call("COMMAND", "LIST")}
    assert everything == listed & set(_docs_names(d.call("COMMAND", "DOCS")))
    assert "set" in everything and "multi" in everything
    assert not everything & {"shutdown", "monitor", "psync", "sync", "failover"}
    assert len({n for n in listed if "|" not in n}) == c.call("COMMAND", "COUNT")
    c.close()
    d.close()
