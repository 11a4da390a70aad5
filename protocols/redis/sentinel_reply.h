/*
 * sentinel_reply.h - reading what Redis Sentinel answers: the master's address
 * (SENTINEL GET-MASTER-ADDR-BY-NAME), the replicas that are up (SENTINEL REPLICAS) and a
 * +switch-master message. Each takes one complete reply (the reply scanner in resp.h found
 * its end) and never reads past it; addresses point into the given bytes.
 */
#ifndef MELTEMI_REDIS_SENTINEL_REPLY_H
#define MELTEMI_REDIS_SENTINEL_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct redis_sentinel_addr {
    const char *host; /* not NUL-terminated: host_len bytes inside the reply */
    size_t host_len;
    uint16_t port; /* 1..65535 */
} redis_sentinel_addr_t;

/* *2 host port: true and *out. False for anything else: a null array (no such master), an
 * error reply, a port that is not 1..65535, an empty host. */
bool redis_sentinel_master_reply(const char *p, size_t len, redis_sentinel_addr_t *out);

/* An array of flat field/value arrays: the replicas with an ip, a valid port and no s_down,
 * o_down or disconnected flag, up to max of them into out. Their number, or -1 when p is not
 * such an array (an error reply included). */
int redis_sentinel_replicas_reply(const char *p, size_t len, redis_sentinel_addr_t *out,
                                  uint32_t max);

/* A pub/sub frame (RESP2 *3): its kind ("message", "subscribe"...) and, for a message, its
 * payload. False when p is not a 3-element array starting with a bulk string. */
bool redis_sentinel_pubsub(const char *p, size_t len, const char **kind, size_t *kind_len,
                           const char **payload, size_t *payload_len);

/* A +switch-master payload "<name> <old-ip> <old-port> <new-ip> <new-port>": 1 and the new
 * master in *out when it names master `name`, 0 when it names another master, -1 when it is
 * not readable. */
int redis_sentinel_switch_master(const char *msg, size_t len, const char *name, size_t name_len,
                                 redis_sentinel_addr_t *out);

#endif
