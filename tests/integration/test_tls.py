"""
test_tls.py - TLS on both sides of meltemi with real peers: redis-server's TLS port upstream
(DestinationRule trafficPolicy.tls SIMPLE / MUTUAL / credentialName), redis-cli --tls,
redis-py ssl=True and Python's ssl module downstream (Sidecar ingress tls: SIMPLE, MUTUAL,
ALPN, SNI certificate choice), and the refusals (unknown CA, wrong SAN, expired), each with
its logged reason and counter. Certificates are made by the test with openssl (tls_certs.py).
"""

import os
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import configs  # noqa: E402
import meta_env as me  # noqa: E402
import thrift_peers as tp  # noqa: E402
from harness import VIP, RespConn, free_port, redis_py, stop_pid, wait_until  # noqa: E402
from tls_certs import Ca, TlsRedisServer  # noqa: E402

HOST = "redis-tls.redis.svc.cluster.local"
# Ingress listeners bind here: ports picked on 127.0.0.1 could collide with admin ports.
INGRESS = "127.0.0.13"


@pytest.fixture
def pki(tmp_path):
    """A CA, a redis server certificate (DNS redis.test, IP 127.0.0.1), a client certificate,
    and a second, unrelated CA."""
    ca = Ca(tmp_path / "pki")
    other = Ca(tmp_path / "pki-other", name="other-ca")
    srv = ca.issue("redis-server", dns=["redis.test"], ips=["127.0.0.1", INGRESS])
    cli = ca.issue("meltemi-client", dns=["meltemi.test"])
    return {"ca": ca, "other": other, "server": srv, "client": cli, "dir": tmp_path / "pki"}


@pytest.fixture
def tls_redis(tmp_path):
    servers = []

    def start(cert, key, ca, auth_clients=False):
        s = TlsRedisServer(tmp_path, cert, key, ca, auth_clients=auth_clients).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.kill()


def destination_rule(tls_yaml, host=HOST):
    body = "\n".join("      " + ln for ln in tls_yaml.strip().splitlines())
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: redis-tls
  namespace: redis
spec:
  host: {host}
  trafficPolicy:
    tls:
{body}
"""


def upstream_env(config_dir, meltemi_factory, redis, tls_yaml, extra=None):
    port = free_port(VIP)
    files = {
        "se.yaml": configs.service_entry("redis-tls", VIP, port, redis.tls_port),
        "dr.yaml": destination_rule(tls_yaml),
    }
    files.update(extra or {})
    m = meltemi_factory(config_dir(files))
    return port, m


def metric(m, name):
    status, body = m.http_get("/stats/prometheus")
    assert status == 200
    total = 0
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---- upstream ------------------------------------------------------------------------------

def test_upstream_simple_tls_to_redis_tls_port(pki, tls_redis, config_dir, meltemi_factory):
    cert, key = pki["server"]
    redis = tls_redis(cert, key, pki["ca"].cert)
    port, m = upstream_env(config_dir, meltemi_factory, redis, f"""
mode: SIMPLE
caCertificates: {pki['ca'].cert}
sni: redis.test
""")
    c = redis_py(VIP, port)
    assert c.set("k", "over-tls") is True
    assert c.get("k") == b"over-tls"
    # The value really reached the server (read back on its plain port).
    assert redis.client().get("k") == b"over-tls"
    assert metric(m, "meltemi_upstream_tls_handshake_failures_total") == 0


def test_upstream_mutual_tls_presents_the_client_certificate(pki, tls_redis, config_dir,
                                                             meltemi_factory):
    cert, key = pki["server"]
    redis = tls_redis(cert, key, pki["ca"].cert, auth_clients=True)
    ccert, ckey = pki["client"]
    port, m = upstream_env(config_dir, meltemi_factory, redis, f"""
mode: MUTUAL
caCertificates: {pki['ca'].cert}
clientCertificate: {ccert}
privateKey: {ckey}
subjectAltNames: [redis.test]
""")
    c = redis_py(VIP, port)
    for i in range(20):
        assert c.set(f"m{i}", str(i)) is True
    assert c.mget([f"m{i}" for i in range(20)]) == [str(i).encode() for i in range(20)]


def test_upstream_simple_against_a_server_that_wants_a_client_certificate(
        pki, tls_redis, config_dir, meltemi_factory):
    cert, key = pki["server"]
    redis = tls_redis(cert, key, pki["ca"].cert, auth_clients=True)
    port, m = upstream_env(config_dir, meltemi_factory, redis, f"""
mode: SIMPLE
caCertificates: {pki['ca'].cert}
""")
    # TLS 1.3: the client's handshake ends before the server checks the certificate, so the
    # server's refusal arrives after the first write: as its alert ("certificate required")
    # or, when the reset wins the race, as a failed write. Either way nothing is served.
    r = RespConn(VIP, port).call("SET", "x", "1")
    assert isinstance(r, str) and r.startswith("ERR meltemi: upstream"), r
    assert "certificate required" in r or "reset" in r, r
    assert redis.client().get("x") is None


def test_upstream_credential_name_secret(pki, tls_redis, config_dir, meltemi_factory):
    cert, key = pki["server"]
    redis = tls_redis(cert, key, pki["ca"].cert, auth_clients=True)
    ccert, ckey = pki["client"]

    def indent(path):
        return "\n".join("    " + ln for ln in path.read_text().splitlines())
    secret = f"""\
apiVersion: v1
kind: Secret
metadata:
  name: redis-client-tls
  namespace: redis
type: kubernetes.io/tls
stringData:
  tls.crt: |
{indent(ccert)}
  tls.key: |
{indent(ckey)}
  ca.crt: |
{indent(pki['ca'].cert)}
"""
    port, m = upstream_env(config_dir, meltemi_factory, redis, """
mode: MUTUAL
credentialName: redis-client-tls
sni: redis.test
""", extra={"secret.yaml": secret})
    c = redis_py(VIP, port)
    assert c.set("cred", "ok") is True
    assert redis.client().get("cred") == b"ok"
    # The private key never shows in the config dump.
    status, body = m.http_get("/config_dump")
    assert status == 200
    assert "PRIVATE KEY" not in body


@pytest.mark.parametrize("case", ["unknown_ca", "wrong_san", "expired", "wrong_sni"])
def test_upstream_refuses_a_bad_server_certificate(case, pki, tls_redis, config_dir,
                                                   meltemi_factory):
    ca = pki["ca"]
    cert, key = pki["server"]
    tls = f"mode: SIMPLE\ncaCertificates: {ca.cert}\n"
    expect = None
    if case == "unknown_ca":
        tls = f"mode: SIMPLE\ncaCertificates: {pki['other'].cert}\n"
        # redis sends its CA along with its certificate: the chain ends in a root we lack
        expect = "self-signed certificate in certificate chain"
    elif case == "wrong_san":
        tls += "subjectAltNames: [other.test, spiffe://cluster.local/ns/a/sa/b]\n"
        expect = "match none of subjectAltNames"
    elif case == "expired":
        cert, key = ca.issue("expired-server", dns=["redis.test"], expired=True)
        expect = "certificate has expired"
    else:
        tls += "sni: not-redis.test\n"
        expect = "hostname mismatch"
    redis = tls_redis(cert, key, ca.cert)
    port, m = upstream_env(config_dir, meltemi_factory, redis, tls)
    r = RespConn(VIP, port).call("SET", "never", "written")
    assert isinstance(r, str) and r.startswith("ERR") or "unavailable" in r, r
    wait_until(lambda: expect in m.stderr(), 5, f"the refusal logged ({expect}): {r}\n{m.stderr()}")
    assert metric(m, "meltemi_upstream_tls_handshake_failures_total") >= 1
    assert redis.client().get("never") is None


def test_upstream_sessions_resume_on_new_connections(pki, tls_redis, config_dir, meltemi_factory):
    cert, key = pki["server"]
    redis = tls_redis(cert, key, pki["ca"].cert)
    port, m = upstream_env(config_dir, meltemi_factory, redis, f"""
mode: SIMPLE
caCertificates: {pki['ca'].cert}
sni: redis.test
""")
    c = redis_py(VIP, port)
    assert c.set("a", "1") is True
    for round_ in range(3):
        # The server drops meltemi's connection; the next command connects anew and resumes.
        admin = redis.client()
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        wait_until(lambda: _get_or_none(c, "a") == b"1", 5, "meltemi reconnected")
    assert metric(m, "meltemi_upstream_tls_resumed_total") >= 1


def _get_or_none(c, k):
    try:
        return c.get(k)
    except Exception:
        return None


# ---- downstream ----------------------------------------------------------------------------

def sidecar(port, endpoint_port, tls_yaml, name="tcp-redis"):
    body = "\n".join("      " + ln for ln in tls_yaml.strip().splitlines())
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata:
  name: tls-ingress
  namespace: redis
spec:
  ingress:
  - port:
      number: {port}
      name: {name}
    bind: {INGRESS}
    defaultEndpoint: 127.0.0.1:{endpoint_port}
    tls:
{body}
"""


@pytest.fixture
def ingress(redis_factory, config_dir, meltemi_factory, pki):
    def start(tls_yaml, name="tcp-redis"):
        redis = redis_factory()
        port = free_port(INGRESS)
        m = meltemi_factory(config_dir({"sidecar.yaml": sidecar(port, redis.port, tls_yaml,
                                                                name=name)}))
        return port, redis, m
    return start


def server_tls(pki, extra=""):
    cert, key = pki["server"]
    return f"mode: SIMPLE\nserverCertificate: {cert}\nprivateKey: {key}\n" + extra


def redis_cli_tls(port, *cmd, ca, cert=None, key=None, sni=None):
    args = ["redis-cli", "--tls", "--cacert", str(ca), "-h", INGRESS, "-p", str(port)]
    if cert:
        args += ["--cert", str(cert), "--key", str(key)]
    if sni:
        args += ["--sni", sni]
    return subprocess.run(args + list(cmd), capture_output=True, text=True, timeout=15)


def test_downstream_tls_with_redis_cli_and_redis_py(pki, ingress):
    port, redis, m = ingress(server_tls(pki))
    r = redis_cli_tls(port, "SET", "d", "from-cli", ca=pki["ca"].cert)
    assert r.stdout.strip() == "OK", r.stderr
    r = redis_cli_tls(port, "GET", "d", ca=pki["ca"].cert)
    assert r.stdout.strip() == "from-cli"
    c = redis_py(INGRESS, port, ssl=True, ssl_ca_certs=str(pki["ca"].cert),
                 ssl_cert_reqs="required")
    assert c.get("d") == b"from-cli"
    pipe = c.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"p{i}", "x" * (i * 50))
    assert all(pipe.execute())
    assert c.get("p199") == b"x" * (199 * 50)
    assert redis.client().get("d") == b"from-cli"
    # A plain-text client on a TLS port gets no Redis reply.
    plain = RespConn(INGRESS, port, timeout=3)
    plain.send_raw(b"PING\r\n")
    assert plain.closed_by_peer(timeout=5)
    wait_until(lambda: metric(m, "meltemi_tls_handshake_failures_total") >= 1, 5,
               "the plain-text client counted")


def test_downstream_large_values_both_ways(pki, ingress):
    port, redis, m = ingress(server_tls(pki))
    c = redis_py(INGRESS, port, ssl=True, ssl_ca_certs=str(pki["ca"].cert))
    big = bytes(range(256)) * 4096  # 1 MiB: many TLS records, several reads
    assert c.set("big", big) is True
    assert c.get("big") == big


def test_downstream_mutual_requires_a_client_certificate(pki, ingress):
    cert, key = pki["server"]
    port, redis, m = ingress(f"""
mode: MUTUAL
serverCertificate: {cert}
privateKey: {key}
caCertificates: {pki['ca'].cert}
""")
    ccert, ckey = pki["client"]
    r = redis_cli_tls(port, "PING", ca=pki["ca"].cert, cert=ccert, key=ckey)
    assert r.stdout.strip() == "PONG", r.stderr
    r = redis_cli_tls(port, "PING", ca=pki["ca"].cert)
    assert "PONG" not in r.stdout
    wait_until(lambda: "peer did not return a certificate" in m.stderr(), 5, "refusal logged")
    # A client certificate from another CA is refused with the reason.
    ocert, okey = pki["other"].issue("stranger", dns=["stranger.test"])
    r = redis_cli_tls(port, "PING", ca=pki["ca"].cert, cert=ocert, key=okey)
    assert "PONG" not in r.stdout
    wait_until(lambda: "unable to get local issuer certificate" in m.stderr(), 5,
               "unknown CA logged")
    assert metric(m, "meltemi_tls_handshake_failures_total") >= 2


def test_downstream_alpn_and_sni_certificate_choice(pki, ingress):
    ca = pki["ca"]
    alt_cert, alt_key = ca.issue("alt-server", dns=["alt.test", "*.alt.test"])
    port, redis, m = ingress(server_tls(pki, f"""alpnProtocols: [redis, resp3]
sniCertificates:
- hosts: [alt.test, "*.alt.test"]
  serverCertificate: {alt_cert}
  privateKey: {alt_key}
"""))

    def handshake(server_name, alpn):
        ctx = ssl.create_default_context(cafile=str(ca.cert))
        ctx.set_alpn_protocols(alpn)
        with socket.create_connection((INGRESS, port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_name) as s:
                cn = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
                s.sendall(b"PING\r\n")
                return cn, s.selected_alpn_protocol(), s.recv(100)

    assert handshake("redis.test", ["resp3", "redis"]) == ("redis-server", "redis", b"+PONG\r\n")
    assert handshake("alt.test", ["resp3"]) == ("alt-server", "resp3", b"+PONG\r\n")
    assert handshake("x.alt.test", ["h2"])[:2] == ("alt-server", None)


def test_downstream_openssl_s_client(pki, ingress):
    import select
    port, redis, m = ingress(server_tls(pki))
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"{INGRESS}:{port}", "-CAfile",
                          str(pki["ca"].cert), "-servername", "redis.test",
                          "-verify_return_error", "-quiet"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(b"PING\r\n")
        p.stdin.flush()
        got = b""
        deadline = time.monotonic() + 10
        while b"+PONG" not in got and time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 0.2)[0]:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                got += chunk
        assert b"+PONG" in got, p.stderr.read1(4096) if p.poll() is not None else got
    finally:
        stop_pid(p)


def test_bad_tls_settings_are_refused_with_a_reason(pki, config_dir, meltemi_factory):
    cert, key = pki["server"]
    _, other_key = pki["client"]
    conf = config_dir({"s.yaml": sidecar(free_port(INGRESS), 1234, f"""
mode: SIMPLE
serverCertificate: {cert}
privateKey: {other_key}
""")})
    m = meltemi_factory(conf, wait_ready=False)
    rc = m.proc.wait(timeout=15)
    assert rc != 0
    err = m.stderr()
    assert re.search(r"certificate and private key: .*mismatch", err), err
    assert "BEGIN" not in err
    missing = config_dir({"s.yaml": sidecar(free_port(INGRESS), 1234, f"""
mode: SIMPLE
serverCertificate: {cert}.missing
privateKey: {key}
""")})
    m2 = meltemi_factory(missing, wait_ready=False)
    assert m2.proc.wait(timeout=15) != 0
    assert "No such file or directory" in m2.stderr()


# ---- RPC: Thrift over TLS ------------------------------------------------------------------

THRIFT_PORT_NAME = "tcp-metaprotocol-thrift-hello"


@pytest.fixture(scope="module")
def thrift_gen(tmp_path_factory):
    return tp.generate(tmp_path_factory.mktemp("thrift-gen"))


def test_thrift_tsslsocket_client_to_a_tls_listener(pki, thrift_gen, tmp_path, config_dir,
                                                   meltemi_factory):
    server = me.ThriftServer(tmp_path / "peers", thrift_gen, "v1", free_port()).start()
    try:
        port = free_port(INGRESS)
        meltemi_factory(config_dir({"sidecar.yaml": sidecar(port, server.port, server_tls(pki),
                                                            name=THRIFT_PORT_NAME)}))
        c = tp.Client(thrift_gen, INGRESS, port, ssl_ca=pki["ca"].cert)
        try:
            replies = [c.hello(f"t{i}") for i in range(5)]
        finally:
            c.close()
        assert [r.server for r in replies] == ["v1"] * 5
        assert len(server.records("request")) == 5
    finally:
        server.stop()


def test_thrift_upstream_over_tls_to_a_tsslserversocket(pki, thrift_gen, tmp_path, config_dir,
                                                         meltemi_factory):
    cert, key = pki["server"]
    server = me.ThriftServer(tmp_path / "peers", thrift_gen, "tls-v1", free_port(),
                             tls=(cert, key)).start()
    try:
        host = "thrift-tls.meta.svc.cluster.local"
        port = free_port(VIP)
        files = {
            "se.yaml": me.service_entry("thrift-tls", host, VIP, port, THRIFT_PORT_NAME,
                                        [("127.0.0.1", server.port, {})]),
            "dr.yaml": destination_rule(f"mode: SIMPLE\ncaCertificates: {pki['ca'].cert}\n"
                                        "sni: redis.test\n", host=host).replace(
                                            "namespace: redis", "namespace: meta"),
        }
        meltemi_factory(config_dir(files))
        c = tp.Client(thrift_gen, VIP, port)
        try:
            assert [c.hello(f"u{i}").server for i in range(3)] == ["tls-v1"] * 3
        finally:
            c.close()
    finally:
        server.stop()


# ---- Gateway: termination and origination on one hop ----------------------------------------

def test_gateway_terminates_and_originates_tls(pki, tls_redis, config_dir, meltemi_factory):
    cert, key = pki["server"]
    redis = tls_redis(cert, key, pki["ca"].cert)
    alt_cert, alt_key = pki["ca"].issue("gw-alt", dns=["alt.gw.test"])
    gport = free_port(INGRESS)
    files = {
        "se.yaml": configs.service_entry("redis-tls", VIP, free_port(VIP), redis.tls_port),
        "dr.yaml": destination_rule(f"mode: SIMPLE\ncaCertificates: {pki['ca'].cert}\n"
                                    "sni: redis.test\n"),
        "gw.yaml": f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: redis-gw
  namespace: redis
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {{number: {gport}, name: redis-tls, protocol: TLS}}
    bind: {INGRESS}
    hosts: [redis/{HOST}]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
  - port: {{number: {gport}, name: redis-tls, protocol: TLS}}
    bind: {INGRESS}
    hosts: [redis/{HOST}, alt.gw.test]
    tls: {{mode: SIMPLE, serverCertificate: {alt_cert}, privateKey: {alt_key}}}
""",
    }
    meltemi_factory(config_dir(files))
    r = redis_cli_tls(gport, "SET", "gw", "both-ways", ca=pki["ca"].cert)
    assert r.stdout.strip() == "OK", r.stderr
    assert redis.client().get("gw") == b"both-ways"
    ctx = ssl.create_default_context(cafile=str(pki["ca"].cert))
    with socket.create_connection((INGRESS, gport), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="alt.gw.test") as s:
            assert dict(x[0] for x in s.getpeercert()["subject"])["commonName"] == "gw-alt"
            s.sendall(b"GET gw\r\n")
            assert s.recv(100) == b"$9\r\nboth-ways\r\n"


# ---- certificate revocation lists (caCrl) ------------------------------------------------------

def test_ca_crl_refuses_revoked_certificates_both_ways(pki, tls_redis, redis_factory, config_dir,
                                                       meltemi_factory):
    ca = pki["ca"]
    cert, key = pki["server"]
    revoked_srv = ca.issue("revoked-server", dns=["redis.test"], ips=["127.0.0.1"])
    revoked_cli = ca.issue("revoked-client", dns=["bad.test"])
    good_crl = ca.crl([revoked_cli[0]], name="crl-clients")
    srv_crl = ca.crl([revoked_srv[0]], name="crl-servers")
    good = tls_redis(cert, key, ca.cert)
    bad = tls_redis(*revoked_srv, ca.cert)
    # Upstream: the revoked server certificate is refused, the other one accepted.
    gport, bport, iport = free_port(VIP), free_port(VIP), free_port(INGRESS)
    redis = redis_factory()
    files = {
        "se.yaml": configs.service_entry("redis-tls", VIP, gport, good.tls_port),
        "se-bad.yaml": configs.service_entry("redis-bad", VIP, bport, bad.tls_port),
        "dr.yaml": destination_rule(f"mode: SIMPLE\ncaCertificates: {ca.cert}\n"
                                    f"sni: redis.test\ncaCrl: {srv_crl}\n"),
        "dr-bad.yaml": destination_rule(f"mode: SIMPLE\ncaCertificates: {ca.cert}\n"
                                        f"sni: redis.test\ncaCrl: {srv_crl}\n",
                                        host="redis-bad.redis.svc.cluster.local")
        .replace("name: redis-tls", "name: redis-bad"),
        "sidecar.yaml": sidecar(iport, redis.port, f"""
mode: MUTUAL
serverCertificate: {cert}
privateKey: {key}
caCertificates: {ca.cert}
caCrl: {good_crl}
"""),
    }
    m = meltemi_factory(config_dir(files))
    assert redis_py(VIP, gport).set("crl", "ok") is True
    assert _get_or_none(redis_py(VIP, bport), "crl") is None  # an error reply, no value
    wait_until(lambda: "certificate revoked" in m.stderr(), 5, "the revoked server refused")
    # Downstream: a revoked client certificate is refused, a valid one served.
    ccert, ckey = pki["client"]
    r = redis_cli_tls(iport, "PING", ca=ca.cert, cert=ccert, key=ckey)
    assert r.stdout.strip() == "PONG", r.stderr
    n = m.stderr().count("certificate revoked")
    r = redis_cli_tls(iport, "PING", ca=ca.cert, cert=revoked_cli[0], key=revoked_cli[1])
    assert "PONG" not in r.stdout
    wait_until(lambda: m.stderr().count("certificate revoked") > n, 5,
               "the revoked client refused")


# ---- keys out of core dumps ------------------------------------------------------------------

def test_private_keys_live_in_the_secure_heap_excluded_from_core_dumps(pki, redis_factory,
                                                                       config_dir,
                                                                       meltemi_factory):
    redis = redis_factory()
    port = free_port(INGRESS)
    m = meltemi_factory(config_dir({"sidecar.yaml": sidecar(port, redis.port, server_tls(pki))}),
                        log_level="debug")
    err = m.stderr()
    assert "TLS: private keys in OpenSSL's secure heap (1024 KiB" in err, err[-2000:]
    used = [int(x) for x in re.findall(r"TLS key parsed \(secure heap: (\d+) bytes in use\)",
                                       err)]
    assert used and used[-1] > 0, "the key's numbers were allocated in the secure heap"
    # The heap is one mapping the kernel leaves out of core dumps (VmFlags "dd").
    smaps = Path(f"/proc/{m.proc.pid}/smaps").read_text()
    found = False
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", smaps):
        size = re.search(r"^Size:\s+(\d+) kB", block, re.M)
        flags = re.search(r"^VmFlags:(.*)$", block, re.M)
        if size and flags and int(size.group(1)) >= 1024 and "dd" in flags.group(1).split():
            found = True
    assert found, "no MADV_DONTDUMP mapping of the secure heap's size"
    assert redis_cli_tls(port, "PING", ca=pki["ca"].cert).stdout.strip() == "PONG"


# ---- the handshake deadline (--tls-handshake-timeout) ----------------------------------------

def test_handshake_timeout_closes_a_silent_client(pki, redis_factory, config_dir,
                                                  meltemi_factory, meltemi_binary):
    redis = redis_factory()
    port = free_port(INGRESS)
    m = meltemi_factory(config_dir({"sidecar.yaml": sidecar(port, redis.port, server_tls(pki))}),
                        extra_args=["--tls-handshake-timeout", "300"])
    silent = RespConn(INGRESS, port, timeout=3)  # connects, never sends a ClientHello
    # 300 ms, not the default 10 s: closed well within the 5 s this waits.
    assert silent.closed_by_peer(timeout=5)
    wait_until(lambda: "TLS handshake not done after 300 ms" in m.stderr(), 5, "logged")
    assert metric(m, "meltemi_tls_handshake_failures_total") >= 1
    # A client that does its handshake in time is served.
    r = redis_cli_tls(port, "PING", ca=pki["ca"].cert)
    assert r.stdout.strip() == "PONG", r.stderr
    for bad in ("0", "soon"):
        p = subprocess.run([str(meltemi_binary), "run", "-c", "/nonexistent",
                            "--tls-handshake-timeout", bad], capture_output=True, text=True,
                           timeout=10)
        assert p.returncode == 2
        assert "--tls-handshake-timeout needs milliseconds" in p.stderr


# ---- plain TCP ports: TLS below the byte relay ------------------------------------------------

# A port name that selects no protocol: meltemi relays the bytes without parsing them, so the
# Redis traffic below only proves that the plaintext crossed the relay intact.
RAW = "tcp-raw"


def listener_protocol(m, port):
    import json
    status, body = m.http_get("/config_dump")
    assert status == 200
    listeners = json.loads(body)["config"]["listeners"]
    found = [ln["protocol"] for ln in (listeners.values() if isinstance(listeners, dict)
                                       else listeners) if ln["port"] == port]
    assert found, body[:2000]
    return found[0]


def s_client(port, request, *extra, ca, expect, host=INGRESS):
    """openssl s_client to host:port sending request; returns what came back once expect
    did (or everything until the server closed)."""
    import select
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"{host}:{port}", "-CAfile",
                          str(ca), "-verify_return_error", "-quiet", *extra],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(request)
        p.stdin.flush()
        got = b""
        deadline = time.monotonic() + 10
        while expect not in got and time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 0.2)[0]:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                got += chunk
        return got
    finally:
        stop_pid(p)


def test_tcp_listener_terminates_tls(pki, ingress):
    port, redis, m = ingress(server_tls(pki), name=RAW)
    assert listener_protocol(m, port) == "tcp"
    r = redis_cli_tls(port, "SET", "raw", "relayed", ca=pki["ca"].cert)
    assert r.stdout.strip() == "OK", r.stderr
    assert redis.client().get("raw") == b"relayed"
    assert s_client(port, b"GET raw\r\n", "-servername", "redis.test", ca=pki["ca"].cert,
                    expect=b"relayed") == b"$7\r\nrelayed\r\n"
    # Many TLS records each way through the relay's back-pressure.
    c = redis_py(INGRESS, port, ssl=True, ssl_ca_certs=str(pki["ca"].cert))
    big = bytes(range(256)) * 8192  # 2 MiB
    assert c.set("big", big) is True
    assert c.get("big") == big
    assert redis.client().get("big") == big
    # A plain-text client on the TLS port reaches nothing: Redis never sees its command.
    plain = RespConn(INGRESS, port, timeout=3)
    plain.send_raw(b"*3\r\n$3\r\nSET\r\n$3\r\nraw\r\n$5\r\nplain\r\n")
    assert plain.closed_by_peer(timeout=5)
    assert redis.client().get("raw") == b"relayed"
    wait_until(lambda: metric(m, "meltemi_tls_handshake_failures_total") >= 1, 5,
               "the plain-text client counted")


def test_tcp_listener_mutual_tls_refuses_a_client_without_certificate(pki, ingress):
    cert, key = pki["server"]
    port, redis, m = ingress(f"""
mode: MUTUAL
serverCertificate: {cert}
privateKey: {key}
caCertificates: {pki['ca'].cert}
""", name=RAW)
    ccert, ckey = pki["client"]
    r = redis_cli_tls(port, "PING", ca=pki["ca"].cert, cert=ccert, key=ckey)
    assert r.stdout.strip() == "PONG", r.stderr
    r = redis_cli_tls(port, "PING", ca=pki["ca"].cert)
    assert "PONG" not in r.stdout
    wait_until(lambda: "peer did not return a certificate" in m.stderr(), 5, "refusal logged")


def test_tcp_cluster_originates_tls(pki, tls_redis, config_dir, meltemi_factory):
    cert, key = pki["server"]
    redis = tls_redis(cert, key, pki["ca"].cert, auth_clients=True)
    ccert, ckey = pki["client"]
    port = free_port(VIP)
    files = {
        "se.yaml": configs.service_entry("redis-tls", VIP, port, redis.tls_port, port_name=RAW),
        "dr.yaml": destination_rule(f"""
mode: MUTUAL
caCertificates: {pki['ca'].cert}
clientCertificate: {ccert}
privateKey: {ckey}
sni: redis.test
"""),
    }
    m = meltemi_factory(config_dir(files))
    assert listener_protocol(m, port) == "tcp"
    c = redis_py(VIP, port)
    assert c.set("out", "sealed") is True
    assert c.get("out") == b"sealed"
    assert redis.client().get("out") == b"sealed"
    big = b"z" * (3 << 20)
    assert c.set("big", big) is True and c.get("big") == big
    # The upstream's EOF reaches the client after what came before it: QUIT's +OK, then EOF.
    q = RespConn(VIP, port, timeout=5)
    q.send_raw(b"QUIT\r\n")
    assert q.closed_by_peer(timeout=5)


def test_tcp_cluster_refuses_an_unknown_server_ca(pki, tls_redis, config_dir, meltemi_factory):
    cert, key = pki["server"]
    redis = tls_redis(cert, key, pki["ca"].cert)
    port = free_port(VIP)
    files = {
        "se.yaml": configs.service_entry("redis-tls", VIP, port, redis.tls_port, port_name=RAW),
        "dr.yaml": destination_rule(f"mode: SIMPLE\ncaCertificates: {pki['other'].cert}\n"),
    }
    m = meltemi_factory(config_dir(files))
    c = RespConn(VIP, port, timeout=5)
    c.send_raw(b"PING\r\n")
    assert c.closed_by_peer(timeout=5)
    # (redis sends its CA along: OpenSSL names that chain's root, which ours is not)
    wait_until(lambda: "peer certificate refused: self-signed certificate in certificate chain"
               in m.stderr(), 5, "the refusal and its reason logged")
    assert metric(m, "meltemi_upstream_tls_handshake_failures_total") >= 1


def test_tcp_gateway_terminates_and_originates_with_openssl(pki, tls_redis, config_dir,
                                                            meltemi_factory):
    cert, key = pki["server"]
    redis = tls_redis(cert, key, pki["ca"].cert)
    gport = free_port(INGRESS)
    files = {
        "se.yaml": configs.service_entry("redis-tls", VIP, free_port(VIP), redis.tls_port,
                                         port_name=RAW),
        "dr.yaml": destination_rule(f"mode: SIMPLE\ncaCertificates: {pki['ca'].cert}\n"
                                    "sni: redis.test\n"),
        "gw.yaml": f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: raw-gw
  namespace: redis
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {{number: {gport}, name: {RAW}, protocol: TCP}}
    bind: {INGRESS}
    hosts: [redis/{HOST}]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
""",
    }
    m = meltemi_factory(config_dir(files))
    assert listener_protocol(m, gport) == "tcp"
    got = s_client(gport, b"SET gw both\r\nGET gw\r\n", "-servername", "redis.test",
                   ca=pki["ca"].cert, expect=b"both\r\n")
    assert got == b"+OK\r\n$4\r\nboth\r\n"
    assert redis.client().get("gw") == b"both"


# ---- a TLS Redis Cluster ---------------------------------------------------------------------

def test_redis_cluster_over_tls(pki, tmp_path, config_dir, meltemi_factory):
    from cluster_fixtures import CLUSTER_HOST, CLUSTER_VIP, RedisCluster, cluster_yaml
    cert, key = pki["server"]
    cluster = RedisCluster(tmp_path / "tls-cluster")
    for n in cluster.nodes:  # plain ports for the fixture's checks, TLS for meltemi and the bus
        n.tls_port = free_port()
        n.extra_args = ["--tls-port", n.tls_port, "--tls-cluster", "yes", "--tls-replication",
                        "yes", "--tls-cert-file", cert, "--tls-key-file", key,
                        "--tls-ca-cert-file", pki["ca"].cert, "--tls-auth-clients", "no"]
    cluster.start()
    try:
        port = free_port(CLUSTER_VIP)
        files = cluster_yaml(cluster, port)
        seeds = "".join(f"  - address: {n.host}\n    ports:\n      tcp-redis: {n.tls_port}\n"
                        for n in cluster.nodes[:3])
        se = files["service-entry.yaml"]
        files["service-entry.yaml"] = se[:se.index("  endpoints:\n") + len("  endpoints:\n")] + seeds
        files["dr.yaml"] = destination_rule(f"mode: SIMPLE\ncaCertificates: {pki['ca'].cert}\n"
                                            "sni: redis.test\n", host=CLUSTER_HOST)
        m = meltemi_factory(config_dir(files))
        c = redis_py(CLUSTER_VIP, port)
        for i in range(60):  # keys on every shard: MOVED-free routing by the TLS CLUSTER SLOTS
            assert c.set(f"k{i}", str(i)) is True
        assert c.mget([f"k{i}" for i in range(60)]) == [str(i).encode() for i in range(60)]
        for i in (0, 17, 42):
            owner = cluster.master_of_slot(cluster.keyslot(f"k{i}"))
            assert owner.call("GET", f"k{i}") == str(i).encode(), "on its shard's master"
        assert metric(m, "meltemi_upstream_tls_handshake_failures_total") == 0
    finally:
        cluster.kill_all()
