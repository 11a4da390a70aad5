"""
test_status_page.py - the admin's live status page in a real browser: headless Chromium
(Debian's chromium) loads http://ADMIN/ from a meltemi serving Redis traffic, its script runs
for a few (virtual) seconds, and the test reads the DOM it rendered: listeners, the service
with its request count, the cluster's endpoint healthy, several refreshes. A screenshot is
kept as an artifact (MELTEMI_ARTIFACTS, default build/test-artifacts/status_page.png).
"""

import os
import shutil
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

import configs
from harness import REPO, RespConn

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(args, tmp_path, timeout=90):
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
            "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=6000", "--window-size=1280,1000"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout)


class Dom(HTMLParser):
    """Rows of the page's tables (their data-* attributes and cell texts) and the body's."""

    def __init__(self):
        super().__init__()
        self.body = {}
        self.rows = {}  # table id -> [ {attrs, cells: [text], badges: [attrs]} ]
        self.table = None
        self.row = None
        self.cell = None
        self.ids = {}
        self.current_id = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "table":
            self.table = a.get("id")
            self.rows.setdefault(self.table, [])
        if tag == "tr" and self.table:
            self.row = {"attrs": a, "cells": [], "badges": []}
        if tag == "td" and self.row is not None:
            self.cell = ""
        if tag == "span" and self.row is not None and "badge" in a.get("class", ""):
            self.row["badges"].append(a)
        if "id" in a:
            self.current_id = a["id"]
            self.ids[a["id"]] = {"attrs": a, "text": ""}

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        if self.current_id:
            self.ids[self.current_id]["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self.row is not None:
            self.row["cells"].append(self.cell.strip())
            self.cell = None
        if tag == "tr" and self.row is not None:
            if self.row["cells"]:
                self.rows[self.table].append(self.row)
            self.row = None
        if tag == "table":
            self.table = None
        if tag in ("b", "span", "div"):
            self.current_id = None


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package chromium)")
def test_status_page_renders_live_numbers(blog_env, tmp_path):
    env = blog_env(step=1)
    stop = threading.Event()
    sent = [0]

    def traffic():
        c = RespConn(env.host, env.port)
        end = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < end:
            assert c.call("SET", "k", "v") == b"OK"
            sent[0] += 1
            time.sleep(0.002)
        c.close()
    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        while sent[0] < 50:
            time.sleep(0.05)
        url = f"http://{env.meltemi.admin}/"
        out = chromium(["--dump-dom", url], tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        artifacts = Path(os.environ.get("MELTEMI_ARTIFACTS", REPO / "build" / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        shot = artifacts / "status_page.png"
        if shot.exists():
            shot.unlink()
        s = chromium([f"--screenshot={shot}", url], tmp_path)
        assert s.returncode == 0 and shot.exists() and shot.stat().st_size > 10000, s.stderr[-2000:]
    finally:
        stop.set()
        t.join(timeout=10)

    dom = Dom()
    dom.feed(out.stdout)
    assert int(dom.body.get("data-updates", "0")) >= 2, "the page refreshed itself"
    assert dom.ids["error"]["text"].strip() == ""
    assert dom.ids["state"]["text"] == "LIVE"
    assert dom.ids["reload"]["attrs"].get("data-generation") == "1"
    (lst,) = [r for r in dom.rows["listeners"] if r["attrs"].get("data-listener", "").startswith(env.host)]
    assert lst["cells"][1] == "1", lst  # one client connection
    (svc,) = [r for r in dom.rows["services"] if r["attrs"].get("data-service") == configs.HOST]
    assert svc["attrs"]["data-protocol"] == "redis"
    requests = int(svc["cells"][5])
    assert 50 <= requests <= sent[0], (requests, sent[0])
    assert svc["cells"][6] == "0", "no errors"
    assert svc["cells"][7].startswith("≤"), svc  # a p99 bound
    (cl,) = [r for r in dom.rows["clusters"] if r["attrs"].get("data-cluster", "").endswith(configs.HOST)]
    assert [b.get("data-health") for b in cl["badges"]] == ["healthy"]
    assert cl["cells"][1] == "redis"
