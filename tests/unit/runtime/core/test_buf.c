/*
 * test_buf.c - chunk pool, reference counting, making room without losing unread bytes, and
 * output queues that merge adjacent slices and release their references.
 */
#include "runtime/core/buf.h"
#include "runtime/core/outq.h"

#include <criterion/criterion.h>
#include <string.h>

Test(buf, pool_recycles_standard_chunks_and_frees_big_ones)
{
    mt_buf_pool_t pool;
    mt_buf_pool_init(&pool);
    mt_buf_t *a = mt_buf_get(&pool, 100);
    cr_assert_not_null(a);
    cr_assert_eq(a->cap, MT_BUF_CHUNK);
    cr_assert_eq(pool.allocated, 1);
    mt_buf_unref(&pool, a);
    cr_assert_eq(pool.allocated, 0);
    cr_assert_eq(pool.nfree, 1);
    mt_buf_t *b = mt_buf_get(&pool, 10);
    cr_assert_eq(b, a, "a standard chunk comes back from the free list");
    cr_assert_eq(pool.nfree, 0);
    mt_buf_t *big = mt_buf_get(&pool, MT_BUF_CHUNK * 3);
    cr_assert_geq(big->cap, MT_BUF_CHUNK * 3);
    mt_buf_unref(&pool, big);
    cr_assert_eq(pool.nfree, 0, "a big chunk is freed, not pooled");
    mt_buf_unref(&pool, b);
    mt_buf_pool_destroy(&pool);
}

Test(buf, a_chunk_lives_while_referenced)
{
    mt_buf_pool_t pool;
    mt_buf_pool_init(&pool);
    mt_buf_t *b = mt_buf_get(&pool, 1);
    mt_buf_ref(b);
    mt_buf_unref(&pool, b);
    cr_assert_eq(pool.allocated, 1, "one reference left");
    mt_buf_unref(&pool, b);
    cr_assert_eq(pool.allocated, 0);
    mt_buf_pool_destroy(&pool);
}

Test(buf, make_room_keeps_unread_bytes)
{
    mt_buf_pool_t pool;
    mt_buf_pool_init(&pool);
    mt_buf_t *b = NULL;
    cr_assert_eq(mt_buf_make_room(&pool, &b, 64, 0), 0);
    memset(b->last, 'x', mt_buf_room(b));
    b->last = b->end;
    b->pos = b->end - 5;
    memcpy(b->pos, "hello", 5);
    /* Sole owner: the tail slides to the front, same chunk. */
    mt_buf_t *same = b;
    cr_assert_eq(mt_buf_make_room(&pool, &b, 1024, 0), 0);
    cr_assert_eq(b, same);
    cr_assert_eq(mt_buf_unread(b), 5);
    cr_assert(memcmp(b->pos, "hello", 5) == 0);
    /* Shared (a slice references it): the unread bytes move to a new chunk instead. */
    b->last = b->end;
    b->pos = b->end - 5;
    memcpy(b->pos, "world", 5);
    mt_buf_ref(b);
    mt_buf_t *old = b;
    cr_assert_eq(mt_buf_make_room(&pool, &b, 1024, 0), 0);
    cr_assert_neq(b, old);
    cr_assert_eq(old->refs, 1, "the old chunk keeps the other reference");
    cr_assert(memcmp(b->pos, "world", 5) == 0);
    /* A frame bigger than a chunk gets a chunk big enough. */
    cr_assert_eq(mt_buf_make_room(&pool, &b, 4096, MT_BUF_CHUNK * 2), 0);
    cr_assert_geq(b->cap, MT_BUF_CHUNK * 2);
    cr_assert(memcmp(b->pos, "world", 5) == 0);
    mt_buf_unref(&pool, old);
    mt_buf_unref(&pool, b);
    cr_assert_eq(pool.allocated, 0);
    mt_buf_pool_destroy(&pool);
}

Test(outq, adjacent_slices_merge_and_references_are_released)
{
    mt_buf_pool_t pool;
    mt_buf_pool_init(&pool);
    mt_outq_t q;
    mt_outq_init(&q, &pool, NULL);
    mt_buf_t *b = mt_buf_get(&pool, 64);
    memcpy(b->last, "GETSETDEL", 9);
    b->last += 9;
    cr_assert_eq(mt_outq_add_ref(&q, b, b->pos, 3), 0);
    cr_assert_eq(mt_outq_add_ref(&q, b, b->pos + 3, 3), 0);
    cr_assert_eq(q.n, 1, "contiguous bytes of one chunk are one slice");
    cr_assert_eq(q.v[0].len, 6);
    cr_assert_eq(mt_outq_add_ref(&q, b, b->pos + 7, 2), 0);
    cr_assert_eq(q.n, 2, "a gap starts a new slice");
    cr_assert_eq(mt_outq_add_copy(&q, "+OK\r\n", 5), 0);
    cr_assert_eq(q.n, 3);
    cr_assert_eq(mt_outq_pending(&q), 13);
    cr_assert_eq(b->refs, 3, "ours plus one per slice");
    mt_outq_reset(&q);
    cr_assert_eq(b->refs, 1);
    mt_buf_unref(&pool, b);
    cr_assert_eq(pool.allocated, 0, "every chunk back, the queue's own included");
    mt_buf_pool_destroy(&pool);
}

Test(outq, slice_copy_fills_one_chunk_then_takes_another)
{
    mt_buf_pool_t pool;
    mt_buf_pool_init(&pool);
    mt_buf_t *own = NULL;
    mt_slice_t s1, s2;
    char big[MT_BUF_CHUNK - 10];
    memset(big, 'a', sizeof(big));
    cr_assert_eq(mt_slice_copy(&pool, &own, big, sizeof(big), &s1), 0);
    cr_assert_eq(mt_slice_copy(&pool, &own, "0123456789abcdef", 16, &s2), 0);
    cr_assert_neq(s1.buf, s2.buf, "no room left: a second chunk");
    cr_assert(memcmp(s2.p, "0123456789abcdef", 16) == 0);
    mt_buf_unref(&pool, s1.buf);
    mt_buf_unref(&pool, s2.buf);
    mt_buf_unref(&pool, own);
    cr_assert_eq(pool.allocated, 0);
    mt_buf_pool_destroy(&pool);
}
