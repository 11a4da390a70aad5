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
