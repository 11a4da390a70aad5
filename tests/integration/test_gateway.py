"""
test_gateway.py - gateway mode: an Istio Gateway whose servers are ports for traffic entering
from outside the mesh, and MetaRouter / RedisService `gateways` fields choosing which of
their rules apply there (Istio's rule for VirtualServices: none listed = the mesh only). Real
peers: a Node Dubbo provider driven by a dubbo2.js consumer, and redis-server driven by
redis-py, each reached both through the gateway port and through the mesh listener, which
must behave differently. The gateway binds 127.0.0.1 here (tests stay on loopback); a real
gateway leaves `bind` out (0.0.0.0).
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import configs  # noqa: E402
import meta_env as me  # noqa: E402
from harness import VIP, RespConn, RespError, free_port, run_meltemi  # noqa: E402

DUBBO_HOST = "dubbo-hello.meta.svc.cluster.local"
IFACE = "org.apache.dubbo.samples.basic.api.DemoService"
REDIS_HOST = "redis-single.redis.svc.cluster.local"


def gateway(name, namespace, servers):
    """servers: [(port, port_name, host)] -> an Istio Gateway bound to 127.0.0.1."""
    body = "".join(f"""\
  - port:
      number: {port}
      name: {pname}
      protocol: TCP
    bind: 127.0.0.1
    hosts:
    - {host}
""" for port, pname, host in servers)
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: {name}
  namespace: {namespace}
spec:
  selector:
    istio: ingressgateway
  servers:
""" + body


def with_gateways(yaml_text, gateways):
    return yaml_text.replace("spec:\n", "spec:\n  gateways:\n" +
                             "".join(f"  - {g}\n" for g in gateways), 1)


@pytest.fixture(scope="module")
def node_peers():
    reason = me.install_node_peers()
    if reason:
        pytest.skip(reason)


def test_dubbo_and_redis_through_a_gateway_port_get_the_gateways_rules(
        tmp_path, node_peers, redis_factory, config_dir, meltemi_factory):
    provider = me.DubboProvider(tmp_path / "peers", "v1", free_port()).start()
    redis = redis_factory()
    redis.client().set("k", "value")
    dport, rport = free_port(VIP), free_port(VIP)
    gw_dubbo, gw_redis = free_port(), free_port()
    files = {
        "dubbo.yaml": me.service_entry("dubbo-hello", DUBBO_HOST, VIP, dport,
                                       "tcp-metaprotocol-dubbo-hello",
                                       [("127.0.0.1", provider.port, {"version": "v1"})]),
        "redis.yaml": configs.service_entry("redis-single", VIP, rport, redis.port),
        # One Gateway in namespace meta, named by a MetaRouter in the same namespace by its
        # short name and by a RedisService in another namespace as meta/edge.
        "gateway.yaml": gateway("edge", "meta", [
            (gw_dubbo, "tcp-metaprotocol-dubbo-hello", DUBBO_HOST),
            (gw_redis, "tcp-redis", f"redis/{REDIS_HOST}")]),
        "router.yaml": with_gateways(me.meta_router("dubbo-edge", DUBBO_HOST, [
            me.route("via-edge", [(DUBBO_HOST, None, None)],
                     request_mutation={"x-entered-by": "gateway"})]), ["edge"]),
        "faults.yaml": configs.redis_get_fault("redis-edge", REDIS_HOST, gateways=["meta/edge"]),
    }
    conf = config_dir(files)
    v = run_meltemi("validate", conf)
    assert v.returncode == 0 and v.stdout.startswith("ok: ") and "4 listeners" in v.stdout, v
    m = meltemi_factory(conf, workers=1)
    consumers = []
    try:
        # Dubbo through the gateway: the gateway's MetaRouter mutates the request.
        c = me.DubboConsumer(tmp_path, f"127.0.0.1:{gw_dubbo}")
        consumers.append(c)
        got = c.call(IFACE, "sayHello", args=["g{i}"], n=3)
        assert all(r["ok"] for r in got["results"]), got
        assert all(r["value"]["attachments"].get("x-entered-by") == "gateway"
                   for r in got["results"]), got
        # The same service from inside the mesh: the MetaRouter does not apply.
        c2 = me.DubboConsumer(tmp_path, f"{VIP}:{dport}")
        consumers.append(c2)
        got = c2.call(IFACE, "sayHello", args=["m{i}"], n=3)
        assert all(r["ok"] for r in got["results"]), got
        assert not any("x-entered-by" in r["value"]["attachments"] for r in got["results"]), got

        # Redis through the gateway: the gateway's RedisService injects its fault.
        g = RespConn("127.0.0.1", gw_redis)
        assert g.call("GET", "k") == RespError("Fault Injected: Error")
        assert g.call("SET", "k2", "v2") == b"OK"
        g.close()
        mesh = RespConn(VIP, rport)
        assert mesh.call("GET", "k") == b"value"
        assert mesh.call("GET", "k2") == b"v2", "both listeners reach the same Redis"
        mesh.close()
    finally:
        for c in consumers:
            c.close()
        provider.stop()
    status, body = m.http_get("/stats/prometheus")
    assert f'listener="127.0.0.1:{gw_redis}"' in body and f'listener="127.0.0.1:{gw_dubbo}"' in body


BASE = {
    "redis.yaml": configs.service_entry("redis-single", VIP, 6379, 6390),
}


@pytest.mark.parametrize("extra, message", [
    ({"gw.yaml": gateway("edge", "redis", [(16379, "tcp-redis", "redis/*")])},
     "a wildcard host is not supported"),
    ({"gw.yaml": gateway("edge", "redis", [(16379, "tcp-redis", "redis/nowhere")])},
     'unknown service "nowhere.redis.svc.cluster.local"'),
    ({"gw.yaml": gateway("edge", "redis", [(16379, "tcp-redis", "redis-single")]).replace(
        "    bind: 127.0.0.1\n", "    bind: 127.0.0.1\n    tls:\n      mode: SIMPLE\n")},
     "a TLS listener needs serverCertificate and privateKey"),
    ({"rs.yaml": with_gateways("""\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: r
  namespace: redis
spec:
  host:
  - redis-single
""", ["edge"])}, 'unknown Gateway "edge" (looked for redis/edge)'),
])
def test_gateway_mistakes_are_errors_with_their_place(config_dir, extra, message):
    conf = config_dir({**BASE, **extra})
    r = run_meltemi("validate", conf)
    assert r.returncode == 1, r
    assert message in r.stderr, r.stderr
