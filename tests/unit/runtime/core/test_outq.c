/*
 * test_outq.c - runtime/core/outq.c: output queues that merge adjacent slices, copy local
 * bytes into a chunk of their own and release every reference they hold.
 */
#include "runtime/core/outq.h"

#include <criterion/criterion.h>
#include <string.h>

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
