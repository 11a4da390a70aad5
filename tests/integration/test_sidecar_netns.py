"""
test_sidecar_netns.py - transparent interception for real: two network namespaces joined by a
veth pair, the "server" one running redis-server and a Thrift server on its veth address, the
"pod" one running the application's clients, meltemi (as user nobody, as a sidecar runs under
its own uid) and the rules of tools/meltemi-iptables. Unmodified clients (redis-cli, the
generated Thrift client) connect to the service address as usual; the test checks from
meltemi's own counters and from the policies' visible effects that they went through meltemi,
that unknown destinations pass through (PassthroughCluster) and that --cleanup makes traffic
direct again. Inbound capture is checked from the server namespace towards the pod.

Needs root, `ip netns` and iptables (Debian package iptables); skips with the reason
otherwise. Namespaces, processes and rules are removed whatever happens (fixture finalizer).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import configs
from harness import REPO, meltemi_bin, stop_pid, tail

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import meta_env as me  # noqa: E402
import thrift_peers  # noqa: E402

IPTABLES_SCRIPT = REPO / "tools" / "meltemi-iptables"
NOBODY = 65534
OUT_PORT, IN_PORT, ADMIN = 15001, 15006, "127.0.0.1:15000"
REDIS_PORT, RAW_REDIS_PORT, THRIFT_PORT = 6379, 6380, 9090
INGRESS_PORT, APP_PORT, APP_RAW_PORT = 7000, 6390, 6391


def _why_not():
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables)"
    for tool in ("ip", "iptables", "iptables-restore", "setpriv", "redis-server", "redis-cli",
                 "curl"):
        if not shutil.which(tool):
            return f"needs {tool} on PATH"
    probe = f"mtprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    try:
        r = subprocess.run(["ip", "netns", "exec", probe, "iptables", "-t", "nat", "-S"],
                           capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            return f"iptables nat table unavailable in a namespace: {r.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


_skip = _why_not()
pytestmark = pytest.mark.skipif(_skip is not None, reason=f"netns interception: {_skip}")


def ns_run(ns, *cmd, timeout=20, check=False):
    r = subprocess.run(["ip", "netns", "exec", ns, *map(str, cmd)], capture_output=True,
                       text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} in {ns}: rc {r.returncode}\n"
                             f"{r.stdout}{r.stderr}")
    return r


def redis_cli(ns, host, port, *args):
    """redis-cli's reply text (stdout + stderr), or None when it could not connect."""
    r = ns_run(ns, "redis-cli", "-h", host, "-p", port, *args, timeout=15)
    out = (r.stdout + r.stderr).strip()
    if "Could not connect" in out or "Connection reset" in out or "Server closed" in out:
        return None
    return out


def wait_for(what, fn, timeout=15):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def metric(text, name, label):
    """The value of name{...label="..."...} in Prometheus text (0 when absent)."""
    pat = re.compile(r"^" + re.escape(name) + r"\{([^}]*)\} (\S+)$", re.M)
    for labels, value in pat.findall(text):
        if label in labels:
            return float(value)
    return 0.0


class Lab:
    """The two namespaces, their processes, and the rules; close() undoes all of it."""

    def __init__(self, tmp):
        n = os.getpid() % 200 + 20
        self.tmp = tmp
        self.pod, self.srv = f"mtpod{os.getpid()}", f"mtsrv{os.getpid()}"
        self.pod_ip, self.srv_ip = f"10.231.{n}.1", f"10.231.{n}.2"
        self.pod_ip6, self.srv_ip6 = f"fd00:231:{n}::1", f"fd00:231:{n}::2"
        self.procs = []
        self.meltemi = None
        self.created = []

    def sh(self, *cmd):
        r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, cmd))}: {r.stderr.strip()}")

    def up(self):
        veth_pod, veth_srv = f"mtp{os.getpid()}"[:15], f"mts{os.getpid()}"[:15]
        for ns in (self.pod, self.srv):
            self.sh("ip", "netns", "add", ns)
            self.created.append(ns)
            ns_run(ns, "ip", "link", "set", "lo", "up", check=True)
        self.sh("ip", "link", "add", veth_pod, "netns", self.pod, "type", "veth", "peer", "name",
                veth_srv, "netns", self.srv)
        ns_run(self.pod, "ip", "addr", "add", f"{self.pod_ip}/30", "dev", veth_pod, check=True)
        ns_run(self.srv, "ip", "addr", "add", f"{self.srv_ip}/30", "dev", veth_srv, check=True)
        ns_run(self.pod, "ip", "-6", "addr", "add", f"{self.pod_ip6}/64", "dev", veth_pod,
               "nodad", check=True)
        ns_run(self.srv, "ip", "-6", "addr", "add", f"{self.srv_ip6}/64", "dev", veth_srv,
               "nodad", check=True)
        ns_run(self.pod, "ip", "link", "set", veth_pod, "up", check=True)
        ns_run(self.srv, "ip", "link", "set", veth_srv, "up", check=True)

    def spawn(self, ns, name, *cmd):
        log = open(self.tmp / f"{name}.log", "wb")
        p = subprocess.Popen(["ip", "netns", "exec", ns, *map(str, cmd)], stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(p)
        return p

    def redis(self, ns, host, port, also=None):
        d = self.tmp / f"redis-{ns}-{port}"
        d.mkdir()
        bind = f"{host} {also}" if also else host
        self.spawn(ns, f"redis-{port}", "redis-server", "--port", port, "--bind", bind,
                   "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", d)
        try:
            wait_for(f"redis-server {host}:{port} in {ns}",
                     lambda: redis_cli(ns, host, port, "PING") == "PONG")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{tail(self.tmp / f'redis-{port}.log')}") from None

    def rules(self, *args):
        return ns_run(self.pod, IPTABLES_SCRIPT, *args, timeout=30, check=True)

    def scrape(self):
        r = ns_run(self.pod, "curl", "-fsS", f"http://{ADMIN}/stats/prometheus", check=True)
        return r.stdout

    def close(self):
        if self.meltemi is not None and self.meltemi.poll() is None:
            stop_pid(self.meltemi)
        for p in self.procs:
            if p.poll() is None:
                stop_pid(p, timeout=5)
        for ns in self.created:  # the rules and the veth pair go with the namespaces
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def lab():
    # A directory user nobody can read (pytest's tmp_path is root's, mode 0700).
    tmp = Path(tempfile.mkdtemp(prefix="meltemi-netns-"))
    os.chmod(tmp, 0o755)
    lab = Lab(tmp)
    try:
        lab.up()
        yield lab
    finally:
        lab.close()
        shutil.rmtree(tmp, ignore_errors=True)


def start_meltemi(lab, conf, capture_outbound, capture_inbound=None):
    """meltemi in the pod namespace as user nobody, configured through its variables."""
    env = {**os.environ, "MELTEMI_CAPTURE_OUTBOUND": capture_outbound, "MELTEMI_ADMIN": ADMIN}
    if capture_inbound:
        env["MELTEMI_CAPTURE_INBOUND"] = capture_inbound
    log = open(lab.tmp / "meltemi.log", "wb")
    lab.meltemi = subprocess.Popen(
        ["ip", "netns", "exec", lab.pod, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
         "--clear-groups", str(meltemi_bin()), "run", "-c", str(conf), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    log.close()
    wait_for("meltemi /ready", lambda: lab.meltemi.poll() is not None or ns_run(
        lab.pod, "curl", "-fsS", f"http://{ADMIN}/ready").returncode == 0)
    assert lab.meltemi.poll() is None, tail(lab.tmp / "meltemi.log")


def write_files(lab, files):
    conf = lab.tmp / "conf"
    conf.mkdir()
    for name, text in files.items():
        (conf / name).write_text(text)
        os.chmod(conf / name, 0o644)
    os.chmod(conf, 0o755)
    return conf


def write_conf(lab, gen_dir):
    files = {
        # The Redis service's "cluster IP" is the server's own address: with the rules, the
        # client's connection to it lands on meltemi, which injects the fault; without them
        # the same command reaches Redis directly.
        "redis.yaml": configs.service_entry("redis-single", lab.srv_ip, REDIS_PORT, REDIS_PORT,
                                            endpoint_address=lab.srv_ip),
        "redis-faults.yaml": configs.redis_get_fault("redis-single",
                                                     "redis-single.redis.svc.cluster.local"),
        "thrift.yaml": me.service_entry("thrift-hello", "thrift-hello.meta.svc.cluster.local",
                                        lab.srv_ip, THRIFT_PORT, "tcp-metaprotocol-thrift-hello",
                                        [(lab.srv_ip, THRIFT_PORT, {"version": "v1"})]),
        # Inbound: the pod's application (a redis-server on 127.0.0.1) behind port 7000.
        "sidecar.yaml": f"""\
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata:
  name: pod
  namespace: redis
spec:
  ingress:
  - port:
      number: {INGRESS_PORT}
      name: tcp-redis
      protocol: TCP
    defaultEndpoint: 127.0.0.1:{APP_PORT}
""",
    }
    return write_files(lab, files)


def test_redirected_clients_go_through_meltemi_and_cleanup_restores_direct(lab, tmp_path):
    gen = thrift_peers.generate(lab.tmp / "thrift-gen")
    subprocess.run(["chmod", "-R", "a+rX", str(lab.tmp)], check=True)
    # Server namespace: the Redis service, a Redis no listener knows, a Thrift server.
    lab.redis(lab.srv, lab.srv_ip, REDIS_PORT)
    lab.redis(lab.srv, lab.srv_ip, RAW_REDIS_PORT)
    assert redis_cli(lab.srv, lab.srv_ip, REDIS_PORT, "SET", "k", "direct-value") == "OK"
    record = lab.tmp / "thrift.record"
    lab.spawn(lab.srv, "thrift", "/usr/bin/python3", REPO / "tests/integration/peers/thrift_peers.py",
              "serve", "--gen-dir", gen, "--host", lab.srv_ip, "--port", THRIFT_PORT,
              "--name", "v1", "--record", record)
    wait_for("the Thrift server", lambda: ns_run(lab.pod, "bash", "-c",
             f"exec 3<>/dev/tcp/{lab.srv_ip}/{THRIFT_PORT}").returncode == 0)
    # Pod namespace: the application behind the Sidecar ingress, and one no listener knows.
    lab.redis(lab.pod, "127.0.0.1", APP_PORT)
    lab.redis(lab.pod, lab.pod_ip, APP_RAW_PORT)
    assert redis_cli(lab.pod, "127.0.0.1", APP_PORT, "SET", "who", "pod-app") == "OK"

    conf = write_conf(lab, gen)
    start_meltemi(lab, conf, f"127.0.0.1:{OUT_PORT}", f"0.0.0.0:{IN_PORT}")

    # Before the rules: the client reaches Redis itself (no fault), meltemi sees nothing.
    assert redis_cli(lab.pod, lab.srv_ip, REDIS_PORT, "GET", "k") == "direct-value"
    before = lab.scrape()
    assert metric(before, "meltemi_downstream_connections_total",
                  f'listener="{lab.srv_ip}:{REDIS_PORT}"') == 0

    lab.rules("--apply", "--proxy-uid", NOBODY, "--include-inbound-ports",
              f"{INGRESS_PORT},{APP_RAW_PORT}")
    try:
        # Outbound, a known service: the RedisService fault answers GET; SET still reaches
        # Redis through meltemi.
        got = redis_cli(lab.pod, lab.srv_ip, REDIS_PORT, "GET", "k")
        assert got is not None and "fault" in got.lower(), got
        assert redis_cli(lab.pod, lab.srv_ip, REDIS_PORT, "SET", "k2", "via-meltemi") == "OK"
        # Outbound Thrift: the MetaProtocol listener of the original destination serves it.
        r = ns_run(lab.pod, "/usr/bin/python3", REPO / "tests/integration/peers/thrift_peers.py",
                   "call", "--gen-dir", gen, "--host", lab.srv_ip, "--port", THRIFT_PORT,
                   "-n", "3", timeout=30)
        assert '"v1": 3' in r.stdout, r.stdout + r.stderr
        # Outbound, a destination no listener claims: relayed as plain TCP.
        assert redis_cli(lab.pod, lab.srv_ip, RAW_REDIS_PORT, "PING") == "PONG"
        # Straight to the capture port (not redirected): refused, not relayed into itself.
        assert redis_cli(lab.pod, "127.0.0.1", OUT_PORT, "PING") is None
        # Inbound, from the server namespace to the pod: the Sidecar ingress listener serves
        # port 7000 (the pod's application answers), a port without one passes through.
        assert redis_cli(lab.srv, lab.pod_ip, INGRESS_PORT, "GET", "who") == "pod-app"
        assert redis_cli(lab.srv, lab.pod_ip, APP_RAW_PORT, "PING") == "PONG"

        m = lab.scrape()
        redis_l = f'listener="{lab.srv_ip}:{REDIS_PORT}"'
        assert metric(m, "meltemi_downstream_connections_total", redis_l) == 2, m
        assert metric(m, "meltemi_requests_total", redis_l) >= 2, m
        assert metric(m, "meltemi_requests_total",
                      f'listener="{lab.srv_ip}:{THRIFT_PORT}"') >= 3, m
        assert metric(m, "meltemi_downstream_connections_total",
                      'listener="PassthroughCluster"') == 1, m
        assert metric(m, "meltemi_upstream_connections_total",
                      'cluster="PassthroughCluster"') == 1, m
        assert metric(m, "meltemi_protocol_errors_total", 'listener="outbound_capture"') == 1, m
        assert metric(m, "meltemi_downstream_connections_total",
                      f'listener="0.0.0.0:{INGRESS_PORT}"') == 1, m
        assert metric(m, "meltemi_downstream_connections_total",
                      'listener="InboundPassthroughCluster"') == 1, m
        assert redis_cli(lab.srv, lab.srv_ip, REDIS_PORT, "GET", "k2") == "via-meltemi"
    finally:
        lab.rules("--cleanup")

    # After --cleanup: direct again. No fault, and meltemi's counters stay where they were.
    assert redis_cli(lab.pod, lab.srv_ip, REDIS_PORT, "GET", "k") == "direct-value"
    assert redis_cli(lab.pod, lab.srv_ip, RAW_REDIS_PORT, "PING") == "PONG"
    after = lab.scrape()
    assert metric(after, "meltemi_downstream_connections_total",
                  f'listener="{lab.srv_ip}:{REDIS_PORT}"') == 2, after
    assert metric(after, "meltemi_downstream_connections_total",
                  'listener="PassthroughCluster"') == 1, after
    assert ns_run(lab.pod, "iptables", "-t", "nat", "-S").stdout.count("MELTEMI") == 0
    assert stop_pid(lab.meltemi) == 0, tail(lab.tmp / "meltemi.log")


def test_ipv6_connections_are_matched_by_their_ip6t_original_destination(lab):
    # Redis on the server's IPv4 and IPv6 addresses; a listener for the IPv6 one only.
    lab.redis(lab.srv, lab.srv_ip, REDIS_PORT, also=lab.srv_ip6)
    assert redis_cli(lab.srv, lab.srv_ip6, REDIS_PORT, "SET", "k", "six") == "OK"
    conf = write_files(lab, {
        "redis6.yaml": configs.service_entry("redis-six", lab.srv_ip6, REDIS_PORT, REDIS_PORT,
                                             endpoint_address=lab.srv_ip6),
        "faults.yaml": configs.redis_get_fault("redis-six", "redis-six.redis.svc.cluster.local"),
    })
    start_meltemi(lab, conf, f"127.0.0.1:{OUT_PORT},[::1]:{OUT_PORT}")
    lab.rules("--apply", "--ipv6", "--proxy-uid", NOBODY)
    try:
        got = redis_cli(lab.pod, lab.srv_ip6, REDIS_PORT, "GET", "k")
        assert got is not None and "fault" in got.lower(), got
        # The same port over IPv4 has no listener: it passes through, to the real value.
        assert redis_cli(lab.pod, lab.srv_ip, REDIS_PORT, "GET", "k") == "six"
        m = lab.scrape()
        assert metric(m, "meltemi_downstream_connections_total",
                      f'listener="[{lab.srv_ip6}]:{REDIS_PORT}"') == 1, m
        assert metric(m, "meltemi_downstream_connections_total",
                      'listener="PassthroughCluster"') == 1, m
    finally:
        lab.rules("--cleanup", "--ipv6")
    assert redis_cli(lab.pod, lab.srv_ip6, REDIS_PORT, "GET", "k") == "six"
    assert ns_run(lab.pod, "ip6tables", "-t", "nat", "-S").stdout.count("MELTEMI") == 0
    assert stop_pid(lab.meltemi) == 0, tail(lab.tmp / "meltemi.log")
