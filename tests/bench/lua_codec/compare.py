#!/usr/bin/python3
"""
compare.py - the Lua codec of mrpc (examples/custom-protocol/mrpc.lua) against a C codec of
the same protocol (mrpc_codec.c, only in the bench binary meltemi_bench_mrpc), through one
meltemi with one worker and one listener per codec, rpcload (tests/bench/rpcload.c, --proto
mrpc) as client and server. Issue 15's goal: the Lua codec at >= 0.6x the C codec's calls/s
at depth 1 and 16.

Two modes:
  --mode callgrind   instructions per call inside meltemi (Valgrind's callgrind, stable under
                     load; the method of tests/bench/callgrind.py: a small and a large load,
                     instructions per call = the difference over the calls' difference).
                     The ratio C/Lua of instructions per call estimates the calls/s ratio of
                     a CPU-bound proxy.
  --mode throughput  calls/s (rpcload, one connection, --seconds per row, best of --reps).
                     Needs a quiet machine, like tests/bench/run.sh: do not run it while other
                     work shares the cores.

Usage: tests/bench/lua_codec/compare.sh [--mode callgrind|throughput] [--depths 1,16]
MELTEMI_BENCH_BIN selects the binary (default build/meltemi_bench_mrpc).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import bench  # noqa: E402
import callgrind  # noqa: E402
from rpc_bench import tcp_up  # noqa: E402

REPO = HERE.parents[2]
HOST = bench.HOST

CONFIG = """\
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {{name: mrpc, namespace: bench}}
spec: {{protocol: mrpc, codec: lua, scriptFile: mrpc.lua}}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {{name: mrpcc, namespace: bench}}
spec: {{protocol: mrpcc, codec: mrpc_c}}
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: echo-lua, namespace: bench}}
spec:
  hosts: [echo-lua.bench.svc.cluster.local]
  addresses: [{host}]
  ports: [{{number: {lua_port}, name: tcp-metaprotocol-mrpc-echo, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: {host}, ports: {{tcp-metaprotocol-mrpc-echo: {up}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: echo-c, namespace: bench}}
spec:
  hosts: [echo-c.bench.svc.cluster.local]
  addresses: [{host}]
  ports: [{{number: {c_port}, name: tcp-metaprotocol-mrpcc-echo, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: {host}, ports: {{tcp-metaprotocol-mrpcc-echo: {up}}}}}]
"""


def start_upstream(work, rpcload):
    port = bench.free_port()
    s = bench.Server("rpcload-mrpc", [str(rpcload), "serve", "--proto", "mrpc", "--host", HOST,
                                      "--port", str(port)], work, port)
    if not s.start(lambda: tcp_up(port)):
        sys.exit(f"rpcload serve: {s.error}")
    return s


def start_meltemi(work, binary, up_port):
    conf = work / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "mrpc.lua").write_text((REPO / "examples/custom-protocol/mrpc.lua").read_text())
    ports = {"lua": bench.free_port(), "c": bench.free_port()}
    (conf / "bench.yaml").write_text(CONFIG.format(host=HOST, lua_port=ports["lua"],
                                                   c_port=ports["c"], up=up_port))
    admin = bench.free_port()
    s = bench.Server("meltemi", [str(binary), "run", "-c", str(conf), "--admin",
                                 f"{HOST}:{admin}", "--workers", "1", "--log-level", "warn"],
                     work, 0)

    def ready():
        with urllib.request.urlopen(f"http://{HOST}:{admin}/ready", timeout=1) as r:
            return r.status == 200 and all(tcp_up(p) for p in ports.values())
    if not s.start(ready, timeout=60):
        sys.exit(f"meltemi: {s.error}")
    return s, ports


def load(rpcload, port, depth, seconds, warmup=0.0):
    argv = [str(rpcload), "run", "--proto", "mrpc", "--host", HOST, "--port", str(port),
            "--conns", "1", "--depth", str(depth), "--duration", str(seconds),
            "--warmup", str(warmup)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120 + 3 * seconds)
    m = re.search(r"\bcalls=(\d+).*\bcalls_per_s=(\d+)", r.stdout)
    if r.returncode != 0 or not m:
        sys.exit(f"rpcload failed: {r.stdout[-300:]}{r.stderr[-300:]}")
    return int(m.group(1)), int(m.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rpcload", required=True, help="the rpcload binary (compare.sh builds it)")
    ap.add_argument("--mode", choices=["callgrind", "throughput"], default="callgrind")
    ap.add_argument("--depths", default="1,16")
    ap.add_argument("--seconds", type=float, default=None,
                    help="large load (callgrind, default 4) or run length (throughput, 3)")
    ap.add_argument("--reps", type=int, default=3, help="throughput: best of this many runs")
    args = ap.parse_args()
    binary = Path(os.environ.get("MELTEMI_BENCH_BIN",
                                 REPO / "build" / "meltemi_bench_mrpc")).resolve()
    if not binary.exists():
        sys.exit(f"{binary} not found (cmake --build build --target meltemi_bench_mrpc)")
    depths = [int(d) for d in args.depths.split(",") if d]
    secs = args.seconds or (4.0 if args.mode == "callgrind" else 3.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="meltemi-luacodec.") as tmp:
        work = Path(tmp)
        servers = []
        try:
            up = start_upstream(work, args.rpcload)
            servers.append(up)
            exe = callgrind.callgrind_wrapper(work, binary) if args.mode == "callgrind" else binary
            m, ports = start_meltemi(work, exe, up.port)
            servers.append(m)
            counter = callgrind.Counter(work, m.proc.pid) if args.mode == "callgrind" else None
            for depth in depths:
                row = {"depth": depth}
                for codec in ("c", "lua"):
                    port = ports[codec]
                    if counter:
                        ipc, n = callgrind.measure(
                            counter, lambda s, p=port, d=depth: load(args.rpcload, p, d, s)[0],
                            secs / 4, secs)
                        row[codec] = ipc
                        bench.log(f"callgrind: {codec} depth {depth}: {ipc:.0f} instr/call ({n})")
                    else:
                        best = max(load(args.rpcload, port, depth, secs, 0.5)[1]
                                   for _ in range(args.reps))
                        row[codec] = best
                        bench.log(f"throughput: {codec} depth {depth}: {best} calls/s")
                rows.append(row)
        finally:
            for s in reversed(servers):
                s.stop()
    unit = "instructions/call" if args.mode == "callgrind" else "calls/s"
    print(f"meltemi_bench_mrpc {binary} ({args.mode}, --workers 1, one client connection)")
    print(f"| depth | C codec ({unit}) | Lua codec ({unit}) | Lua/C calls/s |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["c"] / r["lua"] if args.mode == "callgrind" else r["lua"] / r["c"]
        print(f"| {r['depth']} | {r['c']:.0f} | {r['lua']:.0f} | {ratio:.2f}x |")
    if args.mode == "callgrind":
        print("(Lua/C calls/s estimated as C instructions per call / Lua instructions per call)")


if __name__ == "__main__":
    main()
