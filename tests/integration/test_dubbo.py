"""
test_dubbo.py - Dubbo through meltemi with real peers in Node: a provider that decodes and
encodes Hessian2 with hessian.js (peers/node/provider.js) and dubbo2.js as the consumer
(peers/node/consumer.js, DirectlyDubbo on one connection). npm installs both from the
committed lockfile the first time (skipped with the reason only if the npm registry cannot be
reached). Byte-level checks (heartbeats, error statuses, garbage) use raw frames built here.

What a user of Aeraki's MetaRouter expects: weighted version split, routing by method,
interface and attachment, request mutation written into the attachments, mirroring, ring
hashing on an attachment, many calls multiplexed on one connection answered by id, a Dubbo
error status when no route matches, heartbeats answered, garbage refused without hurting
other clients, and a MetaRouter change applied live without closing the consumer's
connection.
"""

import sys
import threading
import time
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import meta_env as me  # noqa: E402
from harness import REPO, VIP, free_port, run_meltemi, wait_until  # noqa: E402

HOST = "dubbo-hello.meta.svc.cluster.local"
MIRROR_HOST = "dubbo-mirror.meta.svc.cluster.local"
MIRROR_VIP = "127.0.0.11"
PORT_NAME = "tcp-metaprotocol-dubbo-hello"
IFACE = "org.apache.dubbo.samples.basic.api.DemoService"
OTHER_IFACE = "org.apache.dubbo.samples.basic.api.GreetingService"

STATUS_OK = 20
STATUS_SERVICE_NOT_FOUND = 60


@pytest.fixture(scope="session")
def node_peers():
    reason = me.install_node_peers()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def dubbo_env(tmp_path, node_peers, config_dir, meltemi_factory):
    """deploy(versions=("v1", "v2"), routes=None, hash_key=None, mirror=False, subsets=True)
    -> env: a provider per version (labels version=<name>), a ServiceEntry whose listener is
    VIP:port, a DestinationRule with a subset per version, a MetaRouter with `routes` when
    given, meltemi in front. env.consumer() starts a dubbo2.js consumer on the listener;
    env.raw() opens a raw Dubbo connection."""
    peers, consumers, raws = [], [], []

    def deploy(versions=("v1", "v2"), routes=None, hash_key=None, mirror=False, subsets=True):
        env = types.SimpleNamespace(host=HOST, vip=VIP, port=free_port(VIP), providers={},
                                    mirror=None)
        for v in versions:
            p = me.DubboProvider(tmp_path / "peers", v, free_port())
            peers.append(p)
            env.providers[v] = p.start()
        files = {
            "service-entry.yaml": me.service_entry(
                "dubbo-hello", HOST, VIP, env.port, PORT_NAME,
                [("127.0.0.1", p.port, {"version": v}) for v, p in env.providers.items()]),
            "destination-rule.yaml": me.destination_rule(
                "dubbo-hello", HOST,
                subsets={v: {"version": v} for v in versions} if subsets else None,
                hash_key=hash_key),
        }
        if mirror:
            m = me.DubboProvider(tmp_path / "peers", "mirror", free_port())
            peers.append(m)
            env.mirror = m.start()
            files["mirror-service.yaml"] = me.service_entry(
                "dubbo-mirror", MIRROR_HOST, MIRROR_VIP, free_port(MIRROR_VIP), PORT_NAME,
                [("127.0.0.1", m.port, {"version": "mirror"})])
        if routes is not None:
            files["meta-router.yaml"] = me.meta_router("dubbo-hello", HOST, routes)
        env.conf = config_dir(files)
        env.meltemi = meltemi_factory(env.conf, workers=1)

        def consumer():
            c = me.DubboConsumer(tmp_path, f"{VIP}:{env.port}")
            consumers.append(c)
            return c

        def raw():
            r = me.DubboConn(VIP, env.port)
            raws.append(r)
            return r
        env.consumer, env.raw = consumer, raw
        return env

    yield deploy
    for c in consumers:
        c.close()
    for r in raws:
        r.close()
    for p in peers:
        p.stop()


def values(answer):
    """The provider replies of a consumer answer; fails on the first error."""
    bad = [r for r in answer["results"] if not r["ok"]]
    assert not bad, f"{len(bad)} calls failed, e.g. {bad[0]}"
    return [r["value"] for r in answer["results"]]


def requests(provider):
    return provider.records("request")


# ---- plain relaying ------------------------------------------------------------------------

def test_consumer_reaches_provider_with_attachments(dubbo_env):
    env = dubbo_env(versions=("v1",))
    c = env.consumer()
    got = values(c.call(IFACE, "sayHello", args=["bob"], attachments={"user": "alice"}, n=3))
    for v in got:
        assert (v["server"], v["interface"], v["method"], v["args"]) == ("v1", IFACE, "sayHello", ["bob"])
        assert v["attachments"]["user"] == "alice"
    recs = requests(env.providers["v1"])
    assert len(recs) == 3 and all(r["attachments"].get("user") == "alice" for r in recs)


def test_multiplexed_calls_are_answered_by_id(dubbo_env):
    """200 concurrent calls on one consumer connection: each gets its own reply."""
    env = dubbo_env(versions=("v1",))
    c = env.consumer()
    ans = c.call(IFACE, "sayHello", args=["req-{i}"], n=200, concurrency=50)
    got = values(ans)
    assert [v["args"][0] for v in got] == [f"req-{i}" for i in range(200)]
    assert ans["connects"] == 1 and ans["closes"] == 0


# ---- weighted split ----------------------------------------------------------------------

def test_weighted_split_20_80(dubbo_env):
    routes = [me.route("split", [(HOST, "v1", 20), (HOST, "v2", 80)])]
    env = dubbo_env(routes=routes)
    c = env.consumer()
    n = 1000
    served = [v["server"] for v in values(c.call(IFACE, "sayHello", args=["s{i}"], n=n,
                                                  concurrency=20))]
    # six split tests run per suite: 99.99% each keeps a false alarm under 0.1% a run
    lo, hi = me.binomial_bounds(n, 0.2, confidence=0.9999)
    v1 = served.count("v1")
    assert v1 + served.count("v2") == n, set(served)
    assert lo <= v1 <= hi, f"v1 served {v1}/{n}; a 20% split lands in [{lo}, {hi}] 99.99% of the time"
    assert len(requests(env.providers["v1"])) == v1
    assert len(requests(env.providers["v2"])) == n - v1


# ---- routing by method, interface, attachment ---------------------------------------------

def test_route_by_method(dubbo_env):
    routes = [me.route("bye-to-v2", [(HOST, "v2", None)], match={"method": {"exact": "sayBye"}}),
              me.route("rest-to-v1", [(HOST, "v1", None)])]
    env = dubbo_env(routes=routes)
    c = env.consumer()
    assert {v["server"] for v in values(c.call(IFACE, "sayHello", n=10))} == {"v1"}
    assert {v["server"] for v in values(c.call(IFACE, "sayBye", n=10))} == {"v2"}
    assert {r["method"] for r in requests(env.providers["v2"])} == {"sayBye"}


def test_route_by_attachment_and_interface(dubbo_env):
    routes = [
        me.route("alice", [(HOST, "v2", None)], match={"user": {"exact": "alice"}}),
        me.route("beta", [(HOST, "v2", None)], match={"user": {"prefix": "beta-"}}),
        me.route("tenant", [(HOST, "v2", None)], match={"tenant": {"regex": "^t[0-9]+$"}}),
        me.route("debug", [(HOST, "v2", None)], match={"x-debug": {}}),
        me.route("greeting", [(HOST, "v2", None)],
                 match={"interface": {"prefix": "org.apache.dubbo.samples.basic.api.Greet"}}),
        me.route("default", [(HOST, "v1", None)]),
    ]
    env = dubbo_env(routes=routes)
    c = env.consumer()
    cases = [
        (IFACE, {}, "v1"),
        (IFACE, {"user": "alice"}, "v2"), (IFACE, {"user": "alice2"}, "v1"),
        (IFACE, {"user": "bob"}, "v1"),
        (IFACE, {"user": "beta-ann"}, "v2"), (IFACE, {"user": "xbeta-"}, "v1"),
        (IFACE, {"tenant": "t7"}, "v2"), (IFACE, {"tenant": "t7x"}, "v1"),
        (IFACE, {"x-debug": "on"}, "v2"),
        (OTHER_IFACE, {}, "v2"),
    ]
    for iface, att, want in cases:
        v = values(c.call(iface, "sayHello", attachments=att))[0]
        assert v["server"] == want, f"{iface} {att} went to {v['server']}, want {want}"


# ---- mutation ------------------------------------------------------------------------------

def test_request_mutation_is_seen_by_the_provider(dubbo_env):
    routes = [me.route("mutate", [(HOST, "v1", None)],
                       request_mutation={"x-mesh": "meltemi", "user": "rewritten"})]
    env = dubbo_env(versions=("v1",), routes=routes)
    c = env.consumer()
    got = values(c.call(IFACE, "sayHello", args=["m{i}"], attachments={"user": "alice",
                                                                       "keep": "kept"}, n=5))
    for i, v in enumerate(got):
        assert v["args"] == [f"m{i}"], "the arguments pass unchanged"
        att = v["attachments"]
        assert att.get("x-mesh") == "meltemi", att
        assert att.get("user") == "rewritten", "a mutation replaces an existing attachment"
        assert att.get("keep") == "kept" and att.get("interface") == IFACE, att
    assert all(r["attachments"].get("x-mesh") == "meltemi" for r in requests(env.providers["v1"]))


# ---- mirror --------------------------------------------------------------------------------

def test_mirror_receives_calls_consumer_sees_primary(dubbo_env):
    routes = [me.route("mirrored", [(HOST, "v1", None)], mirror=(MIRROR_HOST, None),
                       mirror_pct=100)]
    env = dubbo_env(versions=("v1",), routes=routes, mirror=True)
    c = env.consumer()
    n = 30
    got = values(c.call(IFACE, "sayHello", args=["m{i}"], n=n, concurrency=5))
    assert [v["server"] for v in got] == ["v1"] * n, "the consumer sees only the primary"
    assert [v["args"][0] for v in got] == [f"m{i}" for i in range(n)]
    mirrored = env.mirror.wait_records(n, timeout=15, kind="request")
    assert sorted(r["args"][0] for r in mirrored) == sorted(f"m{i}" for i in range(n))
    assert all(r["interface"] == IFACE and r["method"] == "sayHello" for r in mirrored)


# ---- consistent hashing --------------------------------------------------------------------

def test_consistent_hash_on_attachment(dubbo_env):
    env = dubbo_env(versions=("a", "b", "c"), hash_key="user", subsets=False)
    consumers = [env.consumer(), env.consumer()]
    seen = {}
    for rnd in range(3):
        for i in range(24):
            key = f"user-{i}"
            v = values(consumers[(i + rnd) % 2].call(IFACE, "sayHello",
                                                       attachments={"user": key}))[0]
            seen.setdefault(key, set()).add(v["server"])
    spread = {k: s for k, s in seen.items() if len(s) != 1}
    assert not spread, f"keys served by more than one endpoint: {spread}"
    used = set().union(*seen.values())
    assert len(used) >= 2, f"24 keys all hashed to {used}: the ring does not spread keys"


# ---- native errors -------------------------------------------------------------------------

def test_no_route_is_a_dubbo_error_status(dubbo_env):
    routes = [me.route("hello-only", [(HOST, "v1", None)], match={"method": {"exact": "sayHello"}})]
    env = dubbo_env(routes=routes)
    raw = env.raw()
    raw.send(me.dubbo_request(41, IFACE, "sayBye", args=("x",)))
    f = raw.read_frame()
    assert not f.is_request and f.id == 41
    assert f.status == STATUS_SERVICE_NOT_FOUND, (f.status, f.text())
    # the connection stays usable
    raw.send(me.dubbo_request(42, IFACE, "sayHello", args=("y",)))
    f = raw.read_frame()
    assert (f.id, f.status) == (42, STATUS_OK), f.text()
    # dubbo2.js sees the error as a failed call, not a hang
    c = env.consumer()
    ans = c.call(IFACE, "sayBye")
    assert not ans["results"][0]["ok"], ans
    assert values(c.call(IFACE, "sayHello"))[0]["server"] == "v1"
    assert all(r["method"] == "sayHello" for p in env.providers.values() for r in requests(p))


# ---- heartbeats ----------------------------------------------------------------------------

def test_heartbeat_is_answered(dubbo_env):
    env = dubbo_env(versions=("v1",))
    raw = env.raw()
    raw.send(me.dubbo_heartbeat(7))
    f = raw.read_frame()
    assert f.is_event and not f.is_request, hex(f.flag)
    assert (f.id, f.status) == (7, STATUS_OK)
    # a call right after works on the same connection
    raw.send(me.dubbo_request(8, IFACE, "sayHello"))
    f = raw.read_frame()
    assert (f.id, f.status, f.is_event) == (8, STATUS_OK, False)


def test_heartbeat_is_answered_locally_without_upstream(dubbo_env):
    """meltemi answers heartbeats itself: the reply comes even with the provider gone."""
    env = dubbo_env(versions=("v1",))
    env.providers["v1"].stop()
    raw = env.raw()
    for i in range(3):
        raw.send(me.dubbo_heartbeat(100 + i))
        f = raw.read_frame()
        assert f.is_event and (f.id, f.status) == (100 + i, STATUS_OK), (f.id, f.status, hex(f.flag))


# ---- malformed input -----------------------------------------------------------------------

GARBAGE = {
    "bad-magic": b"\xca\xfe" + b"\x00" * 30,
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "oversize-body": b"\xda\xbb\xc2\x00" + b"\x00" * 7 + b"\x01" + b"\x7f\xff\xff\xff",
    "bad-hessian": (b"\xda\xbb\xc2\x00" + b"\x00" * 7 + b"\x02" + b"\x00\x00\x00\x08" +
                    b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8"),
}


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_malformed_frame_refused_good_consumer_unaffected(dubbo_env, garbage):
    env = dubbo_env(versions=("v1",))
    c = env.consumer()
    assert values(c.call(IFACE, "sayHello"))[0]["server"] == "v1"
    answers, stop = [], threading.Event()

    def loop():
        while not stop.is_set():
            answers.append(c.call(IFACE, "sayHello", args=["g{i}"], n=10, concurrency=5))

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        wait_until(lambda: len(answers) >= 2, 20, "the good consumer's first calls")
        bad = env.raw()
        bad.send(GARBAGE[garbage])
        outcome, frame = bad.outcome(timeout=5)
        before = len(answers)
        wait_until(lambda: len(answers) >= before + 3, 20, "good calls after the garbage")
    finally:
        stop.set()
        t.join(timeout=30)
    if outcome == "frame":
        assert not frame.is_request and frame.status != STATUS_OK, \
            f"garbage {garbage!r} got an OK answer: status {frame.status} {frame.text()!r}"
    else:
        assert outcome == "closed", f"garbage {garbage!r}: no error reply and no close within 5 s"
    for a in answers:
        values(a)  # every good call succeeded
        assert a["connects"] == 1 and a["closes"] == 0, "the good connection was not touched"
    assert env.meltemi.running()


# ---- hot reload ----------------------------------------------------------------------------

def test_metarouter_reload_changes_routing_keeps_connection(dubbo_env):
    env = dubbo_env(routes=[me.route("all", [(HOST, "v1", None)])])
    c = env.consumer()
    pid = env.meltemi.proc.pid
    assert {v["server"] for v in values(c.call(IFACE, "sayHello", n=10))} == {"v1"}
    gen = me.config_generation(env.meltemi)
    me.write_atomically(env.conf / "meta-router.yaml",
                        me.meta_router("dubbo-hello", HOST, [me.route("all", [(HOST, "v2", None)])]))
    me.wait_generation_after(env.meltemi, gen)
    deadline = time.monotonic() + 10
    while values(c.call(IFACE, "sayHello"))[0]["server"] != "v2":
        assert time.monotonic() < deadline, "routing did not change within 10 s of the reload"
    ans = c.call(IFACE, "sayHello", n=20)
    assert {v["server"] for v in values(ans)} == {"v2"}, "the new route is stable"
    assert (ans["connects"], ans["closes"]) == (1, 0), "the consumer's connection stayed open"
    assert env.meltemi.proc.pid == pid and env.meltemi.running()


# ---- the example stays valid -----------------------------------------------------------------

def test_example_config_validates(meltemi_binary):
    r = run_meltemi("validate", REPO / "examples" / "dubbo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 listeners" in r.stdout, r.stdout
