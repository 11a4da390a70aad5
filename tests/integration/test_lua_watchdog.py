"""
The per-call watchdog of Lua filters (issue 13): a filter whose Lua pattern backtracks
without end over a client's key (`string.find(key, ".-.-.-.-b")` on a 204-byte key froze a
worker for minutes) fails only that request with the filter-timeout error, while another
client's GET through the same single worker is answered, /ready stays ready and SIGTERM
exits 0. And /ready names a worker whose loop has not turned for seconds (here: a filter
doing legitimately long work under raised limits).
"""

import threading

from harness import RespConn, RespError, wait_until
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
    normal.close()
    # SIGTERM with the pathological request in the worker: the filter ends, meltemi exits 0
    evil.send_raw(b"*2\r\n$3\r\nGET\r\n$204\r\n" + b"a" * 204 + b"\r\n")
    assert env.meltemi.terminate(timeout=15) == 0, env.meltemi.stderr()
    evil.close()


BUSY = """\
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata:
  name: busy
  namespace: demo
spec:
  hosts: [filtered]
  timeout: 10s
  maxInstructions: 10000000000
  script: |
    return {
      on_request = function(msg, ctx)
        if msg.key == "busy" then
          -- legitimate but long work: 3 to 4 s of wall-clock time (os.time has 1 s steps)
          local t0 = os.time()
          while os.time() - t0 < 4 do end
          return ctx:reply("done")
        end
      end,
    }
"""


def test_ready_names_a_stuck_worker(redis_factory, filtered):  # noqa: F811
    redis = redis_factory()
    env = filtered({"filtered": redis}, {"busy.yaml": BUSY}, workers=2)
    host, port = VIPS["filtered"], env.port["filtered"]
    assert env.meltemi.http_get("/ready") == (200, "ready\n")
    replies = []
    c = RespConn(host, port, timeout=20)
    t = threading.Thread(target=lambda: replies.append(c.call("GET", "busy")), daemon=True)
    t.start()
    seen = []

    def stuck():
        status, body = env.meltemi.http_get("/ready", timeout=2)
        seen.append((status, body))
        return status == 503
    wait_until(stuck, 10, "/ready to report the busy worker")
    status, body = seen[-1]
    assert "not ready" in body and "stuck" in body, body
    assert "worker 0" in body or "worker 1" in body, body
    t.join(timeout=20)
    assert replies == [b"done"], replies
    wait_until(lambda: env.meltemi.http_get("/ready") == (200, "ready\n"), 10,
               "/ready to recover once the worker turns again")
    c.close()
    assert env.meltemi.terminate(timeout=15) == 0, env.meltemi.stderr()
