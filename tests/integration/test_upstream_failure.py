"""
A dead or unreachable upstream gives clients error replies within a bound, never a hang,
and service resumes by itself once the upstream is back.
"""

import threading
import time

import redis

import configs
from harness import VIP, RespConn, RespError, free_port, redis_py, resp_encode, wait_until


def test_unreachable_upstream_is_an_error_reply(redis_factory, config_dir, meltemi_factory):
    port = free_port(VIP)
    dead = free_port()  # nothing listens there
    conf = config_dir({"se.yaml": configs.service_entry("redis-single", VIP, port, dead)})
    meltemi_factory(conf)
    c = RespConn(VIP, port, timeout=15)  # longer than the default connect timeout
    for _ in range(3):
        reply = c.call("GET", "foo")
        assert isinstance(reply, RespError), reply
    # Locally answered commands keep working while the upstream is down.
    assert c.call("PING") == b"PONG"
    c.close()


def test_upstream_killed_mid_run_then_restarted(blog_env):
    env = blog_env(step=1)
    r = redis_py(env.host, env.port, socket_timeout=15)
    assert r.set("before", "1") is True

    # A client keeps sending while the upstream dies under it.
    stop = threading.Event()
    seen = {"ok": 0, "error_replies": 0, "other": []}

    def hammer():
        c = redis_py(env.host, env.port, socket_timeout=15)
        while not stop.is_set():
            try:
                c.incr("n")
                seen["ok"] += 1
            except redis.exceptions.ResponseError:
                seen["error_replies"] += 1
            except Exception as exc:  # a timeout here is the hang we test against
                seen["other"].append(repr(exc))
                return
        c.close()

    t = threading.Thread(target=hammer)
    t.start()
    wait_until(lambda: seen["ok"] > 50, 15, "traffic through meltemi before the kill")
    env.redis.kill()
    wait_until(lambda: seen["error_replies"] > 10 or seen["other"], 20,
               "error replies after the upstream died")

    # Every new request now gets an error reply, on old and new connections alike.
    for client in (r, redis_py(env.host, env.port, socket_timeout=15)):
        try:
            client.get("before")
            raise AssertionError("a request succeeded with the upstream dead")
        except redis.exceptions.ResponseError:
            pass

    # Same port, same password: meltemi reconnects by itself (with backoff), within a bound.
    env.redis.start()

    def resumed():
        try:
            return r.set("after", "2") is True
        except redis.exceptions.ResponseError:
            return False

    wait_until(resumed, 30, "service to resume after redis-server restarted", interval=0.2)
    stop.set()
    t.join(timeout=30)
    assert not t.is_alive(), "the client thread hung"
    assert not seen["other"], seen["other"][:3]
    assert env.redis.client().get("after") == b"2"
    assert redis_py(env.host, env.port).incr("fresh") == 1


def test_upstream_restart_does_not_break_pipelines(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port, timeout=15)
    assert c.call("SET", "a", "1") == b"OK"
    env.redis.kill()
    c.send_raw(b"".join(resp_encode("GET", "a") for _ in range(100)))
    replies = [c.read_reply() for _ in range(100)]
    assert all(isinstance(x, RespError) for x in replies), replies[:5]
    env.redis.start()
    deadline = time.monotonic() + 30
    while c.call("SET", "b", "2") != b"OK":
        assert time.monotonic() < deadline, "service did not resume"
        time.sleep(0.2)
    c.close()


class _SilentServer:
    """Accepts connections and reads everything, never answers: an upstream that hangs."""

    def __init__(self):
        import socket
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import select
        while not self.stop:
            r, _, _ = select.select([self.sock] + self.conns, [], [], 0.1)
            for s in r:
                if s is self.sock:
                    c, _ = s.accept()
                    self.accepted += 1
                    self.conns.append(c)
                elif not s.recv(65536):
                    self.conns.remove(s)
                    s.close()

    def close(self):
        self.stop = True
        self.thread.join(timeout=5)
        for c in self.conns:
            c.close()
        self.sock.close()


def test_hanging_upstream_times_out_every_command_in_flight(config_dir, meltemi_factory):
    """opTimeout on an upstream that accepts but never answers: every pipelined command gets
    the timeout error, the connection is replaced, and the next command times out again on
    the new one (the deadline is armed again for it)."""
    silent = _SilentServer()
    try:
        port = free_port(VIP)
        conf = config_dir({
            "se.yaml": configs.service_entry("redis-single", VIP, port, silent.port),
            "rs.yaml": """
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: redis-single, namespace: redis}
spec:
  host: [redis-single.redis.svc.cluster.local]
  settings: {opTimeout: 300ms}
""",
        })
        m = meltemi_factory(conf)
        c = RespConn(VIP, port, timeout=15)
        c.send_raw(b"".join(resp_encode("GET", f"k{i}") for i in range(5)))
        replies = [c.read_reply() for _ in range(5)]
        for r in replies:
            assert isinstance(r, RespError) and "timed out" in r, r
        reply = c.call("GET", "again")
        assert isinstance(reply, RespError) and "timed out" in reply, reply
        assert silent.accepted == 2, "a timed-out connection is closed and a new one made"
        assert c.call("PING") == b"PONG"
        status, body = m.http_get("/stats/prometheus")
        assert status == 200
        got = [ln for ln in body.splitlines() if ln.startswith("meltemi_upstream_request_timeouts_total{")]
        assert got and sum(float(ln.split()[-1]) for ln in got) == 6, got
    finally:
        silent.close()
