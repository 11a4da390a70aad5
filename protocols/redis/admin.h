/*
 * admin.h - how meltemi carries out the administration commands (REDIS_PROXY_BROADCAST:
 * CONFIG, DEBUG, MEMORY, LATENCY, SLOWLOG, SCRIPT, FUNCTION, BGSAVE, BGREWRITEAOF, SAVE), the
 * multi-master ones (REDIS_PROXY_ALL_MASTERS: FLUSHALL, DBSIZE, KEYS...), and why the refused
 * ones (REDIS_PROXY_UNSUPPORTED) are refused.
 *
 * A service with one master gets every such command as it is: the one endpoint answers. Where
 * there are several masters (Redis Cluster mode, PROXY mode with several endpoints) a rule
 * says, per subcommand, whether the command goes to every master and how their replies merge
 * into one (as Redis Cluster proxies do), goes to the master of a key, or to one master only.
 * The rules are data, read by the data path and by the generator of docs/redis-commands.md
 * (tools/redis_commands_doc.c), so the documentation is the behaviour.
 */
#ifndef MELTEMI_REDIS_ADMIN_H
#define MELTEMI_REDIS_ADMIN_H

#include "protocols/redis/commands.h"

#include <stddef.h>
#include <stdint.h>

/* How the replies of every master become the client's one reply. */
typedef enum redis_merge {
    REDIS_MERGE_ONE = 0, /* not fanned out: one master answers (the first of the map) */
    REDIS_MERGE_ALL_OK,  /* +OK when every master says OK, else the first error */
    REDIS_MERGE_FIRST,   /* every master answers alike (CONFIG GET, SCRIPT LOAD): the first
                            master's reply, or the first error */
    REDIS_MERGE_SUM,     /* integers summed (DBSIZE, SLOWLOG LEN, LATENCY RESET) */
    REDIS_MERGE_CONCAT,  /* arrays concatenated (KEYS, SLOWLOG GET, LATENCY LATEST) */
    REDIS_MERGE_AND,     /* arrays of 0/1, element by element: 1 where every master says 1
                            (SCRIPT EXISTS: loaded everywhere) */
    REDIS_MERGE_ANY_OK,  /* the first non-error reply, else the first error (SCRIPT KILL: only
                            the master running a script can kill it) */
    REDIS_MERGE_ANY_KEY, /* RANDOMKEY: the first non-nil reply */
    REDIS_MERGE_BY_KEY,  /* not fanned out: to the master of the key at argv[key_arg] */
    REDIS_MERGE_SCAN,    /* SCAN: one master at a time, the cursor says which */
} redis_merge_t;

typedef struct redis_admin_rule {
    const char *name; /* "config|get"; DEBUG's words, which Redis does not list: "debug|object" */
    uint8_t kind;     /* redis_proxy_kind_t for this invocation */
    uint8_t merge;    /* redis_merge_t, where there are several masters */
    uint8_t key_arg;  /* REDIS_MERGE_BY_KEY: argv index of the key */
    const char *why;  /* refused: why (the error says it); else a note for the docs, or NULL */
} redis_admin_rule_t;

/*
 * The rule for this invocation of a BROADCAST, ALL_MASTERS or UNSUPPORTED command: its
 * subcommand's (argv[1], case-insensitive) if there is one, else the command's. NULL when the
 * command has no rule (a BROADCAST command's unknown subcommand: send it to one master, whose
 * error the client gets). No allocation.
 */
const redis_admin_rule_t *redis_admin_rule(const redis_command_t *cmd, uint32_t argc,
                                           const resp_arg_t *argv);
/* Every rule, in table order (for the docs). */
const redis_admin_rule_t *redis_admin_rules(size_t *count);
/* One line on what a merge does, for the docs. */
const char *redis_merge_describe(redis_merge_t m);

#endif
