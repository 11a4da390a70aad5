"""
test_mtls.py - Istio mutual TLS between two meltemi processes, as two sidecars: the client
side (ServiceEntry + DestinationRule tls ISTIO_MUTUAL) and the server side (Sidecar ingress +
PeerAuthentication STRICT / PERMISSIVE / DISABLE per port), each with its workload files in
Istio's layout (cert-chain.pem, key.pem, root-cert.pem under --istio-certs) made by the test
with openssl. Redis (redis-server) and Dubbo (the Node provider and dubbo2.js consumer) ride
over it; the server side sees the client's SPIFFE identity. Rotation: files replaced on disk
are used by new handshakes while established connections keep working, with no failed
request; expired, unknown-CA and wrong-SAN peers are refused with the reason logged.
"""

import os
import ssl
import socket
import sys
import threading
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import meta_env as me  # noqa: E402
from harness import VIP, RespConn, free_port, redis_py, wait_until  # noqa: E402
from tls_certs import Ca, spiffe  # noqa: E402

REDIS_HOST = "redis-mesh.redis.svc.cluster.local"
DUBBO_HOST = "dubbo-mesh.meta.svc.cluster.local"
DUBBO_VIP = "127.0.0.12"
IFACE = "org.apache.dubbo.samples.basic.api.DemoService"
CLIENT_ID = spiffe("app", "client")
INGRESS = "127.0.0.13"  # the server side's ports: apart from the admin ports on 127.0.0.1
SERVER_ID = spiffe("redis", "server")


def istio_dir(ca, directory, name, uri, expired=False):
    """Writes cert-chain.pem, key.pem, root-cert.pem for a workload into directory (each by
    an atomic rename, as a certificate agent would)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cert, key = ca.issue(name, uris=[uri], expired=expired)
    for src, dst in ((cert, "cert-chain.pem"), (key, "key.pem"), (ca.cert, "root-cert.pem")):
        tmp = d / (dst + ".tmp")
        tmp.write_bytes(Path(src).read_bytes())
        os.replace(tmp, d / dst)
    return d


def peer_authentication(mode, port_modes=None, selector=None):
    out = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: redis
spec:
"""
    if selector:
        out += "  selector:\n    matchLabels:\n" + "".join(
            f"      {k}: {v}\n" for k, v in selector.items())
    out += f"  mtls:\n    mode: {mode}\n"
    if port_modes:
        out += "  portLevelMtls:\n" + "".join(
            f"    {p}:\n      mode: {m}\n" for p, m in port_modes.items())
    return out


def server_sidecar(redis_port, redis_ep, dubbo_port=None, dubbo_ep=None, redis_name="tcp-redis"):
    out = f"""\
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata:
  name: server
  namespace: redis
spec:
  workloadSelector:
    labels:
      app: server
  ingress:
  - port:
      number: {redis_port}
      name: {redis_name}
    bind: {INGRESS}
    defaultEndpoint: 127.0.0.1:{redis_ep}
"""
    if dubbo_port:
        out += f"""\
  - port:
      number: {dubbo_port}
      name: tcp-metaprotocol-dubbo-hello
    bind: {INGRESS}
    defaultEndpoint: 127.0.0.1:{dubbo_ep}
"""
    return out


def client_dr(host, namespace, extra=""):
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: {host.split('.')[0]}
  namespace: {namespace}
spec:
  host: {host}
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
{extra}"""


@pytest.fixture
def mesh(tmp_path, redis_factory, config_dir, meltemi_factory, monkeypatch):
    """deploy(mode, port_modes=None, dubbo=False, client_sans=None) -> env with the two
    meltemis: env.a (client side: VIP listeners), env.b (server side: ingress ports)."""
    peers = []
    ca = Ca(tmp_path / "pki", name="mesh-root")

    def deploy(mode="STRICT", port_modes=None, dubbo=False, client_sans=None,
               redis_name="tcp-redis"):
        env = types.SimpleNamespace(ca=ca, tmp=tmp_path)
        env.redis = redis_factory()
        env.b_redis = free_port(INGRESS)
        env.b_dubbo = free_port(INGRESS) if dubbo else None
        env.provider = None
        if dubbo:
            env.provider = me.DubboProvider(tmp_path / "peers", "v1", free_port()).start()
            peers.append(env.provider)
        env.a_dir = istio_dir(ca, tmp_path / "certs-a", "client", CLIENT_ID)
        env.b_dir = istio_dir(ca, tmp_path / "certs-b", "server", SERVER_ID)
        pm = {}
        for k, v in (port_modes or {}).items():
            pm[env.b_redis if k == "redis" else env.b_dubbo] = v
        b_files = {
            "sidecar.yaml": server_sidecar(env.b_redis, env.redis.port, env.b_dubbo,
                                           env.provider.port if dubbo else None, redis_name),
            "pa.yaml": peer_authentication(mode, pm),
        }
        env.b = meltemi_factory(config_dir(b_files), log_level="debug",
                                extra_args=["--istio-certs", str(env.b_dir)])
        env.a_redis = free_port(VIP)
        sans = ""
        if client_sans:
            sans = "      subjectAltNames:\n" + "".join(f"      - {s}\n" for s in client_sans)
        a_files = {
            "se.yaml": me.service_entry("redis-mesh", REDIS_HOST, VIP, env.a_redis, redis_name,
                                        [(INGRESS, env.b_redis, {})], namespace="redis"),
            "dr.yaml": client_dr(REDIS_HOST, "redis", sans),
        }
        if dubbo:
            env.a_dubbo = free_port(DUBBO_VIP)
            a_files["se-dubbo.yaml"] = me.service_entry(
                "dubbo-mesh", DUBBO_HOST, DUBBO_VIP, env.a_dubbo, "tcp-metaprotocol-dubbo-hello",
                [(INGRESS, env.b_dubbo, {})])
            a_files["dr-dubbo.yaml"] = client_dr(DUBBO_HOST, "meta")
        # One upstream connection per client session (up to 64): a new client means a new
        # handshake, which the rotation test needs to see.
        monkeypatch.setenv("MELTEMI_UPSTREAM_CONNS", "64")
        env.a = meltemi_factory(config_dir(a_files),
                                extra_args=["--istio-certs", str(env.a_dir)])
        monkeypatch.delenv("MELTEMI_UPSTREAM_CONNS")
        return env

    yield deploy
    for p in peers:
        p.stop()


def metric(m, name):
    status, body = m.http_get("/stats/prometheus")
    assert status == 200
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines()
               if ln.startswith(name + "{") or ln.startswith(name + " "))


def principal_logged(m, ident):
    return f"mutual_tls, principal {ident[len('spiffe://'):]}" in m.stderr()


def direct_tls(port, cert=None, key=None, ca=None):
    """A TLS client straight to the server side; returns (peer cert dict, reply to PING)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(ca))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    with socket.create_connection((INGRESS, port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(b"PING\r\n")
            return s.getpeercert(), s.recv(64)


def refused(port, cert, key, ca):
    """True when the server side refuses the client: the handshake fails, or (TLS 1.3, where
    the client finishes first) the connection closes before any reply."""
    try:
        _, reply = direct_tls(port, cert, key, ca)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return reply == b""


def test_redis_and_dubbo_over_mtls_between_two_meltemis(mesh):
    env = mesh("STRICT", dubbo=True)
    c = redis_py(VIP, env.a_redis)
    assert c.set("mesh", "mtls") is True
    assert c.get("mesh") == b"mtls"
    assert env.redis.client().get("mesh") == b"mtls"
    wait_until(lambda: principal_logged(env.b, CLIENT_ID), 5, "B saw the client's identity")
    consumer = me.DubboConsumer(env.tmp, f"{DUBBO_VIP}:{env.a_dubbo}")
    try:
        got = consumer.call(IFACE, "sayHello", args=["bob"], n=5)
        assert all(r["ok"] for r in got["results"]), got
        assert [r["value"]["args"] for r in got["results"]] == [["bob"]] * 5
    finally:
        consumer.close()
    assert len(env.provider.records("request")) == 5
    # STRICT: a plain-text client straight to the server side gets nothing.
    plain = RespConn(INGRESS, env.b_redis, timeout=3)
    plain.send_raw(b"PING\r\n")
    assert plain.closed_by_peer(timeout=5)
    assert metric(env.b, "meltemi_tls_handshake_failures_total") >= 1


def test_permissive_takes_plain_text_and_mtls_on_one_port(mesh):
    env = mesh("PERMISSIVE")
    plain = redis_py(INGRESS, env.b_redis)
    assert plain.set("p", "plain") is True
    via_mesh = redis_py(VIP, env.a_redis)
    assert via_mesh.get("p") == b"plain"
    wait_until(lambda: principal_logged(env.b, CLIENT_ID), 5, "mTLS client identified")
    # A byte-at-a-time ClientHello still counts as TLS (the sniffer waits for 3 bytes).
    cert, reply = direct_tls(env.b_redis, env.a_dir / "cert-chain.pem", env.a_dir / "key.pem",
                             env.ca.cert)
    assert reply == b"+PONG\r\n"
    assert ("URI", SERVER_ID) in cert["subjectAltName"]


def test_plain_tcp_ports_over_mtls_strict_and_permissive(mesh):
    # tcp-raw selects no protocol: both meltemis relay bytes, mTLS below the relay.
    env = mesh("STRICT", redis_name="tcp-raw")
    c = redis_py(VIP, env.a_redis)
    assert c.set("raw", "mtls") is True
    assert c.get("raw") == b"mtls"
    assert env.redis.client().get("raw") == b"mtls"
    wait_until(lambda: principal_logged(env.b, CLIENT_ID), 5, "B saw the client's identity")
    assert metric(env.a, "meltemi_upstream_tls_handshake_failures_total") == 0
    plain = RespConn(INGRESS, env.b_redis, timeout=3)
    plain.send_raw(b"PING\r\n")
    assert plain.closed_by_peer(timeout=5)
    # A client certificate from another CA is refused.
    other = Ca(env.tmp / "pki-other", name="other-root")
    ocert, okey = other.issue("stranger", uris=[spiffe("x", "y")])
    assert refused(env.b_redis, ocert, okey, env.ca.cert)


def test_plain_tcp_port_permissive_takes_both(mesh):
    env = mesh("PERMISSIVE", redis_name="tcp-raw")
    plain = redis_py(INGRESS, env.b_redis)
    assert plain.set("p", "plain") is True
    assert redis_py(VIP, env.a_redis).get("p") == b"plain"
    wait_until(lambda: principal_logged(env.b, CLIENT_ID), 5, "mTLS client identified")


def istio_series(m, name):
    """{labels dict: value} of an Istio metric family."""
    import re
    status, body = m.http_get("/stats/prometheus")
    assert status == 200
    out = []
    for ln in body.splitlines():
        if ln.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', ln[len(name) + 1:ln.rindex("}")]))
            out.append((labels, float(ln.rsplit(" ", 1)[1])))
    return out


def test_metrics_name_the_verified_peer_and_the_security_policy(mesh):
    env = mesh("PERMISSIVE")
    via_mesh = redis_py(VIP, env.a_redis)
    assert via_mesh.set("m", "1") is True
    plain = redis_py(INGRESS, env.b_redis)
    assert plain.get("m") == b"1"
    plain.close()
    via_mesh.close()
    reqs = istio_series(env.b, "istio_requests_total")
    by_policy = {}
    for labels, v in reqs:
        key = (labels["source_principal"], labels["connection_security_policy"])
        by_policy[key] = by_policy.get(key, 0) + v
    assert by_policy.get((CLIENT_ID, "mutual_tls"), 0) >= 1, reqs
    assert by_policy.get(("unknown", "none"), 0) >= 1, reqs
    # The client side keeps its own identity's labels (reporter source, no TLS downstream).
    a = {(lb["source_principal"], lb["connection_security_policy"])
         for lb, _ in istio_series(env.a, "istio_requests_total")}
    assert (CLIENT_ID, "mutual_tls") not in a
    wait_until(lambda: any(lb["source_principal"] == CLIENT_ID
                           and lb["connection_security_policy"] == "mutual_tls" and v >= 1
                           for lb, v in istio_series(env.b, "istio_tcp_connections_opened_total")),
               5, "the mTLS connection counted under its peer")


def test_auto_mtls_by_the_endpoints_tls_mode_label(tmp_path, redis_factory, config_dir,
                                                   meltemi_factory):
    """No DestinationRule tls: an endpoint labelled security.istio.io/tlsMode: istio gets
    ISTIO_MUTUAL (here a STRICT server-side meltemi), an unlabelled one plain text (a bare
    redis-server); a plain TCP port relays, so connections take the endpoints in turn."""
    ca = Ca(tmp_path / "pki", name="mesh-root")
    a_dir = istio_dir(ca, tmp_path / "certs-a", "client", CLIENT_ID)
    b_dir = istio_dir(ca, tmp_path / "certs-b", "server", SERVER_ID)
    behind_b, bare = redis_factory(), redis_factory()
    b_port = free_port(INGRESS)
    b = meltemi_factory(config_dir({
        "sidecar.yaml": server_sidecar(b_port, behind_b.port, redis_name="tcp-raw"),
        "pa.yaml": peer_authentication("STRICT")}), log_level="debug",
        extra_args=["--istio-certs", str(b_dir)])
    a_port = free_port(VIP)
    se = me.service_entry("redis-mesh", REDIS_HOST, VIP, a_port, "tcp-raw",
                          [(INGRESS, b_port, {"security.istio.io/tlsMode": "istio"}),
                           ("127.0.0.1", bare.port, {})], namespace="redis")
    a = meltemi_factory(config_dir({"se.yaml": se}), extra_args=["--istio-certs", str(a_dir)])
    for i in range(6):
        c = redis_py(VIP, a_port)
        assert c.set(f"k{i}", "v") is True
        c.close()
    got_b = sum(1 for i in range(6) if behind_b.client().get(f"k{i}") == b"v")
    got_bare = sum(1 for i in range(6) if bare.client().get(f"k{i}") == b"v")
    assert got_b >= 2 and got_bare >= 2 and got_b + got_bare == 6, (got_b, got_bare)
    wait_until(lambda: principal_logged(b, CLIENT_ID), 5, "the labelled endpoint got mTLS")
    assert metric(a, "meltemi_upstream_tls_handshake_failures_total") == 0
    # Without the workload's files, auto-mTLS is off (a warning), and the rest still loads.
    se2 = me.service_entry("redis-mesh", REDIS_HOST, VIP, free_port(VIP), "tcp-raw",
                           [(INGRESS, b_port, {"security.istio.io/tlsMode": "istio"})],
                           namespace="redis")
    a2 = meltemi_factory(config_dir({"se.yaml": se2}),
                         extra_args=["--istio-certs", str(tmp_path / "no-certs")])
    assert "auto mTLS off (plain text)" in a2.stderr()


def test_port_level_disable_keeps_one_port_plain(mesh):
    env = mesh("STRICT", port_modes={"dubbo": "DISABLE"}, dubbo=True)
    consumer = me.DubboConsumer(env.tmp, f"{INGRESS}:{env.b_dubbo}")  # plain, straight to B
    try:
        got = consumer.call(IFACE, "sayHello", args=["plain"], n=2)
        assert all(r["ok"] for r in got["results"]), got
    finally:
        consumer.close()
    plain = RespConn(INGRESS, env.b_redis, timeout=3)
    plain.send_raw(b"PING\r\n")
    assert plain.closed_by_peer(timeout=5)


def test_wrong_san_unknown_ca_and_expired_peers_are_refused(mesh):
    env = mesh("STRICT", client_sans=["spiffe://cluster.local/ns/redis/sa/someone-else"])
    r = RespConn(VIP, env.a_redis).call("GET", "x")
    assert isinstance(r, str) and "match none of subjectAltNames" in r, r
    assert "URI:" + SERVER_ID in env.a.stderr()
    # A client certificate from another CA, straight to the server side.
    other = Ca(env.tmp / "other", name="other-root")
    ocert, okey = other.issue("intruder", uris=[spiffe("evil", "intruder")])
    assert refused(env.b_redis, ocert, okey, env.ca.cert)
    wait_until(lambda: "unable to get local issuer certificate" in env.b.stderr(), 5,
               "unknown CA logged on the server side")
    # An expired client certificate from the right CA.
    ecert, ekey = env.ca.issue("expired-client", uris=[CLIENT_ID], expired=True)
    assert refused(env.b_redis, ecert, ekey, env.ca.cert)
    wait_until(lambda: "certificate has expired" in env.b.stderr(), 5, "expiry logged")
    # A certificate without a SPIFFE identity is not an Istio workload.
    ncert, nkey = env.ca.issue("no-spiffe", dns=["client.test"])
    assert refused(env.b_redis, ncert, nkey, env.ca.cert)
    wait_until(lambda: "no SPIFFE identity" in env.b.stderr(), 5, "missing SPIFFE logged")
    assert metric(env.b, "meltemi_tls_handshake_failures_total") >= 3


def test_rotation_new_handshakes_use_new_files_established_keep_working(mesh):
    env = mesh("STRICT")
    first = redis_py(VIP, env.a_redis)
    assert first.set("r", "0") is True
    wait_until(lambda: principal_logged(env.b, CLIENT_ID), 5, "first identity")
    b_conns = metric(env.b, "meltemi_downstream_connections_total")

    # Load during the rotation: one client keeps writing and reading; nothing may fail.
    stop = threading.Event()
    failures, done = [], [0]

    def load():
        c = redis_py(VIP, env.a_redis)
        while not stop.is_set() and done[0] < 20000:
            try:
                c.incr("counter")
                done[0] += 1
            except Exception as exc:  # counted, asserted below
                failures.append(repr(exc))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    wait_until(lambda: done[0] > 50, 10, "load running")
    v2 = spiffe("app", "client-v2")
    istio_dir(env.ca, env.a_dir, "client-v2", v2)  # the client side's new identity
    istio_dir(env.ca, env.b_dir, "server-v2", spiffe("redis", "server-v2"))
    for m in (env.a, env.b):
        wait_until(lambda m=m: "TLS certificate files changed): generation 2 is live" in m.stderr(),
                   10, "rotation picked up")
    before = done[0]
    wait_until(lambda: done[0] > before + 50, 10, "load continues after the rotation")
    stop.set()
    t.join(10)
    assert failures == []
    # The established connections were kept: no new A->B connection for the old clients.
    assert first.get("r") == b"0"
    assert metric(env.b, "meltemi_downstream_connections_total") == b_conns + 1  # the load's
    # A new client means a new A->B connection: it presents the new certificate ...
    second = redis_py(VIP, env.a_redis)
    assert second.get("r") == b"0"
    wait_until(lambda: principal_logged(env.b, v2), 5, "the new identity on a new handshake")
    # ... and the server side presents its new one to new clients.
    cert, reply = direct_tls(env.b_redis, env.a_dir / "cert-chain.pem", env.a_dir / "key.pem",
                             env.ca.cert)
    assert ("URI", spiffe("redis", "server-v2")) in cert["subjectAltName"]
    assert reply == b"+PONG\r\n"


def test_rotation_to_an_expired_certificate_is_refused_by_the_peer(mesh):
    env = mesh("STRICT")
    istio_dir(env.ca, env.a_dir, "client-expired", CLIENT_ID, expired=True)
    wait_until(lambda: "TLS certificate files changed): generation 2 is live" in env.a.stderr(),
               10, "rotation picked up")
    r = RespConn(VIP, env.a_redis).call("GET", "x")
    assert isinstance(r, str) and r.startswith("ERR"), r
    wait_until(lambda: "certificate has expired" in env.b.stderr(), 5, "B logged the expiry")
