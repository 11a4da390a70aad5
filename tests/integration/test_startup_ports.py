"""
Startup fails loudly: a listener port or the admin port that cannot be bound ends the start
with one error naming the port, a non-zero exit, and no "started" line.
"""

import socket
import subprocess

import configs
from harness import Meltemi, VIP, free_port, redis_py


def _occupy(host):
    """A socket listening on host (no SO_REUSEPORT: meltemi's bind must fail)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen(1)
    return s


def _conf(config_dir, port, redis_port):
    return config_dir({
        "redis-single.yaml": configs.STEP1,
        "service-entry.yaml": configs.service_entry("redis-single", VIP, port, redis_port),
    })


def _run_until_exit(m):
    m.start(wait_ready=False)
    try:
        rc = m.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        m.kill()
        raise AssertionError("meltemi kept running with a port it cannot bind:\n" + m.output())
    return rc, m.output()


def test_busy_admin_port_is_one_error_and_no_started_line(redis_factory, config_dir, tmp_path):
    redis = redis_factory(password=configs.UPSTREAM_PASSWORD)
    busy = _occupy("127.0.0.1")
    port = free_port(VIP)
    m = Meltemi(_conf(config_dir, port, redis.port), tmp_path / "m",
                admin_port=busy.getsockname()[1])
    try:
        rc, out = _run_until_exit(m)
    finally:
        busy.close()
    assert rc != 0, out
    errors = [ln for ln in out.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, out
    assert "admin" in errors[0] and str(m.admin_port) in errors[0], out
    assert "started" not in out, out
    # nothing was served on the listener meanwhile, and nothing is left listening
    try:
        redis_py(VIP, port, socket_connect_timeout=1).ping()
        raise AssertionError("the listener answered although the start failed")
    except Exception as exc:  # connection refused
        assert "refused" in str(exc).lower() or "connect" in str(exc).lower(), exc


def test_busy_listener_port_is_one_error_naming_it(redis_factory, config_dir, tmp_path):
    redis = redis_factory(password=configs.UPSTREAM_PASSWORD)
    busy = _occupy(VIP)
    port = busy.getsockname()[1]
    m = Meltemi(_conf(config_dir, port, redis.port), tmp_path / "m")
    try:
        rc, out = _run_until_exit(m)
    finally:
        busy.close()
    assert rc != 0, out
    errors = [ln for ln in out.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, out
    assert f"{VIP}:{port}" in errors[0], out
    assert "started" not in out, out
