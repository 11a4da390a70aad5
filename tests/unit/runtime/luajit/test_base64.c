/*
 * test_base64.c - the strict Secret-data decoder over OpenSSL: exact lengths (EVP_DecodeBlock
 * pads its output), NUL bytes kept, CR/LF skipped, and every kind of bad text refused with the
 * offset of the offending byte or a length/padding error.
 */
#include "runtime/luajit/base64.h"

#include <criterion/criterion.h>
#include <string.h>

typedef struct decoded {
    mt_base64_status_t st;
    size_t len;
    size_t bad_at;
    unsigned char bytes[128];
} decoded_t;

static decoded_t decode(const char *text)
{
    decoded_t d = {.bad_at = (size_t)-1};
    unsigned char scratch[128];
    size_t len = strlen(text);
    cr_assert_leq(mt_base64_decoded_max(len), sizeof d.bytes);
    d.st = mt_base64_decode(text, len, d.bytes, &d.len, scratch, &d.bad_at);
    return d;
}

static void assert_decodes(const char *text, const void *want, size_t want_len)
{
    decoded_t d = decode(text);
    cr_assert_eq(d.st, MT_BASE64_OK, "%s refused", text);
    cr_assert_eq(d.len, want_len, "%s: %zu bytes, want %zu", text, d.len, want_len);
    cr_assert_arr_eq(d.bytes, want, want_len, "%s: wrong bytes", text);
}

Test(base64, exact_length_for_each_padding)
{
    assert_decodes("", "", 0);
    assert_decodes("YQ==", "a", 1);
    assert_decodes("YWI=", "ab", 2);
    assert_decodes("YWJj", "abc", 3);
    assert_decodes("YWJjZA==", "abcd", 4);
    assert_decodes("dGVzdHJlZGlzCg==", "testredis\n", 10);
    assert_decodes("dGVzdHJlZGlz", "testredis", 9);
}

Test(base64, nul_bytes_are_data)
{
    assert_decodes("AA==", "\0", 1);
    assert_decodes("AGEA", "\0a\0", 3);
    assert_decodes("cHcAeAA=", "pw\0x\0", 5);
    assert_decodes("AAAAAA==", "\0\0\0\0", 4);
}

Test(base64, full_alphabet_and_high_bytes)
{
    assert_decodes("+/8=", "\xfb\xff", 2);
    assert_decodes("gICA/w==", "\x80\x80\x80\xff", 4);
}

Test(base64, line_breaks_are_skipped)
{
    assert_decodes("YQ==\n", "a", 1);
    assert_decodes("YW\r\nJj\nZA\n==\n", "abcd", 4);
    assert_decodes("\n\n", "", 0);
}

static void assert_bad_byte(const char *text, size_t at)
{
    decoded_t d = decode(text);
    cr_assert_eq(d.st, MT_BASE64_BAD_BYTE, "%s: status %d", text, d.st);
    cr_assert_eq(d.bad_at, at, "%s: bad byte at %zu, want %zu", text, d.bad_at, at);
    cr_assert_eq(d.len, 0);
}

Test(base64, bytes_outside_the_alphabet_are_refused_where_they_are)
{
    assert_bad_byte("dGVzd!==", 5);
    assert_bad_byte("!!not base64!!", 0);
    assert_bad_byte("not base64!", 3);
    assert_bad_byte("YW Jj", 2);      /* spaces are not skipped, only CR/LF */
    assert_bad_byte("YWJj\tZA==", 4); /* nor tabs */
    assert_bad_byte("YW-j", 2);       /* OpenSSL's end-of-data mark is not ours */
    assert_bad_byte("YW_j", 2);       /* URL-safe alphabet is not standard */
    assert_bad_byte("YWJ\x80", 3);
}

Test(base64, a_nul_in_the_text_is_a_bad_byte_not_the_end)
{
    unsigned char out[8], scratch[8];
    size_t n = 99, at = 99;
    cr_assert_eq(mt_base64_decode("YW\0jYWJj", 8, out, &n, scratch, &at), MT_BASE64_BAD_BYTE);
    cr_assert_eq(at, 2);
    cr_assert_eq(n, 0);
}

Test(base64, data_after_padding_is_refused)
{
    assert_bad_byte("YQ==YQ==", 4);
    assert_bad_byte("Y=Jj", 2);
    assert_bad_byte("YQ=\nx", 4);
}

static void assert_bad_length(const char *text)
{
    decoded_t d = decode(text);
    cr_assert_eq(d.st, MT_BASE64_BAD_LENGTH, "%s: status %d", text, d.st);
    cr_assert_eq(d.len, 0);
}

Test(base64, partial_quads_and_bad_padding_are_refused)
{
    assert_bad_length("YQ");
    assert_bad_length("YQ=");
    assert_bad_length("YWJ");
    assert_bad_length("YWJjZ");
    assert_bad_length("Y===");
    assert_bad_length("====");
    assert_bad_length("YWJj====");
    assert_bad_length("=");
}
