#!/usr/bin/python3
"""
bench.py - redis-benchmark against direct redis-server, meltemi (one worker), twemproxy
(Debian's nutcracker) and haproxy (mode tcp, one thread), all on 127.0.0.1.

Rows: GET and SET, -c 50, pipelines of 1 and 16. TLS targets (redis-benchmark --tls, so the
client side is TLS too): direct-tls (redis-server's TLS port), meltemi-tls (a Gateway that
terminates TLS and a DestinationRule that originates it to that port) and haproxy-tls (ssl
bind and ssl server, the same two hops); their ratio column is against direct-tls. For every row the request count is sized
from a short calibration run against redis-server so that each run lasts about --seconds.
Row MULTI: transactions of three commands (MULTI, INCR x3, EXEC in one write, 50
connections) from tests/bench/txload.c, which run.sh compiles; its req/s are transactions/s
(issue 10's goal: meltemi >= 0.8x direct). twemproxy refuses transactions: its row fails.
Targets are interleaved inside each repetition (rotating their order) so that drift of the
machine hits every target alike; the table reports medians over the repetitions of req/s,
p50 and p99 (redis-benchmark 7's --csv output) and the ratio of req/s to direct.

A target that fails to start or whose run fails (exit status, error lines, timeout, process
died) is marked failed for that run and the harness keeps going.

Usage: tests/bench/run.sh [--quick] [--reps N] [--seconds S] [--targets a,b] [--rows MULTI,GET:1]
       [--out FILE]
"""

import argparse
import csv
import datetime
import io
import os
import platform
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
HOST = "127.0.0.1"
# meltemi+policies: the same service with prefix routes (keys starting "cluster:" go to a
# second service on the same Redis; no benchmark key does, so every command takes the
# catch-all after the match), a 0% ERROR fault and a 0% mirror: the cost of running the Lua
# policy chain once per command (the target: >= 90% of plain meltemi).
ALL_TARGETS = ["direct", "meltemi", "meltemi+policies", "twemproxy", "haproxy",
               "direct-tls", "meltemi-tls", "haproxy-tls"]
TLS_TARGETS = {"direct-tls", "meltemi-tls", "haproxy-tls"}
ROWS = [("GET", 1), ("SET", 1), ("GET", 16), ("SET", 16), ("MULTI", 1)]
TX_ROW = "MULTI"  # txload, not redis-benchmark (it speaks no TLS: no TLS target runs it)
TXLOAD = None  # --txload: the compiled tests/bench/txload.c
CLIENTS = 50
# Where the sections of RESULTS.md that run.sh does not write begin.
KEPT_SECTIONS = "\n## Instructions per request"
KEYSPACE = 100000


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port(host=HOST):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(interval)
    return False


def tcp_ping(port):
    """True when something on port answers a RESP PING with +PONG."""
    with socket.create_connection((HOST, port), timeout=1) as s:
        s.settimeout(1)
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        return s.recv(64).startswith(b"+PONG")


def tail(path, n=3000):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return ""


class Server:
    """One process started by us and stopped by its PID."""

    def __init__(self, name, argv, workdir, port):
        self.name, self.argv, self.port = name, argv, port
        self.log = workdir / f"{name}.log"
        self.proc = None
        self.error = None

    def start(self, ready, timeout=10):
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.log.parent)
        if not wait_until(lambda: self.proc.poll() is None and ready(), timeout):
            self.error = (f"not ready within {timeout}s (exit {self.proc.poll()}): "
                          f"{tail(self.log, 500).strip()}")
            self.stop()
            return False
        return True

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ---- starting each target ------------------------------------------------------------------

def make_certs(work):
    """A CA and a server certificate (DNS bench.test, IP 127.0.0.1) made with openssl; returns
    {ca, cert, key, pem (cert + key, for haproxy)}."""
    d = work / "pki"
    d.mkdir(exist_ok=True)

    def ossl(*a):
        subprocess.run(["openssl", *map(str, a)], check=True, capture_output=True, timeout=60)
    ca, cakey = d / "ca.crt", d / "ca.key"
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", cakey, "-out", ca, "-days", "7", "-subj", "/CN=bench ca")
    key, csr, cert, ext = d / "srv.key", d / "srv.csr", d / "srv.crt", d / "srv.ext"
    ossl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", csr, "-subj", "/CN=bench.test")
    ext.write_text("subjectAltName=DNS:bench.test,IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cakey, "-set_serial", "2", "-days", "7",
         "-out", cert, "-extfile", ext)
    pem = d / "srv.pem"
    pem.write_text(cert.read_text() + key.read_text())
    return {"ca": ca, "cert": cert, "key": key, "pem": pem}


def start_redis(work, certs=None):
    """redis-server; with certs also a TLS port (s.tls_port)."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly",
            "no", "--daemonize", "no", "--dir", str(work), "--logfile", ""]
    tls_port = None
    if certs:
        tls_port = free_port()
        argv += ["--tls-port", str(tls_port), "--tls-cert-file", str(certs["cert"]),
                 "--tls-key-file", str(certs["key"]), "--tls-ca-cert-file", str(certs["ca"]),
                 "--tls-auth-clients", "no"]
    s = Server("redis-server", argv, work, port)
    if not s.start(lambda: tcp_ping(port)):
        sys.exit(f"redis-server did not start: {s.error}")
    s.tls_port = tls_port
    return s


def direct_tls(redis, certs):
    """The TLS baseline: redis-server's own TLS port (already running)."""
    s = Server("direct-tls", [], redis.log.parent, redis.tls_port)
    s.proc, s.tls, s.ca = redis.proc, True, certs["ca"]
    s.stop = lambda: None  # the plain target stops the process
    return s


def start_meltemi_tls(work, redis_tls_port, binary, certs):
    """A Gateway terminating TLS, forwarding to a service whose DestinationRule originates TLS
    to redis-server's TLS port."""
    conf = work / "meltemi-tls-conf"
    conf.mkdir(exist_ok=True)
    port, admin, vport = free_port(), free_port(), free_port()
    (conf / "bench.yaml").write_text(f"""\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: bench-tls, namespace: bench}}
spec:
  hosts: [bench-tls.bench.svc.cluster.local]
  addresses: [127.0.0.2]
  ports: [{{number: {vport}, name: tcp-redis, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: {HOST}, ports: {{tcp-redis: {redis_tls_port}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: bench-tls, namespace: bench}}
spec:
  host: bench-tls.bench.svc.cluster.local
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {certs['ca']}, sni: bench.test}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bench-gw, namespace: bench}}
spec:
  servers:
  - port: {{number: {port}, name: redis-tls, protocol: TLS}}
    bind: {HOST}
    hosts: [bench/bench-tls.bench.svc.cluster.local]
    tls: {{mode: SIMPLE, serverCertificate: {certs['cert']}, privateKey: {certs['key']}}}
""")
    s = Server("meltemi-tls", [str(binary), "run", "-c", str(conf), "--admin", f"{HOST}:{admin}",
                               "--workers", "1", "--log-level", "warn"], work, port)
    s.tls, s.ca = True, certs["ca"]

    def ready():
        with urllib.request.urlopen(f"http://{HOST}:{admin}/ready", timeout=1) as r:
            return r.status == 200 and tls_ping(port, certs["ca"])
    s.start(ready, timeout=120)  # under callgrind on a busy machine the start takes a while
    return s


def tls_ping(port, ca):
    import ssl
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    with socket.create_connection((HOST, port), timeout=1) as raw:
        with ctx.wrap_socket(raw) as s:
            s.settimeout(1)
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")


def access_log_yaml():
    """MELTEMI_BENCH_ACCESS_LOG=PATH[,FORMAT]: measure with the access log on (a file)."""
    spec = os.environ.get("MELTEMI_BENCH_ACCESS_LOG")
    if not spec:
        return ""
    path, _, fmt = spec.partition(",")
    return f"""---
apiVersion: meltemi.io/v1alpha1
kind: AccessLog
metadata:
  name: bench
spec:
  path: {path}
  format: {fmt or "json"}
"""


POLICIES_YAML = """\
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: bench-other
  namespace: bench
spec:
  hosts:
  - bench-other.bench.svc.cluster.local
  ports:
  - number: 6379
    name: tcp-redis
    protocol: TCP
  resolution: STATIC
  endpoints:
  - address: {host}
    ports:
      tcp-redis: {redis_port}
---
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: bench
  namespace: bench
spec:
  host:
  - bench.bench.svc.cluster.local
  redis:
  - match:
      key:
        prefix: "cluster:"
    route:
      host: bench-other.bench.svc.cluster.local
  - route:
      host: bench.bench.svc.cluster.local
    mirror:
    - route:
        host: bench.bench.svc.cluster.local
      percentage:
        value: 0
  faults:
  - type: ERROR
    percentage:
      value: 0
"""


def service_entry_yaml(port, redis_port):
    """The benchmark's Redis service: a listener on HOST:port, one endpoint HOST:redis_port."""
    return f"""\
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
"""


def start_meltemi(work, redis_port, binary, policies=False):
    conf = work / ("meltemi-policies-conf" if policies else "meltemi-conf")
    conf.mkdir(exist_ok=True)
    port, admin = free_port(), free_port()
    (conf / "bench.yaml").write_text(service_entry_yaml(port, redis_port)
                                     + (POLICIES_YAML.format(host=HOST, redis_port=redis_port) if policies else "")
                                     + access_log_yaml())
    s = Server("meltemi+policies" if policies else "meltemi", [str(binary), "run", "-c", str(conf), "--admin", f"{HOST}:{admin}",
                           "--workers", "1", "--log-level", "warn"], work, port)

    def ready():
        with urllib.request.urlopen(f"http://{HOST}:{admin}/ready", timeout=1) as r:
            return r.status == 200 and tcp_ping(port)
    s.start(ready, timeout=60)  # under callgrind on a loaded machine start-up takes a while
    return s


def start_twemproxy(work, redis_port):
    port, stats = free_port(), free_port()
    conf = work / "nutcracker.yml"
    conf.write_text(f"""\
bench:
  listen: {HOST}:{port}
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  timeout: 5000
  server_connections: 1
  servers:
   - {HOST}:{redis_port}:1
""")
    s = Server("twemproxy", ["nutcracker", "-c", str(conf), "-s", str(stats), "-a", HOST,
                             "-p", str(work / "nutcracker.pid"), "-o", str(work / "nc.log"),
                             "-v", "4"], work, port)
    s.start(lambda: tcp_ping(port))
    return s


def start_haproxy(work, redis_port, certs=None):
    """haproxy in mode tcp, one thread; with certs it terminates TLS and originates it to
    redis_port (redis-server's TLS port), verifying the server."""
    port = free_port()
    name = "haproxy-tls" if certs else "haproxy"
    conf = work / f"{name}.cfg"
    bind_tls = f" ssl crt {certs['pem']}" if certs else ""
    server_tls = f" ssl verify required ca-file {certs['ca']} sni str(bench.test)" if certs else ""
    conf.write_text(f"""\
global
    nbthread 1
    maxconn 1000

defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s

frontend redis_in
    bind {HOST}:{port}{bind_tls}
    default_backend redis_out

backend redis_out
    server r1 {HOST}:{redis_port}{server_tls}
""")
    s = Server(name, ["haproxy", "-db", "-f", str(conf)], work, port)
    if certs:
        s.tls, s.ca = True, certs["ca"]
        s.start(lambda: tls_ping(port, certs["ca"]))
    else:
        s.start(lambda: tcp_ping(port))
    return s


# ---- running redis-benchmark ---------------------------------------------------------------

def bench_argv(port, test, pipeline, n, ca=None):
    tls = ["--tls", "--cacert", str(ca)] if ca else []
    return ["redis-benchmark", "-h", HOST, "-p", str(port), "-t", test.lower(),
            "-c", str(CLIENTS), "-P", str(pipeline), "-n", str(n), "-r", str(KEYSPACE),
            "--csv"] + tls


def run_txload(port, seconds, timeout):
    """MULTI / INCR x3 / EXEC transactions: -> (dict rps/p50/p99, None) or (None, why)."""
    if not TXLOAD:
        return None, "no txload binary (run through tests/bench/run.sh)"
    argv = [TXLOAD, "--host", HOST, "--port", str(port), "--conns", str(CLIENTS),
            "--duration", f"{seconds:g}", "--warmup", "0.5"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f}s"
    fields = dict(kv.split("=", 1) for kv in r.stdout.split() if "=" in kv)
    if r.returncode != 0 or "tx_per_s" not in fields:
        return None, f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[:200]}"
    return {"rps": float(fields["tx_per_s"]), "p50": float(fields["p50_us"]) / 1000,
            "p99": float(fields["p99_us"]) / 1000}, None


def run_benchmark(port, test, pipeline, n, timeout, ca=None):
    """-> (dict rps/p50/p99, None) or (None, why it failed). ca: a TLS target."""
    if test == TX_ROW:
        return run_txload(port, n, timeout)
    argv = bench_argv(port, test, pipeline, n, ca)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f}s"
    text = r.stdout + r.stderr
    errors = [ln for ln in text.splitlines() if "rror" in ln]
    if r.returncode != 0 or errors:
        return None, f"exit {r.returncode}: {(errors or text.splitlines() or [''])[0][:200]}"
    for row in csv.DictReader(io.StringIO(r.stdout)):
        if row.get("test") == test:
            return {"rps": float(row["rps"]), "p50": float(row["p50_latency_ms"]),
                    "p99": float(row["p99_latency_ms"])}, None
    return None, f"no {test} line in output: {r.stdout[:200]!r}"


def calibrate(port, test, pipeline, seconds):
    """Requests for a run of about `seconds` against redis-server itself (the MULTI row runs
    for `seconds` itself: its "size" is that)."""
    if test == TX_ROW:
        return seconds
    probe = 20000 * pipeline
    res, err = run_benchmark(port, test, pipeline, probe, timeout=60)
    if res is None:
        sys.exit(f"calibration against redis-server failed: {err}")
    n = int(res["rps"] * seconds)
    return max(10000, n - n % 1000)


# ---- the report ----------------------------------------------------------------------------

def cpu_model():
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def first_line(argv):
    """First line a command prints (a version string), or "?"."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def machine_info():
    cpu = cpu_model()
    version = first_line
    rev = version(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "redis": version(["redis-server", "--version"]),
        "twemproxy": version(["nutcracker", "--version"]),
        "haproxy": version(["haproxy", "-v"]),
        "meltemi": f"git {rev}",
    }


def runs_row(t, test):
    """Does target t run this row? txload (the MULTI row) speaks no TLS."""
    return not (test == TX_ROW and t in TLS_TARGETS)


def fmt_table(results, targets, failures):
    lines = ["| test | P | target | req/s (median) | p50 ms | p99 ms | vs direct | runs ok |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for test, p in ROWS:
        base = {}
        for b in ("direct", "direct-tls"):
            runs = results.get((b, test, p), [])
            base[b] = statistics.median([r["rps"] for r in runs]) if runs else None
        for t in targets:
            if not runs_row(t, test):
                continue
            direct_rps = base["direct-tls" if t in TLS_TARGETS else "direct"]
            runs = results.get((t, test, p), [])
            nfail = len(failures.get((t, test, p), []))
            total = len(runs) + nfail
            if not runs:
                lines.append(f"| {test} | {p} | {t} | failed | - | - | - | 0/{total} |")
                continue
            rps = statistics.median([r["rps"] for r in runs])
            p50 = statistics.median([r["p50"] for r in runs])
            p99 = statistics.median([r["p99"] for r in runs])
            ratio = f"{rps / direct_rps:.2f}x" if direct_rps else "-"
            lines.append(f"| {test} | {p} | {t} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | "
                         f"{ratio} | {len(runs)}/{total} |")
    return "\n".join(lines)


def write_results(path, table, info, args, sizes, failures, started, elapsed, note):
    argv = sys.argv[1:]
    if "--note" in argv:  # the note is printed above; keep the command readable
        i = argv.index("--note")
        argv = argv[:i] + argv[i + 2:]
    if "--txload" in argv:  # run.sh adds it (a temporary build of txload.c)
        i = argv.index("--txload")
        argv = argv[:i] + argv[i + 2:]
    cmd = " ".join(["tests/bench/run.sh"] + [shlex.quote(a) for a in argv])
    fail_lines = [f"- {t} {test} P={p}: {why}" for (t, test, p), whys in sorted(failures.items())
                  for why in sorted(set(whys))]
    per_row = ", ".join(f"{test} P={p}: -n {n}" for (test, p), n in sizes.items()
                        if test != TX_ROW)
    per_row += (f"; MULTI: `txload --conns {CLIENTS} --duration {args.seconds:g}` "
                "(MULTI, INCR x3, EXEC per transaction; req/s = transactions/s)")
    example = " ".join(bench_argv("PORT", "GET", 16, sizes.get(("GET", 16), 0)))
    text = f"""# Benchmark results

{note}

- Command: `{cmd}` ({args.reps} repetitions, about {args.seconds:g} s per run, \
{elapsed / 60:.1f} min in all)
- Date: {started:%Y-%m-%d %H:%M UTC}
- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; client, proxies and
  redis-server all share these CPUs over loopback
- Versions: {info['redis']}; {info['twemproxy']}; {info['haproxy']}; meltemi {info['meltemi']}
- Each run: `{example}` with -t/-P/-n per row ({per_row}); twemproxy with one server
  connection, haproxy `mode tcp` with `nbthread 1`, meltemi `--workers 1`, no auth anywhere.
- Targets interleaved inside each repetition; medians over repetitions.

{table}
"""
    if fail_lines:
        text += "\nFailed runs:\n\n" + "\n".join(fail_lines) + "\n"
    # Sections other scripts or people maintain (callgrind.sh's instruction counts, the
    # library swaps) follow this one and are kept as they are.
    try:
        old = Path(path).read_text()
    except FileNotFoundError:
        old = ""
    starts = [i for i in (old.find(KEPT_SECTIONS), old.find("\n## Library swaps")) if i >= 0]
    if starts:
        text += "\n" + old[min(starts) + 1:]
    Path(path).write_text(text)


# ---- main ----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 repetition, ~1 s per run, no results file")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="target length of each run")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS))
    ap.add_argument("--out", default=None,
                    help="results file (default tests/bench/RESULTS.md; --quick: none)")
    ap.add_argument("--note", default="", help="a line to put at the top of the results file")
    ap.add_argument("--txload", default=None, help="txload binary (run.sh compiles it)")
    ap.add_argument("--rows", default=None,
                    help="only these rows, e.g. MULTI or GET:1,GET:16 (default: all)")
    args = ap.parse_args()
    global ROWS
    if args.rows:
        want = [r.split(":") for r in args.rows.split(",") if r]
        ROWS = [(t, p) for t, p in ROWS if any(w[0] == t and (len(w) == 1 or int(w[1]) == p)
                                               for w in want)]
        if not ROWS:
            ap.error(f"no row matches --rows {args.rows}")
    global TXLOAD
    TXLOAD = args.txload
    args.reps = args.reps or (1 if args.quick else 3)
    args.seconds = args.seconds or (1.0 if args.quick else 5.0)
    out = args.out or (None if args.quick else str(REPO / "tests/bench/RESULTS.md"))
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(ALL_TARGETS)
    if unknown:
        ap.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if "direct" not in targets:
        targets.insert(0, "direct")  # the baseline every ratio needs
    binary = Path(os.environ.get("MELTEMI_BIN", REPO / "build" / "meltemi"))

    started = datetime.datetime.utcnow()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="meltemi-bench-"))
    servers = {}
    results, failures = {}, {}
    try:
        certs = make_certs(work) if TLS_TARGETS & set(targets) else None
        redis = start_redis(work, certs)
        servers["direct"] = redis
        starters = {
            "direct-tls": lambda: direct_tls(redis, certs),
            "meltemi-tls": lambda: start_meltemi_tls(work, redis.tls_port, binary, certs),
            "haproxy-tls": lambda: start_haproxy(work, redis.tls_port, certs),
            "meltemi": lambda: start_meltemi(work, redis.port, binary),
            "meltemi+policies": lambda: start_meltemi(work, redis.port, binary, policies=True),
            "twemproxy": lambda: start_twemproxy(work, redis.port),
            "haproxy": lambda: start_haproxy(work, redis.port),
        }
        for t in targets:
            if t == "direct":
                continue
            if t.startswith("meltemi") and not binary.exists():
                s = Server("meltemi", [str(binary)], work, 0)
                s.error = f"{binary} does not exist (build first)"
            else:
                s = starters[t]()
            servers[t] = s
            log(f"{t}: " + (f"port {s.port}, pid {s.proc.pid}" if s.alive()
                            else f"FAILED to start: {s.error}"))

        sizes = {}
        for test, p in ROWS:
            sizes[(test, p)] = calibrate(redis.port, test, p, args.seconds)
        log("requests per run: " + ", ".join(f"{t} P={p}: {n}" for (t, p), n in sizes.items()))

        for rep in range(args.reps):
            for i, (test, p) in enumerate(ROWS):
                k = (rep + i) % len(targets)
                for t in targets[k:] + targets[:k]:
                    if not runs_row(t, test):
                        continue
                    key = (t, test, p)
                    s = servers[t]
                    if not s.alive():
                        failures.setdefault(key, []).append(s.error or "process exited: " +
                                                            tail(s.log, 300).strip())
                        continue
                    n = sizes[(test, p)]
                    res, err = run_benchmark(s.port, test, p, n, timeout=30 + 20 * args.seconds,
                                             ca=getattr(s, "ca", None))
                    if res is None:
                        failures.setdefault(key, []).append(err)
                        log(f"rep {rep + 1} {test} P={p} {t}: FAILED {err}")
                    else:
                        results.setdefault(key, []).append(res)
                        log(f"rep {rep + 1} {test} P={p} {t}: {res['rps']:,.0f} req/s "
                            f"p50 {res['p50']:.3f} p99 {res['p99']:.3f}")
    finally:
        for s in servers.values():
            s.stop()

    table = fmt_table(results, targets, failures)
    print(table)
    if out:
        note = args.note or ("Written by tests/bench/run.sh; rerun it to refresh. Numbers "
                             "depend on everything else the machine runs at the time.")
        write_results(out, table, machine_info(), args, sizes, failures, started,
                      time.monotonic() - t0, note)
        log(f"results written to {out}")
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0 if all((t, test, p) in results for t in targets for test, p in ROWS
                    if runs_row(t, test)) else 1


if __name__ == "__main__":
    sys.exit(main())
