#!/usr/bin/python3
"""mrpc.py - the in-house binary RPC protocol of this example (frame layout in mrpc.lua):
a frame library, a server and a client. Standard library only.

    mrpc.py serve --port 7301 --name v1          # answers every call, echoing what it got
    mrpc.py call --port 7300 Orders get -H user=alice -d body

The server answers a request with a response of the same id whose body is JSON:
{"server": name, "service", "method", "headers": {...}, "body"}; it adds the header
"x-server: <name>" and echoes every request header that starts with "x-echo-". A method
"slow" waits the number of milliseconds in its body before answering, while later requests
of the same connection are answered meanwhile (responses come out of order, as the protocol
allows). Oneway requests are recorded and not answered; pings (heartbeats) get a pong.
The server counts what it saw: method "stats" answers {"requests": n, "oneway": n, ...}.

Streams (frame kinds in mrpc.lua): on an init frame the server answers a data frame
"open:<name>" (an init whose method is "reset-me" gets a reset instead), echoes every data
frame as "echo:<body>" on the same stream, answers a close with its own close, and forgets a
stream the client resets.
"""

import argparse
import json
import socket
import struct
import sys
import threading

MAGIC = 0x4D52
HEADER = 12
F_RESPONSE, F_ONEWAY, F_HEARTBEAT, F_ERROR, F_STREAM = 1, 2, 4, 8, 16
S_INIT, S_DATA, S_CLOSE, S_RESET = 0x10, 0x30, 0x50, 0x70
STREAM_KINDS = {S_INIT: "init", S_DATA: "data", S_CLOSE: "close", S_RESET: "reset"}


def _str16(b):
    return struct.pack(">H", len(b)) + b


def encode(flags, rid, service=b"", method=b"", headers=(), body=b""):
    def b(x):
        return x.encode() if isinstance(x, str) else x
    rest = _str16(b(service)) + _str16(b(method)) + struct.pack(">H", len(headers))
    for k, v in headers:
        rest += _str16(b(k)) + _str16(b(v))
    rest += b(body)
    return struct.pack(">HBBII", MAGIC, flags, 1, HEADER + len(rest), rid) + rest


class Frame:
    def __init__(self, flags, rid, service, method, headers, body):
        self.flags, self.id = flags, rid
        self.service, self.method = service, method
        self.headers, self.body = headers, body

    @property
    def is_response(self):
        return bool(self.flags & F_RESPONSE)

    @property
    def stream_kind(self):
        """"init", "data", "close" or "reset" for a stream frame, else None."""
        return STREAM_KINDS.get(self.flags & 0x70) if self.flags & F_STREAM else None

    def header(self, key, default=None):
        for k, v in self.headers:
            if k == key:
                return v
        return default


def decode(buf):
    """(Frame, frame length) for the frame at the start of buf, or (None, 0) if incomplete."""
    if len(buf) < HEADER:
        return None, 0
    magic, flags, _version, length, rid = struct.unpack_from(">HBBII", buf)
    if magic != MAGIC or length < HEADER + 6:
        raise ValueError("not an mrpc frame")
    if len(buf) < length:
        return None, 0
    pos = HEADER

    def s():
        nonlocal pos
        (n,) = struct.unpack_from(">H", buf, pos)
        v = bytes(buf[pos + 2:pos + 2 + n])
        pos += 2 + n
        return v.decode("utf-8", "replace")
    service, method = s(), s()
    (count,) = struct.unpack_from(">H", buf, pos)
    pos += 2
    headers = []
    for _ in range(count):
        k = s()
        headers.append((k, s()))
    return Frame(flags, rid, service, method, headers, bytes(buf[pos:length])), length


def read_frames(sock, buf):
    """Reads until buf holds at least one frame; yields every complete frame."""
    while True:
        f, n = decode(buf)
        if f is not None:
            del buf[:n]
            yield f
            continue
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk


# ---- server --------------------------------------------------------------------------------

class Server:
    def __init__(self, host, port, name):
        self.name = name
        self.counts = {"requests": 0, "oneway": 0, "pings": 0, "connections": 0,
                       "streams": 0, "stream_frames": 0, "resets": 0}
        self.seen = []  # (service, method, headers) of every request and oneway
        self.lock = threading.Lock()
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.port = self.sock.getsockname()[1]

    def serve_forever(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.counts["connections"] += 1
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def answer(self, f):
        headers = [("x-server", self.name)] + [(k, v) for k, v in f.headers
                                                if k.startswith("x-echo-")]
        if f.method == "stats":
            with self.lock:
                body = json.dumps(dict(self.counts, seen=self.seen))
        else:
            body = json.dumps({"server": self.name, "service": f.service, "method": f.method,
                               "headers": dict(f.headers), "body": f.body.decode("utf-8",
                                                                                "replace")})
        return encode(F_RESPONSE, f.id, f.service, f.method, headers, body)

    def stream_frame(self, f, streams, send):
        kind = f.stream_kind
        with self.lock:
            self.counts["stream_frames"] += 1
            if kind == "init":
                self.counts["streams"] += 1
                self.seen.append([f.service, f.method, dict(f.headers)])
            if kind == "reset":
                self.counts["resets"] += 1
        reply = F_RESPONSE
        if kind == "init":
            if f.method == "reset-me":
                send(encode(S_RESET | reply, f.id, body="reset by the server"))
                return
            streams[f.id] = f.method
            send(encode(S_DATA | reply, f.id, body=f"open:{self.name}"))
        elif kind == "data" and f.id in streams:
            send(encode(S_DATA | reply, f.id, body=b"echo:" + f.body))
        elif kind == "close" and f.id in streams:
            del streams[f.id]
            send(encode(S_CLOSE | reply, f.id))
        elif kind == "reset":
            streams.pop(f.id, None)

    def handle(self, c):
        wlock = threading.Lock()

        def send(data):
            with wlock:
                try:
                    c.sendall(data)
                except OSError:
                    pass
        buf = bytearray()
        streams = {}  # id -> method, this connection's open streams
        try:
            for f in read_frames(c, buf):
                if f.stream_kind:
                    self.stream_frame(f, streams, send)
                    continue
                if f.flags & F_HEARTBEAT:
                    if not f.is_response:
                        with self.lock:
                            self.counts["pings"] += 1
                        send(encode(F_RESPONSE | F_HEARTBEAT, f.id))
                    continue
                if f.is_response:
                    continue
                with self.lock:
                    if f.method != "stats":
                        self.counts["oneway" if f.flags & F_ONEWAY else "requests"] += 1
                        self.seen.append([f.service, f.method, dict(f.headers)])
                if f.flags & F_ONEWAY:
                    continue
                reply = self.answer(f)
                if f.method == "slow":
                    t = threading.Timer(int(f.body or b"0") / 1000.0, send, args=(reply,))
                    t.daemon = True
                    t.start()
                else:
                    send(reply)
        except (OSError, ValueError):
            pass
        finally:
            c.close()


# ---- client --------------------------------------------------------------------------------

class Client:
    """A connection that can pipeline: send() returns the id, recv() the next frame."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = bytearray()
        self.next_id = 1

    def close(self):
        self.sock.close()

    def send(self, service, method, headers=(), body=b"", flags=0, rid=None):
        if rid is None:
            rid, self.next_id = self.next_id, self.next_id + 1
        self.sock.sendall(encode(flags, rid, service, method, list(headers), body))
        return rid

    def recv(self):
        for f in read_frames(self.sock, self.buf):
            return f
        raise ConnectionError("connection closed by the peer")

    def call(self, service, method, headers=(), body=b""):
        rid = self.send(service, method, headers, body)
        f = self.recv()
        if f.id != rid:
            raise ValueError(f"response id {f.id} for request {rid}")
        return f

    def stream(self, sid, kind, service="", method="", headers=(), body=b""):
        """Sends a stream frame: kind is "init", "data", "close" or "reset"."""
        flags = {"init": S_INIT, "data": S_DATA, "close": S_CLOSE, "reset": S_RESET}[kind]
        self.sock.sendall(encode(flags, sid, service, method, list(headers), body))

    def ping(self):
        rid, self.next_id = self.next_id, self.next_id + 1
        self.sock.sendall(encode(F_HEARTBEAT, rid))
        return self.recv()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", default="mrpc")
    c = sub.add_parser("call")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("service")
    c.add_argument("method")
    c.add_argument("-H", "--header", action="append", default=[], help="key=value")
    c.add_argument("-d", "--data", default="")
    a = ap.parse_args()
    if a.cmd == "serve":
        srv = Server(a.host, a.port, a.name)
        print(f"mrpc server {a.name} on {a.host}:{srv.port}", flush=True)
        srv.serve_forever()
        return 0
    cl = Client(a.host, a.port)
    f = cl.call(a.service, a.method, [tuple(h.split("=", 1)) for h in a.header], a.data)
    kind = "error" if f.flags & F_ERROR else "response"
    print(json.dumps({"kind": kind, "headers": dict(f.headers),
                      "body": f.body.decode("utf-8", "replace")}))
    return 1 if f.flags & F_ERROR else 0


if __name__ == "__main__":
    sys.exit(main())
