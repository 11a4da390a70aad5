/*
 * buf.c - chunk pool. Standard-size chunks are recycled through a free list; bigger ones
 * (frames larger than MT_BUF_CHUNK) are malloc'd and freed.
 */
#include "runtime/core/buf.h"

#include <stdlib.h>
#include <string.h>

void mt_buf_pool_init(mt_buf_pool_t *pool)
{
    memset(pool, 0, sizeof(*pool));
}

void mt_buf_pool_destroy(mt_buf_pool_t *pool)
{
    while (pool->free) {
        mt_buf_t *b = pool->free;
        pool->free = b->next_free;
        free(b);
    }
    pool->nfree = 0;
    while (pool->spare_slices) {
        void *v = pool->spare_slices;
        pool->spare_slices = *(void **)v;
        free(v);
    }
    pool->n_spare_slices = 0;
}

mt_buf_t *mt_buf_get(mt_buf_pool_t *pool, size_t min_cap)
{
    mt_buf_t *b;
    if (min_cap <= MT_BUF_CHUNK && pool->free) {
        b = pool->free;
        pool->free = b->next_free;
        pool->nfree--;
    } else {
        size_t cap = MT_BUF_CHUNK;
        while (cap < min_cap) {
            if (cap > SIZE_MAX / 2 || cap >= UINT32_MAX / 2)
                return NULL;
            cap *= 2;
        }
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->cap = (uint32_t)cap;
    }
    b->refs = 1;
    b->pos = b->last = b->data;
    b->end = b->data + b->cap;
    b->next_free = NULL;
    pool->allocated++;
    return b;
}

uint32_t mt_buf_pool_trim(mt_buf_pool_t *pool, uint32_t keep, uint32_t max)
{
    uint32_t n = 0;
    while (pool->nfree > keep && n < max && pool->free) {
        mt_buf_t *b = pool->free;
        pool->free = b->next_free;
        pool->nfree--;
        free(b);
        n++;
    }
    return n;
}

void mt_buf_release(mt_buf_pool_t *pool, mt_buf_t *b)
{
    pool->allocated--;
    if (b->cap == MT_BUF_CHUNK && pool->nfree < MT_BUF_POOL_MAX) {
        b->next_free = pool->free;
        pool->free = b;
        pool->nfree++;
        return;
    }
    free(b);
}

int mt_buf_make_room(mt_buf_pool_t *pool, mt_buf_t **bp, size_t want, size_t need_total)
{
    mt_buf_t *old = *bp;
    if (old && mt_buf_room(old) >= want && (size_t)(old->end - old->pos) >= need_total)
        return 0;
    size_t unread = old ? mt_buf_unread(old) : 0;
    if (old && old->refs == 1 && unread + want <= old->cap && need_total <= old->cap) {
        /* Sole owner: slide the unread tail to the front instead of allocating. */
        memmove(old->data, old->pos, unread);
        old->pos = old->data;
        old->last = old->data + unread;
        return 0;
    }
    size_t cap = MT_MAX(unread + want, need_total);
    mt_buf_t *nb = mt_buf_get(pool, cap);
    if (!nb)
        return -1;
    if (unread) {
        memcpy(nb->last, old->pos, unread);
        nb->last += unread;
    }
    if (old)
        mt_buf_unref(pool, old);
    *bp = nb;
    return 0;
}
