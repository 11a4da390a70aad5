#!/usr/bin/python3
"""
outlier.py - issue 12's measured goal for outlier detection: "with one of three Dubbo
providers killed, fewer than 1% of calls fail after the first ejection interval".

Three providers (rpcload serve --proto dubbo, tests/bench/rpcload.c, built by outlier.sh)
behind meltemi (--workers 2) with a DestinationRule outlierDetection
(consecutive5xxErrors / consecutiveGatewayErrors, interval, baseEjectionTime longer than the
run, so the dead provider does not come back during it). A Python client keeps --depth
Dubbo calls in flight on each of --conns connections for --seconds; at --kill-at seconds one
provider is killed by its PID (SIGKILL: no goodbye on its connections). Every call is timed
by when it was sent; a call fails when its reply has a status other than OK (20), when its
connection closes under it, or when it is still unanswered at the end (--call-timeout).
A client connection that closes is opened again (counted).

Printed (and appended to --out when given): calls and failures before the kill, in the first
ejection interval after it (kill .. kill + interval) and after it, the failure rate after the
first interval (the goal: < 1%), when /clusters first showed the provider ejected, and how
many calls meltemi's stats say went to the dead provider after that. Exit 1 when the rate is
>= 1% or nothing ran. Loopback only; bounded by --seconds (+ start-up and drain).

Usage: tests/bench/outlier.sh [--seconds 8] [--kill-at 2] [--conns 8] [--depth 4]
                              [--interval-ms 1000] [--threshold 5] [--out FILE]
"""

import argparse
import asyncio
import datetime
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Server, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SERVICE = "org.apache.dubbo.bench.Echo"
DUBBO_HOST = "outlier-bench.bench.svc.cluster.local"


def h2_str(s):
    b = s.encode()
    assert len(b) < 32
    return bytes([len(b)]) + b


# The same body rpcload sends: dubbo version, path, version, method, types, one argument,
# then the attachments map.
BODY = b"".join(h2_str(s) for s in ("2.0.2", SERVICE, "1.0.0", "echo", "Ljava/lang/String;",
                                     "bench")) + b"H" + b"".join(
    h2_str(s) for s in ("path", SERVICE, "interface", SERVICE, "version", "1.0.0")) + b"Z"


def dubbo_call(call_id):
    return struct.pack(">BBBBQI", 0xda, 0xbb, 0xc2, 0, call_id, len(BODY)) + BODY


def tcp_up(port):
    with socket.create_connection((HOST, port), timeout=1):
        return True


def meltemi_yaml(port, providers, a):
    eps = "".join(f"""\
  - address: {HOST}
    ports:
      tcp-metaprotocol-dubbo-bench: {p}
""" for p in providers)
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: outlier-bench, namespace: bench}}
spec:
  hosts: [{DUBBO_HOST}]
  addresses: [{HOST}]
  ports:
  - {{number: {port}, name: tcp-metaprotocol-dubbo-bench, protocol: TCP}}
  resolution: STATIC
  endpoints:
{eps}---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: outlier-bench, namespace: bench}}
spec:
  host: {DUBBO_HOST}
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: {a.threshold}
      consecutiveGatewayErrors: {a.threshold}
      interval: {a.interval_ms}ms
      baseEjectionTime: {int(a.seconds * 4 + 30)}s
      maxEjectionPercent: 50
"""


class Stats:
    def __init__(self):
        self.calls = []  # (sent_at, ok) relative to the start
        self.reconnects = 0
        self.lock = threading.Lock()

    def add(self, sent_at, ok):
        self.calls.append((sent_at, ok))


async def connection(port, depth, t0, until, stats, call_timeout):
    """Keeps depth calls in flight until `until` (monotonic); reopens a closed connection."""
    next_id = 1
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            stats.reconnects += 1
            await asyncio.sleep(0.01)
            continue
        inflight = {}

        def send():
            nonlocal next_id
            inflight[next_id] = time.monotonic() - t0
            writer.write(dubbo_call(next_id))
            next_id += 1
        for _ in range(depth):
            send()
        try:
            while inflight:
                hdr = await asyncio.wait_for(reader.readexactly(16), call_timeout)
                _, _, flag, status, rid, blen = struct.unpack(">BBBBQI", hdr)
                await asyncio.wait_for(reader.readexactly(blen), call_timeout)
                sent = inflight.pop(rid, None)
                if sent is None:
                    continue
                stats.add(sent, status == 20)
                if time.monotonic() < until:
                    send()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            for sent in inflight.values():
                stats.add(sent, False)
            inflight.clear()
            stats.reconnects += 1
        finally:
            writer.close()


def admin_get(admin, path):
    with urllib.request.urlopen(f"http://{HOST}:{admin}{path}", timeout=2) as r:
        return r.read().decode()


def watch_ejection(admin, dead_port, t0, stop, out):
    """Polls /clusters every 20 ms; out['ejected_at'] = first time the dead port is ejected."""
    key = f"{HOST}:{dead_port}::outlier_ejected::true"
    while not stop.is_set():
        try:
            if key in admin_get(admin, "/clusters"):
                out["ejected_at"] = time.monotonic() - t0
                return
        except OSError:
            pass
        time.sleep(0.02)


def window(calls, lo, hi):
    sel = [ok for sent, ok in calls if lo <= sent < hi]
    return len(sel), sum(1 for ok in sel if not ok)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rpcload", required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--kill-at", type=float, default=2.0)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--threshold", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--call-timeout", type=float, default=3.0)
    ap.add_argument("--out", help="append the result to this markdown file")
    ap.add_argument("--timeline", action="store_true",
                    help="also print calls sent and failed per 100 ms around the kill")
    a = ap.parse_args()
    binary = Path(os.environ.get("MELTEMI_BIN", REPO / "build" / "meltemi")).resolve()
    work = Path(tempfile.mkdtemp(prefix="meltemi-outlier-"))
    servers = []
    try:
        providers = []
        for i in range(3):
            port = free_port()
            s = Server(f"provider{i}", [a.rpcload, "serve", "--proto", "dubbo", "--port",
                                        str(port)], work, port)
            if not s.start(lambda port=port: tcp_up(port)):
                sys.exit(f"provider {i} did not start: {s.error}")
            servers.append(s)
            providers.append(port)
        port, admin = free_port(), free_port()
        conf = work / "conf"
        conf.mkdir()
        (conf / "outlier.yaml").write_text(meltemi_yaml(port, providers, a))
        m = Server("meltemi", [str(binary), "run", "-c", str(conf), "--admin", f"{HOST}:{admin}",
                               "--workers", str(a.workers), "--log-level", "warn"], work, port)
        if not m.start(lambda: admin_get(admin, "/ready") is not None and tcp_up(port), 30):
            sys.exit(f"meltemi did not start: {m.error}")
        servers.append(m)

        stats, stop, ej = Stats(), threading.Event(), {}
        dead = servers[2]
        t0 = time.monotonic()
        until = t0 + a.seconds

        def killer():
            time.sleep(a.kill_at)
            ej["killed_at"] = time.monotonic() - t0
            dead.proc.send_signal(signal.SIGKILL)  # by PID: no chance to answer what it holds
            dead.proc.wait(timeout=10)
            watch_ejection(admin, providers[2], t0, stop, ej)
        kt = threading.Thread(target=killer, daemon=True)
        kt.start()

        async def load():
            await asyncio.gather(*(connection(port, a.depth, t0, until, stats, a.call_timeout)
                                   for _ in range(a.conns)))
        asyncio.run(load())
        stop.set()
        kt.join(timeout=5)
    finally:
        for s in reversed(servers):
            s.stop()

    killed = ej.get("killed_at", a.kill_at)
    first_end = killed + a.interval_ms / 1000.0
    before = window(stats.calls, 0, killed)
    first = window(stats.calls, killed, first_end)
    after = window(stats.calls, first_end, a.seconds + 1)
    rate = 100.0 * after[1] / after[0] if after[0] else float("nan")
    ejected_at = ej.get("ejected_at")
    lines = [
        f"- calls before the kill (0 .. {killed:.2f} s): {before[0]}, failed {before[1]}",
        f"- first ejection interval ({killed:.2f} .. {first_end:.2f} s): {first[0]} calls, "
        f"failed {first[1]}",
        f"- after it ({first_end:.2f} .. {a.seconds:.2f} s): {after[0]} calls, failed {after[1]}"
        f" = **{rate:.3f}%** (goal < 1%)",
        "- /clusters showed the provider ejected at "
        + (f"{ejected_at:.2f} s ({(ejected_at - killed) * 1000:.0f} ms after the kill)"
           if ejected_at is not None else "never"),
        f"- client connections reopened (closed under calls): {stats.reconnects}",
    ]
    print("\n".join(lines))
    if a.timeline:
        for k in range(int((killed - 0.5) * 10), int((first_end + 0.5) * 10)):
            n, bad = window(stats.calls, k / 10, (k + 1) / 10)
            print(f"  {k / 10:5.1f} s  sent {n:6d}  failed {bad}")
    if a.out:
        cmd = " ".join(["tests/bench/outlier.sh"] + sys.argv[3:])
        with open(a.out, "a") as f:
            f.write(f"\n## Outlier detection: one of three Dubbo providers killed "
                    f"({datetime.date.today().isoformat()})\n\n"
                    f"- Command: `{cmd}`; meltemi --workers {a.workers}, {a.conns} connections x "
                    f"depth {a.depth}, {a.seconds:g} s, provider SIGKILLed at {a.kill_at:g} s; "
                    f"consecutive5xxErrors = consecutiveGatewayErrors = {a.threshold}, interval "
                    f"{a.interval_ms} ms; on a loaded machine (counts, not speed, matter)\n"
                    + "\n".join(lines) + "\n")
    ok = after[0] > 0 and rate < 1.0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
