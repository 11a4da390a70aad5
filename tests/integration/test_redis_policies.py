"""
RedisService policies against real servers (issue 4): prefix routing, mirroring, faults, and
an external Redis reached through a selector-less Service + EndpointSlice.

The blog's YAML is read verbatim from examples/redis-walkthrough/ (so the walk-through is what
is tested); only the services it refers to are written here, with the ports of the servers
the test started. The blog's redis-cluster is the real 6-node cluster of cluster_fixtures.py
(RedisDestination mode CLUSTER), redis-single a redis-server with the blog's password
"testredis\\n" behind the blog's Secret + RedisDestination (step 1) and RedisService (step 2).
Tests of one policy detail use a second single redis-server as the other service: where a key
landed is then one GET away.

Where data ended up is always checked on the Redis servers themselves, never through meltemi.
"""

import re
import time
import types

import pytest

import configs
from cluster_fixtures import (CLUSTER_VIP, cluster_yaml,  # noqa: F401
                              redis_cluster, shared_cluster)
from harness import (REPO, VIP, RespConn, cli_lines, free_port, redis_cli, run_meltemi,
                     redis_py, wait_until)

WALK = REPO / "examples" / "redis-walkthrough"
SINGLE_HOST = configs.HOST
FAULT_TEXT = "Fault Injected: Error"
SPLIT_REFUSED = "ERR meltemi: the keys of this command are routed to different services"


def walkthrough(step, name="redis-service.yaml"):
    return (WALK / step / name).read_text()


# ---- the environment ---------------------------------------------------------------------------

class Store:
    """Direct access to the Redis behind a service: a single redis-server or the cluster."""

    def __init__(self, server=None, cluster=None):
        self.server, self.cluster = server, cluster

    def _node(self, key):
        if self.cluster is None:
            return self.server
        return self.cluster.master_of_slot(self.cluster.keyslot(key))

    def call(self, *args):
        node = self._node(args[1]) if len(args) > 1 else self.server
        c = RespConn(node.host, node.port)
        try:
            if getattr(node, "password", None) is not None:
                assert c.call("AUTH", node.password) == b"OK"
            return c.call(*args)
        finally:
            c.close()

    def get(self, key):
        return self.call("GET", key)

    def dbsize(self):
        if self.cluster is None:
            return self.call("DBSIZE")
        return sum(m.call("DBSIZE") for m in self.cluster.masters())

    def cmd_calls(self, command):
        """calls= of INFO commandstats for command, summed over the masters."""
        nodes = [self.server] if self.cluster is None else self.cluster.masters()
        total = 0
        for n in nodes:
            c = RespConn(n.host, n.port)
            try:
                if getattr(n, "password", None) is not None:
                    c.call("AUTH", n.password)
                text = c.call("INFO", "commandstats").decode()
            finally:
                c.close()
            m = re.search(rf"^cmdstat_{command}:calls=(\d+)", text, re.M)
            total += int(m.group(1)) if m else 0
        return total


@pytest.fixture
def mesh(redis_factory, config_dir, meltemi_factory):
    """deploy(policy=None, cluster=None, extra=None, workers=1) -> namespace:
    single / other (Store), single_port / other_port (meltemi's listeners on VIP and
    CLUSTER_VIP), meltemi, conf, files.

    redis-single: the blog's steps 1 and 2 verbatim. redis-cluster: the real cluster when one
    is given (mode CLUSTER), else a second redis-server without password. policy: a
    RedisService (YAML) for redis-cluster, or {filename: yaml}."""

    def deploy(policy=None, cluster=None, extra=None, workers=1):
        single = redis_factory(password=configs.BLOG_SECRET_PASSWORD, name="single")
        files = {
            "1-redis-destination.yaml": walkthrough("1-upstream-auth", "redis-destination.yaml"),
            "2-redis-service.yaml": walkthrough("2-client-auth"),
        }
        sport = free_port(VIP)
        files["svc-redis-single.yaml"] = configs.service_entry("redis-single", VIP, sport,
                                                               single.port)
        cport = free_port(CLUSTER_VIP)
        if cluster is not None:
            for name, text in cluster_yaml(cluster, cport).items():
                files[f"cluster-{name}"] = text
            other = Store(cluster=cluster)
        else:
            second = redis_factory(name="second")
            files["svc-redis-cluster.yaml"] = configs.service_entry(
                "redis-cluster", CLUSTER_VIP, cport, second.port)
            other = Store(server=second)
        if isinstance(policy, str):
            files["policy.yaml"] = policy
        elif policy:
            files.update(policy)
        files.update(extra or {})
        conf = config_dir(files)
        m = meltemi_factory(conf, workers=workers)
        return types.SimpleNamespace(single=Store(server=single), other=other, single_port=sport,
                                     other_port=cport, meltemi=m, conf=conf, files=files)

    return deploy


def scrape(meltemi):
    """{(name, labels): value} of /stats/prometheus."""
    status, body = meltemi.http_get("/stats/prometheus")
    assert status == 200, body
    out = {}
    for ln in body.splitlines():
        if ln and not ln.startswith("#"):
            m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", ln)
            if m:
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def metric(meltemi, name, label_substr=""):
    return sum(v for (n, labels), v in scrape(meltemi).items()
               if n == name and label_substr in labels)


def redis_service(routes, faults="", settings=""):
    """A RedisService for redis-cluster with the given redis[] items (YAML text, indented)."""
    return f"""\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: redis-cluster
  namespace: redis
spec:
  host:
  - redis-cluster.redis.svc.cluster.local
{settings}  redis:
{routes}{faults}"""


TO_OTHER = "    route:\n      host: redis-cluster.redis.svc.cluster.local\n"
TO_SINGLE = "    route:\n      host: redis-single.redis.svc.cluster.local\n"


def prefix_route(prefix, to, remove=False):
    rm = "\n        removePrefix: true" if remove else ""
    return f"  - match:\n      key:\n        prefix: {prefix!r}{rm}\n{to}"


# ---- step 4: prefix routing --------------------------------------------------------------------

def test_blog_prefix_routing_transcript(redis_cluster, mesh):
    env = mesh(policy=walkthrough("4-prefix-routing"), cluster=redis_cluster, workers=2)
    typed = ('set test-route "this key goes to redis-single"\n'
             'set cluster-test-route "this key goes to redis-cluster"\n'
             "get test-route\nget cluster-test-route\n")
    out = redis_cli(CLUSTER_VIP, env.other_port, stdin=typed)
    assert cli_lines(out) == ["OK", "OK", "this key goes to redis-single",
                              "this key goes to redis-cluster"], out.stdout + out.stderr
    # redis-single holds only test-route, as the blog shows through its own listener ...
    out = redis_cli(VIP, env.single_port,
                    stdin="AUTH testredis123!\nget test-route\nget cluster-test-route\n")
    assert cli_lines(out) == ["OK", "this key goes to redis-single"], out.stdout
    # ... and as the servers themselves say.
    assert env.single.get("test-route") == b"this key goes to redis-single"
    assert env.single.get("cluster-test-route") is None
    assert env.other.get("cluster-test-route") == b"this key goes to redis-cluster"
    assert env.other.get("test-route") is None


def test_keys_beginning_with_cluster_live_only_on_the_cluster(redis_cluster, mesh):
    env = mesh(policy=walkthrough("4-prefix-routing"), cluster=redis_cluster, workers=2)
    r = redis_py(CLUSTER_VIP, env.other_port)
    keys = [f"cluster{i}" for i in range(150)] + [f"cluster:{i}" for i in range(50)] + \
        [f"user:{i}" for i in range(150)] + [f"clu{i}" for i in range(50)] + ["Cluster-x"]
    p = r.pipeline(transaction=False)
    for k in keys:
        p.set(k, f"v-{k}")
    assert p.execute() == [True] * len(keys)
    for k in keys:
        on_cluster, on_single = env.other.get(k), env.single.get(k)
        if k.startswith("cluster"):
            assert (on_cluster, on_single) == (f"v-{k}".encode(), None), k
        else:
            assert (on_cluster, on_single) == (None, f"v-{k}".encode()), k
    assert env.single.dbsize() == 201 and env.other.dbsize() == 200
    assert [r.get(k) for k in keys[::37]] == [f"v-{k}".encode() for k in keys[::37]]


def test_longest_prefix_wins_and_remove_prefix_strips(mesh):
    routes = (prefix_route("cluster", TO_OTHER) + prefix_route("cluster:single:", TO_SINGLE) +
              prefix_route("strip:", TO_OTHER, remove=True) + "  - route:\n"
              "      host: redis-single.redis.svc.cluster.local\n")
    env = mesh(policy=redis_service(routes))
    c = RespConn(CLUSTER_VIP, env.other_port)
    assert c.call("SET", "cluster:a", "1") == b"OK"
    assert c.call("SET", "cluster:single:b", "2") == b"OK"
    assert c.call("SET", "strip:c", "3") == b"OK"
    assert c.call("SET", "d", "4") == b"OK"
    assert env.other.get("cluster:a") == b"1"
    assert env.single.get("cluster:single:b") == b"2" and env.other.get("cluster:single:b") is None
    # removePrefix: stored without the prefix, read back through the prefix.
    assert env.other.get("c") == b"3" and env.other.get("strip:c") is None
    assert c.call("GET", "strip:c") == b"3"
    assert c.call("APPEND", "strip:c", "x") == 2 and env.other.get("c") == b"3x"
    assert env.single.get("d") == b"4"
    # The key of a keyless or first-key-less command is untouched: PING still answers.
    assert c.call("PING") == b"PONG"
    c.close()


@pytest.mark.parametrize("case_insensitive", [True, False])
def test_case_insensitive_prefixes(mesh, case_insensitive):
    settings = "  settings:\n    caseInsensitive: true\n" if case_insensitive else ""
    routes = prefix_route("cluster", TO_OTHER) + "  - route:\n" \
        "      host: redis-single.redis.svc.cluster.local\n"
    env = mesh(policy=redis_service(routes, settings=settings))
    c = RespConn(CLUSTER_VIP, env.other_port)
    for k in ("cluster-a", "CLUSTER-b", "ClUsTeR-c", "clusteR"):
        assert c.call("SET", k, k) == b"OK"
    c.close()
    assert env.other.get("cluster-a") == b"cluster-a"
    for k in ("CLUSTER-b", "ClUsTeR-c", "clusteR"):
        where = (env.other.get(k), env.single.get(k))
        assert where == ((k.encode(), None) if case_insensitive else (None, k.encode())), k


def test_multi_key_commands_are_split_per_service(mesh):
    """The issue: 'Multi-key commands whose keys go to different services are split per
    service and reassembled' (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH)."""
    routes = prefix_route("cluster", TO_OTHER) + prefix_route("strip:", TO_OTHER, remove=True) + \
        "  - route:\n      host: redis-single.redis.svc.cluster.local\n"
    env = mesh(policy=redis_service(routes), workers=2)
    c = RespConn(CLUSTER_VIP, env.other_port)
    assert c.call("MSET", "a", "1", "cluster-b", "2", "c", "3", "strip:d", "4") == b"OK"
    assert env.single.get("a") == b"1" and env.single.get("c") == b"3"
    assert env.other.get("cluster-b") == b"2" and env.other.get("d") == b"4"
    assert env.single.get("cluster-b") is None and env.other.get("a") is None
    # Replies come back in the order the client asked, whatever service answered.
    assert c.call("MGET", "cluster-b", "a", "nope", "strip:d", "c", "cluster-nope") == \
        [b"2", b"1", None, b"4", b"3", None]
    assert c.call("EXISTS", "a", "cluster-b", "strip:d", "missing", "cluster-missing") == 3
    assert c.call("TOUCH", "a", "cluster-b") == 2
    assert c.call("DEL", "a", "cluster-b", "cluster-missing") == 2
    assert c.call("UNLINK", "c", "strip:d") == 2
    assert env.single.dbsize() == 0 and env.other.dbsize() == 0
    # Commands whose keys must live together are refused, documented in runtime/proxy/redis/policy.c
    # (sess_split_by_route) and left untouched on both servers.
    assert c.call("SET", "x", "1") == b"OK" and c.call("SET", "cluster-y", "2") == b"OK"
    for cmd in (("RENAME", "x", "cluster-y"), ("SUNIONSTORE", "x", "cluster-y"),
                ("MSETNX", "x", "1", "cluster-y", "2")):
        assert c.call(*cmd) == SPLIT_REFUSED, cmd
    assert env.single.get("x") == b"1" and env.other.get("cluster-y") == b"2"
    # Keys that all take one route are not split: RENAME within one service works.
    assert c.call("RENAME", "x", "z") == b"OK" and env.single.get("z") == b"1"
    c.close()


def test_multi_key_split_with_a_cluster_destination(redis_cluster, mesh):
    env = mesh(policy=walkthrough("4-prefix-routing"), cluster=redis_cluster, workers=2)
    r = redis_py(CLUSTER_VIP, env.other_port)
    pairs = {f"cluster:{i}": str(i) for i in range(40)}
    pairs.update({f"k:{i}": str(i) for i in range(40)})
    assert r.mset(pairs) is True
    for k, v in pairs.items():
        store = env.other if k.startswith("cluster") else env.single
        assert store.get(k) == v.encode(), k
    keys = list(pairs)[::3] + ["cluster:none", "none"]
    assert r.mget(keys) == [pairs[k].encode() for k in keys[:-2]] + [None, None]
    assert r.delete(*pairs) == len(pairs)
    assert env.single.dbsize() == 0 and env.other.dbsize() == 0


# ---- step 6: mirroring -------------------------------------------------------------------------

def test_blog_mirroring_transcript(redis_cluster, mesh):
    env = mesh(policy=walkthrough("6-traffic-mirroring"), cluster=redis_cluster, workers=2)
    typed = ('set test-traffic-mirroring "this key goes to both redis-cluster and '
             'redis-single"\nget test-traffic-mirroring\n')
    out = redis_cli(CLUSTER_VIP, env.other_port, stdin=typed)
    value = "this key goes to both redis-cluster and redis-single"
    assert cli_lines(out) == ["OK", value], out.stdout + out.stderr
    assert env.other.get("test-traffic-mirroring") == value.encode()
    wait_until(lambda: env.single.get("test-traffic-mirroring") == value.encode(), 5,
               "the mirrored SET to reach redis-single")
    out = redis_cli(VIP, env.single_port,
                    stdin="AUTH testredis123!\nget test-traffic-mirroring\n")
    assert cli_lines(out) == ["OK", value], out.stdout


def test_mirror_client_sees_only_the_primary(mesh):
    env = mesh(policy=walkthrough("6-traffic-mirroring"))
    env.single.call("SET", "counter", "100")
    env.single.call("SET", "only-on-mirror", "mirror's")
    r = redis_py(CLUSTER_VIP, env.other_port)
    assert [r.incr("counter") for _ in range(5)] == [1, 2, 3, 4, 5]
    assert r.get("only-on-mirror") is None
    keys = [f"m:{i}" for i in range(200)]
    p = r.pipeline(transaction=False)
    for k in keys:
        p.set(k, k)
    assert p.execute() == [True] * len(keys)
    wait_until(lambda: env.single.get("counter") == b"105", 5, "the mirrored INCRs")
    wait_until(lambda: all(env.single.get(k) == k.encode() for k in keys), 5,
               "every mirrored key on redis-single")
    assert all(env.other.get(k) == k.encode() for k in keys)
    assert env.other.get("counter") == b"5"


MIRROR_ROUTES = """\
  - match:
      key:
        prefix: all
    route:
      host: redis-cluster.redis.svc.cluster.local
    mirror:
    - route:
        host: redis-single.redis.svc.cluster.local
      percentage:
        value: 100
  - match:
      key:
        prefix: half
    route:
      host: redis-cluster.redis.svc.cluster.local
    mirror:
    - route:
        host: redis-single.redis.svc.cluster.local
      percentage:
        value: 50
  - match:
      key:
        prefix: writes
    route:
      host: redis-cluster.redis.svc.cluster.local
    mirror:
    - route:
        host: redis-single.redis.svc.cluster.local
      excludeReadCommands: true
  - route:
      host: redis-cluster.redis.svc.cluster.local
    mirror:
    - route:
        host: redis-single.redis.svc.cluster.local
      percentage:
        value: 0
"""


def test_mirror_percentage_and_exclude_read_commands(mesh):
    env = mesh(policy=redis_service(MIRROR_ROUTES))
    c = RespConn(CLUSTER_VIP, env.other_port)
    for i in range(300):
        assert c.call("SET", f"zero:{i}", "v") == b"OK"
    for i in range(400):
        assert c.call("SET", f"half:{i}", "v") == b"OK"
    gets_before = env.single.cmd_calls("get")
    for i in range(50):
        assert c.call("SET", f"writes:{i}", "v") == b"OK"
        assert c.call("GET", f"writes:{i}") == b"v"
    # A last 100% copy after everything else: once it is there, every earlier copy sent on
    # the same mirror connection has been applied.
    assert c.call("SET", "all:last", "v") == b"OK"
    c.close()
    # (EXISTS, not GET: the GETs counted on redis-single must be the mirror's alone.)
    wait_until(lambda: env.single.call("EXISTS", "all:last") == 1, 5, "the 100% mirror's copy")
    wait_until(lambda: env.single.call("EXISTS", "writes:49") == 1, 5,
               "the write-only mirror's copies")
    keys = [k.decode() for k in env.single.call("KEYS", "*")]
    assert not [k for k in keys if k.startswith("zero:")], "percentage 0 mirrors nothing"
    halves = len([k for k in keys if k.startswith("half:")])
    assert 120 <= halves <= 280, f"{halves} of 400 mirrored at 50%"  # mean 200, sd 10
    assert len([k for k in keys if k.startswith("writes:")]) == 50
    assert env.single.cmd_calls("get") == gets_before, "excludeReadCommands: no GET mirrored"
    assert env.other.dbsize() == 300 + 400 + 50 + 1
    # Without excludeReadCommands reads are copied too (so the count above can move).
    assert redis_py(CLUSTER_VIP, env.other_port).get("all:last") == b"v"
    wait_until(lambda: env.single.cmd_calls("get") == gets_before + 1, 5, "a mirrored GET")


DEAD_MIRROR = """\
  - route:
      host: redis-cluster.redis.svc.cluster.local
    mirror:
    - route:
        host: redis-dead.redis.svc.cluster.local
      percentage:
        value: 100
"""


def test_a_dead_mirror_never_surfaces_and_is_counted(mesh, redis_factory):
    doomed = redis_factory(name="doomed")
    dead_port = free_port()  # nobody listens there
    extra = {
        "svc-redis-dead.yaml": configs.service_entry("redis-dead", "127.0.0.12",
                                                     free_port("127.0.0.12"), dead_port),
        "svc-redis-doomed.yaml": configs.service_entry("redis-doomed", "127.0.0.13",
                                                       free_port("127.0.0.13"), doomed.port),
    }
    routes = DEAD_MIRROR + DEAD_MIRROR.replace("redis-dead", "redis-doomed").replace(
        "  - route:\n      host: redis-cluster", "  - match:\n      key:\n        prefix: d\n"
        "    route:\n      host: redis-cluster", 1)
    env = mesh(policy=redis_service(routes), extra=extra)
    r = redis_py(CLUSTER_VIP, env.other_port)
    for i in range(200):
        assert r.set(f"k{i}", i) is True
        assert r.get(f"k{i}") == str(i).encode()
    assert r.set("d-first", "x") is True
    wait_until(lambda: doomed.client().get("d-first") == b"x", 5, "a copy on the doomed mirror")
    doomed.kill()  # the mirror dies with copies in flight and more to come
    for i in range(200):
        assert r.set(f"d{i}", i) is True
        assert r.get(f"d{i}") == str(i).encode()
    assert all(env.other.get(f"k{i}") == str(i).encode() for i in range(200))
    assert all(env.other.get(f"d{i}") == str(i).encode() for i in range(200))

    # Every copy the dead mirror could not take (200 SET + 200 GET) is one upstream request
    # error of its cluster; the doomed one's copies after its death likewise.
    dead = "redis-dead.redis.svc.cluster.local"
    doomed_host = "redis-doomed.redis.svc.cluster.local"
    wait_until(lambda: metric(env.meltemi, "meltemi_upstream_request_errors_total", dead) == 400,
               5, "400 mirror failures counted for redis-dead")
    wait_until(lambda: metric(env.meltemi, "meltemi_upstream_request_errors_total",
                              doomed_host) >= 1, 5, "mirror failures counted for redis-doomed")
    assert metric(env.meltemi, "meltemi_upstream_request_errors_total", doomed_host) <= 400
    # ... and none of that is a request error of the client's listener.
    assert metric(env.meltemi, "meltemi_upstream_request_errors_total",
                  "redis-cluster.redis") == 0
    assert env.meltemi.running()


# ---- step 7: faults ----------------------------------------------------------------------------

def test_blog_fault_half_of_gets_fail(mesh):
    env = mesh(policy=walkthrough("7-fault-injection"), workers=2)
    env.other.call("SET", "a", "a")
    r = redis_py(CLUSTER_VIP, env.other_port)
    p = r.pipeline(transaction=False)
    for _ in range(1000):
        p.get("a")
    replies = p.execute(raise_on_error=False)
    errors = [x for x in replies if isinstance(x, Exception)]
    assert all(str(e) == FAULT_TEXT for e in errors), {str(e) for e in errors}
    assert all(x == b"a" for x in replies if not isinstance(x, Exception))
    assert 400 <= len(errors) <= 600, f"{len(errors)} of 1000 GETs failed at 50%"
    # The fault names GET only: SET, MGET, PING are never hit.
    c = RespConn(CLUSTER_VIP, env.other_port)
    for i in range(200):
        assert c.call("SET", "b", str(i)) == b"OK"
        assert c.call("MGET", "a", "b") == [b"a", str(i).encode()]
        assert c.call("PING") == b"PONG"
    c.close()
    # Faulted GETs never reached Redis.
    assert env.other.cmd_calls("get") == 1000 - len(errors)


def test_blog_fault_transcript_with_redis_cli(mesh):
    env = mesh(policy=walkthrough("7-fault-injection"))
    env.other.call("SET", "a", "a")
    out = redis_cli(CLUSTER_VIP, env.other_port, stdin="get a\n" * 60)
    lines = cli_lines(out)
    assert len(lines) == 60 and set(lines) == {FAULT_TEXT, "a"}, out.stdout


FAULTS_ALL = """\
  faults:
  - type: ERROR
"""


def test_fault_without_commands_spares_auth_and_ping(mesh):
    env = mesh(policy=redis_service("  - route:\n      host: redis-cluster.redis.svc.cluster"
                                    ".local\n", faults=FAULTS_ALL))
    c = RespConn(CLUSTER_VIP, env.other_port)
    for cmd in (("SET", "a", "1"), ("GET", "a"), ("DEL", "a"), ("INCR", "n"), ("DBSIZE",)):
        assert c.call(*cmd) == FAULT_TEXT, cmd
    assert c.call("PING") == b"PONG"
    assert c.call("AUTH", "x").startswith("ERR AUTH")  # AUTH is answered, not faulted
    c.close()
    assert env.other.dbsize() == 0


FAULT_DELAY = """\
  faults:
  - type: DELAY
    delay: 0.3s
    commands:
    - GET
"""


def test_delay_fault_adds_at_least_the_configured_delay(mesh):
    env = mesh(policy=redis_service(TO_OTHER.replace("    route", "  - route"),
                                    faults=FAULT_DELAY))
    env.other.call("SET", "a", "slow")
    c = RespConn(CLUSTER_VIP, env.other_port)
    assert c.call("SET", "b", "1") == b"OK"
    for _ in range(3):
        t0 = time.monotonic()
        assert c.call("GET", "a") == b"slow"
        assert time.monotonic() - t0 >= 0.3
    c.close()


# ---- step 8: an external Redis -----------------------------------------------------------------

EXTERNAL_VIP = "127.0.0.14"


def external_service(vip, port, endpoints, slice_name="external-redis"):
    """Step 8's Service + EndpointSlice (examples/redis-walkthrough/8-external-redis, the
    blog's YAML plus a clusterIP and a local address) moved to this test's addresses:
    clusterIP vip, service port `port`, and the slice's endpoints [(address, port)] (one port
    for all: EndpointSlice ports are per slice)."""
    text = walkthrough("8-external-redis", "external-redis.yaml")
    text = text.replace("clusterIP: 127.0.0.21", f"clusterIP: {vip}", 1)
    text = text.replace("    port: 6379\n    targetPort: 6379", f"    port: {port}\n"
                        "    targetPort: 6379", 1)
    port_set = {p for _, p in endpoints}
    assert len(port_set) == 1
    text = text.replace("  port: 6379\n    protocol: TCP\nendpoints:",
                        f"  port: {port_set.pop()}\n    protocol: TCP\nendpoints:", 1)
    addrs = "".join(f"    - {a}\n" for a, _ in endpoints)
    text = re.sub(r"  - addresses:\n    - 127\.0\.0\.1 .*\n", f"  - addresses:\n{addrs}", text)
    text = text.replace("kind: EndpointSlice\nmetadata:\n  name: external-redis\n",
                        f"kind: EndpointSlice\nmetadata:\n  name: {slice_name}\n", 1)
    assert f"clusterIP: {vip}" in text and f"port: {port}" in text and "6379\n    protocol" \
        not in text, text
    return text


def test_external_redis_through_service_and_endpointslice(redis_factory, config_dir,
                                                          meltemi_factory):
    ext = redis_factory(name="external")
    port = free_port(EXTERNAL_VIP)
    conf = config_dir({"external-redis.yaml": external_service(
        EXTERNAL_VIP, port, [("127.0.0.1", ext.port)])})
    meltemi_factory(conf)
    out = redis_cli(EXTERNAL_VIP, port, stdin="set foo bar\nget foo\n")
    assert cli_lines(out) == ["OK", "bar"], out.stdout + out.stderr
    assert ext.client().get("foo") == b"bar"


def test_external_cluster_blog_steps_3_and_8(redis_cluster, config_dir, meltemi_factory):
    """Step 3's RedisDestination names external-redis (mode CLUSTER): with step 8's Service
    pointing at three cluster nodes, a plain client gets no MOVED."""
    port = free_port(EXTERNAL_VIP)
    nodes = [(n.host, n.port) for n in redis_cluster.nodes[:3]]
    # EndpointSlice ports are per slice: one slice per node, all for the one Service.
    slices = [external_service(EXTERNAL_VIP, port, [nodes[0]])]
    for i, node in enumerate(nodes[1:]):
        other = external_service(EXTERNAL_VIP, port, [node], slice_name=f"external-redis-{i}")
        slices.append(other.split("---\n", 1)[1])
    conf = config_dir({"external-redis.yaml": "---\n".join(slices),
                       "redis-destination.yaml": walkthrough("3-cluster-mode",
                                                             "redis-destination.yaml")})
    meltemi_factory(conf, workers=2)
    r = redis_py(EXTERNAL_VIP, port)
    for i in range(300):
        assert r.set(f"foo{i}", i) is True
    assert [r.get(f"foo{i}") for i in range(300)] == [str(i).encode() for i in range(300)]
    store = Store(cluster=redis_cluster)
    assert all(store.get(f"foo{i}") == str(i).encode() for i in range(0, 300, 17))
    out = redis_cli(EXTERNAL_VIP, port, "set", "foo", "bar")
    assert cli_lines(out) == ["OK"], out.stdout


# ---- the walk-through folders themselves -------------------------------------------------------

@pytest.mark.parametrize("step", sorted(p.name for p in WALK.iterdir() if p.is_dir()))
def test_every_walkthrough_folder_is_a_valid_configuration(step):
    done = run_meltemi("validate", WALK / step)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.match(r"ok: \d+ objects, 1 listeners|ok: \d+ objects, 2 listeners", done.stdout)
    assert (WALK / step / "README.md").is_file()


def test_the_walkthrough_has_the_eight_steps():
    steps = sorted(p.name for p in WALK.iterdir() if p.is_dir())
    assert [s.split("-")[0] for s in steps] == [str(i) for i in range(1, 9)]
    readme = (WALK / "README.md").read_text()
    assert all(f"]({s}/)" in readme for s in steps)
