/*
 * test_buf.c - runtime/core/buf.c: the chunk pool, reference counting, making room without
 * losing unread bytes.
 */
#include "runtime/core/buf.h"

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

Test(buf, trim_frees_free_chunks_beyond_what_it_keeps_a_bounded_number_at_a_time)
{
    mt_buf_pool_t pool;
    mt_buf_pool_init(&pool);
    mt_buf_t *b[10];
    for (int i = 0; i < 10; i++)
        b[i] = mt_buf_get(&pool, 100);
    for (int i = 0; i < 10; i++)
        mt_buf_unref(&pool, b[i]);
    cr_assert_eq(pool.nfree, 10);
    cr_assert_eq(mt_buf_pool_trim(&pool, 4, 3), 3, "at most max per call");
    cr_assert_eq(pool.nfree, 7);
    cr_assert_eq(mt_buf_pool_trim(&pool, 4, 100), 3, "down to keep");
    cr_assert_eq(pool.nfree, 4);
    cr_assert_eq(mt_buf_pool_trim(&pool, 4, 100), 0, "nothing beyond keep");
    mt_buf_t *again = mt_buf_get(&pool, 100);
    cr_assert_eq(pool.nfree, 3, "the kept chunks are still reused");
    mt_buf_unref(&pool, again);
    mt_buf_pool_destroy(&pool);
}
