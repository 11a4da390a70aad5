"""
Transactions through meltemi (issue 10): MULTI / EXEC / DISCARD / WATCH / UNWATCH on an
upstream connection leased for the client until EXEC, DISCARD or UNWATCH, bounded by the
cluster's maxConnections. Real redis-server (one, and the 6-node cluster fixture), real
clients (redis-py's pipeline(transaction=True) and its WATCH retry loop, ioredis multi(),
redis-rb multi, raw RESP); what was applied is read from the servers directly.

Failure cases: the pool at its bound (MULTI refused, nothing after it applied), the upstream
connection killed mid-transaction (errors, nothing applied, never applied twice on retry), a
client that disconnects mid-transaction (its lease closes, nothing applied), cross-slot and
cross-endpoint keys (CROSSSLOT / a clear error, EXECABORT).
"""

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

import configs
from cluster_fixtures import (cluster_proxy, fresh_cluster, redis_cluster,  # noqa: F401
                              shared_cluster)
from harness import (REPO, RespConn, RespError, free_port, redis_py, resp_encode,
                     wait_until)

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from meta_env import install_node_peers  # noqa: E402

PEERS = REPO / "tests" / "integration" / "peers"
EXECABORT = "EXECABORT Transaction discarded because of previous errors."


def direct(env):
    return env.redis.client()


def in_multi(server_client):
    """Clients of the server that are inside MULTI (CLIENT LIST flags contain 'x')."""
    return [c for c in server_client.client_list() if "x" in c["flags"]]


# ---- the basics, raw RESP ------------------------------------------------------------------

def test_multi_exec_in_one_write_is_applied_atomically(blog_env):
    env = blog_env(step=1)
    direct(env).set("counter", "5")
    c = RespConn(env.host, env.port, timeout=10)
    c.send_raw(resp_encode("MULTI") + resp_encode("SET", "tx-key", "v") +
               resp_encode("INCR", "counter") + resp_encode("PING") + resp_encode("EXEC") +
               resp_encode("GET", "counter"))
    assert [c.read_reply() for _ in range(6)] == [
        b"OK", b"QUEUED", b"QUEUED", b"QUEUED", [b"OK", 6, b"PONG"], b"6"]
    assert direct(env).get("tx-key") == b"v"
    # the connection is out of the transaction: commands apply at once again
    assert c.call("INCR", "counter") == 7
    # in order with what the client sent before and after, also when the lease is an idle
    # one reused at once (the commands around it travel on another connection)
    for i in range(20):
        c.send_raw(resp_encode("SET", "counter", str(i * 10)) + resp_encode("MULTI") +
                   resp_encode("INCR", "counter") + resp_encode("EXEC") +
                   resp_encode("INCR", "counter"))
        assert [c.read_reply() for _ in range(5)] == [
            b"OK", b"OK", b"QUEUED", [i * 10 + 1], i * 10 + 2], i
    c.close()


def test_discard_applies_nothing_and_errors_are_redis_texts(blog_env):
    env = blog_env(step=1)
    direct(env).set("counter", "1")
    c = RespConn(env.host, env.port, timeout=10)
    stream = [("EXEC",), ("DISCARD",), ("MULTI",), ("INCR", "counter"), ("MULTI",),
              ("WATCH", "counter"), ("DISCARD",), ("GET", "counter"),
              # a queueing error aborts the transaction, as in Redis
              ("MULTI",), ("INCR", "counter"), ("NOSUCHCOMMAND",), ("GET",), ("EXEC",),
              ("GET", "counter")]
    c.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    got = [c.read_reply() for _ in stream]
    assert got[:8] == [
        RespError("ERR EXEC without MULTI"), RespError("ERR DISCARD without MULTI"), b"OK",
        b"QUEUED", RespError("ERR MULTI calls can not be nested"),
        RespError("ERR WATCH inside MULTI is not allowed"), b"OK", b"1"]
    assert got[8:10] == [b"OK", b"QUEUED"]
    assert got[10].startswith("ERR unknown command 'NOSUCHCOMMAND'")
    assert got[11] == "ERR wrong number of arguments for 'get' command"
    assert got[12:] == [EXECABORT, b"1"]
    assert direct(env).get("counter") == b"1"
    c.close()


# ---- a transaction written whole runs on a shared connection ---------------------------------

def test_whole_transactions_on_shared_connections_never_interleave_with_other_clients(blog_env):
    """A transaction written in one piece (MULTI ... EXEC, as redis-py, ioredis and txload
    send it) goes back to back on the worker's shared pipelined connection: no other client's
    command may land inside it (it would be answered QUEUED), and each EXEC sees its own
    writes only."""
    env = blog_env(step=1)
    errors = []

    def tx_client(i):
        c = RespConn(env.host, env.port, timeout=10)
        try:
            for n in range(150):
                c.send_raw(resp_encode("MULTI") + resp_encode("SET", "shared", f"{i}:{n}") +
                           resp_encode("INCR", f"own:{i}") + resp_encode("GET", "shared") +
                           resp_encode("EXEC"))
                got = [c.read_reply() for _ in range(5)]
                if got != [b"OK", b"QUEUED", b"QUEUED", b"QUEUED",
                           [b"OK", n + 1, f"{i}:{n}".encode()]]:
                    errors.append(("tx", i, n, got))
                    return
        finally:
            c.close()

    def plain_client(i):
        c = RespConn(env.host, env.port, timeout=10)
        try:
            for n in range(300):
                c.send_raw(resp_encode("SET", f"plain:{i}", str(n)) +
                           resp_encode("GET", f"plain:{i}"))
                got = [c.read_reply() for _ in range(2)]
                if got != [b"OK", str(n).encode()]:
                    errors.append(("plain", i, n, got))
                    return
        finally:
            c.close()

    threads = [threading.Thread(target=tx_client, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=plain_client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    d = direct(env)
    assert [d.get(f"own:{i}") for i in range(6)] == [b"150"] * 6
    assert not in_multi(d)


DENY_DEL = """\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: redis-single
  namespace: redis
spec:
  host:
  - redis-single.redis.svc.cluster.local
  settings:
    deniedCommands: [DEL]
"""


def test_whole_transaction_with_a_refused_command_is_discarded_on_the_shared_connection(blog_env):
    env = blog_env(files={"redis-single.yaml": configs.STEP1, "deny.yaml": DENY_DEL})
    d = direct(env)
    d.set("counter", "5")
    a = RespConn(env.host, env.port, timeout=10)
    b = RespConn(env.host, env.port, timeout=10)
    stream = [("MULTI",), ("INCR", "counter"), ("DEL", "counter"), ("EXEC",)]
    a.send_raw(b"".join(resp_encode(*cmd) for cmd in stream) + resp_encode("GET", "counter"))
    got = [a.read_reply() for _ in range(5)]
    assert got[:2] == [b"OK", b"QUEUED"]
    assert got[2].startswith("NOPERM meltemi: 'del' is denied"), got
    assert got[3:] == [EXECABORT, b"5"]
    # nothing was applied, and the shared connection is out of MULTI for everyone
    assert b.call("GET", "counter") == b"5"
    assert b.call("INCR", "counter") == 6
    assert not in_multi(d)
    a.close()
    b.close()


# ---- redis-py ------------------------------------------------------------------------------

def test_redis_py_transaction_pipeline(blog_env):
    env = blog_env(step=1)
    direct(env).set("counter", "5")
    r = redis_py(env.host, env.port, socket_timeout=10)
    p = r.pipeline(transaction=True)
    p.incr("counter").set("tx-key", "v").get("counter")
    assert p.execute() == [6, True, b"6"]
    assert direct(env).get("tx-key") == b"v"
    r.close()


def test_redis_py_watch_retry_loop_retries_when_the_key_changes(blog_env):
    """The optimistic-locking loop of redis-py's docs: another client changes the watched key
    between WATCH and EXEC once; EXEC answers nil (WatchError), the loop runs again, and the
    increment is applied exactly once."""
    env = blog_env(step=1)
    direct(env).set("balance", "100")
    r = redis_py(env.host, env.port, socket_timeout=10)
    attempts = []
    with r.pipeline() as p:
        while True:
            try:
                p.watch("balance")
                value = int(p.get("balance"))
                if not attempts:
                    direct(env).incrby("balance", 1000)  # someone else, in between
                attempts.append(value)
                p.multi()
                p.set("balance", value + 1)
                p.execute()
                break
            except redis.WatchError:
                continue
    assert attempts == [100, 1100]
    assert direct(env).get("balance") == b"1101"
    # the high-level helper does the same
    def incr(pipe):
        pipe.multi()
        pipe.incr("balance")

    assert r.transaction(incr, "balance") == [1102]
    r.close()


def test_unwatch_and_watch_then_exec_without_change(blog_env):
    env = blog_env(step=1)
    direct(env).set("k", "1")
    c = RespConn(env.host, env.port, timeout=10)
    stream = [("WATCH", "k"), ("UNWATCH",), ("WATCH", "k"), ("GET", "k"), ("MULTI",),
              ("INCR", "k"), ("EXEC",)]
    c.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    assert [c.read_reply() for _ in stream] == [b"OK", b"OK", b"OK", b"1", b"OK", b"QUEUED",
                                                [2]]
    c.close()


# ---- a Lua filter sees every queued command -------------------------------------------------

def test_lua_filter_and_fault_see_each_queued_command(redis_factory, config_dir,
                                                       meltemi_factory):
    main = redis_factory(name="main")
    port = free_port("127.0.0.41")
    files = {
        "main.yaml": configs.service_entry("redis-main", "127.0.0.41", port, main.port,
                                            namespace="demo"),
        "filter.yaml": """\
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata:
  name: deny-del
  namespace: demo
spec:
  hosts: [redis-main]
  script: |
    return {
      on_request = function(msg, ctx)
        ctx:counter("seen", 1, msg.command)
        if msg.command == "del" then return ctx:reply_error("NOPERM no DEL here") end
      end,
    }
""",
    }
    m = meltemi_factory(config_dir(files))
    main.client().set("counter", "5")
    c = RespConn("127.0.0.41", port, timeout=10)
    stream = [("MULTI",), ("INCR", "counter"), ("DEL", "counter"), ("EXEC",),
              ("MULTI",), ("INCR", "counter"), ("EXEC",)]
    c.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    assert [c.read_reply() for _ in stream] == [
        b"OK", b"QUEUED", RespError("NOPERM no DEL here"), EXECABORT, b"OK", b"QUEUED", [6]]
    assert main.client().get("counter") == b"6"
    c.close()
    from test_lua_filters import lua_counter
    wait_until(lambda: lua_counter(m, "seen", "incr") == 2, 5, "the filter saw both INCRs")
    assert lua_counter(m, "seen", "del") == 1


# ---- failures ------------------------------------------------------------------------------



def test_exhausted_lease_pool_refuses_multi_at_once_and_applies_nothing(blog_env):
    env = blog_env(files={"redis-single.yaml": configs.STEP1, "dr.yaml": configs.max_connections_rule(1)})
    direct(env).set("counter", "5")
    a = RespConn(env.host, env.port, timeout=10)
    b = RespConn(env.host, env.port, timeout=10)
    assert a.call("MULTI") == b"OK"
    assert a.call("INCR", "counter") == b"QUEUED"
    # MULTI alone (the rest not written yet) needs a lease: refused at once
    got = [b.call("MULTI")]
    stream = [("INCR", "counter"), ("EXEC",), ("GET", "counter")]
    b.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    got += [b.read_reply() for _ in stream]
    assert got[0].startswith("ERR meltemi: upstream ") and got[0].endswith(
        "all 1 exclusive connections are in use (connectionPool.tcp.maxConnections)"), got
    assert got[1].startswith("ERR meltemi: 'incr' not applied"), got
    assert got[2:] == [EXECABORT, b"5"]
    # a transaction written whole (MULTI ... EXEC in one write) needs no lease: it runs back
    # to back on a shared connection, while the other one is still open on the lease
    stream = [("MULTI",), ("SET", "other", "1"), ("INCR", "other"), ("EXEC",)]
    b.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    assert [b.read_reply() for _ in stream] == [b"OK", b"QUEUED", b"QUEUED", [b"OK", 2]]
    # the first client's transaction is unaffected, and its lease goes back afterwards
    assert a.call("EXEC") == [6]
    assert direct(env).get("counter") == b"6"
    wait_until(lambda: b.call("MULTI") == b"OK", 5, "the lease to be free again")
    assert b.call("INCR", "counter") == b"QUEUED"
    assert b.call("EXEC") == [7]
    a.close()
    b.close()


def test_upstream_killed_mid_transaction_errors_and_nothing_applies_twice(blog_env):
    env = blog_env(step=1)
    d = direct(env)
    d.set("counter", "5")
    c = RespConn(env.host, env.port, timeout=10)
    assert c.call("MULTI") == b"OK"
    assert c.call("INCR", "counter") == b"QUEUED"
    # the server drops every connection but ours: the lease dies under the transaction
    assert d.client_kill_filter(_type="normal", skipme=True) >= 1
    assert c.call("EXEC") == EXECABORT
    assert d.get("counter") == b"5"
    # retrying the transaction applies it exactly once
    assert c.call("MULTI") == b"OK"
    assert c.call("INCR", "counter") == b"QUEUED"
    assert c.call("EXEC") == [6]
    assert d.get("counter") == b"6"
    # killed while keys are watched: EXEC answers nil, so a WATCH loop retries
    assert c.call("WATCH", "counter") == b"OK"
    assert d.client_kill_filter(_type="normal", skipme=True) >= 1
    assert c.call("MULTI") == b"OK"
    assert c.call("INCR", "counter") == b"QUEUED"
    assert c.call("EXEC") is None
    assert d.get("counter") == b"6"
    c.close()


def test_client_disconnecting_mid_transaction_closes_its_lease(blog_env):
    env = blog_env(step=1)
    d = direct(env)
    d.set("counter", "5")
    c = RespConn(env.host, env.port, timeout=10)
    assert c.call("MULTI") == b"OK"
    assert c.call("INCR", "counter") == b"QUEUED"
    wait_until(lambda: len(in_multi(d)) == 1, 5, "the lease to be inside MULTI on the server")
    c.close()
    wait_until(lambda: not in_multi(d), 10, "the lease to close after the client left")
    assert d.get("counter") == b"5"


def test_cluster_moved_to_a_later_queued_command_is_a_clear_error_and_nothing_runs(
        fresh_cluster, cluster_proxy):
    """The slot moves after the transaction's first queued command: Redis answers the next
    one MOVED (and flags the transaction). The client gets a clear error instead of the
    backend's address, EXEC answers EXECABORT, nothing runs on either master, and the next
    transaction goes where the slot now is."""
    import subprocess
    from test_redis_cluster import _slot, node_id
    env = cluster_proxy(fresh_cluster, workers=1)
    r = redis_py(env.host, env.port, socket_timeout=10)
    assert r.set("{warm}", "1") is True and r.dbsize() == 1  # the map is learnt
    shards = sorted(fresh_cluster.shards(), key=lambda s: s[0])
    lo, _, src, _ = shards[0]
    dst = shards[1][2]
    key = next(f"txlate:{i}" for i in range(1_000_000) if _slot(f"txlate:{i}") == lo)
    c = RespConn(env.host, env.port, timeout=10)
    assert c.call("MULTI") == b"OK"
    assert c.call("INCR", key) == b"QUEUED"
    done = subprocess.run(["redis-cli", "--cluster", "reshard", src.addr, "--cluster-from",
                           node_id(src), "--cluster-to", node_id(dst), "--cluster-slots", "1",
                           "--cluster-yes"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    fresh_cluster.wait_healthy(timeout=30)
    assert fresh_cluster.master_of_slot(lo) is dst
    got = c.call("INCR", key)
    assert isinstance(got, RespError) and got.startswith(
        "ERR meltemi: the slot of this command moved to another master during the "
        f"transaction (MOVED {lo} "), got
    assert got.endswith("the transaction is discarded (EXEC answers EXECABORT); retry it")
    assert c.call("EXEC") == EXECABORT
    assert src.cmdstat_calls("incr") == 0 and dst.call("EXISTS", key) == 0
    assert not [x for x in src.client().client_list() if "x" in x["flags"]]
    # retried: it runs once, on the new master
    c.send_raw(b"".join(resp_encode(*cmd) for cmd in
                        [("MULTI",), ("INCR", key), ("INCR", key), ("EXEC",)]))
    assert [c.read_reply() for _ in range(4)] == [b"OK", b"QUEUED", b"QUEUED", [1, 2]]
    assert dst.call("GET", key) == b"2"
    c.close()
    r.close()


# ---- ioredis, redis-rb -------------------------------------------------------------------

def ioredis(scenario, env):
    reason = install_node_peers()
    if reason:
        pytest.skip(reason)
    r = subprocess.run(["node", str(PEERS / "node" / "ioredis_client.js"), scenario, env.host,
                        str(env.port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_ioredis_multi_exec(blog_env):
    env = blog_env(step=1)
    direct(env).set("counter", "5")
    out = ioredis("transaction", env)
    assert out.get("exec") == [[None, 6], [None, "OK"]], out
    assert out["after"] == {"value": "6"}, out
    assert direct(env).get("tx-key") == b"v"


def test_redis_rb_multi(blog_env):
    if shutil.which("ruby") is None:
        raise AssertionError("ruby / ruby-redis are not installed: run tools/install-deps.sh")
    env = blog_env(step=1)
    direct(env).set("counter", "5")
    r = subprocess.run(["ruby", str(PEERS / "redis_rb_client.rb"), "transaction", env.host,
                        str(env.port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["multi"] == {"value": [6, "OK"]}, out
    assert out["after"] == {"value": "6"}, out


# ---- many clients at once ---------------------------------------------------------------------

def test_concurrent_transactions_are_each_atomic(blog_env):
    env = blog_env(step=1, workers=2)
    direct(env).set("counter", "0")
    errors = []

    def run():
        try:
            r = redis_py(env.host, env.port, socket_timeout=10)
            for _ in range(20):
                p = r.pipeline(transaction=True)
                p.incr("counter").incr("counter")
                a, b = p.execute()
                assert b == a + 1, (a, b)  # nobody's INCR between ours
            r.close()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert direct(env).get("counter") == b"320"


# ---- Redis Cluster mode -----------------------------------------------------------------------

def test_cluster_transaction_on_one_slot_and_crossslot(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster, workers=1)
    c = RespConn(env.host, env.port, timeout=10)
    assert c.call("SET", "{user1}:n", "5") == b"OK"
    stream = [("MULTI",), ("INCR", "{user1}:n"), ("SET", "{user1}:s", "x"), ("EXEC",),
              ("MULTI",), ("INCR", "{user1}:n"), ("SET", "{user2}:s", "y"), ("EXEC",),
              ("GET", "{user1}:n")]
    c.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    assert [c.read_reply() for _ in stream] == [
        b"OK", b"QUEUED", b"QUEUED", [6, b"OK"],
        b"OK", b"QUEUED", RespError("CROSSSLOT Keys in request don't hash to the same slot"),
        EXECABORT, b"6"]
    owner = redis_cluster.master_of_slot(redis_cluster.keyslot("{user1}:n"))
    assert owner.call("GET", "{user1}:n") == b"6"
    other = redis_cluster.master_of_slot(redis_cluster.keyslot("{user2}:s"))
    assert other.call("EXISTS", "{user2}:s") == 0
    c.close()


def test_cluster_redis_py_watch_loop(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster, workers=1)
    r = redis_py(env.host, env.port, socket_timeout=10)
    r.set("{acct}:a", "10")
    r.set("{acct}:b", "0")

    def move(pipe):
        a = int(pipe.get("{acct}:a"))
        pipe.multi()
        pipe.set("{acct}:a", a - 3)
        pipe.incrby("{acct}:b", 3)

    assert r.transaction(move, "{acct}:a", "{acct}:b") == [True, 3]
    owner = redis_cluster.master_of_slot(redis_cluster.keyslot("{acct}:a"))
    assert (owner.call("GET", "{acct}:a"), owner.call("GET", "{acct}:b")) == (b"7", b"3")
    r.close()


def test_cluster_transaction_follows_moved_before_its_first_command(fresh_cluster,
                                                                     cluster_proxy):
    """A slot moves to another master behind meltemi's back: the lease goes to the old master,
    whose MOVED answers the first queued command; meltemi discards there, leases the new
    master and sends MULTI and the command again, so the transaction runs once, where the
    slot now is."""
    import subprocess
    from test_redis_cluster import _slot, node_id
    env = cluster_proxy(fresh_cluster, workers=1)
    r = redis_py(env.host, env.port, socket_timeout=10)
    assert r.set("{warm}", "1") is True and r.dbsize() == 1  # the map is learnt
    shards = sorted(fresh_cluster.shards(), key=lambda s: s[0])
    lo, _, src, _ = shards[0]
    dst = shards[1][2]
    key = next(f"txmv:{i}" for i in range(1_000_000) if _slot(f"txmv:{i}") == lo)
    done = subprocess.run(["redis-cli", "--cluster", "reshard", src.addr, "--cluster-from",
                           node_id(src), "--cluster-to", node_id(dst), "--cluster-slots", "1",
                           "--cluster-yes"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    fresh_cluster.wait_healthy(timeout=30)
    assert fresh_cluster.master_of_slot(lo) is dst
    c = RespConn(env.host, env.port, timeout=10)
    stream = [("MULTI",), ("INCR", key), ("INCR", key), ("EXEC",)]
    c.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    assert [c.read_reply() for _ in stream] == [b"OK", b"QUEUED", b"QUEUED", [1, 2]]
    assert dst.call("GET", key) == b"2"
    assert src.cmdstat_calls("incr") == 0  # refused there with MOVED, applied once, on dst
    c.close()
    r.close()
