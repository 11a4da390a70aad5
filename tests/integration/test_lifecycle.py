"""
Process lifecycle: SIGTERM (and SIGINT) stop accepting, drain, and exit 0 within a bound,
also with idle clients connected and requests in flight.
"""

import signal
import socket

import pytest

from harness import RespConn, RespError, resp_encode, stop_pid


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
