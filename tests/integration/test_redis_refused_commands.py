"""
Commands meltemi refuses must not be applied anyway, and nothing that can block may reach a
shared upstream connection (issue 10):

- a transaction meltemi cannot carry out (its upstream connection cannot be leased: the
  pool is at connectionPool.tcp.maxConnections, held here by another client's transaction)
  leaves the client believing it queues a transaction: everything up to its EXEC or DISCARD
  is answered "not applied" and never reaches Redis, EXEC answers EXECABORT (transactions
  themselves: test_redis_transactions.py);
- XREAD / XREADGROUP with BLOCK (any case) and every command Redis flags blocking go on an
  upstream connection leased for the command (test_redis_blocking.py), never on a shared one,
  so another client pipelined on the same shared connection is answered while they block.

Real clients against a real redis-server: redis-py (Debian's python3-redis), ioredis (npm,
installed from tests/integration/peers/node's lockfile), redis-rb (Debian's ruby-redis), and
raw RESP in one write. What was applied is read from redis-server directly, never through
meltemi. Timeouts are generous: the assertions are on replies and data, not on timing.
"""

import json
import shutil
import types
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

import configs
from cluster_fixtures import (CLUSTER_HOST, CLUSTER_VIP, cluster_yaml,  # noqa: F401
                              redis_cluster, shared_cluster)
from harness import REPO, RespConn, RespError, free_port, redis_py, resp_encode, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from meta_env import install_node_peers  # noqa: E402

PEERS = REPO / "tests" / "integration" / "peers"
EXECABORT = "EXECABORT Transaction discarded because of previous errors."
# One lease per endpoint and worker: a second client's transaction finds the pool at its bound
# (configs.max_connections_rule(1)). The transactions below hold a PING: one of keyed data
# commands only, written whole, needs no lease at all (it runs back to back on a shared
# connection, test_redis_transactions.py), so it is never refused for want of one.


def pool_full(port, host=configs.HOST):
    return (f"ERR meltemi: upstream {host} (127.0.0.1:{port}): all 1 exclusive connections "
            "are in use (connectionPool.tcp.maxConnections)")


def one_lease_env(blog_env, step=1):
    files = {"redis-single.yaml": configs.STEP1,
             "dr.yaml": configs.max_connections_rule(1)}
    if step >= 2:
        files["redis-service.yaml"] = configs.BLOG_STEP2
    return blog_env(files=files)


def hold_the_lease(host, port, key="holder", password=None):
    """A client inside MULTI with a queued command: it holds the only lease until closed."""
    holder = RespConn(host, port, timeout=10)
    if password:
        assert holder.call("AUTH", password) == b"OK"
    assert holder.call("MULTI") == b"OK"
    assert holder.call("INCR", key) == b"QUEUED"
    return holder


def not_applied(name):
    return (f"ERR meltemi: '{name}' not applied: the transaction was refused on this "
            "connection, so nothing is sent to Redis until EXEC or DISCARD")


def direct(env):
    """redis-py on the redis-server itself, bypassing meltemi."""
    return env.redis.client()


# ---- refused MULTI: raw RESP --------------------------------------------------------------

def test_pipelined_multi_set_incr_exec_in_one_write_applies_nothing(blog_env):
    env = one_lease_env(blog_env)
    multi_refused = pool_full(env.redis.port)
    holder = hold_the_lease(env.host, env.port)
    direct(env).set("counter", "5")
    c = RespConn(env.host, env.port, timeout=10)
    c.send_raw(resp_encode("MULTI") + resp_encode("SET", "tx-key", "v") + resp_encode("PING") +
               resp_encode("INCR", "counter") + resp_encode("EXEC") +
               resp_encode("GET", "counter"))
    assert [c.read_reply() for _ in range(6)] == [
        multi_refused, not_applied("set"), not_applied("ping"), not_applied("incr"), EXECABORT,
        b"5"]
    assert direct(env).get("counter") == b"5"
    assert direct(env).exists("tx-key") == 0
    # EXEC ended the state: the connection forwards again.
    assert c.call("INCR", "counter") == 6
    c.close()
    holder.close()


def test_refused_multi_state_covers_local_split_and_ends_at_discard(blog_env):
    env = one_lease_env(blog_env)
    multi_refused = pool_full(env.redis.port)
    holder = hold_the_lease(env.host, env.port)
    direct(env).set("counter", "1")
    c = RespConn(env.host, env.port, timeout=10)
    stream = [("INCR", "counter"), ("MULTI",), ("PING",), ("MSET", "a", "1", "b", "2"),
              ("DEL", "counter"), ("MULTI",), ("XREAD", "BLOCK", "0", "STREAMS", "s", "$"),
              ("DISCARD",), ("INCR", "counter"), ("EXEC",), ("DISCARD",)]
    c.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    assert [c.read_reply() for _ in stream] == [
        2, multi_refused, not_applied("ping"), not_applied("mset"), not_applied("del"),
        RespError("ERR MULTI calls can not be nested"), not_applied("xread"), b"OK",
        3, RespError("ERR EXEC without MULTI"), RespError("ERR DISCARD without MULTI")]
    d = direct(env)
    assert d.get("counter") == b"3" and d.exists("a", "b") == 0
    # QUIT still closes a connection in that state.
    c.send_raw(resp_encode("MULTI") + resp_encode("CLIENT", "UNBLOCK", "1") +
               resp_encode("QUIT"))
    assert [c.read_reply() for _ in range(3)] == [multi_refused, not_applied("client"), b"OK"]
    assert c.closed_by_peer(timeout=10)
    c.close()
    holder.close()


def test_refused_multi_after_noauth_and_auth_inside_it(blog_env):
    # With a client password: an unauthenticated MULTI is NOAUTH (as in Redis, no
    # transaction starts); an authenticated one is refused, and an AUTH inside is not
    # applied either.
    env = one_lease_env(blog_env, step=2)
    multi_refused = pool_full(env.redis.port)
    holder = hold_the_lease(env.host, env.port, password=configs.CLIENT_PASSWORD)
    direct(env).set("counter", "10")
    c = RespConn(env.host, env.port, timeout=10)
    stream = [("MULTI",), ("INCR", "counter"), ("AUTH", configs.CLIENT_PASSWORD),
              ("INCR", "counter"), ("MULTI",), ("AUTH", configs.CLIENT_PASSWORD),
              ("INCR", "counter"), ("EXEC",), ("GET", "counter")]
    c.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    assert [c.read_reply() for _ in stream] == [
        "NOAUTH Authentication required.", "NOAUTH Authentication required.", b"OK",
        11, multi_refused, not_applied("auth"), not_applied("incr"), EXECABORT, b"11"]
    assert direct(env).get("counter") == b"11"
    c.close()
    holder.close()


# ---- refused MULTI: real clients ----------------------------------------------------------

def test_redis_py_transaction_pipeline_applies_nothing(blog_env):
    env = one_lease_env(blog_env)
    holder = hold_the_lease(env.host, env.port)
    direct(env).set("counter", "5")
    client = redis_py(env.host, env.port, socket_timeout=10)
    p = client.pipeline(transaction=True)
    p.incr("counter").set("tx-key", "v").ping()
    with pytest.raises(redis.exceptions.ResponseError) as err:
        p.execute()
    assert direct(env).get("counter") == b"5"
    assert direct(env).exists("tx-key") == 0
    # redis-py raises the first error of the transaction: MULTI's refusal
    assert str(err.value) == pool_full(env.redis.port)[4:]
    # The pooled connection is usable and out of the transaction state.
    assert client.incr("counter") == 6
    client.close()
    holder.close()


def test_redis_py_transaction_through_a_lua_filter_applies_nothing(redis_factory, config_dir,
                                                                  meltemi_factory):
    # A listener with a LuaFilter runs every forwarded command through Lua, which here would
    # mirror it to a second redis-server: neither may see the commands of a transaction
    # whose lease is refused (with a filter the lease is taken at the first queued command,
    # which gets the refusal), nor an XREAD that the filter rewrites into XREAD BLOCK.
    main, mirror = redis_factory(name="main"), redis_factory(name="mirror")
    port, mport = free_port("127.0.0.41"), free_port("127.0.0.42")
    files = {
        "main.yaml": configs.service_entry("redis-main", "127.0.0.41", port, main.port,
                                            namespace="demo"),
        "mirror.yaml": configs.service_entry("redis-mirror", "127.0.0.42", mport,
                                              mirror.port, namespace="demo"),
        "dr.yaml": configs.max_connections_rule(1, host="redis-main.demo.svc.cluster.local",
                                               namespace="demo"),
        "filter.yaml": """\
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata:
  name: mirror-all
  namespace: demo
spec:
  hosts: [redis-main]
  script: |
    return {
      on_request = function(msg, ctx)
        ctx:mirror("redis-mirror")
        if msg.command == "xread" and msg:arg(2) == "COUNT" then msg:set_arg(2, "BLOCK") end
      end,
    }
""",
    }
    conf = config_dir(files)
    meltemi_factory(conf)
    main.client().set("counter", "5")
    mirror.client().set("counter", "5")
    holder = hold_the_lease("127.0.0.41", port)
    client = redis_py("127.0.0.41", port, socket_timeout=10)
    p = client.pipeline(transaction=True)
    p.incr("counter").set("tx-key", "v")
    with pytest.raises(redis.exceptions.ResponseError) as err:
        p.execute()
    assert "all 1 exclusive connections are in use" in str(err.value)
    for name, r in (("main", main), ("mirror", mirror)):
        d = r.client()
        assert (d.get("counter"), d.exists("tx-key")) == (b"5", 0), name
    holder.close()  # its lease closes (Redis discards its transaction): free for the XREAD
    wait_until(lambda: not [x for x in main.client().client_list() if "x" in x["flags"]], 10,
               "the holder's lease to close")
    # the filter turns this XREAD into XREAD BLOCK 0: it goes on a lease of its own, and the
    # shared connection keeps answering
    outcome, got = get_while_other_client_blocks(
        types.SimpleNamespace(host="127.0.0.41", port=port, redis=main),
        lambda: client.execute_command("XREAD", "COUNT", "0", "STREAMS", "s", "$"),
        release=lambda: main.client().xadd("s", {"f": "v"}, id="5-0"))
    assert got == b"value"
    assert outcome == {"value": [[b"s", [(b"5-0", {b"f": b"v"})]]]}, outcome
    # a command that can block is not mirrored (the copy would hold the mirror's connection)
    assert "cmdstat_xread" not in mirror.client().info("commandstats")
    assert client.incr("counter") == 6
    assert main.client().get("counter") == b"6"
    client.close()


def ioredis(scenario, env):
    reason = install_node_peers()
    if reason:
        pytest.skip(reason)
    r = subprocess.run(["node", str(PEERS / "node" / "ioredis_client.js"), scenario, env.host,
                        str(env.port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def redis_rb(scenario, env):
    if shutil.which("ruby") is None:
        raise AssertionError("ruby / ruby-redis are not installed: run tools/install-deps.sh")
    r = subprocess.run(["ruby", str(PEERS / "redis_rb_client.rb"), scenario, env.host,
                        str(env.port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_ioredis_multi_exec_applies_nothing(blog_env):
    env = one_lease_env(blog_env)
    holder = hold_the_lease(env.host, env.port)
    direct(env).set("counter", "5")
    out = ioredis("transaction-ping", env)
    holder.close()
    assert "exec" not in out, out
    assert out["error"].startswith("EXECABORT"), out
    assert out["previous"] == [pool_full(env.redis.port), not_applied("ping"),
                               not_applied("incr"), not_applied("set")], out
    assert out["after"] == {"value": "5"}, out
    assert direct(env).get("counter") == b"5"
    assert direct(env).exists("tx-key") == 0


def test_redis_rb_multi_applies_nothing(blog_env):
    env = one_lease_env(blog_env)
    holder = hold_the_lease(env.host, env.port)
    direct(env).set("counter", "5")
    out = redis_rb("transaction-ping", env)
    holder.close()
    assert "error" in out["multi"], out
    assert out["after"] == {"value": "5"}, out
    assert direct(env).get("counter") == b"5"
    assert direct(env).exists("tx-key") == 0


# ---- blocking commands: never on a shared connection -----------------------------------------

def test_refused_and_local_blocking_forms_and_non_blocking_xread(blog_env):
    env = blog_env(step=1)
    d = direct(env)
    d.xadd("s", {"f": "v"}, id="1-0")
    d.xgroup_create("s", "g", id="0")
    c = RespConn(env.host, env.port, timeout=10)
    refusals = [
        # WAIT would answer about the wrong connection's writes (see docs/redis-commands.md)
        ("ERR meltemi: 'wait' is refused: it counts the replicas that acknowledged this "
         "connection's writes, and through the proxy a client's writes travel on shared "
         "connections: the answer would not be about them", ("WAIT", "1", "0")),
        # answered by meltemi, never forwarded (it would pause every client of the server)
        ("ERR meltemi: 'client|pause' is not supported through the proxy",
         ("CLIENT", "PAUSE", "100000")),
        ("ERR meltemi: 'client|unblock' is not supported through the proxy",
         ("CLIENT", "UNBLOCK", "1")),
    ]
    for want, cmd in refusals:
        assert c.call(*cmd) == want, cmd
    # WAITAOF is Redis 7.2: unknown to the 7.0 table, so never forwarded either.
    assert c.call("WAITAOF", "0", "0", "0").startswith("ERR unknown command 'WAITAOF'")
    # Without BLOCK they are plain reads (a stream or an option value named "block" is not
    # the keyword).
    entry = [[b"s", [[b"1-0", [b"f", b"v"]]]]]
    assert c.call("XREAD", "STREAMS", "s", "0") == entry
    assert c.call("XREAD", "COUNT", "1", "STREAMS", "s", "0") == entry
    assert c.call("XREAD", "STREAMS", "block", "0") is None
    assert c.call("XREADGROUP", "GROUP", "g", "block", "STREAMS", "s", ">") == entry
    assert c.call("GET", "probe") is None
    assert not [x for x in d.client_list() if "b" in x["flags"]]
    c.close()


def get_while_other_client_blocks(env, blocked_call, release):
    """Runs blocked_call() (an XREAD BLOCK 0 from one client) in a thread, then a GET from
    another client, then release() (which gives the blocked call its answer); returns (the
    blocking call's outcome, GET's)."""
    direct(env).set("probe", "value")
    result = {}

    def run():
        try:
            result["value"] = blocked_call()
        except Exception as exc:  # reported to the caller
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: [x for x in direct(env).client_list() if "b" in x["flags"]], 10,
               "the XREAD to block on the server (on its own lease)")
    other = redis_py(env.host, env.port, socket_timeout=10)
    try:
        got = other.get("probe")
    except redis.exceptions.RedisError as exc:
        got = exc
    other.close()
    assert t.is_alive(), result  # still blocked: nobody's GET waited behind it
    release()
    t.join(10)
    return result, got


def test_redis_py_xread_block_leaves_other_clients_answered(blog_env):
    env = blog_env(step=1)
    blocker = redis_py(env.host, env.port, socket_timeout=15)
    outcome, got = get_while_other_client_blocks(
        env, lambda: blocker.xread({"stream": "$"}, block=0),
        release=lambda: direct(env).xadd("stream", {"k": "v"}, id="7-0"))
    assert got == b"value"
    assert outcome == {"value": [[b"stream", [(b"7-0", {b"k": b"v"})]]]}, outcome
    blocker.close()


def test_redis_py_xreadgroup_block_leaves_other_clients_answered(blog_env):
    env = blog_env(step=1)
    direct(env).xgroup_create("stream", "g", id="$", mkstream=True)
    blocker = redis_py(env.host, env.port, socket_timeout=15)
    outcome, got = get_while_other_client_blocks(
        env, lambda: blocker.xreadgroup("g", "c", {"stream": ">"}, block=0),
        release=lambda: direct(env).xadd("stream", {"k": "v"}, id="8-0"))
    assert got == b"value"
    assert outcome == {"value": [[b"stream", [(b"8-0", {b"k": b"v"})]]]}, outcome
    blocker.close()


def test_ioredis_xread_block_leaves_other_clients_answered(blog_env):
    env = blog_env(step=1)
    direct(env).set("probe", "value")
    out = ioredis("xread-block", env)
    assert out["get"] == {"value": "value"}, out
    assert out["xread"] is None, out  # still blocked after a second, on its own lease


def test_redis_rb_xread_block_leaves_other_clients_answered(blog_env):
    env = blog_env(step=1)
    direct(env).set("probe", "value")
    out = redis_rb("xread-block", env)
    assert out["get"] == {"value": "value"}, out
    assert out["xread"] is None, out


# ---- cluster mode -------------------------------------------------------------------------

def test_cluster_refused_transaction_applies_nothing(
        redis_cluster, config_dir, meltemi_factory):
    # Cluster mode leases at the first queued command (MULTI is answered by meltemi): with the
    # slot master's only lease held, that command gets the refusal and nothing after it is
    # applied.
    port = free_port(CLUSTER_VIP)
    files = cluster_yaml(redis_cluster, port)
    files["dr.yaml"] = configs.max_connections_rule(1, host=CLUSTER_HOST)
    meltemi_factory(config_dir(files), workers=1)
    c = RespConn(CLUSTER_VIP, port, timeout=10)
    assert c.call("SET", "counter", "5") == b"OK"
    holder = hold_the_lease(CLUSTER_VIP, port, key="counter")
    owner = redis_cluster.master_of_slot(redis_cluster.keyslot("counter"))
    stream = [("MULTI",), ("INCR", "counter"), ("MSET", "{a}1", "x", "{b}2", "y"), ("EXEC",),
              ("GET", "counter")]
    c.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    assert [c.read_reply() for _ in stream] == [
        b"OK", pool_full(owner.port, CLUSTER_HOST), not_applied("mset"), EXECABORT, b"5"]
    assert owner.call("GET", "counter") == b"5"
    for k in ("{a}1", "{b}2"):
        assert redis_cluster.master_of_slot(redis_cluster.keyslot(k)).call("EXISTS", k) == 0
    holder.close()
    c.close()
