/*
 * test_outq.c - runtime/core/outq.c: output queues that merge adjacent slices, copy local
 * bytes into a chunk of their own and release every reference they hold; flushes through a
 * real stream (a socketpair opened as uv pipes on a uv loop in the test's thread): writes
 * the socket takes at once, a write too big for it that holds its chunk until the write
 * callback, reset with a write in flight, and writes that cannot start.
 */
#include "runtime/core/outq.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

Test(outq, adjacent_slices_merge_and_references_are_released)
{
    mt_buf_pool_t pool;
    mt_buf_pool_init(&pool);
    mt_outq_t q;
    mt_outq_init(&q, &pool, NULL);
    mt_buf_t *b = mt_buf_get(&pool, 64);
    memcpy(b->last, "GETSETDEL", 9);
    b->last += 9;
    cr_assert_eq(mt_outq_add_ref(&q, b, b->pos, 3), 0);
    cr_assert_eq(mt_outq_add_ref(&q, b, b->pos + 3, 3), 0);
    cr_assert_eq(q.n, 1, "contiguous bytes of one chunk are one slice");
    cr_assert_eq(q.v[0].len, 6);
    cr_assert_eq(mt_outq_add_ref(&q, b, b->pos + 7, 2), 0);
    cr_assert_eq(q.n, 2, "a gap starts a new slice");
    cr_assert_eq(mt_outq_add_copy(&q, "+OK\r\n", 5), 0);
    cr_assert_eq(q.n, 3);
    cr_assert_eq(mt_outq_pending(&q), 13);
    cr_assert_eq(b->refs, 3, "ours plus one per slice");
    mt_outq_reset(&q);
    cr_assert_eq(b->refs, 1);
    mt_buf_unref(&pool, b);
    cr_assert_eq(pool.allocated, 0, "every chunk back, the queue's own included");
    mt_buf_pool_destroy(&pool);
}

Test(outq, slice_copy_fills_one_chunk_then_takes_another)
{
    mt_buf_pool_t pool;
    mt_buf_pool_init(&pool);
    mt_buf_t *own = NULL;
    mt_slice_t s1, s2;
    char big[MT_BUF_CHUNK - 10];
    memset(big, 'a', sizeof(big));
    cr_assert_eq(mt_slice_copy(&pool, &own, big, sizeof(big), &s1), 0);
    cr_assert_eq(mt_slice_copy(&pool, &own, "0123456789abcdef", 16, &s2), 0);
    cr_assert_neq(s1.buf, s2.buf, "no room left: a second chunk");
    cr_assert(memcmp(s2.p, "0123456789abcdef", 16) == 0);
    mt_buf_unref(&pool, s1.buf);
    mt_buf_unref(&pool, s2.buf);
    mt_buf_unref(&pool, own);
    cr_assert_eq(pool.allocated, 0);
    mt_buf_pool_destroy(&pool);
}

Test(outq, add_slice_takes_over_the_reference_and_empty_adds_do_nothing)
{
    mt_buf_pool_t pool;
    mt_buf_pool_init(&pool);
    mt_outq_t q;
    mt_outq_init(&q, &pool, NULL);
    mt_buf_t *b = mt_buf_get(&pool, 64);
    memcpy(b->last, "abcdef", 6);
    b->last += 6;
    cr_assert_eq(mt_outq_add_ref(&q, b, b->pos, 0), 0);
    cr_assert_eq(mt_outq_add_copy(&q, "x", 0), 0);
    cr_assert_eq(q.n, 0, "zero-length adds queue nothing");
    cr_assert_null(q.own, "and allocate nothing");
    cr_assert_eq(b->refs, 1);
    mt_buf_ref(b);
    cr_assert_eq(mt_outq_add_slice(&q, (mt_slice_t){b, b->pos, 2}), 0);
    cr_assert_eq(b->refs, 2, "the caller's reference now belongs to the queue");
    mt_buf_ref(b);
    cr_assert_eq(mt_outq_add_slice(&q, (mt_slice_t){b, b->pos + 2, 4}), 0);
    cr_assert_eq(q.n, 1, "contiguous: merged into the first slice");
    cr_assert_eq(b->refs, 2, "a merged slice gives its reference back");
    cr_assert_eq(q.v[0].len, 6);
    cr_assert_eq(q.queued_bytes, 6);
    mt_outq_reset(&q);
    cr_assert_eq(b->refs, 1);
    cr_assert_eq(mt_outq_pending(&q), 0);
    mt_buf_unref(&pool, b);
    cr_assert_eq(pool.allocated, 0);
    mt_buf_pool_destroy(&pool);
}

/* ---- flushing through a real stream --------------------------------------------------------- */

/* One end of a socketpair as a uv pipe (the queue writes to it); the test reads the other end
 * either with read(2) or through a second uv pipe on the same loop. */
typedef struct flush_fixture {
    uv_loop_t loop;
    uv_pipe_t writer, reader;
    uv_timer_t tick; /* makes UV_RUN_ONCE come back regularly, so waits have a deadline */
    int fds[2];
    mt_buf_pool_t pool;
    mt_outq_t q;
    int done_calls;
    int done_status;
    char *got;
    size_t got_len, got_cap;
} flush_fixture_t;

static flush_fixture_t fx;

static void on_done(mt_outq_t *q, int status)
{
    cr_assert_eq(q, &fx.q);
    fx.done_calls++;
    fx.done_status = status;
}

static void tick_cb(uv_timer_t *t)
{
    MT_UNUSED(t);
}

static void flush_setup(void)
{
    memset(&fx, 0, sizeof(fx));
    signal(SIGPIPE, SIG_IGN); /* a write to a closed peer must fail with EPIPE, not kill us */
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fx.fds), 0);
    cr_assert_eq(uv_loop_init(&fx.loop), 0);
    cr_assert_eq(uv_pipe_init(&fx.loop, &fx.writer, 0), 0);
    cr_assert_eq(uv_pipe_open(&fx.writer, fx.fds[0]), 0);
    uv_timer_init(&fx.loop, &fx.tick);
    uv_timer_start(&fx.tick, tick_cb, 10, 10);
    mt_buf_pool_init(&fx.pool);
    mt_outq_init(&fx.q, &fx.pool, on_done);
    fx.q.stream = (uv_stream_t *)&fx.writer;
}

static void flush_teardown(void)
{
    free(fx.got);
}

/* Runs the loop until cond() holds (or 5 s pass: a failure, not a hang). */
static void run_until(bool (*cond)(void), const char *what)
{
    uint64_t deadline = uv_now(&fx.loop) + 5000;
    while (!cond() && uv_now(&fx.loop) < deadline)
        uv_run(&fx.loop, UV_RUN_ONCE);
    cr_assert(cond(), "timed out waiting for %s", what);
}

static void close_all(void)
{
    if (!uv_is_closing((uv_handle_t *)&fx.writer))
        uv_close((uv_handle_t *)&fx.writer, NULL);
    if (fx.reader.loop && !uv_is_closing((uv_handle_t *)&fx.reader))
        uv_close((uv_handle_t *)&fx.reader, NULL);
    else if (!fx.reader.loop)
        close(fx.fds[1]);
    uv_close((uv_handle_t *)&fx.tick, NULL);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&fx.loop), 0, "every handle closed");
}

static void reader_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    MT_UNUSED(h);
    if (fx.got_cap - fx.got_len < hint) {
        fx.got_cap = fx.got_len + hint;
        fx.got = realloc(fx.got, fx.got_cap);
    }
    *buf = uv_buf_init(fx.got + fx.got_len, (unsigned)(fx.got_cap - fx.got_len));
}

static void reader_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    MT_UNUSED(st);
    MT_UNUSED(buf);
    if (n > 0)
        fx.got_len += (size_t)n;
}

static void start_reader(void)
{
    cr_assert_eq(uv_pipe_init(&fx.loop, &fx.reader, 0), 0);
    cr_assert_eq(uv_pipe_open(&fx.reader, fx.fds[1]), 0);
    cr_assert_eq(uv_read_start((uv_stream_t *)&fx.reader, reader_alloc, reader_read), 0);
}

/* A chunk of n bytes of a pattern no two offsets of which a shifted copy matches. */
static mt_buf_t *pattern_chunk(size_t n)
{
    mt_buf_t *b = mt_buf_get(&fx.pool, n);
    cr_assert_not_null(b);
    for (size_t i = 0; i < n; i++)
        b->last[i] = (char)(i * 7 + i / 251);
    b->last += n;
    return b;
}

Test(outq_flush, small_writes_complete_at_once_in_order_and_release_their_chunks,
     .init = flush_setup, .fini = flush_teardown)
{
    mt_buf_t *b = mt_buf_get(&fx.pool, 64);
    memcpy(b->last, "*1\r\n$4\r\nPING\r\n", 14);
    b->last += 14;
    cr_assert_eq(mt_outq_add_ref(&fx.q, b, b->pos + 8, 6), 0); /* "PING\r\n" */
    cr_assert_eq(mt_outq_add_copy(&fx.q, "+OK\r\n", 5), 0);
    cr_assert_eq(mt_outq_add_ref(&fx.q, b, b->pos, 4), 0); /* "*1\r\n" */
    cr_assert_eq(fx.q.n, 3);
    cr_assert_eq(mt_outq_pending(&fx.q), 15);
    cr_assert_eq(b->refs, 3);
    cr_assert_eq(mt_outq_flush(&fx.q), 0);
    cr_assert_eq(fx.done_calls, 1, "a write the socket takes whole is done at once");
    cr_assert_eq(fx.done_status, 0);
    cr_assert_eq(fx.q.n, 0);
    cr_assert_eq(fx.q.inflight_writes, 0);
    cr_assert_eq(mt_outq_pending(&fx.q), 0);
    cr_assert_eq(b->refs, 1, "the slices' references are dropped once written");
    char got[32] = {0};
    cr_assert_eq(read(fx.fds[1], got, sizeof(got)), 15);
    cr_assert_str_eq(got, "PING\r\n+OK\r\n*1\r\n", "in the order queued");
    cr_assert_eq(mt_outq_flush(&fx.q), 0, "an empty queue flushes as a no-op");
    cr_assert_eq(fx.done_calls, 1, "and reports nothing");
    cr_assert_eq(fx.pool.allocated, 1, "b only: the own chunk went back once all was written");
    cr_assert_null(fx.q.own);
    cr_assert_eq(mt_outq_add_copy(&fx.q, "+OK\r\n", 5), 0);
    cr_assert_eq(fx.pool.allocated, 2, "the next local reply takes a chunk again");
    mt_outq_reset(&fx.q);
    cr_assert_eq(fx.pool.allocated, 1, "reset drops the own chunk");
    mt_buf_unref(&fx.pool, b);
    cr_assert_eq(fx.pool.allocated, 0);
    close_all();
    mt_buf_pool_destroy(&fx.pool);
}

Test(outq_flush, an_idle_queue_gives_its_slice_array_to_the_pool_and_the_next_takes_it,
     .init = flush_setup, .fini = flush_teardown)
{
    fx.q.lend_slices = true;
    cr_assert_eq(mt_outq_add_copy(&fx.q, "+PONG\r\n", 7), 0);
    cr_assert_not_null(fx.q.v);
    mt_slice_t *v = fx.q.v;
    cr_assert_eq(mt_outq_flush(&fx.q), 0);
    cr_assert_null(fx.q.v, "nothing left to write: the queue holds no slice array");
    cr_assert_eq(fx.q.cap, 0);
    cr_assert_eq(fx.pool.n_spare_slices, 1, "the array waits in the pool");
    mt_outq_t other;
    mt_outq_init(&other, &fx.pool, NULL);
    cr_assert_eq(mt_outq_add_copy(&other, "+OK\r\n", 5), 0);
    cr_assert_eq(other.v, v, "another queue takes it instead of a malloc");
    cr_assert_eq(fx.pool.n_spare_slices, 0);
    cr_assert_eq(mt_outq_flush(&other), 0, "other has no stream: its bytes stay queued");
    /* a queue without lend_slices (an upstream connection's) keeps its array */
    mt_outq_t up;
    mt_outq_init(&up, &fx.pool, NULL);
    up.stream = (uv_stream_t *)&fx.writer;
    cr_assert_eq(mt_outq_add_copy(&up, "x", 1), 0);
    cr_assert_eq(mt_outq_flush(&up), 0);
    cr_assert_not_null(up.v, "kept");
    mt_outq_reset(&up);
    /* a grown array (a pipelining burst) stays with its queue */
    mt_buf_t *b = pattern_chunk(64);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(mt_outq_add_ref(&fx.q, b, b->pos + 2 * i, 1), 0);
    cr_assert_eq(fx.q.cap, 8);
    char got[16];
    cr_assert_eq(mt_outq_flush(&fx.q), 0);
    cr_assert_eq(read(fx.fds[1], got, sizeof(got)), 7 + 1 + 6);
    cr_assert_eq(fx.q.cap, 8, "kept by a queue that pipelined");
    cr_assert_eq(fx.pool.n_spare_slices, 0);
    mt_outq_reset(&other);
    mt_outq_reset(&fx.q);
    mt_buf_unref(&fx.pool, b);
    cr_assert_eq(fx.pool.allocated, 0);
    close_all();
    mt_buf_pool_destroy(&fx.pool);
}

static bool two_writes_done(void)
{
    return fx.done_calls >= 2;
}

static bool everything_read(void)
{
    return fx.got_len >= (4u << 20) + 4;
}

Test(outq_flush, a_big_write_holds_its_chunk_until_the_write_callback, .init = flush_setup,
     .fini = flush_teardown)
{
    const size_t n = 4u << 20; /* more than a socketpair buffers: try_write writes part */
    mt_buf_t *b = pattern_chunk(n);
    cr_assert_eq(mt_outq_add_ref(&fx.q, b, b->pos, n), 0);
    cr_assert_eq(mt_outq_flush(&fx.q), 0);
    cr_assert_eq(fx.done_calls, 0, "not all written yet");
    cr_assert_eq(fx.q.inflight_writes, 1, "the rest went to one uv_write");
    cr_assert_eq(fx.q.queued_bytes, 0);
    cr_assert_gt(fx.q.inflight_bytes, 0);
    cr_assert_lt(fx.q.inflight_bytes, n, "what the socket took at once is not counted");
    cr_assert_eq(mt_outq_pending(&fx.q), fx.q.inflight_bytes);
    cr_assert_eq(b->refs, 2, "the write holds the chunk");
    /* Queued behind a write in flight: flushed as a second write, not mixed into the first. */
    cr_assert_eq(mt_outq_add_copy(&fx.q, "tail", 4), 0);
    cr_assert_eq(mt_outq_flush(&fx.q), 0);
    cr_assert_eq(fx.q.inflight_writes, 2);
    start_reader();
    run_until(two_writes_done, "both write callbacks");
    cr_assert_eq(fx.done_calls, 2, "one callback per write");
    cr_assert_eq(fx.done_status, 0);
    cr_assert_eq(mt_outq_pending(&fx.q), 0);
    cr_assert_eq(fx.q.inflight_writes, 0);
    cr_assert_eq(b->refs, 1, "released in the write callback");
    run_until(everything_read, "the reader to see every byte");
    cr_assert_eq(fx.got_len, n + 4);
    cr_assert(memcmp(fx.got, b->pos, n) == 0, "every byte, in order");
    cr_assert(memcmp(fx.got + n, "tail", 4) == 0);
    mt_outq_reset(&fx.q);
    mt_buf_unref(&fx.pool, b);
    cr_assert_eq(fx.pool.allocated, 0);
    close_all();
    mt_buf_pool_destroy(&fx.pool);
}

Test(outq_flush, reset_drops_what_is_queued_and_a_closed_stream_cancels_what_is_in_flight,
     .init = flush_setup, .fini = flush_teardown)
{
    const size_t n = 4u << 20;
    mt_buf_t *b = pattern_chunk(n);
    cr_assert_eq(mt_outq_add_ref(&fx.q, b, b->pos, n), 0);
    cr_assert_eq(mt_outq_flush(&fx.q), 0);
    cr_assert_eq(fx.q.inflight_writes, 1);
    mt_buf_t *c = mt_buf_get(&fx.pool, 16);
    memcpy(c->last, "queued", 6);
    c->last += 6;
    cr_assert_eq(mt_outq_add_ref(&fx.q, c, c->pos, 6), 0);
    cr_assert_eq(mt_outq_add_copy(&fx.q, "copy", 4), 0);
    cr_assert_eq(c->refs, 2);
    cr_assert_eq(b->refs, 2);
    cr_assert_eq(fx.pool.allocated, 3, "b, c and the own chunk");
    mt_outq_reset(&fx.q);
    cr_assert_eq(c->refs, 1, "a queued slice is released by reset");
    cr_assert_eq(fx.pool.allocated, 2, "so is the own chunk");
    cr_assert_eq(b->refs, 2, "a slice in flight belongs to its write until the callback");
    cr_assert_eq(fx.q.queued_bytes, 0);
    cr_assert_gt(mt_outq_pending(&fx.q), 0, "the bytes in flight are still owed");
    uv_close((uv_handle_t *)&fx.writer, NULL);
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    cr_assert_eq(fx.done_calls, 1);
    cr_assert_eq(fx.done_status, UV_ECANCELED, "closing the stream cancels the write");
    cr_assert_eq(b->refs, 1, "and releases the chunk");
    cr_assert_eq(mt_outq_pending(&fx.q), 0);
    mt_buf_unref(&fx.pool, b);
    mt_buf_unref(&fx.pool, c);
    cr_assert_eq(fx.pool.allocated, 0);
    close_all();
    mt_buf_pool_destroy(&fx.pool);
}

Test(outq_flush, without_a_stream_or_after_a_failed_write_the_bytes_stay_queued,
     .init = flush_setup, .fini = flush_teardown)
{
    fx.q.stream = NULL; /* not connected yet */
    cr_assert_eq(mt_outq_add_copy(&fx.q, "+PONG\r\n", 7), 0);
    cr_assert_eq(mt_outq_flush(&fx.q), 0);
    cr_assert_eq(fx.q.n, 1, "nothing to write to: the bytes wait");
    cr_assert_eq(mt_outq_pending(&fx.q), 7);
    cr_assert_eq(fx.done_calls, 0);
    fx.q.stream = (uv_stream_t *)&fx.writer;
    close(fx.fds[1]); /* the peer is gone */
    fx.fds[1] = -1;
    int rc = mt_outq_flush(&fx.q);
    cr_assert_eq(rc, UV_EPIPE, "got %s", uv_err_name(rc));
    cr_assert_eq(fx.q.n, 1, "a write that could not start leaves the bytes queued");
    cr_assert_eq(mt_outq_pending(&fx.q), 7);
    cr_assert_eq(fx.done_calls, 0, "the caller reports the error, not the queue");
    mt_outq_reset(&fx.q);
    cr_assert_eq(fx.pool.allocated, 0);
    fx.reader.loop = NULL;
    uv_close((uv_handle_t *)&fx.writer, NULL);
    uv_close((uv_handle_t *)&fx.tick, NULL);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&fx.loop), 0);
    mt_buf_pool_destroy(&fx.pool);
}
