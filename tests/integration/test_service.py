"""
test_service.py - meltemi as a system service: the systemd unit `make install` ships passes
`systemd-analyze verify`, and the readiness protocol it relies on (Type=notify) is spoken for
real: a unix datagram socket stands where systemd's would ($NOTIFY_SOCKET) and receives
READY=1 once meltemi serves, RELOADING=1 then READY=1 around a SIGHUP reload (what
`systemctl reload` sends), and STOPPING=1 when SIGTERM starts the drain, which is bounded: a
client that never leaves does not keep meltemi from exiting 0.
"""

import os
import shutil
import signal
import socket
import subprocess

import pytest

import configs
from harness import REPO, VIP, free_port, meltemi_bin, tail


def read_states(sock, until, timeout=15):
    """Datagrams received until one contains `until`; returns them all."""
    sock.settimeout(timeout)
    got = []
    while True:
        try:
            data = sock.recv(4096).decode()
        except socket.timeout:
            raise AssertionError(f"no {until!r} within {timeout}s; received {got}") from None
        got.append(data)
        if until in data.split("\n"):
            return got


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield s
    s.close()


def test_notify_ready_reload_and_stopping_with_a_bounded_drain(notify_socket, tmp_path,
                                                                 redis_factory, meltemi_factory):
    redis = redis_factory()
    port = free_port(VIP)
    # A plain TCP port too: a relayed connection has no request boundary, so only the drain
    # timeout ends it.
    tcp_port = free_port(VIP)
    conf = configs.write_config(tmp_path / "conf", {
        "svc.yaml": configs.service_entry("redis-single", VIP, port, redis.port),
        "tcp.yaml": configs.service_entry("raw", VIP, tcp_port, redis.port, port_name="tcp-raw"),
    })
    m = meltemi_factory(conf, wait_ready=False, drain_timeout_ms=300)
    states = read_states(notify_socket, "READY=1")
    assert any("STATUS=serving configuration generation 1" in s for s in states), states
    assert m.http_get("/ready")[0] == 200, "READY=1 comes when meltemi serves"

    os.kill(m.proc.pid, signal.SIGHUP)
    states = read_states(notify_socket, "READY=1")
    assert "RELOADING=1" in states[0].split("\n"), states
    assert any(line.startswith("MONOTONIC_USEC=") for line in states[0].split("\n")), states
    assert any("generation 2" in s for s in states), states

    # A bad configuration: the reload is rejected, READY=1 says so, generation 2 serves on.
    (conf / "broken.yaml").write_text("kind: [\n")
    os.kill(m.proc.pid, signal.SIGHUP)
    states = read_states(notify_socket, "READY=1")
    assert any("generation 2 (the last reload was rejected)" in s for s in states), states

    held = socket.create_connection((VIP, tcp_port), timeout=5)
    held.sendall(b"PING\r\n")
    assert held.recv(64).startswith(b"+PONG")
    os.kill(m.proc.pid, signal.SIGTERM)
    read_states(notify_socket, "STOPPING=1")
    try:
        rc = m.proc.wait(timeout=15)
    finally:
        held.close()
    assert rc == 0, tail(m.stderr_path)
    assert "drain timeout (300 ms) reached" in m.stderr(), m.stderr()


def build_dir():
    d = meltemi_bin().resolve().parent
    return d if (d / "CMakeCache.txt").is_file() else None


@pytest.mark.skipif(build_dir() is None or shutil.which("systemd-analyze") is None,
                    reason="needs the CMake build directory and systemd-analyze")
def test_installed_unit_verifies_and_names_the_installed_binary(tmp_path):
    prefix = tmp_path / "prefix"
    r = subprocess.run(["make", "-s", "-C", str(REPO), "install", f"BUILD_DIR={build_dir()}",
                        f"PREFIX={prefix}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    unit = prefix / "lib/systemd/system/meltemi.service"
    text = unit.read_text()
    assert f"ExecStart={prefix}/bin/meltemi run\n" in text
    assert "Type=notify\n" in text and "ExecReload=/bin/kill -HUP $MAINPID\n" in text
    assert (prefix / "lib/sysusers.d/meltemi.conf").read_text().startswith("#")
    v = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr
