#!/usr/bin/python3
"""
ratelimit.py - issue 12's goal "local rate limit enforced within 5% of the configured rate
over 10 s": a RedisService localRateLimit (the bucket shared by every worker) on a real
redis-server, driven well above the rate for --seconds by --clients raw RESP connections
(one per thread, --depth GETs in flight each; a GET answers "$-1" when allowed, "-ERR rate
limited" when not). Reported: commands allowed per second against the configured rate.

The bucket starts full (maxTokens), so over T seconds at most maxTokens + rate x T commands
pass; the figure compared is (allowed - maxTokens) / T, and the raw allowed / T is printed
too. Rate accuracy is not throughput: a loaded machine is fine as long as the offered load
stays above the rate (the script says so when it does not).

Usage: tests/bench/ratelimit.sh [--rate R] [--seconds T] [--workers W] [--clients C]
"""

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import configs  # noqa: E402
from harness import VIP, Meltemi, RedisServer, free_port  # noqa: E402


def config(port, redis_port, rate, fill_ms):
    per_fill = max(1, rate * fill_ms // 1000)
    return {
        "se.yaml": configs.service_entry("redis-single", VIP, port, redis_port),
        "rs.yaml": f"""\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {{name: redis-single, namespace: redis}}
spec:
  host: [redis-single.redis.svc.cluster.local]
  localRateLimit:
    tokenBucket: {{maxTokens: {per_fill}, tokensPerFill: {per_fill}, fillInterval: {fill_ms}ms}}
""",
    }, per_fill


def client(port, depth, stop, out):
    s = socket.create_connection((VIP, port), timeout=10)
    req = b"*2\r\n$3\r\nGET\r\n$8\r\nbenchkey\r\n" * depth
    allowed = limited = other = 0
    buf = b""
    while not stop.is_set():
        s.sendall(req)
        got = 0
        while got < depth:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("meltemi closed the connection")
            buf += chunk
            lines = buf.split(b"\r\n")
            buf = lines.pop()
            for ln in lines:
                got += 1
                if ln == b"$-1":
                    allowed += 1
                elif ln == b"-ERR rate limited":
                    limited += 1
                else:
                    other += 1
    s.close()
    out.append((allowed, limited, other))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=1000, help="configured commands/s")
    ap.add_argument("--fill-ms", type=int, default=100, help="fillInterval")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--depth", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="meltemi-ratelimit.") as tmp:
        tmp = Path(tmp)
        redis = RedisServer(tmp, name="redis").start()
        port = free_port(VIP)
        files, burst = config(port, redis.port, args.rate, args.fill_ms)
        conf = configs.write_config(tmp / "conf", files)
        m = Meltemi(conf, tmp / "meltemi", workers=args.workers).start()
        try:
            stop, out = threading.Event(), []
            threads = [threading.Thread(target=client, args=(port, args.depth, stop, out))
                       for _ in range(args.clients)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads:
                t.join(30)
            elapsed = time.monotonic() - t0
        finally:
            m.terminate()
            redis.kill()
    allowed = sum(o[0] for o in out)
    limited = sum(o[1] for o in out)
    other = sum(o[2] for o in out)
    rate = (allowed - burst) / elapsed
    err = 100.0 * (rate - args.rate) / args.rate
    offered = (allowed + limited + other) / elapsed
    print(f"configured {args.rate}/s (tokenBucket {burst} per {args.fill_ms} ms), "
          f"{args.workers} workers, {args.clients} clients x depth {args.depth}, {elapsed:.2f} s")
    print(f"offered {offered:.0f}/s; allowed {allowed} ({allowed / elapsed:.1f}/s raw), "
          f"limited {limited}, other {other}")
    print(f"allowed after the initial burst: {rate:.1f}/s = {err:+.2f}% of the configured rate "
          f"({'within' if abs(err) <= 5 else 'OUTSIDE'} 5%)")
    if offered < 1.5 * args.rate:
        print("warning: offered load is under 1.5x the rate: the figure says little")
    return 0 if abs(err) <= 5 and other == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
