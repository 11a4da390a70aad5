#!/usr/bin/python3
"""
cluster.py - redis-benchmark through meltemi in front of a 6-node Redis Cluster (3 masters,
3 replicas; RedisDestination mode CLUSTER), beside `redis-benchmark --cluster` straight to
the nodes, in the same run.

Targets: direct (redis-benchmark --cluster: the client itself routes by slot, one
connection per client per master), meltemi-w1 and meltemi-w2 (plain redis-benchmark at
meltemi's VIP, meltemi with --workers 1 / 2). Rows: GET and SET, -c 50, -P 1 and -P 16,
-r 100000. Request counts are sized from a calibration run against the direct target so
each run lasts about --seconds; targets are interleaved inside each repetition (rotating
their order) and the table shows medians over repetitions and the ratio to direct.

The cluster comes from tests/integration/cluster_fixtures.py (the one the tests use); every
process is stopped by PID at the end.

Usage: tests/bench/cluster.sh [--reps N] [--seconds S] [--out FILE] [--note TEXT]
"""

import argparse
import csv
import datetime
import io
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from cluster_fixtures import CLUSTER_VIP, RedisCluster, cluster_yaml  # noqa: E402
from configs import write_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import free_port, log, wait_until  # noqa: E402

ROWS = [("GET", 1), ("SET", 1), ("GET", 16), ("SET", 16)]
CLIENTS = 50
KEYSPACE = 100000
TARGETS = ["direct", "meltemi-w1", "meltemi-w2"]


def meltemi_set_ok(port):
    """A SET through meltemi answered +OK (the worker has learnt the slot map)."""
    with socket.create_connection((CLUSTER_VIP, port), timeout=2) as s:
        s.settimeout(2)
        s.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nwarm\r\n$1\r\n1\r\n")
        return s.recv(64).startswith(b"+OK")


class Meltemi:
    def __init__(self, binary, cluster, workers, work):
        self.port = free_port(CLUSTER_VIP)
        self.admin = free_port("127.0.0.1")
        conf = write_config(work / f"conf-w{workers}", cluster_yaml(cluster, self.port))
        self.log = work / f"meltemi-w{workers}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(binary), "run", "-c", str(conf), "--admin", f"127.0.0.1:{self.admin}",
                 "--workers", str(workers), "--log-level", "warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready():
            url = f"http://127.0.0.1:{self.admin}/ready"
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200 and meltemi_set_ok(self.port)
        if not wait_until(ready, 15):
            self.stop()
            sys.exit(f"meltemi --workers {workers} not ready: {self.log.read_text()[-800:]}")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def bench_argv(target, ports, test, pipeline, n):
    host, port = ports[target]
    argv = ["redis-benchmark"] + (["--cluster"] if target == "direct" else [])
    return argv + ["-h", host, "-p", str(port), "-t", test.lower(), "-c", str(CLIENTS),
                   "-P", str(pipeline), "-n", str(n), "-r", str(KEYSPACE), "--csv"]


def run_benchmark(argv, test, timeout):
    """-> (dict rps/p50/p99, None) or (None, why it failed)."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f}s"
    text = r.stdout + r.stderr
    errors = [ln for ln in text.splitlines() if "rror" in ln]
    if r.returncode != 0 or errors:
        return None, f"exit {r.returncode}: {(errors or text.splitlines() or [''])[0][:200]}"
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith('"')]  # --cluster chatter
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        if row.get("test") == test:
            return {"rps": float(row["rps"]), "p50": float(row["p50_latency_ms"]),
                    "p99": float(row["p99_latency_ms"])}, None
    return None, f"no {test} line in output: {r.stdout[-200:]!r}"


def table(results, failures):
    lines = ["| test | P | target | req/s (median) | p50 ms | p99 ms | vs direct | runs ok |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for test, p in ROWS:
        base = results.get(("direct", test, p))
        base_rps = statistics.median(r["rps"] for r in base) if base else None
        for t in TARGETS:
            runs = results.get((t, test, p), [])
            total = len(runs) + len(failures.get((t, test, p), []))
            if not runs:
                lines.append(f"| {test} | {p} | {t} | failed | - | - | - | 0/{total} |")
                continue
            rps = statistics.median(r["rps"] for r in runs)
            p50 = statistics.median(r["p50"] for r in runs)
            p99 = statistics.median(r["p99"] for r in runs)
            ratio = f"{rps / base_rps:.2f}x" if base_rps else "-"
            lines.append(f"| {test} | {p} | {t} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | "
                         f"{ratio} | {len(runs)}/{total} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="target length of each run")
    ap.add_argument("--out", default=str(REPO / "tests/bench/RESULTS-cluster.md"))
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    binary = Path(os.environ.get("MELTEMI_BIN", REPO / "build" / "meltemi"))
    if not binary.exists():
        sys.exit(f"{binary} does not exist (build first or set MELTEMI_BIN)")

    started = datetime.datetime.utcnow()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="meltemi-cluster-bench-"))
    cluster = RedisCluster(work / "cluster").start()
    proxies = []
    results, failures = {}, {}
    try:
        proxies = [Meltemi(binary, cluster, 1, work), Meltemi(binary, cluster, 2, work)]
        seed = cluster.masters()[0]
        ports = {"direct": (seed.host, seed.port),
                 "meltemi-w1": (CLUSTER_VIP, proxies[0].port),
                 "meltemi-w2": (CLUSTER_VIP, proxies[1].port)}
        sizes = {}
        for test, p in ROWS:
            res, err = run_benchmark(bench_argv("direct", ports, test, p, 20000 * p), test, 60)
            if res is None:
                sys.exit(f"calibration against the cluster failed: {err}")
            n = int(res["rps"] * args.seconds)
            sizes[(test, p)] = max(10000, n - n % 1000)
        log("requests per run: " + ", ".join(f"{t} P={p}: {n}" for (t, p), n in sizes.items()))
        for rep in range(args.reps):
            for i, (test, p) in enumerate(ROWS):
                k = (rep + i) % len(TARGETS)
                for t in TARGETS[k:] + TARGETS[:k]:
                    key = (t, test, p)
                    if t != "direct" and not proxies[TARGETS.index(t) - 1].alive():
                        failures.setdefault(key, []).append("meltemi exited")
                        continue
                    argv = bench_argv(t, ports, test, p, sizes[(test, p)])
                    res, err = run_benchmark(argv, test, timeout=30 + 20 * args.seconds)
                    if res is None:
                        failures.setdefault(key, []).append(err)
                        log(f"rep {rep + 1} {test} P={p} {t}: FAILED {err}")
                    else:
                        results.setdefault(key, []).append(res)
                        log(f"rep {rep + 1} {test} P={p} {t}: {res['rps']:,.0f} req/s "
                            f"p50 {res['p50']:.3f} p99 {res['p99']:.3f}")
    finally:
        for m in proxies:
            m.stop()
        cluster.kill_all()
    elapsed = time.monotonic() - t0
    tbl = table(results, failures)
    print(tbl)
    rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    example = " ".join(bench_argv("meltemi-w1", {"meltemi-w1": (CLUSTER_VIP, "PORT")}, "GET",
                                  16, sizes[("GET", 16)]))
    example_direct = " ".join(bench_argv("direct", {"direct": ("127.0.0.1", "NODE")}, "GET",
                                         16, sizes[("GET", 16)]))
    cmd = " ".join(["tests/bench/cluster.sh"] + [shlex.quote(a) for a in sys.argv[1:]
                                                 if a != args.note])
    fails = "".join(f"- {t} {test} P={p}: {why}\n" for (t, test, p), whys in
                    sorted(failures.items()) for why in sorted(set(whys)))
    Path(args.out).write_text(f"""# Redis Cluster benchmark: meltemi vs redis-benchmark --cluster

{args.note}

- Command: `MELTEMI_BIN=... {cmd}` ({args.reps} repetitions, about {args.seconds:g} s per run,
  {elapsed / 60:.1f} min in all); meltemi git {rev}
- Date: {started:%Y-%m-%d %H:%M UTC}; {os.cpu_count()} CPUs shared by the client, meltemi
  and the six redis-server processes (7.0.15), all over loopback
- Cluster: 6 nodes, 3 masters + 3 replicas (`redis-cli --cluster create ...
  --cluster-replicas 1`), no persistence; meltemi `mode: CLUSTER`, 3 nodes as seeds,
  readPolicy MASTER (the default), `--log-level warn`
- direct: `{example_direct}` (the client routes by slot itself)
- meltemi: `{example}` (a plain client)
- Targets interleaved inside each repetition; medians over repetitions.

{tbl}
""" + (f"\nFailed runs:\n\n{fails}" if fails else ""))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
