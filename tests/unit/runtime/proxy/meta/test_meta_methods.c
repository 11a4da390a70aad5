/*
 * test_meta_methods.c - the bounded per-method counts (runtime/proxy/meta/meta_methods.c):
 * the first MT_META_METHODS_MAX names get blocks of their own, every later one "other"; a
 * name is the same block from any thread; listeners keep tables apart; long names are cut.
 */
#include <criterion/criterion.h>

#include "runtime/proxy/meta/meta_methods.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static mt_stats_block_t *block(mt_meta_methods_t *t, const char *iface, const char *method)
{
    return mt_meta_methods_block(t, iface, iface ? strlen(iface) : 0, method, strlen(method));
}

Test(meta_methods, first_names_by_name_then_other)
{
    mt_meta_methods_t *t = mt_meta_methods_for("test-listener-a");
    cr_assert_not_null(t);
    cr_assert_eq(mt_meta_methods_for("test-listener-a"), t, "one table per listener name");
    mt_stats_block_t *hello = block(t, "svc.Hello", "sayHello");
    cr_assert_not_null(hello);
    cr_assert_eq(block(t, "svc.Hello", "sayHello"), hello);
    cr_assert_neq(block(t, NULL, "sayHello"), hello, "the interface is part of the name");
    cr_assert(strstr(hello->labels, "method=\"svc.Hello.sayHello\"") != NULL, "%s", hello->labels);
    char name[16];
    for (int i = 0; mt_meta_methods_count(t) < MT_META_METHODS_MAX; i++) {
        snprintf(name, sizeof(name), "m%d", i);
        block(t, NULL, name);
    }
    mt_stats_block_t *other = block(t, NULL, "one-too-many");
    cr_assert(strstr(other->labels, "method=\"other\"") != NULL, "%s", other->labels);
    cr_assert_eq(block(t, NULL, "another-one"), other);
    cr_assert_eq(mt_meta_methods_count(t), MT_META_METHODS_MAX, "the bound holds");
    cr_assert_eq(block(t, "svc.Hello", "sayHello"), hello, "names taken keep their blocks");
    mt_meta_methods_t *b = mt_meta_methods_for("test-listener-b");
    cr_assert_neq(block(b, NULL, "one-too-many"), other, "another listener has room");
}

Test(meta_methods, long_names_are_cut)
{
    mt_meta_methods_t *t = mt_meta_methods_for("test-listener-c");
    char iface[300], method[300];
    memset(iface, 'i', sizeof(iface));
    memset(method, 'm', sizeof(method));
    mt_stats_block_t *x = mt_meta_methods_block(t, iface, sizeof(iface), method, sizeof(method));
    /* the same first 120 + 80 bytes: the same name */
    cr_assert_eq(mt_meta_methods_block(t, iface, 200, method, 100), x);
    cr_assert_eq(mt_meta_methods_count(t), 1);
}

typedef struct racer {
    mt_meta_methods_t *t;
    mt_stats_block_t *seen[64];
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    char name[16];
    for (int i = 0; i < 64; i++) {
        snprintf(name, sizeof(name), "r%d", i);
        r->seen[i] = mt_meta_methods_block(r->t, NULL, 0, name, strlen(name));
    }
    return NULL;
}

Test(meta_methods, threads_agree_on_blocks_and_the_bound)
{
    racer_t a = {mt_meta_methods_for("test-listener-d"), {0}}, b = a;
    pthread_t ta, tb;
    pthread_create(&ta, NULL, race, &a);
    pthread_create(&tb, NULL, race, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    cr_assert_eq(mt_meta_methods_count(a.t), MT_META_METHODS_MAX);
    for (int i = 0; i < 64; i++)
        cr_assert_eq(a.seen[i], b.seen[i], "name r%d: one block for both threads", i);
}

static mt_stats_block_t *cached(mt_meta_methods_t *t, mt_meta_methods_cache_t *c, const char *iface,
                                const char *method)
{
    return mt_meta_methods_block_cached(t, c, iface, iface ? strlen(iface) : 0, method,
                                        strlen(method));
}

/* A session's kept name answers only for the same table and the same name: lengths and
 * bytes of both parts, cut as the table cuts them; "other" is never kept. */
Test(meta_methods, cached_answers_as_the_table_does)
{
    mt_meta_methods_t *t = mt_meta_methods_for("test-listener-e");
    mt_meta_methods_t *u = mt_meta_methods_for("test-listener-f");
    mt_meta_methods_cache_t c = {0};
    mt_stats_block_t *hello = cached(t, &c, "svc.Hello", "sayHello");
    cr_assert_eq(hello, block(t, "svc.Hello", "sayHello"));
    cr_assert_eq(cached(t, &c, "svc.Hello", "sayHello"), hello);
    cr_assert_not_null(c.entry, "a name of the table's own is kept (once it was taken)");
    cr_assert_eq(cached(t, &c, "svc.Hello", "sayHello"), hello);
    cr_assert_eq(cached(t, &c, "svc.Hello", "sayHellp"), block(t, "svc.Hello", "sayHellp"));
    cr_assert_neq(cached(t, &c, "svc.Hello", "sayHello"), block(t, "svc.Hello", "sayHellp"));
    cr_assert_eq(cached(t, &c, "svc.Hell", "osayHello"), block(t, "svc.Hell", "osayHello"),
                 "where the parts split is part of the name");
    cr_assert_neq(cached(t, &c, "svc.Hell", "osayHello"), hello);
    cr_assert_eq(cached(t, &c, NULL, "sayHello"), block(t, NULL, "sayHello"));
    cr_assert_eq(cached(u, &c, "svc.Hello", "sayHello"), block(u, "svc.Hello", "sayHello"),
                 "another table's name is not taken for this one's");
    cr_assert_neq(cached(u, &c, "svc.Hello", "sayHello"), hello);
    char iface[300], method[300];
    memset(iface, 'i', sizeof(iface));
    memset(method, 'm', sizeof(method));
    mt_stats_block_t *x = mt_meta_methods_block_cached(t, &c, iface, sizeof(iface), method, 250);
    cr_assert_eq(mt_meta_methods_block_cached(t, &c, iface, 200, method, 100), x, "cut alike");
    char name[16];
    for (int i = 0; mt_meta_methods_count(t) < MT_META_METHODS_MAX; i++) {
        snprintf(name, sizeof(name), "m%d", i);
        cached(t, &c, NULL, name);
    }
    mt_meta_methods_cache_t d = {0};
    mt_stats_block_t *other = cached(t, &d, NULL, "one-too-many");
    cr_assert(strstr(other->labels, "method=\"other\"") != NULL, "%s", other->labels);
    cr_assert_null(d.entry, "\"other\" is not kept");
    cr_assert_eq(cached(t, &d, "svc.Hello", "sayHello"), hello);
}
