"""
test_tls_pins_sni.py - client certificate pinning (ServerTLSSettings verifyCertificateSpki /
verifyCertificateHash) and a Gateway port whose TLS servers lead to different services,
chosen by the SNI the client sends. Real clients (redis-cli --tls --sni, openssl s_client
-servername), real redis-servers, certificates made by the test (tls_certs.py).
"""

import base64
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import configs  # noqa: E402
import meta_env as me  # noqa: E402
import thrift_peers as tp  # noqa: E402
from harness import VIP, free_port, wait_until  # noqa: E402
from test_tls import INGRESS, metric, redis_cli_tls, s_client, sidecar  # noqa: E402
from tls_certs import Ca  # noqa: E402


@pytest.fixture
def pki(tmp_path):
    ca = Ca(tmp_path / "pki")
    return {"ca": ca, "server": ca.issue("redis-server", dns=["redis.test"], ips=[INGRESS]),
            "pinned": ca.issue("pinned-client", dns=["pinned.test"]),
            "other": ca.issue("other-client", dns=["other.test"])}


def der_of(cert_path):
    r = subprocess.run(["openssl", "x509", "-in", str(cert_path), "-outform", "DER"],
                       capture_output=True, check=True, timeout=10)
    return r.stdout


def spki_of(cert_path):
    pub = subprocess.run(["openssl", "x509", "-in", str(cert_path), "-noout", "-pubkey"],
                         capture_output=True, check=True, timeout=10).stdout
    r = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                       capture_output=True, check=True, timeout=10)
    return r.stdout


def pinned_ingress(pki, redis_factory, config_dir, meltemi_factory, pin_yaml):
    cert, key = pki["server"]
    redis = redis_factory()
    port = free_port(INGRESS)
    m = meltemi_factory(config_dir({"sidecar.yaml": sidecar(port, redis.port, f"""
mode: MUTUAL
serverCertificate: {cert}
privateKey: {key}
caCertificates: {pki['ca'].cert}
{pin_yaml}
""")}))
    return port, m


@pytest.mark.parametrize("kind", ["spki", "hash"])
def test_pinned_client_certificate_is_accepted_and_another_of_the_same_ca_refused(
        kind, pki, redis_factory, config_dir, meltemi_factory):
    pcert, pkey = pki["pinned"]
    if kind == "spki":
        pin = "verifyCertificateSpki: [" + base64.b64encode(
            hashlib.sha256(spki_of(pcert)).digest()).decode() + "]"
    else:
        h = hashlib.sha256(der_of(pcert)).hexdigest().upper()
        pin = 'verifyCertificateHash: ["' + ":".join(h[i:i + 2] for i in range(0, 64, 2)) + '"]'
    port, m = pinned_ingress(pki, redis_factory, config_dir, meltemi_factory, pin)
    assert "not pinned" not in m.stderr()
    r = redis_cli_tls(port, "PING", ca=pki["ca"].cert, cert=pcert, key=pkey)
    assert r.stdout.strip() == "PONG", r.stderr
    ocert, okey = pki["other"]
    r = redis_cli_tls(port, "PING", ca=pki["ca"].cert, cert=ocert, key=okey)
    assert "PONG" not in r.stdout
    wait_until(lambda: "matches no pin of verifyCertificateSpki / verifyCertificateHash"
               in m.stderr(), 5, "the refusal logged with its reason")
    assert metric(m, "meltemi_tls_handshake_failures_total") >= 1


def test_a_malformed_pin_is_refused_with_the_field_named(pki, config_dir, meltemi_factory):
    cert, key = pki["server"]
    conf = config_dir({"s.yaml": sidecar(free_port(INGRESS), 1234, f"""
mode: MUTUAL
serverCertificate: {cert}
privateKey: {key}
caCertificates: {pki['ca'].cert}
verifyCertificateHash: ["12:34"]
""")})
    m = meltemi_factory(conf, wait_ready=False)
    assert m.proc.wait(timeout=15) != 0
    assert "verifyCertificateHash" in m.stderr() and "64 digits" in m.stderr()


# ---- a Gateway port routed by SNI ---------------------------------------------------------

def sni_gateway(pki, redis_factory, config_dir, meltemi_factory):
    """One Gateway port, three TLS servers: a.gw.test -> Redis service A, b.gw.test -> Redis
    service B, raw.gw.test -> a plain TCP service relayed to a third redis-server."""
    ca = pki["ca"]
    certs = {n: ca.issue(f"{n}-gw", dns=[f"{n}.gw.test"]) for n in ("a", "b", "raw")}
    redis = {n: redis_factory() for n in ("a", "b", "raw")}
    gport = free_port(INGRESS)
    files = {
        "se-a.yaml": configs.service_entry("svc-a", VIP, free_port(VIP), redis["a"].port),
        "se-b.yaml": configs.service_entry("svc-b", VIP, free_port(VIP), redis["b"].port),
        "se-raw.yaml": configs.service_entry("svc-raw", VIP, free_port(VIP), redis["raw"].port,
                                             port_name="tcp-raw"),
    }
    servers = ""
    for n, svc, pname in (("a", "svc-a", "tcp-redis"), ("b", "svc-b", "tcp-redis"),
                          ("raw", "svc-raw", "tcp-raw")):
        cert, key = certs[n]
        servers += f"""\
  - port: {{number: {gport}, name: {pname}, protocol: TLS}}
    bind: {INGRESS}
    hosts: [redis/{svc}.redis.svc.cluster.local, {n}.gw.test]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
"""
    files["gw.yaml"] = f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: sni-gw
  namespace: redis
spec:
  servers:
{servers}"""
    m = meltemi_factory(config_dir(files))
    return gport, redis, m


def test_one_gateway_port_routes_to_two_services_by_sni(pki, redis_factory, config_dir,
                                                         meltemi_factory):
    gport, redis, m = sni_gateway(pki, redis_factory, config_dir, meltemi_factory)
    ca = pki["ca"].cert
    r = redis_cli_tls(gport, "SET", "k", "to-a", ca=ca, sni="a.gw.test")
    assert r.stdout.strip() == "OK", r.stderr
    r = redis_cli_tls(gport, "SET", "k", "to-b", ca=ca, sni="b.gw.test")
    assert r.stdout.strip() == "OK", r.stderr
    assert redis["a"].client().get("k") == b"to-a"
    assert redis["b"].client().get("k") == b"to-b"
    r = redis_cli_tls(gport, "GET", "k", ca=ca, sni="b.gw.test")
    assert r.stdout.strip() == "to-b", r.stderr
    # The certificate is the server's (openssl verifies it against the SNI it sent), and the
    # command sent right after the handshake reaches the service the SNI named.
    got = s_client(gport, b"GET k\r\n", "-servername", "a.gw.test", "-verify_hostname",
                   "a.gw.test", ca=ca, expect=b"to-a")
    assert got == b"$4\r\nto-a\r\n"
    # A plain TCP service behind the same port: bytes relayed to its own redis-server.
    got = s_client(gport, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\nto-raw\r\n", "-servername",
                   "raw.gw.test", "-verify_hostname", "raw.gw.test", ca=ca, expect=b"+OK")
    assert got == b"+OK\r\n"
    assert redis["raw"].client().get("k") == b"to-raw"
    assert redis["a"].client().get("k") == b"to-a"


def test_an_unknown_or_missing_sni_is_refused_with_a_reason(pki, redis_factory, config_dir,
                                                           meltemi_factory):
    gport, redis, m = sni_gateway(pki, redis_factory, config_dir, meltemi_factory)
    ca = pki["ca"].cert
    before = metric(m, "meltemi_tls_handshake_failures_total")
    r = redis_cli_tls(gport, "SET", "k", "lost", ca=ca, sni="c.gw.test")
    assert "OK" not in r.stdout
    wait_until(lambda: 'SNI "c.gw.test" names no server of this port' in m.stderr(), 5,
               "the refusal logged")
    got = s_client(gport, b"PING\r\n", "-noservername", ca=ca, expect=b"+PONG")
    assert b"PONG" not in got
    wait_until(lambda: "the client sent no SNI" in m.stderr(), 5, "no SNI logged")
    wait_until(lambda: metric(m, "meltemi_tls_handshake_failures_total") >= before + 2, 5,
               "both refusals counted")
    for n in ("a", "b", "raw"):
        assert redis[n].client().get("k") is None


def test_servers_sharing_a_port_must_verify_clients_alike(pki, config_dir, meltemi_factory):
    cert, key = pki["server"]
    gport = free_port(INGRESS)
    files = {
        "se-a.yaml": configs.service_entry("svc-a", VIP, free_port(VIP), 1234),
        "se-b.yaml": configs.service_entry("svc-b", VIP, free_port(VIP), 1235),
        "gw.yaml": f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: sni-gw
  namespace: redis
spec:
  servers:
  - port: {{number: {gport}, name: tcp-redis}}
    bind: {INGRESS}
    hosts: [redis/svc-a.redis.svc.cluster.local]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
  - port: {{number: {gport}, name: tcp-redis}}
    bind: {INGRESS}
    hosts: [redis/svc-b.redis.svc.cluster.local]
    tls: {{mode: MUTUAL, serverCertificate: {cert}, privateKey: {key},
           caCertificates: {pki['ca'].cert}}}
""",
    }
    m = meltemi_factory(config_dir(files), wait_ready=False)
    assert m.proc.wait(timeout=15) != 0
    assert "share one TLS handshake" in m.stderr()


@pytest.fixture(scope="module")
def thrift_gen(tmp_path_factory):
    return tp.generate(tmp_path_factory.mktemp("thrift-gen"))


def test_a_thrift_service_and_a_redis_service_share_a_gateway_port(
        pki, thrift_gen, tmp_path, redis_factory, config_dir, meltemi_factory):
    ca = pki["ca"]
    rcert, rkey = ca.issue("r-gw", dns=["r.gw.test"])
    tcert, tkey = ca.issue("t-gw", dns=["t.gw.test"])
    redis = redis_factory()
    server = me.ThriftServer(tmp_path / "peers", thrift_gen, "behind-sni", free_port()).start()
    try:
        gport = free_port(INGRESS)
        thrift_host = "thrift-sni.meta.svc.cluster.local"
        files = {
            "se-r.yaml": configs.service_entry("svc-r", VIP, free_port(VIP), redis.port),
            "se-t.yaml": me.service_entry("thrift-sni", thrift_host, VIP, free_port(VIP),
                                          "tcp-metaprotocol-thrift-hello",
                                          [("127.0.0.1", server.port, {})]),
            "gw.yaml": f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mixed-gw
  namespace: redis
spec:
  servers:
  - port: {{number: {gport}, name: tcp-redis}}
    bind: {INGRESS}
    hosts: [redis/svc-r.redis.svc.cluster.local, r.gw.test]
    tls: {{mode: SIMPLE, serverCertificate: {rcert}, privateKey: {rkey}}}
  - port: {{number: {gport}, name: tcp-metaprotocol-thrift-hello}}
    bind: {INGRESS}
    hosts: [meta/{thrift_host}, t.gw.test]
    tls: {{mode: SIMPLE, serverCertificate: {tcert}, privateKey: {tkey}}}
""",
        }
        meltemi_factory(config_dir(files))
        c = tp.Client(thrift_gen, INGRESS, gport, ssl_ca=ca.cert, server_hostname="t.gw.test")
        try:
            assert [c.hello(f"s{i}").server for i in range(3)] == ["behind-sni"] * 3
        finally:
            c.close()
        assert len(server.records("request")) == 3
        r = redis_cli_tls(gport, "SET", "k", "redis-side", ca=ca.cert, sni="r.gw.test")
        assert r.stdout.strip() == "OK", r.stderr
        assert redis.client().get("k") == b"redis-side"
    finally:
        server.stop()


def test_a_reload_turns_a_one_service_port_into_one_routed_by_sni_without_closing_clients(
        pki, redis_factory, config_dir, meltemi_factory):
    import socket
    import ssl
    from test_reload import post_reload
    ca = pki["ca"]
    acert, akey = ca.issue("a-gw", dns=["a.gw.test"])
    bcert, bkey = ca.issue("b-gw", dns=["b.gw.test"])
    ra, rb = redis_factory(), redis_factory()
    gport = free_port(INGRESS)
    files = {
        "se-a.yaml": configs.service_entry("svc-a", VIP, free_port(VIP), ra.port),
        "se-b.yaml": configs.service_entry("svc-b", VIP, free_port(VIP), rb.port),
    }

    def gateway(servers):
        body = ""
        for svc, name, cert, key in servers:
            body += f"""\
  - port: {{number: {gport}, name: tcp-redis}}
    bind: {INGRESS}
    hosts: [redis/{svc}.redis.svc.cluster.local, {name}]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
"""
        return ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n"
                "  namespace: redis\nspec:\n  servers:\n" + body)

    files["gw.yaml"] = gateway([("svc-a", "a.gw.test", acert, akey)])
    conf = config_dir(files)
    m = meltemi_factory(conf)
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    old = ctx.wrap_socket(socket.create_connection((INGRESS, gport), timeout=5),
                          server_hostname="a.gw.test")
    old.sendall(b"SET k before\r\n")
    assert old.recv(100) == b"+OK\r\n"
    (conf / "gw.yaml").write_text(gateway([("svc-a", "a.gw.test", acert, akey),
                                           ("svc-b", "b.gw.test", bcert, bkey)]))
    status, body = post_reload(m)
    assert status == 200, body
    r = redis_cli_tls(gport, "SET", "k", "to-b", ca=ca.cert, sni="b.gw.test")
    assert r.stdout.strip() == "OK", r.stderr
    assert rb.client().get("k") == b"to-b"
    # The client connected before the reload is still served, by the service it had.
    old.sendall(b"GET k\r\n")
    assert old.recv(100) == b"$6\r\nbefore\r\n"
    old.close()
    r = redis_cli_tls(gport, "GET", "k", ca=ca.cert, sni="a.gw.test")
    assert r.stdout.strip() == "before", r.stderr
