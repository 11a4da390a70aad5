"""
test_metrics.py - Istio's standard metrics as a Prometheus server scrapes them from a meltemi
that served Redis (one server and a Redis Cluster), Dubbo and Thrift: every reply counted,
local ones (PING, refusals, errors made by meltemi) included, with Istio's labels; byte and
connection counters equal to what the clients sent and received; `promtool check metrics`
clean but for its remark on Istio's own name istio_request_duration_milliseconds; /metrics
serving the same as /stats/prometheus.
"""

import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import configs
from cluster_fixtures import CLUSTER_VIP, cluster_proxy, redis_cluster, shared_cluster  # noqa: F401
from harness import VIP, RespConn, RespError, free_port, resp_encode, wait_until
from prom import Metrics

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import meta_env as me  # noqa: E402
from test_dubbo import HOST as DUBBO_HOST, IFACE, dubbo_env, node_peers  # noqa: E402,F401
from test_thrift import HOST as THRIFT_HOST, thrift_env, thrift_gen  # noqa: E402,F401

ISTIO_LABELS = {"reporter", "source_workload", "source_workload_namespace", "source_principal",
                "destination_workload", "destination_service", "destination_service_name",
                "destination_service_namespace", "destination_version", "request_protocol",
                "response_code", "response_flags", "connection_security_policy"}


def scrape(meltemi, path="/stats/prometheus"):
    status, text = meltemi.http_get(path)
    assert status == 200, text
    return Metrics(text), text


def test_redis_every_reply_counted_with_istio_labels(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    sent = received = 0
    commands = [("SET", "k", "v")] + [("GET", "k")] * 5 + [("PING",)] * 3 + \
               [("NOSUCHCOMMAND", "x")] * 2 + [("GET",)]  # unknown twice, wrong arity once
    replies = []
    for cmd in commands:
        frame = resp_encode(*cmd)
        sent += len(frame)
        before = len(c.buf)
        c.send_raw(frame)
        replies.append(c.read_reply())
        received += 0 if before else 0
    c.close()
    errors = [r for r in replies if isinstance(r, RespError)]
    assert len(errors) == 3, replies

    def settled():
        m, _ = scrape(env.meltemi)
        return m if m.sum("istio_tcp_connections_closed_total",
                          request_protocol="redis") >= 1 else None
    m = wait_until(settled, 10, "the connection counted closed")
    total = m.sum("istio_requests_total", request_protocol="redis")
    assert total == len(commands)
    ok = m.select("istio_requests_total", request_protocol="redis", response_code="OK")
    assert sum(v for _, v in ok) == len(commands) - 3
    assert m.sum("istio_requests_total", request_protocol="redis", response_code="ERR") == 3
    lb = ok[0][0]
    assert set(lb) == ISTIO_LABELS
    assert lb["reporter"] == "source"
    assert lb["destination_service"] == configs.HOST
    assert lb["destination_service_name"] == "redis-single"
    assert lb["destination_service_namespace"] == "redis"
    assert lb["response_flags"] == "-"
    # the histogram counts every reply, local ones included
    assert m.sum("istio_request_duration_milliseconds_count", request_protocol="redis") == \
        len(commands)
    inf = m.sum("istio_request_duration_milliseconds_bucket", request_protocol="redis",
                le="+Inf")
    assert inf == len(commands)
    assert m.sum("istio_request_bytes_sum", request_protocol="redis") == sent
    assert m.sum("istio_request_bytes_count", request_protocol="redis") == len(commands)
    assert m.sum("istio_tcp_received_bytes_total", request_protocol="redis") == sent
    resp = m.sum("istio_response_bytes_sum", request_protocol="redis")
    assert resp > 0
    assert m.sum("istio_tcp_sent_bytes_total", request_protocol="redis") == resp
    assert m.sum("istio_tcp_connections_opened_total", request_protocol="redis") >= 1
    # the per-command detail stays in meltemi's own families, not in Istio's labels
    assert "command" not in lb


def test_redis_refusals_carry_envoy_flags(blog_env):
    env = blog_env(step=1)
    env.redis.kill()  # the upstream is gone: commands are answered by meltemi
    c = RespConn(env.host, env.port)
    for _ in range(4):
        assert isinstance(c.call("GET", "k"), RespError)
    c.close()
    m, _ = scrape(env.meltemi)
    flagged = m.sum("istio_requests_total", request_protocol="redis", response_code="ERR",
                    response_flags="UF")
    assert flagged == 4, [s for s in m.samples if s[0] == "istio_requests_total"]
    assert m.sum("istio_request_duration_milliseconds_count", response_flags="UF") == 4


def test_redis_cluster_counts_every_command(redis_cluster, cluster_proxy):  # noqa: F811
    env = cluster_proxy(redis_cluster, workers=2)
    c = RespConn(env.host, env.port)
    n = 0
    for i in range(30):
        assert c.call("SET", f"key{i}", "v") == b"OK"
        n += 1
    assert len(c.call("MGET", "key1", "key2", "key3")) == 3  # split over slots: one request
    n += 1
    assert c.call("PING") == b"PONG"
    n += 1
    c.close()
    m, _ = scrape(env.meltemi)
    assert m.sum("istio_requests_total", request_protocol="redis") == n
    assert m.sum("istio_requests_total", request_protocol="redis", response_code="OK") == n
    assert m.sum("istio_request_duration_milliseconds_count", request_protocol="redis") == n
    # the slot map was learnt (a refresh per worker), nothing was redirected
    assert m.sum("meltemi_redis_cluster_events_total", event="refresh") >= 1
    assert m.sum("meltemi_redis_cluster_events_total", event="moved") == 0


def test_dubbo_calls_and_local_errors(dubbo_env):
    env = dubbo_env(versions=("v1",), routes=[me.route("only-sayhello", [(DUBBO_HOST, "v1", 100)],
                                                       match={"method": {"exact": "sayHello"}})])
    c = env.consumer()
    answer = c.call(IFACE, "sayHello", n=6)
    assert all(r["ok"] for r in answer["results"]), answer
    raw = env.raw()
    raw.send(me.dubbo_request(7, IFACE, "noRouteForThis"))
    frame = raw.read_frame()
    assert frame.status == 60  # SERVICE_NOT_FOUND, made by meltemi
    m, text = scrape(env.meltemi)
    assert m.sum("istio_requests_total", request_protocol="dubbo", response_code="20") == 6, text
    nr = m.select("istio_requests_total", request_protocol="dubbo", response_code="60")
    assert sum(v for _, v in nr) == 1
    assert nr[0][0]["response_flags"] == "NR"
    assert m.sum("istio_request_duration_milliseconds_count", request_protocol="dubbo") == 7
    ok = m.select("istio_requests_total", request_protocol="dubbo", response_code="20")[0][0]
    assert ok["destination_version"] == "v1"
    assert ok["destination_service"] == DUBBO_HOST


def test_redis_client_gone_before_the_reply_is_dc(blog_env):
    """A command whose client leaves before its reply ends as Envoy's DC, response_code "0",
    counted once (when the client's connection closes), not lost and not counted again when
    the upstream's reply comes to nobody."""
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    assert c.call("PING") == b"PONG"
    c.send_raw(resp_encode("BLPOP", "observe2-empty-list", "1"))  # Redis answers in 1 s
    time.sleep(0.2)  # meltemi has read and sent it (no assertion on the time)
    c.close()

    def dc_counted():
        m, _ = scrape(env.meltemi)
        return m if m.sum("istio_requests_total", response_flags="DC") >= 1 else None
    m = wait_until(dc_counted, 10, "the request counted DC")
    dc = m.select("istio_requests_total", request_protocol="redis", response_flags="DC")
    assert [lb["response_code"] for lb, _ in dc] == ["0"], dc
    assert sum(v for _, v in dc) == 1
    time.sleep(1.2)  # BLPOP's timeout: its nil reply reaches meltemi for a client gone
    m, _ = scrape(env.meltemi)
    assert m.sum("istio_requests_total", request_protocol="redis") == 2
    assert m.sum("istio_request_duration_milliseconds_count", request_protocol="redis") == 2


def test_thrift_client_gone_before_the_reply_is_dc(thrift_env):
    env = thrift_env(("binary", "framed"), versions=("v1",))
    cl = env.client()
    assert cl.greet("ok").arg == "ok"
    cl.client.send_greet("slow")  # the server answers in 1 s; the client does not wait
    time.sleep(0.2)
    # a reset, not a FIN: after a half-close meltemi still delivers what the client asked for
    cl.sock.handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    cl.close()

    def dc_counted():
        m, _ = scrape(env.meltemi)
        return m if m.sum("istio_requests_total", response_flags="DC") >= 1 else None
    m = wait_until(dc_counted, 10, "the call counted DC")
    dc = m.select("istio_requests_total", request_protocol="thrift", response_flags="DC")
    assert [lb["response_code"] for lb, _ in dc] == ["0"], dc
    time.sleep(1.2)
    m, _ = scrape(env.meltemi)
    assert m.sum("istio_requests_total", request_protocol="thrift") == 2


def thrift_raw_call(cl, name, seq):
    """Calls method `name` (any name, with no arguments) on a thrift_peers.Client's
    connection; returns the reply's message type (2 REPLY, 3 EXCEPTION)."""
    from thrift.Thrift import TApplicationException, TMessageType
    p = cl.prot
    p.writeMessageBegin(name, TMessageType.CALL, seq)
    p.writeStructBegin("args")
    p.writeFieldStop()
    p.writeStructEnd()
    p.writeMessageEnd()
    p.trans.flush()
    _, mtype, _ = p.readMessageBegin()
    if mtype == TMessageType.EXCEPTION:
        TApplicationException().read(p)
    else:
        p.skip(12)  # TType.STRUCT
    p.readMessageEnd()
    return mtype


def test_meta_method_counts_are_bounded(thrift_env):
    """meltemi_meta_method_*: per listener and method, for the first 32 method names a
    listener sees; every later name is counted as "other" (names come from clients)."""
    env = thrift_env(("binary", "framed"), versions=("v1",))
    cl = env.client()
    for i in range(3):
        assert cl.hello(f"h{i}").arg == f"h{i}"
    for i in range(2):
        assert cl.greet(f"g{i}").arg == f"g{i}"
    for i in range(40):  # the server knows none of these: each is an UNKNOWN_METHOD reply
        assert thrift_raw_call(cl, f"m{i}", 100 + i) == 3
    m, text = scrape(env.meltemi)
    series = {lb["method"]: v for lb, v in m.select("meltemi_meta_method_total")}
    assert series["hello"] == 3 and series["greet"] == 2, series
    named = {k for k in series if k != "other"}
    assert len(named) == 32, sorted(named)
    assert {f"m{i}" for i in range(30)} <= named
    assert series["other"] == 10  # m30 .. m39
    errors = {lb["method"]: v for lb, v in m.select("meltemi_meta_method_errors_total")}
    assert errors["hello"] == 0 and errors["m0"] == 1 and errors["other"] == 10
    assert all(lb["listener"] for lb, _ in m.select("meltemi_meta_method_total"))


class SilentServer:
    """Accepts connections and never says anything: an upstream whose TLS handshake never
    completes, so meltemi's connection to it stays connecting."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def hang_up(self):
        """Close what was accepted and stop listening, so that a reconnect is refused too
        (the accept thread may not have taken the connection off the backlog yet: wait)."""
        wait_until(lambda: self.conns, 10, "the silent server to accept a connection")
        self.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.conns = []


def test_pending_gauge_counts_requests_waiting_for_a_connection(tmp_path, config_dir,
                                                                meltemi_factory):
    """meltemi_upstream_requests_pending: client requests queued on an upstream connection
    that is still connecting (here its TLS handshake never ends), back to 0 once it closes."""
    from tls_certs import Ca
    ca = Ca(tmp_path / "pki")
    silent = SilentServer()
    try:
        port = free_port(VIP)
        files = {
            "se.yaml": configs.service_entry("redis-single", VIP, port, silent.port),
            "dr.yaml": f"""\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: redis-single
  namespace: redis
spec:
  host: {configs.HOST}
  trafficPolicy:
    connectionPool:
      tcp:
        connectTimeout: 30s
    tls:
      mode: SIMPLE
      caCertificates: {ca.cert}
""",
        }
        m = meltemi_factory(config_dir(files), workers=1)
        c = RespConn(VIP, port)
        c.send_raw(resp_encode("GET", "a") + resp_encode("GET", "b") + resp_encode("GET", "c"))

        def pending(n):
            def check():
                got, _ = scrape(m)
                return got if got.sum("meltemi_upstream_requests_pending") == n else None
            return check
        got = wait_until(pending(3), 10, "three requests pending")
        active = [ln for ln in scrape(m)[1].splitlines()
                  if ln.startswith("meltemi_upstream_connections")]
        assert got.sum("meltemi_upstream_connections_active") == 0, active  # none is connected
        silent.hang_up()  # the handshake fails: the requests fail, nothing waits any more
        wait_until(pending(0), 10, "no request pending")
        assert all(isinstance(c.read_reply(), RespError) for _ in range(3))
        c.close()
    finally:
        silent.close()


@pytest.mark.parametrize("wire", [("binary", "framed")], ids=["binary-framed"])
def test_thrift_calls_counted(thrift_env, wire):
    env = thrift_env(wire, versions=("v1",))
    cl = env.client()
    for i in range(5):
        assert cl.hello(f"h{i}").arg == f"h{i}"
    m, text = scrape(env.meltemi)
    assert m.sum("istio_requests_total", request_protocol="thrift", response_code="OK") == 5, text
    assert m.sum("istio_request_duration_milliseconds_count", request_protocol="thrift") == 5
    assert m.sum("istio_tcp_connections_opened_total", request_protocol="thrift") >= 1


@pytest.mark.parametrize("wire", [("binary", "framed"), ("compact", "buffered")],
                         ids=["binary-framed", "compact-buffered"])
def test_thrift_exceptions_named_by_their_type(thrift_env, wire):
    """An upstream's TApplicationException and meltemi's own are counted by the exception's
    type (Apache Thrift's name), not as one EXCEPTION code."""
    from thrift.Thrift import TApplicationException
    routes = [me.route("greet-only", [(THRIFT_HOST, "v1", None)],
                       match={"method": {"exact": "greet"}})]
    env = thrift_env(wire, versions=("v1",), routes=routes)
    cl = env.client()
    assert cl.greet("ok").arg == "ok"
    for _ in range(2):  # the server's handler raises: INTERNAL_ERROR from upstream
        with pytest.raises(TApplicationException) as ei:
            cl.greet("raise")
        assert ei.value.type == TApplicationException.INTERNAL_ERROR
    with pytest.raises(TApplicationException) as ei:  # no route: meltemi's own answer
        cl.hello("nowhere")
    assert ei.value.type == TApplicationException.UNKNOWN_METHOD
    m, text = scrape(env.meltemi)
    assert m.sum("istio_requests_total", request_protocol="thrift", response_code="OK") == 1, text
    assert m.sum("istio_requests_total", request_protocol="thrift",
                 response_code="INTERNAL_ERROR") == 2, text
    local = m.select("istio_requests_total", request_protocol="thrift",
                     response_code="UNKNOWN_METHOD")
    assert sum(v for _, v in local) == 1, text
    assert local[0][0]["response_flags"] == "NR"
    assert m.sum("istio_requests_total", request_protocol="thrift",
                 response_code="EXCEPTION") == 0, text


def test_metrics_path_and_promtool(blog_env, tmp_path):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    assert c.call("PING") == b"PONG"
    assert c.call("SET", "a", "b") == b"OK"
    c.close()
    status, metrics_text = env.meltemi.http_get("/metrics")
    assert status == 200
    Metrics(metrics_text)  # parses, no duplicate series, every sample has a TYPE
    _, stats_text = scrape(env.meltemi)
    # The same families, HELP and TYPE in the same order (values move between two scrapes:
    # the client's close may land between them, and process gauges change)
    families = lambda t: [ln for ln in t.splitlines() if ln.startswith("#")]  # noqa: E731
    assert families(metrics_text) == families(stats_text)
    assert len(families(stats_text)) > 40
    m = Metrics(stats_text)
    assert m.sum("process_open_fds") > 3 and m.sum("process_resident_memory_bytes") > 1 << 20
    assert m.sum("process_cpu_seconds_total") > 0
    assert abs(m.sum("process_start_time_seconds") - m.sum("meltemi_start_time_seconds")) < 2
    assert len(m.select("meltemi_build_info")) == 1
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    p = subprocess.run([promtool, "check", "metrics"], input=stats_text, capture_output=True,
                       text=True, timeout=30)
    remarks = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    # the one remark left: Istio's own name, kept for its dashboards
    assert remarks == ['istio_request_duration_milliseconds use base unit "seconds" instead of '
                       '"milliseconds"'], remarks


def test_workload_identity_from_flags(blog_env):
    env = blog_env(step=1, extra_args=("--workload", "checkout", "--namespace", "shop"))
    c = RespConn(env.host, env.port)
    assert c.call("PING") == b"PONG"
    c.close()
    m, _ = scrape(env.meltemi)
    (lb, v), = m.select("istio_requests_total", request_protocol="redis")
    assert (lb["source_workload"], lb["source_workload_namespace"], v) == ("checkout", "shop", 1)
    status, body = env.meltemi.http_get("/server_info")
    assert status == 200
    import json
    info = json.loads(body)
    assert info["workload"] == "checkout" and info["namespace"] == "shop"
    assert info["state"] == "LIVE" and info["config_generation"] >= 1
    assert env.meltemi.http_get("/healthz") == (200, "ok\n")
