"""
Kafka and ZooKeeper ports (tcp-kafka-*, tcp-zookeeper-*) are relayed byte for byte while their
requests are decoded for metrics (meltemi_kafka_*, meltemi_zookeeper_* on /metrics).

Kafka: the python3-kafka client against kafka_fixture.KafkaBroker (ApiVersions, Metadata,
Produce, Fetch), then the request bytes that client sent, replayed in odd-sized pieces.
ZooKeeper: Debian's zookeeper server (the Java server, on a zoo.cfg written here) and the
python3-kazoo client.
"""

import os
import random
import shutil
import socket
import struct
import subprocess
import time

import pytest

import configs
from harness import VIP, free_port, stop_pid, tail, wait_until
from kafka_fixture import KafkaBroker
from prom import Metrics

ZK_JAR = "/usr/share/java/zookeeper.jar"


def metrics(m):
    status, text = m.http_get("/metrics")
    assert status == 200, text
    return Metrics(text)


def value(ms, name, **labels):
    return ms.sum(name, **labels)


def promtool_remarks(m, prefix):
    """promtool check metrics on /metrics: the remarks about families starting with prefix,
    but for the base-unit remark every *_duration_milliseconds family of meltemi draws (the
    unit Istio's histogram and meltemi_redis_command_* use)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return []
    _, text = m.http_get("/metrics")
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    return [ln for ln in (p.stdout + p.stderr).splitlines()
            if ln.startswith(prefix) and 'instead of "milliseconds"' not in ln]


def entry(name, port, endpoint_port, port_name):
    return configs.service_entry(name, VIP, port, endpoint_port, port_name=port_name,
                                 host=f"{name}.default.svc.cluster.local", namespace="default")


# ---- Kafka -------------------------------------------------------------------------------------

@pytest.fixture
def kafka_env(config_dir, meltemi_factory):
    broker = KafkaBroker()
    port = free_port(VIP)
    broker.advertised = (VIP, port)  # clients reconnect to the broker Metadata names: meltemi
    m = meltemi_factory(config_dir({"kafka.yaml": entry("kafka", port, broker.port,
                                                        "tcp-kafka-broker")}))
    yield broker, port, m
    broker.close()


def test_kafka_client_through_meltemi_counts_requests(kafka_env):
    kafka = pytest.importorskip("kafka")
    from kafka.structs import TopicPartition
    broker, port, m = kafka_env
    producer = kafka.KafkaProducer(bootstrap_servers=f"{VIP}:{port}", acks=1, retries=0,
                                   request_timeout_ms=10000, max_block_ms=10000)
    try:
        for i in range(5):
            producer.send("events", f"message {i}".encode()).get(timeout=10)
    finally:
        producer.close(timeout=5)
    # A topic the broker does not have: Metadata answers UNKNOWN_TOPIC_OR_PARTITION until
    # the producer gives up waiting (max_block_ms).
    producer = kafka.KafkaProducer(bootstrap_servers=f"{VIP}:{port}", max_block_ms=1500)
    try:
        with pytest.raises(kafka.errors.KafkaTimeoutError):
            producer.send("missing-topic", b"x")
    finally:
        producer.close(timeout=5)
    consumer = kafka.KafkaConsumer(bootstrap_servers=f"{VIP}:{port}", consumer_timeout_ms=5000,
                                   request_timeout_ms=11000, fetch_max_wait_ms=100)
    try:
        tp = TopicPartition("events", 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got = []
        deadline = time.time() + 15
        while len(got) < 5 and time.time() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                got += [r.value for r in recs]
        assert got == [f"message {i}".encode() for i in range(5)]
    finally:
        consumer.close()

    ms = metrics(m)
    lst = f"{VIP}:{port}"
    for api in ("ApiVersions", "Metadata", "Produce", "Fetch"):
        assert value(ms, "meltemi_kafka_request_total", listener=lst, api=api) >= 1, api
        assert value(ms, "meltemi_kafka_response_total", listener=lst, api=api) >= 1, api
        assert value(ms, "meltemi_kafka_request_bytes_total", listener=lst, api=api) > 0, api
        assert value(ms, "meltemi_kafka_response_bytes_total", listener=lst, api=api) > 0, api
        assert value(ms, "meltemi_kafka_request_duration_milliseconds_count",
                     listener=lst, api=api) >= 1, api
    assert value(ms, "meltemi_kafka_request_total", listener=lst, api="Produce") >= 5
    assert value(ms, "meltemi_kafka_request_version_total", listener=lst,
                 api_version="Produce/2") >= 5
    # The missing topic: Metadata answers UNKNOWN_TOPIC_OR_PARTITION (3).
    assert value(ms, "meltemi_kafka_request_errors_total", listener=lst, api="Metadata") >= 1
    assert value(ms, "meltemi_kafka_response_error_code_total", listener=lst, code="3") >= 1
    assert value(ms, "meltemi_kafka_request_errors_total", listener=lst, api="ApiVersions") == 0
    assert value(ms, "meltemi_kafka_decoder_total", listener=lst, event="stopped") == 0
    # Istio's TCP series still count the connections (the port is plain TCP to them).
    assert value(ms, "istio_tcp_connections_opened_total") >= 2
    assert promtool_remarks(m, "meltemi_kafka") == []


def recorded_api_keys(frames):
    return [struct.unpack_from(">h", f, 4)[0] for f in frames]


def test_kafka_recorded_client_bytes_replayed_in_pieces(kafka_env):
    """The frames the real client sent, replayed over one connection in random-sized writes:
    the broker receives exactly those bytes and every request is counted once."""
    kafka = pytest.importorskip("kafka")
    broker, port, m = kafka_env
    producer = kafka.KafkaProducer(bootstrap_servers=f"{VIP}:{port}", acks=1, retries=0,
                                   max_block_ms=10000)
    for i in range(3):
        producer.send("events", f"recorded {i}".encode()).get(timeout=10)
    producer.close(timeout=5)
    frames = list(broker.recorded)
    assert frames, "the fixture recorded nothing"
    blob = b"".join(frames)
    keys = recorded_api_keys(frames)
    before = metrics(m)
    lst = f"{VIP}:{port}"
    counts_before = {k: value(before, "meltemi_kafka_request_total", listener=lst, api=name)
                     for k, name in ((18, "ApiVersions"), (3, "Metadata"), (0, "Produce"))}
    broker.received.clear()
    rng = random.Random(15)
    with socket.create_connection((VIP, port), timeout=10) as s:
        pos = 0
        while pos < len(blob):
            n = rng.randint(1, 7)
            s.sendall(blob[pos:pos + n])
            pos += n
        wait_until(lambda: len(b"".join(broker.received)) >= len(blob), 10,
                   "the broker receiving the replay")
        assert b"".join(broker.received) == blob
    after = metrics(m)
    for k, name in ((18, "ApiVersions"), (3, "Metadata"), (0, "Produce")):
        got = value(after, "meltemi_kafka_request_total", listener=lst, api=name)
        assert got - counts_before[k] == keys.count(k), name


def test_kafka_garbage_is_relayed_and_decoding_stops(kafka_env):
    broker, port, m = kafka_env
    junk = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    broker.received.clear()
    with socket.create_connection((VIP, port), timeout=10) as s:
        s.sendall(junk)
        wait_until(lambda: b"".join(broker.received) == junk, 10, "the junk reaching the broker")
    lst = f"{VIP}:{port}"
    wait_until(lambda: value(metrics(m), "meltemi_kafka_decoder_total", listener=lst,
                             event="stopped") == 1, 5, "decoder stopped counted")


# ---- ZooKeeper ---------------------------------------------------------------------------------

class ZooKeeperServer:
    """Debian's ZooKeeper server, standalone, on a loopback port, data in workdir."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.port = free_port()
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.cfg = workdir / "zoo.cfg"
        self.cfg.write_text(
            "tickTime=2000\n"
            f"dataDir={workdir / 'data'}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n"
            "maxClientCnxns=0\n")
        self.log = workdir / "zookeeper.log"
        self.proc = None

    def start(self, timeout=40):
        java = shutil.which("java")
        if not java or not os.path.exists(ZK_JAR):
            pytest.skip("Debian's zookeeper package is not installed (tools/install-deps.sh)")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [java, "-Xmx256m", "-cp", f"{ZK_JAR}:/etc/zookeeper/conf",
                 "org.apache.zookeeper.server.ZooKeeperServerMain", str(self.cfg)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def up():
            assert self.proc.poll() is None, tail(self.log)
            # Serving, not only listening: "srvr" (in the default 4lw whitelist) answers
            # "This ZooKeeper instance is not currently serving requests" until it is.
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"srvr")
                    s.settimeout(2)
                    out = b""
                    while chunk := s.recv(4096):
                        out += chunk
                    return b"Mode:" in out
            except OSError:
                return False
        wait_until(up, timeout, f"zookeeper on {self.port}", interval=0.2)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            stop_pid(self.proc, timeout=15)


@pytest.fixture
def zk_env(tmp_path, config_dir, meltemi_factory):
    pytest.importorskip("kazoo")
    zk = ZooKeeperServer(tmp_path / "zk").start()
    port = free_port(VIP)
    m = meltemi_factory(config_dir({"zk.yaml": entry("zookeeper", port, zk.port,
                                                     "tcp-zookeeper-client")}))
    yield zk, port, m
    zk.stop()


def test_zookeeper_kazoo_operations_watches_errors(zk_env):
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError, NodeExistsError
    zk, port, m = zk_env
    client = KazooClient(hosts=f"{VIP}:{port}", timeout=10)
    client.start(timeout=20)
    fired = []
    try:
        client.create("/meltemi", b"v1")
        with pytest.raises(NodeExistsError):
            client.create("/meltemi", b"again")
        assert client.exists("/meltemi", watch=lambda ev: fired.append(ev.type)) is not None
        data, _ = client.get("/meltemi")
        assert data == b"v1"
        client.set("/meltemi", b"v2")  # fires the exists watch: a watch event, xid -1
        client.create("/meltemi/child", b"")
        assert client.get_children("/meltemi") == ["child"]
        with pytest.raises(NoNodeError):
            client.get("/nowhere")
        tx = client.transaction()
        tx.create("/meltemi/t1", b"")
        tx.delete("/meltemi/t1")
        tx.commit()
        client.delete("/meltemi", recursive=True)
        wait_until(lambda: fired, 10, "the exists watch firing")
    finally:
        client.stop()
        client.close()

    lst = f"{VIP}:{port}"

    def ops(ms, op):
        return value(ms, "meltemi_zookeeper_request_total", listener=lst, opcode=op)

    def settled():
        ms = metrics(m)
        return ops(ms, "close") >= 1 and value(
            ms, "meltemi_zookeeper_request_duration_milliseconds_count", listener=lst,
            opcode="close") >= 1
    wait_until(settled, 10, "the closeSession reply counted")
    ms = metrics(m)
    # One session (kazoo reconnects only if the server dropped it; every handshake is timed).
    assert ops(ms, "connect") >= 1
    assert value(ms, "meltemi_zookeeper_request_duration_milliseconds_count", listener=lst,
                 opcode="connect") == ops(ms, "connect")
    assert ops(ms, "create") + ops(ms, "create2") >= 3
    for op in ("exists", "getData", "setData", "getChildren2", "delete", "multi"):
        assert ops(ms, op) + (ops(ms, "getChildren") if op == "getChildren2" else 0) >= 1, op
    # NodeExists (-110) on the second create, NoNode (-101) on /nowhere
    create_errors = sum(value(ms, "meltemi_zookeeper_request_errors_total", listener=lst, opcode=o)
                        for o in ("create", "create2"))
    assert create_errors >= 1
    assert value(ms, "meltemi_zookeeper_request_errors_total", listener=lst, opcode="getData") >= 1
    assert value(ms, "meltemi_zookeeper_reply_error_code_total", listener=lst, code="-110") >= 1
    assert value(ms, "meltemi_zookeeper_reply_error_code_total", listener=lst, code="-101") >= 1
    assert value(ms, "meltemi_zookeeper_watches_set_total", listener=lst, opcode="exists") >= 1
    assert value(ms, "meltemi_zookeeper_watch_events_total", listener=lst,
                 type="NodeDataChanged") >= 1
    assert value(ms, "meltemi_zookeeper_request_errors_total", listener=lst, opcode="setData") == 0
    assert value(ms, "meltemi_zookeeper_decoder_total", listener=lst, event="stopped") == 0
    assert value(ms, "meltemi_zookeeper_request_bytes_total", listener=lst, opcode="setData") > 0
    assert value(ms, "meltemi_zookeeper_response_bytes_total", listener=lst, opcode="getData") > 0
    assert promtool_remarks(m, "meltemi_zookeeper") == []


def test_zookeeper_four_letter_word_relayed_and_decoding_stops(zk_env):
    zk, port, m = zk_env
    # "srvr" is in ZooKeeper's default 4lw whitelist: not a length-prefixed frame at all.
    with socket.create_connection((VIP, port), timeout=10) as s:
        s.sendall(b"srvr")
        s.settimeout(10)
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
    assert b"Zookeeper version" in out
    lst = f"{VIP}:{port}"
    wait_until(lambda: value(metrics(m), "meltemi_zookeeper_decoder_total", listener=lst,
                             event="stopped") == 1, 5, "decoder stopped counted")
