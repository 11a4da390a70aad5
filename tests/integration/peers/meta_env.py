"""
meta_env.py - what test_thrift.py and test_dubbo.py share: the YAML a user would apply for a
MetaProtocol service (ServiceEntry, DestinationRule, MetaRouter), the peer processes
(Thrift servers in Python, Dubbo provider and consumer in Node), a raw Dubbo/Hessian2 frame
builder for checks that must see bytes, the binomial bounds of a weighted split, and waits
on /config_dump.

Every process is started with subprocess and stopped by its PID; every wait has a deadline.
"""

import json
import math
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # harness.py

from harness import stop_pid, tail, wait_until  # noqa: E402

DEBIAN_PYTHON = "/usr/bin/python3"
NODE_DIR = HERE / "node"

# ------------------------------------------------------------------------------------------
# YAML
# ------------------------------------------------------------------------------------------


def service_entry(name, host, vip, port, port_name, endpoints, namespace="meta"):
    """endpoints: [(address, port, {label: value})]. The listener is vip:port."""
    eps = []
    for addr, eport, labels in endpoints:
        lab = "".join(f"\n      {k}: {v}" for k, v in (labels or {}).items())
        eps.append(f"""\
  - address: {addr}
    ports:
      {port_name}: {eport}""" + (f"\n    labels:{lab}" if lab else ""))
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: {namespace}
spec:
  hosts:
  - {host}
  addresses:
  - {vip}
  ports:
  - number: {port}
    name: {port_name}
    protocol: TCP
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
""" + "\n".join(eps) + "\n"


def destination_rule(name, host, subsets=None, hash_key=None, simple=None, namespace="meta"):
    """subsets: {name: {label: value}}; hash_key: consistentHash.httpHeaderName."""
    out = f"""\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: {name}
  namespace: {namespace}
spec:
  host: {host}
"""
    if hash_key or simple:
        out += "  trafficPolicy:\n    loadBalancer:\n"
        if hash_key:
            out += f"      consistentHash:\n        httpHeaderName: {hash_key}\n"
        else:
            out += f"      simple: {simple}\n"
    if subsets:
        out += "  subsets:\n"
        for sname, labels in subsets.items():
            out += f"  - name: {sname}\n    labels:\n"
            out += "".join(f"      {k}: {v}\n" for k, v in labels.items())
    return out


def dest(host, subset=None, weight=None, indent=8):
    """One item of a route's `route:` list."""
    pad = " " * indent
    s = f"{pad}- destination:\n{pad}    host: {host}\n"
    if subset:
        s += f"{pad}    subset: {subset}\n"
    if weight is not None:
        s += f"{pad}  weight: {weight}\n"
    return s


def route(name, dests, match=None, mirror=None, mirror_pct=None, request_mutation=None,
          response_mutation=None):
    """One item of MetaRouter spec.routes.
    match: {attribute: {"exact"|"prefix"|"regex": value} or {} for presence};
    dests: [(host, subset, weight)]; mirror: (host, subset); mutations: {key: value}."""
    s = f"  - name: {name}\n"
    if match:
        s += "    match:\n      attributes:\n"
        for key, sm in match.items():
            if sm:
                (kind, val), = sm.items()
                s += f"        {key}:\n          {kind}: {json.dumps(val)}\n"
            else:
                s += f"        {key}: {{}}\n"
    s += "    route:\n"
    for host, subset, weight in dests:
        s += dest(host, subset, weight if len(dests) > 1 or weight is not None else None,
                  indent=4)
    if mirror:
        host, subset = mirror
        s += f"    mirror:\n      host: {host}\n"
        if subset:
            s += f"      subset: {subset}\n"
        if mirror_pct is not None:
            s += f"    mirrorPercentage:\n      value: {mirror_pct}\n"
    for field, muts in (("requestMutation", request_mutation),
                        ("responseMutation", response_mutation)):
        if muts:
            s += f"    {field}:\n"
            for k, v in muts.items():
                s += f"    - key: {k}\n      value: {json.dumps(v)}\n"
    return s


def meta_router(name, host, routes, namespace="meta"):
    return f"""\
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata:
  name: {name}
  namespace: {namespace}
spec:
  hosts:
  - {host}
  routes:
""" + "".join(routes)


def write_atomically(path, text):
    """Replaces a config file in one rename, as `kubectl apply` tooling and editors do, so a
    reload never reads half a file."""
    path = Path(path)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------
# statistics and admin
# ------------------------------------------------------------------------------------------


def binomial_bounds(n, p, confidence=0.999):
    """(lo, hi) such that a Binomial(n, p) count falls outside [lo, hi] with probability
    at most 1 - confidence (split evenly between the tails), computed exactly."""
    tail_mass = (1 - confidence) / 2
    pmf = [math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)]
    acc, lo = 0.0, 0
    for k in range(n + 1):
        if acc + pmf[k] > tail_mass:
            lo = k
            break
        acc += pmf[k]
    acc, hi = 0.0, n
    for k in range(n, -1, -1):
        if acc + pmf[k] > tail_mass:
            hi = k
            break
        acc += pmf[k]
    return lo, hi


def config_generation(meltemi):
    status, body = meltemi.http_get("/config_dump")
    assert status == 200, f"/config_dump answered {status}: {body[:300]}"
    return json.loads(body)["generation"]


def wait_generation_after(meltemi, before, timeout=15):
    """Waits until /config_dump shows a generation newer than `before`; fails with the last
    reload error (if any) and meltemi's log otherwise."""
    try:
        return wait_until(lambda: config_generation(meltemi) > before, timeout,
                          f"config generation > {before}")
    except AssertionError as exc:
        status, body = meltemi.http_get("/config_dump")
        err = ""
        try:
            err = json.loads(body).get("last_reload_error", "")
        except ValueError:
            pass
        raise AssertionError(f"{exc}; last_reload_error: {err!r}\n--- meltemi stderr ---\n"
                             f"{tail(meltemi.stderr_path)}") from None


# ------------------------------------------------------------------------------------------
# peer processes
# ------------------------------------------------------------------------------------------


def tcp_accepts(host, port):
    with socket.create_connection((host, port), timeout=0.5):
        return True


class Peer:
    """A server process of ours that records what it receives as JSON lines in a file."""

    host = "127.0.0.1"

    def __init__(self, workdir, name, port):
        self.name = name
        self.port = port
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.record = self.workdir / f"{name}-{port}.jsonl"
        self.log = self.workdir / f"{name}-{port}.log"
        self.record.touch()
        self.proc = None

    def argv(self):
        raise NotImplementedError

    def start(self, timeout=20):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n"
                                     f"{tail(self.log)}")
            try:
                if tcp_accepts(self.host, self.port):
                    break
            except OSError:
                pass
            if time.monotonic() >= deadline:
                self.stop()
                raise AssertionError(f"{self.name} not listening on {self.port} after "
                                     f"{timeout}s\n--- log ---\n{tail(self.log)}")
            time.sleep(0.05)
        return self

    def records(self, kind=None):
        out = []
        for line in self.record.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if kind is None or r.get("kind", "request") == kind:
                    out.append(r)
        return out

    def wait_records(self, count, timeout=10, kind=None):
        """Waits until at least `count` records are there; returns them."""
        try:
            wait_until(lambda: len(self.records(kind)) >= count, timeout,
                       f"{count} records at {self.name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; has {len(self.records(kind))}") from None
        return self.records(kind)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            stop_pid(self.proc, signal.SIGTERM)


class ThriftServer(Peer):
    def __init__(self, workdir, gen_dir, name, port, protocol="binary", transport="framed",
                 tls=None):
        super().__init__(workdir, name, port)
        self.gen_dir, self.protocol, self.transport = gen_dir, protocol, transport
        self.tls = tls  # (cert, key): a TSSLServerSocket

    def argv(self):
        a = [DEBIAN_PYTHON, str(HERE / "thrift_peers.py"), "serve", "--gen-dir",
             str(self.gen_dir), "--port", str(self.port), "--name", self.name,
             "--protocol", self.protocol, "--transport", self.transport,
             "--record", str(self.record)]
        if self.tls:
            a += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        return a


class DubboProvider(Peer):
    def argv(self):
        return ["node", str(NODE_DIR / "provider.js"), "--port", str(self.port),
                "--name", self.name, "--record", str(self.record)]


# ------------------------------------------------------------------------------------------
# Node packages (hessian.js, dubbo2.js, ioredis), installed by the tests themselves
# ------------------------------------------------------------------------------------------

NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET",
                  "ENETUNREACH", "EHOSTUNREACH", "network", "fetch failed")


def node_modules_ready():
    probe = ("require('hessian.js'); require('dubbo2.js'); require('ioredis'); require('redis'); "
             "require('dubbo2.js/es7/socket-worker'); process.stdout.write('ok')")
    r = subprocess.run(["node", "-e", probe], cwd=NODE_DIR, capture_output=True, text=True,
                       timeout=30)
    return r.returncode == 0 and r.stdout == "ok"


def install_node_peers():
    """`npm ci` from the committed lockfile unless node_modules already holds exactly it.
    Returns None when the peers are ready, or the reason to skip (npm registry unreachable).
    Anything else that goes wrong fails."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise AssertionError(f"{tool} is not installed: run tools/install-deps.sh")
    lock = NODE_DIR / "package-lock.json"
    hidden = NODE_DIR / "node_modules" / ".package-lock.json"
    if hidden.exists() and hidden.stat().st_mtime >= lock.stat().st_mtime and node_modules_ready():
        return None
    try:
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
                           capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "npm ci did not finish within 300 s (npm registry unreachable?)"
    if r.returncode != 0:
        text = r.stdout + r.stderr
        if any(e in text for e in NETWORK_ERRORS):
            return f"npm registry unreachable, cannot install the Node peers: {text.strip()[-400:]}"
        raise AssertionError(f"npm ci failed ({r.returncode}):\n{text[-3000:]}")
    if not node_modules_ready():
        raise AssertionError("npm ci succeeded but hessian.js / dubbo2.js / ioredis / redis do not load")
    return None


def run_node_peer(script, *args, timeout=60):
    """Runs one of the Node peers (`node <NODE_DIR>/<script> args...`), which print one JSON
    line; returns it parsed. Skips the calling test when npm cannot install the peers."""
    import pytest
    reason = install_node_peers()
    if reason:
        pytest.skip(reason)
    r = subprocess.run(["node", str(NODE_DIR / script), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


class DubboConsumer:
    """consumer.js (dubbo2.js DirectlyDubbo) on one connection, driven line by line."""

    def __init__(self, workdir, address, timeout=5):
        self.log = Path(workdir) / f"consumer-{time.monotonic_ns()}.log"
        self.errf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            ["node", str(NODE_DIR / "consumer.js"), "--address", address,
             "--timeout", str(timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errf, cwd=NODE_DIR,
            text=True, bufsize=1)
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        first = self._next(timeout + 10, "consumer ready line")
        if not first.get("ready"):
            self.close()
            raise AssertionError(f"dubbo2.js consumer did not connect to {address}: {first}")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _next(self, timeout, what):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer from consumer.js within {timeout}s ({what})\n"
                                 f"{tail(self.log)}") from None
        if line is None:
            raise AssertionError(f"consumer.js exited ({self.proc.poll()}) ({what})\n"
                                 f"{tail(self.log)}")
        return json.loads(line)

    def request(self, obj, timeout=60):
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        return self._next(timeout, json.dumps(obj)[:200])

    def call(self, interface, method, args=("x",), attachments=None, n=1, concurrency=1,
             version="1.0.0", group=None, timeout=60):
        """-> the answer: {"results": [{"ok", "value"|"error"}], "connects", "closes"}.
        "{i}" in an argument is replaced by the call's index."""
        ans = self.request({"op": "call", "interface": interface, "method": method,
                            "version": version, "group": group, "args": list(args),
                            "attachments": attachments or {}, "n": n,
                            "concurrency": concurrency}, timeout=timeout)
        assert ans.get("ok"), f"consumer.js failed: {ans}"
        return ans

    def stats(self):
        return self.request({"op": "stats"})

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                stop_pid(self.proc, signal.SIGKILL)
        self.errf.close()


# ------------------------------------------------------------------------------------------
# Dubbo frames by hand (Dubbo 2 header + Hessian2), for bytes-level checks
# ------------------------------------------------------------------------------------------

DUBBO_MAGIC = b"\xda\xbb"
FLAG_REQUEST, FLAG_TWOWAY, FLAG_EVENT, HESSIAN2 = 0x80, 0x40, 0x20, 2


def h2_string(s):
    """Hessian2 string (lengths in UTF-16 units; our test strings are BMP only)."""
    b = s.encode()
    n = len(s)
    if n <= 31:
        return bytes([n]) + b
    if n <= 1023:
        return bytes([0x30 + (n >> 8), n & 0xff]) + b
    assert n <= 0xffff
    return b"S" + struct.pack(">H", n) + b


def h2_map(d):
    out = b"H"
    for k, v in d.items():
        out += h2_string(k) + h2_string(v)
    return out + b"Z"


def dubbo_request(req_id, interface, method, args=("x",), attachments=None, version="1.0.0",
                  two_way=True):
    body = (h2_string("2.0.2") + h2_string(interface) + h2_string(version) +
            h2_string(method) + h2_string("Ljava/lang/String;" * len(args)))
    for a in args:
        body += h2_string(a)
    att = {"path": interface, "interface": interface, "version": version}
    att.update(attachments or {})
    body += h2_map(att)
    flag = FLAG_REQUEST | HESSIAN2 | (FLAG_TWOWAY if two_way else 0)
    return DUBBO_MAGIC + bytes([flag, 0]) + struct.pack(">QI", req_id, len(body)) + body


def dubbo_heartbeat(req_id):
    return (DUBBO_MAGIC + bytes([FLAG_REQUEST | FLAG_TWOWAY | FLAG_EVENT | HESSIAN2, 0]) +
            struct.pack(">QI", req_id, 1) + b"N")


class DubboFrame:
    def __init__(self, header, body):
        self.flag = header[2]
        self.status = header[3]
        self.id = struct.unpack(">Q", header[4:12])[0]
        self.body = body

    @property
    def is_event(self):
        return bool(self.flag & FLAG_EVENT)

    @property
    def is_request(self):
        return bool(self.flag & FLAG_REQUEST)

    def text(self):
        return self.body.decode(errors="replace")


class DubboConn:
    """A raw Dubbo connection; every read is bounded by the socket timeout."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by peer")
        self.buf += chunk

    def read_frame(self):
        while len(self.buf) < 16:
            self._fill()
        assert self.buf[:2] == DUBBO_MAGIC, f"not a Dubbo frame: {self.buf[:16].hex()}"
        n = struct.unpack(">I", self.buf[12:16])[0]
        while len(self.buf) < 16 + n:
            self._fill()
        f = DubboFrame(self.buf[:16], self.buf[16:16 + n])
        self.buf = self.buf[16 + n:]
        return f

    def outcome(self, timeout=5.0):
        """After a bad input: ("closed", None) on EOF/reset, ("frame", DubboFrame) when the
        peer answered, ("silent", None) when neither happened within timeout."""
        self.sock.settimeout(timeout)
        try:
            return "frame", self.read_frame()
        except (ConnectionError, ConnectionResetError, BrokenPipeError):
            return "closed", None
        except socket.timeout:
            return "silent", None

    def close(self):
        self.sock.close()
