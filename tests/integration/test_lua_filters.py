"""
User Lua filters (kind LuaFilter, issue 4) through a real meltemi in front of real redis-server
instances: every example of examples/lua-filters/ (its YAML and Lua used as shipped; only the
services are written here, with the test's ports), and the sandbox's limits: a filter that
throws, loops forever or allocates without bound fails only the request at hand, while
another client on the same listener and worker keeps being served.
"""

import re
import threading
import types

import pytest

import configs
from harness import REPO, RespConn, RespError, free_port, wait_until

EXAMPLES = REPO / "examples" / "lua-filters"
NS = "demo"

# One VIP per service (as a Kubernetes client reaches each Service's own address).
VIPS = {"redis-main": "127.0.0.30", "tenant-a": "127.0.0.31", "tenant-b": "127.0.0.32",
        "redis-app": "127.0.0.33", "redis-sessions": "127.0.0.34", "filtered": "127.0.0.35"}


def example(name):
    return (EXAMPLES / name).read_text()


def scrape(meltemi):
    status, body = meltemi.http_get("/stats/prometheus")
    assert status == 200, body
    out = {}
    for ln in body.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", ln)
        if m and not ln.startswith("#"):
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def lua_counter(meltemi, name, label):
    want = f'name="{name}",label="{label}"'
    return sum(v for (n, labels), v in scrape(meltemi).items()
               if n == "meltemi_lua_counter_total" and want in labels)


@pytest.fixture
def filtered(redis_factory, config_dir, meltemi_factory):
    """deploy(services={name: redis or None}, files={...}, scripts=[...], workers=1):
    a ServiceEntry per service (VIP from VIPS, namespace demo) whose endpoint is that
    redis-server; the example files named in `scripts` are copied next to the YAML (their
    LuaFilters use scriptFile). Returns namespace(port={name: port}, meltemi, conf)."""

    def deploy(services, files, scripts=(), workers=1):
        all_files, ports = {}, {}
        for name, redis in services.items():
            vip = VIPS[name]
            ports[name] = free_port(vip)
            all_files[f"svc-{name}.yaml"] = configs.service_entry(
                name, vip, ports[name], redis.port, namespace=NS)
        all_files.update(files)
        for s in scripts:
            all_files[s] = example(s)
        conf = config_dir(all_files)
        m = meltemi_factory(conf, workers=workers)
        return types.SimpleNamespace(port=ports, meltemi=m, conf=conf)

    return deploy


def conn(env, service):
    return RespConn(VIPS[service], env.port[service])


# ---- deny-commands -----------------------------------------------------------------------------

def test_deny_commands(redis_factory, filtered):
    redis = redis_factory()
    env = filtered({"redis-main": redis}, {"deny-commands.yaml": example("deny-commands.yaml")},
                   ["deny-commands.lua"])
    c = conn(env, "redis-main")
    assert c.call("SET", "keep", "me") == b"OK"
    message = "NOPERM this command is disabled by the proxy"
    denied = [("FLUSHALL",), ("flushdb",), ("KEYS", "*"), ("SCRIPT", "FLUSH")]
    for cmd in denied:
        assert c.call(*cmd) == f"{message} ({cmd[0].lower()})", cmd
    # CONFIG and DEBUG are forwarded by meltemi (administration is transparent), so the
    # example's ^config$ and ^debug$ deny them; SHUTDOWN is refused by meltemi itself, before
    # any filter runs (so ^shutdown$ never matches). None of them reaches Redis.
    for cmd in (("CONFIG", "GET", "maxmemory"), ("DEBUG", "SLEEP", "0")):
        assert c.call(*cmd) == f"{message} ({cmd[0].lower()})", cmd
    assert c.call("SHUTDOWN") == ("ERR meltemi: 'shutdown' is refused: it would stop the Redis "
                                  "server that every client of this proxy shares")
    # What the patterns do not match goes through: ^config$ is not a prefix match.
    assert c.call("GET", "keep") == b"me"
    assert c.call("DBSIZE") == 1
    assert c.call("PING") == b"PONG"
    c.close()
    # None of it reached Redis; the data is still there.
    r = redis.client()
    stats = r.info("commandstats")
    assert not [k for k in stats if re.match(r"cmdstat_(flush|config|keys|debug|script|shut)", k)]
    assert r.get("keep") == b"me"
    wait_until(lambda: lua_counter(env.meltemi, "denied_commands", "flushall") == 1, 5,
               "meltemi_lua_counter_total{name=denied_commands,label=flushall}")
    assert lua_counter(env.meltemi, "denied_commands", "keys") == 1
    assert lua_counter(env.meltemi, "denied_commands", "config") == 1
    assert lua_counter(env.meltemi, "denied_commands", "shutdown") == 0


# ---- tenant-prefix -----------------------------------------------------------------------------

def test_tenant_prefix_keeps_tenants_apart(redis_factory, filtered):
    redis = redis_factory()
    env = filtered({"tenant-a": redis, "tenant-b": redis},
                   {"tenant-prefix.yaml": example("tenant-prefix.yaml")}, ["tenant-prefix.lua"])
    a, b = conn(env, "tenant-a"), conn(env, "tenant-b")
    assert a.call("SET", "k", "from a") == b"OK"
    assert b.call("SET", "k", "from b") == b"OK"
    assert a.call("GET", "k") == b"from a" and b.call("GET", "k") == b"from b"
    r = redis.client()
    assert r.get("a:k") == b"from a" and r.get("b:k") == b"from b" and r.get("k") is None
    # Every key of a multi-key command gets the prefix.
    assert a.call("MSET", "x", "1", "y", "2") == b"OK"
    assert a.call("MGET", "x", "y", "k") == [b"1", b"2", b"from a"]
    assert b.call("MGET", "x", "y") == [None, None]
    assert sorted(r.keys("a:*")) == [b"a:k", b"a:x", b"a:y"]
    assert a.call("RENAME", "x", "z") == b"OK" and r.get("a:z") == b"1"
    assert a.call("DEL", "y", "z") == 2
    # Commands that would see across tenants are refused; keyless local ones are fine.
    assert a.call("KEYS", "*") == "NOPERM keys is not allowed for tenants"
    assert a.call("SCAN", "0") == "NOPERM scan is not allowed for tenants"
    assert a.call("EVAL", "return 1", "0") == "NOPERM eval is not allowed for tenants"
    assert a.call("PING") == b"PONG"
    assert b.call("DEL", "k") == 1 and r.get("a:k") == b"from a"
    a.close()
    b.close()


# ---- route-by-pattern --------------------------------------------------------------------------

def test_route_by_pattern(redis_factory, filtered):
    app, sessions = redis_factory(name="app"), redis_factory(name="sessions")
    env = filtered({"redis-app": app, "redis-sessions": sessions},
                   {"route-by-pattern.yaml": example("route-by-pattern.yaml")},
                   ["route-by-pattern.lua"])
    c = conn(env, "redis-app")
    to_sessions = ["session:abc123", "session:DEADbeef", "user:42:session"]
    to_app = ["session:xyz", "session:", "user:x:session", "user:42:sessions", "other"]
    for k in to_sessions + to_app:
        assert c.call("SET", k, f"v-{k}") == b"OK"
    ra, rs = app.client(), sessions.client()
    for k in to_sessions:
        assert (rs.get(k), ra.get(k)) == (f"v-{k}".encode(), None), k
    for k in to_app:
        assert (ra.get(k), rs.get(k)) == (f"v-{k}".encode(), None), k
    assert [c.call("GET", k) for k in to_sessions] == [f"v-{k}".encode() for k in to_sessions]
    assert c.call("PING") == b"PONG" and c.call("DBSIZE") == len(to_app)  # keyless: redis-app
    c.close()


# ---- hot-keys ----------------------------------------------------------------------------------

def test_hot_keys(redis_factory, filtered):
    redis = redis_factory()
    yaml = example("hot-keys.yaml")
    # A short window and a low bar, so one test sees a window close.
    yaml = yaml.replace("window_ms: 10000", "window_ms: 300").replace(
        "min_count: 100", "min_count: 5").replace("top: 5", "top: 2")
    assert "window_ms: 300" in yaml and "min_count: 5" in yaml and "top: 2" in yaml
    env = filtered({"redis-main": redis}, {"hot-keys.yaml": yaml}, ["hot-keys.lua"])
    c = conn(env, "redis-main")
    counts = {"hot": 50, "warm": 20, "mild": 10, "cold": 3}
    for key, n in counts.items():
        for _ in range(n):
            assert c.call("INCR", key) in range(1, 51)
    # The report answers locally and is empty until a window has closed.
    first = c.call("GET", "meltemi:hotkeys")
    assert first in ([], [b"hot 50", b"warm 20"]), first
    report = wait_until(lambda: c.call("GET", "meltemi:hotkeys") or None, 10,
                        "a closed window's hot keys")
    assert report == [b"hot 50", b"warm 20"]
    assert lua_counter(env.meltemi, "hot_key", "hot") == 50
    assert lua_counter(env.meltemi, "hot_key", "warm") == 20
    assert lua_counter(env.meltemi, "hot_key", "mild") == 0  # not in the top 2
    assert "cmdstat_get" not in redis.client().info("commandstats"), "the report never hits Redis"
    assert redis.client().get("hot") == b"50"
    assert "hot keys: hot 50, warm 20" in env.meltemi.output()
    c.close()


# ---- runaway filters ---------------------------------------------------------------------------

RUNAWAY = """\
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata:
  name: runaway
  namespace: demo
spec:
  hosts: [filtered]
  timeout: 5s   # these cases are about the budget and the cap; the clock has its own test
  script: |
    return {
      on_request = function(msg, ctx)
        if msg.key == "loop" then
          while true do end
        elseif msg.key == "alloc" then
          local t = {}
          while true do t[#t + 1] = string.rep("x", 4096) .. #t end
        elseif msg.key == "throw" then
          error("thrown on purpose")
        elseif msg.key == "catch" then
          -- the sandbox's pcall does not let a filter swallow the budget
          pcall(function() while true do end end)
          return ctx:reply("escaped")
        end
      end,
    }
"""


class Bystander:
    """Another client on the same listener, looping SET/GET until stopped."""

    def __init__(self, host, port):
        self.c = RespConn(host, port, timeout=30)
        self.ok, self.bad = 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                r1 = self.c.call("SET", "bystander", str(i))
                r2 = self.c.call("GET", "bystander")
            except Exception as exc:  # a dropped connection is a failure too
                self.bad.append(repr(exc))
                return
            if r1 == b"OK" and r2 == str(i).encode():
                self.ok += 1
            else:
                self.bad.append((r1, r2))

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        self.c.close()


@pytest.mark.parametrize("key, why", [
    ("loop", "instruction budget exceeded"),
    ("alloc", "memory limit exceeded"),
    ("throw", "thrown on purpose"),
    ("catch", "instruction budget exceeded"),
])
def test_runaway_filter_fails_only_its_request(redis_factory, filtered, key, why):
    redis = redis_factory()
    env = filtered({"filtered": redis}, {"runaway.yaml": RUNAWAY}, workers=1)
    host, port = VIPS["filtered"], env.port["filtered"]
    bystander = Bystander(host, port)
    wait_until(lambda: bystander.ok >= 20 or bystander.bad, 10, "the bystander to get going")
    c = RespConn(host, port, timeout=60)
    for _ in range(2):
        before = bystander.ok
        reply = c.call("GET", key)
        assert isinstance(reply, RespError), reply
        assert reply.startswith("ERR meltemi: filter runaway failed: ") and why in reply, reply
        # The same connection, and the worker, go on serving.
        assert c.call("SET", "after", "1") == b"OK" and c.call("GET", "after") == b"1"
        wait_until(lambda: bystander.ok > before + 10 or bystander.bad, 10,
                   "the bystander to be served after the runaway request")
    bystander.finish()
    assert bystander.bad == [] and bystander.ok > 20
    c.close()
    fresh = RespConn(host, port)
    assert fresh.call("PING") == b"PONG" and fresh.call("GET", "after") == b"1"
    fresh.close()
    assert lua_counter(env.meltemi, "filter_errors", "runaway") == 2
    kills = 0 if key == "throw" else 2  # the sandbox's limits stopped it, not the filter
    assert lua_counter(env.meltemi, "filter_budget_kills", "runaway") == kills
    assert re.search(rf"runaway failed.*{why}", env.meltemi.output())  # logged
    assert redis.client().get("bystander") is not None


def test_memory_of_a_runaway_filter_is_given_back(redis_factory, filtered):
    """Ten unbounded allocations in a row: each is stopped at the cap and collected, so the
    worker's Lua state does not grow with them (the eleventh is still an ordinary request)."""
    redis = redis_factory()
    env = filtered({"filtered": redis}, {"runaway.yaml": RUNAWAY}, workers=1)
    c = RespConn(VIPS["filtered"], env.port["filtered"], timeout=60)
    for _ in range(10):
        reply = c.call("GET", "alloc")
        assert isinstance(reply, RespError) and "memory limit exceeded" in reply, reply
    assert c.call("SET", "k", "v") == b"OK" and c.call("GET", "k") == b"v"
    c.close()
    assert env.meltemi.running()


