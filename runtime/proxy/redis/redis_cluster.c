/*
 * redis_cluster.c - Redis Cluster behind a plain-Redis face (RedisDestination mode CLUSTER).
 *
 * Each worker keeps its own slot map per cluster, learnt with CLUSTER SLOTS from the
 * service's endpoints (the seeds) and then from any known node. A command goes to the node
 * that serves its key's slot (CRC16 with hash tags); MOVED updates that slot and re-sends,
 * ASK sends ASKING then the command without touching the map; either is bounded. Multi-key
 * commands whose keys live in several slots are split into one command per slot and their
 * replies combined in the client's order; keyless commands that concern the whole data set
 * (DBSIZE, KEYS, FLUSHALL, SCAN...) visit every master. Commands that arrive before the first
 * map wait for it (bounded in number and by the connect timeout).
 *
 * Requests keep a reference to their command bytes (r->frame) until answered, so any of
 * them can be re-sent after a redirection without having been copied.
 */
#include "runtime/proxy/redis/redis_proxy.h"

#include "protocols/redis/admin.h"

#include "runtime/core/log.h"

#include "protocols/redis/cluster_slots.h"
#include "protocols/redis/reply_reader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 16384
#define NO_SHARD 0xFFFF
#define REFRESH_PERIOD_MS 5000   /* periodic CLUSTER SLOTS */
#define REFRESH_MIN_GAP_MS 100   /* at most this often when redirections or failures ask */
#define TOPOLOGY_TIMEOUT_MS 1000 /* CLUSTER SLOTS unanswered this long: ask another node */
#define NODE_SUSPECT_MS 5000     /* a node that failed this recently is asked last */
#define MAX_REDIRECTS 5
#define MAX_WAITING 100000 /* commands held while the first slot map is learnt */
#define SCAN_SHARD_BITS 10 /* SCAN cursor = node cursor << 10 | master index */
#define MAX_KEYS_INLINE 64

typedef struct mt_rshard {
    mt_wendpoint_t *master;
    mt_wendpoint_t **replicas;
    uint32_t n_replicas;
    uint32_t rr;
    uint16_t first_slot;
} mt_rshard_t;

typedef enum cluster_event {
    CLUSTER_EV_MOVED = 0,
    CLUSTER_EV_ASK,
    CLUSTER_EV_REDIRECT_LIMIT,
    CLUSTER_EV_REFRESH,
    CLUSTER_EV_REFRESH_FAILED,
    CLUSTER_EVENT_COUNT
} cluster_event_t;

struct mt_rtopo {
    mt_worker_t *w;
    uint16_t slot_shard[SLOTS];
    mt_rshard_t *shards;
    uint32_t n_shards;
    mt_wendpoint_t **nodes; /* every node ever known, seeds first; endpoints live as long as
                               the cluster so their pooled connections can be reused */
    uint64_t *failed_at;    /* per node: when a connection or command to it last failed */
    uint32_t n_nodes, cap_nodes;
    uint32_t n_seeds;
    uint32_t n_unknown; /* nodes first met through a MOVED/ASK */
    bool have_map;
    bool refreshing;
    uint32_t refresh_node; /* the node asked by the refresh in flight */
    uint64_t refresh_started_ms;
    uint64_t last_refresh_ms;
    uint64_t refresh_at_ms;   /* 0: only the periodic refresh is due */
    uint32_t failed_attempts; /* topology requests failed since the last success */
    uint32_t next_node;
    mt_rreq_t *waiting_head, *waiting_tail;
    uint32_t n_waiting;
    uint64_t waiting_since_ms;
    char last_error[300];
    mt_stats_block_t *events[CLUSTER_EVENT_COUNT]; /* created on first use (topo_event) */
};

/* ---- events counted per cluster: redirections and slot map refreshes ------------------------ */

static const char *const cluster_event_names[CLUSTER_EVENT_COUNT] = {
    "moved", "ask", "redirect_limit", "refresh", "refresh_failed"};

static const mt_stats_detail_t cluster_events = {
    .prefix = "meltemi_redis_cluster_events",
    .scope = "cluster",
    .label = "event",
    .total_only = true,
    .help_total = "Redis Cluster events per cluster: MOVED and ASK redirections followed, "
                  "commands over the redirection limit, slot map refreshes and failed ones.",
};

static void topo_event(const mt_wcluster_t *c, mt_rtopo_t *t, cluster_event_t ev)
{
    if (!t->events[ev])
        t->events[ev] =
            mt_stats_detail_block(&cluster_events, c->conf->name, cluster_event_names[ev]);
    mt_stat_add(t->events[ev], t->w->id, MT_ST_REQUESTS_TOTAL, 1);
}

typedef enum split_op {
    SPLIT_MGET = 1, /* array, one element per key in the client's order */
    SPLIT_SUM,      /* integer sum: DEL, UNLINK, EXISTS, TOUCH, DBSIZE */
    SPLIT_OK,       /* +OK when every part says OK: MSET, FLUSHALL, FLUSHDB */
    SPLIT_CONCAT,   /* arrays concatenated: KEYS */
    SPLIT_SCAN,     /* one master at a time, cursor rewritten */
    SPLIT_ANY_KEY,  /* RANDOMKEY: the first non-nil reply, from a rotating start */
    SPLIT_SAME,     /* SCRIPT LOAD / FLUSH: every master answers alike; the first reply */
    SPLIT_AND,      /* SCRIPT EXISTS: arrays of 0/1, 1 where every master says 1 */
    SPLIT_DOCS,     /* COMMAND DOCS: one master's reply, kept to what COMMAND lists */
    SPLIT_ANY_OK,   /* SCRIPT / FUNCTION KILL: the first reply that is not an error */
} split_op_t;

struct mt_rsplit {
    split_op_t op;
    uint32_t n_parts;
    uint32_t pending;
    uint32_t n_keys;
    mt_slice_t *elems;   /* MGET: per key; CONCAT: per part */
    uint32_t *part_keys; /* MGET: key indexes of every part, concatenated */
    uint32_t *part_off;  /* MGET: where each part's key indexes start (n_parts + 1) */
    int64_t sum;
    char *error;           /* first error reply text (without '-' and CRLF) */
    uint32_t n_failed;     /* parts answered with an error */
    uint32_t scan_index;   /* SCAN: the master this call visits; ANY_KEY: where to start */
    uint32_t scan_masters; /* SCAN: masters in the map the cursor was made for */
};

/* ---- nodes and the slot map ----------------------------------------------------------------- */

static mt_wendpoint_t *topo_node(mt_wcluster_t *c, const char *host, size_t hlen, uint16_t port)
{
    mt_rtopo_t *t = mt_rtopo(c);
    char addr[64];
    snprintf(addr, sizeof(addr), "%.*s", (int)MT_MIN(hlen, 63), host);
    for (uint32_t i = 0; i < t->n_nodes; i++) {
        if (t->nodes[i]->port == port && strcmp(t->nodes[i]->address, addr) == 0)
            return t->nodes[i];
    }
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof(sa));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa;
    const char *err = NULL;
    if (uv_ip4_addr(addr, port, s4) != 0 && uv_ip6_addr(addr, port, s6) != 0)
        err = "the cluster announced an address that is not an IP address";
    if (t->n_nodes == t->cap_nodes) {
        uint32_t cap = t->cap_nodes ? t->cap_nodes * 2 : 16;
        mt_wendpoint_t **v = realloc(t->nodes, cap * sizeof(*v));
        if (!v)
            return NULL;
        t->nodes = v;
        uint64_t *f = realloc(t->failed_at, cap * sizeof(*f));
        if (!f)
            return NULL;
        memset(f + t->cap_nodes, 0, (cap - t->cap_nodes) * sizeof(*f));
        t->failed_at = f;
        t->cap_nodes = cap;
    }
    mt_wendpoint_t *ep = mt_wendpoint_new(c, addr, port, &sa, err);
    if (!ep)
        return NULL;
    t->nodes[t->n_nodes++] = ep;
    return ep;
}

static mt_rtopo_t *topo_get(mt_wcluster_t *c)
{
    if (mt_rtopo(c))
        return mt_rtopo(c);
    mt_rtopo_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    memset(t->slot_shard, 0xFF, sizeof(t->slot_shard));
    t->w = c->w;
    c->proxy_state = t;
    /* The seeds: the service's own endpoints. Their wendpoints are shared with c->eps. */
    t->cap_nodes = c->n_eps + 16;
    t->nodes = calloc(t->cap_nodes, sizeof(*t->nodes));
    t->failed_at = calloc(t->cap_nodes, sizeof(*t->failed_at));
    if (!t->nodes || !t->failed_at) {
        free(t->nodes);
        free(t->failed_at);
        free(t);
        c->proxy_state = NULL;
        return NULL;
    }
    for (uint32_t i = 0; i < c->n_eps; i++)
        t->nodes[t->n_nodes++] = c->eps[i];
    t->n_seeds = t->n_nodes; /* shared with c->eps: not freed with the topology */
    /* RedisDestination discoveryEndpoints: more seeds (freed with the topology). */
    for (uint32_t i = 0; i < mt_redis_cluster(c->conf)->n_discovery; i++) {
        const mt_endpoint_conf_t *d = &mt_redis_cluster(c->conf)->discovery[i];
        if (d->address && !d->resolve_error)
            topo_node(c, d->address, strlen(d->address), d->port);
    }
    return t;
}

void mt_rcluster_free(mt_rtopo_t *t)
{
    /* Commands still waiting for a first map belong to nobody by now (the cluster is only
     * freed once no session uses it). */
    while (t->waiting_head) {
        mt_rreq_t *r = t->waiting_head;
        t->waiting_head = r->unext;
        mt_rreq_free(t->w, r);
    }
    for (uint32_t i = t->n_seeds; i < t->n_nodes; i++)
        mt_wendpoint_free(t->nodes[i]);
    for (uint32_t i = 0; i < t->n_shards; i++)
        free(t->shards[i].replicas);
    free(t->shards);
    free(t->nodes);
    free(t->failed_at);
    free(t);
}

static void topo_refresh(mt_wcluster_t *c, uint64_t now);
static void cluster_route(mt_wcluster_t *c, mt_rreq_t *r, const resp_request_t *req);
static void cluster_dispatch(mt_wcluster_t *c, mt_rreq_t *r, const resp_request_t *req);

static void topo_fail_waiting(mt_wcluster_t *c, const char *why)
{
    mt_rtopo_t *t = mt_rtopo(c);
    mt_worker_t *w = c->w;
    char text[400];
    snprintf(text, sizeof(text), "ERR meltemi: cluster %s: no slot map: %s",
             c->conf->service ? c->conf->service : c->conf->name, why);
    while (t->waiting_head) {
        mt_rreq_t *r = t->waiting_head;
        t->waiting_head = r->unext;
        r->unext = NULL;
        mt_rreq_complete_error(w, r, text);
    }
    t->waiting_tail = NULL;
    t->n_waiting = 0;
    mt_rpubsub_topology_failed(c);
}

typedef void (*reread_then_t)(mt_wcluster_t *c, mt_rreq_t *r, const resp_request_t *req);

/* Parses again the command bytes kept in r->frame (the client's multibulk frame, or the
 * proxy's own re-encoding of an inline one) and hands the request to then(c, r, ...). Those
 * bytes parsed once already, so a failure here is an internal error, answered as one. */
static void reread(mt_wcluster_t *c, mt_rreq_t *r, reread_then_t then)
{
    resp_req_parser_t parser;
    resp_req_parser_init(&parser, &resp_default_limits);
    resp_request_t req;
    const char *err = NULL;
    if (resp_parse_request(&parser, r->frame.p, r->frame.len, &req, &err) == MT_OK)
        then(c, r, &req);
    else
        mt_rreq_complete_error(c->w, r, "ERR meltemi: internal error re-reading a command");
    resp_req_parser_free(&parser);
}

/* Re-routes the commands that waited for a slot map. */
static void topo_release_waiting(mt_wcluster_t *c)
{
    mt_rtopo_t *t = mt_rtopo(c);
    mt_rreq_t *r = t->waiting_head;
    t->waiting_head = t->waiting_tail = NULL;
    t->n_waiting = 0;
    while (r) {
        mt_rreq_t *next = r->unext;
        r->unext = NULL;
        reread(c, r, cluster_dispatch);
        r = next;
    }
}

static int shard_cmp(const void *a, const void *b)
{
    const mt_rshard_t *x = a, *y = b;
    return (int)x->first_slot - (int)y->first_slot;
}

/* A parsed CLUSTER SLOTS reply -> shards (ranges of one master merged) and the slot -> shard
 * map. Returns the number of shards, 0 on failure (nothing kept). */
static uint32_t slots_to_shards(mt_wcluster_t *c, mt_wendpoint_t *from,
                                const redis_cluster_slots_t *cs, mt_rshard_t *shards, uint16_t *map)
{
    uint32_t ns = 0;
    for (uint32_t i = 0; i < cs->n_ranges; i++) {
        const redis_slot_range_t *rg = &cs->ranges[i];
        mt_wendpoint_t *eps[64]; /* a master and up to 63 replicas per range are used */
        uint32_t n = MT_MIN(rg->n_nodes, (uint32_t)MT_ARRAY_LEN(eps));
        for (uint32_t j = 0; j < n; j++) {
            const redis_slot_node_t *nd = &cs->nodes[rg->node + j];
            const char *host = nd->host ? nd->host : from->address; /* "the node you asked" */
            size_t hlen = nd->host ? nd->host_len : strlen(from->address);
            if (!(eps[j] = topo_node(c, host, hlen, nd->port)))
                goto fail;
        }
        uint32_t q = 0;
        while (q < ns && shards[q].master != eps[0]) /* one shard per master */
            q++;
        mt_rshard_t *sh = &shards[q];
        if (q == ns) {
            ns++;
            sh->master = eps[0];
            sh->first_slot = rg->first;
            sh->replicas = calloc(n, sizeof(*sh->replicas));
            if (!sh->replicas)
                goto fail;
            for (uint32_t j = 1; j < n; j++)
                sh->replicas[sh->n_replicas++] = eps[j];
        }
        sh->first_slot = MT_MIN(sh->first_slot, rg->first);
        for (uint32_t slot = rg->first; slot <= rg->last; slot++)
            map[slot] = (uint16_t)q;
    }
    return ns;
fail:
    for (uint32_t i = 0; i < ns; i++)
        free(shards[i].replicas);
    return 0;
}

/* CLUSTER SLOTS answered (protocols/redis/cluster_slots.h): a new shard table, or the old
 * map kept when the reply does not parse. */
void mt_rcluster_on_slots(mt_wcluster_t *c, mt_wendpoint_t *from, const char *p, size_t len)
{
    mt_rtopo_t *t = mt_rtopo(c);
    if (!t)
        return;
    mt_worker_t *w = c->w;
    t->refreshing = false;
    t->last_refresh_ms = mt_worker_now_ms(w);
    if (len && p[0] == '-') {
        snprintf(t->last_error, sizeof(t->last_error), "%s:%u answered CLUSTER SLOTS with %.*s",
                 from->address, from->port, (int)MT_MIN(len - 3, 200), p + 1);
        mt_rcluster_topology_failed(c, t->last_error);
        return;
    }
    redis_cluster_slots_t cs;
    const char *why = NULL;
    if (redis_cluster_slots_parse(p, len, &cs, &why) != MT_OK) {
        char text[160];
        snprintf(text, sizeof(text), "malformed CLUSTER SLOTS reply: %s", why);
        mt_rcluster_topology_failed(c, text);
        return;
    }
    mt_rshard_t *shards = calloc(cs.n_ranges, sizeof(*shards));
    uint16_t *map = malloc(sizeof(uint16_t) * SLOTS);
    uint32_t ns = 0;
    if (shards && map) {
        memset(map, 0xFF, sizeof(uint16_t) * SLOTS);
        ns = slots_to_shards(c, from, &cs, shards, map);
    }
    redis_cluster_slots_free(&cs);
    if (ns == 0) {
        free(shards);
        free(map);
        mt_rcluster_topology_failed(c, "malformed or empty CLUSTER SLOTS reply");
        return;
    }
    /* Stable master order (by first slot) for SCAN cursors; remap the slot table. */
    uint16_t *order = malloc(sizeof(uint16_t) * ns);
    if (!order) {
        for (uint32_t i = 0; i < ns; i++)
            free(shards[i].replicas);
        free(shards);
        free(map);
        mt_rcluster_topology_failed(c, "out of memory");
        return;
    }
    for (uint32_t i = 0; i < ns; i++)
        shards[i].rr = i; /* carries the index through the sort */
    qsort(shards, ns, sizeof(*shards), shard_cmp);
    for (uint32_t i = 0; i < ns; i++) {
        order[shards[i].rr] = (uint16_t)i;
        shards[i].rr = 0;
    }
    for (uint32_t s = 0; s < SLOTS; s++)
        t->slot_shard[s] = map[s] != NO_SHARD ? order[map[s]] : NO_SHARD;
    free(order);
    free(map);
    for (uint32_t i = 0; i < t->n_shards; i++)
        free(t->shards[i].replicas);
    free(t->shards);
    t->shards = shards;
    t->n_shards = ns;
    bool first = !t->have_map;
    t->have_map = true;
    t->n_unknown = 0; /* nodes met through redirections are in the map from now on */
    t->failed_attempts = 0;
    t->last_error[0] = '\0';
    if (first)
        mt_info("cluster %s: slot map learnt from %s:%u: %u masters", c->conf->name, from->address,
                from->port, ns);
    else
        mt_debug("cluster %s: slot map refreshed: %u masters", c->conf->name, ns);
    topo_event(c, t, CLUSTER_EV_REFRESH);
    if (t->waiting_head)
        topo_release_waiting(c);
    mt_rpubsub_topology(c);
}

mt_wendpoint_t *mt_rcluster_master_of(mt_wcluster_t *c, uint16_t slot)
{
    if (!topo_get(c))
        return NULL;
    mt_wendpoint_t *ep = mt_rcluster_slot_master(c, slot);
    if (!ep)
        mt_rcluster_node_failed(c, NULL); /* asks for a refresh soon */
    return ep;
}

void mt_rcluster_topology_failed(mt_wcluster_t *c, const char *why)
{
    mt_rtopo_t *t = mt_rtopo(c);
    if (!t)
        return;
    t->refreshing = false;
    t->failed_attempts++;
    topo_event(c, t, CLUSTER_EV_REFRESH_FAILED);
    if (why != t->last_error)
        snprintf(t->last_error, sizeof(t->last_error), "%s", why);
    mt_warn("cluster %s: topology refresh failed: %s", c->conf->name, t->last_error);
    uint64_t now = mt_worker_now_ms(c->w);
    if (!t->have_map && t->failed_attempts >= MT_MAX(t->n_nodes, 1)) {
        topo_fail_waiting(c, t->last_error);
        t->failed_attempts = 0;
        t->refresh_at_ms = now + 200;
        return;
    }
    t->refresh_at_ms = now; /* try the next node at the next tick */
}

void mt_rcluster_node_failed(mt_wcluster_t *c, mt_wendpoint_t *ep)
{
    mt_rtopo_t *t = mt_rtopo(c);
    uint64_t now = mt_worker_now_ms(c->w);
    for (uint32_t i = 0; t && ep && i < t->n_nodes; i++) {
        if (t->nodes[i] == ep)
            t->failed_at[i] = now;
    }
    if (t && (!t->refresh_at_ms || t->refresh_at_ms > now + REFRESH_MIN_GAP_MS))
        t->refresh_at_ms = now + REFRESH_MIN_GAP_MS;
}

static void topo_refresh(mt_wcluster_t *c, uint64_t now)
{
    mt_rtopo_t *t = mt_rtopo(c);
    if (t->refreshing || t->n_nodes == 0)
        return;
    t->refresh_at_ms = 0;
    /* Walk the list so one dead node cannot stall discovery: first the nodes that have not
     * failed lately, then any node not in connect backoff. */
    for (uint32_t k = 0; k < 2 * t->n_nodes; k++) {
        uint32_t i = t->next_node++ % t->n_nodes;
        mt_wendpoint_t *ep = t->nodes[i];
        bool suspect = t->failed_at[i] && now < t->failed_at[i] + NODE_SUSPECT_MS;
        if (!mt_rendpoint_healthy(ep, now) || (k < t->n_nodes && suspect))
            continue;
        const char *why = NULL;
        if (mt_rcluster_send_slots(ep, &why)) {
            t->refreshing = true;
            t->refresh_node = i;
            t->refresh_started_ms = now;
            return;
        }
        snprintf(t->last_error, sizeof(t->last_error), "%s:%u: %s", ep->address, ep->port,
                 why ? why : "unavailable");
    }
    if (!t->last_error[0])
        snprintf(t->last_error, sizeof(t->last_error), "no reachable node");
    t->failed_attempts = MT_MAX(t->failed_attempts, t->n_nodes);
    mt_rcluster_topology_failed(c, t->last_error);
}

void mt_rcluster_tick(mt_wcluster_t *c, uint64_t now_ms)
{
    mt_rtopo_t *t = mt_rtopo(c);
    if (t->refreshing && now_ms >= t->refresh_started_ms + TOPOLOGY_TIMEOUT_MS) {
        /* A node that accepts connections but does not answer (stopped, overloaded) must not
         * hold the map back: ask the next one. A late answer is still applied. */
        mt_wendpoint_t *ep = t->nodes[t->refresh_node];
        t->failed_at[t->refresh_node] = now_ms;
        snprintf(t->last_error, sizeof(t->last_error),
                 "%s:%u did not answer CLUSTER SLOTS within %u ms", ep->address, ep->port,
                 TOPOLOGY_TIMEOUT_MS);
        mt_rcluster_topology_failed(c, t->last_error);
    }
    bool due = (t->refresh_at_ms && now_ms >= t->refresh_at_ms) ||
               now_ms >= t->last_refresh_ms + REFRESH_PERIOD_MS;
    if (!t->refreshing && due &&
        now_ms >= t->last_refresh_ms + (t->have_map ? REFRESH_MIN_GAP_MS : 0))
        topo_refresh(c, now_ms);
    if (t->waiting_head && now_ms >= t->waiting_since_ms + c->conf->connect_timeout_ms)
        topo_fail_waiting(c, t->last_error[0] ? t->last_error : "timed out learning the slot map");
}

/* ---- choosing a node ------------------------------------------------------------------------ */

static mt_wendpoint_t *pick_replica(mt_rshard_t *sh, uint64_t now)
{
    for (uint32_t k = 0; k < sh->n_replicas; k++) {
        mt_wendpoint_t *ep = sh->replicas[sh->rr++ % sh->n_replicas];
        if (mt_rendpoint_healthy(ep, now))
            return ep;
    }
    return NULL;
}

static mt_wendpoint_t *pick_node(mt_rsess_t *s, mt_rshard_t *sh, bool read_only, uint64_t now)
{
    if (!read_only || !s)
        return sh->master;
    mt_wendpoint_t *ep;
    switch (s->rconf->read_policy) {
    case MT_READ_PREFER_MASTER:
        if (mt_rendpoint_healthy(sh->master, now))
            return sh->master;
        ep = pick_replica(sh, now);
        return ep ? ep : sh->master;
    case MT_READ_REPLICA:
        ep = pick_replica(sh, now);
        return ep; /* NULL: no replica: the caller answers an error */
    case MT_READ_PREFER_REPLICA:
        ep = pick_replica(sh, now);
        return ep ? ep : sh->master;
    case MT_READ_ANY: {
        uint32_t n = sh->n_replicas + 1;
        for (uint32_t k = 0; k < n; k++) {
            uint32_t i = sh->rr++ % n;
            ep = i == 0 ? sh->master : sh->replicas[i - 1];
            if (mt_rendpoint_healthy(ep, now))
                return ep;
        }
        return sh->master;
    }
    default:
        return sh->master;
    }
}

/* The client a request (or a part of a part: prefix-route splits nest) answers to. */
static mt_rsess_t *rreq_session(mt_rreq_t *r)
{
    while (!r->sess && r->parent)
        r = r->parent;
    return r->sess;
}

/* Sends r to the node serving r->slot (or waits for the first map). */
static void cluster_send(mt_wcluster_t *c, mt_rreq_t *r)
{
    mt_rtopo_t *t = mt_rtopo(c);
    mt_worker_t *w = c->w;
    uint64_t now = mt_worker_now_ms(w);
    char text[400];
    uint16_t si = t->slot_shard[r->slot];
    if (r->pin) {
        /* A part addressed to one master (DBSIZE, KEYS, SCAN...): not through the slot
         * table, whose entries MOVED may have re-pointed before the next refresh. */
        const char *pwhy = NULL;
        if (!mt_rreq_send(r, r->pin, false, &pwhy)) {
            snprintf(text, sizeof(text), "ERR meltemi: upstream %s:%u unavailable: %s",
                     r->pin->address, r->pin->port, pwhy ? pwhy : "?");
            mt_rcluster_node_failed(c, r->pin);
            mt_rreq_complete_error(w, r, text);
        }
        return;
    }
    if (si == NO_SHARD || si >= t->n_shards) {
        mt_rcluster_node_failed(c, NULL);
        snprintf(text, sizeof(text), "CLUSTERDOWN Hash slot %u not served", r->slot);
        mt_rreq_complete_error(w, r, text);
        return;
    }
    mt_rshard_t *sh = &t->shards[si];
    mt_wendpoint_t *ep = pick_node(rreq_session(r), sh, r->read_only, now);
    if (!ep) {
        snprintf(text, sizeof(text),
                 "ERR meltemi: no healthy replica for slot %u (readPolicy REPLICA)", r->slot);
        mt_rreq_complete_error(w, r, text);
        return;
    }
    const char *why = NULL;
    if (!mt_rreq_send(r, ep, false, &why)) {
        char lbl[256];
        mt_stat_add(c->conf->stats, w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
        if (strncmp(why, "meltemi: ", 9) == 0)
            snprintf(text, sizeof(text), "ERR %s", why);
        else
            snprintf(text, sizeof(text), "ERR meltemi: upstream %s unavailable: %s",
                     mt_rendpoint_label(ep, lbl, sizeof(lbl)), why);
        mt_rcluster_node_failed(c, ep);
        mt_rreq_complete_error(w, r, text);
    }
}

static void cluster_wait(mt_wcluster_t *c, mt_rreq_t *r)
{
    mt_rtopo_t *t = mt_rtopo(c);
    if (t->n_waiting >= MAX_WAITING) {
        mt_rreq_complete_error(c->w, r, "ERR meltemi: too many commands waiting for the slot map");
        return;
    }
    if (!t->waiting_head)
        t->waiting_since_ms = mt_worker_now_ms(c->w);
    r->unext = NULL;
    if (t->waiting_tail)
        t->waiting_tail->unext = r;
    else
        t->waiting_head = r;
    t->waiting_tail = r;
    t->n_waiting++;
    if (!t->refreshing)
        topo_refresh(c, mt_worker_now_ms(c->w));
}

/* ---- redirections --------------------------------------------------------------------------- */

/* "-MOVED <slot> <host>:<port>\r\n" (or -ASK): the node, known or new (unknown: new). */
static mt_wendpoint_t *redirect_node(mt_wcluster_t *c, const char *p, size_t len, bool moved,
                                     uint16_t *slot_out, bool *unknown)
{
    const char *q = p + (moved ? 7 : 5), *end = p + len - 2;
    if (q >= end)
        return NULL;
    const char *sp = memchr(q, ' ', (size_t)(end - q));
    int64_t slot = -1, port = -1;
    if (!sp || !redis_parse_int(q, (size_t)(sp - q), &slot) || slot < 0 || slot >= SLOTS)
        return NULL;
    const char *hp = sp + 1;
    const char *colon = hp < end ? memrchr(hp, ':', (size_t)(end - hp)) : NULL;
    if (!colon || !redis_parse_int(colon + 1, (size_t)(end - colon - 1), &port) || port <= 0 ||
        port > 65535)
        return NULL;
    mt_rtopo_t *tp = mt_rtopo(c);
    uint32_t known = tp->n_nodes;
    mt_wendpoint_t *ep = topo_node(c, hp, (size_t)(colon - hp), (uint16_t)port);
    *unknown = tp->n_nodes > known;
    *slot_out = (uint16_t)slot;
    return ep;
}

/* MOVED: point the slot at the node's shard if we know it as a master; refresh soon. */
static void moved_slot(mt_wcluster_t *c, uint16_t slot, mt_wendpoint_t *ep)
{
    mt_rtopo_t *t = mt_rtopo(c);
    for (uint32_t i = 0; i < t->n_shards; i++) {
        if (t->shards[i].master == ep) {
            t->slot_shard[slot] = (uint16_t)i;
            break;
        }
    }
    mt_rcluster_node_failed(c, NULL);
}

mt_wendpoint_t *mt_rcluster_moved(mt_wcluster_t *c, const char *p, size_t len)
{
    if (!mt_rtopo(c) || len <= 7 || memcmp(p, "-MOVED ", 7) != 0)
        return NULL;
    uint16_t slot = 0;
    bool unknown = false;
    mt_wendpoint_t *ep = redirect_node(c, p, len, true, &slot, &unknown);
    if (ep)
        moved_slot(c, slot, ep);
    return ep;
}

bool mt_rcluster_redirect(mt_wcluster_t *c, mt_rreq_t *r, const char *p, size_t len)
{
    bool moved = len > 7 && memcmp(p, "-MOVED ", 7) == 0;
    bool ask = len > 5 && memcmp(p, "-ASK ", 5) == 0;
    if ((!moved && !ask) || !r->frame.buf)
        return false;
    mt_rsess_t *s = rreq_session(r);
    if (s && !s->rconf->enable_redirection)
        return false;
    mt_worker_t *w = c->w;
    char text[400];
    if (r->redirects >= MAX_REDIRECTS) {
        topo_event(c, mt_rtopo(c), CLUSTER_EV_REDIRECT_LIMIT);
        r->rflags |= MT_RF_URX;
        mt_debug("cluster %s: giving up after %u redirections (last: %.*s)", c->conf->name,
                 r->redirects, (int)MT_MIN(len - 3, 200), p + 1);
        snprintf(text, sizeof(text), "ERR meltemi: too many redirections (last: %.*s)",
                 (int)MT_MIN(len - 3, 200), p + 1);
        mt_rreq_complete_error(w, r, text);
        return true;
    }
    uint16_t slot = 0;
    bool unknown = false;
    mt_wendpoint_t *ep = redirect_node(c, p, len, moved, &slot, &unknown);
    if (!ep)
        return false;
    mt_rtopo_t *tp = mt_rtopo(c);
    if (unknown && ++tp->n_unknown > (s ? s->rconf->max_upstream_unknown_connections : 100)) {
        snprintf(text, sizeof(text),
                 "ERR meltemi: redirected to %s:%u, a node the slot map does not know, and "
                 "maxUpstreamUnknownConnections is reached",
                 ep->address, ep->port);
        mt_rreq_complete_error(w, r, text);
        return true;
    }
    r->redirects++;
    topo_event(c, tp, moved ? CLUSTER_EV_MOVED : CLUSTER_EV_ASK);
    mt_debug("cluster %s: %s slot %u -> %s:%u (redirection %u)", c->conf->name,
             moved ? "MOVED" : "ASK", (unsigned)slot, ep->address, ep->port, r->redirects);
    /* r just left its old connection's FIFO; its link there must not follow it into the
     * new one (mt_rup_push appends without clearing it). */
    r->unext = NULL;
    if (moved)
        moved_slot(c, slot, ep);
    const char *why = NULL;
    if (!mt_rreq_send(r, ep, ask, &why)) {
        snprintf(text, sizeof(text), "ERR meltemi: redirected to %s:%u, which is unavailable: %s",
                 ep->address, ep->port, why);
        mt_rreq_complete_error(w, r, text);
    }
    return true;
}

void mt_rcluster_resend(mt_wcluster_t *c, mt_rreq_t *r, const char *text)
{
    if (r->redirects >= MAX_REDIRECTS) {
        mt_stat_add(c->conf->stats, c->w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
        r->rflags |= MT_RF_UF;
        mt_rreq_complete_error(c->w, r, text);
        return;
    }
    r->redirects++;
    cluster_send(c, r);
}

/* ---- splitting and combining ---------------------------------------------------------------- */

void mt_rcluster_split_free(mt_worker_t *w, mt_rsplit_t *sp)
{
    if (!sp)
        return;
    uint32_t n = sp->op == SPLIT_MGET ? sp->n_keys : sp->n_parts;
    for (uint32_t i = 0; sp->elems && i < n; i++) {
        if (sp->elems[i].buf)
            mt_buf_unref(&w->pool, sp->elems[i].buf);
    }
    free(sp->elems);
    free(sp->part_keys);
    free(sp->part_off);
    free(sp->error);
    free(sp);
}

static void split_note_error(mt_rsplit_t *sp, const char *p, size_t len)
{
    sp->n_failed++;
    if (!sp->error)
        sp->error = strndup(p + 1, len >= 3 ? len - 3 : 0);
}

static void keep_slice(mt_slice_t *dst, mt_buf_t *b, const char *p, size_t len)
{
    mt_buf_ref(b);
    dst->buf = b;
    dst->p = p;
    dst->len = (uint32_t)len;
}

/* The first error of a split command, saying how many of its parts failed. */
static void split_out_error(resp_out_t *o, const mt_rsplit_t *sp)
{
    char text[400];
    /* Every part failed (CONFIG SET of an unknown parameter on every master): Redis's own
     * error, as a client written against Redis expects it. */
    if (sp->n_parts > 1 && sp->n_failed < sp->n_parts)
        snprintf(text, sizeof(text), "%s (meltemi: %u of %u parts failed)", sp->error, sp->n_failed,
                 sp->n_parts);
    else
        snprintf(text, sizeof(text), "%s", sp->error);
    resp_out_error(o, text);
}

static bool reply_is_nil(const mt_slice_t *e)
{
    return (e->len >= 3 && memcmp(e->p, "$-1", 3) == 0) || (e->len >= 1 && e->p[0] == '_');
}

/* SCRIPT EXISTS sha...: element i is 1 only where every master says 1. */
static void split_and(resp_out_t *o, const mt_rsplit_t *sp)
{
    redis_reader_t *rd = calloc(sp->n_parts ? sp->n_parts : 1, sizeof(*rd));
    int64_t n = -1;
    for (uint32_t i = 0; rd && i < sp->n_parts; i++) {
        rd[i] = redis_reader(sp->elems[i].p, sp->elems[i].len);
        int64_t ni = sp->elems[i].buf ? redis_read_num(&rd[i], '*') : -1;
        if (ni < 0 || (n >= 0 && ni != n)) {
            resp_out_error(o, "ERR meltemi: the masters' replies do not match");
            free(rd);
            return;
        }
        n = ni;
    }
    if (!rd) {
        resp_out_error(o, "ERR meltemi: out of memory");
        return;
    }
    resp_out_array(o, n);
    for (int64_t k = 0; k < n; k++) {
        bool all = true;
        for (uint32_t i = 0; i < sp->n_parts; i++)
            all &= redis_read_num(&rd[i], ':') == 1;
        resp_out_integer(o, all ? 1 : 0);
    }
    free(rd);
}

/* SCRIPT KILL / FUNCTION KILL: only the master running a script says OK; NOTBUSY from all
 * of them is Redis's NOTBUSY. */
static void split_any_ok(resp_out_t *o, const mt_rsplit_t *sp)
{
    for (uint32_t i = 0; i < sp->n_parts; i++) {
        if (sp->elems[i].buf) {
            resp_out_raw(o, sp->elems[i].p, sp->elems[i].len);
            return;
        }
    }
    resp_out_error(o, sp->error ? sp->error : "ERR meltemi: no reply");
}

/* Whether the COMMAND DOCS entry named name is one COMMAND lists (a module's or an unknown
 * name is not: meltemi would not forward it). */
static bool docs_offered(const char *name, size_t n)
{
    const redis_command_t *c = name ? redis_command_lookup(name, n) : NULL;
    return c && redis_local_command_offered(c);
}

/* COMMAND DOCS: Redis's map (a flat array of name, docs pairs in RESP2, a map in RESP3)
 * without the commands meltemi refuses, so DOCS agrees with COMMAND, INFO and COUNT. */
static void split_docs(resp_out_t *o, const mt_slice_t *e)
{
    char type = e->len ? e->p[0] : 0;
    if (type != '*' && type != '%') {
        resp_out_raw(o, e->p, e->len);
        return;
    }
    redis_reader_t r = redis_reader(e->p, e->len);
    int64_t n = redis_read_num(&r, type);
    int64_t pairs = type == '%' ? n : n / 2;
    const char *body = r.p;
    int64_t kept = 0;
    for (int pass = 0; pass < 2 && !r.bad; pass++) {
        r.p = body;
        if (pass == 1) {
            char head[32];
            int hn = snprintf(head, sizeof(head), "%%%lld\r\n", (long long)kept);
            if (type == '%')
                resp_out_raw(o, head, (size_t)hn);
            else
                resp_out_array(o, kept * 2);
        }
        for (int64_t i = 0; i < pairs && !r.bad; i++) {
            const char *start = r.p, *name = NULL, *val = NULL;
            size_t nlen = 0, vlen = 0;
            if (!redis_read_bulk(&r, &name, &nlen) || !redis_read_skip(&r, &val, &vlen))
                break;
            if (!docs_offered(name, nlen))
                continue;
            if (pass == 0)
                kept++;
            else
                resp_out_raw(o, start, (size_t)(r.p - start));
        }
    }
    if (r.bad) {
        o->len = 0;
        resp_out_error(o, "ERR meltemi: malformed COMMAND DOCS reply");
    }
}

static void split_finish(mt_worker_t *w, mt_rreq_t *parent)
{
    mt_rsplit_t *sp = parent->split;
    resp_out_t *o = &mt_rw(w)->scratch;
    o->len = 0;
    switch (sp->op) {
    case SPLIT_MGET:
        resp_out_array(o, sp->n_keys);
        for (uint32_t i = 0; i < sp->n_keys; i++) {
            if (sp->elems[i].buf)
                resp_out_raw(o, sp->elems[i].p, sp->elems[i].len);
            else
                resp_out_error(o, "ERR meltemi: no reply for this key");
        }
        break;
    case SPLIT_SUM:
        if (sp->error)
            split_out_error(o, sp);
        else
            resp_out_integer(o, sp->sum);
        break;
    case SPLIT_OK:
        if (sp->error)
            split_out_error(o, sp);
        else
            resp_out_simple(o, "OK");
        break;
    case SPLIT_ANY_KEY: {
        /* A master without keys says nil; the data set is empty only if all of them do. */
        const mt_slice_t *found = NULL;
        for (uint32_t k = 0; k < sp->n_parts && !found; k++) {
            const mt_slice_t *e = &sp->elems[(sp->scan_index + k) % sp->n_parts];
            if (e->buf && !reply_is_nil(e))
                found = e;
        }
        if (found)
            resp_out_raw(o, found->p, found->len);
        else if (sp->error)
            split_out_error(o, sp);
        else if (parent->sess && parent->sess->resp3)
            resp_out_raw(o, "_\r\n", 3); /* RESP3's null */
        else
            resp_out_raw(o, "$-1\r\n", 5);
        break;
    }
    case SPLIT_SAME:
        if (sp->error)
            split_out_error(o, sp);
        else if (sp->elems[0].buf)
            resp_out_raw(o, sp->elems[0].p, sp->elems[0].len);
        else
            resp_out_error(o, "ERR meltemi: no reply");
        break;
    case SPLIT_CONCAT: {
        if (sp->error) {
            split_out_error(o, sp);
            break;
        }
        int64_t total = 0;
        for (uint32_t i = 0; i < sp->n_parts; i++) {
            redis_reader_t r = {sp->elems[i].p, sp->elems[i].p + sp->elems[i].len, false};
            int64_t n = redis_read_num(&r, '*');
            total += n > 0 ? n : 0;
        }
        resp_out_array(o, total);
        for (uint32_t i = 0; i < sp->n_parts; i++) {
            redis_reader_t r = {sp->elems[i].p, sp->elems[i].p + sp->elems[i].len, false};
            redis_read_num(&r, '*');
            if (!r.bad)
                resp_out_raw(o, r.p, (size_t)(r.end - r.p));
        }
        break;
    }
    case SPLIT_AND:
        if (sp->error)
            split_out_error(o, sp);
        else
            split_and(o, sp);
        break;
    case SPLIT_ANY_OK:
        split_any_ok(o, sp);
        break;
    case SPLIT_DOCS:
        if (sp->error)
            split_out_error(o, sp);
        else if (sp->elems[0].buf)
            split_docs(o, &sp->elems[0]);
        else
            resp_out_error(o, "ERR meltemi: no reply");
        break;
    case SPLIT_SCAN:
        break; /* answered by the part directly */
    }
    mt_rreq_complete_copy(w, parent, o->data, o->len);
}

static void scan_done(mt_worker_t *w, mt_rreq_t *parent, const char *p, size_t len)
{
    mt_rsplit_t *sp = parent->split;
    redis_reader_t r = {p, p + len, false};
    const char *cur;
    size_t curlen;
    if (p[0] == '-' || redis_read_num(&r, '*') != 2 || !redis_read_bulk(&r, &cur, &curlen) ||
        !cur) {
        if (p[0] == '-')
            mt_rreq_complete_copy(w, parent, p, len);
        else
            mt_rreq_complete_error(w, parent, "ERR meltemi: malformed SCAN reply");
        return;
    }
    char num[32];
    snprintf(num, sizeof(num), "%.*s", (int)MT_MIN(curlen, 31), cur);
    uint64_t node_cursor = strtoull(num, NULL, 10);
    uint64_t next;
    uint32_t n_masters = sp->scan_masters;
    if (node_cursor != 0)
        next = node_cursor << SCAN_SHARD_BITS | sp->scan_index;
    else if (sp->scan_index + 1 < n_masters)
        next = sp->scan_index + 1;
    else
        next = 0;
    resp_out_t *o = &mt_rw(w)->scratch;
    o->len = 0;
    resp_out_array(o, 2);
    snprintf(num, sizeof(num), "%llu", (unsigned long long)next);
    resp_out_bulk(o, num, strlen(num));
    resp_out_raw(o, r.p, (size_t)(r.end - r.p));
    mt_rreq_complete_copy(w, parent, o->data, o->len);
}

void mt_rcluster_part_done(mt_worker_t *w, mt_rreq_t *part, mt_buf_t *b, const char *p, size_t len)
{
    mt_rreq_t *parent = part->parent;
    mt_rsplit_t *sp = parent->split;
    uint32_t idx = part->part;
    part->parent = NULL;
    mt_rreq_free(w, part);
    bool is_error = len > 0 && p[0] == '-';
    switch (sp->op) {
    case SPLIT_MGET: {
        uint32_t from = sp->part_off[idx], to = sp->part_off[idx + 1];
        redis_reader_t r = {p, p + len, false};
        if (!is_error)
            redis_read_num(&r, '*');
        for (uint32_t k = from; k < to; k++) {
            const char *e = p;
            size_t elen = len;
            if (!is_error && !redis_read_skip(&r, &e, &elen)) {
                e = "-ERR meltemi: malformed MGET reply\r\n";
                elen = strlen(e);
                mt_slice_t sl;
                if (mt_slice_copy(&w->pool, &w->own, e, elen, &sl) == 0)
                    sp->elems[sp->part_keys[k]] = sl;
                continue;
            }
            keep_slice(&sp->elems[sp->part_keys[k]], b, e, elen);
        }
        break;
    }
    case SPLIT_SUM:
        if (is_error)
            split_note_error(sp, p, len);
        else if (p[0] == ':') {
            redis_reader_t rd = redis_reader(p, len);
            int64_t v = redis_read_num(&rd, ':');
            if (rd.bad)
                split_note_error(sp, "-ERR meltemi: malformed integer reply\r\n", 39);
            else
                sp->sum += v;
        }
        break;
    case SPLIT_OK:
        if (is_error)
            split_note_error(sp, p, len);
        break;
    case SPLIT_CONCAT:
    case SPLIT_ANY_KEY:
    case SPLIT_SAME:
    case SPLIT_AND:
    case SPLIT_ANY_OK:
    case SPLIT_DOCS:
        if (is_error)
            split_note_error(sp, p, len);
        else
            keep_slice(&sp->elems[idx], b, p, len);
        break;
    case SPLIT_SCAN:
        sp->pending--;
        scan_done(w, parent, p, len);
        return;
    }
    if (--sp->pending == 0)
        split_finish(w, parent);
}

/* A part: its own command bytes (copied), sent to the node of its slot. */
static mt_rreq_t *part_new(mt_worker_t *w, mt_rreq_t *parent, uint32_t index, uint16_t slot,
                           uint32_t argc, const resp_arg_t *argv)
{
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r)
        return NULL;
    resp_out_t *o = &mt_rw(w)->scratch;
    o->len = 0;
    resp_out_command(o, argc, argv);
    if (mt_slice_copy(&w->pool, &w->own, o->data, o->len, &r->frame) != 0) {
        mt_rreq_free(w, r);
        return NULL;
    }
    r->parent = parent;
    r->part = index;
    r->slot = slot;
    r->cmd = parent->cmd;
    r->read_only = parent->read_only;
    r->start_ns = parent->start_ns;
    r->deadline_ms = parent->deadline_ms;
    return r;
}

static uint16_t key_slot(const resp_arg_t *k)
{
    return redis_slot_of_key(k->ptr, k->len);
}

/*
 * MGET / MSET / DEL / UNLINK / EXISTS / TOUCH over several slots: one part per slot (Redis
 * refuses multi-key commands across slots even on one node), in the order slots first
 * appear. step is 2 for MSET (key, value), else 1. Linear in the number of keys.
 */
static void split_by_slot(mt_wcluster_t *c, mt_rreq_t *parent, const resp_request_t *req,
                          split_op_t op, uint32_t step)
{
    mt_worker_t *w = c->w;
    if ((req->argc - 1) % step != 0) {
        char text[128];
        snprintf(text, sizeof(text), "ERR wrong number of arguments for '%s' command",
                 parent->cmd->name);
        mt_rreq_complete_error(w, parent, text);
        return;
    }
    uint32_t n_keys = (req->argc - 1) / step;
    mt_rsplit_t *sp = calloc(1, sizeof(*sp));
    uint16_t *slot_part = calloc(SLOTS, sizeof(uint16_t)); /* part index + 1, 0: none yet */
    uint16_t *part_slot = malloc(sizeof(uint16_t) * n_keys);
    uint32_t *key_part = malloc(sizeof(uint32_t) * n_keys);
    uint32_t *fill = calloc(n_keys + 1, sizeof(uint32_t));
    resp_arg_t *argv = malloc(sizeof(resp_arg_t) * req->argc);
    mt_rreq_t **parts = calloc(n_keys, sizeof(*parts));
    if (sp) {
        sp->op = op;
        sp->n_keys = n_keys;
        sp->part_keys = malloc(sizeof(uint32_t) * n_keys);
        sp->part_off = calloc(n_keys + 1, sizeof(uint32_t));
        sp->elems = op == SPLIT_MGET ? calloc(n_keys, sizeof(mt_slice_t)) : NULL;
        parent->split = sp; /* freed with parent from here on */
    }
    bool ok = sp && slot_part && part_slot && key_part && fill && argv && parts && sp->part_keys &&
              sp->part_off && (op != SPLIT_MGET || sp->elems);
    uint32_t n_parts = 0;
    for (uint32_t i = 0; ok && i < n_keys; i++) {
        uint16_t slot = key_slot(&req->argv[1 + i * step]);
        if (!slot_part[slot]) {
            part_slot[n_parts] = slot;
            slot_part[slot] = (uint16_t)++n_parts;
        }
        key_part[i] = slot_part[slot] - 1u;
        sp->part_off[key_part[i] + 1]++;
    }
    /* Counting sort of the keys by part, keeping the client's order within a part. */
    for (uint32_t pi = 0; ok && pi < n_parts; pi++) {
        sp->part_off[pi + 1] += sp->part_off[pi];
        fill[pi] = sp->part_off[pi];
    }
    for (uint32_t i = 0; ok && i < n_keys; i++)
        sp->part_keys[fill[key_part[i]]++] = i;
    for (uint32_t pi = 0; ok && pi < n_parts; pi++) {
        uint32_t argc = 1;
        argv[0] = req->argv[0];
        for (uint32_t k = sp->part_off[pi]; k < sp->part_off[pi + 1]; k++) {
            for (uint32_t x = 0; x < step; x++)
                argv[argc++] = req->argv[1 + sp->part_keys[k] * step + x];
        }
        parts[pi] = part_new(w, parent, pi, part_slot[pi], argc, argv);
        ok = parts[pi] != NULL;
    }
    free(slot_part), free(part_slot), free(key_part), free(fill), free(argv);
    if (!ok) {
        for (uint32_t pi = 0; parts && pi < n_parts; pi++) {
            if (parts[pi]) {
                parts[pi]->parent = NULL;
                mt_rreq_free(w, parts[pi]);
            }
        }
        free(parts);
        if (!sp)
            parent->split = NULL;
        mt_rreq_complete_error(w, parent, "ERR meltemi: out of memory");
        return;
    }
    sp->n_parts = sp->pending = n_parts;
    /* Send after building every part: a part may complete (with an error) synchronously. */
    for (uint32_t pi = 0; pi < n_parts; pi++)
        cluster_send(c, parts[pi]);
    free(parts);
}

/* A part for one given endpoint: through the slot machinery in cluster mode (its node may
 * fail), straight to the endpoint in PROXY mode. */
static void part_send(mt_wcluster_t *c, mt_rreq_t *part)
{
    if (mt_rtopo(c)) {
        cluster_send(c, part);
        return;
    }
    const char *why = NULL;
    if (!mt_rreq_send(part, part->pin, false, &why)) {
        char text[400], lbl[256];
        mt_stat_add(c->conf->stats, c->w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
        if (why && strncmp(why, "meltemi: ", 9) == 0)
            snprintf(text, sizeof(text), "ERR %s", why);
        else
            snprintf(text, sizeof(text), "ERR meltemi: upstream %s unavailable: %s",
                     mt_rendpoint_label(part->pin, lbl, sizeof(lbl)), why ? why : "?");
        mt_rreq_complete_error(c->w, part, text);
    }
}

/* The same command on each of eps (slots[i]: a slot eps[i] serves, cluster mode), the
 * replies combined as op says. */
static void fan_out_to(mt_wcluster_t *c, mt_rreq_t *parent, const resp_request_t *req,
                       mt_wendpoint_t *const *eps, const uint16_t *slots, uint32_t n, split_op_t op)
{
    mt_worker_t *w = c->w;
    mt_rsplit_t *sp = calloc(1, sizeof(*sp));
    if (!sp || n == 0) {
        free(sp);
        mt_rreq_complete_error(w, parent, "ERR meltemi: out of memory");
        return;
    }
    sp->op = op;
    sp->n_parts = n;
    sp->pending = n;
    parent->split = sp;
    bool per_part = op == SPLIT_CONCAT || op == SPLIT_ANY_KEY || op == SPLIT_SAME ||
                    op == SPLIT_AND || op == SPLIT_ANY_OK || op == SPLIT_DOCS;
    if (per_part)
        sp->elems = calloc(n, sizeof(mt_slice_t));
    sp->scan_index = c->rr++ % n;
    mt_rreq_t **parts = calloc(n, sizeof(*parts));
    bool ok = parts && (!per_part || sp->elems);
    for (uint32_t i = 0; ok && i < n; i++) {
        parts[i] = part_new(w, parent, i, slots ? slots[i] : 0, req->argc, req->argv);
        if (parts[i]) {
            parts[i]->pin = eps[i];
            parts[i]->read_only = false;
        }
        ok = parts[i] != NULL;
    }
    if (!ok) {
        for (uint32_t i = 0; parts && i < n; i++) {
            if (parts[i]) {
                parts[i]->parent = NULL;
                mt_rreq_free(w, parts[i]);
            }
        }
        free(parts);
        mt_rreq_complete_error(w, parent, "ERR meltemi: out of memory");
        return;
    }
    /* Send after building every part: a part may complete (with an error) synchronously. */
    for (uint32_t i = 0; i < n; i++)
        part_send(c, parts[i]);
    free(parts);
}

/* DBSIZE / KEYS / FLUSHALL / FLUSHDB / RANDOMKEY / CONFIG SET ...: the same command on every
 * master of the slot map. */
static void fan_out(mt_wcluster_t *c, mt_rreq_t *parent, const resp_request_t *req, split_op_t op)
{
    mt_rtopo_t *t = mt_rtopo(c);
    uint32_t n = t->n_shards;
    mt_wendpoint_t **eps = calloc(n ? n : 1, sizeof(*eps));
    uint16_t *slots = calloc(n ? n : 1, sizeof(*slots));
    if (!eps || !slots) {
        free(eps), free(slots);
        mt_rreq_complete_error(c->w, parent, "ERR meltemi: out of memory");
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        eps[i] = t->shards[i].master;
        slots[i] = t->shards[i].first_slot;
    }
    fan_out_to(c, parent, req, eps, slots, n, op);
    free(eps), free(slots);
}

bool mt_rcluster_has_map(mt_wcluster_t *c)
{
    mt_rtopo_t *t = topo_get(c);
    if (!t || t->have_map)
        return true; /* out of memory: go on, the command says so */
    if (!t->refreshing)
        topo_refresh(c, mt_worker_now_ms(c->w));
    return false;
}

mt_wendpoint_t *mt_rcluster_slot_master(mt_wcluster_t *c, uint16_t slot)
{
    mt_rtopo_t *t = mt_rtopo(c);
    if (!t || !t->have_map || slot >= SLOTS)
        return NULL;
    uint16_t si = t->slot_shard[slot];
    return si == NO_SHARD || si >= t->n_shards ? NULL : t->shards[si].master;
}

static split_op_t split_op_of(redis_merge_t m)
{
    switch (m) {
    case REDIS_MERGE_ALL_OK:
        return SPLIT_OK;
    case REDIS_MERGE_SUM:
        return SPLIT_SUM;
    case REDIS_MERGE_CONCAT:
        return SPLIT_CONCAT;
    case REDIS_MERGE_AND:
        return SPLIT_AND;
    case REDIS_MERGE_ANY_OK:
        return SPLIT_ANY_OK;
    case REDIS_MERGE_ANY_KEY:
        return SPLIT_ANY_KEY;
    default:
        return SPLIT_SAME;
    }
}

void mt_rsplit_fanout(mt_wcluster_t *c, mt_rreq_t *parent, const resp_request_t *req,
                      mt_wendpoint_t *const *eps, uint32_t n, int merge)
{
    fan_out_to(c, parent, req, eps, NULL, n, split_op_of((redis_merge_t)merge));
}

void mt_rsplit_command_docs(mt_wcluster_t *c, mt_rreq_t *parent, const resp_request_t *req,
                            mt_wendpoint_t *ep)
{
    fan_out_to(c, parent, req, &ep, NULL, 1, SPLIT_DOCS);
}

/* SCAN cursor [args]: the cursor says which master (low bits) and where on it (high bits). */
static void scan_on(mt_wcluster_t *c, mt_rreq_t *parent, const resp_request_t *req,
                    mt_wendpoint_t *const *eps, uint32_t n)
{
    mt_worker_t *w = c->w;
    mt_rtopo_t *t = mt_rtopo(c);
    uint32_t n_masters = eps ? n : t->n_shards;
    char num[32];
    snprintf(num, sizeof(num), "%.*s", (int)MT_MIN(req->argv[1].len, 31), req->argv[1].ptr);
    char *end = NULL;
    uint64_t cursor = strtoull(num, &end, 10);
    if (!end || *end != '\0' || num[0] == '\0' || num[0] == '-') {
        mt_rreq_complete_error(w, parent, "ERR invalid cursor");
        return;
    }
    uint32_t index = (uint32_t)(cursor & ((1u << SCAN_SHARD_BITS) - 1));
    uint64_t node_cursor = cursor >> SCAN_SHARD_BITS;
    if (index >= n_masters) {
        mt_rreq_complete_copy(w, parent, "*2\r\n$1\r\n0\r\n*0\r\n", 15);
        return;
    }
    mt_rsplit_t *sp = calloc(1, sizeof(*sp));
    resp_arg_t *argv = malloc(sizeof(resp_arg_t) * req->argc);
    if (!sp || !argv) {
        free(sp), free(argv);
        mt_rreq_complete_error(w, parent, "ERR meltemi: out of memory");
        return;
    }
    sp->op = SPLIT_SCAN;
    sp->n_parts = sp->pending = 1;
    sp->scan_index = index;
    sp->scan_masters = n_masters;
    parent->split = sp;
    snprintf(num, sizeof(num), "%llu", (unsigned long long)node_cursor);
    memcpy(argv, req->argv, sizeof(resp_arg_t) * req->argc);
    argv[1] = (resp_arg_t){num, strlen(num)};
    mt_rreq_t *part =
        part_new(w, parent, 0, eps ? 0 : t->shards[index].first_slot, req->argc, argv);
    if (part)
        part->pin = eps ? eps[index] : t->shards[index].master;
    free(argv);
    if (!part) {
        mt_rreq_complete_error(w, parent, "ERR meltemi: out of memory");
        return;
    }
    part->read_only = false; /* one node per master, always the same: the cursor is its */
    part_send(c, part);
}

static void scan_start(mt_wcluster_t *c, mt_rreq_t *parent, const resp_request_t *req)
{
    scan_on(c, parent, req, NULL, 0);
}

void mt_rsplit_scan(mt_wcluster_t *c, mt_rreq_t *parent, const resp_request_t *req,
                    mt_wendpoint_t *const *eps, uint32_t n)
{
    scan_on(c, parent, req, eps, n);
}

/* What a replica in READONLY mode serves: commands Redis flags readonly. EVAL, OBJECT and
 * the like (not flagged) stay on masters; a replica would redirect them anyway. */
static bool cmd_replica_ok(const redis_command_t *cmd)
{
    return (cmd->flags & REDIS_CMD_READONLY) != 0;
}

/* Routes a cluster-mode command that is already in its session's FIFO. */
static void cluster_route(mt_wcluster_t *c, mt_rreq_t *r, const resp_request_t *req)
{
    mt_rtopo_t *t = mt_rtopo(c);
    mt_worker_t *w = c->w;
    const redis_command_t *cmd = r->cmd;
    if (!t->have_map) {
        cluster_wait(c, r);
        return;
    }
    if (cmd->proxy == REDIS_PROXY_ALL_MASTERS || cmd->proxy == REDIS_PROXY_BROADCAST) {
        /* protocols/redis/admin.c says how (docs/redis-commands.md): every master with the
         * replies merged, the master of a key, or one master. */
        const redis_admin_rule_t *rule = redis_admin_rule(cmd, req->argc, req->argv);
        redis_merge_t m = rule ? (redis_merge_t)rule->merge : REDIS_MERGE_ONE;
        if (m == REDIS_MERGE_SCAN) {
            scan_start(c, r, req);
        } else if (m == REDIS_MERGE_BY_KEY && rule->key_arg < req->argc) {
            r->slot = key_slot(&req->argv[rule->key_arg]);
            r->read_only = false;
            cluster_send(c, r);
        } else if (m == REDIS_MERGE_ONE || m == REDIS_MERGE_BY_KEY || t->n_shards == 1) {
            r->slot =
                t->shards[m == REDIS_MERGE_ONE ? 0 : (t->next_node++) % t->n_shards].first_slot;
            r->read_only = false;
            cluster_send(c, r);
        } else {
            fan_out(c, r, req, split_op_of(m));
        }
        return;
    }
    uint32_t idx_inline[MAX_KEYS_INLINE];
    uint32_t nk = redis_command_keys(cmd, req->argc, req->argv, idx_inline, MAX_KEYS_INLINE);
    if (nk == 0) {
        r->slot = t->shards[(t->next_node++) % t->n_shards].first_slot;
        cluster_send(c, r);
        return;
    }
    uint16_t slot = key_slot(&req->argv[idx_inline[0]]);
    bool same = true;
    if (nk > MAX_KEYS_INLINE) {
        uint32_t *idx = malloc(sizeof(uint32_t) * nk);
        if (!idx) {
            mt_rreq_complete_error(w, r, "ERR meltemi: out of memory");
            return;
        }
        redis_command_keys(cmd, req->argc, req->argv, idx, nk);
        for (uint32_t i = 1; i < nk && same; i++)
            same = key_slot(&req->argv[idx[i]]) == slot;
        free(idx);
    } else {
        for (uint32_t i = 1; i < nk && same; i++)
            same = key_slot(&req->argv[idx_inline[i]]) == slot;
    }
    if (!same) {
        if (cmd->proxy == REDIS_PROXY_MULTI_KEY) {
            if (mt_rcmd_is(cmd, "mget"))
                split_by_slot(c, r, req, SPLIT_MGET, 1);
            else if (mt_rcmd_is(cmd, "mset"))
                split_by_slot(c, r, req, SPLIT_OK, 2);
            else
                split_by_slot(c, r, req, SPLIT_SUM, 1);
        } else {
            mt_rreq_complete_error(w, r, "CROSSSLOT Keys in request don't hash to the same slot");
        }
        return;
    }
    r->slot = slot;
    cluster_send(c, r);
}

/* CLUSTER KEYSLOT is answered here; the informational subcommands go to a node. */
static bool cluster_command(mt_wcluster_t *c, mt_rreq_t *r, const resp_request_t *req)
{
    if (req->argc < 2)
        return false;
    const resp_arg_t *sub = &req->argv[1];
    if (sub->len == 7 && strncasecmp(sub->ptr, "keyslot", 7) == 0 && req->argc == 3) {
        char line[32];
        int n = snprintf(line, sizeof(line), ":%u\r\n", key_slot(&req->argv[2]));
        mt_rreq_complete_copy(c->w, r, line, (size_t)n);
        return true;
    }
    static const char *const forwarded[] = {"info", "nodes",           "slots",        "shards",
                                            "myid", "countkeysinslot", "getkeysinslot"};
    for (size_t i = 0; i < MT_ARRAY_LEN(forwarded); i++) {
        if (sub->len == strlen(forwarded[i]) &&
            strncasecmp(sub->ptr, forwarded[i], sub->len) == 0) {
            mt_rtopo_t *t = mt_rtopo(c);
            if (!t->have_map) {
                cluster_wait(c, r);
                return true;
            }
            /* COUNTKEYSINSLOT / GETKEYSINSLOT ask the slot's master; a bad slot number
             * goes to any node, which answers Redis's own error. */
            r->slot = t->shards[0].first_slot;
            if (i >= 5 && req->argc >= 3 && req->argv[2].len > 0 && req->argv[2].len < 6) {
                char num[8];
                snprintf(num, sizeof(num), "%.*s", (int)req->argv[2].len, req->argv[2].ptr);
                char *end = NULL;
                unsigned long slot = strtoul(num, &end, 10);
                if (end && *end == '\0' && num[0] != '-' && slot < SLOTS)
                    r->slot = (uint16_t)slot;
            }
            r->read_only = false;
            cluster_send(c, r);
            return true;
        }
    }
    return false;
}

/* Every client command enters here (also after waiting for the first map). */
static void cluster_dispatch(mt_wcluster_t *c, mt_rreq_t *r, const resp_request_t *req)
{
    if (!mt_rcmd_is(r->cmd, "cluster")) {
        cluster_route(c, r, req);
        return;
    }
    if (!cluster_command(c, r, req))
        mt_rreq_complete_error(c->w, r,
                               "ERR meltemi: this CLUSTER subcommand is not available through "
                               "the proxy");
}

void mt_rcluster_forward(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                         const resp_request_t *req, const char *frame)
{
    mt_worker_t *w = s->base.w;
    if (!topo_get(c)) {
        mt_rsess_reply_error(s, "ERR meltemi: out of memory");
        return;
    }
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r) {
        mt_rsess_reply_error(s, "ERR meltemi: out of memory");
        return;
    }
    r->cmd = cmd;
    r->dest = c->conf;
    r->deadline_ms = mt_worker_now_ms(w) + s->rconf->op_timeout_ms;
    r->read_only = cmd_replica_ok(cmd);
    /* Keep the command's bytes for redirections: a reference, or a copy for inline ones. */
    if (req->is_inline) {
        resp_out_t *o = &mt_rw(s->base.w)->scratch;
        o->len = 0;
        resp_out_command(o, req->argc, req->argv);
        if (mt_slice_copy(&w->pool, &w->own, o->data, o->len, &r->frame) != 0) {
            mt_rreq_free(w, r);
            mt_rsess_reply_error(s, "ERR meltemi: out of memory");
            return;
        }
    } else {
        mt_buf_ref(s->base.rbuf);
        r->frame = (mt_slice_t){s->base.rbuf, frame, (uint32_t)req->frame_len};
    }
    mt_rsess_push(s, r);
    if (req->is_inline) {
        /* argv points into the parser's scratch; route from the re-encoded copy instead. */
        reread(c, r, cluster_dispatch);
        return;
    }
    cluster_dispatch(c, r, req);
}

void mt_rcluster_mirror(mt_wcluster_t *c, const redis_command_t *cmd, const resp_request_t *req)
{
    mt_worker_t *w = c->w;
    if (!topo_get(c))
        return;
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r)
        return;
    resp_out_t *o = &mt_rw(c->w)->scratch;
    o->len = 0;
    resp_out_command(o, req->argc, req->argv);
    if (mt_slice_copy(&w->pool, &w->own, o->data, o->len, &r->frame) != 0) {
        mt_rreq_free(w, r);
        return;
    }
    /* No session: the reply (or error) is dropped when it comes. */
    r->cmd = cmd;
    r->deadline_ms = mt_worker_now_ms(w) + c->conf->connect_timeout_ms;
    r->read_only = cmd_replica_ok(cmd);
    resp_req_parser_t parser;
    resp_req_parser_init(&parser, &resp_default_limits);
    resp_request_t again;
    const char *err = NULL;
    if (resp_parse_request(&parser, r->frame.p, r->frame.len, &again, &err) == MT_OK)
        cluster_route(c, r, &again);
    else
        mt_rreq_free(w, r);
    resp_req_parser_free(&parser);
}

/*
 * Prefix routing: a multi-key command whose keys go to different services is split per
 * service (targets[i], strips[i] for key i) and the replies recombined like a cross-slot
 * split. A part bound for a cluster-mode service is routed (and split again by slot) there.
 */
/* Sends one part of a command split by prefix routes to its destination c: a cluster-mode
 * destination routes it by slot, a plain one by its first key (key). */
static void split_part_send(mt_rsess_t *s, mt_wcluster_t *c, mt_rreq_t *part, const resp_arg_t *key)
{
    mt_worker_t *w = s->base.w;
    if (!c || c->n_eps == 0) {
        mt_rreq_complete_error(w, part, "ERR meltemi: no upstream host for this key");
        return;
    }
    if (mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER && topo_get(c)) {
        reread(c, part, cluster_route);
        return;
    }
    const char *why = NULL;
    mt_wendpoint_t *ep = mt_rproxy_endpoint(c, key, s->rconf->enable_hashtagging);
    if (!mt_rreq_send(part, ep, false, &why)) {
        char text[400];
        snprintf(text, sizeof(text), "ERR meltemi: upstream %s unavailable: %s",
                 c->conf->service ? c->conf->service : c->conf->name, why);
        mt_rreq_complete_error(w, part, text);
    }
}

void mt_rsplit_by_route(mt_rreq_t *parent, const resp_request_t *req, uint32_t step,
                        mt_wcluster_t **targets, const uint32_t *strips)
{
    mt_rsess_t *s = parent->sess;
    mt_worker_t *w = s->base.w;
    const redis_command_t *cmd = parent->cmd;
    uint32_t n_keys = (req->argc - 1) / step;
    split_op_t op = mt_rcmd_is(cmd, "mget")   ? SPLIT_MGET
                    : mt_rcmd_is(cmd, "mset") ? SPLIT_OK
                                              : SPLIT_SUM;
    mt_rsplit_t *sp = calloc(1, sizeof(*sp));
    mt_wcluster_t **uniq = calloc(n_keys, sizeof(*uniq));
    resp_arg_t *argv = malloc(sizeof(resp_arg_t) * req->argc);
    mt_rreq_t **parts = calloc(n_keys, sizeof(*parts));
    if (sp) {
        sp->op = op;
        sp->n_keys = n_keys;
        sp->part_keys = malloc(sizeof(uint32_t) * n_keys);
        sp->part_off = calloc(n_keys + 1, sizeof(uint32_t));
        sp->elems = op == SPLIT_MGET ? calloc(n_keys, sizeof(mt_slice_t)) : NULL;
        parent->split = sp;
    }
    if (!sp || !uniq || !argv || !parts || !sp->part_keys || !sp->part_off ||
        (op == SPLIT_MGET && !sp->elems)) {
        free(uniq), free(argv), free(parts);
        mt_rreq_complete_error(w, parent, "ERR meltemi: out of memory");
        return;
    }
    uint32_t n_parts = 0;
    for (uint32_t i = 0; i < n_keys; i++) {
        uint32_t j = 0;
        while (j < n_parts && uniq[j] != targets[i])
            j++;
        if (j == n_parts)
            uniq[n_parts++] = targets[i];
    }
    uint32_t at = 0;
    bool ok = true;
    for (uint32_t pi = 0; pi < n_parts && ok; pi++) {
        uint32_t argc = 1;
        argv[0] = req->argv[0];
        sp->part_off[pi] = at;
        for (uint32_t i = 0; i < n_keys; i++) {
            if (targets[i] != uniq[pi])
                continue;
            sp->part_keys[at++] = i;
            resp_arg_t k = req->argv[1 + i * step];
            uint32_t cut = (uint32_t)MT_MIN(strips[i], k.len);
            argv[argc++] = (resp_arg_t){k.ptr + cut, k.len - cut};
            for (uint32_t x = 1; x < step; x++)
                argv[argc++] = req->argv[1 + i * step + x];
        }
        parts[pi] = part_new(w, parent, pi, 0, argc, argv);
        ok = parts[pi] != NULL;
    }
    sp->part_off[n_parts] = at;
    sp->n_parts = sp->pending = n_parts;
    free(argv);
    if (!ok) {
        for (uint32_t pi = 0; pi < n_parts; pi++) {
            if (parts[pi]) {
                parts[pi]->parent = NULL;
                mt_rreq_free(w, parts[pi]);
            }
        }
        free(uniq), free(parts);
        mt_rreq_complete_error(w, parent, "ERR meltemi: out of memory");
        return;
    }
    for (uint32_t pi = 0; pi < n_parts; pi++) {
        uint32_t key0 = sp->part_keys[sp->part_off[pi]];
        split_part_send(s, uniq[pi], parts[pi], &req->argv[1 + key0 * step]);
    }
    free(uniq), free(parts);
}

/* ---- the admin's /clusters ------------------------------------------------------------------ */

static void status_node(FILE *f, const mt_wendpoint_t *ep)
{
    fprintf(f, "\"%s:%u\"", ep->address, ep->port); /* addresses are IPs or host names */
}

/* Redis Cluster: the slot map as ranges of one shard, its master and replicas, and every node
 * met with its role (seeds and nodes first met through a redirection included). */
void mt_rcluster_status(mt_wcluster_t *c, FILE *f)
{
    mt_rtopo_t *t = mt_rtopo(c);
    if (mt_redis_cluster(c->conf)->mode != MT_REDIS_CLUSTER) {
        fputs("{\"mode\":\"proxy\"}", f);
        return;
    }
    if (!t) {
        fputs("{\"mode\":\"cluster\",\"have_map\":false}", f);
        return;
    }
    uint64_t now = mt_worker_now_ms(c->w);
    fprintf(f, "{\"mode\":\"cluster\",\"have_map\":%s,\"last_refresh_ms_ago\":%llu,\"slots\":[",
            t->have_map ? "true" : "false",
            t->last_refresh_ms ? (unsigned long long)(now - t->last_refresh_ms) : 0ull);
    bool first = true;
    for (uint32_t s = 0; s < SLOTS;) {
        uint16_t si = t->slot_shard[s];
        uint32_t e = s;
        while (e + 1 < SLOTS && t->slot_shard[e + 1] == si)
            e++;
        if (si != NO_SHARD && si < t->n_shards) {
            const mt_rshard_t *sh = &t->shards[si];
            fprintf(f, "%s{\"from\":%u,\"to\":%u,\"master\":", first ? "" : ",", s, e);
            status_node(f, sh->master);
            fputs(",\"replicas\":[", f);
            for (uint32_t r = 0; r < sh->n_replicas; r++) {
                if (r)
                    fputc(',', f);
                status_node(f, sh->replicas[r]);
            }
            fputs("]}", f);
            first = false;
        }
        s = e + 1;
    }
    fputs("],\"nodes\":[", f);
    for (uint32_t i = 0; i < t->n_nodes; i++) {
        const mt_wendpoint_t *ep = t->nodes[i];
        const char *role = i < t->n_seeds ? "seed" : "unknown";
        for (uint32_t k = 0; k < t->n_shards; k++) {
            if (t->shards[k].master == ep)
                role = "master";
            for (uint32_t r = 0; r < t->shards[k].n_replicas; r++) {
                if (t->shards[k].replicas[r] == ep)
                    role = "replica";
            }
        }
        fprintf(f, "%s{\"address\":", i ? "," : "");
        status_node(f, ep);
        fprintf(f, ",\"role\":\"%s\"}", role);
    }
    fputs("],\"last_error\":\"", f);
    for (const char *p = t->last_error; *p; p++) {
        if (*p == '"' || *p == '\\')
            fputc('\\', f);
        if ((unsigned char)*p >= 0x20)
            fputc(*p, f);
    }
    fputs("\"}", f);
}
