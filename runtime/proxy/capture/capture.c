/*
 * capture.c - the transparent capture ports (capture.h): their sockets, the original
 * destination, the listener it selects, and the passthrough listener and cluster for the
 * destinations no listener claims.
 *
 * The capture ports accept with accept4() on a uv_poll_t rather than through uv_listen: the
 * original destination must be read before any proxy sees the connection, and libuv gives the
 * accepted socket only to a handle. The socket then reaches the selected proxy's accept
 * through w->handoff (worker.h), and mt_session_accept opens it.
 */
#include "runtime/proxy/capture/capture.h"

#include "runtime/core/log.h"
#include "runtime/core/proxy.h"
#include "runtime/core/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h (both 80); those headers do not
 * mix with glibc's netinet/in.h. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

#define CAPTURE_MAX_PORTS 4          /* per direction: e.g. one IPv4 and one IPv6 address */
#define CAPTURE_ACCEPTS_PER_WAKE 64  /* then let the loop serve what it accepted */
#define PASSTHROUGH_CONNECT_MS 10000 /* Istio's default connect timeout */

/* One capture address as configured (main thread; read-only once the workers run). */
typedef struct capture_port {
    mt_capture_dir_t dir;
    struct sockaddr_storage sa;
    socklen_t salen;
    char text[80];
    int *fds; /* one listening socket per worker; -1 once its worker took it */
} capture_port_t;

/* What a direction shares between its addresses: the stats of the capture port itself and
 * the passthrough listener and cluster (never freed before exit, as stats blocks). */
typedef struct capture_side {
    bool on;
    mt_listener_conf_t self;
    mt_listener_conf_t passthrough;
    mt_cluster_conf_t cluster;
} capture_side_t;

static struct {
    capture_port_t ports[CAPTURE_MAX_PORTS * MT_CAPTURE_DIRS];
    unsigned n_ports;
    unsigned nworkers;
    capture_side_t side[MT_CAPTURE_DIRS];
} capture;

static const char *const side_names[MT_CAPTURE_DIRS][3] = {
    /* self, passthrough, flag */
    {"outbound_capture", "PassthroughCluster", "--capture-outbound"},
    {"inbound_capture", "InboundPassthroughCluster", "--capture-inbound"},
};

/* ---- addresses ------------------------------------------------------------------------------ */

int mt_capture_original_dst(int fd, struct sockaddr_storage *dst)
{
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    if (getsockname(fd, (struct sockaddr *)&local, &len) != 0)
        return -1;
    memset(dst, 0, sizeof(*dst));
    len = sizeof(*dst);
    if (local.ss_family == AF_INET6) {
        const struct sockaddr_in6 *l6 = (const struct sockaddr_in6 *)&local;
        if (!IN6_IS_ADDR_V4MAPPED(&l6->sin6_addr))
            return getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, dst, &len);
    }
    return getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, dst, &len);
}

static uint16_t sa_port(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return 0;
}

static bool sa_is_any(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (sa->ss_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

static bool sa_addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

/* "ip:port" / "[ip]:port" of sa into out. */
static const char *sa_text(const struct sockaddr_storage *sa, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->ss_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)sa, ip, sizeof(ip));
        snprintf(out, cap, "[%s]:%u", ip, sa_port(sa));
    } else {
        uv_ip4_name((const struct sockaddr_in *)sa, ip, sizeof(ip));
        snprintf(out, cap, "%s:%u", ip, sa_port(sa));
    }
    return out;
}

/* ---- set-up (main thread) ----------------------------------------------------------------- */

static int capture_listen(const capture_port_t *p, char **err)
{
    int fd = socket(p->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0 && p->sa.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)&p->sa, p->salen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (asprintf(err, "%s %s: cannot listen: %s", side_names[p->dir][2], p->text, strerror(e)) <
            0)
            *err = NULL;
        return -1;
    }
    return fd;
}

static void side_init(capture_side_t *sd, mt_capture_dir_t dir)
{
    sd->on = true;
    mt_cluster_conf_t *c = &sd->cluster;
    c->name = strdup(side_names[dir][1]);
    c->protocol = MT_PROTO_TCP;
    c->connect_timeout_ms = PASSTHROUGH_CONNECT_MS;
    c->fingerprint = strdup("passthrough");
    c->stats = mt_stats_block(MT_STATS_CLUSTER, c->name, NULL);
    mt_listener_conf_t *ls[2] = {&sd->self, &sd->passthrough};
    for (int i = 0; i < 2; i++) {
        mt_listener_conf_t *l = ls[i];
        l->name = strdup(side_names[dir][i]);
        l->address = strdup("0.0.0.0");
        l->protocol = MT_PROTO_TCP;
        l->inbound = dir == MT_CAPTURE_INBOUND;
        l->cluster = i == 1 ? c : NULL;
        l->fingerprint = strdup("passthrough");
        l->stats = mt_stats_block(MT_STATS_LISTENER, l->name, NULL);
    }
}

static void side_free(capture_side_t *sd)
{
    if (!sd->on)
        return;
    free(sd->cluster.name);
    free(sd->cluster.fingerprint);
    mt_listener_conf_t *ls[2] = {&sd->self, &sd->passthrough};
    for (int i = 0; i < 2; i++) {
        free(ls[i]->name);
        free(ls[i]->address);
        free(ls[i]->fingerprint);
    }
    memset(sd, 0, sizeof(*sd));
}

/* Adds every address of the comma-separated list to capture.ports. */
static int capture_add(const char *list, mt_capture_dir_t dir, char **err)
{
    if (!list)
        return 0;
    unsigned added = 0;
    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        capture_port_t *cp = &capture.ports[capture.n_ports];
        if (added == CAPTURE_MAX_PORTS || n == 0 || n >= sizeof(cp->text)) {
            if (asprintf(err, "%s: at most %d addresses, each IP:PORT or [IPv6]:PORT, got '%s'",
                         side_names[dir][2], CAPTURE_MAX_PORTS, list) < 0)
                *err = NULL;
            return -1;
        }
        memcpy(cp->text, p, n);
        cp->text[n] = '\0';
        cp->dir = dir;
        if (mt_capture_parse_addr(cp->text, &cp->sa, &cp->salen) != 0) {
            if (asprintf(err, "%s: '%s' is not IP:PORT or [IPv6]:PORT", side_names[dir][2],
                         cp->text) < 0)
                *err = NULL;
            return -1;
        }
        cp->fds = malloc(sizeof(int) * capture.nworkers);
        if (!cp->fds)
            return -1;
        for (unsigned w = 0; w < capture.nworkers; w++)
            cp->fds[w] = -1;
        capture.n_ports++;
        added++;
        for (unsigned w = 0; w < capture.nworkers; w++) {
            if ((cp->fds[w] = capture_listen(cp, err)) < 0)
                return -1;
        }
        p += n + (comma ? 1 : 0);
    }
    if (added && !capture.side[dir].on)
        side_init(&capture.side[dir], dir);
    return 0;
}

int mt_capture_setup(const char *outbound, const char *inbound, unsigned nworkers, char **err)
{
    *err = NULL;
    capture.nworkers = nworkers;
    if (capture_add(outbound, MT_CAPTURE_OUTBOUND, err) != 0 ||
        capture_add(inbound, MT_CAPTURE_INBOUND, err) != 0) {
        mt_capture_teardown();
        return -1;
    }
    return 0;
}

bool mt_capture_enabled(void)
{
    return capture.n_ports > 0;
}

void mt_capture_teardown(void)
{
    for (unsigned i = 0; i < capture.n_ports; i++) {
        capture_port_t *cp = &capture.ports[i];
        for (unsigned w = 0; cp->fds && w < capture.nworkers; w++) {
            if (cp->fds[w] >= 0)
                close(cp->fds[w]);
        }
        free(cp->fds);
        cp->fds = NULL;
    }
    capture.n_ports = 0;
    for (int d = 0; d < MT_CAPTURE_DIRS; d++)
        side_free(&capture.side[d]);
}

/* ---- per worker ------------------------------------------------------------------------------ */

typedef struct capture_wport {
    uv_poll_t poll;
    int fd;      /* -1 once closed */
    bool paused; /* out of descriptors: the tick restarts the poll */
    mt_worker_t *w;
    const capture_port_t *port;
} capture_wport_t;

/* A direction's passthrough as this worker runs it: a listener that is never bound and a
 * cluster without endpoints (plain TCP connects each session to its original destination). */
typedef struct capture_wside {
    mt_wlistener_t listener;
    mt_wcluster_t cluster;
} capture_wside_t;

typedef struct capture_worker {
    capture_wport_t ports[CAPTURE_MAX_PORTS * MT_CAPTURE_DIRS];
    unsigned n_ports;
    capture_wside_t side[MT_CAPTURE_DIRS];
} capture_worker_t;

/* True when dst is one of the capture ports themselves: a connection made straight to a
 * capture port (not redirected) must not be relayed back into it. */
static bool capture_is_self(const struct sockaddr_storage *dst)
{
    for (unsigned i = 0; i < capture.n_ports; i++) {
        const capture_port_t *cp = &capture.ports[i];
        if (sa_port(&cp->sa) == sa_port(dst) && (sa_is_any(&cp->sa) || sa_addr_eq(&cp->sa, dst)))
            return true;
    }
    return false;
}

/* The listener a socket bound to dst would have been: exact address, else a wildcard on the
 * port (an IPv6 wildcard also takes IPv4, as a dual-stack socket does). O(listeners). */
static mt_wlistener_t *capture_match(mt_worker_t *w, const struct sockaddr_storage *dst,
                                     bool inbound)
{
    mt_wlistener_t *any = NULL;
    uint16_t port = sa_port(dst);
    for (mt_wlistener_t *l = w->listeners; l; l = l->next) {
        const mt_listener_conf_t *c = l->conf;
        if (c->inbound != inbound || c->port != port || l->closing || c->sni_of)
            continue; /* a server behind an SNI front is reached through the front */
        if (sa_addr_eq(&c->sa, dst))
            return l;
        if (!any && sa_is_any(&c->sa) &&
            (c->sa.ss_family == dst->ss_family || c->sa.ss_family == AF_INET6))
            any = l;
    }
    return any;
}

static void capture_dispatch(capture_wport_t *cp, int fd)
{
    mt_worker_t *w = cp->w;
    const capture_side_t *sd = &capture.side[cp->port->dir];
    capture_worker_t *cw = w->proxy[MT_PROTO_CAPTURE];
    mt_stat_add(sd->self.stats, w->id, MT_ST_DOWNSTREAM_CX_TOTAL, 1);
    mt_handoff_t h = {.fd = fd};
    if (mt_capture_original_dst(fd, &h.dst) != 0 || capture_is_self(&h.dst)) {
        /* Not redirected by iptables: someone connected to the capture port itself. */
        mt_stat_add(sd->self.stats, w->id, MT_ST_PROTOCOL_ERRORS, 1);
        mt_debug("%s %s: a connection that was not redirected (no original destination); "
                 "closed",
                 side_names[cp->port->dir][0], cp->port->text);
        close(fd);
        return;
    }
    mt_wlistener_t *l = capture_match(w, &h.dst, cp->port->dir == MT_CAPTURE_INBOUND);
    if (!l)
        l = &cw->side[cp->port->dir].listener;
    if (mt_log_threshold <= MT_LOG_DEBUG) {
        char t[INET6_ADDRSTRLEN + 8];
        mt_debug("%s: %s -> listener %s", side_names[cp->port->dir][0],
                 sa_text(&h.dst, t, sizeof t), l->conf->name);
    }
    w->handoff = &h;
    mt_proxy_for(l->conf->protocol)->accept(l, NULL);
    w->handoff = NULL;
    if (h.fd >= 0) /* the proxy could not take it */
        close(h.fd);
}

static void capture_close_port(capture_wport_t *cp)
{
    if (cp->fd < 0)
        return;
    uv_poll_stop(&cp->poll);
    uv_close((uv_handle_t *)&cp->poll, NULL);
    close(cp->fd);
    cp->fd = -1;
}

static void capture_on_readable(uv_poll_t *h, int status, int events)
{
    MT_UNUSED(events);
    capture_wport_t *cp = h->data;
    mt_worker_t *w = cp->w;
    if (status < 0) {
        mt_warn("%s %s: %s", side_names[cp->port->dir][0], cp->port->text, uv_strerror(status));
        return;
    }
    for (int i = 0; i < CAPTURE_ACCEPTS_PER_WAKE && !w->draining && cp->fd >= 0; i++) {
        int fd = accept4(cp->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            capture_dispatch(cp, fd);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            mt_warn("%s %s: accept: %s; pausing", side_names[cp->port->dir][0], cp->port->text,
                    strerror(errno));
            uv_poll_stop(&cp->poll);
            cp->paused = true;
        }
        break; /* EAGAIN, or an aborted connection: wait for the next wake-up */
    }
}

static int capture_worker_start(mt_worker_t *w)
{
    if (!mt_capture_enabled())
        return 0;
    capture_worker_t *cw = calloc(1, sizeof(*cw));
    if (!cw)
        return -1;
    w->proxy[MT_PROTO_CAPTURE] = cw;
    for (int d = 0; d < MT_CAPTURE_DIRS; d++) {
        capture_side_t *sd = &capture.side[d];
        capture_wside_t *ws = &cw->side[d];
        if (!sd->on)
            continue;
        ws->cluster.conf = &sd->cluster;
        ws->cluster.w = w;
        ws->cluster.refs = 1; /* the worker's own, for its life */
        ws->listener.w = w;
        ws->listener.conf = &sd->passthrough;
        ws->listener.cluster = &ws->cluster;
    }
    for (unsigned i = 0; i < capture.n_ports; i++) {
        capture_port_t *p = &capture.ports[i];
        capture_wport_t *cp = &cw->ports[cw->n_ports++];
        cp->w = w;
        cp->port = p;
        cp->fd = p->fds[w->id];
        p->fds[w->id] = -1; /* the worker's now */
        if (uv_poll_init(&w->loop, &cp->poll, cp->fd) != 0) {
            close(cp->fd);
            cp->fd = -1;
            return -1;
        }
        cp->poll.data = cp;
        uv_poll_start(&cp->poll, UV_READABLE, capture_on_readable);
    }
    return 0;
}

/* Draining: the capture ports close (connections redirected later are refused, as on any
 * closed listener); a port paused for lack of descriptors polls again. */
static void capture_tick(mt_worker_t *w, uint64_t now_ms)
{
    MT_UNUSED(now_ms);
    capture_worker_t *cw = w->proxy[MT_PROTO_CAPTURE];
    for (unsigned i = 0; cw && i < cw->n_ports; i++) {
        capture_wport_t *cp = &cw->ports[i];
        if (w->draining) {
            capture_close_port(cp);
        } else if (cp->paused && cp->fd >= 0) {
            cp->paused = false;
            uv_poll_start(&cp->poll, UV_READABLE, capture_on_readable);
        }
    }
}

static void capture_worker_stop(mt_worker_t *w)
{
    capture_worker_t *cw = w->proxy[MT_PROTO_CAPTURE];
    for (unsigned i = 0; cw && i < cw->n_ports; i++)
        capture_close_port(&cw->ports[i]);
}

static void capture_worker_free(mt_worker_t *w)
{
    free(w->proxy[MT_PROTO_CAPTURE]);
    w->proxy[MT_PROTO_CAPTURE] = NULL;
}

/* In the registry for its worker hooks only: no snapshot listener or cluster names it
 * (accept is NULL, and snapshot.c never maps a protocol name to it). */
const mt_proxy_ops_t mt_proxy_capture = {
    .name = "capture",
    .protocol = MT_PROTO_CAPTURE,
    .worker_start = capture_worker_start,
    .tick = capture_tick,
    .worker_stop = capture_worker_stop,
    .worker_free = capture_worker_free,
};
