/*
 * sentinel.c - a PROXY-mode Redis service whose master and replicas Redis Sentinel names
 * (RedisDestination trafficPolicy.connectionPool.redis.sentinel, a meltemi extension).
 *
 * Where it runs: on each worker's loop, per worker cluster, like the Redis Cluster slot map
 * (redis_cluster.c). No state is shared between threads and nothing waits: each worker asks
 * the Sentinels and follows +switch-master itself. The price is two Sentinel connections per
 * worker per Sentinel-backed service; the gain is that a failover reaches a worker without a
 * hop through the main thread and its mailbox, and a worker never routes on a master another
 * thread has already left.
 *
 * Two dedicated connections to Sentinels, never a data connection:
 *   - a query: [AUTH], SENTINEL GET-MASTER-ADDR-BY-NAME, SENTINEL REPLICAS, then closed. At
 *     start, every REFRESH_PERIOD_MS, after a +switch-master, after the subscription
 *     (re)connects and soon after a connection to the master fails. Unanswered within the
 *     connect timeout + QUERY_GRACE_MS, or refused, the next Sentinel is asked.
 *   - a subscription: [AUTH], SUBSCRIBE +switch-master, on one Sentinel at a time (the next
 *     one when it goes). A message naming our master moves the service at once.
 *
 * How the data path follows: the worker cluster's endpoint list (c->eps) is swapped for a
 * one-element view holding the current master (empty until one is known). Every path of the
 * proxy that picks "the" endpoint (shared connections, the leases of transactions, blocking
 * commands and SELECT, pub/sub, administration) therefore goes to the current master without
 * knowing Sentinel. Reads that a readPolicy sends to replicas pick from the replicas the
 * Sentinels listed (mt_rsentinel_read_endpoint). A command already sent to the old master is
 * not re-sent anywhere: the old master answers it (applied, or -READONLY once demoted) or its
 * connection fails and the client gets an error; it is never applied twice.
 *
 * Ownership: the state owns the Sentinel endpoints and every data endpoint it ever met (kept
 * for the cluster's life so their pooled connections are reused when a node comes back); the
 * configured endpoints (c->eps before the swap) are given back to the cluster when it is freed.
 */
#include "runtime/proxy/redis/redis_proxy.h"

#include "protocols/redis/sentinel_reply.h"

#include "runtime/core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REFRESH_PERIOD_MS 5000 /* periodic re-resolve */
#define MIN_GAP_MS 100         /* a failed master connection asks again at most this often */
#define QUERY_GRACE_MS 1000    /* a query unanswered after connect timeout + this: next one */
#define RETRY_ALL_DOWN_MS 200  /* every Sentinel unreachable: try again after this */
#define MAX_REPLICAS 64        /* replicas kept from one SENTINEL REPLICAS answer */
#define LOG_EVERY_MS 10000     /* repeated failures: one log line this often */

typedef enum sn_event {
    SN_EV_RESOLVE = 0,
    SN_EV_RESOLVE_FAILED,
    SN_EV_SWITCH_MASTER,
    SN_EV_MASTER_CHANGED,
    SN_EVENT_COUNT
} sn_event_t;

static const char *const sn_event_names[SN_EVENT_COUNT] = {"resolve", "resolve_failed",
                                                           "switch_master", "master_changed"};

static const mt_stats_detail_t sn_events = {
    .prefix = "meltemi_redis_sentinel_events",
    .scope = "cluster",
    .label = "event",
    .total_only = true,
    .help_total = "Redis Sentinel events per cluster and worker sum: master look-ups answered "
                  "and failed, +switch-master messages for the service's master, and changes "
                  "of the master traffic goes to.",
};

typedef struct sn_conn {
    mt_rup_t rup;       /* first: the worker's Redis list treats every entry as an mt_rup_t */
    mt_rsentinel_t *st; /* NULL once the state let it go */
    bool subscription;  /* else a query */
    uint32_t replies;   /* a query: replies of its own read so far */
    uint32_t sentinel;  /* index in st->sentinels */
    bool connected;     /* the connect succeeded (on_close: lost, rather than refused) */
} sn_conn_t;

struct mt_rsentinel {
    mt_worker_t *w;
    mt_wcluster_t *c;
    mt_wendpoint_t **orig_eps; /* the configured endpoints, given back at cluster_free */
    uint32_t orig_n;
    mt_wendpoint_t *view[1]; /* what c->eps points at: the master */
    mt_wendpoint_t **sentinels;
    uint32_t n_sentinels;
    mt_wendpoint_t **nodes; /* every data node met */
    uint32_t n_nodes, cap_nodes;
    mt_wendpoint_t *master;
    mt_wendpoint_t **replicas; /* healthy in the last SENTINEL REPLICAS answer */
    uint32_t n_replicas, cap_replicas;
    uint32_t rr;
    sn_conn_t *query;
    uint64_t query_started_ms;
    bool query_got_master; /* the first reply of the query in flight named a master */
    sn_conn_t *sub;
    uint32_t next_query, next_sub; /* the Sentinel to ask next */
    uint64_t last_resolve_ms;      /* the last answered query */
    uint64_t resolve_at_ms;        /* 0: only the periodic query is due */
    uint64_t sub_retry_at_ms;
    uint32_t failed_in_row; /* queries failed since the last answer */
    uint64_t last_warn_ms,
        last_sub_warn_ms; /* log lines of failures: at most one per LOG_EVERY_MS */
    bool stopped;         /* the cluster is retired or the worker stops: no new connection */
    char last_error[300];
    mt_stats_block_t *events[SN_EVENT_COUNT];
};

static void sn_event(mt_rsentinel_t *st, sn_event_t ev)
{
    if (!st->events[ev])
        st->events[ev] = mt_stats_detail_block(&sn_events, st->c->conf->name, sn_event_names[ev]);
    mt_stat_add(st->events[ev], st->w->id, MT_ST_REQUESTS_TOTAL, 1);
}

static const mt_redis_cluster_conf_t *sn_conf(const mt_rsentinel_t *st)
{
    return mt_redis_cluster(st->c->conf);
}

static const char *sn_service(const mt_rsentinel_t *st)
{
    return st->c->conf->service ? st->c->conf->service : st->c->conf->name;
}

/* ---- endpoints ------------------------------------------------------------------------------ */

static mt_wendpoint_t *sn_endpoint_new(mt_wcluster_t *c, const char *addr, uint16_t port)
{
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof(sa));
    const char *err = NULL;
    if (uv_ip4_addr(addr, port, (struct sockaddr_in *)&sa) != 0 &&
        uv_ip6_addr(addr, port, (struct sockaddr_in6 *)&sa) != 0)
        err = "the Sentinel announced an address that is not an IP address";
    return mt_wendpoint_new(c, addr, port, &sa, err);
}

/* The data node at addr:port, created on first sight; NULL when out of memory. */
static mt_wendpoint_t *sn_node(mt_rsentinel_t *st, const char *host, size_t hlen, uint16_t port)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "%.*s", (int)MT_MIN(hlen, 63), host);
    for (uint32_t i = 0; i < st->n_nodes; i++) {
        if (st->nodes[i]->port == port && strcmp(st->nodes[i]->address, addr) == 0)
            return st->nodes[i];
    }
    if (st->n_nodes == st->cap_nodes) {
        uint32_t cap = st->cap_nodes ? st->cap_nodes * 2 : 8;
        mt_wendpoint_t **v = realloc(st->nodes, cap * sizeof(*v));
        if (!v)
            return NULL;
        st->nodes = v;
        st->cap_nodes = cap;
    }
    mt_wendpoint_t *ep = sn_endpoint_new(st->c, addr, port);
    st->nodes[st->n_nodes++] = ep;
    return ep;
}

static void sn_set_master(mt_rsentinel_t *st, mt_wendpoint_t *ep, const char *how)
{
    if (st->master == ep)
        return;
    mt_wendpoint_t *old = st->master;
    st->master = ep;
    st->view[0] = ep;
    st->c->n_eps = 1;
    sn_event(st, SN_EV_MASTER_CHANGED);
    if (old)
        mt_info("cluster %s: Sentinel master '%s' changed from %s:%u to %s:%u (%s)",
                st->c->conf->name, sn_conf(st)->sentinel_master, old->address, old->port,
                ep->address, ep->port, how);
    else
        mt_info("cluster %s: Sentinel master '%s' is %s:%u (%s)", st->c->conf->name,
                sn_conf(st)->sentinel_master, ep->address, ep->port, how);
}

/* ---- the connections to Sentinels ------------------------------------------------------------ */

static void sn_query_failed(mt_rsentinel_t *st, const char *why);
static void sn_conn_frame(sn_conn_t *conn, const char *p, size_t len);

/* "*n\r\n" then each argument as a bulk string, into buf; its length, or 0 if it does not fit. */
static size_t sn_encode(char *buf, size_t cap, const char *const *argv, const size_t *lens,
                        uint32_t argc)
{
    int n = snprintf(buf, cap, "*%u\r\n", argc);
    size_t off = (size_t)n;
    for (uint32_t i = 0; i < argc; i++) {
        if (off + lens[i] + 32 > cap)
            return 0;
        off += (size_t)snprintf(buf + off, cap - off, "$%zu\r\n", lens[i]);
        memcpy(buf + off, argv[i], lens[i]);
        off += lens[i];
        buf[off++] = '\r';
        buf[off++] = '\n';
    }
    return off;
}

static int sn_queue(sn_conn_t *conn, const char *const *argv, const size_t *lens, uint32_t argc)
{
    char buf[1024];
    size_t n = sn_encode(buf, sizeof(buf), argv, lens, argc);
    if (n == 0 || mt_outq_add_copy(&conn->rup.base.out, buf, n) != 0)
        return -1;
    mt_upstream_schedule(&conn->rup.base);
    return 0;
}

/* AUTH with the Sentinel password (its reply is dropped unless it is an error, which is logged:
 * the commands behind it then fail with NOAUTH, which is what the query reports). */
static int sn_queue_auth(sn_conn_t *conn, const mt_auth_t *a)
{
    const char *argv[3] = {"AUTH", a->username, a->password};
    size_t lens[3] = {4, a->username_len, a->password_len};
    char buf[1024];
    size_t n = a->username ? sn_encode(buf, sizeof(buf), argv, lens, 3)
                           : sn_encode(buf, sizeof(buf), (const char *const[]){"AUTH", a->password},
                                       (const size_t[]){4, a->password_len}, 2);
    int rc = n ? mt_rup_queue_ignored(&conn->rup, buf, n) : -1;
    memset(buf, 0, sizeof(buf)); /* the password leaves no copy on the stack */
    return rc;
}

/* Why a Sentinel endpoint is unusable, without the shell's label (which names the service,
 * not the Sentinel): "connection refused", "backing off"... */
static const char *sn_ep_error(const mt_wendpoint_t *ep, const char *dflt)
{
    if (ep->resolve_error[0])
        return ep->resolve_error;
    const char *e = ep->last_error[0] ? ep->last_error : NULL;
    const char *tail = e ? strstr(e, "unavailable: ") : NULL;
    return tail ? tail + 13 : (e ? e : dflt);
}

static int sn_conn_on_open(mt_upstream_t *base, void *arg)
{
    sn_conn_t *conn = (sn_conn_t *)base;
    sn_conn_t *want = arg; /* a template: which state, which role */
    conn->st = want->st;
    conn->subscription = want->subscription;
    conn->sentinel = want->sentinel;
    resp_reply_scanner_init(&conn->rup.scanner, &resp_default_limits);
    const mt_redis_cluster_conf_t *rc = sn_conf(conn->st);
    if (rc->sentinel_auth.password && sn_queue_auth(conn, &rc->sentinel_auth) != 0)
        return -1;
    const char *name = rc->sentinel_master;
    size_t nlen = strlen(name);
    if (conn->subscription)
        return sn_queue(conn, (const char *const[]){"SUBSCRIBE", "+switch-master"},
                        (const size_t[]){9, 14}, 2);
    if (sn_queue(conn, (const char *const[]){"SENTINEL", "get-master-addr-by-name", name},
                 (const size_t[]){8, 23, nlen}, 3) != 0)
        return -1;
    return sn_queue(conn, (const char *const[]){"SENTINEL", "replicas", name},
                    (const size_t[]){8, 8, nlen}, 3);
}

static void sn_conn_on_data(mt_upstream_t *base)
{
    sn_conn_t *conn = (sn_conn_t *)base;
    mt_buf_t *b = base->rbuf;
    while (b->pos < b->last && base->state == MT_UPSTREAM_READY && conn->st) {
        size_t flen = 0;
        const char *err = NULL;
        mt_status_t rc = resp_scan_reply(&conn->rup.scanner, b->pos, mt_buf_unread(b), &flen, &err);
        if (rc == MT_AGAIN)
            break;
        if (rc == MT_ERROR) {
            char why[200];
            snprintf(why, sizeof(why), "%s:%u sent a malformed reply: %s", base->ep->address,
                     base->ep->port, err ? err : "?");
            if (!conn->subscription)
                sn_query_failed(conn->st, why);
            mt_warn("cluster %s: Sentinel %s", conn->st->c->conf->name, why);
            mt_upstream_close(base);
            return;
        }
        const char *p = b->pos;
        b->pos += flen;
        if (!mt_rup_internal_reply(&conn->rup, p, flen))
            sn_conn_frame(conn, p, flen);
    }
}

static void sn_conn_on_connected(mt_upstream_t *base)
{
    ((sn_conn_t *)base)->connected = true;
}

static void sn_conn_on_error(mt_upstream_t *base, mt_upstream_event_t ev, const char *text)
{
    MT_UNUSED(ev);
    MT_UNUSED(base);
    mt_debug("sentinel: %s", text); /* the close that follows tells the state */
}

static void sn_conn_on_close(mt_upstream_t *base)
{
    sn_conn_t *conn = (sn_conn_t *)base;
    mt_rsentinel_t *st = conn->st;
    conn->st = NULL;
    if (!st)
        return;
    char why[200];
    snprintf(why, sizeof(why), "Sentinel %s:%u: %s", base->ep->address, base->ep->port,
             conn->connected ? "connection closed" : sn_ep_error(base->ep, "connection closed"));
    if (st->sub == conn) {
        st->sub = NULL;
        st->next_sub = conn->sentinel + 1; /* the next subscription tries another Sentinel */
        st->sub_retry_at_ms = mt_worker_now_ms(st->w) + MIN_GAP_MS;
        uint64_t now = mt_worker_now_ms(st->w);
        if (conn->rup.base.state == MT_UPSTREAM_READY ||
            now >= st->last_sub_warn_ms + LOG_EVERY_MS) {
            st->last_sub_warn_ms = now;
            mt_warn("cluster %s: no +switch-master subscription: %s", st->c->conf->name, why);
        }
    } else if (st->query == conn) {
        st->query = NULL;
        sn_query_failed(st, why);
    }
}

static void sn_conn_on_closed(mt_upstream_t *base)
{
    mt_rup_free_requests((mt_rup_t *)base);
}

static const mt_upstream_ops_t sn_conn_ops = {
    .protocol = MT_PROTO_REDIS,
    .size = sizeof(sn_conn_t),
    .text_prefix = "meltemi: ",
    .on_open = sn_conn_on_open,
    .on_connected = sn_conn_on_connected,
    .on_data = sn_conn_on_data,
    .on_error = sn_conn_on_error,
    .on_deadline = mt_rup_on_deadline, /* AUTH unanswered: the connection fails */
    .on_close = sn_conn_on_close,
    .on_closed = sn_conn_on_closed,
};

static sn_conn_t *sn_connect(mt_rsentinel_t *st, uint32_t i, bool subscription, const char **why)
{
    sn_conn_t want = {.st = st, .subscription = subscription, .sentinel = i};
    return (sn_conn_t *)mt_upstream_connect(st->sentinels[i], &sn_conn_ops, &want, why);
}

/* ---- replies ----------------------------------------------------------------------------------
 */

/* The error text of a "-..." reply, without CRLF. */
static int sn_error_len(const char *p, size_t len)
{
    return (int)MT_MIN(len >= 3 ? len - 3 : 0, 200);
}

/* SENTINEL GET-MASTER-ADDR-BY-NAME: *2 ip port, or a null array (no such master). */
static void sn_master_reply(sn_conn_t *conn, const char *p, size_t len)
{
    mt_rsentinel_t *st = conn->st;
    mt_wendpoint_t *from = conn->rup.base.ep;
    char why[300];
    if (len && p[0] == '-') {
        snprintf(why, sizeof(why), "Sentinel %s:%u answered %.*s", from->address, from->port,
                 sn_error_len(p, len), p + 1);
        sn_query_failed(st, why);
        return;
    }
    redis_sentinel_addr_t a;
    if (!redis_sentinel_master_reply(p, len, &a)) {
        snprintf(why, sizeof(why), "Sentinel %s:%u does not know a master named '%s'",
                 from->address, from->port, sn_conf(st)->sentinel_master);
        sn_query_failed(st, why);
        return;
    }
    mt_wendpoint_t *ep = sn_node(st, a.host, a.host_len, a.port);
    if (!ep) {
        sn_query_failed(st, "out of memory");
        return;
    }
    char how[120];
    snprintf(how, sizeof(how), "asked Sentinel %s:%u", from->address, from->port);
    st->query_got_master = true;
    st->failed_in_row = 0;
    st->last_error[0] = '\0';
    st->last_resolve_ms = mt_worker_now_ms(st->w);
    sn_event(st, SN_EV_RESOLVE);
    sn_set_master(st, ep, how);
}

static void sn_add_replica(mt_rsentinel_t *st, mt_wendpoint_t *ep)
{
    if (ep == st->master)
        return;
    if (st->n_replicas == st->cap_replicas) {
        uint32_t cap = st->cap_replicas ? st->cap_replicas * 2 : 4;
        mt_wendpoint_t **v = realloc(st->replicas, cap * sizeof(*v));
        if (!v)
            return;
        st->replicas = v;
        st->cap_replicas = cap;
    }
    st->replicas[st->n_replicas++] = ep;
}

/* SENTINEL REPLICAS: an array of flat field/value arrays; the replicas that are up are kept. */
static void sn_replicas_reply(sn_conn_t *conn, const char *p, size_t len)
{
    mt_rsentinel_t *st = conn->st;
    if (!st->query_got_master || (len && p[0] == '-'))
        return; /* the master look-up failed already, or an old Sentinel: keep what we had */
    redis_sentinel_addr_t up[MAX_REPLICAS];
    int n = redis_sentinel_replicas_reply(p, len, up, MAX_REPLICAS);
    if (n < 0)
        return; /* unreadable: keep what we had */
    st->n_replicas = 0;
    for (int i = 0; i < n; i++) {
        mt_wendpoint_t *ep = sn_node(st, up[i].host, up[i].host_len, up[i].port);
        if (ep)
            sn_add_replica(st, ep);
    }
}

/* +switch-master: "<name> <old-ip> <old-port> <new-ip> <new-port>". */
static void sn_switch_message(sn_conn_t *conn, const char *msg, size_t len)
{
    mt_rsentinel_t *st = conn->st;
    const char *name = sn_conf(st)->sentinel_master;
    redis_sentinel_addr_t a;
    int rc = redis_sentinel_switch_master(msg, len, name, strlen(name), &a);
    if (rc == 0)
        return; /* another master of these Sentinels */
    if (rc < 0) {
        mt_warn("cluster %s: unreadable +switch-master message: %.*s", st->c->conf->name,
                (int)MT_MIN(len, 200), msg);
        st->resolve_at_ms = mt_worker_now_ms(st->w);
        return;
    }
    sn_event(st, SN_EV_SWITCH_MASTER);
    mt_wendpoint_t *ep = sn_node(st, a.host, a.host_len, a.port);
    if (ep) {
        char how[120];
        snprintf(how, sizeof(how), "+switch-master from Sentinel %s:%u", conn->rup.base.ep->address,
                 conn->rup.base.ep->port);
        sn_set_master(st, ep, how);
        st->n_replicas = 0; /* the old set is stale: asked again at once */
    }
    st->resolve_at_ms = mt_worker_now_ms(st->w);
}

static void sn_conn_frame(sn_conn_t *conn, const char *p, size_t len)
{
    mt_rsentinel_t *st = conn->st;
    if (!conn->subscription) {
        uint32_t k = conn->replies++;
        if (k == 0) {
            sn_master_reply(conn, p, len);
        } else {
            sn_replicas_reply(conn, p, len);
            st->query = NULL; /* answered: the next query opens a connection of its own */
            conn->st = NULL;
            mt_upstream_close(&conn->rup.base);
        }
        return;
    }
    if (len && p[0] == '-') {
        mt_warn("cluster %s: Sentinel %s:%u refused SUBSCRIBE +switch-master: %.*s",
                st->c->conf->name, conn->rup.base.ep->address, conn->rup.base.ep->port,
                sn_error_len(p, len), p + 1);
        mt_upstream_close(&conn->rup.base); /* on_close moves on to the next Sentinel */
        return;
    }
    const char *kind = NULL, *msg = NULL;
    size_t klen = 0, mlen = 0;
    if (!redis_sentinel_pubsub(p, len, &kind, &klen, &msg, &mlen))
        return;
    if (klen == 9 && memcmp(kind, "subscribe", 9) == 0) {
        /* (re)subscribed: whatever happened while no subscription was up is asked for */
        st->resolve_at_ms = mt_worker_now_ms(st->w);
        return;
    }
    if (!msg)
        return;
    sn_switch_message(conn, msg, mlen);
}

/* ---- queries and the subscription ------------------------------------------------------------ */

static void sn_query_failed(mt_rsentinel_t *st, const char *why)
{
    uint64_t now = mt_worker_now_ms(st->w);
    if (st->query) {
        sn_conn_t *q = st->query;
        st->query = NULL;
        q->st = NULL;
        mt_upstream_close(&q->rup.base);
    }
    snprintf(st->last_error, sizeof(st->last_error), "%s", why);
    sn_event(st, SN_EV_RESOLVE_FAILED);
    st->failed_in_row++;
    /* the first failure after an answer, then one line per LOG_EVERY_MS while it lasts */
    if (st->failed_in_row == 1 || now >= st->last_warn_ms + LOG_EVERY_MS) {
        st->last_warn_ms = now;
        mt_warn("cluster %s: Sentinel look-up of master '%s' failed: %s%s", st->c->conf->name,
                sn_conf(st)->sentinel_master, why,
                st->failed_in_row > 1 ? " (still failing; retrying)" : "");
    }
    /* the next Sentinel at once; once every one failed in a row, a pause */
    st->resolve_at_ms =
        st->failed_in_row % MT_MAX(st->n_sentinels, 1) == 0 ? now + RETRY_ALL_DOWN_MS : now;
}

static void sn_query_start(mt_rsentinel_t *st, uint64_t now)
{
    st->resolve_at_ms = 0;
    char why[300] = "";
    for (uint32_t k = 0; k < st->n_sentinels; k++) {
        uint32_t i = st->next_query++ % st->n_sentinels;
        mt_wendpoint_t *ep = st->sentinels[i];
        if (!mt_rendpoint_healthy(ep, now)) {
            snprintf(why, sizeof(why), "Sentinel %s:%u: %s", ep->address, ep->port,
                     sn_ep_error(ep, "backing off"));
            continue;
        }
        const char *err = NULL;
        sn_conn_t *q = sn_connect(st, i, false, &err);
        if (q) {
            st->query = q;
            st->query_started_ms = now;
            st->query_got_master = false;
            return;
        }
        snprintf(why, sizeof(why), "Sentinel %s:%u: %s", ep->address, ep->port, err ? err : "?");
    }
    char text[400];
    snprintf(text, sizeof(text), "no Sentinel reachable (%s)", why[0] ? why : "none configured");
    sn_query_failed(st, text);
    st->resolve_at_ms = now + RETRY_ALL_DOWN_MS; /* each one was tried just now */
}

static void sn_sub_start(mt_rsentinel_t *st, uint64_t now)
{
    for (uint32_t k = 0; k < st->n_sentinels; k++) {
        uint32_t i = st->next_sub++ % st->n_sentinels;
        if (!mt_rendpoint_healthy(st->sentinels[i], now))
            continue;
        const char *err = NULL;
        sn_conn_t *s = sn_connect(st, i, true, &err);
        if (s) {
            st->sub = s;
            return;
        }
    }
    st->sub_retry_at_ms = now + RETRY_ALL_DOWN_MS;
}

/* ---- the cluster's part ------------------------------------------------------------------------
 */

static mt_rsentinel_t *sn_get(mt_wcluster_t *c)
{
    if (c->proxy_state)
        return c->proxy_state;
    const mt_redis_cluster_conf_t *rc = mt_redis_cluster(c->conf);
    mt_rsentinel_t *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->sentinels = calloc(rc->n_sentinels ? rc->n_sentinels : 1, sizeof(*st->sentinels));
    if (!st->sentinels) {
        free(st);
        return NULL;
    }
    st->w = c->w;
    st->c = c;
    for (uint32_t i = 0; i < rc->n_sentinels; i++) {
        const mt_endpoint_conf_t *e = &rc->sentinels[i];
        st->sentinels[st->n_sentinels++] =
            mt_wendpoint_new(c, e->address ? e->address : "?", e->port, &e->sa, e->resolve_error);
    }
    st->orig_eps = c->eps;
    st->orig_n = c->n_eps;
    c->eps = st->view;
    c->n_eps = 0; /* until a Sentinel names the master */
    c->proxy_state = st;
    snprintf(st->last_error, sizeof(st->last_error), "no Sentinel answered yet");
    return st;
}

void mt_rsentinel_tick(mt_wcluster_t *c, uint64_t now_ms)
{
    mt_rsentinel_t *st = sn_get(c);
    if (!st || st->stopped)
        return;
    if (c->retired) {
        mt_rsentinel_stop(c);
        return;
    }
    if (st->query &&
        now_ms >= st->query_started_ms + c->conf->connect_timeout_ms + QUERY_GRACE_MS) {
        char why[200];
        mt_wendpoint_t *ep = st->query->rup.base.ep;
        snprintf(why, sizeof(why), "Sentinel %s:%u did not answer within %u ms", ep->address,
                 ep->port, c->conf->connect_timeout_ms + QUERY_GRACE_MS);
        sn_query_failed(st, why);
    }
    bool due = (st->resolve_at_ms && now_ms >= st->resolve_at_ms) ||
               now_ms >= st->last_resolve_ms + REFRESH_PERIOD_MS;
    if (!st->query && due)
        sn_query_start(st, now_ms);
    if (!st->sub && now_ms >= st->sub_retry_at_ms)
        sn_sub_start(st, now_ms);
}

void mt_rsentinel_stop(mt_wcluster_t *c)
{
    mt_rsentinel_t *st = mt_rsentinel(c);
    if (!st || st->stopped)
        return;
    st->stopped = true;
    sn_conn_t *q = st->query, *s = st->sub;
    st->query = st->sub = NULL;
    if (q) {
        q->st = NULL;
        mt_upstream_close(&q->rup.base);
    }
    if (s) {
        s->st = NULL;
        mt_upstream_close(&s->rup.base);
    }
}

void mt_rsentinel_free(mt_wcluster_t *c)
{
    mt_rsentinel_t *st = mt_rsentinel(c);
    if (!st)
        return;
    /* every connection is closed by now (the cluster is freed once it has none) */
    c->eps = st->orig_eps;
    c->n_eps = st->orig_n;
    for (uint32_t i = 0; i < st->n_sentinels; i++)
        mt_wendpoint_free(st->sentinels[i]);
    for (uint32_t i = 0; i < st->n_nodes; i++)
        mt_wendpoint_free(st->nodes[i]);
    free(st->sentinels);
    free(st->nodes);
    free(st->replicas);
    free(st);
    c->proxy_state = NULL;
}

void mt_rsentinel_node_failed(mt_wcluster_t *c, const mt_wendpoint_t *ep)
{
    mt_rsentinel_t *st = mt_rsentinel(c);
    if (!st || ep != st->master)
        return;
    uint64_t now = mt_worker_now_ms(c->w);
    if (!st->resolve_at_ms || st->resolve_at_ms > now + MIN_GAP_MS)
        st->resolve_at_ms = now + MIN_GAP_MS;
}

const char *mt_rsentinel_no_master(mt_wcluster_t *c, char *buf, size_t n)
{
    mt_rsentinel_t *st = mt_rsentinel(c);
    snprintf(buf, n, "ERR meltemi: %s: no master known for '%s' from Sentinel: %s",
             st ? sn_service(st) : c->conf->name, mt_redis_cluster(c->conf)->sentinel_master,
             st ? st->last_error : "discovery has not started");
    return buf;
}

static mt_wendpoint_t *sn_pick_replica(mt_rsentinel_t *st, uint64_t now)
{
    for (uint32_t k = 0; k < st->n_replicas; k++) {
        mt_wendpoint_t *ep = st->replicas[st->rr++ % st->n_replicas];
        if (mt_rendpoint_healthy(ep, now))
            return ep;
    }
    return NULL;
}

mt_wendpoint_t *mt_rsentinel_read_endpoint(mt_wcluster_t *c, mt_read_policy_t policy)
{
    mt_rsentinel_t *st = mt_rsentinel(c);
    uint64_t now = mt_worker_now_ms(c->w);
    mt_wendpoint_t *m = st->master, *ep = NULL;
    switch (policy) {
    case MT_READ_REPLICA:
        return sn_pick_replica(st, now); /* NULL: none, the caller says so */
    case MT_READ_PREFER_REPLICA:
        ep = sn_pick_replica(st, now);
        break;
    case MT_READ_PREFER_MASTER:
        ep = m && mt_rendpoint_healthy(m, now) ? m : sn_pick_replica(st, now);
        break;
    case MT_READ_ANY: {
        uint32_t i = st->rr++ % (st->n_replicas + 1);
        ep = i == 0 ? m : st->replicas[i - 1];
        if (!ep || !mt_rendpoint_healthy(ep, now))
            ep = sn_pick_replica(st, now);
        break;
    }
    default:
        break;
    }
    return ep ? ep : m;
}

static void sn_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void sn_json_ep(FILE *f, const mt_wendpoint_t *ep)
{
    if (!ep) {
        fputs("null", f);
        return;
    }
    fprintf(f, "\"%s:%u\"", ep->address, ep->port);
}

void mt_rsentinel_status(mt_wcluster_t *c, FILE *f)
{
    mt_rsentinel_t *st = mt_rsentinel(c);
    fputs("{\"mode\":\"proxy\",\"sentinel\":{\"master_name\":", f);
    sn_json_str(f, mt_redis_cluster(c->conf)->sentinel_master);
    if (!st) {
        fputs(",\"master\":null}}", f);
        return;
    }
    fputs(",\"master\":", f);
    sn_json_ep(f, st->master);
    fputs(",\"replicas\":[", f);
    for (uint32_t i = 0; i < st->n_replicas; i++) {
        if (i)
            fputc(',', f);
        sn_json_ep(f, st->replicas[i]);
    }
    fputs("],\"sentinels\":[", f);
    for (uint32_t i = 0; i < st->n_sentinels; i++) {
        if (i)
            fputc(',', f);
        sn_json_ep(f, st->sentinels[i]);
    }
    fputs("],\"subscribed_to\":", f);
    sn_json_ep(f, st->sub ? st->sub->rup.base.ep : NULL);
    fputs(",\"last_error\":", f);
    sn_json_str(f, st->last_error);
    fputs("}}", f);
}
