"""
test_connection_pool.py - DestinationRule connectionPool fields the upstream shell enforces
(issue 12, "Resilience"), one test per field, against real peers: redis-server (its CLIENT
LIST shows which upstream connections meltemi holds), hessian.js Dubbo providers with the
dubbo2.js consumer, and an echo server behind a plain TCP port. Effects are observed, never
timed: connection ids changing, kernel keepalive timers (ss -o), the cluster's counters.
"""

import re
import time
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

import configs
from harness import VIP, EchoServer, free_port, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import meta_env as me  # noqa: E402


def rule(host, pool, name="pool", namespace="redis"):
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
{pool}"""


def counter(m, name):
    _, body = m.http_get("/stats/prometheus")
    return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", body, re.M))


def configs_client(env):
    """A redis-py client of meltemi's listener."""
    return redis.Redis(host=env.host, port=env.port, socket_timeout=10)


def meltemi_ids(env, direct):
    """CLIENT LIST ids of the upstream connections meltemi holds (all but ours)."""
    me_id = direct.client_id()
    return {c["id"] for c in direct.client_list() if c["id"] != str(me_id)
            and c["id"] != me_id}


def redis_env(blog_env, pool):
    return blog_env(files={"redis-single.yaml": configs.STEP1,
                           "dr.yaml": rule(configs.HOST, pool)})


# ---- tcp.tcpKeepalive ----------------------------------------------------------------------

def test_tcp_keepalive_is_set_on_upstream_sockets(blog_env):
    env = redis_env(blog_env, "      tcp: {tcpKeepalive: {time: 37s, interval: 11s, probes: 4}}\n")
    c = configs_client(env)
    assert c.set("k", "v") and c.get("k") == b"v"
    # ss -o shows the keepalive timer of meltemi's socket to redis-server: it counts down
    # from TCP_KEEPIDLE (37 s), not from the kernel's default of 2 hours.
    out = subprocess.run(["ss", "-tnoH", "state", "established", f"( dport = :{env.redis.port} )"],
                         capture_output=True, text=True, check=True).stdout
    timers = re.findall(r"timer:\(keepalive,(?:(\d+)min)?(\d+(?:\.\d+)?)(m?s)", out)
    assert timers, f"no keepalive timer on meltemi's upstream sockets:\n{out}"
    for mins, val, unit in timers:
        secs = int(mins or 0) * 60 + float(val) / (1000 if unit == "ms" else 1)
        assert secs <= 37, out
    # the downstream socket (client -> meltemi) is left as the kernel makes it
    down = subprocess.run(["ss", "-tnoH", "state", "established", f"( sport = :{env.port} )"],
                          capture_output=True, text=True, check=True).stdout
    assert down.strip() and "keepalive" not in down, down


# ---- tcp.maxConnectionDuration -------------------------------------------------------------

def test_max_connection_duration_replaces_redis_connections(blog_env):
    env = redis_env(blog_env, "      tcp: {maxConnectionDuration: 1s}\n")
    direct = env.redis.client()
    c = configs_client(env)
    assert c.set("n", 0)
    first = meltemi_ids(env, direct)
    assert first
    seen = set()

    def replaced():
        # every command in between is answered: a drained connection finishes its replies
        assert c.incr("n") > 0
        seen.update(meltemi_ids(env, direct))
        return not (meltemi_ids(env, direct) & first)
    wait_until(replaced, 30, "meltemi's upstream connections replaced after 1 s")
    assert seen - first, "a new upstream connection took over"
    assert counter(env.meltemi, "meltemi_upstream_connection_max_duration_total") >= 1
    assert int(direct.get("n")) == int(c.get("n"))


# ---- tcp.idleTimeout -----------------------------------------------------------------------

def test_idle_timeout_closes_idle_redis_connections(blog_env):
    env = redis_env(blog_env, "      tcp: {idleTimeout: 1s}\n")
    direct = env.redis.client()
    c = configs_client(env)
    assert c.set("k", "v")
    before = meltemi_ids(env, direct)
    assert before
    wait_until(lambda: not meltemi_ids(env, direct), 30,
               "meltemi closes its idle upstream connection")
    assert counter(env.meltemi, "meltemi_upstream_connection_idle_timeouts_total") >= 1
    # the client's own connection to meltemi stays; its next command reconnects upstream
    assert c.get("k") == b"v"
    assert meltemi_ids(env, direct) - before


# ---- http.maxRequestsPerConnection (RPC) ---------------------------------------------------

DUBBO_HOST = "dubbo-hello.meta.svc.cluster.local"
IFACE = "org.apache.dubbo.samples.basic.api.DemoService"


@pytest.fixture(scope="module")
def node_peers():
    reason = me.install_node_peers()
    if reason:
        pytest.skip(reason)


def test_max_requests_per_connection_replaces_dubbo_connections(tmp_path, node_peers,
                                                                config_dir, meltemi_factory):
    p = me.DubboProvider(tmp_path / "peers", "p0", free_port())
    consumer = None
    try:
        p.start()
        port = free_port(VIP)
        files = {
            "service-entry.yaml": me.service_entry(
                "dubbo-hello", DUBBO_HOST, VIP, port, "tcp-metaprotocol-dubbo-hello",
                [("127.0.0.1", p.port, {"version": "v1"})]),
            "dr.yaml": rule(DUBBO_HOST, "      http: {maxRequestsPerConnection: 5}\n",
                            namespace="meta"),
        }
        m = meltemi_factory(config_dir(files))
        consumer = me.DubboConsumer(tmp_path, f"{VIP}:{port}")
        res = consumer.call(IFACE, "sayHello", n=40)["results"]
        assert all(r["ok"] for r in res), res
        # 40 two-way calls, 5 per connection: every 5th drains its connection
        assert counter(m, "meltemi_upstream_connection_max_requests_total") >= 8
        assert counter(m, "meltemi_upstream_connections_total") >= 8
        wait_until(lambda: counter(m, "meltemi_upstream_connections_active") <= 1, 30,
                   "drained connections close once their replies are in")
    finally:
        if consumer:
            consumer.close()
        p.stop()


# ---- tcp.maxConnections on plain TCP -------------------------------------------------------

def test_max_connections_refuses_tcp_clients_over_the_bound(config_dir, meltemi_factory):
    echo = EchoServer()
    socks = []
    try:
        port = free_port(VIP)
        host = "echo.default.svc.cluster.local"
        se = configs.service_entry("echo", VIP, port, echo.port, port_name="tcp-other",
                                   host=host, namespace="default")
        m = meltemi_factory(config_dir({
            "echo.yaml": se,
            "dr.yaml": rule(host, "      tcp: {maxConnections: 2}\n", namespace="default")}))

        def relay_works(s):
            s.settimeout(10)
            got = b""
            while len(got) < len(EchoServer.BANNER):
                chunk = s.recv(64)
                if not chunk:
                    return False
                got += chunk
            s.sendall(b"ping\n")
            return s.recv(64) == b"ping\n"

        for _ in range(2):
            socks.append(socket.create_connection((VIP, port), timeout=10))
            assert relay_works(socks[-1])
        third = socket.create_connection((VIP, port), timeout=10)
        third.settimeout(10)
        try:
            assert third.recv(64) == b"", "the third client is refused (closed)"
        except ConnectionResetError:
            pass
        third.close()
        assert counter(m, "meltemi_upstream_connection_overflow_total") == 1
        assert echo.accepted == 2
        socks.pop().close()
        # a slot is free once the closed relay's upstream connection is gone

        def fourth_works():
            s = socket.create_connection((VIP, port), timeout=10)
            ok = relay_works(s)
            if ok:
                socks.append(s)
            else:
                s.close()
            return ok
        wait_until(fourth_works, 30, "a new client is relayed once one has left")
    finally:
        for s in socks:
            s.close()
        echo.close()


# ---- http.http1MaxPendingRequests (RPC) ----------------------------------------------------

class Blackhole:
    """A listening socket whose accept queue is full (backlog 0, one connection already in
    it, never accepted): the kernel drops further SYNs, so a connect to it stays in SYN_SENT
    until the connecting side gives up. The requests meltemi queues meanwhile are pending."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(0)
        self.port = self.srv.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def close(self):
        self.filler.close()
        self.srv.close()


def istio_requests(m, flag):
    _, body = m.http_get("/stats/prometheus")
    return sum(float(v) for v in re.findall(
        rf'^istio_requests_total\{{[^}}]*response_flags="{flag}"[^}}]*\}} (\S+)$', body, re.M))


def test_pending_requests_over_the_bound_are_answered_natively_with_uo(tmp_path, node_peers,
                                                                       config_dir,
                                                                       meltemi_factory):
    hole = Blackhole()
    consumer = None
    try:
        port = free_port(VIP)
        files = {
            "service-entry.yaml": me.service_entry(
                "dubbo-hello", DUBBO_HOST, VIP, port, "tcp-metaprotocol-dubbo-hello",
                [("127.0.0.1", hole.port, {"version": "v1"})]),
            "dr.yaml": rule(DUBBO_HOST, "      tcp: {connectTimeout: 2s}\n"
                            "      http: {http1MaxPendingRequests: 2}\n", namespace="meta"),
        }
        m = meltemi_factory(config_dir(files))
        consumer = me.DubboConsumer(tmp_path, f"{VIP}:{port}", timeout=20)
        # 6 calls at once on one client connection: one upstream connection, stuck connecting
        res = consumer.call(IFACE, "sayHello", n=6, concurrency=6)["results"]
        assert not any(r["ok"] for r in res), res
        over = [r for r in res if "http1MaxPendingRequests" in r["error"]]
        assert len(over) == 4, res  # the 2 pending ones fail later: the connect times out
        assert counter(m, "meltemi_upstream_request_pending_overflow_total") == 4
        assert istio_requests(m, "UO") == 4
        assert istio_requests(m, "RL") == 0
    finally:
        if consumer:
            consumer.close()
        hole.close()


# ---- tcp.maxConnections on MetaProtocol ----------------------------------------------------

def test_max_connections_bounds_dubbo_connections_of_the_cluster(tmp_path, node_peers,
                                                                 config_dir, meltemi_factory):
    peers = [me.DubboProvider(tmp_path / "peers", f"p{i}", free_port()) for i in range(2)]
    consumers = []
    try:
        for p in peers:
            p.start()
        port = free_port(VIP)
        files = {
            "service-entry.yaml": me.service_entry(
                "dubbo-hello", DUBBO_HOST, VIP, port, "tcp-metaprotocol-dubbo-hello",
                [("127.0.0.1", p.port, {"version": "v1"}) for p in peers]),
            "dr.yaml": rule(DUBBO_HOST, "      tcp: {maxConnections: 1}\n"
                            "    loadBalancer: {simple: ROUND_ROBIN}\n", namespace="meta"),
        }
        m = meltemi_factory(config_dir(files))
        consumers = [me.DubboConsumer(tmp_path, f"{VIP}:{port}") for _ in range(3)]
        res = [r for c in consumers for r in c.call(IFACE, "sayHello", n=10)["results"]]
        ok = [r for r in res if r["ok"]]
        refused = [r for r in res if not r["ok"]]
        # one connection for the whole cluster: one provider serves, the other is never
        # connected, and calls routed to it get the codec's over-limit error (flag UO)
        assert ok and refused, res
        assert len({r["value"]["server"] for r in ok}) == 1, ok
        assert all("connectionPool.tcp.maxConnections" in r["error"] for r in refused), refused
        assert counter(m, "meltemi_upstream_connection_overflow_total") == len(refused)
        assert istio_requests(m, "UO") == len(refused)
        out = "".join(subprocess.run(
            ["ss", "-tnH", "state", "established", f"( dport = :{p.port} )"],
            capture_output=True, text=True, check=True).stdout for p in peers)
        assert len(out.strip().splitlines()) == 1, out
    finally:
        for c in consumers:
            c.close()
        for p in peers:
            p.stop()


# ---- tcp.maxConnectionDuration and tcp.idleTimeout on plain TCP ----------------------------

def tcp_relay_env(config_dir, meltemi_factory, echo, pool):
    port = free_port(VIP)
    host = "echo.default.svc.cluster.local"
    se = configs.service_entry("echo", VIP, port, echo.port, port_name="tcp-other",
                               host=host, namespace="default")
    m = meltemi_factory(config_dir({"echo.yaml": se,
                                    "dr.yaml": rule(host, pool, namespace="default")}))
    return m, port


def open_relay(port):
    s = socket.create_connection((VIP, port), timeout=10)
    got = b""
    while len(got) < len(EchoServer.BANNER):
        chunk = s.recv(64)
        assert chunk, "the relay closed before the banner"
        got += chunk
    return s


def closed_by_peer(s):
    """True once the relay is closed (EOF or reset) within the socket's timeout."""
    try:
        return s.recv(64) == b""
    except ConnectionResetError:
        return True


def test_idle_timeout_closes_an_idle_tcp_relay_not_a_busy_one(config_dir, meltemi_factory):
    echo = EchoServer()
    try:
        m, port = tcp_relay_env(config_dir, meltemi_factory, echo, "      tcp: {idleTimeout: 1s}\n")
        busy, idle = open_relay(port), open_relay(port)
        # the busy relay echoes a line every 200 ms for 3 s: never idle for 1 s, never closed
        for i in range(15):
            busy.sendall(b"x%d\n" % i)
            assert busy.recv(64) == b"x%d\n" % i
            time.sleep(0.2)
        idle.settimeout(30)
        assert closed_by_peer(idle), "the idle relay is closed"
        assert counter(m, "meltemi_upstream_connection_idle_timeouts_total") == 1
        busy.settimeout(30)
        assert closed_by_peer(busy), "and the busy one once it goes quiet"
        assert counter(m, "meltemi_upstream_connection_idle_timeouts_total") == 2
        busy.close()
        idle.close()
    finally:
        echo.close()


def test_max_connection_duration_closes_a_busy_tcp_relay(config_dir, meltemi_factory):
    echo = EchoServer()
    try:
        m, port = tcp_relay_env(config_dir, meltemi_factory, echo,
                                "      tcp: {maxConnectionDuration: 1s}\n")
        s = open_relay(port)
        echoed, closed = 0, False
        for i in range(300):  # bounded: 300 lines, 50 ms apart, at most 15 s
            try:
                s.sendall(b"y%d\n" % i)
                got = s.recv(64)
            except (ConnectionResetError, BrokenPipeError):
                got = b""
            if not got:
                closed = True
                break
            assert got == b"y%d\n" % i
            echoed += 1
            time.sleep(0.05)
        assert closed, "the relay outlives maxConnectionDuration although it is busy"
        assert echoed >= 1
        assert counter(m, "meltemi_upstream_connection_max_duration_total") == 1
        s.close()
        # a new client gets a new relay
        again = open_relay(port)
        again.sendall(b"z\n")
        assert again.recv(64) == b"z\n"
        again.close()
    finally:
        echo.close()


# ---- http.maxRequestsPerConnection and http.http1MaxPendingRequests on Redis ---------------

def test_max_requests_per_connection_replaces_redis_connections(blog_env):
    env = redis_env(blog_env, "      http: {maxRequestsPerConnection: 5}\n")
    direct = env.redis.client()
    c = configs_client(env)
    assert c.set("n", 0)
    seen = set()
    for i in range(1, 21):
        assert c.incr("n") == i
        seen |= meltemi_ids(env, direct)
    # 21 commands, 5 per connection: at least four connections carried them
    assert len(seen) >= 4, seen
    assert counter(env.meltemi, "meltemi_upstream_connection_max_requests_total") >= 4
    # pipelines crossing the bound several times: every command runs, in the order sent (INCR's
    # values say so), and every reply arrives, in order, on the client's connection
    n = 20
    for _ in range(5):
        p = c.pipeline(transaction=False)
        for _ in range(30):
            p.incr("n")
        assert p.execute() == list(range(n + 1, n + 31))
        n += 30
    assert int(direct.get("n")) == n
    # the drained connections close once their replies are in: a handful remain, not all
    wait_until(lambda: len(meltemi_ids(env, direct)) <= 2, 30,
               "drained upstream connections close once empty")


def redis_blackhole_env(config_dir, meltemi_factory, hole, pool):
    port = free_port(VIP)
    files = {"redis-single.yaml": configs.STEP1,
             "service-entry.yaml": configs.service_entry("redis-single", VIP, port, hole.port),
             "dr.yaml": rule(configs.HOST, pool)}
    return meltemi_factory(config_dir(files)), port


def test_redis_pending_requests_over_the_bound_are_answered_with_uo(config_dir,
                                                                   meltemi_factory):
    hole = Blackhole()
    try:
        m, port = redis_blackhole_env(config_dir, meltemi_factory, hole,
                                      "      tcp: {connectTimeout: 2s}\n"
                                      "      http: {http1MaxPendingRequests: 2}\n")
        c = redis.Redis(host=VIP, port=port, socket_timeout=20)
        p = c.pipeline(transaction=False)
        for i in range(6):
            p.get(f"k{i}")
        res = p.execute(raise_on_error=False)
        assert all(isinstance(r, redis.ResponseError) for r in res), res
        over = [r for r in res if "http1MaxPendingRequests" in str(r)]
        assert len(over) == 4, res  # the 2 pending ones fail later: the connect times out
        assert counter(m, "meltemi_upstream_request_pending_overflow_total") == 4
        assert istio_requests(m, "UO") == 4
        c.close()
    finally:
        hole.close()
