"""
test_meta_route_policies.py - MetaRouter route `timeout` and `fault.abort` (meltemi's
extensions, Istio VirtualService names) with a real Dubbo provider (hessian.js) and raw
Dubbo frames: an aborted route answers the codec's error for its share of requests and the
provider never sees them; a route timeout answers Dubbo SERVER_TIMEOUT long before the
listener's 5 s default, against a peer that accepts and never answers; retries
(retryOn connect-failure) send a call whose endpoint refuses connections to the live one,
and without retries that call fails.
"""

import re
import socket
import struct
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import meta_env as me  # noqa: E402
from harness import VIP, free_port  # noqa: E402

HOST = "dubbo-hello.meta.svc.cluster.local"
IFACE = "org.apache.dubbo.samples.basic.api.DemoService"
STATUS_OK = 20
STATUS_SERVER_TIMEOUT = 31
STATUS_THREADPOOL_EXHAUSTED = 100


@pytest.fixture(scope="session")
def node_peers():
    reason = me.install_node_peers()
    if reason:
        pytest.skip(reason)


def router(extra_bye):
    return f"""\
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {{name: dubbo-hello, namespace: meta}}
spec:
  hosts: [{HOST}]
  routes:
  - name: bye
    match: {{attributes: {{method: {{exact: sayBye}}}}}}
    route: [{{destination: {{host: {HOST}}}}}]
{extra_bye}
  - name: rest
    route: [{{destination: {{host: {HOST}}}}}]
"""


def deploy(config_dir, meltemi_factory, upstream_port, extra_bye):
    port = free_port(VIP)
    files = {
        "service-entry.yaml": me.service_entry("dubbo-hello", HOST, VIP, port,
                                               "tcp-metaprotocol-dubbo-hello",
                                               [("127.0.0.1", upstream_port, {"version": "v1"})]),
        "meta-router.yaml": router(extra_bye),
    }
    meltemi_factory(config_dir(files))
    return port


def test_fault_abort_answers_its_share_with_the_codec_error(tmp_path, node_peers, config_dir,
                                                            meltemi_factory):
    p = me.DubboProvider(tmp_path / "peers", "v1", free_port())
    try:
        p.start()
        port = deploy(config_dir, meltemi_factory, p.port,
                      "    fault: {abort: {percentage: {value: 50}, errorCode: 429}}")
        r = me.DubboConn(VIP, port)
        n = 400
        for i in range(n):
            r.send(me.dubbo_request(i, IFACE, "sayBye", args=[f"b{i}"]))
        frames = [r.read_frame() for _ in range(n)]
        aborted = [f for f in frames if f.status == STATUS_THREADPOOL_EXHAUSTED]
        ok = [f for f in frames if f.status == STATUS_OK]
        assert len(aborted) + len(ok) == n
        assert all("fault injected (route bye)" in f.text() for f in aborted)
        lo, hi = me.binomial_bounds(n, 0.5, confidence=0.9999)
        assert lo <= len(aborted) <= hi, f"{len(aborted)} of {n} aborted at 50%"
        assert len(p.records("request")) == len(ok), "aborted calls never reach the provider"
        r.send(me.dubbo_request(9999, IFACE, "sayHello"))
        f = r.read_frame()
        assert (f.id, f.status) == (9999, STATUS_OK), "other routes are not aborted"
        r.close()
    finally:
        p.stop()


def test_route_timeout_answers_before_the_listener_default(config_dir, meltemi_factory):
    """The upstream accepts and reads but never answers (a hung provider)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns, stop = [], threading.Event()

    def blackhole():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                conns.append(c)
            except socket.timeout:
                pass
    t = threading.Thread(target=blackhole, daemon=True)
    t.start()
    try:
        port = deploy(config_dir, meltemi_factory, srv.getsockname()[1], "    timeout: 300ms")
        r = me.DubboConn(VIP, port, timeout=3.0)  # the listener's default would be 5 s
        r.send(me.dubbo_request(5, IFACE, "sayBye"))
        f = r.read_frame()
        assert (f.id, f.status) == (5, STATUS_SERVER_TIMEOUT), f.text()
        assert "timed out" in f.text()
        r.close()
    finally:
        stop.set()
        t.join(timeout=5)
        for c in conns:
            c.close()
        srv.close()


def retry_router(retries):
    return f"""\
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {{name: dubbo-hello, namespace: meta}}
spec:
  hosts: [{HOST}]
  routes:
  - name: all
    route: [{{destination: {{host: {HOST}}}}}]
{retries}"""


def retries_total(m):
    _, body = m.http_get("/stats/prometheus")
    return sum(float(v) for v in re.findall(
        r"^meltemi_upstream_request_retries_total\{[^}]*\} (\S+)$", body, re.M))


@pytest.mark.parametrize("retries", [True, False], ids=["retries", "no-retries"])
def test_connect_failure_is_retried_on_the_other_endpoint(tmp_path, node_peers, config_dir,
                                                          meltemi_factory, retries):
    """Endpoint 0 refuses connections (nothing listens on its port), endpoint 1 is a real
    provider. Round robin sends one of the first two calls to endpoint 0 (no backoff yet)."""
    p = me.DubboProvider(tmp_path / "peers", "live", free_port())
    try:
        p.start()
        dead_port = free_port()
        port = free_port(VIP)
        files = {
            "service-entry.yaml": me.service_entry(
                "dubbo-hello", HOST, VIP, port, "tcp-metaprotocol-dubbo-hello",
                [("127.0.0.1", dead_port, {"version": "v1"}),
                 ("127.0.0.1", p.port, {"version": "v1"})]),
            "meta-router.yaml": retry_router(
                "    retries: {attempts: 2, retryOn: connect-failure}\n" if retries else ""),
        }
        m = meltemi_factory(config_dir(files))
        r = me.DubboConn(VIP, port)
        statuses = []
        for i in range(20):
            r.send(me.dubbo_request(i, IFACE, "sayHello", args=[f"r{i}"]))
            statuses.append(r.read_frame().status)
        r.close()
        if retries:
            assert statuses == [STATUS_OK] * 20, statuses
            assert retries_total(m) >= 1
            assert len(p.records("request")) == 20
        else:
            assert statuses.count(STATUS_OK) < 20, "a call to the refusing endpoint fails"
            assert retries_total(m) == 0
    finally:
        p.stop()


def test_fault_delay_holds_the_request_and_lets_others_pass(tmp_path, node_peers, config_dir,
                                                            meltemi_factory):
    """sayBye is held 2 s before it is forwarded; a sayHello sent after it on the same
    connection is answered first and reaches the provider first (an order, not a timing)."""
    p = me.DubboProvider(tmp_path / "peers", "v1", free_port())
    try:
        p.start()
        port = deploy(config_dir, meltemi_factory, p.port, "    fault: {delay: {fixedDelay: 2s}}")
        r = me.DubboConn(VIP, port, timeout=10.0)
        r.send(me.dubbo_request(1, IFACE, "sayBye", args=["held"]))
        r.send(me.dubbo_request(2, IFACE, "sayHello", args=["passes"]))
        first, second = r.read_frame(), r.read_frame()
        assert (first.id, first.status) == (2, STATUS_OK)
        assert (second.id, second.status) == (1, STATUS_OK), second.text()
        assert [x["args"][0] for x in p.records("request")] == ["passes", "held"]
        r.close()
        # a client that resets its connection while a request of it is held: meltemi drops
        # the request (or, when the kernel reports the reset as EOF, answers it as for a
        # half-close); either way it keeps serving, and the teardown checks a clean exit
        gone = me.DubboConn(VIP, port)
        gone.send(me.dubbo_request(30, IFACE, "sayHello", args=["accepted"]))
        assert gone.read_frame().status == STATUS_OK
        gone.send(me.dubbo_request(3, IFACE, "sayBye", args=["abandoned"]))
        gone.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()
        r = me.DubboConn(VIP, port, timeout=10.0)
        r.send(me.dubbo_request(4, IFACE, "sayBye", args=["later"]))
        f = r.read_frame()
        assert (f.id, f.status) == (4, STATUS_OK)
        r.close()
    finally:
        p.stop()
