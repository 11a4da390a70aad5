/*
 * trace.h - tracing: W3C trace context (traceparent/tracestate) and B3 headers read from and
 * written into RPC metadata (Dubbo attachments, THeader headers), one client span per request
 * meltemi forwards, and the spans' export as Zipkin v2 JSON to a collector over HTTP.
 *
 * Workers never block on the collector: each worker appends finished spans to its own buffer
 * and hands full buffers (or every 200 ms) to one exporter thread through a bounded queue;
 * the exporter POSTs them, one batch per request, with bounded timeouts. When the queue is
 * full spans are dropped and counted (meltemi_trace_spans_dropped_total).
 */
#ifndef MELTEMI_CORE_TRACE_H
#define MELTEMI_CORE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The snapshot's tracing table, parsed (snapshot.c; NULL: tracing off). */
typedef struct mt_trace_conf {
    char *host; /* the collector: http://HOST:PORT/PATH */
    uint16_t port;
    char *path;
    uint64_t sample_below; /* a new trace starts when a 64-bit draw is below this */
    bool sample_all;
} mt_trace_conf_t;

/* One request's trace context: what came in, and meltemi's span. */
typedef struct mt_trace_ctx {
    uint8_t trace_id[16];
    uint8_t parent_id[8]; /* the caller's span (all zero: meltemi started the trace) */
    uint8_t span_id[8];   /* meltemi's span: the parent of the upstream's */
    bool sampled;
    bool b3; /* the context came as B3 headers: answer in B3 too */
    bool has_parent;
} mt_trace_ctx_t;

/* Per worker: the span buffer and the id generator. */
typedef struct mt_trace_worker {
    char *buf;
    size_t len, cap;
    uint64_t rng;
    uint64_t handed_ns; /* last hand-off to the exporter */
} mt_trace_worker_t;

/* "00-<32 hex>-<16 hex>-<2 hex>" into ctx; false when it is not a valid traceparent. */
bool mt_trace_parse_traceparent(const char *s, size_t n, mt_trace_ctx_t *ctx);
/* A 32 (or 16) hex B3 trace id and a 16 hex span id; sampled "1"/"0"/NULL (default yes). */
bool mt_trace_parse_b3(const char *trace, size_t tn, const char *span, size_t sn,
                       const char *sampled, size_t dn, mt_trace_ctx_t *ctx);
/* A new trace for a request that carries no context (Redis has no headers): true, with
 * ctx filled (sampled, new trace and span ids), when this request is one of c's sample;
 * false otherwise. */
bool mt_trace_sample_new(const mt_trace_conf_t *c, mt_trace_worker_t *tw, mt_trace_ctx_t *ctx);
/* Gives ctx a new span id (and a new trace id when has_parent is false). */
void mt_trace_new_span(mt_trace_worker_t *tw, mt_trace_ctx_t *ctx);
/* The traceparent meltemi sends upstream: 55 characters + NUL. */
void mt_trace_format_traceparent(const mt_trace_ctx_t *ctx, char out[56]);
/* Hex of trace id (33 bytes with NUL) and of the span id (17 bytes). */
void mt_trace_hex(const uint8_t *b, size_t n, char *out);

/* A finished span (only sampled ones are recorded). Times on the worker's now_ns clock. */
typedef struct mt_trace_span {
    const mt_trace_ctx_t *ctx;
    const char *name;    /* interface.method */
    const char *service; /* localEndpoint.serviceName */
    const char *system;  /* rpc.system: dubbo, thrift; db.system for Redis (db set) */
    bool db;             /* a database client span (Redis): db.system, not rpc.system */
    const char *peer_ip;
    uint16_t peer_port;
    const char *cluster;
    const char *code;
    bool error;
    uint64_t start_ns, end_ns;
} mt_trace_span_t;

void mt_trace_worker_init(mt_trace_worker_t *tw, unsigned worker_id);
void mt_trace_worker_free(mt_trace_worker_t *tw);
void mt_trace_record(mt_trace_worker_t *tw, const mt_trace_span_t *sp);
/* The worker's flush pass: hands the buffer over when it is big or old enough. */
void mt_trace_flush(mt_trace_worker_t *tw, uint64_t now_ns, bool force);

/* Main thread: point the exporter at c (starting its thread on first use); NULL stops
 * exporting. */
void mt_trace_configure(const mt_trace_conf_t *c);
void mt_trace_shutdown(void);
void mt_trace_conf_free(mt_trace_conf_t *c);
/* Counters for the metrics (any thread). */
uint64_t mt_trace_spans_exported(void);
uint64_t mt_trace_spans_dropped(void);

#endif
