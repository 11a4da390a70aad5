"""
SELECT n through meltemi (issue 10, PROXY mode with one master): each client's database is
kept on an upstream connection leased for it, selected again when that connection is lost
(so the database survives upstream reconnects), and a connection that served another
database is closed, never handed to the next client. Cluster mode serves database 0 only.

Real redis-server and the 6-node cluster fixture, redis-py (db=N selects on connect) and raw
RESP; where data landed is read from the server directly, per database.
"""

import redis

import configs
from cluster_fixtures import (cluster_proxy, redis_cluster, shared_cluster)  # noqa: F401
from harness import RespConn, redis_py, resp_encode, wait_until


def db(env, n):
    return redis.Redis(host=env.redis.host, port=env.redis.port, password=env.redis.password,
                       db=n, socket_timeout=5)


def test_each_client_keeps_its_own_database(blog_env):
    env = blog_env(step=1)
    two = redis_py(env.host, env.port, db=2)
    three = redis_py(env.host, env.port, db=3)
    zero = redis_py(env.host, env.port)
    for i in range(20):  # interleaved: each client's commands stay in its database
        two.set(f"k{i}", "two")
        three.set(f"k{i}", "three")
        zero.set(f"k{i}", "zero")
    assert [db(env, n).get("k7") for n in (0, 2, 3)] == [b"zero", b"two", b"three"]
    assert [db(env, n).dbsize() for n in (0, 2, 3)] == [20, 20, 20]
    # transactions and blocking commands of a selected client run in its database too
    p = two.pipeline(transaction=True)
    p.incr("n").incr("n")
    assert p.execute() == [1, 2]
    db(env, 2).rpush("q", "job")
    assert two.blpop(["q"], timeout=1) == (b"q", b"job")
    assert db(env, 2).get("n") == b"2" and db(env, 0).get("n") is None
    for c in (two, three, zero):
        c.close()


def test_the_database_survives_an_upstream_reconnect(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port, timeout=10)
    assert c.call("SELECT", "5") == b"OK"
    assert c.call("SET", "kept", "in-five") == b"OK"
    # the server drops meltemi's connections (the client's lease among them)
    d = db(env, 0)
    assert d.client_kill_filter(_type="normal", skipme=True) >= 1
    wait_until(lambda: c.call("GET", "kept") == b"in-five", 10,
               "the next command to run in database 5 again")
    assert c.call("SET", "after", "x") == b"OK"
    assert db(env, 5).get("after") == b"x" and db(env, 0).get("after") is None
    c.close()


def test_select_errors_back_to_zero_and_no_selected_connection_is_reused(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port, timeout=10)
    stream = [("SELECT", "99999"), ("SET", "a", "1"), ("SELECT", "x"), ("SELECT", "4"),
              ("SET", "b", "1"), ("SELECT", "0"), ("SET", "c", "1")]
    c.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    got = [c.read_reply() for _ in stream]
    assert got[0] == "ERR DB index is out of range"  # Redis's own answer
    assert got[1] == b"OK"
    assert got[2] == "ERR value is not an integer or out of range"
    assert got[3:] == [b"OK", b"OK", b"OK", b"OK"]
    assert db(env, 0).get("a") == b"1" and db(env, 0).get("c") == b"1"
    assert db(env, 4).get("b") == b"1" and db(env, 0).get("b") is None
    # a client leaves while in database 6: its connection is closed, not pooled, so the
    # next client's lease (a transaction) is in database 0
    assert c.call("SELECT", "6") == b"OK"
    c.close()
    other = RespConn(env.host, env.port, timeout=10)
    other.send_raw(resp_encode("MULTI") + resp_encode("SET", "tx", "1") + resp_encode("EXEC"))
    assert [other.read_reply() for _ in range(3)] == [b"OK", b"QUEUED", [b"OK"]]
    assert db(env, 0).get("tx") == b"1" and db(env, 6).get("tx") is None
    other.close()




def test_a_full_lease_pool_refuses_select_at_once(blog_env):
    env = blog_env(files={"redis-single.yaml": configs.STEP1, "dr.yaml": configs.max_connections_rule(1)})
    a = RespConn(env.host, env.port, timeout=10)
    assert a.call("SELECT", "1") == b"OK"
    b = RespConn(env.host, env.port, timeout=10)
    got = b.call("SELECT", "2")
    assert got.endswith("all 1 exclusive connections are in use "
                        "(connectionPool.tcp.maxConnections)"), got
    assert b.call("SET", "b", "1") == b"OK"  # still in database 0, on the shared connection
    assert db(env, 0).get("b") == b"1"
    a.close()
    b.close()


def test_cluster_mode_serves_database_zero_only(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster, workers=1)
    c = RespConn(env.host, env.port, timeout=10)
    assert c.call("SELECT", "0") == b"OK"
    assert c.call("SELECT", "1") == "ERR SELECT is not allowed in cluster mode"
    c.close()
