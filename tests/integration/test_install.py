"""
test_install.py - `make install` into a staged DESTDIR, then the installed meltemi run from an
empty directory, configured through its environment variables only: --version, validate of an
installed example, and a real redis-cli PING through a listener of a configuration written for
the test. The man page lists every option and variable `meltemi run --help` does.

Needs the CMake build directory of the binary under test (MELTEMI_BIN's directory); skips
with that reason when the binary is not in one (an installed meltemi, a root filesystem).
"""

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

import configs
from harness import REPO, free_port, meltemi_bin, stop_pid, tail, wait_until


def build_dir():
    d = meltemi_bin().resolve().parent
    return d if (d / "CMakeCache.txt").is_file() else None


pytestmark = pytest.mark.skipif(build_dir() is None,
                                reason="the binary under test is not in a CMake build directory")


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    stage = tmp_path_factory.mktemp("stage")
    r = subprocess.run(["make", "-s", "-C", str(REPO), "install", f"BUILD_DIR={build_dir()}",
                        "PREFIX=/usr", f"DESTDIR={stage}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return stage


def test_install_lays_out_binary_helpers_lua_examples_and_man_page(staged):
    for rel in ("usr/bin/meltemi", "usr/bin/meltemi-iptables"):
        p = staged / rel
        assert p.is_file() and os.access(p, os.X_OK), rel
    for rel in ("usr/share/meltemi/lua/meltemi/compiler.lua",
                "usr/share/meltemi/policies/redis_fault.lua",
                "usr/share/doc/meltemi/examples/redis-demo/service-entry.yaml",
                "usr/share/doc/meltemi/README.md",
                "usr/share/doc/meltemi/docs/configuration.md",
                "usr/share/man/man1/meltemi.1"):
        assert (staged / rel).is_file(), rel
    # Every Lua module of the source tree is there.
    for f in (REPO / "lua").rglob("*.lua"):
        assert (staged / "usr/share/meltemi/lua" / f.relative_to(REPO / "lua")).is_file(), f
    # Nothing was written outside DESTDIR's prefix.
    assert sorted(p.name for p in staged.iterdir()) == ["usr"]


def test_man_page_lists_every_run_option_and_variable(staged):
    man = (staged / "usr/share/man/man1/meltemi.1").read_text()
    help_text = subprocess.run([str(staged / "usr/bin/meltemi"), "run", "--help"],
                               capture_output=True, text=True, timeout=30).stdout
    opts = re.findall(r"^  (?:-c, )?(--[a-z-]+) \S+  \[(MELTEMI_[A-Z_]+)\]$", help_text, re.M)
    assert len(opts) >= 8, help_text
    flat = man.replace("\\-", "-")
    for flag, env in opts:
        assert flag in flat and env in flat, (flag, env)
    version = subprocess.run([str(staged / "usr/bin/meltemi"), "--version"],
                             capture_output=True, text=True, timeout=30).stdout.split()[-1]
    assert f'"meltemi {version}"' in man, "the man page carries the binary's version"


def test_installed_binary_runs_from_an_empty_directory(staged, tmp_path, redis_factory):
    empty = tmp_path / "empty"
    empty.mkdir()
    binary = str(staged / "usr/bin/meltemi")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELTEMI_")}
    v = subprocess.run([binary, "--version"], cwd=empty, env=env, capture_output=True,
                       text=True, timeout=30)
    assert v.returncode == 0 and v.stdout.startswith("meltemi "), v
    r = subprocess.run([binary, "validate", str(staged / "usr/share/doc/meltemi/examples/redis-demo")],
                       cwd=empty, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("ok: "), r

    redis = redis_factory()
    vip, port, admin = "127.0.0.1", free_port(), f"127.0.0.1:{free_port()}"
    conf = configs.write_config(tmp_path / "conf", {
        "svc.yaml": configs.service_entry("redis-single", vip, port, redis.port)})
    log = tmp_path / "meltemi.log"
    run_env = {**env, "MELTEMI_CONFIG": str(conf), "MELTEMI_ADMIN": admin,
               "MELTEMI_WORKERS": "1"}
    with open(log, "wb") as out:
        p = subprocess.Popen([binary, "run"], cwd=empty, env=run_env, stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: subprocess.run(["curl", "-fsS", f"http://{admin}/ready"],
                                          capture_output=True).returncode == 0 or p.poll() is not None,
                   timeout=15, what="the installed meltemi's /ready")
        assert p.poll() is None, tail(log)
        pong = subprocess.run(["redis-cli", "-h", vip, "-p", str(port), "PING"],
                              capture_output=True, text=True, timeout=15)
        assert pong.stdout.strip() == "PONG", pong
        stats = subprocess.run(["curl", "-fsS", f"http://{admin}/stats/prometheus"],
                               capture_output=True, text=True, timeout=15).stdout
        assert re.search(rf'meltemi_requests_total\{{listener="{vip}:{port}"[^}}]*\}} [1-9]',
                         stats), stats
        assert list(empty.iterdir()) == [], "meltemi wrote nothing into its working directory"
    finally:
        assert stop_pid(p, signal.SIGTERM) == 0, tail(log)
