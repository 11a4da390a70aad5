#!/usr/bin/env python3
"""
blpop_bench.py - issue 10's goal for blocking commands: GET latency (p99) of 50 clients
through meltemi stays within 1.1x while 1,000 other clients sit in `BLPOP k 0`.

One redis-server and one meltemi (`--workers 1`, a DestinationRule giving the lease pool
room for the blocked clients: connectionPool.tcp.maxConnections, per endpoint and worker) on
127.0.0.1. Each repetition runs, back to back in the same process tree:
  1. quiet:   `redis-benchmark -t get -c 50 -n N -r 100000` through meltemi
  2. blocked: 1,000 raw connections send `BLPOP blpop-bench:<i> 0` through meltemi; once
              redis-server's INFO says blocked_clients >= 1,000 (each BLPOP on a lease of its
              own), the same redis-benchmark run; then the 1,000 connections close (their
              leases close with them) and the server is checked to be back to 0 blocked.
Prints both rows (median over repetitions) and the p99 ratio blocked/quiet. Bounded: N
requests per run (calibrated to about --seconds against meltemi), --reps repetitions, a
timeout on every wait. Loopback only.

  /usr/bin/python3 tests/bench/blpop_bench.py [--blocked 1000] [--reps 3] [--seconds 3]
MELTEMI_BIN selects the binary (default build/meltemi).
"""

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (Server, start_redis, run_benchmark, free_port, wait_until)

HOST = bench.HOST


def start_meltemi(work, redis_port, binary, max_connections):
    conf = work / "meltemi-blpop-conf"
    conf.mkdir(exist_ok=True)
    port, admin = bench.free_port(), bench.free_port()
    (conf / "bench.yaml").write_text(f"""\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: bench
  namespace: bench
spec:
  hosts:
  - bench.bench.svc.cluster.local
  addresses:
  - {HOST}
  ports:
  - number: {port}
    name: tcp-redis
    protocol: TCP
  resolution: STATIC
  endpoints:
  - address: {HOST}
    ports:
      tcp-redis: {redis_port}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: bench-leases
  namespace: bench
spec:
  host: bench.bench.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: {max_connections}
""")
    s = bench.Server("meltemi", [str(binary), "run", "-c", str(conf), "--admin",
                                 f"{HOST}:{admin}", "--workers", "1", "--log-level", "warn"],
                     work, port)

    def ready():
        with urllib.request.urlopen(f"http://{HOST}:{admin}/ready", timeout=1) as r:
            return r.status == 200 and bench.tcp_ping(port)
    if not s.start(ready, timeout=60):
        sys.exit(f"meltemi did not start: {s.error}")
    return s


def info_field(port, field):
    """An integer of redis-server's INFO (asked directly, not through meltemi)."""
    with socket.create_connection((HOST, port), timeout=5) as c:
        c.sendall(b"*1\r\n$4\r\nINFO\r\n")
        data = b""
        while b"\r\n" not in data or len(data) < int(data[1:data.index(b"\r\n")]) + 5:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    for ln in data.decode(errors="replace").splitlines():
        if ln.startswith(field + ":"):
            return int(ln.split(":", 1)[1])
    return -1


def block_clients(port, n):
    socks = []
    for i in range(n):
        c = socket.create_connection((HOST, port), timeout=10)
        key = f"blpop-bench:{i}".encode()
        c.sendall(b"*3\r\n$5\r\nBLPOP\r\n$%d\r\n%s\r\n$1\r\n0\r\n" % (len(key), key))
        socks.append(c)
    return socks


def run_get(port, n, seconds):
    res, err = bench.run_benchmark(port, "GET", 1, n, timeout=60 + 20 * seconds)
    if res is None:
        sys.exit(f"redis-benchmark failed: {err}")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocked", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="target length of each run")
    args = ap.parse_args()
    binary = Path(os.environ.get("MELTEMI_BIN", bench.REPO / "build" / "meltemi"))
    work = Path(tempfile.mkdtemp(prefix="meltemi-blpop-bench-"))
    servers = []
    rows = {"quiet": [], "blocked": []}
    try:
        redis = bench.start_redis(work)
        servers.append(redis)
        m = start_meltemi(work, redis.port, binary, args.blocked + 100)
        servers.append(m)
        probe = run_get(m.port, 20000, args.seconds)
        n = max(10000, int(probe["rps"] * args.seconds) // 1000 * 1000)
        bench.log(f"requests per run: {n}")
        for rep in range(args.reps):
            res = run_get(m.port, n, args.seconds)
            rows["quiet"].append(res)
            bench.log(f"rep {rep + 1} quiet:   {res['rps']:,.0f} req/s p50 {res['p50']:.3f} "
                      f"p99 {res['p99']:.3f}")
            socks = block_clients(m.port, args.blocked)
            if not bench.wait_until(
                    lambda: info_field(redis.port, "blocked_clients") >= args.blocked, 30):
                sys.exit(f"only {info_field(redis.port, 'blocked_clients')} of "
                         f"{args.blocked} clients blocked at the server within 30 s")
            res = run_get(m.port, n, args.seconds)
            rows["blocked"].append(res)
            blocked_after = info_field(redis.port, "blocked_clients")
            bench.log(f"rep {rep + 1} blocked: {res['rps']:,.0f} req/s p50 {res['p50']:.3f} "
                      f"p99 {res['p99']:.3f} (server: {blocked_after} blocked clients)")
            if blocked_after < args.blocked:
                sys.exit("blocked clients were released during the run")
            for c in socks:
                c.close()
            if not bench.wait_until(lambda: info_field(redis.port, "blocked_clients") == 0, 30):
                sys.exit("the leases of closed BLPOP clients did not close within 30 s")
    finally:
        for s in reversed(servers):
            s.stop()
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("rps", "p50", "p99")}
           for k, v in rows.items()}
    print(f"| GET, 50 clients (redis-benchmark -c 50 -P 1 -n {n}) | req/s (median) | p50 ms | "
          f"p99 ms |")
    print("|---|---:|---:|---:|")
    for k, label in (("quiet", "no blocked client"),
                     ("blocked", f"{args.blocked} clients in BLPOP k 0")):
        print(f"| {label} | {med[k]['rps']:,.0f} | {med[k]['p50']:.3f} | {med[k]['p99']:.3f} |")
    ratio = med["blocked"]["p99"] / med["quiet"]["p99"] if med["quiet"]["p99"] else float("nan")
    print(f"\np99 blocked / quiet: {ratio:.2f}x (goal <= 1.1x); reps={args.reps}, "
          f"per-rep p99 quiet {[r['p99'] for r in rows['quiet']]}, "
          f"blocked {[r['p99'] for r in rows['blocked']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
