"""
Hot reload under load (issue 4): the routes of a live RedisService change 50 times — by the
config-directory watcher, by POST /reload and by SIGHUP — and a broken file appears once and
is removed, while redis-benchmark and a set of long-lived Python connections keep sending
commands. Nothing may be dropped: zero error replies, zero closed connections (every client
connection is the one it opened; meltemi's own downstream connection counters agree), and
routing follows the last valid configuration (a probe key lands on the Redis it names).
A LuaFilter change reloads the same way.

How the triggers are kept apart: the RedisService file in the config directory is a symlink.
For a watcher-driven change the symlink itself is replaced (a rename of a .yaml name in the
directory: inotify sees it). For POST /reload and SIGHUP the file the symlink points to is
rewritten outside the directory, which the watcher does not see; only the explicit trigger
can load it. The log names the trigger of each reload, and the generation counts them.
"""

import json
import os
import re
import signal
import subprocess
import threading
import types

import pytest

import configs
from harness import VIP, RespConn, free_port, redis_cli, cli_lines, wait_until

FRONT_HOST = "redis-front.redis.svc.cluster.local"
DEST_VIPS = {"dest-a": "127.0.0.15", "dest-b": "127.0.0.16"}


def route_yaml(dest):
    return f"""\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: redis-front
  namespace: redis
spec:
  host:
  - redis-front
  redis:
  - match:
      key:
        prefix: "pinned:"
    route:
      host: dest-a
  - route:
      host: {dest}.redis.svc.cluster.local
"""


BROKEN = """\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: redis-broken
  namespace: redis
spec:
  host: [redis-front
  redis: }
"""

DANGLING = """\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: redis-dangling
  namespace: redis
spec:
  host:
  - redis-nowhere
"""


def scrape(meltemi):
    status, body = meltemi.http_get("/stats/prometheus")
    assert status == 200, body
    out = {}
    for ln in body.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", ln)
        if m and not ln.startswith("#"):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def metric(meltemi, name, label_substr=""):
    return sum(v for (n, labels), v in scrape(meltemi).items()
               if n == name and label_substr in labels)


def config_dump(meltemi):
    status, body = meltemi.http_get("/config_dump")
    assert status == 200, body
    return json.loads(body)


def post_reload(meltemi):
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"http://{meltemi.admin}/reload", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class RouteFile:
    """conf/route.yaml, a symlink into src/ (see the module docstring)."""

    def __init__(self, conf, src):
        self.conf, self.src, self.n = conf, src, 0
        self.link = conf / "route.yaml"

    def _target(self, text):
        self.n += 1
        path = self.src / f"route-{self.n}.yaml"
        path.write_text(text)
        return path

    def install(self, text):
        """The first version, before meltemi starts."""
        os.symlink(self._target(text), self.link)

    def swap_link(self, text):
        """A change the watcher sees: a new symlink renamed over route.yaml."""
        tmp = self.conf / ".route.link"  # not a .yaml name: its creation is not an event
        os.symlink(self._target(text), tmp)
        os.replace(tmp, self.link)

    def rewrite_target(self, text):
        """A change the watcher cannot see: the symlink's target rewritten in src/."""
        target = self.link.resolve()
        tmp = self.src / "next.tmp"
        tmp.write_text(text)
        os.replace(tmp, target)


class Client:
    """One long-lived connection in a thread, alternating SET/GET/INCR; counts replies, error
    replies and (fatal) closed connections."""

    def __init__(self, host, port, name):
        self.c = RespConn(host, port, timeout=30)
        self.name = name
        self.replies, self.errors, self.closed = 0, [], None
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            key = f"{self.name}:{i % 50}"
            try:
                for cmd in (("SET", key, str(i)), ("GET", key), ("INCR", f"{self.name}:n")):
                    r = self.c.call(*cmd)
                    if isinstance(r, str):  # RespError is a str
                        self.errors.append((cmd, r))
                    self.replies += 1
            except Exception as exc:
                self.closed = repr(exc)
                return

    def finish(self):
        self.stop.set()
        self.t.join(timeout=60)
        assert not self.t.is_alive(), f"{self.name} hung"


@pytest.fixture
def front(redis_factory, tmp_path, meltemi_factory):
    """deploy(first_dest="dest-a", workers=2, extra=None) -> namespace(conf, route, dest
    {name: RedisServer}, port, meltemi)."""

    def deploy(first_dest="dest-a", workers=2, extra=None):
        conf, src = tmp_path / "conf", tmp_path / "src"
        conf.mkdir()
        src.mkdir()
        dest = {name: redis_factory(name=name) for name in DEST_VIPS}
        port = free_port(VIP)
        files = {"svc-front.yaml": configs.service_entry("redis-front", VIP, port,
                                                         dest["dest-a"].port)}
        for name, vip in DEST_VIPS.items():
            files[f"svc-{name}.yaml"] = configs.service_entry(name, vip, free_port(vip),
                                                              dest[name].port)
        files.update(extra or {})
        configs.write_config(conf, files)
        route = RouteFile(conf, src)
        route.install(route_yaml(first_dest))
        m = meltemi_factory(conf, workers=workers)
        return types.SimpleNamespace(conf=conf, src=src, route=route, dest=dest, port=port,
                                     meltemi=m)

    return deploy


def landed_on(env, key):
    """The names of the Redis servers that hold key (asked directly)."""
    return [n for n, r in env.dest.items() if r.client().exists(key)]


def probe(env, key, conn=None):
    c = conn or RespConn(VIP, env.port)
    try:
        assert c.call("SET", key, "probe") == b"OK"
    finally:
        if conn is None:
            c.close()
    return landed_on(env, key)


def generation(env):
    return config_dump(env.meltemi)["generation"]


def wait_generation(env, want, what):
    wait_until(lambda: generation(env) >= want, 10, f"generation {want} ({what})")
    assert generation(env) == want, f"one reload per change ({what})"


def start_benchmark(port, tmp_path):
    """redis-benchmark -c 20 -P 1 with more requests than the test lasts (its first test, SET,
    never ends: between two of its tests redis-benchmark reconnects its clients), stopped by
    PID."""
    out = open(tmp_path / "benchmark.out", "wb")
    proc = subprocess.Popen(
        ["redis-benchmark", "-h", VIP, "-p", str(port), "-c", "20", "-P", "1",
         "-n", "2000000000", "-t", "set,get", "-r", "10000", "-d", "16", "--csv"],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, out


def test_fifty_route_changes_and_a_broken_file_under_load(front, tmp_path):
    env = front("dest-a")
    m = env.meltemi
    gen = generation(env)
    assert probe(env, "probe:start") == ["dest-a"]

    bench, bench_out = start_benchmark(env.port, tmp_path)
    clients = [Client(VIP, env.port, f"py{i}") for i in range(20)]
    # Everyone connected and busy before the first change.
    wait_until(lambda: all(c.replies >= 30 for c in clients) and
               metric(m, "meltemi_downstream_connections_active") >= 40, 20,
               "40 busy client connections (redis-benchmark -c 20 + 20 Python clients)")
    conns_total = metric(m, "meltemi_downstream_connections_total")
    failures_before = metric(m, "meltemi_config_reload_failures_total")
    # One of the clients' own connections probes too: existing connections follow.
    prober = RespConn(VIP, env.port, timeout=30)
    conns_total += 1

    triggers = {"watcher": 0, "POST /reload": 0, "SIGHUP": 0}
    dest = "dest-a"
    for i in range(50):
        dest = "dest-b" if dest == "dest-a" else "dest-a"
        how = ("watcher", "POST /reload", "SIGHUP")[i % 3]
        if how == "watcher":
            env.route.swap_link(route_yaml(dest))
        else:
            env.route.rewrite_target(route_yaml(dest))
            if how == "POST /reload":
                status, body = post_reload(m)
                assert status == 200 and f"generation {gen + 1}" in body, (status, body)
            else:
                os.kill(m.proc.pid, signal.SIGHUP)
        triggers[how] += 1
        gen += 1
        wait_generation(env, gen, f"change {i + 1} by {how}")
        assert probe(env, f"probe:{i}", prober) == [dest], f"change {i + 1} by {how}"
        assert probe(env, f"pinned:{i}", prober) == ["dest-a"]

        if i == 24:
            # A broken file appears: rejected, the old config keeps serving ...
            broken = env.conf / "broken.yaml"
            tmp = env.conf / "broken.tmp"
            tmp.write_text(BROKEN)
            os.replace(tmp, broken)
            wait_until(lambda: metric(m, "meltemi_config_reload_failures_total") ==
                       failures_before + 1, 10, "the broken file to be rejected")
            dump = config_dump(m)
            assert dump["generation"] == gen
            assert "broken.yaml" in dump["last_reload_error"], dump.get("last_reload_error")
            assert probe(env, "probe:while-broken", prober) == [dest]
            # ... POST /reload says why, with validate's words ...
            status, body = post_reload(m)
            assert status != 200 and "broken.yaml" in body, (status, body)
            validate = subprocess.run([str(m.bin), "validate", str(env.conf)],
                                      capture_output=True, text=True, timeout=30)
            assert validate.returncode == 1
            first_problem = [ln for ln in validate.stdout.splitlines() + validate.stderr
                             .splitlines() if "broken.yaml" in ln][0]
            assert first_problem.split("broken.yaml", 1)[1] in body, (first_problem, body)
            assert metric(m, "meltemi_config_reload_failures_total") == failures_before + 2
            # ... and its removal is a change like any other.
            broken.unlink()
            gen += 1
            wait_generation(env, gen, "the broken file removed")
            assert "last_reload_error" not in config_dump(m)
            assert probe(env, "probe:after-broken", prober) == [dest]

    assert triggers == {"watcher": 17, "POST /reload": 17, "SIGHUP": 16}
    for how in ("config directory changed", "POST /reload", "SIGHUP"):
        assert len(re.findall(rf"reload \({re.escape(how)}\): generation \d+ is live",
                              m.output())) >= (17 if how != "SIGHUP" else 16), how

    # Routing follows the last valid config, on a new connection and an old one.
    assert dest == "dest-a"  # 50 flips from dest-a
    assert probe(env, "probe:last") == ["dest-a"]
    assert probe(env, "probe:last-old-conn", prober) == ["dest-a"]
    conns_total += 1
    cli = redis_cli(VIP, env.port, "set", "probe:cli", "x")
    assert cli_lines(cli) == ["OK"] and landed_on(env, "probe:cli") == ["dest-a"]
    conns_total += 1

    for c in clients:
        c.finish()
    # redis-benchmark 7 exits at the first error reply or closed connection ("We now
    # immediately exit on error to avoid false results"): still running means neither.
    assert bench.poll() is None, (tmp_path / "benchmark.out").read_text(errors="replace")
    bench.send_signal(signal.SIGINT)
    try:
        bench.wait(timeout=10)
    except subprocess.TimeoutExpired:
        bench.kill()
        bench.wait(timeout=10)
    bench_out.close()
    bench_text = (tmp_path / "benchmark.out").read_text(errors="replace")
    assert not re.search(r"error", bench_text, re.I), bench_text[-2000:]

    # The benchmark's traffic went through every change: its keys are on both destinations.
    for name, r in env.dest.items():
        assert next(r.client().scan_iter("key:*", count=1000), None) is not None, name
    assert [c.closed for c in clients] == [None] * 20
    assert [c.errors for c in clients] == [[]] * 20
    assert all(c.replies > 100 for c in clients), [c.replies for c in clients]
    # No client connection was closed and reopened behind the clients' backs: meltemi
    # accepted exactly the connections the test opened (benchmark, clients, prober, probes).
    total = metric(m, "meltemi_downstream_connections_total")
    assert total == conns_total, (total, conns_total)
    assert metric(m, "meltemi_config_reload_failures_total") == failures_before + 2
    prober.close()


def test_a_dangling_reference_is_rejected_and_the_old_config_serves(front):
    env = front("dest-a")
    m = env.meltemi
    gen = generation(env)
    c = RespConn(VIP, env.port)
    assert c.call("SET", "before", "1") == b"OK"
    (env.conf / "dangling.yaml").write_text(DANGLING)
    status, body = post_reload(m)
    assert status != 200 and "redis-nowhere" in body, (status, body)
    assert "redis-nowhere" in config_dump(m)["last_reload_error"]
    assert generation(env) == gen
    assert probe(env, "still", c) == ["dest-a"]
    (env.conf / "dangling.yaml").unlink()
    env.route.rewrite_target(route_yaml("dest-b"))
    status, body = post_reload(m)
    assert status == 200, body
    assert probe(env, "after", c) == ["dest-b"]
    c.close()


FILTER = """\
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata:
  name: version
  namespace: redis
spec:
  hosts: [redis-front]
  scriptFile: version.lua
"""

FILTER_LUA = """\
local n = 0
return {
  on_request = function(msg, ctx)
    n = n + 1
    ctx.conn.seen = (ctx.conn.seen or 0) + 1
    if msg.key == "filter:version" then
      return ctx:reply({ "VERSION", tostring(n), tostring(ctx.conn.seen) })
    end
  end,
}
"""


def test_lua_filter_change_reloads_without_closing_connections(front):
    env = front("dest-a", workers=1, extra={"filter.yaml": FILTER,
                                            "version.lua": FILTER_LUA.replace("VERSION", "v1")})
    m = env.meltemi
    conns = [RespConn(VIP, env.port) for _ in range(5)]
    for c in conns:
        assert c.call("GET", "filter:version")[0] == b"v1"
    total = metric(m, "meltemi_downstream_connections_total")
    gen = generation(env)
    # A scriptFile edit is a configuration change the watcher sees (written whole, then
    # renamed in: one event).
    tmp = env.conf / "version.tmp"
    tmp.write_text(FILTER_LUA.replace("VERSION", "v2"))
    os.replace(tmp, env.conf / "version.lua")
    wait_generation(env, gen + 1, "the watcher after a .lua edit")
    for i, c in enumerate(conns):
        reply = c.call("GET", "filter:version")
        # New code, fresh module state; the connection's own storage (ctx.conn) survives.
        assert reply[0] == b"v2" and reply[2] == b"2", reply
        assert c.call("SET", f"k{i}", "v") == b"OK"
    # An inline script change through the watcher: a YAML edit.
    (env.conf / "filter.yaml").write_text(
        FILTER.replace("scriptFile: version.lua", "script: |\n" + "".join(
            "    " + ln + "\n" for ln in FILTER_LUA.replace("VERSION", "v3").splitlines())))
    wait_generation(env, gen + 2, "the watcher after a LuaFilter YAML edit")
    for c in conns:
        assert c.call("GET", "filter:version")[0] == b"v3"
        c.close()
    # SIGHUP reloads too (same code, a new generation).
    os.kill(m.proc.pid, signal.SIGHUP)
    wait_generation(env, gen + 3, "SIGHUP")
    assert metric(m, "meltemi_downstream_connections_total") == total
    assert landed_on(env, "k0") == ["dest-a"]
