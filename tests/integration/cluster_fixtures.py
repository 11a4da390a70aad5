"""
cluster_fixtures.py - a real 6-node Redis Cluster (3 masters, 3 replicas) for the cluster
tests, and the YAML that puts meltemi in front of it (RedisDestination mode CLUSTER).

The nodes are redis-server processes on free 127.0.0.1 ports (client port and cluster bus
port both chosen by the kernel: `cluster-port`), cluster-node-timeout 1000 ms so that a
failover takes a couple of seconds, no persistence, cluster-config-file in the test's tmp
dir. `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes` joins them; the
fixture then waits (bounded) until every node says cluster_state:ok and every node agrees on
three shards with one replica each. Teardown kills every node by PID (SIGCONT first, in case
a test stopped one).

Import the fixtures into a test module: `from cluster_fixtures import redis_cluster, ...`.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import RespConn, RespError, free_port, stop_pid, tail, wait_until

CLUSTER_HOST = "redis-cluster.redis.svc.cluster.local"
CLUSTER_VIP = "127.0.0.11"  # the Service's address as a client would reach it


class ClusterNode:
    """One redis-server with cluster-enabled yes."""

    def __init__(self, workdir, node_timeout_ms=1000):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.bus_port = free_port()
        self.workdir = Path(workdir) / f"node-{self.port}"
        self.workdir.mkdir(parents=True)
        self.node_timeout_ms = node_timeout_ms
        self.log = self.workdir / "redis.log"
        self.proc = None
        self.stopped = False  # SIGSTOP sent and no SIGCONT yet
        self.extra_args = []  # more redis-server arguments (a TLS port, ...)

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    def start(self, timeout=10):
        args = ["redis-server", "--port", str(self.port), "--bind", self.host,
                "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
                "--cluster-config-file", str(self.workdir / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", str(self.workdir), "--logfile", ""] + [str(a) for a in self.extra_args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(self._answers_ping, timeout, f"cluster node on port {self.port}")
        return self

    def _answers_ping(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.proc.returncode}:\n"
                                 f"{tail(self.log)}")
        return self.call("PING", timeout=1) == b"PONG"

    def call(self, *args, timeout=5):
        """One command on a fresh connection straight to this node."""
        c = RespConn(self.host, self.port, timeout=timeout)
        try:
            return c.call(*args)
        finally:
            c.close()

    def client(self, **kw):
        import redis
        kw.setdefault("socket_timeout", 5)
        kw.setdefault("socket_connect_timeout", 5)
        return redis.Redis(host=self.host, port=self.port, **kw)

    def info(self, section):
        """INFO section as a dict; section "cluster-info" is CLUSTER INFO."""
        raw = self.call("CLUSTER", "INFO") if section == "cluster-info" else \
            self.call("INFO", section)
        text = raw.decode()
        out = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def cmdstat_calls(self, command):
        """calls= of `INFO commandstats` for command (0 if never called)."""
        v = self.info("commandstats").get(f"cmdstat_{command}")
        if not v:
            return 0
        return int(dict(kv.split("=") for kv in v.split(","))["calls"])

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL by PID: the node dies without a word."""
        if self.proc is not None and self.proc.poll() is None:
            if self.stopped:
                self.cont()
            stop_pid(self.proc, signal.SIGKILL)

    def stop(self):
        """SIGSTOP: the node stops answering but keeps its sockets open."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.stopped = True

    def cont(self):
        if self.stopped and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False


class RedisCluster:
    """Six nodes, three masters with one replica each."""

    def __init__(self, workdir, n_nodes=6, replicas=1, node_timeout_ms=1000):
        self.workdir = Path(workdir)
        self.nodes = [ClusterNode(self.workdir, node_timeout_ms) for _ in range(n_nodes)]
        self.replicas = replicas

    def start(self, timeout=60):
        try:
            for n in self.nodes:
                n.start()
            cmd = ["redis-cli", "--cluster", "create", *[n.addr for n in self.nodes],
                   "--cluster-replicas", str(self.replicas), "--cluster-yes"]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}"
            self.wait_healthy(timeout)
        except BaseException:
            self.kill_all()
            raise
        return self

    # ---- topology, asked of the nodes directly ---------------------------------------------

    def node_at(self, host, port):
        for n in self.nodes:
            if n.port == int(port):
                return n
        raise KeyError(f"{host}:{port}")

    def slots_from(self, node):
        """CLUSTER SLOTS of one node: [(lo, hi, master, [replicas])] with ClusterNode objects."""
        out = []
        for entry in node.call("CLUSTER", "SLOTS"):
            lo, hi, master, *reps = entry
            out.append((lo, hi, self.node_at(master[0].decode(), master[1]),
                        [self.node_at(r[0].decode(), r[1]) for r in reps]))
        return sorted(out, key=lambda e: e[0])

    def alive(self):
        return [n for n in self.nodes if n.running() and not n.stopped]

    def _agreed_view(self, want_replicas):
        views = []
        for n in self.alive():
            if n.info("cluster-info").get("cluster_state") != "ok":
                return None
            view = [(lo, hi, m.port, sorted(r.port for r in reps))
                    for lo, hi, m, reps in self.slots_from(n)]
            if sum(hi - lo + 1 for lo, hi, _, _ in view) != 16384:
                return None
            if any(len(reps) != want_replicas for _, _, _, reps in view):
                return None
            views.append(view)
        return views[0] if views and all(v == views[0] for v in views) else None

    def wait_healthy(self, timeout=60, want_replicas=None):
        """Every live node: cluster_state:ok, all 16384 slots, the same view, and each master
        with want_replicas replicas (default: as created)."""
        want = self.replicas if want_replicas is None else want_replicas
        try:
            wait_until(lambda: self._agreed_view(want), timeout,
                       "every cluster node to agree on a healthy topology", interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None

    def describe(self):
        lines = []
        for n in self.nodes:
            try:
                up = n.running() and not n.stopped
                state = n.info("cluster-info").get("cluster_state") if up else "down"
            except Exception as exc:  # diagnostics only
                state = repr(exc)
            lines.append(f"node {n.addr} pid {n.proc.pid if n.proc else '-'}: {state}")
        return "\n".join(lines)

    def shards(self, via=None):
        """[(lo, hi, master, [replicas])] as a live node sees it."""
        return self.slots_from(via or self.alive()[0])

    def masters(self):
        seen = []
        for _, _, m, _ in self.shards():
            if m not in seen:
                seen.append(m)
        return seen

    def replica_nodes(self):
        seen = []
        for _, _, _, reps in self.shards():
            for r in reps:
                if r not in seen:
                    seen.append(r)
        return seen

    def master_of_slot(self, slot, shards=None):
        for lo, hi, m, _ in shards or self.shards():
            if lo <= slot <= hi:
                return m
        raise KeyError(slot)

    def replicas_of(self, master):
        return [r for _, _, m, reps in self.shards() if m is master for r in reps]

    def keyslot(self, key):
        return self.alive()[0].call("CLUSTER", "KEYSLOT", key)

    def flushall(self):
        for m in self.masters():
            assert m.call("FLUSHALL") == b"OK"

    def wait_replicas_synced(self, timeout=30):
        """Every replica's replication offset equals its master's (WAIT-free check)."""
        def synced():
            for m in self.masters():
                off = int(m.info("replication")["master_repl_offset"])
                for r in self.replicas_of(m):
                    if int(r.info("replication").get("slave_repl_offset", -1)) < off:
                        return False
            return True
        wait_until(synced, timeout, "replicas to catch up with their masters", interval=0.1)

    def kill_all(self):
        for n in self.nodes:
            try:
                n.kill()
            except Exception:  # keep killing the others
                pass


def cluster_yaml(cluster, port, vip=CLUSTER_VIP, seeds=3, read_policy=None, op_timeout=None,
                 enable_redirection=None, name="redis-cluster", host=CLUSTER_HOST,
                 destination=True):
    """{filename: yaml}: the ServiceEntry (VIP listener, a few nodes as STATIC endpoints, the
    seeds of discovery), the RedisDestination with mode CLUSTER, and a RedisService when a
    setting is given."""
    endpoints = "".join(f"""\
  - address: {n.host}
    ports:
      tcp-redis: {n.port}
""" for n in cluster.nodes[:seeds])
    files = {"service-entry.yaml": f"""\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: redis
spec:
  hosts:
  - {host}
  addresses:
  - {vip}
  ports:
  - number: {port}
    name: tcp-redis
    protocol: TCP
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
{endpoints}"""}
    if destination:
        files["redis-destination.yaml"] = f"""\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata:
  name: {name}
  namespace: redis
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      redis:
        mode: CLUSTER
"""
    settings = []
    if read_policy:
        settings.append(f"    readPolicy: {read_policy}")
    if op_timeout:
        settings.append(f"    opTimeout: {op_timeout}")
    if enable_redirection is not None:
        settings.append(f"    enableRedirection: {'true' if enable_redirection else 'false'}")
    if settings:
        files["redis-service.yaml"] = f"""\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: {name}
  namespace: redis
spec:
  host:
  - {host}
  settings:
{chr(10).join(settings)}
  redis:
  - route:
      host: {host}
"""
    return files


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    """One cluster for the tests of a module that leave its topology as they found it."""
    c = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.kill_all()


@pytest.fixture
def redis_cluster(shared_cluster):
    """The module's cluster, emptied, healthy."""
    shared_cluster.wait_healthy(timeout=30)
    shared_cluster.flushall()
    return shared_cluster


@pytest.fixture
def fresh_cluster(tmp_path):
    """A cluster of its own, for a test that kills, stops or reshards nodes."""
    c = RedisCluster(tmp_path / "cluster").start()
    yield c
    c.kill_all()


@pytest.fixture
def cluster_proxy(config_dir, meltemi_factory):
    """deploy(cluster, workers=2, **cluster_yaml kw) -> namespace(host, port, meltemi, conf)."""
    import types

    def deploy(cluster, workers=2, **kw):
        port = free_port(CLUSTER_VIP)
        conf = config_dir(cluster_yaml(cluster, port, **kw))
        m = meltemi_factory(conf, workers=workers)
        return types.SimpleNamespace(host=CLUSTER_VIP, port=port, meltemi=m, conf=conf)

    return deploy


def is_error(reply):
    return isinstance(reply, RespError)


def deadline(seconds):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() < end
