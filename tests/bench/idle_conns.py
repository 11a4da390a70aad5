#!/usr/bin/python3
"""
idle_conns.py - memory per client connection, meltemi beside twemproxy (Debian's nutcracker),
both in front of the same redis-server on 127.0.0.1.

For each proxy: RSS (VmRSS of /proc/PID/status) after start, after N client connections are
open and idle, after each of them sent one PING (and read PONG), and after all are closed (is
the memory returned?). Per-connection figures are (RSS with N connections - RSS before) / N.
Then a busy phase: B connections pipelining GETs at depth P for a few seconds, RSS sampled.

Usage: tests/bench/idle_conns.py [--conns 10000] [--busy 50] [--depth 16] [--seconds 3]
MELTEMI_BIN selects the binary (default build/meltemi). Needs an open-files limit above
--conns (ulimit -n) for this script and the proxies. Loopback only; stops what it starts.
"""

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HOST = bench.HOST


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def settle(pid, seconds=6.0):
    """RSS once it has not moved for 1.5 s (the proxy has handled what the clients did and
    given back what it gives back), or after `seconds`."""
    last, since = rss_kib(pid), time.monotonic()
    deadline = since + seconds
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = rss_kib(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 1.5:
            break
    return last


def open_conns(port, n):
    conns = []
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=10)
        conns.append(s)
    return conns


def ping_all(conns):
    for s in conns:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
    for s in conns:
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(64)
            if not chunk:
                raise RuntimeError("a proxy closed a connection")
            buf += chunk
        if buf != b"+PONG\r\n":
            raise RuntimeError(f"PING answered {buf!r}")


def busy(port, conns, depth, seconds, pid):
    """conns connections each pipelining `depth` GETs, for `seconds`; -> (max RSS KiB, replies)."""
    stop = threading.Event()
    counts = [0] * conns
    req = b"".join(b"*2\r\n$3\r\nGET\r\n$6\r\nkey:%02d\r\n" % (i % 100) for i in range(depth))

    def run(i):
        s = socket.create_connection((HOST, port), timeout=10)
        try:
            while not stop.is_set():
                s.sendall(req)
                got = 0
                buf = b""
                while got < depth:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                    got = buf.count(b"\r\n")  # "$-1\r\n" per missing key
                counts[i] += depth
        finally:
            s.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(conns)]
    for t in threads:
        t.start()
    peak, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    return peak, sum(counts)


def measure(name, server, args):
    pid = server.proc.pid
    base = settle(pid)
    conns = open_conns(server.port, args.conns)
    idle = settle(pid)
    ping_all(conns)
    pinged = settle(pid)
    for s in conns:
        s.close()
    time.sleep(1.0)
    closed = settle(pid)
    before_busy = closed
    peak, replies = busy(server.port, args.busy, args.depth, args.seconds, pid)
    after_busy = settle(pid)
    n = args.conns
    return {
        "name": name, "base": base, "idle": idle, "pinged": pinged, "closed": closed,
        "idle_per": (idle - base) / n, "pinged_per": (pinged - base) / n,
        "busy_peak": peak, "busy_per": (peak - before_busy) / args.busy, "replies": replies,
        "after_busy": after_busy,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--busy", type=int, default=50, help="pipelining connections")
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--targets", default="meltemi,twemproxy")
    args = ap.parse_args()
    binary = Path(os.environ.get("MELTEMI_BIN", REPO / "build" / "meltemi")).resolve()
    results = []
    with tempfile.TemporaryDirectory(prefix="meltemi-idle.") as tmp:
        work = Path(tmp)
        redis = bench.start_redis(work)
        try:
            for target in args.targets.split(","):
                if target == "meltemi":
                    s = bench.start_meltemi(work, redis.port, binary)
                else:
                    s = bench.start_twemproxy(work, redis.port)
                try:
                    if not s.alive():
                        sys.exit(f"{target} did not start: {s.error}")
                    results.append(measure(target, s, args))
                finally:
                    s.stop()
        finally:
            redis.stop()
    print(f"{args.conns} client connections; busy: {args.busy} connections x depth "
          f"{args.depth} GET for {args.seconds:g} s (RSS in KiB)")
    print("| proxy | RSS at start | idle | after one PING each | after all closed | "
          "KiB/conn idle | KiB/conn after PING | busy peak | KiB/busy conn | after busy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['name']} | {r['base']} | {r['idle']} | {r['pinged']} | {r['closed']} | "
              f"{r['idle_per']:.2f} | {r['pinged_per']:.2f} | {r['busy_peak']} | "
              f"{r['busy_per']:.1f} | {r['after_busy']} |")


if __name__ == "__main__":
    main()
