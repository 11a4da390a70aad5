/*
 * test_sentinel_reply.c - protocols/redis/sentinel_reply.c: what Redis Sentinel 7 answers to
 * SENTINEL GET-MASTER-ADDR-BY-NAME and SENTINEL REPLICAS, its +switch-master messages, and the
 * malformed or foreign ones that must be refused or ignored.
 */
#include "protocols/redis/sentinel_reply.h"

#include <criterion/criterion.h>
#include <string.h>

#define S(lit) lit, sizeof(lit) - 1

static bool host_is(const redis_sentinel_addr_t *a, const char *want)
{
    return a->host_len == strlen(want) && memcmp(a->host, want, a->host_len) == 0;
}

Test(sentinel_reply, master_address)
{
    redis_sentinel_addr_t a;
    cr_assert(redis_sentinel_master_reply(S("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n"), &a));
    cr_assert(host_is(&a, "127.0.0.1"));
    cr_assert_eq(a.port, 6380);
}

Test(sentinel_reply, unknown_master_errors_and_bad_ports_are_refused)
{
    redis_sentinel_addr_t a;
    cr_assert_not(redis_sentinel_master_reply(S("*-1\r\n"), &a)); /* no such master */
    cr_assert_not(redis_sentinel_master_reply(S("-NOAUTH Authentication required.\r\n"), &a));
    cr_assert_not(redis_sentinel_master_reply(S("*2\r\n$9\r\n127.0.0.1\r\n$5\r\n70000\r\n"), &a));
    cr_assert_not(redis_sentinel_master_reply(S("*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n"), &a));
    cr_assert_not(redis_sentinel_master_reply(S("*2\r\n$0\r\n\r\n$4\r\n6379\r\n"), &a));
    cr_assert_not(redis_sentinel_master_reply(S("*1\r\n$9\r\n127.0.0.1\r\n"), &a));
    cr_assert_not(redis_sentinel_master_reply(S("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n63"), &a));
}

Test(sentinel_reply, replicas_that_are_down_are_left_out)
{
    const char r[] = "*3\r\n"
                     "*6\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n$4\r\n6380\r\n"
                     "$5\r\nflags\r\n$5\r\nslave\r\n"
                     "*6\r\n$2\r\nip\r\n$8\r\n10.0.0.2\r\n$4\r\nport\r\n$4\r\n6381\r\n"
                     "$5\r\nflags\r\n$12\r\nslave,s_down\r\n"
                     "*8\r\n$4\r\nname\r\n$13\r\n10.0.0.3:6382\r\n$2\r\nip\r\n$8\r\n10.0.0.3\r\n"
                     "$4\r\nport\r\n$4\r\n6382\r\n$5\r\nflags\r\n$18\r\nslave,disconnected\r\n";
    redis_sentinel_addr_t out[4];
    cr_assert_eq(redis_sentinel_replicas_reply(r, sizeof(r) - 1, out, 4), 1);
    cr_assert(host_is(&out[0], "127.0.0.1"));
    cr_assert_eq(out[0].port, 6380);
    cr_assert_eq(redis_sentinel_replicas_reply(S("*0\r\n"), out, 4), 0);
    cr_assert_eq(redis_sentinel_replicas_reply(S("-ERR No such master with that name\r\n"), out, 4),
                 -1);
    cr_assert_eq(redis_sentinel_replicas_reply(S("*1\r\n*2\r\n$2\r\nip\r\n:5\r\n"), out, 4), -1);
}

Test(sentinel_reply, switch_master_for_our_master_only)
{
    const char frame[] = "*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n"
                         "$38\r\nmymaster 127.0.0.1 6379 127.0.0.1 6380\r\n";
    const char *kind = NULL, *msg = NULL;
    size_t klen = 0, mlen = 0;
    cr_assert(redis_sentinel_pubsub(frame, sizeof(frame) - 1, &kind, &klen, &msg, &mlen));
    cr_assert_eq(klen, 7);
    cr_assert_eq(mlen, 38);
    redis_sentinel_addr_t a;
    cr_assert_eq(redis_sentinel_switch_master(msg, mlen, S("mymaster"), &a), 1);
    cr_assert(host_is(&a, "127.0.0.1"));
    cr_assert_eq(a.port, 6380);
    cr_assert_eq(redis_sentinel_switch_master(msg, mlen, S("mymaste"), &a), 0); /* a prefix */
    cr_assert_eq(redis_sentinel_switch_master(S("other 1.1.1.1 1 2.2.2.2 2"), S("mymaster"), &a),
                 0);
    cr_assert_eq(redis_sentinel_switch_master(S("mymaster 1.1.1.1 1 2.2.2.2"), S("mymaster"), &a),
                 -1);
    cr_assert_eq(redis_sentinel_switch_master(S("mymaster 1.1.1.1 1 2.2.2.2 x"), S("mymaster"), &a),
                 -1);
}

Test(sentinel_reply, subscribe_confirmation_has_no_payload)
{
    const char *kind = NULL, *msg = NULL;
    size_t klen = 0, mlen = 0;
    cr_assert(redis_sentinel_pubsub(S("*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n"),
                                    &kind, &klen, &msg, &mlen));
    cr_assert_eq(klen, 9);
    cr_assert_null(msg);
    cr_assert_not(redis_sentinel_pubsub(S("+PONG\r\n"), &kind, &klen, &msg, &mlen));
}
