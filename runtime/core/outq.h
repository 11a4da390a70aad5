/*
 * outq.h - what a connection still has to write: a list of slices of reference-counted
 * chunks. Forwarded frames are added by reference (zero copy: the slice points into the
 * chunk the bytes were read into); locally made bytes are copied into a chunk the queue owns.
 * Adjacent slices of one chunk are merged, so a client's pipelined burst becomes one iovec.
 * mt_outq_flush hands everything queued to one uv_write (writev); the chunk references are
 * dropped in the write callback.
 */
#ifndef MELTEMI_OUTQ_H
#define MELTEMI_OUTQ_H

#include "runtime/core/buf.h"

#include <uv.h>

typedef struct mt_slice {
    mt_buf_t *buf; /* holds one reference */
    const char *p;
    uint32_t len;
} mt_slice_t;

typedef struct mt_outq mt_outq_t;
typedef void (*mt_outq_done_cb)(mt_outq_t *q, int status);

struct mt_outq {
    mt_buf_pool_t *pool;
    uv_stream_t *stream; /* NULL until connected: bytes queue up */
    mt_slice_t *v;
    uint32_t n, cap;
    size_t queued_bytes;   /* not yet handed to libuv */
    size_t inflight_bytes; /* handed to libuv, not yet confirmed */
    uint32_t inflight_writes;
    uint64_t written_bytes;  /* handed to libuv since the queue was made (byte counters) */
    mt_buf_t *own;           /* chunk for copied bytes */
    mt_outq_done_cb on_done; /* after each write completes (status < 0: error) */
    mt_outq_t *flush_next;   /* the worker's list of queues with bytes to flush */
    bool flush_listed;
    /* Set by the owner of one of many queues (a client session): with nothing left to write,
     * the queue gives its first slice array back to the pool (outq.c), so idle connections
     * hold none. Upstream connections, few and busy, keep theirs. */
    bool lend_slices;
    /* A transport below this queue (TLS, core/tls.h): mt_outq_flush hands the queued slices
     * to seal(q) instead of writing them, and seal passes what it made to lower, the queue
     * that writes to the socket. The bytes lower still owes count as this queue's pending.
     * NULL for plain TCP. */
    int (*seal)(mt_outq_t *q);
    void *seal_arg;
    mt_outq_t *lower;
};

void mt_outq_init(mt_outq_t *q, mt_buf_pool_t *pool, mt_outq_done_cb on_done);
/* Drops every queued slice (written or not); the stream must be closing or closed. */
void mt_outq_reset(mt_outq_t *q);

/* Adds bytes that live in b (takes its own reference). Returns -1 on out of memory. */
int mt_outq_add_ref(mt_outq_t *q, mt_buf_t *b, const char *p, size_t len);
/* Adds a slice whose reference the queue takes over. */
int mt_outq_add_slice(mt_outq_t *q, mt_slice_t s);
/* Copies bytes into the queue's own chunk. */
int mt_outq_add_copy(mt_outq_t *q, const char *p, size_t len);
/* Copies bytes into a chunk of the pool and returns a slice of them (for replies held back). */
int mt_slice_copy(mt_buf_pool_t *pool, mt_buf_t **ownp, const char *p, size_t len, mt_slice_t *out);

/* Writes everything queued. Returns a libuv error code (< 0) if the write could not start. */
int mt_outq_flush(mt_outq_t *q);

/* Drops the first n queued bytes (a transport consumed them). */
void mt_outq_drop(mt_outq_t *q, size_t n);

static inline size_t mt_outq_pending(const mt_outq_t *q)
{
    size_t n = q->queued_bytes + q->inflight_bytes;
    if (q->lower)
        n += q->lower->queued_bytes + q->lower->inflight_bytes;
    return n;
}

#endif
