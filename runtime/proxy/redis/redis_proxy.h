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
 *   pubsub.c   pub/sub: one upstream subscription per channel per worker, fanned out to the
 *              subscribed clients, on dedicated connections (a "hub" per endpoint)
 *
 * Calls go down that list (session -> policy -> route -> upstream -> reply); redis_cluster.c
 * sits beside route.c (route.c hands it cluster-mode commands, it sends through upstream.c
 * and completes through reply.c). Everything else is file-local.
 */
#ifndef MELTEMI_REDIS_PROXY_H
#define MELTEMI_REDIS_PROXY_H

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
    struct mt_rreq *parent; /* a part of a split command */
    mt_wendpoint_t *pin;    /* a part for one given master (fan-out), whatever its slot */
    mt_rsplit_t *split;     /* a split command: how the parts' replies combine */
    uint32_t part;          /* index among the parent's parts */
    uint16_t slot;
    uint8_t kind;
    uint8_t redirects;
    bool done;
    bool read_only; /* may go to a replica */
    bool held;      /* answered, but a DELAY fault holds the reply until hold_until */
    bool stats_done;
    bool resp_chain;
    /* on_response filters see the reply (once) */ /* counted in the per-command stats */
    uint64_t hold_until_ms;
} mt_rreq_t;

struct mt_rsess {
    mt_session_t base; /* first: the uv handle is first in it */
    /* mt_redis_listener(base.conf), read per command: set at accept and after each
     * mt_session_rebind (sess_command), the only places base.conf changes */
    const mt_redis_listener_conf_t *rconf;
    resp_req_parser_t parser;
    mt_rreq_t *head, *tail;
    redis_local_ctx_t lctx;
    bool authenticated;
    bool ran_chain; /* Lua saw this connection: tell it when it closes */
    /* MULTI was refused: until EXEC or DISCARD every command is answered "not applied" and
     * nothing reaches an upstream (the client may believe it is queueing a transaction) */
    bool tx_refused;
    bool resp3; /* HELLO 3: its commands go on RESP3 upstream connections, pushes are '>' */
    uint64_t info_ns, info_total; /* the previous INFO: instantaneous_ops_per_sec (session.c) */
    struct mt_rps_client *ps;     /* pub/sub subscriptions (pubsub.c); NULL until the first one */
    mt_timer_t hold_timer; /* releases held replies (DELAY faults), at the earliest one's time */
};

/* A Redis upstream connection: the shell (upstream.h) first, then the reply scanner and the
 * FIFO of requests it owes replies to (Redis answers in order). */
typedef struct mt_rup {
    mt_upstream_t base;
    resp_reply_scanner_t scanner;
    mt_rreq_t *head, *tail;
    uv_timer_t *flush_timer; /* maxBufferSizeBeforeFlush: flush when it fires */
    bool resp3;              /* said HELLO 3: replies in RESP3, for RESP3 clients only */
} mt_rup_t;

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
    struct cmd_stats *cmd_stats; /* enableCommandStats: per listener, per command blocks */
    struct mt_rpubsub *pubsub;   /* pub/sub topics and hubs (pubsub.c); NULL until first used */
} mt_redis_worker_t;

static inline mt_redis_worker_t *mt_rw(mt_worker_t *w)
{
    return w->proxy[MT_PROTO_REDIS];
}

/* Redis Cluster mode: the slot map and nodes of a worker cluster (redis_cluster.c). */
static inline mt_rtopo_t *mt_rtopo(const mt_wcluster_t *c)
{
    return c->proxy_state;
}

/* Compares a looked-up command with a lower-case name (not for the per-command hot path). */
static inline bool mt_rcmd_is(const redis_command_t *cmd, const char *name)
{
    return strcmp(cmd->name, name) == 0;
}

/* session.c */
void mt_rsess_accept(mt_wlistener_t *l, uv_stream_t *server);

/* policy.c */
/* A command on a listener with policies or filters: ask Lua, then carry out the verdict. */
void mt_rsess_policy(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                     const char *frame);

/* route.c */
/* Forwards a command to cluster c; hold_until_ms (DELAY faults) holds the reply back. */
void mt_rforward_to(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
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
/* Refuses (answers) a command that would block its shared upstream; true when refused. */
bool mt_rsess_refuse_blocking(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req);

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
/* A reply to the proxy's own AUTH / READONLY / ASKING at the head of u's FIFO is consumed
 * (true; a refused AUTH backs the endpoint off and fails u); false when the head is not one. */
bool mt_rup_internal_reply(mt_rup_t *u, const char *p, size_t len);
/* Frees the requests still on u (its on_closed). */
void mt_rup_free_requests(mt_rup_t *u);
/* Queues r (its bytes in r->frame) on endpoint ep, after an ASKING when asking. Returns false
 * and why when no connection can be had. */
bool mt_rreq_send(mt_rreq_t *r, mt_wendpoint_t *ep, bool asking, const char **why);
const char *mt_rendpoint_label(mt_wendpoint_t *ep, char *buf, size_t n);
bool mt_rendpoint_healthy(mt_wendpoint_t *ep, uint64_t now_ms);
bool mt_rcluster_send_slots(mt_wendpoint_t *ep, const char **why);

/* reply.c */
mt_rreq_t *mt_rreq_new(mt_worker_t *w);
void mt_rreq_free(mt_worker_t *w, mt_rreq_t *r);
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
/* A part of a split command is answered (bytes in chunk b). */
void mt_rcluster_part_done(mt_worker_t *w, mt_rreq_t *part, mt_buf_t *b, const char *p, size_t len);
void mt_rcluster_tick(mt_wcluster_t *c, uint64_t now_ms);
/* Prefix routing: splits a multi-key command whose keys go to different services. */
void mt_rsplit_by_route(mt_rreq_t *parent, const resp_request_t *req, uint32_t step,
                        mt_wcluster_t **targets, const uint32_t *strips);
/* A fire-and-forget copy of a command (mirroring) to a cluster-mode destination. */
void mt_rcluster_mirror(mt_wcluster_t *c, const redis_command_t *cmd, const resp_request_t *req);
void mt_rcluster_free(mt_rtopo_t *t);
/* The master serving slot, or NULL while the slot map is not known (a refresh is asked). */
mt_wendpoint_t *mt_rcluster_master_of(mt_wcluster_t *c, uint16_t slot);
void mt_rcluster_split_free(mt_worker_t *w, mt_rsplit_t *sp);

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
