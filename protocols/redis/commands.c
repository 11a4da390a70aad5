/*
 * commands.c - lookups in Redis 7.0's command table (generated into commands_table.c),
 * key positions, and cluster slot hashing.
 *
 * Lookup is a collision-free hash chosen by tools/gen_redis_commands.py: one pass over the
 * name (lower-casing as it hashes), one byte read from a 4 KB slot table, one compare.
 * No allocation. Measured by the "lookup_speed" test in
 * tests/unit/protocols/redis/test_commands.c (10 names, common and unknown, mixed case;
 * -O2, this project's 2-core VM): best of 20 runs 7-8 ns per lookup in a tight loop, about
 * 100-150 ns for a strncasecmp scan of the sorted table. A lookup is cheaper than parsing
 * the command's RESP header.
 */
#include "protocols/redis/commands.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ==== lookup ============================================================================= */

/* ASCII lower-casing as a table: branch-free in the compare loop */
#define L4(c) (c), (c) + 1, (c) + 2, (c) + 3
#define L16(c) L4(c), L4((c) + 4), L4((c) + 8), L4((c) + 12)
#define L64(c) L16(c), L16((c) + 16), L16((c) + 32), L16((c) + 48)
static const unsigned char redis__lower_table[256] = {
    L64(0),  '@', L16('a'), L4('a' + 16), L4('a' + 20), 'y',      'z',
    L4('['), '_', L16(96),  L16(112),     L64(128),     L64(192),
};
#undef L4
#undef L16
#undef L64

static inline unsigned char redis__lower(unsigned char c)
{
    return redis__lower_table[c];
}

/* Must match cmd_hash() in tools/gen_redis_commands.py. Folding every byte with | 0x20
 * (not only letters) keeps the loop branch-free; the final compare is exact. */
static inline uint32_t redis_command__hash(const char *name, size_t len)
{
    uint32_t h = redis_command__hash_seed;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)name[i] | 0x20u;
        h *= 16777619u;
    }
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return h;
}

/* name (lower case, from the table) equals s[0..len) ignoring the case of s */
static bool redis__name_eq(const char *name, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)name[i] != redis__lower((unsigned char)s[i]))
            return false;
    }
    return name[len] == '\0';
}

const redis_command_t *redis_command_lookup(const char *name, size_t len)
{
    if (len == 0 || len > redis_command__max_name_len)
        return NULL;
    uint32_t h = redis_command__hash(name, len);
    uint8_t slot = redis_command__hash_slots[h & (REDIS_COMMAND__HASH_SLOTS - 1)];
    if (slot == 0)
        return NULL;
    const redis_command_t *cmd = &redis_command__table[slot - 1];
    if (cmd->name_len != len || !redis__name_eq(cmd->name, name, len))
        return NULL;
    return cmd;
}

const redis_command_t *redis_command_table(size_t *count)
{
    *count = REDIS_COMMAND_COUNT;
    return redis_command__table;
}

bool redis_command_arity_ok(const redis_command_t *cmd, uint32_t argc)
{
    if (cmd->arity >= 0)
        return argc == (uint32_t)cmd->arity;
    return argc >= (uint32_t)-cmd->arity;
}

const redis_command_t *redis_command_subcommands(const redis_command_t *cmd, size_t *count)
{
    *count = cmd->sub_count;
    return cmd->sub_count ? &redis_command__subcommands[cmd->sub_first] : NULL;
}

const redis_command_t *redis_command_find_subcommand(const redis_command_t *cmd, const char *name,
                                                     size_t len)
{
    /* Subcommand names are "parent|sub"; containers have at most a few dozen, and this
     * path is only taken for container commands, so a scan is fine. */
    size_t plen = (size_t)cmd->name_len + 1;
    for (uint32_t i = 0; i < cmd->sub_count; i++) {
        const redis_command_t *sub = &redis_command__subcommands[cmd->sub_first + i];
        if (sub->name_len == plen + len && redis__name_eq(sub->name + plen, name, len))
            return sub;
    }
    return NULL;
}

const redis_command_t *redis_command_lookup_fullname(const char *name, size_t len)
{
    const char *bar = memchr(name, '|', len);
    if (!bar)
        return redis_command_lookup(name, len);
    const redis_command_t *parent = redis_command_lookup(name, (size_t)(bar - name));
    if (!parent)
        return NULL;
    return redis_command_find_subcommand(parent, bar + 1, len - (size_t)(bar - name) - 1);
}

const redis_key_spec_t *redis_command_key_specs(const redis_command_t *cmd, size_t *count)
{
    *count = cmd->key_spec_count;
    return cmd->key_spec_count ? &redis_command__key_specs[cmd->key_spec_first] : NULL;
}

/* ==== keys =============================================================================== */

/* Case-insensitive on both sides: key spec keywords are upper case ("STREAMS"). */
static bool redis__arg_is(const resp_arg_t *a, const char *word)
{
    size_t n = strlen(word);
    return a->len == n && strncasecmp(a->ptr, word, n) == 0;
}

/* Redis's string2ll for a numkeys argument (no sign but '-', no leading zeros). */
static bool redis__arg_to_i64(const resp_arg_t *a, int64_t *out)
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
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

typedef struct redis__keys_out {
    uint32_t *idx;
    uint32_t max;
    uint32_t n;
} redis__keys_out_t;

static void redis__keys_add(redis__keys_out_t *o, int64_t i)
{
    if (o->n < o->max)
        o->idx[o->n] = (uint32_t)i;
    o->n++;
}

/* Where a key spec's keys begin (0: not found / not applicable), Redis's begin_search. */
static int64_t redis__spec_begin(const redis_key_spec_t *ks, uint32_t argc, const resp_arg_t *argv)
{
    if (ks->bs_type == REDIS_KSPEC_BS_INDEX)
        return ks->bs_arg;
    if (ks->bs_type != REDIS_KSPEC_BS_KEYWORD)
        return 0;
    int64_t start = ks->bs_arg > 0 ? ks->bs_arg : (int64_t)argc + ks->bs_arg;
    int64_t end = ks->bs_arg > 0 ? (int64_t)argc - 1 : 1;
    int64_t dir = start <= end ? 1 : -1;
    for (int64_t i = start; i != end + dir; i += dir) {
        if (i >= argc || i < 1)
            break;
        if (redis__arg_is(&argv[i], ks->keyword))
            return i + 1;
    }
    return 0;
}

/*
 * Redis's getKeysUsingKeySpecs for one spec, with GET_KEYSPEC_RETURN_PARTIAL semantics: a
 * spec that does not fit the arguments (syntax error, the server will say so) adds no keys
 * instead of discarding the others. Specs of 'not_key' arguments (SPUBLISH's shard channel)
 * are included: they decide the slot as keys do.
 */
static void redis__spec_keys(const redis_key_spec_t *ks, uint32_t argc, const resp_arg_t *argv,
                             redis__keys_out_t *o)
{
    int64_t first = redis__spec_begin(ks, argc, argv);
    if (first <= 0)
        return;
    int64_t last, step;
    if (ks->fk_type == REDIS_KSPEC_FK_RANGE) {
        step = ks->fk[1];
        if (ks->fk[0] >= 0)
            last = first + ks->fk[0];
        else if (ks->fk[2] == 0)
            last = (int64_t)argc + ks->fk[0];
        else
            last = first + (((int64_t)argc - first) / ks->fk[2] + ks->fk[0]);
    } else if (ks->fk_type == REDIS_KSPEC_FK_KEYNUM) {
        step = ks->fk[2];
        int64_t numkeys;
        if (ks->fk[0] >= (int64_t)argc - first)
            return;
        if (!redis__arg_to_i64(&argv[first + ks->fk[0]], &numkeys) || numkeys < 0)
            return;
        first += ks->fk[1];
        last = first + numkeys - 1;
    } else {
        return;
    }
    if (last >= argc || last < first || first >= argc || step <= 0)
        return;
    for (int64_t i = first; i <= last; i += step)
        redis__keys_add(o, i);
}

/* XREAD / XREADGROUP: Redis's xreadGetKeys, which skips option values so a value spelled
 * "streams" is not taken for the keyword. Odd key/id counts are syntax errors: no keys. */
static void redis__xread_keys(uint32_t argc, const resp_arg_t *argv, redis__keys_out_t *o)
{
    int64_t streams = -1;
    for (uint32_t i = 1; i < argc; i++) {
        if (redis__arg_is(&argv[i], "block") || redis__arg_is(&argv[i], "count")) {
            i++;
        } else if (redis__arg_is(&argv[i], "group")) {
            i += 2;
        } else if (redis__arg_is(&argv[i], "noack")) {
            continue;
        } else if (redis__arg_is(&argv[i], "streams")) {
            streams = i;
            break;
        } else {
            break;
        }
    }
    if (streams < 0)
        return;
    int64_t nk = (int64_t)argc - streams - 1;
    if (nk == 0 || nk % 2 != 0)
        return;
    for (int64_t i = 0; i < nk / 2; i++)
        redis__keys_add(o, streams + 1 + i);
}

/* XREAD / XREADGROUP: does an option before STREAMS say BLOCK? The walk is Redis 7.0's
 * xreadCommand: an option takes its value(s) only when they follow, BLOCK is tested first at
 * each position, and STREAMS or anything unknown ends the options (Redis answers an unknown
 * one with a syntax error, without blocking). It never answers false where Redis would
 * block; where Redis would reject the options anyway it may answer true (refusing is then
 * harmless). */
static uint32_t redis__xread_block_value(uint32_t argc, const resp_arg_t *argv)
{
    for (uint32_t i = 1; i < argc; i++) {
        uint32_t more = argc - i - 1;
        const resp_arg_t *a = &argv[i];
        if (redis__arg_is(a, "block") && more)
            return i + 1; /* the index of BLOCK's value */
        if (redis__arg_is(a, "count") && more)
            i++;
        else if (redis__arg_is(a, "group") && more >= 2)
            i += 2;
        else if (!redis__arg_is(a, "noack"))
            return 0;
    }
    return 0;
}

static bool redis__xread_blocks(uint32_t argc, const resp_arg_t *argv)
{
    return redis__xread_block_value(argc, argv) != 0;
}

bool redis_command_block_timeout_ms(const redis_command_t *cmd, uint32_t argc,
                                    const resp_arg_t *argv, uint64_t *ms)
{
    uint32_t at = 0;
    bool in_ms = false;
    if (cmd->keys_proc == REDIS_KEYS_PROC_XREAD) {
        at = redis__xread_block_value(argc, argv);
        in_ms = true;
    } else if (strcmp(cmd->name, "blmpop") == 0 || strcmp(cmd->name, "bzmpop") == 0) {
        at = argc > 1 ? 1 : 0;
    } else if (cmd->flags & REDIS_CMD_BLOCKING) {
        at = argc > 1 ? argc - 1 : 0;
    }
    if (at == 0 || argv[at].len == 0 || argv[at].len > 31)
        return false;
    char num[32];
    memcpy(num, argv[at].ptr, argv[at].len);
    num[argv[at].len] = '\0';
    char *end = NULL;
    double v = strtod(num, &end);
    if (!end || *end != '\0' || !(v >= 0) || v > 1e12)
        return false;
    double scaled = in_ms ? v : v * 1000.0;
    *ms = (uint64_t)scaled + (scaled > (double)(uint64_t)scaled ? 1 : 0);
    return true;
}

bool redis_command_can_block(const redis_command_t *cmd, uint32_t argc, const resp_arg_t *argv)
{
    if (cmd->keys_proc == REDIS_KEYS_PROC_XREAD) /* XREAD, XREADGROUP */
        return redis__xread_blocks(argc, argv);
    /* WAIT / WAITAOF wait for replicas (or the AOF) without Redis flagging them blocking */
    return (cmd->flags & REDIS_CMD_BLOCKING) || strcmp(cmd->name, "wait") == 0 ||
           strcmp(cmd->name, "waitaof") == 0;
}

/* SORT: Redis's sortGetKeys. The key, plus the target of the last STORE; LIMIT, GET and BY
 * values are skipped so that a pattern spelled "store" is not taken for the option. */
static void redis__sort_keys(uint32_t argc, const resp_arg_t *argv, redis__keys_out_t *o)
{
    if (argc < 2)
        return;
    int64_t store = -1;
    for (uint32_t i = 2; i < argc; i++) {
        if (redis__arg_is(&argv[i], "limit"))
            i += 2;
        else if (redis__arg_is(&argv[i], "get") || redis__arg_is(&argv[i], "by"))
            i += 1;
        else if (redis__arg_is(&argv[i], "store") && i + 1 < argc)
            store = i + 1;
    }
    redis__keys_add(o, 1);
    if (store > 0)
        redis__keys_add(o, store);
}

/* MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH..] [KEYS k...]: migrateGetKeys */
static void redis__migrate_keys(uint32_t argc, const resp_arg_t *argv, redis__keys_out_t *o)
{
    if (argc < 4)
        return;
    if (argc > 6 && argv[3].len == 0) {
        for (uint32_t i = 6; i < argc; i++) {
            if (redis__arg_is(&argv[i], "keys")) {
                for (uint32_t k = i + 1; k < argc; k++)
                    redis__keys_add(o, k);
                return;
            }
        }
    }
    redis__keys_add(o, 3);
}

uint32_t redis_command_keys(const redis_command_t *cmd, uint32_t argc, const resp_arg_t *argv,
                            uint32_t *idx, uint32_t max)
{
    redis__keys_out_t o = {idx, max, 0};
    if (cmd->sub_count && argc >= 2) {
        /* container: the subcommand knows its keys (OBJECT ENCODING key, XINFO STREAM key) */
        const redis_command_t *sub = redis_command_find_subcommand(cmd, argv[1].ptr, argv[1].len);
        if (!sub)
            return 0;
        cmd = sub;
    }
    switch (cmd->keys_proc) {
    case REDIS_KEYS_PROC_XREAD:
        redis__xread_keys(argc, argv, &o);
        return o.n;
    case REDIS_KEYS_PROC_SORT:
        redis__sort_keys(argc, argv, &o);
        return o.n;
    case REDIS_KEYS_PROC_MIGRATE:
        redis__migrate_keys(argc, argv, &o);
        return o.n;
    default:
        break;
    }
    if (cmd->key_spec_count == 0 && cmd->first_key > 0) {
        /* no specs (never in Redis 7.0's table): the legacy first/last/step triple */
        int64_t last = cmd->last_key < 0 ? (int64_t)argc + cmd->last_key : cmd->last_key;
        for (int64_t i = cmd->first_key; i <= last && i < argc; i += MT_MAX(cmd->key_step, 1))
            redis__keys_add(&o, i);
        return o.n;
    }
    for (uint32_t s = 0; s < cmd->key_spec_count; s++)
        redis__spec_keys(&redis_command__key_specs[cmd->key_spec_first + s], argc, argv, &o);
    return o.n;
}

/* ==== cluster hashing ==================================================================== */

/* CRC16-XMODEM (poly 0x1021, init 0, no reflection, no final xor): Redis Cluster's
 * variant. Table: crc16 of each byte value shifted into the high byte. */
static const uint16_t redis__crc16_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7, 0x8108, 0x9129, 0xa14a, 0xb16b,
    0xc18c, 0xd1ad, 0xe1ce, 0xf1ef, 0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de, 0x2462, 0x3443, 0x0420, 0x1401,
    0x64e6, 0x74c7, 0x44a4, 0x5485, 0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4, 0xb75b, 0xa77a, 0x9719, 0x8738,
    0xf7df, 0xe7fe, 0xd79d, 0xc7bc, 0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b, 0x5af5, 0x4ad4, 0x7ab7, 0x6a96,
    0x1a71, 0x0a50, 0x3a33, 0x2a12, 0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41, 0xedae, 0xfd8f, 0xcdec, 0xddcd,
    0xad2a, 0xbd0b, 0x8d68, 0x9d49, 0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78, 0x9188, 0x81a9, 0xb1ca, 0xa1eb,
    0xd10c, 0xc12d, 0xf14e, 0xe16f, 0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e, 0x02b1, 0x1290, 0x22f3, 0x32d2,
    0x4235, 0x5214, 0x6277, 0x7256, 0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405, 0xa7db, 0xb7fa, 0x8799, 0x97b8,
    0xe75f, 0xf77e, 0xc71d, 0xd73c, 0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab, 0x5844, 0x4865, 0x7806, 0x6827,
    0x18c0, 0x08e1, 0x3882, 0x28a3, 0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92, 0xfd2e, 0xed0f, 0xdd6c, 0xcd4d,
    0xbdaa, 0xad8b, 0x9de8, 0x8dc9, 0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8, 0x6e17, 0x7e36, 0x4e55, 0x5e74,
    0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};

uint16_t redis_crc16(const char *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++)
        crc = (uint16_t)((crc << 8) ^ redis__crc16_table[((crc >> 8) ^ (uint8_t)p[i]) & 0xff]);
    return crc;
}

uint16_t redis_slot_of_key(const char *key, size_t n)
{
    /* Redis's keyHashSlot: hash only what is between the first '{' and the first '}'
     * after it, unless that is empty or there is no such '}'. */
    const char *open = memchr(key, '{', n);
    if (open) {
        size_t start = (size_t)(open - key) + 1;
        const char *close = memchr(key + start, '}', n - start);
        if (close && close != key + start)
            return redis_crc16(key + start, (size_t)(close - key) - start) & 16383;
    }
    return redis_crc16(key, n) & 16383;
}
