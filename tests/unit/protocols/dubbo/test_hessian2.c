/*
 * test_hessian2.c - protocols/dubbo/hessian2.c on its own: the string writer's compact,
 * short and chunked forms, read back by the reader. Decoding of every Hessian 2.0 type inside
 * a Dubbo body is tested through the codec in test_dubbo.c.
 */
#include "protocols/codec.h"
#include "protocols/dubbo/hessian2.h"

#include <criterion/criterion.h>
#include <string.h>

Test(hessian2, write_string_uses_compact_and_chunked_forms)
{
    mt_wbuf_t out;
    mt_wbuf_init(&out);
    cr_assert_eq(hessian2_write_string(&out, "abc", 3), MT_OK);
    cr_assert_eq(out.data[0], 3);
    out.len = 0;
    char s[40000];
    memset(s, 'q', sizeof(s));
    cr_assert_eq(hessian2_write_string(&out, s, 100), MT_OK);
    cr_assert_eq(out.data[0], 0x30);
    cr_assert_eq(out.data[1], 100);
    out.len = 0;
    cr_assert_eq(hessian2_write_string(&out, s, 5000), MT_OK);
    cr_assert_eq(out.data[0], 'S');
    out.len = 0;
    cr_assert_eq(hessian2_write_string(&out, s, sizeof(s)), MT_OK);
    cr_assert_eq(out.data[0], 'R');
    cr_assert_eq(out.data[1], 0x80);
    cr_assert_eq(out.data[2], 0x00);
    /* reads back through the reader as one joined string */
    hessian2_classes_t classes = {0};
    mt_arena_t arena;
    mt_arena_init(&arena);
    mt_codec_err_t err;
    hessian2_reader_t r;
    hessian2_reader_init(&r, out.data, out.len, 0, 8, &classes, &arena, &err);
    mt_str_t back;
    cr_assert_eq(hessian2_read_string(&r, &back), MT_OK);
    cr_assert_eq(back.len, sizeof(s));
    cr_assert_eq(r.pos, out.len);
    /* a surrogate pair counts as two chars */
    out.len = 0;
    cr_assert_eq(hessian2_write_string(&out, "\xf0\x9f\x98\x80", 4), MT_OK);
    cr_assert_eq(out.data[0], 2);
    cr_assert_eq(hessian2_write_string(&out, "\xc3", 1), MT_ERROR, "truncated sequence");
    hessian2_classes_free(&classes);
    mt_arena_free(&arena);
    mt_wbuf_free(&out);
}
