/*
 * local.c - replies to the commands meltemi answers itself, in Redis 7.0.15's words and
 * reply shapes (RESP2), so clients' connection handshakes (HELLO, CLIENT SETNAME/SETINFO,
 * INFO, COMMAND, SELECT 0, PING) behave as against a real server (CONFIG goes to Redis).
 */
#include "protocols/redis/local.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MELTEMI_VERSION
#define MELTEMI_VERSION "0.0.0"
#endif

#define REDIS_LOCAL_VERSION "7.0.15" /* the Redis we present ourselves as */

/* ==== small helpers ====================================================================== */

static bool local__is(const resp_arg_t *a, const char *lower)
{
    size_t n = strlen(lower);
    return a->len == n && strncasecmp(a->ptr, lower, n) == 0;
}

static void local__bulk_str(resp_out_t *o, const char *s)
{
    resp_out_bulk(o, s, strlen(s));
}

/* A growable text, for bulk replies assembled from pieces (INFO, CLIENT INFO). */
static void local__catf(resp_out_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void local__catf(resp_out_t *t, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n > 0)
        resp_out_raw(t, small, MT_MIN((size_t)n, sizeof(small) - 1));
}

/* Redis's string2ll (the parser's twin; kept local so the codec stays one object per file). */
static bool local__to_i64(const resp_arg_t *a, int64_t *out)
{
    const char *s = a->ptr;
    size_t n = a->len;
    if (n == 0 || n >= 21)
        return false;
    bool neg = s[0] == '-';
    size_t i = neg ? 1 : 0;
    if (i == n || s[i] < '0' || s[i] > '9' || (s[i] == '0' && n > 1))
        return false;
    uint64_t v = 0;
    for (; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v > (uint64_t)INT64_MAX + (neg ? 1 : 0))
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static void local__unsupported(resp_out_t *o, const char *what)
{
    /* same wording as the session uses for REDIS_PROXY_UNSUPPORTED commands */
    resp_out_errorf(o, "ERR meltemi: '%s' is not supported through the proxy", what);
}

/* ==== error texts ======================================================================== */

void redis_reply_wrong_arity(resp_out_t *out, const char *name)
{
    resp_out_errorf(out, "ERR wrong number of arguments for '%s' command", name);
}

/* "%.*s" of a Redis sds stops at its first NUL byte, and so does this. */
static size_t local__cstrlen(const resp_arg_t *a, size_t max)
{
    const char *nul = memchr(a->ptr, '\0', MT_MIN(a->len, max));
    return nul ? (size_t)(nul - a->ptr) : MT_MIN(a->len, max);
}

void redis_reply_unknown_command(resp_out_t *out, uint32_t argc, const resp_arg_t *argv)
{
    /* Redis 7.0 processCommand: args are appended as "'%.*s' " while the list is shorter
     * than 128 bytes, each cut to what is left of the 128; the name is cut at 128. */
    char args[128 + 4];
    size_t len = 0;
    for (uint32_t i = 1; i < argc && len < 128; i++) {
        size_t n = local__cstrlen(&argv[i], 128 - len);
        args[len++] = '\'';
        memcpy(args + len, argv[i].ptr, n);
        len += n;
        args[len++] = '\'';
        args[len++] = ' ';
    }
    size_t nlen = argc ? local__cstrlen(&argv[0], 128) : 0;
    resp_out_errorf(out, "ERR unknown command '%.*s', with args beginning with: %.*s", (int)nlen,
                    argc ? argv[0].ptr : "", (int)len, args);
}

void redis_reply_unknown_subcommand(resp_out_t *out, const resp_arg_t *container,
                                    const resp_arg_t *sub)
{
    char upper[64];
    size_t n = MT_MIN(container->len, sizeof(upper) - 1);
    for (size_t i = 0; i < n; i++)
        upper[i] = (char)toupper((unsigned char)container->ptr[i]);
    upper[n] = '\0';
    size_t slen = local__cstrlen(sub, 128);
    resp_out_errorf(out, "ERR unknown subcommand '%.*s'. Try %s HELP.", (int)slen, sub->ptr, upper);
}

/* ==== glob =============================================================================== */

static bool local__glob(const char *p, size_t pl, const char *s, size_t sl, int depth);

static bool local__glob_class(const char **pp, size_t *pl, unsigned char c)
{
    const char *p = *pp + 1; /* after '[' */
    size_t left = *pl - 1;
    bool negate = left > 0 && *p == '^';
    if (negate) {
        p++;
        left--;
    }
    bool match = false;
    while (left > 0 && *p != ']') {
        if (*p == '\\' && left >= 2) {
            p++;
            left--;
            match |= tolower((unsigned char)*p) == tolower(c);
        } else if (left >= 3 && p[1] == '-' && p[2] != ']') {
            int a = tolower((unsigned char)p[0]), b = tolower((unsigned char)p[2]);
            int x = tolower(c);
            if (a > b) {
                int t = a;
                a = b;
                b = t;
            }
            match |= x >= a && x <= b;
            p += 2;
            left -= 2;
        } else {
            match |= tolower((unsigned char)*p) == tolower(c);
        }
        p++;
        left--;
    }
    /* p is at ']' (or the pattern ended, as Redis tolerates) */
    *pp = p;
    *pl = left;
    return negate ? !match : match;
}

static bool local__glob(const char *p, size_t pl, const char *s, size_t sl, int depth)
{
    if (depth > 64) /* bound the backtracking on patterns like "*a*a*a*..." */
        return false;
    while (pl > 0) {
        switch (*p) {
        case '*':
            while (pl > 1 && p[1] == '*') {
                p++;
                pl--;
            }
            if (pl == 1)
                return true;
            for (size_t k = 0; k <= sl; k++) {
                if (local__glob(p + 1, pl - 1, s + k, sl - k, depth + 1))
                    return true;
            }
            return false;
        case '?':
            if (sl == 0)
                return false;
            s++;
            sl--;
            break;
        case '[':
            if (sl == 0 || !local__glob_class(&p, &pl, (unsigned char)*s))
                return false;
            s++;
            sl--;
            if (pl == 0) /* unterminated class: Redis stops here too */
                return sl == 0;
            break;
        case '\\':
            if (pl >= 2) {
                p++;
                pl--;
            }
            /* fall through */
        default:
            if (sl == 0 || tolower((unsigned char)*p) != tolower((unsigned char)*s))
                return false;
            s++;
            sl--;
            break;
        }
        p++;
        pl--;
    }
    return sl == 0;
}

bool redis_glob_match(const char *pat, size_t plen, const char *s, size_t slen)
{
    return local__glob(pat, plen, s, slen, 0);
}

/* ==== COMMAND ============================================================================ */

/* Redis's print order (server.c addReplyCommandFlags); may_replicate etc. are hidden. */
static const struct {
    uint32_t bit;
    const char *name;
} local__flag_names[] = {
    {REDIS_CMD_WRITE, "write"},
    {REDIS_CMD_READONLY, "readonly"},
    {REDIS_CMD_DENYOOM, "denyoom"},
    {REDIS_CMD_ADMIN, "admin"},
    {REDIS_CMD_PUBSUB, "pubsub"},
    {REDIS_CMD_NOSCRIPT, "noscript"},
    {REDIS_CMD_BLOCKING, "blocking"},
    {REDIS_CMD_LOADING, "loading"},
    {REDIS_CMD_STALE, "stale"},
    {REDIS_CMD_SKIP_MONITOR, "skip_monitor"},
    {REDIS_CMD_SKIP_SLOWLOG, "skip_slowlog"},
    {REDIS_CMD_ASKING, "asking"},
    {REDIS_CMD_FAST, "fast"},
    {REDIS_CMD_NO_AUTH, "no_auth"},
    {REDIS_CMD_NO_MANDATORY_KEYS, "no_mandatory_keys"},
    {REDIS_CMD_NO_ASYNC_LOADING, "no_async_loading"},
    {REDIS_CMD_NO_MULTI, "no_multi"},
    {REDIS_CMD_MOVABLE_KEYS, "movablekeys"},
    {REDIS_CMD_ALLOW_BUSY, "allow_busy"},
};

/* Bit orders of the generated table (tools/gen_redis_commands.py). */
static const char *const local__acl_names[] = {
    "@keyspace",   "@read",        "@write",     "@set",         "@sortedset", "@list",
    "@hash",       "@string",      "@bitmap",    "@hyperloglog", "@geo",       "@stream",
    "@pubsub",     "@admin",       "@fast",      "@slow",        "@blocking",  "@dangerous",
    "@connection", "@transaction", "@scripting",
};
static const char *const local__tip_names[] = {
    "nondeterministic_output",         "nondeterministic_output_order",
    "request_policy:all_nodes",        "request_policy:all_shards",
    "request_policy:multi_shard",      "request_policy:special",
    "response_policy:one_succeeded",   "response_policy:all_succeeded",
    "response_policy:agg_logical_and", "response_policy:agg_logical_or",
    "response_policy:agg_min",         "response_policy:agg_max",
    "response_policy:agg_sum",         "response_policy:special",
};
static const char *const local__kspec_flag_names[] = {
    "RO",     "RW",     "OW",      "RM",         "access",         "update",
    "insert", "delete", "not_key", "incomplete", "variable_flags",
};

static void local__out_bits(resp_out_t *o, uint32_t bits, const char *const *names, size_t n)
{
    resp_out_array(o, __builtin_popcount(bits));
    for (size_t i = 0; i < n; i++) {
        if (bits & (1u << i))
            resp_out_simple(o, names[i]);
    }
}

/* Tips are bulk strings in Redis's reply, in the command's own order. */
static void local__out_tips(resp_out_t *o, uint16_t seq)
{
    int n = 0;
    for (uint16_t s = seq; s; s >>= 4)
        n++;
    resp_out_array(o, n);
    for (uint16_t s = seq; s; s >>= 4)
        local__bulk_str(o, local__tip_names[(s & 0xf) - 1]);
}

static void local__out_flags(resp_out_t *o, uint32_t flags)
{
    int n = 0;
    for (size_t i = 0; i < MT_ARRAY_LEN(local__flag_names); i++)
        n += (flags & local__flag_names[i].bit) != 0;
    resp_out_array(o, n);
    for (size_t i = 0; i < MT_ARRAY_LEN(local__flag_names); i++) {
        if (flags & local__flag_names[i].bit)
            resp_out_simple(o, local__flag_names[i].name);
    }
}

static void local__out_kv_int(resp_out_t *o, const char *k, int64_t v)
{
    local__bulk_str(o, k);
    resp_out_integer(o, v);
}

static void local__out_key_spec(resp_out_t *o, const redis_key_spec_t *ks)
{
    resp_out_array(o, ks->notes ? 8 : 6);
    if (ks->notes) {
        local__bulk_str(o, "notes");
        local__bulk_str(o, ks->notes);
    }
    local__bulk_str(o, "flags");
    local__out_bits(o, ks->flags, local__kspec_flag_names, MT_ARRAY_LEN(local__kspec_flag_names));
    local__bulk_str(o, "begin_search");
    resp_out_array(o, 4);
    local__bulk_str(o, "type");
    if (ks->bs_type == REDIS_KSPEC_BS_INDEX) {
        local__bulk_str(o, "index");
        local__bulk_str(o, "spec");
        resp_out_array(o, 2);
        local__out_kv_int(o, "index", ks->bs_arg);
    } else if (ks->bs_type == REDIS_KSPEC_BS_KEYWORD) {
        local__bulk_str(o, "keyword");
        local__bulk_str(o, "spec");
        resp_out_array(o, 4);
        local__bulk_str(o, "keyword");
        local__bulk_str(o, ks->keyword);
        local__out_kv_int(o, "startfrom", ks->bs_arg);
    } else {
        local__bulk_str(o, "unknown");
        local__bulk_str(o, "spec");
        resp_out_array(o, 0);
    }
    local__bulk_str(o, "find_keys");
    resp_out_array(o, 4);
    local__bulk_str(o, "type");
    if (ks->fk_type == REDIS_KSPEC_FK_RANGE) {
        local__bulk_str(o, "range");
        local__bulk_str(o, "spec");
        resp_out_array(o, 6);
        local__out_kv_int(o, "lastkey", ks->fk[0]);
        local__out_kv_int(o, "keystep", ks->fk[1]);
        local__out_kv_int(o, "limit", ks->fk[2]);
    } else if (ks->fk_type == REDIS_KSPEC_FK_KEYNUM) {
        local__bulk_str(o, "keynum");
        local__bulk_str(o, "spec");
        resp_out_array(o, 6);
        local__out_kv_int(o, "keynumidx", ks->fk[0]);
        local__out_kv_int(o, "firstkey", ks->fk[1]);
        local__out_kv_int(o, "keystep", ks->fk[2]);
    } else {
        local__bulk_str(o, "unknown");
        local__bulk_str(o, "spec");
        resp_out_array(o, 0);
    }
}

/* One entry of COMMAND / COMMAND INFO: Redis 7.0's 10-element shape (addReplyCommandInfo). */
static void local__out_command_info(resp_out_t *o, const redis_command_t *c)
{
    resp_out_array(o, 10);
    resp_out_bulk(o, c->name, c->name_len);
    resp_out_integer(o, c->arity);
    local__out_flags(o, c->flags);
    resp_out_integer(o, c->first_key);
    resp_out_integer(o, c->last_key);
    resp_out_integer(o, c->key_step);
    local__out_bits(o, c->acl_categories, local__acl_names, MT_ARRAY_LEN(local__acl_names));
    local__out_tips(o, c->tip_seq);
    size_t nspec, nsub;
    const redis_key_spec_t *specs = redis_command_key_specs(c, &nspec);
    resp_out_array(o, (int64_t)nspec);
    for (size_t i = 0; i < nspec; i++)
        local__out_key_spec(o, &specs[i]);
    const redis_command_t *subs = redis_command_subcommands(c, &nsub);
    resp_out_array(o, (int64_t)nsub);
    for (size_t i = 0; i < nsub; i++)
        local__out_command_info(o, &subs[i]);
}

/*
 * What COMMAND, COMMAND COUNT / INFO / LIST describe: what meltemi lets through, not all of
 * Redis. A command refused by the proxy (REDIS_PROXY_UNSUPPORTED) is left out, so a client
 * that learns commands from COMMAND (redis-py's cluster client) never plans on one; a
 * container stays when some of its subcommands are answered or forwarded (CLIENT, CLUSTER,
 * CONFIG ...), and LIST leaves out its refused subcommands.
 */
static bool local__offered(const redis_command_t *c)
{
    return c->proxy != REDIS_PROXY_UNSUPPORTED || c->sub_count > 0;
}

bool redis_local_command_offered(const redis_command_t *c)
{
    return local__offered(c);
}

static size_t local__offered_count(const redis_command_t *table, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += local__offered(&table[i]);
    return k;
}

/* COMMAND and COMMAND INFO without names: every command offered, in table order. */
static void local__out_offered(resp_out_t *o, const redis_command_t *table, size_t n,
                               size_t offered)
{
    resp_out_array(o, (int64_t)offered);
    for (size_t i = 0; i < n; i++) {
        if (local__offered(&table[i]))
            local__out_command_info(o, &table[i]);
    }
}

static void local__command_list(resp_out_t *o, uint32_t argc, const resp_arg_t *argv)
{
    /* COMMAND LIST [FILTERBY MODULE m | ACLCAT c | PATTERN p] */
    const resp_arg_t *pattern = NULL;
    int32_t acl = -1;
    if (argc == 5 && local__is(&argv[2], "filterby")) {
        if (local__is(&argv[3], "module")) {
            resp_out_array(o, 0); /* no modules */
            return;
        } else if (local__is(&argv[3], "aclcat")) {
            acl = -2;
            for (size_t i = 0; i < MT_ARRAY_LEN(local__acl_names); i++) {
                if (local__is(&argv[4], local__acl_names[i] + 1))
                    acl = (int32_t)i;
            }
        } else if (local__is(&argv[3], "pattern")) {
            pattern = &argv[4];
        } else {
            resp_out_error(o, "ERR syntax error");
            return;
        }
    } else if (argc != 2) {
        resp_out_error(o, "ERR syntax error");
        return;
    }
    size_t n, nsub, matched = 0;
    const redis_command_t *table = redis_command_table(&n);
    /* two passes: count, then write (the array length comes first) */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            resp_out_array(o, (int64_t)matched);
        for (size_t i = 0; i < n; i++) {
            if (!local__offered(&table[i]))
                continue;
            const redis_command_t *subs = redis_command_subcommands(&table[i], &nsub);
            for (size_t j = 0; j <= nsub; j++) {
                const redis_command_t *c = j == 0 ? &table[i] : &subs[j - 1];
                if (j > 0 && c->proxy == REDIS_PROXY_UNSUPPORTED)
                    continue;
                bool ok = acl == -1 || (acl >= 0 && (c->acl_categories & (1u << acl)));
                if (pattern)
                    ok = redis_glob_match(pattern->ptr, pattern->len, c->name, c->name_len);
                if (!ok)
                    continue;
                if (pass == 0)
                    matched++;
                else
                    resp_out_bulk(o, c->name, c->name_len);
            }
        }
    }
}

static void local__command_getkeys(resp_out_t *o, uint32_t argc, const resp_arg_t *argv)
{
    uint32_t n = argc - 2;
    const resp_arg_t *cargv = argv + 2;
    const redis_command_t *c = redis_command_lookup(cargv[0].ptr, cargv[0].len);
    if (c && c->sub_count) {
        c = n >= 2 ? redis_command_find_subcommand(c, cargv[1].ptr, cargv[1].len) : NULL;
    }
    if (!c) {
        resp_out_error(o, "ERR Invalid command specified");
        return;
    }
    /* Redis's doesCommandHaveKeys: specs of 'not_key' arguments (SPUBLISH's shard channel)
     * do not count here, though redis_command_keys returns them for routing */
    size_t nspec;
    const redis_key_spec_t *specs = redis_command_key_specs(c, &nspec);
    bool has_keys = false;
    for (size_t i = 0; i < nspec; i++)
        has_keys |= !(specs[i].flags & REDIS_KSPEC_FLAG_NOT_KEY);
    if (!has_keys) {
        resp_out_error(o, "ERR The command has no key arguments");
        return;
    }
    if (!redis_command_arity_ok(c, n)) {
        resp_out_error(o, "ERR Invalid number of arguments specified for command");
        return;
    }
    uint32_t idx[64];
    uint32_t total = redis_command_keys(c, n, cargv, idx, MT_ARRAY_LEN(idx));
    if (total == 0) {
        if (c->flags & REDIS_CMD_NO_MANDATORY_KEYS)
            resp_out_array(o, 0);
        else
            resp_out_error(o, "ERR Invalid arguments specified for command");
        return;
    }
    if (total > MT_ARRAY_LEN(idx)) {
        /* rare (GETKEYS of a huge MSET): one more pass with room for all of them */
        uint32_t *all = malloc(total * sizeof(*all));
        if (!all) {
            resp_out_error(o, "ERR meltemi: out of memory");
            return;
        }
        redis_command_keys(c, n, cargv, all, total);
        resp_out_array(o, total);
        for (uint32_t i = 0; i < total; i++)
            resp_out_bulk(o, cargv[all[i]].ptr, cargv[all[i]].len);
        free(all);
        return;
    }
    resp_out_array(o, total);
    for (uint32_t i = 0; i < total; i++)
        resp_out_bulk(o, cargv[idx[i]].ptr, cargv[idx[i]].len);
}

static bool local__sub_arity(resp_out_t *o, const redis_command_t *sub, uint32_t argc)
{
    if (redis_command_arity_ok(sub, argc))
        return true;
    redis_reply_wrong_arity(o, sub->name);
    return false;
}

static void local__command(resp_out_t *o, const redis_command_t *cmd, uint32_t argc,
                           const resp_arg_t *argv)
{
    size_t n;
    const redis_command_t *table = redis_command_table(&n);
    size_t offered = local__offered_count(table, n);
    if (argc == 1) {
        local__out_offered(o, table, n, offered);
        return;
    }
    const redis_command_t *sub = redis_command_find_subcommand(cmd, argv[1].ptr, argv[1].len);
    if (!sub) {
        redis_reply_unknown_subcommand(o, &argv[0], &argv[1]);
        return;
    }
    if (!local__sub_arity(o, sub, argc))
        return;
    if (local__is(&argv[1], "count")) {
        resp_out_integer(o, (int64_t)offered);
    } else if (local__is(&argv[1], "info")) {
        if (argc == 2) {
            local__out_offered(o, table, n, offered);
            return;
        }
        resp_out_array(o, argc - 2);
        for (uint32_t i = 2; i < argc; i++) {
            const redis_command_t *c = redis_command_lookup_fullname(argv[i].ptr, argv[i].len);
            if (c && local__offered(c)) /* a refused one reads as unknown */
                local__out_command_info(o, c);
            else
                resp_out_null(o); /* Redis: addReplyNull, "$-1" in RESP2 */
        }
    } else if (local__is(&argv[1], "docs")) {
        /* the session asks an upstream (and keeps what COMMAND lists); here only when there
         * is none to ask: clients treat an empty map as "nothing known" */
        resp_out_array(o, 0);
    } else if (local__is(&argv[1], "list")) {
        local__command_list(o, argc, argv);
    } else if (local__is(&argv[1], "getkeys")) {
        local__command_getkeys(o, argc, argv);
    } else {
        local__unsupported(o, sub->name);
    }
}

/* ==== CLIENT ============================================================================= */

/* Redis's clientSetName validation: printable ASCII without spaces. */
static bool local__valid_name(const resp_arg_t *a)
{
    for (size_t i = 0; i < a->len; i++) {
        if (a->ptr[i] < '!' || a->ptr[i] > '~')
            return false;
    }
    return true;
}

static void local__client_setname(redis_local_ctx_t *ctx, resp_out_t *o, const resp_arg_t *name)
{
    if (!local__valid_name(name)) {
        resp_out_error(o, "ERR Client names cannot contain spaces, newlines or special "
                          "characters.");
        return;
    }
    char *copy = NULL;
    if (name->len > 0) {
        copy = malloc(name->len + 1);
        if (!copy) {
            resp_out_error(o, "ERR meltemi: out of memory");
            return;
        }
        memcpy(copy, name->ptr, name->len);
        copy[name->len] = '\0';
    }
    free(ctx->client_name);
    ctx->client_name = copy; /* an empty name clears it, as in Redis */
    resp_out_simple(o, "OK");
}

static void local__client_info(redis_local_ctx_t *ctx, resp_out_t *o)
{
    resp_out_t t = {0};
    local__catf(&t, "id=%llu ", (unsigned long long)ctx->client_id);
    if (ctx->addr)
        local__catf(&t, "addr=%s ", ctx->addr);
    if (ctx->laddr)
        local__catf(&t, "laddr=%s ", ctx->laddr);
    resp_out_raw(&t, "name=", 5);
    if (ctx->client_name)
        resp_out_raw(&t, ctx->client_name, strlen(ctx->client_name));
    local__catf(&t, " age=0 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 ");
    local__catf(&t, "cmd=client|info user=default redir=-1 resp=2\n");
    resp_out_bulk(o, t.data, t.len);
    resp_out_free(&t);
}

static void local__client(redis_local_ctx_t *ctx, resp_out_t *o, const redis_command_t *cmd,
                          uint32_t argc, const resp_arg_t *argv)
{
    if (local__is(&argv[1], "setinfo")) {
        /* Redis 7.2's CLIENT SETINFO LIB-NAME|LIB-VER value: new clients send it on connect
         * and would log a warning on an error, so it is accepted (and not kept). */
        if (argc != 4) {
            redis_reply_wrong_arity(o, "client|setinfo");
        } else if (!local__is(&argv[2], "lib-name") && !local__is(&argv[2], "lib-ver")) {
            resp_out_errorf(o, "ERR Unrecognized option '%.*s'", (int)MT_MIN(argv[2].len, 128),
                            argv[2].ptr);
        } else if (!local__valid_name(&argv[3])) {
            resp_out_errorf(o, "ERR %s cannot contain spaces, newlines or special characters.",
                            local__is(&argv[2], "lib-name") ? "lib-name" : "lib-ver");
        } else {
            resp_out_simple(o, "OK");
        }
        return;
    }
    if (local__is(&argv[1], "no-evict") || local__is(&argv[1], "no-touch")) {
        /* Per-connection flags: a valid ON/OFF goes to Redis on the client's own lease
         * (runtime/proxy/redis/tx.c mt_rtx_client_flag); what reaches here is a bad
         * argument count or word, answered as Redis does (and OK for an OFF, harmless). */
        if (argc != 3)
            redis_reply_wrong_arity(o, local__is(&argv[1], "no-evict") ? "client|no-evict"
                                                                       : "client|no-touch");
        else if (!local__is(&argv[2], "on") && !local__is(&argv[2], "off"))
            resp_out_error(o, "ERR syntax error");
        else
            resp_out_simple(o, "OK");
        return;
    }
    const redis_command_t *sub = redis_command_find_subcommand(cmd, argv[1].ptr, argv[1].len);
    if (!sub) {
        redis_reply_unknown_subcommand(o, &argv[0], &argv[1]);
        return;
    }
    if (!local__sub_arity(o, sub, argc))
        return;
    if (local__is(&argv[1], "setname")) {
        local__client_setname(ctx, o, &argv[2]);
    } else if (local__is(&argv[1], "getname")) {
        if (ctx->client_name)
            local__bulk_str(o, ctx->client_name);
        else
            resp_out_null(o);
    } else if (local__is(&argv[1], "id")) {
        resp_out_integer(o, (int64_t)ctx->client_id);
    } else if (local__is(&argv[1], "info")) {
        local__client_info(ctx, o);
    } else {
        local__unsupported(o, sub->name);
    }
}

/* ==== HELLO, SELECT, INFO ======================================================== */

static void local__hello(redis_local_ctx_t *ctx, resp_out_t *o, uint32_t argc,
                         const resp_arg_t *argv)
{
    /* Redis 7.0 helloCommand: protocol 2 or 3, switched only once every option is valid. */
    const resp_arg_t *setname = NULL;
    int64_t ver = ctx->resp == 3 ? 3 : 2;
    if (argc >= 2) {
        if (!local__to_i64(&argv[1], &ver)) {
            resp_out_error(o, "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (ver != 2 && ver != 3) {
            resp_out_error(o, "NOPROTO unsupported protocol version");
            return;
        }
    }
    for (uint32_t j = 2; j < argc; j++) {
        uint32_t more = argc - 1 - j;
        if (local__is(&argv[j], "auth") && more >= 2) {
            j += 2; /* verified by the session before we are called */
        } else if (local__is(&argv[j], "setname") && more >= 1) {
            setname = &argv[++j];
        } else {
            resp_out_errorf(o, "ERR Syntax error in HELLO option '%.*s'",
                            (int)local__cstrlen(&argv[j], 128), argv[j].ptr);
            return;
        }
    }
    if (setname) {
        resp_out_t tmp = {0};
        local__client_setname(ctx, &tmp, setname);
        bool ok = tmp.len > 0 && tmp.data[0] == '+';
        if (!ok)
            resp_out_raw(o, tmp.data, tmp.len);
        resp_out_free(&tmp);
        if (!ok)
            return;
    }
    ctx->resp = (uint8_t)ver;
    if (ver == 3)
        resp_out_raw(o, "%7\r\n", 4); /* RESP3: the same pairs as a map */
    else
        resp_out_array(o, 14);
    local__bulk_str(o, "server");
    local__bulk_str(o, "redis");
    local__bulk_str(o, "version");
    local__bulk_str(o, REDIS_LOCAL_VERSION);
    local__out_kv_int(o, "proto", ver);
    local__out_kv_int(o, "id", (int64_t)ctx->client_id);
    local__bulk_str(o, "mode");
    local__bulk_str(o, ctx->mode ? ctx->mode : "standalone");
    local__bulk_str(o, "role");
    local__bulk_str(o, "master");
    local__bulk_str(o, "modules");
    resp_out_array(o, 0);
}

static void local__select(redis_local_ctx_t *ctx, resp_out_t *o, const resp_arg_t *arg)
{
    int64_t id;
    if (!local__to_i64(arg, &id)) {
        resp_out_error(o, "ERR value is not an integer or out of range");
    } else if (id < INT32_MIN || id > INT32_MAX) {
        resp_out_error(o, "ERR value is out of range, value must between -2147483648 and "
                          "2147483647");
    } else if (id == 0) {
        resp_out_simple(o, "OK");
    } else if (ctx->mode && strcmp(ctx->mode, "cluster") == 0) {
        resp_out_error(o, "ERR SELECT is not allowed in cluster mode");
    } else {
        /* upstream connections are shared and stay on db 0 */
        resp_out_error(o, "ERR DB index is out of range");
    }
}

enum {
    INFO_SERVER = 1 << 0,
    INFO_CLIENTS = 1 << 1,
    INFO_REPLICATION = 1 << 2,
    INFO_CLUSTER = 1 << 3,
    INFO_KEYSPACE = 1 << 4,
    INFO_MEMORY = 1 << 5,
    INFO_STATS = 1 << 6,
    INFO_CPU = 1 << 7,
    INFO_ALL = 0xff,
};

static uint32_t local__info_sections(uint32_t argc, const resp_arg_t *argv)
{
    static const struct {
        const char *name;
        uint32_t bits;
    } names[] = {
        {"server", INFO_SERVER},   {"clients", INFO_CLIENTS},   {"replication", INFO_REPLICATION},
        {"cluster", INFO_CLUSTER}, {"keyspace", INFO_KEYSPACE}, {"default", INFO_ALL},
        {"all", INFO_ALL},         {"everything", INFO_ALL},    {"memory", INFO_MEMORY},
        {"stats", INFO_STATS},     {"cpu", INFO_CPU},
    };
    if (argc == 1)
        return INFO_ALL;
    uint32_t bits = 0;
    for (uint32_t i = 1; i < argc; i++) {
        for (size_t k = 0; k < MT_ARRAY_LEN(names); k++) {
            if (local__is(&argv[i], names[k].name))
                bits |= names[k].bits;
        }
    }
    return bits; /* unknown sections: nothing, as Redis answers an empty bulk */
}

static void local__info(redis_local_ctx_t *ctx, resp_out_t *o, uint32_t argc,
                        const resp_arg_t *argv)
{
    uint32_t bits = local__info_sections(argc, argv);
    const char *mode = ctx->mode ? ctx->mode : "standalone";
    resp_out_t t = {0};
    const char *sep = "";
    const redis_local_info_t *in = ctx->info;
    if (bits & INFO_SERVER) {
        local__catf(&t,
                    "# Server\r\nredis_version:%s\r\nredis_git_sha1:00000000\r\n"
                    "redis_git_dirty:0\r\nredis_mode:%s\r\narch_bits:%d\r\n"
                    "proxy:meltemi\r\nmeltemi_version:%s\r\n",
                    REDIS_LOCAL_VERSION, mode, (int)(sizeof(void *) * 8), MELTEMI_VERSION);
        if (in)
            local__catf(&t,
                        "multiplexing_api:epoll\r\nprocess_id:%llu\r\ntcp_port:%u\r\n"
                        "server_time_usec:%llu\r\nuptime_in_seconds:%llu\r\n"
                        "uptime_in_days:%llu\r\nio_threads_active:%u\r\n",
                        (unsigned long long)in->process_id, in->tcp_port,
                        (unsigned long long)in->server_time_usec, (unsigned long long)in->uptime_s,
                        (unsigned long long)(in->uptime_s / 86400), in->io_threads);
        sep = "\r\n";
    }
    if (bits & INFO_CLIENTS) {
        local__catf(&t, "%s# Clients\r\n", sep);
        if (in)
            local__catf(&t,
                        "connected_clients:%llu\r\nblocked_clients:0\r\n"
                        "tracking_clients:0\r\n",
                        (unsigned long long)in->connected_clients);
        sep = "\r\n";
    }
    if ((bits & INFO_MEMORY) && in) {
        double mib = (double)in->used_memory / (1024.0 * 1024.0);
        local__catf(&t,
                    "%s# Memory\r\nused_memory:%llu\r\nused_memory_human:%.2fM\r\n"
                    "used_memory_rss:%llu\r\nused_memory_rss_human:%.2fM\r\n",
                    sep, (unsigned long long)in->used_memory, mib,
                    (unsigned long long)in->used_memory, mib);
        sep = "\r\n";
    }
    if ((bits & INFO_STATS) && in) {
        local__catf(&t,
                    "%s# Stats\r\ntotal_connections_received:%llu\r\n"
                    "total_commands_processed:%llu\r\ninstantaneous_ops_per_sec:%.0f\r\n"
                    "rejected_connections:%llu\r\n",
                    sep, (unsigned long long)in->total_connections_received,
                    (unsigned long long)in->total_commands_processed, in->instantaneous_ops_per_sec,
                    (unsigned long long)in->rejected_connections);
        sep = "\r\n";
    }
    if (bits & INFO_REPLICATION) {
        local__catf(&t, "%s# Replication\r\nrole:master\r\nconnected_slaves:0\r\n", sep);
        sep = "\r\n";
    }
    if ((bits & INFO_CPU) && in) {
        local__catf(&t,
                    "%s# CPU\r\nused_cpu_sys:%.6f\r\nused_cpu_user:%.6f\r\n"
                    "used_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n",
                    sep, in->used_cpu_sys, in->used_cpu_user);
        sep = "\r\n";
    }
    if (bits & INFO_CLUSTER) {
        /* 1 in every mode: meltemi answers CLUSTER SLOTS as a one-node cluster (and
         * cluster-aware clients such as redis-py's RedisCluster check this field first) */
        local__catf(&t, "%s# Cluster\r\ncluster_enabled:1\r\n", sep);
        sep = "\r\n";
    }
    if (bits & INFO_KEYSPACE)
        local__catf(&t, "%s# Keyspace\r\n", sep);
    resp_out_bulk(o, t.data ? t.data : "", t.len);
    resp_out_free(&t);
}

/* ==== entry point ======================================================================== */

void redis_local_reply(redis_local_ctx_t *ctx, const redis_command_t *cmd, uint32_t argc,
                       const resp_arg_t *argv, resp_out_t *out)
{
    if (argc == 0)
        return;
    if (!redis_command_arity_ok(cmd, argc)) {
        redis_reply_wrong_arity(out, cmd->name);
        return;
    }
    const char *name = cmd->name;
    if (strcmp(name, "ping") == 0) {
        if (argc == 1)
            resp_out_simple(out, "PONG");
        else if (argc == 2)
            resp_out_bulk(out, argv[1].ptr, argv[1].len);
        else
            redis_reply_wrong_arity(out, name);
    } else if (strcmp(name, "echo") == 0) {
        resp_out_bulk(out, argv[1].ptr, argv[1].len);
    } else if (strcmp(name, "quit") == 0) {
        ctx->quit = true;
        resp_out_simple(out, "OK");
    } else if (strcmp(name, "select") == 0) {
        local__select(ctx, out, &argv[1]);
    } else if (strcmp(name, "hello") == 0) {
        local__hello(ctx, out, argc, argv);
    } else if (strcmp(name, "client") == 0) {
        local__client(ctx, out, cmd, argc, argv);
    } else if (strcmp(name, "command") == 0) {
        local__command(out, cmd, argc, argv);
    } else if (strcmp(name, "info") == 0) {
        local__info(ctx, out, argc, argv);
    } else if (strcmp(name, "readonly") == 0 || strcmp(name, "readwrite") == 0) {
        resp_out_simple(out, "OK");
    } else if (strcmp(name, "auth") == 0) {
        /* the session handles AUTH when a password is configured; without one this is
         * what Redis 7 says */
        resp_out_error(out, "ERR AUTH <password> called without any password configured for "
                            "the default user. Are you sure your configuration is correct?");
    } else {
        local__unsupported(out, name);
    }
}

/* ==== CLUSTER, as a one-node cluster at the proxy's own address ========================== */

static void local__node_id(const char *ip, uint16_t port, char id[41])
{
    static const char hex[] = "0123456789abcdef";
    char text[80];
    int n = snprintf(text, sizeof(text), "meltemi %s:%u", ip, port);
    for (int part = 0; part < 3; part++) {
        uint64_t h = 14695981039346656037ull ^ (uint64_t)(part + 1);
        for (int i = 0; i < n; i++)
            h = (h ^ (uint8_t)text[i]) * 1099511628211ull;
        for (int k = 0; k < 16 && part * 16 + k < 40; k++)
            id[part * 16 + k] = hex[(h >> (60 - 4 * k)) & 0xF];
    }
    id[40] = '\0';
}

bool redis_local_cluster_view(const char *ip, uint16_t port, uint32_t argc, const resp_arg_t *argv,
                              resp_out_t *o)
{
    if (argc < 2)
        return false;
    static const char *const subs[] = {"slots", "shards", "nodes", "info", "myid", "keyslot"};
    size_t which = MT_ARRAY_LEN(subs);
    for (size_t i = 0; i < MT_ARRAY_LEN(subs); i++) {
        if (local__is(&argv[1], subs[i]))
            which = i;
    }
    if (which == MT_ARRAY_LEN(subs))
        return false;
    if (argc != (which == 5 ? 3u : 2u)) {
        char name[32];
        snprintf(name, sizeof(name), "cluster|%s", subs[which]);
        redis_reply_wrong_arity(o, name);
        return true;
    }
    char id[41];
    local__node_id(ip, port, id);
    switch (which) {
    case 0: /* SLOTS: [[0, 16383, [ip, port, id, {}]]] */
        resp_out_array(o, 1);
        resp_out_array(o, 3);
        resp_out_integer(o, 0);
        resp_out_integer(o, 16383);
        resp_out_array(o, 4);
        local__bulk_str(o, ip);
        resp_out_integer(o, port);
        local__bulk_str(o, id);
        resp_out_array(o, 0);
        break;
    case 1: /* SHARDS: one shard, its map flattened as RESP2 does */
        resp_out_array(o, 1);
        resp_out_array(o, 4);
        local__bulk_str(o, "slots");
        resp_out_array(o, 2);
        resp_out_integer(o, 0);
        resp_out_integer(o, 16383);
        local__bulk_str(o, "nodes");
        resp_out_array(o, 1);
        resp_out_array(o, 14);
        local__bulk_str(o, "id");
        local__bulk_str(o, id);
        local__out_kv_int(o, "port", port);
        local__bulk_str(o, "ip");
        local__bulk_str(o, ip);
        local__bulk_str(o, "endpoint");
        local__bulk_str(o, ip);
        local__bulk_str(o, "role");
        local__bulk_str(o, "master");
        local__out_kv_int(o, "replication-offset", 0);
        local__bulk_str(o, "health");
        local__bulk_str(o, "online");
        break;
    case 2: { /* NODES */
        char line[200];
        int n = snprintf(line, sizeof(line), "%s %s:%u@0 myself,master - 0 0 1 connected 0-16383\n",
                         id, ip, port);
        resp_out_bulk(o, line, (size_t)n);
        break;
    }
    case 3: { /* INFO */
        static const char info[] = "cluster_state:ok\r\n"
                                   "cluster_slots_assigned:16384\r\n"
                                   "cluster_slots_ok:16384\r\n"
                                   "cluster_slots_pfail:0\r\n"
                                   "cluster_slots_fail:0\r\n"
                                   "cluster_known_nodes:1\r\n"
                                   "cluster_size:1\r\n"
                                   "cluster_current_epoch:1\r\n"
                                   "cluster_my_epoch:1\r\n"
                                   "cluster_stats_messages_sent:0\r\n"
                                   "cluster_stats_messages_received:0\r\n"
                                   "total_cluster_links_buffer_limit_exceeded:0\r\n";
        resp_out_bulk(o, info, sizeof(info) - 1);
        break;
    }
    case 4: /* MYID */
        local__bulk_str(o, id);
        break;
    default: /* KEYSLOT */
        resp_out_integer(o, redis_slot_of_key(argv[2].ptr, argv[2].len));
        break;
    }
    return true;
}
