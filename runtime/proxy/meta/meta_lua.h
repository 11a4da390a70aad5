/*
 * meta_lua.h - Lua filters (LuaFilter) on MetaProtocol listeners: the C side of
 * lua/meltemi/meta/worker.lua. Per worker, it loads the snapshot's filters into the worker's
 * Lua state, calls on_request for each request of a filtered listener and on_response for
 * its replies, and exposes `meltemi.meta.core`, the functions through which the filters read
 * the message and answer with a verdict that meta_proxy.c carries out (route, native error,
 * delay, mirror, attribute mutation). docs/lua-filters.md is the user's guide.
 *
 * The verdict and the message it decides are valid during one call only; the message is the
 * caller's (decoded in place). Nothing here does I/O.
 */
#ifndef MELTEMI_META_LUA_H
#define MELTEMI_META_LUA_H

#include "runtime/core/worker.h"

#include "protocols/codec.h"

#define MT_META_VERDICT_MAX_MIRRORS 8
#define MT_META_VERDICT_MAX_SETS 16
#define MT_META_VERDICT_TEXT 400

/* A destination a filter named: a snapshot cluster (1-based index) and maybe a subset. */
typedef struct mt_meta_lua_dest {
    uint32_t cluster; /* 1-based index into the snapshot's clusters; 0: none */
    char *subset;     /* malloc'd; NULL: every endpoint */
} mt_meta_lua_dest_t;

/* What the filters decided for the current message; reset before each call. */
typedef struct mt_meta_verdict {
    mt_meta_lua_dest_t route; /* cluster 0: the MetaRouter (or the listener) decides */
    uint32_t delay_ms;
    bool has_error;
    bool failed; /* a filter threw (or hit a limit): has_error is its error */
    mt_error_kind_t error_kind;
    char error_text[MT_META_VERDICT_TEXT];
    mt_meta_lua_dest_t mirrors[MT_META_VERDICT_MAX_MIRRORS];
    uint32_t n_mirrors;
    mt_attr_t sets[MT_META_VERDICT_MAX_SETS]; /* malloc'd key/val; val.ptr NULL: remove */
    uint32_t n_sets;
    /* the message being decided (valid during the call only) */
    const mt_msg_t *msg;
    bool msg_is_reply;
    uint64_t seq; /* counts messages decided: says whether scratch holds this one */
} mt_meta_verdict_t;

typedef struct mt_meta_lua_counter mt_meta_lua_counter_t;

typedef struct mt_meta_lua {
    mt_worker_t *w;
    mt_meta_verdict_t verdict;
    uint8_t *chains; /* per listener index: 1 runs on_request, 2: also on_response */
    uint32_t n_chains;
    uint32_t n_clusters; /* of the snapshot the chains were built for */
    int request_ref, response_ref, conn_closed_ref;
    mt_meta_lua_counter_t *counters; /* Lua counter name -> stats block cache */
    mt_msg_t scratch; /* the current message decoded again with every attribute (meta_lua.c) */
    uint64_t scratch_seq;
    bool scratch_init, scratch_ok;
} mt_meta_lua_t;

/* Preloads `meltemi.meta.core` into w's Lua state, bound to b. */
void mt_meta_lua_open(mt_meta_lua_t *b, mt_worker_t *w);

/* Loads the filters of the worker's snapshot (w->snap). A filter that fails to load is logged
 * and answers every request of its listeners with a native error (as one that throws). */
void mt_meta_lua_apply(mt_meta_lua_t *b);

/* Runs the on_request filters of listener li (1-based) for request msg; the verdict is in
 * b->verdict. */
void mt_meta_lua_request(mt_meta_lua_t *b, uint32_t li, const mt_msg_t *msg, uint64_t conn_id);

/* Runs the on_response filters of listener li for reply msg to the request `op`
 * ("interface.method", may be empty) that took duration_ms. */
void mt_meta_lua_response(mt_meta_lua_t *b, uint32_t li, const mt_msg_t *msg, const char *op,
                          double duration_ms, uint64_t conn_id);

void mt_meta_lua_conn_closed(mt_meta_lua_t *b, uint64_t conn_id);
/* Worker exit: the verdict's buffers, the chains, the counter cache. */
void mt_meta_lua_close(mt_meta_lua_t *b);

static inline bool mt_meta_lua_has_chain(const mt_meta_lua_t *b, uint32_t li)
{
    return li > 0 && li <= b->n_chains && b->chains[li - 1];
}

static inline bool mt_meta_lua_has_response(const mt_meta_lua_t *b, uint32_t li)
{
    return li > 0 && li <= b->n_chains && b->chains[li - 1] == 2;
}

#endif
