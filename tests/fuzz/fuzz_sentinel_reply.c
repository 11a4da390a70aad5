/*
 * fuzz_sentinel_reply.c - libFuzzer harness for the Redis Sentinel readers
 * (protocols/redis/sentinel_reply.h): one complete reply, as the reply scanner frames it, is
 * read as a master address, a replica list, a pub/sub frame and (its payload) a
 * +switch-master message. No crash, no read past the bytes (ASan), and whatever is accepted
 * points inside the input with a port in 1..65535. Build: see tests/fuzz/README.md.
 */
#include "protocols/redis/resp.h"
#include "protocols/redis/sentinel_reply.h"

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

static void check_addr(const redis_sentinel_addr_t *a, const char *p, size_t len)
{
    CHECK(a->port != 0);
    CHECK(a->host >= p && a->host_len > 0 && a->host + a->host_len <= p + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    const char *p = (const char *)data;
    resp_reply_scanner_t sc;
    resp_reply_scanner_init(&sc, &resp_default_limits);
    size_t flen = 0;
    const char *err = NULL;
    if (resp_scan_reply(&sc, p, len, &flen, &err) != MT_OK)
        return 0; /* the runtime only hands these readers whole replies */
    CHECK(flen <= len);
    redis_sentinel_addr_t a;
    if (redis_sentinel_master_reply(p, flen, &a))
        check_addr(&a, p, flen);
    redis_sentinel_addr_t reps[8];
    int n = redis_sentinel_replicas_reply(p, flen, reps, 8);
    CHECK(n >= -1 && n <= 8);
    for (int i = 0; i < n; i++)
        check_addr(&reps[i], p, flen);
    const char *kind = NULL, *msg = NULL;
    size_t klen = 0, mlen = 0;
    if (redis_sentinel_pubsub(p, flen, &kind, &klen, &msg, &mlen)) {
        CHECK(kind >= p && kind + klen <= p + flen);
        if (msg) {
            CHECK(msg >= p && msg + mlen <= p + flen);
            int rc = redis_sentinel_switch_master(msg, mlen, "mymaster", 8, &a);
            CHECK(rc >= -1 && rc <= 1);
            if (rc == 1)
                check_addr(&a, msg, mlen);
        }
    }
    /* the raw bytes as a payload too: any text, not only what a frame carries */
    int rc = redis_sentinel_switch_master(p, len, "mymaster", 8, &a);
    if (rc == 1)
        check_addr(&a, p, len);
    return 0;
}
