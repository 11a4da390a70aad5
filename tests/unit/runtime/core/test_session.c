/*
 * test_session.c - runtime/core/session.c, the client shell, on a real uv loop with a TCP
 * listener on 127.0.0.1 and a plain client socket: accepting into a test proxy's session
 * (mt_session_ops_t), on_data seeing the bytes, replies through s->out, reading paused past
 * max_output and resumed once the client has read, EOF finishing only after what is owed is
 * written, and close calling on_close and on_closed exactly once, releasing everything.
 *
 * The loop runs in the test's thread (UV_RUN_ONCE with a 5 ms timer, so every wait has a
 * deadline); the client socket is non-blocking. A session needs only part of a worker: its
 * loop, buffer pool, live snapshot (the listener's conf must be one of its listeners) and
 * client id counter. What mt_worker_start adds besides (thread, Lua state, mailbox) is not
 * needed, but its flush pass is: the fixture runs the worker's own (mt_worker_flush) from a
 * uv_check handle, and its timer wheel, for the auth and idle timeouts.
 */
#include "runtime/core/session.h"
#include "runtime/core/snapshot.h"
#include "runtime/core/stats.h"
#include "runtime/luajit/lua_env.h"

#include <arpa/inet.h>
#include "loop_wait.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BIG_REPLY (4u << 20)

/* The test proxy's session: the shell first, as every proxy embeds it. */
typedef struct test_session {
    mt_session_t base;
    uint32_t lines;
} test_session_t;

static struct {
    mt_worker_t w;
    mt_wlistener_t l;
    uv_tcp_t server;
    uv_check_t flush;
    uv_timer_t tick;
    uint16_t port;
    int client;
    uint32_t max_output; /* given to accepted sessions; 0: the shell's default */
    mt_session_t *s;     /* the accepted session, until on_closed */
    int accepts, on_data_calls, on_close_calls, on_closed_calls;
    bool closed_before_on_close; /* on_closed had run when on_close did: wrong order */
    uint64_t on_close_ms;        /* loop time of on_close */
    char seen[256];              /* every byte on_data was shown, in order */
    size_t seen_len;
    bool close_on_eof; /* what tp_on_eof answers */
    int on_eof_calls;
} t;

/* ---- the test proxy -------------------------------------------------------------------------- */

/* Handles every whole line: "HOLD" is a request waiting on an upstream (no reply yet), "BIG"
 * gets a BIG_REPLY-byte reply, anything else is echoed back after a '+'. A partial line stays
 * unread in s->rbuf. */
static void tp_on_data(mt_session_t *s)
{
    test_session_t *ts = (test_session_t *)s;
    t.on_data_calls++;
    mt_buf_t *b = s->rbuf;
    size_t n = mt_buf_unread(b);
    cr_assert_lt(t.seen_len + n, sizeof(t.seen));
    char *nl;
    while ((nl = memchr(b->pos, '\n', mt_buf_unread(b))) != NULL) {
        size_t len = (size_t)(nl - b->pos) + 1;
        memcpy(t.seen + t.seen_len, b->pos, len);
        t.seen_len += len;
        if (len == 5 && memcmp(b->pos, "HOLD\n", 5) == 0) {
            s->pending++;
        } else if (len == 4 && memcmp(b->pos, "BIG\n", 4) == 0) {
            char *big = malloc(BIG_REPLY);
            memset(big, 'b', BIG_REPLY);
            cr_assert_eq(mt_outq_add_copy(&s->out, big, BIG_REPLY), 0);
            free(big);
        } else {
            cr_assert_eq(mt_outq_add_copy(&s->out, "+", 1), 0);
            cr_assert_eq(mt_outq_add_ref(&s->out, b, b->pos, len), 0);
        }
        b->pos += len;
        ts->lines++;
    }
    mt_worker_schedule_flush(s->w, &s->out);
    mt_session_check_bounds(s);
}

static void tp_on_close(mt_session_t *s)
{
    cr_assert_eq(s, t.s);
    t.on_close_calls++;
    t.on_close_ms = uv_now(&t.w.loop);
    t.closed_before_on_close = t.on_closed_calls > 0;
}

static void tp_on_closed(mt_session_t *s)
{
    cr_assert_eq(s, t.s);
    t.on_closed_calls++;
    t.s = NULL;
}

static bool tp_on_eof(mt_session_t *s)
{
    cr_assert_eq(s, t.s);
    t.on_eof_calls++;
    return t.close_on_eof;
}

static const mt_session_ops_t tp_ops = {
    .on_data = tp_on_data, .on_close = tp_on_close, .on_closed = tp_on_closed, .on_eof = tp_on_eof};

static void tp_accept(uv_stream_t *server, int status)
{
    cr_assert_eq(status, 0);
    test_session_t *ts = calloc(1, sizeof(*ts));
    cr_assert_not_null(ts);
    if (mt_session_accept(&ts->base, &t.l, server, &tp_ops) != 0)
        return; /* the shell frees ts */
    t.accepts++;
    t.s = &ts->base;
    if (t.max_output) {
        /* Small socket buffers too, so the kernel cannot absorb a big reply. */
        int sz = 16384;
        uv_send_buffer_size((uv_handle_t *)&ts->base.tcp, &sz);
        ts->base.max_output = t.max_output;
    }
    mt_session_resume(&ts->base);
}

/* ---- the fixture: a worker's minimum, a listener, a client ------------------------------------
 */

/* The worker's flush pass, as the worker runs it after each loop iteration. */
static void flush_all(uv_check_t *h)
{
    mt_worker_flush(h->data);
}

static void tick_cb(uv_timer_t *h)
{
    MT_UNUSED(h);
}

static mt_snapshot_t *one_listener_snapshot(void)
{
    lua_State *L = mt_lua_new();
    cr_assert_not_null(L);
    cr_assert_eq(luaL_dostring(L, "return { listeners = { { name = '127.0.0.1:1', address = "
                                  "'127.0.0.1', port = 1, protocol = 'tcp', fingerprint = 'f' "
                                  "} } }"),
                 0);
    char *err = NULL;
    mt_snapshot_t *snap = mt_snapshot_from_lua(L, -1, 1, &err);
    cr_assert_not_null(snap, "%s", err ? err : "?");
    lua_close(L);
    return snap;
}

static void session_setup(void)
{
    memset(&t, 0, sizeof(t));
    t.client = -1;
    mt_stats_init(1);
    mt_worker_t *w = &t.w;
    w->next_client_id = 1;
    mt_buf_pool_init(&w->pool);
    cr_assert_eq(uv_loop_init(&w->loop), 0);
    cr_assert_eq(mt_timer_wheel_init(&w->timers, &w->loop), 0);
    w->snap = one_listener_snapshot();
    t.l.w = w;
    t.l.conf = &w->snap->listeners[0];
    t.l.cluster = NULL; /* no default destination: the shell takes a reference only if any */
    uv_check_init(&w->loop, &t.flush);
    t.flush.data = w;
    uv_check_start(&t.flush, flush_all);
    uv_timer_init(&w->loop, &t.tick);
    uv_timer_start(&t.tick, tick_cb, 5, 5);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    cr_assert_eq(uv_tcp_init(&w->loop, &t.server), 0);
    cr_assert_eq(uv_tcp_bind(&t.server, (const struct sockaddr *)&sa, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&t.server, 16, tp_accept), 0);
    int salen = sizeof(sa);
    uv_tcp_getsockname(&t.server, (struct sockaddr *)&sa, &salen);
    t.port = ntohs(sa.sin_port);
}

static void session_teardown(void)
{
    if (t.client >= 0)
        close(t.client);
    if (t.s)
        mt_session_close(t.s);
    uv_close((uv_handle_t *)&t.server, NULL);
    uv_close((uv_handle_t *)&t.flush, NULL);
    uv_close((uv_handle_t *)&t.tick, NULL);
    cr_assert_eq(mt_timer_wheel_pending(&t.w.timers), 0, "a closed session stops its timer");
    mt_timer_wheel_close(&t.w.timers);
    uv_run(&t.w.loop, UV_RUN_DEFAULT);
    uv_loop_close(&t.w.loop);
    mt_snapshot_unref(t.w.snap);
    mt_buf_pool_destroy(&t.w.pool);
}

TestSuite(session, .init = session_setup, .fini = session_teardown, .timeout = 30);

/* The fixture's loop, waited on with the shared bounded helpers (loop_wait.h). */
#define run_until(cond, what) loop_run_until(&t.w.loop, (cond), (what))
#define run_for(ms) loop_run_for(&t.w.loop, (ms))

static bool accepted(void)
{
    return t.accepts > 0;
}

static bool closed(void)
{
    return t.on_closed_calls > 0;
}

static void client_connect(bool small_rcvbuf)
{
    t.client = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(t.client, 0);
    if (small_rcvbuf) {
        int sz = 16384;
        setsockopt(t.client, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(t.port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert_eq(connect(t.client, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
    run_until(accepted, "the accept");
}

static void client_send(const char *s)
{
    size_t n = strlen(s);
    cr_assert_eq(send(t.client, s, n, 0), (ssize_t)n);
}

/* Reads exactly n bytes (running the loop meanwhile, so the session can write them), or
 * until EOF; returns how many came. */
static size_t client_read(char *out, size_t n)
{
    size_t got = 0;
    uint64_t deadline = loop_wait_now_ms() + 5000;
    while (got < n && loop_wait_now_ms() < deadline) {
        ssize_t r = recv(t.client, out + got, n - got, MSG_DONTWAIT);
        if (r == 0)
            break;
        if (r > 0)
            got += (size_t)r;
        else
            uv_run(&t.w.loop, UV_RUN_ONCE);
    }
    return got;
}

/* True once the client sees EOF (the session closed the connection). */
static bool client_sees_eof(void)
{
    char c;
    uint64_t deadline = loop_wait_now_ms() + 5000;
    while (loop_wait_now_ms() < deadline) {
        ssize_t r = recv(t.client, &c, 1, MSG_DONTWAIT);
        if (r == 0)
            return true;
        if (r > 0)
            return false; /* bytes nobody expected */
        uv_run(&t.w.loop, UV_RUN_ONCE);
    }
    return false;
}

static int64_t listener_stat(unsigned slot)
{
    return mt_stats_sum(t.l.conf->stats, slot);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static bool saw_hello(void)
{
    return t.seen_len >= 6;
}

Test(session, accept_lists_the_session_and_on_data_sees_the_bytes)
{
    client_connect(false);
    mt_session_t *s = t.s;
    cr_assert_not_null(s);
    cr_assert_eq(t.w.n_sessions, 1);
    cr_assert_eq(t.w.sessions, &s->link, "listed in the worker (drain and reload walk this list)");
    cr_assert_eq(s->w, &t.w);
    cr_assert_eq(s->conf, t.l.conf);
    cr_assert_eq(s->snap, t.w.snap);
    cr_assert_eq(t.w.snap->refs, 2, "the session holds its snapshot");
    cr_assert_eq(s->li, 1, "1-based index of its listener");
    cr_assert_eq(s->ops, &tp_ops);
    cr_assert_eq(s->max_output, MT_SESSION_MAX_OUTPUT);
    cr_assert(s->reading);
    cr_assert_eq(listener_stat(MT_ST_DOWNSTREAM_CX_TOTAL), 1);
    cr_assert_eq(listener_stat(MT_ST_DOWNSTREAM_CX_ACTIVE), 1);
    struct sockaddr_in me;
    socklen_t melen = sizeof(me);
    getsockname(t.client, (struct sockaddr *)&me, &melen);
    char want[64], peer[64];
    snprintf(want, sizeof(want), "127.0.0.1:%u", ntohs(me.sin_port));
    cr_assert_str_eq(mt_session_peer(s, peer, sizeof(peer)), want);

    client_send("hello\n");
    run_until(saw_hello, "on_data");
    cr_assert_eq(t.seen_len, 6);
    cr_assert(memcmp(t.seen, "hello\n", 6) == 0);
    cr_assert_null(s->rbuf, "everything handled: the read chunk went back");
    char got[16] = {0};
    cr_assert_eq(client_read(got, 7), 7);
    cr_assert_str_eq(got, "+hello\n", "the reply went out through s->out");
    cr_assert_eq(mt_outq_pending(&s->out), 0);
}

static bool saw_two_bytes(void)
{
    return t.on_data_calls >= 1;
}

static bool saw_ping(void)
{
    return t.seen_len >= 5;
}

Test(session, a_partial_frame_stays_in_the_read_buffer_until_the_rest_comes)
{
    client_connect(false);
    client_send("PI");
    run_until(saw_two_bytes, "on_data");
    cr_assert_eq(t.seen_len, 0, "no whole line yet");
    cr_assert_not_null(t.s->rbuf);
    cr_assert_eq(mt_buf_unread(t.s->rbuf), 2, "the unread bytes are kept");
    client_send("NG\n");
    run_until(saw_ping, "the rest of the line");
    cr_assert(memcmp(t.seen, "PING\n", 5) == 0);
    char got[16] = {0};
    cr_assert_eq(client_read(got, 6), 6);
    cr_assert_str_eq(got, "+PING\n");
}

static bool paused(void)
{
    return t.s && !t.s->reading;
}

static bool resumed_and_saw_after(void)
{
    return t.s && t.s->reading && t.seen_len >= 10;
}

Test(session, reading_pauses_past_max_output_and_resumes_once_the_client_reads)
{
    t.max_output = 65536;
    client_connect(true);
    client_send("BIG\n");
    run_until(paused, "reading to pause");
    cr_assert_gt(mt_outq_pending(&t.s->out), t.max_output, "paused because of the reply owed");
    int calls = t.on_data_calls;
    client_send("after\n");
    run_for(100);
    cr_assert_eq(t.on_data_calls, calls, "paused: the new bytes are not read");
    cr_assert_eq(t.seen_len, 4);
    char *got = malloc(BIG_REPLY + 7);
    cr_assert_eq(client_read(got, BIG_REPLY), BIG_REPLY, "the whole reply arrives");
    cr_assert_eq(got[0], 'b');
    cr_assert_eq(got[BIG_REPLY - 1], 'b');
    run_until(resumed_and_saw_after, "reading to resume");
    cr_assert(memcmp(t.seen + 4, "after\n", 6) == 0, "the bytes sent while paused come through");
    cr_assert_eq(client_read(got, 7), 7);
    cr_assert(memcmp(got, "+after\n", 7) == 0, "and are answered after the big reply");
    free(got);
}

Test(session, reading_pauses_at_the_bound_of_requests_in_flight)
{
    client_connect(false);
    mt_session_t *s = t.s;
    s->pending = MT_SESSION_MAX_PENDING;
    mt_session_check_bounds(s);
    cr_assert_not(s->reading, "too many requests in flight");
    s->pending = MT_SESSION_MAX_PENDING / 2 + 1;
    mt_session_resume(s);
    cr_assert_not(s->reading, "not until the count is back to half the bound");
    s->pending = MT_SESSION_MAX_PENDING / 2;
    mt_session_resume(s);
    cr_assert(s->reading);
    s->pending = 0;
}

static bool saw_hold(void)
{
    return t.s && t.s->pending == 1;
}

static bool finishing(void)
{
    return t.s && t.s->finishing;
}

Test(session, eof_finishes_only_after_the_replies_owed_are_written)
{
    client_connect(false);
    client_send("HOLD\n");
    shutdown(t.client, SHUT_WR);
    run_until(finishing, "the EOF");
    mt_session_t *s = t.s;
    cr_assert_eq(s->pending, 1);
    cr_assert_not(s->reading);
    run_for(50);
    cr_assert_eq(t.on_close_calls, 0, "a reply is still owed: the connection stays open");
    cr_assert_eq(t.w.n_sessions, 1);
    /* The upstream answers: the proxy queues the reply and counts the request done. */
    cr_assert_eq(mt_outq_add_copy(&s->out, "+late\n", 6), 0);
    s->pending--;
    mt_worker_schedule_flush(s->w, &s->out);
    run_until(closed, "the close after the last reply");
    char got[16] = {0};
    cr_assert_eq(client_read(got, 6), 6);
    cr_assert_str_eq(got, "+late\n", "the reply owed is written before the close");
    cr_assert(client_sees_eof());
    cr_assert_eq(t.on_close_calls, 1);
    cr_assert_eq(t.on_closed_calls, 1);
    cr_assert_eq(t.on_data_calls, 1, "nothing read after the EOF");
}

Test(session, eof_closes_at_once_when_on_eof_says_so_even_with_replies_owed)
{
    /* Redis's session says so for a client blocked in BLPOP: its reply may never come. */
    t.close_on_eof = true;
    client_connect(false);
    client_send("HOLD\n");
    run_until(saw_hold, "the HOLD");
    shutdown(t.client, SHUT_WR);
    run_until(closed, "the close at the EOF");
    cr_assert_eq(t.on_eof_calls, 1);
    cr_assert_eq(t.on_close_calls, 1, "closed although a reply was owed");
    cr_assert(client_sees_eof());
}

Test(session, close_calls_on_close_then_on_closed_exactly_once_and_releases_everything)
{
    client_connect(false);
    client_send("x\n");
    run_until(saw_two_bytes, "on_data");
    mt_session_t *s = t.s;
    cr_assert_eq(mt_outq_add_copy(&s->out, "unsent", 6), 0); /* owed, never flushed */
    mt_worker_schedule_flush(s->w, &s->out);
    mt_session_close(s);
    cr_assert_eq(t.on_close_calls, 1, "on_close runs at once, the handle still open");
    cr_assert_eq(t.on_closed_calls, 0);
    cr_assert_null(t.w.flush_head, "the closing session's output is off the flush list");
    mt_session_close(s); /* a second close, as an error path would, is a no-op */
    cr_assert_eq(t.on_close_calls, 1);
    run_until(closed, "the handle to close");
    run_for(20);
    cr_assert_eq(t.on_close_calls, 1);
    cr_assert_eq(t.on_closed_calls, 1);
    cr_assert_not(t.closed_before_on_close);
    cr_assert_eq(t.w.n_sessions, 0, "off the worker's list");
    cr_assert_null(t.w.sessions);
    cr_assert_eq(t.w.snap->refs, 1, "the snapshot reference is returned");
    cr_assert_eq(listener_stat(MT_ST_DOWNSTREAM_CX_ACTIVE), 0);
    cr_assert_eq(listener_stat(MT_ST_DOWNSTREAM_CX_TOTAL), 1);
    cr_assert_eq(t.w.pool.allocated, 0, "read chunk and output chunks all back in the pool");
    char got[16];
    size_t n = client_read(got, sizeof(got));
    cr_assert_eq(n, 3, "the echo written before the close arrives, nothing after it");
    cr_assert(memcmp(got, "+x\n", 3) == 0);
}

Test(session, an_idle_session_closes_at_its_idle_timeout_not_before)
{
    client_connect(false);
    mt_session_set_timeouts(t.s, 0, 80);
    client_send("x\n");
    run_until(saw_two_bytes, "on_data");
    uint64_t active = t.s->active_ms; /* the read, or the write of its echo after it */
    run_until(closed, "the idle timeout");
    cr_assert_geq(t.on_close_ms, active + 80, "not before the idle timeout");
    cr_assert_eq(listener_stat(MT_ST_IDLE_TIMEOUTS), 1);
    cr_assert_eq(listener_stat(MT_ST_AUTH_TIMEOUTS), 0);
    char got[3];
    cr_assert_eq(client_read(got, sizeof(got)), 3, "the echo, then");
    cr_assert(client_sees_eof());
}

Test(session, a_request_in_flight_is_not_idle)
{
    client_connect(false);
    mt_session_set_timeouts(t.s, 0, 40);
    client_send("HOLD\n");
    run_for(150);
    cr_assert_eq(t.on_close_calls, 0, "waiting on an upstream is not idle");
    t.s->pending--; /* the upstream answered */
    uint64_t answered = uv_now(&t.w.loop);
    run_until(closed, "the idle timeout");
    cr_assert_geq(t.on_close_ms, answered, "idle only after the reply");
    cr_assert_eq(listener_stat(MT_ST_IDLE_TIMEOUTS), 1);
}

Test(session, an_unauthenticated_session_closes_at_its_auth_timeout)
{
    client_connect(false);
    mt_session_set_timeouts(t.s, 60, 0);
    uint64_t accepted_ms = t.s->accepted_ms;
    client_send("x\n"); /* traffic does not help: only authenticating does */
    run_until(closed, "the auth timeout");
    cr_assert_geq(t.on_close_ms, accepted_ms + 60, "not before the auth timeout");
    cr_assert_eq(listener_stat(MT_ST_AUTH_TIMEOUTS), 1);
}

Test(session, an_authenticated_session_outlives_the_auth_timeout)
{
    client_connect(false);
    mt_session_set_timeouts(t.s, 40, 0);
    mt_session_authenticated(t.s);
    run_for(150);
    cr_assert_eq(t.on_close_calls, 0);
    cr_assert_eq(listener_stat(MT_ST_AUTH_TIMEOUTS), 0);
}
