#!/usr/bin/python3
"""gen_redis_commands.py - regenerate protocols/redis/commands_table.c from Redis's COMMAND.

Starts a throwaway redis-server (Debian's) on a free 127.0.0.1 port, reads the raw COMMAND
reply with redis-py (python3-redis), stops the server by its PID, and writes the C table:
top-level commands sorted by name (their index is the dense id), their subcommands, key
specs, and a collision-free hash for allocation-free case-insensitive lookup. The proxy kind
of each command is assigned by the rules in proxy_kind() below.

Usage: /usr/bin/python3 tools/gen_redis_commands.py [--redis-server PATH] [--out FILE]
The generated file is committed; run this only when moving to another Redis version.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from redis.connection import Connection

# Bit orders shared with commands.c. ACL categories, tips and key spec flags are listed in
# the order Redis 7.0 prints them (acl.c ACLCommandCategories, addReplyFlagsForKeyArgs), so
# the C side prints COMMAND's reply in Redis's order by walking bits from low to high. The
# command flags follow commands.h's enum (its first 12 were agreed before this table
# existed); commands.c keeps a separate list in Redis's print order.
CMD_FLAGS = [
    ("write", "REDIS_CMD_WRITE"),
    ("readonly", "REDIS_CMD_READONLY"),
    ("admin", "REDIS_CMD_ADMIN"),
    ("pubsub", "REDIS_CMD_PUBSUB"),
    ("noscript", "REDIS_CMD_NOSCRIPT"),
    ("blocking", "REDIS_CMD_BLOCKING"),
    ("loading", "REDIS_CMD_LOADING"),
    ("stale", "REDIS_CMD_STALE"),
    ("fast", "REDIS_CMD_FAST"),
    ("no_auth", "REDIS_CMD_NO_AUTH"),
    ("movablekeys", "REDIS_CMD_MOVABLE_KEYS"),
    ("denyoom", "REDIS_CMD_DENYOOM"),
    ("skip_monitor", "REDIS_CMD_SKIP_MONITOR"),
    ("skip_slowlog", "REDIS_CMD_SKIP_SLOWLOG"),
    ("asking", "REDIS_CMD_ASKING"),
    ("no_mandatory_keys", "REDIS_CMD_NO_MANDATORY_KEYS"),
    ("no_async_loading", "REDIS_CMD_NO_ASYNC_LOADING"),
    ("no_multi", "REDIS_CMD_NO_MULTI"),
    ("allow_busy", "REDIS_CMD_ALLOW_BUSY"),
]
ACL_CATEGORIES = [
    "keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap",
    "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking", "dangerous",
    "connection", "transaction", "scripting",
]
TIPS = [
    "nondeterministic_output", "nondeterministic_output_order",
    "request_policy:all_nodes", "request_policy:all_shards", "request_policy:multi_shard",
    "request_policy:special", "response_policy:one_succeeded", "response_policy:all_succeeded",
    "response_policy:agg_logical_and", "response_policy:agg_logical_or", "response_policy:agg_min",
    "response_policy:agg_max", "response_policy:agg_sum", "response_policy:special",
]
KSPEC_FLAGS = ["RO", "RW", "OW", "RM", "access", "update", "insert", "delete", "not_key",
               "incomplete", "variable_flags"]

# ---- proxy kind rules --------------------------------------------------------------------
LOCAL = {"ping", "echo", "auth", "hello", "quit", "select", "client", "command", "info",
         "readonly", "readwrite"}
MULTI_KEY = {"mget", "mset", "del", "unlink", "exists", "touch"}
ALL_MASTERS = {"dbsize", "flushall", "flushdb", "keys", "scan", "randomkey"}
# Administration, transparent by default (issue 10): the one endpoint of a single-endpoint
# service, else every master with the replies merged. protocols/redis/admin.c says per
# subcommand how (and refuses the DEBUG subcommands that stop or crash a server).
BROADCAST = {"config", "debug", "memory", "latency", "slowlog", "script", "function", "bgsave",
             "bgrewriteaof", "save"}
# Flagged admin by Redis but harmless through a proxy: forwarded like any command.
ADMIN_FORWARDED = {"pfdebug", "pfselftest"}
# Transactions on an exclusive (leased) upstream connection: runtime/proxy/redis/tx.c.
TRANSACTION = {"multi", "exec", "discard", "watch", "unwatch"}
UNSUPPORTED = {
    "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
    "monitor", "sync", "psync",
    "wait", "waitaof", "shutdown", "replicaof", "slaveof", "failover", "cluster",
    # Beyond the agreed list: both change the state of the (shared, pooled) upstream
    # connection for whoever uses it next - RESET would even de-authenticate it.
    "reset", "asking",
}
# XREAD / XREADGROUP stay FORWARD: only their BLOCK form blocks; the data path asks
# redis_command_can_block() and leases a connection for that form. Every other command Redis
# flags `blocking` is BLOCKING (leased per command), so a Redis version that adds one cannot
# put it on a shared upstream connection by omission from a list.
BLOCKING_FORWARDED = {"xread", "xreadgroup"}


def proxy_kind(name, flags):
    if name in LOCAL:
        return "REDIS_PROXY_LOCAL"
    if name in MULTI_KEY:
        return "REDIS_PROXY_MULTI_KEY"
    if name in ALL_MASTERS:
        return "REDIS_PROXY_ALL_MASTERS"
    if name in BROADCAST:
        return "REDIS_PROXY_BROADCAST"
    if name in TRANSACTION:
        return "REDIS_PROXY_TRANSACTION"
    if name in ADMIN_FORWARDED:
        return "REDIS_PROXY_FORWARD"
    # A command Redis flags admin that is in none of the lists above (a newer Redis's) is
    # refused until someone decides what it does through a proxy.
    if name in UNSUPPORTED or "admin" in flags:
        return "REDIS_PROXY_UNSUPPORTED"
    if "blocking" in flags and name not in BLOCKING_FORWARDED:
        return "REDIS_PROXY_BLOCKING"
    return "REDIS_PROXY_FORWARD"


# Commands whose keys Redis finds with a getkeys procedure instead of its key specs (their
# specs are incomplete or unknown, or a keyword value could be mistaken for the keyword).
KEYS_PROC = {
    "xread": "REDIS_KEYS_PROC_XREAD",
    "xreadgroup": "REDIS_KEYS_PROC_XREAD",
    "sort": "REDIS_KEYS_PROC_SORT",
    "migrate": "REDIS_KEYS_PROC_MIGRATE",
}


# ---- the hash (must match redis_command__hash in commands.c) ------------------------------
HASH_SLOTS = 4096
M32 = 0xFFFFFFFF


def cmd_hash(name, seed):
    h = seed
    for ch in name.encode():
        h ^= ch | 0x20
        h = (h * 16777619) & M32
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & M32
    h ^= h >> 12
    return h


def find_seed(names):
    for seed in range(1, 1 << 20):
        seen = set()
        for n in names:
            s = cmd_hash(n, seed) & (HASH_SLOTS - 1)
            if s in seen:
                break
            seen.add(s)
        else:
            return seed
    raise SystemExit("no collision-free seed found")


# ---- talking to a throwaway redis-server ---------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_command_reply(server_bin):
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="meltemi-gen-")
    proc = subprocess.Popen(
        [server_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                conn = Connection(host="127.0.0.1", port=port, socket_timeout=5)
                conn.connect()
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.05)
        conn.send_command("INFO", "server")
        info = conn.read_response().decode()
        version = [l.split(":")[1].strip() for l in info.splitlines()
                   if l.startswith("redis_version:")][0]
        conn.send_command("COMMAND")
        reply = conn.read_response()
        conn.disconnect()
        return version, reply
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- turning the reply into C --------------------------------------------------------------
def s(b):
    return b.decode() if isinstance(b, bytes) else b


def c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pairs(lst):
    return {s(k): v for k, v in zip(lst[::2], lst[1::2])}


def bits(values, order, what, name):
    out = 0
    for v in values:
        v = s(v).lstrip("@")
        if v not in order:
            raise SystemExit(f"{name}: unknown {what} {v!r}: add it to the generator and the C side")
        out |= 1 << order.index(v)
    return out


def tip_seq(tips, name):
    """Tips in Redis's order, 4 bits each (index + 1), first tip in the low bits."""
    if len(tips) > 4:
        raise SystemExit(f"{name}: more than 4 tips")
    seq = 0
    for i, tip in enumerate(tips):
        seq |= (TIPS.index(s(tip)) + 1) << (4 * i)
    return seq


def parse_key_spec(ks, name):
    d = pairs(ks)
    bs, fk = pairs(d["begin_search"]), pairs(d["find_keys"])
    spec = {"flags": bits(d["flags"], KSPEC_FLAGS, "key spec flag", name),
            "notes": c_string(s(d["notes"])) if "notes" in d else "NULL"}
    bsp = pairs(bs["spec"]) if bs["spec"] else {}
    fkp = pairs(fk["spec"]) if fk["spec"] else {}
    t = s(bs["type"])
    if t == "index":
        spec["bs"] = ("REDIS_KSPEC_BS_INDEX", int(bsp["index"]), "NULL")
    elif t == "keyword":
        spec["bs"] = ("REDIS_KSPEC_BS_KEYWORD", int(bsp["startfrom"]), '"%s"' % s(bsp["keyword"]))
    else:
        spec["bs"] = ("REDIS_KSPEC_BS_UNKNOWN", 0, "NULL")
    t = s(fk["type"])
    if t == "range":
        spec["fk"] = ("REDIS_KSPEC_FK_RANGE", int(fkp["lastkey"]), int(fkp["keystep"]),
                      int(fkp["limit"]))
    elif t == "keynum":
        spec["fk"] = ("REDIS_KSPEC_FK_KEYNUM", int(fkp["keynumidx"]), int(fkp["firstkey"]),
                      int(fkp["keystep"]))
    else:
        spec["fk"] = ("REDIS_KSPEC_FK_UNKNOWN", 0, 0, 0)
    return spec


def parse_command(e):
    name = s(e[0])
    flags = [s(f) for f in e[2]]
    return {
        "name": name,
        "arity": int(e[1]),
        "flags": flags,
        "flag_expr": " | ".join(c for f, c in CMD_FLAGS if f in flags) or "0",
        "unknown_flags": [f for f in flags if f not in dict(CMD_FLAGS)],
        "first": int(e[3]), "last": int(e[4]), "step": int(e[5]),
        "acl": bits(e[6], ACL_CATEGORIES, "ACL category", name),
        "tips": bits(e[7], TIPS, "tip", name),
        "tip_seq": tip_seq(e[7], name),
        "specs": [parse_key_spec(ks, name) for ks in e[8]],
        # sorted: Redis lists them in its dict's order, which changes with every start
        "subs": sorted((parse_command(x) for x in e[9]), key=lambda c: c["name"]),
    }


def c_command(c, cid, kind, spec_first, sub_first):
    return (f'    {{"{c["name"]}", {c["arity"]}, {c["flag_expr"]}, {c["first"]}, {c["last"]}, '
            f'{c["step"]}, {kind}, {cid}, {len(c["name"])}, {len(c["specs"])}, {spec_first}, '
            f'{len(c["subs"])}, {sub_first}, 0x{c["acl"]:x}, 0x{c["tips"]:x}, 0x{c["tip_seq"]:x}, '
            f'{KEYS_PROC.get(c["name"], "REDIS_KEYS_PROC_SPECS")}}},')


def render(version, reply):
    cmds = sorted((parse_command(e) for e in reply), key=lambda c: c["name"])
    for c in cmds + [x for c in cmds for x in c["subs"]]:
        if c["unknown_flags"]:
            raise SystemExit(f'{c["name"]}: unknown flags {c["unknown_flags"]}')
    if len(cmds) > 255:
        raise SystemExit("more than REDIS_COMMAND_MAX commands")
    top_names = [c["name"] for c in cmds]
    seed = find_seed(top_names)
    slots = [0] * HASH_SLOTS
    for i, n in enumerate(top_names):
        slots[cmd_hash(n, seed) & (HASH_SLOTS - 1)] = i + 1

    specs, top_rows, sub_rows = [], [], []
    subs_flat = []
    for i, c in enumerate(cmds):
        kind = proxy_kind(c["name"], c["flags"])
        top_rows.append(c_command(c, i, kind, len(specs), len(subs_flat)))
        specs.extend(c["specs"])
        for sc in c["subs"]:
            subs_flat.append((sc, i, kind))
    for sc, parent, kind in subs_flat:
        sub_rows.append(c_command(sc, parent, kind, len(specs), 0))
        specs.extend(sc["specs"])

    out = []
    w = out.append
    w("/*")
    w(f" * commands_table.c - GENERATED by tools/gen_redis_commands.py from redis-server {version}'s")
    w(" * COMMAND reply. Do not edit: change the generator's rules and run it again.")
    w(" *")
    w(" * Fields: name, arity, flags, first_key, last_key, key_step, proxy kind, id, name_len,")
    w(" * key_spec_count, key_spec_first, sub_count, sub_first, acl_categories, tips, tip_seq,")
    w(" * keys_proc.")
    w(" */")
    w("/* clang-format off */")
    w('#include "protocols/redis/commands.h"')
    w("")
    w(f"_Static_assert({len(cmds)} == REDIS_COMMAND_COUNT, \"regenerated table: update REDIS_COMMAND_COUNT\");")
    w("")
    w(f"const redis_command_t redis_command__table[REDIS_COMMAND_COUNT] = {{")
    out.extend(top_rows)
    w("};")
    w("")
    w(f"_Static_assert({len(sub_rows)} <= REDIS_SUBCOMMAND_MAX, \"regenerated table: raise REDIS_SUBCOMMAND_MAX\");")
    w(f"const size_t redis_command__subcommand_count = {len(sub_rows)};")
    w(f"const redis_command_t redis_command__subcommands[{len(sub_rows)}] = {{")
    out.extend(sub_rows)
    w("};")
    w("")
    w(f"const size_t redis_command__key_spec_count = {len(specs)};")
    w(f"const redis_key_spec_t redis_command__key_specs[{len(specs)}] = {{")
    for sp in specs:
        bt, bi, kw = sp["bs"]
        ft, a, b, cc = sp["fk"]
        w(f"    {{0x{sp['flags']:x}, {bt}, {ft}, {bi}, {kw}, {{{a}, {b}, {cc}}}, {sp['notes']}}},")
    w("};")
    w("")
    w(f"const uint32_t redis_command__hash_seed = {seed}u;")
    w(f"const uint8_t redis_command__hash_slots[REDIS_COMMAND__HASH_SLOTS] = {{")
    nz = [f"    [{k}] = {v}," for k, v in enumerate(slots) if v]
    out.extend(nz)
    w("};")
    maxlen = max(len(n) for n in top_names)
    w(f"const size_t redis_command__max_name_len = {maxlen};")
    w("")
    return "\n".join(out), len(cmds), len(sub_rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "protocols", "redis", "commands_table.c"))
    args = ap.parse_args()
    version, reply = read_command_reply(args.redis_server)
    text, n, nsub = render(version, reply)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"{args.out}: {n} commands, {nsub} subcommands (redis {version})", file=sys.stderr)


if __name__ == "__main__":
    main()
