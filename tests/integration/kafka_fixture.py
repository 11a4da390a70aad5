"""
kafka_fixture.py - a minimal Kafka broker for the Kafka metrics tests (Kafka itself is not
packaged in Debian): one node, topics created on first use with one partition, answering
ApiVersions v0-2, Metadata v0-1, Produce v0-2 and Fetch v0-3 from memory. It records every
request frame it receives (bytes as read) so that a test can replay what a real client sent.

Topics named "missing*" do not exist: Metadata answers them UNKNOWN_TOPIC_OR_PARTITION (3),
Produce and Fetch answer that error for their partitions.
"""

import socket
import struct
import threading

UNKNOWN_TOPIC = 3
SUPPORTED = {0: (0, 2), 1: (0, 3), 3: (0, 1), 18: (0, 2)}  # api key: (min, max)


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s.decode()

    def bytes_(self):
        n = self.take(">i")
        if n < 0:
            return None
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b


def string(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def array(items):
    return struct.pack(">i", len(items)) + b"".join(items)


def renumber(message_set, first):
    """Message sets v0/v1 (uncompressed): rewrite each entry's offset from `first` on."""
    out, pos, n = b"", 0, first
    while pos + 12 <= len(message_set):
        size = struct.unpack_from(">i", message_set, pos + 8)[0]
        entry = message_set[pos + 8:pos + 12 + size]
        out += struct.pack(">q", n) + entry
        n += 1
        pos += 12 + size
    return out, n - first


class KafkaBroker:
    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.advertised = (host, self.port)  # what Metadata names: set to meltemi's listener
        self.logs = {}  # (topic, partition) -> [(offset, entry bytes)]
        self.recorded = []  # every request frame, length prefix included, in arrival order
        self.received = []  # every chunk as read (to compare with what a client sent)
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self):
        self.closed = True
        self.sock.close()

    def _serve(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn):
        buf = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                with self.lock:
                    self.received.append(chunk)
                buf += chunk
                while len(buf) >= 4:
                    n = struct.unpack_from(">i", buf)[0]
                    if len(buf) < 4 + n:
                        break
                    frame, buf = buf[:4 + n], buf[4 + n:]
                    with self.lock:
                        self.recorded.append(frame)
                    reply = self._handle(frame[4:])
                    if reply is not None:
                        conn.sendall(struct.pack(">i", len(reply)) + reply)

    def _handle(self, req):
        r = Reader(req)
        key, version, corr = r.take(">hhi")
        r.string()  # client id
        lo, hi = SUPPORTED.get(key, (0, -1))
        head = struct.pack(">i", corr)
        if key == 18:  # ApiVersions
            apis = [struct.pack(">hhh", k, a, b) for k, (a, b) in sorted(SUPPORTED.items())]
            body = struct.pack(">h", 0 if version <= hi else 35) + array(apis)
            if version >= 1:
                body += struct.pack(">i", 0)
            return head + body
        if not lo <= version <= hi:
            return None  # a real broker closes the connection; the tests never go there
        if key == 3:
            return head + self._metadata(r, version)
        if key == 0:
            return self._produce(r, version, head)
        if key == 1:
            return head + self._fetch(r, version)
        return None

    def _metadata(self, r, version):
        n = r.take(">i")
        topics = [r.string() for _ in range(max(n, 0))]
        if n <= 0:
            topics = sorted({t for t, _ in self.logs})
        host, port = self.advertised
        broker = struct.pack(">i", 0) + string(host) + struct.pack(">i", port)
        if version >= 1:
            broker += string(None)
        out = array([broker])
        if version >= 1:
            out += struct.pack(">i", 0)
        items = []
        for t in topics:
            if t.startswith("missing"):
                err, parts = UNKNOWN_TOPIC, []
            else:
                with self.lock:
                    self.logs.setdefault((t, 0), [])
                err = 0
                parts = [struct.pack(">hiii", 0, 0, 0, 1) + struct.pack(">i", 0)
                         + struct.pack(">ii", 1, 0)]
            item = struct.pack(">h", err) + string(t)
            if version >= 1:
                item += b"\x00"
            items.append(item + array(parts))
        return out + array(items)

    def _produce(self, r, version, head):
        acks = r.take(">h")
        r.take(">i")  # timeout
        topics = []
        for _ in range(r.take(">i")):
            t = r.string()
            parts = []
            for _ in range(r.take(">i")):
                p = r.take(">i")
                mset = r.bytes_() or b""
                if t.startswith("missing"):
                    parts.append(struct.pack(">ihq", p, UNKNOWN_TOPIC, -1))
                else:
                    with self.lock:
                        log = self.logs.setdefault((t, p), [])
                        base = len(log)
                        entries, _ = renumber(mset, base)
                        pos = 0
                        while pos < len(entries):
                            size = struct.unpack_from(">i", entries, pos + 8)[0]
                            log.append(entries[pos:pos + 12 + size])
                            pos += 12 + size
                    parts.append(struct.pack(">ihq", p, 0, base))
                if version >= 2:
                    parts[-1] += struct.pack(">q", -1)
            topics.append(string(t) + array(parts))
        if acks == 0:
            return None
        body = array(topics)
        if version >= 1:
            body += struct.pack(">i", 0)
        return head + body

    def _fetch(self, r, version):
        r.take(">iii")  # replica, max wait, min bytes
        if version >= 3:
            r.take(">i")
        topics = []
        for _ in range(r.take(">i")):
            t = r.string()
            parts = []
            for _ in range(r.take(">i")):
                p, offset, _maxb = r.take(">iqi")
                if t.startswith("missing"):
                    parts.append(struct.pack(">ihq", p, UNKNOWN_TOPIC, -1) + struct.pack(">i", 0))
                    continue
                with self.lock:
                    log = list(self.logs.get((t, p), []))
                data = b"".join(log[offset:]) if offset < len(log) else b""
                parts.append(struct.pack(">ihq", p, 0, len(log)) + struct.pack(">i", len(data)) + data)
            topics.append(string(t) + array(parts))
        out = array(topics)
        if version >= 1:
            out = struct.pack(">i", 0) + out
        return out
