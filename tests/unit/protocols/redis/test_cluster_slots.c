/*
 * test_cluster_slots.c - protocols/redis/cluster_slots.c: CLUSTER SLOTS replies as Redis 7
 * sends them (masters, replicas, node ids and networking metadata, "?" and empty hosts), and the
 * malformed ones that must be refused without reading past the reply.
 */
#include "protocols/redis/cluster_slots.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#define S(lit) lit, sizeof(lit) - 1

/* Parses a copy in a buffer of exactly len bytes, so ASan sees any read past the reply. */
static mt_status_t parse(const char *p, size_t len, redis_cluster_slots_t *cs, const char **why)
{
    char *copy = malloc(len ? len : 1);
    cr_assert_not_null(copy);
    memcpy(copy, p, len);
    mt_status_t rc = redis_cluster_slots_parse(copy, len, cs, why);
    if (rc == MT_OK) { /* hosts point into the reply: compare them before it goes */
        for (uint32_t i = 0; i < cs->n_nodes; i++) {
            if (cs->nodes[i].host)
                cs->nodes[i].host = strndup(cs->nodes[i].host, cs->nodes[i].host_len);
        }
    }
    free(copy);
    return rc;
}

static void release(redis_cluster_slots_t *cs)
{
    for (uint32_t i = 0; i < cs->n_nodes; i++)
        free((char *)cs->nodes[i].host);
    redis_cluster_slots_free(cs);
}

static const char THREE_MASTERS[] =
    "*3\r\n"
    "*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$40\r\n"
    "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca\r\n"
    "*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$2\r\nid\r\n"
    "*3\r\n:5461\r\n:10922\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n*2\r\n$8\r\n"
    "hostname\r\n$4\r\nnode\r\n"
    "*3\r\n:10923\r\n:16383\r\n*2\r\n$0\r\n\r\n:7002\r\n";

Test(cluster_slots, ranges_masters_and_replicas_in_reply_order)
{
    redis_cluster_slots_t cs;
    const char *why = NULL;
    cr_assert_eq(parse(S(THREE_MASTERS), &cs, &why), MT_OK, "%s", why ? why : "");
    cr_assert_eq(cs.n_ranges, 3);
    cr_assert_eq(cs.n_nodes, 4);
    cr_expect_eq(cs.ranges[0].first, 0);
    cr_expect_eq(cs.ranges[0].last, 5460);
    cr_expect_eq(cs.ranges[0].n_nodes, 2);
    cr_expect_str_eq(cs.nodes[cs.ranges[0].node].host, "127.0.0.1");
    cr_expect_eq(cs.nodes[cs.ranges[0].node].port, 7000);
    cr_expect_eq(cs.nodes[cs.ranges[0].node + 1].port, 7003, "the replica follows its master");
    cr_expect_eq(cs.ranges[1].first, 5461);
    cr_expect_eq(cs.ranges[1].n_nodes, 1);
    cr_expect_eq(cs.nodes[cs.ranges[1].node].port, 7001,
                 "metadata (RESP2: a flat array) after the id skipped");
    cr_expect_eq(cs.ranges[2].last, 16383);
    cr_expect_null(cs.nodes[cs.ranges[2].node].host, "an empty host is the node asked");
    cr_expect_eq(cs.nodes[cs.ranges[2].node].port, 7002);
    release(&cs);
}

Test(cluster_slots, question_mark_and_null_hosts_mean_the_node_asked)
{
    static const char r[] = "*2\r\n*3\r\n:0\r\n:100\r\n*2\r\n$1\r\n?\r\n:6379\r\n"
                            "*3\r\n:101\r\n:16383\r\n*2\r\n$-1\r\n:6380\r\n";
    redis_cluster_slots_t cs;
    const char *why = NULL;
    cr_assert_eq(parse(S(r), &cs, &why), MT_OK, "%s", why ? why : "");
    cr_expect_null(cs.nodes[0].host);
    cr_expect_null(cs.nodes[1].host);
    cr_expect_eq(cs.nodes[1].port, 6380);
    release(&cs);
}

Test(cluster_slots, malformed_replies_are_refused_with_a_reason)
{
    static const struct {
        const char *reply;
        const char *why;
    } cases[] = {
        {"-CLUSTERDOWN Hash slot not served\r\n", "an error reply"},
        {"+OK\r\n", "not an array"},
        {"*0\r\n", "no slot is served"},
        {"*1\r\n*2\r\n:0\r\n:10\r\n", "a range is not [start, end, master, ...]"},
        {"*1\r\n*3\r\n:10\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n", "a slot range is out of bounds"},
        {"*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n", "a slot range is out of bounds"},
        {"*1\r\n*3\r\n:-1\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n", "a slot range is out of bounds"},
        {"*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:0\r\n", "a node is not [host, port, ...]"},
        {"*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:65536\r\n", "a node is not [host, port, ...]"},
        {"*1\r\n*3\r\n:0\r\n:5\r\n*1\r\n$1\r\na\r\n", "a node is not [host, port, ...]"},
        {"*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$5\r\na\r\n:1\r\n", "a node is not [host, port, ...]"},
        {"*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\na\r\n:1\r\n+x\r\n", "bytes after the reply"},
        {"*99999999\r\n", "not an array"},
        {"*1\r\n*3\r\n:0\r\n:5\r\n*9999\r\n$1\r\na\r\n:1\r\n", "a node is not [host, port, ...]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        redis_cluster_slots_t cs;
        const char *why = NULL;
        cr_expect_eq(parse(cases[i].reply, strlen(cases[i].reply), &cs, &why), MT_ERROR,
                     "case %zu accepted", i);
        cr_expect_str_eq(why ? why : "(none)", cases[i].why, "case %zu", i);
        cr_expect_eq(cs.n_ranges, 0, "case %zu keeps nothing", i);
        cr_expect_null(cs.ranges);
    }
}

Test(cluster_slots, every_truncation_of_a_good_reply_is_refused)
{
    size_t len = sizeof(THREE_MASTERS) - 1;
    for (size_t cut = 0; cut < len; cut++) {
        redis_cluster_slots_t cs;
        const char *why = NULL;
        cr_expect_eq(parse(THREE_MASTERS, cut, &cs, &why), MT_ERROR, "prefix of %zu bytes", cut);
    }
}
