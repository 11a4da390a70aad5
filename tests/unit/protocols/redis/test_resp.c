/*
 * test_resp.c - protocols/redis/resp.c. The RESP2 request parser: same frames however the
 * bytes are cut or moved, Redis's error texts for every malformed input, limits tripping as
 * bytes arrive. The reply scanner: frame boundaries of any RESP2 reply, at every split
 * point, with depth and size limits. The reply encoders: exact bytes.
 */
#include "redis_test.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S(lit) lit, sizeof(lit) - 1

/* ---- a pipeline of mixed commands ----------------------------------------------------- */

static char *pipeline;
static size_t pipeline_len;
static const char *pipeline_expected;

static void append(char **buf, size_t *len, const char *p, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static void build_pipeline(void)
{
    char *b = NULL;
    size_t n = 0;
    append(&b, &n, S("*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$3\r\nbar\r\n"));
    append(&b, &n, S("*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n"));
    append(&b, &n, S("PING\r\n"));                                 /* inline */
    append(&b, &n, S("*0\r\n"));                                   /* ignored */
    append(&b, &n, S("\r\n"));                                     /* empty inline */
    append(&b, &n, S("*-1\r\n"));                                  /* ignored */
    append(&b, &n, S("*2\r\n$4\r\nECHO\r\n$6\r\na\r\nb\r\n\r\n")); /* CRLF inside a bulk */
    append(&b, &n, S("*2\r\n$3\r\nGET\r\n$0\r\n\r\n"));            /* empty bulk */
    append(&b, &n, S("set \"a b\" 'c d' \"\\x41\\n\"\n"));         /* inline, quotes, LF only */
    append(&b, &n, S("   \t  \r\n"));                              /* blank inline */
    append(&b, &n, S("*1\r\n$4\r\nPING\r\n"));
    /* a bigger argument, so cuts land deep inside a bulk */
    char big[300];
    memset(big, 'x', sizeof(big));
    append(&b, &n, S("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$300\r\n"));
    append(&b, &n, big, sizeof(big));
    append(&b, &n, S("\r\n"));
    append(&b, &n, S("*4\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n\0\r\n$2\r\n\r\n\r\n"));
    append(&b, &n, S("get k\r\n"));
    pipeline = b;
    pipeline_len = n;
    pipeline_expected = "3|3:SET|3:foo|3:bar;"
                        "2|3:GET|3:foo;"
                        "1|4:PING;"
                        "0;"
                        "0;"
                        "0;"
                        "2|4:ECHO|6:a\r\nb\r\n;"
                        "2|3:GET|0:;"
                        "4|3:set|3:a b|3:c d|2:A\n;"
                        "0;"
                        "1|4:PING;";
}

static void free_pipeline(void)
{
    free(pipeline);
}

TestSuite(resp_request, .init = build_pipeline, .fini = free_pipeline);

static void check_pipeline_log(const feed_result_t *r)
{
    cr_assert_not(r->error, "unexpected error: %s", r->err);
    cr_assert_eq(r->consumed, pipeline_len);
    cr_assert_eq(r->frames, 14);
    cr_assert_eq(strncmp(r->log, pipeline_expected, strlen(pipeline_expected)), 0, "log: %s",
                 r->log);
}

Test(resp_request, whole_pipeline_parses_to_the_expected_argv)
{
    feed_result_t r = feed_requests(NULL, pipeline, pipeline_len, NULL, 0, false);
    check_pipeline_log(&r);
    cr_assert(r.inline_seen);
    /* the tail: the 300-byte SET, the MSET with a NUL and a CRLF value, the inline GET */
    const char *tail = strstr(r.log, "3|3:SET|1:k|300:");
    cr_assert_not_null(tail);
    const char mset[] = "4|4:MSET|1:a|1:\0|2:\r\n;2|3:get|1:k;";
    cr_assert_eq(memcmp(r.log + r.log_len - (sizeof(mset) - 1), mset, sizeof(mset) - 1), 0);
    feed_result_free(&r);
}

Test(resp_request, every_single_split_point_gives_the_same_frames)
{
    feed_result_t whole = feed_requests(NULL, pipeline, pipeline_len, NULL, 0, false);
    for (size_t k = 1; k < pipeline_len; k++) {
        feed_result_t r = feed_requests(NULL, pipeline, pipeline_len, &k, 1, false);
        cr_assert_not(r.error, "split at %zu: %s", k, r.err);
        cr_assert_eq(r.log_len, whole.log_len, "split at %zu", k);
        cr_assert_eq(memcmp(r.log, whole.log, whole.log_len), 0, "split at %zu", k);
        feed_result_free(&r);
    }
    feed_result_free(&whole);
}

Test(resp_request, every_pair_of_split_points_with_moving_bytes)
{
    /* two cuts, and the unconsumed bytes move to a new address at every call */
    feed_result_t whole = feed_requests(NULL, pipeline, pipeline_len, NULL, 0, false);
    for (size_t a = 1; a < pipeline_len; a += 7) {
        for (size_t b = a + 1; b < pipeline_len; b += 3) {
            size_t cuts[2] = {a, b};
            feed_result_t r = feed_requests(NULL, pipeline, pipeline_len, cuts, 2, true);
            cr_assert_not(r.error, "cuts %zu,%zu: %s", a, b, r.err);
            cr_assert_eq(r.log_len, whole.log_len, "cuts %zu,%zu", a, b);
            cr_assert_eq(memcmp(r.log, whole.log, whole.log_len), 0, "cuts %zu,%zu", a, b);
            feed_result_free(&r);
        }
    }
    feed_result_free(&whole);
}

Test(resp_request, byte_by_byte_with_moving_bytes_gives_the_same_frames)
{
    feed_result_t whole = feed_requests(NULL, pipeline, pipeline_len, NULL, 0, false);
    for (size_t chunk = 1; chunk <= 17; chunk++) {
        feed_result_t r = feed_requests_chunked(NULL, pipeline, pipeline_len, chunk, true);
        cr_assert_not(r.error, "chunk %zu: %s", chunk, r.err);
        cr_assert_eq(r.log_len, whole.log_len, "chunk %zu", chunk);
        cr_assert_eq(memcmp(r.log, whole.log, whole.log_len), 0, "chunk %zu", chunk);
        feed_result_free(&r);
    }
    feed_result_free(&whole);
}

Test(resp_request, many_commands_in_one_buffer_reuse_the_argv_array)
{
    /* 2000 pipelined commands with growing argument counts, then small ones again */
    char *b = NULL;
    size_t n = 0;
    for (int i = 0; i < 2000; i++) {
        int argc = 1 + i % 40;
        char line[64];
        append(&b, &n, line, (size_t)snprintf(line, sizeof(line), "*%d\r\n", argc));
        for (int j = 0; j < argc; j++) {
            char arg[32];
            int al = snprintf(arg, sizeof(arg), "a%d_%d", i, j);
            append(&b, &n, line, (size_t)snprintf(line, sizeof(line), "$%d\r\n", al));
            append(&b, &n, arg, (size_t)al);
            append(&b, &n, S("\r\n"));
        }
    }
    resp_req_parser_t p;
    resp_req_parser_init(&p, NULL);
    size_t off = 0;
    for (int i = 0; i < 2000; i++) {
        resp_request_t req;
        const char *err;
        cr_assert_eq(resp_parse_request(&p, b + off, n - off, &req, &err), MT_OK);
        cr_assert_eq(req.argc, (uint32_t)(1 + i % 40));
        char want[32];
        int wl = snprintf(want, sizeof(want), "a%d_%d", i, req.argc - 1);
        cr_assert_eq(req.argv[req.argc - 1].len, (size_t)wl);
        cr_assert_eq(memcmp(req.argv[req.argc - 1].ptr, want, (size_t)wl), 0);
        cr_assert_not(req.is_inline);
        off += req.frame_len;
    }
    cr_assert_eq(off, n);
    cr_assert_leq(p.argv_cap, 64, "argv grows to the largest command, not beyond");
    resp_req_parser_free(&p);
    free(b);
}

Test(resp_request, between_frames_the_arrays_go_to_a_spare_set_and_mid_frame_they_stay)
{
    static const char cmd[] = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    resp_req_arrays_t spare = {0};
    resp_req_parser_t a, b;
    resp_req_parser_init(&a, NULL);
    resp_req_parser_init(&b, NULL);
    resp_request_t req;
    const char *err;
    cr_assert(resp_req_parser_release(&a, &spare), "a fresh parser holds nothing");
    cr_assert_eq(resp_parse_request(&a, cmd, 8, &req, &err), MT_AGAIN);
    cr_assert_not(resp_req_parser_release(&a, &spare), "mid-frame: the offsets are needed");
    cr_assert_not_null(a.argv);
    cr_assert_eq(resp_parse_request(&a, cmd, sizeof(cmd) - 1, &req, &err), MT_OK);
    cr_assert_eq(req.argc, 2);
    cr_assert_eq(req.argv[1].len, 1);
    resp_arg_t *argv = a.argv;
    cr_assert(resp_req_parser_release(&a, &spare));
    cr_assert_null(a.argv, "an idle parser holds no arrays");
    cr_assert_eq(spare.argv, argv, "they wait in the spare set");
    resp_req_parser_borrow(&b, &spare);
    cr_assert_eq(b.argv, argv, "the next parser borrows them");
    cr_assert_null(spare.argv);
    cr_assert_eq(resp_parse_request(&b, cmd, sizeof(cmd) - 1, &req, &err), MT_OK);
    cr_assert_eq(memcmp(req.argv[0].ptr, "GET", 3), 0);
    /* an inline command's scratch is freed too; a parser without arrays parses again */
    cr_assert_eq(resp_parse_request(&a, "PING\r\n", 6, &req, &err), MT_OK);
    cr_assert_eq(req.argc, 1);
    cr_assert(resp_req_parser_release(&a, &spare));
    cr_assert_null(a.scratch);
    cr_assert_not_null(spare.argv, "spare was empty: a's arrays went there");
    cr_assert(resp_req_parser_release(&b, &spare));
    cr_assert_null(b.argv, "spare taken: b's arrays are freed");
    cr_assert_eq(resp_parse_request(&b, cmd, sizeof(cmd) - 1, &req, &err), MT_OK);
    cr_assert_eq(req.argc, 2);
    resp_req_parser_free(&a);
    resp_req_parser_free(&b);
    free(spare.argv);
    free(spare.arg_off);
}

Test(resp_request, inline_split_like_sdssplitargs)
{
    static const struct {
        const char *in;
        const char *log;
    } cases[] = {
        {"a b  c\r\n", "3|1:a|1:b|1:c;"},
        {"\"a\\tb\\x7a\\\"\" 'it\\'s'\r\n", "2|5:a\tbz\"|4:it's;"},
        {"x\"y z\"\r\n", "1|4:xy z;"}, /* a quote inside a token opens a quoted part */
        {"\"\"\r\n", "1|0:;"},
        {"''\n", "1|0:;"},
        {"\v\fa\r\n", "1|1:a;"},   /* \v \f are leading blanks, as isspace() says */
        {"a\vb\r\n", "1|3:a\vb;"}, /* ...but not separators inside a token */
        {"\"\\q\"\r\n", "1|1:q;"},
        {"\"\\xZZ\"\r\n", "1|3:xZZ;"},
        {"a\r\r\n", "1|1:a;"}, /* the CR before LF is dropped, the other one separates */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        feed_result_t r = feed_requests(NULL, cases[i].in, strlen(cases[i].in), NULL, 0, false);
        cr_assert_not(r.error, "%zu: %s", i, r.err);
        cr_assert_str_eq(r.log, cases[i].log, "case %zu", i);
        cr_assert(r.inline_seen);
        feed_result_free(&r);
    }
}

Test(resp_request, closing_quote_glued_to_a_token_is_unbalanced)
{
    const char *bad[] = {"\"a\"b\r\n", "'a'b\r\n", "\"abc\r\n", "'abc\r\n", "\"a\\\"\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        feed_result_t r = feed_requests(NULL, bad[i], strlen(bad[i]), NULL, 0, false);
        cr_assert(r.error, "%s", bad[i]);
        cr_assert_str_eq(r.err, "Protocol error: unbalanced quotes in request");
        feed_result_free(&r);
    }
}

/* ---- malformed input: Redis's texts, at every split point ---------------------------- */

static const struct {
    const char *in;
    size_t len;
    const char *err;
} malformed[] = {
    {S("*abc\r\n"), "Protocol error: invalid multibulk length"},
    {S("*\r\n"), "Protocol error: invalid multibulk length"},
    {S("*01\r\n"), "Protocol error: invalid multibulk length"},
    {S("*+1\r\n"), "Protocol error: invalid multibulk length"},
    {S("* 1\r\n"), "Protocol error: invalid multibulk length"},
    {S("*2147483648\r\n"), "Protocol error: invalid multibulk length"},
    {S("*1048577\r\n"), "Protocol error: invalid multibulk length"}, /* > max_args */
    {S("*99999999999999999999\r\n"), "Protocol error: invalid multibulk length"},
    {S("*1\rX"), "Protocol error: invalid multibulk length"}, /* CR not followed by LF */
    {S("*1\r\n$abc\r\n"), "Protocol error: invalid bulk length"},
    {S("*1\r\n$-1\r\n"), "Protocol error: invalid bulk length"},
    {S("*1\r\n$\r\n"), "Protocol error: invalid bulk length"},
    {S("*1\r\n$536870913\r\n"), "Protocol error: invalid bulk length"},   /* > 512 MB */
    {S("*1\r\n$3\r\nfoobar\r\n"), "Protocol error: invalid bulk length"}, /* no CRLF after */
    {S("*1\r\n$3\r\nfo\r\n\r\n"), "Protocol error: invalid bulk length"},
    {S("*1\r\n$3\rx"), "Protocol error: invalid bulk length"},
    {S("*1\r\n:3\r\n"), "Protocol error: expected '$', got ':'"},
    {S("*2\r\n$1\r\na\r\nfoo\r\n"), "Protocol error: expected '$', got 'f'"},
    {S("*1\r\n\r\n"), "Protocol error: expected '$', got ' '"}, /* CR shown as a space */
    {S("*1\r\n\0\r\n"), "Protocol error: expected '$', got '"}, /* %c of NUL ends the text */
    {S("set \"a\r\n"), "Protocol error: unbalanced quotes in request"},
};

Test(resp_request, malformed_input_gets_redis_error_text_at_every_split_point)
{
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        const char *in = malformed[i].in;
        size_t len = malformed[i].len;
        feed_result_t whole = feed_requests(NULL, in, len, NULL, 0, false);
        cr_assert(whole.error, "case %zu accepted", i);
        cr_assert_str_eq(whole.err, malformed[i].err, "case %zu", i);
        feed_result_free(&whole);
        for (size_t k = 1; k < len; k++) {
            feed_result_t r = feed_requests(NULL, in, len, &k, 1, true);
            cr_assert(r.error, "case %zu split %zu accepted", i, k);
            cr_assert_str_eq(r.err, malformed[i].err, "case %zu split %zu", i, k);
            feed_result_free(&r);
        }
        feed_result_t r = feed_requests_chunked(NULL, in, len, 1, true);
        cr_assert(r.error);
        cr_assert_str_eq(r.err, malformed[i].err, "case %zu byte by byte", i);
        feed_result_free(&r);
    }
}

Test(resp_request, frames_before_a_malformed_one_are_delivered)
{
    const char in[] = "PING\r\n*1\r\n$4\r\nPING\r\n*1\r\n!";
    feed_result_t r = feed_requests(NULL, in, sizeof(in) - 1, NULL, 0, false);
    /* "!" then more bytes make a line that is not "$...": the error waits for the CRLF */
    cr_assert_not(r.error);
    cr_assert_eq(r.frames, 2);
    feed_result_free(&r);
    const char in2[] = "PING\r\n*1\r\n$4\r\nPING\r\n*1\r\n!\r\n";
    r = feed_requests(NULL, in2, sizeof(in2) - 1, NULL, 0, false);
    cr_assert(r.error);
    cr_assert_eq(r.frames, 2);
    cr_assert_str_eq(r.err, "Protocol error: expected '$', got '!'");
    feed_result_free(&r);
}

/* ---- limits trip while the bytes arrive --------------------------------------------- */

/* Feeds byte by byte; returns how many bytes had been delivered when the error came. */
static size_t error_offset(const resp_limits_t *lim, const char *in, size_t len, char *err,
                           size_t errlen)
{
    feed_result_t r = feed_requests_chunked(lim, in, len, 1, false);
    cr_assert(r.error, "no error for %.*s", (int)MT_MIN(len, 40), in);
    snprintf(err, errlen, "%s", r.err);
    size_t at = r.err_at;
    feed_result_free(&r);
    return at;
}

Test(resp_request, bulk_limit_trips_on_the_length_line_before_the_data)
{
    resp_limits_t lim = resp_default_limits;
    lim.max_bulk_len = 10;
    char err[128];
    const char in[] = "*1\r\n$11\r\nhello world\r\n";
    cr_assert_eq(error_offset(&lim, in, sizeof(in) - 1, err, sizeof(err)), 9);
    cr_assert_str_eq(err, "Protocol error: invalid bulk length");
    /* exactly at the limit is fine */
    const char ok[] = "*1\r\n$10\r\nhelloworld\r\n";
    feed_result_t r = feed_requests(&lim, ok, sizeof(ok) - 1, NULL, 0, false);
    cr_assert_not(r.error);
    cr_assert_str_eq(r.log, "1|10:helloworld;");
    feed_result_free(&r);
}

Test(resp_request, argument_count_limit_trips_on_the_count_line)
{
    resp_limits_t lim = resp_default_limits;
    lim.max_args = 4;
    char err[128];
    const char in[] = "*5\r\n$1\r\na\r\n";
    cr_assert_eq(error_offset(&lim, in, sizeof(in) - 1, err, sizeof(err)), 4);
    cr_assert_str_eq(err, "Protocol error: invalid multibulk length");
    const char ok[] = "*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n";
    feed_result_t r = feed_requests(&lim, ok, sizeof(ok) - 1, NULL, 0, false);
    cr_assert_not(r.error);
    feed_result_free(&r);
}

Test(resp_request, a_huge_announced_count_allocates_nothing_up_front)
{
    resp_req_parser_t p;
    resp_req_parser_init(&p, NULL);
    resp_request_t req;
    const char *err;
    const char in[] = "*1048576\r\n$1\r\na\r\n";
    cr_assert_eq(resp_parse_request(&p, in, sizeof(in) - 1, &req, &err), MT_AGAIN);
    cr_assert_leq(p.argv_cap, 16);
    resp_req_parser_free(&p);
}

Test(resp_request, inline_limit_trips_when_the_limit_is_passed_without_newline)
{
    resp_limits_t lim = resp_default_limits;
    lim.max_inline = 16;
    char in[64];
    memset(in, 'a', sizeof(in));
    char err[128];
    cr_assert_eq(error_offset(&lim, in, sizeof(in), err, sizeof(err)), 17);
    cr_assert_str_eq(err, "Protocol error: too big inline request");
    /* Like Redis, the limit counts the bytes before the LF (a CR included): 15 bytes + CRLF
     * and 16 bytes + LF are fine, in one piece or byte by byte */
    memcpy(in + 15, "\r\n", 2);
    feed_result_t r = feed_requests_chunked(&lim, in, 17, 1, true);
    cr_assert_not(r.error, "%s", r.err);
    cr_assert_eq(r.frames, 1);
    feed_result_free(&r);
    memset(in, 'a', sizeof(in));
    in[16] = '\n';
    r = feed_requests_chunked(&lim, in, 17, 1, true);
    cr_assert_not(r.error, "%s", r.err);
    cr_assert_str_eq(r.log, "1|16:aaaaaaaaaaaaaaaa;");
    feed_result_free(&r);
    /* 16 bytes + CRLF in a single read: the same answer as when the LF comes late */
    in[16] = '\r';
    in[17] = '\n';
    r = feed_requests(&lim, in, 18, NULL, 0, false);
    cr_assert(r.error);
    cr_assert_str_eq(r.err, "Protocol error: too big inline request");
    feed_result_free(&r);
}

Test(resp_request, count_lines_without_crlf_are_too_big_past_the_inline_limit)
{
    char err[128];
    resp_limits_t lim = resp_default_limits;
    lim.max_inline = 32;
    char in[80];
    in[0] = '*';
    memset(in + 1, '1', sizeof(in) - 1);
    /* as in Redis, the count includes the '*': "*" + 31 digits waits, one more byte trips */
    cr_assert_eq(error_offset(&lim, in, sizeof(in), err, sizeof(err)), 33);
    cr_assert_str_eq(err, "Protocol error: too big mbulk count string");
    char in2[80] = "*1\r\n$";
    memset(in2 + 5, '1', sizeof(in2) - 5);
    cr_assert_eq(error_offset(&lim, in2, sizeof(in2), err, sizeof(err)), 4 + 33);
    cr_assert_str_eq(err, "Protocol error: too big bulk count string");
}

Test(resp_request, default_limits_match_redis)
{
    cr_assert_eq(resp_default_limits.max_inline, 64 * 1024);
    cr_assert_eq(resp_default_limits.max_bulk_len, 512ull * 1024 * 1024);
    cr_assert_eq(resp_default_limits.max_args, 1024 * 1024);
    /* Redis's own case: more than 64 KB of a count line without CRLF */
    size_t len = 64 * 1024 + 1;
    char *in = malloc(len);
    in[0] = '*';
    memset(in + 1, '9', len - 1);
    feed_result_t r = feed_requests(NULL, in, len - 1, NULL, 0, false);
    cr_assert_not(r.error, "64 KB are not over the limit yet");
    feed_result_free(&r);
    r = feed_requests(NULL, in, len, NULL, 0, false);
    cr_assert(r.error);
    cr_assert_str_eq(r.err, "Protocol error: too big mbulk count string");
    feed_result_free(&r);
    free(in);
}

Test(resp_request, parser_is_ready_for_the_next_frame_after_ok_and_reuses_scratch)
{
    resp_req_parser_t p;
    resp_req_parser_init(&p, NULL);
    resp_request_t req;
    const char *err;
    const char a[] = "GET a\r\n";
    cr_assert_eq(resp_parse_request(&p, a, sizeof(a) - 1, &req, &err), MT_OK);
    cr_assert(req.is_inline);
    cr_assert_eq(req.frame_len, 7);
    char *scratch = p.scratch;
    const char b[] = "GET b\r\n";
    cr_assert_eq(resp_parse_request(&p, b, sizeof(b) - 1, &req, &err), MT_OK);
    cr_assert_eq(p.scratch, scratch);
    cr_assert_eq(req.argv[1].ptr[0], 'b');
    cr_assert_eq(resp_parse_request(&p, b, 0, &req, &err), MT_AGAIN);
    resp_req_parser_free(&p);
}

/* Redis's pre-auth limits: a client that must authenticate cannot make us buffer a big
 * bulk or many arguments; the error comes from the length line, before any data. */
static mt_status_t parse_unauthenticated(const char *in, size_t len, const char **err)
{
    resp_req_parser_t p;
    resp_req_parser_init(&p, NULL);
    p.unauthenticated = true;
    resp_request_t req;
    mt_status_t rc = resp_parse_request(&p, in, len, &req, err);
    resp_req_parser_free(&p);
    return rc;
}

Test(resp_request, unauthenticated_limits_refuse_big_bulks_and_counts)
{
    const char *err = NULL;
    const char bulk[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16385\r\n";
    cr_assert_eq(parse_unauthenticated(bulk, sizeof(bulk) - 1, &err), MT_ERROR);
    cr_assert_str_eq(err, "Protocol error: unauthenticated bulk length");
    const char count[] = "*11\r\n";
    cr_assert_eq(parse_unauthenticated(count, sizeof(count) - 1, &err), MT_ERROR);
    cr_assert_str_eq(err, "Protocol error: unauthenticated multibulk length");
    /* at the limits: still waiting for bytes, no error */
    const char at_bulk[] = "*2\r\n$4\r\nAUTH\r\n$16384\r\n";
    cr_assert_eq(parse_unauthenticated(at_bulk, sizeof(at_bulk) - 1, &err), MT_AGAIN);
    const char at_count[] = "*10\r\n";
    cr_assert_eq(parse_unauthenticated(at_count, sizeof(at_count) - 1, &err), MT_AGAIN);
}

Test(resp_request, authenticated_parser_keeps_the_normal_limits)
{
    resp_req_parser_t p;
    resp_req_parser_init(&p, NULL);
    resp_request_t req;
    const char *err = NULL;
    const char bulk[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16385\r\n";
    cr_assert_eq(resp_parse_request(&p, bulk, sizeof(bulk) - 1, &req, &err), MT_AGAIN);
    resp_req_parser_free(&p);
}

/* ---- replies: the scanner and the encoders -------------------------------------------- */

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

/* RESP3 (a HELLO 3 connection): every type frames, a map counts pairs, an attribute goes with
 * the reply it annotates; without resp3 the same bytes are a protocol error. */
Test(resp_reply, resp3_types_frame_only_when_enabled)
{
    static const struct {
        const char *in;
        size_t flen;
    } cases[] = {
        {"_\r\n", 3},
        {",3.14\r\n", 7},
        {"#t\r\n", 4},
        {"(3492890328409238509324850943850943825024385\r\n", 46},
        {"!21\r\nSYNTAX invalid syntax\r\n", 28},
        {"=15\r\ntxt:Some string\r\n", 22},
        {"%2\r\n+first\r\n:1\r\n+second\r\n_\r\n", 28},
        {"~2\r\n#f\r\n,inf\r\n", 14},
        {">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nm\r\n", 32},
        {"|1\r\n+key\r\n+val\r\n:7\r\n", 20},
        {"*2\r\n%1\r\n$1\r\na\r\n~0\r\n_\r\n", 22},
        {"%0\r\n", 4},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        resp_reply_scanner_t s;
        resp_reply_scanner_init(&s, NULL);
        size_t flen = 0;
        const char *err = NULL;
        size_t len = strlen(cases[i].in);
        cr_assert_eq(resp_scan_reply(&s, cases[i].in, len, &flen, &err), MT_ERROR, "%s",
                     cases[i].in);
        resp_reply_scanner_init(&s, NULL);
        s.resp3 = true;
        cr_assert_eq(resp_scan_reply(&s, cases[i].in, len, &flen, &err), MT_OK, "%s: %s",
                     cases[i].in, err ? err : "");
        cr_assert_eq(flen, cases[i].flen, "%s", cases[i].in);
        for (size_t k = 1; k < len; k++) { /* and cut anywhere */
            resp_reply_scanner_init(&s, NULL);
            s.resp3 = true;
            cr_assert_eq(resp_scan_reply(&s, cases[i].in, k, &flen, &err), MT_AGAIN, "%s at %zu",
                         cases[i].in, k);
            cr_assert_eq(resp_scan_reply(&s, cases[i].in, len, &flen, &err), MT_OK);
            cr_assert_eq(flen, cases[i].flen);
        }
    }
}
