/*
 * resp.h - RESP2 request parser and reply scanner: resumable byte state machines.
 *
 * Contract for both parsers: the caller passes the unconsumed bytes starting at the first
 * byte of the current frame. On MT_AGAIN the caller must call again later with the same
 * frame bytes plus more appended (the bytes may have moved to another address: the parser
 * keeps offsets, never pointers, between calls). On MT_OK the frame is complete, its length
 * is reported, and the parser is ready for the next frame. On MT_ERROR the text in
 * `err` is a Redis-style error (without the leading '-' and CRLF, e.g. "Protocol error:
 * invalid bulk length") and the connection must be closed after replying with it.
 * Limits are checked as bytes arrive, never after buffering a whole oversized frame.
 */
#ifndef MELTEMI_RESP_H
#define MELTEMI_RESP_H

#include "protocols/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Redis's own defaults. */
#define RESP_DEFAULT_MAX_BULK_LEN (512ull * 1024 * 1024) /* proto-max-bulk-len */
#define RESP_DEFAULT_MAX_ARGS (1024 * 1024)              /* multibulk element count */
#define RESP_DEFAULT_MAX_INLINE (64 * 1024)              /* PROTO_INLINE_MAX_SIZE */
#define RESP_DEFAULT_MAX_DEPTH 64                        /* reply nesting */
/* What redis-server accepts from a client that must authenticate and has not yet
 * (processMultibulkBuffer): enough for AUTH / HELLO, nothing an attacker can grow. */
#define RESP_UNAUTH_MAX_ARGS 10
#define RESP_UNAUTH_MAX_BULK_LEN 16384

typedef struct resp_limits {
    uint64_t max_bulk_len;
    uint32_t max_args;
    uint32_t max_inline;
    uint32_t max_depth;
} resp_limits_t;

extern const resp_limits_t resp_default_limits;

typedef struct resp_arg {
    const char *ptr; /* points into the caller's buffer (or the parser's scratch for inline) */
    size_t len;
} resp_arg_t;

typedef struct resp_request {
    size_t frame_len; /* bytes of the caller's buffer this frame occupied */
    uint32_t argc;    /* 0 for an empty inline line: skip it, reply nothing */
    resp_arg_t *argv; /* valid until the next call or until the buffer changes */
    bool is_inline;   /* inline frames must be re-encoded as multibulk before forwarding */
} resp_request_t;

/* Parser state: callers init/free it and may set `unauthenticated`; the rest is private. */
typedef struct resp_req_parser {
    resp_limits_t limits;
    /* Set by the caller while the client must still authenticate: multibulk counts above
     * RESP_UNAUTH_MAX_ARGS and bulks above RESP_UNAUTH_MAX_BULK_LEN are then errors (Redis's
     * "unauthenticated multibulk/bulk length"), so at most ~160 KiB is ever buffered for a
     * client that has not proved who it is. Inline lines are bounded by max_inline anyway. */
    bool unauthenticated;
    /* private */
    uint32_t state;
    size_t pos;       /* resume offset from frame start */
    int64_t nargs;    /* expected multibulk count */
    int64_t bulk_len; /* current bulk length */
    uint32_t argc;
    uint32_t argv_cap;
    resp_arg_t *argv;
    size_t *arg_off; /* offsets of args while resuming (pointers are rebuilt on OK) */
    char *scratch;   /* decoded inline arguments */
    size_t scratch_cap;
    /* added */
    size_t scan;     /* where the search for the current line's terminator resumes */
    char errbuf[48]; /* formatted error texts; `err` may point here until the next call */
} resp_req_parser_t;

void resp_req_parser_init(resp_req_parser_t *p, const resp_limits_t *limits);
void resp_req_parser_free(resp_req_parser_t *p);

/* The argument arrays a parser holds. Between frames they hold nothing, so a caller with many
 * parsers (one per client connection) need not leave a set in each idle one: it keeps one
 * spare set and lends it to whichever parser runs next. */
typedef struct resp_req_arrays {
    resp_arg_t *argv;
    size_t *arg_off;
    uint32_t cap;
} resp_req_arrays_t;

/* Gives p the spare set when p has none; spare is then empty. Costs two tests otherwise. */
static inline void resp_req_parser_borrow(resp_req_parser_t *p, resp_req_arrays_t *spare)
{
    if (!p->argv && spare->argv) {
        p->argv = spare->argv;
        p->arg_off = spare->arg_off;
        p->argv_cap = spare->cap;
        *spare = (resp_req_arrays_t){0};
    }
}
/* Between frames (the last call returned MT_OK or MT_ERROR, or none was made), p gives its
 * arrays to spare when spare is empty and they are small, frees them otherwise, and frees its
 * inline scratch: p then holds no memory, and takes arrays again as arguments arrive. In the
 * middle of a frame (the last call returned MT_AGAIN) it does nothing and returns false:
 * the arrays hold the offsets the next call resumes from. */
bool resp_req_parser__release(resp_req_parser_t *p, resp_req_arrays_t *spare);
#define RESP_ARGV_SPARE_MAX 64 /* the largest set kept as a spare: a few dozen arguments */
static inline bool resp_req_parser_release(resp_req_parser_t *p, resp_req_arrays_t *spare)
{
    if (!p->argv && !p->scratch)
        return true;
    /* the common case inline: between frames (state 0 is the parser's "start"), no inline
     * scratch, a small set and an empty spare */
    if (p->state == 0 && !p->scratch && !spare->argv && p->argv_cap <= RESP_ARGV_SPARE_MAX) {
        *spare = (resp_req_arrays_t){p->argv, p->arg_off, p->argv_cap};
        p->argv = NULL;
        p->arg_off = NULL;
        p->argv_cap = 0;
        return true;
    }
    return resp_req_parser__release(p, spare);
}
mt_status_t resp_parse_request(resp_req_parser_t *p, const char *buf, size_t len,
                               resp_request_t *out, const char **err);

/* Reply scanner: finds where one complete reply (any type, nested arrays included) ends. */
typedef struct resp_reply_scanner {
    resp_limits_t limits;
    /* RESP3's types too (null, double, boolean, big number, blob error, verbatim, map, set,
     * attribute, push): set on connections that said HELLO 3. Off, they are a protocol error. */
    bool resp3;
    /* private */
    uint32_t state;
    size_t pos;
    uint32_t depth;
    int64_t remaining[RESP_DEFAULT_MAX_DEPTH + 1]; /* elements left per nesting level */
    int64_t bulk_len;
    /* added */
    size_t scan;   /* where the search for the current line's CR resumes */
    uint8_t pairs; /* the aggregate being read: 1 elements, 2 map pairs, 3 attribute */
} resp_reply_scanner_t;

void resp_reply_scanner_init(resp_reply_scanner_t *s, const resp_limits_t *limits);
/* On MT_OK *frame_len is the reply's length; buf[0] is its type byte ('+','-',':','$','*', and
 * with resp3 '_', ',', '#', '(', '!', '=', '%', '~', '|', '>'). An attribute ('|') is framed
 * with the reply it annotates. */
mt_status_t resp_scan_reply(resp_reply_scanner_t *s, const char *buf, size_t len, size_t *frame_len,
                            const char **err);

/* ---- encoding helpers (append to a caller-provided growable output) ---------------------- */

typedef struct resp_out {
    char *data;
    size_t len;
    size_t cap;
} resp_out_t;

void resp_out_free(resp_out_t *o);
void resp_out_raw(resp_out_t *o, const char *p, size_t n);
void resp_out_simple(resp_out_t *o, const char *s); /* +s\r\n */
void resp_out_error(resp_out_t *o, const char *s);  /* -s\r\n */
void resp_out_errorf(resp_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void resp_out_integer(resp_out_t *o, int64_t v);            /* :v\r\n */
void resp_out_bulk(resp_out_t *o, const char *p, size_t n); /* $n\r\n...\r\n */
void resp_out_null(resp_out_t *o);                          /* $-1\r\n */
void resp_out_array(resp_out_t *o, int64_t n);              /* *n\r\n */
/* Re-encodes argv as a multibulk command (used for inline commands and rewrites). */
void resp_out_command(resp_out_t *o, uint32_t argc, const resp_arg_t *argv);

#endif
