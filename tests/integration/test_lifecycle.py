"""
Process lifecycle: SIGTERM (and SIGINT) stop accepting, drain, and exit 0 within a bound,
also with idle clients connected and requests in flight.
"""

import signal
import socket

import pytest

import configs
from harness import VIP, RespConn, RespError, free_port, resp_encode, stop_pid


def connect_refused(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_idle_client_exits_0(blog_env, sig):
    env = blog_env(step=1, drain_timeout_ms=1000)
    idle = RespConn(env.host, env.port)
    assert idle.call("PING") == b"PONG"
    rc = stop_pid(env.meltemi.proc, sig, timeout=10)
    assert rc == 0, env.meltemi.stderr()
    assert connect_refused(env.host, env.port), "the listener is closed after exit"
    assert idle.closed_by_peer(timeout=5)
    idle.close()


def test_sigterm_with_requests_in_flight(blog_env):
    env = blog_env(step=1, drain_timeout_ms=3000)
    c = RespConn(env.host, env.port, timeout=10)
    assert c.call("SET", "k", "v") == b"OK"
    c.send_raw(b"".join(resp_encode("GET", "k") for _ in range(1000)))
    assert c.read_reply() == b"v"  # meltemi is processing the pipeline
    env.meltemi.proc.send_signal(signal.SIGTERM)
    got = 1
    try:
        while got < 1000:
            reply = c.read_reply()
            assert reply == b"v" or isinstance(reply, RespError), reply
            got += 1
    except ConnectionError:
        pass  # requests meltemi had not read yet may be dropped with the connection
    c.close()
    rc = env.meltemi.proc.wait(timeout=15)
    assert rc == 0, env.meltemi.stderr()


def test_multiple_workers_serve(blog_env):
    env = blog_env(step=1, workers=2)
    conns = [RespConn(env.host, env.port) for _ in range(8)]
    for i, c in enumerate(conns):
        assert c.call("SET", f"w{i}", str(i)) == b"OK"
    for i, c in enumerate(conns):
        assert c.call("GET", f"w{i}") == str(i).encode()
        c.close()


def _post_reload(meltemi):
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"http://{meltemi.admin}/reload", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_second_meltemi_cannot_share_a_listener_of_the_first(redis_factory, config_dir,
                                                             meltemi_factory, tmp_path):
    """SO_REUSEPORT gives each worker its own socket; it must not let a second meltemi join
    the first's listener and take part of its clients. The second one fails at startup with
    the address named; the first keeps every client."""
    redis = redis_factory()
    port = free_port(VIP)
    conf = config_dir({"se.yaml": configs.service_entry("redis-single", VIP, port, redis.port)})
    first = meltemi_factory(conf, workers=2)
    second = meltemi_factory(conf, wait_ready=False)
    rc = second.proc.wait(timeout=15)
    assert rc != 0
    err = second.stderr()
    assert f"cannot listen on {VIP}:{port}" in err and "in use by another process" in err, err
    # Every connection still lands on the first (it is the only process listening).
    conns = [RespConn(VIP, port) for _ in range(20)]
    for i, c in enumerate(conns):
        assert c.call("SET", f"k{i}", "v") == b"OK"
        c.close()
    assert first.running()

    # A reload of another meltemi that adds the held address fails and changes nothing.
    other_port = free_port(VIP)
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.yaml").write_text(
        configs.service_entry("redis-other", VIP, other_port, redis.port, host="other.redis"))
    third = meltemi_factory(other)
    assert RespConn(VIP, other_port).call("PING") == b"PONG"
    (other / "b.yaml").write_text(
        configs.service_entry("redis-single", VIP, port, redis.port))
    status, body = _post_reload(third)
    assert status != 200, body
    assert f"cannot listen on {VIP}:{port}" in body, body
    assert RespConn(VIP, other_port).call("PING") == b"PONG", "the old snapshot serves on"
