/*
 * rls.c - gRPC client of Envoy's rate limit service (rls.h): HTTP/2 by libnghttp2 over a uv
 * TCP handle, messages by protobuf-c (proto/envoy/..., generated at build time).
 *
 * A connection (rls_conn_t) lives in its pool for good, keyed by address; its socket
 * (rls_sock_t) is replaced on reconnect. The socket is closed asynchronously and freed in
 * its close callback, so a failed connection can take a new socket at once. nghttp2 is never
 * re-entered: stream closes found while feeding it input are collected on a done list and
 * their callbacks run after nghttp2_session_mem_recv returned.
 */
#include "runtime/core/rls.h"

#include "runtime/core/common.h"
#include "runtime/core/log.h"
#include "runtime/core/stats.h"

#include "envoy/service/ratelimit/v3/rls.pb-c.h"

#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RLS_PATH "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
#define RLS_READ_BUF 16384
#define RLS_MAX_RESPONSE (1u << 20)
#define RLS_CONNECT_TIMEOUT_MS 1000
#define RLS_BACKOFF_MIN_MS 100
#define RLS_BACKOFF_MAX_MS 5000
#define RLS_BATCH_MAX 1024 /* calls answered by one request (hits_addend) at most */
#ifndef RLS_GROUP_IN_FLIGHT
#define RLS_GROUP_IN_FLIGHT 1 /* requests in flight per group: later calls wait for it */
#endif
#define RLS_MAX_IN_FLIGHT 64 /* requests in flight per worker; more wait on the send queue */

typedef struct rls_conn rls_conn_t;
typedef struct rls_rpc rls_rpc_t;
typedef struct rls_batch rls_batch_t;
typedef struct rls_group rls_group_t;

typedef enum rls_state { RLS_IDLE = 0, RLS_CONNECTING, RLS_READY, RLS_BACKOFF } rls_state_t;

typedef struct rls_sock {
    uv_tcp_t tcp;
    uv_connect_t connect;
    rls_conn_t *conn; /* NULL once the connection let go of it (closing) */
    uint8_t rbuf[RLS_READ_BUF];
} rls_sock_t;

struct rls_rpc {
    rls_rpc_t *prev, *next; /* the connection's streams, or the done list */
    rls_conn_t *conn;
    rls_batch_t *batch; /* whose verdict this is; NULL: abandoned (timed out, pool closed) */
    int32_t stream_id;
    uint8_t *req; /* the gRPC message: 5-byte prefix and the RateLimitRequest */
    size_t req_len, req_off;
    uint8_t *resp;
    size_t resp_len, resp_cap;
    int grpc_status; /* -1: none seen */
    mt_rls_result_t result;
    const char *why;
    bool finished; /* on the done list */
};

/* A caller waiting for a verdict (what mt_rls_call_start returns). */
struct mt_rls_call {
    mt_rls_call_t *prev, *next; /* its batch's, arrival order */
    rls_batch_t *batch;
    mt_rls_cb cb;
    void *data;
};

/* Calls answered by one ShouldRateLimit (hits_addend = n): pending until sent, then in flight
 * until its verdict, its timeout or its connection's failure. */
struct rls_batch {
    rls_batch_t *prev, *next;   /* the pool's batches (all of them: close and free walk it) */
    rls_batch_t *gnext;         /* its group's pending FIFO */
    rls_batch_t *qprev, *qnext; /* the pool's send queue (waiting for an in-flight slot) */
    rls_group_t *group;         /* NULL once ended */
    mt_rls_call_t *head, *tail;
    uint32_t n;
    rls_rpc_t *rpc;   /* sent: its stream (NULL once it ended) */
    mt_timer_t timer; /* the requestTimeout of its first call */
    mt_rls_result_t result;
    const char *why;
    bool sent, queued, ended;
};

/* One domain + descriptor + service + listener (stats) + timeout: what may be coalesced. */
struct rls_group {
    rls_group_t *hnext; /* hash chain */
    uint64_t hash;
    rls_conn_t *conn;
    mt_stats_block_t *stats;
    uint32_t timeout_ms;
    uint32_t n_sent;                    /* batches in flight */
    rls_batch_t *pend_head, *pend_tail; /* not sent yet, oldest first */
    size_t key_len;
    uint8_t key[]; /* the RateLimitRequest without hits_addend (protobuf bytes) */
};

struct rls_conn {
    rls_conn_t *next; /* in the pool */
    mt_rls_pool_t *pool;
    struct sockaddr_storage sa;
    socklen_t salen;
    char *authority;
    rls_state_t state;
    rls_sock_t *sock;
    nghttp2_session *h2;
    rls_rpc_t *calls; /* streams in flight on this connection */
    mt_timer_t connect_timer;
    uint64_t retry_at_ms; /* BACKOFF: calls fail until then */
    uint32_t backoff_ms;
};

#define RLS_GROUP_BUCKETS 64

struct mt_rls_pool {
    uv_loop_t *loop;
    mt_timer_wheel_t *wheel;
    unsigned worker; /* the stats shard written */
    rls_conn_t *conns;
    rls_rpc_t *done;              /* finished streams, verdicts to hand to their batches */
    rls_batch_t *ended;           /* ended batches whose calls are still to be answered (gnext) */
    mt_timer_t done_timer;        /* runs both lists from the loop when they filled elsewhere */
    rls_batch_t *batches;         /* every batch alive */
    rls_batch_t *q_head, *q_tail; /* ready to send, waiting for an in-flight slot */
    uint32_t in_flight;           /* streams open (RLS_MAX_IN_FLIGHT at most) */
    rls_group_t *groups[RLS_GROUP_BUCKETS];
    mt_rls_counts_t counts;
    bool closed;
};

/* ---- streams ------------------------------------------------------------------------------- */

static void call_unlink(rls_rpc_t **head, rls_rpc_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void call_link(rls_rpc_t **head, rls_rpc_t *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static void call_free(rls_rpc_t *c)
{
    free(c->req);
    free(c->resp);
    free(c);
}

/* c is over (its stream closed, or its connection failed): onto the pool's done list. */
static void call_finish(mt_rls_pool_t *p, rls_rpc_t *c, mt_rls_result_t r, const char *why)
{
    if (c->conn)
        call_unlink(&c->conn->calls, c);
    c->conn = NULL;
    c->result = r;
    c->why = why;
    c->finished = true;
    call_link(&p->done, c);
}

static void batch_end(mt_rls_pool_t *p, rls_batch_t *b, mt_rls_result_t r, const char *why);
static void batch_answer(mt_rls_pool_t *p, rls_batch_t *b);

/* Hands finished streams' verdicts to their batches, then answers ended batches' calls. */
static void pool_run_done(mt_rls_pool_t *p)
{
    while (p->done) {
        rls_rpc_t *c = p->done;
        call_unlink(&p->done, c);
        if (c->batch) {
            c->batch->rpc = NULL;
            if (c->result == MT_RLS_OVER_LIMIT)
                p->counts.over_limit++;
            else if (c->result == MT_RLS_FAILED)
                p->counts.failed++;
            batch_end(p, c->batch, c->result, c->why);
        }
        call_free(c);
    }
    while (p->ended && !p->closed) {
        rls_batch_t *b = p->ended;
        p->ended = b->gnext;
        b->gnext = NULL;
        batch_answer(p, b);
    }
}

/* ---- the socket ---------------------------------------------------------------------------- */

static void sock_closed(uv_handle_t *h)
{
    free(h->data);
}

typedef struct rls_write {
    uv_write_t req;
    uint8_t data[];
} rls_write_t;

static void conn_fail(rls_conn_t *cn, const char *why);

static void on_done_timer(mt_timer_t *t)
{
    pool_run_done(MT_CONTAINER_OF(t, mt_rls_pool_t, done_timer));
}

static void on_written(uv_write_t *req, int status)
{
    rls_write_t *wr = (rls_write_t *)req;
    rls_sock_t *sk = req->handle->data;
    free(wr);
    if (status < 0 && sk->conn) {
        rls_conn_t *cn = sk->conn;
        conn_fail(cn, "rate limit service connection write failed");
        pool_run_done(cn->pool);
    }
}

/* Writes what nghttp2 has to send, in one uv write. */
static void conn_flush(rls_conn_t *cn)
{
    if (cn->state != RLS_READY || !cn->h2)
        return;
    size_t total = 0, cap = 0;
    rls_write_t *wr = NULL;
    for (;;) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(cn->h2, &d);
        if (n < 0) {
            free(wr);
            conn_fail(cn, "HTTP/2 error");
            return;
        }
        if (n == 0)
            break;
        if (total + (size_t)n > cap) {
            cap = MT_MAX(cap * 2, total + (size_t)n + 256);
            rls_write_t *nw = realloc(wr, sizeof(*wr) + cap);
            if (!nw) {
                free(wr);
                conn_fail(cn, "out of memory");
                return;
            }
            wr = nw;
        }
        memcpy(wr->data + total, d, (size_t)n);
        total += (size_t)n;
    }
    if (!total) {
        free(wr);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)wr->data, (unsigned)total);
    if (uv_write(&wr->req, (uv_stream_t *)&cn->sock->tcp, &b, 1, on_written) != 0) {
        free(wr);
        conn_fail(cn, "rate limit service connection write failed");
    }
}

/* Lets go of the socket (closed asynchronously) and the HTTP/2 session; every call in flight
 * fails with why. The connection goes to BACKOFF when it never got ready, else IDLE. */
static void conn_fail(rls_conn_t *cn, const char *why)
{
    mt_rls_pool_t *p = cn->pool;
    mt_timer_stop(p->wheel, &cn->connect_timer);
    if (cn->sock) {
        cn->sock->conn = NULL;
        if (!uv_is_closing((uv_handle_t *)&cn->sock->tcp))
            uv_close((uv_handle_t *)&cn->sock->tcp, sock_closed);
        cn->sock = NULL;
    }
    if (cn->h2) {
        nghttp2_session_del(cn->h2);
        cn->h2 = NULL;
    }
    if (cn->state == RLS_CONNECTING) {
        p->counts.connect_failures++;
        cn->backoff_ms =
            cn->backoff_ms ? MT_MIN(cn->backoff_ms * 2, RLS_BACKOFF_MAX_MS) : RLS_BACKOFF_MIN_MS;
        cn->retry_at_ms = uv_now(p->loop) + cn->backoff_ms;
        cn->state = RLS_BACKOFF;
        mt_warn("rate limit service: %s; retrying in %u ms", why, cn->backoff_ms);
    } else {
        cn->state = RLS_IDLE;
    }
    while (cn->calls)
        call_finish(p, cn->calls, MT_RLS_FAILED, why);
    /* callers inside a loop callback run the list at once; the others (a call's start or
     * cancel) must not call back, so the wheel does it */
    if ((p->done || p->ended) && !p->closed && !mt_timer_pending(&p->done_timer))
        mt_timer_start(p->wheel, &p->done_timer, 0, on_done_timer);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    rls_sock_t *sk = h->data;
    buf->base = (char *)sk->rbuf;
    buf->len = sizeof(sk->rbuf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    rls_sock_t *sk = st->data;
    rls_conn_t *cn = sk->conn;
    if (!cn || nread == 0)
        return;
    mt_rls_pool_t *p = cn->pool;
    if (nread < 0) {
        conn_fail(cn, "the rate limit service closed the connection");
    } else if (nghttp2_session_mem_recv(cn->h2, (const uint8_t *)buf->base, (size_t)nread) < 0) {
        conn_fail(cn, "HTTP/2 protocol error from the rate limit service");
    } else {
        conn_flush(cn); /* acks, window updates */
        if (cn->h2 && !nghttp2_session_want_read(cn->h2) && !nghttp2_session_want_write(cn->h2))
            conn_fail(cn, "the rate limit service ended the HTTP/2 session");
    }
    pool_run_done(p);
}

/* ---- nghttp2 callbacks --------------------------------------------------------------------- */

static int h2_on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user)
{
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    rls_rpc_t *c = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!c)
        return 0;
    if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        char v[16];
        size_t n = MT_MIN(valuelen, sizeof(v) - 1);
        memcpy(v, value, n);
        v[n] = '\0';
        c->grpc_status = atoi(v);
    }
    return 0;
}

static int h2_on_data(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data,
                      size_t len, void *user)
{
    rls_rpc_t *c = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!c)
        return 0;
    if (c->resp_len + len > RLS_MAX_RESPONSE) { /* no rate limit answer is this long */
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
        return 0;
    }
    if (c->resp_len + len > c->resp_cap) {
        size_t cap = MT_MAX(c->resp_cap * 2, c->resp_len + len + 64);
        uint8_t *nb = realloc(c->resp, cap);
        if (!nb)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        c->resp = nb;
        c->resp_cap = cap;
    }
    memcpy(c->resp + c->resp_len, data, len);
    c->resp_len += len;
    return 0;
}

/* The answer of a stream that closed cleanly: a gRPC message of a RateLimitResponse. */
static mt_rls_result_t call_verdict(const rls_rpc_t *c, const char **why)
{
    if (c->grpc_status != 0) {
        *why = c->grpc_status < 0 ? "the rate limit service answered without a gRPC status"
                                  : "the rate limit service answered a gRPC error";
        return MT_RLS_FAILED;
    }
    if (c->resp_len < 5 || c->resp[0] != 0) {
        *why = "the rate limit service's answer is not an uncompressed gRPC message";
        return MT_RLS_FAILED;
    }
    uint32_t n = (uint32_t)c->resp[1] << 24 | (uint32_t)c->resp[2] << 16 |
                 (uint32_t)c->resp[3] << 8 | c->resp[4];
    if (n != c->resp_len - 5) {
        *why = "the rate limit service's answer has a wrong length";
        return MT_RLS_FAILED;
    }
    Envoy__Service__Ratelimit__V3__RateLimitResponse *m =
        envoy__service__ratelimit__v3__rate_limit_response__unpack(NULL, n, c->resp + 5);
    if (!m) {
        *why = "the rate limit service's answer does not parse";
        return MT_RLS_FAILED;
    }
    mt_rls_result_t r;
    switch (m->overall_code) {
    case ENVOY__SERVICE__RATELIMIT__V3__RATE_LIMIT_RESPONSE__CODE__OK:
        r = MT_RLS_OK;
        *why = "ok";
        break;
    case ENVOY__SERVICE__RATELIMIT__V3__RATE_LIMIT_RESPONSE__CODE__OVER_LIMIT:
        r = MT_RLS_OVER_LIMIT;
        *why = "over limit";
        break;
    default:
        r = MT_RLS_FAILED;
        *why = "the rate limit service answered UNKNOWN";
        break;
    }
    envoy__service__ratelimit__v3__rate_limit_response__free_unpacked(m, NULL);
    return r;
}

static int h2_on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                              void *user)
{
    rls_conn_t *cn = user;
    rls_rpc_t *c = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!c || c->finished)
        return 0;
    const char *why = "the rate limit service reset the call";
    mt_rls_result_t r = error_code == NGHTTP2_NO_ERROR ? call_verdict(c, &why) : MT_RLS_FAILED;
    call_finish(cn->pool, c, r, why);
    return 0;
}

static ssize_t h2_read_body(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *user)
{
    rls_rpc_t *c = src->ptr;
    size_t n = MT_MIN(len, c->req_len - c->req_off);
    memcpy(buf, c->req + c->req_off, n);
    c->req_off += n;
    if (c->req_off == c->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* ---- connections --------------------------------------------------------------------------- */

static nghttp2_session_callbacks *g_h2_callbacks;
static pthread_once_t g_h2_once = PTHREAD_ONCE_INIT;

static void h2_callbacks_make(void)
{
    if (nghttp2_session_callbacks_new(&g_h2_callbacks) != 0)
        return;
    nghttp2_session_callbacks_set_on_header_callback(g_h2_callbacks, h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_h2_callbacks, h2_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(g_h2_callbacks, h2_on_stream_close);
}

static void on_connect_timeout(mt_timer_t *t)
{
    rls_conn_t *cn = MT_CONTAINER_OF(t, rls_conn_t, connect_timer);
    conn_fail(cn, "connecting to the rate limit service timed out");
    pool_run_done(cn->pool);
}

static void on_connected(uv_connect_t *req, int status)
{
    rls_sock_t *sk = req->handle->data;
    rls_conn_t *cn = sk->conn;
    if (!cn)
        return; /* given up meanwhile */
    mt_rls_pool_t *p = cn->pool;
    if (status < 0) {
        conn_fail(cn, uv_strerror(status));
        pool_run_done(p);
        return;
    }
    mt_timer_stop(p->wheel, &cn->connect_timer);
    cn->state = RLS_READY;
    cn->backoff_ms = 0;
    p->counts.connects++;
    uv_tcp_nodelay(&sk->tcp, 1);
    if (uv_read_start((uv_stream_t *)&sk->tcp, on_alloc, on_read) != 0) {
        conn_fail(cn, "cannot read from the rate limit service");
        pool_run_done(p);
        return;
    }
    conn_flush(cn);
    pool_run_done(p);
}

/* Opens cn's socket and HTTP/2 session; calls submitted meanwhile are sent once connected. */
static int conn_open(rls_conn_t *cn, const char **why)
{
    mt_rls_pool_t *p = cn->pool;
    pthread_once(&g_h2_once, h2_callbacks_make);
    rls_sock_t *sk = calloc(1, sizeof(*sk));
    if (!sk || !g_h2_callbacks || nghttp2_session_client_new(&cn->h2, g_h2_callbacks, cn) != 0) {
        free(sk);
        cn->h2 = NULL;
        *why = "out of memory";
        return -1;
    }
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(cn->h2, NGHTTP2_FLAG_NONE, iv, MT_ARRAY_LEN(iv));
    uv_tcp_init(p->loop, &sk->tcp);
    sk->tcp.data = sk;
    sk->conn = cn;
    cn->sock = sk;
    cn->state = RLS_CONNECTING;
    uv_unref((uv_handle_t *)&sk->tcp); /* an idle rate limit connection keeps no loop alive */
    int rc = uv_tcp_connect(&sk->connect, &sk->tcp, (const struct sockaddr *)&cn->sa, on_connected);
    if (rc != 0) {
        conn_fail(cn, uv_strerror(rc));
        *why = "cannot connect to the rate limit service";
        return -1;
    }
    mt_timer_start(p->wheel, &cn->connect_timer, RLS_CONNECT_TIMEOUT_MS, on_connect_timeout);
    return 0;
}

static rls_conn_t *pool_conn(mt_rls_pool_t *p, const mt_rls_target_t *t)
{
    for (rls_conn_t *cn = p->conns; cn; cn = cn->next) {
        if (cn->salen == t->salen && memcmp(&cn->sa, t->sa, t->salen) == 0)
            return cn;
    }
    rls_conn_t *cn = calloc(1, sizeof(*cn));
    if (!cn)
        return NULL;
    cn->authority = strdup(t->authority ? t->authority : "ratelimit");
    if (!cn->authority || t->salen > sizeof(cn->sa)) {
        free(cn->authority);
        free(cn);
        return NULL;
    }
    memcpy(&cn->sa, t->sa, t->salen);
    cn->salen = t->salen;
    cn->pool = p;
    cn->next = p->conns;
    p->conns = cn;
    return cn;
}

/* ---- the request ---------------------------------------------------------------------------- */

/* The protobuf bytes of a RateLimitRequest with one descriptor and no hits_addend (the
 * group's key; a request appends hits_addend, field 3, to them). malloc'ed; NULL: no memory. */
static uint8_t *key_encode(const char *domain, const mt_rls_entry_t *e, size_t n, size_t *len_out)
{
    Envoy__Extensions__Common__Ratelimit__V3__RateLimitDescriptor__Entry ent_small[8], *ents;
    Envoy__Extensions__Common__Ratelimit__V3__RateLimitDescriptor__Entry *ptr_small[8], **ptrs;
    ents = n <= 8 ? ent_small : calloc(n, sizeof(*ents));
    ptrs = n <= 8 ? ptr_small : calloc(n, sizeof(*ptrs));
    char **strs = calloc(2 * n + 1, sizeof(*strs)); /* protobuf-c wants NUL-terminated text */
    uint8_t *out = NULL;
    bool ok = ents && ptrs && strs;
    for (size_t i = 0; ok && i < n; i++) {
        envoy__extensions__common__ratelimit__v3__rate_limit_descriptor__entry__init(&ents[i]);
        strs[2 * i] = strndup(e[i].key, e[i].key_len);
        strs[2 * i + 1] = strndup(e[i].value, e[i].value_len);
        if (!strs[2 * i] || !strs[2 * i + 1])
            ok = false;
        ents[i].key = strs[2 * i];
        ents[i].value = strs[2 * i + 1];
        ptrs[i] = &ents[i];
    }
    if (ok) {
        Envoy__Extensions__Common__Ratelimit__V3__RateLimitDescriptor d;
        envoy__extensions__common__ratelimit__v3__rate_limit_descriptor__init(&d);
        d.n_entries = n;
        d.entries = ptrs;
        Envoy__Extensions__Common__Ratelimit__V3__RateLimitDescriptor *dp = &d;
        Envoy__Service__Ratelimit__V3__RateLimitRequest m;
        envoy__service__ratelimit__v3__rate_limit_request__init(&m);
        m.domain = (char *)domain;
        m.n_descriptors = 1;
        m.descriptors = &dp;
        m.hits_addend = 0; /* not packed: the request appends its own */
        size_t len = envoy__service__ratelimit__v3__rate_limit_request__get_packed_size(&m);
        out = malloc(len ? len : 1);
        if (out) {
            envoy__service__ratelimit__v3__rate_limit_request__pack(&m, out);
            *len_out = len;
        }
    }
    for (size_t i = 0; strs && i < 2 * n; i++)
        free(strs[i]);
    free(strs);
    if (ents != ent_small)
        free(ents);
    if (ptrs != ptr_small)
        free(ptrs);
    return out;
}

/* c->req: the gRPC message of g's request with hits_addend = hits. */
static int rpc_encode(rls_rpc_t *c, const rls_group_t *g, uint32_t hits)
{
    uint8_t tail[6];
    size_t n = 0;
    tail[n++] = 3 << 3; /* field 3 (hits_addend), varint */
    for (uint32_t v = hits;; v >>= 7) {
        tail[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f)
            break;
    }
    size_t len = g->key_len + n;
    c->req = malloc(len + 5);
    if (!c->req)
        return -1;
    c->req[0] = 0;
    c->req[1] = (uint8_t)(len >> 24);
    c->req[2] = (uint8_t)(len >> 16);
    c->req[3] = (uint8_t)(len >> 8);
    c->req[4] = (uint8_t)len;
    memcpy(c->req + 5, g->key, g->key_len);
    memcpy(c->req + 5 + g->key_len, tail, n);
    c->req_len = len + 5;
    return 0;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

/* Opens a stream on cn asking about g with hits_addend = hits, answering within timeout_ms.
 * NULL with *why when it cannot be sent at once (no stream is left behind then). */
static rls_rpc_t *rpc_start(mt_rls_pool_t *p, rls_group_t *g, uint32_t hits, uint32_t timeout_ms,
                            const char **why)
{
    rls_conn_t *cn = g->conn;
    *why = "out of memory";
    if (cn->state == RLS_BACKOFF) {
        if (uv_now(p->loop) < cn->retry_at_ms) {
            *why = "the rate limit service is unreachable (reconnecting after a backoff)";
            return NULL;
        }
        cn->state = RLS_IDLE;
    }
    if (cn->state == RLS_IDLE && conn_open(cn, why) != 0)
        return NULL;
    rls_rpc_t *c = calloc(1, sizeof(*c));
    if (!c || rpc_encode(c, g, hits) != 0) {
        if (c)
            call_free(c);
        return NULL;
    }
    c->grpc_status = -1;
    char tmo[24];
    snprintf(tmo, sizeof(tmo), "%um", timeout_ms ? timeout_ms : 1);
    nghttp2_nv hdrs[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", RLS_PATH),
        NV(":authority", cn->authority),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("grpc-timeout", tmo),
    };
    nghttp2_data_provider body = {.source.ptr = c, .read_callback = h2_read_body};
    c->stream_id = nghttp2_submit_request(cn->h2, NULL, hdrs, MT_ARRAY_LEN(hdrs), &body, c);
    if (c->stream_id < 0) {
        call_free(c);
        *why = "HTTP/2 streams exhausted";
        return NULL;
    }
    c->conn = cn;
    call_link(&cn->calls, c);
    p->counts.calls++;
    conn_flush(cn);    /* may fail the connection: the stream is then on the done list */
    if (c->finished) { /* the connection failed on the first write */
        call_unlink(&p->done, c);
        call_free(c);
        *why = "cannot write to the rate limit service";
        return NULL;
    }
    return c;
}

/* The stream's caller gave up on it (timeout): it is reset; freed when it closes. */
static void rpc_abandon(rls_rpc_t *c)
{
    c->batch = NULL;
    rls_conn_t *cn = c->conn;
    if (c->finished || !cn) /* on the done list: freed there */
        return;
    if (cn->h2 &&
        nghttp2_submit_rst_stream(cn->h2, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_CANCEL) == 0) {
        conn_flush(cn);
        return;
    }
    call_unlink(&cn->calls, c);
    if (cn->h2)
        nghttp2_session_set_stream_user_data(cn->h2, c->stream_id, NULL);
    call_free(c);
}

/* ---- groups and batches ---------------------------------------------------------------------- */

static uint64_t key_hash(const uint8_t *k, size_t n, const void *a, const void *b, uint32_t t)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)a ^ ((uint64_t)(uintptr_t)b << 1) ^
                 ((uint64_t)t << 32);
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 1099511628211ull;
    return h;
}

static rls_group_t **group_slot(mt_rls_pool_t *p, uint64_t hash)
{
    return &p->groups[hash % RLS_GROUP_BUCKETS];
}

/* Finds or makes the group of this key; takes key (freed when found or on failure). */
static rls_group_t *group_get(mt_rls_pool_t *p, rls_conn_t *cn, mt_stats_block_t *stats,
                              uint32_t timeout_ms, uint8_t *key, size_t key_len)
{
    uint64_t h = key_hash(key, key_len, cn, stats, timeout_ms);
    for (rls_group_t *g = *group_slot(p, h); g; g = g->hnext) {
        if (g->hash == h && g->conn == cn && g->stats == stats && g->timeout_ms == timeout_ms &&
            g->key_len == key_len && memcmp(g->key, key, key_len) == 0) {
            free(key);
            return g;
        }
    }
    rls_group_t *g = calloc(1, sizeof(*g) + key_len);
    if (g) {
        g->hash = h;
        g->conn = cn;
        g->stats = stats;
        g->timeout_ms = timeout_ms;
        g->key_len = key_len;
        memcpy(g->key, key, key_len);
        g->hnext = *group_slot(p, h);
        *group_slot(p, h) = g;
    }
    free(key);
    return g;
}

/* Frees g once nothing is pending or in flight for it. */
static void group_maybe_free(mt_rls_pool_t *p, rls_group_t *g)
{
    if (g->n_sent || g->pend_head)
        return;
    for (rls_group_t **pp = group_slot(p, g->hash); *pp; pp = &(*pp)->hnext) {
        if (*pp == g) {
            *pp = g->hnext;
            break;
        }
    }
    free(g);
}

static void stat_add(mt_rls_pool_t *p, const rls_group_t *g, unsigned slot, int64_t d)
{
    if (g->stats)
        mt_stat_add(g->stats, p->worker, slot, d);
}

static void batch_unqueue(mt_rls_pool_t *p, rls_batch_t *b)
{
    if (!b->queued)
        return;
    if (b->qprev)
        b->qprev->qnext = b->qnext;
    else
        p->q_head = b->qnext;
    if (b->qnext)
        b->qnext->qprev = b->qprev;
    else
        p->q_tail = b->qprev;
    b->qprev = b->qnext = NULL;
    b->queued = false;
}

static void batch_unpend(rls_batch_t *b)
{
    rls_group_t *g = b->group;
    rls_batch_t *prev = NULL;
    for (rls_batch_t *x = g->pend_head; x; prev = x, x = x->gnext) {
        if (x != b)
            continue;
        if (prev)
            prev->gnext = b->gnext;
        else
            g->pend_head = b->gnext;
        if (g->pend_tail == b)
            g->pend_tail = prev;
        b->gnext = NULL;
        return;
    }
}

static void batch_unlink_all(mt_rls_pool_t *p, rls_batch_t *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        p->batches = b->next;
    if (b->next)
        b->next->prev = b->prev;
    b->prev = b->next = NULL;
}

static void on_batch_timeout(mt_timer_t *t);

static rls_batch_t *batch_new(mt_rls_pool_t *p, rls_group_t *g)
{
    rls_batch_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->group = g;
    b->next = p->batches;
    if (p->batches)
        p->batches->prev = b;
    p->batches = b;
    if (g->pend_tail)
        g->pend_tail->gnext = b;
    else
        g->pend_head = b;
    g->pend_tail = b;
    mt_timer_start(p->wheel, &b->timer, g->timeout_ms ? g->timeout_ms : 1, on_batch_timeout);
    return b;
}

static void batch_free(mt_rls_pool_t *p, rls_batch_t *b)
{
    mt_timer_stop(p->wheel, &b->timer);
    batch_unlink_all(p, b);
    free(b);
}

/* Sends b now (an in-flight slot is free): out of its group's pending FIFO, its n calls as
 * hits_addend. False with *why when it could not be sent (b is then still pending). */
static bool batch_send(mt_rls_pool_t *p, rls_batch_t *b, const char **why)
{
    rls_group_t *g = b->group;
    uint64_t now = uv_now(p->loop);
    uint64_t due = mt_timer_pending(&b->timer) ? b->timer.due_ms : now + 1;
    uint32_t left = due > now ? (uint32_t)MT_MIN(due - now, UINT32_MAX) : 1;
    rls_rpc_t *c = rpc_start(p, g, b->n, left, why);
    if (!c)
        return false;
    batch_unqueue(p, b);
    batch_unpend(b);
    c->batch = b;
    b->rpc = c;
    b->sent = true;
    g->n_sent++;
    p->in_flight++;
    stat_add(p, g, MT_ST_RLS_REQUESTS, 1);
    stat_add(p, g, MT_ST_RLS_CALLS, b->n);
    stat_add(p, g, MT_ST_RLS_ACTIVE, 1);
    return true;
}

/* Sends what may go: b when it may (its group's oldest with nothing in flight, or full) and
 * a slot is free; else b waits on the send queue. A send that fails ends b (from the loop). */
static void batch_try(mt_rls_pool_t *p, rls_batch_t *b)
{
    if (b->sent || b->ended)
        return;
    bool may = (b->group->pend_head == b && b->group->n_sent < RLS_GROUP_IN_FLIGHT) ||
               b->n >= RLS_BATCH_MAX;
    if (!may)
        return;
    if (p->in_flight >= RLS_MAX_IN_FLIGHT) {
        if (!b->queued) {
            b->queued = true;
            b->qprev = p->q_tail;
            if (p->q_tail)
                p->q_tail->qnext = b;
            else
                p->q_head = b;
            p->q_tail = b;
        }
        return;
    }
    const char *why;
    if (!batch_send(p, b, &why))
        batch_end(p, b, MT_RLS_FAILED, why);
}

/* Slots freed: the oldest queued batches go. */
static void pool_pump(mt_rls_pool_t *p)
{
    while (p->q_head && p->in_flight < RLS_MAX_IN_FLIGHT && !p->closed) {
        rls_batch_t *b = p->q_head;
        batch_unqueue(p, b);
        batch_try(p, b);
    }
}

/* b is over with r: counted, out of its group (whose next batch may go now), and onto the
 * ended list, whose calls are answered from the loop (pool_run_done). */
static void batch_end(mt_rls_pool_t *p, rls_batch_t *b, mt_rls_result_t r, const char *why)
{
    if (b->ended)
        return;
    rls_group_t *g = b->group;
    b->ended = true;
    b->result = r;
    b->why = why;
    mt_timer_stop(p->wheel, &b->timer);
    batch_unqueue(p, b);
    if (b->rpc)
        rpc_abandon(b->rpc);
    b->rpc = NULL;
    static const unsigned slot[] = {
        [MT_RLS_OK] = MT_ST_RLS_OK,
        [MT_RLS_OVER_LIMIT] = MT_ST_RLS_OVER_LIMIT,
        [MT_RLS_FAILED] = MT_ST_RLS_ERRORS,
        [MT_RLS_TIMEOUT] = MT_ST_RLS_TIMEOUTS,
    };
    stat_add(p, g, slot[r], 1);
    if (b->sent) {
        g->n_sent--;
        p->in_flight--;
        stat_add(p, g, MT_ST_RLS_ACTIVE, -1);
    } else {
        batch_unpend(b);
    }
    b->group = NULL;
    b->gnext = p->ended; /* the ended list reuses gnext */
    p->ended = b;
    /* the group's next batch may go; a send that fails ends it in turn, and the innermost
     * end frees the group once it is empty: g is not used after batch_try */
    if (g->pend_head)
        batch_try(p, g->pend_head);
    else
        group_maybe_free(p, g);
    pool_pump(p);
    if (!p->closed && !mt_timer_pending(&p->done_timer))
        mt_timer_start(p->wheel, &p->done_timer, 0, on_done_timer);
}

/* Answers every call of the ended batch b, in arrival order, and frees it. A callback may
 * start calls (they join other batches) or cancel calls of b not answered yet. */
static void batch_answer(mt_rls_pool_t *p, rls_batch_t *b)
{
    while (b->head && !p->closed) {
        mt_rls_call_t *c = b->head;
        b->head = c->next;
        if (b->head)
            b->head->prev = NULL;
        else
            b->tail = NULL;
        b->n--;
        c->batch = NULL;
        c->cb(c, c->data, b->result, b->why);
        free(c);
    }
    if (!p->closed)
        batch_free(p, b);
}

static void on_batch_timeout(mt_timer_t *t)
{
    rls_batch_t *b = MT_CONTAINER_OF(t, rls_batch_t, timer);
    mt_rls_pool_t *p = NULL;
    /* the pool is found through the group's connection */
    p = b->group->conn->pool;
    p->counts.timeouts++;
    batch_end(p, b, MT_RLS_TIMEOUT, "the rate limit service did not answer in time");
    pool_run_done(p);
}

mt_rls_call_t *mt_rls_call_start(mt_rls_pool_t *p, const mt_rls_target_t *t, const char *domain,
                                 const mt_rls_entry_t *entries, size_t n_entries,
                                 uint32_t timeout_ms, mt_stats_block_t *stats, mt_rls_cb cb,
                                 void *data, const char **why)
{
    *why = "out of memory";
    if (p->closed) {
        *why = "shutting down";
        return NULL;
    }
    rls_conn_t *cn = pool_conn(p, t);
    size_t key_len = 0;
    uint8_t *key = cn ? key_encode(domain, entries, n_entries, &key_len) : NULL;
    rls_group_t *g = key ? group_get(p, cn, stats, timeout_ms, key, key_len) : NULL;
    mt_rls_call_t *c = g ? calloc(1, sizeof(*c)) : NULL;
    if (!c) {
        if (g)
            group_maybe_free(p, g);
        return NULL;
    }
    c->cb = cb;
    c->data = data;
    rls_batch_t *b = g->pend_tail;
    bool fresh = !b || b->n >= RLS_BATCH_MAX;
    if (fresh && !(b = batch_new(p, g))) {
        free(c);
        group_maybe_free(p, g);
        return NULL;
    }
    c->batch = b;
    c->prev = b->tail;
    if (b->tail)
        b->tail->next = c;
    else
        b->head = c;
    b->tail = c;
    b->n++;
    bool now = (g->pend_head == b && g->n_sent < RLS_GROUP_IN_FLIGHT) || b->n >= RLS_BATCH_MAX;
    if (!now)
        return c; /* waits for the verdict in flight, then goes with the others */
    if (p->in_flight >= RLS_MAX_IN_FLIGHT) {
        batch_try(p, b); /* queued: sent when a slot frees */
        return c;
    }
    if (batch_send(p, b, why))
        return c;
    if (b->n == 1) { /* alone: fail at once, no callback */
        b->head = b->tail = NULL;
        b->n = 0;
        batch_unpend(b);
        batch_free(p, b);
        group_maybe_free(p, g);
        free(c);
        p->counts.failed++;
        if (stats)
            mt_stat_add(stats, p->worker, MT_ST_RLS_ERRORS, 1);
        return NULL;
    }
    batch_end(p, b, MT_RLS_FAILED, *why); /* answered from the loop */
    return c;
}

void mt_rls_call_cancel(mt_rls_call_t *c)
{
    rls_batch_t *b = c->batch;
    if (!b) {
        free(c);
        return;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        b->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        b->tail = c->prev;
    b->n--;
    free(c);
    /* a pending batch nobody waits for is dropped (never sent); one in flight or ended runs
     * its course with fewer calls to answer */
    if (b->n == 0 && !b->sent && !b->ended && b->group) {
        mt_rls_pool_t *p = b->group->conn->pool;
        rls_group_t *g = b->group;
        batch_unqueue(p, b);
        batch_unpend(b);
        batch_free(p, b);
        if (g->pend_head)
            batch_try(p, g->pend_head); /* a failure is answered from the loop */
        else
            group_maybe_free(p, g);
    }
}

/* ---- the pool ---------------------------------------------------------------------------- */

mt_rls_pool_t *mt_rls_pool_new(uv_loop_t *loop, mt_timer_wheel_t *wheel, unsigned worker)
{
    mt_rls_pool_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->loop = loop;
    p->wheel = wheel;
    p->worker = worker;
    return p;
}

void mt_rls_pool_close(mt_rls_pool_t *p)
{
    if (!p || p->closed)
        return;
    p->closed = true;
    mt_timer_stop(p->wheel, &p->done_timer);
    /* No callback from now on: the calls stay, owned by their batches, until their owners
     * (sessions closed after this) cancel them or mt_rls_pool_free. */
    for (rls_batch_t *b = p->batches; b; b = b->next) {
        mt_timer_stop(p->wheel, &b->timer);
        if (b->rpc)
            b->rpc->batch = NULL;
        b->rpc = NULL;
        if (b->sent && !b->ended && b->group)
            stat_add(p, b->group, MT_ST_RLS_ACTIVE, -1);
        b->ended = true;
    }
    for (rls_conn_t *cn = p->conns; cn; cn = cn->next)
        conn_fail(cn, "shutting down");
}

void mt_rls_pool_free(mt_rls_pool_t *p)
{
    if (!p)
        return;
    while (p->done) {
        rls_rpc_t *c = p->done;
        call_unlink(&p->done, c);
        call_free(c);
    }
    while (p->batches) {
        rls_batch_t *b = p->batches;
        while (b->head) {
            mt_rls_call_t *c = b->head;
            b->head = c->next;
            free(c);
        }
        batch_unlink_all(p, b);
        free(b);
    }
    for (size_t i = 0; i < RLS_GROUP_BUCKETS; i++) {
        while (p->groups[i]) {
            rls_group_t *g = p->groups[i];
            p->groups[i] = g->hnext;
            free(g);
        }
    }
    while (p->conns) {
        rls_conn_t *cn = p->conns;
        p->conns = cn->next;
        free(cn->authority);
        free(cn);
    }
    free(p);
}

const mt_rls_counts_t *mt_rls_pool_counts(const mt_rls_pool_t *p)
{
    return &p->counts;
}
