/*
 * access_log.h - the access log: one line per request (per connection for plain TCP), JSON or
 * a text format with Envoy-style %FIELD% operators, to stdout or a file, sampled. Written by
 * the session shell (mt_session_request_done / the close), once for every protocol.
 *
 * Each worker formats into its own buffer and writes whole lines with one write(2) when the
 * buffer fills and once per loop iteration (mt_alog_flush, from the worker's flush pass), so a
 * line is never split between workers. Every worker writes to one process-wide descriptor
 * whose number never changes: opening a new path or reopening after logrotate (SIGUSR1) dup2s
 * the new file onto it, so no worker ever writes to a closed or reused descriptor.
 */
#ifndef MELTEMI_CORE_ACCESS_LOG_H
#define MELTEMI_CORE_ACCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum mt_alog_field {
    MT_ALOG_LITERAL = 0,
    MT_ALOG_START_TIME,
    MT_ALOG_DURATION, /* ms */
    MT_ALOG_LISTENER,
    MT_ALOG_PROTOCOL,
    MT_ALOG_DOWNSTREAM_REMOTE_ADDRESS,
    MT_ALOG_UPSTREAM_HOST,
    MT_ALOG_UPSTREAM_CLUSTER,
    MT_ALOG_SERVICE,
    MT_ALOG_ROUTE_NAME,
    MT_ALOG_SUBSET,
    MT_ALOG_COMMAND, /* the Redis command or the RPC method: never its arguments */
    MT_ALOG_METHOD,  /* the same value (Envoy's name for it) */
    MT_ALOG_RESPONSE_CODE,
    MT_ALOG_RESPONSE_FLAGS,
    MT_ALOG_BYTES_RECEIVED,
    MT_ALOG_BYTES_SENT,
    MT_ALOG_TRACE_ID,
    MT_ALOG_CONNECTION_ID,
    MT_ALOG_FRAMES_RECEIVED, /* a stream's frames from the client ("-" on a request's line) */
    MT_ALOG_FRAMES_SENT,     /* and from the server */
    MT_ALOG_STREAM_END,      /* how a stream ended: close, reset, timeout, upstream_gone... */
    MT_ALOG_FIELD_COUNT
} mt_alog_field_t;

typedef struct mt_alog_seg {
    mt_alog_field_t field;
    const char *text; /* literal */
    size_t len;
} mt_alog_seg_t;

/* The snapshot's access_log table, parsed (snapshot.c reads it; NULL: off). */
typedef struct mt_alog_conf {
    bool json;
    char *path;
    char *text; /* the format (text only); segments point into it; padded (access_log.c) */
    mt_alog_seg_t *segs;
    uint32_t n_segs;
    size_t literal_len;    /* the literal segments' bytes (room reserved per line) */
    uint64_t sample_below; /* a request is logged when a 64-bit draw is below this */
    bool sample_all;
} mt_alog_conf_t;

/* One line's values; strings may be NULL ("-"). Not NUL-terminated where a length is given. */
typedef struct mt_alog_entry {
    uint64_t start_ns, end_ns; /* the worker's now_ns clock */
    const char *listener;
    const char *protocol;
    const char *peer;
    const char *upstream_host; /* "address:port" */
    const char *upstream_addr; /* or, when upstream_host is NULL, the address and port apart */
    size_t upstream_addr_len;  /* (written as "address:port" without a copy in between) */
    uint16_t upstream_port;
    const char *cluster;
    const char *service;
    const char *route;
    const char *subset;
    const char *op;
    size_t op_len;
    const char *code;
    uint32_t flags; /* MT_RF_* */
    uint64_t bytes_in, bytes_out;
    uint64_t connection_id;
    const char *trace_id;           /* 32 hex, or NULL */
    const char *stream_end;         /* a stream's line: how it ended (NULL: a request's line) */
    uint64_t frames_in, frames_out; /* a stream's frames (only with stream_end) */
} mt_alog_entry_t;

/* Per worker: the line buffer and the sampler. */
typedef struct mt_alog_worker {
    char *buf;
    size_t len, cap;
    uint64_t rng;
    int64_t clock_offset_ns; /* wall clock - now_ns clock, refreshed per second */
    uint64_t clock_checked_ns;
    uint64_t sec_cached;
    char sec_text[24]; /* "2026-12-03T17:30:01" of sec_cached */
    size_t sec_len;
    uint64_t dropped; /* lines lost to write errors */
} mt_alog_worker_t;

/* Main thread (snapshot.c reads the snapshot's table into one). */
void mt_alog_conf_free(mt_alog_conf_t *c);
/* Points the shared descriptor at c->path (opens it: O_APPEND, created 0644). 0, or -1 and
 * a malloc'd *err. */
int mt_alog_open(const mt_alog_conf_t *c, char **err);
/* SIGUSR1: reopen the current path (logrotate moved it away). */
void mt_alog_reopen(void);

/* Worker side. */
void mt_alog_worker_init(mt_alog_worker_t *aw, unsigned worker_id);
void mt_alog_worker_free(mt_alog_worker_t *aw);
/* True when this request is one of the sampled ones (call before building the entry). */
static inline bool mt_alog_sampled(const mt_alog_conf_t *c, mt_alog_worker_t *aw)
{
    if (c->sample_all)
        return true;
    aw->rng ^= aw->rng << 13; /* xorshift64 */
    aw->rng ^= aw->rng >> 7;
    aw->rng ^= aw->rng << 17;
    return aw->rng < c->sample_below;
}
void mt_alog_write(const mt_alog_conf_t *c, mt_alog_worker_t *aw, const mt_alog_entry_t *e);
/* Writes what is buffered (the worker's flush pass). */
void mt_alog_flush(mt_alog_worker_t *aw);

/* Parses a %FIELD% text format into c (replacing what c had): 0, or -1 and a malloc'd *err
 * naming the unknown field. "%%" is a literal percent; a lone '%' is literal text. */
int mt_alog_parse_format(mt_alog_conf_t *c, const char *text, char **err);

/* The field a %NAME% names (MT_ALOG_LITERAL when none); for tests and the parser. */
mt_alog_field_t mt_alog_field_named(const char *name, size_t len);

#endif
