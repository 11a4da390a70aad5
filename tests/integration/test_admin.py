"""
The admin HTTP server: /ready, /stats/prometheus counters that move with traffic,
/config_dump without secrets, and no secret in the logs either.
"""

import json
import re

import configs
from harness import RespConn, wait_until

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\d+)?$")


def scrape(meltemi):
    status, body = meltemi.http_get("/stats/prometheus")
    assert status == 200, body
    samples = {}
    for ln in body.splitlines():
        if not ln.strip() or ln.startswith("#"):
            continue
        m = SAMPLE.match(ln)
        assert m, f"not Prometheus text format: {ln!r}"
        samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return samples


def grown(before, after, name_re, label_substr, by):
    """Samples whose name matches name_re, whose labels contain label_substr, and which grew
    by at least `by` between two scrapes."""
    out = []
    for (name, labels), v in after.items():
        if re.search(name_re, name) and label_substr in labels:
            if v - before.get((name, labels), 0.0) >= by:
                out.append((name, labels, v))
    return out


def test_ready_and_unknown_path(blog_env):
    env = blog_env(step=1)
    assert env.meltemi.http_get("/ready")[0] == 200
    assert env.meltemi.http_get("/no/such/page")[0] == 404


def test_prometheus_counters_grow_with_traffic(blog_env):
    env = blog_env(step=1, workers=2)
    listener = f"{env.host}:{env.port}"
    before = scrape(env.meltemi)
    c = RespConn(env.host, env.port)
    for i in range(100):
        assert c.call("SET", f"k{i}", "v") == b"OK"
    for _ in range(5):
        assert c.call("NOSUCHCOMMAND").startswith("ERR unknown command")
    c.close()

    def requests_counted():
        return grown(before, scrape(env.meltemi), r"request.*_total$|requests$", listener, 100)

    wait_until(requests_counted, 5, f"a request counter for listener {listener} to grow")
    after = scrape(env.meltemi)
    assert grown(before, after, r"error", listener, 5), "error replies are counted per listener"
    cluster = "outbound|"
    assert any(cluster in labels for _, labels in after), "per-cluster samples are exported"
    assert any("generation" in name for name, _ in after), "config generation is exported"
    assert any(re.search(r"reload.*fail|fail.*reload", name) for name, _ in after)


def test_config_dump_redacts_secrets(blog_env):
    env = blog_env(step=2)
    # Exercise both passwords first so they are certainly in live memory.
    c = RespConn(env.host, env.port)
    assert c.call("AUTH", configs.CLIENT_PASSWORD) == b"OK"
    assert c.call("SET", "foo", "bar") == b"OK"
    c.close()
    status, body = env.meltemi.http_get("/config_dump")
    assert status == 200
    dump = json.loads(body)
    assert dump, "config_dump is the live snapshot"
    assert f"{env.host}:{env.port}" in body
    for secret in ("testredis", "dGVzdHJlZGlz"):  # also covers testredis123!
        assert secret not in body, f"{secret!r} leaked into /config_dump"
    assert "<redacted>" in body


def test_logs_never_show_a_password(blog_env):
    env = blog_env(step=2, log_level="debug")
    c = RespConn(env.host, env.port)
    assert c.call("AUTH", "wrong-guess-51") == "ERR invalid password"
    assert c.call("AUTH", configs.CLIENT_PASSWORD) == b"OK"
    assert c.call("GET", "x") is None
    c.close()
    assert env.meltemi.terminate() == 0
    log = env.meltemi.output()
    for secret in ("testredis", "wrong-guess-51", "dGVzdHJlZGlz"):
        assert secret not in log, f"{secret!r} appeared in meltemi's output"
