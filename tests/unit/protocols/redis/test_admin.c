/*
 * test_admin.c - the administration rules (protocols/redis/admin.c): which subcommand goes
 * where over several masters, how replies merge, and what is refused by default and why.
 */
#include "protocols/redis/admin.h"

#include <criterion/criterion.h>
#include <string.h>

static const redis_admin_rule_t *rule_of(const char *name, const char *sub)
{
    const redis_command_t *cmd = redis_command_lookup(name, strlen(name));
    cr_assert_not_null(cmd, "%s", name);
    resp_arg_t argv[2] = {{name, strlen(name)}, {sub ? sub : "", sub ? strlen(sub) : 0}};
    return redis_admin_rule(cmd, sub ? 2 : 1, argv);
}

Test(admin, config_subcommands_merge_as_documented)
{
    cr_assert_eq(rule_of("config", "GET")->merge, REDIS_MERGE_FIRST);
    cr_assert_eq(rule_of("config", "set")->merge, REDIS_MERGE_ALL_OK);
    cr_assert_eq(rule_of("CONFIG", "ResetStat")->merge, REDIS_MERGE_ALL_OK);
    cr_assert_eq(rule_of("config", "set")->kind, REDIS_PROXY_BROADCAST);
    /* an unknown subcommand has no rule: one master answers (with its error) */
    cr_assert_null(rule_of("config", "nosuch"));
}

Test(admin, debug_words_that_crash_a_server_are_refused_with_why)
{
    const char *crash[] = {"segfault", "PANIC", "assert", "oom", "crash-and-recover", "restart"};
    for (size_t i = 0; i < sizeof(crash) / sizeof(crash[0]); i++) {
        const redis_admin_rule_t *r = rule_of("debug", crash[i]);
        cr_assert_eq(r->kind, REDIS_PROXY_UNSUPPORTED, "%s", crash[i]);
        cr_assert_not_null(r->why);
    }
    /* other words fall back to DEBUG's own rule: every master */
    const redis_admin_rule_t *sleep = rule_of("debug", "sleep");
    cr_assert_str_eq(sleep->name, "debug");
    cr_assert_eq(sleep->kind, REDIS_PROXY_BROADCAST);
    const redis_admin_rule_t *obj = rule_of("debug", "object");
    cr_assert_eq(obj->merge, REDIS_MERGE_BY_KEY);
    cr_assert_eq(obj->key_arg, 2);
}

Test(admin, server_stopping_commands_are_refused_and_say_why)
{
    const char *names[] = {"shutdown", "failover", "replicaof", "slaveof"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const redis_admin_rule_t *r = rule_of(names[i], NULL);
        cr_assert_eq(r->kind, REDIS_PROXY_UNSUPPORTED, "%s", names[i]);
        cr_assert(strstr(r->why, "every client of this proxy") != NULL, "%s", names[i]);
    }
}

Test(admin, scripts_and_the_keyspace)
{
    cr_assert_eq(rule_of("script", "exists")->merge, REDIS_MERGE_AND);
    cr_assert_eq(rule_of("script", "kill")->merge, REDIS_MERGE_ANY_OK);
    cr_assert_eq(rule_of("script", "debug")->kind, REDIS_PROXY_UNSUPPORTED);
    cr_assert_eq(rule_of("dbsize", NULL)->merge, REDIS_MERGE_SUM);
    cr_assert_eq(rule_of("slowlog", "len")->merge, REDIS_MERGE_SUM);
    cr_assert_eq(rule_of("scan", "0")->merge, REDIS_MERGE_SCAN);
}

Test(admin, every_rule_names_a_known_command_of_its_kind)
{
    size_t n = 0;
    const redis_admin_rule_t *rules = redis_admin_rules(&n);
    cr_assert_gt(n, 0);
    for (size_t i = 0; i < n; i++) {
        const char *bar = strchr(rules[i].name, '|');
        size_t len = bar ? (size_t)(bar - rules[i].name) : strlen(rules[i].name);
        const redis_command_t *cmd = redis_command_lookup(rules[i].name, len);
        cr_assert_not_null(cmd, "%s", rules[i].name);
        /* the table sends the command to the rules: BROADCAST, ALL_MASTERS or UNSUPPORTED */
        cr_assert(cmd->proxy == REDIS_PROXY_BROADCAST || cmd->proxy == REDIS_PROXY_ALL_MASTERS ||
                      cmd->proxy == REDIS_PROXY_UNSUPPORTED,
                  "%s", rules[i].name);
        /* a subcommand Redis lists must exist (DEBUG's words are not listed) */
        if (bar && cmd->sub_count)
            cr_assert_not_null(redis_command_lookup_fullname(rules[i].name, strlen(rules[i].name)),
                               "%s", rules[i].name);
        if (rules[i].kind == REDIS_PROXY_UNSUPPORTED)
            cr_assert_not_null(rules[i].why, "%s", rules[i].name);
    }
}
