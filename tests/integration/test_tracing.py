"""
test_tracing.py - W3C trace context and B3 carried through meltemi in Dubbo attachments and
Thrift THeader headers, meltemi's client span exported as Zipkin v2 JSON to a collector
written here (a small HTTP server that records what it is sent): the trace id is kept, the
upstream's parent is meltemi's span, whose parent is the caller's; a trace starts where none
arrives (sampling 1); the access log carries the trace id.
"""

import http.server
import json
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import meta_env as me  # noqa: E402
from harness import RespConn, RespError, wait_until  # noqa: E402
from test_dubbo import IFACE, dubbo_env, node_peers  # noqa: E402,F401
from test_thrift import thrift_env, thrift_gen  # noqa: E402,F401

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Collector:
    """Zipkin's POST /api/v2/spans, recorded."""

    def __init__(self):
        spans = self.spans = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                if self.path == "/api/v2/spans":
                    spans.extend(json.loads(body))
                    self.send_response(202)
                else:
                    self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def enable_tracing(env, collector, tmp_path, access_log=False):
    before = me.config_generation(env.meltemi)
    (env.conf / "tracing.yaml").write_text(f"""\
apiVersion: meltemi.io/v1alpha1
kind: Tracing
metadata:
  name: default
spec:
  collector: http://127.0.0.1:{collector.port}/api/v2/spans
  sampling: 1
""")
    if access_log:
        (env.conf / "access-log.yaml").write_text(f"""\
apiVersion: meltemi.io/v1alpha1
kind: AccessLog
metadata:
  name: default
spec:
  path: {tmp_path / 'access.log'}
  format: text
  text: "%METHOD% %TRACE_ID%"
""")
    me.wait_generation_after(env.meltemi, before)


def test_dubbo_traceparent_is_carried_and_a_span_exported(dubbo_env, collector, tmp_path):
    env = dubbo_env(versions=("v1",))
    enable_tracing(env, collector, tmp_path, access_log=True)
    c = env.consumer()
    ans = c.call(IFACE, "sayHello", attachments={"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"})
    assert ans["results"][0]["ok"], ans
    att = ans["results"][0]["value"]["attachments"]
    tp = att["traceparent"].split("-")
    assert tp[0] == "00" and tp[1] == TRACE and tp[3] == "01", att
    assert tp[2] != CALLER_SPAN, "the provider's parent is meltemi's span"
    spans = wait_until(lambda: [s for s in collector.spans if s["traceId"] == TRACE], 10,
                       "meltemi's span at the collector")
    (sp,) = spans
    assert sp["id"] == tp[2] and sp["parentId"] == CALLER_SPAN
    assert sp["kind"] == "CLIENT" and sp["name"] == f"{IFACE}.sayHello"
    assert sp["tags"]["rpc.system"] == "dubbo" and sp["tags"]["response_code"] == "20"
    assert sp["remoteEndpoint"]["port"] == env.providers["v1"].port
    assert sp["duration"] >= 1 and sp["timestamp"] > 1.6e15
    log = wait_until(lambda: (tmp_path / "access.log").exists() and
                     (tmp_path / "access.log").read_text(), 10, "the access log")
    assert f"{IFACE}.sayHello {TRACE}" in log
    status, body = env.meltemi.http_get("/stats/prometheus")
    assert "meltemi_trace_spans_exported_total 1" in body


def test_dubbo_b3_and_a_new_trace(dubbo_env, collector, tmp_path):
    env = dubbo_env(versions=("v1",))
    enable_tracing(env, collector, tmp_path)
    c = env.consumer()
    b3 = {"x-b3-traceid": TRACE, "x-b3-spanid": CALLER_SPAN, "x-b3-sampled": "1"}
    ans = c.call(IFACE, "sayHello", attachments=b3)
    att = ans["results"][0]["value"]["attachments"]
    assert att["x-b3-traceid"] == TRACE and att["x-b3-parentspanid"] == CALLER_SPAN
    assert att["x-b3-spanid"] != CALLER_SPAN and att["traceparent"].split("-")[1] == TRACE
    ans = c.call(IFACE, "sayHello")  # nothing arrives: meltemi starts a trace (sampling 1)
    att2 = ans["results"][0]["value"]["attachments"]
    new_trace = att2["traceparent"].split("-")[1]
    assert new_trace != TRACE and len(new_trace) == 32
    spans = wait_until(lambda: len(collector.spans) >= 2 and collector.spans, 10, "two spans")
    by_trace = {s["traceId"]: s for s in spans}
    assert by_trace[TRACE]["parentId"] == CALLER_SPAN
    assert "parentId" not in by_trace[new_trace], "meltemi's span is the new trace's root"


@pytest.mark.parametrize("wire", [("header", "header")], ids=["theader"])
def test_thrift_theader_carries_traceparent(thrift_env, wire, collector, tmp_path):
    env = thrift_env(wire, versions=("v1",))
    enable_tracing(env, collector, tmp_path)
    cl = env.client(headers={"traceparent": f"00-{TRACE}-{CALLER_SPAN}-01"})
    r = cl.hello("x")
    assert r.server == "v1"
    recs = env.servers["v1"].wait_records(1)
    tp = recs[0]["headers"]["traceparent"].split("-")
    assert tp[1] == TRACE and tp[2] != CALLER_SPAN
    (sp,) = wait_until(lambda: [s for s in collector.spans if s["traceId"] == TRACE], 10,
                       "the Thrift span")
    assert sp["id"] == tp[2] and sp["parentId"] == CALLER_SPAN
    assert sp["tags"]["rpc.system"] == "thrift" and sp["tags"]["response_code"] == "OK"


def test_redis_commands_get_spans_that_start_at_meltemi(blog_env, collector, tmp_path):
    """Redis has no header to carry a trace: each sampled command is a new trace whose root
    is meltemi's client span (db.system redis, the command as its name, the endpoint that
    answered, Istio's response code); the access log carries its trace id."""
    env = blog_env(step=1)
    enable_tracing(env, collector, tmp_path, access_log=True)
    c = RespConn(env.host, env.port)
    assert c.call("SET", "traced-key", "v") == b"OK"
    assert c.call("GET", "traced-key") == b"v"
    assert isinstance(c.call("INCR", "traced-key"), RespError)  # ERR: not an integer
    c.close()
    spans = wait_until(lambda: len(collector.spans) >= 3 and collector.spans, 10, "three spans")
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) >= {"set", "get", "incr"}, spans
    assert len({s["traceId"] for s in spans}) == len(spans), "every command is its own trace"
    for sp in spans:
        assert "parentId" not in sp and len(sp["traceId"]) == 32 and sp["kind"] == "CLIENT"
        assert sp["tags"]["db.system"] == "redis" and "rpc.system" not in sp["tags"]
        assert sp["remoteEndpoint"]["port"] == env.redis.port
    assert by_name["get"]["tags"]["response_code"] == "OK"
    assert by_name["incr"]["tags"]["response_code"] == "ERR"
    assert by_name["incr"]["tags"]["error"] == "true"
    log = wait_until(lambda: (tmp_path / "access.log").exists() and
                     (tmp_path / "access.log").read_text(), 10, "the access log")
    assert f"get {by_name['get']['traceId']}" in log, log


def test_collector_down_drops_spans_without_hurting_requests(dubbo_env, tmp_path):
    env = dubbo_env(versions=("v1",))
    dead = Collector()
    dead.close()  # nobody listens on its port now
    enable_tracing(env, dead, tmp_path)
    c = env.consumer()
    t0 = time.monotonic()
    ans = c.call(IFACE, "sayHello", n=20)
    assert all(r["ok"] for r in ans["results"])
    assert time.monotonic() - t0 < 30
    wait_until(lambda: "meltemi_trace_spans_dropped_total 20" in env.meltemi.http_get(
        "/stats/prometheus")[1], 15, "the spans counted as dropped")
