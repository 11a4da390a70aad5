"""
test_admin_observability.py - what the admin port tells an operator: /clusters (text and
?format=json) with endpoints, their health and pools, and a Redis Cluster's slot map and node
roles; /stats?format=json; POST /logging?level=debug under the same rules as POST /reload,
debug lines for routing decisions; failed client AUTH at info with the client's address,
rate-limited; a reload's diff in the log.
"""

import json
import urllib.request

import configs
from cluster_fixtures import cluster_proxy, redis_cluster, shared_cluster  # noqa: F401
from harness import RespConn, RespError, wait_until


def post(meltemi, path, headers=None):
    req = urllib.request.Request(f"http://{meltemi.admin}{path}", data=b"", method="POST",
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def clusters_json(meltemi):
    status, body = meltemi.http_get("/clusters?format=json")
    assert status == 200, body
    return json.loads(body)["clusters"]


def test_clusters_show_endpoint_health_and_pools(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    assert c.call("SET", "k", "v") == b"OK"

    def healthy():
        (cl,) = [x for x in clusters_json(env.meltemi) if x["name"].endswith(configs.HOST)]
        (ep,) = cl["endpoints"]
        return cl if ep["health"] == "healthy" and ep["connections"]["shared"] >= 1 else None
    cl = wait_until(healthy, 10, "the endpoint published healthy with a pooled connection")
    assert cl["protocol"] == "redis" and cl["service"] == configs.HOST
    assert cl["endpoints"][0]["port"] == env.redis.port
    assert cl["stats"]["upstream_cx_active"] >= 1
    assert cl["redis"] == {"mode": "proxy"}
    status, text = env.meltemi.http_get("/clusters")
    assert f"127.0.0.1:{env.redis.port}::health::healthy" in text, text

    env.redis.kill()
    reply = c.call("GET", "k")  # the pooled connection is gone
    assert isinstance(reply, RespError) or reply is None
    reply = c.call("GET", "k")
    assert isinstance(reply, RespError), reply
    c.close()

    def backing_off():
        (cl,) = [x for x in clusters_json(env.meltemi) if x["name"].endswith(configs.HOST)]
        ep = cl["endpoints"][0]
        return ep if ep["health"] == "unhealthy" else None
    ep = wait_until(backing_off, 10, "the endpoint published as unhealthy")
    assert ep["last_error"], ep


def test_redis_cluster_slot_map_and_roles(redis_cluster, cluster_proxy):  # noqa: F811
    env = cluster_proxy(redis_cluster, workers=1)
    c = RespConn(env.host, env.port)
    assert c.call("SET", "foo", "bar") == b"OK"
    c.close()

    def mapped():
        (cl,) = [x for x in clusters_json(env.meltemi) if x["protocol"] == "redis"]
        return cl if cl["redis"] and cl["redis"].get("have_map") else None
    cl = wait_until(mapped, 10, "the slot map published")
    r = cl["redis"]
    assert r["mode"] == "cluster"
    slots = sorted((s["from"], s["to"]) for s in r["slots"])
    assert slots[0][0] == 0 and slots[-1][1] == 16383
    assert sum(t - f + 1 for f, t in slots) == 16384
    masters = {s["master"] for s in r["slots"]}
    assert masters == {m.addr for m in redis_cluster.masters()}
    roles = {n["address"]: n["role"] for n in r["nodes"]}
    assert sorted(roles.values()).count("master") == 3
    assert sorted(roles.values()).count("replica") == 3
    assert all(len(s["replicas"]) == 1 for s in r["slots"])


def test_stats_json(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    assert c.call("PING") == b"PONG"
    c.close()
    status, body = env.meltemi.http_get("/stats?format=json")
    assert status == 200
    stats = json.loads(body)["stats"]
    ok = [s for s in stats if s["name"] == "istio_requests_total"
          and s["labels"].get("response_code") == "OK"]
    assert ok and ok[0]["value"] == 1 and ok[0]["labels"]["request_protocol"] == "redis"
    assert any(s["name"] == "meltemi_build_info" for s in stats)


def test_logging_level_at_run_time_and_its_rules(blog_env):
    env = blog_env(step=1)
    c = RespConn(env.host, env.port)
    assert c.call("SET", "a", "1") == b"OK"
    assert "-> cluster" not in env.meltemi.stderr()  # info: no routing lines
    assert post(env.meltemi, "/logging?level=debug",
                {"Origin": "http://evil.example"})[0] == 403
    assert post(env.meltemi, "/logging?level=loud")[0] == 400
    assert env.meltemi.http_get("/logging?level=debug")[0] == 405
    status, body = post(env.meltemi, "/logging?level=debug")
    assert (status, body) == (200, "log level: debug\n")
    assert c.call("GET", "a") == b"1"
    wait_until(lambda: "get -> cluster" in env.meltemi.stderr(), 5, "the routing decision logged")
    assert post(env.meltemi, "/logging?level=info")[0] == 200
    c.close()


def test_failed_client_auth_is_logged_with_the_address_rate_limited(blog_env):
    env = blog_env(step=2)
    c = RespConn(env.host, env.port)
    for _ in range(60):
        assert isinstance(c.call("AUTH", "wrong"), RespError)
    assert c.call("AUTH", configs.CLIENT_PASSWORD) == b"OK"
    c.close()
    lines = [ln for ln in env.meltemi.stderr().splitlines() if "failed to authenticate" in ln]
    assert 1 <= len(lines) <= 15, lines  # 5 a second: the flood does not fill the log
    assert "client 127." in lines[0] and "info" in lines[0], lines[0]
    m_status, body = env.meltemi.http_get("/stats/prometheus")
    assert 'meltemi_auth_failures_total{listener=' in body
    assert [ln for ln in body.splitlines()
            if ln.startswith("meltemi_auth_failures_total")][0].endswith(" 60")
    assert 'response_flags="RBAC"' in body


def test_reload_diff_is_logged(blog_env):
    env = blog_env(step=1)
    (env.conf / "redis-service.yaml").write_text(configs.BLOG_STEP2)
    status, body = post(env.meltemi, "/reload")
    assert status == 200, body
    wait_until(lambda: "reload: listener" in env.meltemi.stderr(), 5, "the diff logged")
    assert "changed" in env.meltemi.stderr()
