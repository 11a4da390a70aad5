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

extern __thread mt_verdict_t mt_verdict;

/* Preloads `meltemi.core` into L (worker states). */
void mt_bridge_open(mt_worker_t *w, lua_State *L);

/* Loads the policies of w->snap (w->chains, w->cluster_by_index). Errors are logged; a
 * listener whose chain failed to load forwards without one. */
void mt_bridge_apply(mt_worker_t *w);

/* Runs the chain of listener li (1-based) for a command; the verdict is in mt_verdict.
 * Returns 0, or -1 when the Lua side failed (mt_verdict then holds an error reply). */
int mt_bridge_request(mt_worker_t *w, uint32_t li, const redis_command_t *cmd,
                      const resp_request_t *req, uint64_t conn_id);

/* Which cluster (1-based index, 0: default) and prefix strip a key takes on listener li. */
uint32_t mt_bridge_route_key(mt_worker_t *w, uint32_t li, const char *key, size_t len,
                             uint32_t *strip);

void mt_bridge_conn_closed(mt_worker_t *w, uint64_t conn_id);
/* Worker exit: releases the thread's verdict buffers and the Lua counter cache. */
void mt_bridge_close(mt_worker_t *w);

static inline bool mt_bridge_has_chain(const mt_worker_t *w, uint32_t li)
{
    return li > 0 && li <= w->n_chains && w->chains[li - 1];
}

/* A filter of listener li has on_response. */
static inline bool mt_bridge_has_response(const mt_worker_t *w, uint32_t li)
{
    return li > 0 && li <= w->n_chains && w->chains[li - 1] == 2;
}

/* Shows a reply to the on_response filters of listener li; the verdict (has_reply /
 * has_error, delay_ms) says whether to replace it. */
void mt_bridge_response(mt_worker_t *w, uint32_t li, const redis_command_t *cmd, const char *p,
                        size_t len, uint64_t conn_id);

#endif
