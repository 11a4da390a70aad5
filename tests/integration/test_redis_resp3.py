"""
RESP3 through meltemi (issue 10): HELLO 3 (with AUTH and SETNAME) per client, upstream
connections per protocol version (a RESP3 client's commands go on connections that said
HELLO 3, so its replies are RESP3's typed ones), pub/sub as push messages, RESP3 replies
through Redis Cluster's split commands. Real clients: raw RESP3, node-redis from npm (which
speaks RESP3), redis-benchmark -3, against real redis-server and a 6-node cluster.
(redis-py 4.3, Debian's, has no protocol=3: RESP3 from Python is the raw reader below.)
"""

import subprocess
import sys
from pathlib import Path


import configs
from cluster_fixtures import cluster_proxy, redis_cluster, shared_cluster  # noqa: F401
from harness import RespConn, RespError, redis_py, resp_encode

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from meta_env import run_node_peer  # noqa: E402


class Resp3Conn(RespConn):
    """RespConn reading RESP3: every type, tagged so that equal bytes compare equal."""

    def send(self, *cmds):
        self.send_raw(b"".join(resp_encode(*c) for c in cmds))

    def _blob(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest
        if t == b"-":
            return RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            return None if int(rest) < 0 else self._blob(int(rest))
        if t == b"_":
            return None
        if t in (b",", b"("):
            return (t.decode(), rest)
        if t == b"#":
            return rest == b"t"
        if t in (b"!", b"="):
            return (t.decode(), self._blob(int(rest)))
        if t in (b"*", b"~", b">"):
            n = int(rest)
            items = None if n < 0 else [self.read() for _ in range(n)]
            return items if t == b"*" else (t.decode(), items)
        if t == b"%":
            return ("%", [(self.read(), self.read()) for _ in range(int(rest))])
        raise AssertionError(f"not RESP3: {line!r}")


SCRIPT = [("SET", "r3:k", "v"), ("GET", "r3:k"), ("GET", "r3:missing"),
          ("DEL", "r3:h", "r3:z", "r3:s", "r3:k"), ("SET", "r3:k", "v"), ("HSET", "r3:h", "a", "1"),
          ("HGETALL", "r3:h"), ("ZADD", "r3:z", "1.5", "m"), ("ZSCORE", "r3:z", "m"), ("SADD", "r3:s", "x"), ("SMEMBERS", "r3:s"),
          ("EXISTS", "r3:k"), ("PING",), ("SUBSCRIBE", "r3:chan"), ("GET", "r3:k"), ("PING",),
          ("UNSUBSCRIBE", "r3:chan"), ("UNSUBSCRIBE",), ("HELLO", "4"), ("GET", "r3:missing")]


def run_script(host, port, hello):
    c = Resp3Conn(host, port)
    c.send(hello)
    h = dict(c.read()[1])
    assert h[b"proto"] == 3
    c.send(*SCRIPT)
    replies = [c.read() for _ in SCRIPT]
    c.close()
    return replies


def test_resp3_replies_match_redis(blog_env):
    env = blog_env(step=1)
    via = run_script(env.host, env.port, ("HELLO", "3"))
    env.redis.client().flushall()
    straight = run_script("127.0.0.1", env.redis.port,
                          ("HELLO", "3", "AUTH", "default", configs.UPSTREAM_PASSWORD))
    assert via == straight
    # and they are RESP3's typed replies
    assert via[2] is None  # "_"
    assert via[3] == 1
    assert via[6] == ("%", [(b"a", b"1")])
    assert via[8] == (",", b"1.5")
    assert via[10] == ("~", [b"x"])
    assert via[13] == (">", [b"subscribe", b"r3:chan", 1])
    assert via[14] == b"v"  # RESP3 has no subscribed state
    assert via[15] == b"PONG"
    assert via[17] == (">", [b"unsubscribe", None, 0])
    assert via[18] == RespError("NOPROTO unsupported protocol version")


def test_resp3_and_resp2_clients_use_their_own_upstream_connections(blog_env):
    env = blog_env(step=1)
    r3 = Resp3Conn(env.host, env.port)
    r3.send(("HELLO", "3", "SETNAME", "app3"))
    assert dict(r3.read()[1])[b"proto"] == 3
    r3.send(("HGETALL", "nothing"), ("CLIENT", "GETNAME"))
    assert r3.read() == ("%", [])
    assert r3.read() == b"app3"
    r2 = redis_py(env.host, env.port)
    assert r2.hgetall("nothing") == {}
    conns = env.redis.client().client_list()
    resps = sorted(c["resp"] for c in conns if c["cmd"] in ("hgetall", "hello"))
    assert "2" in resps and "3" in resps, conns
    r3.close()


def test_resp3_subscriber_gets_push_messages(blog_env):
    env = blog_env(step=1)
    sub = Resp3Conn(env.host, env.port)
    sub.send(("HELLO", "3"), ("SUBSCRIBE", "push-ch"), ("PSUBSCRIBE", "push-*"))
    sub.read()
    assert sub.read() == (">", [b"subscribe", b"push-ch", 1])
    assert sub.read() == (">", [b"psubscribe", b"push-*", 2])
    plain = Resp3Conn(env.host, env.port)  # a RESP2 subscriber of the same channel
    plain.send(("SUBSCRIBE", "push-ch"))
    assert plain.read() == [b"subscribe", b"push-ch", 1]
    pub = redis_py(env.host, env.port)
    assert pub.publish("push-ch", "hello") == 2  # one upstream subscription each: channel, pattern
    got = [sub.read(), sub.read()]
    assert (">", [b"message", b"push-ch", b"hello"]) in got
    assert (">", [b"pmessage", b"push-*", b"push-ch", b"hello"]) in got
    assert plain.read() == [b"message", b"push-ch", b"hello"]
    # RESET ends the subscriptions and goes back to RESP2
    sub.send(("RESET",), ("HGETALL", "nothing"))
    assert sub.read() == b"RESET"
    assert sub.read() == []
    sub.close()
    plain.close()


def test_hello3_with_auth_and_setname(blog_env):
    env = blog_env(step=2)  # the listener asks for a client password
    c = Resp3Conn(env.host, env.port)
    c.send(("HELLO", "3", "AUTH", "default", "wrong"))
    assert c.read().startswith("WRONGPASS")
    c.send(("GET", "k"))
    assert c.read() == RespError("NOAUTH Authentication required.")
    c.send(("HELLO", "3", "AUTH", "default", configs.CLIENT_PASSWORD, "SETNAME", "n3"),
           ("CLIENT", "GETNAME"), ("ZADD", "z3", "2", "a"), ("ZSCORE", "z3", "a"))
    assert dict(c.read()[1])[b"proto"] == 3
    assert c.read() == b"n3"
    assert c.read() == 1
    assert c.read() == (",", b"2")
    c.close()


def test_redis_benchmark_resp3(blog_env):
    env = blog_env(step=1)
    r = subprocess.run(["redis-benchmark", "-3", "-h", env.host, "-p", str(env.port), "-t",
                        "set,get,lpush,lrange_100", "-n", "2000", "-c", "10", "-q"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "ERR" not in out and "NOPROTO" not in out, out
    for test in ("SET", "GET", "LPUSH", "LRANGE_100"):
        assert any(line.startswith(test) and "requests per second" in line
                   for line in out.splitlines()), out
    assert env.redis.client().exists("key:__rand_int__") == 1  # the SETs were applied


def test_node_redis_resp3(blog_env):
    env = blog_env(step=1)
    out = run_node_peer("node_redis_client.js", env.host, env.port)
    assert out["hello"]["proto"] == 3
    assert out["get"] == "v" and out["missing"] is None
    assert out["hgetall"] == {"a": "1", "b": "2"}
    assert out["zscore"] == 1.5
    assert out["ping_while_subscribed"] == "PONG"
    assert out["published"] == [1, 1]
    assert out["messages"] == [["nr:chan", "one"], ["nr:chan", "two"]]


def test_cluster_resp3_split_commands(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster, workers=1)
    c = Resp3Conn(env.host, env.port)
    c.send(("HELLO", "3"))
    c.read()
    keys = [f"r3key{i}" for i in range(12)]
    assert len({redis_cluster.keyslot(k) for k in keys}) > 3  # spread over the masters
    c.send(("MSET", *[x for k in keys[:6] for x in (k, k.upper())]))
    assert c.read() == b"OK"
    c.send(("MGET", *keys), ("EXISTS", *keys), ("HSET", "{r3}h", "f", "1"),
           ("HGETALL", "{r3}h"), ("DEL", *keys), ("RANDOMKEY",))
    mget = c.read()
    assert mget == [k.upper().encode() for k in keys[:6]] + [None] * 6
    assert c.read() == 6
    assert c.read() == 1
    assert c.read() == ("%", [(b"f", b"1")])
    assert c.read() == 6
    assert c.read() == b"{r3}h"
    c.send(("DEL", "{r3}h"), ("RANDOMKEY",))
    assert c.read() == 1
    assert c.read() is None  # RESP3's null ("_"), the data set being empty
    c.close()
