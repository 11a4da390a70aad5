"""
conftest.py - fixtures for meltemi's integration tests: real redis-server instances, a real
meltemi process per test, config directories written from YAML text.

Run: /usr/bin/python3 -m pytest tests/integration (MELTEMI_BIN=path/to/meltemi, default
build/meltemi). ctest runs exactly that as the `integration` test.

Every process is started by the fixture and stopped by PID at teardown; a meltemi that is
still running at teardown gets SIGTERM and must exit 0 (the teardown fails otherwise).
"""

import os
import types

import pytest

import configs
from harness import VIP, Meltemi, RedisServer, free_port, meltemi_bin, redis_py, tail


@pytest.fixture(scope="session")
def meltemi_binary():
    path = meltemi_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"meltemi binary not found at {path}: build first (make build) or set "
                    f"MELTEMI_BIN", pytrace=False)
    return path


@pytest.fixture
def redis_factory(tmp_path):
    """start(password=None, port=None) -> a running RedisServer; all are killed at teardown."""
    servers = []

    def start(password=None, port=None, name="redis"):
        srv = RedisServer(tmp_path, port=port, password=password, name=name)
        servers.append(srv)
        return srv.start()

    yield start
    for srv in servers:
        srv.kill()


@pytest.fixture
def config_dir(tmp_path):
    """make(files: {name: yaml}) -> Path of a fresh config directory."""
    counter = [0]

    def make(files):
        counter[0] += 1
        return configs.write_config(tmp_path / f"conf{counter[0]}", files)

    return make


@pytest.fixture
def meltemi_factory(tmp_path, meltemi_binary):
    """start(config_dir, workers=1, wait_ready=True, **kw) -> a running Meltemi.
    At teardown every instance still running is sent SIGTERM and must exit 0."""
    instances = []

    def start(conf, workers=1, wait_ready=True, **kw):
        m = Meltemi(conf, tmp_path / "meltemi", workers=workers, **kw)
        instances.append(m)
        try:
            return m.start(wait_ready=wait_ready)
        except BaseException:
            m.kill()
            raise

    yield start
    failures = []
    for m in instances:
        if not m.running():
            continue
        try:
            rc = m.terminate()
        except AssertionError as exc:
            failures.append(f"{exc}\n{tail(m.stderr_path)}")
            continue
        if rc != 0:
            failures.append(f"meltemi exited {rc} on SIGTERM\n{tail(m.stderr_path)}")
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


@pytest.fixture
def blog_env(redis_factory, config_dir, meltemi_factory):
    """deploy(step=1|2, workers=1, files=None) -> an environment like the blog's: a
    redis-server with requirepass "testredis" behind meltemi, which listens on VIP:port.
    step=1 applies the Secret + RedisDestination (configs.STEP1: the Secret holds "testredis"),
    step=2 adds the RedisService.
    Returns a namespace: host, port, redis, meltemi, conf."""

    def deploy(step=1, workers=1, files=None, redis_password=configs.UPSTREAM_PASSWORD,
               **meltemi_kw):
        redis = redis_factory(password=redis_password)
        port = free_port(VIP)
        if files is None:
            files = {"redis-single.yaml": configs.STEP1}
            if step >= 2:
                files["redis-service.yaml"] = configs.BLOG_STEP2
        files = dict(files)
        files["service-entry.yaml"] = configs.service_entry("redis-single", VIP, port,
                                                            redis.port)
        conf = config_dir(files)
        m = meltemi_factory(conf, workers=workers, **meltemi_kw)
        return types.SimpleNamespace(host=VIP, port=port, redis=redis, meltemi=m, conf=conf)

    return deploy


@pytest.fixture
def redis_client():
    """make(host, port, **kw) -> redis.Redis with timeouts; closed at teardown."""
    clients = []

    def make(host, port, **kw):
        c = redis_py(host, port, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
