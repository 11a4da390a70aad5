/*
 * test_commands.c - protocols/redis/commands.c (and the table it reads, the generated
 * commands_table.c): lookups, arity, proxy kinds, key positions for every special case,
 * CRC16 and slots; plus the lookup micro-benchmark quoted in commands.c.
 */
#include "protocols/redis/commands.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const redis_command_t *lookup(const char *name)
{
    return redis_command_lookup(name, strlen(name));
}

/* argv from a space-separated line (no quoting; enough for key tests) */
typedef struct {
    resp_arg_t argv[64];
    uint32_t argc;
    char buf[1024];
} line_t;

static void split(line_t *l, const char *s)
{
    snprintf(l->buf, sizeof(l->buf), "%s", s);
    l->argc = 0;
    for (char *tok = strtok(l->buf, " "); tok; tok = strtok(NULL, " "))
        l->argv[l->argc++] = (resp_arg_t){tok, strlen(tok)};
}

/* The keys of a command line, joined by ',' ("" when none). */
static const char *keys_of(const char *line)
{
    static char out[512];
    static line_t l;
    split(&l, line);
    const redis_command_t *cmd = redis_command_lookup(l.argv[0].ptr, l.argv[0].len);
    cr_assert_not_null(cmd, "%s", line);
    uint32_t idx[32];
    uint32_t n = redis_command_keys(cmd, l.argc, l.argv, idx, 32);
    out[0] = '\0';
    for (uint32_t i = 0; i < n && i < 32; i++) {
        cr_assert_lt(idx[i], l.argc);
        if (i)
            strcat(out, ",");
        strncat(out, l.argv[idx[i]].ptr, l.argv[idx[i]].len);
    }
    return out;
}

/* ---- lookup ---------------------------------------------------------------------------- */

Test(commands, every_command_is_found_by_its_name_in_any_case)
{
    size_t n;
    const redis_command_t *t = redis_command_table(&n);
    cr_assert_eq(n, REDIS_COMMAND_COUNT);
    cr_assert_eq(n, 240, "Redis 7.0.15 has 240 top-level commands");
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(t[i].id, i, "ids are dense table indexes");
        cr_assert_eq(strlen(t[i].name), t[i].name_len);
        if (i)
            cr_assert_lt(strcmp(t[i - 1].name, t[i].name), 0, "sorted");
        cr_assert_eq(lookup(t[i].name), &t[i]);
        char up[64], mixed[64];
        for (size_t k = 0; k <= t[i].name_len; k++) {
            up[k] = (char)toupper((unsigned char)t[i].name[k]);
            mixed[k] = k % 2 ? up[k] : t[i].name[k];
        }
        cr_assert_eq(lookup(up), &t[i], "%s", up);
        cr_assert_eq(lookup(mixed), &t[i], "%s", mixed);
    }
}

Test(commands, unknown_names_prefixes_and_extensions_are_not_found)
{
    size_t n;
    const redis_command_t *t = redis_command_table(&n);
    for (size_t i = 0; i < n; i++) {
        char buf[64];
        const redis_command_t *prefix = redis_command_lookup(t[i].name, t[i].name_len - 1);
        cr_assert(prefix == NULL || (prefix->name_len == t[i].name_len - 1 &&
                                     strncmp(prefix->name, t[i].name, prefix->name_len) == 0),
                  "prefix of %s", t[i].name);
        snprintf(buf, sizeof(buf), "%s~", t[i].name);
        cr_assert_null(lookup(buf), "%s", buf);
        snprintf(buf, sizeof(buf), "%s", t[i].name);
        buf[0] ^= 0x01; /* g -> f, s -> r ... */
        const redis_command_t *c = lookup(buf);
        cr_assert(c == NULL || strcasecmp(c->name, buf) == 0);
    }
    cr_assert_null(lookup(""));
    cr_assert_null(lookup("nosuchcommand"));
    cr_assert_null(redis_command_lookup("get\0", 4));
    cr_assert_null(lookup("g_t"));
    cr_assert_null(lookup("GET_")); /* '_' is not 'upper case' of anything */
    for (int c = 0; c < 256; c++) {
        char name[3] = {'g', 'e', (char)c};
        bool is_t = c == 't' || c == 'T';
        cr_assert_eq(redis_command_lookup(name, 3) != NULL, is_t, "byte %d", c);
    }
    char longname[4096];
    memset(longname, 'a', sizeof(longname));
    cr_assert_null(redis_command_lookup(longname, sizeof(longname)));
}

Test(commands, arity_follows_redis_semantics)
{
    const redis_command_t *get = lookup("get"), *set = lookup("set"), *ping = lookup("ping");
    cr_assert_eq(get->arity, 2);
    cr_assert(redis_command_arity_ok(get, 2));
    cr_assert_not(redis_command_arity_ok(get, 1));
    cr_assert_not(redis_command_arity_ok(get, 3));
    cr_assert_eq(set->arity, -3);
    cr_assert_not(redis_command_arity_ok(set, 2));
    cr_assert(redis_command_arity_ok(set, 3));
    cr_assert(redis_command_arity_ok(set, 7));
    cr_assert(redis_command_arity_ok(ping, 1));
    cr_assert(redis_command_arity_ok(ping, 2));
    cr_assert_eq(lookup("mset")->arity, -3);
    cr_assert_eq(lookup("eval")->arity, -3);
}

Test(commands, flags_come_from_redis)
{
    cr_assert(lookup("get")->flags & REDIS_CMD_READONLY);
    cr_assert(lookup("get")->flags & REDIS_CMD_FAST);
    cr_assert(lookup("set")->flags & REDIS_CMD_WRITE);
    cr_assert(lookup("set")->flags & REDIS_CMD_DENYOOM);
    cr_assert(lookup("blpop")->flags & REDIS_CMD_BLOCKING);
    cr_assert(lookup("eval")->flags & REDIS_CMD_MOVABLE_KEYS);
    cr_assert(lookup("auth")->flags & REDIS_CMD_NO_AUTH);
    cr_assert(lookup("shutdown")->flags & REDIS_CMD_ADMIN);
    cr_assert(lookup("publish")->flags & REDIS_CMD_PUBSUB);
    cr_assert_eq(lookup("get")->first_key, 1);
    cr_assert_eq(lookup("mset")->key_step, 2);
    cr_assert_eq(lookup("del")->last_key, -1);
}

Test(commands, proxy_kinds_follow_the_rules)
{
    static const struct {
        const char *name;
        redis_proxy_kind_t kind;
    } cases[] = {
        {"ping", REDIS_PROXY_LOCAL},
        {"echo", REDIS_PROXY_LOCAL},
        {"auth", REDIS_PROXY_LOCAL},
        {"hello", REDIS_PROXY_LOCAL},
        {"quit", REDIS_PROXY_LOCAL},
        {"select", REDIS_PROXY_LOCAL},
        {"client", REDIS_PROXY_LOCAL},
        {"command", REDIS_PROXY_LOCAL},
        {"info", REDIS_PROXY_LOCAL},
        {"config", REDIS_PROXY_BROADCAST},
        {"readonly", REDIS_PROXY_LOCAL},
        {"readwrite", REDIS_PROXY_LOCAL},
        {"time", REDIS_PROXY_FORWARD},
        {"mget", REDIS_PROXY_MULTI_KEY},
        {"mset", REDIS_PROXY_MULTI_KEY},
        {"del", REDIS_PROXY_MULTI_KEY},
        {"unlink", REDIS_PROXY_MULTI_KEY},
        {"exists", REDIS_PROXY_MULTI_KEY},
        {"touch", REDIS_PROXY_MULTI_KEY},
        {"dbsize", REDIS_PROXY_ALL_MASTERS},
        {"flushall", REDIS_PROXY_ALL_MASTERS},
        {"flushdb", REDIS_PROXY_ALL_MASTERS},
        {"keys", REDIS_PROXY_ALL_MASTERS},
        {"scan", REDIS_PROXY_ALL_MASTERS},
        {"randomkey", REDIS_PROXY_ALL_MASTERS},
        {"multi", REDIS_PROXY_TRANSACTION},
        {"exec", REDIS_PROXY_TRANSACTION},
        {"watch", REDIS_PROXY_TRANSACTION},
        {"subscribe", REDIS_PROXY_UNSUPPORTED},
        {"ssubscribe", REDIS_PROXY_UNSUPPORTED},
        {"sunsubscribe", REDIS_PROXY_UNSUPPORTED},
        {"monitor", REDIS_PROXY_UNSUPPORTED},
        {"psync", REDIS_PROXY_UNSUPPORTED},
        {"blpop", REDIS_PROXY_BLOCKING},
        {"bzmpop", REDIS_PROXY_BLOCKING},
        {"blmove", REDIS_PROXY_BLOCKING},
        {"wait", REDIS_PROXY_UNSUPPORTED},
        {"shutdown", REDIS_PROXY_UNSUPPORTED},
        {"debug", REDIS_PROXY_BROADCAST},
        {"replicaof", REDIS_PROXY_UNSUPPORTED},
        {"slaveof", REDIS_PROXY_UNSUPPORTED},
        {"failover", REDIS_PROXY_UNSUPPORTED},
        {"cluster", REDIS_PROXY_UNSUPPORTED},
        {"bgsave", REDIS_PROXY_BROADCAST},
        {"save", REDIS_PROXY_BROADCAST},
        {"replconf", REDIS_PROXY_UNSUPPORTED},
        {"reset", REDIS_PROXY_UNSUPPORTED},
        {"asking", REDIS_PROXY_UNSUPPORTED},
        {"xread", REDIS_PROXY_FORWARD},
        {"xreadgroup", REDIS_PROXY_FORWARD},
        {"get", REDIS_PROXY_FORWARD},
        {"eval", REDIS_PROXY_FORWARD},
        {"publish", REDIS_PROXY_FORWARD},
        {"object", REDIS_PROXY_FORWARD},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const redis_command_t *c = lookup(cases[i].name);
        cr_assert_not_null(c, "%s", cases[i].name);
        cr_assert_eq(c->proxy, cases[i].kind, "%s: %d", cases[i].name, c->proxy);
    }
    /* every admin command is decided: answered locally, carried out by the administration
     * rules (broadcast, refused with why), or one of the two harmless ones forwarded */
    size_t n;
    const redis_command_t *t = redis_command_table(&n);
    for (size_t i = 0; i < n; i++) {
        if (!(t[i].flags & REDIS_CMD_ADMIN) || t[i].proxy == REDIS_PROXY_LOCAL ||
            t[i].proxy == REDIS_PROXY_BROADCAST || t[i].proxy == REDIS_PROXY_UNSUPPORTED)
            continue;
        cr_assert(strcmp(t[i].name, "pfdebug") == 0 || strcmp(t[i].name, "pfselftest") == 0, "%s",
                  t[i].name);
    }
}

Test(commands, subcommands_are_found_by_name_and_fullname)
{
    const redis_command_t *client = lookup("client");
    size_t n;
    const redis_command_t *subs = redis_command_subcommands(client, &n);
    cr_assert_gt(n, 10);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(strncmp(subs[i].name, "client|", 7), 0);
    const redis_command_t *setname = redis_command_find_subcommand(client, "SetName", 7);
    cr_assert_not_null(setname);
    cr_assert_str_eq(setname->name, "client|setname");
    cr_assert_eq(setname->arity, 3);
    cr_assert_null(redis_command_find_subcommand(client, "setnam", 6));
    cr_assert_null(redis_command_find_subcommand(client, "setnamex", 8));
    cr_assert_eq(redis_command_lookup_fullname("CLIENT|SETNAME", 14), setname);
    cr_assert_eq(redis_command_lookup_fullname("get", 3), lookup("get"));
    cr_assert_null(redis_command_lookup_fullname("get|x", 5));
    cr_assert_null(redis_command_lookup_fullname("nope|x", 6));
    cr_assert_null(redis_command_subcommands(lookup("get"), &n));
    cr_assert_eq(n, 0);
}

/* ---- keys ------------------------------------------------------------------------------ */

Test(commands, keys_of_fixed_position_commands)
{
    cr_assert_str_eq(keys_of("GET foo"), "foo");
    cr_assert_str_eq(keys_of("set foo bar EX 10"), "foo");
    cr_assert_str_eq(keys_of("MSET a 1 b 2 c 3"), "a,b,c");
    cr_assert_str_eq(keys_of("MGET a b c"), "a,b,c");
    cr_assert_str_eq(keys_of("DEL a b c d"), "a,b,c,d");
    cr_assert_str_eq(keys_of("EXISTS a"), "a");
    cr_assert_str_eq(keys_of("RENAME a b"), "a,b");
    cr_assert_str_eq(keys_of("LMOVE src dst LEFT RIGHT"), "src,dst");
    cr_assert_str_eq(keys_of("PING"), "");
    cr_assert_str_eq(keys_of("TIME"), "");
    cr_assert_str_eq(keys_of("SMOVE a b m"), "a,b");
    cr_assert_str_eq(keys_of("BLPOP a b 0"), "a,b"); /* last key is argc-2 */
}

Test(commands, keys_of_numkeys_commands)
{
    cr_assert_str_eq(keys_of("EVAL s 2 k1 k2 a1"), "k1,k2");
    cr_assert_str_eq(keys_of("EVAL s 0 a1"), "");
    cr_assert_str_eq(keys_of("EVAL s 0"), "");
    cr_assert_str_eq(keys_of("EVALSHA sha 1 k1"), "k1");
    cr_assert_str_eq(keys_of("EVAL_RO s 1 k1 a"), "k1");
    cr_assert_str_eq(keys_of("EVALSHA_RO sha 2 k1 k2"), "k1,k2");
    cr_assert_str_eq(keys_of("FCALL f 1 k1 a"), "k1");
    cr_assert_str_eq(keys_of("FCALL_RO f 2 k1 k2"), "k1,k2");
    /* malformed numkeys: no keys, the server will answer the error */
    cr_assert_str_eq(keys_of("EVAL s 3 k1 k2"), "");
    cr_assert_str_eq(keys_of("EVAL s -1 k1"), "");
    cr_assert_str_eq(keys_of("EVAL s abc k1"), "");
    cr_assert_str_eq(keys_of("EVAL s 01 k1"), "");
    /* other movable-key commands come from Redis 7's key specs */
    cr_assert_str_eq(keys_of("ZUNIONSTORE dst 2 a b WEIGHTS 1 2"), "dst,a,b");
    cr_assert_str_eq(keys_of("ZUNION 2 a b"), "a,b");
    cr_assert_str_eq(keys_of("SINTERCARD 2 a b LIMIT 1"), "a,b");
    cr_assert_str_eq(keys_of("LMPOP 2 a b LEFT"), "a,b");
    cr_assert_str_eq(keys_of("BLMPOP 0 2 a b LEFT"), "a,b");
}

Test(commands, keys_of_xread_and_xreadgroup)
{
    cr_assert_str_eq(keys_of("XREAD STREAMS s1 s2 0 0"), "s1,s2");
    cr_assert_str_eq(keys_of("XREAD COUNT 10 BLOCK 0 STREAMS s1 $"), "s1");
    cr_assert_str_eq(keys_of("xread count streams streams a 0"), "a"); /* value, not keyword */
    cr_assert_str_eq(keys_of("XREADGROUP GROUP g c COUNT 1 NOACK STREAMS a b > >"), "a,b");
    cr_assert_str_eq(keys_of("XREADGROUP GROUP streams c STREAMS a >"), "a");
    cr_assert_str_eq(keys_of("XREAD STREAMS a b 0"), "", "odd: a syntax error");
    cr_assert_str_eq(keys_of("XREAD COUNT 1 a 0"), "", "no STREAMS");
    cr_assert_str_eq(keys_of("XREAD STREAMS"), "");
}

/* true when the line can block the connection it is sent on */
static bool can_block(const char *line)
{
    static line_t l;
    split(&l, line);
    const redis_command_t *cmd = redis_command_lookup(l.argv[0].ptr, l.argv[0].len);
    cr_assert_not_null(cmd, "%s", line);
    return redis_command_can_block(cmd, l.argc, l.argv);
}

Test(commands, xread_blocks_only_with_a_block_option_in_any_case)
{
    cr_assert(can_block("XREAD BLOCK 0 STREAMS s $"));
    cr_assert(can_block("xread count 1 block 100 streams s $"));
    cr_assert(can_block("XREAD BlOcK 0 STREAMS s $"));
    cr_assert(can_block("XREADGROUP GROUP g c BLOCK 0 STREAMS s >"));
    cr_assert(can_block("xreadgroup group block c noack Block 5 streams s >"));
    cr_assert(can_block("XREADGROUP GROUP g c COUNT 1 NOACK BLOCK 0 STREAMS a b > >"));
    cr_assert_not(can_block("XREAD STREAMS s 0"));
    cr_assert_not(can_block("XREAD COUNT 1 STREAMS s 0"));
    cr_assert_not(can_block("XREAD STREAMS block 0"), "a stream named block");
    cr_assert_not(can_block("XREAD STREAMS s block"), "an id spelled block");
    cr_assert_not(can_block("XREADGROUP GROUP block block STREAMS s >"), "group/consumer names");
    cr_assert_not(can_block("XREAD COUNT 1 BLOCK"), "BLOCK without a value: syntax error");
    cr_assert_not(can_block("XREAD FOO BLOCK 0 STREAMS s $"), "unknown option: syntax error");
}

Test(commands, every_blocking_command_is_leased_or_checked_per_call)
{
    /* Nothing that can block may be forwarded on a shared upstream connection: a command
     * Redis flags blocking is BLOCKING (a lease per command), except XREAD/XREADGROUP whose
     * BLOCK form the data path finds through redis_command_can_block. */
    size_t n, nsub;
    const redis_command_t *t = redis_command_table(&n);
    uint32_t per_call = 0;
    for (size_t i = 0; i < n; i++) {
        const redis_command_t *subs = redis_command_subcommands(&t[i], &nsub);
        for (size_t j = 0; j <= nsub; j++) {
            const redis_command_t *c = j == 0 ? &t[i] : &subs[j - 1];
            if (!(c->flags & REDIS_CMD_BLOCKING))
                continue;
            if (c->keys_proc == REDIS_KEYS_PROC_XREAD) {
                cr_assert_eq(c->proxy, REDIS_PROXY_FORWARD, "%s", c->name);
                per_call++;
            } else {
                cr_assert_eq(c->proxy, REDIS_PROXY_BLOCKING, "%s", c->name);
                cr_assert(redis_command_can_block(c, 0, NULL), "%s", c->name);
            }
        }
    }
    cr_assert_eq(per_call, 2, "xread and xreadgroup");
    cr_assert_eq(lookup("wait")->proxy, REDIS_PROXY_UNSUPPORTED);
    cr_assert(can_block("WAIT 1 0"));
    cr_assert_null(lookup("waitaof"), "Redis 7.2: unknown to the 7.0 table, never forwarded");
    cr_assert_not(can_block("GET k"));
    cr_assert_not(can_block("EVAL x 0"), "commands inside a script cannot block");
}

Test(commands, keys_of_sort_and_migrate_follow_redis_procedures)
{
    cr_assert_str_eq(keys_of("SORT k"), "k");
    cr_assert_str_eq(keys_of("SORT k BY w_* STORE dst"), "k,dst");
    cr_assert_str_eq(keys_of("SORT k GET store STORE a STORE b"), "k,b");
    cr_assert_str_eq(keys_of("SORT k LIMIT 0 10 ALPHA"), "k");
    cr_assert_str_eq(keys_of("SORT k STORE"), "k");
    cr_assert_str_eq(keys_of("SORT_RO k BY x GET y"), "k");
    cr_assert_str_eq(keys_of("MIGRATE host 6379 k 0 5000"), "k");
    cr_assert_str_eq(keys_of("MIGRATE host 6379 k 0 5000 KEYS a b"), "k");
    line_t l;
    split(&l, "MIGRATE host 6379 x 0 5000 COPY KEYS a b");
    l.argv[3].len = 0; /* "" */
    uint32_t idx[4];
    cr_assert_eq(redis_command_keys(lookup("migrate"), l.argc, l.argv, idx, 4), 2);
    cr_assert_eq(idx[0], 8);
    cr_assert_eq(idx[1], 9);
}

Test(commands, keys_of_keyword_specs_are_case_insensitive)
{
    cr_assert_str_eq(keys_of("GEORADIUS k 0 0 1 km STORE d"), "k,d");
    cr_assert_str_eq(keys_of("georadius k 0 0 1 km storedist d"), "k,d");
}

Test(commands, keys_of_container_subcommands)
{
    cr_assert_str_eq(keys_of("OBJECT ENCODING k"), "k");
    cr_assert_str_eq(keys_of("MEMORY USAGE k SAMPLES 5"), "k");
    cr_assert_str_eq(keys_of("XINFO STREAM s"), "s");
    cr_assert_str_eq(keys_of("XGROUP CREATE s g $"), "s");
    cr_assert_str_eq(keys_of("OBJECT HELP"), "");
    cr_assert_str_eq(keys_of("OBJECT NOPE k"), "");
    cr_assert_str_eq(keys_of("CLIENT SETNAME k"), "");
}

Test(commands, keys_reports_the_total_even_when_max_is_smaller)
{
    line_t l;
    split(&l, "DEL a b c d e");
    uint32_t idx[2] = {99, 99};
    uint32_t n = redis_command_keys(lookup("del"), l.argc, l.argv, idx, 2);
    cr_assert_eq(n, 5);
    cr_assert_eq(idx[0], 1);
    cr_assert_eq(idx[1], 2);
    cr_assert_eq(redis_command_keys(lookup("del"), l.argc, l.argv, NULL, 0), 5);
}

Test(commands, keys_never_index_past_argc_when_arguments_are_missing)
{
    /* commands reach redis_command_keys with any argc if the caller skipped the arity
     * check; every command with 1..3 arguments must stay in bounds */
    size_t n;
    const redis_command_t *t = redis_command_table(&n);
    resp_arg_t argv[4] = {{"x", 1}, {"1", 1}, {"1", 1}, {"1", 1}};
    for (size_t i = 0; i < n; i++) {
        for (uint32_t argc = 1; argc <= 4; argc++) {
            uint32_t idx[8];
            uint32_t k = redis_command_keys(&t[i], argc, argv, idx, 8);
            for (uint32_t j = 0; j < k && j < 8; j++)
                cr_assert_lt(idx[j], argc, "%s argc %u", t[i].name, argc);
        }
    }
}

/* ---- slots ----------------------------------------------------------------------------- */

Test(slots, crc16_and_slots_match_redis)
{
    cr_assert_eq(redis_crc16("123456789", 9), 0x31C3);
    cr_assert_eq(redis_crc16("", 0), 0);
    cr_assert_eq(redis_slot_of_key("foo", 3), 12182);
    cr_assert_eq(redis_slot_of_key("bar", 3), 5061);
    cr_assert_eq(redis_slot_of_key("", 0), 0);
    const char a[] = "{user1000}.following", b[] = "{user1000}.followers";
    cr_assert_eq(redis_slot_of_key(a, sizeof(a) - 1), redis_slot_of_key(b, sizeof(b) - 1));
    cr_assert_eq(redis_slot_of_key(a, sizeof(a) - 1), redis_slot_of_key("user1000", 8));
}

Test(slots, hash_tags_follow_redis_rules)
{
    /* first '{' and the first '}' after it; an empty tag hashes the whole key */
    cr_assert_eq(redis_slot_of_key("foo{bar}zap", 11), redis_slot_of_key("bar", 3));
    cr_assert_eq(redis_slot_of_key("foo{}{bar}", 10), redis_crc16("foo{}{bar}", 10) & 16383);
    cr_assert_eq(redis_slot_of_key("foo{{bar}}zap", 13), redis_slot_of_key("{bar", 4));
    cr_assert_eq(redis_slot_of_key("foo{bar}{zap}", 13), redis_slot_of_key("bar", 3));
    cr_assert_eq(redis_slot_of_key("foo{bar", 7), redis_crc16("foo{bar", 7) & 16383);
    cr_assert_eq(redis_slot_of_key("}{a}", 4), redis_slot_of_key("a", 1));
    for (int i = 0; i < 1000; i++) {
        char k[32];
        int n = snprintf(k, sizeof(k), "key:%d", i);
        cr_assert_lt(redis_slot_of_key(k, (size_t)n), 16384);
    }
}

/* ---- the number quoted in commands.c -------------------------------------------------- */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static const redis_command_t *linear_lookup(const char *name, size_t len)
{
    size_t n;
    const redis_command_t *t = redis_command_table(&n);
    for (size_t i = 0; i < n; i++) {
        if (t[i].name_len == len && strncasecmp(t[i].name, name, len) == 0)
            return &t[i];
    }
    return NULL;
}

Test(commands, lookup_speed)
{
    /* prints numbers, asserts only correctness (no timing assertions in tests) */
    static const char *names[] = {"GET",     "SET",        "mget", "HGETALL", "zadd",
                                  "EVALSHA", "xreadgroup", "PING", "nosuch",  "incrbyfloat"};
    const size_t rounds = 200000;
    size_t found = 0;
    double t0 = now_ns();
    for (size_t r = 0; r < rounds; r++) {
        for (size_t i = 0; i < 10; i++)
            found += redis_command_lookup(names[i], strlen(names[i])) != NULL;
    }
    double t1 = now_ns();
    for (size_t r = 0; r < rounds / 10; r++) {
        for (size_t i = 0; i < 10; i++)
            found += linear_lookup(names[i], strlen(names[i])) != NULL;
    }
    double t2 = now_ns();
    cr_assert_eq(found, rounds * 9 + rounds / 10 * 9);
    fprintf(stderr, "command lookup: hash %.1f ns, linear scan %.1f ns\n",
            (t1 - t0) / (rounds * 10.0), (t2 - t1) / (rounds / 10 * 10.0));
}

static bool block_timeout(const char *line, uint64_t *ms)
{
    resp_arg_t argv[12];
    static char buf[256];
    snprintf(buf, sizeof(buf), "%s", line);
    uint32_t argc = 0;
    for (char *tok = strtok(buf, " "); tok && argc < 12; tok = strtok(NULL, " "))
        argv[argc++] = (resp_arg_t){tok, strlen(tok)};
    const redis_command_t *cmd = redis_command_lookup(argv[0].ptr, argv[0].len);
    cr_assert_not_null(cmd, "%s", line);
    return redis_command_block_timeout_ms(cmd, argc, argv, ms);
}

Test(commands, block_timeouts_in_milliseconds)
{
    uint64_t ms = 7;
    cr_assert(block_timeout("BLPOP a b 0", &ms) && ms == 0);
    cr_assert(block_timeout("BRPOP a 1.5", &ms) && ms == 1500);
    cr_assert(block_timeout("BZPOPMIN z 0.001", &ms) && ms == 1);
    cr_assert(block_timeout("BLMOVE a b LEFT RIGHT 2", &ms) && ms == 2000);
    cr_assert(block_timeout("BLMPOP 3 2 a b LEFT", &ms) && ms == 3000);
    cr_assert(block_timeout("BZMPOP 0.25 1 z MIN", &ms) && ms == 250);
    cr_assert(block_timeout("XREAD COUNT 2 BLOCK 75 STREAMS s $", &ms) && ms == 75);
    cr_assert(block_timeout("xreadgroup group g c block 0 streams s >", &ms) && ms == 0);
    /* no timeout, or one Redis will refuse itself */
    cr_assert_not(block_timeout("XREAD STREAMS s $", &ms));
    cr_assert_not(block_timeout("BLPOP a x", &ms));
    cr_assert_not(block_timeout("BLPOP a -1", &ms));
    cr_assert_not(block_timeout("GET a", &ms));
}
