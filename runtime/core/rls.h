/*
 * rls.h - a client of Envoy's rate limit service (envoy.service.ratelimit.v3.RateLimitService/
 * ShouldRateLimit) over gRPC, protocol-agnostic: a proxy asks "may this request pass?" with a
 * domain and one descriptor's entries, and is called back with the answer.
 *
 * One HTTP/2 connection (libnghttp2) per rate limit service address per worker, on the
 * worker's loop, kept open and shared by every call of that worker (one stream per request);
 * messages are protobuf-c's, generated from proto/envoy/... . A connection that cannot be
 * opened is retried after a backoff (100 ms doubling to 5 s); calls made meanwhile fail at
 * once.
 *
 * Coalescing: calls with the same service, domain, descriptor, stats block and timeout (a
 * "group") share requests. The first is sent alone (hits_addend 1); calls made while a request
 * of their group is in flight wait in one pending batch, sent as ONE request with hits_addend =
 * their count when the one in flight is answered, and all answered by its verdict. A batch
 * holds RLS_BATCH_MAX (1024) calls at most: a full one is sent at once. A worker has at most
 * RLS_MAX_IN_FLIGHT (64) requests in flight; batches ready beyond that wait their turn. A batch's
 * deadline is its first call's timeout, counted from that call (waiting included; the rest is
 * sent as grpc-timeout), so no call waits longer than its timeout for an answer.
 *
 * Ownership: the pool belongs to its proxy's per-worker state; calls belong to the pool (the
 * caller holds a pointer until its callback ran or it cancelled). A callback runs once, from
 * the loop (never from inside mt_rls_call_start or mt_rls_call_cancel), and the call is gone
 * after it; a callback may start and cancel calls. Single thread.
 */
#ifndef MELTEMI_CORE_RLS_H
#define MELTEMI_CORE_RLS_H

#include "runtime/core/stats.h"
#include "runtime/core/timer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef enum mt_rls_result {
    MT_RLS_OK = 0,     /* overall_code OK: the request may pass */
    MT_RLS_OVER_LIMIT, /* overall_code OVER_LIMIT */
    MT_RLS_FAILED,     /* no connection, a reset, a gRPC error status, an unreadable answer */
    MT_RLS_TIMEOUT,    /* no answer within the call's timeout */
} mt_rls_result_t;

typedef struct mt_rls_entry {
    const char *key, *value;
    size_t key_len, value_len;
} mt_rls_entry_t;

typedef struct mt_rls_pool mt_rls_pool_t;
typedef struct mt_rls_call mt_rls_call_t;
/* why: a short text for logs and error replies (static or valid during the call). */
typedef void (*mt_rls_cb)(mt_rls_call_t *c, void *data, mt_rls_result_t r, const char *why);

/* Where the service is: its address (resolved at snapshot time) and the :authority sent. */
typedef struct mt_rls_target {
    const struct sockaddr *sa;
    socklen_t salen;
    const char *authority;
} mt_rls_target_t;

/* A pool on loop, its timers on wheel, counting in the shard of worker. NULL: no memory. */
mt_rls_pool_t *mt_rls_pool_new(uv_loop_t *loop, mt_timer_wheel_t *wheel, unsigned worker);
/* The loop is stopping: closes every connection; calls in flight never get their callback
 * (their owners are closing too); later calls fail. The pool's memory stays until free. */
void mt_rls_pool_close(mt_rls_pool_t *p);
/* After the loop ran the close callbacks. */
void mt_rls_pool_free(mt_rls_pool_t *p);

/*
 * Asks t whether a request with these descriptor entries (one RateLimitDescriptor) in domain
 * may pass; cb(call, data, ...) answers within timeout_ms. stats (a listener's block, or NULL)
 * counts the requests (MT_ST_RLS_*). Returns the call, or NULL when it fails at once (*why
 * says why: backoff after a failed connect, out of memory, pool closed); then no callback
 * comes.
 */
mt_rls_call_t *mt_rls_call_start(mt_rls_pool_t *p, const mt_rls_target_t *t, const char *domain,
                                 const mt_rls_entry_t *entries, size_t n_entries,
                                 uint32_t timeout_ms, mt_stats_block_t *stats, mt_rls_cb cb,
                                 void *data, const char **why);
/* The caller no longer waits (its client went away): no callback comes. A batch nobody waits
 * for any more is not sent; one in flight runs its course (its hits are counted already). */
void mt_rls_call_cancel(mt_rls_call_t *c);

/* Requests sent (calls), their outcomes and connects of the pool's life (tests read them). */
typedef struct mt_rls_counts {
    uint64_t calls, over_limit, failed, timeouts, connects, connect_failures;
} mt_rls_counts_t;
const mt_rls_counts_t *mt_rls_pool_counts(const mt_rls_pool_t *p);

#endif
