/*
 * commands.h - Redis 7.0's command table: arity, key positions, flags, and how meltemi
 * handles each command (forward by key, answer locally, split across shards, refuse).
 */
#ifndef MELTEMI_REDIS_COMMANDS_H
#define MELTEMI_REDIS_COMMANDS_H

#include "protocols/redis/resp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Flags taken from Redis's COMMAND output. */
enum {
    REDIS_CMD_WRITE = 1u << 0,
    REDIS_CMD_READONLY = 1u << 1,
    REDIS_CMD_ADMIN = 1u << 2,
    REDIS_CMD_PUBSUB = 1u << 3,
    REDIS_CMD_NOSCRIPT = 1u << 4,
    REDIS_CMD_BLOCKING = 1u << 5,
    REDIS_CMD_LOADING = 1u << 6,
    REDIS_CMD_STALE = 1u << 7,
    REDIS_CMD_FAST = 1u << 8,
    REDIS_CMD_NO_AUTH = 1u << 9,
    REDIS_CMD_MOVABLE_KEYS = 1u << 10,
    REDIS_CMD_DENYOOM = 1u << 11,
    /* added: the rest of Redis 7.0's flags, so COMMAND can be answered exactly */
    REDIS_CMD_SKIP_MONITOR = 1u << 12,
    REDIS_CMD_SKIP_SLOWLOG = 1u << 13,
    REDIS_CMD_ASKING = 1u << 14,
    REDIS_CMD_NO_MANDATORY_KEYS = 1u << 15,
    REDIS_CMD_NO_ASYNC_LOADING = 1u << 16,
    REDIS_CMD_NO_MULTI = 1u << 17,
    REDIS_CMD_ALLOW_BUSY = 1u << 18,
};

/* How the proxy treats a command. */
typedef enum redis_proxy_kind {
    REDIS_PROXY_FORWARD = 0, /* route by first key (or any node if keyless) */
    REDIS_PROXY_LOCAL,       /* answered by meltemi: PING, ECHO, AUTH, HELLO, QUIT, SELECT,
                                CLIENT, COMMAND, INFO, READONLY, READWRITE, ... */
    REDIS_PROXY_MULTI_KEY,   /* MGET, MSET, DEL, UNLINK, EXISTS, TOUCH: split per shard */
    REDIS_PROXY_ALL_MASTERS, /* DBSIZE, FLUSHALL, FLUSHDB, KEYS, SCAN, RANDOMKEY */
    REDIS_PROXY_UNSUPPORTED, /* refused with a clear error (MULTI, SUBSCRIBE, BLPOP...) */
    REDIS_PROXY_BROADCAST,   /* administration (CONFIG, DEBUG, SCRIPT, SLOWLOG...): the one
                                master, or every master with the replies merged (admin.h) */
    REDIS_PROXY_TRANSACTION, /* MULTI, EXEC, DISCARD, WATCH, UNWATCH: on a leased upstream
                                connection (runtime/proxy/redis/tx.c) */
    REDIS_PROXY_BLOCKING,    /* BLPOP, BZMPOP, BLMOVE...: on a connection leased for the
                                command until it answers (tx.c); XREAD BLOCK alike */
} redis_proxy_kind_t;

typedef struct redis_command {
    const char *name; /* lower case */
    int32_t arity;    /* Redis semantics: n exact, -n at least n (command name included) */
    uint32_t flags;
    int16_t first_key; /* 0 when the command has no key */
    int16_t last_key;  /* -1: last argument */
    int16_t key_step;
    uint8_t proxy; /* redis_proxy_kind_t */
    uint8_t id;    /* dense index, for per-command stats; < REDIS_COMMAND_COUNT */
    /* added (read-only, from the generated table) */
    uint8_t name_len;
    uint8_t key_spec_count; /* Redis 7 key specs: redis_command_key_specs() */
    uint16_t key_spec_first;
    uint8_t sub_count; /* subcommands of a container (CLIENT, OBJECT, ...) */
    uint16_t sub_first;
    uint32_t acl_categories; /* bit i = REDIS_ACL_CATEGORY_NAMES[i] order, see commands.c */
    uint16_t tips;           /* bit i = i-th tip name, see commands.c */
    uint16_t tip_seq;        /* the same tips in Redis's order: 4 bits each (index + 1) */
    uint8_t keys_proc;       /* REDIS_KEYS_PROC_*: how redis_command_keys finds the keys */
} redis_command_t;

#define REDIS_COMMAND_MAX 255
#define REDIS_COMMAND_COUNT 240  /* top-level commands in the generated table (asserted there) */
#define REDIS_SUBCOMMAND_MAX 256 /* room for the generated table's subcommands (asserted) */

enum {
    REDIS_KEYS_PROC_SPECS = 0, /* Redis 7 key specs (below) */
    REDIS_KEYS_PROC_XREAD,     /* XREAD / XREADGROUP: Redis's xreadGetKeys */
    REDIS_KEYS_PROC_SORT,      /* SORT: the key and the last STORE target */
    REDIS_KEYS_PROC_MIGRATE,   /* MIGRATE: the key, or what follows KEYS if the key is "" */
};

/* Redis 7 key specifications (COMMAND's 9th field), used by redis_command_keys. */
enum {
    REDIS_KSPEC_BS_UNKNOWN = 0,
    REDIS_KSPEC_BS_INDEX,   /* bs_arg: argv index */
    REDIS_KSPEC_BS_KEYWORD, /* bs_arg: startfrom (negative: from the end, backwards) */
    REDIS_KSPEC_FK_UNKNOWN = 0,
    REDIS_KSPEC_FK_RANGE,  /* fk: lastkey, keystep, limit */
    REDIS_KSPEC_FK_KEYNUM, /* fk: keynumidx, firstkey, keystep */
};
enum { REDIS_KSPEC_FLAG_NOT_KEY = 1u << 8, REDIS_KSPEC_FLAG_INCOMPLETE = 1u << 9 };
typedef struct redis_key_spec {
    uint16_t flags; /* bit i = i-th of RO RW OW RM access update insert delete not_key
                       incomplete variable_flags */
    uint8_t bs_type;
    uint8_t fk_type;
    int16_t bs_arg;
    const char *keyword;
    int16_t fk[3];
    const char *notes; /* NULL or Redis's note, for COMMAND's reply */
} redis_key_spec_t;

/* Case-insensitive lookup; NULL if unknown. No allocation. */
const redis_command_t *redis_command_lookup(const char *name, size_t len);
/* The whole table, and its size (for COMMAND / COMMAND COUNT and stats). */
const redis_command_t *redis_command_table(size_t *count);
bool redis_command_arity_ok(const redis_command_t *cmd, uint32_t argc);
/* added: subcommands of a container command ("client|setname"); NULL/0 when none. */
const redis_command_t *redis_command_subcommands(const redis_command_t *cmd, size_t *count);
/* added: case-insensitive subcommand lookup by its own name ("setname"); NULL if unknown. */
const redis_command_t *redis_command_find_subcommand(const redis_command_t *cmd, const char *name,
                                                     size_t len);
const redis_key_spec_t *redis_command_key_specs(const redis_command_t *cmd, size_t *count);
/* added: case-insensitive lookup of "name" or "container|sub" (COMMAND INFO's syntax). */
const redis_command_t *redis_command_lookup_fullname(const char *name, size_t len);
/*
 * Writes the argv indexes of the command's keys into idx (at most max) and returns how many
 * keys there are (may exceed max: then only max were written). Handles EVAL/EVALSHA/FCALL
 * numkeys, XREAD/XREADGROUP STREAMS, and the fixed first/last/step spec.
 */
uint32_t redis_command_keys(const redis_command_t *cmd, uint32_t argc, const resp_arg_t *argv,
                            uint32_t *idx, uint32_t max);

/*
 * added: whether this invocation can hold the connection it is sent on until something
 * happens elsewhere (so it must never go on a shared upstream connection): commands Redis
 * flags `blocking` (BLPOP, BZMPOP, BLMOVE, ...), WAIT and WAITAOF, and XREAD / XREADGROUP
 * only when their options carry BLOCK (found case-insensitively, as Redis's xreadCommand
 * walks the options, so a stream or value named "block" is not the keyword).
 */
bool redis_command_can_block(const redis_command_t *cmd, uint32_t argc, const resp_arg_t *argv);
/*
 * added: the timeout of a blocking invocation, in milliseconds (0: it may block forever):
 * the last argument of BLPOP, BRPOP, BZPOPMIN/MAX, BLMOVE, BRPOPLPUSH (seconds), the first of
 * BLMPOP / BZMPOP (seconds), BLOCK's value of XREAD / XREADGROUP (milliseconds). False when
 * there is none or it does not read as a number >= 0 (Redis then answers an error at once).
 */
bool redis_command_block_timeout_ms(const redis_command_t *cmd, uint32_t argc,
                                    const resp_arg_t *argv, uint64_t *ms);

/* ---- private: the generated table (commands_table.c) ------------------------------------ */
#define REDIS_COMMAND__HASH_SLOTS 4096
extern const redis_command_t redis_command__table[REDIS_COMMAND_COUNT];
extern const redis_command_t redis_command__subcommands[];
extern const size_t redis_command__subcommand_count;
extern const redis_key_spec_t redis_command__key_specs[];
extern const size_t redis_command__key_spec_count;
extern const uint32_t redis_command__hash_seed;
extern const uint8_t redis_command__hash_slots[REDIS_COMMAND__HASH_SLOTS];
extern const size_t redis_command__max_name_len;

/* ---- cluster hashing -------------------------------------------------------------------- */
uint16_t redis_crc16(const char *p, size_t n); /* CRC16-XMODEM */
/* Slot of a key, honouring the first non-empty {hash tag}. */
uint16_t redis_slot_of_key(const char *key, size_t n);

#endif
