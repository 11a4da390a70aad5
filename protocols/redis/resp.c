/*
 * resp.c - RESP2 request parser, reply scanner and reply encoders.
 *
 * Both parsers are resumable byte state machines in the twemproxy style: between calls
 * they keep only offsets from the start of the current frame (the caller's bytes may move),
 * resume exactly where they stopped (no rescanning of what was already seen), and check
 * every limit as soon as the bytes that could exceed it arrive.
 *
 * Framing follows Redis 7.0's networking.c (processInlineBuffer, processMultibulkBuffer)
 * and its error texts, with two deliberate differences, both about inputs no client sends:
 * a CR must be followed by LF and a bulk must be followed by CRLF (Redis skips those two
 * bytes unchecked; we reject them as "invalid multibulk/bulk length" so a desynchronised
 * stream is never forwarded), and a count line longer than the inline limit is "too big"
 * whether or not its CR arrived in the same read (Redis's answer depends on read sizes).
 */
#include "protocols/redis/resp.h"

#include <assert.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const resp_limits_t resp_default_limits = {
    .max_bulk_len = RESP_DEFAULT_MAX_BULK_LEN,
    .max_args = RESP_DEFAULT_MAX_ARGS,
    .max_inline = RESP_DEFAULT_MAX_INLINE,
    .max_depth = RESP_DEFAULT_MAX_DEPTH,
};

/* argv capacity kept between frames; a bigger one (from a huge MSET) is released at the
 * start of the next frame so an idle connection does not keep megabytes. */
#define RESP_ARGV_KEEP 16384
#define RESP_ARGV_MIN 16

enum {
    RQ_START = 0, /* resp.h's resp_req_parser_release tests state == 0 */
    RQ_INLINE,
    RQ_MB_COUNT,
    RQ_MB_BULK_LEN,
    RQ_MB_BULK_DATA,
};

static const char RESP_ERR_MBULK_LEN[] = "Protocol error: invalid multibulk length";
static const char RESP_ERR_BULK_LEN[] = "Protocol error: invalid bulk length";
static const char RESP_ERR_INLINE_BIG[] = "Protocol error: too big inline request";
static const char RESP_ERR_QUOTES[] = "Protocol error: unbalanced quotes in request";
static const char RESP_ERR_MBULK_BIG[] = "Protocol error: too big mbulk count string";
static const char RESP_ERR_BULK_BIG[] = "Protocol error: too big bulk count string";
static const char RESP_ERR_UNAUTH_MBULK[] = "Protocol error: unauthenticated multibulk length";
static const char RESP_ERR_UNAUTH_BULK[] = "Protocol error: unauthenticated bulk length";
static const char RESP_ERR_OOM[] = "meltemi: out of memory while parsing the request";

/* ==== numbers ============================================================================ */

/* Redis's string2ll: no sign but '-', no leading zeros, no spaces, no overflow. */
static bool resp__string2ll(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n >= 21)
        return false;
    if (n == 1 && s[0] == '0') {
        *out = 0;
        return true;
    }
    size_t i = 0;
    bool negative = false;
    if (s[0] == '-') {
        negative = true;
        if (++i == n)
            return false;
    }
    if (s[i] < '1' || s[i] > '9')
        return false;
    uint64_t v = 0;
    for (; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (negative) {
        if (v > (uint64_t)INT64_MAX + 1)
            return false;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    return true;
}

/* Writes v's decimal digits ending at end; returns where they start. */
static char *resp__u64_digits(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

/* ==== request parser: state and memory =================================================== */

void resp_req_parser_init(resp_req_parser_t *p, const resp_limits_t *limits)
{
    memset(p, 0, sizeof(*p));
    p->limits = limits ? *limits : resp_default_limits;
}

void resp_req_parser_free(resp_req_parser_t *p)
{
    free(p->argv);
    free(p->arg_off);
    free(p->scratch);
    p->argv = NULL;
    p->arg_off = NULL;
    p->scratch = NULL;
    p->argv_cap = 0;
    p->scratch_cap = 0;
}

bool resp_req_parser__release(resp_req_parser_t *p, resp_req_arrays_t *spare)
{
    if (p->state != RQ_START)
        return false;
    if (!spare->argv && p->argv && p->argv_cap <= RESP_ARGV_SPARE_MAX) {
        *spare = (resp_req_arrays_t){p->argv, p->arg_off, p->argv_cap};
    } else {
        free(p->argv);
        free(p->arg_off);
    }
    free(p->scratch);
    p->argv = NULL;
    p->arg_off = NULL;
    p->scratch = NULL;
    p->argv_cap = 0;
    p->scratch_cap = 0;
    return true;
}

static void resp__req_reset(resp_req_parser_t *p)
{
    p->state = RQ_START;
    p->pos = 0;
    p->scan = 0;
    p->nargs = 0;
    p->bulk_len = -1;
    p->argc = 0;
}

/* Makes room for n arguments. Grows geometrically and only as arguments actually arrive,
 * never from the count a client announces (a "*1000000" alone must not cost 24 MB). */
static bool resp__req_reserve(resp_req_parser_t *p, uint32_t n)
{
    if (MT_LIKELY(n <= p->argv_cap))
        return true;
    size_t cap = p->argv_cap ? p->argv_cap : RESP_ARGV_MIN;
    while (cap < n)
        cap *= 2;
    resp_arg_t *argv = realloc(p->argv, cap * sizeof(*argv));
    if (!argv)
        return false;
    p->argv = argv;
    size_t *off = realloc(p->arg_off, cap * sizeof(*off));
    if (!off)
        return false;
    p->arg_off = off;
    p->argv_cap = (uint32_t)cap;
    return true;
}

static void resp__req_trim(resp_req_parser_t *p)
{
    if (p->argv_cap <= RESP_ARGV_KEEP)
        return;
    free(p->argv);
    free(p->arg_off);
    p->argv = NULL;
    p->arg_off = NULL;
    p->argv_cap = 0;
}

static mt_status_t resp__req_fail(resp_req_parser_t *p, const char **err, const char *text)
{
    resp__req_reset(p);
    *err = text;
    return MT_ERROR;
}

static mt_status_t resp__req_done(resp_req_parser_t *p, const char *buf, size_t frame_len,
                                  bool is_inline, resp_request_t *out)
{
    if (!is_inline) {
        for (uint32_t i = 0; i < p->argc; i++)
            p->argv[i].ptr = buf + p->arg_off[i];
    }
    out->frame_len = frame_len;
    out->argc = p->argc;
    out->argv = p->argv;
    out->is_inline = is_inline;
    resp__req_reset(p);
    return MT_OK;
}

/* ==== request parser: multibulk ========================================================== */

/*
 * Finds the CR ending the line that starts at `start`, resuming the search at p->scan.
 * Returns MT_OK with *cr set once CR and the byte after it are there (that byte must be LF),
 * MT_AGAIN while the line is incomplete, MT_ERROR (with `too_big`) once the line is longer
 * than the inline limit - the check Redis makes on count lines that never end.
 */
static mt_status_t resp__req_line(resp_req_parser_t *p, const char *buf, size_t len, size_t start,
                                  size_t *cr, const char *too_big, const char *bad_crlf,
                                  const char **err)
{
    size_t from = MT_MAX(p->scan, start);
    const char *hit = from < len ? memchr(buf + from, '\r', len - from) : NULL;
    size_t end = hit ? (size_t)(hit - buf) : len;
    if (end - start > p->limits.max_inline)
        return resp__req_fail(p, err, too_big);
    if (!hit || end + 1 >= len) {
        p->scan = end;
        return MT_AGAIN;
    }
    if (buf[end + 1] != '\n')
        return resp__req_fail(p, err, bad_crlf);
    p->scan = 0;
    *cr = end;
    return MT_OK;
}

static mt_status_t resp__req_count(resp_req_parser_t *p, const char *buf, size_t len,
                                   resp_request_t *out, const char **err)
{
    size_t cr;
    mt_status_t rc =
        resp__req_line(p, buf, len, 0, &cr, RESP_ERR_MBULK_BIG, RESP_ERR_MBULK_LEN, err);
    if (rc != MT_OK)
        return rc;
    int64_t n;
    if (!resp__string2ll(buf + 1, cr - 1, &n) || n > INT_MAX || n > (int64_t)p->limits.max_args)
        return resp__req_fail(p, err, RESP_ERR_MBULK_LEN);
    if (MT_UNLIKELY(p->unauthenticated) && n > RESP_UNAUTH_MAX_ARGS)
        return resp__req_fail(p, err, RESP_ERR_UNAUTH_MBULK);
    p->pos = cr + 2;
    if (n <= 0) /* Redis ignores "*0" and "*-1": a frame with no command */
        return resp__req_done(p, buf, p->pos, false, out);
    p->nargs = n;
    p->state = RQ_MB_BULK_LEN;
    return MT_AGAIN;
}

/* Formats "expected '$', got 'X'" the way Redis's addReplyErrorFormat does: CR and LF
 * become spaces, a NUL ends the text. */
static const char *resp__req_expected_dollar(resp_req_parser_t *p, char got)
{
    static const char prefix[] = "Protocol error: expected '$', got '";
    size_t n = sizeof(prefix) - 1;
    memcpy(p->errbuf, prefix, n);
    if (got != '\0') {
        p->errbuf[n++] = (got == '\r' || got == '\n') ? ' ' : got;
        p->errbuf[n++] = '\'';
    }
    p->errbuf[n] = '\0';
    return p->errbuf;
}

static mt_status_t resp__req_bulk_len(resp_req_parser_t *p, const char *buf, size_t len,
                                      const char **err)
{
    size_t cr;
    mt_status_t rc =
        resp__req_line(p, buf, len, p->pos, &cr, RESP_ERR_BULK_BIG, RESP_ERR_BULK_LEN, err);
    if (rc != MT_OK)
        return rc;
    if (buf[p->pos] != '$') {
        const char *text = resp__req_expected_dollar(p, buf[p->pos]);
        return resp__req_fail(p, err, text);
    }
    int64_t n;
    if (!resp__string2ll(buf + p->pos + 1, cr - p->pos - 1, &n) || n < 0 ||
        (uint64_t)n > p->limits.max_bulk_len)
        return resp__req_fail(p, err, RESP_ERR_BULK_LEN);
    if (MT_UNLIKELY(p->unauthenticated) && n > RESP_UNAUTH_MAX_BULK_LEN)
        return resp__req_fail(p, err, RESP_ERR_UNAUTH_BULK);
    if (!resp__req_reserve(p, p->argc + 1))
        return resp__req_fail(p, err, RESP_ERR_OOM);
    p->bulk_len = n;
    p->pos = cr + 2;
    p->state = RQ_MB_BULK_DATA;
    return MT_AGAIN;
}

static mt_status_t resp__req_bulk_data(resp_req_parser_t *p, const char *buf, size_t len,
                                       resp_request_t *out, const char **err)
{
    size_t n = (size_t)p->bulk_len;
    if (len - p->pos < n + 2)
        return MT_AGAIN;
    if (buf[p->pos + n] != '\r' || buf[p->pos + n + 1] != '\n')
        return resp__req_fail(p, err, RESP_ERR_BULK_LEN);
    p->arg_off[p->argc] = p->pos;
    p->argv[p->argc].len = n;
    p->argv[p->argc].ptr = NULL;
    p->argc++;
    p->pos += n + 2;
    if (p->argc == (uint64_t)p->nargs)
        return resp__req_done(p, buf, p->pos, false, out);
    p->state = RQ_MB_BULK_LEN;
    return MT_AGAIN;
}

/* ==== request parser: inline ============================================================= */

static bool resp__is_space(unsigned char c) /* C isspace() in the "C" locale */
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static int resp__hex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* Byte at i of a NUL-terminated view of the line: sdssplitargs works on a C string. */
static unsigned char resp__at(const char *s, size_t n, size_t i)
{
    return i < n ? (unsigned char)s[i] : 0;
}

/*
 * One token of Redis's sdssplitargs, starting at s[*i] (not a blank), appended to dst.
 * Returns false on unbalanced quotes or a closing quote not followed by a blank.
 */
static bool resp__split_token(const char *s, size_t n, size_t *i, char *dst, size_t *dlen)
{
    bool inq = false, insq = false;
    size_t k = *i, d = *dlen;
    for (;;) {
        unsigned char c = resp__at(s, n, k);
        if (inq) {
            if (c == '\\' && resp__at(s, n, k + 1) == 'x' &&
                resp__hex(resp__at(s, n, k + 2)) >= 0 && resp__hex(resp__at(s, n, k + 3)) >= 0) {
                dst[d++] = (char)(resp__hex(s[k + 2]) * 16 + resp__hex(s[k + 3]));
                k += 3;
            } else if (c == '\\' && resp__at(s, n, k + 1)) {
                unsigned char e = (unsigned char)s[++k];
                dst[d++] = e == 'n'   ? '\n'
                           : e == 'r' ? '\r'
                           : e == 't' ? '\t'
                           : e == 'b' ? '\b'
                           : e == 'a' ? '\a'
                                      : (char)e;
            } else if (c == '"') {
                unsigned char next = resp__at(s, n, k + 1);
                if (next && !resp__is_space(next))
                    return false;
                inq = false;
                k++;
                break;
            } else if (!c) {
                return false;
            } else {
                dst[d++] = (char)c;
            }
        } else if (insq) {
            if (c == '\\' && resp__at(s, n, k + 1) == '\'') {
                k++;
                dst[d++] = '\'';
            } else if (c == '\'') {
                unsigned char next = resp__at(s, n, k + 1);
                if (next && !resp__is_space(next))
                    return false;
                insq = false;
                k++;
                break;
            } else if (!c) {
                return false;
            } else {
                dst[d++] = (char)c;
            }
        } else if (c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\0') {
            if (c)
                k++;
            break;
        } else if (c == '"') {
            inq = true;
        } else if (c == '\'') {
            insq = true;
        } else {
            dst[d++] = (char)c;
        }
        k++;
    }
    *i = k;
    *dlen = d;
    return true;
}

/* Splits the line like sdssplitargs into the scratch buffer; argv points into scratch. */
static mt_status_t resp__req_split(resp_req_parser_t *p, const char *line, size_t n,
                                   const char **err)
{
    if (n + 1 > p->scratch_cap) {
        size_t cap = MT_MAX(n + 1, (size_t)256);
        char *s = realloc(p->scratch, cap);
        if (!s)
            return resp__req_fail(p, err, RESP_ERR_OOM);
        p->scratch = s;
        p->scratch_cap = cap;
    }
    size_t i = 0, dlen = 0;
    for (;;) {
        while (i < n && line[i] && resp__is_space((unsigned char)line[i]))
            i++;
        if (i >= n || !line[i])
            return MT_OK;
        size_t start = dlen;
        if (!resp__split_token(line, n, &i, p->scratch, &dlen))
            return resp__req_fail(p, err, RESP_ERR_QUOTES);
        if (!resp__req_reserve(p, p->argc + 1))
            return resp__req_fail(p, err, RESP_ERR_OOM);
        p->arg_off[p->argc] = start;
        p->argv[p->argc].len = dlen - start;
        p->argc++;
    }
}

static mt_status_t resp__req_inline(resp_req_parser_t *p, const char *buf, size_t len,
                                    resp_request_t *out, const char **err)
{
    size_t from = p->scan;
    const char *hit = from < len ? memchr(buf + from, '\n', len - from) : NULL;
    size_t end = hit ? (size_t)(hit - buf) : len;
    /* Redis refuses more than PROTO_INLINE_MAX_SIZE bytes without a newline; checking the
     * line's length also when its newline came in the same read keeps the answer
     * independent of how the bytes were split. */
    if (end > p->limits.max_inline)
        return resp__req_fail(p, err, RESP_ERR_INLINE_BIG);
    if (!hit) {
        p->scan = len;
        return MT_AGAIN;
    }
    size_t line_len = (end > 0 && buf[end - 1] == '\r') ? end - 1 : end;
    mt_status_t rc = resp__req_split(p, buf, line_len, err);
    if (rc != MT_OK)
        return rc;
    for (uint32_t i = 0; i < p->argc; i++)
        p->argv[i].ptr = p->scratch + p->arg_off[i];
    return resp__req_done(p, buf, end + 1, true, out);
}

/* ==== fast paths ======================================================================== */

/*
 * The common frame in one pass: everything present, short canonical lengths. A length of at
 * most 9 digits (no sign, no leading zero but "0" itself) at buf[*i] followed by CRLF: true
 * with the value and *i past the CRLF. False for anything else - longer, signed, malformed,
 * incomplete - and the resumable parser then reads the same bytes from the frame's start,
 * with its own answers; the fast paths never consume or change state on false.
 */
static inline bool resp__fast_len(const char *buf, size_t len, size_t *i, uint32_t *out)
{
    size_t k = *i;
    if (k >= len)
        return false;
    unsigned d = (unsigned char)buf[k++] - '0';
    if (d > 9)
        return false;
    uint32_t v = d;
    if (d != 0) {
        for (unsigned digits = 1; k < len; k++, digits++) {
            d = (unsigned char)buf[k] - '0';
            if (d > 9)
                break;
            if (digits == 9)
                return false;
            v = v * 10 + d;
        }
    }
    if (len - k < 2 || buf[k] != '\r' || buf[k + 1] != '\n')
        return false;
    *i = k + 2;
    *out = v;
    return true;
}

/* A whole multibulk frame ("*N\r\n" then N "$L\r\n<L bytes>\r\n") with argv already big
 * enough, from a client that needs no pre-auth limits: argv filled, MT_OK. Every check the
 * resumable parser makes holds for what this accepts (canonical counts and lengths within
 * the limits, CRLF after each, lines within max_inline), so both give the same frame. */
static bool resp__req_fast(resp_req_parser_t *p, const char *buf, size_t len, resp_request_t *out)
{
    size_t i = 1;
    uint32_t n;
    if (!resp__fast_len(buf, len, &i, &n) || n == 0 || n > p->argv_cap || n > p->limits.max_args ||
        i - 2 > p->limits.max_inline)
        return false;
    for (uint32_t a = 0; a < n; a++) {
        size_t line = i;
        uint32_t bl;
        if (i >= len || buf[i] != '$')
            return false;
        i++;
        if (!resp__fast_len(buf, len, &i, &bl) || bl > p->limits.max_bulk_len ||
            i - 2 - line > p->limits.max_inline)
            return false;
        if (len - i < (size_t)bl + 2 || buf[i + bl] != '\r' || buf[i + bl + 1] != '\n')
            return false;
        p->argv[a] = (resp_arg_t){buf + i, bl};
        i += (size_t)bl + 2;
    }
    out->frame_len = i;
    out->argc = n;
    out->argv = p->argv;
    out->is_inline = false;
    return true;
}

/* ==== request parser: entry point ======================================================== */

mt_status_t resp_parse_request(resp_req_parser_t *p, const char *buf, size_t len,
                               resp_request_t *out, const char **err)
{
    assert(len >= p->pos && "resp_parse_request: the frame's bytes must not shrink");
    if (p->state == RQ_START) {
        if (len == 0)
            return MT_AGAIN;
        resp__req_trim(p);
        if (buf[0] == '*' && !p->unauthenticated && resp__req_fast(p, buf, len, out))
            return MT_OK;
        p->bulk_len = -1;
        p->state = buf[0] == '*' ? RQ_MB_COUNT : RQ_INLINE;
    }
    if (p->state == RQ_INLINE)
        return resp__req_inline(p, buf, len, out, err);
    if (p->state == RQ_MB_COUNT) {
        mt_status_t rc = resp__req_count(p, buf, len, out, err);
        if (rc != MT_AGAIN || p->state == RQ_MB_COUNT)
            return rc;
    }
    for (;;) {
        mt_status_t rc;
        uint32_t before = p->state;
        size_t pos = p->pos;
        if (p->state == RQ_MB_BULK_LEN)
            rc = resp__req_bulk_len(p, buf, len, err);
        else
            rc = resp__req_bulk_data(p, buf, len, out, err);
        /* AGAIN without progress means: wait for bytes */
        if (rc != MT_AGAIN || (p->state == before && p->pos == pos))
            return rc;
    }
}

/* ==== reply scanner ====================================================================== */

enum {
    RS_TYPE = 0,
    RS_LINE,      /* '+' / '-': any text up to CRLF */
    RS_INTEGER,   /* ':' */
    RS_BULK_LEN,  /* '$' */
    RS_ARRAY_LEN, /* '*' */
    RS_BULK_DATA,
};

static const char RESP_ERR_REPLY_TYPE[] = "Protocol error: invalid reply type";
static const char RESP_ERR_REPLY_CRLF[] = "Protocol error: expected CRLF in reply";
static const char RESP_ERR_REPLY_INT[] = "Protocol error: invalid integer reply";
static const char RESP_ERR_REPLY_LINE[] = "Protocol error: too big status reply";
static const char RESP_ERR_REPLY_DEPTH[] = "Protocol error: reply nested too deep";

/* Longest valid number line: "-9223372036854775808" */
#define RESP_NUMBER_MAX 20

void resp_reply_scanner_init(resp_reply_scanner_t *s, const resp_limits_t *limits)
{
    memset(s, 0, sizeof(*s));
    s->limits = limits ? *limits : resp_default_limits;
    if (s->limits.max_depth > RESP_DEFAULT_MAX_DEPTH)
        s->limits.max_depth = RESP_DEFAULT_MAX_DEPTH;
}

static mt_status_t resp__scan_fail(resp_reply_scanner_t *s, const char **err, const char *text)
{
    s->state = RS_TYPE;
    s->pos = 0;
    s->scan = 0;
    s->depth = 0;
    *err = text;
    return MT_ERROR;
}

/* The line after the type byte at s->pos: [s->pos + 1, *cr). Same resumption as requests. */
static mt_status_t resp__scan_line(resp_reply_scanner_t *s, const char *buf, size_t len,
                                   uint64_t max, const char *too_big, size_t *cr, const char **err)
{
    size_t start = s->pos + 1;
    size_t from = MT_MAX(s->scan, start);
    const char *hit = from < len ? memchr(buf + from, '\r', len - from) : NULL;
    size_t end = hit ? (size_t)(hit - buf) : len;
    if (end - start > max)
        return resp__scan_fail(s, err, too_big);
    if (!hit || end + 1 >= len) {
        s->scan = end;
        return MT_AGAIN;
    }
    if (buf[end + 1] != '\n')
        return resp__scan_fail(s, err, RESP_ERR_REPLY_CRLF);
    s->scan = 0;
    *cr = end;
    return MT_OK;
}

/* One element is complete: count it against the arrays it is nested in. Returns true
 * when the whole reply is complete. */
static bool resp__scan_element_done(resp_reply_scanner_t *s)
{
    s->state = RS_TYPE;
    while (s->depth > 0) {
        if (--s->remaining[s->depth] > 0)
            return false;
        s->depth--;
    }
    return true;
}

static mt_status_t resp__scan_number(resp_reply_scanner_t *s, const char *buf, size_t len,
                                     const char *bad, int64_t *n, const char **err)
{
    size_t cr;
    mt_status_t rc = resp__scan_line(s, buf, len, RESP_NUMBER_MAX, bad, &cr, err);
    if (rc != MT_OK)
        return rc;
    if (!resp__string2ll(buf + s->pos + 1, cr - s->pos - 1, n))
        return resp__scan_fail(s, err, bad);
    s->pos = cr + 2;
    return MT_OK;
}

/* A RESP3 type byte (only with s->resp3): lines, blobs, and aggregates counting pairs (maps,
 * attributes) or elements (sets, pushes). */
static mt_status_t resp__scan_type3(resp_reply_scanner_t *s, char type, const char **err)
{
    if (!s->resp3)
        return resp__scan_fail(s, err, RESP_ERR_REPLY_TYPE);
    switch (type) {
    case '_': /* null */
    case ',': /* double */
    case '#': /* boolean */
    case '(': /* big number */
        s->state = RS_LINE;
        return MT_OK;
    case '!': /* blob error */
    case '=': /* verbatim string */
        s->state = RS_BULK_LEN;
        return MT_OK;
    case '~': /* set */
    case '>': /* push */
        s->state = RS_ARRAY_LEN;
        s->pairs = 1;
        return MT_OK;
    case '%': /* map: n pairs */
        s->state = RS_ARRAY_LEN;
        s->pairs = 2;
        return MT_OK;
    case '|': /* attribute: n pairs, then the reply they annotate */
        s->state = RS_ARRAY_LEN;
        s->pairs = 3;
        return MT_OK;
    default:
        return resp__scan_fail(s, err, RESP_ERR_REPLY_TYPE);
    }
}

/* Advances over one token (a type byte, a line, or bulk data). MT_OK: the token was
 * consumed and s->state says what comes next; *complete when the whole reply ended. */
static mt_status_t resp__scan_step(resp_reply_scanner_t *s, const char *buf, size_t len,
                                   bool *complete, const char **err)
{
    int64_t n;
    size_t cr;
    mt_status_t rc;
    switch (s->state) {
    case RS_TYPE:
        if (s->pos >= len)
            return MT_AGAIN;
        switch (buf[s->pos]) {
        case '+':
        case '-':
            s->state = RS_LINE;
            return MT_OK;
        case ':':
            s->state = RS_INTEGER;
            return MT_OK;
        case '$':
            s->state = RS_BULK_LEN;
            return MT_OK;
        case '*':
            s->state = RS_ARRAY_LEN;
            s->pairs = 1;
            return MT_OK;
        default:
            return resp__scan_type3(s, buf[s->pos], err);
        }
    case RS_LINE:
        rc = resp__scan_line(s, buf, len, s->limits.max_bulk_len, RESP_ERR_REPLY_LINE, &cr, err);
        if (rc != MT_OK)
            return rc;
        s->pos = cr + 2;
        *complete = resp__scan_element_done(s);
        return MT_OK;
    case RS_INTEGER:
        rc = resp__scan_number(s, buf, len, RESP_ERR_REPLY_INT, &n, err);
        if (rc != MT_OK)
            return rc;
        *complete = resp__scan_element_done(s);
        return MT_OK;
    case RS_BULK_LEN:
        rc = resp__scan_number(s, buf, len, RESP_ERR_BULK_LEN, &n, err);
        if (rc != MT_OK)
            return rc;
        if (n < -1 || (n >= 0 && (uint64_t)n > s->limits.max_bulk_len))
            return resp__scan_fail(s, err, RESP_ERR_BULK_LEN);
        if (n == -1) {
            *complete = resp__scan_element_done(s);
            return MT_OK;
        }
        s->bulk_len = n;
        s->state = RS_BULK_DATA;
        return MT_OK;
    case RS_BULK_DATA:
        if (len - s->pos < (size_t)s->bulk_len + 2)
            return MT_AGAIN;
        if (buf[s->pos + s->bulk_len] != '\r' || buf[s->pos + s->bulk_len + 1] != '\n')
            return resp__scan_fail(s, err, RESP_ERR_REPLY_CRLF);
        s->pos += (size_t)s->bulk_len + 2;
        *complete = resp__scan_element_done(s);
        return MT_OK;
    case RS_ARRAY_LEN:
        rc = resp__scan_number(s, buf, len, RESP_ERR_MBULK_LEN, &n, err);
        if (rc != MT_OK)
            return rc;
        if (n < -1 || n > INT64_MAX / 2 - 1)
            return resp__scan_fail(s, err, RESP_ERR_MBULK_LEN);
        /* maps count pairs; an attribute is followed by the element it annotates */
        n = s->pairs == 3 ? 2 * n + 1 : (s->pairs == 2 ? 2 * n : n);
        if (n <= 0) {
            *complete = resp__scan_element_done(s);
            return MT_OK;
        }
        if (s->depth >= s->limits.max_depth)
            return resp__scan_fail(s, err, RESP_ERR_REPLY_DEPTH);
        s->remaining[++s->depth] = n;
        s->state = RS_TYPE;
        return MT_OK;
    }
    return resp__scan_fail(s, err, RESP_ERR_REPLY_TYPE);
}

/* A whole reply that is a status or error line, a bulk string with a short length, or a
 * null bulk, at the start of a reply: its length, or 0 for the resumable scanner to take
 * (which then reads the same bytes from the start). */
static size_t resp__scan_fast(const resp_reply_scanner_t *s, const char *buf, size_t len)
{
    if (len < 4)
        return 0;
    if (buf[0] == '$') {
        if (buf[1] == '-') /* a null bulk; anything else with a sign is the scanner's */
            return len >= 5 && buf[2] == '1' && buf[3] == '\r' && buf[4] == '\n' ? 5 : 0;
        size_t i = 1;
        uint32_t n;
        if (!resp__fast_len(buf, len, &i, &n) || n > s->limits.max_bulk_len ||
            len - i < (size_t)n + 2 || buf[i + n] != '\r' || buf[i + n + 1] != '\n')
            return 0;
        return i + n + 2;
    }
    if (buf[0] == '+' || buf[0] == '-') {
        const char *cr = memchr(buf + 1, '\r', len - 1);
        size_t end = cr ? (size_t)(cr - buf) : 0;
        if (!cr || end + 1 >= len || buf[end + 1] != '\n' || end - 1 > s->limits.max_bulk_len)
            return 0;
        return end + 2;
    }
    return 0;
}

mt_status_t resp_scan_reply(resp_reply_scanner_t *s, const char *buf, size_t len, size_t *frame_len,
                            const char **err)
{
    assert(len >= s->pos && "resp_scan_reply: the reply's bytes must not shrink");
    if (s->state == RS_TYPE && s->pos == 0 && s->depth == 0) {
        size_t n = resp__scan_fast(s, buf, len);
        if (n != 0) {
            *frame_len = n;
            return MT_OK;
        }
    }
    for (;;) {
        bool complete = false;
        mt_status_t rc = resp__scan_step(s, buf, len, &complete, err);
        if (rc != MT_OK)
            return rc;
        if (complete) {
            *frame_len = s->pos;
            s->pos = 0;
            s->scan = 0;
            return MT_OK;
        }
    }
}

/* ==== encoders =========================================================================== */

/* Allocation failure aborts, as Redis's zmalloc does: encoders have no error path and an
 * out-of-memory proxy cannot answer anything useful anyway. */
static char *resp__out_reserve(resp_out_t *o, size_t n)
{
    if (MT_UNLIKELY(o->cap - o->len < n)) {
        size_t cap = MT_MAX(o->cap * 2, o->len + n);
        cap = MT_MAX(cap, (size_t)64);
        char *d = realloc(o->data, cap);
        if (!d) {
            fprintf(stderr, "meltemi: out of memory (resp_out, %zu bytes)\n", cap);
            abort();
        }
        o->data = d;
        o->cap = cap;
    }
    return o->data + o->len;
}

void resp_out_free(resp_out_t *o)
{
    free(o->data);
    o->data = NULL;
    o->len = 0;
    o->cap = 0;
}

void resp_out_raw(resp_out_t *o, const char *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(resp__out_reserve(o, n), p, n);
    o->len += n;
}

/* A line reply: CR and LF inside the text would end it early, so they become spaces, as
 * Redis does for error texts built from user input. */
static void resp__out_line(resp_out_t *o, char type, const char *s, size_t n)
{
    char *d = resp__out_reserve(o, n + 3);
    d[0] = type;
    for (size_t i = 0; i < n; i++)
        d[1 + i] = (s[i] == '\r' || s[i] == '\n') ? ' ' : s[i];
    d[n + 1] = '\r';
    d[n + 2] = '\n';
    o->len += n + 3;
}

void resp_out_simple(resp_out_t *o, const char *s)
{
    resp__out_line(o, '+', s, strlen(s));
}

void resp_out_error(resp_out_t *o, const char *s)
{
    resp__out_line(o, '-', s, strlen(s));
}

void resp_out_errorf(resp_out_t *o, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        resp__out_line(o, '-', small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        resp__out_line(o, '-', small, sizeof(small) - 1);
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    resp__out_line(o, '-', big, (size_t)n);
    free(big);
}

/* "<type><v>\r\n" */
static void resp__out_number(resp_out_t *o, char type, int64_t v)
{
    char tmp[24];
    char *end = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char *start = resp__u64_digits(end, u);
    if (v < 0)
        *--start = '-';
    *--start = type;
    size_t n = (size_t)(end - start);
    char *d = resp__out_reserve(o, n + 2);
    memcpy(d, start, n);
    d[n] = '\r';
    d[n + 1] = '\n';
    o->len += n + 2;
}

void resp_out_integer(resp_out_t *o, int64_t v)
{
    resp__out_number(o, ':', v);
}

void resp_out_array(resp_out_t *o, int64_t n)
{
    resp__out_number(o, '*', n);
}

void resp_out_null(resp_out_t *o)
{
    resp_out_raw(o, "$-1\r\n", 5);
}

void resp_out_bulk(resp_out_t *o, const char *p, size_t n)
{
    resp__out_reserve(o, n + 24 + 2);
    resp__out_number(o, '$', (int64_t)n);
    memcpy(o->data + o->len, p, n);
    o->data[o->len + n] = '\r';
    o->data[o->len + n + 1] = '\n';
    o->len += n + 2;
}

void resp_out_command(resp_out_t *o, uint32_t argc, const resp_arg_t *argv)
{
    size_t total = 24;
    for (uint32_t i = 0; i < argc; i++)
        total += argv[i].len + 24 + 2;
    resp__out_reserve(o, total);
    resp_out_array(o, argc);
    for (uint32_t i = 0; i < argc; i++)
        resp_out_bulk(o, argv[i].ptr, argv[i].len);
}
