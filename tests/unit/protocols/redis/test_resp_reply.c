/*
 * test_resp_reply.c - the reply scanner (frame boundaries of any RESP2 reply, at every split
 * point, with depth and size limits) and the reply encoders (exact bytes).
 */
#include "redis_test.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S(lit) lit, sizeof(lit) - 1

/* Replies one after the other, with the frame lengths the scanner must report. */
static const char replies[] = "+OK\r\n"
                              "-ERR unknown command 'x', with args beginning with: \r\n"
                              ":0\r\n"
                              ":-9223372036854775808\r\n"
                              "$-1\r\n"
                              "*-1\r\n"
                              "*0\r\n"
                              "$0\r\n\r\n"
                              "$5\r\na\r\n\r\n\r\n"
                              "*3\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n*1\r\n-ERR nested\r\n"
                              "*2\r\n*0\r\n*-1\r\n"
                              "*1\r\n*1\r\n*1\r\n*1\r\n+deep\r\n"
                              "*2\r\n$3\r\n+OK\r\n+\r\n"
                              "$3\r\n\0\0\0\r\n";
static const char replies_log[] = "5;54;4;23;5;5;4;6;11;41;13;23;16;9;";

Test(resp_reply, a_sequence_of_replies_is_cut_into_the_right_frames)
{
    feed_result_t r = feed_replies(NULL, replies, sizeof(replies) - 1, NULL, 0, false);
    cr_assert_not(r.error, "%s", r.err);
    cr_assert_str_eq(r.log, replies_log);
    cr_assert_eq(r.consumed, sizeof(replies) - 1);
    feed_result_free(&r);
}

Test(resp_reply, every_split_point_and_byte_by_byte_give_the_same_frames)
{
    size_t len = sizeof(replies) - 1;
    for (size_t k = 1; k < len; k++) {
        feed_result_t r = feed_replies(NULL, replies, len, &k, 1, true);
        cr_assert_not(r.error, "split %zu: %s", k, r.err);
        cr_assert_str_eq(r.log, replies_log, "split %zu", k);
        feed_result_free(&r);
    }
    for (size_t chunk = 1; chunk < 8; chunk++) {
        feed_result_t r = feed_replies_chunked(NULL, replies, len, chunk, true);
        cr_assert_not(r.error, "chunk %zu: %s", chunk, r.err);
        cr_assert_str_eq(r.log, replies_log, "chunk %zu", chunk);
        feed_result_free(&r);
    }
}

Test(resp_reply, incomplete_nested_array_waits)
{
    resp_reply_scanner_t s;
    resp_reply_scanner_init(&s, NULL);
    const char in[] = "*2\r\n*2\r\n:1\r\n:2\r\n";
    size_t flen = 0;
    const char *err;
    cr_assert_eq(resp_scan_reply(&s, in, sizeof(in) - 1, &flen, &err), MT_AGAIN);
    const char full[] = "*2\r\n*2\r\n:1\r\n:2\r\n$2\r\nab\r\n+next\r\n";
    cr_assert_eq(resp_scan_reply(&s, full, sizeof(full) - 1, &flen, &err), MT_OK);
    cr_assert_eq(flen, sizeof(full) - 1 - 7);
    cr_assert_eq(resp_scan_reply(&s, full + flen, 7, &flen, &err), MT_OK);
    cr_assert_eq(flen, 7);
}

static char *nested(int depth, size_t *len)
{
    char *b = malloc((size_t)depth * 4 + 8);
    size_t n = 0;
    for (int i = 0; i < depth; i++) {
        memcpy(b + n, "*1\r\n", 4);
        n += 4;
    }
    memcpy(b + n, ":1\r\n", 4);
    n += 4;
    *len = n;
    return b;
}

Test(resp_reply, depth_limit_trips_at_the_first_array_too_many)
{
    size_t len;
    char *ok = nested(64, &len);
    feed_result_t r = feed_replies(NULL, ok, len, NULL, 0, false);
    cr_assert_not(r.error, "64 levels are allowed: %s", r.err);
    cr_assert_eq(r.frames, 1);
    feed_result_free(&r);
    free(ok);

    char *bad = nested(65, &len);
    r = feed_replies_chunked(NULL, bad, len, 1, false);
    cr_assert(r.error);
    cr_assert_str_eq(r.err, "Protocol error: reply nested too deep");
    cr_assert_eq(r.err_at, 65 * 4, "trips on the 65th header, before the element");
    feed_result_free(&r);
    free(bad);

    resp_limits_t lim = resp_default_limits;
    lim.max_depth = 2;
    const char three[] = "*1\r\n*1\r\n*1\r\n:1\r\n";
    r = feed_replies(&lim, three, sizeof(three) - 1, NULL, 0, false);
    cr_assert(r.error);
    feed_result_free(&r);
    const char two[] = "*1\r\n*2\r\n:1\r\n*0\r\n";
    r = feed_replies(&lim, two, sizeof(two) - 1, NULL, 0, false);
    cr_assert_not(r.error, "%s", r.err);
    feed_result_free(&r);
}

Test(resp_reply, bulk_limit_trips_on_the_length_line)
{
    resp_limits_t lim = resp_default_limits;
    lim.max_bulk_len = 4;
    const char in[] = "*2\r\n$4\r\nabcd\r\n$5\r\nabcde\r\n";
    feed_result_t r = feed_replies_chunked(&lim, in, sizeof(in) - 1, 1, false);
    cr_assert(r.error);
    cr_assert_str_eq(r.err, "Protocol error: invalid bulk length");
    cr_assert_eq(r.err_at, 18);
    feed_result_free(&r);
}

Test(resp_reply, malformed_replies_are_errors_at_every_split_point)
{
    static const struct {
        const char *in;
        size_t len;
        const char *err;
    } cases[] = {
        {S("!3\r\nabc\r\n"), "Protocol error: invalid reply type"},
        {S("*1\r\n?\r\n"), "Protocol error: invalid reply type"},
        {S("$-2\r\n"), "Protocol error: invalid bulk length"},
        {S("$x\r\n"), "Protocol error: invalid bulk length"},
        {S("*-2\r\n"), "Protocol error: invalid multibulk length"},
        {S("*1x\r\n"), "Protocol error: invalid multibulk length"},
        {S(":1.5\r\n"), "Protocol error: invalid integer reply"},
        {S(":\r\n"), "Protocol error: invalid integer reply"},
        {S(":123456789012345678901\r\n"), "Protocol error: invalid integer reply"},
        {S("$3\r\nabcd\r\n"), "Protocol error: expected CRLF in reply"},
        {S("+OK\rX"), "Protocol error: expected CRLF in reply"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t k = 0; k < cases[i].len; k++) {
            feed_result_t r = feed_replies(NULL, cases[i].in, cases[i].len, &k, k ? 1 : 0, true);
            cr_assert(r.error, "case %zu split %zu accepted", i, k);
            cr_assert_str_eq(r.err, cases[i].err, "case %zu split %zu", i, k);
            feed_result_free(&r);
        }
    }
}

Test(resp_reply, an_endless_integer_line_trips_early)
{
    char in[64] = ":";
    memset(in + 1, '1', sizeof(in) - 1);
    feed_result_t r = feed_replies_chunked(NULL, in, sizeof(in), 1, false);
    cr_assert(r.error);
    cr_assert_eq(r.err_at, 22, "21 digits can not be a number");
    feed_result_free(&r);
}

/* ---- encoders ------------------------------------------------------------------------ */

static void expect_out(resp_out_t *o, const char *want, size_t n)
{
    cr_assert_eq(o->len, n, "got %zu bytes: %.*s", o->len, (int)o->len, o->data);
    cr_assert_eq(memcmp(o->data, want, n), 0, "got %.*s", (int)o->len, o->data);
    o->len = 0;
}

Test(resp_out, encoders_write_exact_resp2)
{
    resp_out_t o = {0};
    resp_out_simple(&o, "OK");
    expect_out(&o, S("+OK\r\n"));
    resp_out_error(&o, "ERR bad\r\nthing");
    expect_out(&o, S("-ERR bad  thing\r\n"));
    resp_out_errorf(&o, "ERR %s %d", "x", 42);
    expect_out(&o, S("-ERR x 42\r\n"));
    resp_out_integer(&o, 0);
    resp_out_integer(&o, -1);
    resp_out_integer(&o, INT64_MIN);
    resp_out_integer(&o, INT64_MAX);
    expect_out(&o, S(":0\r\n:-1\r\n:-9223372036854775808\r\n:9223372036854775807\r\n"));
    resp_out_bulk(&o, "a\r\nb", 4);
    resp_out_bulk(&o, "", 0);
    resp_out_null(&o);
    resp_out_array(&o, 2);
    resp_out_array(&o, -1);
    expect_out(&o, S("$4\r\na\r\nb\r\n$0\r\n\r\n$-1\r\n*2\r\n*-1\r\n"));
    resp_out_raw(&o, "xyz", 3);
    expect_out(&o, S("xyz"));
    resp_arg_t argv[] = {{"SET", 3}, {"k", 1}, {"", 0}};
    resp_out_command(&o, 3, argv);
    expect_out(&o, S("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"));
    resp_out_free(&o);
    cr_assert_null(o.data);
    cr_assert_eq(o.cap, 0);
}

Test(resp_out, long_errorf_and_big_bulks_are_complete)
{
    resp_out_t o = {0};
    char big[1000];
    memset(big, 'e', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    resp_out_errorf(&o, "ERR %s", big);
    cr_assert_eq(o.len, 1 + 4 + 999 + 2);
    cr_assert_eq(memcmp(o.data + o.len - 3, "e\r\n", 3), 0);
    o.len = 0;
    char *data = malloc(100000);
    memset(data, 'd', 100000);
    resp_out_bulk(&o, data, 100000);
    cr_assert_eq(o.len, 9 + 100000 + 2);
    cr_assert_eq(memcmp(o.data, "$100000\r\n", 9), 0);
    free(data);
    resp_out_free(&o);
}

Test(resp_out, an_encoded_command_parses_back_to_the_same_argv)
{
    resp_arg_t argv[] = {{"MSET", 4}, {"a b", 3}, {"\r\n", 2}, {"\0x", 2}};
    resp_out_t o = {0};
    resp_out_command(&o, 4, argv);
    feed_result_t r = feed_requests(NULL, o.data, o.len, NULL, 0, false);
    const char want[] = "4|4:MSET|3:a b|2:\r\n|2:\0x;";
    cr_assert_eq(r.log_len, sizeof(want) - 1);
    cr_assert_eq(memcmp(r.log, want, sizeof(want) - 1), 0);
    feed_result_free(&r);
    resp_out_free(&o);
}
