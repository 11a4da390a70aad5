/*
 * test_upstream.c - runtime/core/upstream.c, the upstream shell, on a real uv loop against a
 * real line-echo server on 127.0.0.1 (and a port nobody listens on): the endpoint's backoff
 * after a refused connect (no attempt before retry_at, doubling, reset by a success), the
 * connect timeout, a shared connection reused by the next request and kept when a reload keeps
 * its cluster (closed when the reload retires it), and exclusive leases: dedicated, returned
 * clean and reused, returned dirty and closed, idle ones closed after MT_UPSTREAM_IDLE_MS, and
 * the per-endpoint bound (the cluster's max_connections) refusing at once with a reason; and
 * dedicated connections (plain TCP's): outside the bound, reading stopped and restarted, tried
 * while the endpoint backs off and leaving its backoff alone.
 *
 * As test_session.c: the loop runs in the test's thread (UV_RUN_ONCE with a 5 ms timer so
 * every wait has a deadline), the worker is its minimum (loop, buffer pool, snapshot), and the
 * worker's own flush pass runs from a uv_check. Clusters come from the worker's own code
 * (mt_worker_cluster, mt_worker_swap_clusters), so a reload here is the worker's reload.
 */
#include "runtime/core/snapshot.h"
#include "runtime/core/stats.h"
#include "runtime/core/upstream.h"
#include "runtime/luajit/lua_env.h"

#include <arpa/inet.h>
#include "loop_wait.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The test proxy's connection: the shell first, as every proxy embeds it. */
typedef struct test_up {
    mt_upstream_t base;
    uint32_t replies; /* whole lines the echo server sent back */
} test_up_t;

/* One accepted connection of the echo server. */
typedef struct echo_conn {
    uv_tcp_t tcp;
    char buf[4096];
} echo_conn_t;

static struct {
    mt_worker_t w;
    uv_tcp_t server;
    uv_check_t flush;
    uv_timer_t tick;
    uint16_t port;      /* the echo server */
    uint16_t dead_port; /* nobody listens here: connects are refused */
    mt_wcluster_t *c;
    mt_wendpoint_t *ep;
    int accepts, opens, connected, errors, closes, closed, deadlines;
    uint64_t deadline_now;
    mt_upstream_event_t last_ev;
    char last_text[400];
} t;

/* ---- the test proxy -------------------------------------------------------------------------- */

static int tp_on_open(mt_upstream_t *u, void *arg)
{
    MT_UNUSED(u);
    cr_assert_eq(arg, &t, "the caller's argument reaches on_open");
    t.opens++;
    return 0;
}

static void tp_on_connected(mt_upstream_t *u)
{
    MT_UNUSED(u);
    t.connected++;
}

/* Every whole line is the reply to one request. */
static void tp_on_data(mt_upstream_t *u)
{
    test_up_t *tu = (test_up_t *)u;
    mt_buf_t *b = u->rbuf;
    char *nl;
    while ((nl = memchr(b->pos, '\n', mt_buf_unread(b))) != NULL) {
        b->pos = nl + 1;
        tu->replies++;
        if (u->inflight)
            u->inflight--;
    }
}

static void tp_on_error(mt_upstream_t *u, mt_upstream_event_t ev, const char *text)
{
    t.errors++;
    t.last_ev = ev;
    snprintf(t.last_text, sizeof(t.last_text), "%s", text);
    u->inflight = 0; /* failed */
}

static void tp_on_deadline(mt_upstream_t *u, uint64_t now_ms)
{
    MT_UNUSED(u);
    t.deadlines++;
    t.deadline_now = now_ms;
}

static void tp_on_close(mt_upstream_t *u)
{
    cr_assert_eq(u->state, MT_UPSTREAM_CLOSING);
    t.closes++;
}

static void tp_on_closed(mt_upstream_t *u)
{
    MT_UNUSED(u);
    t.closed++;
}

static const mt_upstream_ops_t tp_ops = {
    .protocol = MT_PROTO_TCP,
    .size = sizeof(test_up_t),
    .text_prefix = "meltemi: ",
    .on_open = tp_on_open,
    .on_connected = tp_on_connected,
    .on_data = tp_on_data,
    .on_error = tp_on_error,
    .on_deadline = tp_on_deadline,
    .on_close = tp_on_close,
    .on_closed = tp_on_closed,
};

/* ---- the echo server ------------------------------------------------------------------------- */

static void echo_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    MT_UNUSED(hint);
    echo_conn_t *e = h->data;
    buf->base = e->buf;
    buf->len = sizeof(e->buf);
}

static void echo_write_done(uv_write_t *req, int status)
{
    MT_UNUSED(status);
    free(req);
}

static void echo_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) {
        uv_close((uv_handle_t *)st, (uv_close_cb)free);
        return;
    }
    if (nread == 0)
        return;
    /* One write request with its copy of the bytes. */
    char *mem = malloc(sizeof(uv_write_t) + (size_t)nread);
    cr_assert_not_null(mem);
    memcpy(mem + sizeof(uv_write_t), buf->base, (size_t)nread);
    uv_buf_t out = uv_buf_init(mem + sizeof(uv_write_t), (unsigned)nread);
    uv_write((uv_write_t *)mem, st, &out, 1, echo_write_done);
}

static void echo_accept(uv_stream_t *server, int status)
{
    cr_assert_eq(status, 0);
    echo_conn_t *e = calloc(1, sizeof(*e));
    cr_assert_not_null(e);
    uv_tcp_init(server->loop, &e->tcp);
    e->tcp.data = e;
    cr_assert_eq(uv_accept(server, (uv_stream_t *)&e->tcp), 0);
    t.accepts++;
    uv_read_start((uv_stream_t *)&e->tcp, echo_alloc, echo_on_read);
}

/* ---- the fixture ----------------------------------------------------------------------------- */

static void flush_all(uv_check_t *h)
{
    mt_worker_flush(h->data);
}

static void tick_cb(uv_timer_t *h)
{
    MT_UNUSED(h);
}

/* A snapshot with one cluster "svc" (fingerprint fp, max_connections max) of one endpoint. */
static mt_snapshot_t *cluster_snapshot(const char *fp, uint16_t port, uint32_t max)
{
    char src[512];
    snprintf(src, sizeof(src),
             "return { clusters = { { name = 'svc', service = 'svc.test', protocol = 'tcp', "
             "fingerprint = '%s', connect_timeout_ms = 250, max_connections = %u, "
             "endpoints = { { address = '127.0.0.1', port = %u } } } } }",
             fp, max, port);
    lua_State *L = mt_lua_new();
    cr_assert_not_null(L);
    cr_assert_eq(luaL_dostring(L, src), 0, "%s", lua_tostring(L, -1));
    char *err = NULL;
    mt_snapshot_t *snap = mt_snapshot_from_lua(L, -1, 1, &err);
    cr_assert_not_null(snap, "%s", err ? err : "?");
    lua_close(L);
    return snap;
}

/* Applies snap as the worker's reload does for clusters; returns the worker's "svc". */
static mt_wcluster_t *apply(mt_snapshot_t *snap)
{
    mt_worker_t *w = &t.w;
    w->snap_applying = snap;
    mt_worker_swap_clusters(w, snap);
    mt_wcluster_t *c = mt_worker_cluster(w, &snap->clusters[0]);
    w->snap_applying = NULL;
    mt_snapshot_t *old = w->snap;
    w->snap = snap;
    if (old)
        mt_snapshot_unref(old);
    return c;
}

static uint16_t dead_port(void)
{
    /* Bind, read the port, close: nobody listens there afterwards. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

static void setup_with(uint32_t max)
{
    memset(&t, 0, sizeof(t));
    mt_stats_init(1);
    mt_worker_t *w = &t.w;
    w->rconns_per_endpoint = 1;
    mt_buf_pool_init(&w->pool);
    cr_assert_eq(uv_loop_init(&w->loop), 0);
    cr_assert_eq(mt_timer_wheel_init(&w->timers, &w->loop), 0);
    uv_check_init(&w->loop, &t.flush);
    t.flush.data = w;
    uv_check_start(&t.flush, flush_all);
    uv_timer_init(&w->loop, &t.tick);
    uv_timer_start(&t.tick, tick_cb, 5, 5);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    cr_assert_eq(uv_tcp_init(&w->loop, &t.server), 0);
    cr_assert_eq(uv_tcp_bind(&t.server, (const struct sockaddr *)&sa, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&t.server, 16, echo_accept), 0);
    int salen = sizeof(sa);
    uv_tcp_getsockname(&t.server, (struct sockaddr *)&sa, &salen);
    t.port = ntohs(sa.sin_port);
    t.dead_port = dead_port();
    t.c = apply(cluster_snapshot("fp1", t.port, max));
    cr_assert_not_null(t.c);
    cr_assert_eq(t.c->n_eps, 1);
    t.ep = t.c->eps[0];
}

static void upstream_setup(void)
{
    setup_with(3);
}

static void upstream_teardown(void)
{
    mt_worker_t *w = &t.w;
    for (int p = 0; p < MT_PROTO_COUNT; p++) {
        while (w->upstreams[p])
            mt_upstream_close(w->upstreams[p]);
    }
    uv_close((uv_handle_t *)&t.server, NULL);
    uv_close((uv_handle_t *)&t.flush, NULL);
    uv_close((uv_handle_t *)&t.tick, NULL);
    cr_assert_eq(mt_timer_wheel_pending(&w->timers), 0, "closed connections stop their timers");
    mt_timer_wheel_close(&w->timers);
    uv_run(&w->loop, UV_RUN_DEFAULT); /* every close callback (the echo server's too) runs */
    cr_assert_eq(uv_loop_close(&w->loop), 0, "no handle left open");
    /* Every cluster goes: retire them all, then reap (nothing is open any more). */
    for (mt_wcluster_t *c = w->clusters; c; c = c->next)
        c->retired = true;
    mt_wcluster_t *live = w->clusters;
    w->clusters = NULL;
    while (live) {
        mt_wcluster_t *c = live;
        live = c->next;
        mt_wcluster_unref(c);
        c->next = w->retired;
        w->retired = c;
    }
    mt_worker_reap_clusters(w);
    cr_assert_null(w->retired, "every cluster freed: no connection left counted");
    mt_snapshot_unref(w->snap);
    mt_buf_pool_destroy(&w->pool);
}

TestSuite(upstream, .init = upstream_setup, .fini = upstream_teardown, .timeout = 30);

/* The fixture's loop, waited on with the shared bounded helpers (loop_wait.h). */
#define run_until(cond, what) loop_run_until(&t.w.loop, (cond), (what))
#define run_for(ms) loop_run_for(&t.w.loop, (ms))

static mt_upstream_t *watched;
static uint32_t want_replies;

static bool watched_ready(void)
{
    return watched->state == MT_UPSTREAM_READY;
}

static bool watched_replied(void)
{
    return ((test_up_t *)watched)->replies >= want_replies;
}

static bool one_error(void)
{
    return t.errors > 0;
}

static bool two_errors(void)
{
    return t.errors > 1;
}

static bool all_closed(void)
{
    return t.closed == t.opens;
}

/* Sends one line on u and waits for its echo. */
static void round_trip(mt_upstream_t *u)
{
    cr_assert_eq(mt_outq_add_copy(&u->out, "PING\n", 5), 0);
    u->inflight++;
    mt_upstream_schedule(u);
    watched = u;
    want_replies = ((test_up_t *)u)->replies + 1;
    run_until(watched_replied, "the echo");
    cr_assert_eq(u->inflight, 0);
}

static mt_upstream_t *connected_shared(uint64_t key)
{
    const char *why = NULL;
    mt_upstream_t *u = mt_upstream_shared(t.ep, &tp_ops, key, &t, &why);
    cr_assert_not_null(u, "%s", why ? why : "?");
    watched = u;
    run_until(watched_ready, "the connect");
    return u;
}

static mt_upstream_t *connected_lease(void)
{
    const char *why = NULL;
    mt_upstream_t *u = mt_upstream_lease(t.ep, &tp_ops, &t, &why);
    cr_assert_not_null(u, "%s", why ? why : "?");
    watched = u;
    run_until(watched_ready, "the connect");
    return u;
}

static int64_t cluster_stat(unsigned slot)
{
    return mt_stats_sum(t.c->conf->stats, slot);
}

/* ---- backoff --------------------------------------------------------------------------------- */

Test(upstream, refused_connect_backs_off_doubling_and_success_resets_it)
{
    /* Point the endpoint at the dead port. */
    struct sockaddr_in *in = (struct sockaddr_in *)&t.ep->sa;
    in->sin_port = htons(t.dead_port);
    const char *why = NULL;
    mt_upstream_t *u = mt_upstream_shared(t.ep, &tp_ops, 0, &t, &why);
    cr_assert_not_null(u, "a connect is attempted: %s", why ? why : "?");
    cr_assert_eq(u->state, MT_UPSTREAM_CONNECTING);
    cr_assert_eq(t.c->n_rups, 1);
    run_until(one_error, "the refused connect");
    cr_assert_eq(t.last_ev, MT_UPSTREAM_CONNECT_FAILED);
    cr_assert(strstr(t.last_text, "upstream svc.test (127.0.0.1:") == t.last_text, "%s",
              t.last_text);
    cr_assert(strstr(t.last_text, "unavailable: connection refused"), "%s", t.last_text);
    cr_assert_eq(t.ep->backoff_ms, MT_UPSTREAM_BACKOFF_MIN_MS);
    uint64_t first_retry = t.ep->retry_at_ms;
    cr_assert_geq(first_retry, mt_worker_now_ms(&t.w) + 40);
    cr_assert(strncmp(t.ep->last_error, "meltemi: upstream svc.test", 26) == 0, "%s",
              t.ep->last_error);
    cr_assert(!mt_upstream_healthy(t.ep, mt_worker_now_ms(&t.w)));
    cr_assert_eq(cluster_stat(MT_ST_UPSTREAM_CX_CONNECT_FAIL), 1);
    cr_assert_eq(t.ep->pools[MT_PROTO_TCP].shared[0], NULL, "the failed one left its slot");

    /* Before retry_at: refused at once, with the last error, and no connect attempted. */
    int opens = t.opens;
    why = NULL;
    cr_assert_null(mt_upstream_shared(t.ep, &tp_ops, 0, &t, &why));
    cr_assert_eq(why, t.ep->last_error);
    cr_assert_null(mt_upstream_lease(t.ep, &tp_ops, &t, &why), "a lease backs off as well");
    cr_assert_eq(t.opens, opens, "no second attempt before retry_at");

    /* After retry_at: one new attempt, which fails again: the delay doubles. */
    uv_update_time(&t.w.loop);
    while (mt_worker_now_ms(&t.w) < first_retry)
        run_for(5);
    u = mt_upstream_shared(t.ep, &tp_ops, 0, &t, &why);
    cr_assert_not_null(u);
    cr_assert_eq(t.opens, opens + 1);
    run_until(two_errors, "the second refused connect");
    cr_assert_eq(t.ep->backoff_ms, 2 * MT_UPSTREAM_BACKOFF_MIN_MS);
    cr_assert_eq(cluster_stat(MT_ST_UPSTREAM_CX_CONNECT_FAIL), 2);

    /* It stops doubling at the maximum. */
    for (int i = 0; i < 8; i++)
        mt_upstream_backoff(t.ep, &t.w, "again");
    cr_assert_eq(t.ep->backoff_ms, MT_UPSTREAM_BACKOFF_MAX_MS);

    /* The endpoint comes back: once retry_at has passed, a connect succeeds and resets it. */
    in->sin_port = htons(t.port);
    t.ep->retry_at_ms = mt_worker_now_ms(&t.w);
    u = connected_shared(0);
    cr_assert_eq(t.ep->backoff_ms, 0, "a success resets the backoff");
    cr_assert(mt_upstream_healthy(t.ep, mt_worker_now_ms(&t.w)));
    cr_assert_eq(t.connected, 1);
    cr_assert_eq(cluster_stat(MT_ST_UPSTREAM_CX_TOTAL), 1);
    cr_assert_eq(cluster_stat(MT_ST_UPSTREAM_CX_ACTIVE), 1);
    round_trip(u);
}

Test(upstream, connect_past_its_deadline_times_out_and_backs_off)
{
    const char *why = NULL;
    mt_upstream_t *u = mt_upstream_shared(t.ep, &tp_ops, 0, &t, &why);
    cr_assert_not_null(u);
    cr_assert_eq(u->state, MT_UPSTREAM_CONNECTING);
    /* The wheel reaches the deadline before the loop had a chance to connect (a clock of the
     * test's own: one millisecond early nothing happens, at the deadline the connect ends). */
    cr_assert(mt_timer_pending(&u->connect_timer));
    mt_timer_wheel_run(&t.w.timers, u->connect_deadline_ms - 1);
    cr_assert_eq(t.errors, 0);
    mt_timer_wheel_run(&t.w.timers, u->connect_deadline_ms);
    cr_assert_eq(t.errors, 1);
    cr_assert_eq(t.last_ev, MT_UPSTREAM_CONNECT_TIMEOUT);
    cr_assert(strstr(t.last_text, "unavailable: connect timed out after 250 ms"), "%s",
              t.last_text);
    cr_assert_eq(t.ep->backoff_ms, MT_UPSTREAM_BACKOFF_MIN_MS);
    cr_assert_eq(cluster_stat(MT_ST_UPSTREAM_CX_CONNECT_FAIL), 1);
    cr_assert_eq(t.closes, 1);
    run_until(all_closed, "the close");
    cr_assert_eq(t.c->n_rups, 0);
}

Test(upstream, connected_connection_has_no_connect_timer_left)
{
    mt_upstream_t *u = connected_shared(3);
    cr_assert_not(mt_timer_pending(&u->connect_timer), "stopped at connect");
    cr_assert_eq(mt_timer_wheel_pending(&t.w.timers), 0);
}

Test(upstream, request_deadline_is_armed_lazily_and_calls_the_proxy_once)
{
    mt_upstream_t *u = connected_shared(4);
    uint64_t now = mt_worker_now_ms(&t.w);
    mt_upstream_arm_deadline(u, now + 100);
    cr_assert(mt_upstream_deadline_armed(u));
    mt_upstream_arm_deadline(u, now + 50); /* armed: the earlier arming stands */
    mt_timer_wheel_run(&t.w.timers, now + 99);
    cr_assert_eq(t.deadlines, 0, "not before its due time");
    mt_timer_wheel_run(&t.w.timers, now + 100);
    cr_assert_eq(t.deadlines, 1);
    cr_assert_eq(t.deadline_now, mt_worker_now_ms(&t.w), "called with the loop's time");
    cr_assert_not(mt_upstream_deadline_armed(u), "one shot: the proxy arms again");
    mt_upstream_arm_deadline(u, now + 200);
    cr_assert(mt_upstream_deadline_armed(u));
    mt_upstream_close(u);
    cr_assert_not(mt_upstream_deadline_armed(u), "a closing connection stops its deadline");
    mt_timer_wheel_run(&t.w.timers, now + 300);
    cr_assert_eq(t.deadlines, 1);
    run_until(all_closed, "the close");
}

/* ---- shared connections ---------------------------------------------------------------------- */

Test(upstream, shared_connection_is_reused_by_the_next_request)
{
    mt_upstream_t *u = connected_shared(7);
    round_trip(u);
    const char *why = NULL;
    cr_assert_eq(mt_upstream_shared(t.ep, &tp_ops, 7, &t, &why), u, "the same slot: the same conn");
    cr_assert_eq(mt_upstream_shared(t.ep, &tp_ops, 8, &t, &why), u, "one slot per endpoint here");
    round_trip(u);
    cr_assert_eq(t.accepts, 1, "one connection for every request");
    cr_assert_eq(t.opens, 1);
    cr_assert_eq(t.w.upstreams[MT_PROTO_TCP], u, "listed in the worker");
    cr_assert_null(t.ep->pools[MT_PROTO_REDIS].shared, "other protocols' pools untouched");
}

Test(upstream, kept_cluster_keeps_its_connection_across_a_reload)
{
    mt_upstream_t *u = connected_shared(1);
    round_trip(u);
    mt_wcluster_t *before = t.c;
    /* The same cluster again (same fingerprint) in a new snapshot. */
    mt_wcluster_t *c = apply(cluster_snapshot("fp1", t.port, 3));
    cr_assert_eq(c, before, "the worker kept the cluster");
    cr_assert_not(c->retired);
    cr_assert_eq(c->conf, &t.w.snap->clusters[0], "with the new snapshot's conf");
    t.c = c;
    mt_upstream_tick(&t.w, MT_PROTO_TCP, mt_worker_now_ms(&t.w));
    const char *why = NULL;
    cr_assert_eq(mt_upstream_shared(c->eps[0], &tp_ops, 1, &t, &why), u, "the pool survived");
    cr_assert_eq(u->state, MT_UPSTREAM_READY);
    round_trip(u);
    cr_assert_eq(t.accepts, 1, "no reconnect");
}

Test(upstream, retired_cluster_closes_its_idle_connections_after_a_reload)
{
    mt_upstream_t *u = connected_shared(1);
    round_trip(u);
    mt_wcluster_t *old = t.c;
    /* A changed definition: the old cluster is retired, a new one takes its name. */
    mt_wcluster_t *c = apply(cluster_snapshot("fp2", t.port, 3));
    cr_assert_neq(c, old);
    cr_assert(old->retired);
    /* In flight: it finishes what it owes first. */
    u->inflight = 1;
    mt_upstream_tick(&t.w, MT_PROTO_TCP, mt_worker_now_ms(&t.w));
    cr_assert_eq(u->state, MT_UPSTREAM_READY, "kept while a request is in flight");
    u->inflight = 0;
    mt_upstream_tick(&t.w, MT_PROTO_TCP, mt_worker_now_ms(&t.w));
    cr_assert_eq(t.closes, 1, "closed once idle");
    cr_assert_eq(t.errors, 0, "an orderly close, not a failure");
    run_until(all_closed, "the close");
    cr_assert_eq(old->n_rups, 0);
    mt_worker_reap_clusters(&t.w);
    cr_assert_null(t.w.retired, "the retired cluster is freed once unused");
    t.c = c;
    t.ep = c->eps[0];
    const char *why = NULL;
    cr_assert_not_null(mt_upstream_shared(t.ep, &tp_ops, 1, &t, &why), "the new cluster connects");
}

/* ---- exclusive leases ------------------------------------------------------------------------ */

Test(upstream, a_lease_is_dedicated)
{
    mt_upstream_t *shared = connected_shared(0);
    mt_upstream_t *a = connected_lease();
    mt_upstream_t *b = connected_lease();
    cr_assert_neq(a, b, "a second lease gets another connection");
    cr_assert_neq(a, shared);
    cr_assert_neq(b, shared);
    cr_assert_eq(a->kind, MT_UPSTREAM_LEASED);
    cr_assert_eq(b->kind, MT_UPSTREAM_LEASED);
    cr_assert_eq(t.ep->pools[MT_PROTO_TCP].n_exclusive, 2);
    const char *why = NULL;
    cr_assert_eq(mt_upstream_shared(t.ep, &tp_ops, 0, &t, &why), shared,
                 "leases stay out of slots");
    round_trip(a);
    round_trip(b);
    cr_assert_eq(t.accepts, 3);
}

Test(upstream, returned_clean_is_reused_by_the_next_lease)
{
    mt_upstream_t *a = connected_lease();
    round_trip(a);
    mt_upstream_return(a, true);
    cr_assert_eq(a->kind, MT_UPSTREAM_IDLE);
    cr_assert_eq(t.ep->pools[MT_PROTO_TCP].idle, a);
    cr_assert_eq(t.closes, 0);
    const char *why = NULL;
    mt_upstream_t *b = mt_upstream_lease(t.ep, &tp_ops, &t, &why);
    cr_assert_eq(b, a, "the idle connection is leased again");
    cr_assert_eq(b->kind, MT_UPSTREAM_LEASED);
    cr_assert_null(t.ep->pools[MT_PROTO_TCP].idle);
    round_trip(b);
    cr_assert_eq(t.accepts, 1, "no new connection");
    cr_assert_eq(t.ep->pools[MT_PROTO_TCP].n_exclusive, 1);
}

Test(upstream, returned_dirty_is_closed)
{
    mt_upstream_t *a = connected_lease();
    mt_upstream_return(a, false);
    cr_assert_eq(t.closes, 1, "a connection in an unknown state is closed");
    cr_assert_eq(t.errors, 0);
    cr_assert_eq(t.ep->pools[MT_PROTO_TCP].n_exclusive, 0);
    cr_assert_null(t.ep->pools[MT_PROTO_TCP].idle);
    run_until(all_closed, "the close");
    mt_upstream_t *b = connected_lease();
    cr_assert_eq(t.accepts, 2, "the next lease connects anew");
    round_trip(b);
}

Test(upstream, returned_with_a_request_in_flight_is_closed)
{
    mt_upstream_t *a = connected_lease();
    a->inflight = 1;
    mt_upstream_return(a, true);
    cr_assert_eq(t.closes, 1, "not clean, whatever the lessee says");
    a->inflight = 0;
}

Test(upstream, idle_exclusive_connections_close_after_the_idle_time)
{
    mt_upstream_t *a = connected_lease();
    mt_upstream_return(a, true);
    uint64_t now = mt_worker_now_ms(&t.w);
    mt_upstream_tick(&t.w, MT_PROTO_TCP, now + MT_UPSTREAM_IDLE_MS - 1);
    cr_assert_eq(t.closes, 0, "kept before the idle time");
    mt_upstream_tick(&t.w, MT_PROTO_TCP, now + MT_UPSTREAM_IDLE_MS);
    cr_assert_eq(t.closes, 1);
    cr_assert_null(t.ep->pools[MT_PROTO_TCP].idle);
    cr_assert_eq(t.ep->pools[MT_PROTO_TCP].n_exclusive, 0);
}

Test(upstream, the_bound_refuses_a_lease_at_once_with_a_reason)
{
    mt_upstream_t *l[3];
    for (int i = 0; i < 3; i++)
        l[i] = connected_lease();
    mt_upstream_t *shared = connected_shared(0);
    int accepts = t.accepts;
    const char *why = NULL;
    cr_assert_null(mt_upstream_lease(t.ep, &tp_ops, &t, &why), "max_connections = 3 reached");
    cr_assert_not_null(why);
    char want[200];
    snprintf(want, sizeof(want),
             "meltemi: upstream svc.test (127.0.0.1:%u): all 3 exclusive connections are in use "
             "(connectionPool.tcp.maxConnections)",
             t.port);
    cr_assert_str_eq(why, want);
    run_for(20);
    cr_assert_eq(t.accepts, accepts, "nothing connected, nothing waits");
    /* Shared traffic is not held up by the bound. */
    round_trip(shared);
    /* Returned (clean) or closed, a slot frees up. */
    mt_upstream_return(l[1], true);
    cr_assert_eq(mt_upstream_lease(t.ep, &tp_ops, &t, &why), l[1]);
    mt_upstream_return(l[2], false);
    cr_assert_not_null(mt_upstream_lease(t.ep, &tp_ops, &t, &why), "%s", why);
    MT_UNUSED(l[0]);
}

/* ---- dedicated connections (plain TCP's, one per client) --------------------------------------
 */

static const mt_upstream_ops_t tp_dedicated_ops = {
    .protocol = MT_PROTO_TCP,
    .size = sizeof(test_up_t),
    .text_prefix = "",
    .quiet = true,
    .ignore_backoff = true,
    .on_open = tp_on_open,
    .on_connected = tp_on_connected,
    .on_data = tp_on_data,
    .on_error = tp_on_error,
    .on_deadline = tp_on_deadline,
    .on_close = tp_on_close,
    .on_closed = tp_on_closed,
};

static bool watched_has_reply(void)
{
    return ((test_up_t *)watched)->replies >= want_replies;
}

Test(upstream, a_dedicated_connection_is_outside_the_bound_and_pausable)
{
    for (int i = 0; i < 3; i++)
        connected_lease();
    const char *why = NULL;
    cr_assert_null(mt_upstream_lease(t.ep, &tp_ops, &t, &why), "max_connections = 3 reached");
    mt_upstream_t *d = mt_upstream_connect(t.ep, &tp_dedicated_ops, &t, &why);
    cr_assert_not_null(d, "the bound is the leases' only: %s", why ? why : "?");
    cr_assert_eq(d->kind, MT_UPSTREAM_DEDICATED);
    watched = d;
    run_until(watched_ready, "the dedicated connect");
    round_trip(d);
    /* Reading stopped: the echo waits in the socket until reading starts again. */
    mt_upstream_read_stop(d);
    cr_assert_eq(mt_outq_add_copy(&d->out, "PING\n", 5), 0);
    mt_upstream_schedule(d);
    want_replies = ((test_up_t *)d)->replies + 1;
    run_for(30);
    cr_assert(!watched_has_reply(), "nothing read while stopped");
    mt_upstream_read_start(d);
    run_until(watched_has_reply, "the echo after reading restarts");
    mt_upstream_close(d);
    cr_assert_eq(t.ep->pools[MT_PROTO_TCP].n_exclusive, 3, "a dedicated one counts nowhere");
}

Test(upstream, a_dedicated_connection_ignores_the_backoff_and_leaves_it_alone)
{
    struct sockaddr_in *in = (struct sockaddr_in *)&t.ep->sa;
    in->sin_port = htons(t.dead_port);
    uint64_t retry_at = mt_worker_now_ms(&t.w) + 60000;
    t.ep->retry_at_ms = retry_at;
    t.ep->backoff_ms = MT_UPSTREAM_BACKOFF_MAX_MS;
    snprintf(t.ep->last_error, sizeof(t.ep->last_error), "backing off");
    const char *why = NULL;
    cr_assert_null(mt_upstream_lease(t.ep, &tp_ops, &t, &why), "a lease backs off");
    mt_upstream_t *d = mt_upstream_connect(t.ep, &tp_dedicated_ops, &t, &why);
    cr_assert_not_null(d, "tried whatever the backoff says: %s", why ? why : "?");
    run_until(one_error, "the refused connect");
    cr_assert_eq(t.last_ev, MT_UPSTREAM_CONNECT_FAILED);
    cr_assert(strstr(t.last_text, "unavailable: connection refused"), "%s", t.last_text);
    cr_assert_eq(cluster_stat(MT_ST_UPSTREAM_CX_CONNECT_FAIL), 1);
    cr_assert_eq(t.ep->retry_at_ms, retry_at, "the failure does not move the backoff");
    cr_assert_eq(t.ep->backoff_ms, MT_UPSTREAM_BACKOFF_MAX_MS);
    cr_assert_str_eq(t.ep->last_error, "backing off");
    run_until(all_closed, "the close");
}
