/*
 * fuzz_cluster_slots.c - libFuzzer harness for the CLUSTER SLOTS parser: no crash, no read
 * past the given bytes (ASan), and an accepted reply is consistent: every range within the
 * slot space, every range's nodes inside the node table, ports non-zero. Build: see
 * tests/fuzz/README.md.
 */
#include "protocols/redis/cluster_slots.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    redis_cluster_slots_t cs;
    const char *why = NULL;
    const char *p = (const char *)data;
    if (redis_cluster_slots_parse(p, len, &cs, &why) != MT_OK) {
        CHECK(why != NULL);
        CHECK(cs.ranges == NULL && cs.nodes == NULL && cs.n_ranges == 0);
        return 0;
    }
    CHECK(cs.n_ranges > 0);
    for (uint32_t i = 0; i < cs.n_ranges; i++) {
        const redis_slot_range_t *rg = &cs.ranges[i];
        CHECK(rg->first <= rg->last && rg->last < REDIS_CLUSTER_SLOTS);
        CHECK(rg->n_nodes >= 1 && rg->node + rg->n_nodes <= cs.n_nodes);
    }
    for (uint32_t i = 0; i < cs.n_nodes; i++) {
        const redis_slot_node_t *n = &cs.nodes[i];
        CHECK(n->port != 0);
        if (n->host)
            CHECK(n->host >= p && n->host + n->host_len <= p + len);
    }
    redis_cluster_slots_free(&cs);
    return 0;
}
