/*
 * redis_test.c - the stream feeders of redis_test.h (no tests of their own).
 */
#include "redis_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void log_append(feed_result_t *r, const char *p, size_t n)
{
    r->log = realloc(r->log, r->log_len + n + 1);
    memcpy(r->log + r->log_len, p, n);
    r->log_len += n;
    r->log[r->log_len] = '\0';
}

static void log_request(feed_result_t *r, const resp_request_t *req)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%u", req->argc);
    log_append(r, num, (size_t)n);
    for (uint32_t i = 0; i < req->argc; i++) {
        n = snprintf(num, sizeof(num), "|%zu:", req->argv[i].len);
        log_append(r, num, (size_t)n);
        log_append(r, req->argv[i].ptr, req->argv[i].len);
    }
    log_append(r, ";", 1);
}

typedef mt_status_t (*step_fn)(void *parser, const char *buf, size_t len, feed_result_t *r,
                               size_t *frame_len, const char **err);

static mt_status_t step_request(void *parser, const char *buf, size_t len, feed_result_t *r,
                                size_t *frame_len, const char **err)
{
    resp_request_t req;
    mt_status_t rc = resp_parse_request(parser, buf, len, &req, err);
    if (rc == MT_OK) {
        log_request(r, &req);
        r->inline_seen |= req.is_inline;
        *frame_len = req.frame_len;
    }
    return rc;
}

static mt_status_t step_reply(void *scanner, const char *buf, size_t len, feed_result_t *r,
                              size_t *frame_len, const char **err)
{
    mt_status_t rc = resp_scan_reply(scanner, buf, len, frame_len, err);
    if (rc == MT_OK) {
        char num[32];
        int n = snprintf(num, sizeof(num), "%zu;", *frame_len);
        log_append(r, num, (size_t)n);
    }
    return rc;
}

/* The connection's read buffer: unconsumed bytes [0, have). */
static feed_result_t feed(void *parser, step_fn step, const char *data, size_t len,
                          const size_t *cuts, size_t ncuts, bool move)
{
    feed_result_t r = {0};
    log_append(&r, "", 0);
    char *buf = malloc(len + 1);
    size_t have = 0, delivered = 0;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t upto = c < ncuts ? cuts[c] : len;
        if (upto <= delivered)
            continue;
        if (move) {
            char *fresh = malloc(len + 1);
            memcpy(fresh, buf, have);
            memset(buf, 0xA5, have); /* what a reused buffer would contain */
            free(buf);
            buf = fresh;
        }
        memcpy(buf + have, data + delivered, upto - delivered);
        have += upto - delivered;
        delivered = upto;
        for (;;) {
            size_t frame_len = 0;
            const char *err = NULL;
            mt_status_t rc = step(parser, buf, have, &r, &frame_len, &err);
            if (rc == MT_AGAIN)
                break;
            if (rc == MT_ERROR) {
                r.error = true;
                snprintf(r.err, sizeof(r.err), "%s", err);
                r.err_at = delivered;
                free(buf);
                return r;
            }
            r.frames++;
            r.consumed += frame_len;
            memmove(buf, buf + frame_len, have - frame_len);
            have -= frame_len;
        }
    }
    free(buf);
    return r;
}

static size_t *chunk_cuts(size_t len, size_t chunk, size_t *ncuts)
{
    size_t n = len / chunk + 1;
    size_t *cuts = malloc(n * sizeof(*cuts));
    *ncuts = 0;
    for (size_t at = chunk; at < len; at += chunk)
        cuts[(*ncuts)++] = at;
    return cuts;
}

feed_result_t feed_requests(const resp_limits_t *limits, const char *data, size_t len,
                            const size_t *cuts, size_t ncuts, bool move)
{
    resp_req_parser_t p;
    resp_req_parser_init(&p, limits);
    feed_result_t r = feed(&p, step_request, data, len, cuts, ncuts, move);
    resp_req_parser_free(&p);
    return r;
}

feed_result_t feed_requests_chunked(const resp_limits_t *limits, const char *data, size_t len,
                                    size_t chunk, bool move)
{
    size_t ncuts;
    size_t *cuts = chunk_cuts(len, chunk, &ncuts);
    feed_result_t r = feed_requests(limits, data, len, cuts, ncuts, move);
    free(cuts);
    return r;
}

feed_result_t feed_replies(const resp_limits_t *limits, const char *data, size_t len,
                           const size_t *cuts, size_t ncuts, bool move)
{
    resp_reply_scanner_t s;
    resp_reply_scanner_init(&s, limits);
    return feed(&s, step_reply, data, len, cuts, ncuts, move);
}

feed_result_t feed_replies_chunked(const resp_limits_t *limits, const char *data, size_t len,
                                   size_t chunk, bool move)
{
    size_t ncuts;
    size_t *cuts = chunk_cuts(len, chunk, &ncuts);
    feed_result_t r = feed_replies(limits, data, len, cuts, ncuts, move);
    free(cuts);
    return r;
}

void feed_result_free(feed_result_t *r)
{
    free(r->log);
    r->log = NULL;
}
