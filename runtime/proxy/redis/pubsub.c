/*
 * pubsub.c - Redis pub/sub through the proxy: SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE and their
 * UNSUBSCRIBEs, the RESP2 subscribed state, and the fan-out of messages.
 *
 * Per worker, every channel (pattern, shard channel) that any client of a cluster subscribes
 * to is one "topic", subscribed once upstream on a "hub": a dedicated connection (outside the
 * pools, mt_upstream_connect) to the endpoint the topic lives on. A message the hub reads is
 * queued by reference (no copy) on the output of every client subscribed to its topic, so
 * 10,000 subscribers of one channel cost one upstream subscription per worker.
 *
 *   where a topic lives   PROXY mode: the one endpoint, the primary of a primary/replica set,
 *                         or the channel's hash (PUBLISH is routed the same way, route.c);
 *                         Redis Cluster: the master of the channel's slot (for SSUBSCRIBE the
 *                         only right place; PUBLISH reaches every node, so any is fine)
 *   confirmations         a client's "subscribe" reply is held (in its reply order) until the
 *                         upstream has confirmed the topic, so a PUBLISH that follows it reaches
 *                         the client; the count in it is the client's own, as Redis gives it
 *   reconnects            a hub that loses its connection reconnects with backoff (50 ms doubling
 *                         to 1 s) and subscribes its topics again; in Redis Cluster a slot map
 *                         change moves topics to their new node. Messages are taken only from a
 *                         topic's current hub, so a message is never delivered twice; what is
 *                         published while no subscription is up is lost, as with Redis itself
 *   slow subscribers      a client whose unsent output passes MT_RPUBSUB_MAX_OUTPUT is closed
 *                         (counted as MT_ST_PUBSUB_SLOW_CLOSED), as Redis's
 *                         client-output-buffer-limit pubsub does; the hub is never paused
 *
 * Ownership: topics and hubs belong to the worker's mt_rpubsub_t; a member (one client's
 * subscription to one topic) is on its topic's list and its client's list and is freed by
 * whichever removes it; a held confirmation is a request record in the client's FIFO and on
 * its topic's waiter list (an orphaned one is freed when completed). A hub holds a reference
 * on its cluster.
 */

#include "runtime/proxy/redis/redis_proxy.h"

#include "protocols/redis/pubsub_frame.h"
#include "runtime/core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PS_RETRY_MIN_MS 50
#define PS_RETRY_MAX_MS 1000
/* Unsent output past which a subscriber is closed (Redis's pubsub hard limit is 32 MiB; ours
 * is the session's output bound times 8, the same order). */
#define MT_RPUBSUB_MAX_OUTPUT (8u * MT_SESSION_MAX_OUTPUT)

typedef redis_pubsub_kind_t ps_kind_t;

static const struct {
    const char *sub, *unsub;
} ps_names[REDIS_PUBSUB_KINDS] = {
    {"subscribe", "unsubscribe"},
    {"psubscribe", "punsubscribe"},
    {"ssubscribe", "sunsubscribe"},
};

typedef struct ps_hub ps_hub_t;
typedef struct ps_topic ps_topic_t;

typedef struct ps_member {
    ps_topic_t *topic;
    mt_rsess_t *sess;
    struct ps_member *tprev, *tnext; /* the topic's subscribers */
    struct ps_member *cnext;         /* the client's subscriptions */
} ps_member_t;

struct ps_topic {
    ps_topic_t *hnext;               /* hash chain */
    ps_topic_t *hub_prev, *hub_next; /* the hub's topics */
    ps_hub_t *hub;
    mt_wcluster_t *cluster;
    ps_member_t *members;
    uint32_t n_members;
    uint32_t ops;       /* (un)subscribe commands sent on the hub's connection, unconfirmed */
    mt_rreq_t *waiters; /* clients' confirmations held until the upstream's (unext chain) */
    uint32_t hash;
    uint8_t kind;
    bool want;       /* subscribed (or to be) upstream: it has members */
    bool delivering; /* a fan-out walks its members: freeing waits */
    uint32_t len;
    char name[];
};

/* The hub's connection: mt_rup_t first, because the Redis proxy's tick and shutdown walk every
 * Redis upstream connection as one (its FIFO holds only the proxy's AUTH / READONLY). */
typedef struct ps_conn {
    mt_rup_t rup;
    ps_hub_t *hub; /* NULL once the hub let it go */
} ps_conn_t;

struct ps_hub {
    ps_hub_t *next;
    mt_wcluster_t *cluster; /* one reference */
    mt_wendpoint_t *ep;
    ps_conn_t *conn; /* NULL: waiting for the retry timer */
    ps_topic_t *topics;
    uint32_t n_topics;
    uint32_t retry_ms;
    mt_timer_t retry;
};

typedef struct mt_rps_client {
    ps_member_t *subs;
    uint32_t n_subs;  /* channels + patterns: the count in (P)SUBSCRIBE replies */
    uint32_t n_shard; /* shard channels: the count in SSUBSCRIBE replies */
} ps_client_t;

typedef struct mt_rpubsub {
    mt_worker_t *w;
    ps_topic_t **buckets;
    uint32_t n_buckets, n_topics;
    ps_hub_t *hubs;
    /* Hub commands and confirmations are built here, not in the worker's scratch: a connect
     * queues the proxy's AUTH through the scratch (and wipes it) while a reply is pending. */
    resp_out_t cmd, reply;
    bool stopping;
} mt_rpubsub_t;

static void hub_connect(mt_rpubsub_t *ps, ps_hub_t *h);
static void hub_maybe_free(mt_rpubsub_t *ps, ps_hub_t *h);
static void topic_release(mt_rpubsub_t *ps, ps_topic_t *t);

static mt_rpubsub_t *ps_of(mt_worker_t *w)
{
    mt_redis_worker_t *rw = mt_rw(w);
    if (!rw->pubsub) {
        rw->pubsub = calloc(1, sizeof(*rw->pubsub));
        if (rw->pubsub)
            rw->pubsub->w = w;
    }
    return rw->pubsub;
}

static bool ps_client_subscribed(const mt_rsess_t *s)
{
    return s->ps && s->ps->n_subs + s->ps->n_shard > 0;
}

/* ---- topics: the per-worker table ------------------------------------------------------------ */

static uint32_t topic_hash(const mt_wcluster_t *c, ps_kind_t kind, const char *name, size_t len)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind ^ (uint32_t)((uintptr_t)c >> 4);
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 16777619u;
    return h;
}

static ps_topic_t *topic_find(mt_rpubsub_t *ps, const mt_wcluster_t *c, ps_kind_t kind,
                              const char *name, size_t len)
{
    if (!ps->n_buckets)
        return NULL;
    uint32_t h = topic_hash(c, kind, name, len);
    for (ps_topic_t *t = ps->buckets[h & (ps->n_buckets - 1)]; t; t = t->hnext) {
        if (t->hash == h && t->cluster == c && t->kind == kind && t->len == len &&
            memcmp(t->name, name, len) == 0)
            return t;
    }
    return NULL;
}

static int topics_grow(mt_rpubsub_t *ps)
{
    uint32_t n = ps->n_buckets ? ps->n_buckets * 2 : 64;
    ps_topic_t **b = calloc(n, sizeof(*b));
    if (!b)
        return -1;
    for (uint32_t i = 0; i < ps->n_buckets; i++) {
        ps_topic_t *next;
        for (ps_topic_t *t = ps->buckets[i]; t; t = next) {
            next = t->hnext;
            t->hnext = b[t->hash & (n - 1)];
            b[t->hash & (n - 1)] = t;
        }
    }
    free(ps->buckets);
    ps->buckets = b;
    ps->n_buckets = n;
    return 0;
}

static ps_topic_t *topic_new(mt_rpubsub_t *ps, mt_wcluster_t *c, ps_kind_t kind,
                             const resp_arg_t *name)
{
    if (ps->n_topics >= ps->n_buckets && topics_grow(ps) != 0)
        return NULL;
    ps_topic_t *t = calloc(1, sizeof(*t) + name->len + 1);
    if (!t)
        return NULL;
    t->cluster = c;
    t->kind = (uint8_t)kind;
    t->len = (uint32_t)name->len;
    memcpy(t->name, name->ptr, name->len);
    t->hash = topic_hash(c, kind, name->ptr, name->len);
    uint32_t i = t->hash & (ps->n_buckets - 1);
    t->hnext = ps->buckets[i];
    ps->buckets[i] = t;
    ps->n_topics++;
    return t;
}

/* Confirmations held for t leave now (in each client's reply order). */
static void topic_release_waiters(mt_worker_t *w, ps_topic_t *t)
{
    while (t->waiters) {
        mt_rreq_t *r = t->waiters;
        t->waiters = r->unext;
        r->unext = NULL;
        mt_rreq_complete(w, r, r->frame.buf, r->frame.p, r->frame.len);
    }
}

static void hub_detach(ps_hub_t *h, ps_topic_t *t)
{
    if (t->hub_prev)
        t->hub_prev->hub_next = t->hub_next;
    else
        h->topics = t->hub_next;
    if (t->hub_next)
        t->hub_next->hub_prev = t->hub_prev;
    t->hub_prev = t->hub_next = NULL;
    t->hub = NULL;
    h->n_topics--;
}

static void hub_attach(ps_hub_t *h, ps_topic_t *t)
{
    t->hub = h;
    t->hub_prev = NULL;
    t->hub_next = h->topics;
    if (h->topics)
        h->topics->hub_prev = t;
    h->topics = t;
    h->n_topics++;
}

static void topic_free(mt_rpubsub_t *ps, ps_topic_t *t)
{
    topic_release_waiters(ps->w, t);
    ps_topic_t **pp = &ps->buckets[t->hash & (ps->n_buckets - 1)];
    while (*pp != t)
        pp = &(*pp)->hnext;
    *pp = t->hnext;
    ps->n_topics--;
    ps_hub_t *h = t->hub;
    if (h)
        hub_detach(h, t);
    free(t);
    if (h)
        hub_maybe_free(ps, h);
}

/* ---- hubs: one dedicated connection per endpoint --------------------------------------------- */

static bool hub_up(const ps_hub_t *h)
{
    return h && h->conn && h->conn->rup.base.state != MT_UPSTREAM_CLOSING;
}

/* Queues "<SUB|UNSUB> name" for t on h's connection (which is up). */
static int hub_send(ps_hub_t *h, ps_topic_t *t, bool subscribe)
{
    const char *verb = subscribe ? ps_names[t->kind].sub : ps_names[t->kind].unsub;
    resp_arg_t argv[2] = {{verb, strlen(verb)}, {t->name, t->len}};
    resp_out_t *o = &mt_rw(h->cluster->w)->pubsub->cmd;
    o->len = 0;
    resp_out_command(o, 2, argv);
    mt_upstream_t *u = &h->conn->rup.base;
    if (mt_outq_add_copy(&u->out, o->data, o->len) != 0)
        return -1;
    t->ops++;
    mt_upstream_schedule(u);
    return 0;
}

static ps_hub_t *hub_get(mt_rpubsub_t *ps, mt_wcluster_t *c, mt_wendpoint_t *ep)
{
    for (ps_hub_t *h = ps->hubs; h; h = h->next) {
        if (h->cluster == c && h->ep == ep)
            return h;
    }
    ps_hub_t *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->cluster = c;
    h->ep = ep;
    mt_wcluster_ref(c);
    h->next = ps->hubs;
    ps->hubs = h;
    return h;
}

/* Frees h once it has no topic left (its connection closes). */
static void hub_maybe_free(mt_rpubsub_t *ps, ps_hub_t *h)
{
    if (h->n_topics)
        return;
    for (ps_hub_t **pp = &ps->hubs; *pp; pp = &(*pp)->next) {
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    }
    mt_timer_stop(&ps->w->timers, &h->retry);
    if (h->conn) {
        ps_conn_t *conn = h->conn;
        conn->hub = NULL;
        h->conn = NULL;
        mt_upstream_close(&conn->rup.base);
    }
    mt_wcluster_unref(h->cluster);
    free(h);
}

/* Where a topic lives (see the banner); NULL and why when it cannot be subscribed, NULL and
 * no why while Redis Cluster's slot map is not known yet (the topic waits for it). */
static mt_wendpoint_t *topic_target(mt_wcluster_t *c, ps_kind_t kind, const char *name, size_t len,
                                    const char **why)
{
    *why = NULL;
    if (c->n_eps == 0) {
        *why = "no upstream host";
        return NULL;
    }
    if (mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER) {
        return mt_rcluster_master_of(c, redis_slot_of_key(name, len));
    }
    uint32_t n_replicas = mt_redis_cluster(c->conf)->n_replicas;
    if (kind == REDIS_PUBSUB_PATTERN && c->n_eps > 1 &&
        (n_replicas == 0 || n_replicas == c->n_eps)) {
        *why = "a pattern subscription needs one endpoint, and channels are hashed over "
               "several here";
        return NULL;
    }
    resp_arg_t a = {name, len};
    return mt_rroute_channel(c, &a);
}

static void hub_retry_fired(mt_timer_t *tm);

static void hub_schedule_retry(mt_rpubsub_t *ps, ps_hub_t *h)
{
    if (ps->stopping)
        return;
    h->retry_ms = h->retry_ms ? MT_MIN(h->retry_ms * 2, PS_RETRY_MAX_MS) : PS_RETRY_MIN_MS;
    mt_timer_start(&ps->w->timers, &h->retry, h->retry_ms, hub_retry_fired);
}

/* Moves t (which has members) from its hub to the one for ep: the old subscription is
 * dropped, the new one made; until confirmed, messages come from neither. */
static void topic_move(mt_rpubsub_t *ps, ps_topic_t *t, mt_wendpoint_t *ep)
{
    ps_hub_t *nh = hub_get(ps, t->cluster, ep);
    if (!nh)
        return;
    ps_hub_t *old = t->hub;
    if (old) {
        if (hub_up(old) && t->want)
            hub_send(old, t, false); /* its confirmation is ignored: t is no longer old's */
        hub_detach(old, t);
    }
    t->ops = 0;
    hub_attach(nh, t);
    if (hub_up(nh)) {
        if (t->want && hub_send(nh, t, true) != 0)
            topic_release_waiters(ps->w, t);
    } else if (!mt_timer_pending(&nh->retry)) {
        hub_connect(ps, nh);
    }
    if (old)
        hub_maybe_free(ps, old);
}

static void hub_retry_fired(mt_timer_t *tm)
{
    ps_hub_t *h = MT_CONTAINER_OF(tm, ps_hub_t, retry);
    mt_rpubsub_t *ps = mt_rw(h->cluster->w)->pubsub;
    if (ps->stopping)
        return;
    /* Redis Cluster: a failover may have moved topics while the connection was down. */
    if (mt_redis_cluster(h->cluster->conf)->mode == MT_REDIS_CLUSTER) {
        h->n_topics++; /* keeps h while its topics move away */
        ps_topic_t *next;
        for (ps_topic_t *t = h->topics; t; t = next) {
            next = t->hub_next;
            const char *why;
            mt_wendpoint_t *ep = topic_target(t->cluster, t->kind, t->name, t->len, &why);
            if (ep && ep != h->ep && mt_rtopo(h->cluster))
                topic_move(ps, t, ep);
        }
        h->n_topics--;
        if (h->n_topics == 0) {
            hub_maybe_free(ps, h);
            return;
        }
    }
    hub_connect(ps, h);
}

/* The hub's connection is gone (or never came): topics wait for the retry; confirmations held
 * for them leave now (the clients are subscribed; messages resume with the connection). */
static void hub_lost(mt_rpubsub_t *ps, ps_hub_t *h)
{
    h->conn = NULL;
    h->n_topics++; /* keeps h while unwanted topics are freed */
    ps_topic_t *next;
    for (ps_topic_t *t = h->topics; t; t = next) {
        next = t->hub_next;
        t->ops = 0;
        topic_release_waiters(ps->w, t);
        if (!t->want)
            topic_free(ps, t);
    }
    h->n_topics--;
    if (h->n_topics == 0) {
        hub_maybe_free(ps, h);
        return;
    }
    if (mt_rtopo(h->cluster))
        mt_rcluster_node_failed(h->cluster, h->ep);
    hub_schedule_retry(ps, h);
}

/* ---- the hub's connection -------------------------------------------------------------------- */

/* Queues a message frame (bytes in chunk b) for client s: straight to its output, or behind
 * the replies it still waits for. False when s must be closed (too slow). */
static bool ps_deliver(mt_rsess_t *s, mt_buf_t *b, const char *p, size_t len)
{
    mt_worker_t *w = s->base.w;
    if (s->base.closing)
        return true;
    if (s->resp3) {
        /* the hub speaks RESP2: "*3 message ..." is ">3 message ..." in RESP3, a push */
        mt_rsess_reply(s, ">", 1);
        p++;
        len--;
    }
    if (!s->head) {
        if (mt_outq_add_ref(&s->base.out, b, p, len) != 0)
            return false;
        mt_worker_schedule_flush(w, &s->base.out);
    } else {
        mt_rreq_t *r = mt_rreq_new(w);
        if (!r)
            return false;
        mt_buf_ref(b);
        r->reply = (mt_slice_t){b, p, (uint32_t)len};
        r->done = true;
        mt_rsess_push(s, r);
    }
    return mt_outq_pending(&s->base.out) <= MT_RPUBSUB_MAX_OUTPUT &&
           s->base.pending < 64u * MT_SESSION_MAX_PENDING;
}

static void topic_fan_out(mt_rpubsub_t *ps, ps_topic_t *t, mt_buf_t *b, const char *p, size_t len)
{
    t->delivering = true;
    ps_member_t *next;
    for (ps_member_t *m = t->members; m; m = next) {
        next = m->tnext;
        if (ps_deliver(m->sess, b, p, len))
            continue;
        char peer[64];
        mt_rsess_t *s = m->sess;
        mt_warn("listener %s: subscriber %s closed: more than %u bytes of messages unsent "
                "(a slow pub/sub client)",
                s->base.conf->name, mt_session_peer(&s->base, peer, sizeof(peer)),
                MT_RPUBSUB_MAX_OUTPUT);
        mt_stat_add(s->base.conf->stats, ps->w->id, MT_ST_PUBSUB_SLOW_CLOSED, 1);
        mt_session_close(&s->base); /* removes m (only m) from t */
    }
    t->delivering = false;
    topic_release(ps, t);
}

/* One frame from the hub's upstream: a message to fan out, a confirmation, or an error. */
static void ps_conn_frame(ps_conn_t *conn, const char *p, size_t len)
{
    ps_hub_t *h = conn->hub;
    mt_rpubsub_t *ps = mt_rw(conn->rup.base.w)->pubsub;
    char lbl[256];
    if (len && p[0] == '-') {
        mt_warn("upstream %s: pub/sub connection answered %.*s; reconnecting",
                mt_rendpoint_label(h->ep, lbl, sizeof(lbl)), (int)MT_MIN(len - 3, 200), p + 1);
        mt_upstream_close(&conn->rup.base);
        return;
    }
    redis_pubsub_frame_t f;
    if (redis_pubsub_parse(p, len, &f) != MT_OK)
        return; /* a PONG or another reply that is nobody's */
    ps_topic_t *t = topic_find(ps, h->cluster, f.kind, f.name, f.name_len);
    if (!t || t->hub != h)
        return; /* a topic that moved, or went: not this hub's to deliver */
    if (f.message) {
        topic_fan_out(ps, t, conn->rup.base.rbuf, p, len);
        return;
    }
    if (t->ops > 0 && --t->ops == 0) {
        if (t->want)
            topic_release_waiters(ps->w, t);
        topic_release(ps, t);
    }
}

static void ps_conn_on_data(mt_upstream_t *base)
{
    ps_conn_t *conn = (ps_conn_t *)base;
    mt_buf_t *b = base->rbuf;
    while (b->pos < b->last && base->state == MT_UPSTREAM_READY && conn->hub) {
        size_t flen = 0;
        const char *err = NULL;
        mt_status_t rc = resp_scan_reply(&conn->rup.scanner, b->pos, mt_buf_unread(b), &flen, &err);
        if (rc == MT_AGAIN)
            break;
        if (rc == MT_ERROR) {
            char lbl[256];
            mt_error("upstream %s sent a malformed reply on a pub/sub connection: %s",
                     mt_rendpoint_label(base->ep, lbl, sizeof(lbl)), err ? err : "?");
            mt_upstream_close(base);
            return;
        }
        const char *p = b->pos;
        b->pos += flen;
        if (!mt_rup_internal_reply(&conn->rup, p, flen))
            ps_conn_frame(conn, p, flen);
    }
}

/* Queues AUTH (and READONLY) first, then a subscription for every topic the hub wants. */
static int ps_conn_on_open(mt_upstream_t *base, void *arg)
{
    ps_conn_t *conn = (ps_conn_t *)base;
    ps_hub_t *h = arg;
    conn->hub = h;
    if (mt_rup_open(&conn->rup) != 0)
        return -1;
    h->conn = conn;
    for (ps_topic_t *t = h->topics; t; t = t->hub_next) {
        t->ops = 0;
        if (t->want && hub_send(h, t, true) != 0)
            return -1;
    }
    return 0;
}

static void ps_conn_on_connected(mt_upstream_t *base)
{
    ps_conn_t *conn = (ps_conn_t *)base;
    if (conn->hub)
        conn->hub->retry_ms = 0;
}

static void ps_conn_on_error(mt_upstream_t *base, mt_upstream_event_t ev, const char *text)
{
    MT_UNUSED(ev);
    mt_debug("pub/sub: %s", text);
    MT_UNUSED(base); /* the close that follows tells the hub */
}

static void ps_conn_on_close(mt_upstream_t *base)
{
    ps_conn_t *conn = (ps_conn_t *)base;
    ps_hub_t *h = conn->hub;
    conn->hub = NULL;
    if (h && h->conn == conn)
        hub_lost(mt_rw(base->w)->pubsub, h);
}

static void ps_conn_on_closed(mt_upstream_t *base)
{
    mt_rup_free_requests((mt_rup_t *)base);
}

static const mt_upstream_ops_t ps_conn_ops = {
    .protocol = MT_PROTO_REDIS,
    .size = sizeof(ps_conn_t),
    .text_prefix = "meltemi: ",
    .on_open = ps_conn_on_open,
    .on_connected = ps_conn_on_connected,
    .on_data = ps_conn_on_data,
    .on_error = ps_conn_on_error,
    .on_deadline = mt_rup_on_deadline, /* the proxy's AUTH unanswered: the hub reconnects */
    .on_close = ps_conn_on_close,
    .on_closed = ps_conn_on_closed,
};

/* Connects h (its on_open subscribes every topic it wants); on failure the retry waits. */
static void hub_connect(mt_rpubsub_t *ps, ps_hub_t *h)
{
    if (h->conn || ps->stopping)
        return;
    const char *why = NULL;
    mt_upstream_t *u = mt_upstream_connect(h->ep, &ps_conn_ops, h, &why);
    if (u)
        return; /* h->conn was set by on_open */
    char lbl[256];
    mt_debug("pub/sub: upstream %s: %s", mt_rendpoint_label(h->ep, lbl, sizeof(lbl)),
             why ? why : "?");
    h->conn = NULL;
    hub_lost(ps, h);
}

/* ---- members: one client's subscription to one topic ---------------------------------------- */

/* Frees t once nobody wants it and nothing is in flight for it; unsubscribes it upstream when
 * its last member has gone. */
static void topic_release(mt_rpubsub_t *ps, ps_topic_t *t)
{
    if (t->delivering || t->n_members)
        return;
    if (t->want) {
        t->want = false;
        if (t->hub && hub_up(t->hub) && hub_send(t->hub, t, false) == 0)
            return; /* freed when the upstream confirms */
    }
    if (t->ops == 0 || !t->hub || !hub_up(t->hub))
        topic_free(ps, t);
}

static void member_remove(mt_rpubsub_t *ps, mt_rsess_t *s, ps_member_t *m)
{
    ps_client_t *cl = s->ps;
    for (ps_member_t **pp = &cl->subs; *pp; pp = &(*pp)->cnext) {
        if (*pp == m) {
            *pp = m->cnext;
            break;
        }
    }
    if (m->topic->kind == REDIS_PUBSUB_SHARD)
        cl->n_shard--;
    else
        cl->n_subs--;
    ps_topic_t *t = m->topic;
    if (m->tprev)
        m->tprev->tnext = m->tnext;
    else
        t->members = m->tnext;
    if (m->tnext)
        m->tnext->tprev = m->tprev;
    t->n_members--;
    free(m);
    topic_release(ps, t);
}

static ps_member_t *member_find(const mt_rsess_t *s, ps_kind_t kind, const char *name, size_t len)
{
    for (ps_member_t *m = s->ps ? s->ps->subs : NULL; m; m = m->cnext) {
        const ps_topic_t *t = m->topic;
        if (t->kind == kind && t->len == len && memcmp(t->name, name, len) == 0)
            return m;
    }
    return NULL;
}

/* "*3 <verb> <name> :<count>": a (un)subscribe confirmation as Redis gives it (RESP3: a push,
 * ">3"); a NULL name is the nil of an UNSUBSCRIBE with nothing to unsubscribe. */
static void ps_confirmation(resp_out_t *o, const mt_rsess_t *s, const char *verb,
                            const resp_arg_t *name, uint32_t count)
{
    o->len = 0;
    if (s->resp3)
        resp_out_raw(o, ">3\r\n", 4);
    else
        resp_out_array(o, 3);
    resp_out_bulk(o, verb, strlen(verb));
    if (name)
        resp_out_bulk(o, name->ptr, name->len);
    else if (s->resp3)
        resp_out_raw(o, "_\r\n", 3);
    else
        resp_out_null(o);
    resp_out_integer(o, count);
}

static uint32_t ps_count(const mt_rsess_t *s, ps_kind_t kind)
{
    if (!s->ps)
        return 0;
    return kind == REDIS_PUBSUB_SHARD ? s->ps->n_shard : s->ps->n_subs;
}

/* One name of a client's (P|S)SUBSCRIBE. */
static void ps_subscribe_one(mt_rpubsub_t *ps, mt_rsess_t *s, mt_wcluster_t *c, ps_kind_t kind,
                             const resp_arg_t *name)
{
    resp_out_t *o = &ps->reply;
    if (member_find(s, kind, name->ptr, name->len)) {
        ps_confirmation(o, s, ps_names[kind].sub, name, ps_count(s, kind));
        mt_rsess_reply(s, o->data, o->len);
        return;
    }
    ps_topic_t *t = topic_find(ps, c, kind, name->ptr, name->len);
    if (!t) {
        const char *why = NULL;
        mt_wendpoint_t *ep = topic_target(c, kind, name->ptr, name->len, &why);
        char text[400];
        if (!ep && why) {
            snprintf(text, sizeof(text), "ERR meltemi: cannot %s to '%.*s' through %s: %s",
                     ps_names[kind].sub, (int)MT_MIN(name->len, 100), name->ptr,
                     c->conf->service ? c->conf->service : c->conf->name, why);
            mt_rsess_reply_error(s, text);
            return;
        }
        ps_hub_t *h = ep ? hub_get(ps, c, ep) : NULL; /* none: parked until the slot map */
        t = h || !ep ? topic_new(ps, c, kind, name) : NULL;
        if (!t) {
            if (h)
                hub_maybe_free(ps, h);
            mt_rsess_reply_error(s, "ERR meltemi: out of memory");
            return;
        }
        if (h)
            hub_attach(h, t);
    }
    ps_member_t *m = calloc(1, sizeof(*m));
    if (!m) {
        topic_release(ps, t);
        mt_rsess_reply_error(s, "ERR meltemi: out of memory");
        return;
    }
    m->topic = t;
    m->sess = s;
    m->tnext = t->members;
    if (t->members)
        t->members->tprev = m;
    t->members = m;
    t->n_members++;
    m->cnext = s->ps->subs;
    s->ps->subs = m;
    if (kind == REDIS_PUBSUB_SHARD)
        s->ps->n_shard++;
    else
        s->ps->n_subs++;
    ps_confirmation(o, s, ps_names[kind].sub, name, ps_count(s, kind));
    ps_hub_t *h = t->hub;
    if (!t->want) {
        t->want = true;
        /* no hub: parked, subscribed once the slot map says where */
        if (hub_up(h))
            hub_send(h, t, true); /* on failure: subscribed at the next reconnect */
        else if (h && !mt_timer_pending(&h->retry))
            hub_connect(ps, h);
    }
    if (t->hub && !(t->ops > 0 && hub_up(t->hub))) {
        mt_rsess_reply(s, o->data, o->len); /* confirmed already, or waiting for a reconnect */
        return;
    }
    mt_rreq_t *r = mt_rreq_new(s->base.w);
    if (!r || mt_slice_copy(&s->base.w->pool, &s->base.w->own, o->data, o->len, &r->frame) != 0) {
        if (r)
            mt_rreq_free(s->base.w, r);
        mt_session_close(&s->base);
        return;
    }
    mt_rsess_push(s, r);
    r->unext = t->waiters;
    t->waiters = r;
}

static void ps_unsubscribe(mt_rpubsub_t *ps, mt_rsess_t *s, ps_kind_t kind,
                           const resp_request_t *req)
{
    resp_out_t *o = &ps->reply;
    const char *verb = ps_names[kind].unsub;
    if (req->argc == 1) {
        bool any = false;
        ps_member_t *next;
        for (ps_member_t *m = s->ps ? s->ps->subs : NULL; m; m = next) {
            next = m->cnext;
            if (m->topic->kind != kind)
                continue;
            any = true;
            const resp_arg_t a = {m->topic->name, m->topic->len};
            ps_confirmation(o, s, verb, &a, ps_count(s, kind) - 1);
            member_remove(ps, s, m); /* may free the topic: the reply was built before */
            mt_rsess_reply(s, o->data, o->len);
        }
        if (!any) {
            ps_confirmation(o, s, verb, NULL, ps_count(s, kind));
            mt_rsess_reply(s, o->data, o->len);
        }
        return;
    }
    for (uint32_t i = 1; i < req->argc; i++) {
        const resp_arg_t *a = &req->argv[i];
        ps_member_t *m = member_find(s, kind, a->ptr, a->len);
        if (m)
            member_remove(ps, s, m);
        ps_confirmation(o, s, verb, a, ps_count(s, kind));
        mt_rsess_reply(s, o->data, o->len);
    }
}

/* Redis Cluster refuses an SSUBSCRIBE whose channels are in different slots. */
static bool ps_same_slot(const resp_request_t *req)
{
    uint16_t slot = redis_slot_of_key(req->argv[1].ptr, req->argv[1].len);
    for (uint32_t i = 2; i < req->argc; i++) {
        if (redis_slot_of_key(req->argv[i].ptr, req->argv[i].len) != slot)
            return false;
    }
    return true;
}

static bool ps_family(const redis_command_t *cmd, ps_kind_t *kind, bool *subscribe)
{
    for (uint32_t k = 0; k < REDIS_PUBSUB_KINDS; k++) {
        if (mt_rcmd_is(cmd, ps_names[k].sub) || mt_rcmd_is(cmd, ps_names[k].unsub)) {
            *kind = (ps_kind_t)k;
            *subscribe = mt_rcmd_is(cmd, ps_names[k].sub);
            return true;
        }
    }
    return false;
}

/* RESP2's subscribed state: what Redis answers to the other commands. */
static bool ps_subscribed_state(mt_rpubsub_t *ps, mt_rsess_t *s, const redis_command_t *cmd,
                                const resp_request_t *req)
{
    resp_out_t *o = &ps->reply;
    if (mt_rcmd_is(cmd, "ping")) {
        if (req->argc > 2)
            return false; /* the session's arity error */
        o->len = 0;
        resp_out_array(o, 2);
        resp_out_bulk(o, "pong", 4);
        if (req->argc == 2)
            resp_out_bulk(o, req->argv[1].ptr, req->argv[1].len);
        else
            resp_out_bulk(o, "", 0);
        mt_rsess_reply(s, o->data, o->len);
        return true;
    }
    if (mt_rcmd_is(cmd, "quit"))
        return false;
    if (mt_rcmd_is(cmd, "reset")) {
        /* What RESET does to a subscriber: out of every subscription, silently. */
        while (s->ps->subs)
            member_remove(ps, s, s->ps->subs);
        s->tx_refused = false;
        s->resp3 = false; /* RESET goes back to RESP2, as in Redis */
        s->lctx.resp = 2;
        mt_rsess_reply(s, "+RESET\r\n", 8);
        return true;
    }
    char text[256], full[128];
    const redis_command_t *sub =
        cmd->sub_count && req->argc > 1
            ? redis_command_find_subcommand(cmd, req->argv[1].ptr, req->argv[1].len)
            : NULL;
    snprintf(full, sizeof(full), "%s", sub ? sub->name : cmd->name);
    snprintf(text, sizeof(text),
             "ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
             "RESET are allowed in this context",
             full);
    mt_rsess_reply_error(s, text);
    return true;
}

bool mt_rpubsub_command(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req)
{
    ps_kind_t kind = REDIS_PUBSUB_CHANNEL;
    bool subscribe = false;
    bool family = ps_family(cmd, &kind, &subscribe);
    /* RESP3 has no subscribed state: only RESET still ends the subscriptions */
    if (!family && (!ps_client_subscribed(s) || (s->resp3 && !mt_rcmd_is(cmd, "reset"))))
        return false;
    mt_rpubsub_t *ps = ps_of(s->base.w);
    if (!ps || (!s->ps && !(s->ps = calloc(1, sizeof(*s->ps))))) {
        mt_rsess_reply_error(s, "ERR meltemi: out of memory");
        return true;
    }
    if (!family)
        return ps_subscribed_state(ps, s, cmd, req);
    if (!subscribe) {
        ps_unsubscribe(ps, s, kind, req);
        return true;
    }
    mt_wcluster_t *c = s->base.cluster;
    if (!c) {
        mt_rsess_reply_error(s, "ERR meltemi: no upstream cluster for this listener");
        return true;
    }
    if (kind == REDIS_PUBSUB_SHARD && mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER &&
        !ps_same_slot(req)) {
        mt_rsess_reply_error(s, "CROSSSLOT Keys in request don't hash to the same slot");
        return true;
    }
    for (uint32_t i = 1; i < req->argc && !s->base.closing; i++)
        ps_subscribe_one(ps, s, c, kind, &req->argv[i]);
    return true;
}

void mt_rpubsub_session_closed(mt_rsess_t *s)
{
    if (!s->ps)
        return;
    mt_rpubsub_t *ps = mt_rw(s->base.w)->pubsub;
    while (s->ps->subs)
        member_remove(ps, s, s->ps->subs);
    free(s->ps);
    s->ps = NULL;
}

void mt_rpubsub_topology(mt_wcluster_t *c)
{
    mt_rpubsub_t *ps = mt_rw(c->w)->pubsub;
    if (!ps || ps->stopping || !ps->n_topics)
        return;
    /* Collect first: moving changes hubs, never the table. */
    for (uint32_t i = 0; i < ps->n_buckets; i++) {
        for (ps_topic_t *t = ps->buckets[i]; t; t = t->hnext) {
            if (t->cluster != c || !t->want)
                continue;
            const char *why;
            mt_wendpoint_t *ep = topic_target(c, t->kind, t->name, t->len, &why);
            if (ep && (!t->hub || ep != t->hub->ep)) {
                char a[256];
                mt_info("pub/sub: %s '%.*s' moves to %s", ps_names[t->kind].sub,
                        (int)MT_MIN(t->len, 100), t->name, mt_rendpoint_label(ep, a, sizeof(a)));
                topic_move(ps, t, ep);
            }
        }
    }
}

void mt_rpubsub_topology_failed(mt_wcluster_t *c)
{
    mt_rpubsub_t *ps = mt_rw(c->w)->pubsub;
    for (uint32_t i = 0; ps && i < ps->n_buckets; i++) {
        for (ps_topic_t *t = ps->buckets[i]; t; t = t->hnext) {
            if (t->cluster == c && !t->hub)
                topic_release_waiters(ps->w, t); /* subscribed once a map comes */
        }
    }
}

void mt_rpubsub_stop(mt_worker_t *w)
{
    mt_rpubsub_t *ps = mt_rw(w)->pubsub;
    if (!ps)
        return;
    ps->stopping = true;
    for (ps_hub_t *h = ps->hubs; h; h = h->next) {
        mt_timer_stop(&w->timers, &h->retry);
        if (h->conn) {
            ps_conn_t *conn = h->conn;
            h->conn = NULL;
            conn->hub = NULL;
            mt_upstream_close(&conn->rup.base);
        }
    }
}

void mt_rpubsub_free(mt_worker_t *w)
{
    mt_rpubsub_t *ps = mt_rw(w)->pubsub;
    if (!ps)
        return;
    for (uint32_t i = 0; i < ps->n_buckets; i++) {
        while (ps->buckets[i]) {
            ps_topic_t *t = ps->buckets[i];
            ps->buckets[i] = t->hnext;
            while (t->members) {
                ps_member_t *m = t->members;
                t->members = m->tnext;
                free(m); /* every session has closed by now: nobody points here */
            }
            while (t->waiters) {
                mt_rreq_t *r = t->waiters;
                t->waiters = r->unext;
                r->unext = NULL;
            }
            free(t);
        }
    }
    while (ps->hubs) {
        ps_hub_t *h = ps->hubs;
        ps->hubs = h->next;
        mt_wcluster_unref(h->cluster);
        free(h);
    }
    free(ps->buckets);
    resp_out_free(&ps->cmd);
    resp_out_free(&ps->reply);
    free(ps);
    mt_rw(w)->pubsub = NULL;
}
