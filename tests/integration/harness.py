"""
harness.py - real processes for the integration tests: redis-server instances, meltemi,
redis-cli, a TCP echo server, free ports and bounded waits.

Every process is started with subprocess and stopped by its PID; every wait has a deadline,
and a deadline that passes fails the test with what the process printed. Nothing here binds
127.0.0.1:6379 (Debian's own redis may live there).
"""

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Addresses a listener may bind in ServiceEntry style (any 127.x.y.z routes to lo on Linux).
VIP = "127.0.0.10"


class WaitTimeout(AssertionError):
    pass


def wait_until(predicate, timeout, what, interval=0.05):
    """Polls predicate() until it returns a true value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the thing we wait for may raise until it is up
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


# Ports handed out by free_port(), kept below the kernel's ephemeral range: a port the kernel
# picked with bind(0) and then released is taken back for the next outgoing connection
# (meltemi's upstreams, redis-cli, the fuzzers CI runs beside the tests) before the server the
# test starts gets to bind it - CI saw a cluster node fail with "Address already in use".
_PORTS_LOW, _PORTS_HIGH = 20000, 32768
_ports_given = set()
_ports_rng = None


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on at host right now, outside the ephemeral range, and not
    handed out before in this run (so two servers of one test never get the same port)."""
    global _ports_rng
    import random
    if _ports_rng is None:
        _ports_rng = random.Random(os.getpid() ^ time.monotonic_ns())
    high = min(_PORTS_HIGH, _ephemeral_low())
    for _ in range(2000):
        port = _ports_rng.randrange(_PORTS_LOW, high)
        if port in _ports_given or port == 6379:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError("no free port")


def meltemi_bin():
    env = os.environ.get("MELTEMI_BIN")
    path = Path(env) if env else REPO / "build" / "meltemi"
    return path


def tail(path, limit=6000):
    try:
        data = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return "<no output file>"
    return data[-limit:]


def stop_pid(proc, sig=signal.SIGTERM, timeout=10):
    """Sends sig to one process we started and waits for it; SIGKILL if it outlives timeout.
    Returns the exit status (negative: killed by that signal)."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise AssertionError(f"pid {proc.pid} ignored signal {sig} for {timeout}s; killed")


# --------------------------------------------------------------------------------------------
# Raw RESP over a socket: for checks that must see bytes exactly as sent (inline commands,
# protocol errors, connection close), independent of any client library.
# --------------------------------------------------------------------------------------------

def resp_encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespConn:
    """A blocking RESP2 connection with a timeout on every read: a hang becomes a failure."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def call(self, *args):
        self.send_raw(resp_encode(*args))
        return self.read_reply()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by peer")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_reply(self):
        """Returns bytes for simple/bulk strings, int, list, None, or RespError."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.read_reply() for _ in range(n)]
        raise AssertionError(f"not a RESP reply: {line!r}")

    def closed_by_peer(self, timeout=5.0):
        """True once the peer closes the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


class RespError(str):
    """An error reply; a str so tests can compare and match it directly."""


# --------------------------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------------------------

class RedisServer:
    """One redis-server on 127.0.0.1, no persistence, in its own directory."""

    def __init__(self, workdir, port=None, password=None, name="redis", extra_args=()):
        self.workdir = Path(workdir) / f"{name}-{port or 'auto'}-{time.monotonic_ns()}"
        self.workdir.mkdir(parents=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.password = password
        self.extra_args = list(extra_args)
        self.proc = None
        self.log = self.workdir / "redis.log"

    def start(self, timeout=10):
        args = ["redis-server", "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", str(self.workdir), "--logfile", ""]
        if self.password is not None:
            args += ["--requirepass", self.password]
        args += [str(a) for a in self.extra_args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_until(self._answers_ping, timeout, f"redis-server on port {self.port}")
        except WaitTimeout as exc:
            self.kill()
            raise AssertionError(f"{exc}\n--- redis log ---\n{tail(self.log)}") from None
        return self

    def _answers_ping(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.proc.returncode}:\n"
                                 f"{tail(self.log)}")
        c = RespConn(self.host, self.port, timeout=1)
        try:
            if self.password is not None:
                assert c.call("AUTH", self.password) == b"OK"
            return c.call("PING") == b"PONG"
        finally:
            c.close()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL: the upstream dies without saying goodbye."""
        if self.proc is not None:
            stop_pid(self.proc, signal.SIGKILL)

    def stop(self):
        if self.proc is not None:
            stop_pid(self.proc, signal.SIGTERM)

    def client(self, **kw):
        import redis
        return redis.Redis(host=self.host, port=self.port, password=self.password,
                           socket_timeout=5, socket_connect_timeout=5, **kw)


# --------------------------------------------------------------------------------------------
# meltemi
# --------------------------------------------------------------------------------------------

class Meltemi:
    """`meltemi run -c DIR` with its own admin port; output goes to files in workdir."""

    def __init__(self, config_dir, workdir, workers=1, admin_port=None, log_level="info",
                 drain_timeout_ms=None, extra_args=()):
        self.bin = meltemi_bin()
        self.config_dir = Path(config_dir)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.admin_port = admin_port or free_port()
        self.admin = f"127.0.0.1:{self.admin_port}"
        self.workers = workers
        self.log_level = log_level
        self.drain_timeout_ms = drain_timeout_ms
        self.extra_args = list(extra_args)
        self.proc = None
        self.stdout_path = self.workdir / f"meltemi-{self.admin_port}.out"
        self.stderr_path = self.workdir / f"meltemi-{self.admin_port}.err"

    def argv(self):
        a = [str(self.bin), "run", "-c", str(self.config_dir), "--admin", self.admin,
             "--workers", str(self.workers), "--log-level", self.log_level]
        if self.drain_timeout_ms is not None:
            a += ["--drain-timeout", str(self.drain_timeout_ms)]
        return a + self.extra_args

    def start(self, wait_ready=True, timeout=15):
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def stderr(self):
        return tail(self.stderr_path, limit=1 << 20)

    def output(self):
        return tail(self.stdout_path, limit=1 << 20) + tail(self.stderr_path, limit=1 << 20)

    def http_get(self, path, timeout=3):
        """(status, body text) of GET http://admin/path; HTTP errors are returned, not raised."""
        url = f"http://{self.admin}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def wait_ready(self, timeout=15):
        def ready():
            if self.proc.poll() is not None:
                raise _Exited(self.proc.returncode)
            return self.http_get("/ready", timeout=1)[0] == 200
        try:
            wait_until(ready, timeout, f"meltemi /ready on {self.admin}")
        except _Exited as e:
            raise AssertionError(f"meltemi exited with {e.rc} before it was ready: "
                                 f"{' '.join(self.argv())}\n--- stderr ---\n"
                                 f"{tail(self.stderr_path)}") from None
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}\n--- meltemi stderr ---\n"
                                 f"{tail(self.stderr_path)}") from None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout=15):
        """SIGTERM and wait; returns the exit status."""
        return stop_pid(self.proc, signal.SIGTERM, timeout=timeout)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            stop_pid(self.proc, signal.SIGKILL)


class _Exited(Exception):
    def __init__(self, rc):
        super().__init__(rc)
        self.rc = rc


def run_meltemi(*args, timeout=30, cwd=None):
    """Runs a one-shot meltemi command (validate, compile, --help); returns CompletedProcess."""
    return subprocess.run([str(meltemi_bin()), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def redis_py(host, port, **kw):
    """A redis-py client whose every socket operation is bounded (a hang fails the test)."""
    import redis
    kw.setdefault("socket_timeout", 5)
    kw.setdefault("socket_connect_timeout", 5)
    return redis.Redis(host=host, port=port, **kw)


# --------------------------------------------------------------------------------------------
# redis-cli
# --------------------------------------------------------------------------------------------

def redis_cli(host, port, *command, password=None, stdin=None, timeout=15):
    """Runs redis-cli. With command words: one command. With stdin text and no command: every
    line is a command on one connection (like typing them at the prompt). Returns
    CompletedProcess; stdout is in redis-cli's non-tty format (errors print as 'ERR ...')."""
    args = ["redis-cli", "-h", host, "-p", str(port)]
    if password is not None:
        args += ["--no-auth-warning", "-a", password]
    args += list(map(str, command))
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)


def cli_lines(completed):
    """Non-empty output lines of a redis-cli run."""
    return [ln.rstrip() for ln in completed.stdout.splitlines() if ln.strip()]


# --------------------------------------------------------------------------------------------
# A TCP server behind a plain-TCP listener: says a banner first (server -> client without a
# request), then echoes every byte back (client -> server -> client).
# --------------------------------------------------------------------------------------------

class EchoServer:
    BANNER = b"echo-server ready\n"

    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()
        self.accepted = 0
        self._stop = threading.Event()
        self._threads = []
        self._main = threading.Thread(target=self._serve, daemon=True)
        self._main.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _echo(self, conn):
        conn.settimeout(30)
        try:
            conn.sendall(self.BANNER)
            while not self._stop.is_set():
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self._stop.set()
        self.sock.close()
        self._main.join(timeout=5)
