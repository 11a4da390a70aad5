/*
 * test_meta_stream.c - stream records (runtime/proxy/meta/meta_stream.c): a stream ends when
 * both halves are closed or on a reset from either side, never on data; records are found
 * by the id each side knows them by and leave both lists cleanly.
 */
#include "runtime/proxy/meta/meta_stream.h"

#include <criterion/criterion.h>

Test(meta_stream, ends_when_both_halves_close_or_on_a_reset)
{
    mt_meta_stream_t st = {0};
    cr_assert_not(mt_meta_stream_frame(&st, MT_MSG_STREAM_INIT, true));
    cr_assert_not(mt_meta_stream_frame(&st, MT_MSG_STREAM_DATA, true));
    cr_assert_not(mt_meta_stream_frame(&st, MT_MSG_STREAM_CLOSE_ONE_WAY, true));
    cr_assert_not(mt_meta_stream_frame(&st, MT_MSG_STREAM_DATA, false), "the server may go on");
    cr_assert_not(mt_meta_stream_frame(&st, MT_MSG_STREAM_CLOSE_ONE_WAY, true), "twice");
    cr_assert(mt_meta_stream_frame(&st, MT_MSG_STREAM_CLOSE_ONE_WAY, false));

    mt_meta_stream_t r = {0};
    cr_assert(mt_meta_stream_frame(&r, MT_MSG_STREAM_RESET, false));
    mt_meta_stream_t both = {0};
    cr_assert(mt_meta_stream_frame(&both, MT_MSG_STREAM_CLOSE_TWO_WAY, true));
}

Test(meta_stream, found_by_either_id_and_unlinked_from_both_lists)
{
    mt_meta_stream_list_t down = {0}, up1 = {0}, up2 = {0};
    mt_meta_stream_t *s[3];
    for (int i = 0; i < 3; i++) {
        s[i] = mt_meta_stream_new();
        cr_assert_not_null(s[i]);
        s[i]->down_id = (uint64_t)i + 1;
        s[i]->up_id = (uint64_t)i + 100;
        s[i]->sess = &down;
        s[i]->up = i == 1 ? &up2 : &up1;
        mt_meta_stream_link_down(&down, s[i]);
        mt_meta_stream_link_up(i == 1 ? &up2 : &up1, s[i]);
    }
    cr_assert_eq(mt_meta_stream_find_down(&down, 2), s[1]);
    cr_assert_eq(mt_meta_stream_find_up(&up2, 101), s[1]);
    cr_assert_null(mt_meta_stream_find_up(&up1, 101), "each upstream its own ids");
    mt_meta_stream_unlink_down(&down, s[1]); /* the middle one */
    mt_meta_stream_unlink_up(&up2, s[1]);
    cr_assert_null(s[1]->sess);
    cr_assert_null(s[1]->up);
    cr_assert_null(up2.head);
    cr_assert_null(mt_meta_stream_find_down(&down, 2));
    cr_assert_eq(mt_meta_stream_find_down(&down, 1), s[0]);
    cr_assert_eq(mt_meta_stream_find_down(&down, 3), s[2]);
    mt_meta_stream_unlink_down(&down, s[2]); /* the head */
    mt_meta_stream_unlink_down(&down, s[0]);
    cr_assert_null(down.head);
    mt_meta_stream_unlink_up(&up1, s[0]);
    mt_meta_stream_unlink_up(&up1, s[2]);
    cr_assert_null(up1.head);
    mt_buf_pool_t pool;
    mt_buf_pool_init(&pool);
    for (int i = 0; i < 3; i++)
        mt_meta_stream_free(&pool, s[i]);
    mt_buf_pool_destroy(&pool);
}
