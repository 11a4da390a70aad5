/*
 * reply.c - the Redis request records and the reply path: the per-worker
 * free list of records, completing a record with its reply, the session's FIFO (replies leave
 * in request order; an early reply is held by reference until its turn), replies made here,
 * replies a DELAY fault holds back, and the per-command stats (enableCommandStats).
 *
 * Ownership: a session owns its request records until they are handed to an upstream; when a
 * client goes away its in-flight records are orphaned (sess = NULL) and the upstream frees
 * them when their replies arrive.
 */

#include "runtime/proxy/redis/redis_proxy.h"

#include "runtime/core/trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- per-command stats (enableCommandStats) ---------------------------------------------------
 */

/* ---- Istio's response_code for Redis: OK, or the error's prefix ------------------------------ */

static const char *const redis_code_names[] = {
    "OK",         "ERR",     "WRONGTYPE",   "MOVED",    "ASK",       "NOAUTH",
    "WRONGPASS",  "NOPERM",  "NOSCRIPT",    "BUSY",     "LOADING",   "READONLY",
    "EXECABORT",  "OOM",     "CLUSTERDOWN", "TRYAGAIN", "CROSSSLOT", "MASTERDOWN",
    "NOREPLICAS", "MISCONF", "NOPROTO",     "OTHER",
};
const mt_istio_codes_t mt_redis_istio_codes = {"redis", redis_code_names,
                                               MT_ARRAY_LEN(redis_code_names)};
_Static_assert(MT_ARRAY_LEN(redis_code_names) < MT_ISTIO_CODE_NONE, "room for the code \"0\"");

/* Index of a reply's code: 0 unless it is an error; an unknown prefix is the last ("OTHER"). */
static uint32_t redis_reply_code(const char *p, size_t len)
{
    if (MT_LIKELY(len == 0 || p[0] != '-'))
        return 0;
    size_t n = 0;
    while (n + 1 < len && n < 16 && p[n + 1] != ' ' && p[n + 1] != '\r')
        n++;
    for (uint32_t i = 1; i + 1 < MT_ARRAY_LEN(redis_code_names); i++) {
        if (strlen(redis_code_names[i]) == n && memcmp(redis_code_names[i], p + 1, n) == 0)
            return i;
    }
    return MT_ARRAY_LEN(redis_code_names) - 1;
}

/* ---- tracing: a span per sampled command (Redis carries no context: traces start here) ---- */

static __attribute__((noinline, cold)) void rreq_trace_begin(mt_rsess_t *s, mt_rreq_t *r)
{
    mt_trace_ctx_t ctx;
    if (!mt_trace_sample_new(s->base.snap->tracing, &s->base.w->trace, &ctx))
        return;
    r->trace = malloc(sizeof(*r->trace));
    if (r->trace)
        *r->trace = ctx;
}

/* meltemi's client span of r, ended now with Istio's code (index into the Redis table). */
static void rreq_trace_end(mt_rsess_t *s, mt_rreq_t *r, uint32_t code)
{
    const mt_wendpoint_t *ep = r->ep;
    mt_trace_span_t sp = {
        .ctx = r->trace,
        .name = r->cmd ? r->cmd->name : NULL,
        .service = mt_stats_identity()->workload,
        .system = "redis",
        .db = true,
        .peer_ip = ep ? ep->address : NULL,
        .peer_port = ep ? ep->port : 0,
        .cluster = r->dest ? r->dest->name : NULL,
        .code = mt_istio_code_name(&mt_redis_istio_codes, code),
        .error = code != 0,
        .start_ns = r->start_ns,
        .end_ns = s->base.w->now_ns,
    };
    mt_trace_record(&s->base.w->trace, &sp);
    free(r->trace);
    r->trace = NULL;
}

static inline void rreq_trace_hex(const mt_rreq_t *r, char out[33])
{
    out[0] = '\0';
    if (r->trace)
        mt_trace_hex(r->trace->trace_id, 16, out);
}

/* Istio's metrics for a record's reply (every client request ends here once). */
static inline __attribute__((always_inline)) void rreq_observe(mt_rsess_t *s, mt_rreq_t *r,
                                                               const char *p, size_t len)
{
    if (r->observed)
        return;
    r->observed = true;
    uint32_t code = redis_reply_code(p, len);
    mt_istio_set_t *log = mt_session_request_done(&s->base, r->dest, NULL, code, r->rflags,
                                                  r->start_ns, r->req_bytes, (uint32_t)len);
    if (MT_UNLIKELY(log != NULL)) {
        char trace_id[33];
        rreq_trace_hex(r, trace_id);
        mt_request_end_t e = {.dest = r->dest,
                              .start_ns = r->start_ns,
                              .code = code,
                              .flags = r->rflags,
                              .req_bytes = r->req_bytes,
                              .resp_bytes = (uint32_t)len,
                              .op = r->cmd ? r->cmd->name : s->cmd_name,
                              .ep = r->ep,
                              .trace_id = trace_id[0] ? trace_id : NULL};
        mt_session_access_log(&s->base, &e, log);
    }
    if (MT_UNLIKELY(r->trace != NULL))
        rreq_trace_end(s, r, code);
}

/* ... and for a record the client left before its reply (Envoy's DC, response_code "0"):
 * counted and logged when the session closes, since no reply will reach anyone. */
void mt_rreq_observe_dc(mt_rsess_t *s, mt_rreq_t *r)
{
    if (r->observed)
        return;
    r->observed = true;
    r->rflags |= MT_RF_DC;
    mt_istio_set_t *log = mt_session_request_done(&s->base, r->dest, NULL, MT_ISTIO_CODE_NONE,
                                                  r->rflags, r->start_ns, r->req_bytes, 0);
    if (MT_UNLIKELY(log != NULL)) {
        char trace_id[33];
        rreq_trace_hex(r, trace_id);
        mt_request_end_t e = {.dest = r->dest,
                              .start_ns = r->start_ns,
                              .code = MT_ISTIO_CODE_NONE,
                              .flags = r->rflags,
                              .req_bytes = r->req_bytes,
                              .op = r->cmd ? r->cmd->name : NULL,
                              .ep = r->ep,
                              .trace_id = trace_id[0] ? trace_id : NULL};
        mt_session_access_log(&s->base, &e, log);
    }
    if (r->trace)
        rreq_trace_end(s, r, MT_ISTIO_CODE_NONE);
}

/* ... and for a reply made for the command being handled, without a record. */
static void sess_observe_local(mt_rsess_t *s, const char *p, size_t len)
{
    const mt_cluster_conf_t *dest = s->base.cluster ? s->base.cluster->conf : NULL;
    uint32_t code = redis_reply_code(p, len);
    mt_istio_set_t *log = mt_session_request_done(&s->base, dest, NULL, code, s->cmd_flags,
                                                  s->cmd_start_ns, s->cmd_bytes, (uint32_t)len);
    if (MT_UNLIKELY(log != NULL)) {
        mt_request_end_t e = {.dest = dest,
                              .start_ns = s->cmd_start_ns,
                              .code = code,
                              .flags = s->cmd_flags,
                              .req_bytes = s->cmd_bytes,
                              .resp_bytes = (uint32_t)len,
                              .op = s->cmd_name};
        mt_session_access_log(&s->base, &e, log);
    }
}

/* Envoy's redis.command.<cmd>.{total,error,latency}, named here: core only sums the blocks. */
static const mt_stats_detail_t redis_command_stats = {
    .prefix = "meltemi_redis_command",
    .label = "command",
    .help_total = "Redis commands handled, per listener and command (enableCommandStats).",
    .help_errors = "Redis commands answered with an error, per listener and command.",
    .help_duration = "Redis command duration in milliseconds, per listener and command.",
};

static void cmd_stats_record(mt_worker_t *w, const mt_listener_conf_t *lc,
                             const redis_command_t *cmd, bool error, uint64_t start_ns)
{
    mt_redis_worker_t *rw = mt_rw(w);
    cmd_stats_t *cs = rw->cmd_stats;
    while (cs && cs->listener != lc->stats)
        cs = cs->next;
    if (!cs) {
        cs = calloc(1, sizeof(*cs));
        if (!cs)
            return;
        cs->listener = lc->stats;
        cs->next = rw->cmd_stats;
        rw->cmd_stats = cs;
    }
    if (cmd->id >= REDIS_COMMAND_COUNT)
        return;
    mt_stats_block_t *b = cs->blocks[cmd->id];
    if (!b)
        b = cs->blocks[cmd->id] = mt_stats_detail_block(&redis_command_stats, lc->name, cmd->name);
    mt_stat_add(b, w->id, MT_ST_REQUESTS_TOTAL, 1);
    if (error)
        mt_stat_add(b, w->id, MT_ST_REQUEST_ERRORS, 1);
    if (start_ns)
        mt_stat_observe_ms(b, w->id,
                           w->now_ns > start_ns ? (double)(w->now_ns - start_ns) / 1e6 : 0);
}

/* ---- request records ------------------------------------------------------------------------ */

mt_rreq_t *mt_rreq_new(mt_worker_t *w)
{
    mt_rreq_t *r = mt_rw(w)->req_free;
    if (r) {
        mt_rw(w)->req_free = r->next;
        mt_rw(w)->n_req_free--;
    } else {
        r = malloc(sizeof(*r));
        if (!r)
            return NULL;
    }
    memset(r, 0, sizeof(*r));
    return r;
}

void mt_rreq_free(mt_worker_t *w, mt_rreq_t *r)
{
    if (MT_UNLIKELY(r->trace != NULL)) /* a traced record that never got to its end */
        free(r->trace);
    if (r->reply.buf)
        mt_buf_unref(&w->pool, r->reply.buf);
    if (r->frame.buf)
        mt_buf_unref(&w->pool, r->frame.buf);
    if (r->split)
        mt_rcluster_split_free(w, r->split);
    if (mt_rw(w)->n_req_free >= 4096) {
        free(r);
        return;
    }
    r->next = mt_rw(w)->req_free;
    mt_rw(w)->req_free = r;
    mt_rw(w)->n_req_free++;
}

/* ---- sessions: replies in order ----------------------------------------------------------------
 */

/* Pops every completed request at the head of the session's FIFO into its output queue. */
static void sess_drain_done(mt_rsess_t *s)
{
    mt_worker_t *w = s->base.w;
    while (s->head && s->head->done) {
        mt_rreq_t *r = s->head;
        s->head = r->next;
        if (!s->head)
            s->tail = NULL;
        s->base.pending--;
        if (r->reply.buf) {
            mt_outq_add_slice(&s->base.out, r->reply);
            r->reply.buf = NULL;
        }
        mt_rreq_free(w, r);
        if (MT_UNLIKELY(s->tx.gate_ahead))
            mt_rtx_popped(s);
    }
    mt_worker_schedule_flush(w, &s->base.out);
    mt_session_resume(&s->base);
}

/* Completes r with reply bytes living in chunk b (a reference is taken when kept). */
void mt_rreq_complete(mt_worker_t *w, mt_rreq_t *r, mt_buf_t *b, const char *p, size_t len)
{
    if (r->parent) {
        mt_rcluster_part_done(w, r, b, p, len);
        return;
    }
    mt_rsess_t *s = r->sess;
    if (!s) {
        mt_rreq_free(w, r);
        return;
    }
    if (MT_UNLIKELY(s->rconf->enable_command_stats) && r->cmd && !r->stats_done) {
        r->stats_done = true;
        cmd_stats_record(w, s->base.conf, r->cmd, len && p[0] == '-', r->start_ns);
    }
    if (MT_UNLIKELY(r->resp_chain)) {
        /* on_response filters may replace the reply (and hold it, with ctx:delay). */
        r->resp_chain = false;
        mt_bridge_response(&mt_rw(w)->bridge, s->base.li, r->cmd, p, len, s->base.id);
        mt_verdict_t *v = &mt_rw(w)->bridge.verdict;
        if (v->delay_ms) {
            uv_update_time(&w->loop);
            r->hold_until_ms = mt_worker_now_ms(w) + v->delay_ms + 1;
        }
        if (v->has_reply || v->has_error) {
            mt_rreq_complete_copy(w, r, v->reply.data, v->reply.len);
            return;
        }
    }
    if (MT_UNLIKELY(r->hold_until_ms != 0) && r->hold_until_ms > mt_worker_now_ms(w)) {
        mt_buf_ref(b);
        r->reply = (mt_slice_t){b, p, (uint32_t)len};
        r->held = true;
        r->rflags |= MT_RF_DI; /* observed when released (sess_hold_fire) */
        mt_rsess_hold_arm(s, r->hold_until_ms);
        return;
    }
    mt_listener_conf_t *lc = s->base.conf;
    if (len && p[0] == '-')
        mt_stat_add(lc->stats, w->id, MT_ST_REQUEST_ERRORS, 1);
    rreq_observe(s, r, p, len);
    if (s->head == r) {
        s->head = r->next;
        if (!s->head)
            s->tail = NULL;
        s->base.pending--;
        mt_outq_add_ref(&s->base.out, b, p, len);
        mt_rreq_free(w, r);
        if (MT_UNLIKELY(s->tx.gate_ahead))
            mt_rtx_popped(s);
        if (s->head && s->head->done)
            sess_drain_done(s);
        else {
            mt_worker_schedule_flush(w, &s->base.out);
            mt_session_resume(&s->base);
        }
        return;
    }
    mt_buf_ref(b);
    r->reply.buf = b;
    r->reply.p = p;
    r->reply.len = (uint32_t)len;
    r->done = true;
}

/* Completes r with bytes made here (an error text or a local reply). */
void mt_rreq_complete_copy(mt_worker_t *w, mt_rreq_t *r, const char *p, size_t len)
{
    if (!r->sess && !r->parent) {
        mt_rreq_free(w, r);
        return;
    }
    mt_slice_t sl;
    if (mt_slice_copy(&w->pool, &w->own, p, len, &sl) != 0) {
        if (r->sess)
            mt_session_close(&r->sess->base);
        return;
    }
    mt_rreq_complete(w, r, sl.buf, sl.p, sl.len);
    mt_buf_unref(&w->pool, sl.buf);
}

void mt_rreq_complete_error(mt_worker_t *w, mt_rreq_t *r, const char *text)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "-%s\r\n", text);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = (int)sizeof(line) - 1, line[n - 2] = '\r', line[n - 1] = '\n';
    mt_rreq_complete_copy(w, r, line, (size_t)n);
}

/* Queues a locally made reply behind whatever the client is still waiting for. */
void mt_rsess_reply(mt_rsess_t *s, const char *p, size_t len)
{
    mt_worker_t *w = s->base.w;
    if (len && p[0] == '-')
        mt_stat_add(s->base.conf->stats, w->id, MT_ST_REQUEST_ERRORS, 1);
    sess_observe_local(s, p, len);
    if (!s->head) {
        mt_outq_add_copy(&s->base.out, p, len);
        mt_worker_schedule_flush(w, &s->base.out);
        return;
    }
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r) {
        mt_session_close(&s->base);
        return;
    }
    if (mt_slice_copy(&w->pool, &s->base.out.own, p, len, &r->reply) != 0) {
        mt_rreq_free(w, r);
        mt_session_close(&s->base);
        return;
    }
    r->done = true;
    r->sess = s;
    s->tail->next = r;
    s->tail = r;
    s->base.pending++;
}

void mt_rsess_reply_error(mt_rsess_t *s, const char *text)
{
    resp_out_t *o = &mt_rw(s->base.w)->scratch;
    o->len = 0;
    resp_out_error(o, text);
    mt_rsess_reply(s, o->data, o->len);
}

/* ---- held replies (DELAY faults) ------------------------------------------------------------- */

static void sess_hold_fire(mt_timer_t *t)
{
    mt_rsess_t *s = MT_CONTAINER_OF(t, mt_rsess_timers_t, hold_timer)->sess;
    mt_worker_t *w = s->base.w;
    uint64_t now = mt_worker_now_ms(w), next = 0;
    for (mt_rreq_t *r = s->head; r; r = r->next) {
        if (!r->held)
            continue;
        if (r->hold_until_ms <= now) {
            r->held = false;
            r->done = true;
            rreq_observe(s, r, r->reply.p, r->reply.len);
        } else if (!next || r->hold_until_ms < next) {
            next = r->hold_until_ms;
        }
    }
    if (next)
        mt_rsess_hold_arm(s, next);
    if (s->head && s->head->done)
        sess_drain_done(s);
}

/* The wheel fires at the first loop millisecond >= at_ms: a held reply never leaves early. */
void mt_rsess_hold_arm(mt_rsess_t *s, uint64_t at_ms)
{
    mt_rsess_timers_t *t = mt_rsess_timers(s);
    if (MT_UNLIKELY(!t)) {
        mt_session_close(&s->base); /* out of memory: the held replies could never leave */
        return;
    }
    if (mt_timer_pending(&t->hold_timer) && t->hold_timer.due_ms <= at_ms)
        return; /* an earlier release re-arms for the rest */
    mt_timer_start_at(&s->base.w->timers, &t->hold_timer, at_ms, sess_hold_fire);
}

/* A local reply that a DELAY fault holds back until hold_until_ms. */
void mt_rsess_reply_held(mt_rsess_t *s, const char *p, size_t len, uint64_t hold_until_ms)
{
    mt_worker_t *w = s->base.w;
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r || mt_slice_copy(&w->pool, &w->own, p, len, &r->reply) != 0) {
        if (r)
            mt_rreq_free(w, r);
        mt_session_close(&s->base);
        return;
    }
    if (len && p[0] == '-')
        mt_stat_add(s->base.conf->stats, w->id, MT_ST_REQUEST_ERRORS, 1);
    r->held = true;
    r->hold_until_ms = hold_until_ms;
    mt_rsess_push(s, r);
    r->rflags |= MT_RF_DI;
    mt_rsess_hold_arm(s, hold_until_ms);
}

/* An error for the command being handled: now, or held until hold_until_ms (a DELAY fault
 * delays errors too: the client never learns of the failure early). */
void mt_rsess_reply_error_at(mt_rsess_t *s, const char *text, uint64_t hold_until_ms)
{
    if (!hold_until_ms) {
        mt_rsess_reply_error(s, text);
        return;
    }
    resp_out_t *o = &mt_rw(s->base.w)->scratch;
    o->len = 0;
    resp_out_error(o, text);
    mt_rsess_reply_held(s, o->data, o->len, hold_until_ms);
}

void mt_rsess_push(mt_rsess_t *s, mt_rreq_t *r)
{
    r->sess = s;
    r->start_ns = s->cmd_start_ns;
    r->req_bytes = s->cmd_bytes;
    r->rflags |= s->cmd_flags;
    if (!r->dest && s->base.cluster)
        r->dest = s->base.cluster->conf;
    if (MT_UNLIKELY(s->base.snap->tracing != NULL))
        rreq_trace_begin(s, r);
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    s->base.pending++;
}
