#!/usr/bin/python3
"""
callgrind.py - instructions per request inside the meltemi process, counted by Valgrind's
callgrind: a number that does not depend on the machine's load or clock, to compare the
request path before and after a change (the runtime refactor first).

Rows (one client connection each, so every request is one full pass through the loop):
  redis GET P=1    redis-benchmark -c 1 -P 1 -t get  -> meltemi -> redis-server
  redis GET P=16   redis-benchmark -c 1 -P 16 -t get -> meltemi -> redis-server
  dubbo depth 1    rpcload run --proto dubbo --conns 1 --depth 1 -> meltemi -> rpcload serve
  redis TLS P=1/16 redis-benchmark --tls -c 1 -> meltemi (Gateway TLS termination, TLS
                   origination by DestinationRule) -> redis-server's TLS port

meltemi runs as `valgrind --tool=callgrind meltemi run --workers 1` (instructions of all its
threads: main and the worker). For each row: a warm-up load, then twice "zero the counters
(callgrind_control -z), send a load, dump them (callgrind_control -d)" with a small and a
large load; instructions per request = (Ir_large - Ir_small) / (requests_large -
requests_small), which cancels what one load costs once (connect, accept, redis-benchmark's
CONFIG GET). The idle loop costs ~40k instructions per second, under 0.01 per request.

Usage: tests/bench/callgrind.sh [--requests N] [--rows redis-p1,redis-p16,dubbo-d1]
  (also dubbo-d1-router: with a MetaRouter, and dubbo-d1-rl: the same with a localRateLimit
  that never refuses, the cost of the shared token bucket; redis-tls-p1, redis-tls-p16: TLS
  on both sides, a Gateway terminating and a DestinationRule originating it)
MELTEMI_BIN selects the binary (default build/meltemi); --rpcload is given by callgrind.sh.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import rpc_bench  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HOST = bench.HOST


def callgrind_wrapper(work, binary):
    """A script that execs meltemi under callgrind: the start_meltemi helpers of bench.py and
    rpc_bench.py take a binary path, and with exec the PID they stop is valgrind's."""
    w = work / "meltemi-callgrind"
    w.write_text("#!/bin/sh\n"
                 f"exec valgrind --tool=callgrind --callgrind-out-file={work}/callgrind.out.%p "
                 f"--log-file={work}/valgrind.%p.log {binary} \"$@\"\n")
    w.chmod(0o755)
    return w


class Counter:
    """callgrind_control on one process: zero, then dump and read the dump's total Ir."""

    def __init__(self, work, pid):
        self.work, self.pid, self.dumps = work, pid, 0

    def control(self, flag):
        r = subprocess.run(["callgrind_control", flag, str(self.pid)], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0 or "OK" not in r.stdout:
            sys.exit(f"callgrind_control {flag} {self.pid} failed: {r.stdout}{r.stderr}")

    def zero(self):
        self.control("-z")

    def dump_total(self):
        self.control("-d")
        self.dumps += 1
        path = self.work / f"callgrind.out.{self.pid}.{self.dumps}"
        m = re.search(r"^totals:\s+(\d+)", path.read_text(), re.M)
        if not m:
            sys.exit(f"no totals line in {path}")
        return int(m.group(1))


def redis_load(port, pipeline, n, ca=None):
    argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-t", "get", "-c", "1",
            "-P", str(pipeline), "-n", str(n), "-r", str(bench.KEYSPACE), "--csv"]
    if ca:
        argv += ["--tls", "--cacert", str(ca)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or "rror" in r.stdout + r.stderr:
        sys.exit(f"redis-benchmark failed: {r.stdout[-300:]}{r.stderr[-300:]}")
    return n


def dubbo_load(rpcload, port, seconds):
    argv = rpc_bench.run_argv(rpcload, "dubbo", port, 1, seconds)
    argv[argv.index("--conns") + 1] = "1"
    argv[argv.index("--warmup") + 1] = "0"
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60 + 3 * seconds)
    m = re.search(r"\bcalls=(\d+)", r.stdout)
    if r.returncode != 0 or not m:
        sys.exit(f"rpcload failed: {r.stdout[-300:]}{r.stderr[-300:]}")
    return int(m.group(1))


def measure(counter, load, small, large):
    """-> (instructions per request, requests counted) from a small and a large load."""
    load(small)  # warm-up: pools connected, Lua and caches hot
    counter.zero()
    n1 = load(small)
    i1 = counter.dump_total()
    counter.zero()
    n2 = load(large)
    i2 = counter.dump_total()
    if n2 <= n1:
        sys.exit(f"the large load counted {n2} requests, the small one {n1}")
    return (i2 - i1) / (n2 - n1), n2 - n1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rpcload", required=True, help="the rpcload binary (callgrind.sh builds it)")
    ap.add_argument("--requests", type=int, default=20000,
                    help="Redis requests of the large load (the small one is a fifth)")
    ap.add_argument("--dubbo-seconds", type=float, default=4.0,
                    help="length of the large Dubbo load (the small one is a quarter)")
    ap.add_argument("--rows", default="redis-p1,redis-p16,dubbo-d1")
    args = ap.parse_args()
    binary = Path(os.environ.get("MELTEMI_BIN", REPO / "build" / "meltemi")).resolve()
    if not binary.exists():
        sys.exit(f"{binary} not found (make build, or set MELTEMI_BIN)")
    rows = [r for r in args.rows.split(",") if r]
    results = []
    with tempfile.TemporaryDirectory(prefix="meltemi-callgrind.") as tmp:
        work = Path(tmp)
        wrapper = callgrind_wrapper(work, binary)
        servers = []
        try:
            if any(r.startswith("redis-tls") for r in rows):
                certs = bench.make_certs(work)
                redis = bench.start_redis(work, certs)
                servers.append(redis)
                m = bench.start_meltemi_tls(work, redis.tls_port, wrapper, certs)
                servers.append(m)
                if not m.alive():
                    sys.exit(f"meltemi under callgrind did not start: {m.error}")
                c = Counter(work, m.proc.pid)
                for p in (1, 16):
                    if f"redis-tls-p{p}" in rows:
                        n = args.requests
                        ipr, cnt = measure(c, lambda k, p=p: redis_load(m.port, p, k, certs["ca"]),
                                           n // 5, n)
                        results.append((f"redis TLS GET P={p}", ipr, cnt))
                        bench.log(f"callgrind: redis TLS GET P={p}: {ipr:.0f} instructions/request")
                m.stop()
                redis.stop()
            if any(r.startswith("redis-p") for r in rows):
                redis = bench.start_redis(work)
                servers.append(redis)
                m = bench.start_meltemi(work, redis.port, wrapper)
                servers.append(m)
                if not m.alive():
                    sys.exit(f"meltemi under callgrind did not start: {m.error}")
                c = Counter(work, m.proc.pid)
                for p in (1, 16):
                    if f"redis-p{p}" in rows:
                        n = args.requests
                        ipr, cnt = measure(c, lambda k, p=p: redis_load(m.port, p, k), n // 5, n)
                        results.append((f"redis GET P={p}", ipr, cnt))
                        bench.log(f"callgrind: redis GET P={p}: {ipr:.0f} instructions/request")
            dubbo_rows = {"dubbo-d1": ("dubbo call depth=1", False, False),
                          "dubbo-d1-router": ("dubbo router d=1", True, False),
                          "dubbo-d1-rl": ("dubbo router+rl d=1", True, True)}
            for row, (label, router, rate_limit) in dubbo_rows.items():
                if row not in rows:
                    continue
                up = rpc_bench.start_server(work, args.rpcload, "dubbo")
                servers.append(up)
                m, ports = rpc_bench.start_meltemi(work, wrapper, f"meltemi-{row}",
                                                   {"dubbo": up.port}, router=router,
                                                   rate_limit=rate_limit)
                servers.append(m)
                if not m.alive():
                    sys.exit(f"meltemi under callgrind did not start: {m.error}")
                c = Counter(work, m.proc.pid)
                s = args.dubbo_seconds
                ipr, cnt = measure(c, lambda k: dubbo_load(args.rpcload, ports["dubbo"], k),
                                   s / 4, s)
                results.append((label, ipr, cnt))
                bench.log(f"callgrind: {label}: {ipr:.0f} instructions/request")
                m.stop()
                up.stop()
        finally:
            for s in reversed(servers):
                s.stop()
    print(f"meltemi {binary} (callgrind, --workers 1, one client connection)")
    print(f"| {'row':<20} | {'instructions/request':>20} | {'requests measured':>17} |")
    print(f"|{'-' * 22}|{'-' * 21}:|{'-' * 18}:|")
    for name, ipr, cnt in results:
        print(f"| {name:<20} | {ipr:>20.0f} | {cnt:>17} |")


if __name__ == "__main__":
    main()
