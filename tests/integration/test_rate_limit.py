"""
test_rate_limit.py - MetaRouter localRateLimit with real peers: Dubbo (hessian.js provider,
dubbo2.js consumers and raw frames) and Thrift (the generated Python client and server).

The bucket is one number for the whole proxy: several clients on two workers share it. Every
assertion is token arithmetic, not timing: fillInterval is an hour, so a burst of N requests
gets exactly maxTokens answers from the provider and N - maxTokens native errors (Dubbo
status 100 SERVER_THREADPOOL_EXHAUSTED, Thrift TApplicationException INTERNAL_ERROR), and the
meltemi_rate_limited_total counter says the same. A condition's bucket is its own.
"""

import re
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import meta_env as me  # noqa: E402
import thrift_peers  # noqa: E402
from harness import VIP, free_port  # noqa: E402

DUBBO_HOST = "dubbo-hello.meta.svc.cluster.local"
THRIFT_HOST = "thrift-hello.meta.svc.cluster.local"
IFACE = "org.apache.dubbo.samples.basic.api.DemoService"
STATUS_OK = 20
STATUS_THREADPOOL_EXHAUSTED = 100


def rate_limited_total(meltemi):
    status, body = meltemi.http_get("/stats/prometheus")
    assert status == 200, body
    total = 0.0
    for ln in body.splitlines():
        m = re.match(r"^meltemi_rate_limited_total(\{[^}]*\})?\s+(\S+)", ln)
        if m:
            total += float(m.group(2))
    return total


def local_rate_limit(max_tokens, conditions=()):
    """spec.localRateLimit of a MetaRouter: a default bucket of max_tokens refilled one token
    an hour, and conditions [(attribute, exact value, max_tokens)]."""
    s = ("  localRateLimit:\n    tokenBucket: {maxTokens: %d, tokensPerFill: 1, fillInterval: 1h}\n"
         % max_tokens)
    if conditions:
        s += "    conditions:\n"
        for key, value, n in conditions:
            s += (f"    - match: {{attributes: {{{key}: {{exact: {value}}}}}}}\n"
                  f"      tokenBucket: {{maxTokens: {n}, fillInterval: 1h}}\n")
    return s


def router(name, host, routes_yaml, limit_yaml):
    return me.meta_router(name, host, routes_yaml) + limit_yaml


@pytest.fixture(scope="session")
def node_peers():
    reason = me.install_node_peers()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def dubbo_limited(tmp_path, node_peers, config_dir, meltemi_factory):
    """deploy(limit_yaml) -> env with one provider behind a rate-limited MetaRouter, meltemi
    on two workers; env.consumer() a dubbo2.js consumer, env.raw() a raw connection."""
    peers, consumers, raws = [], [], []

    def deploy(limit_yaml):
        port = free_port(VIP)
        p = me.DubboProvider(tmp_path / "peers", "v1", free_port())
        peers.append(p)
        provider = p.start()
        files = {
            "service-entry.yaml": me.service_entry("dubbo-hello", DUBBO_HOST, VIP, port,
                                                   "tcp-metaprotocol-dubbo-hello",
                                                   [("127.0.0.1", provider.port, {"version": "v1"})]),
            "meta-router.yaml": router("dubbo-hello", DUBBO_HOST,
                                       [me.route("all", [(DUBBO_HOST, None, None)])], limit_yaml),
        }
        meltemi = meltemi_factory(config_dir(files), workers=2)

        def consumer():
            c = me.DubboConsumer(tmp_path, f"{VIP}:{port}")
            consumers.append(c)
            return c

        def raw():
            r = me.DubboConn(VIP, port)
            raws.append(r)
            return r
        return type("Env", (), {"provider": provider, "meltemi": meltemi, "consumer": consumer,
                                "raw": raw})

    yield deploy
    for c in consumers:
        c.close()
    for r in raws:
        r.close()
    for p in peers:
        p.stop()


def test_dubbo_burst_from_several_consumers_gets_exactly_max_tokens(dubbo_limited):
    env = dubbo_limited(local_rate_limit(12))
    consumers = [env.consumer() for _ in range(3)]
    answers = [None] * 3

    def burst(i):
        answers[i] = consumers[i].call(IFACE, "sayHello", args=[f"c{i}-{{i}}"], n=10,
                                       concurrency=5)
    threads = [threading.Thread(target=burst, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    results = [r for a in answers for r in a["results"]]
    ok = [r for r in results if r["ok"]]
    refused = [r for r in results if not r["ok"]]
    assert len(results) == 30
    assert len(ok) == 12, f"{len(ok)} of 30 calls passed a 12-token bucket"
    assert all("rate limited" in r["error"] for r in refused), refused[:2]
    assert len(env.provider.records("request")) == 12, "refused calls never reach the provider"
    assert rate_limited_total(env.meltemi) == 18


def test_dubbo_refusal_is_a_native_status_and_the_connection_stays(dubbo_limited):
    env = dubbo_limited(local_rate_limit(2))
    r = env.raw()
    for i in range(5):
        r.send(me.dubbo_request(1000 + i, IFACE, "sayHello", args=[f"r{i}"]))
    frames = sorted((r.read_frame() for _ in range(5)), key=lambda f: f.id)
    assert [f.id for f in frames] == [1000, 1001, 1002, 1003, 1004]
    statuses = [f.status for f in frames]
    assert statuses.count(STATUS_OK) == 2, statuses
    assert statuses.count(STATUS_THREADPOOL_EXHAUSTED) == 3, statuses
    refused = [f for f in frames if f.status != STATUS_OK]
    assert all("rate limited" in f.text() for f in refused), refused[0].text()
    r.send(me.dubbo_heartbeat(7))  # heartbeats are not requests: never limited
    f = r.read_frame()
    assert f.is_event and (f.id, f.status) == (7, STATUS_OK)


def test_dubbo_condition_has_its_own_bucket(dubbo_limited):
    env = dubbo_limited(local_rate_limit(4, conditions=[("method", "sayBye", 2)]))
    c = env.consumer()
    bye = c.call(IFACE, "sayBye", n=6, concurrency=3)["results"]
    hello = c.call(IFACE, "sayHello", n=6, concurrency=3)["results"]
    assert sum(r["ok"] for r in bye) == 2, "sayBye: its condition's bucket of 2"
    assert sum(r["ok"] for r in hello) == 4, "sayHello: the default bucket of 4, untouched by sayBye"
    assert rate_limited_total(env.meltemi) == 6


@pytest.fixture(scope="session")
def thrift_gen(tmp_path_factory):
    return thrift_peers.generate(tmp_path_factory.mktemp("thrift-gen"))


def test_thrift_clients_share_the_bucket_and_get_tapplicationexception(
        tmp_path, thrift_gen, config_dir, meltemi_factory):
    from thrift.Thrift import TApplicationException
    port = free_port(VIP)
    server = me.ThriftServer(tmp_path / "peers", thrift_gen, "v1", free_port(), "binary", "framed")
    clients = []
    try:
        s = server.start()
        files = {
            "service-entry.yaml": me.service_entry("thrift-hello", THRIFT_HOST, VIP, port,
                                                   "tcp-metaprotocol-thrift-hello",
                                                   [("127.0.0.1", s.port, {"version": "v1"})]),
            "meta-router.yaml": router("thrift-hello", THRIFT_HOST,
                                       [me.route("all", [(THRIFT_HOST, None, None)])],
                                       local_rate_limit(7)),
        }
        meltemi = meltemi_factory(config_dir(files), workers=2)
        clients = [thrift_peers.Client(thrift_gen, VIP, port, "binary", "framed") for _ in range(4)]
        outcome = {"ok": 0, "limited": 0, "other": []}
        lock = threading.Lock()

        def burst(c, i):
            for j in range(5):
                try:
                    c.hello(f"c{i}-{j}")
                    key = "ok"
                except TApplicationException as e:
                    key = "limited" if (e.type == TApplicationException.INTERNAL_ERROR
                                        and "rate limited" in str(e.message)) else None
                    if key is None:
                        with lock:
                            outcome["other"].append(repr(e))
                        continue
                with lock:
                    outcome[key] += 1
        threads = [threading.Thread(target=burst, args=(c, i)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert outcome["other"] == []
        assert (outcome["ok"], outcome["limited"]) == (7, 13)
        assert len(s.records()) == 7
        assert rate_limited_total(meltemi) == 13
    finally:
        for c in clients:
            try:
                c.close()
            except Exception:
                pass
        server.stop()


# ---- DestinationRule consistentHash.useSourceIp (in this file for its Dubbo fixtures) -------

def test_dubbo_use_source_ip_sends_each_client_address_to_one_provider(
        tmp_path, node_peers, config_dir, meltemi_factory):
    """Twelve client addresses (127.0.0.101..112), five calls each over raw connections: every
    address's calls reach one provider, and the addresses spread over more than one."""
    import socket
    port = free_port(VIP)
    peers = [me.DubboProvider(tmp_path / "peers", f"p{i}", free_port()) for i in range(3)]
    raws = []
    try:
        provs = [p.start() for p in peers]
        files = {
            "service-entry.yaml": me.service_entry(
                "dubbo-hello", DUBBO_HOST, VIP, port, "tcp-metaprotocol-dubbo-hello",
                [("127.0.0.1", p.port, {"version": "v1"}) for p in provs]),
            "destination-rule.yaml": f"""\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: dubbo-hello, namespace: meta}}
spec:
  host: {DUBBO_HOST}
  trafficPolicy: {{loadBalancer: {{consistentHash: {{useSourceIp: true}}}}}}
""",
        }
        meltemi_factory(config_dir(files), workers=2)
        for a in range(12):
            r = me.DubboConn.__new__(me.DubboConn)
            r.sock = socket.create_connection((VIP, port), timeout=5,
                                              source_address=(f"127.0.0.{101 + a}", 0))
            r.buf = b""
            raws.append(r)
            for j in range(5):
                r.send(me.dubbo_request(a * 10 + j, IFACE, "sayHello", args=[f"src{a}"]))
            for _ in range(5):
                assert r.read_frame().status == STATUS_OK
        where = {}
        for i, p in enumerate(provs):
            for rec in p.records("request"):
                where.setdefault(rec["args"][0], []).append(i)
        assert sorted(where) == sorted(f"src{a}" for a in range(12))
        for src, got in where.items():
            assert len(got) == 5 and len(set(got)) == 1, f"{src} went to providers {got}"
        assert len({got[0] for got in where.values()}) > 1, "every address on one provider"
    finally:
        for r in raws:
            r.close()
        for p in peers:
            p.stop()
