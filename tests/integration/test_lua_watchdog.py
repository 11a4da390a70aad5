"""
The per-call watchdog of Lua filters (issue 13): a filter whose Lua pattern backtracks
without end over a client's key (`string.find(key, ".-.-.-.-b")` on a 204-byte key froze a
worker for minutes) fails only that request with the filter-timeout error, while another
client's GET through the same single worker is answered, /ready stays ready and SIGTERM
exits 0.
"""

from harness import RespConn, RespError
from test_lua_filters import VIPS, filtered, lua_counter  # noqa: F401 (fixture)

SLOW_MATCH = """\
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata:
  name: slowmatch
  namespace: demo
spec:
  hosts: [filtered]
  script: |
    return {
      on_request = function(msg, ctx)
        if msg.key and #msg.key > 100 and string.find(msg.key, ".-.-.-.-b") then
          return ctx:reply_error("ERR matched")
        end
      end,
    }
"""


def test_backtracking_pattern_fails_only_its_request(redis_factory, filtered):  # noqa: F811
    redis = redis_factory()
    redis.client().set("normal", "value")
    env = filtered({"filtered": redis}, {"slowmatch.yaml": SLOW_MATCH}, workers=1)
    host, port = VIPS["filtered"], env.port["filtered"]
    evil = RespConn(host, port, timeout=20)
    normal = RespConn(host, port, timeout=20)
    assert normal.call("GET", "normal") == b"value"
    for _ in range(3):
        evil.send_raw(b"*2\r\n$3\r\nGET\r\n$204\r\n" + b"a" * 204 + b"\r\n")
        # another client on the same (only) worker is served meanwhile and after
        assert normal.call("GET", "normal") == b"value"
        reply = evil.read_reply()
        assert isinstance(reply, RespError), reply
        assert reply == "ERR meltemi: filter slowmatch failed: time limit exceeded", reply
        assert env.meltemi.http_get("/ready") == (200, "ready\n")
    # the connection and the filter go on working for ordinary keys
    assert evil.call("GET", "normal") == b"value"
    assert lua_counter(env.meltemi, "filter_errors", "slowmatch") == 3
    assert "slowmatch failed on get: time limit exceeded" in env.meltemi.output()
    evil.close()
    normal.close()
    assert env.meltemi.terminate(timeout=15) == 0, env.meltemi.stderr()
