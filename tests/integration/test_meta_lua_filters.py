"""
test_meta_lua_filters.py - LuaFilter on MetaProtocol services (issue 12) with the real peers:
a Dubbo provider per version in Node (hessian.js, peers/node/provider.js) driven by raw Dubbo
frames, and Apache Thrift's Python server and generated client (THeader headers).

The filters are the shipped examples (examples/lua-filters/metaprotocol/*.lua, copied next to
the YAML and named by scriptFile) plus small ones written here: deny a method (Dubbo's native
error status, the provider never sees it), tenant attachment -> subset, canary by attachment
with a tag the provider receives, a mirror copy with attachments read, set and removed, a delay
counted by the slow-methods filter's on_response, on_response replacing a reply with a native
error (Dubbo) or adding a THeader header to it (Thrift), a filter that throws or runs away (the
request gets a native error, the connection and other clients carry on, counted), and a filter
rewritten under traffic (hot reload: no call lost, the new code decides later calls).
"""

import json
import re
import shutil
import signal
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import meta_env as me  # noqa: E402
import thrift_peers  # noqa: E402
from harness import REPO, VIP, free_port, run_meltemi, wait_until  # noqa: E402

HOST = "dubbo-hello.meta.svc.cluster.local"
MIRROR_HOST = "dubbo-mirror.meta.svc.cluster.local"
MIRROR_VIP = "127.0.0.11"
IFACE = "org.apache.dubbo.samples.basic.api.DemoService"
EXAMPLES = REPO / "examples" / "lua-filters" / "metaprotocol"
STATUS_OK = 20
STATUS_SERVICE_ERROR = 80  # SERVER_ERROR: the Dubbo status of an "unspecified" native error


@pytest.fixture(scope="session")
def node_peers():
    reason = me.install_node_peers()
    if reason:
        pytest.skip(reason)


def scrape(meltemi):
    status, body = meltemi.http_get("/stats/prometheus")
    assert status == 200, body
    out = {}
    for ln in body.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", ln)
        if m and not ln.startswith("#"):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def lua_counter(meltemi, name, label):
    want = f'name="{name}",label="{label}"'
    return sum(v for (n, labels), v in scrape(meltemi).items()
               if n == "meltemi_lua_counter_total" and want in labels)


def lua_filter(name, script_file=None, script=None, config=None, order=0, extra=""):
    body = f"  scriptFile: {script_file}\n" if script_file else \
        "  script: |\n" + "".join(f"    {ln}\n" for ln in script.splitlines())
    out = f"""\
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata: {{name: {name}, namespace: meta}}
spec:
  hosts: [{HOST}]
  order: {order}
{body}{extra}"""
    if config is not None:
        out += f"  config: {json.dumps(config)}\n"
    return out


@pytest.fixture
def dubbo(tmp_path, node_peers, config_dir, meltemi_factory):
    """deploy(filters={file: yaml}, routes=None, mirror=False, scripts=()) -> env with a
    provider per version v1, v2 (subsets of the same names), meltemi in front;
    env.conn() opens a raw Dubbo connection to the listener."""
    peers, conns = [], []

    def deploy(filters, routes=None, mirror=False, scripts=(), workers=1, texts=None):
        env = type("Env", (), {})()
        env.port = free_port(VIP)
        env.providers = {}
        for v in ("v1", "v2"):
            p = me.DubboProvider(tmp_path / "peers", v, free_port())
            peers.append(p)
            env.providers[v] = p.start()
        files = {
            "service-entry.yaml": me.service_entry(
                "dubbo-hello", HOST, VIP, env.port, "tcp-metaprotocol-dubbo-hello",
                [("127.0.0.1", p.port, {"version": v}) for v, p in env.providers.items()]),
            "destination-rule.yaml": me.destination_rule(
                "dubbo-hello", HOST, subsets={"v1": {"version": "v1"}, "v2": {"version": "v2"}}),
        }
        if mirror:
            m = me.DubboProvider(tmp_path / "peers", "mirror", free_port())
            peers.append(m)
            env.mirror = m.start()
            files["mirror.yaml"] = me.service_entry(
                "dubbo-mirror", MIRROR_HOST, MIRROR_VIP, free_port(MIRROR_VIP),
                "tcp-metaprotocol-dubbo-mirror", [("127.0.0.1", m.port, {"version": "m"})])
        if routes is not None:
            files["meta-router.yaml"] = me.meta_router("dubbo-hello", HOST, routes)
        files.update(filters)
        files.update(texts or {})
        env.conf = config_dir(files)
        for s in scripts:
            shutil.copy(EXAMPLES / s, env.conf / s)
        env.meltemi = meltemi_factory(env.conf, workers=workers)

        def conn():
            c = me.DubboConn(VIP, env.port)
            conns.append(c)
            return c
        env.conn = conn
        return env

    yield deploy
    for c in conns:
        try:
            c.close()
        except OSError:
            pass
    for p in peers:
        p.stop()


def call(conn, rid, method="sayHello", attachments=None, iface=IFACE):
    conn.send(me.dubbo_request(rid, iface, method, args=[f"a{rid}"], attachments=attachments))
    f = conn.read_frame()
    assert f.id == rid, (f.id, rid)
    return f


def server_of(frame):
    assert frame.status == STATUS_OK, (frame.status, frame.text())
    m = re.search(r'"server"\s*:\s*"([^"]+)"', frame.text())
    assert m, frame.text()
    return m.group(1)


def test_example_config_validates():
    r = run_meltemi("validate", str(EXAMPLES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in (r.stdout + r.stderr), r.stdout + r.stderr


# ---- deny a method -------------------------------------------------------------------------

def test_deny_method_answers_the_native_error_and_never_reaches_the_provider(dubbo):
    env = dubbo({"f.yaml": lua_filter("deny-method", "deny-method.lua",
                                      config={"deny": ["sayBye"], "message": "no bye"})},
                scripts=["deny-method.lua"])
    c = env.conn()
    for i in range(5):
        f = call(c, 100 + i, "sayBye")
        assert f.status == STATUS_SERVICE_ERROR, (f.status, f.text())
        assert "no bye (sayBye)" in f.text()
    assert server_of(call(c, 200, "sayHello")) in ("v1", "v2"), "other methods pass"
    recs = [r for p in env.providers.values() for r in p.records("request")]
    assert [r["method"] for r in recs] == ["sayHello"]
    assert lua_counter(env.meltemi, "denied_methods", "sayBye") == 5


# ---- routing: tenant attachment -> subset, canary by attachment ------------------------------

def test_tenant_attachment_picks_the_subset(dubbo):
    env = dubbo({"f.yaml": lua_filter("tenant-subset", "tenant-subset.lua",
                                      config={"attribute": "x-tenant",
                                              "subsets": {"gold": "v2", "silver": "v1"}})},
                routes=[me.route("all", [(HOST, "v1", None)])], scripts=["tenant-subset.lua"])
    c = env.conn()
    assert {server_of(call(c, i, attachments={"x-tenant": "gold"})) for i in range(1, 9)} == {"v2"}
    assert {server_of(call(c, i, attachments={"x-tenant": "silver"})) for i in range(10, 18)} \
        == {"v1"}
    assert {server_of(call(c, i)) for i in range(20, 28)} == {"v1"}, "no tenant: the MetaRouter"


def test_canary_by_attachment_routes_and_tags_the_call(dubbo):
    env = dubbo({"f.yaml": lua_filter("canary", "canary.lua",
                                      config={"attribute": "canary", "value": "true",
                                              "subset": "v2", "tag": "x-canary-routed"})},
                routes=[me.route("all", [(HOST, "v1", None)],
                                 request_mutation={"x-routed-by": "meltemi"})],
                scripts=["canary.lua"])
    c = env.conn()
    for i in range(1, 6):
        assert server_of(call(c, i, attachments={"canary": "true"})) == "v2"
        assert server_of(call(c, 100 + i, attachments={"canary": "no"})) == "v1"
    v2 = env.providers["v2"].wait_records(5, kind="request")
    assert all(r["attachments"].get("x-canary-routed") == "1" for r in v2), v2
    assert all(r["attachments"].get("x-routed-by") == "meltemi" for r in v2), \
        "the matching route's mutation still applies"
    v1 = env.providers["v1"].wait_records(5, kind="request")
    assert all("x-canary-routed" not in r["attachments"] for r in v1)
    assert lua_counter(env.meltemi, "canary_calls", "v2") == 5


# ---- mirror, attribute reads and rewrites ----------------------------------------------------

MIRROR_AND_SET = f"""\
return {{ on_request = function(msg, ctx)
  if msg.method == "sayHello" and msg.interface == "{IFACE}" then
    local all = msg:attributes()
    if all["x-user"] ~= msg:get("x-user") or all.method ~= "sayHello" then error("attributes") end
    ctx:mirror("{MIRROR_HOST}")
    msg:set("x-user", string.upper(msg:get("x-user") or "none"))
    msg:remove("secret")
  end
end }}
"""


def test_mirror_copy_and_attachment_rewrite(dubbo):
    env = dubbo({"f.yaml": lua_filter("mirror-set", script=MIRROR_AND_SET)}, mirror=True)
    c = env.conn()
    for i in range(1, 4):
        assert server_of(call(c, i, attachments={"x-user": "bob", "secret": "s3"})) in ("v1", "v2")
    assert server_of(call(c, 9, "sayBye")) in ("v1", "v2")
    got = env.mirror.wait_records(3, kind="request")
    assert len(got) == 3 and all(r["method"] == "sayHello" for r in got)
    prim = [r for p in env.providers.values() for r in p.records("request")]
    hello = [r for r in prim if r["method"] == "sayHello"]
    assert len(hello) == 3
    assert all(r["attachments"].get("x-user") == "BOB" for r in hello + got), hello
    assert all("secret" not in r["attachments"] for r in hello), hello
    bye = [r for r in prim if r["method"] == "sayBye"]
    assert bye and bye[0]["attachments"].get("x-user") is None


# ---- delay + on_response (slow methods), on_response replacing a reply --------------------

DELAY = """\
return { on_request = function(msg, ctx)
  local ms = tonumber(msg:get("x-delay-ms") or "")
  if ms then ctx:delay(ms) end
end }
"""

HIDE_V2 = """\
return { on_response = function(msg, ctx)
  if not msg.is_error and msg.method == "sayBye" then
    ctx:reply_error("bye answers are withheld", "unspecified")
  end
end }
"""


def test_delay_is_seen_by_the_slow_methods_counter(dubbo):
    env = dubbo({"a.yaml": lua_filter("delay", script=DELAY, order=1),
                 "b.yaml": lua_filter("slow-methods", "slow-methods.lua", order=2,
                                      config={"threshold_ms": 150})},
                scripts=["slow-methods.lua"])
    c = env.conn()
    assert server_of(call(c, 1, "sayHello", attachments={"x-delay-ms": "250"}))
    for i in range(2, 6):
        assert server_of(call(c, i, "sayBye"))
    assert lua_counter(env.meltemi, "slow_calls", f"{IFACE}.sayHello") == 1
    assert lua_counter(env.meltemi, "slow_calls", f"{IFACE}.sayBye") == 0


def test_on_response_replaces_a_reply_with_the_native_error(dubbo):
    env = dubbo({"f.yaml": lua_filter("hide", script=HIDE_V2)})
    c = env.conn()
    f = call(c, 7, "sayBye")
    assert f.status == STATUS_SERVICE_ERROR and "withheld" in f.text(), (f.status, f.text())
    assert server_of(call(c, 8, "sayHello"))
    assert len([r for p in env.providers.values() for r in p.records("request")]) == 2, \
        "the call did reach the provider: only its answer was replaced"


# ---- a filter that throws or runs away ---------------------------------------------------------

THROWS = """\
return { on_request = function(msg, ctx)
  if msg:get("boom") then error("kaboom") end
  if msg:get("spin") then while true do end end
end }
"""


def test_a_throwing_filter_fails_its_request_only(dubbo):
    env = dubbo({"f.yaml": lua_filter("thrower", script=THROWS,
                                      extra="  maxInstructions: 100000\n")})
    c, other = env.conn(), env.conn()
    f = call(c, 1, attachments={"boom": "1"})
    assert f.status == STATUS_SERVICE_ERROR, (f.status, f.text())
    assert "filter thrower failed" in f.text() and "kaboom" in f.text()
    assert server_of(call(c, 2)), "the same connection carries on"
    f = call(c, 3, attachments={"spin": "1"})
    assert f.status == STATUS_SERVICE_ERROR and "instruction budget exceeded" in f.text(), f.text()
    assert server_of(call(other, 4)), "another client is unaffected"
    assert server_of(call(c, 5))
    assert lua_counter(env.meltemi, "filter_errors", "thrower") == 2
    assert lua_counter(env.meltemi, "filter_budget_kills", "thrower") == 1
    assert len([r for p in env.providers.values() for r in p.records("request")]) == 3


# ---- hot reload under traffic -----------------------------------------------------------------

def reload(env, script, text):
    before = me.config_generation(env.meltemi)
    me.write_atomically(script, text)
    env.meltemi.proc.send_signal(signal.SIGHUP)  # the watcher may also see it: either is fine
    me.wait_generation_after(env.meltemi, before)


GATE_V1 = """\
return { on_request = function(msg, ctx)
  if msg.method == "sayBye" then ctx:reply_error("gate v1") end
end }
"""
GATE_V2 = """\
return { on_request = function(msg, ctx)
  if msg.method == "sayBye" then msg:set("gate", "v2") end
end }
"""


def test_filter_rewritten_under_traffic(dubbo):
    env = dubbo({"f.yaml": lua_filter("gate", "gate.lua")}, texts={"gate.lua": GATE_V1})
    script = env.conf / "gate.lua"
    c = env.conn()
    assert "gate v1" in call(c, 1, "sayBye").text()

    stop, results, errors = threading.Event(), [], []

    def traffic():
        t = env.conn()
        rid = 1000
        try:
            while not stop.is_set():
                rid += 1
                f = call(t, rid, "sayHello")
                results.append(f.status)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
    th = threading.Thread(target=traffic, daemon=True)
    th.start()
    wait_until(lambda: len(results) >= 20, 10, "traffic flowing")
    reload(env, script, GATE_V2)
    n = len(results)
    wait_until(lambda: len(results) >= n + 20, 10, "traffic after the reload")
    stop.set()
    th.join(timeout=10)
    assert not errors, errors
    assert set(results) == {STATUS_OK}, "no call failed across the reload"
    assert server_of(call(c, 2, "sayBye")), "same connection, the new code lets sayBye through"
    bye = [r for p in env.providers.values() for r in p.records("request")
           if r["method"] == "sayBye"]
    assert [r["attachments"].get("gate") for r in bye] == ["v2"]


# ---- Thrift ----------------------------------------------------------------------------------

THRIFT_HOST = "thrift-hello.meta.svc.cluster.local"

THRIFT_FILTER = """\
return {
  on_request = function(msg, ctx)
    if msg.method == "greet" then return ctx:reply_error("greet is closed") end
    local t = msg:get("x-tenant")
    if t == "gold" then ctx:route(ctx.service, "v2") end
    if msg.method == "hello" then msg:set("x-seen-by", "lua") end
  end,
  on_response = function(msg, ctx)
    ctx:counter("thrift_replies", 1, msg.method or "?")
    if not msg.is_error then msg:set("x-reply-filtered", "yes") end
  end,
}
"""


@pytest.fixture(scope="module")
def thrift_gen(tmp_path_factory):
    return thrift_peers.generate(tmp_path_factory.mktemp("thrift-gen"))


def test_thrift_filter_denies_routes_by_header_and_counts_replies(tmp_path, thrift_gen, config_dir,
                                                                  meltemi_factory):
    from thrift.Thrift import TApplicationException
    servers = {}
    try:
        for v in ("v1", "v2"):
            servers[v] = me.ThriftServer(tmp_path / "peers", thrift_gen, v, free_port(), "header",
                                         "header").start()
        port = free_port(VIP)
        files = {
            "service-entry.yaml": me.service_entry(
                "thrift-hello", THRIFT_HOST, VIP, port, "tcp-metaprotocol-thrift-hello",
                [("127.0.0.1", s.port, {"version": v}) for v, s in servers.items()]),
            "destination-rule.yaml": me.destination_rule(
                "thrift-hello", THRIFT_HOST, subsets={"v1": {"version": "v1"},
                                                      "v2": {"version": "v2"}}),
            "meta-router.yaml": me.meta_router("thrift-hello", THRIFT_HOST,
                                               [me.route("all", [(THRIFT_HOST, "v1", None)])]),
            "f.yaml": lua_filter("thrift-gate", script=THRIFT_FILTER).replace(HOST, THRIFT_HOST),
        }
        m = meltemi_factory(config_dir(files))
        plain = thrift_peers.Client(thrift_gen, VIP, port, "header", "header")
        gold = thrift_peers.Client(thrift_gen, VIP, port, "header", "header",
                                   headers={"x-tenant": "gold"})
        try:
            assert {plain.hello(f"p{i}").server for i in range(4)} == {"v1"}
            assert {gold.hello(f"g{i}").server for i in range(4)} == {"v2"}
            with pytest.raises(TApplicationException) as ei:
                plain.greet("x")
            assert "greet is closed" in ei.value.message
            assert plain.hello("after").server == "v1", "the connection survives"
            assert plain.last_headers.get("x-reply-filtered") == "yes", plain.last_headers
        finally:
            plain.close()
            gold.close()
        recs = [r for s in servers.values() for r in s.records()]
        assert all(r["method"] == "hello" for r in recs), recs
        assert lua_counter(m, "thrift_replies", "hello") == 9
        assert lua_counter(m, "thrift_replies", "greet") == 0, "a local error is no reply"
        seen = [r for r in recs if (r.get("headers") or {}).get("x-seen-by") == "lua"]
        assert len(seen) == 9, recs[:2]
    finally:
        for s in servers.values():
            s.stop()
