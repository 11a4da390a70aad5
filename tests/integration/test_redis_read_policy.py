"""Read policies for a plain primary/replica pair, without Redis Cluster (PROXY mode).

Roles come from endpoint labels (`role: replica`, also `redis-role`); writes always go to
the primary, reads follow RedisService settings.readPolicy. Where a command ran is read from
the servers' own INFO commandstats, so nothing here trusts meltemi's word for it.
"""
import pytest

from harness import VIP, free_port, wait_until


def cmdstat(srv, cmd):
    info = srv.client().info("commandstats")
    return int(info.get(f"cmdstat_{cmd}", {}).get("calls", 0))


def topology(primary, replica, port, policy):
    return {
        "se.yaml": f"""
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: redis-pair, namespace: redis}}
spec:
  hosts: [redis-pair.redis.svc.cluster.local]
  addresses: [{VIP}]
  ports: [{{number: {port}, name: tcp-redis, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports: {{tcp-redis: {primary.port}}}
    labels: {{role: master}}
  - address: 127.0.0.1
    ports: {{tcp-redis: {replica.port}}}
    labels: {{role: replica}}
""",
        "rs.yaml": f"""
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {{name: redis-pair, namespace: redis}}
spec:
  host: [redis-pair.redis.svc.cluster.local]
  settings: {{readPolicy: {policy}}}
""",
    }


@pytest.fixture
def pair(redis_factory):
    primary = redis_factory(name="primary")
    replica = redis_factory(name="replica")
    replica.client().replicaof(primary.host, primary.port)
    wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up",
               15, "replica linked to primary")
    return primary, replica


def run_reads_and_writes(meltemi_factory, config_dir, redis_client, pair, policy, n=200):
    primary, replica = pair
    port = free_port(VIP)
    m = meltemi_factory(config_dir(topology(primary, replica, port, policy)))
    c = redis_client(VIP, port)
    sets_before = {s: cmdstat(s, "set") for s in pair}
    for i in range(n):
        assert c.set(f"k{i}", str(i)) is True
    sets = {s: cmdstat(s, "set") - sets_before[s] for s in pair}
    wait_until(lambda: replica.client().get(f"k{n - 1}") == str(n - 1).encode(), 10,
               "replication of the last write")
    gets_before = {s: cmdstat(s, "get") for s in pair}
    for i in range(n):
        assert c.get(f"k{i}") == str(i).encode()
    gets = {s: cmdstat(s, "get") - gets_before[s] for s in pair}
    return m, gets, sets


def test_replica_policy_reads_on_the_replica_and_writes_on_the_primary(
        meltemi_factory, config_dir, redis_client, pair):
    primary, replica = pair
    _, gets, sets = run_reads_and_writes(meltemi_factory, config_dir, redis_client, pair,
                                         "REPLICA")
    # The replica's SET count includes the replication stream; a write meltemi sent to it would
    # have failed with READONLY, so 200 on the primary and 200 successes say where they went.
    assert sets[primary] == 200
    assert gets[replica] == 200 and gets[primary] == 0


def test_master_policy_keeps_reads_on_the_primary(meltemi_factory, config_dir, redis_client,
                                                  pair):
    primary, replica = pair
    _, gets, sets = run_reads_and_writes(meltemi_factory, config_dir, redis_client, pair,
                                         "MASTER")
    assert gets[primary] == 200 and gets[replica] == 0
    assert sets[primary] == 200


def test_any_policy_spreads_reads_over_both(meltemi_factory, config_dir, redis_client, pair):
    primary, replica = pair
    _, gets, sets = run_reads_and_writes(meltemi_factory, config_dir, redis_client, pair, "ANY")
    assert sets[primary] == 200
    assert gets[primary] > 0 and gets[replica] > 0
    assert gets[primary] + gets[replica] == 200


def test_prefer_replica_falls_back_to_the_primary_when_the_replica_dies(
        meltemi_factory, config_dir, redis_client, pair):
    primary, replica = pair
    port = free_port(VIP)
    meltemi_factory(config_dir(topology(primary, replica, port, "PREFER_REPLICA")))
    c = redis_client(VIP, port)
    assert c.set("a", "1") is True
    wait_until(lambda: replica.client().get("a") == b"1", 10, "replication")
    assert c.get("a") == b"1"
    replica.kill()
    # The first read after the death may fail (it was on its way to the dead node); then the
    # replica is in backoff and reads go to the primary.
    results = []
    for _ in range(20):
        try:
            results.append(c.get("a"))
        except Exception as exc:  # noqa: BLE001 - the error text is what we check
            assert "meltemi" in str(exc)
    assert results and all(r == b"1" for r in results)
    assert results[-5:] == [b"1"] * 5


def test_replica_policy_without_a_healthy_replica_is_a_clear_error(
        meltemi_factory, config_dir, redis_client, pair):
    primary, replica = pair
    port = free_port(VIP)
    meltemi_factory(config_dir(topology(primary, replica, port, "REPLICA")))
    c = redis_client(VIP, port)
    assert c.set("a", "1") is True
    replica.kill()
    import redis
    errors = []
    for _ in range(5):
        with pytest.raises(redis.ResponseError) as exc:
            c.get("a")
        errors.append(str(exc.value))
    assert any("no healthy replica" in e for e in errors), errors
    assert c.set("b", "2") is True  # writes are unaffected
