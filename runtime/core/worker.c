/*
 * worker.c - worker threads: loop setup, the mailbox from the main thread, listeners,
 * write batching (one flush pass per loop iteration) and drain.
 */
#include "runtime/core/worker.h"

#include "runtime/core/log.h"
#include "runtime/core/proxy.h"
#include "runtime/core/tls.h"
#include "runtime/luajit/lua_env.h"

#include <lauxlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t mt_worker_now_ms(mt_worker_t *w)
{
    return uv_now(&w->loop);
}

void mt_worker_unschedule_flush(mt_worker_t *w, mt_outq_t *q)
{
    if (!q->flush_listed)
        return;
    for (mt_outq_t **pp = &w->flush_head; *pp; pp = &(*pp)->flush_next) {
        if (*pp == q) {
            *pp = q->flush_next;
            break;
        }
    }
    q->flush_listed = false;
    q->flush_next = NULL;
}

/* Runs after the I/O callbacks of each loop iteration: one writev per connection. */
void mt_worker_flush(mt_worker_t *w)
{
    while (w->flush_head) {
        mt_outq_t *q = w->flush_head;
        w->flush_head = q->flush_next;
        q->flush_listed = false;
        q->flush_next = NULL;
        int rc = mt_outq_flush(q);
        if (rc < 0 && q->on_done)
            q->on_done(q, rc);
    }
    if (w->alog.len)
        mt_alog_flush(&w->alog);
    if (w->trace.len)
        mt_trace_flush(&w->trace, w->now_ns, false);
}

static void worker_flush(uv_check_t *h)
{
    mt_worker_flush(h->data);
}

/* Timers (held replies, buffered flushes, timeouts) queue writes too: flush them before the
 * loop blocks, not after the next wake-up. */
static void worker_flush_before_poll(uv_prepare_t *h)
{
    mt_worker_t *w = h->data;
    mt_worker_flush(w);
    w->now_stale = true; /* the loop polls next: what it wakes up for is at a new time */
}

void mt_worker_session_add(mt_worker_t *w, mt_session_link_t *s)
{
    s->prev = NULL;
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->n_sessions++;
}

void mt_worker_session_remove(mt_worker_t *w, mt_session_link_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    w->n_sessions--;
    if (w->draining)
        mt_worker_maybe_finish(w);
}

/* ---- clusters ---------------------------------------------------------------------------- */

static mt_wcluster_t *wcluster_new(mt_worker_t *w, mt_cluster_conf_t *conf)
{
    mt_wcluster_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->conf = conf;
    c->snap = mt_snapshot_ref(w->snap_applying);
    c->w = w;
    c->refs = 1;
    c->n_eps = conf->n_endpoints;
    c->eps = calloc(c->n_eps ? c->n_eps : 1, sizeof(*c->eps));
    if (!c->eps) {
        free(c);
        return NULL;
    }
    for (uint32_t i = 0; i < c->n_eps; i++) {
        const mt_endpoint_conf_t *e = &conf->endpoints[i];
        c->eps[i] =
            mt_wendpoint_new(c, e->address ? e->address : "?", e->port, &e->sa, e->resolve_error);
        c->eps[i]->conf_index = i;
    }
    c->next = w->clusters;
    w->clusters = c;
    return c;
}

mt_wendpoint_t *mt_wendpoint_new(mt_wcluster_t *c, const char *address, uint16_t port,
                                 const struct sockaddr_storage *sa, const char *resolve_error)
{
    mt_wendpoint_t *ep = calloc(1, sizeof(*ep));
    if (!ep)
        abort(); /* start-up or reload time only; nothing sensible to serve without it */
    snprintf(ep->address, sizeof(ep->address), "%s", address);
    ep->port = port;
    if (sa)
        ep->sa = *sa;
    if (resolve_error)
        snprintf(ep->resolve_error, sizeof(ep->resolve_error), "%s", resolve_error);
    ep->cluster = c;
    ep->conf_index = UINT32_MAX;
    return ep;
}

void mt_wendpoint_free(mt_wendpoint_t *ep)
{
    for (int p = 0; p < MT_UPSTREAM_POOLS; p++)
        free(ep->pools[p].shared);
    mt_tls_session_free(ep->tls_session);
    free(ep);
}

void mt_wcluster_ref(mt_wcluster_t *c)
{
    if (c)
        c->refs++;
}

static void wcluster_free(mt_wcluster_t *c)
{
    const mt_proxy_ops_t *ops = mt_proxy_for(c->conf->protocol);
    if (ops->cluster_free)
        ops->cluster_free(c);
    for (uint32_t i = 0; i < c->n_eps; i++)
        mt_wendpoint_free(c->eps[i]);
    free(c->eps);
    mt_snapshot_unref(c->snap);
    free(c);
}

void mt_wcluster_unref(mt_wcluster_t *c)
{
    if (c && c->refs > 0)
        c->refs--;
}

void mt_worker_reap_clusters(mt_worker_t *w)
{
    for (mt_wcluster_t **pp = &w->retired; *pp;) {
        mt_wcluster_t *c = *pp;
        if (c->refs == 0 && c->n_rups == 0) {
            *pp = c->next;
            wcluster_free(c);
        } else {
            pp = &c->next;
        }
    }
}

mt_wcluster_t *mt_worker_cluster(mt_worker_t *w, mt_cluster_conf_t *conf)
{
    if (!conf)
        return NULL;
    for (mt_wcluster_t *c = w->clusters; c; c = c->next) {
        if (c->conf == conf)
            return c;
    }
    return wcluster_new(w, conf);
}

/* ---- listeners --------------------------------------------------------------------------- */

/* Over the listener's cap: take the connection off the backlog and close it at once. */
static void listener_refuse(mt_wlistener_t *l, uv_stream_t *server)
{
    uv_tcp_t *c = malloc(sizeof(*c));
    if (!c)
        return;
    uv_tcp_init(&l->w->loop, c);
    if (uv_accept(server, (uv_stream_t *)c) == 0) {
        mt_stat_add(l->conf->stats, l->w->id, MT_ST_DOWNSTREAM_CX_OVERFLOW, 1);
        mt_debug("listener %s: %u connections open (maxConnections): closing a new one",
                 l->conf->name, l->conf->max_connections);
    }
    uv_close((uv_handle_t *)c, (uv_close_cb)free);
}

static void listener_on_connection(uv_stream_t *server, int status)
{
    mt_wlistener_t *l = server->data;
    if (status < 0) {
        mt_warn("listener %s: accept: %s", l->conf->name, uv_strerror(status));
        return;
    }
    if (l->w->draining)
        return;
    uint32_t max = l->conf->max_connections;
    if (max && mt_stats_sum(l->conf->stats, MT_ST_DOWNSTREAM_CX_ACTIVE) >= (int64_t)max) {
        listener_refuse(l, server); /* sums other workers' shards: a cap, not an exact count */
        return;
    }
    mt_proxy_for(l->conf->protocol)->accept(l, server);
}

static void listener_closed(uv_handle_t *h)
{
    free(h->data);
}

static void listener_close(mt_wlistener_t *l)
{
    if (l->closing)
        return;
    l->closing = true;
    uv_close((uv_handle_t *)&l->tcp, listener_closed);
}

static int listener_open(mt_worker_t *w, mt_listener_conf_t *conf, int fd)
{
    mt_wlistener_t *l = calloc(1, sizeof(*l));
    if (!l)
        return -1;
    l->w = w;
    l->conf = conf;
    l->cluster = mt_worker_cluster(w, conf->cluster);
    mt_wcluster_ref(l->cluster);
    uv_tcp_init(&w->loop, &l->tcp);
    l->tcp.data = l;
    if (fd == MT_LISTENER_FD_VIRTUAL) { /* matched by a capture port, never bound */
        l->next = w->listeners;
        w->listeners = l;
        return 0;
    }
    int rc = uv_tcp_open(&l->tcp, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->tcp, 1024, listener_on_connection);
    if (rc != 0) {
        mt_error("worker %u: listener %s: %s", w->id, conf->name, uv_strerror(rc));
        mt_wcluster_unref(l->cluster);
        uv_close((uv_handle_t *)&l->tcp, listener_closed);
        return -1;
    }
    l->next = w->listeners;
    w->listeners = l;
    return 0;
}

/* ---- snapshot, drain, stop ----------------------------------------------------------------- */

mt_wlistener_t *mt_worker_find_listener(mt_worker_t *w, const char *name)
{
    for (mt_wlistener_t *l = w->listeners; l; l = l->next) {
        if (strcmp(l->conf->name, name) == 0)
            return l;
    }
    return NULL;
}

void mt_worker_swap_clusters(mt_worker_t *w, mt_snapshot_t *snap)
{
    mt_wcluster_t *old = w->clusters;
    w->clusters = NULL;
    for (uint32_t i = 0; i < snap->n_clusters; i++) {
        mt_cluster_conf_t *conf = &snap->clusters[i];
        for (mt_wcluster_t **pp = &old; *pp; pp = &(*pp)->next) {
            mt_wcluster_t *c = *pp;
            if (strcmp(c->conf->name, conf->name) == 0 &&
                strcmp(c->conf->fingerprint, conf->fingerprint) == 0) {
                *pp = c->next;
                c->conf = conf;
                mt_snapshot_unref(c->snap);
                c->snap = mt_snapshot_ref(snap);
                c->next = w->clusters;
                w->clusters = c;
                break;
            }
        }
    }
    while (old) {
        mt_wcluster_t *c = old;
        old = c->next;
        c->retired = true;
        mt_wcluster_unref(c); /* the live list's reference */
        c->next = w->retired;
        w->retired = c;
    }
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void worker_apply_snapshot(mt_worker_t *w, mt_snapshot_t *snap, int *fds)
{
    uint64_t t0 = uv_hrtime(), cpu0 = thread_cpu_ns();
    w->snap_applying = snap;
    mt_worker_swap_clusters(w, snap);
    /* Listeners: keep the sockets of those that still exist, open the new, close the gone. */
    mt_wlistener_t *keep = NULL;
    for (uint32_t i = 0; i < snap->n_listeners; i++) {
        mt_listener_conf_t *conf = &snap->listeners[i];
        mt_wlistener_t *l = mt_worker_find_listener(w, conf->name);
        if (l) {
            for (mt_wlistener_t **pp = &w->listeners; *pp; pp = &(*pp)->next) {
                if (*pp == l) {
                    *pp = l->next;
                    break;
                }
            }
            mt_wcluster_t *c = mt_worker_cluster(w, conf->cluster);
            mt_wcluster_ref(c);
            mt_wcluster_unref(l->cluster);
            l->cluster = c;
            l->conf = conf;
            l->next = keep;
            keep = l;
            if (fds && fds[i] >= 0)
                close(fds[i]);
        } else if (fds && (fds[i] >= 0 || fds[i] == MT_LISTENER_FD_VIRTUAL)) {
            mt_wlistener_t *saved = w->listeners;
            w->listeners = keep;
            listener_open(w, conf, fds[i]);
            keep = w->listeners;
            w->listeners = saved;
        }
    }
    while (w->listeners) {
        mt_wlistener_t *l = w->listeners;
        w->listeners = l->next;
        mt_info("worker %u: listener %s removed", w->id, l->conf->name);
        mt_wcluster_unref(l->cluster);
        l->cluster = NULL;
        listener_close(l);
    }
    w->listeners = keep;
    mt_snapshot_t *old = w->snap;
    w->snap = snap;
    /* Proxies may create the wclusters only their routes name: snap_applying is still set. */
    for (const mt_proxy_ops_t *const *p = mt_proxies; *p; p++) {
        if ((*p)->snapshot_applied)
            (*p)->snapshot_applied(w);
    }
    w->snap_applying = NULL;
    if (old)
        mt_snapshot_unref(old);
    mt_worker_reap_clusters(w);
    __atomic_store_n(&w->ready, 1, __ATOMIC_RELEASE);
    uint64_t t1 = uv_hrtime(), cpu1 = thread_cpu_ns();
    /* The swap's cost on this worker (its loop serves nothing meanwhile: wall clock, and
     * the thread's CPU time, which a busy machine does not inflate) and, for a reload, how
     * long after the reload began the worker serves the new generation. */
    if (snap->reload_start_ns)
        mt_info("worker %u: generation %llu swapped in in %.2f ms (%.2f ms CPU; %.2f ms after "
                "the reload began)",
                w->id, (unsigned long long)snap->generation, (double)(t1 - t0) / 1e6,
                (double)(cpu1 - cpu0) / 1e6, (double)(t1 - snap->reload_start_ns) / 1e6);
    else
        mt_info("worker %u: generation %llu swapped in in %.2f ms (%.2f ms CPU)", w->id,
                (unsigned long long)snap->generation, (double)(t1 - t0) / 1e6,
                (double)(cpu1 - cpu0) / 1e6);
}

static void worker_close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static bool worker_proxies_busy(mt_worker_t *w)
{
    for (const mt_proxy_ops_t *const *p = mt_proxies; *p; p++) {
        if ((*p)->busy && (*p)->busy(w))
            return true;
    }
    return false;
}

void mt_worker_maybe_finish(mt_worker_t *w)
{
    if (w->stopping || (w->draining && w->n_sessions == 0 && !worker_proxies_busy(w))) {
        w->stopping = true;
        uv_stop(&w->loop);
    }
}

static void worker_drain(mt_worker_t *w)
{
    w->draining = true;
    for (mt_wlistener_t *l = w->listeners; l; l = l->next) {
        mt_wcluster_unref(l->cluster);
        l->cluster = NULL;
        listener_close(l);
    }
    w->listeners = NULL;
    mt_session_link_t *next;
    for (mt_session_link_t *s = w->sessions; s; s = next) {
        next = s->next;
        s->drain(s);
    }
    mt_worker_maybe_finish(w);
}

static void worker_on_mail(uv_async_t *h)
{
    mt_worker_t *w = h->data;
    pthread_mutex_lock(&w->mu);
    unsigned mail = w->mail;
    mt_mail_snap_t *snaps = w->mail_snaps;
    w->mail = 0;
    w->mail_snaps = NULL;
    pthread_mutex_unlock(&w->mu);
    while (snaps) {
        mt_mail_snap_t *m = snaps;
        snaps = m->next;
        worker_apply_snapshot(w, m->snap, m->fds);
        free(m->fds);
        free(m);
    }
    if (mail & MT_MAIL_DRAIN)
        worker_drain(w);
    if (mail & MT_MAIL_STOP) {
        w->stopping = true;
        worker_drain(w);
    }
}

static void worker_heartbeat(mt_worker_t *w)
{
    __atomic_store_n(&w->heartbeat_ms, uv_hrtime() / 1000000u, __ATOMIC_RELAXED);
}

/* Free chunks beyond what the worker uses now (a burst of connections or a pipelining client
 * filled the pool) are freed a few hundred per tick, and once a second after such frees the
 * allocator is asked to give the pages back (malloc_trim): RSS follows the load down instead
 * of staying at its peak. The pool keeps as many free chunks as are in use (at least 64), so
 * a steady load never frees and reallocates. */
#define POOL_KEEP_MIN 64
#define POOL_TRIM_PER_TICK 256

static void worker_trim_pool(mt_worker_t *w, uint64_t now)
{
    mt_buf_pool_t *p = &w->pool;
    uint64_t keep = MT_MAX((uint64_t)POOL_KEEP_MIN, p->allocated);
    if (p->nfree > keep)
        w->pool_trimmed +=
            mt_buf_pool_trim(p, (uint32_t)MT_MIN(keep, UINT32_MAX), POOL_TRIM_PER_TICK);
    if (w->pool_trimmed && now - w->pool_trim_ms >= 1000) {
#ifdef __GLIBC__
        malloc_trim(0);
#endif
        w->pool_trimmed = 0;
        w->pool_trim_ms = now;
    }
}

/* ---- status for the admin's /clusters ---------------------------------------------------------
 */

void mt_wstatus_free(mt_wstatus_t *st)
{
    if (!st)
        return;
    for (uint32_t i = 0; i < st->n_clusters; i++) {
        free(st->clusters[i].name);
        free(st->clusters[i].proxy_json);
    }
    free(st->clusters);
    free(st->eps);
    free(st);
}

static void worker_status_ep(mt_wstatus_ep_t *e, const mt_wendpoint_t *ep, uint32_t ci,
                             uint64_t now)
{
    e->cluster = ci;
    snprintf(e->address, sizeof(e->address), "%s", ep->address);
    e->port = ep->port;
    e->resolved = !ep->resolve_error[0];
    /* a failed connect backs the endpoint off; the next successful one resets backoff_ms */
    e->healthy = e->resolved && ep->backoff_ms == 0;
    e->retry_in_ms = ep->retry_at_ms > now ? ep->retry_at_ms - now : 0;
    snprintf(e->last_error, sizeof(e->last_error), "%s",
             ep->resolve_error[0] ? ep->resolve_error : ep->last_error);
    for (int p = 0; p < MT_PROTO_COUNT; p++) {
        const mt_upstream_pool_t *pool = &ep->pools[p];
        for (uint32_t k = 0; k < pool->n_shared; k++)
            e->shared += pool->shared[k] != NULL;
        e->exclusive += pool->n_exclusive;
    }
}

static char *worker_status_proxy(mt_wcluster_t *c)
{
    const mt_proxy_ops_t *ops = mt_proxy_for(c->conf->protocol);
    if (!ops->cluster_status)
        return NULL;
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    if (!f)
        return NULL;
    ops->cluster_status(c, f);
    fclose(f);
    if (out && n == 0) {
        free(out);
        out = NULL;
    }
    return out;
}

static void worker_publish_status(mt_worker_t *w, uint64_t now)
{
    mt_wstatus_t *st = calloc(1, sizeof(*st));
    uint32_t nc = 0, ne = 0;
    for (mt_wcluster_t *c = w->clusters; c; c = c->next) {
        nc++;
        ne += c->n_eps;
    }
    if (!st || !(st->clusters = calloc(nc + 1, sizeof(*st->clusters))) ||
        !(st->eps = calloc(ne + 1, sizeof(*st->eps)))) {
        mt_wstatus_free(st);
        return;
    }
    for (mt_wcluster_t *c = w->clusters; c; c = c->next) {
        uint32_t ci = st->n_clusters++;
        st->clusters[ci].name = strdup(c->conf->name);
        st->clusters[ci].proxy_json = worker_status_proxy(c);
        for (uint32_t i = 0; i < c->n_eps; i++)
            worker_status_ep(&st->eps[st->n_eps++], c->eps[i], ci, now);
    }
    pthread_mutex_lock(&w->status_mu);
    mt_wstatus_t *old = w->status;
    w->status = st;
    pthread_mutex_unlock(&w->status_mu);
    mt_wstatus_free(old);
}

/* Every MT_WORKER_TICK_MS, busy or idle: a worker whose tick stops coming is stuck (a long filter
 * call, a blocking bug), and the heartbeat lets /ready say so. */
static void worker_on_tick(uv_timer_t *t)
{
    mt_worker_t *w = t->data;
    worker_heartbeat(w);
    w->now_ns = uv_hrtime(); /* timeouts the tick fails end requests now */
    uint64_t now = mt_worker_now_ms(w);
    worker_trim_pool(w, now);
    if (++w->status_ticks * MT_WORKER_TICK_MS >= MT_WORKER_STATUS_MS) {
        w->status_ticks = 0;
        worker_publish_status(w, now);
    }
    for (const mt_proxy_ops_t *const *p = mt_proxies; *p; p++) {
        if ((*p)->tick)
            (*p)->tick(w, now);
    }
    if (w->retired)
        mt_worker_reap_clusters(w);
}

static void *worker_main(void *arg)
{
    mt_worker_t *w = arg;
    while (uv_run(&w->loop, UV_RUN_DEFAULT) != 0 && !w->stopping)
        ;
    /* Close whatever is left (connections still open at a forced stop) and let the close
     * callbacks run so their memory is released. */
    for (const mt_proxy_ops_t *const *p = mt_proxies; *p; p++) {
        if ((*p)->worker_stop)
            (*p)->worker_stop(w);
    }
    mt_timer_wheel_close(&w->timers); /* what is still pending belongs to forced-closed handles */
    uv_walk(&w->loop, worker_close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    mt_alog_worker_free(&w->alog);
    mt_trace_worker_free(&w->trace);
    /* Proxy state may hold cluster references: it goes first. */
    for (const mt_proxy_ops_t *const *p = mt_proxies; *p; p++) {
        if ((*p)->worker_free)
            (*p)->worker_free(w);
    }
    while (w->clusters) {
        mt_wcluster_t *c = w->clusters;
        w->clusters = c->next;
        wcluster_free(c);
    }
    while (w->retired) {
        mt_wcluster_t *c = w->retired;
        w->retired = c->next;
        wcluster_free(c);
    }
    if (w->snap)
        mt_snapshot_unref(w->snap);
    w->snap = NULL;
    if (w->L)
        lua_close(w->L);
    if (w->own)
        mt_buf_unref(&w->pool, w->own);
    w->own = NULL;
    mt_buf_pool_destroy(&w->pool);
    __atomic_store_n(&w->exited, 1, __ATOMIC_RELEASE);
    return NULL;
}

int mt_worker_start(mt_worker_t *w, unsigned id)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->next_client_id = (uint64_t)id << 48 | 1;
    const char *k = getenv("MELTEMI_UPSTREAM_CONNS");
    w->rconns_per_endpoint = k && atoi(k) > 0 ? (uint32_t)atoi(k) : 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->status_mu, NULL);
    mt_buf_pool_init(&w->pool);
    if (uv_loop_init(&w->loop) != 0)
        return -1;
    if (mt_timer_wheel_init(&w->timers, &w->loop) != 0)
        return -1;
    w->timers.clock_ns = &w->now_ns;
    w->now_ns = uv_hrtime();
    mt_alog_worker_init(&w->alog, id);
    mt_trace_worker_init(&w->trace, id);
    w->L = mt_lua_new();
    for (const mt_proxy_ops_t *const *p = mt_proxies; *p; p++) {
        if ((*p)->worker_start && (*p)->worker_start(w) != 0)
            return -1;
    }
    uv_async_init(&w->loop, &w->async, worker_on_mail);
    w->async.data = w;
    uv_check_init(&w->loop, &w->check);
    w->check.data = w;
    uv_check_start(&w->check, worker_flush);
    uv_prepare_init(&w->loop, &w->prepare);
    w->prepare.data = w;
    uv_prepare_start(&w->prepare, worker_flush_before_poll);
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    worker_heartbeat(w);
    uv_timer_start(&w->tick, worker_on_tick, MT_WORKER_TICK_MS, MT_WORKER_TICK_MS);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return -1;
    return 0;
}

void mt_worker_post(mt_worker_t *w, unsigned mail, mt_snapshot_t *snap, int *fds)
{
    pthread_mutex_lock(&w->mu);
    w->mail |= mail;
    if (snap) {
        mt_mail_snap_t *m = calloc(1, sizeof(*m));
        if (!m)
            abort();
        m->snap = snap;
        m->fds = fds;
        mt_mail_snap_t **pp = &w->mail_snaps;
        while (*pp)
            pp = &(*pp)->next;
        *pp = m;
    }
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
}

void mt_worker_join(mt_worker_t *w)
{
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    mt_wstatus_free(w->status);
    w->status = NULL;
    pthread_mutex_destroy(&w->status_mu);
}
