#!/usr/bin/python3
"""
rpc_bench.py - Thrift and Dubbo calls/s and latency through meltemi, beside the same calls
sent directly to the server and through haproxy (mode tcp, one thread), all on 127.0.0.1.

The client and the server are rpcload (tests/bench/rpcload.c, built by rpc.sh): a C load
generator that keeps --depth calls in flight on each of --conns connections, and a C server
that answers each call at once, so neither is the bottleneck (a Python or Node peer would be).

Targets:
  direct          rpcload -> rpcload serve
  meltemi         rpcload -> meltemi --workers 1 (ServiceEntry port tcp-metaprotocol-<proto>-*,
                  no MetaRouter: the default route) -> server
  meltemi-router  the same with a MetaRouter: match on method, destination subset v1 (the
                  path every routed call takes: decode, match, pick, forward)
  meltemi-router-lua  meltemi-router plus a LuaFilter (on_request) that reads two attributes
                  (method, interface) per call: issue 12's goal is >= 0.9x meltemi-router
                  (Dubbo, depth 16). Only this target: --targets meltemi-router,meltemi-router-lua
  haproxy         rpcload -> haproxy (mode tcp, nbthread 1) -> server

Rows: thrift (strict binary, framed) and dubbo (hessian2), pipeline depth 1 and 16, 32
connections. Targets are interleaved inside each repetition (rotating their order) so drift
of the machine hits all alike; the table has medians over repetitions of calls/s, p50 and p99
and the ratio of calls/s to direct.

Usage: tests/bench/rpc.sh [--quick] [--reps N] [--seconds S] [--targets a,b] [--out FILE]
"""

import argparse
import datetime
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Server, cpu_model, first_line, free_port, log, tail  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
ALL_TARGETS = ["direct", "meltemi", "meltemi-router", "meltemi-router-lua", "meltemi-router-rls",
               "haproxy"]
CONNS = 32
ROWS = [("thrift", 1), ("thrift", 16), ("dubbo", 1), ("dubbo", 16)]
METHOD = {"thrift": "hello", "dubbo": "echo"}  # what rpcload calls


def tcp_up(port):
    with socket.create_connection((HOST, port), timeout=1):
        return True


def start_server(work, rpcload, proto):
    port = free_port()
    s = Server(f"rpcload-serve-{proto}", [rpcload, "serve", "--proto", proto, "--port", str(port)],
               work, port)
    if not s.start(lambda: tcp_up(port)):
        sys.exit(f"rpcload serve {proto} did not start: {s.error}")
    return s


# A MetaRouter localRateLimit that never refuses (a billion tokens a second): what the check
# costs per request, for tests/bench/callgrind.sh's dubbo-d1-rl row.
UNLIMITED_RATE_LIMIT = """\
  localRateLimit:
    tokenBucket: {maxTokens: 1000000000, tokensPerFill: 1000000000, fillInterval: 1s}
"""


# A LuaFilter reading two attributes of every call and deciding nothing: the cost of entering
# the filter (sandbox hook, watchdog, msg/ctx, two reads) on the routed path.
LUA_FILTER = """\
---
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata:
  name: bench-{proto}
  namespace: bench
spec:
  hosts:
  - {host}
  script: |
    return {{ on_request = function(msg, ctx)
      local method, iface = msg.method, msg.interface or msg.service
      if method == "never-called" and iface == "nowhere" then ctx:reply_error("no") end
    end }}
"""


# meltemi-router-rls: the router and a globalRateLimit asking tests/bench/rls_server.py (always
# OK) about every call, one gRPC call per request (the goal: >= 0.5x meltemi-router).
def global_rate_limit_yaml(rls_port):
    return f"""\
  globalRateLimit:
    domain: bench
    rateLimitService: outbound|8081||rls.bench.svc.cluster.local
    requestTimeout: 1s
    denyOnFail: true
    descriptors:
    - {{property: method, descriptorKey: method}}
"""


def rls_service_entry_yaml(rls_port):
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: rls, namespace: bench}}
spec:
  hosts: [rls.bench.svc.cluster.local]
  ports: [{{number: 8081, name: grpc-rls, protocol: GRPC}}]
  resolution: STATIC
  endpoints: [{{address: {HOST}, ports: {{grpc-rls: {rls_port}}}}}]
"""


def meltemi_yaml(proto, port, upstream, router, rate_limit=False, lua=False, rls_port=None):
    host = f"bench-{proto}.bench.svc.cluster.local"
    pname = f"tcp-metaprotocol-{proto}-bench"
    y = f"""\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: bench-{proto}
  namespace: bench
spec:
  hosts:
  - {host}
  addresses:
  - {HOST}
  ports:
  - number: {port}
    name: {pname}
    protocol: TCP
  resolution: STATIC
  endpoints:
  - address: {HOST}
    ports:
      {pname}: {upstream}
    labels:
      version: v1
"""
    if router:
        y += f"""\
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: bench-{proto}
  namespace: bench
spec:
  host: {host}
  subsets:
  - name: v1
    labels:
      version: v1
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: bench-{proto}
  namespace: bench
spec:
  hosts:
  - {host}
  routes:
  - name: by-method
    match:
      attributes:
        method:
          exact: {METHOD[proto]}
    route:
    - destination:
        host: {host}
        subset: v1
"""
        if rate_limit:
            y += UNLIMITED_RATE_LIMIT
        if lua:
            y += LUA_FILTER.format(proto=proto, host=host)
        if rls_port:
            y += global_rate_limit_yaml(rls_port)
    return y


def start_meltemi(work, binary, name, upstreams, router, rate_limit=False, lua=False,
                  rls_port=None):
    """One meltemi (one worker) with a listener per protocol; -> (Server, {proto: port})."""
    conf = work / f"{name}-conf"
    conf.mkdir(exist_ok=True)
    ports = {}
    for proto, up in upstreams.items():
        ports[proto] = free_port()
        (conf / f"{proto}.yaml").write_text(meltemi_yaml(proto, ports[proto], up, router,
                                                         rate_limit, lua, rls_port))
    if rls_port:
        (conf / "rls.yaml").write_text(rls_service_entry_yaml(rls_port))
    admin = free_port()
    s = Server(name, [str(binary), "run", "-c", str(conf), "--admin", f"{HOST}:{admin}",
                      "--workers", "1", "--log-level", "warn"], work, 0)

    def ready():
        with urllib.request.urlopen(f"http://{HOST}:{admin}/ready", timeout=1) as r:
            return r.status == 200 and all(tcp_up(p) for p in ports.values())
    s.start(ready, timeout=60)  # under callgrind on a loaded machine start-up takes a while
    return s, ports


def start_haproxy(work, upstreams):
    ports = {proto: free_port() for proto in upstreams}
    conf = work / "haproxy.cfg"
    text = """\
global
    nbthread 1
    maxconn 4000

defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
"""
    for proto, up in upstreams.items():
        text += f"""
frontend {proto}_in
    bind {HOST}:{ports[proto]}
    default_backend {proto}_out

backend {proto}_out
    server s1 {HOST}:{up}
"""
    conf.write_text(text)
    s = Server("haproxy", ["haproxy", "-db", "-f", str(conf)], work, 0)
    s.start(lambda: all(tcp_up(p) for p in ports.values()))
    return s, ports


def run_argv(rpcload, proto, port, depth, seconds):
    return [rpcload, "run", "--proto", proto, "--port", str(port), "--conns", str(CONNS),
            "--depth", str(depth), "--duration", f"{seconds:g}", "--warmup", "0.5"]


def run_load(rpcload, proto, port, depth, seconds):
    """-> (dict calls_per_s/p50/p99, None) or (None, why it failed)."""
    argv = run_argv(rpcload, proto, port, depth, seconds)
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30 + 3 * seconds)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
    if r.returncode != 0 or "calls_per_s" not in kv:
        why = (r.stderr.strip().splitlines() or [line or "no output"])[0]
        return None, f"exit {r.returncode}: {why[:200]}"
    return {"rps": float(kv["calls_per_s"]), "p50": float(kv["p50_us"]) / 1000,
            "p99": float(kv["p99_us"]) / 1000}, None


def machine_info():
    cpu = cpu_model()
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = ["?"]
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "haproxy": " ".join(first_line(["haproxy", "-v"]).split()[:3]),
            "load": " ".join(load),
            "rev": first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])}


def fmt_table(results, targets, failures):
    lines = ["| protocol | depth | target | calls/s (median) | p50 ms | p99 ms | vs direct | runs ok |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for proto, depth in ROWS:
        direct = results.get(("direct", proto, depth), [])
        direct_rps = statistics.median([r["rps"] for r in direct]) if direct else None
        for t in targets:
            runs = results.get((t, proto, depth), [])
            total = len(runs) + len(failures.get((t, proto, depth), []))
            if not runs:
                lines.append(f"| {proto} | {depth} | {t} | failed | - | - | - | 0/{total} |")
                continue
            rps = statistics.median([r["rps"] for r in runs])
            p50 = statistics.median([r["p50"] for r in runs])
            p99 = statistics.median([r["p99"] for r in runs])
            ratio = f"{rps / direct_rps:.2f}x" if direct_rps else "-"
            lines.append(f"| {proto} | {depth} | {t} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | "
                         f"{ratio} | {len(runs)}/{total} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rpcload", required=True, help="the rpcload binary (rpc.sh builds it)")
    ap.add_argument("--quick", action="store_true", help="1 repetition, 1 s runs, no file")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="measured length of each run")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS))
    ap.add_argument("--out", default=None, help="default tests/bench/RESULTS-rpc.md")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    args.reps = args.reps or (1 if args.quick else 3)
    args.seconds = args.seconds or (1.0 if args.quick else 3.0)
    out = args.out or (None if args.quick else str(REPO / "tests/bench/RESULTS-rpc.md"))
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(ALL_TARGETS)
    if unknown:
        ap.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if "direct" not in targets:
        targets.insert(0, "direct")
    binary = Path(os.environ.get("MELTEMI_BIN", REPO / "build" / "meltemi"))
    rpcload = str(Path(args.rpcload).resolve())

    started = datetime.datetime.now(datetime.timezone.utc)
    info_before = machine_info()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="meltemi-rpcbench-"))
    procs, ports = [], {}
    results, failures = {}, {}
    try:
        upstream = {}
        for proto in ("thrift", "dubbo"):
            s = start_server(work, rpcload, proto)
            procs.append(s)
            upstream[proto] = s.port
        ports["direct"] = dict(upstream)
        for t in targets:
            if t == "direct":
                continue
            if t.startswith("meltemi"):
                if not binary.exists():
                    log(f"{t}: {binary} does not exist (build first)")
                    continue
                rls_port = None
                if t == "meltemi-router-rls":
                    rls_port = free_port()
                    rls = Server("rls", ["/usr/bin/python3", str(REPO / "tests/bench/rls_server.py"),
                                         "--port", str(rls_port), "--gen", str(work / "rls-gen")],
                                 work, rls_port)
                    procs.append(rls)
                    if not rls.start(lambda: tcp_up(rls_port)):
                        log(f"{t}: the rate limit service did not start: {rls.error}")
                        continue
                s, p = start_meltemi(work, binary, t, upstream,
                                     router=t.startswith("meltemi-router"),
                                     lua=(t == "meltemi-router-lua"), rls_port=rls_port)
            else:
                s, p = start_haproxy(work, upstream)
            procs.append(s)
            if s.alive():
                ports[t] = p
                log(f"{t}: ports {p}, pid {s.proc.pid}")
            else:
                log(f"{t}: FAILED to start: {s.error}")
        for rep in range(args.reps):
            for i, (proto, depth) in enumerate(ROWS):
                k = (rep + i) % len(targets)
                for t in targets[k:] + targets[:k]:
                    key = (t, proto, depth)
                    if t not in ports:
                        failures.setdefault(key, []).append("did not start")
                        continue
                    res, err = run_load(rpcload, proto, ports[t][proto], depth, args.seconds)
                    if res is None:
                        failures.setdefault(key, []).append(err)
                        log(f"rep {rep + 1} {proto} depth {depth} {t}: FAILED {err}")
                    else:
                        results.setdefault(key, []).append(res)
                        log(f"rep {rep + 1} {proto} depth {depth} {t}: {res['rps']:,.0f} calls/s "
                            f"p50 {res['p50']:.3f} p99 {res['p99']:.3f} ms")
    finally:
        for s in procs:
            if not s.alive() and s.proc is not None and s.proc.returncode not in (0, None):
                log(f"{s.name} exited {s.proc.returncode}: {tail(s.log, 400).strip()}")
            s.stop()

    table = fmt_table(results, targets, failures)
    print(table)
    if out:
        info = machine_info()
        user_args, skip = [], False
        for a in sys.argv[1:]:  # what the user gave rpc.sh, less --rpcload and --note
            if skip or a in ("--rpcload", "--note"):
                skip = not skip
                continue
            if not a.startswith(("--rpcload=", "--note=")):
                user_args.append(a)
        cmd = " ".join(["tests/bench/rpc.sh"] + [shlex.quote(a) for a in user_args])
        example = " ".join(run_argv("rpcload", "thrift", "PORT", 16, args.seconds))
        fail_lines = [f"- {t} {p} depth {d}: {why}" for (t, p, d), whys in sorted(failures.items())
                      for why in sorted(set(whys))]
        note = args.note or ("Written by tests/bench/rpc.sh; rerun it to refresh. Numbers depend "
                             "on everything else the machine runs at the time.")
        text = f"""# RPC benchmark results (Thrift, Dubbo)

{note}

- Command: `{cmd.strip()}` ({args.reps} repetitions, {args.seconds:g} s measured per run
  after 0.5 s of warm-up, {(time.monotonic() - t0) / 60:.1f} min in all)
- Date: {started:%Y-%m-%d %H:%M UTC}
- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}; load average
  {info_before['load']} before the run, {info['load']} after (the CPUs are shared with other
  work); client, proxies and server all on these CPUs over loopback
- Versions: meltemi git {info['rev']} (`--workers 1`); {info['haproxy']} (`mode tcp`,
  `nbthread 1`)
- Client and server: rpcload (tests/bench/rpcload.c), {CONNS} connections, `--depth` calls in
  flight on each; Thrift = strict binary protocol, framed transport, method `hello`; Dubbo =
  Dubbo 2 header + Hessian2 body, method `echo`. Each run: `{example}` (proto/depth per row).
- Targets interleaved inside each repetition; medians over repetitions; p50/p99 are the
  client's per-call latency (send to reply) in milliseconds.

{table}
"""
        if fail_lines:
            text += "\nFailed runs:\n\n" + "\n".join(fail_lines) + "\n"
        Path(out).write_text(text)
        log(f"results written to {out}")
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0 if all((t, p, d) in results for t in targets for p, d in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
