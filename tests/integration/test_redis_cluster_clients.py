"""
Cluster-aware clients kept on meltemi (issue 10): meltemi answers CLUSTER SLOTS / SHARDS /
NODES / INFO / MYID as a one-node cluster at the address the client connected to, owning all
16384 slots, in single-server and in Redis Cluster mode, so redis-py's RedisCluster and
ioredis's Cluster open every connection to meltemi (which routes by slot itself) and none to
a backend. The check is exact: the local ports of every socket the client library opened
appear in no backend's CLIENT LIST.
"""

import sys
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from cluster_fixtures import cluster_proxy, redis_cluster, shared_cluster  # noqa: F401
from harness import RespConn

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from meta_env import run_node_peer  # noqa: E402


def backend_client_ports(nodes):
    ports = set()
    for n in nodes:
        for c in n.client().client_list():
            ports.add(int(c["addr"].rsplit(":", 1)[1]))
    return ports


def redis_py_cluster_local_ports(rc):
    ports = set()
    for node in rc.get_nodes():
        pool = node.redis_connection.connection_pool
        for conn in list(pool._available_connections) + list(pool._in_use_connections):
            if conn._sock is not None:
                ports.add(conn._sock.getsockname()[1])
    return ports


def exercise_redis_py(host, port):
    rc = RedisCluster(host=host, port=port, socket_timeout=10)
    keys = [f"rpc:{i}" for i in range(200)]
    for k in keys:
        assert rc.set(k, k.upper())
    assert [rc.get(k) for k in keys] == [k.upper().encode() for k in keys]
    assert rc.mget_nonatomic(keys[:50]) == [k.upper().encode() for k in keys[:50]]
    pipe = rc.pipeline()
    for k in keys[:30]:
        pipe.incr(f"{k}:n")
    assert pipe.execute() == [1] * 30
    nodes = {(n.host, n.port) for n in rc.get_nodes()}
    return rc, keys, nodes


def cluster_view(host, port):
    c = RespConn(host, port)
    slots = c.call("CLUSTER", "SLOTS")
    myid = c.call("CLUSTER", "MYID")
    nodes = c.call("CLUSTER", "NODES")
    shards = c.call("CLUSTER", "SHARDS")
    info = c.call("CLUSTER", "INFO")
    keyslot = c.call("CLUSTER", "KEYSLOT", "{user}1")
    arity = c.call("CLUSTER", "SLOTS", "x")
    c.close()
    return slots, myid, nodes, shards, info, keyslot, arity


@pytest.mark.parametrize("mode", ["single", "cluster"])
def test_cluster_view_is_one_node_at_the_proxy(mode, blog_env, redis_cluster, cluster_proxy):
    env = blog_env(step=1) if mode == "single" else cluster_proxy(redis_cluster, workers=1)
    slots, myid, nodes, shards, info, keyslot, arity = cluster_view(env.host, env.port)
    assert slots == [[0, 16383, [env.host.encode(), env.port, myid, []]]]
    assert len(myid) == 40 and int(myid, 16) >= 0
    assert nodes == (f"{myid.decode()} {env.host}:{env.port}@0 myself,master - 0 0 1 connected "
                     "0-16383\n").encode()
    assert shards[0][:3] == [b"slots", [0, 16383], b"nodes"]
    node = dict(zip(shards[0][3][0][::2], shards[0][3][0][1::2]))
    assert node[b"id"] == myid and node[b"port"] == env.port and node[b"role"] == b"master"
    assert b"cluster_state:ok\r\n" in info and b"cluster_known_nodes:1\r\n" in info
    assert keyslot == redis_cluster.keyslot("{user}1")  # as Redis computes it
    assert arity == "ERR wrong number of arguments for 'cluster|slots' command"
    # the same id from another connection (and so from any worker)
    assert cluster_view(env.host, env.port)[1] == myid


def test_redis_py_cluster_client_on_a_single_server(blog_env):
    env = blog_env(step=1)
    rc, keys, nodes = exercise_redis_py(env.host, env.port)
    assert nodes == {(env.host, env.port)}
    local = redis_py_cluster_local_ports(rc)
    assert local and not local & backend_client_ports([env.redis])
    assert env.redis.client().get(keys[7]) == keys[7].upper().encode()
    rc.close()


def test_redis_py_cluster_client_on_a_redis_cluster(redis_cluster, cluster_proxy):
    env = cluster_proxy(redis_cluster, workers=2)
    rc, keys, nodes = exercise_redis_py(env.host, env.port)
    assert nodes == {(env.host, env.port)}
    local = redis_py_cluster_local_ports(rc)
    assert local and not local & backend_client_ports(redis_cluster.alive())
    # the keys went to their slots' masters, through meltemi
    owner = redis_cluster.master_of_slot(redis_cluster.keyslot(keys[3]))
    assert owner.client().get(keys[3]) == keys[3].upper().encode()
    rc.close()


@pytest.mark.parametrize("mode", ["single", "cluster"])
def test_ioredis_cluster_client_stays_on_the_proxy(mode, blog_env, redis_cluster, cluster_proxy):
    env = blog_env(step=1) if mode == "single" else cluster_proxy(redis_cluster, workers=2)
    backends = [env.redis] if mode == "single" else redis_cluster.alive()
    out = run_node_peer("cluster_client.js", env.host, env.port)
    assert out["ok"] is True
    assert set(out["nodes"]) == {f"{env.host}:{env.port}"}
    # the connections were closed by disconnect(); their ports were never a backend's client
    assert out["localPorts"] and not set(out["localPorts"]) & backend_client_ports(backends)
