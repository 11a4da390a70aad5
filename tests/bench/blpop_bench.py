#!/usr/bin/env python3
"""
blpop_bench.py - issue 10's goal for blocking commands: GET latency (p99) of 50 clients
through meltemi stays within 1.1x while 1,000 other clients sit in `BLPOP k 0`.

One redis-server and one meltemi (`--workers 1`, a DestinationRule giving the lease pool
room for the blocked clients: connectionPool.tcp.maxConnections, per endpoint and worker) on
127.0.0.1. Each repetition makes two runs of
`redis-benchmark -t get -c 50 -P 1 -n N -r 100000` through meltemi:
  quiet:   nothing else connected;
  blocked: 1,000 raw connections first send `BLPOP blpop-bench:<i> 0` through meltemi and
           redis-server's INFO says blocked_clients >= 1,000 (each BLPOP on a lease of its
           own) before and after the run; then they close, and their leases with them.
The order of the two alternates between repetitions, so a trend in the machine's load
favours neither. --direct adds the same two runs against redis-server itself (1,000 BLPOP
clients connected to it directly): the control, what the blocked clients cost Redis.
Prints medians over repetitions and each row's p99 against its quiet run. Bounded: N
requests per run (calibrated to about --seconds), --reps repetitions, a timeout on every
wait. Loopback only.

  /usr/bin/python3 tests/bench/blpop_bench.py [--blocked 1000] [--reps 3] [--seconds 3] [--direct]
MELTEMI_BIN selects the binary (default build/meltemi).
"""

import argparse
import os
import socket
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (Server, start_redis, run_benchmark, free_port, wait_until)

HOST = bench.HOST


def start_meltemi(work, redis_port, binary, max_connections):
    conf = work / "meltemi-blpop-conf"
    conf.mkdir(exist_ok=True)
    port, admin = bench.free_port(), bench.free_port()
    (conf / "bench.yaml").write_text(bench.service_entry_yaml(port, redis_port) + f"""\
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


def measure(redis_port, port, n, args, blocked):
    """One redis-benchmark run against port, with args.blocked clients in BLPOP on port
    during it when blocked (checked at the server before and after, closed afterwards)."""
    if not blocked:
        return run_get(port, n, args.seconds)
    socks = block_clients(port, args.blocked)
    try:
        if not bench.wait_until(
                lambda: info_field(redis_port, "blocked_clients") >= args.blocked, 30):
            sys.exit(f"only {info_field(redis_port, 'blocked_clients')} of "
                     f"{args.blocked} clients blocked at the server within 30 s")
        res = run_get(port, n, args.seconds)
        if info_field(redis_port, "blocked_clients") < args.blocked:
            sys.exit("blocked clients were released during the run")
    finally:
        for c in socks:
            c.close()
    if not bench.wait_until(lambda: info_field(redis_port, "blocked_clients") == 0, 30):
        sys.exit("the leases of closed BLPOP clients did not close within 30 s")
    return res


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
    ap.add_argument("--direct", action="store_true",
                    help="also the same two runs against redis-server itself (the control: "
                         "what 1,000 blocked clients cost Redis)")
    args = ap.parse_args()
    binary = Path(os.environ.get("MELTEMI_BIN", bench.REPO / "build" / "meltemi"))
    work = Path(tempfile.mkdtemp(prefix="meltemi-blpop-bench-"))
    servers = []
    rows = {}
    try:
        redis = bench.start_redis(work)
        servers.append(redis)
        m = start_meltemi(work, redis.port, binary, args.blocked + 100)
        servers.append(m)
        probe = run_get(m.port, 20000, args.seconds)
        n = max(10000, int(probe["rps"] * args.seconds) // 1000 * 1000)
        bench.log(f"requests per run: {n}")
        targets = [("meltemi", m.port)] + ([("direct", redis.port)] if args.direct else [])
        for rep in range(args.reps):
            for name, port in targets:
                # quiet first on odd repetitions, blocked first on even ones: a trend in the
                # machine's load does not favour either
                for phase in (("quiet", "blocked") if rep % 2 == 0 else ("blocked", "quiet")):
                    res = measure(redis.port, port, n, args, phase == "blocked")
                    rows.setdefault((name, phase), []).append(res)
                    bench.log(f"rep {rep + 1} {name} {phase}: {res['rps']:,.0f} req/s "
                              f"p50 {res['p50']:.3f} p99 {res['p99']:.3f}")
    finally:
        for s in reversed(servers):
            s.stop()
    print(f"| GET, 50 clients (redis-benchmark -c 50 -P 1 -n {n}) | target | req/s (median) "
          f"| p50 ms | p99 ms | p99 vs quiet |")
    print("|---|---|---:|---:|---:|---:|")
    for (name, phase), v in rows.items():
        med = {f: statistics.median(r[f] for r in v) for f in ("rps", "p50", "p99")}
        quiet = statistics.median(r["p99"] for r in rows[(name, "quiet")])
        label = "no blocked client" if phase == "quiet" else f"{args.blocked} clients in BLPOP k 0"
        print(f"| {label} | {name} | {med['rps']:,.0f} | {med['p50']:.3f} | {med['p99']:.3f} "
              f"| {med['p99'] / quiet:.2f}x |")
    print(f"\nreps={args.reps}; per-rep p99: " + "; ".join(
        f"{name} {phase} {[r['p99'] for r in v]}" for (name, phase), v in rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
