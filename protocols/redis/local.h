/*
 * local.h - replies to the Redis commands meltemi answers itself (REDIS_PROXY_LOCAL):
 * PING, ECHO, QUIT, SELECT, HELLO, CLIENT, COMMAND, INFO, READONLY, READWRITE,
 * AUTH (only when no password is configured: the session checks passwords), plus the
 * texts of Redis's "unknown command" and "wrong number of arguments" errors.
 *
 * Pure functions: they read the arguments, update the per-connection context and append
 * one complete reply to `out`. No I/O, no globals, no allocation except ctx->client_name
 * and the output buffer.
 */
#ifndef MELTEMI_REDIS_LOCAL_H
#define MELTEMI_REDIS_LOCAL_H

#include "protocols/redis/commands.h"
#include "protocols/redis/resp.h"

#include <stdbool.h>
#include <stdint.h>

/* added: the proxy's own figures for INFO's server, clients, memory, stats and cpu sections
 * (filled by the session before it asks for an INFO reply). */
typedef struct redis_local_info {
    uint64_t uptime_s;
    uint64_t process_id;
    uint16_t tcp_port;
    uint32_t io_threads;                 /* worker threads */
    uint64_t connected_clients;          /* this listener's, every worker */
    uint64_t total_connections_received; /* this listener's */
    uint64_t total_commands_processed;   /* this listener's */
    double instantaneous_ops_per_sec;
    uint64_t rejected_connections;
    uint64_t used_memory; /* resident set of the process, bytes */
    double used_cpu_sys, used_cpu_user;
    uint64_t server_time_usec;
} redis_local_info_t;

typedef struct redis_local_ctx {
    uint64_t client_id;
    char *client_name; /* malloc'd, owned by ctx (free it when the connection goes); NULL if none */
    const char *mode;  /* "standalone" or "cluster" (HELLO's mode, INFO's redis_mode) */
    bool quit;         /* set by QUIT: flush the +OK, then close */
    uint8_t resp;      /* the protocol HELLO chose: 3, or 0/2 for RESP2 */
    /* added, optional (NULL: left out of CLIENT INFO) */
    const char *addr;               /* "ip:port" of the client */
    const char *laddr;              /* "ip:port" the client connected to */
    const redis_local_info_t *info; /* NULL: INFO leaves the proxy's figures out */
} redis_local_ctx_t;

/*
 * Appends the reply to a LOCAL command. cmd is the looked-up top-level command for argv[0]
 * (arity is checked again here, so calling it with a bad argc is safe). HELLO's AUTH option
 * must have been verified by the caller; it is skipped here.
 */
void redis_local_reply(redis_local_ctx_t *ctx, const redis_command_t *cmd, uint32_t argc,
                       const resp_arg_t *argv, resp_out_t *out);

/* Whether COMMAND (and COMMAND INFO / COUNT / DOCS) lists c: what meltemi lets through. */
bool redis_local_command_offered(const redis_command_t *c);

/* -ERR unknown command '<name>', with args beginning with: '<a1>' ... (Redis 7's text,
 * same 128-byte truncation). argc must be >= 1. */
void redis_reply_unknown_command(resp_out_t *out, uint32_t argc, const resp_arg_t *argv);

/* -ERR wrong number of arguments for '<name>' command */
void redis_reply_wrong_arity(resp_out_t *out, const char *name);

/* added: -ERR unknown subcommand '<sub>'. Try <CONTAINER> HELP. (Redis 7's text) */
void redis_reply_unknown_subcommand(resp_out_t *out, const resp_arg_t *container,
                                    const resp_arg_t *sub);

/*
 * added: CLUSTER SLOTS / SHARDS / NODES / INFO / MYID / KEYSLOT answered as a one-node cluster
 * whose only master, at ip:port (the address the client reached), owns all 16384 slots, so a
 * cluster-aware client keeps every connection there. The node id is derived from ip:port
 * (stable across workers and restarts). Returns false, appending nothing, for any other
 * subcommand.
 */
bool redis_local_cluster_view(const char *ip, uint16_t port, uint32_t argc, const resp_arg_t *argv,
                              resp_out_t *out);

/* added: Redis's case-insensitive glob (stringmatchlen with nocase): * ? [a-z] [^x] \x */
bool redis_glob_match(const char *pat, size_t plen, const char *s, size_t slen);

#endif
