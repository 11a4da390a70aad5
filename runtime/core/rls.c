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

typedef struct rls_conn rls_conn_t;

typedef enum rls_state { RLS_IDLE = 0, RLS_CONNECTING, RLS_READY, RLS_BACKOFF } rls_state_t;

typedef struct rls_sock {
    uv_tcp_t tcp;
    uv_connect_t connect;
    rls_conn_t *conn; /* NULL once the connection let go of it (closing) */
    uint8_t rbuf[RLS_READ_BUF];
} rls_sock_t;

struct mt_rls_call {
    mt_rls_call_t *prev, *next; /* the connection's calls, or the done list */
    rls_conn_t *conn;
    mt_rls_cb cb; /* NULL: cancelled, waits for its stream to close */
    void *data;
    int32_t stream_id;
    mt_timer_t timer;
    uint8_t *req; /* the gRPC message: 5-byte prefix and the RateLimitRequest */
    size_t req_len, req_off;
    uint8_t *resp;
    size_t resp_len, resp_cap;
    int grpc_status; /* -1: none seen */
    mt_rls_result_t result;
    const char *why;
    bool finished; /* on the done list */
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
    mt_rls_call_t *calls; /* in flight on this connection */
    mt_timer_t connect_timer;
    uint64_t retry_at_ms; /* BACKOFF: calls fail until then */
    uint32_t backoff_ms;
};

struct mt_rls_pool {
    uv_loop_t *loop;
    mt_timer_wheel_t *wheel;
    rls_conn_t *conns;
    mt_rls_call_t *done;   /* finished, callbacks to run */
    mt_timer_t done_timer; /* runs the done list from the loop when it filled elsewhere */
    mt_rls_counts_t counts;
    bool closed;
};

/* ---- calls ------------------------------------------------------------------------------- */

static void call_unlink(mt_rls_call_t **head, mt_rls_call_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void call_link(mt_rls_call_t **head, mt_rls_call_t *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static void call_free(mt_rls_call_t *c)
{
    free(c->req);
    free(c->resp);
    free(c);
}

/* c is over (its stream closed, or its connection failed): onto the pool's done list. */
static void call_finish(mt_rls_pool_t *p, mt_rls_call_t *c, mt_rls_result_t r, const char *why)
{
    if (c->conn)
        call_unlink(&c->conn->calls, c);
    c->conn = NULL;
    c->result = r;
    c->why = why;
    c->finished = true;
    call_link(&p->done, c);
}

/* Runs the callbacks of finished calls and frees them. */
static void pool_run_done(mt_rls_pool_t *p)
{
    while (p->done) {
        mt_rls_call_t *c = p->done;
        call_unlink(&p->done, c);
        mt_timer_stop(p->wheel, &c->timer);
        if (c->cb) {
            switch (c->result) {
            case MT_RLS_OVER_LIMIT:
                p->counts.over_limit++;
                break;
            case MT_RLS_FAILED:
                p->counts.failed++;
                break;
            default:
                break;
            }
            c->cb(c, c->data, c->result, c->why);
        }
        call_free(c);
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
    if (p->done && !p->closed && !mt_timer_pending(&p->done_timer))
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
    mt_rls_call_t *c = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
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
    mt_rls_call_t *c = nghttp2_session_get_stream_user_data(h2, stream_id);
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
static mt_rls_result_t call_verdict(const mt_rls_call_t *c, const char **why)
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
    mt_rls_call_t *c = nghttp2_session_get_stream_user_data(h2, stream_id);
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
    mt_rls_call_t *c = src->ptr;
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

/* c->req: a gRPC message of a RateLimitRequest with one descriptor. */
static int call_encode(mt_rls_call_t *c, const char *domain, const mt_rls_entry_t *e, size_t n)
{
    Envoy__Extensions__Common__Ratelimit__V3__RateLimitDescriptor__Entry ent_small[8], *ents;
    Envoy__Extensions__Common__Ratelimit__V3__RateLimitDescriptor__Entry *ptr_small[8], **ptrs;
    ents = n <= 8 ? ent_small : calloc(n, sizeof(*ents));
    ptrs = n <= 8 ? ptr_small : calloc(n, sizeof(*ptrs));
    char **strs = calloc(2 * n + 1, sizeof(*strs)); /* protobuf-c wants NUL-terminated text */
    int rc = ents && ptrs && strs ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        envoy__extensions__common__ratelimit__v3__rate_limit_descriptor__entry__init(&ents[i]);
        strs[2 * i] = strndup(e[i].key, e[i].key_len);
        strs[2 * i + 1] = strndup(e[i].value, e[i].value_len);
        if (!strs[2 * i] || !strs[2 * i + 1])
            rc = -1;
        ents[i].key = strs[2 * i];
        ents[i].value = strs[2 * i + 1];
        ptrs[i] = &ents[i];
    }
    if (rc == 0) {
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
        m.hits_addend = 1;
        size_t len = envoy__service__ratelimit__v3__rate_limit_request__get_packed_size(&m);
        c->req = malloc(len + 5);
        if (c->req) {
            c->req[0] = 0;
            c->req[1] = (uint8_t)(len >> 24);
            c->req[2] = (uint8_t)(len >> 16);
            c->req[3] = (uint8_t)(len >> 8);
            c->req[4] = (uint8_t)len;
            envoy__service__ratelimit__v3__rate_limit_request__pack(&m, c->req + 5);
            c->req_len = len + 5;
        } else {
            rc = -1;
        }
    }
    for (size_t i = 0; strs && i < 2 * n; i++)
        free(strs[i]);
    free(strs);
    if (ents != ent_small)
        free(ents);
    if (ptrs != ptr_small)
        free(ptrs);
    return rc;
}

static void on_call_timeout(mt_timer_t *t)
{
    mt_rls_call_t *c = MT_CONTAINER_OF(t, mt_rls_call_t, timer);
    mt_rls_pool_t *p = c->conn ? c->conn->pool : NULL;
    if (!p)
        return;
    p->counts.timeouts++;
    mt_rls_cb cb = c->cb;
    void *data = c->data;
    mt_rls_call_cancel(c); /* the stream is reset; the record goes when it closes */
    if (cb)
        cb(c, data, MT_RLS_TIMEOUT, "the rate limit service did not answer in time");
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

mt_rls_call_t *mt_rls_call_start(mt_rls_pool_t *p, const mt_rls_target_t *t, const char *domain,
                                 const mt_rls_entry_t *entries, size_t n_entries,
                                 uint32_t timeout_ms, mt_rls_cb cb, void *data, const char **why)
{
    *why = "out of memory";
    if (p->closed) {
        *why = "shutting down";
        return NULL;
    }
    rls_conn_t *cn = pool_conn(p, t);
    if (!cn)
        return NULL;
    if (cn->state == RLS_BACKOFF) {
        if (uv_now(p->loop) < cn->retry_at_ms) {
            *why = "the rate limit service is unreachable (reconnecting after a backoff)";
            return NULL;
        }
        cn->state = RLS_IDLE;
    }
    if (cn->state == RLS_IDLE && conn_open(cn, why) != 0)
        return NULL;
    mt_rls_call_t *c = calloc(1, sizeof(*c));
    if (!c || call_encode(c, domain, entries, n_entries) != 0) {
        if (c)
            call_free(c);
        return NULL;
    }
    c->cb = cb;
    c->data = data;
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
    mt_timer_start(p->wheel, &c->timer, timeout_ms ? timeout_ms : 1, on_call_timeout);
    conn_flush(cn);    /* may fail the connection: the call is then on the done list */
    if (c->finished) { /* the connection failed on the first write: no callback for c */
        call_unlink(&p->done, c);
        mt_timer_stop(p->wheel, &c->timer);
        call_free(c);
        *why = "cannot write to the rate limit service";
        return NULL;
    }
    return c;
}

void mt_rls_call_cancel(mt_rls_call_t *c)
{
    c->cb = NULL;
    rls_conn_t *cn = c->conn;
    if (c->finished || !cn) /* on the done list: freed there without a callback */
        return;
    mt_timer_stop(cn->pool->wheel, &c->timer);
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

/* ---- the pool ---------------------------------------------------------------------------- */

mt_rls_pool_t *mt_rls_pool_new(uv_loop_t *loop, mt_timer_wheel_t *wheel)
{
    mt_rls_pool_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->loop = loop;
    p->wheel = wheel;
    return p;
}

void mt_rls_pool_close(mt_rls_pool_t *p)
{
    if (!p || p->closed)
        return;
    p->closed = true;
    for (rls_conn_t *cn = p->conns; cn; cn = cn->next) {
        for (mt_rls_call_t *c = cn->calls; c; c = c->next)
            c->cb = NULL;
        conn_fail(cn, "shutting down");
    }
    /* The calls stay on the done list, without callbacks, until mt_rls_pool_free: their
     * owners (sessions closed after this) may still cancel them. */
    for (mt_rls_call_t *c = p->done; c; c = c->next) {
        c->cb = NULL;
        mt_timer_stop(p->wheel, &c->timer);
    }
}

void mt_rls_pool_free(mt_rls_pool_t *p)
{
    if (!p)
        return;
    while (p->done) {
        mt_rls_call_t *c = p->done;
        call_unlink(&p->done, c);
        call_free(c);
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
