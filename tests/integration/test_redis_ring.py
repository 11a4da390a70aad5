"""
test_redis_ring.py - Redis PROXY mode spreads keys over several plain redis-servers with a
consistent-hash ring (runtime/core/ring.c), not a modulo: keys land on every server, hash
tags keep related keys together, and removing one of four servers from the ServiceEntry
(a live reload) leaves every key of the other three readable through meltemi - only the
removed server's keys (about a quarter; a modulo would move three quarters) are gone.
"""

import sys
from pathlib import Path

from harness import VIP, RespConn, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import meta_env as me  # noqa: E402

N_KEYS = 2000


def service_entry(port, redis_ports):
    eps = "".join(f"  - address: 127.0.0.1\n    ports: {{tcp-redis: {p}}}\n" for p in redis_ports)
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: redis-shards, namespace: redis}}
spec:
  hosts: [redis-shards.redis.svc.cluster.local]
  addresses: [{VIP}]
  ports: [{{number: {port}, name: tcp-redis}}]
  resolution: STATIC
  endpoints:
{eps}"""


def test_keys_spread_on_a_ring_and_removing_one_server_moves_only_its_keys(
        redis_factory, config_dir, meltemi_factory):
    servers = [redis_factory(name=f"shard{i}") for i in range(4)]
    port = free_port(VIP)
    conf = config_dir({"se.yaml": service_entry(port, [s.port for s in servers])})
    m = meltemi_factory(conf, workers=2)
    c = RespConn(VIP, port)
    for k in range(N_KEYS):
        assert c.call("SET", f"key:{k}", str(k)) == b"OK"
    owned = [set(x.decode() for x in s.client().keys("key:*")) for s in servers]
    assert sum(len(o) for o in owned) == N_KEYS, "each key on exactly one server"
    for i, o in enumerate(owned):
        assert N_KEYS * 0.15 < len(o) < N_KEYS * 0.35, f"server {i} holds {len(o)} of {N_KEYS}"

    # hash tags: only {...} is hashed, so these meet on one server
    for j in range(20):
        assert c.call("SET", f"{{user42}}:field{j}", "x") == b"OK"
    assert sorted(len(s.client().keys("{user42}:*")) for s in servers) == [0, 0, 0, 20]

    before = me.config_generation(m)
    me.write_atomically(conf / "se.yaml", service_entry(port, [s.port for s in servers[:3]]))
    me.wait_generation_after(m, before)
    c.close()
    c = RespConn(VIP, port)
    found = 0
    for k in range(N_KEYS):
        v = c.call("GET", f"key:{k}")
        if f"key:{k}" in owned[3]:
            continue  # the removed server's keys now hash elsewhere: a miss is expected
        assert v == str(k).encode(), f"key:{k} of a remaining server is not found ({v!r})"
        found += 1
    assert found == N_KEYS - len(owned[3])
    c.close()
