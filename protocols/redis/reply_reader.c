/*
 * reply_reader.c - see reply_reader.h. Everything is bounded by r->end: no read past the
 * reply, and integers are parsed by redis_parse_int within the slice, never with strtoll
 * (which skips white space, CRLF included, and would read on past the reply).
 */
#include "protocols/redis/reply_reader.h"

#include "protocols/redis/resp.h"

#include <string.h>

bool redis_read_line(redis_reader_t *r, char type, const char **s, size_t *n)
{
    if (r->bad || r->p >= r->end || *r->p != type) {
        r->bad = true;
        return false;
    }
    const char *eol = memchr(r->p, '\r', (size_t)(r->end - r->p));
    if (!eol || eol + 1 >= r->end || eol[1] != '\n') {
        r->bad = true;
        return false;
    }
    *s = r->p + 1;
    *n = (size_t)(eol - r->p - 1);
    r->p = eol + 2;
    return true;
}

bool redis_parse_int(const char *s, size_t n, int64_t *out)
{
    bool neg = n > 0 && s[0] == '-';
    size_t i = neg ? 1 : 0;
    if (i == n || n - i > 19)
        return false;
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (limit - d) / 10)
            return false; /* past int64_t */
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

int64_t redis_read_num(redis_reader_t *r, char type)
{
    const char *s;
    size_t n;
    int64_t v;
    if (!redis_read_line(r, type, &s, &n))
        return -1;
    if (!redis_parse_int(s, n, &v)) {
        r->bad = true;
        return -1;
    }
    return v;
}

bool redis_read_bulk(redis_reader_t *r, const char **s, size_t *n)
{
    int64_t len = redis_read_num(r, '$');
    if (r->bad)
        return false;
    if (len < 0) {
        *s = NULL;
        *n = 0;
        return true;
    }
    /* len may be anything up to INT64_MAX: compare without adding to it. */
    if (r->end - r->p < 2 || len > (r->end - r->p) - 2 || r->p[len] != '\r' ||
        r->p[len + 1] != '\n') {
        r->bad = true;
        return false;
    }
    *s = r->p;
    *n = (size_t)len;
    r->p += len + 2;
    return true;
}

bool redis_read_skip(redis_reader_t *r, const char **start, size_t *len)
{
    if (r->bad || r->p >= r->end) {
        r->bad = true;
        return false;
    }
    resp_reply_scanner_t sc;
    resp_reply_scanner_init(&sc, &resp_default_limits);
    size_t flen = 0;
    const char *err = NULL;
    if (resp_scan_reply(&sc, r->p, (size_t)(r->end - r->p), &flen, &err) != MT_OK) {
        r->bad = true;
        return false;
    }
    if (start)
        *start = r->p;
    if (len)
        *len = flen;
    r->p += flen;
    return true;
}
