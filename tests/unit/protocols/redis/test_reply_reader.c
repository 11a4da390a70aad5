/*
 * test_reply_reader.c - protocols/redis/reply_reader.c: the bounded readers meltemi uses to
 * look inside replies and request slices (integers, bulks, skipped elements), on copies in
 * buffers of exactly the reply's size so ASan sees any read past it.
 */
#include "protocols/redis/reply_reader.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define S(lit) lit, sizeof(lit) - 1

static char *copy_of(const char *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    cr_assert_not_null(c);
    memcpy(c, p, n);
    return c;
}

static bool parse(const char *p, size_t n, int64_t *v)
{
    char *c = copy_of(p, n);
    bool ok = redis_parse_int(c, n, v);
    free(c);
    return ok;
}

Test(reply_reader, parse_int_takes_the_whole_int64_range)
{
    int64_t v = 0;
    cr_assert(parse(S("0"), &v));
    cr_assert_eq(v, 0);
    cr_assert(parse(S("-17"), &v));
    cr_assert_eq(v, -17);
    cr_assert(parse(S("9223372036854775807"), &v));
    cr_assert_eq(v, INT64_MAX);
    cr_assert(parse(S("-9223372036854775808"), &v));
    cr_assert_eq(v, INT64_MIN);
}

Test(reply_reader, parse_int_refuses_what_is_not_exactly_a_number)
{
    int64_t v = 42;
    cr_assert_not(parse(S(""), &v));
    cr_assert_not(parse(S("-"), &v));
    cr_assert_not(parse(S(" 1"), &v), "no leading white space (strtoll would skip it)");
    cr_assert_not(parse(S("1 "), &v));
    cr_assert_not(parse(S("+1"), &v));
    cr_assert_not(parse(S("1\r"), &v));
    cr_assert_not(parse(S("9223372036854775808"), &v), "one past INT64_MAX");
    cr_assert_not(parse(S("-9223372036854775809"), &v));
    cr_assert_not(parse(S("00000000000000000001"), &v), "more than 19 digits");
    cr_assert_eq(v, 42, "a refused number leaves the output alone");
}

Test(reply_reader, read_num_on_an_empty_integer_line_fails_within_the_reply)
{
    /* ":\r\n" is not an integer; strtoll would have skipped the CRLF and read on. */
    char *c = copy_of(S(":\r\n"));
    redis_reader_t r = redis_reader(c, 3);
    cr_assert_eq(redis_read_num(&r, ':'), -1);
    cr_assert(r.bad);
    free(c);
    c = copy_of(S(":-9223372036854775808\r\n"));
    r = redis_reader(c, sizeof(":-9223372036854775808\r\n") - 1);
    cr_assert_eq(redis_read_num(&r, ':'), INT64_MIN);
    cr_assert_not(r.bad);
    free(c);
}

Test(reply_reader, read_bulk_checks_its_length_against_the_reply)
{
    const char *s = NULL;
    size_t n = 0;
    char *c = copy_of(S("$5\r\nhello\r\n"));
    redis_reader_t r = redis_reader(c, 11);
    cr_assert(redis_read_bulk(&r, &s, &n));
    cr_assert_eq(n, 5);
    cr_assert_eq(memcmp(s, "hello", 5), 0);
    free(c);
    c = copy_of(S("$9\r\nhello\r\n")); /* claims more than there is */
    r = redis_reader(c, 11);
    cr_assert_not(redis_read_bulk(&r, &s, &n));
    free(c);
    c = copy_of(S("$-1\r\n"));
    r = redis_reader(c, 5);
    cr_assert(redis_read_bulk(&r, &s, &n));
    cr_assert_null(s, "a null bulk");
    free(c);
}

Test(reply_reader, a_bulk_claiming_int64_max_bytes_is_refused)
{
    const char *s = NULL;
    size_t n = 0;
    char *c = copy_of(S("$9223372036854775807\r\nab\r\n"));
    redis_reader_t r = redis_reader(c, sizeof("$9223372036854775807\r\nab\r\n") - 1);
    cr_assert_not(redis_read_bulk(&r, &s, &n));
    cr_assert(r.bad);
    free(c);
}
