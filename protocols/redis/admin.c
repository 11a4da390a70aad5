/*
 * admin.c - the rules of admin.h: per command or subcommand, where it goes when a service has
 * several masters and how the replies merge, and why a refused command is refused.
 *
 * Only commands that stop, crash or re-role the server are refused by default (issue 10:
 * transparent for administration); whoever wants more refused says so in the RedisService
 * (settings.deniedCommands, a meltemi extension).
 */

#include "protocols/redis/admin.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define STOPS "it would stop the Redis server that every client of this proxy shares"
#define CRASHES "it would crash the Redis server that every client of this proxy shares"
#define REROLES                                                                                    \
    "it would change which server is the primary under every client of this proxy; run it on "     \
    "the servers themselves"
#define REPLICATION "a replica talks to its primary directly, not through a proxy"
#define DEDICATED "it needs a dedicated upstream connection"

#define R(n, k, m, why)                                                                            \
    {                                                                                              \
        n, REDIS_PROXY_##k, REDIS_MERGE_##m, 0, why                                                \
    }
#define KEYED(n, arg)                                                                              \
    {                                                                                              \
        n, REDIS_PROXY_BROADCAST, REDIS_MERGE_BY_KEY, arg, NULL                                    \
    }
#define REFUSED(n, why)                                                                            \
    {                                                                                              \
        n, REDIS_PROXY_UNSUPPORTED, REDIS_MERGE_ONE, 0, why                                        \
    }

static const redis_admin_rule_t rules[] = {
    /* CONFIG: parameters are per server; GET asks the first master (they are set alike
     * through the proxy), SET/RESETSTAT/REWRITE apply everywhere. */
    R("config|get", BROADCAST, FIRST, NULL),
    R("config|set", BROADCAST, ALL_OK, NULL),
    R("config|resetstat", BROADCAST, ALL_OK, NULL),
    R("config|rewrite", BROADCAST, ALL_OK, NULL),
    R("config|help", BROADCAST, ONE, NULL),
    /* DEBUG: what stops or crashes a server is refused; what names a key goes to its master;
     * every other word goes to every master (first reply). */
    REFUSED("debug|segfault", CRASHES),
    REFUSED("debug|panic", CRASHES),
    REFUSED("debug|assert", CRASHES),
    REFUSED("debug|oom", CRASHES),
    REFUSED("debug|crash-and-recover", CRASHES),
    REFUSED("debug|restart", STOPS),
    KEYED("debug|object", 2),
    KEYED("debug|sdslen", 2),
    KEYED("debug|listpack", 2),
    R("debug|quicklist-packed-threshold", BROADCAST, ALL_OK, NULL),
    KEYED("debug|digest-value", 2),
    KEYED("debug|htstats-key", 2),
    R("debug", BROADCAST, FIRST, "the words not listed below (SLEEP, RELOAD, ...)"),
    /* MEMORY */
    KEYED("memory|usage", 2),
    R("memory|purge", BROADCAST, ALL_OK, NULL),
    R("memory|doctor", BROADCAST, ONE, "one master's report"),
    R("memory|stats", BROADCAST, ONE, "one master's report"),
    R("memory|malloc-stats", BROADCAST, ONE, "one master's report"),
    R("memory|help", BROADCAST, ONE, NULL),
    /* LATENCY */
    R("latency|latest", BROADCAST, CONCAT, "every master's events, one after the other"),
    R("latency|history", BROADCAST, CONCAT, "every master's samples, one after the other"),
    R("latency|reset", BROADCAST, SUM, NULL),
    R("latency|doctor", BROADCAST, ONE, "one master's report"),
    R("latency|graph", BROADCAST, ONE, "one master's graph"),
    R("latency|histogram", BROADCAST, ONE, "one master's histograms"),
    R("latency|help", BROADCAST, ONE, NULL),
    /* SLOWLOG */
    R("slowlog|get", BROADCAST, CONCAT,
      "up to count entries from each master, master after "
      "master"),
    R("slowlog|len", BROADCAST, SUM, NULL),
    R("slowlog|reset", BROADCAST, ALL_OK, NULL),
    R("slowlog|help", BROADCAST, ONE, NULL),
    /* SCRIPT: a script loaded through the proxy is loaded everywhere, so EVALSHA works on
     * any shard. */
    R("script|load", BROADCAST, FIRST, "loaded on every master (the SHA1 is the same)"),
    R("script|flush", BROADCAST, ALL_OK, NULL),
    R("script|exists", BROADCAST, AND, "1 where the script is loaded on every master"),
    R("script|kill", BROADCAST, ANY_OK, "OK from the master that was running a script"),
    REFUSED("script|debug", "it puts the connection in the Lua debugger, and upstream "
                            "connections are shared"),
    R("script|help", BROADCAST, ONE, NULL),
    /* FUNCTION */
    R("function|load", BROADCAST, FIRST, "loaded on every master"),
    R("function|delete", BROADCAST, ALL_OK, NULL),
    R("function|flush", BROADCAST, ALL_OK, NULL),
    R("function|restore", BROADCAST, ALL_OK, NULL),
    R("function|kill", BROADCAST, ANY_OK, "OK from the master that was running a function"),
    R("function|list", BROADCAST, ONE,
      "one master's libraries (loaded alike through the "
      "proxy)"),
    R("function|dump", BROADCAST, ONE, "one master's libraries"),
    R("function|stats", BROADCAST, ONE, "one master's"),
    R("function|help", BROADCAST, ONE, NULL),
    /* persistence */
    R("bgsave", BROADCAST, FIRST, NULL),
    R("bgrewriteaof", BROADCAST, FIRST, NULL),
    R("save", BROADCAST, ALL_OK, NULL),
    /* the keyspace over several masters */
    R("dbsize", ALL_MASTERS, SUM, NULL),
    R("keys", ALL_MASTERS, CONCAT, NULL),
    R("flushall", ALL_MASTERS, ALL_OK, NULL),
    R("flushdb", ALL_MASTERS, ALL_OK, NULL),
    R("randomkey", ALL_MASTERS, ANY_KEY, "a key of the first master that has one"),
    R("scan", ALL_MASTERS, SCAN, "one master after the other; the cursor says which"),
    /* refused by default, and why */
    REFUSED("shutdown", STOPS),
    REFUSED("failover", REROLES),
    REFUSED("replicaof", REROLES),
    REFUSED("slaveof", REROLES),
    REFUSED("sync", REPLICATION),
    REFUSED("psync", REPLICATION),
    REFUSED("replconf", REPLICATION),
    REFUSED("reset", "it would reset (and de-authenticate) an upstream connection other clients "
                     "share"),
    REFUSED("asking", "redirections are followed by the proxy"),
    REFUSED("monitor", DEDICATED),
    REFUSED("wait", "it counts the replicas that acknowledged this connection's writes, and "
                    "through the proxy a client's writes travel on shared connections: the "
                    "answer would not be about them"),
};

const redis_admin_rule_t *redis_admin_rules(size_t *count)
{
    *count = sizeof(rules) / sizeof(rules[0]);
    return rules;
}

/* rule->name == "<cmd>|<sub>" (sub compared case-insensitively) */
static bool rule_is_sub(const redis_admin_rule_t *rule, const redis_command_t *cmd,
                        const resp_arg_t *sub)
{
    size_t n = cmd->name_len;
    return strncmp(rule->name, cmd->name, n) == 0 && rule->name[n] == '|' &&
           strlen(rule->name + n + 1) == sub->len &&
           strncasecmp(rule->name + n + 1, sub->ptr, sub->len) == 0;
}

const redis_admin_rule_t *redis_admin_rule(const redis_command_t *cmd, uint32_t argc,
                                           const resp_arg_t *argv)
{
    const redis_admin_rule_t *whole = NULL;
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        const redis_admin_rule_t *r = &rules[i];
        if (argc >= 2 && rule_is_sub(r, cmd, &argv[1]))
            return r;
        if (!whole && strcmp(r->name, cmd->name) == 0)
            whole = r;
    }
    return whole;
}

const char *redis_merge_describe(redis_merge_t m)
{
    switch (m) {
    case REDIS_MERGE_ONE:
        return "one master answers";
    case REDIS_MERGE_ALL_OK:
        return "every master; OK when all say OK, else the first error";
    case REDIS_MERGE_FIRST:
        return "every master; the first master's reply, or the first error";
    case REDIS_MERGE_SUM:
        return "every master; the integers summed";
    case REDIS_MERGE_CONCAT:
        return "every master; the arrays concatenated";
    case REDIS_MERGE_AND:
        return "every master; element by element, 1 only where all say 1";
    case REDIS_MERGE_ANY_OK:
        return "every master; the first reply that is not an error, else the first error";
    case REDIS_MERGE_ANY_KEY:
        return "every master; the first reply that is not nil";
    case REDIS_MERGE_BY_KEY:
        return "the master of the key";
    case REDIS_MERGE_SCAN:
        return "one master per call, in turn";
    }
    return "?";
}
