/*
 * access_log.c - the access log (access_log.h): the format's parser, the shared descriptor,
 * per-worker line buffers, JSON and %FIELD% text lines.
 */
#include "runtime/core/access_log.h"

#include "runtime/core/common.h"
#include "runtime/core/log.h"
#include "runtime/core/stats.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define ALOG_FLUSH_AT (32u << 10) /* a worker writes once its buffer holds this much */
#define ALOG_LINE_MAX 4096        /* room reserved for one line */
#define ALOG_PAD 16               /* readable bytes after every literal (put_lit copies 16) */

static const char *const alog_field_names[MT_ALOG_FIELD_COUNT] = {
    [MT_ALOG_START_TIME] = "START_TIME",
    [MT_ALOG_DURATION] = "DURATION",
    [MT_ALOG_LISTENER] = "LISTENER",
    [MT_ALOG_PROTOCOL] = "PROTOCOL",
    [MT_ALOG_DOWNSTREAM_REMOTE_ADDRESS] = "DOWNSTREAM_REMOTE_ADDRESS",
    [MT_ALOG_UPSTREAM_HOST] = "UPSTREAM_HOST",
    [MT_ALOG_UPSTREAM_CLUSTER] = "UPSTREAM_CLUSTER",
    [MT_ALOG_SERVICE] = "SERVICE",
    [MT_ALOG_ROUTE_NAME] = "ROUTE_NAME",
    [MT_ALOG_SUBSET] = "SUBSET",
    [MT_ALOG_COMMAND] = "COMMAND",
    [MT_ALOG_METHOD] = "METHOD",
    [MT_ALOG_RESPONSE_CODE] = "RESPONSE_CODE",
    [MT_ALOG_RESPONSE_FLAGS] = "RESPONSE_FLAGS",
    [MT_ALOG_BYTES_RECEIVED] = "BYTES_RECEIVED",
    [MT_ALOG_BYTES_SENT] = "BYTES_SENT",
    [MT_ALOG_TRACE_ID] = "TRACE_ID",
    [MT_ALOG_CONNECTION_ID] = "CONNECTION_ID",
    [MT_ALOG_FRAMES_RECEIVED] = "FRAMES_RECEIVED",
    [MT_ALOG_FRAMES_SENT] = "FRAMES_SENT",
    [MT_ALOG_STREAM_END] = "STREAM_END",
};

static void alog_plain_init(void);
mt_alog_field_t mt_alog_field_named(const char *name, size_t len)
{
    for (int f = 1; f < MT_ALOG_FIELD_COUNT; f++) {
        if (strlen(alog_field_names[f]) == len && memcmp(alog_field_names[f], name, len) == 0)
            return (mt_alog_field_t)f;
    }
    return MT_ALOG_LITERAL;
}

/* ---- the configuration ---------------------------------------------------------------------- */

static int alog_parse_text(mt_alog_conf_t *c, char **err);

int mt_alog_parse_format(mt_alog_conf_t *c, const char *text, char **err)
{
    *err = NULL;
    free(c->text);
    free(c->segs);
    c->segs = NULL;
    c->n_segs = 0;
    c->json = false;
    c->literal_len = 0;
    size_t n = strlen(text);
    c->text = calloc(1, n + 1 + ALOG_PAD); /* put_lit reads up to ALOG_PAD past a literal */
    if (c->text)
        memcpy(c->text, text, n);
    if (!c->text) {
        *err = strdup("access_log: out of memory");
        return -1;
    }
    return alog_parse_text(c, err);
}

static int alog_parse_text(mt_alog_conf_t *c, char **err)
{
    size_t cap = 8;
    c->segs = calloc(cap, sizeof(*c->segs));
    const char *p = c->text;
    while (c->segs && *p) {
        if (c->n_segs + 1 >= cap) {
            mt_alog_seg_t *n = realloc(c->segs, sizeof(*n) * cap * 2);
            if (!n)
                break;
            c->segs = n;
            cap *= 2;
        }
        mt_alog_seg_t *s = &c->segs[c->n_segs++];
        const char *close = p[0] == '%' ? strchr(p + 1, '%') : NULL;
        if (close && close == p + 1) { /* "%%": a literal percent */
            *s = (mt_alog_seg_t){MT_ALOG_LITERAL, p, 1};
            c->literal_len += 1;
            p += 2;
            continue;
        }
        if (close) {
            s->field = mt_alog_field_named(p + 1, (size_t)(close - p - 1));
            if (s->field == MT_ALOG_LITERAL) {
                if (asprintf(err, "access_log: unknown field %.*s", (int)(close - p + 1), p) < 0)
                    *err = NULL;
                return -1;
            }
            p = close + 1;
            continue;
        }
        const char *next = strchr(p + 1, '%');
        size_t n = next ? (size_t)(next - p) : strlen(p);
        *s = (mt_alog_seg_t){MT_ALOG_LITERAL, p, n};
        c->literal_len += n;
        p += n;
    }
    if (!c->segs) {
        *err = strdup("access_log: out of memory");
        return -1;
    }
    return 0;
}

void mt_alog_conf_free(mt_alog_conf_t *c)
{
    if (!c)
        return;
    free(c->path);
    free(c->text);
    free(c->segs);
    free(c);
}

/* ---- the shared descriptor ------------------------------------------------------------------ */

static int alog_fd = -1; /* read by workers (atomically); its number never changes once set */
static char *alog_path;  /* main thread */

static int alog_open_path(const char *path)
{
    if (strcmp(path, "/dev/stdout") == 0)
        return fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    if (strcmp(path, "/dev/stderr") == 0)
        return fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static int alog_point_at(const char *path, char **err)
{
    int fd = alog_open_path(path);
    if (fd < 0) {
        if (asprintf(err, "access_log: cannot open %s: %s", path, strerror(errno)) < 0)
            *err = NULL;
        return -1;
    }
    int cur = __atomic_load_n(&alog_fd, __ATOMIC_ACQUIRE);
    if (cur < 0) {
        __atomic_store_n(&alog_fd, fd, __ATOMIC_RELEASE);
        return 0;
    }
    /* the same number now names the new file: a worker's write goes to one or the other */
    int rc = dup3(fd, cur, O_CLOEXEC);
    close(fd);
    if (rc < 0) {
        if (asprintf(err, "access_log: cannot switch to %s: %s", path, strerror(errno)) < 0)
            *err = NULL;
        return -1;
    }
    return 0;
}

int mt_alog_open(const mt_alog_conf_t *c, char **err)
{
    if (alog_path && strcmp(alog_path, c->path) == 0)
        return 0;
    if (alog_point_at(c->path, err) != 0)
        return -1;
    free(alog_path);
    alog_path = strdup(c->path);
    mt_info("access log: %s (%s)", c->path, c->json ? "json" : "text");
    return 0;
}

void mt_alog_reopen(void)
{
    char *err = NULL;
    if (!alog_path)
        return;
    if (alog_point_at(alog_path, &err) != 0) {
        mt_error("%s", err ? err : "access_log: reopen failed");
        free(err);
        return;
    }
    mt_info("access log: reopened %s", alog_path);
}

/* ---- worker buffers ------------------------------------------------------------------------- */

void mt_alog_worker_init(mt_alog_worker_t *aw, unsigned worker_id)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, alog_plain_init);
    memset(aw, 0, sizeof(*aw));
    aw->rng = (uv_hrtime() ^ ((uint64_t)worker_id << 40) ^ 0x9e3779b97f4a7c15ull) | 1;
}

void mt_alog_worker_free(mt_alog_worker_t *aw)
{
    mt_alog_flush(aw);
    free(aw->buf);
    aw->buf = NULL;
}

void mt_alog_flush(mt_alog_worker_t *aw)
{
    int fd = __atomic_load_n(&alog_fd, __ATOMIC_ACQUIRE);
    size_t off = 0;
    while (off < aw->len && fd >= 0) {
        ssize_t n = write(fd, aw->buf + off, aw->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            aw->dropped++;
            break;
        }
        off += (size_t)n;
    }
    aw->len = 0;
}

static bool alog_reserve(mt_alog_worker_t *aw, size_t n)
{
    if (aw->len + n <= aw->cap)
        return true;
    size_t cap = aw->cap ? aw->cap : ALOG_FLUSH_AT + 2 * ALOG_LINE_MAX;
    while (cap < aw->len + n)
        cap *= 2;
    char *p = realloc(aw->buf, cap);
    if (!p)
        return false;
    memset(p + aw->cap, 0, cap - aw->cap); /* alog_copy_plain reads past a short value */
    aw->buf = p;
    aw->cap = cap;
    return true;
}

/*
 * A line is written through a cursor into room reserved once for the longest line there can
 * be: every string value is cut at ALOG_VALUE_MAX bytes and grows at most 6x when escaped;
 * literal runs are copied 16 bytes at a time (their storage is padded), so a line may write
 * up to 15 bytes past its end (inside the room, overwritten by the next line).
 */
#define ALOG_VALUE_MAX 256
#define ALOG_LINE_ROOM (MT_ALOG_FIELD_COUNT * (ALOG_VALUE_MAX * 6 + 48) + 4096)

static inline char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

/* A literal whose storage has ALOG_PAD readable bytes after it: fixed-size copies the
 * compiler inlines, instead of a call to memcpy for every short piece of a line. */
static inline char *put_lit(char *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i += 16)
        memcpy(o + i, s + i, 16);
    return o + n;
}

/* Bytes a value may hold as they are: printable ASCII, and in JSON not '"' or '\'. */
static bool alog_plain_json[256], alog_plain_text[256];

static void alog_plain_init(void)
{
    for (int c = 0x20; c < 0x7f; c++) {
        alog_plain_text[c] = true;
        alog_plain_json[c] = c != '"' && c != '\\';
    }
}

/* ---- values ------------------------------------------------------------------------------- */

#if defined(__SSE2__)
/* The bytes of v that need escaping, as a 16-bit mask: control bytes and non-ASCII (signed,
 * bytes >= 0x80 are negative, below ' ' as the control bytes are), DEL, and in JSON '"' and
 * '\'. */
static inline __attribute__((always_inline)) unsigned alog_bad_mask(__m128i v, bool json)
{
    __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                               _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f)));
    if (json)
        bad = _mm_or_si128(bad, _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                             _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
    return (unsigned)_mm_movemask_epi8(bad);
}
#endif

/*
 * Copies s[0, n) to o and returns the length of its prefix that needs no escaping (n: all of
 * it; then o holds the value). With SSE2, 16 bytes per step and never a read past s + n: the
 * last step overlaps the one before; a value under 16 bytes is copied in two overlapping
 * pieces and checked where it was copied to, which may read up to 15 bytes past o + n (the
 * line buffer's room, zeroed when allocated; those bytes are masked out).
 */
static inline __attribute__((always_inline)) size_t alog_copy_plain(char *o, const char *s,
                                                                    size_t n, bool json)
{
#if defined(__SSE2__)
    if (n >= 16) {
        size_t i = 0;
        for (; i + 16 <= n; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
            _mm_storeu_si128((__m128i *)(void *)(o + i), v);
            unsigned mask = alog_bad_mask(v, json);
            if (mask)
                return i + (size_t)__builtin_ctz(mask);
        }
        if (i == n)
            return n;
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + n - 16));
        _mm_storeu_si128((__m128i *)(void *)(o + n - 16), v);
        unsigned mask = alog_bad_mask(v, json); /* the bytes before i were checked above */
        return mask ? n - 16 + (size_t)__builtin_ctz(mask) : n;
    }
    if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(o, &a, 8);
        memcpy(o + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(o, &a, 4);
        memcpy(o + n - 4, &b, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            o[i] = s[i];
    }
    unsigned mask = alog_bad_mask(_mm_loadu_si128((const __m128i *)(const void *)o), json);
    mask &= (1u << n) - 1;
    return mask ? (size_t)__builtin_ctz(mask) : n;
#else
    const bool *plain = json ? alog_plain_json : alog_plain_text;
    size_t i = 0;
    while (i < n && plain[(unsigned char)s[i]]) {
        o[i] = s[i];
        i++;
    }
    return i;
#endif
}

/* A string as JSON's content (quotes added by the caller), or as text; control bytes and
 * non-ASCII are escaped in both, so a line is always one line. Plain runs are copied whole. */
static __attribute__((noinline, cold)) char *put_escaped(char *o, const char *s, size_t n,
                                                         bool json)
{
    static const char hex[] = "0123456789abcdef";
    const bool *plain = json ? alog_plain_json : alog_plain_text;
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && plain[(unsigned char)s[run]])
            run++;
        o = put(o, s + i, run - i);
        if (run == n)
            break;
        unsigned char ch = (unsigned char)s[run];
        if (json && (ch == '"' || ch == '\\')) {
            *o++ = '\\';
            *o++ = (char)ch;
        } else {
            o = json ? PUT_LIT(o, "\\u00") : PUT_LIT(o, "\\x");
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
        i = run + 1;
    }
    return o;
}

/* A value copied as it is and checked on the way (the common case: nothing to escape); from
 * the first byte that needs it, written through put_escaped. */
static inline __attribute__((always_inline)) char *put_value(char *o, const char *s, size_t n,
                                                             bool json)
{
    size_t k = alog_copy_plain(o, s, n, json);
    if (MT_LIKELY(k == n))
        return o + n;
    return put_escaped(o + k, s + k, n - k, json);
}

/* Decimal digits of v, without printf; one and two digits (durations, small sizes) without
 * the loop. */
static inline char *put_u64(char *o, uint64_t v)
{
    if (v < 10) {
        *o = (char)('0' + v);
        return o + 1;
    }
    if (v < 100) {
        o[0] = (char)('0' + v / 10);
        o[1] = (char)('0' + v % 10);
        return o + 2;
    }
    char tmp[20];
    int i = 20;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return put(o, tmp + i, (size_t)(20 - i));
}

/* RFC 3339 with milliseconds, UTC, of a now_ns instant; the second's text is cached and the
 * offset to the wall clock is read again once a second. */
static char *put_time(mt_alog_worker_t *aw, char *o, uint64_t at_ns)
{
    if (!aw->clock_checked_ns || at_ns > aw->clock_checked_ns + 1000000000ull ||
        at_ns + 1000000000ull < aw->clock_checked_ns) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t now = uv_hrtime();
        aw->clock_offset_ns =
            (int64_t)((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) - (int64_t)now;
        aw->clock_checked_ns = now;
    }
    uint64_t wall = (uint64_t)((int64_t)at_ns + aw->clock_offset_ns);
    uint64_t sec = wall / 1000000000ull;
    if (sec != aw->sec_cached) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        aw->sec_len = strftime(aw->sec_text, sizeof(aw->sec_text), "%Y-%m-%dT%H:%M:%S", &tm);
        aw->sec_cached = sec;
    }
    unsigned ms = (unsigned)((wall / 1000000ull) % 1000);
    memcpy(o, aw->sec_text, sizeof(aw->sec_text)); /* a fixed size: a few stores */
    o += aw->sec_len;
    *o++ = '.';
    *o++ = (char)('0' + ms / 100);
    *o++ = (char)('0' + ms / 10 % 10);
    *o++ = (char)('0' + ms % 10);
    *o++ = 'Z';
    return o;
}

static char *put_flags(char *o, uint32_t flags)
{
    if (!flags) {
        *o++ = '-';
        return o;
    }
    bool first = true;
    for (unsigned i = 0; i < MT_RF_COUNT; i++) {
        if (flags & (1u << i)) {
            if (!first)
                *o++ = ',';
            o = put(o, mt_rflag_names[i], strlen(mt_rflag_names[i]));
            first = false;
        }
    }
    return o;
}

/* A string value (n 0: NUL-terminated), cut at ALOG_VALUE_MAX bytes: quoted in JSON, where
 * none is null; "-" for none in text. */
static inline __attribute__((always_inline)) char *put_str(char *o, const char *s, size_t n,
                                                           bool json)
{
    if (s && !n)
        n = strnlen(s, ALOG_VALUE_MAX);
    if (!s || !n)
        return json ? PUT_LIT(o, "null") : PUT_LIT(o, "-");
    if (json)
        *o++ = '"';
    o = put_value(o, s, MT_MIN(n, (size_t)ALOG_VALUE_MAX), json);
    if (json)
        *o++ = '"';
    return o;
}

static inline uint64_t alog_duration_ms(const mt_alog_entry_t *e)
{
    return e->end_ns > e->start_ns ? (e->end_ns - e->start_ns) / 1000000ull : 0;
}

/* UPSTREAM_HOST: the string, or the address and port apart. */
static inline __attribute__((always_inline)) char *put_upstream(char *o, const mt_alog_entry_t *e,
                                                                bool json)
{
    if (e->upstream_host || !e->upstream_addr)
        return put_str(o, e->upstream_host, 0, json);
    if (json)
        *o++ = '"';
    o = put_value(o, e->upstream_addr, MT_MIN(e->upstream_addr_len, (size_t)ALOG_VALUE_MAX), json);
    *o++ = ':';
    o = put_u64(o, e->upstream_port);
    if (json)
        *o++ = '"';
    return o;
}

/* One field's value; strings are quoted in JSON, "-" stands for none in text, null in JSON. */
static char *put_field(mt_alog_worker_t *aw, char *o, const mt_alog_entry_t *e, mt_alog_field_t f,
                       bool json)
{
    const char *s = NULL;
    size_t n = 0;
    switch (f) {
    case MT_ALOG_START_TIME:
        if (json)
            *o++ = '"';
        o = put_time(aw, o, e->start_ns);
        if (json)
            *o++ = '"';
        return o;
    case MT_ALOG_DURATION:
        return put_u64(o, alog_duration_ms(e));
    case MT_ALOG_BYTES_RECEIVED:
        return put_u64(o, e->bytes_in);
    case MT_ALOG_BYTES_SENT:
        return put_u64(o, e->bytes_out);
    case MT_ALOG_CONNECTION_ID:
        return put_u64(o, e->connection_id);
    case MT_ALOG_FRAMES_RECEIVED:
    case MT_ALOG_FRAMES_SENT:
        if (!e->stream_end)
            return put_str(o, NULL, 0, json);
        return put_u64(o, f == MT_ALOG_FRAMES_SENT ? e->frames_out : e->frames_in);
    case MT_ALOG_STREAM_END:
        s = e->stream_end;
        break;
    case MT_ALOG_RESPONSE_FLAGS:
        if (json)
            *o++ = '"';
        o = put_flags(o, e->flags);
        if (json)
            *o++ = '"';
        return o;
    case MT_ALOG_LISTENER:
        s = e->listener;
        break;
    case MT_ALOG_PROTOCOL:
        s = e->protocol;
        break;
    case MT_ALOG_DOWNSTREAM_REMOTE_ADDRESS:
        s = e->peer;
        break;
    case MT_ALOG_UPSTREAM_HOST:
        return put_upstream(o, e, json);
    case MT_ALOG_UPSTREAM_CLUSTER:
        s = e->cluster;
        break;
    case MT_ALOG_SERVICE:
        s = e->service;
        break;
    case MT_ALOG_ROUTE_NAME:
        s = e->route;
        break;
    case MT_ALOG_SUBSET:
        s = e->subset;
        break;
    case MT_ALOG_COMMAND:
    case MT_ALOG_METHOD:
        s = e->op;
        n = e->op_len;
        break;
    case MT_ALOG_RESPONSE_CODE:
        s = e->code;
        break;
    case MT_ALOG_TRACE_ID:
        s = e->trace_id;
        break;
    default:
        break;
    }
    return put_str(o, s, n, json);
}

/*
 * A JSON line: its fields in a fixed order (Envoy's names, lower case), written as straight
 * code, so every key is a copy of known size the compiler turns into a few stores and no
 * field is looked up in a table.
 */
static char *alog_json_line(mt_alog_worker_t *aw, char *o, const mt_alog_entry_t *e)
{
    o = PUT_LIT(o, "{\"start_time\":\"");
    o = put_time(aw, o, e->start_ns);
    o = PUT_LIT(o, "\",\"duration\":");
    o = put_u64(o, alog_duration_ms(e));
    o = PUT_LIT(o, ",\"listener\":");
    o = put_str(o, e->listener, 0, true);
    o = PUT_LIT(o, ",\"protocol\":");
    o = put_str(o, e->protocol, 0, true);
    o = PUT_LIT(o, ",\"downstream_remote_address\":");
    o = put_str(o, e->peer, 0, true);
    o = PUT_LIT(o, ",\"upstream_host\":");
    o = put_upstream(o, e, true);
    o = PUT_LIT(o, ",\"upstream_cluster\":");
    o = put_str(o, e->cluster, 0, true);
    o = PUT_LIT(o, ",\"service\":");
    o = put_str(o, e->service, 0, true);
    o = PUT_LIT(o, ",\"route_name\":");
    o = put_str(o, e->route, 0, true);
    o = PUT_LIT(o, ",\"subset\":");
    o = put_str(o, e->subset, 0, true);
    o = PUT_LIT(o, ",\"command\":");
    o = put_str(o, e->op, e->op_len, true);
    o = PUT_LIT(o, ",\"response_code\":");
    o = put_str(o, e->code, 0, true);
    o = PUT_LIT(o, ",\"response_flags\":\"");
    o = put_flags(o, e->flags);
    o = PUT_LIT(o, "\",\"bytes_received\":");
    o = put_u64(o, e->bytes_in);
    o = PUT_LIT(o, ",\"bytes_sent\":");
    o = put_u64(o, e->bytes_out);
    o = PUT_LIT(o, ",\"trace_id\":");
    o = put_str(o, e->trace_id, 0, true);
    o = PUT_LIT(o, ",\"connection_id\":");
    o = put_u64(o, e->connection_id);
    if (MT_UNLIKELY(e->stream_end != NULL)) { /* a stream's line: what a request has not */
        o = PUT_LIT(o, ",\"frames_received\":");
        o = put_u64(o, e->frames_in);
        o = PUT_LIT(o, ",\"frames_sent\":");
        o = put_u64(o, e->frames_out);
        o = PUT_LIT(o, ",\"stream_end\":");
        o = put_str(o, e->stream_end, 0, true);
    }
    *o++ = '}';
    return o;
}

void mt_alog_write(const mt_alog_conf_t *c, mt_alog_worker_t *aw, const mt_alog_entry_t *e)
{
    if (!alog_reserve(aw, ALOG_LINE_ROOM + c->literal_len + ALOG_PAD)) {
        aw->dropped++;
        return;
    }
    char *o = aw->buf + aw->len;
    if (c->json) {
        o = alog_json_line(aw, o, e);
    } else {
        for (uint32_t i = 0; i < c->n_segs; i++) {
            const mt_alog_seg_t *s = &c->segs[i];
            if (s->field == MT_ALOG_LITERAL)
                o = put_lit(o, s->text, s->len);
            else
                o = put_field(aw, o, e, s->field, false);
        }
    }
    *o++ = '\n';
    aw->len = (size_t)(o - aw->buf);
    if (aw->len >= ALOG_FLUSH_AT)
        mt_alog_flush(aw);
}
