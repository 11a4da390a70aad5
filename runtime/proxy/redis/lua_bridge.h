/*
 * lua_bridge.h - the C side of docs/lua-bridge.md: loading a snapshot's policies and
 * filters into a worker's Lua state, calling them once per command, and the `meltemi.core`
 * functions through which they answer with a verdict that C then carries out.
 */
#ifndef MELTEMI_LUA_BRIDGE_H
#define MELTEMI_LUA_BRIDGE_H

#include "runtime/core/worker.h"

#include "protocols/redis/commands.h"
#include "protocols/redis/resp.h"

#define MT_VERDICT_MAX_MIRRORS 8
#define MT_VERDICT_MAX_SETS 16

typedef struct mt_verdict_set {
    uint32_t index; /* argument index, 0-based (1 = first argument after the command) */
    char *value;    /* malloc'd */
    size_t len;
} mt_verdict_set_t;

/* What the policies decided for the current command; reset before each call. */
typedef struct mt_verdict {
    uint32_t route; /* 1-based cluster index; 0: the listener's default */
    uint32_t strip; /* bytes to remove from the front of every key */
    uint32_t delay_ms;
    bool has_error;
    bool has_reply;
    resp_out_t reply; /* the error (as a RESP error) or the local reply */
    uint32_t mirrors[MT_VERDICT_MAX_MIRRORS];
    uint32_t n_mirrors;
    mt_verdict_set_t sets[MT_VERDICT_MAX_SETS];
    uint32_t n_sets;
    /* the command being decided (valid during the call only) */
    const resp_request_t *req;
    const redis_command_t *cmd;
} mt_verdict_t;

/* A listener whose chain is prefix routes only (worker.lua's c_route_table): decided here,
 * in C, without a Lua call per command. Routes longest prefix first. */
typedef struct mt_croute {
    char *prefix;
    uint32_t len;
    uint32_t idx; /* 1-based cluster index */
    uint32_t strip;
} mt_croute_t;

typedef struct mt_croutes {
    mt_croute_t *list;
    uint32_t n;
    bool case_insensitive; /* ASCII letters only, as the Lua patterns' [aA] classes */
    uint32_t default_idx, catch_idx, catch_strip;
} mt_croutes_t;

/* One worker's bridge: its Lua policies and the verdict of the command being decided. The
 * Redis proxy keeps it in its per-worker state (mt_redis_worker_t). */
typedef struct mt_bridge {
    mt_worker_t *w;
    mt_verdict_t verdict;
    uint8_t *chains;      /* per listener index: runs Lua per command (2: also on replies) */
    uint32_t *key_limits; /* per listener: key bytes Lua reads (UINT32_MAX: all) */
    uint32_t n_chains;
    mt_wcluster_t **cluster_by_index; /* the snapshot's clusters in order (1-based in Lua) */
    uint32_t n_cluster_index;
    int request_ref, route_key_ref, conn_closed_ref, response_ref;
    struct mt_lua_counter *counters; /* Lua counter name -> stats block cache */
    mt_croutes_t **croutes;          /* per listener index: NULL, or its routes decided in C */
    uint32_t n_croutes;
} mt_bridge_t;

/* Preloads `meltemi.core` into w's Lua state, bound to b. */
void mt_bridge_open(mt_bridge_t *b, mt_worker_t *w);

/* Loads the policies of the worker's snapshot (b->chains, b->cluster_by_index). Errors are logged;
 * a listener whose chain failed to load forwards without one. */
void mt_bridge_apply(mt_bridge_t *b);

/* Runs the chain of listener li (1-based) for a command; the verdict is in b->verdict.
 * Returns 0, or -1 when the Lua side failed (b->verdict then holds an error reply). */
int mt_bridge_request(mt_bridge_t *b, uint32_t li, const redis_command_t *cmd,
                      const resp_request_t *req, uint64_t conn_id);

/* Which cluster (1-based index, 0: default) and prefix strip a key takes on listener li. */
uint32_t mt_bridge_route_key(mt_bridge_t *b, uint32_t li, const char *key, size_t len,
                             uint32_t *strip);

void mt_bridge_conn_closed(mt_bridge_t *b, uint64_t conn_id);
/* Worker exit: releases the verdict buffers, the policy tables and the Lua counter cache. */
void mt_bridge_close(mt_bridge_t *b);

static inline bool mt_bridge_has_chain(const mt_bridge_t *b, uint32_t li)
{
    return li > 0 && li <= b->n_chains && b->chains[li - 1];
}

/* A filter of listener li has on_response. */
static inline bool mt_bridge_has_response(const mt_bridge_t *b, uint32_t li)
{
    return li > 0 && li <= b->n_chains && b->chains[li - 1] == 2;
}

/* Shows a reply to the on_response filters of listener li; the verdict (has_reply /
 * has_error, delay_ms) says whether to replace it. */
void mt_bridge_response(mt_bridge_t *b, uint32_t li, const redis_command_t *cmd, const char *p,
                        size_t len, uint64_t conn_id);

#endif
