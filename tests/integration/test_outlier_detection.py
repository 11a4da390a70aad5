"""
test_outlier_detection.py - DestinationRule outlierDetection with real Dubbo peers
(hessian.js providers, the dubbo2.js consumer): one of three providers is killed; the calls
routed to it fail until consecutive5xxErrors gateway errors in a row eject it, after which
no call fails and the two others serve everything; /clusters and
meltemi_outlier_ejections_total show the ejection; once the provider is back and the
ejection time is over it serves again. Every wait is bounded; no assertion is on timing:
the failure count is exact (each one is a refused connect to the dead provider, and the
third ejects it).
"""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import meta_env as me  # noqa: E402
from harness import VIP, free_port, wait_until  # noqa: E402

HOST = "dubbo-hello.meta.svc.cluster.local"
IFACE = "org.apache.dubbo.samples.basic.api.DemoService"
THRESHOLD = 3


@pytest.fixture(scope="session")
def node_peers():
    reason = me.install_node_peers()
    if reason:
        pytest.skip(reason)


def destination_rule():
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: dubbo-hello, namespace: meta}}
spec:
  host: {HOST}
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: {THRESHOLD}
      interval: 1s
      baseEjectionTime: 2s
      maxEjectionPercent: 50
"""


def clusters(m):
    status, body = m.http_get("/clusters")
    assert status == 200, body
    return body


def ejected(m, port):
    return f"127.0.0.1:{port}::outlier_ejected::true" in clusters(m)


def ejections_total(m):
    _, body = m.http_get("/stats/prometheus")
    return sum(float(v) for v in re.findall(
        r"^meltemi_outlier_ejections_total\{[^}]*\} (\S+)$", body, re.M))


def test_a_killed_provider_is_ejected_then_returns(tmp_path, node_peers, config_dir,
                                                   meltemi_factory):
    peers = [me.DubboProvider(tmp_path / "peers", f"p{i}", free_port()) for i in range(3)]
    consumer = None
    try:
        for p in peers:
            p.start()
        port = free_port(VIP)
        files = {
            "service-entry.yaml": me.service_entry(
                "dubbo-hello", HOST, VIP, port, "tcp-metaprotocol-dubbo-hello",
                [("127.0.0.1", p.port, {"version": "v1"}) for p in peers]),
            "destination-rule.yaml": destination_rule(),
        }
        m = meltemi_factory(config_dir(files), workers=2)
        consumer = me.DubboConsumer(tmp_path, f"{VIP}:{port}")
        first = consumer.call(IFACE, "sayHello", n=30)["results"]
        assert all(r["ok"] for r in first)
        assert {r["value"]["server"] for r in first} == {"p0", "p1", "p2"}

        dead = peers[2]
        dead.stop()
        failed, batches = 0, 0
        while not ejected(m, dead.port):  # bounded: 200 batches of 10 calls
            batches += 1
            assert batches <= 200, f"not ejected after {failed} failures:\n{clusters(m)}"
            res = consumer.call(IFACE, "sayHello", n=10)["results"]
            failed += sum(not r["ok"] for r in res)
        assert failed == THRESHOLD, f"{failed} calls failed before the ejection"
        assert ejections_total(m) == 1

        after = consumer.call(IFACE, "sayHello", n=300, concurrency=4)["results"]
        assert sum(not r["ok"] for r in after) == 0, "calls failed after the ejection"
        assert {r["value"]["server"] for r in after} == {"p0", "p1"}

        dead.start()  # same port: the endpoint comes back
        served = []

        def back():
            res = consumer.call(IFACE, "sayHello", n=6)["results"]
            served.extend(r["value"]["server"] for r in res if r["ok"])
            return "p2" in served
        wait_until(back, 30, "the returned provider serves again after its ejection")
        assert not ejected(m, dead.port)
    finally:
        if consumer:
            consumer.close()
        for p in peers:
            p.stop()
