"""
test_authz.py - Istio AuthorizationPolicy in front of real servers: Redis (commands and the
meltemi `keys` extension; source addresses on a plain listener), Thrift (methods) and
Dubbo (interface paths and methods) with the native error each protocol has, AUDIT logging
without denying, and SPIFFE principals and namespaces through mTLS between two meltemis
(test_mtls.py's mesh). Every denial is counted and logged.
"""

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import configs  # noqa: E402
import meta_env as me  # noqa: E402
import thrift_peers as tp  # noqa: E402
from harness import VIP, RespConn, free_port, redis_py, wait_until  # noqa: E402
from test_mtls import CLIENT_ID, INGRESS, mesh  # noqa: E402,F401  (the mesh fixture)

DENIED = "NOPERM RBAC: access denied"


def policy(name, spec, namespace="redis"):
    body = "\n".join("  " + ln for ln in spec.strip("\n").splitlines())
    return f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: {namespace}
spec:
{body}
"""


def metric(m, name):
    status, body = m.http_get("/stats/prometheus")
    assert status == 200
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines()
               if ln.startswith(name + "{") or ln.startswith(name + " "))


@pytest.fixture
def redis_env(redis_factory, config_dir, meltemi_factory):
    def deploy(*policies, port=None):
        redis = redis_factory()
        port = port or free_port(VIP)
        files = {"se.yaml": configs.service_entry("redis-single", VIP, port, redis.port)}
        for i, p in enumerate(policies):
            files[f"authz{i}.yaml"] = p
        return port, redis, meltemi_factory(config_dir(files))
    return deploy


def conn_from(source_ip, port):
    """A RespConn whose client address is source_ip (any 127.x.y.z)."""
    c = RespConn.__new__(RespConn)
    c.sock = socket.create_connection((VIP, port), timeout=5, source_address=(source_ip, 0))
    c.sock.settimeout(5)
    c.buf = b""
    return c


def test_redis_deny_commands_and_key_prefixes(redis_env):
    port, redis, m = redis_env(policy("deny-admin", """
action: DENY
rules:
- to:
  - operation:
      methods: [flushall, CONFIG]
- to:
  - operation:
      keys: ["secret:"]
"""))
    c = RespConn(VIP, port)
    assert c.call("SET", "ok:1", "v") == b"OK"
    assert c.call("FLUSHALL") == DENIED
    assert c.call("config", "get", "maxmemory") == DENIED
    assert c.call("GET", "secret:pw") == DENIED
    assert c.call("MGET", "ok:1", "secret:pw") == DENIED, "one denied key is enough"
    assert c.call("MGET", "ok:1", "ok:2") == [b"v", None]
    assert redis.client().get("ok:1") == b"v"
    assert metric(m, "meltemi_rbac_denied_total") == 4
    err = m.stderr()
    assert "RBAC: denied" in err and "redis/deny-admin" in err


def test_redis_allow_by_source_address_methods_and_keys(redis_env):
    port, redis, m = redis_env(policy("allow-app", """
action: ALLOW
rules:
- from:
  - source:
      ipBlocks: [127.0.0.0/24]
      notIpBlocks: [127.0.0.7/32]
  to:
  - operation:
      methods: [GET, SET, MGET]
      keys: ["app:"]
"""))
    c = conn_from("127.0.0.5", port)
    assert c.call("SET", "app:1", "x") == b"OK"
    assert c.call("GET", "app:1") == b"x"
    assert c.call("SET", "other", "x") == DENIED, "key outside the prefix"
    assert c.call("MGET", "app:1", "other") == DENIED, "every key must be allowed"
    assert c.call("DEL", "app:1") == DENIED, "method not listed"
    assert c.call("PING") == DENIED, "with an ALLOW policy, what matches none is denied"
    assert conn_from("127.0.0.7", port).call("GET", "app:1") == DENIED, "notIpBlocks"
    assert conn_from("127.0.1.9", port).call("GET", "app:1") == DENIED, "outside ipBlocks"
    assert redis.client().get("other") is None
    assert "no ALLOW policy matched" in m.stderr()


def test_redis_deny_wins_over_allow_and_audit_only_logs(redis_env):
    port, redis, m = redis_env(
        policy("allow-all", "action: ALLOW\nrules:\n- {}\n"),
        policy("deny-del", "action: DENY\nrules:\n- to:\n  - operation:\n      methods: [DEL]\n"),
        policy("audit-set", "action: AUDIT\nrules:\n- to:\n  - operation:\n      methods: [SET]\n"),
    )
    c = RespConn(VIP, port)
    assert c.call("SET", "a", "1") == b"OK"
    assert c.call("DEL", "a") == DENIED
    assert c.call("GET", "a") == b"1"
    wait_until(lambda: "RBAC: audited" in m.stderr(), 5, "the audit logged")
    assert metric(m, "meltemi_rbac_audited_total") == 1
    assert metric(m, "meltemi_rbac_denied_total") == 1


def test_redis_when_conditions_and_ports(redis_env):
    want = free_port(VIP)
    port, redis, m = redis_env(policy("deny-when", f"""
action: DENY
rules:
- to:
  - operation:
      ports: ["{want}"]
  when:
  - key: source.ip
    values: [127.0.0.9]
"""), port=want)
    assert conn_from("127.0.0.9", port).call("GET", "k") == DENIED
    assert conn_from("127.0.0.8", port).call("GET", "k") is None
    # A policy for another port does not apply here.
    port2, _, _ = redis_env(policy("deny-other-port", """
action: DENY
rules:
- to:
  - operation:
      ports: ["1"]
"""))
    assert RespConn(VIP, port2).call("GET", "k") is None


@pytest.fixture(scope="module")
def thrift_gen(tmp_path_factory):
    return tp.generate(tmp_path_factory.mktemp("thrift-gen"))


def test_thrift_method_denied_with_an_application_exception(thrift_gen, tmp_path, config_dir,
                                                           meltemi_factory):
    from thrift.Thrift import TApplicationException
    server = me.ThriftServer(tmp_path / "peers", thrift_gen, "v1", free_port()).start()
    try:
        host = "thrift-hello.meta.svc.cluster.local"
        port = free_port(VIP)
        files = {
            "se.yaml": me.service_entry("thrift-hello", host, VIP, port,
                                        "tcp-metaprotocol-thrift-hello",
                                        [("127.0.0.1", server.port, {})]),
            "authz.yaml": policy("deny-greet", """
action: DENY
rules:
- to:
  - operation:
      methods: [greet]
""", namespace="meta"),
        }
        m = meltemi_factory(config_dir(files))
        c = tp.Client(thrift_gen, VIP, port)
        try:
            assert c.hello("h").server == "v1"
            with pytest.raises(TApplicationException) as exc:
                c.greet("g")
            assert "RBAC: access denied" in str(exc.value)
            assert c.hello("after").server == "v1", "the connection stays usable"
        finally:
            c.close()
        assert [r["method"] for r in server.records("request")] == ["hello", "hello"]
        assert metric(m, "meltemi_rbac_denied_total") == 1
    finally:
        server.stop()


@pytest.fixture(scope="module")
def node_peers():
    reason = me.install_node_peers()
    if reason:
        pytest.skip(reason)


def test_mtls_principals_namespaces_and_dubbo_paths(mesh, node_peers, tmp_path):
    iface = "org.apache.dubbo.samples.basic.api.DemoService"
    env = mesh("PERMISSIVE", dubbo=True)
    # The server side takes: the client's identity for Redis GET/SET, namespace app for
    # Dubbo's sayHello on DemoService; nothing else.
    conf = Path(env.b.config_dir)
    (conf / "authz.yaml").write_text(policy("allow-mesh", f"""
action: ALLOW
rules:
- from:
  - source:
      principals: ["{CLIENT_ID[len('spiffe://'):]}"]
  to:
  - operation:
      methods: [GET, SET]
- from:
  - source:
      namespaces: [app]
  to:
  - operation:
      paths: [{iface}]
      methods: [sayHello]
"""))
    me.wait_generation_after(env.b, 1)
    c = redis_py(VIP, env.a_redis)
    assert c.set("m", "1") is True
    assert c.get("m") == b"1"
    with pytest.raises(Exception) as exc:
        c.delete("m")
    assert "RBAC: access denied" in str(exc.value)
    # Plain text (PERMISSIVE) has no principal: denied.
    assert RespConn(INGRESS, env.b_redis).call("GET", "m") == DENIED
    consumer = me.DubboConsumer(tmp_path, f"127.0.0.12:{env.a_dubbo}")
    try:
        ok = consumer.call(iface, "sayHello", args=["x"], n=2)
        assert all(r["ok"] for r in ok["results"]), ok
        bad = consumer.call(iface, "sayGoodbye", args=["x"], n=1)
        assert not bad["results"][0]["ok"]
        assert "RBAC: access denied" in str(bad["results"][0]), bad
    finally:
        consumer.close()
    assert metric(env.b, "meltemi_rbac_denied_total") >= 3
