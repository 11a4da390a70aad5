"""
INFO answered by meltemi with its own real figures (issue 10): server (uptime, pid, port,
worker threads), clients (connected_clients of the listener), memory (the process's RSS),
stats (connections and commands of the listener, instantaneous_ops_per_sec) and cpu
(getrusage), so that `redis-cli info` and `redis-cli --stat` show meltemi's real numbers.
"""

import os
import subprocess
import threading

from harness import RespConn, redis_cli, redis_py


def fields(info):
    out = {}
    for line in info.decode().splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def test_info_sections_have_the_proxys_figures(blog_env):
    env = blog_env(step=1, workers=2)
    others = [redis_py(env.host, env.port) for _ in range(3)]
    for o in others:
        o.ping()
    c = RespConn(env.host, env.port)
    for i in range(50):
        c.call("SET", f"i{i}", "v")
    f = fields(c.call("INFO"))
    assert int(f["process_id"]) == env.meltemi.proc.pid
    assert int(f["tcp_port"]) == env.port
    assert f["io_threads_active"] == "2"
    assert int(f["uptime_in_seconds"]) >= 0
    assert int(f["connected_clients"]) == 4  # the three redis-py clients and this one
    assert int(f["total_connections_received"]) >= 4
    assert int(f["total_commands_processed"]) >= 53
    with open(f"/proc/{env.meltemi.proc.pid}/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert 0.5 * rss < int(f["used_memory"]) < 2 * rss
    assert float(f["used_cpu_user"]) + float(f["used_cpu_sys"]) > 0
    assert f["cluster_enabled"] == "1"
    # a second INFO on this connection: the rate since the first, from real commands
    for i in range(200):
        c.call("GET", f"i{i % 50}")
    f2 = fields(c.call("INFO", "stats"))
    assert int(f2["total_commands_processed"]) >= int(f["total_commands_processed"]) + 200
    assert int(f2["instantaneous_ops_per_sec"]) > 0
    assert "process_id" not in f2  # only the section asked for
    for o in others:
        o.close()
    c.close()


def test_redis_cli_info_and_stat(blog_env):
    env = blog_env(step=1)
    r = redis_cli(env.host, env.port, "info", "clients")
    assert r.returncode == 0 and "connected_clients:1" in r.stdout, r.stdout
    load = redis_py(env.host, env.port)
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            load.set("k", "v")

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    # line-buffered: redis-cli writes through stdio, fully buffered into a pipe
    proc = subprocess.Popen(["stdbuf", "-oL", "redis-cli", "-h", env.host, "-p", str(env.port),
                             "--stat", "-i",
                             "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        reader = threading.Thread(target=lambda: lines.extend(
            proc.stdout.readline() for _ in range(5)), daemon=True)
        reader.start()
        reader.join(timeout=20)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        stop.set()
        t.join(timeout=10)
        load.close()
    rows = [ln.split() for ln in lines if ln.strip() and ln.split()[0].isdigit()]
    assert len(rows) >= 2, lines
    # keys mem clients blocked requests (+delta) connections
    mem = rows[-1][1]
    assert mem != "0B" and mem[-1] in "BKMG", rows
    assert int(rows[-1][2]) == 2  # redis-cli and the load client
    assert int(rows[-1][4]) > int(rows[0][4])  # the requests counter moves
