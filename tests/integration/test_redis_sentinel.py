"""Redis Sentinel: a RedisDestination names Sentinels and a master name (redis.sentinel, a
meltemi extension); meltemi sends traffic to the master the Sentinels name and follows
+switch-master.

Real redis-server master and replica, three real redis-sentinel processes (with a password),
all on loopback ports and stopped by PID; redis-py and redis-cli through meltemi. Where a
write landed is read from the servers themselves, never from meltemi's word for it.
"""
import json
import signal
import subprocess
import time

import pytest
import redis

from harness import VIP, free_port, redis_cli, stop_pid, tail, wait_until

MASTER_NAME = "mymaster"
SENTINEL_PASSWORD = "sentinel-secret"


class Sentinel:
    """One redis-sentinel on 127.0.0.1 watching MASTER_NAME, with its own config file."""

    def __init__(self, workdir, master_port, port=None):
        self.port = port or free_port()
        self.workdir = workdir / f"sentinel-{self.port}-{time.monotonic_ns()}"
        self.workdir.mkdir(parents=True)
        self.conf = self.workdir / "sentinel.conf"
        self.log = self.workdir / "sentinel.log"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.workdir}\n"
            f"requirepass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        self.proc = None

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["redis-sentinel", str(self.conf)], cwd=self.workdir,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_until(self._answers, 10, f"redis-sentinel on port {self.port}")
        return self

    def _answers(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-sentinel exited:\n{tail(self.log)}")
        try:
            return self.client().ping()
        except redis.RedisError:
            return False

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, password=SENTINEL_PASSWORD,
                           socket_timeout=5, socket_connect_timeout=5)

    def master_addr(self):
        return self.client().execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)

    def stop(self):
        if self.proc is not None:
            stop_pid(self.proc, signal.SIGKILL)


def topology(sentinels, port, policy="MASTER", password=SENTINEL_PASSWORD):
    addrs = ", ".join(f"127.0.0.1:{s.port}" for s in sentinels)
    auth = f"\n          auth: {{plain: {{password: {password}}}}}" if password else ""
    return {
        "se.yaml": f"""
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: redis-ha, namespace: redis}}
spec:
  hosts: [redis-ha.redis.svc.cluster.local]
  addresses: [{VIP}]
  ports: [{{number: {port}, name: tcp-redis, protocol: TCP}}]
  resolution: STATIC
""",
        "rd.yaml": f"""
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata: {{name: redis-ha, namespace: redis}}
spec:
  host: redis-ha.redis.svc.cluster.local
  trafficPolicy:
    connectionPool:
      redis:
        sentinel:
          masterName: {MASTER_NAME}
          addresses: [{addrs}]{auth}
""",
        "rs.yaml": f"""
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {{name: redis-ha, namespace: redis}}
spec:
  host: [redis-ha.redis.svc.cluster.local]
  settings: {{readPolicy: {policy}}}
""",
    }


@pytest.fixture
def ha(redis_factory, tmp_path):
    """A master, a linked replica and three Sentinels (not started: start_sentinels())."""
    master = redis_factory(name="master")
    replica = redis_factory(name="replica")
    replica.client().replicaof(master.host, master.port)
    wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up",
               15, "replica linked to master")
    sentinels = [Sentinel(tmp_path, master.port) for _ in range(3)]
    yield master, replica, sentinels
    for s in sentinels:
        s.stop()


def start_sentinels(sentinels):
    for s in sentinels:
        if s.proc is None or s.proc.poll() is not None:
            s.start()
    # each Sentinel has found the replica before any failover is asked of it
    wait_until(lambda: all(len(s.client().execute_command("SENTINEL", "replicas", MASTER_NAME))
                           >= 1 for s in sentinels if s.proc.poll() is None),
               20, "Sentinels know the replica")


def role(srv):
    try:
        return srv.client().info("replication").get("role")
    except redis.RedisError:
        return None


def clusters(m):
    status, body = m.http_get("/clusters?format=json")
    assert status == 200
    return body


def sentinel_master_of(m):
    """The master of the redis-ha cluster in /clusters (the first worker's view)."""
    doc = json.loads(clusters(m))
    found = []

    def walk(v):
        if isinstance(v, dict):
            if "sentinel" in v and isinstance(v["sentinel"], dict):
                found.append(v["sentinel"].get("master"))
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(doc)
    return found[0] if found else None


def write_lands_on(client, srv, key, value):
    """SET through meltemi succeeds and the value is on srv (read directly)."""
    try:
        if client.set(key, value) is not True:
            return False
    except redis.RedisError:
        return False
    try:
        return srv.client().get(key) == value.encode()
    except redis.RedisError:
        return False


def test_writes_go_to_the_master_the_sentinels_name(ha, meltemi_factory, config_dir,
                                                    redis_client):
    master, replica, sentinels = ha
    start_sentinels(sentinels)
    port = free_port(VIP)
    m = meltemi_factory(config_dir(topology(sentinels, port)))
    wait_until(lambda: sentinel_master_of(m) == f"127.0.0.1:{master.port}", 10,
               "/clusters shows the master")
    c = redis_client(VIP, port)
    assert c.set("sentinel:k", "v1") is True
    assert master.client().get("sentinel:k") == b"v1"
    assert c.get("sentinel:k") == b"v1"
    # redis-cli too
    out = redis_cli(VIP, port, "INCR", "sentinel:n")
    assert out.stdout.strip() == "1"
    assert master.client().get("sentinel:n") == b"1"
    body = clusters(m)
    assert f"127.0.0.1:{replica.port}" in body  # the replica the Sentinels listed
    assert SENTINEL_PASSWORD not in body


def test_sentinel_failover_moves_writes_to_the_new_master(ha, meltemi_factory, config_dir,
                                                          redis_client):
    master, replica, sentinels = ha
    start_sentinels(sentinels)
    port = free_port(VIP)
    m = meltemi_factory(config_dir(topology(sentinels, port)))
    c = redis_client(VIP, port)
    wait_until(lambda: write_lands_on(c, master, "before", "1"), 10, "a write on the master")
    assert sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME) in (True,
                                                                                          b"OK")
    wait_until(lambda: role(replica) == "master", 30, "the replica promoted")
    # new writes land on the new master (bounded; errors while switching are allowed)
    wait_until(lambda: write_lands_on(c, replica, "after", "2"), 20,
               "a write through meltemi on the new master")
    wait_until(lambda: sentinel_master_of(m) == f"127.0.0.1:{replica.port}", 10,
               "/clusters shows the new master")
    assert "Sentinel master 'mymaster' changed" in m.stderr()
    _, metrics = m.http_get("/stats/prometheus")
    assert "meltemi_redis_sentinel_events" in metrics
    changed = [ln for ln in metrics.splitlines()
               if ln.startswith("meltemi_redis_sentinel_events") and "master_changed" in ln]
    assert changed and float(changed[0].rsplit(" ", 1)[1]) >= 2  # first master, then the new


def test_master_killed_writes_reach_the_promoted_replica(ha, meltemi_factory, config_dir,
                                                         redis_client):
    master, replica, sentinels = ha
    start_sentinels(sentinels)
    port = free_port(VIP)
    meltemi_factory(config_dir(topology(sentinels, port)))
    c = redis_client(VIP, port)
    wait_until(lambda: write_lands_on(c, master, "k0", "0"), 10, "a write on the master")
    master.kill()
    # while the Sentinels agree, writes fail with an error (never hang, never land elsewhere)
    try:
        c.set("during", "x")
    except redis.RedisError as e:
        assert "meltemi" in str(e) or "READONLY" in str(e)
    wait_until(lambda: role(replica) == "master", 40, "the Sentinels promote the replica")
    wait_until(lambda: write_lands_on(c, replica, "k1", "1"), 20,
               "a write through meltemi on the promoted replica")


def test_one_sentinel_down_discovery_uses_the_others(ha, meltemi_factory, config_dir,
                                                     redis_client):
    master, replica, sentinels = ha
    start_sentinels(sentinels)
    sentinels[0].stop()  # the first one meltemi would ask
    port = free_port(VIP)
    m = meltemi_factory(config_dir(topology(sentinels, port)))
    c = redis_client(VIP, port)
    wait_until(lambda: write_lands_on(c, master, "one-down", "1"), 10,
               "a write on the master with one Sentinel down")
    assert sentinels[1].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME) in (True,
                                                                                          b"OK")
    wait_until(lambda: role(replica) == "master", 30, "the replica promoted")
    wait_until(lambda: write_lands_on(c, replica, "one-down-after", "2"), 20,
               "a write through meltemi on the new master")
    assert m.running()


def test_all_sentinels_down_at_start_is_a_clear_error_then_recovers(ha, meltemi_factory,
                                                                    config_dir, redis_client):
    master, replica, sentinels = ha
    port = free_port(VIP)
    m = meltemi_factory(config_dir(topology(sentinels, port)))
    c = redis_client(VIP, port)
    with pytest.raises(redis.ResponseError) as e:
        c.set("k", "v")
    assert "no master known for 'mymaster' from Sentinel" in str(e.value)
    assert master.client().get("k") is None
    assert "Sentinel look-up of master 'mymaster' failed" in m.stderr()
    start_sentinels(sentinels)
    wait_until(lambda: write_lands_on(c, master, "k", "v"), 15,
               "writes work once the Sentinels are up")


def test_wrong_sentinel_password_is_reported(ha, meltemi_factory, config_dir, redis_client):
    master, replica, sentinels = ha
    start_sentinels(sentinels)
    port = free_port(VIP)
    m = meltemi_factory(config_dir(topology(sentinels, port, password="wrong")))
    c = redis_client(VIP, port)

    def refused():
        try:
            c.set("k", "v")
        except redis.ResponseError as e:
            return "Sentinel" in str(e)
        return False
    wait_until(refused, 10, "a clear error while the Sentinels refuse the proxy")
    assert master.client().get("k") is None
    assert "wrong" not in clusters(m)


def test_read_policy_replica_reads_from_the_sentinels_replica(ha, meltemi_factory, config_dir,
                                                               redis_client):
    master, replica, sentinels = ha
    start_sentinels(sentinels)
    port = free_port(VIP)
    m = meltemi_factory(config_dir(topology(sentinels, port, policy="REPLICA")))
    wait_until(lambda: f"127.0.0.1:{replica.port}" in clusters(m), 10,
               "the replica is known")
    c = redis_client(VIP, port)
    assert c.set("rp", "1") is True
    assert master.client().get("rp") == b"1"
    wait_until(lambda: replica.client().get("rp") == b"1", 10, "replication")

    def gets(srv):
        return int(srv.client().info("commandstats").get("cmdstat_get", {}).get("calls", 0))
    before = gets(replica), gets(master)
    for _ in range(20):
        assert c.get("rp") == b"1"
    assert gets(replica) - before[0] >= 20
    assert gets(master) - before[1] == 0


def test_validate_refuses_sentinel_in_cluster_mode(tmp_path, config_dir):
    from harness import run_meltemi
    files = topology([], 7000)
    files["rd.yaml"] = files["rd.yaml"].replace("      redis:\n",
                                                "      redis:\n        mode: CLUSTER\n")
    out = run_meltemi("validate", str(config_dir(files)))
    assert out.returncode != 0
    assert "sentinel" in (out.stdout + out.stderr)
    assert "needs mode PROXY" in (out.stdout + out.stderr)
    assert "at least one Sentinel" in (out.stdout + out.stderr)



def test_reload_with_other_sentinels_and_two_workers_follows_a_failover(ha, meltemi_factory,
                                                                         config_dir,
                                                                         redis_client):
    """A reload that changes the Sentinel list retires the old cluster (its Sentinel
    connections close) and the new one discovers the master again, in every worker."""
    master, replica, sentinels = ha
    start_sentinels(sentinels)
    port = free_port(VIP)
    conf = config_dir(topology(sentinels[1:], port))
    m = meltemi_factory(conf, workers=2)
    c = redis_client(VIP, port)
    wait_until(lambda: write_lands_on(c, master, "r0", "0"), 10, "a write on the master")
    (conf / "rd.yaml").write_text(topology(sentinels[:1], port)["rd.yaml"])
    wait_until(lambda: f'"sentinels":["127.0.0.1:{sentinels[0].port}"]' in clusters(m), 15,
               "the reloaded Sentinel list in /clusters")
    for i in range(10):  # connections to both workers
        c2 = redis_client(VIP, port)
        assert c2.set(f"r{i}", "x") is True
    assert sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME) in (True,
                                                                                          b"OK")
    wait_until(lambda: role(replica) == "master", 30, "the replica promoted")
    for i in range(10):
        c2 = redis_client(VIP, port)
        wait_until(lambda: write_lands_on(c2, replica, f"after{i}", "y"), 20,
                   "every worker writes to the new master")
