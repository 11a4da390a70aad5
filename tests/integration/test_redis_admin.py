"""
Administration through meltemi is transparent (issue 10): CONFIG, DEBUG, OBJECT, MEMORY,
LATENCY, SLOWLOG, SCRIPT, FUNCTION, FLUSHALL/FLUSHDB reach the one endpoint of a
single-endpoint service, and every master where there are several (PROXY mode with two
endpoints, Redis Cluster mode), with the replies merged as docs/redis-commands.md says. Only
what stops, crashes or re-roles a server is refused, with why; a RedisService refuses more
with settings.deniedCommands (NOPERM).

Real redis-server processes (one, two, and the 6-node cluster fixture), driven by redis-py and
redis-cli; what was applied is read from each server directly, never through meltemi.
"""

import redis
import pytest

import configs
from cluster_fixtures import (cluster_proxy, redis_cluster, shared_cluster)  # noqa: F401
from harness import VIP, RespConn, cli_lines, free_port, redis_cli, redis_py, run_meltemi, wait_until


DEBUG_NOT_ALLOWED = "ERR DEBUG command not allowed."


def direct(env):
    return env.redis.client()


def via(env, **kw):
    return redis_py(env.host, env.port, **kw)


# ---- one endpoint ---------------------------------------------------------------------------

def test_config_set_get_resetstat_reach_the_server(blog_env):
    env = blog_env(step=1)
    r = via(env)
    assert r.config_set("maxmemory-policy", "allkeys-lru") is True
    assert direct(env).config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    # GET answers with the server's own value, not a proxy's stand-in
    direct(env).config_set("hash-max-listpack-entries", "77")
    assert r.config_get("hash-max-listpack-entries") == {"hash-max-listpack-entries": "77"}
    # an unknown parameter is Redis's own error, unchanged
    with pytest.raises(redis.ResponseError, match="Unknown option or number of arguments"):
        r.config_set("no-such-parameter", "1")
    r.set("k", "v")
    assert "cmdstat_set" in direct(env).info("commandstats")
    assert r.config_resetstat() is True
    assert "cmdstat_set" not in direct(env).info("commandstats")
    # redis-cli, as an operator would type it
    out = redis_cli(env.host, env.port, "CONFIG", "SET", "notify-keyspace-events", "KEA")
    assert cli_lines(out) == ["OK"], out
    assert direct(env).config_get("notify-keyspace-events")["notify-keyspace-events"] in (
        "AKE", "KEA", "AKEm")


def test_debug_object_memory_slowlog_latency_script_function(blog_env):
    env = blog_env(step=1)
    r = via(env)
    r.set("obj", "12345")
    assert r.object("encoding", "obj") == b"int"
    assert isinstance(r.memory_usage("obj"), int)
    # DEBUG reaches Redis, whose enable-debug-command (default "no") answers
    c = RespConn(env.host, env.port)
    for cmd in (("DEBUG", "OBJECT", "obj"), ("DEBUG", "SLEEP", "0")):
        assert c.call(*cmd).startswith(DEBUG_NOT_ALLOWED), cmd
    c.close()
    assert direct(env).info("commandstats")["cmdstat_debug"]["rejected_calls"] == 2
    assert r.slowlog_reset() is True
    assert r.slowlog_len() == 0
    assert r.execute_command("LATENCY", "RESET") == 0
    sha = r.script_load("return redis.call('INCR', KEYS[1])")
    assert direct(env).script_exists(sha) == [True]
    assert r.evalsha(sha, 1, "n") == 1
    lib = "#!lua name=adminlib\nredis.register_function('adm_one', function() return 1 end)"
    assert r.function_load(lib) == b"adminlib"
    assert r.fcall("adm_one", 0) == 1
    assert [e[b"library_name"] if isinstance(e, dict) else e[1]
            for e in direct(env).function_list()] in ([b"adminlib"], ["adminlib"])
    assert r.execute_command("CLIENT", "NO-EVICT", "off") == b"OK"  # nothing to change
    assert r.flushdb() is True
    assert direct(env).dbsize() == 0


def test_what_stops_or_crashes_the_server_is_refused_with_why(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    assert c.call("DEBUG", "SEGFAULT") == (
        "ERR meltemi: 'debug segfault' is refused: it would crash the Redis server that every "
        "client of this proxy shares")
    assert c.call("debug", "panic").startswith("ERR meltemi: 'debug panic' is refused")
    assert c.call("SHUTDOWN", "NOSAVE") == (
        "ERR meltemi: 'shutdown' is refused: it would stop the Redis server that every client "
        "of this proxy shares")
    for cmd in (("FAILOVER",), ("REPLICAOF", "127.0.0.1", "1"), ("SLAVEOF", "127.0.0.1", "1")):
        assert c.call(*cmd).startswith(f"ERR meltemi: '{cmd[0].lower()}' is refused: it would "
                                       "change which server is the primary"), cmd
    c.close()
    d = direct(env)
    assert d.ping() is True
    assert d.info("replication")["role"] == "master"
    stats = d.info("commandstats")
    assert not [k for k in stats if k.startswith(("cmdstat_shutdown", "cmdstat_failover",
                                                  "cmdstat_replicaof", "cmdstat_slaveof",
                                                  "cmdstat_debug"))]


DENY = """\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: redis-single
  namespace: redis
spec:
  host:
  - redis-single.redis.svc.cluster.local
  settings:
    deniedCommands: [FLUSHALL, "config set", DEBUG]
"""


def test_denied_commands_are_answered_noperm_and_never_reach_redis(blog_env):
    env = blog_env(files={"redis-single.yaml": configs.STEP1, "deny.yaml": DENY})
    r = via(env)
    r.set("keep", "me")
    c = RespConn(env.host, env.port)
    assert c.call("FLUSHALL") == ("NOPERM meltemi: 'flushall' is denied on this listener "
                                  "(RedisService settings.deniedCommands)")
    assert c.call("CONFIG", "SET", "maxmemory", "1") == (
        "NOPERM meltemi: 'config set' is denied on this listener (RedisService "
        "settings.deniedCommands)")
    assert c.call("debug", "sleep", "0").startswith("NOPERM meltemi: 'debug' is denied")
    # what is not denied still goes through: CONFIG GET, FLUSHDB
    assert c.call("CONFIG", "GET", "maxmemory") == [b"maxmemory", b"0"]
    c.close()
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.flushall()
    d = direct(env)
    assert d.get("keep") == b"me"
    assert d.config_get("maxmemory") == {"maxmemory": "0"}
    assert not [k for k in d.info("commandstats")
                if k in ("cmdstat_flushall", "cmdstat_config|set", "cmdstat_debug")]


def test_an_unknown_denied_command_fails_validation_with_file_and_line(config_dir):
    bad = DENY.replace('[FLUSHALL, "config set", DEBUG]', '[FLUSHALL, "config sett"]')
    se = configs.service_entry("redis-single", VIP, 7390, 6390)
    d = config_dir({"se.yaml": se, "deny.yaml": bad})
    r = run_meltemi("validate", d)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "deny.yaml:" in out and "deniedCommands" in out and "config sett" in out, out


# ---- PROXY mode, two endpoints: every master --------------------------------------------------

def two_endpoints(name, port, a, b):
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: redis
spec:
  hosts:
  - {name}.redis.svc.cluster.local
  addresses:
  - {VIP}
  ports:
  - number: {port}
    name: tcp-redis
    protocol: TCP
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      tcp-redis: {a}
  - address: 127.0.0.1
    ports:
      tcp-redis: {b}
"""


@pytest.fixture
def two_masters(redis_factory, config_dir, meltemi_factory):
    a, b = redis_factory(name="a"), redis_factory(name="b")
    port = free_port(VIP)
    m = meltemi_factory(config_dir({"se.yaml": two_endpoints("redis-two", port, a.port,
                                                             b.port)}))
    return a, b, redis_py(VIP, port), port, m


def test_proxy_mode_broadcasts_to_every_endpoint_and_merges(two_masters):
    a, b, r, port, _ = two_masters
    assert r.config_set("maxmemory-policy", "volatile-lfu") is True
    for s in (a, b):
        assert s.client().config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lfu"}
    keys = [f"key:{i}" for i in range(40)]
    for k in keys:
        r.set(k, "v")
    na, nb = a.client().dbsize(), b.client().dbsize()
    assert na > 0 and nb > 0 and na + nb == 40  # the keys are spread over both
    assert r.dbsize() == 40  # summed
    assert sorted(r.keys("key:*")) == sorted(k.encode() for k in keys)  # concatenated
    assert sorted(r.scan_iter("key:*", count=7)) == sorted(k.encode() for k in keys)
    sha = r.script_load("return 7")
    assert a.client().script_exists(sha) == [True] and b.client().script_exists(sha) == [True]
    b.client().script_flush()
    assert r.script_exists(sha) == [False]  # loaded everywhere? not on b
    assert r.slowlog_reset() is True
    assert r.slowlog_len() == 0
    with pytest.raises(redis.ResponseError, match="NOTBUSY"):
        r.script_kill()
    with pytest.raises(redis.ResponseError, match="Unknown option"):
        r.config_set("no-such-parameter", "1")
    assert r.flushall() is True
    assert a.client().dbsize() == 0 and b.client().dbsize() == 0


def test_proxy_mode_broadcast_with_one_endpoint_down_says_so(two_masters):
    a, b, r, port, _ = two_masters
    b.kill()
    with pytest.raises(redis.ResponseError, match=r"meltemi: 1 of 2 parts failed"):
        r.config_set("maxmemory-policy", "allkeys-random")
    assert a.client().config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-random"}


# ---- Redis Cluster mode: every master ---------------------------------------------------------

def test_cluster_mode_broadcasts_admin_to_every_master(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster)
    r = redis_py(env.host, env.port)
    masters = redis_cluster.masters()
    assert r.config_set("slowlog-log-slower-than", "12345") is True
    for m in masters:
        assert m.call("CONFIG", "GET", "slowlog-log-slower-than") == [
            b"slowlog-log-slower-than", b"12345"]
    assert r.config_get("slowlog-log-slower-than") == {"slowlog-log-slower-than": "12345"}
    sha = r.script_load("return 'x'")
    for m in masters:
        assert m.call("SCRIPT", "EXISTS", sha) == [1]
    assert r.script_exists(sha) == [True]
    for i in range(30):
        r.set(f"ck{i}", i)
    assert r.dbsize() == 30
    # DEBUG OBJECT goes to the key's master (and there meets enable-debug-command "no")
    c = RespConn(env.host, env.port)
    assert c.call("DEBUG", "OBJECT", "ck7").startswith(DEBUG_NOT_ALLOWED)
    c.close()
    owner = redis_cluster.master_of_slot(redis_cluster.keyslot("ck7"))
    for m in masters:
        calls = m.client().info("commandstats").get("cmdstat_debug", {}).get("rejected_calls", 0)
        assert calls == (1 if m is owner else 0), m.addr
    assert r.memory_usage("ck7") > 0
    assert r.execute_command("SLOWLOG", "RESET") == b"OK"
    assert r.execute_command("SLOWLOG", "LEN") == 0
    out = redis_cli(env.host, env.port, "CONFIG", "RESETSTAT")
    assert cli_lines(out) == ["OK"], out
    c = RespConn(env.host, env.port)
    assert c.call("SHUTDOWN").startswith("ERR meltemi: 'shutdown' is refused")
    c.close()
    assert r.flushall() is True
    for m in masters:
        assert m.call("DBSIZE") == 0
        assert m.call("PING") == b"PONG"


def no_evict_clients(d):
    return [c for c in d.client_list() if "e" in c["flags"]]


def test_client_no_evict_holds_on_the_clients_own_upstream_connection(blog_env):
    """CLIENT NO-EVICT is a flag of one connection in Redis: through meltemi it is set on a
    connection leased for the client (never on the shared one, where it would exempt every
    client from eviction), the client's commands follow it there, it is set again after that
    connection dies, and OFF gives the lease back."""
    env = blog_env(step=1)
    d = direct(env)
    other = RespConn(env.host, env.port)
    assert other.call("SET", "k", "v") == b"OK"
    c = RespConn(env.host, env.port)
    assert c.call("CLIENT", "NO-EVICT", "on") == b"OK"
    flagged = no_evict_clients(d)
    assert len(flagged) == 1, d.client_list()
    assert c.call("GET", "k") == b"v"
    wait_until(lambda: [x["cmd"] for x in no_evict_clients(d)] == ["get"], 5,
               "the client's GET on its own flagged connection")
    assert other.call("GET", "k") == b"v"  # the shared connection stays unflagged
    assert len(no_evict_clients(d)) == 1
    # the flagged connection dies: the next command sets the flag on a new lease first
    assert d.client_kill_filter(_id=flagged[0]["id"]) == 1
    wait_until(lambda: not no_evict_clients(d), 5, "the flagged connection to go")
    c.call("GET", "k")  # may fail with the upstream's error: the lease died under it
    assert c.call("GET", "k") == b"v"
    assert len(no_evict_clients(d)) == 1 and no_evict_clients(d)[0]["id"] != flagged[0]["id"]
    assert c.call("CLIENT", "NO-EVICT", "off") == b"OK"
    wait_until(lambda: not no_evict_clients(d), 5, "the flag cleared")
    # Redis's own answers: a syntax error, and NO-TOUCH where the server predates it (7.2)
    assert c.call("CLIENT", "NO-EVICT", "maybe") == "ERR syntax error"
    got = c.call("CLIENT", "NO-TOUCH", "on")
    version = tuple(int(x) for x in d.info("server")["redis_version"].split(".")[:2])
    if version >= (7, 2):
        assert got == b"OK"
    else:
        assert got.startswith("ERR unknown subcommand"), got
    c.close()
    other.close()
