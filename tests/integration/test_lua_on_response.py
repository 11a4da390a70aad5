"""
on_response(msg, ctx) in a LuaFilter: the filter sees every reply to its listener's
forwarded commands (decoded: msg.reply, msg.reply_type, msg.is_error) and may replace it
with ctx:reply / ctx:reply_error; replies keep their order under pipelining; a filter that
throws in on_response fails only that reply.
"""

import configs
from harness import RespConn, RespError, free_port

VIP = "127.0.0.36"

FILTER = """
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata:
  name: mask
  namespace: demo
spec:
  hosts: [redis-main.demo.svc.cluster.local]
  script: |
    local M = {}
    function M.on_request(msg, ctx)
      ctx:counter("requests", 1)
    end
    function M.on_response(msg, ctx)
      ctx:counter("replies_" .. msg.reply_type, 1)
      if msg.command == "get" and type(msg.reply) == "string" and msg.reply:find("^secret:") then
        ctx:reply("***")
      elseif msg.command == "incr" and msg.reply_type == "integer" then
        ctx:reply(msg.reply * 100)
      elseif msg.command == "hgetall" then
        ctx.conn.last_array = msg.reply
      elseif msg.command == "get" and msg.reply == "boom" then
        error("on_response blew up")
      elseif msg.is_error then
        ctx:reply_error("WRAPPED " .. msg.reply)
      end
    end
    return M
"""


def deploy(redis_factory, config_dir, meltemi_factory):
    redis = redis_factory()
    port = free_port(VIP)
    files = {
        "svc.yaml": configs.service_entry("redis-main", VIP, port, redis.port, namespace="demo"),
        "filter.yaml": FILTER,
    }
    m = meltemi_factory(config_dir(files))
    return redis, port, m


def test_on_response_rewrites_replies_in_order(redis_factory, config_dir, meltemi_factory):
    redis, port, m = deploy(redis_factory, config_dir, meltemi_factory)
    c = RespConn(VIP, port)
    assert c.call("SET", "a", "secret:1") == b"OK"
    assert c.call("SET", "b", "public") == b"OK"
    assert c.call("GET", "a") == b"***"
    assert c.call("GET", "b") == b"public"
    assert c.call("INCR", "n") == 100
    assert c.call("HSET", "h", "f", "v") == 1
    assert c.call("HGETALL", "h") == [b"f", b"v"]
    # Redis's own error, rewritten by the filter.
    err = c.call("INCR", "b")
    assert isinstance(err, RespError) and err.startswith("WRAPPED ERR"), err
    # Pipelined: every reply is seen and order is kept.
    c.send_raw(b"".join(
        b"*2\r\n$3\r\nGET\r\n$1\r\n%s\r\n" % k for k in (b"a", b"b", b"a", b"b")))
    assert [c.read_reply() for _ in range(4)] == [b"***", b"public", b"***", b"public"]
    # The upstream kept the real values.
    assert redis.client().get("a") == b"secret:1"


def test_a_throwing_on_response_fails_only_its_reply(redis_factory, config_dir, meltemi_factory):
    redis, port, m = deploy(redis_factory, config_dir, meltemi_factory)
    c = RespConn(VIP, port)
    assert c.call("SET", "x", "boom") == b"OK"
    err = c.call("GET", "x")
    assert isinstance(err, RespError) and "filter mask failed" in err, err
    assert c.call("SET", "y", "fine") == b"OK"
    assert c.call("GET", "y") == b"fine"
    status, body = m.http_get("/stats/prometheus")
    assert status == 200
    assert 'meltemi_lua_counter_total{name="replies_bulk",label="mask"}' in body
