"""
Ports whose name selects no known protocol are proxied as plain TCP: bytes pass both ways
unchanged, server-first protocols work, closes propagate.
"""

import os
import socket
import threading

import configs
from harness import VIP, EchoServer, free_port


def tcp_env(config_dir, meltemi_factory, echo, port_name="tcp-other"):
    port = free_port(VIP)
    se = configs.service_entry("echo", VIP, port, echo.port, port_name=port_name,
                               host="echo.default.svc.cluster.local", namespace="default")
    meltemi_factory(config_dir({"echo.yaml": se}))
    return port


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(min(65536, n - len(data)))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def test_tcp_bytes_pass_both_ways(config_dir, meltemi_factory):
    echo = EchoServer()
    try:
        port = tcp_env(config_dir, meltemi_factory, echo)
        with socket.create_connection((VIP, port), timeout=10) as s:
            s.settimeout(10)
            # Server speaks first: proves server -> client without any client bytes.
            assert recv_exactly(s, len(EchoServer.BANNER)) == EchoServer.BANNER
            blob = os.urandom(1 << 20)  # 1 MiB of binary, more than any socket buffer
            received = {}

            def reader():
                received["data"] = recv_exactly(s, len(blob))

            t = threading.Thread(target=reader)
            t.start()
            s.sendall(blob)
            t.join(timeout=30)
            assert not t.is_alive(), "echo through meltemi hung"
            assert received["data"] == blob
    finally:
        echo.close()


def test_tcp_many_connections_and_close(config_dir, meltemi_factory):
    echo = EchoServer()
    try:
        port = tcp_env(config_dir, meltemi_factory, echo, port_name="mongo")
        socks = [socket.create_connection((VIP, port), timeout=10) for _ in range(10)]
        for i, s in enumerate(socks):
            s.settimeout(10)
            assert recv_exactly(s, len(EchoServer.BANNER)) == EchoServer.BANNER
            msg = f"hello {i}\n".encode()
            s.sendall(msg)
            assert recv_exactly(s, len(msg)) == msg
        assert echo.accepted == 10
        # The client closes; the upstream side is closed too and the echo server sees EOF.
        for s in socks:
            s.close()
        with socket.create_connection((VIP, port), timeout=10) as s:
            s.settimeout(10)
            assert recv_exactly(s, len(EchoServer.BANNER)) == EchoServer.BANNER
            s.shutdown(socket.SHUT_WR)
            # Echo server closes after EOF; meltemi must pass that close on.
            assert s.recv(1) == b""
    finally:
        echo.close()


def test_tcp_upstream_down_closes_client(config_dir, meltemi_factory):
    port = free_port(VIP)
    se = configs.service_entry("echo", VIP, port, free_port(), port_name="tcp-other",
                               host="echo.default.svc.cluster.local", namespace="default")
    meltemi_factory(config_dir({"echo.yaml": se}))
    with socket.create_connection((VIP, port), timeout=15) as s:
        s.settimeout(15)  # more than the default connect timeout: a hang fails
        try:
            data = s.recv(1)
        except ConnectionResetError:
            data = b""
        assert data == b""
