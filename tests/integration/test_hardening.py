"""
test_hardening.py - issue 13's hardening list, as an outsider would try it: a listener's
connection cap (Sidecar connectionPool maxConnections) holds and frees slots, and a client
that opens a TLS connection and never says hello is closed by the handshake deadline. (A
second meltemi on the same address: test_lifecycle.py.)
"""

from harness import RespConn, free_port, wait_until


def sidecar_port(port, endpoint_port, extra=""):
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata:
  name: capped
  namespace: redis
spec:
  ingress:
  - port:
      number: {port}
      name: tcp-redis
    bind: 127.0.0.13
    defaultEndpoint: 127.0.0.1:{endpoint_port}
{extra}"""


def test_per_listener_connection_cap(redis_factory, config_dir, meltemi_factory):
    redis = redis_factory()
    port = free_port("127.0.0.13")
    m = meltemi_factory(config_dir({"s.yaml": sidecar_port(port, redis.port, """\
    connectionPool:
      tcp:
        maxConnections: 2
""")}))
    a, b = RespConn("127.0.0.13", port), RespConn("127.0.0.13", port)
    assert a.call("PING") == b"PONG" and b.call("PING") == b"PONG"
    third = RespConn("127.0.0.13", port)
    assert third.closed_by_peer(timeout=5), "over the cap: closed at once"
    assert a.call("PING") == b"PONG", "the open ones are untouched"
    a.close()
    wait_until(lambda: RespConn("127.0.0.13", port).call("PING") == b"PONG", 5,
               "a slot is free again")
    status, body = m.http_get("/stats/prometheus")
    assert "meltemi_downstream_connections_overflow_total" in body
    assert any(ln.startswith("meltemi_downstream_connections_overflow_total{") and
               float(ln.rsplit(" ", 1)[1]) >= 1 for ln in body.splitlines())


def test_a_silent_tls_client_is_closed_after_the_handshake_deadline(tmp_path, redis_factory,
                                                                    config_dir, meltemi_factory):
    from tls_certs import Ca
    ca = Ca(tmp_path / "pki")
    cert, key = ca.issue("srv", ips=["127.0.0.13"])
    redis = redis_factory()
    port = free_port("127.0.0.13")
    m = meltemi_factory(config_dir({"s.yaml": sidecar_port(port, redis.port, f"""\
    tls:
      mode: SIMPLE
      serverCertificate: {cert}
      privateKey: {key}
""")}))
    silent = RespConn("127.0.0.13", port)  # connects, never says hello
    assert silent.closed_by_peer(timeout=20), "closed by the handshake deadline"
    assert "TLS handshake not done after 10000 ms" in m.stderr()
