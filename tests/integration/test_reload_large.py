"""
A large configuration reloaded under load (issue 16): 1,000 MetaRouter routes on a Thrift
service and 1,000 Redis prefix routes on a Redis service, swapped 20 times while a Thrift
client and a Redis client keep calling. Asserted: every call answers correctly (zero failed
requests, zero closed connections) and every reload is one new generation. Measured, not
asserted (speed belongs to tests/bench/RESULTS.md): how long each worker's swap took and how
long after the reload began it served the new generation - the process logs them ("swapped
in in X ms (C ms CPU; Y ms after the reload began)") and the test prints them.
"""

import re
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import configs  # noqa: E402
import meta_env as me  # noqa: E402
import thrift_peers  # noqa: E402
from harness import VIP, RespConn, free_port  # noqa: E402

ROUTES = 1000
RELOADS = 20
THRIFT_HOST = "thrift-big.meta.svc.cluster.local"
THRIFT_PORT_NAME = "tcp-metaprotocol-thrift-big"
REDIS_B_VIP = "127.0.0.17"


@pytest.fixture(scope="module")
def thrift_gen(tmp_path_factory):
    return thrift_peers.generate(tmp_path_factory.mktemp("thrift-gen-large"))


def meta_routes(round_no):
    """ROUTES routes: ROUTES - 1 on methods nobody calls (renamed every round, so each reload
    really changes them), the last on `hello`, the method the client calls."""
    routes = [me.route(f"r{round_no}-{i}", [(THRIFT_HOST, "v1", None)],
                       match={"method": {"exact": f"m{round_no}x{i:04d}"}})
              for i in range(ROUTES - 1)]
    routes.append(me.route("hello", [(THRIFT_HOST, "v1", None)],
                           match={"method": {"exact": "hello"}}))
    return me.meta_router("thrift-big", THRIFT_HOST, routes)


def redis_routes(round_no):
    """ROUTES prefix routes k0000: ... k0999:, odd ones to redis-b (the same redis-server
    behind another service), even ones to the front service, and a catch-all; the round
    number moves one route between the two, so each reload changes the table."""
    items = []
    for i in range(ROUTES):
        host = "redis-b" if (i + round_no) % 2 else "redis-front"
        items.append(f"  - match:\n      key:\n        prefix: \"k{i:04d}:\"\n"
                     f"    route:\n      host: {host}.redis.svc.cluster.local\n")
    items.append("  - route:\n      host: redis-front.redis.svc.cluster.local\n")
    return ("apiVersion: redis.aeraki.io/v1alpha1\nkind: RedisService\n"
            "metadata:\n  name: redis-front\n  namespace: redis\n"
            "spec:\n  host:\n  - redis-front\n  redis:\n" + "".join(items))


class Caller:
    """A thread calling `fn(i)` until stopped; fn returns None when the answer was right, or
    what was wrong. An exception (a closed connection) ends it."""

    def __init__(self, name, fn):
        self.name, self.fn = name, fn
        self.calls, self.wrong, self.died = 0, [], None
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                bad = self.fn(i)
            except Exception as exc:
                self.died = repr(exc)
                return
            self.calls += 1
            if bad is not None:
                self.wrong.append(bad)

    def finish(self):
        self.stop.set()
        self.t.join(timeout=60)
        assert not self.t.is_alive(), f"{self.name} hung"


def test_thousand_routes_each_reload_twenty_times_under_load(tmp_path, thrift_gen, redis_factory,
                                                             config_dir, meltemi_factory):
    redis = redis_factory(name="big")
    thrift = me.ThriftServer(tmp_path / "peers", thrift_gen, "v1", free_port(), "binary",
                             "framed")
    thrift.start()
    try:
        redis_port, thrift_port = free_port(VIP), free_port(VIP)
        files = {
            "redis-front.yaml": configs.service_entry("redis-front", VIP, redis_port,
                                                      redis.port),
            "redis-b.yaml": configs.service_entry("redis-b", REDIS_B_VIP,
                                                  free_port(REDIS_B_VIP), redis.port),
            "redis-routes.yaml": redis_routes(0),
            "thrift.yaml": me.service_entry("thrift-big", THRIFT_HOST, VIP, thrift_port,
                                            THRIFT_PORT_NAME,
                                            [("127.0.0.1", thrift.port, {"version": "v1"})]),
            "thrift-dr.yaml": me.destination_rule("thrift-big", THRIFT_HOST,
                                                  subsets={"v1": {"version": "v1"}}),
            "thrift-routes.yaml": meta_routes(0),
        }
        conf = config_dir(files)
        m = meltemi_factory(conf, workers=2)

        rc = RespConn(VIP, redis_port, timeout=30)

        def redis_call(i):
            key = f"k{i % ROUTES:04d}:{i}"
            if rc.call("SET", key, str(i)) != b"OK":
                return ("SET", key)
            got = rc.call("GET", key)
            return None if got == str(i).encode() else ("GET", key, got)

        client = thrift_peers.Client(thrift_gen, VIP, thrift_port, "binary", "framed")

        def thrift_call(i):
            r = client.hello(f"h{i}")
            ok = (r.server, r.method, r.arg) == ("v1", "hello", f"h{i}")
            return None if ok else ("hello", i, r)

        callers = [Caller("redis", redis_call), Caller("thrift", thrift_call)]
        try:
            time.sleep(0.5)
            for round_no in range(1, RELOADS + 1):
                before = me.config_generation(m)
                progress = [c.calls for c in callers]
                if round_no % 2:
                    me.write_atomically(conf / "redis-routes.yaml", redis_routes(round_no))
                else:
                    me.write_atomically(conf / "thrift-routes.yaml", meta_routes(round_no))
                me.wait_generation_after(m, before, timeout=60)
                assert me.config_generation(m) == before + 1, "one reload per change"
                # both clients are served on the new generation before the next change
                deadline = time.monotonic() + 30
                while any(c.calls <= p + 5 for c, p in zip(callers, progress)):
                    assert all(c.died is None for c in callers), [c.died for c in callers]
                    assert time.monotonic() < deadline, "a client made no progress after a reload"
                    time.sleep(0.02)
        finally:
            for c in callers:
                c.finish()
            client.close()
            rc.close()
        for c in callers:
            assert c.died is None, f"{c.name}: connection lost: {c.died}"
            assert not c.wrong, f"{c.name}: {len(c.wrong)} wrong answers, first {c.wrong[:3]}"
            assert c.calls > RELOADS * 5, f"{c.name}: only {c.calls} calls"
        assert m.running()
        log = m.stderr()
        swaps = [(float(a), float(c), float(b)) for a, c, b in re.findall(
            r"swapped in in ([\d.]+) ms \(([\d.]+) ms CPU; ([\d.]+) ms after the reload "
            r"began\)", log)]
        built = [float(x) for x in re.findall(r"compiled and built in ([\d.]+) ms", log)]
        assert len(swaps) == 2 * RELOADS, f"every worker logs every swap: {len(swaps)}"
        print(f"\nreload of {ROUTES} MetaRouter + {ROUTES} Redis routes, {RELOADS} times, "
              f"2 workers; calls: " + ", ".join(f"{c.name} {c.calls}" for c in callers))
        for what, vals in (("compiled and built (main thread)", built),
                           ("worker swap, wall clock", [a for a, _, _ in swaps]),
                           ("worker swap, thread CPU", [c for _, c, _ in swaps]),
                           ("reload began -> worker serves it", [b for _, _, b in swaps])):
            vals = sorted(vals)
            print(f"  {what}: median {vals[len(vals) // 2]:.1f} ms, max {vals[-1]:.1f} ms "
                  f"(n={len(vals)})")
    finally:
        thrift.stop()
