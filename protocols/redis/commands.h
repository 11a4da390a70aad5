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
};

/* How the proxy treats a command. */
typedef enum redis_proxy_kind {
    REDIS_PROXY_FORWARD = 0,    /* route by first key (or any node if keyless) */
    REDIS_PROXY_LOCAL,          /* answered by meltemi: PING, ECHO, AUTH, HELLO, QUIT, SELECT,
                                   CLIENT, COMMAND, INFO, CONFIG, READONLY, READWRITE, ... */
    REDIS_PROXY_MULTI_KEY,      /* MGET, MSET, DEL, UNLINK, EXISTS, TOUCH: split per shard */
    REDIS_PROXY_ALL_MASTERS,    /* DBSIZE, FLUSHALL, FLUSHDB, KEYS, SCAN, RANDOMKEY */
    REDIS_PROXY_UNSUPPORTED,    /* refused with a clear error (MULTI, SUBSCRIBE, BLPOP...) */
} redis_proxy_kind_t;

typedef struct redis_command {
    const char *name;   /* lower case */
    int32_t arity;      /* Redis semantics: n exact, -n at least n (command name included) */
    uint32_t flags;
    int16_t first_key;  /* 0 when the command has no key */
    int16_t last_key;   /* -1: last argument */
    int16_t key_step;
    uint8_t proxy;      /* redis_proxy_kind_t */
    uint8_t id;         /* dense index, for per-command stats; < REDIS_COMMAND_COUNT */
} redis_command_t;

#define REDIS_COMMAND_MAX 255

/* Case-insensitive lookup; NULL if unknown. No allocation. */
const redis_command_t *redis_command_lookup(const char *name, size_t len);
/* The whole table, and its size (for COMMAND / COMMAND COUNT and stats). */
const redis_command_t *redis_command_table(size_t *count);
bool redis_command_arity_ok(const redis_command_t *cmd, uint32_t argc);
/*
 * Writes the argv indexes of the command's keys into idx (at most max) and returns how many
 * keys there are (may exceed max: then only max were written). Handles EVAL/EVALSHA/FCALL
 * numkeys, XREAD/XREADGROUP STREAMS, and the fixed first/last/step spec.
 */
uint32_t redis_command_keys(const redis_command_t *cmd, uint32_t argc, const resp_arg_t *argv,
                            uint32_t *idx, uint32_t max);

/* ---- cluster hashing -------------------------------------------------------------------- */
uint16_t redis_crc16(const char *p, size_t n); /* CRC16-XMODEM */
/* Slot of a key, honouring the first non-empty {hash tag}. */
uint16_t redis_slot_of_key(const char *key, size_t n);

#endif
