/*
 * trace.c - trace context parsing and formatting, per-worker span buffers, and the exporter
 * thread that POSTs Zipkin v2 JSON batches to the collector (trace.h).
 */
#include "runtime/core/trace.h"

#include "runtime/core/common.h"
#include "runtime/core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define TRACE_HANDOFF_BYTES (64u << 10)
#define TRACE_HANDOFF_NS 200000000ull /* 200 ms */
#define TRACE_QUEUE_MAX (4u << 20)    /* bytes waiting for the exporter */
#define TRACE_IO_TIMEOUT_S 2

/* ---- context -------------------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool unhex(const char *s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i])
            return false;
    }
    return true;
}

bool mt_trace_parse_traceparent(const char *s, size_t n, mt_trace_ctx_t *ctx)
{
    /* version "00" (a higher version is read as 00's prefix, as the spec asks) */
    if (n < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || (n > 55 && s[55] != '-'))
        return false;
    uint8_t ver, flags;
    mt_trace_ctx_t c = {0};
    if (!unhex(s, 2, &ver) || ver == 0xff || !unhex(s + 3, 32, c.trace_id) ||
        !unhex(s + 36, 16, c.parent_id) || !unhex(s + 53, 2, &flags) || all_zero(c.trace_id, 16) ||
        all_zero(c.parent_id, 8) || (ver == 0 && n != 55))
        return false;
    c.sampled = flags & 1;
    c.has_parent = true;
    *ctx = c;
    return true;
}

bool mt_trace_parse_b3(const char *trace, size_t tn, const char *span, size_t sn,
                       const char *sampled, size_t dn, mt_trace_ctx_t *ctx)
{
    mt_trace_ctx_t c = {0};
    if ((tn != 32 && tn != 16) || sn != 16)
        return false;
    if (!unhex(trace, tn, c.trace_id + (tn == 16 ? 8 : 0)) || !unhex(span, 16, c.parent_id) ||
        all_zero(c.trace_id, 16) || all_zero(c.parent_id, 8))
        return false;
    c.sampled = !(sampled && dn == 1 && sampled[0] == '0');
    c.has_parent = true;
    c.b3 = true;
    *ctx = c;
    return true;
}

static uint64_t trace_rand(mt_trace_worker_t *tw)
{
    uint64_t x = tw->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    tw->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

static void put_random(mt_trace_worker_t *tw, uint8_t *b, size_t n)
{
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = trace_rand(tw);
            memcpy(b + i, &r, MT_MIN(8, n - i));
        }
    } while (all_zero(b, n));
}

bool mt_trace_sample_new(const mt_trace_conf_t *c, mt_trace_worker_t *tw, mt_trace_ctx_t *ctx)
{
    if (!c->sample_all) {
        uint64_t draw = tw->rng; /* xorshift64, as the MetaProtocol draw */
        draw ^= draw << 13;
        draw ^= draw >> 7;
        draw ^= draw << 17;
        tw->rng = draw;
        if (draw >= c->sample_below)
            return false;
    }
    memset(ctx, 0, sizeof(*ctx));
    ctx->sampled = true;
    mt_trace_new_span(tw, ctx);
    return true;
}

void mt_trace_new_span(mt_trace_worker_t *tw, mt_trace_ctx_t *ctx)
{
    if (!ctx->has_parent)
        put_random(tw, ctx->trace_id, 16);
    put_random(tw, ctx->span_id, 8);
}

void mt_trace_hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

void mt_trace_format_traceparent(const mt_trace_ctx_t *ctx, char out[56])
{
    char t[33], s[17];
    mt_trace_hex(ctx->trace_id, 16, t);
    mt_trace_hex(ctx->span_id, 8, s);
    snprintf(out, 56, "00-%s-%s-%s", t, s, ctx->sampled ? "01" : "00");
}

/* ---- the exporter --------------------------------------------------------------------------- */

static pthread_mutex_t ex_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ex_cv = PTHREAD_COND_INITIALIZER;
static char *ex_queue; /* spans, comma-joined, waiting */
static size_t ex_len, ex_cap;
static bool ex_running, ex_stop;
static pthread_t ex_thread;
static char *ex_host, *ex_path;
static uint16_t ex_port;
static uint64_t ex_exported, ex_dropped, ex_failed_logged;

uint64_t mt_trace_spans_exported(void)
{
    return __atomic_load_n(&ex_exported, __ATOMIC_RELAXED);
}

uint64_t mt_trace_spans_dropped(void)
{
    return __atomic_load_n(&ex_dropped, __ATOMIC_RELAXED);
}

static int ex_connect(const char *host, uint16_t port)
{
    char ps[8];
    snprintf(ps, sizeof(ps), "%u", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, ps, &hints, &res) != 0 || !res)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = TRACE_IO_TIMEOUT_S};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

static bool ex_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

/* POSTs "[spans]" to the collector; true on a 2xx answer. */
static bool ex_post(const char *host, uint16_t port, const char *path, const char *spans, size_t n)
{
    int fd = ex_connect(host, port);
    if (fd < 0)
        return false;
    char head[512];
    int hn = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\nHost: %s:%u\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n[",
                      path, host, port, n + 2);
    bool ok = hn > 0 && ex_send_all(fd, head, (size_t)hn) && ex_send_all(fd, spans, n) &&
              ex_send_all(fd, "]", 1);
    char resp[64] = {0};
    ssize_t k = ok ? recv(fd, resp, sizeof(resp) - 1, 0) : -1;
    close(fd);
    return k >= 12 && strncmp(resp, "HTTP/1.", 7) == 0 && resp[9] == '2';
}

static void *ex_main(void *arg)
{
    MT_UNUSED(arg);
    pthread_mutex_lock(&ex_mu);
    while (!ex_stop) {
        if (ex_len == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&ex_cv, &ex_mu, &ts);
            continue;
        }
        char *batch = ex_queue;
        size_t n = ex_len;
        ex_queue = NULL;
        ex_len = ex_cap = 0;
        char *host = strdup(ex_host ? ex_host : "");
        char *path = strdup(ex_path ? ex_path : "/");
        uint16_t port = ex_port;
        pthread_mutex_unlock(&ex_mu);
        size_t spans = 1;
        for (size_t i = 0; i + 1 < n; i++)
            spans += batch[i] == '}' && batch[i + 1] == ',' && batch[i + 2] == '{';
        bool ok = host && path && host[0] && ex_post(host, port, path, batch, n);
        if (ok) {
            __atomic_add_fetch(&ex_exported, spans, __ATOMIC_RELAXED);
        } else {
            __atomic_add_fetch(&ex_dropped, spans, __ATOMIC_RELAXED);
            if (ex_failed_logged++ % 100 == 0)
                mt_warn("tracing: cannot export %zu spans to %s:%u%s (dropped)", spans,
                        host ? host : "?", port, path ? path : "");
        }
        free(batch);
        free(host);
        free(path);
        pthread_mutex_lock(&ex_mu);
    }
    pthread_mutex_unlock(&ex_mu);
    return NULL;
}

void mt_trace_configure(const mt_trace_conf_t *c)
{
    pthread_mutex_lock(&ex_mu);
    free(ex_host);
    free(ex_path);
    ex_host = c ? strdup(c->host) : NULL;
    ex_path = c ? strdup(c->path) : NULL;
    ex_port = c ? c->port : 0;
    bool start = c && !ex_running;
    if (start)
        ex_running = true;
    pthread_mutex_unlock(&ex_mu);
    if (start && pthread_create(&ex_thread, NULL, ex_main, NULL) != 0) {
        mt_error("tracing: cannot start the exporter thread");
        ex_running = false;
    } else if (start) {
        mt_info("tracing: spans go to http://%s:%u%s (Zipkin v2 JSON)", c->host, c->port, c->path);
    }
}

void mt_trace_shutdown(void)
{
    pthread_mutex_lock(&ex_mu);
    bool running = ex_running;
    ex_stop = true;
    pthread_cond_signal(&ex_cv);
    pthread_mutex_unlock(&ex_mu);
    if (running)
        pthread_join(ex_thread, NULL);
    free(ex_queue);
    free(ex_host);
    free(ex_path);
    ex_queue = ex_host = ex_path = NULL;
}

void mt_trace_conf_free(mt_trace_conf_t *c)
{
    if (!c)
        return;
    free(c->host);
    free(c->path);
    free(c);
}

/* ---- worker buffers ------------------------------------------------------------------------- */

void mt_trace_worker_init(mt_trace_worker_t *tw, unsigned worker_id)
{
    memset(tw, 0, sizeof(*tw));
    tw->rng = (uv_hrtime() ^ ((uint64_t)worker_id << 32) ^ 0xd1b54a32d192ed03ull) | 1;
}

void mt_trace_worker_free(mt_trace_worker_t *tw)
{
    mt_trace_flush(tw, 0, true);
    free(tw->buf);
    tw->buf = NULL;
}

void mt_trace_flush(mt_trace_worker_t *tw, uint64_t now_ns, bool force)
{
    if (!tw->len)
        return;
    if (!force && tw->len < TRACE_HANDOFF_BYTES && now_ns < tw->handed_ns + TRACE_HANDOFF_NS)
        return;
    tw->handed_ns = now_ns;
    pthread_mutex_lock(&ex_mu);
    if (!ex_running || ex_len + tw->len + 1 > TRACE_QUEUE_MAX) {
        size_t spans = 1;
        for (size_t i = 0; i + 2 < tw->len; i++)
            spans += tw->buf[i] == '}' && tw->buf[i + 1] == ',' && tw->buf[i + 2] == '{';
        __atomic_add_fetch(&ex_dropped, spans, __ATOMIC_RELAXED);
    } else {
        if (ex_len + tw->len + 1 > ex_cap) {
            size_t cap = MT_MAX(ex_cap * 2, ex_len + tw->len + 1);
            char *q = realloc(ex_queue, cap);
            if (q) {
                ex_queue = q;
                ex_cap = cap;
            }
        }
        if (ex_len + tw->len + 1 <= ex_cap) {
            if (ex_len)
                ex_queue[ex_len++] = ',';
            memcpy(ex_queue + ex_len, tw->buf, tw->len);
            ex_len += tw->len;
            pthread_cond_signal(&ex_cv);
        }
    }
    pthread_mutex_unlock(&ex_mu);
    tw->len = 0;
}

static void tw_printf(mt_trace_worker_t *tw, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void tw_printf(mt_trace_worker_t *tw, const char *fmt, ...)
{
    for (int pass = 0; pass < 2; pass++) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = tw->cap - tw->len;
        int n = vsnprintf(tw->buf ? tw->buf + tw->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < room) {
            tw->len += (size_t)n;
            return;
        }
        size_t cap = MT_MAX(tw->cap * 2, tw->len + (size_t)n + 4096);
        char *p = realloc(tw->buf, cap);
        if (!p)
            return;
        tw->buf = p;
        tw->cap = cap;
    }
}

/* A JSON string's content: names and codes come from the configuration or the codec. */
static void tw_json_str(mt_trace_worker_t *tw, const char *s)
{
    tw_printf(tw, "\"");
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            tw_printf(tw, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            tw_printf(tw, "\\u%04x", ch);
        else
            tw_printf(tw, "%c", ch);
    }
    tw_printf(tw, "\"");
}

void mt_trace_record(mt_trace_worker_t *tw, const mt_trace_span_t *sp)
{
    const mt_trace_ctx_t *c = sp->ctx;
    char trace[33], id[17], parent[17];
    mt_trace_hex(c->trace_id, 16, trace);
    mt_trace_hex(c->span_id, 8, id);
    mt_trace_hex(c->parent_id, 8, parent);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t wall_us = (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
    uint64_t now_ns = uv_hrtime();
    uint64_t start_us = wall_us - (now_ns > sp->start_ns ? (now_ns - sp->start_ns) / 1000 : 0);
    uint64_t dur_us = sp->end_ns > sp->start_ns ? (sp->end_ns - sp->start_ns) / 1000 : 0;
    if (tw->len)
        tw_printf(tw, ",");
    tw_printf(tw, "{\"traceId\":\"%s\",\"id\":\"%s\",", trace, id);
    if (c->has_parent)
        tw_printf(tw, "\"parentId\":\"%s\",", parent);
    tw_printf(tw, "\"kind\":\"CLIENT\",\"name\":");
    tw_json_str(tw, sp->name ? sp->name : "?");
    tw_printf(tw,
              ",\"timestamp\":%" PRIu64 ",\"duration\":%" PRIu64 ",\"localEndpoint\":{"
              "\"serviceName\":",
              start_us, dur_us ? dur_us : 1);
    tw_json_str(tw, sp->service ? sp->service : "meltemi");
    tw_printf(tw, "}");
    if (sp->peer_ip) {
        tw_printf(tw, ",\"remoteEndpoint\":{\"%s\":", strchr(sp->peer_ip, ':') ? "ipv6" : "ipv4");
        tw_json_str(tw, sp->peer_ip);
        tw_printf(tw, ",\"port\":%u}", sp->peer_port);
    }
    tw_printf(tw, ",\"tags\":{\"%s\":", sp->db ? "db.system" : "rpc.system");
    tw_json_str(tw, sp->system ? sp->system : "unknown");
    if (sp->cluster) {
        tw_printf(tw, ",\"upstream_cluster\":");
        tw_json_str(tw, sp->cluster);
    }
    if (sp->code) {
        tw_printf(tw, ",\"response_code\":");
        tw_json_str(tw, sp->code);
    }
    if (sp->error)
        tw_printf(tw, ",\"error\":\"true\"");
    tw_printf(tw, "}}");
}
