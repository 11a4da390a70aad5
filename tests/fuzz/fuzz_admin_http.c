/*
 * fuzz_admin_http.c - libFuzzer harness for the admin server's request parsing
 * (mt_admin_http_parse: http-parser with the admin's settings and callbacks), fed the way the
 * server feeds it, without sockets: the bytes a client sent, request after request
 * (pipelining), each request given whole or growing by chunks in one buffer that does not
 * move (as the connection's buffer does not).
 *
 * Checks: no crash and no read past the bytes received so far (the rest of the buffer is
 * poisoned for ASan during each call); the same requests, fields and errors however the
 * bytes are cut; every span of a parsed request inside that request; an error is one of the
 * statuses the server answers with. Input: bytes 0-7 are chunk sizes (each + 1), the rest is
 * the byte stream. Build and run: tests/fuzz/README.md.
 */
#include "runtime/server/admin.h"

#include <sanitizer/asan_interface.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_REQUESTS 16

typedef struct outcome {
    mt_status_t st[MAX_REQUESTS];
    mt_admin_request_t rq[MAX_REQUESTS];
    size_t n;
} outcome_t;

/* [p, p + n) lies in [lo, hi). */
static bool span_in(const char *p, size_t n, const char *lo, const char *hi)
{
    return p != NULL && p >= lo && n <= (size_t)(hi - p);
}

static void check_request(const mt_admin_request_t *rq, const char *req, size_t avail)
{
    const char *end = req + rq->total_len;
    CHECK(rq->total_len > 0 && rq->total_len <= avail && rq->total_len <= MT_ADMIN_MAX_REQUEST);
    CHECK(rq->method != NULL && rq->method_len > 0);
    CHECK(span_in(rq->path, rq->path_len, req, end) && rq->path_len > 0 && rq->path[0] == '/');
    CHECK(memchr(rq->path, '?', rq->path_len) == NULL);
    CHECK(rq->content_length <= rq->total_len);
    if (rq->host != NULL) {
        CHECK(span_in(rq->host, rq->host_len, req, end));
        CHECK(rq->host_name == rq->host && rq->host_name_len <= rq->host_len);
        CHECK(rq->host_port >= -1 && rq->host_port <= 65535);
    }
    if (rq->bearer != NULL)
        CHECK(span_in(rq->bearer, rq->bearer_len, req, end));
}

/* Parses data[0, len) as the server would; chunks == NULL: each request given whole. */
static void run(char *buf, size_t len, const uint8_t *chunks, outcome_t *o)
{
    memset(o, 0, sizeof(*o));
    mt_admin_http_t *h = mt_admin_http_new();
    CHECK(h != NULL);
    size_t off = 0, c = 0;
    while (o->n < MAX_REQUESTS && off < len) {
        size_t avail = len - off, have = 0;
        mt_status_t st = MT_AGAIN;
        mt_admin_request_t rq;
        while (st == MT_AGAIN && have < avail) {
            size_t step = chunks ? (size_t)chunks[c++ % 8] + 1 : avail;
            have += step < avail - have ? step : avail - have;
            ASAN_POISON_MEMORY_REGION(buf + off + have, len - off - have);
            memset(&rq, 0xa5, sizeof(rq));
            st = mt_admin_http_parse(h, buf + off, have, &rq);
            ASAN_UNPOISON_MEMORY_REGION(buf, len);
        }
        o->st[o->n] = st;
        if (st != MT_AGAIN)
            o->rq[o->n] = rq;
        o->n++;
        if (st != MT_OK) {
            if (st == MT_ERROR)
                CHECK(rq.error_status == 400 || rq.error_status == 411 || rq.error_status == 413 ||
                      rq.error_status == 505);
            break;
        }
        check_request(&rq, buf + off, have);
        off += rq.total_len;
        mt_admin_http_reset(h);
    }
    mt_admin_http_free(h);
}

static void check_same(const outcome_t *a, const outcome_t *b)
{
    CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        CHECK(a->st[i] == b->st[i]);
        const mt_admin_request_t *x = &a->rq[i], *y = &b->rq[i];
        if (a->st[i] == MT_ERROR)
            CHECK(x->error_status == y->error_status);
        if (a->st[i] != MT_OK)
            continue;
        CHECK(x->total_len == y->total_len && x->content_length == y->content_length);
        CHECK(x->method_len == y->method_len && memcmp(x->method, y->method, x->method_len) == 0);
        CHECK(x->path == y->path && x->path_len == y->path_len);
        CHECK(x->head == y->head && x->keep_alive == y->keep_alive);
        CHECK(x->has_origin == y->has_origin);
        CHECK(x->host == y->host && x->host_len == y->host_len);
        CHECK(x->host_name_len == y->host_name_len && x->host_port == y->host_port);
        CHECK(x->bearer == y->bearer && x->bearer_len == y->bearer_len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    const uint8_t *chunks = data;
    size_t len = size - 8;
    char *buf = malloc(len ? len : 1); /* exact size: ASan catches reads past the end */
    CHECK(buf != NULL);
    memcpy(buf, data + 8, len);
    static outcome_t whole, pieces; /* large: not on the stack */
    run(buf, len, NULL, &whole);
    run(buf, len, chunks, &pieces);
    check_same(&whole, &pieces);
    free(buf);
    return 0;
}
