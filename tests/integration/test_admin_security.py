"""
The admin port against a web page on the same machine and against idle sockets (issue 13):
POST /reload refuses browser-originated requests (an Origin header, a foreign Host: CSRF and
DNS rebinding), needs a bearer token when --admin-token-file is set, and 128 idle
connections do not lock the readiness probe out.
"""

import os
import re
import socket
import subprocess

import pytest

import configs
from harness import run_meltemi

pytestmark = pytest.mark.usefixtures("meltemi_binary")


def curl(*args, timeout=20):
    """curl -s with a bounded run time; returns (HTTP status, body). Status 0: no answer."""
    p = subprocess.run(["curl", "-s", "--max-time", str(timeout), "-o", "-", "-w",
                        "\n%{http_code}", *args], capture_output=True, text=True,
                       timeout=timeout + 10)
    body, _, code = p.stdout.rpartition("\n")
    return int(code or 0), body


def reloads(meltemi):
    status, body = meltemi.http_get("/stats/prometheus")
    assert status == 200, body
    m = re.search(r"^meltemi_config_reloads_total (\d+)$", body, re.M)
    assert m, "the reload counter is exported"
    return int(m.group(1))


def post_reload(meltemi, *headers):
    args = ["-X", "POST"]
    for h in headers:
        args += ["-H", h]
    return curl(*args, f"http://{meltemi.admin}/reload")


def test_reload_with_an_origin_header_is_refused_and_nothing_reloads(blog_env):
    env = blog_env(step=1)
    before = reloads(env.meltemi)
    status, body = post_reload(env.meltemi, "Origin: http://evil.example")
    assert status == 403, body
    assert "Origin" in body
    status, body = post_reload(env.meltemi, "Origin: null")
    assert status == 403, body
    assert reloads(env.meltemi) == before, "a refused request must not reload"
    # The same request without Origin (curl, a script) still works.
    status, body = post_reload(env.meltemi)
    assert status == 200, body
    assert reloads(env.meltemi) == before + 1


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}",
                                  "127.0.0.1:1", "localhost.evil.example:{port}"])
def test_reload_with_a_foreign_host_is_refused(blog_env, host):
    env = blog_env(step=1)
    before = reloads(env.meltemi)
    status, body = post_reload(env.meltemi, "Host: " + host.format(port=env.meltemi.admin_port))
    assert status == 403, body
    assert "Host" in body
    assert reloads(env.meltemi) == before


def test_reload_with_a_loopback_host_is_accepted(blog_env):
    env = blog_env(step=1)
    before = reloads(env.meltemi)
    for host in ("localhost", "127.0.0.1", "[::1]"):
        status, body = post_reload(env.meltemi, f"Host: {host}:{env.meltemi.admin_port}")
        assert status == 200, (host, body)
    assert reloads(env.meltemi) == before + 3


def token_file(tmp_path, text):
    p = tmp_path / "admin-token"
    p.write_text(text)
    os.chmod(p, 0o600)
    return p


def test_token_is_required_when_configured(blog_env, tmp_path):
    token = "s3cr3t-admin-token-4711"
    path = token_file(tmp_path, token + "\n")
    env = blog_env(step=1, extra_args=["--admin-token-file", str(path)])
    m = env.meltemi
    before = reloads(m)
    status, body = post_reload(m)
    assert status == 401, body
    assert "Authorization: Bearer" in body
    status, body = post_reload(m, "Authorization: Bearer wrong-token")
    assert status == 401, body
    status, body = post_reload(m, "Authorization: Bearer " + token[:-1])
    assert status == 401, "a prefix of the token is not the token"
    status, body = post_reload(m, "Authorization: Basic " + token)
    assert status == 401, body
    assert reloads(m) == before
    # The browser checks come first: the right token from a web page is still refused.
    status, body = post_reload(m, "Authorization: Bearer " + token, "Origin: http://evil.example")
    assert status == 403, body
    assert reloads(m) == before
    status, body = post_reload(m, "Authorization: Bearer " + token)
    assert status == 200, body
    assert reloads(m) == before + 1
    # Read-only endpoints (the probes) need no token.
    assert m.http_get("/ready")[0] == 200
    assert token not in m.output(), "the token never appears in the log"
    ps = subprocess.run(["ps", "-o", "args=", "-p", str(m.proc.pid)], capture_output=True,
                        text=True, timeout=10).stdout
    assert token not in ps and str(path) in ps


def test_an_unreadable_or_empty_token_file_stops_the_start(config_dir, tmp_path):
    conf = config_dir({"se.yaml": configs.service_entry("redis-single", "127.0.0.10", 1, 2)})
    for path in (tmp_path / "missing", token_file(tmp_path, "\n")):
        p = run_meltemi("run", "-c", conf, "--admin", "127.0.0.1:0", "--admin-token-file", path,
                        timeout=30)
        assert p.returncode != 0
        assert "token file" in p.stderr, p.stderr
    p = run_meltemi("run", "-c", conf, "--admin-token-file")
    assert p.returncode == 2


def test_idle_admin_connections_do_not_block_the_readiness_probe(blog_env):
    env = blog_env(step=1)
    host, port = env.meltemi.admin.rsplit(":", 1)
    idle = []
    try:
        for i in range(128):
            s = socket.create_connection((host, int(port)), timeout=10)
            if i % 2:
                s.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            idle.append(s)
        # One attempt, bounded: it must be answered, not closed on accept or left waiting
        # until the idle sockets time out.
        status, body = curl(f"http://{env.meltemi.admin}/ready", timeout=20)
        assert status == 200, f"/ready did not answer with 128 idle admin connections: {body!r}"
        status, body = curl(f"http://{env.meltemi.admin}/stats/prometheus", timeout=20)
        assert status == 200
    finally:
        for s in idle:
            s.close()
