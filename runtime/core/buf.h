/*
 * buf.h - reference-counted byte chunks and a per-worker pool of them.
 *
 * A chunk is start/pos/last/end like nginx's ngx_buf_t: the reader consumes [pos, last), the
 * socket appends at last. Frames are forwarded without copying by taking a reference on the
 * chunk that holds them (see outq.h); the chunk returns to its worker's pool when the last
 * reference is dropped. Chunks are owned by one worker and never cross threads.
 */
#ifndef MELTEMI_BUF_H
#define MELTEMI_BUF_H

#include "runtime/core/common.h"

#include <stddef.h>
#include <stdint.h>

#define MT_BUF_CHUNK 16384   /* standard chunk size: pooled */
#define MT_BUF_POOL_MAX 4096 /* free chunks kept per worker (64 MiB at most) */

typedef struct mt_buf {
    uint32_t refs;
    uint32_t cap;
    char *pos;  /* first unconsumed byte */
    char *last; /* one past the last byte written */
    char *end;  /* data + cap */
    struct mt_buf *next_free;
    char data[];
} mt_buf_t;

typedef struct mt_buf_pool {
    mt_buf_t *free;
    uint32_t nfree;
    uint64_t allocated; /* chunks currently out of the pool (for /clusters and tests) */
    /* Output queues' slice arrays of the smallest size, given back by queues with nothing to
     * write (outq.c): a list through their first bytes, at most MT_OUTQ_SPARE_MAX. */
    void *spare_slices;
    uint32_t n_spare_slices;
} mt_buf_pool_t;

void mt_buf_pool_init(mt_buf_pool_t *pool);
void mt_buf_pool_destroy(mt_buf_pool_t *pool);

/* A chunk with at least min_cap bytes of room and one reference; NULL on out of memory. */
mt_buf_t *mt_buf_get(mt_buf_pool_t *pool, size_t min_cap);

static inline void mt_buf_ref(mt_buf_t *b)
{
    b->refs++;
}

void mt_buf_release(mt_buf_pool_t *pool, mt_buf_t *b);

/* Frees free chunks beyond `keep`, at most `max` of them; returns how many it freed. */
uint32_t mt_buf_pool_trim(mt_buf_pool_t *pool, uint32_t keep, uint32_t max);

static inline void mt_buf_unref(mt_buf_pool_t *pool, mt_buf_t *b)
{
    if (--b->refs == 0)
        mt_buf_release(pool, b);
}

static inline size_t mt_buf_unread(const mt_buf_t *b)
{
    return (size_t)(b->last - b->pos);
}

static inline size_t mt_buf_room(const mt_buf_t *b)
{
    return (size_t)(b->end - b->last);
}

/*
 * Makes sure *bp has at least `want` bytes of room after last. When it has not, the unread
 * bytes move to a new chunk (of at least `need_total` bytes when a frame is bigger than a
 * standard chunk) and the old chunk loses the caller's reference (others may still hold it).
 * Returns -1 on out of memory.
 */
int mt_buf_make_room(mt_buf_pool_t *pool, mt_buf_t **bp, size_t want, size_t need_total);

#endif
