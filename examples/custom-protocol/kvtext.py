#!/usr/bin/python3
"""kvtext.py - the line-based text protocol of this example (grammar in kvtext.lua): a
server keeping keys in memory and a client. Standard library only.

    kvtext.py serve --port 7401 --name users
    kvtext.py call --port 7400 set user:1 alice
    kvtext.py call --port 7400 get user:1

Besides get/set/delete the server answers "keys\\r\\n" with VALUE keys <n> (its keys,
space separated), which tests use to see where a key landed. It is not part of what the
codec decodes: through meltemi, "keys" is refused by the codec like any unknown command.
"""

import argparse
import socket
import sys
import threading


class Server:
    def __init__(self, host, port, name):
        self.name = name
        self.data = {}
        self.lock = threading.Lock()
        self.sock = socket.create_server((host, port))
        self.port = self.sock.getsockname()[1]

    def serve_forever(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def command(self, line, rd):
        parts = line.split(b" ")
        cmd = parts[0]
        if cmd == b"get" and len(parts) == 2:
            with self.lock:
                v = self.data.get(parts[1])
            if v is None:
                return b"END\r\n"
            return b"VALUE %s %d\r\n%s\r\nEND\r\n" % (parts[1], len(v), v)
        if cmd == b"set" and len(parts) in (3, 4):
            n = int(parts[2])
            v = rd(n + 2)[:n]
            with self.lock:
                self.data[parts[1]] = v
            return b"" if len(parts) == 4 and parts[3] == b"noreply" else b"STORED\r\n"
        if cmd == b"delete" and len(parts) == 2:
            with self.lock:
                found = self.data.pop(parts[1], None) is not None
            return b"DELETED\r\n" if found else b"NOT_FOUND\r\n"
        if cmd == b"keys":
            with self.lock:
                ks = b" ".join(sorted(self.data))
            return b"VALUE keys %d\r\n%s\r\nEND\r\n" % (len(ks), ks)
        return b"ERROR\r\n"

    def handle(self, c):
        f = c.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                out = self.command(line.rstrip(b"\r\n"), f.read)
                if out:
                    c.sendall(out)
        except (OSError, ValueError):
            pass
        finally:
            c.close()


class Client:
    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def close(self):
        self.f.close()
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """One reply: a value (bytes), None for END, or the status line (str)."""
        line = self.f.readline()
        if not line:
            raise ConnectionError("connection closed by the peer")
        line = line.rstrip(b"\r\n")
        if line.startswith(b"VALUE "):
            n = int(line.split(b" ")[2])
            v = self.f.read(n + 2)[:n]
            end = self.f.readline()
            assert end == b"END\r\n", end
            return v
        if line == b"END":
            return None
        return line.decode()

    def get(self, key):
        self.send(b"get %s\r\n" % key.encode())
        return self.reply()

    def set(self, key, value, noreply=False):
        v = value.encode() if isinstance(value, str) else value
        self.send(b"set %s %d%s\r\n%s\r\n" % (key.encode(), len(v),
                                             b" noreply" if noreply else b"", v))
        return None if noreply else self.reply()

    def delete(self, key):
        self.send(b"delete %s\r\n" % key.encode())
        return self.reply()

    def keys(self):
        self.send(b"keys\r\n")
        v = self.reply()
        return v.decode().split() if v else []


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", default="kvtext")
    c = sub.add_parser("call")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("command", choices=["get", "set", "delete"])
    c.add_argument("key")
    c.add_argument("value", nargs="?", default="")
    a = ap.parse_args()
    if a.cmd == "serve":
        srv = Server(a.host, a.port, a.name)
        print(f"kvtext server {a.name} on {a.host}:{srv.port}", flush=True)
        srv.serve_forever()
        return 0
    cl = Client(a.host, a.port)
    r = cl.set(a.key, a.value) if a.command == "set" else getattr(cl, a.command)(a.key)
    print(r.decode() if isinstance(r, bytes) else r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
