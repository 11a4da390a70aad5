/*
 * outq.c - slice queues and batched writes.
 */
#include "runtime/core/outq.h"

#include "runtime/core/common.h"

#include <stdlib.h>
#include <string.h>

typedef struct outq_write {
    uv_write_t req;
    mt_outq_t *q;
    uint32_t n;
    size_t bytes;
    mt_slice_t *slices;
    uv_buf_t *bufs;
} outq_write_t;

void mt_outq_init(mt_outq_t *q, mt_buf_pool_t *pool, mt_outq_done_cb on_done)
{
    memset(q, 0, sizeof(*q));
    q->pool = pool;
    q->on_done = on_done;
}

void mt_outq_reset(mt_outq_t *q)
{
    for (uint32_t i = 0; i < q->n; i++)
        mt_buf_unref(q->pool, q->v[i].buf);
    free(q->v);
    q->v = NULL;
    q->n = q->cap = 0;
    q->queued_bytes = 0;
    if (q->own) {
        mt_buf_unref(q->pool, q->own);
        q->own = NULL;
    }
}

/* A queue's first slice array: OUTQ_MIN_SLICES entries. A queue with nothing left to write
 * (and lend_slices set) gives an array of that size back to its pool's spare list, and the next
 * queue to need one takes it from there, so idle connections hold none and busy ones malloc none. A
 * grown array (a connection that pipelined) stays with its queue until the queue is reset. */
#define OUTQ_MIN_SLICES 4
#define MT_OUTQ_SPARE_MAX 256 /* spare arrays kept per pool (24 KiB) */

static int outq_grow(mt_outq_t *q)
{
    mt_buf_pool_t *pool = q->pool;
    if (q->cap == 0 && pool->spare_slices) {
        q->v = pool->spare_slices;
        pool->spare_slices = *(void **)q->v;
        pool->n_spare_slices--;
        q->cap = OUTQ_MIN_SLICES;
        return 0;
    }
    uint32_t cap = q->cap ? q->cap * 2 : OUTQ_MIN_SLICES;
    mt_slice_t *v = realloc(q->v, cap * sizeof(*v));
    if (!v)
        return -1;
    q->v = v;
    q->cap = cap;
    return 0;
}

int mt_outq_add_slice(mt_outq_t *q, mt_slice_t s)
{
    if (q->n > 0) {
        mt_slice_t *t = &q->v[q->n - 1];
        if (t->buf == s.buf && t->p + t->len == s.p && (uint64_t)t->len + s.len <= UINT32_MAX) {
            t->len += s.len;
            q->queued_bytes += s.len;
            mt_buf_unref(q->pool, s.buf);
            return 0;
        }
    }
    if (q->n == q->cap && outq_grow(q) != 0) {
        mt_buf_unref(q->pool, s.buf);
        return -1;
    }
    q->v[q->n++] = s;
    q->queued_bytes += s.len;
    return 0;
}

int mt_outq_add_ref(mt_outq_t *q, mt_buf_t *b, const char *p, size_t len)
{
    if (len == 0)
        return 0;
    mt_buf_ref(b);
    mt_slice_t s = {b, p, (uint32_t)len};
    return mt_outq_add_slice(q, s);
}

int mt_slice_copy(mt_buf_pool_t *pool, mt_buf_t **ownp, const char *p, size_t len, mt_slice_t *out)
{
    mt_buf_t *own = *ownp;
    if (!own || mt_buf_room(own) < len) {
        mt_buf_t *nb = mt_buf_get(pool, len);
        if (!nb)
            return -1;
        if (own)
            mt_buf_unref(pool, own);
        *ownp = own = nb;
    }
    char *dst = own->last;
    memcpy(dst, p, len);
    own->last += len;
    mt_buf_ref(own);
    out->buf = own;
    out->p = dst;
    out->len = (uint32_t)len;
    return 0;
}

int mt_outq_add_copy(mt_outq_t *q, const char *p, size_t len)
{
    if (len == 0)
        return 0;
    mt_slice_t s;
    if (mt_slice_copy(q->pool, &q->own, p, len, &s) != 0)
        return -1;
    return mt_outq_add_slice(q, s);
}

/* Everything queued is written: the chunk local replies were copied into goes back to the
 * pool (a connection that got one PONG must not keep 16 KiB), the next copy takes another. */
static void outq_idle(mt_outq_t *q)
{
    if (q->n != 0 || q->inflight_writes != 0)
        return;
    if (q->own) {
        mt_buf_unref(q->pool, q->own);
        q->own = NULL;
    }
    mt_buf_pool_t *pool = q->pool;
    if (q->cap == OUTQ_MIN_SLICES && q->lend_slices) {
        if (pool->n_spare_slices < MT_OUTQ_SPARE_MAX) {
            *(void **)q->v = pool->spare_slices;
            pool->spare_slices = q->v;
            pool->n_spare_slices++;
        } else {
            free(q->v);
        }
        q->v = NULL;
        q->cap = 0;
    }
}

static void outq_write_cb(uv_write_t *req, int status)
{
    outq_write_t *w = (outq_write_t *)req;
    mt_outq_t *q = w->q;
    for (uint32_t i = 0; i < w->n; i++)
        mt_buf_unref(q->pool, w->slices[i].buf);
    q->inflight_bytes -= w->bytes;
    q->inflight_writes--;
    free(w);
    outq_idle(q);
    if (q->on_done)
        q->on_done(q, status);
}

/* Drops the first n bytes of the queued slices (written synchronously, or sealed). */
void mt_outq_drop(mt_outq_t *q, size_t n)
{
    uint32_t i = 0;
    while (i < q->n && n >= q->v[i].len) {
        n -= q->v[i].len;
        q->queued_bytes -= q->v[i].len;
        mt_buf_unref(q->pool, q->v[i].buf);
        i++;
    }
    if (i < q->n && n > 0) {
        q->v[i].p += n;
        q->v[i].len -= (uint32_t)n;
        q->queued_bytes -= n;
    }
    if (i > 0) {
        memmove(q->v, q->v + i, (q->n - i) * sizeof(mt_slice_t));
        q->n -= i;
    }
}

int mt_outq_flush(mt_outq_t *q)
{
    if (q->n == 0)
        return 0;
    if (q->seal)
        return q->seal(q);
    if (!q->stream)
        return 0;
    if (q->inflight_writes == 0) {
        /* Most writes complete at once: try without a write request, which spares libuv's
         * completion machinery (and an epoll_ctl per write). */
        uv_buf_t small[64];
        uint32_t k = MT_MIN(q->n, (uint32_t)MT_ARRAY_LEN(small));
        for (uint32_t i = 0; i < k; i++)
            small[i] = (uv_buf_t){.base = (char *)q->v[i].p, .len = q->v[i].len};
        int wrote = uv_try_write(q->stream, small, k);
        if (wrote < 0 && wrote != UV_EAGAIN)
            return wrote;
        if (wrote > 0) {
            q->written_bytes += (uint64_t)wrote;
            mt_outq_drop(q, (size_t)wrote);
        }
        if (q->n == 0) {
            outq_idle(q);
            if (q->on_done)
                q->on_done(q, 0);
            return 0;
        }
    }
    uint32_t n = q->n;
    outq_write_t *w = malloc(sizeof(*w) + n * (sizeof(mt_slice_t) + sizeof(uv_buf_t)));
    if (!w)
        return UV_ENOMEM;
    w->q = q;
    w->n = n;
    w->bytes = q->queued_bytes;
    w->slices = (mt_slice_t *)(w + 1);
    w->bufs = (uv_buf_t *)(w->slices + n);
    memcpy(w->slices, q->v, n * sizeof(mt_slice_t));
    for (uint32_t i = 0; i < n; i++)
        w->bufs[i] = (uv_buf_t){.base = (char *)q->v[i].p, .len = q->v[i].len};
    q->n = 0;
    q->inflight_bytes += q->queued_bytes;
    q->queued_bytes = 0;
    q->inflight_writes++;
    int rc = uv_write(&w->req, q->stream, w->bufs, n, outq_write_cb);
    if (rc == 0)
        q->written_bytes += w->bytes;
    if (rc != 0) {
        for (uint32_t i = 0; i < n; i++)
            mt_buf_unref(q->pool, w->slices[i].buf);
        q->inflight_bytes -= w->bytes;
        q->inflight_writes--;
        free(w);
    }
    return rc;
}
