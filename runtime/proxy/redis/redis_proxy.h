/*
 * redis_proxy.h - internals shared by the Redis data path files. Not a public API.
 *
 *   proxy.c    the registry entry and the per-worker state
 *   session.c  the client session: accept, shell hooks, command dispatch, AUTH/HELLO/local
 *   policy.c   the Lua policy chain: verdicts, rewrites, prefix-route splits, mirrors
 *   route.c    where a command goes: forwarding, PROXY-mode endpoint choice, refusals
 *   upstream.c the upstream connections (mt_rup_t on the upstream shell)
 *   reply.c    request records, completion, replies in order, held replies, command stats
 *   redis_cluster.c  Redis Cluster topology, slot routing, redirections, split commands
 *   tx.c       transactions, blocking commands and SELECT on leased upstream connections
 *   admin.c    administration: default refusals, deniedCommands, PROXY-mode fan-out
 *   pubsub.c   pub/sub: one upstream subscription per channel per worker, fanned out to the
 *              subscribed clients, on dedicated connections (a "hub" per endpoint)
 *   sentinel.c Sentinel discovery: the master (c->eps) and replicas of a Sentinel-backed
 *              cluster, +switch-master, on dedicated connections to the Sentinels
 *
 * Calls go down that list (session -> policy -> route -> upstream -> reply); redis_cluster.c
 * sits beside route.c (route.c hands it cluster-mode commands, it sends through upstream.c
 * and completes through reply.c). Everything else is file-local.
 */
#ifndef MELTEMI_REDIS_PROXY_H
#define MELTEMI_REDIS_PROXY_H

#include "runtime/core/log.h"
#include "runtime/core/session.h"
#include "runtime/core/upstream.h"
#include "runtime/core/worker.h"
#include "runtime/proxy/redis/lua_bridge.h"
#include "runtime/proxy/redis/redis_conf.h"

#include "protocols/redis/commands.h"
#include "protocols/redis/local.h"
#include "protocols/redis/resp.h"

#include <string.h>

typedef struct mt_rsess mt_rsess_t;
typedef struct mt_rsplit mt_rsplit_t;
typedef struct mt_rtopo mt_rtopo_t;

typedef enum rreq_kind {
    RREQ_USER = 0,     /* a client's command (or a part of one: parent != NULL) */
    RREQ_AUTH = 1,     /* the proxy's AUTH on a new connection */
    RREQ_IGNORE = 2,   /* READONLY / ASKING: reply dropped unless it is an error */
    RREQ_TOPOLOGY = 3, /* CLUSTER SLOTS */
    RREQ_DROP = 4,     /* a transaction's command moved to another lease: reply dropped */
} rreq_kind_t;

typedef struct mt_rreq {
    struct mt_rreq *next;  /* session FIFO */
    struct mt_rreq *unext; /* upstream FIFO */
    mt_rsess_t *sess;      /* NULL: orphaned (client gone) or internal */
    mt_slice_t reply;      /* held reply, when it arrived before its turn */
    mt_slice_t frame;      /* cluster mode: the command bytes, kept for redirections */
    uint64_t start_ns;
    uint64_t deadline_ms;
    const redis_command_t *cmd;
    const mt_cluster_conf_t *dest; /* where it went, for Istio's labels (mt_rsess_push: the
                                      session's cluster unless route.c set another) */
    uint32_t req_bytes;            /* the command's frame, for istio_request_bytes */
    const mt_wendpoint_t *ep;      /* the endpoint it was last sent to (the access log) */
    uint16_t rflags;               /* Envoy response flags (MT_RF_*): the session's, plus
                                      what happened on the way (timeouts, failures) */
    struct mt_trace_ctx *trace;    /* its span's context when sampled (malloc'd), or NULL */
    struct mt_rreq *parent;        /* a part of a split command */
    mt_wendpoint_t *pin;           /* a part for one given master (fan-out), whatever its slot */
    mt_rsplit_t *split;            /* a split command: how the parts' replies combine */
    uint32_t part;                 /* index among the parent's parts */
    uint16_t slot;
    uint8_t kind;
    uint8_t redirects;
    bool done;
    bool read_only; /* may go to a replica */
    bool held;      /* answered, but a DELAY fault holds the reply until hold_until */
    bool stats_done;
    bool observed;    /* in Istio's metrics (once, whichever path answers it) */
    bool blocking;    /* a blocking command on a lease of its own (tx.c) */
    bool is_select;   /* SELECT select_db, or CLIENT conn_flag on|off, on a lease (tx.c) */
    bool lease_first; /* the first client command on a new lease: MOVED may be followed */
    bool queued;      /* sent while MULTI queued (tx.c) */
    bool tx_end;      /* EXEC or DISCARD (tx.c) */
    int32_t select_db;
    uint8_t conn_flag; /* is_select: CLIENT NO-EVICT / NO-TOUCH (RCONN_*), else SELECT */
    bool conn_flag_on;
    bool resp_chain;
    /* on_response filters see the reply (once) */ /* counted in the per-command stats */
    uint64_t hold_until_ms;
} mt_rreq_t;

typedef struct mt_rup mt_rup_t;

/* A transaction's state (tx.c): WATCH and MULTI put the session on an exclusive upstream
 * connection until EXEC, DISCARD or UNWATCH. */
typedef enum rtx_state { RTX_NONE = 0, RTX_WATCHING, RTX_QUEUED } rtx_state_t;
/* Per-connection flags a client sets on its upstream connection (CLIENT NO-EVICT/NO-TOUCH). */
enum { RCONN_NO_EVICT = 1u << 0, RCONN_NO_TOUCH = 1u << 1 };
typedef struct mt_rtx {
    mt_rup_t *lease;    /* the leased connection, or NULL (not yet, or lost) */
    uint8_t state;      /* rtx_state_t */
    bool multi_pending; /* MULTI answered here; sent on the lease before the first command */
    bool failed;        /* a queued command was refused here: EXEC aborts (EXECABORT) */
    bool watch_lost;    /* the lease died while keys were watched: EXEC answers nil */
    int32_t slot;       /* cluster mode: the slot of the transaction's keys; -1: none yet */
    /* A new lease waits for what the client sent before it (on other connections) to be
     * answered, so Redis sees the client's commands in order: gate_ahead is how many records
     * of the session's FIFO are still ahead, pending what waits (linked by unext). */
    uint32_t gate_ahead;
    mt_rreq_t *pending_head, *pending_tail;
    /* SELECT n (PROXY mode, one master): the client's database as Redis confirmed it; while
     * it is not 0 (or a SELECT is in flight) the session keeps its lease, and a new lease
     * (after the old one died) is selected first, so the database survives reconnects. */
    int32_t db;
    uint32_t selects_in_flight; /* SELECTs and CLIENT NO-EVICT/NO-TOUCH not answered yet */
    /* CLIENT NO-EVICT / NO-TOUCH on (RCONN_*), as Redis confirmed them: kept on the lease,
     * like a database, and set again on a new lease */
    uint8_t client_flags;
    /* The whole transaction (MULTI ... EXEC) was in the read chunk and every command in it is
     * a plain keyed one (tx.c tx_whole_in_hand): it goes, back to back, on the session's
     * shared pipelined connection, which `lease` then points at until EXEC or DISCARD, all
     * within one sess_on_data call, so nobody else's command can come between. */
    bool shared;
} mt_rtx_t;

struct mt_rsess {
    mt_session_t base; /* first: the uv handle is first in it */
    /* mt_redis_listener(base.conf), read per command: set at accept and after each
     * mt_session_rebind (sess_command), the only places base.conf changes */
    const mt_redis_listener_conf_t *rconf;
    resp_req_parser_t parser;
    const redis_command_t *last_cmd; /* redis_command_lookup_cached's one-entry cache */
    mt_rreq_t *head, *tail;
    redis_local_ctx_t lctx;
    bool authenticated;
    bool ran_chain; /* Lua saw this connection: tell it when it closes */
    /* MULTI was refused: until EXEC or DISCARD every command is answered "not applied" and
     * nothing reaches an upstream (the client may believe it is queueing a transaction) */
    bool tx_refused;
    mt_rtx_t tx;
    bool resp3; /* HELLO 3: its commands go on RESP3 upstream connections, pushes are '>' */
    uint64_t info_ns, info_total; /* the previous INFO: instantaneous_ops_per_sec (session.c) */
    struct mt_rps_client *ps;     /* pub/sub subscriptions (pubsub.c); NULL until the first one */
    /* Cluster mode before the first slot map: a command that needs a lease waits (unread, in
     * order) until the map is in, retried by this timer, at most connectTimeout. */
    uint64_t map_wait_since_ms;
    struct mt_rsess_timers *timers; /* map_timer, hold_timer: NULL until one is first armed */
    /* the command being handled (sess_command): its start (the read's w->now_ns), its size,
     * and the Envoy response flags (MT_RF_*) that policies, refusals and routing set on it;
     * its record (mt_rsess_push) or its local reply takes them */
    uint64_t cmd_start_ns;
    const char *cmd_name; /* its name in the command table, or "(unknown)" */
    uint32_t cmd_bytes;
    uint16_t cmd_flags;
};

/* A session's rarely used timers, allocated the first time one is armed (mt_rsess_timers)
 * and freed with the session, so that the many connections that never use them do not
 * carry 80 bytes each. */
typedef struct mt_rsess_timers {
    mt_rsess_t *sess;
    mt_timer_t map_timer;  /* cluster mode: retries a command waiting for the first slot map */
    mt_timer_t hold_timer; /* releases held replies (DELAY faults), at the earliest one's time */
} mt_rsess_timers_t;

/* s's timers, allocated on first use; NULL on out of memory (session.c). */
mt_rsess_timers_t *mt_rsess_timers(mt_rsess_t *s);

/* A Redis upstream connection: the shell (upstream.h) first, then the reply scanner and the
 * FIFO of requests it owes replies to (Redis answers in order). */
struct mt_rup {
    mt_upstream_t base;
    resp_reply_scanner_t scanner;
    mt_rreq_t *head, *tail;
    mt_timer_t flush_timer; /* maxBufferSizeBeforeFlush: flush when it fires (worker's wheel) */
    uint16_t failing_flag;  /* mt_rup_fail: the Envoy flag of what failed (UT, else UF) */
    bool never_connected;   /* mt_rup_fail: the connect failed, nothing queued was sent */
    mt_rsess_t *lessee;     /* leased: the session whose transaction it carries, or NULL */
    int32_t db;             /* leased: the database SELECTed on it (0: clean) */
    uint8_t client_flags;   /* leased: RCONN_* set on it (0: clean) */
    bool returning;         /* leased, its transaction ended: returned once nothing is owed */
    bool resp3;             /* said HELLO 3: replies in RESP3, for RESP3 clients only */
};

/* enableCommandStats: this worker's blocks for one listener, indexed by command id; created on
 * first use (reply.c), freed when the worker stops (proxy.c). */
struct cmd_stats {
    const mt_stats_block_t *listener;
    mt_stats_block_t *blocks[REDIS_COMMAND_COUNT];
    struct cmd_stats *next;
};
typedef struct cmd_stats cmd_stats_t;

/* Everything the Redis proxy keeps per worker (w->proxy[MT_PROTO_REDIS]). */
typedef struct mt_redis_worker {
    mt_bridge_t bridge;  /* the Lua policies and filters of the live snapshot */
    mt_rreq_t *req_free; /* free list of request records */
    uint32_t n_req_free;
    resp_out_t scratch;          /* local replies and split parts are built here */
    mt_log_limit_t auth_log;     /* failed client AUTH lines: at most a few per second */
    struct cmd_stats *cmd_stats; /* enableCommandStats: per listener, per command blocks */
    struct mt_rpubsub *pubsub;   /* pub/sub topics and hubs (pubsub.c); NULL until first used */
    resp_req_parser_t lookahead; /* tx.c: reads a transaction ahead without consuming it */
    /* The request parser's argument arrays, lent to whichever session parses (session.c):
     * a session holds none between frames, so an idle connection costs none. */
    resp_req_arrays_t spare_args;
} mt_redis_worker_t;

static inline mt_redis_worker_t *mt_rw(mt_worker_t *w)
{
    return w->proxy[MT_PROTO_REDIS];
}

typedef struct mt_rsentinel mt_rsentinel_t;

/* Redis Cluster mode: the slot map and nodes of a worker cluster (redis_cluster.c). A
 * Sentinel-backed cluster (PROXY mode) keeps its Sentinel state there instead. */
static inline mt_rtopo_t *mt_rtopo(const mt_wcluster_t *c)
{
    return MT_UNLIKELY(mt_redis_cluster(c->conf)->sentinel_master != NULL) ? NULL : c->proxy_state;
}

/* A Sentinel-backed cluster's state (sentinel.c), or NULL. */
static inline mt_rsentinel_t *mt_rsentinel(const mt_wcluster_t *c)
{
    return MT_UNLIKELY(mt_redis_cluster(c->conf)->sentinel_master != NULL) ? c->proxy_state : NULL;
}

/* Compares a looked-up command with a lower-case name (not for the per-command hot path). */
static inline bool mt_rcmd_is(const redis_command_t *cmd, const char *name)
{
    return strcmp(cmd->name, name) == 0;
}

/* redis_cluster.c: the admin's /clusters part of a cluster (its slot map and node roles) */
void mt_rcluster_status(mt_wcluster_t *c, FILE *f);

/* session.c */
void mt_rsess_accept(mt_wlistener_t *l, uv_stream_t *server);

/* policy.c */
/* A forwardable command: through the policy chain when the listener has one, else forwarded. */
void mt_rsess_dispatch(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                       const char *frame);
/* A command on a listener with policies or filters: ask Lua, then carry out the verdict. */
void mt_rsess_policy(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                     const char *frame);

/* route.c */
/* Forwards a command to cluster c; hold_until_ms (DELAY faults) holds the reply back. */
void mt_rforward_to(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                    const resp_request_t *req, const char *frame, uint64_t hold_until_ms);
/* PROXY mode: queues a command on endpoint ep's shared connection. */
void mt_rforward_endpoint(mt_rsess_t *s, mt_wendpoint_t *ep, const redis_command_t *cmd,
                          const resp_request_t *req, const char *frame, uint64_t hold_until_ms);
/* Forwards a command to the session's own cluster. */
void mt_rsess_forward(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                      const char *frame);
/* PROXY mode: the endpoint for a command (keys, roles, readPolicy); NULL when none fits. */
mt_wendpoint_t *mt_rroute_endpoint(mt_wcluster_t *c, const redis_command_t *cmd,
                                   const resp_request_t *req, mt_read_policy_t policy,
                                   bool hashtag);
/* PROXY mode: the endpoint a pub/sub channel lives on (PUBLISH goes there, its subscription
 * too): the one endpoint, the primary of a primary/replica set, else the channel's hash. */
mt_wendpoint_t *mt_rroute_channel(mt_wcluster_t *c, const resp_arg_t *channel);
/* PROXY mode: the endpoint a key hashes to. */
mt_wendpoint_t *mt_rproxy_endpoint(mt_wcluster_t *c, const resp_arg_t *key, bool hashtag);
void mt_rsess_refuse(mt_rsess_t *s, const char *name, const char *form);

/* admin.c */
/* Answers a command refused by default (SHUTDOWN, DEBUG SEGFAULT...) with why; true if so. */
bool mt_radmin_refuse(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req);
/* Answers a command the listener denies (settings.deniedCommands) NOPERM; true if so. */
bool mt_radmin_denied(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req);
/* PROXY mode, a BROADCAST or ALL_MASTERS command: with several masters, sends it as
 * protocols/redis/admin.c says (every master, merged; a key's master; one master) and returns
 * true; false when c has one master (forward it as any command). */
bool mt_radmin_forward(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                       const resp_request_t *req, const char *frame, uint64_t hold_until_ms);

/* tx.c */
/* MULTI, EXEC, DISCARD, UNWATCH (WATCH is dispatched like a keyed command). */
void mt_rtx_command(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                    const char *frame);
/* A command while MULTI is queueing (any kind but the transaction commands); false for QUIT. */
bool mt_rtx_queued(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                   const char *frame);
/* mt_rforward_to's hook: WATCH, and commands while a transaction is open, go on the lease;
 * true when handled (sent or answered). */
bool mt_rtx_forward(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                    const resp_request_t *req, const char *frame, uint64_t hold_until_ms);
/* A command the policy answered itself (a fault, a filter): a queued one fails the
 * transaction (Redis aborts on queueing errors). */
void mt_rtx_answered_locally(mt_rsess_t *s, bool error);
/* upstream.c tells the lessee its lease died with text (it fails what was on it itself). */
void mt_rtx_lease_lost(mt_rsess_t *s, const char *text);
/* A reply (or an ignored one) came in on leased connection u: gives it back once its
 * transaction is over and nothing more is owed. */
void mt_rtx_after_reply(mt_rup_t *u);
/* SELECT: on the session's lease (PROXY mode with one master), else answered here. */
/* CLIENT NO-EVICT|NO-TOUCH on|off: on the client's own lease (tx.c); false when the
 * arguments are not that (then the local reply says what is wrong). */
bool mt_rtx_client_flag(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                        const char *frame);
void mt_rtx_select(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                   const char *frame);
/* upstream.c: the first command on lease u was answered MOVED (cluster mode, a stale slot
 * map): true when tx.c re-sent it on a lease to the right master (nothing was applied). */
bool mt_rtx_moved(mt_rup_t *u, mt_rreq_t *r, const char *p, size_t len);
/* A MOVED or ASK answering a queued command that tx_moved does not follow (not the first on
 * its lease): the client gets a clear error instead of the backend's address, and its EXEC
 * EXECABORT (Redis flagged the transaction too; nothing of it runs). False: not that. */
bool mt_rtx_redirected(mt_rup_t *u, mt_rreq_t *r, const char *p, size_t len);
/* upstream.c: a SELECT on lease u was answered (ok: +OK). */
void mt_rtx_select_answered(mt_rup_t *u, mt_rreq_t *r, bool ok);
/* reply.c popped a record off s's FIFO while a lease waits for its gate. */
void mt_rtx_popped(mt_rsess_t *s);
/* The client went away: its lease closes (Redis discards its transaction). */
void mt_rtx_session_closed(mt_rsess_t *s);
/* Cluster mode, no slot map yet, and cmd would need a lease (WATCH, a blocking command, a
 * command of an open transaction): true (and the session retries it once the map is in). */
bool mt_rtx_wait_for_map(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req);
/* The client sent EOF: close at once rather than wait for what is owed? True while a
 * blocking command is on its lease or a transaction is open (Redis would drop either). */
bool mt_rtx_close_on_eof(mt_rsess_t *s);

/* upstream.c */
/* The shared connection for a session on endpoint ep, connecting if needed; NULL + why.
 * resp3: one of the endpoint's RESP3 connections (said HELLO 3), for a RESP3 client. */
mt_rup_t *mt_rup_for(mt_wendpoint_t *ep, uint64_t sess_id, bool resp3, const char **why);
/* Appends r to u's FIFO (u owes it a reply). */
void mt_rup_push(mt_rup_t *u, mt_rreq_t *r);
/* After queueing a command on u: flush now or as maxBufferSizeBeforeFlush says. */
void mt_rup_schedule(mt_rup_t *u, const mt_redis_listener_conf_t *rl);
/* Fails every request queued on u with text and closes u. */
void mt_rup_fail(mt_rup_t *u, const char *text);
/* The shell's on_open for any Redis connection: the reply scanner, the proxy's AUTH and (cluster
 * mode) READONLY queued first. 0, or -1 when out of memory. */
int mt_rup_open(mt_rup_t *u);
/* A reply to the proxy's own AUTH / READONLY / ASKING (or a dropped one) at the head of u's FIFO is
 * consumed (true; a refused AUTH backs the endpoint off and fails u); false when the head is not
 * one. */
bool mt_rup_internal_reply(mt_rup_t *u, const char *p, size_t len);
/* Frees the requests still on u (its on_closed). */
void mt_rup_free_requests(mt_rup_t *u);
/* The shell's on_deadline for any Redis connection: fails u when its head request is overdue. */
void mt_rup_on_deadline(mt_upstream_t *base, uint64_t now_ms);
/* An exclusive connection to ep for session s (mt_upstream_lease); NULL + why. */
mt_rup_t *mt_rup_lease(mt_wendpoint_t *ep, mt_rsess_t *s, const char **why);
/* A leased connection whose transaction ended: given back clean once nothing is owed on it
 * (now if nothing is), or closed when clean is false. */
void mt_rup_release(mt_rup_t *u, bool clean);
/* Queues a command of the proxy's own on u whose reply is dropped unless it is an error. */
int mt_rup_queue_ignored(mt_rup_t *u, const char *cmd, size_t len);
/* Queues a client's command on u (bytes: the frame in the read chunk, or re-encoded when
 * inline); the record is in the session's FIFO and u's. NULL when out of memory. */
mt_rreq_t *mt_rup_send_user(mt_rup_t *u, mt_rsess_t *s, const redis_command_t *cmd,
                            const resp_request_t *req, const char *frame, uint64_t hold_until_ms);
/* Queues r, whose bytes are r->frame, on u; false when out of memory. */
bool mt_rup_send_kept(mt_rup_t *u, mt_rreq_t *r);
/* Queues r (its bytes in r->frame) on endpoint ep, after an ASKING when asking. Returns false
 * and why when no connection can be had. */
bool mt_rreq_send(mt_rreq_t *r, mt_wendpoint_t *ep, bool asking, const char **why);
const char *mt_rendpoint_label(mt_wendpoint_t *ep, char *buf, size_t n);
bool mt_rendpoint_healthy(mt_wendpoint_t *ep, uint64_t now_ms);
bool mt_rcluster_send_slots(mt_wendpoint_t *ep, const char **why);

/* reply.c */
mt_rreq_t *mt_rreq_new(mt_worker_t *w);
void mt_rreq_free(mt_worker_t *w, mt_rreq_t *r);
/* A record the client left before its reply: counted (DC, code "0") once, when it closes. */
void mt_rreq_observe_dc(mt_rsess_t *s, mt_rreq_t *r);
void mt_rreq_complete(mt_worker_t *w, mt_rreq_t *r, mt_buf_t *b, const char *p, size_t len);
void mt_rreq_complete_copy(mt_worker_t *w, mt_rreq_t *r, const char *p, size_t len);
void mt_rreq_complete_error(mt_worker_t *w, mt_rreq_t *r, const char *text);
/* Appends r to session s's FIFO (replies leave in this order). */
void mt_rsess_push(mt_rsess_t *s, mt_rreq_t *r);
/* Queues a locally made reply behind whatever the client is still waiting for. */
void mt_rsess_reply(mt_rsess_t *s, const char *p, size_t len);
void mt_rsess_reply_error(mt_rsess_t *s, const char *text);
/* A local reply that a DELAY fault holds back until hold_until_ms. */
void mt_rsess_reply_held(mt_rsess_t *s, const char *p, size_t len, uint64_t hold_until_ms);
/* An error now, or held until hold_until_ms (0: now). */
void mt_rsess_reply_error_at(mt_rsess_t *s, const char *text, uint64_t hold_until_ms);
/* Arms the release of held replies at at_ms (or keeps an earlier one). */
void mt_rsess_hold_arm(mt_rsess_t *s, uint64_t at_ms);

/* redis_cluster.c */
/* Sends a command of session s to cluster-mode destination c (the listener's or a route's). */
void mt_rcluster_forward(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                         const resp_request_t *req, const char *frame);
/* A reply to a cluster-mode request: true when it was a redirection and r was re-sent. */
bool mt_rcluster_redirect(mt_wcluster_t *c, mt_rreq_t *r, const char *p, size_t len);
void mt_rcluster_on_slots(mt_wcluster_t *c, mt_wendpoint_t *from, const char *p, size_t len);
void mt_rcluster_topology_failed(mt_wcluster_t *c, const char *why);
void mt_rcluster_node_failed(mt_wcluster_t *c, mt_wendpoint_t *ep);
/* r was queued on a connection to a node that never connected, so nothing of it was sent:
 * routes it again (the node now backs off, so a PREFER_REPLICA read goes to its master), or
 * answers text once it has been re-routed as often as a redirection may be. */
void mt_rcluster_resend(mt_wcluster_t *c, mt_rreq_t *r, const char *text);
/* A part of a split command is answered (bytes in chunk b). */
void mt_rcluster_part_done(mt_worker_t *w, mt_rreq_t *part, mt_buf_t *b, const char *p, size_t len);
void mt_rcluster_tick(mt_wcluster_t *c, uint64_t now_ms);
/* Prefix routing: splits a multi-key command whose keys go to different services. */
void mt_rsplit_by_route(mt_rreq_t *parent, const resp_request_t *req, uint32_t step,
                        mt_wcluster_t **targets, const uint32_t *strips);
/* A fire-and-forget copy of a command (mirroring) to a cluster-mode destination. */
void mt_rcluster_mirror(mt_wcluster_t *c, const redis_command_t *cmd, const resp_request_t *req);
/* The same command on each of eps (a part per endpoint, parent in its session's FIFO), the
 * replies merged as merge (a redis_merge_t) says. */
void mt_rsplit_fanout(mt_wcluster_t *c, mt_rreq_t *parent, const resp_request_t *req,
                      mt_wendpoint_t *const *eps, uint32_t n, int merge);
/* COMMAND DOCS on ep, its reply kept to the commands COMMAND lists. */
void mt_rsplit_command_docs(mt_wcluster_t *c, mt_rreq_t *parent, const resp_request_t *req,
                            mt_wendpoint_t *ep);
/* COMMAND DOCS [name...]: asked of one master (admin.c); false when there is none to ask. */
bool mt_radmin_command_docs(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req);
/* SCAN over eps, one endpoint after the other (the cursor's low bits say which). */
void mt_rsplit_scan(mt_wcluster_t *c, mt_rreq_t *parent, const resp_request_t *req,
                    mt_wendpoint_t *const *eps, uint32_t n);
/* A "-MOVED slot host:port" reply: the node it names (the slot map is pointed there and
 * refreshed soon); NULL when p is not one. */
mt_wendpoint_t *mt_rcluster_moved(mt_wcluster_t *c, const char *p, size_t len);
/* Whether c's first slot map is in; if not, asks for it (false). */
bool mt_rcluster_has_map(mt_wcluster_t *c);
/* The master serving slot, from the slot map; NULL while there is none. */
mt_wendpoint_t *mt_rcluster_slot_master(mt_wcluster_t *c, uint16_t slot);
void mt_rcluster_free(mt_rtopo_t *t);
/* The master serving slot, or NULL while the slot map is not known (a refresh is asked). */
mt_wendpoint_t *mt_rcluster_master_of(mt_wcluster_t *c, uint16_t slot);
void mt_rcluster_split_free(mt_worker_t *w, mt_rsplit_t *sp);

/* sentinel.c */
/* The worker's tick for a Sentinel-backed cluster (also right after a snapshot is applied):
 * starts discovery on first use, asks the Sentinels when due, keeps the subscription up. */
void mt_rsentinel_tick(mt_wcluster_t *c, uint64_t now_ms);
/* The cluster is retired or the worker stops: its Sentinel connections close for good. */
void mt_rsentinel_stop(mt_wcluster_t *c);
/* cluster_free: gives the cluster its configured endpoints back and frees the state. */
void mt_rsentinel_free(mt_wcluster_t *c);
/* A connection to ep failed: if ep is the master, the Sentinels are asked again soon. */
void mt_rsentinel_node_failed(mt_wcluster_t *c, const mt_wendpoint_t *ep);
/* The error reply for a command while no master is known (all Sentinels down...), in buf. */
const char *mt_rsentinel_no_master(mt_wcluster_t *c, char *buf, size_t n);
/* A read under readPolicy (not MASTER): a replica the Sentinels listed, or the master; NULL
 * when REPLICA finds no healthy replica. */
mt_wendpoint_t *mt_rsentinel_read_endpoint(mt_wcluster_t *c, mt_read_policy_t policy);
/* The admin's /clusters part: master name, master, replicas, Sentinels, last error. */
void mt_rsentinel_status(mt_wcluster_t *c, FILE *f);

/* pubsub.c */
/*
 * A command of session s that pub/sub owns: the (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE family,
 * and, while s is subscribed (RESP2), every command (PING and RESET answered in that state's
 * forms, QUIT left to the session, anything else refused as Redis does). True when answered.
 */
bool mt_rpubsub_command(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req);
/* The session closes: its subscriptions go (the last subscriber of a topic unsubscribes it). */
void mt_rpubsub_session_closed(mt_rsess_t *s);
/* Redis Cluster's slot map changed: topics whose node changed move there. */
void mt_rpubsub_topology(mt_wcluster_t *c);
/* Redis Cluster's first slot map could not be learnt: subscribers waiting for it are answered. */
void mt_rpubsub_topology_failed(mt_wcluster_t *c);
/* Worker shutdown: hubs close and reconnect no more (stop); everything left is freed (free). */
void mt_rpubsub_stop(mt_worker_t *w);
void mt_rpubsub_free(mt_worker_t *w);

#endif
