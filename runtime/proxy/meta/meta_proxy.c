/*
 * meta_proxy.c - the MetaProtocol data path (Dubbo, Thrift, any codec of protocols/codec.h):
 * client sessions, MetaRouter routing, mutation, mirroring, and the pooled upstream
 * connections that requests share.
 *
 * A client's frames are decoded in place in its read chunk (one decoder per direction). A
 * request is routed (meta_router.c), an endpoint of the destination's subset is picked, and
 * the frame is queued on that endpoint's pooled connection as a slice of the read chunk (no
 * copy) unless a mutation re-encodes it. Responses come back:
 *   - in order (Thrift: no MT_CODEC_F_MULTIPLEXED): the upstream connection keeps a FIFO of
 *     requests, like the Redis path; each session also keeps its requests in order and holds
 *     a reply that arrives before its turn;
 *   - by id (Dubbo): every request gets an id of its upstream connection (set_request_id on
 *     the way up, the client's id restored on the way back); a session answers as replies
 *     come, with its own ids.
 * Local answers (route not found, no healthy upstream, timeouts, upstream closed) are the
 * codec's native errors (on_error); heartbeats are answered here when the codec says so.
 *
 * Ownership: a request record (meta_req_t) sits on its session's list and on its upstream
 * connection's list. When a client goes away its in-flight records are orphaned (sess =
 * NULL) and freed when their replies arrive or time out. Mirror copies are records without
 * a session from the start. Upstream connections belong to a per-worker endpoint pool
 * (meta_ep_t) of a per-worker view of a cluster (meta_cluster_t), which holds a reference on
 * the worker's cluster and is freed once that cluster is retired and its connections closed.
 *
 * Worker hooks (mt_proxy_meta, at the end): request timeouts are the upstream shell's
 * deadline timer on the worker's wheel (up_on_deadline); the worker's tick runs the reaping, and a
 * drain waits while pooled upstream connections are still closing (busy). See docs/metaprotocol.md.
 */
#include "runtime/core/log.h"
#include "runtime/core/proxy.h"
#include "runtime/core/rls.h"
#include "runtime/core/session.h"
#include "runtime/core/upstream.h"
#include "runtime/core/worker.h"
#include "runtime/proxy/meta/meta_lua.h"
#include "runtime/proxy/meta/meta_methods.h"
#include "runtime/proxy/meta/meta_router.h"
#include "runtime/proxy/meta/meta_snapshot.h"
#include "runtime/proxy/meta/meta_stream.h"

#include "protocols/dubbo/dubbo.h"
#include "protocols/thrift/thrift.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQ_FREE_MAX 4096
#define ERR_TEXT 400

typedef struct meta_req meta_req_t;
typedef struct meta_sess meta_sess_t;
typedef struct meta_up meta_up_t;
typedef struct meta_ep meta_ep_t;
typedef struct meta_cluster meta_cluster_t;

/* ---- types ---------------------------------------------------------------------------------- */

struct meta_req {
    meta_req_t *sprev, *snext; /* session list, arrival order */
    meta_req_t *uprev, *unext; /* upstream list, send order */
    meta_sess_t *sess;         /* NULL: orphaned or a mirror copy */
    meta_up_t *up;             /* NULL: not on an upstream connection */
    uint64_t down_id;          /* the client's request id */
    uint64_t up_id;            /* id on the upstream connection (multiplexed codecs) */
    uint64_t deadline_ms;
    uint64_t start_ns;             /* the read's w->now_ns */
    const mt_cluster_conf_t *dest; /* where it went (Istio's labels) */
    mt_istio_set_t *set;           /* its subset's label set; NULL: dest's */
    const mt_wendpoint_t *ep;      /* where it was sent (the access log) */
    const char *subset_name;       /* its subset's name, or NULL (valid while snap is held) */
    bool traced;
    uint32_t req_bytes;
    uint16_t rflags;              /* Envoy response flags (MT_RF_*) */
    mt_stats_block_t *method;     /* its method's counts (meta_methods.h), or NULL */
    mt_slice_t frame;             /* the request as the client sent it: errors are built from it */
    mt_slice_t reply;             /* in-order sessions: a reply that came before its turn */
    const mt_meta_route_t *route; /* responseMutation, retries; valid while snap is held */
    mt_snapshot_t *snap;          /* held only when route has a response mutation or retries */
    /* retries (route->retry_attempts): where the request went and how many tries are left */
    const mt_cluster_conf_t *cluster;
    const mt_meta_subset_t *endpoints; /* the destination's endpoint set (subset or all) */
    uint64_t overall_deadline_ms;      /* the route's timeout over every try */
    int64_t last_ep;                   /* endpoint of the last try: a retry prefers another */
    uint32_t rr_index;
    uint32_t tries_left;
    mt_timer_t delay_timer; /* fault.delay or a filter's ctx:delay: pending while held */
    bool delayed;
    bool done;
    bool resp_filter; /* its listener's Lua filters look at the reply (on_response) */
    /* req_new clears the fields above; these two are written before they are read */
    char op[96];          /* interface.method, kept for the access log and spans ("": none) */
    mt_trace_ctx_t trace; /* its trace context, read only when traced */
};

/* Per worker view of one endpoint of a cluster: its pooled connections. */
struct meta_ep {
    meta_cluster_t *mc;
    mt_wendpoint_t *wep;
    uint32_t active; /* requests in flight (LEAST_REQUEST) */
};

struct meta_cluster {
    mt_wcluster_t *wc; /* holds one reference */
    const mt_codec_t *codec;
    meta_ep_t *eps; /* wc->n_eps of them, same order as the cluster's endpoints */
    uint32_t n_eps;
    uint32_t *rr; /* round-robin cursors: [0] the whole cluster, [1 + i] subset i */
    uint32_t n_rr;
    uint32_t n_open; /* open upstream connections */
    meta_cluster_t *next;
};

/* Open-addressing map upstream id -> request (multiplexed connections). Key 0 is empty. */
typedef struct meta_idmap {
    uint64_t *keys;
    meta_req_t **vals;
    uint32_t cap; /* power of two, or 0 */
    uint32_t n;
} meta_idmap_t;

/* A MetaProtocol upstream connection: the shell (upstream.h) first, then the response
 * decoder and the requests in flight (a FIFO, and an id map when multiplexed). */
struct meta_up {
    mt_upstream_t base;
    meta_ep_t *mep;
    const mt_codec_t *codec;
    void *dec; /* response decoder */
    mt_msg_t msg;
    meta_req_t *head, *tail; /* in flight, send order */
    meta_idmap_t ids;
    uint64_t next_id;
    bool multiplexed;
    mt_meta_stream_list_t streams; /* streams routed here (meta_stream.h) */
};

struct meta_sess {
    mt_session_t base; /* first: the uv handle is first in it */
    const mt_codec_t *codec;
    void *dec; /* request decoder */
    mt_msg_t msg;
    meta_req_t *head, *tail; /* waiting for a reply, arrival order */
    bool in_order;           /* replies leave in request order (the codec is not multiplexed) */
    bool codec_changed;      /* a reload gave the port another protocol: answer, then close */
    /* the request being handled (sess_on_frame): its start, size, destination once routed,
     * and the Envoy response flags (MT_RF_*) set on it; a local reply to it takes them */
    uint64_t cur_start_ns;
    uint32_t cur_bytes;
    uint16_t cur_flags;
    const mt_cluster_conf_t *cur_dest;
    uint8_t peer_ip[16];           /* the client's address bytes, for useSourceIp; read once */
    uint8_t peer_ip_len;           /* 0: not read yet */
    mt_meta_stream_list_t streams; /* this client's open streams */
    /* globalRateLimit: the frames from rbuf->pos on, in order, held while the first waits
     * for the rate limit service (reading is held meanwhile: base.held). Frames read after
     * it are decoded ahead, each into a message of its own, and asked about at once, so
     * their calls join the same batch (core/rls.h); each is handled in its turn. */
    struct meta_held *held; /* HELD_MAX of them once used, every message initialised */
    uint32_t n_held;
    uint32_t held_bytes;             /* of the held frames, from rbuf->pos */
    mt_meta_methods_cache_t methods; /* its last request's method (req_method_block) */
};

/* A frame held for globalRateLimit. */
typedef enum meta_held_kind {
    HELD_WAIT = 0, /* its call is in flight */
    HELD_ANSWERED, /* result and why (in err.text) are in */
    HELD_PLAIN,    /* decoded ahead, not asked about: handled from the start in its turn */
    HELD_MALFORMED /* decoding it failed (err): the session closes in its turn */
} meta_held_kind_t;

typedef struct meta_held {
    mt_msg_t msg;
    mt_rls_call_t *call; /* HELD_WAIT */
    uint64_t start_ns;   /* when it was read (its request's start) */
    mt_rls_result_t result;
    meta_held_kind_t kind;
    bool counted;       /* sess_on_frame's checks ran (the first frame): only the verdict is left */
    bool pass;          /* HELD_ANSWERED without asking: the limit does not apply to it */
    mt_codec_err_t err; /* HELD_MALFORMED; err.text: the answer's why for HELD_ANSWERED */
} meta_held_t;

/* Frames held at most per session (decoded ahead while the first waits): enough for a
 * client's pipeline (rpcload keeps 16), small enough for every session (~16 KiB once used). */
#define HELD_MAX 32

/* Everything meta_proxy keeps per worker (w->proxy[MT_PROTO_META]). */
typedef struct meta_worker {
    mt_worker_t *w;
    meta_cluster_t *clusters;
    uint32_t n_sess;
    meta_req_t *req_free;
    uint32_t n_req_free;
    uint64_t rng;
    mt_wbuf_t scratch; /* encode / on_error output, reused */
    mt_msg_t emsg;     /* a request re-decoded to build an error for it */
    bool emsg_init;
    uint64_t mutation_warnings;       /* "request mutation not applied": logged once per worker */
    mt_meta_match_data_t *match_data; /* regex route matches */
    mt_meta_lua_t lua;                /* LuaFilter on_request / on_response (meta_lua.h) */
    mt_rls_pool_t *rls;               /* globalRateLimit: this worker's connections, on first use */
} meta_worker_t;

static meta_worker_t *mw_of(mt_worker_t *w)
{
    return w->proxy[MT_PROTO_META];
}

static uint64_t mw_rand(meta_worker_t *mw)
{
    /* xorshift64*: cheap, per worker, good enough for weights, mirrors and RANDOM */
    uint64_t x = mw->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    mw->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

static void up_close(meta_up_t *u);
static void up_stream_frame(meta_worker_t *mw, meta_up_t *u, const mt_msg_t *msg, uint8_t *frame);
static void up_streams_fail(meta_worker_t *mw, meta_up_t *u);
static bool sess_rate_allows(meta_sess_t *s, const mt_msg_t *msg);
static const char *msg_method(const mt_msg_t *msg, char *buf, size_t n);
static void meta_trace_record(meta_sess_t *s, const meta_req_t *r, uint32_t code);

/* ---- request records ----------------------------------------------------------------------- */

static meta_req_t *req_new(meta_worker_t *mw)
{
    meta_req_t *r = mw->req_free;
    if (r) {
        mw->req_free = r->snext;
        mw->n_req_free--;
    } else {
        r = malloc(sizeof(*r));
        if (!r)
            return NULL;
    }
    /* everything before op: a whole record is ~3x that, and cleared per request */
    memset(r, 0, offsetof(meta_req_t, op));
    r->op[0] = '\0';
    return r;
}

static void req_free(meta_worker_t *mw, meta_req_t *r)
{
    mt_buf_pool_t *pool = &mw->w->pool;
    if (r->frame.buf)
        mt_buf_unref(pool, r->frame.buf);
    if (r->reply.buf)
        mt_buf_unref(pool, r->reply.buf);
    if (r->snap)
        mt_snapshot_unref(r->snap);
    if (mw->n_req_free >= REQ_FREE_MAX) {
        free(r);
        return;
    }
    r->snext = mw->req_free;
    mw->req_free = r;
    mw->n_req_free++;
}

/* ---- id map -------------------------------------------------------------------------------- */

static uint32_t idmap_home(uint64_t k, uint32_t cap)
{
    return (uint32_t)((k * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

static int idmap_grow(meta_idmap_t *m)
{
    uint32_t cap = m->cap ? m->cap * 2 : 64;
    uint64_t *keys = calloc(cap, sizeof(*keys));
    meta_req_t **vals = calloc(cap, sizeof(*vals));
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return -1;
    }
    for (uint32_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        uint32_t j = idmap_home(m->keys[i], cap);
        while (keys[j])
            j = (j + 1) & (cap - 1);
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return 0;
}

static int idmap_put(meta_idmap_t *m, uint64_t k, meta_req_t *r)
{
    if ((m->n + 1) * 2 > m->cap && idmap_grow(m) != 0)
        return -1;
    uint32_t j = idmap_home(k, m->cap);
    while (m->keys[j])
        j = (j + 1) & (m->cap - 1);
    m->keys[j] = k;
    m->vals[j] = r;
    m->n++;
    return 0;
}

/* Removes k and returns its request (NULL when absent). Backward-shift deletion: no
 * tombstones, so lookups stay short however long a connection lives. */
static meta_req_t *idmap_take(meta_idmap_t *m, uint64_t k)
{
    if (!m->cap || !k)
        return NULL;
    uint32_t mask = m->cap - 1, j = idmap_home(k, m->cap);
    while (m->keys[j] && m->keys[j] != k)
        j = (j + 1) & mask;
    if (!m->keys[j])
        return NULL;
    meta_req_t *r = m->vals[j];
    m->keys[j] = 0;
    m->vals[j] = NULL;
    m->n--;
    for (uint32_t i = (j + 1) & mask; m->keys[i]; i = (i + 1) & mask) {
        uint32_t h = idmap_home(m->keys[i], m->cap);
        /* move entry i into the hole at j unless its home lies cyclically in (j, i] */
        bool stays = j <= i ? (h > j && h <= i) : (h > j || h <= i);
        if (stays)
            continue;
        m->keys[j] = m->keys[i];
        m->vals[j] = m->vals[i];
        m->keys[i] = 0;
        m->vals[i] = NULL;
        j = i;
    }
    return r;
}

static void idmap_free(meta_idmap_t *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* ---- per-worker clusters and endpoints ------------------------------------------------------ */

/* The worker's cluster for conf, never creating one (that happens at snapshot apply only). A
 * session still on an older snapshot finds a retired cluster by pointer, or the live one of
 * the same name and definition. */
static mt_wcluster_t *meta_find_wcluster(mt_worker_t *w, const mt_cluster_conf_t *conf)
{
    for (mt_wcluster_t *c = w->clusters; c; c = c->next) {
        if (c->conf == conf)
            return c;
    }
    for (mt_wcluster_t *c = w->retired; c; c = c->next) {
        if (c->conf == conf)
            return c;
    }
    for (mt_wcluster_t *c = w->clusters; c; c = c->next) {
        if (strcmp(c->conf->name, conf->name) == 0 &&
            strcmp(c->conf->fingerprint, conf->fingerprint) == 0)
            return c;
    }
    return NULL;
}

static meta_cluster_t *meta_cluster_new(meta_worker_t *mw, mt_wcluster_t *wc,
                                        const mt_codec_t *fallback)
{
    meta_cluster_t *mc = calloc(1, sizeof(*mc));
    if (!mc)
        return NULL;
    const mt_meta_cluster_conf_t *cm = mt_meta_cluster(wc->conf);
    mc->n_eps = wc->n_eps;
    mc->n_rr = 1 + (cm ? cm->n_subsets : 0);
    mc->eps = calloc(mc->n_eps ? mc->n_eps : 1, sizeof(*mc->eps));
    mc->rr = calloc(mc->n_rr, sizeof(*mc->rr));
    bool ok = mc->eps && mc->rr;
    for (uint32_t i = 0; ok && i < mc->n_eps; i++) {
        mc->eps[i].mc = mc;
        mc->eps[i].wep = wc->eps[i];
    }
    if (!ok) {
        free(mc->eps);
        free(mc->rr);
        free(mc);
        return NULL;
    }
    mc->codec = cm && cm->codec_impl ? cm->codec_impl : fallback;
    mc->wc = wc;
    mt_wcluster_ref(wc);
    mc->next = mw->clusters;
    mw->clusters = mc;
    return mc;
}

static void meta_cluster_free(meta_worker_t *mw, meta_cluster_t *mc)
{
    for (meta_cluster_t **pp = &mw->clusters; *pp; pp = &(*pp)->next) {
        if (*pp == mc) {
            *pp = mc->next;
            break;
        }
    }
    free(mc->eps);
    free(mc->rr);
    mt_wcluster_unref(mc->wc);
    free(mc);
}

static meta_cluster_t *meta_cluster_get(meta_worker_t *mw, const mt_cluster_conf_t *conf,
                                        const mt_codec_t *fallback)
{
    if (!conf)
        return NULL;
    for (meta_cluster_t **pp = &mw->clusters; *pp; pp = &(*pp)->next) {
        meta_cluster_t *mc = *pp;
        if (mc->wc->conf == conf) {
            if (pp != &mw->clusters) { /* move to front: a handful of hot clusters */
                *pp = mc->next;
                mc->next = mw->clusters;
                mw->clusters = mc;
            }
            return mc;
        }
    }
    mt_wcluster_t *wc = meta_find_wcluster(mw->w, conf);
    if (!wc)
        return NULL;
    for (meta_cluster_t *mc = mw->clusters; mc; mc = mc->next) {
        if (mc->wc == wc)
            return mc;
    }
    return meta_cluster_new(mw, wc, fallback);
}

/* The picker's view of a cluster, minus the endpoint a retry moves away from. */
typedef struct meta_pick_ctx {
    meta_cluster_t *mc;
    int64_t exclude; /* -1: none */
} meta_pick_ctx_t;

static bool ep_healthy(void *ctx, uint32_t i)
{
    const meta_pick_ctx_t *pc = ctx;
    meta_cluster_t *mc = pc->mc;
    if (i >= mc->n_eps || (int64_t)i == pc->exclude)
        return false;
    return mt_upstream_healthy(mc->eps[i].wep, mt_worker_now_ms(mc->wc->w));
}

static uint32_t ep_load(void *ctx, uint32_t i)
{
    meta_cluster_t *mc = ((const meta_pick_ctx_t *)ctx)->mc;
    return i < mc->n_eps ? mc->eps[i].active : UINT32_MAX;
}

static const char *ep_label(const meta_ep_t *mep, char *buf, size_t n)
{
    return mt_upstream_label(mep->wep, buf, n);
}

/* The client's IP address bytes (4 or 16; a failed getpeername hashes as no bytes), read
 * from the socket the first time a useSourceIp ring asks. */
static mt_str_t sess_source_ip(meta_sess_t *s)
{
    if (s->peer_ip_len == 0) {
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        s->peer_ip_len = 1; /* read once, even when it fails */
        if (uv_tcp_getpeername(&s->base.tcp, (struct sockaddr *)&ss, &len) == 0) {
            if (ss.ss_family == AF_INET) {
                memcpy(s->peer_ip, &((struct sockaddr_in *)&ss)->sin_addr, 4);
                s->peer_ip_len = 1 + 4;
            } else if (ss.ss_family == AF_INET6) {
                memcpy(s->peer_ip, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
                s->peer_ip_len = 1 + 16;
            }
        }
    }
    return (mt_str_t){(const char *)s->peer_ip, (size_t)(s->peer_ip_len - 1)};
}

/* Picks an endpoint of subset ss of mc for msg (NULL for a retry: no attribute to hash) from
 * session s, other than `exclude` when another is healthy; -1 when none is healthy. */
static int64_t meta_pick(meta_worker_t *mw, meta_cluster_t *mc, const mt_meta_subset_t *ss,
                         uint32_t rr_index, const mt_msg_t *msg, meta_sess_t *s, int64_t exclude)
{
    mt_str_t source = {NULL, 0};
    if (MT_UNLIKELY(ss->hash_source_ip))
        source = sess_source_ip(s);
    meta_pick_ctx_t pc = {mc, exclude};
    mt_meta_lb_env_t env = {
        .healthy = ep_healthy,
        .load = ep_load,
        .ctx = &pc,
        .rr = &mc->rr[rr_index < mc->n_rr ? rr_index : 0],
        .rnd = mw_rand(mw),
        .hash_value = ss->hash_source_ip ? (source.len ? &source : NULL)
                      : ss->hash_key.ptr && msg
                          ? mt_msg_get(msg, ss->hash_key.ptr, ss->hash_key.len)
                          : NULL,
    };
    int64_t ep = mt_meta_lb_pick(ss, &env);
    if (ep < 0 && exclude >= 0) { /* the only healthy one: a retry goes there again */
        pc.exclude = -1;
        ep = mt_meta_lb_pick(ss, &env);
    }
    return ep >= 0 && (uint64_t)ep < mc->n_eps ? ep : -1;
}

/* ---- sessions: replies ---------------------------------------------------------------------- */

static void sess_unlink(meta_sess_t *s, meta_req_t *r)
{
    if (r->sprev)
        r->sprev->snext = r->snext;
    else
        s->head = r->snext;
    if (r->snext)
        r->snext->sprev = r->sprev;
    else
        s->tail = r->sprev;
    r->sprev = r->snext = NULL;
    s->base.pending--;
}

static void sess_push(meta_sess_t *s, meta_req_t *r)
{
    r->sess = s;
    r->snext = NULL;
    r->sprev = s->tail;
    if (s->tail)
        s->tail->snext = r;
    else
        s->head = r;
    s->tail = r;
    s->base.pending++;
}

/* In-order sessions: moves every answered request at the head into the output queue. */
static void sess_drain_done(meta_sess_t *s)
{
    meta_worker_t *mw = mw_of(s->base.w);
    while (s->head && s->head->done) {
        meta_req_t *r = s->head;
        sess_unlink(s, r);
        if (r->reply.buf) {
            mt_outq_add_slice(&s->base.out, r->reply);
            r->reply.buf = NULL;
        }
        req_free(mw, r);
    }
}

/* ---- Istio's response_code ----------------------------------------------------------------- */

/* Index of a code name in the listener's table; the last entry when it is not there. */
static uint32_t meta_code_named(const mt_istio_codes_t *c, const char *name, size_t n)
{
    for (uint32_t i = 0; i + 1 < c->n; i++) {
        if (strlen(c->names[i]) == n && memcmp(c->names[i], name, n) == 0)
            return i;
    }
    return c->n - 1;
}

/* A response's code: 0 unless it is an error; Dubbo's status attribute when it has one. */
static uint32_t meta_response_code(const meta_sess_t *s, const mt_msg_t *msg)
{
    const mt_istio_codes_t *c = s->base.conf->istio_codes;
    if (MT_LIKELY(msg->type != MT_MSG_ERROR) || !c)
        return 0;
    const mt_str_t *st = mt_msg_get(msg, "status", 6);
    return st ? meta_code_named(c, st->ptr, st->len) : c->n - 1;
}

/* The code of the native error meltemi answers for kind (the status its codec writes). */
static uint32_t meta_error_code(const meta_sess_t *s, mt_error_kind_t kind)
{
    const mt_istio_codes_t *c = s->base.conf->istio_codes;
    if (!c)
        return 0;
    if (c == &mt_meta_dubbo_codes) {
        char num[8];
        int n = snprintf(num, sizeof(num), "%u", dubbo_status_for_error(kind));
        return meta_code_named(c, num, (size_t)n);
    }
    if (c == &mt_meta_thrift_codes) { /* the type of the TApplicationException it writes */
        const char *name = thrift_appex_type_name(thrift_appex_type_for_error(kind));
        return name ? meta_code_named(c, name, strlen(name)) : c->n - 1;
    }
    return c->n - 1;
}

/* Envoy's flag for a native error meltemi answers. */
static uint16_t meta_error_flag(mt_error_kind_t kind)
{
    switch (kind) {
    case MT_ERR_ROUTE_NOT_FOUND:
    case MT_ERR_CLUSTER_NOT_FOUND:
        return MT_RF_NR;
    case MT_ERR_NO_HEALTHY_UPSTREAM:
        return MT_RF_UH;
    case MT_ERR_UPSTREAM_TIMEOUT:
        return MT_RF_UT;
    case MT_ERR_OVER_LIMIT:
        return MT_RF_RL;
    default:
        return 0;
    }
}

/* The per-method block of a request (interface and method, as the codec named them). */
static mt_stats_block_t *req_method_block(meta_sess_t *s, const mt_msg_t *msg)
{
    mt_meta_methods_t *t = mt_meta_listener(s->base.conf)->methods;
    if (!t)
        return NULL;
    const mt_str_t *m = mt_msg_get(msg, "method", 6);
    const mt_str_t *i = mt_msg_get(msg, "interface", 9);
    return mt_meta_methods_block_cached(t, &s->methods, i ? i->ptr : NULL, i ? i->len : 0,
                                        m ? m->ptr : NULL, m ? m->len : 0);
}

/* A request's end in its method's counts: an error unless code is 0 (success). */
static void req_count_method(const meta_sess_t *s, const meta_req_t *r, uint32_t code)
{
    mt_worker_t *w = s->base.w;
    mt_stat_add(r->method, w->id, MT_ST_REQUESTS_TOTAL, 1);
    if (code != 0)
        mt_stat_add(r->method, w->id, MT_ST_REQUEST_ERRORS, 1);
}

/* The reply to r is bytes [p, p+len) of chunk b (a reference is taken when kept); code is
 * its Istio response_code. */
static void req_deliver(meta_worker_t *mw, meta_req_t *r, mt_buf_t *b, const char *p, size_t len,
                        uint32_t code)
{
    meta_sess_t *s = r->sess;
    if (!s) {
        req_free(mw, r);
        return;
    }
    mt_worker_t *w = s->base.w;
    mt_istio_set_t *log = mt_session_request_done(&s->base, r->dest, r->set, code, r->rflags,
                                                  r->start_ns, r->req_bytes, (uint32_t)len);
    if (r->method)
        req_count_method(s, r, code);
    char trace_id[33] = "";
    if (MT_UNLIKELY(r->traced)) {
        mt_trace_hex(r->trace.trace_id, 16, trace_id);
        if (r->trace.sampled)
            meta_trace_record(s, r, code);
    }
    if (MT_UNLIKELY(log != NULL)) {
        mt_request_end_t e = {.dest = r->dest,
                              .start_ns = r->start_ns,
                              .code = code,
                              .flags = r->rflags,
                              .req_bytes = r->req_bytes,
                              .resp_bytes = (uint32_t)len,
                              .op = r->op[0] ? r->op : NULL,
                              .ep = r->ep,
                              .subset = r->set ? r->subset_name : NULL,
                              .trace_id = trace_id[0] ? trace_id : NULL};
        mt_session_access_log(&s->base, &e, log);
    }
    if (s->in_order && s->head != r) {
        mt_buf_ref(b);
        r->reply = (mt_slice_t){b, p, (uint32_t)len};
        r->done = true;
        return;
    }
    sess_unlink(s, r);
    mt_outq_add_ref(&s->base.out, b, p, len);
    req_free(mw, r);
    if (s->in_order)
        sess_drain_done(s);
    mt_worker_schedule_flush(w, &s->base.out);
    mt_session_resume(&s->base);
}

static void req_deliver_copy(meta_worker_t *mw, meta_req_t *r, const uint8_t *p, size_t len,
                             uint32_t code)
{
    mt_slice_t sl;
    if (!r->sess || mt_slice_copy(&mw->w->pool, &mw->w->own, (const char *)p, len, &sl) != 0) {
        meta_sess_t *s = r->sess;
        if (s)
            sess_unlink(s, r);
        req_free(mw, r);
        if (s)
            mt_session_close(&s->base);
        return;
    }
    req_deliver(mw, r, sl.buf, sl.p, sl.len, code);
    mt_buf_unref(&mw->w->pool, sl.buf);
}

/* Queues bytes made here (a native error, a heartbeat answer) behind what the client still
 * waits for (in-order codecs) or at once (multiplexed ones). */
static void sess_reply_local(meta_sess_t *s, const uint8_t *p, size_t len)
{
    mt_worker_t *w = s->base.w;
    meta_worker_t *mw = mw_of(w);
    if (len == 0)
        return;
    if (!s->in_order || !s->head) {
        if (mt_outq_add_copy(&s->base.out, (const char *)p, len) != 0) {
            mt_session_close(&s->base);
            return;
        }
        mt_worker_schedule_flush(w, &s->base.out);
        return;
    }
    meta_req_t *r = req_new(mw);
    if (!r || mt_slice_copy(&w->pool, &s->base.out.own, (const char *)p, len, &r->reply) != 0) {
        if (r)
            req_free(mw, r);
        mt_session_close(&s->base);
        return;
    }
    r->done = true;
    sess_push(s, r);
}

/* Answers msg (a request being handled now) with a native error of kind. */
static void sess_error_flagged(meta_sess_t *s, const mt_msg_t *msg, mt_error_kind_t kind,
                               uint16_t flag, const char *text);

static void sess_error_now(meta_sess_t *s, const mt_msg_t *msg, mt_error_kind_t kind,
                           const char *text)
{
    sess_error_flagged(s, msg, kind, meta_error_flag(kind), text);
}

/* As sess_error_now, with Envoy's response flag given (UO for a pool bound answered with the
 * codec's over-limit error, which otherwise says RL). */
static void sess_error_flagged(meta_sess_t *s, const mt_msg_t *msg, mt_error_kind_t kind,
                               uint16_t flag, const char *text)
{
    meta_worker_t *mw = mw_of(s->base.w);
    mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_REQUEST_ERRORS, 1);
    mt_wbuf_t *o = &mw->scratch;
    o->len = 0;
    if (s->codec->on_error(msg, kind, text, o) != MT_OK) {
        s->base.finishing = true; /* cannot answer natively: close once the rest is answered */
        return;
    }
    if (msg->expects_reply) {
        char method[96];
        uint32_t code = meta_error_code(s, kind), flags = s->cur_flags | flag;
        mt_istio_set_t *log =
            mt_session_request_done(&s->base, s->cur_dest, NULL, code, flags, s->cur_start_ns,
                                    s->cur_bytes, (uint32_t)o->len);
        if (log) {
            mt_request_end_t e = {.dest = s->cur_dest,
                                  .start_ns = s->cur_start_ns,
                                  .code = code,
                                  .flags = flags,
                                  .req_bytes = s->cur_bytes,
                                  .resp_bytes = (uint32_t)o->len,
                                  .op = msg_method(msg, method, sizeof(method))};
            mt_session_access_log(&s->base, &e, log);
        }
    }
    sess_reply_local(s, o->data, o->len);
}

/* Builds into o the native error for request r from the frame the client sent. */
static int req_error_bytes(meta_worker_t *mw, meta_req_t *r, const mt_codec_t *codec,
                           mt_error_kind_t kind, const char *text, mt_wbuf_t *o)
{
    void *st = malloc(codec->state_size ? codec->state_size : 1);
    if (!st || mt_codec_init(codec, st, NULL) != MT_OK) {
        free(st);
        return -1;
    }
    if (!mw->emsg_init) {
        mt_msg_init(&mw->emsg);
        mw->emsg_init = true;
    }
    int rc = -1;
    mt_codec_err_t err = {0};
    if (codec->decode(st, (const uint8_t *)r->frame.p, r->frame.len, &mw->emsg, &err) == MT_OK &&
        codec->on_error(&mw->emsg, kind, text, o) == MT_OK) {
        rc = 0;
        /* a multiplexed request went up with an id of its connection: give the client its own */
        if ((codec->flags & MT_CODEC_F_MULTIPLEXED) && o->len && mt_codec_has_request_id(codec) &&
            mt_codec_set_request_id(codec, o->data, o->len, r->down_id) != MT_OK)
            rc = -1;
    }
    codec->free(st);
    free(st);
    return rc;
}

/* r failed after it left (timeout, upstream closed): a native error, or a close if none. */
static bool req_retry(meta_worker_t *mw, meta_req_t *r, uint32_t why);

/* The retry condition an upstream failure of kind is (MT_RETRY_*; 0: never retried). */
static uint32_t retry_cond_of(mt_error_kind_t kind)
{
    switch (kind) {
    case MT_ERR_NO_HEALTHY_UPSTREAM:
        return MT_RETRY_CONNECT_FAILURE;
    case MT_ERR_UPSTREAM_TIMEOUT:
        return MT_RETRY_TIMEOUT;
    case MT_ERR_UNSPECIFIED:
        return MT_RETRY_RESET;
    default:
        return 0;
    }
}

static void req_fail(meta_worker_t *mw, meta_req_t *r, mt_error_kind_t kind, const char *text)
{
    meta_sess_t *s = r->sess;
    if (!s) {
        req_free(mw, r);
        return;
    }
    if (MT_UNLIKELY(r->tries_left) && req_retry(mw, r, retry_cond_of(kind)))
        return;
    mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_REQUEST_ERRORS, 1);
    mt_wbuf_t *o = &mw->scratch;
    o->len = 0;
    if (req_error_bytes(mw, r, s->codec, kind, text, o) != 0 || o->len == 0) {
        sess_unlink(s, r);
        req_free(mw, r);
        mt_session_close(&s->base);
        return;
    }
    r->rflags |= meta_error_flag(kind);
    req_deliver_copy(mw, r, o->data, o->len, meta_error_code(s, kind));
}

/* ---- upstream connections ------------------------------------------------------------------ */

static void up_unlink(meta_up_t *u, meta_req_t *r)
{
    if (r->uprev)
        r->uprev->unext = r->unext;
    else
        u->head = r->unext;
    if (r->unext)
        r->unext->uprev = r->uprev;
    else
        u->tail = r->uprev;
    r->uprev = r->unext = NULL;
    r->up = NULL;
    u->base.inflight--;
    if (u->mep->active)
        u->mep->active--;
}

static void up_push(meta_up_t *u, meta_req_t *r)
{
    r->up = u;
    r->ep = u->mep->wep;
    r->unext = NULL;
    r->uprev = u->tail;
    if (u->tail)
        u->tail->unext = r;
    else
        u->head = r;
    u->tail = r;
    u->base.inflight++;
    u->mep->active++;
    /* Route timeouts differ, so a later request may be due first: the timer is armed for
     * the earliest deadline in flight, moved earlier when one is. */
    if (!r->deadline_ms)
        return;
    mt_timer_t *dt = &u->base.deadline_timer;
    if (MT_UNLIKELY(!mt_upstream_deadline_armed(&u->base))) {
        mt_upstream_arm_deadline(&u->base, r->deadline_ms);
    } else if (MT_UNLIKELY(r->deadline_ms < dt->due_ms)) {
        mt_timer_stop(&u->base.w->timers, dt);
        mt_upstream_arm_deadline(&u->base, r->deadline_ms);
    }
}

/* Fails every request in flight on u with a native error, then closes u. */
/* Takes every request off u, in send order, chained through unext. */
static meta_req_t *up_detach_all(meta_up_t *u)
{
    meta_req_t *first = NULL, **tail = &first;
    while (u->head) {
        meta_req_t *r = u->head;
        up_unlink(u, r);
        if (u->multiplexed)
            idmap_take(&u->ids, r->up_id);
        *tail = r;
        tail = &r->unext;
    }
    return first;
}

/* u is closed first (out of its pool), so a retry of one of its requests never lands on it. */
static void up_fail(meta_up_t *u, mt_error_kind_t kind, const char *text)
{
    meta_worker_t *mw = mw_of(u->base.w);
    mt_stats_block_t *cs = u->mep->mc->wc->conf->stats;
    meta_req_t *r = up_detach_all(u);
    up_close(u);
    while (r) {
        meta_req_t *next = r->unext;
        r->unext = NULL;
        if (r->sess)
            mt_stat_add(cs, mw->w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
        req_fail(mw, r, kind, text);
        r = next;
    }
}

static void up_close(meta_up_t *u)
{
    mt_upstream_close(&u->base);
}

/* A request frame from the upstream: a heartbeat is answered, anything else is dropped (a
 * proxy in the middle has no one to give a server-initiated call to). */
static void up_on_request(meta_worker_t *mw, meta_up_t *u, const mt_msg_t *msg)
{
    if (msg->type != MT_MSG_HEARTBEAT || !msg->expects_reply || !u->codec->heartbeat_reply)
        return;
    mt_wbuf_t *o = &mw->scratch;
    o->len = 0;
    if (u->codec->heartbeat_reply(msg, o) == MT_OK && o->len &&
        mt_outq_add_copy(&u->base.out, (const char *)o->data, o->len) == 0)
        mt_worker_schedule_flush(mw->w, &u->base.out);
}

/* The reply to r re-encoded with its filters' mutation (first: a codec applies the first item
 * of a key) and its route's responseMutation; false when the codec cannot carry it. */
static bool up_reply_mutated(meta_worker_t *mw, meta_up_t *u, meta_req_t *r, const mt_msg_t *msg,
                             const mt_meta_verdict_t *fv)
{
    const mt_meta_route_t *rt = r->route;
    size_t n_route = rt ? rt->n_response_mutation : 0, n = fv->n_sets + n_route;
    mt_attr_t small[32], *items = n <= 32 ? small : malloc(sizeof(*items) * n);
    if (!items)
        return false;
    memcpy(items, fv->sets, sizeof(*items) * fv->n_sets);
    if (n_route)
        memcpy(items + fv->n_sets, rt->response_mutation, sizeof(*items) * n_route);
    mt_mutation_t mut = {items, n};
    mt_wbuf_t *o = &mw->scratch;
    o->len = 0;
    mt_codec_err_t err = {0};
    bool ok = u->codec->encode(msg, &mut, o, &err) == MT_OK;
    if (items != small)
        free(items);
    if (!ok) {
        mt_debug("Lua filter: response mutation not applied: %s", err.text);
        return false;
    }
    req_deliver_copy(mw, r, o->data, o->len, meta_response_code(r->sess, msg));
    return true;
}

/* The on_response filters of r's listener look at the reply: true when they answered it (a
 * native error instead, or the reply with their mutation). A session that has not seen the
 * live snapshot yet (between two of its frames) has no filters of that generation. */
static bool up_reply_filtered(meta_worker_t *mw, meta_up_t *u, meta_req_t *r, const mt_msg_t *msg)
{
    meta_sess_t *s = r->sess;
    if (s->base.snap != mw->w->snap || !mt_meta_lua_has_response(&mw->lua, s->base.li))
        return false;
    double ms = (double)(mw->w->now_ns - r->start_ns) / 1e6;
    mt_meta_lua_response(&mw->lua, s->base.li, msg, r->op, ms, s->base.id);
    const mt_meta_verdict_t *fv = &mw->lua.verdict;
    if (!fv->has_error)
        return fv->n_sets && up_reply_mutated(mw, u, r, msg, fv);
    mt_stat_add(s->base.conf->stats, mw->w->id, MT_ST_REQUEST_ERRORS, 1);
    mt_wbuf_t *o = &mw->scratch;
    o->len = 0;
    if (req_error_bytes(mw, r, s->codec, fv->error_kind, fv->error_text, o) != 0 || !o->len) {
        sess_unlink(s, r);
        req_free(mw, r);
        mt_session_close(&s->base);
        return true;
    }
    if (!fv->failed)
        r->rflags |= MT_RF_RBAC;
    req_deliver_copy(mw, r, o->data, o->len, meta_error_code(s, fv->error_kind));
    return true;
}

/* The reply bytes for r, with its route's responseMutation when the codec can carry it. */
static void up_reply(meta_worker_t *mw, meta_up_t *u, meta_req_t *r, const mt_msg_t *msg,
                     uint8_t *frame, size_t len)
{
    meta_sess_t *s = r->sess;
    mt_upstream_outcome(u->mep->wep, mw->w,
                        msg->type == MT_MSG_ERROR ? MT_OUTLIER_ERROR : MT_OUTLIER_SUCCESS);
    if (MT_UNLIKELY(r->tries_left) && msg->type == MT_MSG_ERROR &&
        req_retry(mw, r, MT_RETRY_ERROR_ANSWER))
        return;
    if (msg->type == MT_MSG_ERROR)
        mt_stat_add(s->base.conf->stats, mw->w->id, MT_ST_REQUEST_ERRORS, 1);
    if (u->multiplexed && mt_codec_set_request_id(u->codec, frame, len, r->down_id) != MT_OK) {
        req_fail(mw, r, MT_ERR_BAD_RESPONSE, "meltemi: cannot restore the request id");
        return;
    }
    if (MT_UNLIKELY(r->resp_filter) && up_reply_filtered(mw, u, r, msg))
        return;
    const mt_meta_route_t *rt = r->route;
    if (rt && rt->n_response_mutation) {
        mt_mutation_t mut = {rt->response_mutation, rt->n_response_mutation};
        mt_wbuf_t *o = &mw->scratch;
        o->len = 0;
        mt_codec_err_t err = {0};
        if (u->codec->encode(msg, &mut, o, &err) == MT_OK) {
            req_deliver_copy(mw, r, o->data, o->len, meta_response_code(s, msg));
            return;
        }
        mt_debug("route %s: response mutation not applied: %s", rt->name ? rt->name : "?",
                 err.text);
    }
    req_deliver(mw, r, u->base.rbuf, (const char *)frame, len, meta_response_code(s, msg));
}

/* One decoded frame from the upstream, lying at frame in u->rbuf. */
static void up_on_frame(meta_worker_t *mw, meta_up_t *u, const mt_msg_t *msg, uint8_t *frame)
{
    char lbl[256], text[ERR_TEXT];
    if (mt_msg_type_is_stream(msg->type)) {
        up_stream_frame(mw, u, msg, frame);
        return;
    }
    if (!msg->is_reply) {
        up_on_request(mw, u, msg);
        return;
    }
    if (msg->type == MT_MSG_HEARTBEAT)
        return; /* an answer to a heartbeat: we send none, a client's went nowhere */
    meta_req_t *r;
    if (u->multiplexed) {
        r = idmap_take(&u->ids, msg->request_id);
        if (!r)
            return; /* late: its request timed out and was answered already */
    } else {
        r = u->head;
        if (!r) {
            snprintf(text, sizeof(text), "meltemi: upstream %s sent a reply nobody asked for",
                     ep_label(u->mep, lbl, sizeof(lbl)));
            mt_warn("%s", text + 9);
            up_fail(u, MT_ERR_BAD_RESPONSE, text);
            return;
        }
    }
    up_unlink(u, r);
    mt_stat_add(u->mep->mc->wc->conf->stats, mw->w->id, MT_ST_UPSTREAM_RQ_TOTAL, 1);
    if (!r->sess) {
        req_free(mw, r);
        return;
    }
    up_reply(mw, u, r, msg, frame, msg->frame_len);
}

/* The shell's on_data: every whole frame in the read chunk. */
static void up_on_data(mt_upstream_t *base)
{
    meta_up_t *u = (meta_up_t *)base;
    meta_worker_t *mw = mw_of(base->w);
    mt_buf_t *b = base->rbuf;
    while (b->pos < b->last && base->state == MT_UPSTREAM_READY) {
        mt_codec_err_t err; /* filled by decode when it fails; 160 bytes not cleared per frame */
        err.code = MT_CODEC_E_NONE;
        err.text[0] = '\0';
        mt_status_t rc =
            u->codec->decode(u->dec, (const uint8_t *)b->pos, mt_buf_unread(b), &u->msg, &err);
        if (rc == MT_AGAIN)
            break;
        if (rc == MT_ERROR) {
            char lbl[256], text[ERR_TEXT];
            snprintf(text, sizeof(text), "meltemi: upstream %s sent a malformed frame: %s",
                     ep_label(u->mep, lbl, sizeof(lbl)), err.text);
            mt_error("%s", text + 9);
            up_fail(u, MT_ERR_BAD_RESPONSE, text);
            return;
        }
        uint8_t *frame = (uint8_t *)b->pos;
        b->pos += u->msg.frame_len;
        up_on_frame(mw, u, &u->msg, frame);
    }
}

/* The shell ends the connection: a failed or timed-out connect means no healthy upstream. */
static void up_on_error(mt_upstream_t *base, mt_upstream_event_t ev, const char *text)
{
    char full[ERR_TEXT + 16];
    snprintf(full, sizeof(full), "meltemi: %s", text);
    bool connect = ev == MT_UPSTREAM_CONNECT_FAILED || ev == MT_UPSTREAM_CONNECT_TIMEOUT;
    up_fail((meta_up_t *)base, connect ? MT_ERR_NO_HEALTHY_UPSTREAM : MT_ERR_UNSPECIFIED, full);
}

/* What replies are decoded for: the status, the only attribute read from one (Istio's
 * response_code of an error reply, meta_response_code). Responses find their request by id or
 * order and a response mutation re-reads the frame; a new reader of reply attributes adds its
 * key here or asks mt_msg_locate. The connection is shared by listeners: one filter. */
static mt_str_t meta_reply_keys[] = {MT_STR("status")};
static const mt_attr_filter_t meta_reply_want = {
    .keys = meta_reply_keys,
    .n = 1,
    .cap = 1,
    .slot = {[MT_ATTR_FILTER_SLOT(6, 's', 's')] = 1},
    .gen = 1}; /* never changes: any generation but 0 lets decoders keep their answers */

/* The shell's on_open: arg is the meta endpoint; the response decoder of its codec. */
static int up_on_open(mt_upstream_t *base, void *arg)
{
    meta_up_t *u = (meta_up_t *)base;
    meta_ep_t *mep = arg;
    const mt_codec_t *codec = mep->mc->codec;
    u->mep = mep;
    mep->mc->n_open++; /* dropped in up_on_closed, whichever way the connection ends */
    mt_msg_init(&u->msg);
    u->msg.want = &meta_reply_want;
    u->next_id = 1;
    void *dec = codec ? malloc(codec->state_size ? codec->state_size : 1) : NULL;
    if (!dec || mt_codec_init(codec, dec, NULL) != MT_OK) {
        free(dec);
        return -1;
    }
    u->dec = dec;
    u->codec = codec;
    u->multiplexed = (codec->flags & MT_CODEC_F_MULTIPLEXED) && mt_codec_has_request_id(codec);
    return 0;
}

static void up_on_closed(mt_upstream_t *base)
{
    meta_up_t *u = (meta_up_t *)base;
    up_streams_fail(mw_of(base->w), u);
    if (u->dec) {
        u->codec->free(u->dec);
        free(u->dec);
    }
    mt_msg_free(&u->msg);
    idmap_free(&u->ids);
    u->mep->mc->n_open--;
}

static void up_on_deadline(mt_upstream_t *b, uint64_t now);

/* Open streams keep a connection from closing idle or drained (upstream.h). */
static bool up_busy(const mt_upstream_t *base)
{
    return ((const meta_up_t *)base)->streams.head != NULL;
}

static const mt_upstream_ops_t meta_up_ops = {
    .protocol = MT_PROTO_META,
    .size = sizeof(meta_up_t),
    .text_prefix = "",
    .bound_shared = true,
    .on_open = up_on_open,
    .on_data = up_on_data,
    .on_error = up_on_error,
    .on_deadline = up_on_deadline,
    .busy = up_busy,
    .on_closed = up_on_closed,
};

/* The pooled connection of endpoint mep for a caller keyed `key` (sessions stick to one slot),
 * connecting it when needed; NULL and why when no connection can be had. */
static meta_up_t *up_for(meta_worker_t *mw, meta_ep_t *mep, uint64_t key, const char **why)
{
    MT_UNUSED(mw);
    return (meta_up_t *)mt_upstream_shared(mep->wep, &meta_up_ops, key, mep, why);
}

/* Queues one request's bytes on u. For a two-way request of a multiplexed codec the id is
 * rewritten in place first (bytes must be writable and not yet queued anywhere). */
static int up_send(meta_up_t *u, meta_req_t *r, mt_buf_t *b, uint8_t *p, size_t len, bool copy)
{
    if (r && u->multiplexed) {
        r->up_id = u->next_id++;
        if (u->next_id == 0)
            u->next_id = 1;
        if (mt_codec_set_request_id(u->codec, p, len, r->up_id) != MT_OK ||
            idmap_put(&u->ids, r->up_id, r) != 0)
            return -1;
    }
    int rc = copy ? mt_outq_add_copy(&u->base.out, (const char *)p, len)
                  : mt_outq_add_ref(&u->base.out, b, (const char *)p, len);
    if (rc != 0) {
        if (r && u->multiplexed)
            idmap_take(&u->ids, r->up_id);
        return -1;
    }
    if (r)
        up_push(u, r);
    mt_upstream_queued(&u->base);
    mt_upstream_schedule(&u->base);
    if (r)
        mt_upstream_request_sent(&u->base); /* http.maxRequestsPerConnection: two-way ones */
    return 0;
}

/* ---- routing -------------------------------------------------------------------------------- */

/* Where a request goes: a cluster conf and the endpoint set within it. */
typedef struct meta_target {
    const mt_meta_route_t *route; /* NULL: no MetaRouter, the listener's default cluster */
    const mt_cluster_conf_t *cluster;
    const mt_meta_subset_t *subset;
    uint32_t rr_index;
} meta_target_t;

static uint32_t subset_rr_index(const mt_meta_dest_t *d)
{
    return d->subset >= 0 ? (uint32_t)d->subset + 1 : 0;
}

static const char *msg_method(const mt_msg_t *msg, char *buf, size_t n)
{
    const mt_str_t *m = mt_msg_get(msg, "method", 6);
    const mt_str_t *i = mt_msg_get(msg, "interface", 9);
    if (i && m)
        snprintf(buf, n, "%.*s.%.*s", (int)MT_MIN(i->len, 120), i->ptr, (int)MT_MIN(m->len, 80),
                 m->ptr);
    else if (m)
        snprintf(buf, n, "%.*s", (int)MT_MIN(m->len, 120), m->ptr);
    else
        snprintf(buf, n, "?");
    return buf;
}

static const char *sess_service(const meta_sess_t *s)
{
    return s->base.conf->service ? s->base.conf->service : s->base.conf->name;
}

/* Fills t for msg; answers msg with a native error and returns false when it has nowhere to
 * go. */
static bool sess_route(meta_sess_t *s, const mt_msg_t *msg, meta_target_t *t)
{
    meta_worker_t *mw = mw_of(s->base.w);
    const mt_meta_listener_conf_t *lc = mt_meta_listener(s->base.conf);
    char text[ERR_TEXT], method[256];
    memset(t, 0, sizeof(*t));
    if (!lc || lc->n_routes == 0) {
        t->cluster = s->base.cluster ? s->base.cluster->conf : NULL;
        t->subset = mt_meta_cluster(t->cluster) ? &mt_meta_cluster(t->cluster)->all : NULL;
        if (t->subset)
            return true;
        snprintf(text, sizeof(text), "meltemi: no cluster for %s", sess_service(s));
        sess_error_now(s, msg, MT_ERR_CLUSTER_NOT_FOUND, text);
        return false;
    }
    t->route = mt_meta_route_find(lc, msg, mw->match_data);
    if (!t->route) {
        snprintf(text, sizeof(text), "meltemi: no route of %s matches %s", sess_service(s),
                 msg_method(msg, method, sizeof(method)));
        sess_error_now(s, msg, MT_ERR_ROUTE_NOT_FOUND, text);
        return false;
    }
    const mt_meta_dest_t *d = mt_meta_dest_pick(t->route, mw_rand(mw));
    t->cluster = d ? d->cluster : NULL;
    t->subset = d ? mt_meta_dest_subset(d) : NULL;
    t->rr_index = d ? subset_rr_index(d) : 0;
    mt_debug("listener %s: %s matched route %s -> %s%s%s", s->base.conf->name,
             msg_method(msg, method, sizeof(method)), t->route->name ? t->route->name : "?",
             d && d->cluster_name ? d->cluster_name : "?", d && d->subset_name ? " subset " : "",
             d && d->subset_name ? d->subset_name : "");
    if (t->subset)
        return true;
    snprintf(text, sizeof(text), "meltemi: route %s: %s%s%s is not defined",
             t->route->name ? t->route->name : "?", d && d->cluster_name ? d->cluster_name : "?",
             d && d->subset_name ? " subset " : "", d && d->subset_name ? d->subset_name : "");
    sess_error_now(s, msg, MT_ERR_CLUSTER_NOT_FOUND, text);
    return false;
}

/* An upstream connection for target t; answers msg with a native error when there is none. */
static meta_up_t *sess_upstream(meta_sess_t *s, const mt_msg_t *msg, const meta_target_t *t)
{
    meta_worker_t *mw = mw_of(s->base.w);
    char text[ERR_TEXT], lbl[256];
    meta_cluster_t *mc = meta_cluster_get(mw, t->cluster, s->codec);
    if (!mc) {
        snprintf(text, sizeof(text), "meltemi: cluster %s is gone", t->cluster->name);
        sess_error_now(s, msg, MT_ERR_CLUSTER_NOT_FOUND, text);
        return NULL;
    }
    int64_t ep = meta_pick(mw, mc, t->subset, t->rr_index, msg, s, -1);
    if (ep < 0) {
        mt_stat_add(t->cluster->stats, mw->w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
        snprintf(text, sizeof(text), "meltemi: no healthy upstream for %s%s%s",
                 t->cluster->service ? t->cluster->service : t->cluster->name,
                 t->subset->name ? " subset " : "", t->subset->name ? t->subset->name : "");
        sess_error_now(s, msg, MT_ERR_NO_HEALTHY_UPSTREAM, text);
        return NULL;
    }
    const char *why = "?";
    meta_up_t *u = up_for(mw, &mc->eps[ep], s->base.id, &why);
    if (!u && why == mc->eps[ep].wep->lease_error) {
        snprintf(text, sizeof(text), "meltemi: %s", why); /* tcp.maxConnections (UO) */
        sess_error_flagged(s, msg, MT_ERR_OVER_LIMIT, MT_RF_UO, text);
    } else if (!u) {
        mt_stat_add(t->cluster->stats, mw->w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
        snprintf(text, sizeof(text), "meltemi: upstream %s unavailable: %s",
                 ep_label(&mc->eps[ep], lbl, sizeof(lbl)), why);
        sess_error_now(s, msg, MT_ERR_NO_HEALTHY_UPSTREAM, text);
    } else if (msg->expects_reply && mt_upstream_pending_full(&u->base)) {
        /* http.http1MaxPendingRequests: enough already wait for a connection (UO) */
        mt_stat_add(t->cluster->stats, mw->w->id, MT_ST_UPSTREAM_RQ_PENDING_OVERFLOW, 1);
        snprintf(text, sizeof(text),
                 "meltemi: upstream %s: %u requests already wait for a connection "
                 "(connectionPool.http.http1MaxPendingRequests)",
                 ep_label(&mc->eps[ep], lbl, sizeof(lbl)), t->cluster->max_pending_requests);
        sess_error_flagged(s, msg, MT_ERR_OVER_LIMIT, MT_RF_UO, text);
        return NULL;
    }
    return u;
}

/* A fire-and-forget copy of bytes to endpoint set ss (round-robin cursor rr_index) of cluster
 * c; nobody waits for its reply. */
static void sess_mirror_to(meta_sess_t *s, const mt_cluster_conf_t *c, const mt_meta_subset_t *ss,
                           uint32_t rr_index, const mt_msg_t *msg, const uint8_t *p, size_t len)
{
    meta_worker_t *mw = mw_of(s->base.w);
    meta_cluster_t *mc = ss ? meta_cluster_get(mw, c, s->codec) : NULL;
    int64_t ep = mc ? meta_pick(mw, mc, ss, rr_index, msg, s, -1) : -1;
    const char *why = NULL;
    meta_up_t *u = ep >= 0 ? up_for(mw, &mc->eps[ep], mw_rand(mw), &why) : NULL;
    meta_req_t *r = u && msg->expects_reply ? req_new(mw) : NULL;
    mt_slice_t sl = {0};
    bool ok = u && (r || !msg->expects_reply) &&
              mt_slice_copy(&mw->w->pool, &mw->w->own, (const char *)p, len, &sl) == 0;
    if (ok) {
        if (r)
            r->deadline_ms =
                mt_worker_now_ms(mw->w) + mt_meta_listener(s->base.conf)->request_timeout_ms;
        ok = up_send(u, r, sl.buf, (uint8_t *)sl.p, sl.len, false) == 0;
    }
    if (sl.buf)
        mt_buf_unref(&mw->w->pool, sl.buf);
    if (!ok) {
        if (r && !r->up)
            req_free(mw, r);
        if (c)
            mt_stat_add(c->stats, mw->w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
    }
}

/* The route's mirror, for its percentage of requests. */
static void sess_mirror(meta_sess_t *s, const mt_meta_route_t *route, const mt_msg_t *msg,
                        const uint8_t *p, size_t len)
{
    const mt_meta_dest_t *d = route->mirror;
    if (!mt_meta_mirror_roll(d->percentage, mw_rand(mw_of(s->base.w))))
        return;
    sess_mirror_to(s, d->cluster, mt_meta_dest_subset(d), subset_rr_index(d), msg, p, len);
}

/* The endpoint set named `name` of cluster c (NULL name: all of it) and its round-robin
 * cursor; NULL when c defines no such subset. */
static const mt_meta_subset_t *meta_subset_named(const mt_cluster_conf_t *c, const char *name,
                                                 uint32_t *rr_index)
{
    const mt_meta_cluster_conf_t *cm = mt_meta_cluster(c);
    *rr_index = 0;
    if (!cm)
        return NULL;
    if (!name)
        return &cm->all;
    for (uint32_t i = 0; i < cm->n_subsets; i++) {
        if (cm->subsets[i].name && strcmp(cm->subsets[i].name, name) == 0) {
            *rr_index = i + 1;
            return &cm->subsets[i];
        }
    }
    return NULL;
}

/* The snapshot cluster of a filter's destination (1-based index), or NULL. */
static const mt_cluster_conf_t *meta_filter_cluster(const meta_sess_t *s, uint32_t idx)
{
    const mt_snapshot_t *snap = s->base.snap;
    return idx >= 1 && idx <= snap->n_clusters ? &snap->clusters[idx - 1] : NULL;
}

/* The copies a filter asked for (ctx:mirror), each to every request it decided. */
static void sess_filter_mirrors(meta_sess_t *s, const mt_meta_verdict_t *fv, const mt_msg_t *msg,
                                const uint8_t *p, size_t len)
{
    for (uint32_t i = 0; i < fv->n_mirrors; i++) {
        const mt_cluster_conf_t *c = meta_filter_cluster(s, fv->mirrors[i].cluster);
        uint32_t rr = 0;
        const mt_meta_subset_t *ss = c ? meta_subset_named(c, fv->mirrors[i].subset, &rr) : NULL;
        if (ss)
            sess_mirror_to(s, c, ss, rr, msg, p, len);
    }
}

static void warn_no_mutation(meta_worker_t *mw, const mt_meta_route_t *rt,
                             const mt_codec_err_t *err)
{
    if (mw->mutation_warnings++ == 0) /* once per worker: every request of the route would */
        mt_warn("route %s: request mutation not applied: %s (logged once)",
                rt->name ? rt->name : "?", err->text);
}

/* ---- tracing -------------------------------------------------------------------------------- */

/* The trace context of request msg: W3C traceparent, else B3, else a new trace when this one
 * is sampled; false: not traced. ctx gets meltemi's own span id. */
static bool meta_trace_begin(meta_sess_t *s, const mt_msg_t *msg, mt_trace_ctx_t *ctx)
{
    const mt_trace_conf_t *tc = s->base.snap->tracing;
    mt_trace_worker_t *tw = &s->base.w->trace;
    const mt_str_t *tp = mt_msg_get(msg, "traceparent", 11);
    bool have = tp && mt_trace_parse_traceparent(tp->ptr, tp->len, ctx);
    if (!have) {
        const mt_str_t *t = mt_msg_get(msg, "x-b3-traceid", 12);
        const mt_str_t *sp = mt_msg_get(msg, "x-b3-spanid", 11);
        const mt_str_t *sm = mt_msg_get(msg, "x-b3-sampled", 12);
        have = t && sp &&
               mt_trace_parse_b3(t->ptr, t->len, sp->ptr, sp->len, sm ? sm->ptr : NULL,
                                 sm ? sm->len : 0, ctx);
    }
    if (!have) {
        memset(ctx, 0, sizeof(*ctx));
        uint64_t draw = tw->rng;
        if (!tc->sample_all) {
            draw ^= draw << 13;
            draw ^= draw >> 7;
            draw ^= draw << 17;
            tw->rng = draw;
            if (draw >= tc->sample_below)
                return false;
        }
        ctx->sampled = true;
    }
    mt_trace_new_span(tw, ctx);
    return true;
}

/* The headers that carry ctx upstream: traceparent always, B3 too when it came as B3. */
static size_t meta_trace_headers(const mt_trace_ctx_t *ctx, mt_attr_t *items, char tp[56],
                                 char tid[33], char sid[17], char pid[17])
{
    size_t n = 0;
    mt_trace_format_traceparent(ctx, tp);
    items[n++] = (mt_attr_t){MT_STR("traceparent"), {tp, 55}};
    if (ctx->b3) {
        mt_trace_hex(ctx->trace_id, 16, tid);
        mt_trace_hex(ctx->span_id, 8, sid);
        mt_trace_hex(ctx->parent_id, 8, pid);
        items[n++] = (mt_attr_t){MT_STR("x-b3-traceid"), {tid, 32}};
        items[n++] = (mt_attr_t){MT_STR("x-b3-spanid"), {sid, 16}};
        items[n++] = (mt_attr_t){MT_STR("x-b3-parentspanid"), {pid, 16}};
        items[n++] = (mt_attr_t){MT_STR("x-b3-sampled"), {ctx->sampled ? "1" : "0", 1}};
    }
    return n;
}

/* meltemi's client span of r, answered with code. */
static void meta_trace_record(meta_sess_t *s, const meta_req_t *r, uint32_t code)
{
    const mt_istio_codes_t *codes = s->base.conf->istio_codes;
    mt_trace_span_t sp = {
        .ctx = &r->trace,
        .name = r->op[0] ? r->op : NULL,
        .service = mt_stats_identity()->workload,
        .system = s->codec->name,
        .peer_ip = r->ep ? r->ep->address : NULL,
        .peer_port = r->ep ? r->ep->port : 0,
        .cluster = r->dest ? r->dest->name : NULL,
        .code = codes ? mt_istio_code_name(codes, code) : NULL,
        .error = code != 0,
        .start_ns = r->start_ns,
        .end_ns = s->base.w->now_ns,
    };
    mt_trace_record(&s->base.w->trace, &sp);
}

/* The label set of requests to t's subset (its name is destination_version), cached on the
 * subset; NULL for the whole cluster (the destination's set then). */
static mt_istio_set_t *meta_subset_set(meta_sess_t *s, const meta_target_t *t)
{
    mt_meta_subset_t *ss = (mt_meta_subset_t *)t->subset;
    const mt_istio_codes_t *codes = s->base.conf->istio_codes;
    if (!ss || !ss->name || !codes)
        return NULL;
    mt_istio_set_t *set = __atomic_load_n(&ss->istio, __ATOMIC_ACQUIRE);
    if (MT_LIKELY(set && set->codes == codes))
        return set;
    const mt_cluster_conf_t *c = t->cluster;
    set = mt_istio_set(s->base.conf->name, codes, c->name, c->service ? c->service : c->name,
                       ss->name);
    __atomic_store_n(&ss->istio, set, __ATOMIC_RELEASE);
    return set;
}

/* Forwards request msg (its frame lies in s->base.rbuf) along t. */
/* Keeps r's bytes for a later send (retry, fault delay): the client's frame is referenced as
 * it is; a mutated copy (p, len in the worker's scratch) is copied into a chunk of its own. */
static int req_keep_bytes(meta_worker_t *mw, meta_req_t *r, const uint8_t *p, size_t len)
{
    mt_buf_t *b = mt_buf_get(&mw->w->pool, len);
    if (!b)
        return -1;
    memcpy(b->last, p, len);
    b->last += len;
    mt_buf_unref(&mw->w->pool, r->frame.buf);
    r->frame = (mt_slice_t){b, b->pos, (uint32_t)len};
    return 0;
}

/* Deadlines of a try that starts at now: the route's timeout (or the listener's) over all
 * tries, perTryTimeout for this one. */
static void req_set_deadlines(meta_req_t *r, const mt_meta_route_t *rt, uint32_t tmo, uint64_t now)
{
    r->deadline_ms = r->overall_deadline_ms = now + tmo;
    if (rt && rt->per_try_timeout_ms && rt->per_try_timeout_ms < tmo)
        r->deadline_ms = now + rt->per_try_timeout_ms;
}

static uint32_t sess_timeout_ms(const meta_sess_t *s, const mt_meta_route_t *rt)
{
    return rt && rt->timeout_ms ? rt->timeout_ms
                                : mt_meta_listener(s->base.conf)->request_timeout_ms;
}

static void req_delay_fired(mt_timer_t *t);

/* fv: the verdict of the listener's Lua filters (NULL: none ran): their delay, mutation and
 * mirrors come with the route's own. */
static void sess_forward(meta_sess_t *s, const mt_msg_t *msg, const meta_target_t *t,
                         const mt_meta_verdict_t *fv)
{
    meta_worker_t *mw = mw_of(s->base.w);
    mt_worker_t *w = s->base.w;
    s->cur_dest = t->cluster;
    const mt_meta_route_t *rt = t->route;
    /* fault.delay and ctx:delay hold two-way requests (a oneway one has no record to hold
     * it in); a filter's delay comes first, the route's fault is not rolled then */
    uint32_t delay_ms = fv && fv->delay_ms ? fv->delay_ms : 0;
    if (!delay_ms && rt && rt->delay_ms && mt_meta_mirror_roll(rt->delay_percentage, mw_rand(mw)))
        delay_ms = rt->delay_ms;
    bool delay = delay_ms && msg->expects_reply;
    if (delay && fv && fv->delay_ms)
        s->cur_flags |= MT_RF_DI;
    meta_up_t *u = NULL;
    if (!delay && !(u = sess_upstream(s, msg, t)))
        return;
    uint8_t *p = (uint8_t *)msg->frame;
    size_t len = msg->frame_len;
    bool copy = false;
    /* tracing: the context that came (or a new one), and the headers that carry it on */
    mt_trace_ctx_t tc;
    bool traced = MT_UNLIKELY(s->base.snap->tracing != NULL) && msg->expects_reply &&
                  meta_trace_begin(s, msg, &tc);
    mt_attr_t items_small[16], *items = NULL;
    char tp[56], tid[33], sid[17], pid[17];
    size_t n_route = rt ? rt->n_request_mutation : 0, n_filter = fv ? fv->n_sets : 0;
    size_t n_items = n_route;
    if (traced || n_filter) {
        /* the filter's items first: a codec applies the first item of a key */
        size_t need = n_filter + n_route + 5;
        items = need <= 16 ? items_small : malloc(sizeof(*items) * need);
        if (!items) {
            mt_session_close(&s->base);
            return;
        }
        if (n_filter)
            memcpy(items, fv->sets, sizeof(*items) * n_filter);
        if (n_route)
            memcpy(items + n_filter, rt->request_mutation, sizeof(*items) * n_route);
        n_items = n_filter + n_route;
        if (traced)
            n_items += meta_trace_headers(&tc, items + n_items, tp, tid, sid, pid);
    }
    if (n_items) {
        mt_mutation_t mut = {items ? items : rt->request_mutation, n_items};
        mt_codec_err_t err = {0};
        mw->scratch.len = 0;
        if (s->codec->encode(msg, &mut, &mw->scratch, &err) == MT_OK) {
            p = mw->scratch.data;
            len = mw->scratch.len;
            copy = true;
        } else if (err.code == MT_CODEC_E_NO_MUTABLE_HEADERS && !n_filter) {
            if (rt && rt->n_request_mutation)
                warn_no_mutation(mw, rt, &err);
        } else {
            char text[ERR_TEXT];
            snprintf(text, sizeof(text), "meltemi: %s%s: request mutation failed: %s",
                     n_filter ? "Lua filter"
                     : rt     ? "route "
                              : "trace headers",
                     !n_filter && rt && rt->name ? rt->name : "", err.text);
            if (items && items != items_small)
                free(items);
            sess_error_now(s, msg, MT_ERR_UNSPECIFIED, text);
            return;
        }
    }
    if (items && items != items_small)
        free(items);
    meta_req_t *r = NULL;
    if (msg->expects_reply) {
        r = req_new(mw);
        if (!r) {
            mt_session_close(&s->base);
            return;
        }
        r->down_id = msg->request_id;
        r->start_ns = s->cur_start_ns;
        r->dest = t->cluster;
        r->set = meta_subset_set(s, t);
        r->subset_name = t->subset ? t->subset->name : NULL;
        r->resp_filter = mt_meta_lua_has_response(&mw->lua, s->base.li);
        if (MT_UNLIKELY(s->base.snap->access_log != NULL || traced || r->resp_filter))
            msg_method(msg, r->op, sizeof(r->op));
        if (traced) {
            r->trace = tc;
            r->traced = true;
        }
        r->req_bytes = s->cur_bytes;
        r->rflags = s->cur_flags;
        r->method = req_method_block(s, msg);
        req_set_deadlines(r, NULL, sess_timeout_ms(s, rt), mt_worker_now_ms(w));
        mt_buf_ref(s->base.rbuf);
        r->frame = (mt_slice_t){s->base.rbuf, (const char *)msg->frame, (uint32_t)msg->frame_len};
        if ((rt && (rt->n_response_mutation || rt->retry_attempts)) || delay) {
            r->route = rt;
            r->snap = mt_snapshot_ref(s->base.snap);
        }
        if ((rt && rt->retry_attempts) || delay) {
            r->tries_left = rt ? rt->retry_attempts : 0;
            r->cluster = t->cluster;
            r->endpoints = t->subset;
            r->rr_index = t->rr_index;
            r->last_ep = u ? u->mep - u->mep->mc->eps : -1;
            req_set_deadlines(r, rt, sess_timeout_ms(s, rt), mt_worker_now_ms(w));
            if (copy && req_keep_bytes(mw, r, p, len) != 0) {
                req_free(mw, r);
                mt_session_close(&s->base);
                return;
            }
        }
    }
    /* the mirror copies the bytes before a multiplexed send rewrites their id in place */
    if (rt && rt->mirror)
        sess_mirror(s, rt, msg, p, len);
    if (MT_UNLIKELY(fv && fv->n_mirrors))
        sess_filter_mirrors(s, fv, msg, p, len);
    if (delay) {
        r->delayed = true;
        mt_timer_start(&w->timers, &r->delay_timer, delay_ms, req_delay_fired);
        sess_push(s, r);
        return;
    }
    if (up_send(u, r, s->base.rbuf, p, len, copy) != 0) {
        if (r)
            req_free(mw, r);
        mt_session_close(&s->base);
        return;
    }
    if (r)
        sess_push(s, r);
}

/* ---- streams (meta_stream.h) ---------------------------------------------------------------- */

static uint32_t sat32(uint64_t v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static void stream_reset_up(meta_worker_t *mw, mt_meta_stream_t *st);

/* Unlinks st from its session and upstream connection and frees it; a stream's mirror copy
 * ends with it (reset at the mirror unless the client's close already went there). */
static void stream_end(meta_worker_t *mw, mt_meta_stream_t *st)
{
    mt_meta_stream_t *m = st->mirror;
    if (m) {
        st->mirror = NULL;
        m->primary = NULL;
        if (!m->client_closed)
            stream_reset_up(mw, m);
        stream_end(mw, m);
    }
    if (st->primary)
        st->primary->mirror = NULL;
    mt_timer_stop(&mw->w->timers, &st->idle_timer);
    if (st->sess)
        mt_meta_stream_unlink_down(&((meta_sess_t *)st->sess)->streams, st);
    if (st->up)
        mt_meta_stream_unlink_up(&((meta_up_t *)st->up)->streams, st);
    mt_meta_stream_free(&mw->w->pool, st);
}

/* st ended (how): counted as one request of Istio's metrics (its code and flags say how it
 * ended) and written to the access log as one line, with its frames and bytes both ways. */
static void stream_observe(meta_sess_t *s, const mt_meta_stream_t *st, mt_meta_stream_end_t how)
{
    uint32_t code = 0, flags = st->rflags;
    switch (how) {
    case MT_STREAM_END_CLOSE:
        break;
    case MT_STREAM_END_TIMEOUT:
        code = meta_error_code(s, MT_ERR_UPSTREAM_TIMEOUT);
        flags |= MT_RF_UT;
        break;
    case MT_STREAM_END_CLIENT_GONE:
        code = MT_ISTIO_CODE_NONE; /* as a request the client left (Envoy's DC) */
        flags |= MT_RF_DC;
        break;
    default:
        code = meta_error_code(s, MT_ERR_UNSPECIFIED);
        break;
    }
    mt_istio_set_t *log =
        mt_session_request_done(&s->base, st->dest, st->set, code, flags, st->start_ns,
                                sat32(st->bytes_in), sat32(st->bytes_out));
    if (MT_LIKELY(log == NULL))
        return;
    const meta_up_t *u = st->up;
    mt_request_end_t e = {.dest = st->dest,
                          .start_ns = st->start_ns,
                          .code = code,
                          .flags = flags,
                          .req_bytes = st->bytes_in,
                          .resp_bytes = st->bytes_out,
                          .op = st->op[0] ? st->op : NULL,
                          .ep = u ? u->mep->wep : NULL,
                          .route = st->route_name,
                          .subset = st->set ? st->subset_name : NULL,
                          .stream_end = mt_meta_stream_end_name(how),
                          .frames_in = st->frames_in,
                          .frames_out = st->frames_out};
    mt_session_access_log(&s->base, &e, log);
}

/* st is over: observed (while its client is there to be counted against) and freed. */
static void stream_finish(meta_worker_t *mw, mt_meta_stream_t *st, mt_meta_stream_end_t how)
{
    if (st->sess)
        stream_observe(st->sess, st, how);
    stream_end(mw, st);
}

static void stream_idle_fired(mt_timer_t *t);

/* A frame went one way or the other: the stream's idle timeout starts again (O(1)). */
static void stream_touch(meta_worker_t *mw, mt_meta_stream_t *st)
{
    if (st->idle_ms)
        mt_timer_start(&mw->w->timers, &st->idle_timer, st->idle_ms, stream_idle_fired);
}

/* Copies a client frame of a mirrored stream to its copy m, with m's id on the mirror's
 * connection; a copy that cannot be queued ends the mirror, never the stream. */
static void stream_mirror_copy(meta_worker_t *mw, mt_meta_stream_t *m, const uint8_t *p, size_t len,
                               mt_msg_type_t type)
{
    meta_up_t *mu = m->up;
    mt_wbuf_t *o = &mw->scratch;
    o->len = 0;
    if (mt_wbuf_append(o, p, len) != MT_OK ||
        mt_codec_set_request_id(mu->codec, o->data, o->len, m->up_id) != MT_OK ||
        mt_outq_add_copy(&mu->base.out, (const char *)o->data, o->len) != 0) {
        stream_end(mw, m);
        return;
    }
    mt_upstream_schedule(&mu->base);
    if (mt_meta_stream_frame(m, type, true))
        stream_end(mw, m);
}

/* The route's mirror, for its percentage of streams: the same stream opened on an endpoint
 * of the mirror destination (the init frame as it went up, mutation included), nobody
 * waiting for its frames. Failures count in the mirror cluster's upstream_rq_errors. */
static void stream_mirror_open(meta_sess_t *s, mt_meta_stream_t *st, const mt_meta_route_t *rt,
                               const mt_msg_t *msg)
{
    meta_worker_t *mw = mw_of(s->base.w);
    const mt_meta_dest_t *d = rt->mirror;
    if (!mt_meta_mirror_roll(d->percentage, mw_rand(mw)))
        return;
    const mt_meta_subset_t *ss = mt_meta_dest_subset(d);
    meta_cluster_t *mc = ss ? meta_cluster_get(mw, d->cluster, s->codec) : NULL;
    int64_t ep = mc ? meta_pick(mw, mc, ss, subset_rr_index(d), msg, s, -1) : -1;
    const char *why = NULL;
    meta_up_t *mu = ep >= 0 ? up_for(mw, &mc->eps[ep], mw_rand(mw), &why) : NULL;
    mt_meta_stream_t *m = mu && mu->multiplexed ? mt_meta_stream_new() : NULL;
    mt_buf_t *b = m ? mt_buf_get(&mw->w->pool, st->init.len) : NULL;
    if (!b) {
        free(m);
        if (d->cluster)
            mt_stat_add(d->cluster->stats, mw->w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
        return;
    }
    memcpy(b->last, st->init.p, st->init.len);
    b->last += st->init.len;
    m->init = (mt_slice_t){b, b->pos, st->init.len};
    m->up = mu;
    m->up_id = mu->next_id++;
    if (mu->next_id == 0)
        mu->next_id = 1;
    m->is_mirror = true;
    m->primary = st;
    st->mirror = m;
    mt_meta_stream_link_up(&mu->streams, m);
    if (mt_codec_set_request_id(mu->codec, (uint8_t *)b->pos, m->init.len, m->up_id) != MT_OK ||
        mt_outq_add_ref(&mu->base.out, b, (const char *)b->pos, m->init.len) != 0) {
        stream_end(mw, m);
        return;
    }
    mt_upstream_schedule(&mu->base);
}

/* Queues a frame of the client's stream st, bytes [p, p+len) of chunk b (the client's read
 * chunk, or the init frame's own copy when a mutation rewrote it), on st's upstream
 * connection with the stream's id of that connection. */
static void stream_send_up(meta_sess_t *s, mt_meta_stream_t *st, mt_buf_t *b, uint8_t *p,
                           size_t len, mt_msg_type_t type)
{
    meta_worker_t *mw = mw_of(s->base.w);
    meta_up_t *u = st->up;
    if (st->mirror && type != MT_MSG_STREAM_INIT) /* the init went with the mirror's opening */
        stream_mirror_copy(mw, st->mirror, p, len, type);
    if (mt_codec_set_request_id(u->codec, p, len, st->up_id) != MT_OK ||
        mt_outq_add_ref(&u->base.out, b, (const char *)p, len) != 0) {
        stream_finish(mw, st, MT_STREAM_END_ERROR);
        mt_session_close(&s->base);
        return;
    }
    mt_upstream_schedule(&u->base);
    st->frames_in++;
    st->bytes_in += len;
    stream_touch(mw, st);
    if (mt_meta_stream_frame(st, type, true))
        stream_finish(mw, st,
                      type == MT_MSG_STREAM_RESET ? MT_STREAM_END_RESET : MT_STREAM_END_CLOSE);
}

/* The init frame as it goes up (*out, a reference held): the client's bytes, or a copy
 * re-encoded with the route's requestMutation, as a request's would be. -1 when the client
 * was answered instead (the mutation failed) or the session closed (out of memory). */
static int stream_init_bytes(meta_sess_t *s, const mt_msg_t *msg, const mt_meta_route_t *rt,
                             mt_slice_t *out)
{
    meta_worker_t *mw = mw_of(s->base.w);
    mt_wbuf_t *o = &mw->scratch;
    mt_codec_err_t err = {0};
    bool mutated = false;
    if (rt && rt->n_request_mutation) {
        mt_mutation_t mut = {rt->request_mutation, rt->n_request_mutation};
        o->len = 0;
        if (s->codec->encode(msg, &mut, o, &err) == MT_OK) {
            mutated = true;
        } else if (err.code == MT_CODEC_E_NO_MUTABLE_HEADERS) {
            warn_no_mutation(mw, rt, &err);
        } else {
            char text[ERR_TEXT];
            snprintf(text, sizeof(text), "meltemi: route %s: request mutation failed: %s",
                     rt->name ? rt->name : "", err.text);
            sess_error_now(s, msg, MT_ERR_UNSPECIFIED, text);
            return -1;
        }
    }
    if (!mutated) {
        mt_buf_ref(s->base.rbuf);
        *out = (mt_slice_t){s->base.rbuf, (const char *)msg->frame, (uint32_t)msg->frame_len};
        return 0;
    }
    mt_buf_t *b = mt_buf_get(&mw->w->pool, o->len);
    if (!b) {
        mt_session_close(&s->base);
        return -1;
    }
    memcpy(b->last, o->data, o->len);
    b->last += o->len;
    *out = (mt_slice_t){b, b->pos, (uint32_t)o->len};
    return 0;
}

/* An init frame: routed like a request, once, and rewritten by its route's requestMutation;
 * the stream's frames follow it, idle for at most the route's timeout. */
static void stream_open(meta_sess_t *s, const mt_msg_t *msg)
{
    meta_target_t t;
    if (!sess_route(s, msg, &t))
        return;
    s->cur_dest = t.cluster;
    meta_up_t *u = sess_upstream(s, msg, &t);
    if (!u)
        return;
    if (!u->multiplexed) {
        sess_error_now(s, msg, MT_ERR_UNSPECIFIED,
                       "meltemi: streams need a codec that correlates by id");
        return;
    }
    mt_slice_t init;
    if (stream_init_bytes(s, msg, t.route, &init) != 0)
        return;
    mt_meta_stream_t *st = mt_meta_stream_new();
    if (!st) {
        mt_buf_unref(&s->base.w->pool, init.buf);
        mt_session_close(&s->base);
        return;
    }
    st->down_id = msg->request_id;
    st->up_id = u->next_id++;
    if (u->next_id == 0)
        u->next_id = 1;
    st->init = init;
    st->sess = s;
    st->up = u;
    st->idle_ms = t.route ? t.route->timeout_ms : 0;
    st->start_ns = s->cur_start_ns;
    st->snap = mt_snapshot_ref(s->base.snap);
    st->dest = t.cluster;
    st->set = meta_subset_set(s, &t);
    st->route_name = t.route ? t.route->name : NULL;
    st->subset_name = t.subset ? t.subset->name : NULL;
    st->rflags = s->cur_flags;
    if (MT_UNLIKELY(s->base.snap->access_log != NULL))
        msg_method(msg, st->op, sizeof(st->op));
    mt_meta_stream_link_down(&s->streams, st);
    mt_meta_stream_link_up(&u->streams, st);
    mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_STREAMS_TOTAL, 1);
    if (t.route && t.route->mirror)
        stream_mirror_open(s, st, t.route, msg);
    stream_send_up(s, st, init.buf, (uint8_t *)init.p, init.len, msg->type);
}

/* Tells st's server that the stream is over (the client went away, or it idled past its
 * timeout), when the codec can build a reset: decoded again from the init frame (which
 * carries the upstream's id). */
static void stream_reset_up(meta_worker_t *mw, mt_meta_stream_t *st)
{
    meta_up_t *u = st->up;
    const mt_codec_t *codec = u ? u->codec : NULL;
    if (!codec || !codec->stream_reset || u->base.state == MT_UPSTREAM_CLOSING)
        return;
    void *dst = malloc(codec->state_size ? codec->state_size : 1);
    if (!dst || mt_codec_init(codec, dst, NULL) != MT_OK) {
        free(dst);
        return;
    }
    if (!mw->emsg_init) {
        mt_msg_init(&mw->emsg);
        mw->emsg_init = true;
    }
    mt_codec_err_t err = {0};
    mt_wbuf_t *o = &mw->scratch;
    o->len = 0;
    if (codec->decode(dst, (const uint8_t *)st->init.p, st->init.len, &mw->emsg, &err) == MT_OK &&
        codec->stream_reset(&mw->emsg, o) == MT_OK && o->len &&
        mt_outq_add_copy(&u->base.out, (const char *)o->data, o->len) == 0)
        mt_upstream_schedule(&u->base);
    codec->free(dst);
    free(dst);
}

/* Gives st's client the codec's native error of kind (built from the init frame, as for a
 * request; for mrpc a reset of the stream). */
static void stream_error_down(meta_worker_t *mw, mt_meta_stream_t *st, mt_error_kind_t kind,
                              const char *text)
{
    meta_sess_t *s = st->sess;
    meta_req_t tmp = {.frame = st->init, .down_id = st->down_id};
    mt_wbuf_t *o = &mw->scratch;
    o->len = 0;
    if (s && !s->base.closing && req_error_bytes(mw, &tmp, s->codec, kind, text, o) == 0 &&
        o->len && mt_outq_add_copy(&s->base.out, (const char *)o->data, o->len) == 0)
        mt_worker_schedule_flush(mw->w, &s->base.out);
}

/* No frame either way for the route's timeout: the server gets a reset, the client the
 * codec's upstream-timeout error, and the stream ends (UT). */
static void stream_idle_fired(mt_timer_t *t)
{
    mt_meta_stream_t *st = MT_CONTAINER_OF(t, mt_meta_stream_t, idle_timer);
    meta_sess_t *s = st->sess; /* set: a closing session ends its streams */
    meta_worker_t *mw = mw_of(s->base.w);
    char text[ERR_TEXT];
    snprintf(text, sizeof(text), "meltemi: stream idle for %u ms (its route's timeout)",
             st->idle_ms);
    if (st->dest)
        mt_stat_add(st->dest->stats, mw->w->id, MT_ST_UPSTREAM_RQ_TIMEOUT, 1);
    stream_reset_up(mw, st);
    stream_error_down(mw, st, MT_ERR_UPSTREAM_TIMEOUT, text);
    stream_finish(mw, st, MT_STREAM_END_TIMEOUT);
}

/* A stream frame from the client. */
static bool sess_authorized(meta_sess_t *s, const mt_msg_t *msg);

static void sess_stream_frame(meta_sess_t *s, const mt_msg_t *msg)
{
    mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_STREAM_FRAMES, 1);
    mt_meta_stream_t *st = mt_meta_stream_find_down(&s->streams, msg->request_id);
    if (msg->type == MT_MSG_STREAM_INIT) {
        /* AuthorizationPolicy judges a stream by its init frame (its service and method),
         * as a request; the frames that follow go along an open stream, so a denied init
         * leaves them nothing to follow ("no such stream"). */
        if (st) {
            sess_error_now(s, msg, MT_ERR_UNSPECIFIED, "meltemi: stream id already open");
        } else if (MT_UNLIKELY(s->base.conf->authz != NULL) && !sess_authorized(s, msg)) {
            s->cur_flags |= MT_RF_RBAC;
            sess_error_now(s, msg, MT_ERR_UNSPECIFIED, "RBAC: access denied");
        } else if (sess_rate_allows(s, msg)) { /* an init counts against rate limits */
            stream_open(s, msg);
        }
        return;
    }
    if (st)
        stream_send_up(s, st, s->base.rbuf, (uint8_t *)msg->frame, msg->frame_len, msg->type);
    else if (msg->type != MT_MSG_STREAM_RESET) /* nobody to tell; a reset needs no answer */
        sess_error_now(s, msg, MT_ERR_UNSPECIFIED, "meltemi: no such stream");
}

/* A stream frame from the upstream (lying at frame in u->base.rbuf): to its client. */
static void up_stream_frame(meta_worker_t *mw, meta_up_t *u, const mt_msg_t *msg, uint8_t *frame)
{
    mt_meta_stream_t *st = mt_meta_stream_find_up(&u->streams, msg->request_id);
    if (!st)
        return;          /* the stream ended on the client's side meanwhile */
    if (st->is_mirror) { /* a mirror's frames reach nobody; its own close or reset ends it */
        if (mt_meta_stream_frame(st, msg->type, false))
            stream_end(mw, st);
        return;
    }
    meta_sess_t *s = st->sess;
    mt_stat_add(s->base.conf->stats, mw->w->id, MT_ST_STREAM_FRAMES, 1);
    if (mt_codec_set_request_id(u->codec, frame, msg->frame_len, st->down_id) != MT_OK ||
        mt_outq_add_ref(&s->base.out, u->base.rbuf, (const char *)frame, msg->frame_len) != 0) {
        stream_finish(mw, st, MT_STREAM_END_ERROR);
        mt_session_close(&s->base);
        return;
    }
    mt_worker_schedule_flush(mw->w, &s->base.out);
    st->frames_out++;
    st->bytes_out += msg->frame_len;
    stream_touch(mw, st);
    if (mt_meta_stream_frame(st, msg->type, false))
        stream_finish(mw, st,
                      msg->type == MT_MSG_STREAM_RESET ? MT_STREAM_END_RESET : MT_STREAM_END_CLOSE);
}

/* u is going: each of its streams gets the codec's native error (built from its init frame,
 * as for a request), and ends. */
static void up_streams_fail(meta_worker_t *mw, meta_up_t *u)
{
    while (u->streams.head) {
        mt_meta_stream_t *st = u->streams.head;
        if (st->is_mirror) { /* the mirror went: the stream it copies goes on */
            stream_end(mw, st);
            continue;
        }
        stream_error_down(mw, st, MT_ERR_UNSPECIFIED,
                          "meltemi: the stream's upstream connection closed");
        stream_finish(mw, st, MT_STREAM_END_UPSTREAM_GONE);
    }
}

/* Sends r again, to another endpoint of its destination where one is healthy, when its route
 * retries on `why` and tries and time are left. True when it is on its way (the failure is
 * not answered); false leaves the answer to the caller. */
static bool req_retry(meta_worker_t *mw, meta_req_t *r, uint32_t why)
{
    meta_sess_t *s = r->sess;
    const mt_meta_route_t *rt = r->route;
    uint64_t now = mt_worker_now_ms(mw->w);
    if (!s || !rt || !(rt->retry_on & why) || !r->tries_left || now >= r->overall_deadline_ms)
        return false;
    meta_cluster_t *mc = meta_cluster_get(mw, r->cluster, s->codec);
    int64_t ep = mc ? meta_pick(mw, mc, r->endpoints, r->rr_index, NULL, s, r->last_ep) : -1;
    const char *whynot = NULL;
    meta_up_t *u = ep >= 0 ? up_for(mw, &mc->eps[ep], s->base.id, &whynot) : NULL;
    if (!u)
        return false;
    r->tries_left--;
    r->last_ep = ep;
    r->deadline_ms = r->overall_deadline_ms;
    if (rt->per_try_timeout_ms && now + rt->per_try_timeout_ms < r->deadline_ms)
        r->deadline_ms = now + rt->per_try_timeout_ms;
    if (up_send(u, r, r->frame.buf, (uint8_t *)r->frame.p, r->frame.len, false) != 0)
        return false;
    mt_stat_add(r->cluster->stats, mw->w->id, MT_ST_UPSTREAM_RQ_RETRY, 1);
    return true;
}

/* A fault delay is over: r goes to an endpoint of its destination now, its timeouts counted
 * from now (as Envoy's router starts after its fault filter). */
static void req_delay_fired(mt_timer_t *t)
{
    meta_req_t *r = MT_CONTAINER_OF(t, meta_req_t, delay_timer);
    meta_sess_t *s = r->sess; /* set: a closing session stops the timer */
    meta_worker_t *mw = mw_of(s->base.w);
    r->delayed = false;
    req_set_deadlines(r, r->route, sess_timeout_ms(s, r->route), mt_worker_now_ms(mw->w));
    meta_cluster_t *mc = meta_cluster_get(mw, r->cluster, s->codec);
    int64_t ep = mc ? meta_pick(mw, mc, r->endpoints, r->rr_index, NULL, s, -1) : -1;
    const char *why = "no healthy endpoint";
    meta_up_t *u = ep >= 0 ? up_for(mw, &mc->eps[ep], s->base.id, &why) : NULL;
    if (u) {
        r->last_ep = ep;
        if (up_send(u, r, r->frame.buf, (uint8_t *)r->frame.p, r->frame.len, false) == 0)
            return;
        why = "out of memory";
    }
    char text[ERR_TEXT];
    snprintf(text, sizeof(text), "meltemi: upstream for %s unavailable: %s",
             r->cluster->service ? r->cluster->service : r->cluster->name, why);
    mt_stat_add(r->cluster->stats, mw->w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
    req_fail(mw, r, MT_ERR_NO_HEALTHY_UPSTREAM, text);
}

/* ---- requests from the client ------------------------------------------------------------- */

/* A request boundary, before the next frame is decoded: pick up a reload (routes, mutations,
 * clusters, and with them the attributes the decoder keeps). */
static void sess_rebind(meta_sess_t *s)
{
    mt_session_rebind(&s->base);
    const mt_meta_listener_conf_t *lc = mt_meta_listener(s->base.conf);
    /* A connection keeps the codec it started with while the port's protocol stays the same
     * (a reloaded Lua codec is a new table of the same name): docs/codecs.md. */
    if (lc && lc->codec &&
        (lc->codec == s->codec || strcmp(lc->codec->name, s->codec->name) == 0)) {
        s->msg.want = &lc->want;
        return;
    }
    s->msg.want = NULL; /* the old snapshot's listener may be freed with it: keep everything */
    s->codec_changed = true;
}

/* MetaRouter localRateLimit: false after answering msg with the codec's over-limit error
 * when its bucket (its condition's, else the default one) has no token left. */
static bool sess_rate_allows(meta_sess_t *s, const mt_msg_t *msg)
{
    const mt_meta_listener_conf_t *lc = mt_meta_listener(s->base.conf);
    if (MT_LIKELY(!lc || (!lc->rate_bucket && lc->n_rate_conds == 0)))
        return true;
    meta_worker_t *mw = mw_of(s->base.w);
    mt_token_bucket_t *b = lc->rate_bucket;
    for (uint32_t i = 0; i < lc->n_rate_conds; i++) {
        const mt_meta_rate_cond_t *c = &lc->rate_conds[i];
        bool all = true;
        for (uint32_t j = 0; all && j < c->n_match; j++)
            all = mt_meta_match_one(&c->match[j], msg, mw->match_data);
        if (all) {
            b = (mt_token_bucket_t *)&c->bucket; /* shared state: atomics, see ratelimit.h */
            break;
        }
    }
    if (!b || mt_token_bucket_take(b, mt_worker_now_ms(s->base.w)))
        return true;
    mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_RATE_LIMITED, 1);
    char text[ERR_TEXT];
    snprintf(text, sizeof(text), "meltemi: rate limited (%s localRateLimit)", sess_service(s));
    sess_error_now(s, msg, MT_ERR_OVER_LIMIT, text);
    return false;
}

/* A route's fault.abort (meltemi extension): true after answering msg with the route's
 * codec error, for its percentage of requests. */
static bool sess_fault_abort_roll(meta_sess_t *s, const mt_msg_t *msg, const mt_meta_route_t *rt)
{
    if (!mt_meta_mirror_roll(rt->abort_percentage, mw_rand(mw_of(s->base.w))))
        return false;
    char text[ERR_TEXT];
    snprintf(text, sizeof(text), "meltemi: fault injected (route %s)", rt->name ? rt->name : "?");
    sess_error_now(s, msg, rt->abort_kind, text);
    return true;
}

/* The test inline, the roll out of line: most routes have no fault (a call per request). */
static inline bool sess_fault_abort(meta_sess_t *s, const mt_msg_t *msg, const mt_meta_route_t *rt)
{
    return MT_UNLIKELY(rt && rt->abort_percentage > 0) && sess_fault_abort_roll(s, msg, rt);
}

/* AuthorizationPolicy: paths are the interface (Dubbo) or service, methods the method. */
static bool sess_authorized(meta_sess_t *s, const mt_msg_t *msg)
{
    const mt_str_t *path = mt_msg_get_cstr(msg, "interface");
    if (!path)
        path = mt_msg_get_cstr(msg, "service");
    const mt_str_t *method = mt_msg_get_cstr(msg, "method");
    const char *svc = s->base.conf->service;
    mt_authz_request_t r = {.method = method ? method->ptr : NULL,
                            .method_len = method ? method->len : 0,
                            .path = path ? path->ptr : svc,
                            .path_len = path ? path->len : (svc ? strlen(svc) : 0)};
    return mt_session_authorize(&s->base, &r);
}

/* The destination a filter chose (ctx:route) into t: the MetaRouter route that matches still
 * gives its policies (timeout, retries, mutations, mirror, faults), not its destination; with
 * none matching the request goes there plainly. False after answering msg with a native error
 * (no such cluster or subset). */
static bool sess_route_filtered(meta_sess_t *s, const mt_msg_t *msg, const mt_meta_verdict_t *fv,
                                meta_target_t *t)
{
    meta_worker_t *mw = mw_of(s->base.w);
    const mt_meta_listener_conf_t *lc = mt_meta_listener(s->base.conf);
    memset(t, 0, sizeof(*t));
    t->route = lc && lc->n_routes ? mt_meta_route_find(lc, msg, mw->match_data) : NULL;
    t->cluster = meta_filter_cluster(s, fv->route.cluster);
    t->subset = t->cluster ? meta_subset_named(t->cluster, fv->route.subset, &t->rr_index) : NULL;
    if (t->subset)
        return true;
    char text[ERR_TEXT];
    snprintf(text, sizeof(text), "meltemi: Lua filter route: %s%s%s is not defined",
             t->cluster ? t->cluster->name : "?", fv->route.subset ? " subset " : "",
             fv->route.subset ? fv->route.subset : "");
    sess_error_now(s, msg, MT_ERR_CLUSTER_NOT_FOUND, text);
    return false;
}

/* A request of a listener with Lua filters: on_request decides first (docs/lua-filters.md),
 * then the MetaRouter route (or the filter's destination), fault abort, forward. */
static void sess_filtered(meta_sess_t *s, const mt_msg_t *msg)
{
    meta_worker_t *mw = mw_of(s->base.w);
    mt_meta_lua_request(&mw->lua, s->base.li, msg, s->base.id);
    const mt_meta_verdict_t *fv = &mw->lua.verdict;
    if (fv->has_error) {
        if (!fv->failed)
            s->cur_flags |= MT_RF_RBAC; /* Istio's flag of a denied request */
        sess_error_now(s, msg, fv->error_kind, fv->error_text);
        return;
    }
    meta_target_t t;
    bool routed = fv->route.cluster ? sess_route_filtered(s, msg, fv, &t) : sess_route(s, msg, &t);
    if (routed && !sess_fault_abort(s, msg, t.route))
        sess_forward(s, msg, &t, fv);
}

/* After the rate limits: the Lua filters (when the listener has any), the route, forward. */
static void sess_route_and_forward(meta_sess_t *s, const mt_msg_t *msg)
{
    mt_worker_t *w = s->base.w;
    meta_worker_t *mw = mw_of(w);
    if (MT_UNLIKELY(mt_meta_lua_has_chain(&mw->lua, s->base.li)) && s->base.snap == w->snap) {
        sess_filtered(s, msg);
        return;
    }
    meta_target_t t;
    if (sess_route(s, msg, &t) && !sess_fault_abort(s, msg, t.route))
        sess_forward(s, msg, &t, NULL);
}

/* ---- globalRateLimit: an Envoy rate limit service asked per request (core/rls.h) ------------- */

static void sess_on_data(mt_session_t *base);
static void sess_on_frame(meta_sess_t *s, const mt_msg_t *msg);
static void sess_malformed(meta_sess_t *s, const mt_codec_err_t *err);
static void sess_global_rate_answer(mt_rls_call_t *c, void *data, mt_rls_result_t r,
                                    const char *why);

typedef enum global_ask { ASK_PASS = 0, ASK_STARTED, ASK_FAILED } global_ask_t;

/* Asks the rate limit service about msg: ASK_PASS when the limit does not apply (the match
 * does not select it, or it lacks a descriptor's property: as Aeraki, no descriptor, no
 * limit), ASK_STARTED with *call, ASK_FAILED with *why (no call: apply denyOnFail now). */
static global_ask_t sess_global_rate_ask(meta_sess_t *s, const mt_msg_t *msg,
                                         const mt_meta_global_rate_limit_t *g, mt_rls_call_t **call,
                                         const char **why)
{
    meta_worker_t *mw = mw_of(s->base.w);
    for (uint32_t j = 0; j < g->n_match; j++) {
        if (!mt_meta_match_one(&g->match[j], msg, mw->match_data))
            return ASK_PASS;
    }
    mt_rls_entry_t small[8],
        *e = g->n_descriptors <= 8 ? small : malloc(sizeof(*e) * g->n_descriptors);
    *why = "out of memory";
    if (!e)
        return ASK_FAILED;
    bool all = true;
    for (uint32_t i = 0; all && i < g->n_descriptors; i++) {
        const mt_str_t *v =
            mt_msg_get(msg, g->descriptors[i].property.ptr, g->descriptors[i].property.len);
        all = v != NULL;
        if (v)
            e[i] = (mt_rls_entry_t){g->descriptors[i].key.ptr, v->ptr, g->descriptors[i].key.len,
                                    v->len};
    }
    const mt_endpoint_conf_t *ep = NULL;
    for (uint32_t i = 0; g->cluster && i < g->cluster->n_endpoints && !ep; i++) {
        if (!g->cluster->endpoints[i].resolve_error)
            ep = &g->cluster->endpoints[i];
    }
    if (all)
        *why = "the rate limit service's cluster has no usable endpoint";
    *call = NULL;
    if (all && ep &&
        (mw->rls ||
         (mw->rls = mt_rls_pool_new(&s->base.w->loop, &s->base.w->timers, s->base.w->id)))) {
        mt_rls_target_t t = {(const struct sockaddr *)&ep->sa, ep->salen, g->authority};
        *call = mt_rls_call_start(mw->rls, &t, g->domain, e, g->n_descriptors, g->timeout_ms,
                                  s->base.conf->stats, sess_global_rate_answer, s, why);
    }
    if (e != small)
        free(e);
    if (!all)
        return ASK_PASS;
    return *call ? ASK_STARTED : ASK_FAILED;
}

/* The verdict r for msg (the frame at rbuf->pos): refused with the codec's over-limit error
 * (flag RL), or on its way. */
static void sess_global_rate_apply(meta_sess_t *s, const mt_msg_t *msg,
                                   const mt_meta_global_rate_limit_t *g, mt_rls_result_t r,
                                   const char *why)
{
    mt_worker_t *w = s->base.w;
    bool failed = r != MT_RLS_OK && r != MT_RLS_OVER_LIMIT;
    bool refuse = r == MT_RLS_OVER_LIMIT || (failed && (!g || g->deny_on_fail));
    if (failed) {
        mt_debug("listener %s: rate limit service %s: %s (%s)", s->base.conf->name,
                 g ? g->service : "?", why, refuse ? "denyOnFail: refused" : "let through");
        mt_stat_add(s->base.conf->stats, w->id,
                    refuse ? MT_ST_RLS_FAIL_CLOSED : MT_ST_RLS_FAIL_OPEN, 1);
    }
    if (!refuse) {
        sess_route_and_forward(s, msg);
        return;
    }
    char text[ERR_TEXT];
    if (r == MT_RLS_OVER_LIMIT)
        snprintf(text, sizeof(text), "meltemi: rate limited (%s globalRateLimit)", sess_service(s));
    else
        snprintf(text, sizeof(text),
                 "meltemi: rate limited (%s globalRateLimit: rate limit service failed: %s)",
                 sess_service(s), why);
    mt_stat_add(s->base.conf->stats, w->id, MT_ST_RATE_LIMITED, 1);
    sess_error_now(s, msg, MT_ERR_OVER_LIMIT, text);
}

/* The held array, made on first use with every message initialised. */
static bool sess_held_alloc(meta_sess_t *s)
{
    if (s->held)
        return true;
    s->held = calloc(HELD_MAX, sizeof(*s->held));
    if (!s->held)
        return false;
    for (uint32_t i = 0; i < HELD_MAX; i++)
        mt_msg_init(&s->held[i].msg);
    return true;
}

/* Holds s->msg (the frame at rbuf->pos, nothing held yet) for its call: the message moves
 * into the held array (messages own only heap memory, so they move by value). */
static void sess_hold_first(meta_sess_t *s, mt_rls_call_t *c)
{
    meta_held_t *e = &s->held[0];
    const mt_attr_filter_t *want = s->msg.want; /* the listener's, for every message */
    mt_msg_t tmp = e->msg;
    e->msg = s->msg;
    s->msg = tmp;
    s->msg.want = want;
    e->call = c;
    e->kind = HELD_WAIT;
    e->counted = true;
    e->pass = false;
    e->start_ns = s->cur_start_ns;
    s->n_held = 1;
    s->held_bytes = (uint32_t)e->msg.frame_len;
    s->base.held = true;
    s->base.pending++; /* a drain or idle timeout waits for it like for a reply */
    mt_session_pause(&s->base);
}

/* MetaRouter globalRateLimit: true when msg waits for the rate limit service (or was answered
 * already); false lets it through now. */
static bool sess_global_rate_wait(meta_sess_t *s, const mt_msg_t *msg)
{
    const mt_meta_listener_conf_t *lc = mt_meta_listener(s->base.conf);
    const mt_meta_global_rate_limit_t *g = lc ? lc->global_rl : NULL;
    if (MT_LIKELY(!g))
        return false;
    if (!sess_held_alloc(s)) {
        mt_session_close(&s->base);
        return true;
    }
    mt_rls_call_t *c = NULL;
    const char *why = "";
    switch (sess_global_rate_ask(s, msg, g, &c, &why)) {
    case ASK_PASS:
        return false;
    case ASK_STARTED:
        sess_hold_first(s, c);
        return true;
    case ASK_FAILED:
        break;
    }
    mt_debug("listener %s: rate limit service %s: %s", s->base.conf->name, g->service, why);
    if (!g->deny_on_fail) {
        mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_RLS_FAIL_OPEN, 1);
        return false;
    }
    sess_global_rate_apply(s, msg, g, MT_RLS_FAILED, why);
    return true;
}

/* True when a frame decoded ahead may be asked about before the frames held before it are
 * handled: a plain request, on a listener whose earlier checks (AuthorizationPolicy,
 * localRateLimit) cannot answer it first - an answer must not overtake earlier ones. */
static bool sess_ahead_allowed(const meta_sess_t *s, const mt_meta_listener_conf_t *lc)
{
    return lc && lc->global_rl && !s->base.conf->authz && !lc->rate_bucket &&
           lc->n_rate_conds == 0 && !s->codec_changed && s->base.snap == s->base.w->snap;
}

/* While the first held frame waits: decodes the frames read after it, each into its own held
 * message, and asks about each (its call joins the pending batch of its descriptor). Stops at
 * an incomplete frame, a full array, or a frame not to ask about now, which is kept decoded
 * (HELD_PLAIN) and handled from the start in its turn. */
static void sess_global_rate_ahead(meta_sess_t *s)
{
    const mt_meta_listener_conf_t *lc = mt_meta_listener(s->base.conf);
    mt_buf_t *b = s->base.rbuf;
    if (!b || !sess_ahead_allowed(s, lc))
        return;
    while (s->n_held < HELD_MAX && s->held[s->n_held - 1].kind <= HELD_ANSWERED &&
           (size_t)(b->last - b->pos) > s->held_bytes && !s->base.closing) {
        meta_held_t *e = &s->held[s->n_held];
        e->msg.want = s->msg.want;
        e->err.code = MT_CODEC_E_NONE;
        e->err.text[0] = '\0';
        const uint8_t *at = (const uint8_t *)b->pos + s->held_bytes;
        mt_status_t rc = s->codec->decode(s->dec, at, (size_t)(b->last - b->pos) - s->held_bytes,
                                          &e->msg, &e->err);
        if (rc == MT_AGAIN)
            return;
        e->call = NULL;
        e->counted = false;
        e->start_ns = s->base.w->now_ns;
        s->n_held++;
        if (rc == MT_ERROR) {
            e->kind = HELD_MALFORMED;
            return;
        }
        s->held_bytes += (uint32_t)e->msg.frame_len;
        const mt_msg_t *m = &e->msg;
        if (m->is_reply || m->type != MT_MSG_REQUEST) {
            e->kind = HELD_PLAIN; /* handled from the start in its turn */
            return;
        }
        const char *why = "";
        e->pass = false;
        switch (sess_global_rate_ask(s, m, lc->global_rl, &e->call, &why)) {
        case ASK_STARTED:
            e->kind = HELD_WAIT;
            s->base.pending++;
            break;
        case ASK_PASS: /* not limited: forwarded in its turn */
            e->kind = HELD_ANSWERED;
            e->pass = true;
            break;
        case ASK_FAILED: /* denyOnFail decides in its turn */
            e->kind = HELD_ANSWERED;
            e->result = MT_RLS_FAILED;
            snprintf(e->err.text, sizeof(e->err.text), "%s", why);
            break;
        }
    }
}

/* Takes the first held frame out: its message into s->msg (the array keeps the old one,
 * rotated to the end); *out gets the rest of the entry. */
static void sess_held_pop(meta_sess_t *s, meta_held_t *out)
{
    meta_held_t first = s->held[0];
    const mt_attr_filter_t *want = s->msg.want;
    mt_msg_t tmp = s->msg;
    s->msg = first.msg;
    s->msg.want = want;
    first.msg = tmp;
    memmove(&s->held[0], &s->held[1], sizeof(*s->held) * (HELD_MAX - 1));
    s->held[HELD_MAX - 1] = first;
    *out = first;
    s->n_held--;
    s->held_bytes -= (uint32_t)s->msg.frame_len;
}

/* Handles the held frames whose turn it is (answered, or not asked about), in order, each
 * as if it had just been read; stops at one still waiting, or one held again. */
static void sess_held_drain(meta_sess_t *s)
{
    const mt_meta_listener_conf_t *lc = mt_meta_listener(s->base.conf);
    const mt_meta_global_rate_limit_t *g = lc ? lc->global_rl : NULL;
    mt_worker_t *w = s->base.w;
    while (s->n_held && s->held[0].kind != HELD_WAIT && !s->base.closing && !s->base.finishing) {
        meta_held_t e;
        sess_held_pop(s, &e);
        mt_buf_t *b = s->base.rbuf;
        if (e.kind == HELD_MALFORMED) {
            sess_malformed(s, &e.err);
            return;
        }
        if (e.kind == HELD_PLAIN) {
            sess_on_frame(s, &s->msg); /* nothing is held before it: as if just read */
            if (s->n_held)
                return; /* held again, at rbuf->pos */
        } else {
            s->cur_start_ns = e.start_ns;
            s->cur_bytes = (uint32_t)s->msg.frame_len;
            s->cur_flags = 0;
            s->cur_dest = s->base.cluster ? s->base.cluster->conf : NULL;
            if (!e.counted)
                mt_stat_add(s->base.conf->stats, w->id, MT_ST_REQUESTS_TOTAL, 1);
            if (e.pass)
                sess_route_and_forward(s, &s->msg);
            else
                sess_global_rate_apply(s, &s->msg, g, e.result, e.err.text);
        }
        if (s->base.closing)
            return;
        b->pos += s->msg.frame_len;
    }
}

/* An answer for a held frame is in: the frames whose turn it is are handled, later ones
 * decoded ahead, and reading goes on once nothing is held (what session_on_read does after
 * on_data). */
static void sess_global_rate_answer(mt_rls_call_t *c, void *data, mt_rls_result_t r,
                                    const char *why)
{
    meta_sess_t *s = data;
    mt_worker_t *w = s->base.w;
    meta_held_t *e = NULL;
    for (uint32_t i = 0; i < s->n_held && !e; i++) {
        if (s->held[i].kind == HELD_WAIT && s->held[i].call == c)
            e = &s->held[i];
    }
    if (!e)
        return; /* cannot happen: a held frame's call is cancelled when it goes */
    e->call = NULL;
    e->kind = HELD_ANSWERED;
    e->result = r;
    snprintf(e->err.text, sizeof(e->err.text), "%s", why ? why : "");
    s->base.pending--;
    if (e != &s->held[0])
        return; /* an earlier frame still waits */
    w->now_ns = uv_hrtime();
    sess_held_drain(s);
    if (s->base.closing)
        return;
    if (s->n_held) {
        sess_on_data(&s->base); /* decodes more ahead */
        return;
    }
    s->base.held = false;
    sess_on_data(&s->base);
    mt_buf_t *b = s->base.rbuf;
    if (s->n_held || s->base.closing)
        return; /* the next request waits in turn */
    if (b && b->pos == b->last) {
        mt_buf_unref(&w->pool, b);
        s->base.rbuf = NULL;
    }
    mt_session_check_bounds(&s->base);
    mt_session_maybe_finish(&s->base);
    if (!s->base.closing)
        mt_session_resume(&s->base);
}

static void sess_on_frame(meta_sess_t *s, const mt_msg_t *msg)
{
    mt_worker_t *w = s->base.w;
    meta_worker_t *mw = mw_of(w);
    s->cur_start_ns = w->now_ns;
    s->cur_bytes = (uint32_t)msg->frame_len;
    s->cur_flags = 0;
    s->cur_dest = s->base.cluster ? s->base.cluster->conf : NULL;
    if (MT_UNLIKELY(s->codec_changed)) {
        /* The port changed protocol under this connection: answer with the codec it speaks
         * and close once everything is answered. */
        sess_error_now(s, msg, MT_ERR_UNSPECIFIED,
                       "meltemi: this port changed protocol; reconnect");
        s->base.finishing = true;
        return;
    }
    if (msg->is_reply)
        return; /* a client answering something: we never ask clients anything */
    if (msg->type == MT_MSG_HEARTBEAT && (s->codec->flags & MT_CODEC_F_LOCAL_HEARTBEAT)) {
        if (!msg->expects_reply || !s->codec->heartbeat_reply)
            return;
        mt_wbuf_t *o = &mw->scratch;
        o->len = 0;
        if (s->codec->heartbeat_reply(msg, o) == MT_OK)
            sess_reply_local(s, o->data, o->len);
        return;
    }
    if (mt_msg_type_is_stream(msg->type)) {
        sess_stream_frame(s, msg);
        return;
    }
    mt_stat_add(s->base.conf->stats, w->id, MT_ST_REQUESTS_TOTAL, 1); /* heartbeats are not */
    if (MT_UNLIKELY(s->base.conf->authz != NULL) && !sess_authorized(s, msg)) {
        s->cur_flags |= MT_RF_RBAC; /* Istio's response flag of a denied request */
        sess_error_now(s, msg, MT_ERR_UNSPECIFIED, "RBAC: access denied");
        return;
    }
    if (!sess_rate_allows(s, msg) || sess_global_rate_wait(s, msg))
        return;
    sess_route_and_forward(s, msg);
}

/* ---- session shell hooks ------------------------------------------------------------------ */

/* A request the client left before its reply (Envoy's DC, response_code "0"): counted and
 * logged now, as its end, since no reply will reach anyone. */
static void req_observe_dc(meta_sess_t *s, meta_req_t *r)
{
    r->rflags |= MT_RF_DC;
    mt_istio_set_t *log = mt_session_request_done(&s->base, r->dest, r->set, MT_ISTIO_CODE_NONE,
                                                  r->rflags, r->start_ns, r->req_bytes, 0);
    if (r->method)
        req_count_method(s, r, MT_ISTIO_CODE_NONE);
    if (MT_UNLIKELY(log != NULL)) {
        char trace_id[33] = "";
        if (r->traced)
            mt_trace_hex(r->trace.trace_id, 16, trace_id);
        mt_request_end_t e = {.dest = r->dest,
                              .start_ns = r->start_ns,
                              .code = MT_ISTIO_CODE_NONE,
                              .flags = r->rflags,
                              .req_bytes = r->req_bytes,
                              .op = r->op[0] ? r->op : NULL,
                              .ep = r->ep,
                              .subset = r->set ? r->subset_name : NULL,
                              .trace_id = trace_id[0] ? trace_id : NULL};
        mt_session_access_log(&s->base, &e, log);
    }
}

/* Orphan what upstreams still owe us; free what is answered or never left. A request not
 * answered yet ends here as DC (a oneway one has nothing to wait for). */
static void sess_on_close(mt_session_t *base)
{
    meta_sess_t *s = (meta_sess_t *)base;
    meta_worker_t *mw = mw_of(base->w);
    meta_req_t *next;
    for (uint32_t i = 0; i < s->n_held; i++) { /* nobody waits for their answers any more */
        if (s->held[i].kind == HELD_WAIT) {
            mt_rls_call_cancel(s->held[i].call);
            s->held[i].call = NULL;
            base->pending--;
        }
    }
    s->n_held = 0;
    s->held_bytes = 0;
    for (meta_req_t *r = s->head; r; r = next) {
        next = r->snext;
        if (!r->done)
            req_observe_dc(s, r);
        r->sprev = r->snext = NULL;
        r->sess = NULL;
        if (r->delayed) /* held by a fault delay: nobody waits for it any more, never sent */
            mt_timer_stop(&base->w->timers, &r->delay_timer);
        if (!r->up)
            req_free(mw, r);
    }
    s->head = s->tail = NULL;
    mt_meta_lua_conn_closed(&mw->lua, base->id); /* its ctx.conn goes (no-op without filters) */
    while (s->streams.head) { /* the client is gone: its streams are reset upstream */
        stream_reset_up(mw, s->streams.head);
        stream_finish(mw, s->streams.head, MT_STREAM_END_CLIENT_GONE);
    }
}

static void sess_on_closed(mt_session_t *base)
{
    meta_sess_t *s = (meta_sess_t *)base;
    s->codec->free(s->dec);
    free(s->dec);
    mt_msg_free(&s->msg);
    for (uint32_t i = 0; s->held && i < HELD_MAX; i++)
        mt_msg_free(&s->held[i].msg);
    free(s->held);
    mw_of(base->w)->n_sess--;
}

static void sess_malformed(meta_sess_t *s, const mt_codec_err_t *err)
{
    char peer[64];
    const char *name = s->base.conf->name, *who = mt_session_peer(&s->base, peer, sizeof(peer));
    if (err->code == MT_CODEC_E_CODEC_FAILED) /* a Lua codec's own failure, not the client's */
        mt_warn("listener %s: the codec failed on a frame of client %s (%s); closing it after "
                "its answers",
                name, who, err->text);
    else
        mt_warn("listener %s: client %s sent a malformed frame (%s); closing it after its answers",
                name, who, err->text);
    mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_PROTOCOL_ERRORS, 1);
    s->base.finishing = true;
    mt_session_pause(&s->base);
}

static void sess_on_data(mt_session_t *base)
{
    meta_sess_t *s = (meta_sess_t *)base;
    mt_buf_t *b = base->rbuf;
    while (b && b->pos < b->last && !base->finishing && !base->closing) {
        if (s->n_held) { /* the frame at pos waits for the rate limit service */
            sess_global_rate_ahead(s);
            break;
        }
        if (MT_UNLIKELY(base->snap != base->w->snap) && !s->codec_changed)
            sess_rebind(s);
        mt_codec_err_t err; /* filled by decode when it fails */
        err.code = MT_CODEC_E_NONE;
        err.text[0] = '\0';
        mt_status_t rc =
            s->codec->decode(s->dec, (const uint8_t *)b->pos, mt_buf_unread(b), &s->msg, &err);
        if (rc == MT_AGAIN)
            break;
        if (rc == MT_ERROR) {
            sess_malformed(s, &err);
            break;
        }
        sess_on_frame(s, &s->msg);
        if (s->n_held)
            continue; /* held at this frame until the rate limit service answers */
        b->pos += s->msg.frame_len;
    }
}

static const mt_session_ops_t meta_sess_ops = {
    .on_data = sess_on_data,
    .on_close = sess_on_close,
    .on_closed = sess_on_closed,
};

/* ---- timeouts (on the wheel) and the per-worker tick: retired clusters, drain -------------- */

/* Multiplexed connections answer a late request alone; in-order ones cannot skip a reply, so
 * a timeout there fails everything in flight and closes the connection (as the Redis path). */
/* Whether any request in flight on u is past its deadline. Route timeouts differ, so the
 * deadlines are not in send order: every request is looked at (a few per connection). */
static bool up_any_expired(const meta_up_t *u, uint64_t now)
{
    for (const meta_req_t *r = u->head; r; r = r->unext) {
        if (r->deadline_ms && now >= r->deadline_ms)
            return true;
    }
    return false;
}

static void up_check_timeouts(meta_worker_t *mw, meta_up_t *u, uint64_t now)
{
    char lbl[256], text[ERR_TEXT];
    mt_stats_block_t *cs = u->mep->mc->wc->conf->stats;
    if (!u->head || !up_any_expired(u, now))
        return;
    snprintf(text, sizeof(text), "meltemi: upstream %s timed out",
             ep_label(u->mep, lbl, sizeof(lbl)));
    mt_upstream_outcome(u->mep->wep, mw->w, MT_OUTLIER_GATEWAY); /* once per timeout pass */
    if (!u->multiplexed) {
        /* In-order replies: the late one would answer the next request; all of them fail. */
        mt_warn("%s (%u requests in flight failed)", text + 9, u->base.inflight);
        mt_stat_add(cs, mw->w->id, MT_ST_UPSTREAM_RQ_TIMEOUT, u->base.inflight);
        meta_req_t *r = up_detach_all(u);
        up_close(u); /* first: a retry must not land on it */
        while (r) {
            meta_req_t *next = r->unext;
            r->unext = NULL;
            req_fail(mw, r, MT_ERR_UPSTREAM_TIMEOUT, text);
            r = next;
        }
        return;
    }
    for (meta_req_t *r = u->head, *next; r; r = next) {
        next = r->unext;
        if (!r->deadline_ms || now < r->deadline_ms)
            continue;
        up_unlink(u, r);
        idmap_take(&u->ids, r->up_id);
        mt_stat_add(cs, mw->w->id, MT_ST_UPSTREAM_RQ_TIMEOUT, 1);
        req_fail(mw, r, MT_ERR_UPSTREAM_TIMEOUT, text);
    }
}

/* The shell's deadline timer (armed at the earliest deadline in flight, up_push): fail what is
 * overdue, arm again for the earliest deadline left (route timeouts differ, so that is not
 * always the head's). */
static void up_on_deadline(mt_upstream_t *b, uint64_t now)
{
    meta_up_t *u = (meta_up_t *)b;
    up_check_timeouts(mw_of(b->w), u, now);
    if (b->state == MT_UPSTREAM_CLOSING)
        return;
    uint64_t due = 0;
    for (const meta_req_t *r = u->head; r; r = r->unext) {
        if (r->deadline_ms && (!due || r->deadline_ms < due))
            due = r->deadline_ms;
    }
    if (due)
        mt_upstream_arm_deadline(b, MT_MAX(due, now + 1));
}

static void meta_tick(mt_worker_t *w, uint64_t now)
{
    meta_worker_t *mw = mw_of(w);
    bool had_state = w->upstreams[MT_PROTO_META] || mw->clusters;
    /* Connections of retired clusters, idle exclusive ones: the shell's. */
    mt_upstream_tick(w, MT_PROTO_META, now);
    mt_upstream_t *next;
    for (mt_upstream_t *b = w->upstreams[MT_PROTO_META]; b; b = next) {
        next = b->next;
        meta_up_t *u = (meta_up_t *)b;
        if (b->inflight == 0 && w->draining)
            up_close(u); /* drained */
        if (next && next->state == MT_UPSTREAM_CLOSING)
            next = w->upstreams[MT_PROTO_META]; /* closed meanwhile: start over */
    }
    meta_cluster_t *mnext;
    for (meta_cluster_t *mc = mw->clusters; mc; mc = mnext) {
        mnext = mc->next;
        if (mc->n_open == 0 && (mc->wc->retired || w->draining))
            meta_cluster_free(mw, mc);
    }
    if (had_state && w->draining && !w->upstreams[MT_PROTO_META] && !mw->clusters)
        mt_worker_maybe_finish(w); /* the drain was waiting for our pooled connections */
}

/* ---- accept ---------------------------------------------------------------------------------- */

static void meta_accept(mt_wlistener_t *l, uv_stream_t *server)
{
    mt_worker_t *w = l->w;
    const mt_meta_listener_conf_t *lc = mt_meta_listener(l->conf);
    if (!lc || !lc->codec) {
        /* a codec we do not have: traffic flows, without L7 */
        mt_proxy_for(MT_PROTO_TCP)->accept(l, server);
        return;
    }
    const mt_codec_t *codec = lc->codec;
    meta_sess_t *s = calloc(1, sizeof(*s));
    void *dec = s ? malloc(codec->state_size ? codec->state_size : 1) : NULL;
    if (!dec || mt_codec_init(codec, dec, NULL) != MT_OK) {
        free(dec);
        free(s);
        return;
    }
    if (mt_session_accept(&s->base, l, server, &meta_sess_ops) != 0) {
        codec->free(dec);
        free(dec);
        return;
    }
    s->codec = codec;
    s->dec = dec;
    s->in_order = !(codec->flags & MT_CODEC_F_MULTIPLEXED);
    mt_msg_init(&s->msg);
    s->msg.want = &lc->want;
    mw_of(w)->n_sess++;
    mt_session_resume(&s->base);
}

/* ---- the proxy's registry entry ------------------------------------------------------------ */

static int meta_worker_start(mt_worker_t *w)
{
    meta_worker_t *mw = calloc(1, sizeof(*mw));
    if (!mw)
        return -1;
    mw->w = w;
    mw->rng = (uv_hrtime() ^ ((uint64_t)w->id << 32)) | 1;
    mt_wbuf_init(&mw->scratch);
    mw->match_data = mt_meta_match_data_new();
    if (!mw->match_data) {
        free(mw);
        return -1;
    }
    w->proxy[MT_PROTO_META] = mw;
    mt_meta_lua_open(&mw->lua, w);
    return 0;
}

/* A new snapshot: its LuaFilters on metaprotocol listeners (none: no Lua is entered). */
static void meta_snapshot_applied(mt_worker_t *w)
{
    mt_meta_lua_apply(&mw_of(w)->lua);
}

/* A drain waits until pooled upstream connections are closed and clusters released. */
static bool meta_busy(mt_worker_t *w)
{
    meta_worker_t *mw = mw_of(w);
    return w->upstreams[MT_PROTO_META] || mw->clusters;
}

static void meta_worker_stop(mt_worker_t *w)
{
    while (w->upstreams[MT_PROTO_META])
        up_fail((meta_up_t *)w->upstreams[MT_PROTO_META], MT_ERR_UNSPECIFIED,
                "meltemi: proxy shutting down");
    mt_rls_pool_close(mw_of(w)->rls);
}

static void meta_worker_free(mt_worker_t *w)
{
    meta_worker_t *mw = mw_of(w);
    if (!mw)
        return;
    while (mw->clusters)
        meta_cluster_free(mw, mw->clusters);
    while (mw->req_free) {
        meta_req_t *r = mw->req_free;
        mw->req_free = r->snext;
        free(r);
    }
    mt_wbuf_free(&mw->scratch);
    if (mw->emsg_init)
        mt_msg_free(&mw->emsg);
    mt_meta_match_data_free(mw->match_data);
    mt_meta_lua_close(&mw->lua);
    mt_rls_pool_free(mw->rls);
    free(mw);
    w->proxy[MT_PROTO_META] = NULL;
}

const mt_proxy_ops_t mt_proxy_meta = {
    .name = "metaprotocol",
    .protocol = MT_PROTO_META,
    .worker_start = meta_worker_start,
    .accept = meta_accept,
    .snapshot_applied = meta_snapshot_applied,
    .tick = meta_tick,
    .busy = meta_busy,
    .worker_stop = meta_worker_stop,
    .worker_free = meta_worker_free,
    .read_cluster = mt_meta_read_cluster,
    .read_listener = mt_meta_read_listener,
    .free_cluster = mt_meta_free_cluster,
    .free_listener = mt_meta_free_listener,
};
