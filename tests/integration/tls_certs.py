"""
tls_certs.py - certificates for the TLS tests, made with the openssl command line (no fixed
test keys in the tree): a CA, and leaf certificates it signs with the SANs a test needs
(DNS names, IP addresses, SPIFFE URIs), valid now or already expired.
"""

import subprocess
from pathlib import Path


def _run(*args, cwd=None):
    r = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60,
                       cwd=cwd)
    if r.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r


class Ca:
    """A self-signed CA in dir/<name>.crt and dir/<name>.key."""

    def __init__(self, directory, name="ca"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.cert = self.dir / f"{name}.crt"
        self.key = self.dir / f"{name}.key"
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "30",
             "-subj", f"/CN=meltemi test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self._serial = 1

    def issue(self, name, dns=(), ips=(), uris=(), expired=False, client=True, server=True):
        """Signs a leaf for the SANs; returns (cert path, key path). expired: valid only
        in January 2020."""
        key = self.dir / f"{name}.key"
        csr = self.dir / f"{name}.csr"
        cert = self.dir / f"{name}.crt"
        _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips] + [f"URI:{u}" for u in uris]
        usage = ",".join(u for u, on in (("serverAuth", server), ("clientAuth", client)) if on)
        ext = self.dir / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature",
                 f"extendedKeyUsage={usage}"]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        self._serial += 1
        if not expired:
            _run("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                 "-set_serial", self._serial, "-days", "30", "-out", cert, "-extfile", ext)
        else:
            self._sign_expired(csr, cert, ext)
        return cert, key

    def _sign_expired(self, csr, cert, ext):
        """`openssl ca` is the one that takes explicit start and end dates."""
        db = self.dir / "ca-db"
        db.mkdir(exist_ok=True)
        (db / "index.txt").write_text("")
        (db / "serial").write_text(f"{self._serial:04X}\n")
        conf = db / "ca.cnf"
        conf.write_text(f"""[ca]
default_ca = test
[test]
dir = {db}
database = {db}/index.txt
serial = {db}/serial
new_certs_dir = {db}
certificate = {self.cert}
private_key = {self.key}
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
""")
        _run("ca", "-batch", "-config", conf, "-in", csr, "-out", cert, "-notext",
             "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-extfile", ext)

    def crl(self, revoked=(), name="crl"):
        """A certificate revocation list signed by this CA listing the certificates revoked
        (paths); returns its path (PEM)."""
        db = self.dir / f"{name}-db"
        db.mkdir(exist_ok=True)
        (db / "index.txt").write_text("")
        (db / "crlnumber").write_text("01\n")
        conf = db / "ca.cnf"
        conf.write_text(f"""[ca]
default_ca = test
[test]
dir = {db}
database = {db}/index.txt
crlnumber = {db}/crlnumber
certificate = {self.cert}
private_key = {self.key}
default_md = sha256
default_crl_days = 30
unique_subject = no
""")
        for cert in revoked:
            _run("ca", "-batch", "-config", conf, "-revoke", cert)
        out = self.dir / f"{name}.pem"
        _run("ca", "-batch", "-config", conf, "-gencrl", "-out", out)
        return out


def spiffe(ns, sa, trust_domain="cluster.local"):
    return f"spiffe://{trust_domain}/ns/{ns}/sa/{sa}"


class TlsRedisServer:
    """redis-server with a plain port (the test's own checks) and a TLS port (the one meltemi
    is pointed at) with the certificate, key and CA given. auth_clients: redis asks for and
    verifies client certificates (tls-auth-clients yes)."""

    def __init__(self, workdir, cert, key, ca, auth_clients=False, name="redis-tls"):
        from harness import RedisServer, free_port
        self.tls_port = free_port()
        self.plain = RedisServer(workdir, name=name, extra_args=[
            "--tls-port", self.tls_port, "--tls-cert-file", cert, "--tls-key-file", key,
            "--tls-ca-cert-file", ca, "--tls-auth-clients", "yes" if auth_clients else "no"])
        self.host = "127.0.0.1"

    def start(self):
        self.plain.start()
        return self

    def client(self):
        return self.plain.client()

    def log(self):
        return self.plain.log.read_text(errors="replace")

    def kill(self):
        self.plain.kill()
