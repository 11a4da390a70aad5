/*
 * sentinel_reply.c - Redis Sentinel replies and messages (sentinel_reply.h), on the reply
 * reader: nothing is copied, every read is bounded by the reply's length.
 */
#include "protocols/redis/sentinel_reply.h"

#include "protocols/redis/reply_reader.h"

#include <string.h>

static bool port_of(const char *s, size_t n, uint16_t *port)
{
    int64_t v = 0;
    if (!s || !redis_parse_int(s, n, &v) || v <= 0 || v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

bool redis_sentinel_master_reply(const char *p, size_t len, redis_sentinel_addr_t *out)
{
    redis_reader_t r = redis_reader(p, len);
    const char *host = NULL, *port = NULL;
    size_t hlen = 0, plen = 0;
    if (len == 0 || p[0] != '*' || redis_read_num(&r, '*') != 2 ||
        !redis_read_bulk(&r, &host, &hlen) || !redis_read_bulk(&r, &port, &plen) || !host ||
        hlen == 0 || !port_of(port, plen, &out->port))
        return false;
    out->host = host;
    out->host_len = hlen;
    return true;
}

static bool has_word(const char *f, size_t n, const char *w)
{
    size_t wl = strlen(w);
    for (size_t k = 0; k + wl <= n; k++) {
        if (memcmp(f + k, w, wl) == 0)
            return true;
    }
    return false;
}

static bool flags_down(const char *f, size_t n)
{
    return has_word(f, n, "s_down") || has_word(f, n, "o_down") || has_word(f, n, "disconnected");
}

/* One replica's flat field/value array; true and *out when it is usable. */
static bool read_replica(redis_reader_t *r, redis_sentinel_addr_t *out)
{
    int64_t m = redis_read_num(r, '*');
    const char *ip = NULL, *port = NULL, *flags = NULL;
    size_t iplen = 0, plen = 0, flen = 0;
    for (int64_t k = 0; k < m && !r->bad; k += 2) {
        const char *key = NULL, *val = NULL;
        size_t kl = 0, vl = 0;
        if (!redis_read_bulk(r, &key, &kl) || k + 1 >= m || !redis_read_bulk(r, &val, &vl))
            return false;
        if (!key || !val)
            continue;
        if (kl == 2 && memcmp(key, "ip", 2) == 0) {
            ip = val;
            iplen = vl;
        } else if (kl == 4 && memcmp(key, "port", 4) == 0) {
            port = val;
            plen = vl;
        } else if (kl == 5 && memcmp(key, "flags", 5) == 0) {
            flags = val;
            flen = vl;
        }
    }
    if (r->bad || !ip || iplen == 0 || !port_of(port, plen, &out->port) ||
        (flags && flags_down(flags, flen)))
        return false;
    out->host = ip;
    out->host_len = iplen;
    return true;
}

int redis_sentinel_replicas_reply(const char *p, size_t len, redis_sentinel_addr_t *out,
                                  uint32_t max)
{
    redis_reader_t r = redis_reader(p, len);
    if (len == 0 || p[0] != '*')
        return -1;
    int64_t n = redis_read_num(&r, '*');
    if (r.bad || n < 0)
        return -1;
    uint32_t got = 0;
    for (int64_t i = 0; i < n && !r.bad; i++) {
        redis_sentinel_addr_t a;
        if (read_replica(&r, &a) && got < max)
            out[got++] = a;
    }
    return r.bad ? -1 : (int)got;
}

bool redis_sentinel_pubsub(const char *p, size_t len, const char **kind, size_t *kind_len,
                           const char **payload, size_t *payload_len)
{
    redis_reader_t r = redis_reader(p, len);
    const char *chan = NULL;
    size_t clen = 0;
    *payload = NULL;
    *payload_len = 0;
    if (len == 0 || p[0] != '*' || redis_read_num(&r, '*') != 3 ||
        !redis_read_bulk(&r, kind, kind_len) || !*kind)
        return false;
    if (*kind_len == 7 && memcmp(*kind, "message", 7) == 0) {
        if (!redis_read_bulk(&r, &chan, &clen) || !redis_read_bulk(&r, payload, payload_len) ||
            !*payload)
            return false;
    }
    return true;
}

/* The next space-separated word of [*s, end): true and its bounds. */
static bool next_word(const char **s, const char *end, const char **w, size_t *n)
{
    while (*s < end && **s == ' ')
        (*s)++;
    const char *start = *s;
    while (*s < end && **s != ' ')
        (*s)++;
    *w = start;
    *n = (size_t)(*s - start);
    return *n > 0;
}

int redis_sentinel_switch_master(const char *msg, size_t len, const char *name, size_t name_len,
                                 redis_sentinel_addr_t *out)
{
    const char *s = msg, *end = msg + len;
    const char *w[5];
    size_t wl[5];
    for (int i = 0; i < 5; i++) {
        if (!next_word(&s, end, &w[i], &wl[i]))
            return -1;
    }
    if (wl[0] != name_len || memcmp(w[0], name, name_len) != 0)
        return 0;
    if (!port_of(w[4], wl[4], &out->port))
        return -1;
    out->host = w[3];
    out->host_len = wl[3];
    return 1;
}
