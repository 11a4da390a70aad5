/*
 * cluster_slots.h - the CLUSTER SLOTS reply, parsed without I/O: which slot ranges each
 * master (and its replicas) serves. Redis 7's shape:
 *   *N of [ start, end, [host, port, id, ...] (master), [host, port, ...] (replicas)... ]
 * A node's host may be empty, null or "?": "the node you asked", left to the caller.
 */
#ifndef MELTEMI_REDIS_CLUSTER_SLOTS_H
#define MELTEMI_REDIS_CLUSTER_SLOTS_H

#include "protocols/status.h"

#include <stddef.h>
#include <stdint.h>

#define REDIS_CLUSTER_SLOTS 16384

typedef struct redis_slot_node {
    const char *host; /* into the reply; NULL: the node that was asked */
    size_t host_len;
    uint16_t port;
} redis_slot_node_t;

typedef struct redis_slot_range {
    uint16_t first, last; /* inclusive, first <= last < REDIS_CLUSTER_SLOTS */
    uint32_t node;        /* index of its master in nodes[]; its replicas follow it */
    uint32_t n_nodes;     /* master + replicas, >= 1 */
} redis_slot_range_t;

typedef struct redis_cluster_slots {
    redis_slot_range_t *ranges;
    uint32_t n_ranges;
    redis_slot_node_t *nodes;
    uint32_t n_nodes;
} redis_cluster_slots_t;

/* Parses the complete reply [p, p+len). MT_OK: *out holds at least one range (free it with
 * redis_cluster_slots_free; hosts point into p). MT_ERROR: *why says what is wrong and *out
 * holds nothing. An error reply ("-...") is MT_ERROR too, with why "an error reply". */
mt_status_t redis_cluster_slots_parse(const char *p, size_t len, redis_cluster_slots_t *out,
                                      const char **why);
void redis_cluster_slots_free(redis_cluster_slots_t *s);

#endif
