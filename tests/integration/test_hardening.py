"""
test_hardening.py - issue 13's hardening list, as an outsider would try it: a second meltemi
started on the configuration of a running one must not silently share its addresses
(SO_REUSEPORT would let it take half of the connections), neither at start nor at reload.
"""

import os
import signal

import configs
from harness import VIP, RespConn, free_port, wait_until


def test_a_second_meltemi_on_the_same_address_fails_with_a_clear_error(blog_env, meltemi_factory,
                                                                       config_dir):
    env = blog_env(step=1)
    second = meltemi_factory(env.conf, wait_ready=False)
    rc = second.proc.wait(timeout=15)
    assert rc != 0
    err = second.stderr()
    assert f"cannot listen on {env.host}:{env.port}: Address already in use" in err, err
    assert "another process holds it" in err
    # The first one still owns every connection.
    for _ in range(20):
        c = RespConn(env.host, env.port)
        assert c.call("PING") == b"PONG"
        c.close()


def test_a_reload_that_would_share_an_address_is_refused(blog_env, meltemi_factory, config_dir,
                                                         redis_factory):
    env = blog_env(step=1)
    other_redis = redis_factory()
    port = free_port(VIP)
    conf = config_dir({"se.yaml": configs.service_entry("other", VIP, port, other_redis.port)})
    other = meltemi_factory(conf)
    # The first meltemi is told to listen where the other one does.
    (env.conf / "stolen.yaml").write_text(configs.service_entry("stolen", VIP, port,
                                                                env.redis.port, namespace="x"))
    os.kill(env.meltemi.proc.pid, signal.SIGHUP)
    wait_until(lambda: "another process holds it" in env.meltemi.stderr(), 10,
               f"the reload refused:\n{env.meltemi.stderr()}")
    assert "reload (SIGHUP) rejected" in env.meltemi.stderr()
    assert RespConn(VIP, port).call("PING") == b"PONG"
    assert RespConn(env.host, env.port).call("PING") == b"PONG", "the first keeps serving"
    assert other.running() and env.meltemi.running()


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
