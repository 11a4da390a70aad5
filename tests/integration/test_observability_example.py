"""
test_observability_example.py - examples/observability/ stays true: every metric the Grafana
dashboard queries is one a running meltemi exports (a Redis Cluster with enableCommandStats
served traffic, so the families made on first use exist too), and promtool accepts the
Prometheus scrape configuration.
"""

import json
import re
import shutil
import subprocess

import pytest

from cluster_fixtures import CLUSTER_VIP, cluster_yaml, redis_cluster, shared_cluster  # noqa: F401
from harness import REPO, RespConn, free_port
from prom import Metrics

EXAMPLE = REPO / "examples" / "observability"


def dashboard_metrics():
    dash = json.loads((EXAMPLE / "grafana-dashboard.json").read_text())
    names = set()
    for p in dash["panels"]:
        for t in p["targets"]:
            names |= set(re.findall(r"\b((?:istio|meltemi|process)_[a-z_]+)\b", t["expr"]))
    return names


def family(name, exported):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in exported:
            return name[: -len(suffix)]
    return name


def test_every_dashboard_metric_is_exported(redis_cluster, config_dir, meltemi_factory):  # noqa: F811
    port = free_port(CLUSTER_VIP)
    files = cluster_yaml(redis_cluster, port, read_policy="MASTER")
    files["redis-service.yaml"] = files["redis-service.yaml"].replace(
        "  settings:\n", "  settings:\n    enableCommandStats: true\n")
    m = meltemi_factory(config_dir(files), workers=1)
    c = RespConn(CLUSTER_VIP, port)
    for i in range(20):
        assert c.call("SET", f"k{i}", "v") == b"OK"
    c.close()
    status, text = m.http_get("/stats/prometheus")
    assert status == 200
    exported = Metrics(text).names()
    queried = dashboard_metrics()
    assert len(queried) >= 15, queried
    missing = sorted(n for n in queried if family(n, exported) not in exported)
    assert not missing, f"the dashboard queries metrics meltemi does not export: {missing}"


def test_prometheus_config_is_valid():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    p = subprocess.run([promtool, "check", "config", str(EXAMPLE / "prometheus.yml")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
