"""
test_configmap_reload.py - a configuration directory laid out as the kubelet mounts a
ConfigMap, and updated the way the kubelet updates it (pkg/volume/util/atomic_writer.go):

    conf/..2026_12_03_10_00_00.000000001/svc.yaml    the files of one version
    conf/..data -> ..2026_12_03_10_00_00.000000001   the current version
    conf/svc.yaml -> ..data/svc.yaml                 what a reader opens

An update writes a new timestamped directory, points a new symlink ..data_tmp at it, renames
..data_tmp over ..data (the one atomic step) and removes the old directory. The visible
svc.yaml never changes as a directory entry, so a watcher that looks only for *.yaml names
misses the update: meltemi must reload on the ..data rename, exactly once per update.
"""

import json
import os
import shutil
import time

import configs
from harness import VIP, RespConn, free_port, wait_until


class ConfigMapDir:
    """A ConfigMap volume: write(files) publishes a new version atomically, as the kubelet."""

    def __init__(self, root):
        self.root = root
        self.root.mkdir()
        self.n = 0
        self.current = None

    def write(self, files):
        self.n += 1
        ts = self.root / f"..2026_12_03_10_00_{self.n:02d}.{self.n:09d}"
        ts.mkdir()
        for name, text in files.items():
            (ts / name).write_text(text)
        tmp_link = self.root / "..data_tmp"
        os.symlink(ts.name, tmp_link)
        os.rename(tmp_link, self.root / "..data")  # atomic: readers see old or new
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
        if self.current:
            shutil.rmtree(self.current)
        self.current = ts


def config_generation(m):
    status, body = m.http_get("/config_dump")
    assert status == 200, body
    return json.loads(body)["generation"]


def where(port, key):
    c = RespConn(VIP, port)
    try:
        return c.call("GET", key)
    finally:
        c.close()


def test_kubelet_symlink_swap_reloads_once_per_update(tmp_path, redis_factory, meltemi_factory):
    a, b = redis_factory(name="a"), redis_factory(name="b")
    a.client().set("who", "a")
    b.client().set("who", "b")
    port = free_port(VIP)
    cm = ConfigMapDir(tmp_path / "configmap")
    cm.write({"svc.yaml": configs.service_entry("redis-single", VIP, port, a.port)})
    assert (cm.root / "svc.yaml").is_symlink() and os.readlink(cm.root / "..data").startswith("..")
    m = meltemi_factory(cm.root)
    assert where(port, "who") == b"a"
    gen = config_generation(m)

    # The update: the endpoint moves to Redis b.
    cm.write({"svc.yaml": configs.service_entry("redis-single", VIP, port, b.port)})
    wait_until(lambda: config_generation(m) > gen, 10, "a reload after the ..data swap")
    assert where(port, "who") == b"b"
    time.sleep(1)  # the debounce (300 ms) is over: a second reload would show by now
    assert config_generation(m) == gen + 1, "one reload per update"

    # A second update, adding a file: its symlink appears after the swap, as the kubelet does.
    port2 = free_port(VIP)
    cm.write({"svc.yaml": configs.service_entry("redis-single", VIP, port, b.port),
              "svc2.yaml": configs.service_entry("redis-two", VIP, port2, a.port)})
    wait_until(lambda: config_generation(m) > gen + 1, 10, "a reload after the second swap")
    wait_until(lambda: _answers(port2), 10, "the new listener")
    assert where(port2, "who") == b"a"


def _answers(port):
    try:
        return where(port, "who") is not None
    except OSError:
        return False
