"""
test_lua_codec.py - codecs written in Lua (ApplicationProtocol `codec: lua`, issue 15),
through meltemi with the example's own servers and clients (examples/custom-protocol/):

  - mrpc, a binary RPC protocol with request ids and key/value headers (mrpc.lua): MetaRouter
    routing by header and by service to DestinationRule subsets, request and response
    mutation, a native error when no route matches, pings answered by meltemi, responses
    correlated by id (out of order on one connection), oneway calls;
  - kvtext, a memcached-like text protocol decoded with lpeg (kvtext.lua): routed by key
    prefix, pipelined replies in request order, noreply;
  - a broken codec (raises, returns nonsense lengths, loops forever) fails the connection
    it decodes and nothing else, counted in meltemi_protocol_errors_total and logged;
  - a reload that changes the codec: the established connection keeps the codec it started
    with, a new connection gets the new one;
  - what MetaRouter does besides routing (mirroring, ring hash on a header, localRateLimit)
    and streams (interleaved on one connection, across clients, reset by either side or
    when a connection goes; the init frame rewritten by its route's requestMutation, reset
    after idling for its route's timeout, one access log line per stream).

The servers are the example's mrpc.py / kvtext.py, started as processes on loopback ports
and stopped by PID.
"""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import meta_env as me  # noqa: E402
from harness import REPO, free_port, stop_pid, wait_until  # noqa: E402

EXAMPLE = REPO / "examples" / "custom-protocol"
sys.path.insert(0, str(EXAMPLE))

import kvtext  # noqa: E402
import mrpc  # noqa: E402

VIP = "127.0.0.32"
MRPC_HOST = "orders.shop.svc.cluster.local"
KV_HOST = "sessions.shop.svc.cluster.local"


def app_protocols(mrpc_source="scriptFile: mrpc.lua"):
    return f"""\
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {{name: mrpc, namespace: shop}}
spec:
  protocol: mrpc
  codec: lua
  {mrpc_source}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {{name: kvtext, namespace: shop}}
spec:
  protocol: kvtext
  codec: lua
  module: kvtext
"""


class Peer:
    """One example server process (mrpc.py or kvtext.py serve) on a free port."""

    def __init__(self, script, name, workdir):
        self.port = free_port()
        self.name = name
        self.errf = open(Path(workdir) / f"{name}-{self.port}.err", "wb")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(EXAMPLE / script), "serve", "--port", str(self.port),
             "--name", name], stdout=subprocess.DEVNULL, stderr=self.errf,
            stdin=subprocess.DEVNULL)
        wait_until(self._up, 10, f"{script} {name} on port {self.port}")

    def _up(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def stop(self):
        stop_pid(self.proc)
        self.errf.close()


@pytest.fixture
def peers(tmp_path):
    started = []

    def start(script, name):
        p = Peer(script, name, tmp_path)
        started.append(p)
        return p
    yield start
    for p in started:
        p.stop()


@pytest.fixture
def shop(tmp_path, peers, config_dir, meltemi_factory):
    """deploy(files=None, mrpc_source=...) -> env with two mrpc servers (v1, v2), two kvtext
    servers (users, other), the example's codecs and MetaRouters, and meltemi in front.
    `files` adds or replaces config files."""

    def deploy(files=None, mrpc_source="scriptFile: mrpc.lua", workers=1):
        env = type("Env", (), {})()
        env.v1, env.v2 = peers("mrpc.py", "v1"), peers("mrpc.py", "v2")
        env.users, env.other = peers("kvtext.py", "users"), peers("kvtext.py", "other")
        env.mrpc_port, env.kv_port = free_port(VIP), free_port(VIP)
        conf = {
            "application-protocol.yaml": app_protocols(mrpc_source),
            "mrpc.lua": (EXAMPLE / "mrpc.lua").read_text(),
            "kvtext.lua": (EXAMPLE / "kvtext.lua").read_text(),
            "orders.yaml": me.service_entry(
                "orders", MRPC_HOST, VIP, env.mrpc_port, "tcp-metaprotocol-mrpc-orders",
                [("127.0.0.1", env.v1.port, {"version": "v1"}),
                 ("127.0.0.1", env.v2.port, {"version": "v2"})], namespace="shop"),
            "sessions.yaml": me.service_entry(
                "sessions", KV_HOST, VIP, env.kv_port, "tcp-metaprotocol-kvtext-sessions",
                [("127.0.0.1", env.users.port, {"shard": "users"}),
                 ("127.0.0.1", env.other.port, {"shard": "other"})], namespace="shop"),
            "destination-rule.yaml": (EXAMPLE / "destination-rule.yaml").read_text(),
            "meta-router.yaml": (EXAMPLE / "meta-router.yaml").read_text(),
        }
        conf.update(files or {})
        env.conf = config_dir(conf)
        env.meltemi = meltemi_factory(env.conf, workers=workers)
        return env
    return deploy


def mclient(env):
    return mrpc.Client(VIP, env.mrpc_port)


def server_stats(peer):
    c = mrpc.Client("127.0.0.1", peer.port)
    try:
        import json
        return json.loads(c.call("x", "stats").body)
    finally:
        c.close()


def body(frame):
    import json
    return json.loads(frame.body)


def prom(meltemi, name):
    status, text = meltemi.http_get("/stats/prometheus")
    assert status == 200
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---- mrpc: the binary protocol --------------------------------------------------------------

def test_mrpc_routes_by_header_to_a_subset_with_request_mutation(shop):
    env = shop()
    c = mclient(env)
    for i in range(3):
        f = c.call("Orders", "get", [("user", "alice")], f"a{i}")
        b = body(f)
        assert (b["server"], b["method"], b["body"]) == ("v2", "get", f"a{i}")
        assert b["headers"] == {"user": "alice", "x-routed-by": "meltemi"}
        assert f.header("x-proxy") is None  # the canary route has no response mutation
    c.close()
    assert server_stats(env.v1)["requests"] == 0


def test_mrpc_routes_by_service_with_response_mutation(shop):
    env = shop()
    c = mclient(env)
    f = c.call("Orders", "list", [("user", "bob"), ("x-echo-trace", "t1")], "b")
    b = body(f)
    assert b["server"] == "v1" and b["headers"] == {"user": "bob", "x-echo-trace": "t1"}
    assert f.header("x-proxy") == "meltemi" and f.header("x-echo-trace") == "t1"
    assert f.header("x-server") == "v1"
    c.close()


def test_mrpc_no_route_is_a_native_error_and_the_connection_stays(shop):
    env = shop()
    c = mclient(env)
    f = c.call("Payments", "charge", [("user", "bob")], "x")
    assert f.flags & mrpc.F_ERROR
    assert f.header("error-kind") == "route_not_found"
    assert b"no route" in f.body
    assert body(c.call("Orders", "get", [], "after"))["server"] == "v1"
    c.close()
    assert server_stats(env.v1)["requests"] == 1 and server_stats(env.v2)["requests"] == 0


def test_mrpc_responses_correlate_by_id_out_of_order(shop):
    env = shop()
    c = mclient(env)
    slow = c.send("Orders", "slow", [], "400")
    fast = [c.send("Orders", "get", [], f"f{i}") for i in range(5)]
    got = [c.recv() for _ in range(6)]
    assert [f.id for f in got[:5]] == fast, "the fast calls are answered while slow waits"
    assert got[5].id == slow and body(got[5])["method"] == "slow"
    assert [body(f)["body"] for f in got[:5]] == [f"f{i}" for i in range(5)]
    c.close()


def test_mrpc_many_clients_share_the_upstream_with_their_own_ids(shop):
    env = shop()
    clients = [mclient(env) for _ in range(4)]
    for i, c in enumerate(clients):  # every client uses the same ids 1..3
        for j in range(3):
            c.send("Orders", "get", [], f"c{i}-{j}")
    for i, c in enumerate(clients):
        got = sorted((f.id, body(f)["body"]) for f in (c.recv() for _ in range(3)))
        assert got == [(j + 1, f"c{i}-{j}") for j in range(3)]
        c.close()


def test_mrpc_ping_is_answered_by_meltemi(shop):
    env = shop()
    c = mclient(env)
    pong = c.ping()
    assert pong.flags & mrpc.F_HEARTBEAT and pong.flags & mrpc.F_RESPONSE and pong.id == 1
    assert body(c.call("Orders", "get", [], "x"))["server"] == "v1"
    c.close()
    assert server_stats(env.v1)["pings"] == 0 and server_stats(env.v2)["pings"] == 0


def test_mrpc_oneway_reaches_the_server(shop):
    env = shop()
    c = mclient(env)
    c.send("Orders", "notify", [("user", "alice")], "n", flags=mrpc.F_ONEWAY)
    assert body(c.call("Orders", "get", [("user", "alice")], "x"))["server"] == "v2"
    wait_until(lambda: server_stats(env.v2)["oneway"] == 1, 5, "the oneway call at v2")
    seen = server_stats(env.v2)["seen"]
    assert ["Orders", "notify", {"user": "alice", "x-routed-by": "meltemi"}] in seen
    c.close()


def test_mrpc_garbage_closes_only_that_client(shop):
    env = shop()
    good = mclient(env)
    bad = socket.create_connection((VIP, env.mrpc_port), timeout=5)
    bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert bad.recv(100) == b""
    bad.close()
    assert body(good.call("Orders", "get", [], "still"))["body"] == "still"
    good.close()
    assert prom(env.meltemi, "meltemi_protocol_errors_total") >= 1
    assert "mrpc: bad magic" in env.meltemi.stderr()


# ---- kvtext: the text protocol (lpeg) --------------------------------------------------------

def kv_keys(peer):
    c = kvtext.Client("127.0.0.1", peer.port)
    try:
        return c.keys()
    finally:
        c.close()


def test_kvtext_routes_by_key_prefix(shop):
    env = shop()
    c = kvtext.Client(VIP, env.kv_port)
    assert c.set("user:1", "alice") == "STORED"
    assert c.set("user:2", "bob") == "STORED"
    assert c.set("cart:9", "apples") == "STORED"
    assert c.get("user:1") == b"alice" and c.get("cart:9") == b"apples"
    assert c.get("user:404") is None
    assert c.delete("user:2") == "DELETED" and c.delete("user:2") == "NOT_FOUND"
    c.close()
    assert kv_keys(env.users) == ["user:1"]
    assert kv_keys(env.other) == ["cart:9"]


def test_kvtext_pipelined_replies_keep_request_order(shop):
    env = shop()
    c = kvtext.Client(VIP, env.kv_port)
    c.send(b"set user:a 1\r\na\r\nset cart:b 1\r\nb\r\nset user:c 3 noreply\r\nccc\r\n")
    c.send(b"".join(b"get %s\r\n" % k for k in (b"cart:b", b"user:a", b"user:c", b"nope")))
    assert [c.reply() for _ in range(6)] == ["STORED", "STORED", b"b", b"a", b"ccc", None]
    c.close()


def test_kvtext_unknown_command_closes_that_client_only(shop):
    env = shop()
    good = kvtext.Client(VIP, env.kv_port)
    bad = kvtext.Client(VIP, env.kv_port)
    bad.send(b"flush_all\r\n")
    with pytest.raises(ConnectionError):
        bad.reply()
    bad.close()
    assert good.set("user:z", "z") == "STORED" and good.get("user:z") == b"z"
    good.close()
    assert "kvtext: not a kvtext line: flush_all" in env.meltemi.stderr()


# ---- a broken codec ------------------------------------------------------------------------

# mrpc.lua with traps: a frame whose method is "boom" raises, "nonsense" returns a length
# the buffer cannot hold, "negative" a negative one, "loop" never returns.
ANCHOR = '  method, pos = field(buf, pos, len, "method")\n'
BROKEN = (EXAMPLE / "mrpc.lua").read_text().replace(
    ANCHOR, ANCHOR +
    "  if method == 'boom' then error('boom in decode') end\n"
    "  if method == 'nonsense' then return len + 1000, {} end\n"
    "  if method == 'negative' then return -5, {} end\n"
    "  if method == 'loop' then while true do end end\n")


@pytest.mark.parametrize("trap,logged", [
    ("boom", "boom in decode"),
    ("nonsense", "is not within the"),
    ("negative", "is not within the"),
    ("loop", ("instruction budget exceeded", "time limit exceeded")),
])
def test_broken_codec_fails_that_connection_only(shop, trap, logged):
    assert ANCHOR in (EXAMPLE / "mrpc.lua").read_text(), "the traps go into mrpc.lua's decode"
    env = shop(files={"mrpc.lua": BROKEN})
    good = mclient(env)
    assert body(good.call("Orders", "get", [], "before"))["body"] == "before"
    before = prom(env.meltemi, "meltemi_protocol_errors_total")
    bad = mclient(env)
    bad.send("Orders", trap, [], "x")
    with pytest.raises(ConnectionError):
        bad.recv()
    bad.close()
    assert body(good.call("Orders", "get", [], "after"))["body"] == "after"
    fresh = mclient(env)
    assert body(fresh.call("Orders", "get", [], "fresh"))["body"] == "fresh"
    fresh.close()
    good.close()
    assert prom(env.meltemi, "meltemi_protocol_errors_total") == before + 1
    log = env.meltemi.stderr()
    assert "the codec failed on a frame of client" in log
    assert any(t in log for t in ((logged,) if isinstance(logged, str) else logged)), log[-2000:]


# ---- reload ---------------------------------------------------------------------------------

def test_reload_established_connections_keep_their_codec(shop):
    """Version 2 of the codec tags every request with the attribute codec=v2, and a route
    sends those to v2. A connection opened before the reload keeps decoding with version 1
    (its calls go to v1); one opened after uses version 2."""
    env = shop()
    old = mclient(env)
    assert body(old.call("Orders", "get", [], "x"))["server"] == "v1"
    gen = me.config_generation(env.meltemi)
    v2_codec = (EXAMPLE / "mrpc.lua").read_text().replace(
        "local attrs = { service = service, method = method }",
        "local attrs = { service = service, method = method, codec = 'v2' }")
    router = (EXAMPLE / "meta-router.yaml").read_text().replace(
        "  routes:\n", "  routes:\n" + me.route("by-codec", [(MRPC_HOST, "v2", None)],
                                                   match={"codec": {"exact": "v2"}}), 1)
    me.write_atomically(env.conf / "mrpc.lua", v2_codec)
    me.write_atomically(env.conf / "meta-router.yaml", router)
    me.wait_generation_after(env.meltemi, gen)
    new = mclient(env)
    assert body(new.call("Orders", "get", [], "y"))["server"] == "v2"
    assert body(old.call("Orders", "get", [], "z"))["server"] == "v1"
    old.close()
    new.close()


# ---- what else MetaRouter does, with a Lua codec -------------------------------------------

def test_mrpc_mirror_copies_calls_to_a_shadow(shop, peers):
    shadow = peers("mrpc.py", "shadow")
    shadow_host = "orders-shadow.shop.svc.cluster.local"
    mirror_route = me.route("mirrored", [(MRPC_HOST, "v1", None)],
                            match={"method": {"exact": "audit"}},
                            mirror=(shadow_host, None), mirror_pct=100)
    router = (EXAMPLE / "meta-router.yaml").read_text().replace(
        "  routes:\n", "  routes:\n" + mirror_route, 1)
    files = {
        "meta-router.yaml": router,
        "shadow.yaml": me.service_entry(
            "orders-shadow", shadow_host, "127.0.0.33", free_port("127.0.0.33"),
            "tcp-metaprotocol-mrpc-shadow", [("127.0.0.1", shadow.port, {})], namespace="shop"),
    }
    env = shop(files=files)
    c = mclient(env)
    for i in range(3):
        assert body(c.call("Orders", "audit", [], f"m{i}"))["server"] == "v1"
    c.close()
    wait_until(lambda: server_stats(shadow)["requests"] == 3, 5, "3 mirrored calls")
    assert server_stats(env.v1)["requests"] == 3


def test_mrpc_mirror_opens_the_stream_on_the_shadow_and_drops_its_frames(shop, peers):
    """A stream whose init frame matches a route with a mirror is opened on the mirror
    destination too: the client's frames are copied there (with an id of the shadow's
    connection), the shadow's replies reach nobody, the stream's end ends the copy (a reset
    at the shadow when the client goes), and a shadow that goes leaves the stream going."""
    shadow = peers("mrpc.py", "shadow")
    shadow_host = "orders-shadow.shop.svc.cluster.local"
    mirror_route = me.route("mirrored", [(MRPC_HOST, "v1", None)],
                            match={"method": {"exact": "audit"}},
                            mirror=(shadow_host, None), mirror_pct=100)
    router = (EXAMPLE / "meta-router.yaml").read_text().replace(
        "  routes:\n", "  routes:\n" + mirror_route, 1)
    files = {
        "meta-router.yaml": router,
        "shadow.yaml": me.service_entry(
            "orders-shadow", shadow_host, "127.0.0.33", free_port("127.0.0.33"),
            "tcp-metaprotocol-mrpc-shadow", [("127.0.0.1", shadow.port, {})], namespace="shop"),
    }
    env = shop(files=files)
    c = mclient(env)
    c.stream(31, "init", "Orders", "audit", [("k", "v")])
    c.stream(31, "data", body="a")
    c.stream(31, "data", body="b")
    c.stream(31, "close")
    got = read_stream_frames(c, 4)
    assert got == {31: [("data", "open:v1"), ("data", "echo:a"), ("data", "echo:b"),
                        ("close", "")]}, got
    # nothing of the shadow's follows: the next frame is this call's answer
    assert body(c.call("Orders", "get", [], "r"))["server"] == "v1"
    wait_until(lambda: server_stats(shadow)["stream_frames"] == 4, 5, "4 frames at the shadow")
    sh = server_stats(shadow)
    assert sh["streams"] == 1 and sh["seen"] == [["Orders", "audit", {"k": "v"}]], sh
    # a client that goes: the stream is reset at its server and at the shadow
    d = mclient(env)
    d.stream(32, "init", "Orders", "audit")
    d.stream(32, "data", body="x")
    assert read_stream_frames(d, 2) == {32: [("data", "open:v1"), ("data", "echo:x")]}
    d.close()
    wait_until(lambda: server_stats(env.v1)["resets"] == 1, 5, "the reset at v1")
    wait_until(lambda: server_stats(shadow)["resets"] == 1, 5, "the reset at the shadow")
    # the shadow goes: the stream it copied carries on
    c.stream(33, "init", "Orders", "audit")
    assert read_stream_frames(c, 1) == {33: [("data", "open:v1")]}
    wait_until(lambda: server_stats(shadow)["streams"] == 3, 5, "the third stream at the shadow")
    shadow.stop()
    c.stream(33, "data", body="after")
    assert read_stream_frames(c, 1) == {33: [("data", "echo:after")]}
    c.stream(33, "close")
    assert read_stream_frames(c, 1) == {33: [("close", "")]}
    assert prom(env.meltemi, "meltemi_streams_total") == 3, "a mirror copy is not a stream"
    c.close()


def test_mrpc_ring_hash_on_a_header_sticks_to_one_server(shop):
    rule = (EXAMPLE / "destination-rule.yaml").read_text().replace(
        "  host: orders.shop.svc.cluster.local\n",
        "  host: orders.shop.svc.cluster.local\n  trafficPolicy:\n    loadBalancer:\n"
        "      consistentHash:\n        httpHeaderName: tenant\n", 1)
    router = (EXAMPLE / "meta-router.yaml").read_text().replace(
        "        subset: v1\n    responseMutation:", "    responseMutation:", 1)
    env = shop(files={"destination-rule.yaml": rule, "meta-router.yaml": router})
    c = mclient(env)
    seen = set()
    for t in range(16):
        got = {body(c.call("Orders", "get", [("tenant", f"t{t}")], "x"))["server"]
               for _ in range(3)}
        assert len(got) == 1, f"tenant t{t} went to {got}"
        seen |= got
    c.close()
    assert seen == {"v1", "v2"}, "16 tenants spread over both servers (2^-15 to fail by chance)"


# ---- streams --------------------------------------------------------------------------------

def read_stream_frames(c, n):
    """n frames from c as {stream id: [(kind, body), ...]} in arrival order."""
    got = {}
    for _ in range(n):
        f = c.recv()
        assert f.stream_kind, f"not a stream frame: flags {f.flags:#x}"
        assert f.is_response, "frames from the server carry the response bit"
        got.setdefault(f.id, []).append((f.stream_kind, f.body.decode()))
    return got


def test_mrpc_streams_are_authorized_by_their_init_frame(shop):
    """AuthorizationPolicy judges a stream at its init frame (service and method, as a
    request): a denied init gets the codec's native error and opens nothing, so its later
    frames find no stream; an allowed one on the same connection flows."""
    env = shop({"authz.yaml": """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-watch
  namespace: shop
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: [Orders]
        methods: [watch]
"""})
    c = mclient(env)
    c.stream(21, "init", "Orders", "watch", [("user", "bob")])
    f = c.recv()
    assert f.id == 21 and b"RBAC: access denied" in f.body, (f.id, f.flags, f.body)
    c.stream(21, "data", body="sneaky")
    f = c.recv()
    assert f.id == 21 and b"no such stream" in f.body, (f.id, f.body)
    c.stream(22, "init", "Orders", "tail")
    c.stream(22, "data", body="x")
    got = read_stream_frames(c, 2)
    assert got == {22: [("data", "open:v1"), ("data", "echo:x")]}
    assert server_stats(env.v1)["streams"] + server_stats(env.v2)["streams"] == 1
    assert all("sneaky" not in str(x) for x in server_stats(env.v1)["seen"])
    assert prom(env.meltemi, "meltemi_rbac_denied_total") == 1
    c.close()


def test_mrpc_interleaved_streams_follow_their_init_frame(shop):
    """Several streams interleaved on one client connection: each is routed once, at its
    init frame (by header to v2, by service to v1), and all its frames reach the same server
    and come back on the client's stream id, in order; a close from each side or a reset
    ends a stream; meltemi answers a frame of an ended stream with a reset."""
    env = shop()
    c = mclient(env)
    c.stream(11, "init", "Orders", "watch", [("user", "bob")])
    c.stream(12, "init", "Orders", "watch", [("user", "alice")])
    c.stream(11, "data", body="a")
    c.stream(13, "init", "Orders", "tail")
    c.stream(12, "data", body="b")
    c.stream(13, "data", body="c")
    c.stream(11, "data", body="d")
    c.stream(12, "close")
    c.stream(13, "data", body="e")
    c.stream(13, "close")
    got = read_stream_frames(c, 10)
    assert got == {
        11: [("data", "open:v1"), ("data", "echo:a"), ("data", "echo:d")],
        12: [("data", "open:v2"), ("data", "echo:b"), ("close", "")],
        13: [("data", "open:v1"), ("data", "echo:c"), ("data", "echo:e"), ("close", "")],
    }
    c.stream(11, "reset")
    wait_until(lambda: server_stats(env.v1)["resets"] == 1, 5, "the reset at v1")
    # 11 was reset, 12 and 13 closed by both sides: meltemi knows none of them any more
    for sid in (11, 12):
        c.stream(sid, "data", body="late")
        f = c.recv()
        assert (f.id, f.stream_kind) == (sid, "reset"), (f.id, f.flags)
        assert f.header("error-kind") == "unspecified" and b"no such stream" in f.body
    v1, v2 = server_stats(env.v1), server_stats(env.v2)
    assert (v1["streams"], v2["streams"]) == (2, 1)
    assert v1["stream_frames"] == 2 + 3 + 2 + 1 and v2["stream_frames"] == 1 + 1 + 1
    assert ["Orders", "watch", {"user": "alice", "x-routed-by": "meltemi"}] in v2["seen"], \
        "the init frame gets its route's requestMutation"
    # a request on the same connection still works between streams
    assert body(c.call("Orders", "get", [], "r"))["server"] == "v1"
    c.close()
    assert prom(env.meltemi, "meltemi_streams_total") == 3
    assert prom(env.meltemi, "meltemi_stream_frames_total") == 10 + 10 + 1 + 2


def test_mrpc_streams_of_two_clients_share_ids_and_a_server_reset_ends_one(shop):
    env = shop()
    a, b = mclient(env), mclient(env)
    a.stream(1, "init", "Orders", "watch")
    b.stream(1, "init", "Orders", "watch")
    a.stream(1, "data", body="from-a")
    b.stream(1, "data", body="from-b")
    assert read_stream_frames(a, 2) == {1: [("data", "open:v1"), ("data", "echo:from-a")]}
    assert read_stream_frames(b, 2) == {1: [("data", "open:v1"), ("data", "echo:from-b")]}
    a.stream(2, "init", "Orders", "reset-me")
    f = a.recv()
    assert (f.id, f.stream_kind, f.body) == (2, "reset", b"reset by the server")
    a.stream(2, "data", body="after")  # the server's reset ended it in meltemi too
    f = a.recv()
    assert (f.id, f.stream_kind) == (2, "reset") and b"no such stream" in f.body
    b.stream(1, "data", body="still")
    assert read_stream_frames(b, 1) == {1: [("data", "echo:still")]}
    a.close()
    b.close()


def test_mrpc_stream_gets_a_reset_when_its_server_goes(shop):
    env = shop()
    c = mclient(env)
    c.stream(5, "init", "Orders", "watch")
    assert read_stream_frames(c, 1) == {5: [("data", "open:v1")]}
    env.v1.stop()
    f = c.recv()
    assert (f.id, f.stream_kind) == (5, "reset") and b"upstream connection closed" in f.body
    c.close()


def test_mrpc_streams_of_a_client_that_goes_are_reset_at_the_server(shop):
    env = shop()
    c = mclient(env)
    c.stream(21, "init", "Orders", "watch")
    c.stream(22, "init", "Orders", "watch")
    assert read_stream_frames(c, 2) == {21: [("data", "open:v1")], 22: [("data", "open:v1")]}
    c.close()
    wait_until(lambda: server_stats(env.v1)["resets"] == 2, 5, "both streams reset at v1")


def test_mrpc_stream_init_frame_gets_its_routes_request_mutation(shop):
    """A route's requestMutation rewrites a stream's init frame as it would a request (the
    codec's encode): the server sees the added header on the init; the stream's later frames
    pass untouched, on the client's stream id, both ways."""
    env = shop()
    c = mclient(env)
    c.stream(7, "init", "Orders", "watch", [("user", "alice"), ("x-routed-by", "client")])
    c.stream(7, "data", body="one")
    c.stream(7, "close")
    got = read_stream_frames(c, 3)
    assert got == {7: [("data", "open:v2"), ("data", "echo:one"), ("close", "")]}, got
    v2 = server_stats(env.v2)
    assert v2["seen"] == [["Orders", "watch", {"user": "alice", "x-routed-by": "meltemi"}]], \
        v2["seen"]
    assert v2["stream_frames"] == 3
    # the same connection still carries mutated requests with their own ids
    assert body(c.call("Orders", "get", [("user", "alice")], "r"))["headers"]["x-routed-by"] \
        == "meltemi"
    c.close()


def timeout_router(timeout):
    """The example's MetaRouter with `timeout` on its orders-v1 route."""
    return (EXAMPLE / "meta-router.yaml").read_text().replace(
        "    responseMutation:\n    - key: x-proxy",
        f"    timeout: {timeout}\n    responseMutation:\n    - key: x-proxy", 1)


def test_mrpc_idle_stream_is_reset_after_its_routes_timeout(shop):
    """The matched route's `timeout` bounds a stream's idleness: with no frame either way for
    that long, meltemi resets the stream at the server (the codec's stream_reset), gives the
    client the codec's upstream_timeout error (for mrpc a reset of the stream) and counts it
    as a request with response flag UT; a stream of a route without timeout stays open."""
    env = shop(files={"meta-router.yaml": timeout_router("300ms")})
    c = mclient(env)
    c.stream(3, "init", "Orders", "watch")             # orders-v1: 300 ms
    c.stream(4, "init", "Orders", "watch", [("user", "alice")])  # canary: no timeout
    got = read_stream_frames(c, 2)
    assert got == {3: [("data", "open:v1")], 4: [("data", "open:v2")]}, got
    f = c.recv()  # nothing else is sent: stream 3 idles past its timeout
    assert (f.id, f.stream_kind) == (3, "reset"), (f.id, f.flags)
    assert f.header("error-kind") == "upstream_timeout" and b"idle" in f.body, f.body
    wait_until(lambda: server_stats(env.v1)["resets"] == 1, 5, "the reset at v1")
    c.stream(3, "data", body="late")
    f = c.recv()
    assert (f.id, f.stream_kind) == (3, "reset") and b"no such stream" in f.body, f.body
    c.stream(4, "data", body="still")  # the canary route has no timeout: still open
    assert read_stream_frames(c, 1) == {4: [("data", "echo:still")]}
    assert server_stats(env.v2)["resets"] == 0
    status, text = env.meltemi.http_get("/stats/prometheus")
    ut = [ln for ln in text.splitlines()
          if ln.startswith("istio_requests_total{") and 'response_flags="UT"' in ln]
    assert len(ut) == 1 and ut[0].endswith(" 1"), ut
    c.close()


def test_mrpc_stream_that_keeps_talking_outlives_its_routes_timeout(shop):
    """The timeout is idleness, not a deadline: frames keep restarting it, so a stream
    carries on past it while it talks (frames 100 ms apart, over three times the 1 s
    timeout)."""
    env = shop(files={"meta-router.yaml": timeout_router("1s")})
    c = mclient(env)
    c.stream(9, "init", "Orders", "watch")
    assert read_stream_frames(c, 1) == {9: [("data", "open:v1")]}
    for i in range(35):
        time.sleep(0.1)
        c.stream(9, "data", body=f"m{i}")
        assert read_stream_frames(c, 1) == {9: [("data", f"echo:m{i}")]}
    c.stream(9, "close")
    assert read_stream_frames(c, 1) == {9: [("close", "")]}
    assert server_stats(env.v1)["resets"] == 0
    c.close()


def stream_access_log_yaml(path, fmt="json", text=None):
    s = ("apiVersion: meltemi.io/v1alpha1\nkind: AccessLog\nmetadata: {name: default}\n"
         f"spec:\n  path: {path}\n  format: {fmt}\n")
    return s + (f"  text: {json.dumps(text)}\n" if text else "")


def log_lines(path, n):
    def enough():
        if not Path(path).exists():
            return None
        ls = Path(path).read_text().splitlines()
        return ls if len(ls) >= n else None
    return wait_until(enough, 10, f"{n} lines in {path}")


def test_mrpc_access_log_has_one_line_per_stream_when_it_ends(shop, tmp_path):
    """One access log line per stream, written when it ends, by the same writer as the
    requests': duration, route, subset, upstream, method, frames and bytes both ways, and
    how it ended (close, reset, timeout, upstream_gone, client_gone); a request's line has
    no stream fields."""
    path = tmp_path / "access.log"
    env = shop(files={"meta-router.yaml": timeout_router("400ms"),
                      "access-log.yaml": stream_access_log_yaml(path)})
    c = mclient(env)
    c.stream(1, "init", "Orders", "watch", [("user", "alice")])  # closed by both sides
    c.stream(1, "data", body="hello")
    c.stream(1, "close")
    assert len(read_stream_frames(c, 3)[1]) == 3
    c.stream(2, "init", "Orders", "watch", [("user", "alice")])  # reset by the client
    assert read_stream_frames(c, 1) == {2: [("data", "open:v2")]}
    c.stream(2, "reset")
    c.stream(3, "init", "Orders", "reset-me", [("user", "alice")])  # reset by the server
    assert read_stream_frames(c, 1)[3][0][0] == "reset"
    c.stream(4, "init", "Orders", "watch")  # orders-v1, 400 ms: times out
    idle = "meltemi: stream idle for 400 ms (its route's timeout)"
    assert read_stream_frames(c, 2)[4] == [("data", "open:v1"), ("reset", idle)]
    assert body(c.call("Orders", "get", [("user", "alice")], "r"))["server"] == "v2"
    lines = [json.loads(ln) for ln in log_lines(path, 5)]
    streams = {ln["stream_end"]: ln for ln in lines if "stream_end" in ln}
    requests = [ln for ln in lines if "stream_end" not in ln]
    assert len(requests) == 1 and requests[0]["command"] == "get", requests
    assert "frames_received" not in requests[0]
    assert set(streams) == {"close", "reset", "timeout"} and len(lines) == 5, lines
    closed = streams["close"]
    assert (closed["frames_received"], closed["frames_sent"]) == (3, 3), closed
    assert closed["bytes_received"] > 0 and closed["bytes_sent"] > 0
    assert closed["command"] == "watch" and closed["route_name"] == "canary-by-user"
    assert closed["subset"] == "v2" and closed["upstream_host"] == f"127.0.0.1:{env.v2.port}"
    assert closed["response_code"] == "OK" and closed["response_flags"] == "-"
    assert closed["protocol"] == "mrpc" and closed["duration"] >= 0
    resets = [ln for ln in lines if ln.get("stream_end") == "reset"]
    assert sorted((r["frames_received"], r["frames_sent"]) for r in resets) == [(1, 1), (2, 1)]
    assert all(r["response_code"] == "ERROR" for r in resets)
    timed = streams["timeout"]
    assert timed["response_flags"] == "UT" and timed["route_name"] == "orders-v1"
    assert (timed["frames_received"], timed["frames_sent"]) == (1, 1)
    assert timed["duration"] >= 300, "idle for the route's timeout before it ended"
    # a stream whose server goes, and one whose client goes
    c.stream(5, "init", "Orders", "watch", [("user", "alice")])
    assert read_stream_frames(c, 1) == {5: [("data", "open:v2")]}
    d = mclient(env)
    d.stream(6, "init", "Orders", "watch", [("user", "alice")])
    assert read_stream_frames(d, 1) == {6: [("data", "open:v2")]}
    d.close()
    wait_until(lambda: server_stats(env.v2)["resets"] >= 2, 5, "the client-gone reset at v2")
    env.v2.stop()
    f = c.recv()
    assert (f.id, f.stream_kind) == (5, "reset"), (f.id, f.flags)
    lines = [json.loads(ln) for ln in log_lines(path, 7)]
    ends = [ln["stream_end"] for ln in lines[5:]]
    assert sorted(ends) == ["client_gone", "upstream_gone"], ends
    gone = next(ln for ln in lines[5:] if ln["stream_end"] == "client_gone")
    assert gone["response_flags"] == "DC" and gone["response_code"] == "0"
    c.close()


def test_mrpc_stream_access_log_text_fields(shop, tmp_path):
    """%STREAM_END%, %FRAMES_RECEIVED% and %FRAMES_SENT% in a text format: a stream's
    values, "-" on a request's line."""
    path = tmp_path / "access.log"
    fmt = "%COMMAND% %STREAM_END% %FRAMES_RECEIVED% %FRAMES_SENT% %BYTES_RECEIVED%"
    env = shop(files={"access-log.yaml": stream_access_log_yaml(path, "text", fmt)})
    c = mclient(env)
    c.stream(1, "init", "Orders", "watch")
    c.stream(1, "data", body="x")
    c.stream(1, "close")
    assert len(read_stream_frames(c, 3)[1]) == 3
    body(c.call("Orders", "get", [], "r"))
    lines = log_lines(path, 2)
    stream = next(ln for ln in lines if ln.startswith("watch "))
    words = stream.split()
    assert words[1:4] == ["close", "3", "3"] and int(words[4]) > 0, stream
    request = next(ln for ln in lines if ln.startswith("get "))
    assert request.split()[1:4] == ["-", "-", "-"], request
    c.close()


def test_mrpc_local_rate_limit_answers_with_the_codecs_error(shop):
    """MetaRouter localRateLimit (issue 12) over a Lua codec's attributes: token arithmetic
    (fillInterval an hour), the over-limit answer is mrpc's own error frame."""
    limit = ("  localRateLimit:\n"
             "    tokenBucket: {maxTokens: 3, tokensPerFill: 1, fillInterval: 1h}\n"
             "    conditions:\n"
             "    - match: {attributes: {user: {exact: alice}}}\n"
             "      tokenBucket: {maxTokens: 1, fillInterval: 1h}\n")
    router = (EXAMPLE / "meta-router.yaml").read_text().replace("  routes:\n",
                                                                limit + "  routes:\n", 1)
    env = shop(files={"meta-router.yaml": router})
    c = mclient(env)
    bob = [c.call("Orders", "get", [("user", "bob")], f"b{i}") for i in range(5)]
    alice = [c.call("Orders", "get", [("user", "alice")], f"a{i}") for i in range(2)]
    kinds = [(f.flags & mrpc.F_ERROR != 0, f.header("error-kind")) for f in bob + alice]
    assert kinds == [(False, None)] * 3 + [(True, "over_limit")] * 2 + \
        [(False, None), (True, "over_limit")]
    assert b"rate limited" in bob[3].body
    c.close()
    assert server_stats(env.v1)["requests"] == 3 and server_stats(env.v2)["requests"] == 1
    assert prom(env.meltemi, "meltemi_rate_limited_total") == 3


def test_reload_with_a_broken_codec_is_refused_and_the_old_one_serves(shop):
    env = shop()
    c = mclient(env)
    assert body(c.call("Orders", "get", [], "x"))["server"] == "v1"
    failures = prom(env.meltemi, "meltemi_config_reload_failures_total")
    me.write_atomically(env.conf / "mrpc.lua", "return { decode = function( end }\n")
    wait_until(lambda: prom(env.meltemi, "meltemi_config_reload_failures_total") > failures, 15,
               "the refused reload")
    status, dump = env.meltemi.http_get("/config_dump")
    assert "mrpc.lua" in dump and "is not a usable codec" in dump, dump[:500]
    assert body(c.call("Orders", "get", [], "y"))["body"] == "y"
    fresh = mclient(env)
    assert body(fresh.call("Orders", "get", [("user", "alice")], "z"))["server"] == "v2"
    fresh.close()
    c.close()


def istio_requests(meltemi, protocol):
    status, text = meltemi.http_get("/stats/prometheus")
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("istio_requests_total{")
               and f'request_protocol="{protocol}"' in line)


def test_istio_metrics_name_the_protocol_across_codec_reloads(shop):
    """istio_requests_total labels requests with the ApplicationProtocol's name; reloads
    that replace the codec (each old one is freed once its last connection goes) keep the
    label and the count - more of them than the 16 label sets meltemi keeps for codecs."""
    env = shop()
    source = (EXAMPLE / "mrpc.lua").read_text()
    for version in range(18):
        if version:
            gen = me.config_generation(env.meltemi)
            me.write_atomically(env.conf / "mrpc.lua", source + f"\n-- version {version}\n")
            me.wait_generation_after(env.meltemi, gen)
        c = mclient(env)
        c.call("Orders", "get", [], f"v{version}")
        c.close()
        wait_until(lambda n=version + 1: istio_requests(env.meltemi, "mrpc") == n, 5,
                   f"{version + 1} mrpc requests counted")
