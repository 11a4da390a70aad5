"""
test_redis_rate_limit.py - RedisService localRateLimit (a meltemi extension) on a real
redis-server with real clients: a bucket for the whole service shared by several clients on
two workers, and per command class / per command conditions with their own buckets. Every
assertion is token arithmetic (fillInterval an hour), not timing: exactly maxTokens commands
reach Redis, the others get `-ERR rate limited` and leave Redis untouched, and
meltemi_rate_limited_total counts them.
"""

import re
import sys
import threading
from pathlib import Path

import redis as redis_py

import configs
from harness import VIP, RespConn, RespError, free_port, resp_encode


def deploy(redis_factory, config_dir, meltemi_factory, limit_yaml, workers=2):
    redis = redis_factory()
    port = free_port(VIP)
    files = {
        "se.yaml": configs.service_entry("redis-single", VIP, port, redis.port),
        "rs.yaml": f"""
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {{name: redis-single, namespace: redis}}
spec:
  host: [redis-single.redis.svc.cluster.local]
  localRateLimit:
{limit_yaml}""",
    }
    return redis, port, meltemi_factory(config_dir(files), workers=workers)


def rate_limited_total(m):
    status, body = m.http_get("/stats/prometheus")
    assert status == 200, body
    return sum(float(x) for x in re.findall(r"^meltemi_rate_limited_total\{[^}]*\} (\S+)$", body,
                                            re.M))


def test_clients_on_two_workers_share_one_bucket(redis_factory, config_dir, meltemi_factory):
    redis, port, m = deploy(redis_factory, config_dir, meltemi_factory,
                            "    tokenBucket: {maxTokens: 25, tokensPerFill: 1, fillInterval: 1h}\n")
    outcome = {"ok": 0, "limited": 0, "other": []}
    lock = threading.Lock()

    def client(i):
        c = redis_py.Redis(host=VIP, port=port, socket_timeout=10)
        for j in range(10):
            try:
                c.incr("counter")
                key = "ok"
            except redis_py.ResponseError as e:
                key = "limited" if str(e) == "rate limited" else None
                if key is None:
                    with lock:
                        outcome["other"].append(str(e))
                    continue
            with lock:
                outcome[key] += 1
        c.close()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert outcome["other"] == []
    assert (outcome["ok"], outcome["limited"]) == (25, 15)
    assert int(redis.client().get("counter")) == 25, "refused INCRs never reached Redis"
    assert rate_limited_total(m) == 15


def test_write_class_and_named_commands_have_their_own_buckets(redis_factory, config_dir,
                                                               meltemi_factory):
    limit = """\
    tokenBucket: {maxTokens: 5, fillInterval: 1h}
    conditions:
    - match: {commands: [KEYS, scan]}
      tokenBucket: {maxTokens: 1, fillInterval: 1h}
    - match: {commandClass: WRITE}
      tokenBucket: {maxTokens: 3, fillInterval: 1h}
"""
    redis, port, m = deploy(redis_factory, config_dir, meltemi_factory, limit, workers=1)
    c = RespConn(VIP, port)
    sets = [c.call("SET", f"k{i}", "v") for i in range(6)]
    assert sets[:3] == [b"OK"] * 3
    assert all(isinstance(r, RespError) and r == "ERR rate limited" for r in sets[3:]), sets
    gets = [c.call("GET", "k0") for _ in range(7)]
    assert gets[:5] == [b"v"] * 5, "reads take the default bucket, untouched by the writes"
    assert all(isinstance(r, RespError) for r in gets[5:]), gets
    keys = [c.call("KEYS", "k*") for _ in range(2)]
    assert sorted(keys[0]) == [b"k0", b"k1", b"k2"] and keys[1] == "ERR rate limited"
    assert c.call("PING") == b"PONG", "commands meltemi answers itself are not limited"
    assert rate_limited_total(m) == 3 + 2 + 1
    assert sorted(redis.client().keys("k*")) == [b"k0", b"k1", b"k2"]
    c.close()


def test_queued_commands_of_a_transaction_meet_the_limit_too(redis_factory, config_dir,
                                                             meltemi_factory):
    # MULTI is no way around the limit: a limited queued command fails the transaction
    # (EXECABORT, as after any queueing error) and nothing of it is applied.
    redis, port, m = deploy(redis_factory, config_dir, meltemi_factory,
                            "    tokenBucket: {maxTokens: 3, tokensPerFill: 1, fillInterval: 1h}\n",
                            workers=1)
    c = RespConn(VIP, port, timeout=10)
    stream = [("MULTI",), ("INCR", "n"), ("INCR", "n"), ("INCR", "n"), ("INCR", "n"), ("EXEC",)]
    c.send_raw(b"".join(resp_encode(*cmd) for cmd in stream))
    assert [c.read_reply() for _ in stream] == [
        b"OK", b"QUEUED", b"QUEUED", b"QUEUED", RespError("ERR rate limited"),
        RespError("EXECABORT Transaction discarded because of previous errors.")]
    assert redis.client().get("n") is None
    assert rate_limited_total(m) == 1
    c.close()


def test_run_and_reload_print_what_is_accepted_but_not_enforced(redis_factory, config_dir,
                                                               meltemi_factory):
    """`meltemi run` logs such a warning at start, and a reload adding another such field
    logs that one (file, line, kind/name and field named)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
    import meta_env as me
    _, _, m = deploy(redis_factory, config_dir, meltemi_factory,
                            "    tokenBucket: {maxTokens: 5, fillInterval: 1s}\n", workers=1)
    dr = """\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: redis-single, namespace: redis}
spec:
  host: redis-single.redis.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
"""
    # configs.service_entry writes location: MESH_INTERNAL, as Aeraki's examples do
    assert re.search(r"se\.yaml:\d+: ServiceEntry/redis-single: spec\.location: accepted but not "
                     r"enforced: MESH_INTERNAL", m.stderr()), m.stderr()
    assert "loadBalancer" not in m.stderr()
    conf = Path(m.argv()[m.argv().index("-c") + 1])
    before = me.config_generation(m)
    me.write_atomically(conf / "dr.yaml", dr)
    me.wait_generation_after(m, before)
    assert ("dr.yaml:7: DestinationRule/redis-single: "
            "spec.trafficPolicy.loadBalancer: accepted but not enforced: Redis clusters do not "
            "use loadBalancer") in m.stderr(), m.stderr()
