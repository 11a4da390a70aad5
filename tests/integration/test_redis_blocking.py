"""
Blocking commands through meltemi (issue 10): BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP,
BZPOPMIN/MAX, BZMPOP and XREAD/XREADGROUP ... BLOCK each run on an upstream connection leased
for the command until it answers, from the bounded per-endpoint pool
(connectionPool.tcp.maxConnections): other clients are answered while they block, a full pool
answers at once with the reason, Redis's timeout is honoured (also past opTimeout), and a
client that disconnects while blocked closes its lease. WAIT is refused, and why.

Real redis-server processes and the 6-node cluster fixture; redis-py, redis-cli and raw RESP.
Assertions are on replies and on the servers' own view (CLIENT LIST), never on timing.
"""

import threading

import pytest
import redis

import configs
from cluster_fixtures import (cluster_proxy, redis_cluster, shared_cluster)  # noqa: F401
from harness import RespConn, redis_py, resp_encode, wait_until


def direct(env):
    return env.redis.client()


def blocked_on_server(server_client):
    """Clients of the server blocked in a command (CLIENT LIST flags contain 'b')."""
    return [c for c in server_client.client_list() if "b" in c["flags"]]


OP_TIMEOUT_1S = """\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: redis-single
  namespace: redis
spec:
  host:
  - redis-single.redis.svc.cluster.local
  settings:
    opTimeout: 1s
"""



def test_every_blocking_command_is_served_on_its_own_lease(blog_env):
    env = blog_env(step=1)
    d = direct(env)
    d.rpush("l", "a", "b", "c", "d", "e")
    d.zadd("z", {"m1": 1, "m2": 2, "m3": 3, "m4": 4})
    d.xadd("s", {"f": "v"}, id="1-0")
    d.xgroup_create("s", "g", id="0")
    c = RespConn(env.host, env.port, timeout=10)
    cases = [
        (("BLPOP", "l", "0"), [b"l", b"a"]),
        (("BRPOP", "l", "0"), [b"l", b"e"]),
        (("BLMOVE", "l", "m", "LEFT", "RIGHT", "0"), b"b"),
        (("BRPOPLPUSH", "l", "m", "0"), b"d"),
        (("BLMPOP", "0", "1", "l", "LEFT"), [b"l", [b"c"]]),
        (("BZPOPMIN", "z", "0"), [b"z", b"m1", b"1"]),
        (("BZPOPMAX", "z", "0"), [b"z", b"m4", b"4"]),
        (("BZMPOP", "0", "1", "z", "MIN"), [b"z", [[b"m2", b"2"]]]),
        (("XREAD", "BLOCK", "0", "STREAMS", "s", "0"), [[b"s", [[b"1-0", [b"f", b"v"]]]]]),
        (("xreadgroup", "group", "g", "c", "Block", "0", "streams", "s", ">"),
         [[b"s", [[b"1-0", [b"f", b"v"]]]]]),
    ]
    for cmd, want in cases:
        assert c.call(*cmd) == want, cmd
    # a timeout is Redis's: nil when nothing came (BLPOP) or an empty reply (XREAD)
    assert c.call("BLPOP", "empty", "0.05") is None
    assert c.call("XREAD", "BLOCK", "50", "STREAMS", "s", "$") is None
    # WAIT is refused, and says why
    assert c.call("WAIT", "1", "0").startswith("ERR meltemi: 'wait' is refused: it counts the "
                                               "replicas that acknowledged")
    # the leases went back: nothing of ours is blocked on the server
    wait_until(lambda: not blocked_on_server(d), 5, "no blocked client on the server")
    c.close()


def test_other_clients_are_answered_while_many_block(blog_env):
    env = blog_env(step=1, workers=1)
    d = direct(env)
    d.set("probe", "value")
    n = 20
    blockers = [RespConn(env.host, env.port, timeout=30) for _ in range(n)]
    for i, b in enumerate(blockers):
        b.send_raw(resp_encode("BLPOP", f"q{i}", "0"))
    wait_until(lambda: len(blocked_on_server(d)) == n, 10, f"{n} clients blocked on the server")
    # while they block, other clients (same worker, same shared upstream connection) are
    # answered, pipelined or not
    r = redis_py(env.host, env.port, socket_timeout=10)
    for _ in range(50):
        assert r.get("probe") == b"value"
    p = r.pipeline(transaction=False)
    for i in range(100):
        p.incr("hits")
    assert p.execute()[-1] == 100
    # each blocker gets its own value, once
    for i in range(n):
        d.rpush(f"q{i}", f"v{i}")
    for i, b in enumerate(blockers):
        assert b.read_reply() == [f"q{i}".encode(), f"v{i}".encode()]
        b.close()
    r.close()


def test_a_timeout_past_op_timeout_is_still_redis_s(blog_env):
    env = blog_env(files={"redis-single.yaml": configs.STEP1, "rs.yaml": OP_TIMEOUT_1S})
    c = RespConn(env.host, env.port, timeout=15)
    # opTimeout is 1 s; BLPOP's own 2 s timeout decides: nil, not a proxy timeout error
    assert c.call("BLPOP", "nothing", "2") is None
    assert c.call("PING") == b"PONG"
    c.close()


def test_a_full_lease_pool_answers_at_once_and_others_still_work(blog_env):
    env = blog_env(files={"redis-single.yaml": configs.STEP1, "dr.yaml": configs.max_connections_rule(2)})
    d = direct(env)
    a = RespConn(env.host, env.port, timeout=10)
    b = RespConn(env.host, env.port, timeout=10)
    a.send_raw(resp_encode("BLPOP", "qa", "0"))
    b.send_raw(resp_encode("BLPOP", "qb", "0"))
    wait_until(lambda: len(blocked_on_server(d)) == 2, 10, "two blocked clients")
    third = RespConn(env.host, env.port, timeout=10)
    got = third.call("BLPOP", "qc", "0")
    assert got.startswith("ERR meltemi: upstream ") and got.endswith(
        "all 2 exclusive connections are in use (connectionPool.tcp.maxConnections)"), got
    assert third.call("SET", "k", "v") == b"OK"  # shared connections are not leases
    d.rpush("qa", "x")
    assert a.read_reply() == [b"qa", b"x"]
    # a's lease went back: the third client's BLPOP can have it now
    third.send_raw(resp_encode("BLPOP", "qc", "0"))
    wait_until(lambda: len(blocked_on_server(d)) == 2, 10, "the third client blocked")
    d.rpush("qc", "y")
    assert third.read_reply() == [b"qc", b"y"]
    for conn in (a, b, third):
        conn.close()


def test_a_client_that_disconnects_while_blocked_closes_its_lease(blog_env):
    env = blog_env(step=1)
    d = direct(env)
    c = RespConn(env.host, env.port, timeout=10)
    c.send_raw(resp_encode("BLPOP", "gone", "0"))
    wait_until(lambda: len(blocked_on_server(d)) == 1, 10, "the client blocked on the server")
    c.close()
    wait_until(lambda: not blocked_on_server(d), 10, "its lease closed")
    # nobody took the value that arrives later
    d.rpush("gone", "v")
    assert d.lrange("gone", 0, -1) == [b"v"]


def test_redis_py_blocking_calls(blog_env):
    env = blog_env(step=1)
    r = redis_py(env.host, env.port, socket_timeout=10)
    got = {}

    def consume():
        got["blpop"] = r.blpop(["jobs"], timeout=5)

    t = threading.Thread(target=consume)
    t.start()
    wait_until(lambda: len(blocked_on_server(direct(env))) == 1, 10, "redis-py blocked")
    other = redis_py(env.host, env.port, socket_timeout=10)
    assert other.lpush("jobs", "job-1") == 1
    t.join(10)
    assert got["blpop"] == (b"jobs", b"job-1")
    assert r.xread({"stream": "$"}, block=50) == []
    other.close()
    r.close()


def test_cluster_blocking_on_the_slot_master(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster, workers=1)
    c = RespConn(env.host, env.port, timeout=10)
    c.send_raw(resp_encode("BLPOP", "{q}:a", "0"))
    owner = redis_cluster.master_of_slot(redis_cluster.keyslot("{q}:a"))
    wait_until(lambda: any("b" in cl["flags"] for cl in owner.client().client_list()), 10,
               "blocked on the slot's master")
    other = RespConn(env.host, env.port, timeout=10)
    assert other.call("RPUSH", "{q}:a", "v") == 1
    assert c.read_reply() == [b"{q}:a", b"v"]
    assert c.call("BLPOP", "{q}:a", "{r}:b", "0") == (
        "CROSSSLOT Keys in request don't hash to the same slot")
    for conn in (c, other):
        conn.close()


@pytest.mark.parametrize("cmd", [("BLPOP", "l", "x"), ("XREAD", "BLOCK", "-1", "STREAMS", "s",
                                                        "$")])
def test_bad_timeouts_get_redis_s_error(blog_env, cmd):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port, timeout=10)
    got = c.call(*cmd)
    assert got.startswith("ERR") and "timeout" in got.lower(), got
    c.close()
