/*
 * test_hessian2.c - protocols/dubbo/hessian2.c on its own: the string writer's compact,
 * short and chunked forms, read back by the reader. Decoding of every Hessian 2.0 type inside
 * a Dubbo body is tested through the codec in test_dubbo.c.
 */
#include "protocols/codec.h"
#include "protocols/dubbo/hessian2.h"

#include <criterion/criterion.h>
#include <stdio.h>
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

/* ---- strings skipped by length: the same outcome as a walk of every character ------------ */

/* The reference: one character at a time, as the reader did before its ASCII fast path.
 * -> true and *end, or false and *fail_at (the offset the reader's error names) and
 * whether it is a truncation (else an invalid lead byte). */
static bool ref_skip_chars(const uint8_t *b, size_t len, size_t pos, uint32_t chars, size_t *end,
                           size_t *fail_at, bool *truncated)
{
    while (chars > 0) {
        if (pos >= len) {
            *fail_at = pos;
            *truncated = true;
            return false;
        }
        uint8_t lead = b[pos++];
        size_t more;
        uint32_t units = 1;
        if (lead < 0x80)
            more = 0;
        else if (lead >= 0xc0 && lead <= 0xdf)
            more = 1;
        else if (lead >= 0xe0 && lead <= 0xef)
            more = 2;
        else if (lead >= 0xf0 && lead <= 0xf7 && chars >= 2)
            more = 3, units = 2;
        else {
            *fail_at = pos - 1;
            *truncated = false;
            return false;
        }
        if (len - pos < more) {
            *fail_at = pos;
            *truncated = true;
            return false;
        }
        pos += more;
        chars -= units;
    }
    *end = pos;
    return true;
}

Test(hessian2, strings_skip_by_length_with_the_same_results_as_per_character)
{
    /* bytes drawn from ASCII, lead bytes, continuation bytes and invalid ones */
    static const uint8_t alphabet[] = {'a',  'Z',  '0',  0x7f, 0x00, 0xc3, 0xa9, 0xe2,
                                       0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xf8, 0xff};
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    uint8_t buf[80];
    hessian2_classes_t classes = {0};
    unsigned ok = 0, failed = 0;
    for (int iter = 0; iter < 200000; iter++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        uint32_t chars = (uint32_t)(rng % 32); /* a compact string: tag == chars */
        size_t n = 1 + (size_t)((rng >> 8) % (sizeof(buf) - 1));
        bool mostly_ascii = (rng >> 20) & 1;
        buf[0] = (uint8_t)chars;
        for (size_t i = 1; i < n; i++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            buf[i] = mostly_ascii && (rng & 7) ? (uint8_t)('a' + rng % 26)
                                               : alphabet[(rng >> 3) % sizeof(alphabet)];
        }
        size_t end = 0, fail_at = 0;
        bool truncated = false;
        bool want_ok = ref_skip_chars(buf, n, 1, chars, &end, &fail_at, &truncated);
        mt_codec_err_t err = {0};
        hessian2_reader_t r;
        hessian2_reader_init(&r, buf, n, 0, 8, &classes, NULL, &err);
        mt_str_t s;
        mt_status_t rc = hessian2_read_string(&r, &s);
        if (want_ok) {
            cr_assert_eq(rc, MT_OK, "iter %d: %s", iter, err.text);
            cr_assert_eq(r.pos, end, "iter %d", iter);
            cr_assert_eq((const uint8_t *)s.ptr, buf + 1);
            cr_assert_eq(s.len, end - 1);
            ok++;
        } else {
            cr_assert_eq(rc, MT_ERROR, "iter %d", iter);
            cr_assert_eq(err.code, MT_CODEC_E_MALFORMED);
            char want[MT_CODEC_ERR_TEXT];
            if (truncated)
                snprintf(want, sizeof(want), "dubbo: hessian2 value truncated at body offset %zu",
                         fail_at);
            else
                snprintf(want, sizeof(want),
                         "dubbo: hessian2 invalid UTF-8 byte 0x%02x at offset %zu", buf[fail_at],
                         fail_at);
            cr_assert_str_eq(err.text, want, "iter %d", iter);
            failed++;
        }
        /* the same bytes through the skipper (no view, same walk) */
        hessian2_reader_init(&r, buf, n, 0, 8, &classes, NULL, &err);
        rc = hessian2_skip(&r);
        cr_assert_eq(rc, want_ok ? MT_OK : MT_ERROR, "iter %d (skip)", iter);
        if (want_ok)
            cr_assert_eq(r.pos, end);
    }
    cr_assert_gt(ok, 1000);
    cr_assert_gt(failed, 1000);
    hessian2_classes_free(&classes);
}

Test(hessian2, long_ascii_and_mixed_strings_are_skipped_whole)
{
    mt_wbuf_t out;
    mt_wbuf_init(&out);
    char s[3000];
    for (size_t i = 0; i < sizeof(s); i++)
        s[i] = (char)('a' + i % 26);
    memcpy(s + 1500, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9); /* é € 😀 inside */
    hessian2_classes_t classes = {0};
    mt_codec_err_t err;
    for (size_t len = 0; len < sizeof(s); len += 97) {
        if (len > 1500 && len < 1509)
            continue; /* would cut a sequence */
        out.len = 0;
        cr_assert_eq(hessian2_write_string(&out, s, len), MT_OK);
        cr_assert_eq(mt_wbuf_append_u8(&out, 'N'), MT_OK); /* a next value */
        hessian2_reader_t r;
        hessian2_reader_init(&r, out.data, out.len, 0, 8, &classes, NULL, &err);
        mt_str_t back;
        cr_assert_eq(hessian2_read_string(&r, &back), MT_OK, "len %zu: %s", len, err.text);
        cr_assert_eq(back.len, len);
        cr_assert_eq(memcmp(back.ptr, s, len), 0);
        cr_assert_eq(r.pos, out.len - 1, "stops on the next value");
        /* one byte short: truncated at the end of the buffer, wherever the fast path stops */
        if (len > 0) {
            hessian2_reader_init(&r, out.data, out.len - 2, 0, 8, &classes, NULL, &err);
            cr_assert_eq(hessian2_read_string(&r, &back), MT_ERROR);
            cr_assert(strstr(err.text, "truncated"), "%s", err.text);
        }
    }
    hessian2_classes_free(&classes);
    mt_wbuf_free(&out);
}

Test(hessian2, strings_around_the_readers_ascii_range_read_as_before)
{
    /* "ab", "é" (the range ends at its first byte), "xyz" after it, then "€" and "k" */
    static const uint8_t buf[] = {2,   'a', 'b', 1,    0xc3, 0xa9, 3, 'x',
                                  'y', 'z', 1,   0xe2, 0x82, 0xac, 1, 'k'};
    static const char *const want[] = {"ab", "\xc3\xa9", "xyz", "\xe2\x82\xac", "k"};
    hessian2_classes_t classes = {0};
    mt_codec_err_t err = {0};
    static const size_t starts[] = {0, 3, 6, 10, 14}; /* where each string's tag is */
    for (size_t first = 0; first < MT_ARRAY_LEN(starts); first++) {
        size_t start = starts[first];
        hessian2_reader_t r;
        hessian2_reader_init(&r, buf, sizeof(buf), start, 8, &classes, NULL, &err);
        cr_assert_eq(r.ascii_from, start);
        for (size_t i = first; i < MT_ARRAY_LEN(want); i++) {
            mt_str_t s;
            cr_assert_eq(hessian2_read_string(&r, &s), MT_OK, "start %zu string %zu: %s", start, i,
                         err.text);
            cr_assert_eq(s.len, strlen(want[i]));
            cr_assert_eq(memcmp(s.ptr, want[i], s.len), 0, "start %zu string %zu", start, i);
        }
        cr_assert_eq(r.pos, sizeof(buf));
        /* a copy positioned back inside the range (as h2_join_chunks does) reads the same */
        hessian2_reader_t c = r;
        c.pos = start;
        mt_str_t s;
        cr_assert_eq(hessian2_read_string(&c, &s), MT_OK);
        cr_assert_eq(memcmp(s.ptr, want[first], s.len), 0);
    }
    /* the range of a frame that is ASCII throughout is the whole frame, past 32-byte steps */
    uint8_t big[100];
    memset(big, 'a', sizeof(big));
    big[0] = 31;
    hessian2_reader_t r;
    hessian2_reader_init(&r, big, sizeof(big), 0, 8, &classes, NULL, &err);
    cr_assert_eq(r.ascii_end, sizeof(big));
    big[77] = 0x80;
    hessian2_reader_init(&r, big, sizeof(big), 0, 8, &classes, NULL, &err);
    cr_assert_eq(r.ascii_end, 77);
    hessian2_classes_free(&classes);
}
