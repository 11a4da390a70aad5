#!/usr/bin/python3
"""
callgrind.py - instructions per request inside the meltemi process, counted by Valgrind's
callgrind: a number that does not depend on the machine's load or clock, to compare the
request path before and after a change (the runtime refactor first).

Rows (one client connection each unless --rpc-conns says otherwise):
  redis GET P=1    redis-benchmark -c 1 -P 1 -t get  -> meltemi -> redis-server
  redis GET P=16   redis-benchmark -c 1 -P 16 -t get -> meltemi -> redis-server
  redis ... policies  the same through bench.py's meltemi+policies listener (prefix routes,
                   a 0% fault, a 0% mirror: the Lua policy chain per command), rows
                   redis-p1-policies and redis-p16-policies
  dubbo depth 1    rpcload run --proto dubbo --conns 1 --depth 1 -> meltemi -> rpcload serve
  dubbo depth 16   the same with --depth 16 (row dubbo-d16)
  thrift depth 1   rpcload run --proto thrift (strict binary, framed) --depth 1 (thrift-d1)
  thrift depth 16  the same with --depth 16 (thrift-d16)
  The RPC rows go through a listener without a MetaRouter (the default route); append
  "-router" to a row name (dubbo-d16-router) for the same load through a MetaRouter that
  matches on the method and picks subset v1 (rpc.sh's meltemi-router target).
  redis TLS P=1/16 redis-benchmark --tls -c 1 -> meltemi (Gateway TLS termination, TLS
                   origination by DestinationRule) -> redis-server's TLS port (rows
                   redis-tls-p1, redis-tls-p16)

meltemi runs as `valgrind --tool=callgrind meltemi run --workers 1` (instructions of all its
threads: main and the worker). For each row: a warm-up load, then twice "zero the counters
(callgrind_control -z), send a load, dump them (callgrind_control -d)" with a small and a
large load; instructions per request = (Ir_large - Ir_small) / (requests_large -
requests_small), which cancels what one load costs once (connect, accept, redis-benchmark's
CONFIG GET). The idle loop costs ~40k instructions per second, under 0.01 per request.

Usage: tests/bench/callgrind.sh [--requests N] [--dubbo-seconds S] [--rpc-conns N]
                                [--redis-clients N] (redis-benchmark -c of the plain Redis rows)
                                [--rows redis-p1,redis-p16,dubbo-d1,dubbo-d16,thrift-d1,...]
                                [--keep DIR]
  (an RPC row with "-router" goes through a MetaRouter; with "-rl" through the same router
  with a localRateLimit that never refuses, the cost of the shared token bucket)
  (redis-tls-p1, redis-tls-p16: TLS on both sides, a Gateway terminating and a
  DestinationRule originating it)
MELTEMI_BIN selects the binary (default build/meltemi); --rpcload is given by callgrind.sh.
--keep DIR copies the callgrind dumps there (callgrind_annotate DIR/callgrind.out.PID.N: the
dumps of a row's large load show where its instructions go).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import rpc_bench  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HOST = bench.HOST

# Under valgrind meltemi starts ten to fifty times slower (and more on a busy machine, where
# callgrind's counts stay exact): the harnesses' 10 s readiness wait becomes 120 s here.
_server_start = bench.Server.start


def _patient_start(self, ready, timeout=10):
    return _server_start(self, ready, timeout=max(timeout, 120))


bench.Server.start = _patient_start


def callgrind_wrapper(work, binary):
    """A script that execs meltemi under callgrind: the start_meltemi helpers of bench.py and
    rpc_bench.py take a binary path, and with exec the PID they stop is valgrind's."""
    w = work / "meltemi-callgrind"
    w.write_text("#!/bin/sh\n"
                 f"exec valgrind --tool=callgrind --compress-strings=no "
                 f"--callgrind-out-file={work}/callgrind.out.%p "
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


def redis_load(port, pipeline, n, ca=None, clients=1):
    argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-t", "get", "-c", str(clients),
            "-P", str(pipeline), "-n", str(n), "-r", str(bench.KEYSPACE), "--csv"]
    if ca:
        argv += ["--tls", "--cacert", str(ca)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or "rror" in r.stdout + r.stderr:
        sys.exit(f"redis-benchmark failed: {r.stdout[-300:]}{r.stderr[-300:]}")
    return n


def rpc_load(rpcload, proto, port, depth, conns, seconds):
    """-> calls made. A load too short to complete a call under valgrind on a busy machine
    (rpcload then reports calls=0 and fails) is run again, twice as long, up to four times:
    the method only needs two loads of different sizes, not given lengths."""
    for _ in range(4):
        argv = rpc_bench.run_argv(rpcload, proto, port, depth, seconds)
        argv[argv.index("--conns") + 1] = str(conns)
        argv[argv.index("--warmup") + 1] = "0"
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60 + 3 * seconds)
        m = re.search(r"\bcalls=(\d+)", r.stdout)
        if r.returncode == 0 and m:
            return int(m.group(1))
        if not m or m.group(1) != "0":
            break
        seconds *= 2
    sys.exit(f"rpcload failed: {r.stdout[-300:]}{r.stderr[-300:]}")


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
    ap.add_argument("--rpc-seconds", "--dubbo-seconds", dest="dubbo_seconds", type=float,
                    default=4.0,
                    help="length of the large Dubbo load (the small one is a quarter)")
    ap.add_argument("--rpc-conns", type=int, default=1,
                    help="client connections of the RPC rows (rpcload --conns)")
    ap.add_argument("--redis-clients", type=int, default=1,
                    help="client connections of the plain Redis rows (redis-benchmark -c; issue "
                         "16 measured with 50)")
    ap.add_argument("--rows", default="redis-p1,redis-p16,dubbo-d1,dubbo-d16,thrift-d1,thrift-d16")
    ap.add_argument("--keep", help="copy the callgrind dumps into this directory")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure every row this many times (fresh processes each time)")
    ap.add_argument("--write-baseline", metavar="FILE",
                    help="write each row's median and run-to-run spread (max - min) to FILE")
    ap.add_argument("--check", metavar="FILE",
                    help="CI: measure the rows of baseline FILE with its sizes; fail when one "
                         "costs more than its baseline plus its tolerance")
    ap.add_argument("--update", metavar="FILE",
                    help="measure the rows of baseline FILE with its sizes and repeat count "
                         "and rewrite it")
    args = ap.parse_args()
    binary = Path(os.environ.get("MELTEMI_BIN", REPO / "build" / "meltemi")).resolve()
    if not binary.exists():
        sys.exit(f"{binary} not found (make build, or set MELTEMI_BIN)")
    if args.check:
        sys.exit(check_baseline(args, binary, Path(args.check)))
    if args.update:
        path = Path(args.update)
        rows, _ = read_baseline(args, path)
        args.write_baseline = str(path)
        args.rows = ",".join(rows)
    rows = [r for r in args.rows.split(",") if r]
    runs = [measure_rows(args, binary, rows) for _ in range(max(1, args.repeat))]
    results = runs[0]
    if len(runs) > 1:
        results = [(name, statistics.median(r[i][1] for r in runs), cnt)
                   for i, (name, _, cnt) in enumerate(runs[0])]
    print(f"meltemi {binary} (callgrind, --workers 1, one client connection)")
    print(f"| {'row':<28} | {'instructions/request':>20} | {'requests measured':>17} |")
    print(f"|{'-' * 30}|{'-' * 21}:|{'-' * 18}:|")
    for name, ipr, cnt in results:
        print(f"| {name:<28} | {ipr:>20.0f} | {cnt:>17} |")
    if len(runs) > 1:
        print(f"run-to-run spread over {len(runs)} runs (max - min):")
        for i, (name, ipr, _) in enumerate(results):
            vals = [r[i][1] for r in runs]
            print(f"  {name}: {max(vals) - min(vals):.1f} ({', '.join(f'{v:.1f}' for v in vals)})")
    if args.write_baseline:
        write_baseline(args, rows, runs, Path(args.write_baseline))


# ---- CI: a short run against a recorded baseline ---------------------------------------------

BASELINE_HEAD = """\
# Instructions per request of the rows below, measured by tests/bench/callgrind.sh with the
# sizes on the "sizes" line; written by --write-baseline from --repeat runs (median, and the
# spread max - min between runs). CI runs `tests/bench/callgrind.sh --check` on this file: a
# row fails when it costs more than median + tolerance, tolerance = max(2 x spread, 10% of
# the median): the spread is this machine's; a CI machine of the same kind may run other
# glibc string-function variants under valgrind (chosen by CPUID), which moves every row by
# an amount not measured yet, so CI only catches a large regression. A change that makes a row dearer (or cheaper) on purpose rewrites this file with
# `make callgrind-update` (= tests/bench/callgrind.sh --update <this file>), and its commit
# says why.
"""


def write_baseline(args, rows, runs, path):
    lines = [BASELINE_HEAD,
             f"sizes --requests {args.requests} --rpc-seconds {args.dubbo_seconds:g} "
             f"--rpc-conns {args.rpc_conns} --repeat {len(runs)}"]
    for i, row in enumerate(rows):
        vals = [r[i][1] for r in runs]
        lines.append(f"row {row} {statistics.median(vals):.1f} {max(vals) - min(vals):.1f}")
    path.write_text("\n".join(lines) + "\n")
    bench.log(f"callgrind: baseline written to {path}")


def read_baseline(args, path):
    """-> (rows, {row: (median, spread)}); sets args' sizes from the file's sizes line."""
    rows, base = [], {}
    for line in path.read_text().splitlines():
        f = line.split()
        if f and f[0] == "sizes":
            sizes = ap_sizes(f[1:])
            args.requests = sizes.requests
            args.dubbo_seconds = sizes.rpc_seconds
            args.rpc_conns = sizes.rpc_conns
            args.repeat = sizes.repeat
        elif f and f[0] == "row":
            rows.append(f[1])
            base[f[1]] = (float(f[2]), float(f[3]))
    return rows, base


# Another machine of the same kind may pick other libc string variants under valgrind (CPUID):
# the baseline's spread is one machine's, so CI allows this much on top (see BASELINE_HEAD).
CROSS_MACHINE = 0.10


def check_baseline(args, binary, path):
    """-> exit status: 0, or a message naming the rows that regressed."""
    rows, base = read_baseline(args, path)
    results = measure_rows(args, binary, rows)
    failed = []
    print(f"callgrind check against {path} ({binary})")
    for row, (name, ipr, _) in zip(rows, results):
        median, spread = base[row]
        tol = max(2 * spread, CROSS_MACHINE * median)
        verdict = "ok"
        if ipr > median + tol:
            verdict = "REGRESSION"
            failed.append(row)
        elif ipr < median - tol:
            verdict = "faster than the baseline: rewrite it (see its header)"
        print(f"  {name:<28} {ipr:9.1f}  baseline {median:9.1f} +- {tol:6.1f}  {verdict}")
    if failed:
        return (f"callgrind: {', '.join(failed)} cost more instructions per request than "
                f"{path} allows")
    return 0


def ap_sizes(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int)
    ap.add_argument("--rpc-seconds", type=float)
    ap.add_argument("--rpc-conns", type=int)
    ap.add_argument("--repeat", type=int)
    return ap.parse_args(argv)


def measure_rows(args, binary, rows):
    """-> [(label, instructions per request, requests measured)] in the order of rows."""
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
                        results.append((f"redis-tls-p{p}", f"redis TLS GET P={p}", ipr, cnt))
                        bench.log(f"callgrind: redis TLS GET P={p}: {ipr:.0f} instructions/request")
                m.stop()
                redis.stop()
            redis = None
            for policies in (False, True):
                suffix = "-policies" if policies else ""
                mine = [p for p in (1, 16) if f"redis-p{p}{suffix}" in rows]
                if not mine:
                    continue
                if redis is None:
                    redis = bench.start_redis(work)
                    servers.append(redis)
                m = bench.start_meltemi(work, redis.port, wrapper, policies=policies)
                servers.append(m)
                if not m.alive():
                    sys.exit(f"meltemi under callgrind did not start: {m.error}")
                c = Counter(work, m.proc.pid)
                for p in mine:
                    n = args.requests
                    ipr, cnt = measure(
                        c, lambda k, p=p: redis_load(m.port, p, k, clients=args.redis_clients),
                        n // 5, n)
                    label = f"redis GET P={p}" + (" policies" if policies else "")
                    if args.redis_clients != 1:
                        label += f" clients={args.redis_clients}"
                    results.append((f"redis-p{p}{suffix}", label, ipr, cnt))
                    bench.log(f"callgrind: {label}: {ipr:.0f} instructions/request")
                m.stop()
            rpc_rows = [r for r in rows if r.startswith(("dubbo-", "thrift-"))]
            for proto in ("dubbo", "thrift"):
                for suffix, router, rate_limit, what in (("", False, False, ""),
                                                         ("-router", True, False, " router"),
                                                         ("-rl", True, True, " router+rl")):
                    mine = [r for r in rpc_rows if r.startswith(proto + "-") and
                            r[len(proto) + 1:].lstrip("d0123456789") == suffix]
                    if not mine:
                        continue
                    up = rpc_bench.start_server(work, args.rpcload, proto)
                    servers.append(up)
                    name = f"meltemi-{proto}{suffix}"
                    m, ports = rpc_bench.start_meltemi(work, wrapper, name, {proto: up.port},
                                                       router=router, rate_limit=rate_limit)
                    servers.append(m)
                    if not m.alive():
                        sys.exit(f"meltemi under callgrind did not start: {m.error}")
                    c = Counter(work, m.proc.pid)
                    s = args.dubbo_seconds
                    for row in mine:
                        depth = int(row.split("-")[1].lstrip("d"))
                        ipr, cnt = measure(
                            c, lambda k, d=depth: rpc_load(args.rpcload, proto, ports[proto], d,
                                                           args.rpc_conns, k), s / 4, s)
                        label = f"{proto} call depth={depth}{what}"
                        if args.rpc_conns != 1:
                            label += f" conns={args.rpc_conns}"
                        results.append((row, label, ipr, cnt))
                        bench.log(f"callgrind: {label}: {ipr:.0f} instructions/request")
                    m.stop()
                    up.stop()
        finally:
            for s in reversed(servers):
                s.stop()
            if args.keep:
                keep = Path(args.keep)
                keep.mkdir(parents=True, exist_ok=True)
                for f in work.glob("callgrind.out.*"):
                    shutil.copy(f, keep / f.name)
    by_row = {r[0]: r[1:] for r in results}
    missing = [r for r in rows if r not in by_row]
    if missing:
        sys.exit(f"callgrind: unknown rows {', '.join(missing)}")
    return [by_row[r] for r in rows]


if __name__ == "__main__":
    main()
