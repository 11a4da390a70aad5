/*
 * session.c - the Redis client session on the session shell: accept,
 * the shell hooks, parsing commands in place in the read chunk and dispatching them (local
 * commands, AUTH and HELLO, refused transactions, cross-protocol attacks, the policy chain or
 * forwarding).
 */

#include "runtime/proxy/redis/redis_proxy.h"

#include "runtime/core/log.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

/* Before AUTH (where the listener requires it) a client gets only error replies; it may make
 * us queue this much of them before we stop reading it, so an unauthenticated connection
 * costs at most its read chunk (frames are capped by resp.h's RESP_UNAUTH_*) plus this. */
#define SESSION_UNAUTH_MAX_OUTPUT (64u << 10)

static void sess_on_data(mt_session_t *base);
static void sess_on_close(mt_session_t *base);
static void sess_on_closed(mt_session_t *base);
static bool sess_on_eof(mt_session_t *base);
static const mt_session_ops_t redis_sess_ops = {
    .on_data = sess_on_data,
    .on_close = sess_on_close,
    .on_closed = sess_on_closed,
    .on_eof = sess_on_eof,
};

/* ---- local commands -----------------------------------------------------------------------------
 */

/* Constant-time: compares digests, so neither content nor length leaks through timing. Byte
 * strings with lengths: a password may contain NUL. */
static bool secret_equal(const char *want, size_t want_len, const char *got, size_t got_len)
{
    unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
    unsigned int alen = 0, blen = 0;
    if (!EVP_Digest(want, want_len, a, &alen, EVP_sha256(), NULL) ||
        !EVP_Digest(got, got_len, b, &blen, EVP_sha256(), NULL) || alen != blen)
        return false;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

/* Lifts the pre-auth parser limits (resp.h: RESP_UNAUTH_*) once the client has proved who it is. */
/* Before AUTH the parser keeps Redis's pre-auth frame limits and the client may have only a
 * little output queued (NOAUTH replies it does not read). */
static void sess_set_unauthenticated(mt_rsess_t *s, bool unauthenticated)
{
    s->parser.unauthenticated = unauthenticated;
    s->base.max_output = unauthenticated ? SESSION_UNAUTH_MAX_OUTPUT : MT_SESSION_MAX_OUTPUT;
}

static void sess_authenticated(mt_rsess_t *s)
{
    s->authenticated = true;
    sess_set_unauthenticated(s, false);
    mt_session_authenticated(&s->base);
}

/* RedisService authTimeout (only while a password is required and not given) and
 * idleTimeout, run by the session shell; again after a reload rebinds the session. */
static void sess_apply_timeouts(mt_rsess_t *s)
{
    const mt_redis_listener_conf_t *rc = s->rconf;
    bool auth_pending = rc->auth.password && !s->authenticated;
    mt_session_set_timeouts(&s->base, auth_pending ? rc->auth_timeout_ms : 0, rc->idle_timeout_ms);
}

static bool sess_check_credentials(mt_rsess_t *s, const resp_arg_t *user, const resp_arg_t *pass)
{
    const mt_auth_t *a = &s->rconf->auth;
    const char *want_user = a->username ? a->username : "default";
    size_t want_user_len = a->username ? a->username_len : strlen("default");
    bool user_ok =
        user ? secret_equal(want_user, want_user_len, user->ptr, user->len) : a->username == NULL;
    bool pass_ok = secret_equal(a->password, a->password_len, pass->ptr, pass->len);
    return user_ok && pass_ok;
}

/* A client failed to authenticate: counted, and said at info with its address, at most 5
 * lines a second per worker (a flood of wrong passwords must not fill the disk). */
#define AUTH_LOG_PER_SEC 5
static void sess_auth_failed(mt_rsess_t *s, const char *how)
{
    mt_worker_t *w = s->base.w;
    mt_stat_add(s->base.conf->stats, w->id, MT_ST_AUTH_FAILURES, 1);
    s->cmd_flags |= MT_RF_RBAC;
    uint32_t held = 0;
    if (mt_log_threshold > MT_LOG_INFO ||
        !mt_log_allow(&mt_rw(w)->auth_log, mt_worker_now_ms(w), AUTH_LOG_PER_SEC, &held))
        return;
    char peer[INET6_ADDRSTRLEN + 8];
    if (held)
        mt_info("listener %s: client %s failed to authenticate (%s); %u more failures not logged",
                s->base.conf->name, mt_session_peer(&s->base, peer, sizeof(peer)), how, held);
    else
        mt_info("listener %s: client %s failed to authenticate (%s)", s->base.conf->name,
                mt_session_peer(&s->base, peer, sizeof(peer)), how);
}

static void sess_auth(mt_rsess_t *s, const resp_request_t *req)
{
    const mt_auth_t *a = &s->rconf->auth;
    if (req->argc > 3) {
        mt_rsess_reply_error(s, "ERR syntax error");
        return;
    }
    if (!a->password) {
        mt_rsess_reply_error(s,
                             "ERR AUTH <password> called without any password configured for the "
                             "default user. Are you sure your configuration is correct?");
        return;
    }
    const resp_arg_t *user = req->argc == 3 ? &req->argv[1] : NULL;
    const resp_arg_t *pass = &req->argv[req->argc - 1];
    if (sess_check_credentials(s, user, pass)) {
        sess_authenticated(s);
        mt_rsess_reply(s, "+OK\r\n", 5);
        return;
    }
    sess_auth_failed(s, user ? "AUTH with a username" : "AUTH");
    if (user)
        mt_rsess_reply_error(s, "WRONGPASS invalid username-password pair or user is disabled.");
    else
        mt_rsess_reply_error(s, "ERR invalid password");
}

/* HELLO [protover [AUTH user pass] [SETNAME name]]: authenticates here, then answers locally. */
static void sess_hello(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req)
{
    bool needs_auth = s->rconf->auth.password && !s->authenticated;
    for (uint32_t i = 2; i < req->argc; i++) {
        const resp_arg_t *a = &req->argv[i];
        if (a->len == 4 && strncasecmp(a->ptr, "auth", 4) == 0 && i + 2 < req->argc) {
            if (!s->rconf->auth.password) {
                mt_rsess_reply_error(s,
                                     "ERR AUTH <password> called without any password configured "
                                     "for the default user. Are you sure your configuration is "
                                     "correct?");
                return;
            }
            if (!sess_check_credentials(s, &req->argv[i + 1], &req->argv[i + 2])) {
                sess_auth_failed(s, "HELLO ... AUTH");
                mt_rsess_reply_error(s, "WRONGPASS invalid username-password pair or user is "
                                        "disabled.");
                return;
            }
            sess_authenticated(s);
            needs_auth = false;
            i += 2;
        }
    }
    if (needs_auth) {
        mt_rsess_reply_error(s,
                             "NOAUTH HELLO must be called with the client already authenticated, "
                             "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                             "authenticate the client and select the RESP protocol version at the "
                             "same time");
        return;
    }
    resp_out_t *o = &mt_rw(s->base.w)->scratch;
    o->len = 0;
    redis_local_reply(&s->lctx, cmd, req->argc, req->argv, o);
    mt_rsess_reply(s, o->data, o->len);
    s->resp3 = s->lctx.resp == 3; /* only a valid HELLO changes it */
}

/*
 * An HTTP request sent to a Redis port (a browser form, an SSRF) arrives as inline commands:
 * "POST / HTTP/1.1", "Host: ...", headers, then a body that would run with the credentials
 * meltemi holds for the upstream. Like redis-server (securityWarningCommand) the connection
 * is closed at the first POST or Host: command, before anything after it is read. Only
 * unknown commands get here, so known commands pay nothing for the check.
 */
static bool sess_cross_protocol(mt_rsess_t *s, const resp_request_t *req)
{
    const resp_arg_t *a = &req->argv[0];
    if (!((a->len == 4 && strncasecmp(a->ptr, "post", 4) == 0) ||
          (a->len == 5 && strncasecmp(a->ptr, "host:", 5) == 0)))
        return false;
    char peer[INET6_ADDRSTRLEN + 8];
    mt_warn("listener %s: possible security attack from %s: an HTTP request ('%.*s') was sent "
            "to a Redis port (cross-protocol scripting); connection closed",
            s->base.conf->name, mt_session_peer(&s->base, peer, sizeof(peer)), (int)a->len, a->ptr);
    mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_CROSS_PROTOCOL, 1);
    mt_session_close(&s->base);
    return true;
}

/*
 * After a refused transaction (tx.c could not lease its upstream connection: MULTI itself,
 * or its first queued command, got the refusal) the client may believe it is queueing a
 * transaction: until its EXEC or DISCARD nothing is applied. Commands are answered an error saying
 * so (Redis would have queued them), EXEC gets Redis's answer for a transaction with errors,
 * DISCARD +OK (what Redis answers to a DISCARD after MULTI, and what clients check for), a nested
 * MULTI Redis's text. QUIT still closes. Answers and returns true unless the command is QUIT.
 */
static bool sess_in_refused_tx(mt_rsess_t *s, const redis_command_t *cmd)
{
    if (mt_rcmd_is(cmd, "exec")) {
        s->tx_refused = false;
        mt_rsess_reply_error(s, "EXECABORT Transaction discarded because of previous errors.");
    } else if (mt_rcmd_is(cmd, "discard")) {
        s->tx_refused = false;
        mt_rsess_reply(s, "+OK\r\n", 5);
    } else if (mt_rcmd_is(cmd, "multi")) {
        mt_rsess_reply_error(s, "ERR MULTI calls can not be nested");
    } else if (mt_rcmd_is(cmd, "quit")) {
        return false;
    } else {
        char text[256];
        snprintf(
            text, sizeof(text),
            "ERR meltemi: '%s' not applied: the transaction was refused on this connection, so "
            "nothing is sent to Redis until EXEC or DISCARD",
            cmd->name);
        mt_rsess_reply_error(s, text);
    }
    return true;
}

/* The address the client connected to (ip of at least INET6_ADDRSTRLEN bytes). */
static uint16_t sess_local_addr(mt_rsess_t *s, char *ip, size_t cap)
{
    struct sockaddr_storage sa;
    int len = sizeof(sa);
    snprintf(ip, cap, "127.0.0.1");
    if (uv_tcp_getsockname(&s->base.tcp, (struct sockaddr *)&sa, &len) != 0)
        return 0;
    if (sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&sa;
        uv_ip6_name(a6, ip, cap);
        return ntohs(a6->sin6_port);
    }
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)&sa;
    uv_ip4_name(a4, ip, cap);
    return ntohs(a4->sin_port);
}

/*
 * CLUSTER SLOTS / SHARDS / NODES / INFO / MYID / KEYSLOT, in every mode: meltemi presents itself
 * as a one-node cluster at the address the client connected to, owning every slot, so that a
 * cluster-aware client (redis-py RedisCluster, ioredis Cluster) keeps all its connections on
 * the proxy, which routes by slot itself (docs/redis-cluster.md). True when answered.
 */
static bool sess_cluster_view(mt_rsess_t *s, const resp_request_t *req)
{
    char ip[INET6_ADDRSTRLEN];
    uint16_t port = sess_local_addr(s, ip, sizeof(ip));
    resp_out_t *o = &mt_rw(s->base.w)->scratch;
    o->len = 0;
    if (!redis_local_cluster_view(ip, port, req->argc, req->argv, o))
        return false;
    mt_rsess_reply(s, o->data, o->len);
    return true;
}

/*
 * INFO's figures, the proxy's own: its process (uptime, pid, RSS, CPU), this listener's
 * clients and commands summed over the workers (read from their counters, as the admin's
 * scrape does), and instantaneous_ops_per_sec as the listener's commands per second since
 * this connection's previous INFO (what redis-cli --stat polls each second), or over the
 * uptime at a first INFO or after 10 s.
 */
static void sess_info(mt_rsess_t *s, redis_local_info_t *in)
{
    const mt_stats_block_t *st = s->base.conf->stats;
    char ip[INET6_ADDRSTRLEN];
    memset(in, 0, sizeof(*in));
    double up = mt_stats_uptime();
    in->uptime_s = (uint64_t)up;
    in->process_id = (uint64_t)getpid();
    in->tcp_port = sess_local_addr(s, ip, sizeof(ip));
    in->io_threads = mt_stats_nworkers;
    in->connected_clients = (uint64_t)mt_stats_sum(st, MT_ST_DOWNSTREAM_CX_ACTIVE);
    in->total_connections_received = (uint64_t)mt_stats_sum(st, MT_ST_DOWNSTREAM_CX_TOTAL);
    in->total_commands_processed = (uint64_t)mt_stats_sum(st, MT_ST_REQUESTS_TOTAL);
    uint64_t now_ns = uv_hrtime();
    if (s->info_ns && now_ns - s->info_ns <= 10000000000ull && now_ns > s->info_ns)
        in->instantaneous_ops_per_sec = (double)(in->total_commands_processed - s->info_total) /
                                        ((double)(now_ns - s->info_ns) / 1e9);
    else if (up > 0)
        in->instantaneous_ops_per_sec = (double)in->total_commands_processed / up;
    s->info_ns = now_ns;
    s->info_total = in->total_commands_processed;
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    in->used_memory = (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        in->used_cpu_sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        in->used_cpu_user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    in->server_time_usec = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

/* RedisService localRateLimit: false after answering `-ERR rate limited` when the command's
 * bucket (its condition's, else the default one) has no token left. */
static bool sess_rate_allows(mt_rsess_t *s, const redis_command_t *cmd)
{
    const mt_redis_listener_conf_t *rc = s->rconf;
    if (MT_LIKELY(!rc->rate_bucket && rc->n_rate_conds == 0))
        return true;
    mt_token_bucket_t *b = rc->rate_bucket;
    for (uint32_t i = 0; i < rc->n_rate_conds; i++) {
        const mt_redis_rate_cond_t *c = &rc->rate_conds[i];
        if ((cmd->flags & c->flags) || (c->ids[cmd->id / 64] >> (cmd->id % 64) & 1u)) {
            b = (mt_token_bucket_t *)&c->bucket; /* shared state: atomics, see ratelimit.h */
            break;
        }
    }
    if (!b || mt_token_bucket_take(b, mt_worker_now_ms(s->base.w)))
        return true;
    mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_RATE_LIMITED, 1);
    mt_rsess_reply_error(s, "ERR rate limited");
    return false;
}

static void sess_on_data(mt_session_t *base);

static void sess_map_retry(mt_timer_t *t)
{
    mt_rsess_t *s = MT_CONTAINER_OF(t, mt_rsess_timers_t, map_timer)->sess;
    sess_on_data(&s->base);
}

mt_rsess_timers_t *mt_rsess_timers(mt_rsess_t *s)
{
    if (MT_LIKELY(s->timers != NULL))
        return s->timers;
    s->timers = calloc(1, sizeof(*s->timers));
    if (s->timers)
        s->timers->sess = s;
    return s->timers;
}

static void sess_timers_stop(mt_rsess_t *s)
{
    if (s->timers) {
        mt_timer_stop(&s->base.w->timers, &s->timers->map_timer);
        mt_timer_stop(&s->base.w->timers, &s->timers->hold_timer);
    }
}

/* AuthorizationPolicy: methods are command names, keys the command's keys. */
static bool sess_authorized(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req)
{
    uint32_t idx_small[64];
    const char *keys_small[64];
    size_t lens_small[64];
    uint32_t *idx = idx_small;
    const char **keys = keys_small;
    size_t *lens = lens_small;
    uint32_t cap = MT_ARRAY_LEN(idx_small);
    if (req->argc > cap) { /* as many keys as arguments at most */
        cap = req->argc;
        idx = malloc(cap * sizeof(*idx));
        keys = malloc(cap * sizeof(*keys));
        lens = malloc(cap * sizeof(*lens));
    }
    bool ok = false;
    if (idx && keys && lens) {
        uint32_t n = MT_MIN(redis_command_keys(cmd, req->argc, req->argv, idx, cap), cap);
        for (uint32_t i = 0; i < n; i++) {
            keys[i] = req->argv[idx[i]].ptr;
            lens[i] = req->argv[idx[i]].len;
        }
        mt_authz_request_t r = {.method = req->argv[0].ptr,
                                .method_len = req->argv[0].len,
                                .method_nocase = true,
                                .keys = keys,
                                .key_lens = lens,
                                .n_keys = n};
        ok = mt_session_authorize(&s->base, &r);
    }
    if (idx != idx_small) {
        free(idx);
        free(keys);
        free(lens);
    }
    return ok;
}

/* Returns false when the command must wait (unread) for the cluster's first slot map. */
static bool sess_command(mt_rsess_t *s, const resp_request_t *req, const char *frame)
{
    mt_worker_t *w = s->base.w;
    /* A reload is picked up at the next command; commands in flight keep the route they
     * were sent on. */
    if (MT_UNLIKELY(s->base.snap != w->snap)) {
        mt_session_rebind(&s->base);
        s->rconf = mt_redis_listener(s->base.conf);
        sess_set_unauthenticated(s, !s->authenticated && s->rconf->auth.password);
        sess_apply_timeouts(s);
    }
    if (!s->map_wait_since_ms) /* counted once, not again when retried after a wait */
        mt_stat_add(s->base.conf->stats, w->id, MT_ST_REQUESTS_TOTAL, 1);
    s->cmd_start_ns = w->now_ns;
    s->cmd_bytes = req->frame_len;
    s->cmd_flags = 0;
    const redis_command_t *cmd =
        redis_command_lookup_cached(&s->last_cmd, req->argv[0].ptr, req->argv[0].len);
    s->cmd_name = cmd ? cmd->name : "(unknown)";
    resp_out_t *o = &mt_rw(s->base.w)->scratch;
    if (!cmd) {
        if (sess_cross_protocol(s, req))
            return true;
        o->len = 0;
        redis_reply_unknown_command(o, req->argc, req->argv);
        mt_rsess_reply(s, o->data, o->len);
        mt_rtx_answered_locally(s, true); /* a queueing error: EXEC aborts, as in Redis */
        return true;
    }
    if (!redis_command_arity_ok(cmd, req->argc)) {
        o->len = 0;
        redis_reply_wrong_arity(o, cmd->name);
        mt_rsess_reply(s, o->data, o->len);
        mt_rtx_answered_locally(s, true);
        return true;
    }
    bool local = cmd->proxy == REDIS_PROXY_LOCAL;
    if (!s->authenticated && s->rconf->auth.password &&
        !(local &&
          (mt_rcmd_is(cmd, "auth") || mt_rcmd_is(cmd, "hello") || mt_rcmd_is(cmd, "quit")))) {
        s->cmd_flags |= MT_RF_RBAC;
        mt_rsess_reply_error(s, "NOAUTH Authentication required.");
        return true;
    }
    if (MT_UNLIKELY(s->base.conf->authz != NULL) && !sess_authorized(s, cmd, req)) {
        s->cmd_flags |= MT_RF_RBAC; /* Istio's response flag of a denied request */
        mt_rsess_reply_error(s, "NOPERM RBAC: access denied");
        mt_rtx_answered_locally(s, true); /* a queued command refused: EXEC aborts */
        return true;
    }
    if (MT_UNLIKELY(s->rconf->n_denied) && mt_radmin_denied(s, cmd, req)) {
        mt_rtx_answered_locally(s, true);
        return true;
    }
    /* Before anything can act on the command: local answers, Lua (a filter could mirror
     * it), splitting, cluster routing. */
    if (MT_UNLIKELY(s->tx_refused) && sess_in_refused_tx(s, cmd))
        return true;
    if (MT_UNLIKELY(s->tx.state != RTX_NONE || cmd->proxy == REDIS_PROXY_TRANSACTION ||
                    cmd->proxy == REDIS_PROXY_BLOCKING || (cmd->flags & REDIS_CMD_BLOCKING)) &&
        mt_rtx_wait_for_map(s, cmd, req)) {
        mt_rsess_timers_t *t = mt_rsess_timers(s);
        if (MT_UNLIKELY(!t)) {
            mt_session_close(&s->base); /* out of memory: nothing could retry the command */
            return false;
        }
        mt_timer_start_at(&w->timers, &t->map_timer, mt_worker_now_ms(w) + 5, sess_map_retry);
        return false;
    }
    s->map_wait_since_ms = 0;
    /* MULTI is queueing: everything goes to the transaction's connection (tx.c), within the
     * rate limit like any command (a limited one fails the transaction: EXECABORT) */
    if (MT_UNLIKELY(s->tx.state == RTX_QUEUED) && cmd->proxy != REDIS_PROXY_TRANSACTION) {
        if (cmd->proxy != REDIS_PROXY_LOCAL && !sess_rate_allows(s, cmd)) {
            mt_rtx_answered_locally(s, true);
            return true;
        }
        if (mt_rtx_queued(s, cmd, req, frame))
            return true;
    }
    /* (P|S)SUBSCRIBE and friends, and every command while subscribed (pubsub.c) */
    if (MT_UNLIKELY((cmd->flags & REDIS_CMD_PUBSUB) || s->ps) && mt_rpubsub_command(s, cmd, req))
        return true;
    switch (cmd->proxy) {
    case REDIS_PROXY_LOCAL:
        if (mt_rcmd_is(cmd, "auth")) {
            sess_auth(s, req);
        } else if (mt_rcmd_is(cmd, "select")) {
            mt_rtx_select(s, cmd, req, frame);
        } else if (mt_rcmd_is(cmd, "hello")) {
            sess_hello(s, cmd, req);
        } else if (mt_rcmd_is(cmd, "client") && mt_rtx_client_flag(s, cmd, req, frame)) {
            /* NO-EVICT / NO-TOUCH: on the client's own lease (tx.c) */
        } else if (mt_rcmd_is(cmd, "command") && req->argc >= 2 && req->argv[1].len == 4 &&
                   strncasecmp(req->argv[1].ptr, "docs", 4) == 0 &&
                   mt_radmin_command_docs(s, cmd, req)) {
            /* Redis's docs, kept to what COMMAND lists (admin.c) */
        } else {
            redis_local_info_t info;
            if (mt_rcmd_is(cmd, "info")) {
                sess_info(s, &info);
                s->lctx.info = &info;
            }
            o->len = 0;
            redis_local_reply(&s->lctx, cmd, req->argc, req->argv, o);
            s->lctx.info = NULL;
            mt_rsess_reply(s, o->data, o->len);
            if (s->lctx.quit)
                s->base.finishing = true;
        }
        return true;
    case REDIS_PROXY_PUBSUB:
        return true; /* answered by mt_rpubsub_command above */
    case REDIS_PROXY_UNSUPPORTED: {
        if (mt_rcmd_is(cmd, "cluster") && sess_cluster_view(s, req))
            return true;
        if (mt_rcmd_is(cmd, "cluster") && s->base.cluster &&
            mt_redis_cluster(s->base.cluster->conf)->mode == MT_REDIS_CLUSTER) {
            mt_rsess_forward(s, cmd, req, frame);
            return true;
        }
        mt_radmin_refuse(s, cmd, req);
        return true;
    }
    case REDIS_PROXY_TRANSACTION:
        mt_rtx_command(s, cmd, req, frame);
        return true;
    case REDIS_PROXY_BLOCKING: /* on a lease of its own (tx.c), through the policy chain */
        if (!sess_rate_allows(s, cmd))
            return true;
        mt_rsess_dispatch(s, cmd, req, frame);
        return true;
    default:
        if (!sess_rate_allows(s, cmd))
            return true;
        if (MT_UNLIKELY(cmd->proxy == REDIS_PROXY_BROADCAST) && mt_radmin_refuse(s, cmd, req))
            return true;
        mt_rsess_dispatch(s, cmd, req, frame);
        return true;
    }
    return true;
}

/* ---- session I/O --------------------------------------------------------------------------------
 */

/* ---- session shell hooks */

/* Orphan what upstreams still owe us; free what is already answered. A record whose reply
 * was not counted yet (in flight, or held by a delay) ends here as DC. */
static void sess_on_close(mt_session_t *base)
{
    mt_rsess_t *s = (mt_rsess_t *)base;
    mt_worker_t *w = base->w;
    mt_rpubsub_session_closed(s);
    mt_rreq_t *next;
    for (mt_rreq_t *r = s->head; r; r = next) {
        next = r->next;
        mt_rreq_observe_dc(s, r); /* nothing when its reply was counted already */
        if (r->done)
            mt_rreq_free(w, r);
        else
            r->sess = NULL;
    }
    s->head = s->tail = NULL;
    sess_timers_stop(s);
    mt_rtx_session_closed(s); /* after the orphaning: the lease's requests are nobody's now */
    if (s->ran_chain)
        mt_bridge_conn_closed(&mt_rw(w)->bridge, base->id);
}

/* A client gone while blocked (BLPOP 0) or inside MULTI closes now: Redis would forget it. */
static bool sess_on_eof(mt_session_t *base)
{
    return mt_rtx_close_on_eof((mt_rsess_t *)base);
}

static void sess_on_closed(mt_session_t *base)
{
    mt_rsess_t *s = (mt_rsess_t *)base;
    resp_req_parser_free(&s->parser);
    free(s->lctx.client_name);
    sess_timers_stop(s); /* in case something armed one after on_close */
    free(s->timers);
}

static void sess_on_data(mt_session_t *base)
{
    mt_rsess_t *s = (mt_rsess_t *)base;
    mt_buf_t *b = base->rbuf;
    resp_req_arrays_t *spare = &mt_rw(base->w)->spare_args;
    resp_req_parser_borrow(&s->parser, spare);
    while (b && b->pos < b->last && !base->finishing && !base->closing) {
        resp_request_t req;
        const char *err = NULL;
        mt_status_t rc = resp_parse_request(&s->parser, b->pos, mt_buf_unread(b), &req, &err);
        if (rc == MT_AGAIN)
            break;
        if (rc == MT_ERROR) {
            char text[300];
            snprintf(text, sizeof(text), "ERR %s", err ? err : "Protocol error");
            s->cmd_start_ns = base->w->now_ns;
            s->cmd_bytes = (uint32_t)mt_buf_unread(b);
            s->cmd_flags = 0;
            s->cmd_name = "(protocol error)";
            mt_stat_add(base->conf->stats, base->w->id, MT_ST_PROTOCOL_ERRORS, 1);
            mt_rsess_reply_error(s, text);
            base->finishing = true;
            mt_session_pause(base);
            break;
        }
        const char *frame = b->pos;
        if (req.argc > 0)
            if (!sess_command(s, &req, frame))
                break; /* left unread: retried once the slot map is in */
        b->pos += req.frame_len;
    }
    /* Between frames the parser's arrays go back to the worker (a command left unread for
     * the slot map is parsed again from its first byte); mid-frame they stay. */
    resp_req_parser_release(&s->parser, spare);
}

void mt_rsess_accept(mt_wlistener_t *l, uv_stream_t *server)
{
    mt_rsess_t *s = calloc(1, sizeof(*s));
    if (!s || mt_session_accept(&s->base, l, server, &redis_sess_ops) != 0)
        return;
    s->rconf = mt_redis_listener(s->base.conf);
    s->lctx.client_id = s->base.id;
    s->lctx.mode = "standalone";
    s->tx.slot = -1;
    resp_req_parser_init(&s->parser, &resp_default_limits);
    sess_set_unauthenticated(s, s->rconf->auth.password != NULL);
    sess_apply_timeouts(s);
    mt_session_resume(&s->base);
}
