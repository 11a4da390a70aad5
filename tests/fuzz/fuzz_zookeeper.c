/*
 * fuzz_zookeeper.c - libFuzzer harness for the passive ZooKeeper decoder (protocols/zookeeper): the
 * input is a conversation, segments of [header byte: bit 0 direction (1: client), bits 1-7
 * length-1] then that many bytes. Each segment is fed whole to one decoder and byte by byte to
 * another: both must report the same events (partial frames change nothing), the input must be left
 * as it was, and the pending table must stay within its bound.
 *
 *     cmake -S . -B build-clang -DCMAKE_C_COMPILER=clang && cmake --build build-clang --target
 * fuzz_zookeeper build-clang/fuzz_zookeeper -max_total_time=60 tests/fuzz/seeds/zookeeper
 */
#include "protocols/zookeeper/zookeeper.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct log {
    mt_zk_event_t ev[512];
    size_t n;
    size_t total;
} log_t;

static void record(void *ud, const mt_zk_event_t *ev)
{
    log_t *l = ud;
    if (l->n < 512)
        l->ev[l->n++] = *ev;
    l->total++;
}

static void same(const mt_zk_event_t *a, const mt_zk_event_t *b)
{
    if (a->kind != b->kind || a->opcode != b->opcode || a->xid != b->xid || a->err != b->err ||
        a->event_type != b->event_type || a->watch != b->watch || a->bytes != b->bytes ||
        a->start != b->start)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mt_zk_t whole, bytewise;
    static log_t lw, lb;
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    mt_zk_init(&whole);
    mt_zk_init(&bytewise);
    lw.n = lb.n = lw.total = lb.total = 0;
    size_t pos = 0;
    uint64_t now = 1;
    while (pos < size) {
        bool client = data[pos] & 1;
        size_t len = (size_t)(data[pos] >> 1) + 1;
        pos++;
        if (len > size - pos)
            len = size - pos;
        mt_zk_feed(&whole, client, data + pos, len, now, record, &lw);
        for (size_t i = 0; i < len; i++)
            mt_zk_feed(&bytewise, client, data + pos + i, 1, now, record, &lb);
        if (whole.npending > ZK_MAX_PENDING || bytewise.npending != whole.npending)
            abort();
        pos += len;
        now++;
    }
    if (lw.total != lb.total || memcmp(copy, data, size) != 0)
        abort();
    for (size_t i = 0; i < lw.n; i++)
        same(&lw.ev[i], &lb.ev[i]);
    free(copy);
    return 0;
}
