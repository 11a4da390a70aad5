#!/usr/bin/python3
"""
pubsub_bench.py - pub/sub fan-out: 1 publisher, N subscribers (default 1000) of one channel,
direct to redis-server and through meltemi (one worker), on 127.0.0.1.

pubsubload (tests/bench/pubsubload.c) subscribes the N clients, waits, then publishes M
messages (at most 64 unanswered) and stops when every subscriber has every message. Reported
per target: delivered messages per second (N x M over the time from the first PUBLISH to the
last delivery; median over the repetitions), and memory per subscriber: the resident set
growth of the process the subscribers are connected to (redis-server direct, meltemi through
the proxy; meltemi's one upstream subscription costs redis-server next to nothing), divided
by N. Targets alternate inside each repetition.

Usage: tests/bench/pubsub.sh [--quick] [--subscribers N] [--messages M] [--size S] [--reps R]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import REPO, log, start_meltemi, start_redis  # noqa: E402


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_once(load, port, watched_pid, args):
    before = rss_kib(watched_pid)
    p = subprocess.Popen([str(load), "127.0.0.1", str(port), str(args.subscribers),
                          str(args.messages), str(args.size)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().strip()
        if line != "subscribed":
            raise RuntimeError(f"pubsubload: {line!r} {p.stderr.read()[-500:]}")
        time.sleep(0.2)
        per_sub = (rss_kib(watched_pid) - before) * 1024 / args.subscribers
        p.stdin.write("go\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode != 0:
        raise RuntimeError(f"pubsubload failed ({p.returncode}): {out} {err[-500:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["bytes_per_subscriber"] = per_sub
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--load", required=True)
    ap.add_argument("--binary", default=str(REPO / "build" / "meltemi"))
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 repetition, 200 messages")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.messages = 1, 200
    work = Path(tempfile.mkdtemp(prefix="meltemi-pubsub-bench."))
    redis = start_redis(work)
    meltemi = start_meltemi(work, redis.port, Path(args.binary))
    if not meltemi.alive():
        sys.exit(f"meltemi did not start: {meltemi.error}")
    results = {"direct": [], "meltemi": []}
    try:
        for rep in range(args.reps):
            order = [("direct", redis.port, redis.proc.pid),
                     ("meltemi", meltemi.port, meltemi.proc.pid)]
            for name, port, pid in order if rep % 2 == 0 else reversed(order):
                r = run_once(args.load, port, pid, args)
                log(f"rep {rep + 1} {name}: {r['delivered_per_s']:.0f} delivered/s, "
                    f"{r['bytes_per_subscriber']:.0f} B/subscriber")
                results[name].append(r)
    finally:
        meltemi.stop()
        redis.stop()
    rate = {k: statistics.median(r["delivered_per_s"] for r in v) for k, v in results.items()}
    mem = {k: statistics.median(r["bytes_per_subscriber"] for r in v) for k, v in results.items()}
    print(f"pub/sub fan-out: 1 publisher, {args.subscribers} subscribers, {args.messages} "
          f"messages of {args.size} B, {args.reps} repetition(s)")
    print("| target | delivered msg/s | vs direct | memory per subscriber |")
    print("|---|---|---|---|")
    for k in ("direct", "meltemi"):
        print(f"| {k} | {rate[k]:.0f} | {rate[k] / rate['direct']:.2f}x | "
              f"{mem[k] / 1024:.1f} KiB |")


if __name__ == "__main__":
    main()
