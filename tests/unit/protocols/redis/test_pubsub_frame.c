/*
 * test_pubsub_frame.c - protocols/redis/pubsub_frame.c: the frames of a subscribed connection,
 * in the bytes Redis 7.0 sends (RESP2 arrays and RESP3 pushes), and what is nobody's message.
 */
#include "protocols/redis/pubsub_frame.h"

#include <criterion/criterion.h>
#include <string.h>

#define S(x) x, sizeof(x) - 1

static redis_pubsub_frame_t parse_ok(const char *p, size_t len)
{
    redis_pubsub_frame_t f;
    memset(&f, 0xAB, sizeof(f));
    cr_assert_eq(redis_pubsub_parse(p, len, &f), MT_OK, "%.*s", (int)len, p);
    return f;
}

Test(pubsub_frame, messages_name_their_topic)
{
    redis_pubsub_frame_t f = parse_ok(S("*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"));
    cr_assert(f.message);
    cr_assert_eq(f.kind, REDIS_PUBSUB_CHANNEL);
    cr_assert_eq(f.name_len, 4);
    cr_assert_eq(memcmp(f.name, "news", 4), 0);
    /* pmessage: the pattern is the topic, the channel follows */
    f = parse_ok(S("*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$0\r\n\r\n"));
    cr_assert(f.message);
    cr_assert_eq(f.kind, REDIS_PUBSUB_PATTERN);
    cr_assert_eq(f.name_len, 2);
    cr_assert_eq(memcmp(f.name, "n*", 2), 0);
    f = parse_ok(S("*3\r\n$8\r\nsmessage\r\n$3\r\n{a}\r\n$1\r\nx\r\n"));
    cr_assert_eq(f.kind, REDIS_PUBSUB_SHARD);
    cr_assert(f.message);
    /* RESP3 pushes read alike; binary names too */
    f = parse_ok(S(">3\r\n$7\r\nmessage\r\n$3\r\na\0b\r\n$1\r\nm\r\n"));
    cr_assert(f.message);
    cr_assert_eq(f.name_len, 3);
    cr_assert_eq(memcmp(f.name, "a\0b", 3), 0);
}

Test(pubsub_frame, confirmations_say_which_and_of_what)
{
    static const struct {
        const char *in;
        size_t len;
        redis_pubsub_kind_t kind;
        bool subscribe;
    } cases[] = {
        {S("*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"), REDIS_PUBSUB_CHANNEL, true},
        {S("*3\r\n$10\r\npsubscribe\r\n$1\r\na\r\n:2\r\n"), REDIS_PUBSUB_PATTERN, true},
        {S("*3\r\n$10\r\nssubscribe\r\n$1\r\na\r\n:1\r\n"), REDIS_PUBSUB_SHARD, true},
        {S("*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"), REDIS_PUBSUB_CHANNEL, false},
        {S("*3\r\n$12\r\npunsubscribe\r\n$1\r\na\r\n:0\r\n"), REDIS_PUBSUB_PATTERN, false},
        {S(">3\r\n$12\r\nsunsubscribe\r\n$1\r\na\r\n:0\r\n"), REDIS_PUBSUB_SHARD, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        redis_pubsub_frame_t f = parse_ok(cases[i].in, cases[i].len);
        cr_assert_not(f.message, "%s", cases[i].in);
        cr_assert_eq(f.kind, cases[i].kind, "%s", cases[i].in);
        cr_assert_eq(f.subscribe, cases[i].subscribe, "%s", cases[i].in);
        cr_assert_eq(f.name_len, 1);
    }
}

Test(pubsub_frame, anything_else_is_nobodys)
{
    static const struct {
        const char *in;
        size_t len;
    } bad[] = {
        {S("+PONG\r\n")},
        {S("-ERR unknown command\r\n")},
        {S("*2\r\n$4\r\npong\r\n$0\r\n\r\n")},                           /* PING's pong */
        {S("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n")},                       /* one short */
        {S("*4\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nm\r\n$1\r\nx\r\n")}, /* one too many */
        {S("*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n$1\r\n1\r\n")},          /* count not integer */
        {S("*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n")},                /* nothing named */
        {S("*3\r\n$7\r\nMESSAGE\r\n$1\r\na\r\n$1\r\nm\r\n")},            /* case matters */
        {S("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nm\r\nextra")},       /* trailing bytes */
        {S("*3\r\n$7\r\nmessage\r\n$5\r\na\r\n$1\r\nm\r\n")},            /* bulk overruns */
        {S("%1\r\n$7\r\nmessage\r\n$1\r\na\r\n")},                       /* a map */
        {S("")},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        redis_pubsub_frame_t f;
        cr_assert_eq(redis_pubsub_parse(bad[i].in, bad[i].len, &f), MT_ERROR, "#%zu %.*s", i,
                     (int)bad[i].len, bad[i].in);
    }
}
