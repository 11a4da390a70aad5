/*
 * cluster_slots.c - see cluster_slots.h. Sizes come from the reply, so every count is
 * checked against the bytes that are left before anything is allocated.
 */
#include "protocols/redis/cluster_slots.h"

#include "protocols/redis/reply_reader.h"

#include <stdlib.h>
#include <string.h>

/* One element takes at least 4 bytes ("*0\r\n"), so no count can exceed that. */
static bool count_fits(const redis_reader_t *r, int64_t n)
{
    return n >= 0 && n <= (r->end - r->p) / 4;
}

static mt_status_t fail(redis_cluster_slots_t *out, const char **why, const char *text)
{
    redis_cluster_slots_free(out);
    *why = text;
    return MT_ERROR;
}

/* One node: [host, port, id?, more fields...]. */
static bool read_node(redis_reader_t *r, redis_slot_node_t *node)
{
    int64_t k = redis_read_num(r, '*');
    if (r->bad || k < 2 || !count_fits(r, k - 1))
        return false;
    const char *host;
    size_t hlen;
    if (!redis_read_bulk(r, &host, &hlen))
        return false;
    int64_t port = redis_read_num(r, ':');
    if (r->bad || port <= 0 || port > 65535)
        return false;
    for (int64_t x = 2; x < k; x++) {
        if (!redis_read_skip(r, NULL, NULL))
            return false;
    }
    bool asked = !host || hlen == 0 || (hlen == 1 && host[0] == '?');
    node->host = asked ? NULL : host;
    node->host_len = asked ? 0 : hlen;
    node->port = (uint16_t)port;
    return true;
}

mt_status_t redis_cluster_slots_parse(const char *p, size_t len, redis_cluster_slots_t *out,
                                      const char **why)
{
    memset(out, 0, sizeof(*out));
    if (len && p[0] == '-')
        return fail(out, why, "an error reply");
    redis_reader_t r = redis_reader(p, len);
    int64_t n = redis_read_num(&r, '*');
    if (r.bad || !count_fits(&r, n))
        return fail(out, why, "not an array");
    if (n == 0)
        return fail(out, why, "no slot is served");
    /* Every range has 2 integers and at least one node: at most (bytes left) / 4 nodes. */
    size_t max_nodes = (size_t)(r.end - r.p) / 4 + 1;
    out->ranges = calloc((size_t)n, sizeof(*out->ranges));
    out->nodes = calloc(max_nodes, sizeof(*out->nodes));
    if (!out->ranges || !out->nodes)
        return fail(out, why, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        int64_t m = redis_read_num(&r, '*');
        int64_t lo = redis_read_num(&r, ':');
        int64_t hi = redis_read_num(&r, ':');
        if (r.bad || m < 3 || !count_fits(&r, m - 2))
            return fail(out, why, "a range is not [start, end, master, ...]");
        if (lo < 0 || hi >= REDIS_CLUSTER_SLOTS || lo > hi)
            return fail(out, why, "a slot range is out of bounds");
        redis_slot_range_t *rg = &out->ranges[out->n_ranges++];
        rg->first = (uint16_t)lo;
        rg->last = (uint16_t)hi;
        rg->node = out->n_nodes;
        for (int64_t j = 2; j < m; j++) {
            if (out->n_nodes >= max_nodes || !read_node(&r, &out->nodes[out->n_nodes]))
                return fail(out, why, "a node is not [host, port, ...]");
            out->n_nodes++;
            rg->n_nodes++;
        }
    }
    if (r.p != r.end)
        return fail(out, why, "bytes after the reply");
    return MT_OK;
}

void redis_cluster_slots_free(redis_cluster_slots_t *s)
{
    free(s->ranges);
    free(s->nodes);
    memset(s, 0, sizeof(*s));
}
