"""
test_access_log.py - the access log as an operator reads it: one JSON object per request
(local replies included) or an Envoy-style %FIELD% text line, in a file that logrotate can
move away (SIGUSR1 reopens it), never with a key or a value in it; Istio's Telemetry turns it
on; plain TCP logs one line per connection; sampling 0 logs nothing.
"""

import json
import os
import signal

import configs
from harness import VIP, EchoServer, RespConn, free_port, resp_encode, wait_until


def access_log_yaml(path, fmt="json", text=None, sampling=None):
    s = f"""\
apiVersion: meltemi.io/v1alpha1
kind: AccessLog
metadata:
  name: default
spec:
  path: {path}
  format: {fmt}
"""
    if text:
        s += f"  text: {json.dumps(text)}\n"
    if sampling is not None:
        s += f"  sampling: {sampling}\n"
    return s


def lines_of(path, n, timeout=10):
    def enough():
        if not os.path.exists(path):
            return None
        ls = open(path).read().splitlines()
        return ls if len(ls) >= n else None
    return wait_until(enough, timeout, f"{n} lines in {path}")


def redis_files(extra):
    files = {"redis-single.yaml": configs.STEP1}
    files.update(extra)
    return files


def test_json_lines_per_request_without_values(blog_env, tmp_path):
    path = tmp_path / "access.log"
    env = blog_env(files=redis_files({"access-log.yaml": access_log_yaml(path)}))
    c = RespConn(env.host, env.port)
    frames = [resp_encode("SET", "user:secret-key", "secret-value"),
              resp_encode("GET", "user:secret-key"), resp_encode("PING"),
              resp_encode("NOSUCHCMD", "secret-arg")]
    replies = []
    for f in frames:
        c.send_raw(f)
        replies.append(c.read_reply())
    c.close()
    lines = lines_of(path, 4)
    assert len(lines) == 4, lines
    recs = [json.loads(ln) for ln in lines]
    assert [r["command"] for r in recs] == ["set", "get", "ping", "(unknown)"]
    assert [r["response_code"] for r in recs] == ["OK", "OK", "OK", "ERR"]
    assert [r["bytes_received"] for r in recs] == [len(f) for f in frames]
    assert all(r["protocol"] == "redis" for r in recs)
    assert all(r["response_flags"] == "-" for r in recs)
    assert recs[0]["upstream_host"] == f"127.0.0.1:{env.redis.port}"
    assert recs[2]["upstream_host"] is None  # PING is answered by meltemi
    assert recs[0]["upstream_cluster"].endswith(configs.HOST)
    assert recs[0]["service"] == configs.HOST
    assert recs[0]["downstream_remote_address"].startswith("127.")
    assert recs[0]["listener"] == f"{VIP}:{env.port}"
    assert recs[0]["start_time"].endswith("Z") and "T" in recs[0]["start_time"]
    assert isinstance(recs[0]["duration"], int) and recs[0]["duration"] >= 0
    assert len({r["connection_id"] for r in recs}) == 1
    text = path.read_text()
    assert "secret" not in text, text  # neither keys, values nor arguments


def test_text_format_and_reopen_on_sigusr1(blog_env, tmp_path):
    path = tmp_path / "access.log"
    fmt = "%PROTOCOL% %COMMAND% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_SENT% 100%%"
    env = blog_env(files=redis_files({"access-log.yaml": access_log_yaml(path, "text", fmt)}))
    c = RespConn(env.host, env.port)
    assert c.call("PING") == b"PONG"
    assert lines_of(path, 1) == ["redis ping OK - 7 100%"]
    rotated = tmp_path / "access.log.1"
    os.rename(path, rotated)
    os.kill(env.meltemi.proc.pid, signal.SIGUSR1)
    wait_until(lambda: path.exists(), 10, "the log reopened at its path")
    assert c.call("GET", "missing") is None
    c.close()
    assert lines_of(path, 1) == ["redis get OK - 5 100%"]
    assert rotated.read_text().splitlines() == ["redis ping OK - 7 100%"]
    assert "reopened" in env.meltemi.output()


def test_istio_telemetry_turns_it_on_and_tcp_logs_connections(config_dir, meltemi_factory):
    echo = EchoServer()
    try:
        port = free_port(VIP)
        conf = config_dir({
            "tcp.yaml": configs.service_entry("echo", VIP, port, echo.port, port_name="tcp-echo"),
            "telemetry.yaml": """\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  accessLogging:
  - providers:
    - name: envoy
""",
        })
        m = meltemi_factory(conf)
        import socket
        s = socket.create_connection((VIP, port), timeout=5)
        assert s.recv(100) == EchoServer.BANNER
        s.sendall(b"hello")
        got = b""
        while len(got) < 5:
            got += s.recv(100)
        s.close()

        def logged():
            out = m.stdout_path.read_text() if m.stdout_path.exists() else ""
            return [ln for ln in out.splitlines() if ln.startswith("[") and " tcp " in ln]
        lines = wait_until(logged, 10, "the connection's line on stdout")
        # the default text: [time] protocol command code flags received sent duration peer ...
        fields = lines[0].split()
        assert fields[1:6] == ["tcp", "-", "-", "-", "5"], lines
        assert fields[6] == str(len(EchoServer.BANNER) + 5)
    finally:
        echo.close()


def test_sampling_zero_logs_nothing(blog_env, tmp_path):
    path = tmp_path / "access.log"
    env = blog_env(files=redis_files({"access-log.yaml": access_log_yaml(path, sampling=0)}))
    c = RespConn(env.host, env.port)
    for _ in range(50):
        assert c.call("PING") == b"PONG"
    c.close()
    m_status, body = env.meltemi.http_get("/stats/prometheus")
    assert 'response_code="OK"' in body  # served and counted, just not logged
    assert not path.exists() or path.read_text() == ""
