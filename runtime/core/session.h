/*
 * session.h - the client shell every proxy builds its downstream connections on: accept,
 * the read buffer, reading paused and resumed around two bounds (requests in flight, reply
 * bytes queued), the output queue, an orderly finish (EOF, protocol error, drain: close once
 * everything owed is written), auth and idle timeouts, and the close. A proxy embeds mt_session_t
 * first in its own session and fills an mt_session_ops_t; it never touches the socket itself.
 *
 * The transport slot: plain TCP, or TLS when the listener terminates it (core/tls.h): the
 * shell decrypts into s->rbuf and s->out is sealed on its way out, so a proxy sees the same
 * bytes either way. PERMISSIVE listeners look at the first bytes and go one way or the other.
 */
#ifndef MELTEMI_CORE_SESSION_H
#define MELTEMI_CORE_SESSION_H

#include "runtime/core/authz.h"
#include "runtime/core/common.h"
#include "runtime/core/worker.h"

#define MT_SESSION_MAX_PENDING 1024      /* requests in flight per client before it is paused */
#define MT_SESSION_MAX_OUTPUT (4u << 20) /* reply bytes queued per client before it is paused */
/* A TLS (or PERMISSIVE) client must finish its handshake (or send its first bytes) within
 * this many ms of its accept (main.c: --tls-handshake-timeout; set before the workers start). */
#define MT_SESSION_TLS_HANDSHAKE_MS_DEFAULT 10000
extern uint32_t mt_session_tls_handshake_ms;

typedef struct mt_session mt_session_t;

/* A TCP client's address: IPv4 or IPv6, 28 bytes (a sockaddr_storage, 128, in every session
 * would cost 100 bytes per connection for nothing). */
typedef union mt_peer_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
} mt_peer_addr_t;

typedef struct mt_session_ops {
    /* New bytes are in s->rbuf: handle every whole frame, advancing s->rbuf->pos past it.
     * Called only while the session is neither finishing nor closing. */
    void (*on_data)(mt_session_t *s);
    /* The connection starts closing: orphan what upstreams still owe, stop the proxy's
     * timers. The handle is still open. May be NULL. */
    void (*on_close)(mt_session_t *s);
    /* The handle is closed: free the proxy's own parts (not s: the shell frees it). May be
     * NULL. */
    void (*on_closed)(mt_session_t *s);
    /* Drain (the worker is stopping): NULL means finish, as after EOF. */
    void (*drain)(mt_session_t *s);
    /* The client sent EOF: true closes at once (what is owed is dropped, as a server drops a
     * client that went away), false finishes (close once everything owed is written). NULL:
     * finish. Redis closes a client blocked in BLPOP, whose reply may never come. A TLS
     * client's close_notify is an EOF too. */
    bool (*on_eof)(mt_session_t *s);
    /* The proxy closes the handles itself (plain TCP's relay has two sockets): called by
     * mt_session_close instead of the shell's uv_close, after on_close; once its handles are
     * closed the proxy calls mt_session_release and frees its session. NULL: the shell
     * closes the handle and frees s. */
    void (*close)(mt_session_t *s);
} mt_session_ops_t;

struct mt_session {
    uv_tcp_t tcp; /* first: the uv handle's data points back here */
    mt_worker_t *w;
    mt_wlistener_t *lst;
    mt_listener_conf_t *conf;
    mt_snapshot_t *snap;         /* the snapshot this connection's requests run on */
    struct mt_wcluster *cluster; /* its default destination (one reference) */
    uint32_t li;                 /* 1-based index of conf in snap->listeners */
    mt_session_link_t link;      /* in the worker's list (drain, reload) */
    const mt_session_ops_t *ops;
    uint64_t id;
    mt_buf_t *rbuf;                  /* unread input (NULL when everything read was handled) */
    mt_outq_t out;                   /* replies, in the order they leave */
    uint32_t pending;                /* requests waiting for their reply: the proxy counts them */
    uint32_t max_output;             /* pause reading past this many queued reply bytes */
    uint64_t accepted_ms, active_ms; /* loop time of the accept and of the last read/write */
    mt_timer_t timeout_timer;        /* auth and idle timeouts, at the earlier (worker's wheel) */
    uint32_t auth_timeout_ms;        /* 0: none (or authenticated) */
    uint32_t idle_timeout_ms;        /* 0: none */
    struct mt_tls *tls;              /* the TLS transport, or NULL: plain TCP */
    mt_peer_addr_t peer_sa;          /* the client's address (AuthorizationPolicy ipBlocks) */
    bool sniffing;                   /* PERMISSIVE: TLS or plain is decided by the first bytes */
    mt_istio_set_t *istio_tcp;       /* the connection's Istio label set (default destination); on
                                        a TLS listener NULL until the handshake (or PERMISSIVE's
                                        sniff) says who the client is */
    /* A TLS listener's label sets carry the client's identity: the last one used, by dest. */
    mt_istio_set_t *istio_peer;
    const struct mt_cluster_conf *istio_peer_dest;
    uint64_t sent_counted;   /* of out.written_bytes, already in istio_tcp_sent_bytes_total */
    char *peer_text;         /* "address:port" for the access log, made on first use */
    uint64_t accepted_ns;    /* now_ns at the accept (plain TCP's access log line) */
    uint64_t received_bytes; /* from the client (plain TCP's relay: its access log line) */
    bool reading;
    bool held;      /* the proxy holds reading (a request waits for a rate limit service): no
                       resume until it lets go, so s->rbuf and what was decoded from it stay put */
    bool finishing; /* EOF, protocol error or drain: close once everything owed is written */
    bool closing;
};

/* Accepts a connection of listener l into s (zeroed, allocated by the proxy with s first in
 * its own struct) and lists it in the worker; reading starts with mt_session_resume(). On
 * failure returns -1: the handle is closing and frees s itself; the proxy frees only what it
 * allocated besides s, and forgets s. */
int mt_session_accept(mt_session_t *s, mt_wlistener_t *l, uv_stream_t *server,
                      const mt_session_ops_t *ops);
void mt_session_pause(mt_session_t *s);
/* Starts reading again unless finishing, closing or still over half of either bound. */
void mt_session_resume(mt_session_t *s);
/* Pauses reading if over a bound (call after queuing work or replies). */
void mt_session_check_bounds(mt_session_t *s);
/* No more requests: close once nothing is pending and the output is written. */
void mt_session_finish(mt_session_t *s);
void mt_session_maybe_finish(mt_session_t *s);
void mt_session_close(mt_session_t *s);
/* What closing releases of the shell (output, read buffer, TLS transport, references, the
 * worker's list), for a proxy that closes its handles itself (plain TCP, ops->close); s
 * itself is not freed. */
void mt_session_release(mt_session_t *s);
/* Closes s once auth_ms have passed since the accept while the proxy has not called
 * mt_session_authenticated (0: never), and once it has been idle for idle_ms: nothing read or
 * written, no request pending, no output queued (0: never). One timer on the worker's wheel
 * at the earlier of the two; the read path only stores the loop time. Counts
 * MT_ST_AUTH_TIMEOUTS / MT_ST_IDLE_TIMEOUTS on the listener. Call again after a rebind to
 * apply a reloaded listener's settings. */
void mt_session_set_timeouts(mt_session_t *s, uint32_t auth_ms, uint32_t idle_ms);
/* The client authenticated: the auth timeout no longer applies. */
static inline void mt_session_authenticated(mt_session_t *s)
{
    s->auth_timeout_ms = 0;
}
/* At a request boundary: moves the session onto the worker's live snapshot, if its
 * listener still exists there. */
void mt_session_rebind(mt_session_t *s);
/* The session a worker list link belongs to. */
static inline mt_session_t *mt_session_of_link(mt_session_link_t *l)
{
    return MT_CONTAINER_OF(l, mt_session_t, link);
}
/* The client's SPIFFE identity without "spiffe://" ("cluster.local/ns/x/sa/y": Istio's
 * source.principal), or NULL (plain text, no certificate, no SPIFFE URI SAN). */
const char *mt_session_principal(const mt_session_t *s);
/* Istio's connection_security_policy: "mutual_tls" (client certificate verified), "tls"
 * (server-side TLS only), "none" (plain text). */
const char *mt_session_security_policy(const mt_session_t *s);
/* The listener's AuthorizationPolicies on r, whose operation part (method, path, keys) the
 * proxy filled; the source part (principal, address, port) is the session's. A denial is
 * logged (info) and counted (MT_ST_RBAC_DENIED), an audit too (MT_ST_RBAC_AUDITED). True
 * when allowed; always true without policies. */
bool mt_session__authorize(mt_session_t *s, mt_authz_request_t *r);
static inline bool mt_session_authorize(mt_session_t *s, mt_authz_request_t *r)
{
    return !s->conf->authz || mt_session__authorize(s, r);
}
/* ---- one request's outcome: Istio's metrics and the access log, written here once --------- */

/* What the access log says of a request besides its metrics (built only when it is logged). */
typedef struct mt_request_end {
    const mt_cluster_conf_t *dest;  /* the cluster it went to (NULL: none) */
    uint64_t start_ns;              /* the worker's now_ns when the request was read */
    uint32_t code;                  /* index into the listener's istio_codes (0: success) */
    uint32_t flags;                 /* Envoy response flags, MT_RF_* */
    uint64_t req_bytes, resp_bytes; /* a stream's: its frames' bytes each way */
    const char *op;                 /* the command or method (never its arguments) */
    size_t op_len;                  /* 0: op is NUL-terminated */
    const mt_wendpoint_t *ep;       /* the upstream endpoint that answered, or NULL */
    const char *route;              /* the route taken, or NULL */
    const char *subset;             /* the subset, or NULL */
    const char *trace_id;           /* 32 hex, or NULL */
    const char *stream_end;         /* a stream's line (MetaProtocol streams): how it ended; NULL */
    uint64_t frames_in, frames_out; /* a stream's frames from the client and the server */
} mt_request_end_t;

/* The label set of requests from s to dest (NULL: none): found or made on first use. */
mt_istio_set_t *mt_session_istio_slow(mt_session_t *s, const mt_cluster_conf_t *dest);
/* The same on a listener with TLS: source_principal and connection_security_policy are the
 * session's (its client's verified identity), so the set is kept on the session, not the
 * listener. */
mt_istio_set_t *mt_session_istio_peer(mt_session_t *s, const mt_cluster_conf_t *dest);
/* The access log line of a request (after mt_session_request_done asked for it). */
void mt_session_access_log(mt_session_t *s, const mt_request_end_t *e, const mt_istio_set_t *set);

/*
 * A reply to one request of s left (or was made) now: the proxy calls this once per request,
 * local replies, faults and refusals included, with the cluster it went to (dest, NULL: none)
 * or the label set it resolved itself (set: a MetaProtocol subset's), the response code (an
 * index into the listener's istio_codes, 0: success), the Envoy flags (MT_RF_*), the worker's
 * now_ns when the request was read, and the request's and the reply's sizes. Costs an array
 * lookup and a few adds on the worker's own shard. Returns the label set when this request
 * goes to the access log (the proxy then builds an mt_request_end_t and calls
 * mt_session_access_log), NULL otherwise.
 */
static inline __attribute__((always_inline)) mt_istio_set_t *
mt_session_request_done(mt_session_t *s, const mt_cluster_conf_t *dest, mt_istio_set_t *set,
                        uint32_t code, uint32_t flags, uint64_t start_ns, uint32_t req_bytes,
                        uint32_t resp_bytes)
{
    const mt_listener_conf_t *l = s->conf;
    if (!l->istio_codes)
        return NULL;
    if (MT_UNLIKELY(!set && l->tls)) {
        if (s->istio_peer && s->istio_peer_dest == dest)
            set = s->istio_peer;
        else if (!(set = mt_session_istio_peer(s, dest)))
            return NULL;
    }
    if (!set) {
        uint32_t i = dest ? dest->index + 1 : 0;
        if (MT_LIKELY(i < l->n_istio && (!dest || &s->snap->clusters[dest->index] == dest)))
            set = __atomic_load_n(&l->istio[i], __ATOMIC_ACQUIRE);
        if (MT_UNLIKELY(!set) && !(set = mt_session_istio_slow(s, dest)))
            return NULL;
    }
    uint64_t now = s->w->now_ns;
    mt_istio_record(set, s->w->id, code, flags, now > start_ns ? now - start_ns : 0, req_bytes,
                    resp_bytes);
    const mt_alog_conf_t *al = s->snap->access_log;
    if (MT_LIKELY(al == NULL) || !mt_alog_sampled(al, &s->w->alog))
        return NULL;
    return set;
}

/* Adds what s->out wrote since the last call to istio_tcp_sent_bytes_total (the shell calls
 * it after each write; a proxy that writes through its own callback calls it too). */
void mt_session_count_sent_from(mt_session_t *s, const mt_outq_t *q);
static inline void mt_session_count_sent(mt_session_t *s)
{
    mt_session_count_sent_from(s, &s->out);
}
/* Bytes a proxy read from the client itself (plain TCP reads outside the shell). */
static inline void mt_session_count_received(mt_session_t *s, uint64_t n)
{
    if (MT_LIKELY(s->istio_tcp != NULL)) /* NULL: a TLS client still in its handshake */
        s->istio_tcp->tcp[s->w->id].received += n;
}

/* The peer as "address:port" (or "?"), for logs. */
const char *mt_session_peer(const mt_session_t *s, char *out, size_t cap);

#endif
