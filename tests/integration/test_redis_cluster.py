"""
Redis Cluster behind a plain-Redis face (RedisDestination mode CLUSTER, issue 3): a real
6-node cluster (3 masters, 3 replicas) started by the test, clients that know nothing of
clusters (redis-cli without -c, redis-py's plain client) talking to meltemi's VIP with two
workers (each has its own slot map and connections).

Where data ends up is checked on the nodes themselves, never through meltemi: a GET sent to
every master is answered by the one that owns the key's slot and MOVED by the others.
"""

import random
import threading
import time

import pytest
import redis

import configs
from cluster_fixtures import (CLUSTER_VIP, cluster_proxy, fresh_cluster,  # noqa: F401
                              redis_cluster, shared_cluster)
from harness import (REPO, RespConn, RespError, cli_lines, free_port, redis_cli, redis_py,
                     resp_encode, wait_until)

EXAMPLE = REPO / "examples" / "redis-cluster"

CROSSSLOT = "CROSSSLOT Keys in request don't hash to the same slot"


def owners(cluster, keys):
    """{key: master ClusterNode that answers GET key without MOVED}: asked of every master
    directly. Asserts that each key has exactly one such master and the others redirect."""
    masters = cluster.masters()
    found = {}
    for m in masters:
        c = m.client()
        p = c.pipeline(transaction=False)
        for k in keys:
            p.get(k)
        for k, reply in zip(keys, p.execute(raise_on_error=False)):
            if isinstance(reply, redis.exceptions.ResponseError):
                assert str(reply).startswith("MOVED "), reply
                continue
            assert k not in found, f"{k} answered by two masters"
            found[k] = (m, reply)
        c.close()
    return found


def pipelined(client, commands, batch=1000):
    """Runs [(name, *args)] in pipelined batches; returns the replies (errors as objects)."""
    out = []
    for i in range(0, len(commands), batch):
        p = client.pipeline(transaction=False)
        for cmd in commands[i:i + batch]:
            p.execute_command(*cmd)
        out += p.execute(raise_on_error=False)
    return out


# ---- the blog's step 3: the MOVED error is gone ------------------------------------------------

def test_set_foo_bar_answers_ok_without_moved(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster)
    out = redis_cli(env.host, env.port, "set", "foo", "bar")
    assert cli_lines(out) == ["OK"], out.stdout + out.stderr
    assert cli_lines(redis_cli(env.host, env.port, "get", "foo")) == ["bar"]
    # Straight to a node that does not own the slot, a plain client gets the blog's MOVED.
    owner = redis_cluster.master_of_slot(redis_cluster.keyslot("foo"))
    other = next(m for m in redis_cluster.masters() if m is not owner)
    moved = redis_cli(other.host, other.port, "get", "foo")
    assert cli_lines(moved)[0].startswith("MOVED "), moved.stdout
    assert owner.call("GET", "foo") == b"bar"
    r = redis_py(env.host, env.port)
    assert r.set("foo", "baz") is True and r.get("foo") == b"baz"


def test_ten_thousand_keys_land_on_the_master_of_their_slot(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster)
    r = redis_py(env.host, env.port)
    keys = [f"key:{i}" for i in range(10000)]
    replies = pipelined(r, [("SET", k, f"value-{k}") for k in keys])
    assert replies == [True] * len(keys)
    found = owners(redis_cluster, keys)
    assert len(found) == len(keys)
    for k in keys:
        assert found[k][1] == f"value-{k}".encode()
    # Every master holds some, and the owner is the one the cluster names for the slot.
    shards = redis_cluster.shards()
    by_master = {}
    for k in keys[:300]:
        slot = redis_cluster.keyslot(k)
        assert redis_cluster.master_of_slot(slot, shards) is found[k][0]
    for k in keys:
        by_master[found[k][0].port] = by_master.get(found[k][0].port, 0) + 1
    assert len(by_master) == 3
    # Read back through meltemi, pipelined GETs and one big MGET.
    got = pipelined(r, [("GET", k) for k in keys])
    assert got == [f"value-{k}".encode() for k in keys]
    assert r.mget(keys) == [f"value-{k}".encode() for k in keys]
    assert r.dbsize() == len(keys)


def test_the_example_walks_through_steps_3_and_5(redis_cluster, config_dir, meltemi_factory):
    """examples/redis-cluster as shipped, its ports pointed at this test's cluster: step 3
    answers set foo bar, and step 5 (readPolicy REPLICA) takes effect by hot reload."""
    port = free_port(CLUSTER_VIP)
    files = {}
    for name in ("service-entry.yaml", "redis-destination.yaml"):
        text = (EXAMPLE / name).read_text().replace("number: 6379", f"number: {port}")
        for i, example_port in enumerate((7000, 7001, 7002)):
            text = text.replace(f"tcp-redis: {example_port}",
                                f"tcp-redis: {redis_cluster.nodes[i].port}")
        files[name] = text
    conf = config_dir(files)
    meltemi_factory(conf, workers=2)
    out = redis_cli(CLUSTER_VIP, port, "set", "foo", "bar")
    assert cli_lines(out) == ["OK"], out.stdout + out.stderr
    r = redis_py(CLUSTER_VIP, port)
    keys = [f"ex:{i}" for i in range(100)]
    assert pipelined(r, [("SET", k, k) for k in keys]) == [True] * len(keys)
    redis_cluster.wait_replicas_synced()
    assert reads_land(redis_cluster, r, keys)[1] == 0  # MASTER by default
    configs.write_config(conf, {"redis-service.yaml":
                                (EXAMPLE / "step5" / "redis-service.yaml").read_text()})
    wait_until(lambda: reads_land(redis_cluster, r, keys)[:2] == (0, len(keys)), 15,
               "reads on replicas after the reload (same client connection)")


# ---- multi-key commands --------------------------------------------------------------------------

def test_multi_key_commands_split_across_slots(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster)
    r = redis_py(env.host, env.port)
    keys = [f"mk:{i}" for i in range(20)]
    assert len({redis_cluster.keyslot(k) for k in keys}) > 3
    assert r.mset({k: f"v{i}" for i, k in enumerate(keys)}) is True
    found = owners(redis_cluster, keys)
    assert {k: v for k, (_, v) in found.items()} == {k: f"v{i}".encode()
                                                      for i, k in enumerate(keys)}
    # MGET keeps the client's order; a missing key is nil in its place.
    ask = ["mk:7", "missing:1", "mk:3", "mk:19", "missing:2", "mk:0"]
    assert r.mget(ask) == [b"v7", None, b"v3", b"v19", None, b"v0"]
    assert r.exists(*keys, "missing:1", "mk:0") == len(keys) + 1  # EXISTS counts repeats
    assert r.touch(*keys[:10], "missing:3") == 10
    assert r.delete(*keys[:5], "missing:4") == 5
    assert r.unlink(*keys[5:12]) == 7
    assert r.exists(*keys) == 8
    assert r.mget(keys[10:14]) == [None, None, b"v12", b"v13"]
    # A key without its value is Redis's arity error, not a silently dropped key.
    c = RespConn(env.host, env.port)
    assert c.call("MSET", "mk:1", "a", "mk:2") == "ERR wrong number of arguments for 'mset' command"
    assert c.call("GET", "mk:2") is None
    c.close()
    # redis-cli (inline-free RESP) too.
    out = redis_cli(env.host, env.port, "mget", "mk:13", "nope", "mk:12")
    assert out.stdout.split("\n")[:3] == ["v13", "", "v12"], out.stdout


def test_inline_commands_and_clients_that_leave_mid_split(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster)
    c = RespConn(env.host, env.port)
    # Inline commands (telnet style) are routed and split like RESP ones.
    c.send_raw(b"SET inl:1 one\r\nSET inl:2 two\r\nMGET inl:2 nope inl:1\r\n")
    assert [c.read_reply() for _ in range(3)] == [b"OK", b"OK", [b"two", None, b"one"]]
    c.close()
    # Clients that send big split commands and go away before the replies: the parts still
    # in flight are orphaned and freed when they come back; the proxy keeps serving.
    keys = [f"gone:{i}" for i in range(2000)]
    big_mset = resp_encode("MSET", *[x for k in keys for x in (k, "v")])
    big_mget = resp_encode("MGET", *keys)
    for _ in range(20):
        g = RespConn(env.host, env.port)
        g.send_raw(big_mset + big_mget + resp_encode("DBSIZE") + resp_encode("SCAN", "0"))
        g.close()
    r = redis_py(env.host, env.port)
    wait_until(lambda: r.exists(*keys) == len(keys), 15, "the abandoned MSETs to land")
    assert r.mget(keys[:3]) == [b"v"] * 3


def test_other_multi_key_commands_need_one_slot(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster)
    c = RespConn(env.host, env.port)
    a, b = "cross:a", "cross:b"
    assert redis_cluster.keyslot(a) != redis_cluster.keyslot(b)
    assert c.call("SET", a, "1") == b"OK"
    for cmd in (("RENAME", a, b), ("MSETNX", a, "1", b, "2"), ("SUNIONSTORE", a, b),
                ("SINTER", a, b), ("LMOVE", a, b, "LEFT", "RIGHT"), ("COPY", a, b),
                ("EVAL", "return 1", "2", a, b)):
        assert c.call(*cmd) == CROSSSLOT, cmd
    # The same commands work when a hash tag puts the keys in one slot.
    x, y = "{user:1}:a", "{user:1}:b"
    assert redis_cluster.keyslot(x) == redis_cluster.keyslot(y)
    assert c.call("MSETNX", x, "1", y, "2") == 1
    assert c.call("RENAME", x, "{user:1}:c") == b"OK"
    assert c.call("SADD", "{t}s1", "a", "b") == 2
    assert c.call("SADD", "{t}s2", "b", "c") == 2
    assert c.call("SINTER", "{t}s1", "{t}s2") == [b"b"]
    assert sorted(c.call("SUNION", "{t}s1", "{t}s2")) == [b"a", b"b", b"c"]
    assert c.call("MGET", x, y, "{user:1}:c") == [None, b"2", b"1"]
    owner = redis_cluster.master_of_slot(redis_cluster.keyslot("{user:1}"))
    assert owner.call("GET", "{user:1}:c") == b"1"
    c.close()


def test_eval_routes_by_its_first_key(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster)
    r = redis_py(env.host, env.port)
    script = "redis.call('set', KEYS[1], ARGV[1]); return redis.call('get', KEYS[1])"
    for i in range(30):
        assert r.eval(script, 1, f"ev:{i}", f"x{i}") == f"x{i}".encode()
    found = owners(redis_cluster, [f"ev:{i}" for i in range(30)])
    assert len(found) == 30 and len({m.port for m, _ in found.values()}) > 1
    # SCRIPT LOAD through meltemi reaches every master, so EVALSHA works on any shard.
    sha = r.script_load("return redis.call('get', KEYS[1])")
    for m in redis_cluster.masters():
        assert m.call("SCRIPT", "EXISTS", sha) == [1]
    for i in range(30):
        assert r.evalsha(sha, 1, f"ev:{i}") == f"x{i}".encode()
    assert r.eval("return 7", 0) == 7
    assert r.script_flush() is True
    for m in redis_cluster.masters():
        assert m.call("SCRIPT", "EXISTS", sha) == [0]


# ---- keyless commands over the whole data set ----------------------------------------------------

def test_dbsize_keys_randomkey_flushall_cover_every_master(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster)
    r = redis_py(env.host, env.port)
    keys = [f"ks:{i}" for i in range(500)]
    pipelined(r, [("SET", k, "1") for k in keys])
    per_master = [m.call("DBSIZE") for m in redis_cluster.masters()]
    assert all(n > 0 for n in per_master) and sum(per_master) == 500
    assert r.dbsize() == 500
    assert sorted(k.decode() for k in r.keys("ks:*")) == sorted(keys)
    assert sorted(k.decode() for k in r.keys("ks:1?")) == sorted(f"ks:1{d}" for d in range(10))
    for _ in range(10):
        assert r.randomkey().decode() in keys
    # RANDOMKEY finds a key even when most masters are empty.
    for k in keys[1:]:
        r.delete(k)
    for _ in range(6):
        assert r.randomkey() == keys[0].encode()
    assert r.flushall() is True
    assert [m.call("DBSIZE") for m in redis_cluster.masters()] == [0, 0, 0]
    assert r.dbsize() == 0 and r.keys("*") == []
    assert r.randomkey() is None


def scan_all(r, **kw):
    seen, cursor, calls = [], 0, 0
    while True:
        cursor, batch = r.scan(cursor, **kw)
        seen += [k.decode() for k in batch]
        calls += 1
        assert calls < 10000, "SCAN never returned cursor 0"
        if cursor == 0:
            return seen, calls


def test_scan_visits_every_key_exactly_once(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster)
    r = redis_py(env.host, env.port)
    a = [f"scan:a:{i}" for i in range(1500)]
    b = [f"scan:b:{i}" for i in range(500)]
    pipelined(r, [("SET", k, "1") for k in a + b])
    seen, _ = scan_all(r)
    assert len(seen) == 2000 and sorted(seen) == sorted(a + b)
    seen, calls = scan_all(r, count=50)
    assert len(seen) == 2000 and set(seen) == set(a + b) and calls > 20
    seen, _ = scan_all(r, match="scan:b:*", count=100)
    assert sorted(seen) == sorted(b)
    seen, _ = scan_all(r, match="scan:a:1?", count=1000)
    assert sorted(seen) == sorted(f"scan:a:1{d}" for d in range(10))
    # redis-cli --scan drives the cursor itself, as a plain client.
    out = redis_cli(env.host, env.port, "--scan", "--pattern", "scan:b:*")
    assert sorted(cli_lines(out)) == sorted(b)
    # A cursor that is not a number is Redis's error.
    c = RespConn(env.host, env.port)
    assert c.call("SCAN", "abc") == "ERR invalid cursor"
    c.close()


def test_cluster_keyslot_and_info_are_answered(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster)
    c = RespConn(env.host, env.port)
    node = redis_cluster.nodes[0]
    for key in ("foo", "{user:1}:x", "", "a{}b", "{}{x}", "héllo"):
        assert c.call("CLUSTER", "KEYSLOT", key) == node.call("CLUSTER", "KEYSLOT", key), key
    info = c.call("CLUSTER", "INFO")
    assert b"cluster_state:ok" in info
    # COUNTKEYSINSLOT asks the slot's own master.
    for i in range(5):
        c.call("SET", f"{{slot}}:{i}", "1")
    slot = node.call("CLUSTER", "KEYSLOT", "{slot}")
    assert c.call("CLUSTER", "COUNTKEYSINSLOT", str(slot)) == 5
    assert isinstance(c.call("CLUSTER", "COUNTKEYSINSLOT", "99999"), RespError)
    assert isinstance(c.call("CLUSTER", "FAILOVER"), RespError)
    assert c.call("PING") == b"PONG"
    c.close()


# ---- read policy ---------------------------------------------------------------------------------

def get_calls(nodes):
    return {n.port: n.cmdstat_calls("get") for n in nodes if n.running()}


def delta(before, after):
    return sum(after[p] - before[p] for p in before)


def written_and_synced(cluster, env, n=300):
    r = redis_py(env.host, env.port)
    keys = [f"rp:{i}" for i in range(n)]
    assert pipelined(r, [("SET", k, k) for k in keys]) == [True] * n
    cluster.wait_replicas_synced()
    return r, keys


def reads_land(cluster, r, keys):
    """(GETs seen by masters, by replicas, per-replica deltas) for one GET of every key."""
    masters, replicas = cluster.masters(), cluster.replica_nodes()
    mb, rb = get_calls(masters), get_calls(replicas)
    got = pipelined(r, [("GET", k) for k in keys], batch=50)
    assert got == [k.encode() for k in keys]
    ma, ra = get_calls(masters), get_calls(replicas)
    return delta(mb, ma), delta(rb, ra), [ra[p] - rb[p] for p in rb]


def test_read_policy_replica_reads_from_replicas_writes_to_masters(redis_cluster,
                                                                     cluster_proxy):
    env = cluster_proxy(redis_cluster, read_policy="REPLICA")
    r, keys = written_and_synced(redis_cluster, env)
    on_masters, on_replicas, per_replica = reads_land(redis_cluster, r, keys)
    assert on_masters == 0 and on_replicas == len(keys)
    assert all(d > 0 for d in per_replica), per_replica
    # Writes still go to the masters (a replica would answer READONLY).
    assert r.set("rp:w", "1") is True and r.incr("rp:n") == 1
    owner = owners(redis_cluster, ["rp:w"])["rp:w"]
    assert owner[1] == b"1"
    # Split reads go to replicas too.
    mb = get_calls(redis_cluster.masters())
    assert r.mget(keys[:40]) == [k.encode() for k in keys[:40]]
    assert delta(mb, get_calls(redis_cluster.masters())) == 0
    # EVAL may write, so it runs on masters (a replica would refuse it).
    evals = {n.port: n.cmdstat_calls("eval") for n in redis_cluster.replica_nodes()}
    assert r.eval("return redis.call('incr', KEYS[1])", 1, "rp:n") == 2
    assert evals == {n.port: n.cmdstat_calls("eval") for n in redis_cluster.replica_nodes()}


@pytest.mark.parametrize("policy", ["MASTER", "PREFER_MASTER"])
def test_read_policy_master_first_reads_from_masters(redis_cluster, cluster_proxy, policy):
    env = cluster_proxy(redis_cluster, read_policy=policy)
    r, keys = written_and_synced(redis_cluster, env)
    on_masters, on_replicas, _ = reads_land(redis_cluster, r, keys)
    assert on_masters == len(keys) and on_replicas == 0


def test_read_policy_prefer_replica_and_any(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster, read_policy="PREFER_REPLICA")
    r, keys = written_and_synced(redis_cluster, env)
    on_masters, on_replicas, _ = reads_land(redis_cluster, r, keys)
    assert on_masters == 0 and on_replicas == len(keys)
    env = cluster_proxy(redis_cluster, read_policy="ANY")
    r = redis_py(env.host, env.port)
    on_masters, on_replicas, _ = reads_land(redis_cluster, r, keys)
    assert on_masters > 0 and on_replicas > 0 and on_masters + on_replicas == len(keys)


def test_prefer_replica_falls_back_to_the_master_when_the_replica_dies(fresh_cluster,
                                                                       cluster_proxy):
    env = cluster_proxy(fresh_cluster, read_policy="PREFER_REPLICA")
    r, keys = written_and_synced(fresh_cluster, env)
    victim = fresh_cluster.replica_nodes()[0]
    victim.kill()
    # Reads keep working; once meltemi has noticed, they come from that shard's master.
    def all_read():
        got = pipelined(r, [("GET", k) for k in keys], batch=50)
        return got == [k.encode() for k in keys]
    wait_until(all_read, 15, "every read to succeed with one replica dead")
    on_masters, on_replicas, _ = reads_land(fresh_cluster, r, keys)
    assert on_masters > 0 and on_masters + on_replicas == len(keys)
    # Each time the dead replica's backoff (at most 1 s) runs out, meltemi tries it again; the
    # reads queued on that failed connect go to the master instead of failing.
    for _ in range(3):
        time.sleep(1.2)
        assert all_read(), "a read failed when meltemi retried the dead replica"


# ---- topology changes ----------------------------------------------------------------------------

class Traffic:
    """Client threads doing SET/GET through meltemi until stopped; every reply is checked."""

    def __init__(self, host, port, threads=2, keys=2000):
        self.host, self.port = host, port
        self.stop = threading.Event()
        self.ops = 0
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(i, keys)) for i in
                        range(threads)]

    def _run(self, tid, n_keys):
        c = redis_py(self.host, self.port, socket_timeout=15)
        rnd = random.Random(tid)
        i = 0
        while not self.stop.is_set():
            k = f"tr:{rnd.randrange(n_keys)}"
            try:
                if i % 2 == 0:
                    ok = c.set(k, k)
                    if ok is not True:
                        self.errors.append(f"SET {k} -> {ok!r}")
                else:
                    v = c.get(k)
                    if v not in (None, k.encode()):
                        self.errors.append(f"GET {k} -> {v!r}")
                self.ops += 1
            except Exception as exc:  # a client-visible error is what we test against
                self.errors.append(f"{k}: {exc!r}")
            i += 1
        c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def node_id(node):
    return node.call("CLUSTER", "MYID").decode()


def test_resharding_under_traffic_is_invisible_to_clients(fresh_cluster, cluster_proxy):
    import subprocess
    env = cluster_proxy(fresh_cluster)
    r = redis_py(env.host, env.port)
    keys = [f"tr:{i}" for i in range(2000)]
    assert pipelined(r, [("SET", k, k) for k in keys]) == [True] * len(keys)
    src, dst = fresh_cluster.masters()[0], fresh_cluster.masters()[1]
    with Traffic(env.host, env.port) as traffic:
        wait_until(lambda: traffic.ops > 200, 20, "traffic before the reshard")
        cmd = ["redis-cli", "--cluster", "reshard", src.addr, "--cluster-from", node_id(src),
               "--cluster-to", node_id(dst), "--cluster-slots", "1500", "--cluster-yes",
               "--cluster-pipeline", "5"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        before = traffic.ops
        wait_until(lambda: traffic.ops > before + 200, 20, "traffic after the reshard")
    assert traffic.errors == []
    fresh_cluster.wait_healthy(timeout=30)
    # The slots really moved, and every key still reads back through meltemi.
    moved = [k for k, (m, _) in owners(fresh_cluster, keys).items() if m is dst]
    assert moved
    assert pipelined(r, [("GET", k) for k in keys]) == [k.encode() for k in keys]
    size = r.dbsize()
    per_node = {f"{n.port}/{n.info('replication')['role']}": n.call("DBSIZE")
                for n in fresh_cluster.nodes}
    extra = sorted(set(k.decode() for k in r.keys("*")) - set(keys))[:10]
    assert size == len(keys), f"DBSIZE {size}: nodes {per_node}, extra keys {extra}"
    # A master now serves two slot ranges: CLUSTER SLOTS lists it twice. Replica reads parse
    # that map and land on replicas only.
    fresh_cluster.wait_replicas_synced()
    env2 = cluster_proxy(fresh_cluster, read_policy="REPLICA")
    r2 = redis_py(env2.host, env2.port)
    on_masters, on_replicas, _ = reads_land(fresh_cluster, r2, keys)
    assert on_masters == 0 and on_replicas == len(keys)


# Documented in docs/redis-cluster.md: once Redis has promoted a replica, meltemi serves the
# shard again within REFRESH_MIN_GAP (100 ms) + one CLUSTER SLOTS round trip when traffic
# reaches the shard, and within the periodic refresh (5 s) otherwise. The wait below is that
# bound with generous slack for a loaded machine; it is a bound, not a timing assertion.
RECOVERY_BOUND_S = 5 + 10


def test_master_killed_under_writes_recovers_and_loses_no_acknowledged_write(fresh_cluster,
                                                                               cluster_proxy):
    env = cluster_proxy(fresh_cluster, op_timeout="1s")
    victim = fresh_cluster.masters()[1]
    heir = fresh_cluster.replicas_of(victim)[0]
    acked, errors, other = {}, [], []
    stop = threading.Event()
    victim_slots = [(lo, hi) for lo, hi, m, _ in fresh_cluster.shards() if m is victim]

    def writer():
        c = redis_py(env.host, env.port, socket_timeout=15)
        i = 0
        while not stop.is_set():
            k = f"fo:{i}"
            try:
                if c.set(k, f"v{i}") is True:
                    acked[k] = f"v{i}"
            except redis.exceptions.ResponseError as exc:
                errors.append(str(exc))
            except Exception as exc:  # a hang (socket timeout) or a dropped connection
                other.append(repr(exc))
                c = redis_py(env.host, env.port, socket_timeout=15)
            i += 1
        c.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_until(lambda: len(acked) > 500, 20, "writes before the kill")
        victim.kill()
        killed_at = time.monotonic()
        wait_until(lambda: heir.info("replication").get("role") == "master", 30,
                   "the replica's promotion")
        promoted_at = time.monotonic()

        def shard_writable():
            probe = redis_py(env.host, env.port, socket_timeout=15)
            try:
                for i in range(20):
                    k = f"probe:{i}:{random.random()}"
                    slot = fresh_cluster.keyslot(k)
                    if any(lo <= slot <= hi for lo, hi in victim_slots):
                        return probe.set(k, "1") is True
                return False
            except redis.exceptions.ResponseError:
                return False
            finally:
                probe.close()
        wait_until(shard_writable, RECOVERY_BOUND_S, "meltemi to write to the promoted replica")
        recovered_at = time.monotonic()
        n = len(acked)
        wait_until(lambda: len(acked) > n + 300, 20, "writes after the recovery")
    finally:
        stop.set()
        t.join(timeout=30)
    print(f"failover: promotion {promoted_at - killed_at:.2f}s after the kill, meltemi "
          f"wrote to the shard {recovered_at - promoted_at:.2f}s after the promotion; "
          f"{len(acked)} acknowledged, {len(errors)} error replies")
    assert other == []
    assert errors, "the kill should have cost some writes an error reply"
    # Every acknowledged write reads back, through meltemi and on the nodes.
    r = redis_py(env.host, env.port, socket_timeout=15)
    keys = sorted(acked)
    got = []
    for i in range(0, len(keys), 500):
        got += r.mget(keys[i:i + 500])
    lost = [k for k, v in zip(keys, got) if v != acked[k].encode()]
    assert lost == [], f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    direct = owners(fresh_cluster, keys[:500])
    assert all(direct[k][1] == acked[k].encode() for k in keys[:500])


def test_a_node_that_stops_answering_costs_op_timeout_then_an_error(fresh_cluster,
                                                                    cluster_proxy):
    env = cluster_proxy(fresh_cluster, op_timeout="500ms")
    r = redis_py(env.host, env.port, socket_timeout=15)
    keys = [f"st:{i}" for i in range(60)]
    assert pipelined(r, [("SET", k, k) for k in keys]) == [True] * len(keys)
    found = owners(fresh_cluster, keys)
    frozen = fresh_cluster.masters()[0]
    # Keep the other shards serving while one is unreachable (Redis's default is to refuse
    # every command once a slot is uncovered).
    for n in fresh_cluster.nodes:
        assert n.call("CONFIG", "SET", "cluster-require-full-coverage", "no") == b"OK"
    # Keep Redis from failing over while we look (its replica would take over after 1 s).
    for rep in fresh_cluster.replicas_of(frozen):
        assert rep.call("CONFIG", "SET", "cluster-replica-no-failover", "yes") == b"OK"
    frozen_keys = [k for k in keys if found[k][0] is frozen]
    live_keys = [k for k in keys if found[k][0] is not frozen]
    assert frozen_keys and live_keys
    frozen.stop()
    try:
        for k in frozen_keys[:3]:
            with pytest.raises(redis.exceptions.ResponseError) as err:
                r.get(k)
            assert "timed out" in str(err.value) or "unavailable" in str(err.value), err.value
        # The other shards keep serving, on the same client connection and on new ones.
        assert r.mget(live_keys) == [k.encode() for k in live_keys]
        other = redis_py(env.host, env.port, socket_timeout=15)
        for k in live_keys:
            assert other.get(k) == k.encode()
        other.close()
    finally:
        frozen.cont()
    # Once it answers again, so does its shard.
    wait_until(lambda: r.get(frozen_keys[0]) == frozen_keys[0].encode(), 20,
               "the shard to serve again after SIGCONT")


def _slot(key):
    crc = 0
    for b in key.encode():
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc % 16384


def test_fan_out_right_after_a_moved_asks_every_master_once(fresh_cluster, cluster_proxy):
    # A MOVED re-points one slot of meltemi's map until the next refresh. Commands that visit
    # every master (DBSIZE, KEYS, SCAN) must still reach each master once, not the master
    # that slot now points at: this once double-counted a master after a reshard.
    env = cluster_proxy(fresh_cluster, workers=1)
    r = redis_py(env.host, env.port)
    keys = [f"fo2:{i}" for i in range(300)]
    assert pipelined(r, [("SET", k, "v") for k in keys]) == [True] * len(keys)
    assert r.dbsize() == len(keys)  # the map is learnt
    shards = sorted(fresh_cluster.shards(), key=lambda s: s[0])
    lo, _, src, _ = shards[0]
    dst = shards[1][2]
    key = next(f"mv:{i}" for i in range(1_000_000) if _slot(f"mv:{i}") == lo)
    cmd = ["redis-cli", "--cluster", "reshard", src.addr, "--cluster-from", node_id(src),
           "--cluster-to", node_id(dst), "--cluster-slots", "1", "--cluster-yes"]
    import subprocess
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    fresh_cluster.wait_healthy(timeout=30)
    assert fresh_cluster.master_of_slot(lo) is dst, "redis-cli moved the source's first slot"
    # meltemi still maps slot lo to src: this SET is MOVED to dst, which re-points the slot
    # (the shard's first slot) until the refresh that follows.
    assert r.set(key, "x") is True
    direct = sum(int(m.call("DBSIZE")) for m in fresh_cluster.masters())
    assert r.dbsize() == direct == len(keys) + 1
    assert sorted(k.decode() for k in r.keys("*")) == sorted(keys + [key])


def test_command_docs_come_from_a_master_kept_to_what_command_lists(redis_cluster,
                                                                     cluster_proxy):
    env = cluster_proxy(redis_cluster, workers=1)
    c = RespConn(env.host, env.port, timeout=10)
    master = redis_cluster.masters()[0]
    assert c.call("COMMAND", "DOCS", "get") == master.call("COMMAND", "DOCS", "get")
    got = c.call("COMMAND", "DOCS", "shutdown", "set", "psync")
    assert [got[i] for i in range(0, len(got), 2)] == [b"set"]
    c.close()
