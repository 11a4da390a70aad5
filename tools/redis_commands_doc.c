/*
 * redis_commands_doc.c - writes docs/redis-commands.md from the command table meltemi runs
 * (protocols/redis/commands_table.c) and the administration rules (protocols/redis/admin.c),
 * so the page says what the code does.
 *
 *   redis_commands_doc                 print the page
 *   redis_commands_doc --check FILE    exit 1 (saying how to regenerate) if FILE differs
 *   redis_commands_doc --lua [--check FILE]   the same for lua/meltemi/redis/command_names.lua
 *
 * ctest runs the check (redis_commands_doc_fresh); `make docs` rewrites the page.
 */
#include "protocols/redis/admin.h"
#include "protocols/redis/commands.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct page {
    char *data;
    size_t len, cap;
} page_t;

static void out(page_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(page_t *p, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(p->data + p->len, p->cap - p->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            exit(2);
        if ((size_t)n < p->cap - p->len) {
            p->len += (size_t)n;
            return;
        }
        p->cap = p->cap * 2 + (size_t)n + 1;
        p->data = realloc(p->data, p->cap);
        if (!p->data)
            exit(2);
    }
}

/* Why a locally answered command is local (the page's third column). */
static const char *local_note(const char *name)
{
    static const char *const notes[][2] = {
        {"ping", "answered by the proxy"},
        {"echo", "answered by the proxy"},
        {"auth", "clients authenticate to the proxy (RedisService settings.auth); the proxy "
                 "authenticates to Redis with the RedisDestination's credentials"},
        {"hello", "RESP2 only; AUTH and SETNAME as AUTH and CLIENT SETNAME"},
        {"quit", "closes the client's connection once its replies are written"},
        {"select", "0 answered here; another database (PROXY mode, one master) on a connection "
                   "leased for the client, selected again after a reconnect "
                   "(docs/redis-codec.md#databases-select); cluster mode: 0 only"},
        {"client", "the client's connection is to the proxy: SETNAME, GETNAME, ID, INFO, "
                   "SETINFO answered; NO-EVICT and NO-TOUCH ON (PROXY mode, one master) on a "
                   "connection leased for the client and kept while a flag is on, set again "
                   "after a reconnect, like SELECT (on the shared connection they would hold "
                   "for every client); OFF with nothing set answered here; several masters: "
                   "an error"},
        {"command", "the proxy's own table (Redis 7.0.15's); DOCS: Redis's, from one master, "
                    "kept to the commands COMMAND lists"},
        {"info", "the proxy's own sections"},
        {"readonly", "replica reads follow the RedisService's readPolicy"},
        {"readwrite", "replica reads follow the RedisService's readPolicy"},
    };
    for (size_t i = 0; i < sizeof(notes) / sizeof(notes[0]); i++) {
        if (strcmp(notes[i][0], name) == 0)
            return notes[i][1];
    }
    return "answered by the proxy";
}

static const char *forward_note(const redis_command_t *cmd)
{
    if (cmd->flags & REDIS_CMD_BLOCKING)
        return "by key; with BLOCK on a connection leased for it until it answers, like BLPOP";
    if (strcmp(cmd->name, "publish") == 0)
        return "PROXY mode: to the endpoint its channel lives on (where the subscriptions are, "
               "docs/redis-pubsub.md); cluster mode: to a node (Redis Cluster delivers it on "
               "every node)";
    if (cmd->first_key > 0 || cmd->key_spec_count > 0)
        return "to the endpoint (PROXY mode) or slot master (cluster mode) of its first key";
    if (cmd->sub_count)
        return "to one endpoint or node; a keyed subcommand follows MOVED in cluster mode";
    return "to one endpoint (round robin) or node";
}

static void upper(const char *s, char *dst, size_t n)
{
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++)
        dst[i] = ('a' <= s[i] && s[i] <= 'z') ? (char)(s[i] - 32) : s[i];
    dst[i] = '\0';
}

static void rule_row(page_t *p, const redis_admin_rule_t *r)
{
    char name[64];
    upper(r->name, name, sizeof(name));
    for (char *c = name; *c; c++)
        *c = *c == '|' ? ' ' : *c;
    if (r->kind == REDIS_PROXY_UNSUPPORTED) {
        out(p, "| `%s` | refused | %s |\n", name, r->why);
        return;
    }
    const char *how = r->merge == REDIS_MERGE_BY_KEY ? "by key"
                      : r->merge == REDIS_MERGE_ONE  ? "one master"
                                                     : "broadcast";
    out(p, "| `%s` | %s | %s%s%s |\n", name, how, redis_merge_describe((redis_merge_t)r->merge),
        r->why ? "; " : "", r->why ? r->why : "");
}

static void command_row(page_t *p, const redis_command_t *cmd)
{
    char name[64];
    upper(cmd->name, name, sizeof(name));
    switch ((redis_proxy_kind_t)cmd->proxy) {
    case REDIS_PROXY_FORWARD:
        out(p, "| `%s` | proxied | %s |\n", name, forward_note(cmd));
        break;
    case REDIS_PROXY_LOCAL:
        out(p, "| `%s` | local | %s |\n", name, local_note(cmd->name));
        break;
    case REDIS_PROXY_MULTI_KEY:
        out(p,
            "| `%s` | split | cluster mode: one part per slot, the replies merged in the "
            "client's key order; PROXY mode: to the endpoint of its first key |\n",
            name);
        break;
    case REDIS_PROXY_ALL_MASTERS:
    case REDIS_PROXY_BROADCAST: {
        resp_arg_t argv[1] = {{cmd->name, cmd->name_len}};
        const redis_admin_rule_t *r = redis_admin_rule(cmd, 1, argv);
        if (r && !cmd->sub_count) {
            rule_row(p, r);
        } else {
            out(p,
                "| `%s` | broadcast | one endpoint when the service has one master; with "
                "several, per subcommand (below) |\n",
                name);
        }
        break;
    }
    case REDIS_PROXY_TRANSACTION:
        out(p, "| `%s` | leased | %s |\n", name,
            strcmp(cmd->name, "multi") == 0
                ? "on a connection leased for the client until EXEC or DISCARD (bounded by "
                  "maxConnections); every key of the transaction in one slot (else CROSSSLOT) "
                  "or on one endpoint; a transaction written whole (MULTI ... EXEC in one "
                  "read, keyed data commands only, one master, no WATCH) goes back to back on "
                  "the shared connection instead (docs/redis-codec.md#transactions)"
            : strcmp(cmd->name, "watch") == 0
                ? "leases the connection of its keys' master, kept until EXEC, DISCARD or "
                  "UNWATCH"
                : "ends the transaction; the lease goes back once its reply is in");
        break;
    case REDIS_PROXY_PUBSUB:
        out(p,
            "| `%s` | subscription | one upstream subscription per %s per worker, on a "
            "dedicated connection, fanned out to every subscribed client; re-subscribed after "
            "a reconnect or failover (docs/redis-pubsub.md) |\n",
            name,
            cmd->name[0] == 'p' ? "pattern"
            : strncmp(cmd->name, "ss", 2) == 0 || strncmp(cmd->name, "sun", 3) == 0
                ? "shard channel (on its slot's master)"
                : "channel");
        break;
    case REDIS_PROXY_BLOCKING:
        out(p,
            "| `%s` | leased | on a connection leased for this command until it answers "
            "(bounded by maxConnections: at the bound an error at once); its timeout is "
            "Redis's; a client that disconnects closes the lease |\n",
            name);
        break;
    case REDIS_PROXY_UNSUPPORTED: {
        resp_arg_t argv[1] = {{cmd->name, cmd->name_len}};
        const redis_admin_rule_t *r = redis_admin_rule(cmd, 1, argv);
        if (strcmp(cmd->name, "cluster") == 0)
            out(p,
                "| `%s` | local / proxied / refused | SLOTS, SHARDS, NODES, INFO, MYID, KEYSLOT: "
                "answered by the proxy as a one-node cluster at its own address "
                "(docs/redis-cluster.md#cluster-aware-clients); COUNTKEYSINSLOT, GETKEYSINSLOT: "
                "the slot's master (cluster mode); the rest refused |\n",
                name);
        else
            out(p, "| `%s` | refused | %s |\n", name,
                r && r->why ? r->why : "it needs a dedicated upstream connection (not yet)");
        break;
    }
    }
}

static void render(page_t *p)
{
    out(p, "# Redis commands through meltemi\n\n"
           "GENERATED by `tools/redis_commands_doc.c` from the command table meltemi runs "
           "(`protocols/redis/commands_table.c`, Redis 7.0.15's) and its administration "
           "rules (`protocols/redis/admin.c`). Do not edit: run `make docs`. A test "
           "(`ctest -R redis_commands_doc`) fails when this page is stale.\n\n"
           "Handling:\n\n"
           "- **proxied**: sent as it is to one upstream, chosen by its key.\n"
           "- **split**: cut into one command per slot (cluster mode), the replies merged.\n"
           "- **broadcast**: administration. A service with one master (PROXY mode with one "
           "endpoint, or a primary with replicas) gets it as it is; with several masters "
           "(Redis Cluster mode, PROXY mode with several endpoints) it goes to every master "
           "and the replies merge as the table below says, as Redis Cluster proxies do.\n"
           "- **by key**: with several masters, to the master of its key.\n"
           "- **leased**: on an upstream connection of the client's own (a lease from a "
           "bounded pool, maxConnections), docs/redis-codec.md#transactions.\n"
           "- **subscription**: pub/sub, one upstream subscription per channel per worker "
           "fanned out to the subscribers, docs/redis-pubsub.md.\n"
           "- **local**: answered by meltemi itself.\n"
           "- **refused**: answered with an error saying why; nothing reaches Redis.\n\n"
           "Nothing else is refused by default. A listener refuses more with the RedisService "
           "setting `deniedCommands` (a meltemi extension, docs/configuration.md): those "
           "commands are answered `NOPERM` before anything (a filter, a route) sees them.\n\n"
           "## Commands\n\n"
           "| Command | Handling | How / why |\n|---|---|---|\n");
    size_t n = 0;
    const redis_command_t *t = redis_command_table(&n);
    for (size_t i = 0; i < n; i++)
        command_row(p, &t[i]);
    out(p, "\n## Administration over several masters, per subcommand\n\n"
           "With one master every row below is simply that master's reply. A subcommand that "
           "is not listed goes to one master.\n\n"
           "| Command | Handling | How / why |\n|---|---|---|\n");
    size_t nr = 0;
    const redis_admin_rule_t *rules = redis_admin_rules(&nr);
    for (size_t i = 0; i < nr; i++) {
        if (strchr(rules[i].name, '|'))
            rule_row(p, &rules[i]);
    }
}

/* lua/meltemi/redis/command_names.lua: the names the configuration compiler accepts in
 * RedisService settings.deniedCommands (so `meltemi validate` says file:line). */
static void render_lua(page_t *p)
{
    out(p, "-- GENERATED by tools/redis_commands_doc.c (--lua) from protocols/redis/"
           "commands_table.c: every\n-- Redis 7.0.15 command and subcommand meltemi knows, "
           "as \"name\" or \"container|sub\". Do not edit:\n-- run `make docs`.\n"
           "return {\n");
    size_t n = 0;
    const redis_command_t *t = redis_command_table(&n);
    for (size_t i = 0; i < n; i++) {
        out(p, "  [\"%s\"] = true,\n", t[i].name);
        size_t ns = 0;
        const redis_command_t *subs = redis_command_subcommands(&t[i], &ns);
        for (size_t k = 0; k < ns; k++)
            out(p, "  [\"%s\"] = true,\n", subs[k].name);
    }
    out(p, "}\n");
}

int main(int argc, char **argv)
{
    page_t p = {malloc(1 << 16), 0, 1 << 16};
    if (!p.data)
        return 2;
    bool lua = argc >= 2 && strcmp(argv[1], "--lua") == 0;
    if (lua) {
        argc--;
        argv++;
    }
    if (lua)
        render_lua(&p);
    else
        render(&p);
    if (argc == 3 && strcmp(argv[1], "--check") == 0) {
        FILE *f = fopen(argv[2], "rb");
        char *have = malloc(p.len + 2);
        size_t got = f && have ? fread(have, 1, p.len + 1, f) : 0;
        bool same = f && have && got == p.len && memcmp(have, p.data, p.len) == 0;
        if (f)
            fclose(f);
        free(have);
        free(p.data);
        if (!same) {
            fprintf(stderr, "%s is stale: regenerate it with `make docs`\n", argv[2]);
            return 1;
        }
        return 0;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--check docs/redis-commands.md]\n", argv[0]);
        return 2;
    }
    fwrite(p.data, 1, p.len, stdout);
    free(p.data);
    return 0;
}
