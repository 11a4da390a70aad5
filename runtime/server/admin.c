/*
 * admin.c - the admin HTTP/1.1 server (see admin.h for the endpoints and limits).
 *
 * One client is a TCP handle, a timer and a fixed request buffer. A client is in one state
 * at a time:
 *   READING   -> parsing what arrived; reading is on; the timer bounds how long a request
 *                may take to arrive (slow clients cannot hold a slot forever)
 *   WRITING   -> one response in flight; reading is paused so a pipelining client cannot grow
 *                our memory; on completion either back to READING (keep-alive) or LINGERING
 *   LINGERING -> we sent FIN after a response with "Connection: close"; input is read and
 *                dropped until EOF or the linger timer, so the peer is not sent an RST that
 *                could destroy the response it has not read yet (the 413 case)
 *   CLOSING   -> uv_close issued on both handles; memory is freed when both have closed
 * The server struct itself is freed once its listener and every client have closed.
 *
 * HTTP parsing is http-parser's (Debian libhttp-parser-dev, 2.9), not libmicrohttpd's. The
 * choice: http-parser is a callback parser that owns no sockets, threads or timers, so it
 * slots into this libuv loop on the main thread as it is, and the connection caps with
 * oldest-idle eviction, the 5 s request / 30 s response timers, the lingering close after an
 * error and the paused reads during a write (all of which are tested) stay exactly as they
 * were. libmicrohttpd is a whole server: it accepts and reads itself, from its own threads
 * or from an fd-set/epoll loop of its own that libuv would have to drive through
 * MHD_get_fdset / MHD_run, its connection limits are a total and a per-IP count that refuse
 * new connections instead of evicting idle ones, and its timeouts are one per-connection
 * inactivity value; the security behaviour would have had to be rebuilt around it. What
 * stays ours is the small layer of callbacks over http-parser (see "request parsing"); it is
 * reached through mt_admin_http_parse alone, which tests/fuzz/fuzz_admin_http.c fuzzes.
 */
#include "runtime/server/admin.h"

#include "runtime/core/common.h"
#include "runtime/core/log.h"
#include "runtime/core/stats.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- types --------------------------------------------------------------------------------- */

typedef enum admin_client_state {
    ADMIN_CLIENT_READING = 0,
    ADMIN_CLIENT_WRITING,
    ADMIN_CLIENT_LINGERING,
    ADMIN_CLIENT_CLOSING,
} admin_client_state_t;

typedef struct admin_client {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    mt_admin_t *admin;
    struct admin_client *prev, *next; /* in admin->clients while not CLOSING; newest first */
    struct sockaddr_storage peer;     /* for the per-address cap; zeroed if unknown */
    admin_client_state_t state;
    int open_handles;      /* handles not yet closed; the client is freed at 0 */
    bool keep_alive;       /* after the response in flight */
    char *out;             /* response in flight; owned here, freed after the write */
    size_t in_len;         /* bytes buffered in `in` */
    size_t consumed;       /* length of the request being answered, dropped after the write */
    mt_admin_http_t *http; /* the request being received; reset for each one */
    char in[MT_ADMIN_MAX_REQUEST];
} admin_client_t;

struct mt_admin {
    uv_loop_t *loop;
    uv_tcp_t listener;
    mt_admin_hooks_t hooks;
    admin_client_t *clients;
    unsigned nclients;              /* allocated clients, closing ones included */
    unsigned nlinked;               /* clients in the list: not closing */
    bool has_token;                 /* mutating endpoints need "Authorization: Bearer <token>" */
    unsigned char token_sha256[32]; /* only the digest is kept, never the token itself */
    bool listener_open;
    bool stopping;
    int port;
};

typedef struct admin_response {
    int status;
    const char *content_type;
    const char *allow;            /* Allow header for 405, else NULL */
    const char *www_authenticate; /* WWW-Authenticate header for 401, else NULL */
    char *body;                   /* malloc'd, may be NULL for an empty body */
    size_t body_len;
} admin_response_t;

/* ---- helpers ------------------------------------------------------------------------------- */

static char *admin_strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *admin_strdup_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static const char *admin_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

static void admin_response_text(admin_response_t *r, int status, const char *text)
{
    r->status = status;
    r->content_type = "text/plain; charset=utf-8";
    r->body = strdup(text);
    r->body_len = r->body ? strlen(text) : 0;
}

/* ---- request parsing ----------------------------------------------------------------------- */

/*
 * http-parser does the HTTP/1.1 grammar: request line, header syntax, Content-Length (digits,
 * duplicates, with Transfer-Encoding), Connection and the version's keep-alive default, where
 * the request ends. It is resumable: each read feeds only the new bytes. Ours are the
 * callbacks below, which keep spans of the connection's buffer (the bytes never move while a
 * request is parsed, so a span that arrives in two reads is still contiguous) and apply our
 * rules on top: origin-form targets only, no obsolete line folding, no Transfer-Encoding
 * (411), one Host, the Host split into name and port, the bearer token, the size limit.
 */

#define ADMIN_HTTP_MAX_METHOD 32 /* methods http-parser does not know, e.g. "get": bytes */

typedef enum admin_http_span {
    ADMIN_HTTP_NONE = 0,
    ADMIN_HTTP_URL,
    ADMIN_HTTP_FIELD,
    ADMIN_HTTP_VALUE,
} admin_http_span_t;

struct mt_admin_http {
    http_parser parser;
    size_t fed;             /* bytes of the request given to the parser so far */
    const char *end;        /* the end of the bytes received (callbacks must not read past) */
    size_t header_len;      /* request line + headers, once they are complete */
    admin_http_span_t last; /* what the last data callback was about */
    const char *url, *name, *value; /* spans being collected, in the caller's buffer */
    size_t url_len, name_len, value_len;
    bool method_unknown; /* a token http-parser does not know: we parsed it (see below) */
    bool headers_done, complete, failed;
    mt_admin_request_t rq;
};

static bool admin_token_eq(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

/* RFC 9110 token characters (method names). */
static bool admin_is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int admin_http_fail(mt_admin_http_t *h, int status)
{
    h->rq.error_status = status;
    return -1; /* http-parser stops with HPE_CB_<callback> */
}

/* ":port" as snprintf("%d") prints it (no sign, no leading zero), or nothing (80). */
static int admin_http_port(const char *s, size_t n)
{
    if (n == 0)
        return 80;
    if (s[0] != ':' || n < 2 || n > 6 || s[1] == '0')
        return -1;
    int port = 0;
    for (size_t i = 1; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        port = port * 10 + (s[i] - '0');
    }
    return port <= 65535 ? port : -1;
}

/* Host: "name:port" or "name"; name may be an IPv6 literal in brackets. */
static void admin_http_split_host(mt_admin_request_t *rq)
{
    const char *v = rq->host;
    size_t n = rq->host_len, name_len = n;
    const char *end = n > 0 && v[0] == '[' ? memchr(v, ']', n) : memchr(v, ':', n);
    if (end != NULL)
        name_len = (size_t)(end - v) + (v[0] == '[' ? 1 : 0);
    rq->host_name = v;
    rq->host_name_len = name_len;
    rq->host_port = admin_http_port(v + name_len, n - name_len);
}

/* Authorization: "Bearer <token>" (scheme case-insensitive); the last header wins. */
static void admin_http_bearer(mt_admin_request_t *rq, const char *v, size_t n)
{
    static const char scheme[] = "Bearer ";
    size_t sl = sizeof(scheme) - 1;
    rq->bearer = NULL;
    rq->bearer_len = 0;
    if (n <= sl || strncasecmp(v, scheme, sl) != 0)
        return;
    v += sl;
    n -= sl;
    while (n > 0 && *v == ' ') {
        v++;
        n--;
    }
    rq->bearer = v;
    rq->bearer_len = n;
}

/* The span being collected is complete. */
static int admin_http_end_span(mt_admin_http_t *h)
{
    mt_admin_request_t *rq = &h->rq;
    admin_http_span_t last = h->last;
    h->last = ADMIN_HTTP_NONE;
    if (last == ADMIN_HTTP_URL) {
        const char *q = memchr(h->url, '?', h->url_len);
        rq->path = h->url;
        rq->path_len = q ? (size_t)(q - h->url) : h->url_len;
        rq->query = q ? q + 1 : NULL;
        rq->query_len = q ? h->url_len - rq->path_len - 1 : 0;
        return 0;
    }
    if (last != ADMIN_HTTP_VALUE)
        return 0;
    const char *v = h->value, *name = h->name;
    size_t n = h->value_len, name_len = h->name_len;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (admin_token_eq(name, name_len, "origin"))
        rq->has_origin = true;
    else if (admin_token_eq(name, name_len, "authorization"))
        admin_http_bearer(rq, v, n);
    else if (admin_token_eq(name, name_len, "host")) {
        if (rq->host != NULL)
            return admin_http_fail(h, 400); /* RFC 9112 3.2: more than one Host */
        rq->host = v;
        rq->host_len = n;
        admin_http_split_host(rq);
    }
    return 0;
}

static int admin_http_on_url(http_parser *p, const char *at, size_t n)
{
    mt_admin_http_t *h = p->data;
    if (h->last != ADMIN_HTTP_URL) {
        if (n == 0)
            return 0;
        if (at[0] != '/')
            return admin_http_fail(h, 400); /* origin-form only: no "*", no absolute URL */
        h->last = ADMIN_HTTP_URL;
        h->url = at;
        h->url_len = 0;
    }
    h->url_len += n;
    return 0;
}

static int admin_http_on_header_field(http_parser *p, const char *at, size_t n)
{
    mt_admin_http_t *h = p->data;
    if (h->last != ADMIN_HTTP_FIELD) {
        if (admin_http_end_span(h) != 0)
            return -1;
        h->last = ADMIN_HTTP_FIELD;
        h->name = at;
        h->name_len = 0;
    }
    h->name_len += n;
    if (at + n == h->end || at[n] != ':')
        return 0; /* the rest of the name comes with the next read */
    /* The name is complete at its ':', the same byte however the request was cut, so these
     * answers come before any error in the value, in one read or many. Debian builds
     * http-parser without HTTP_PARSER_STRICT, which lets a space into a name ("Host :"):
     * such a Host would go unseen by the checks of mutating endpoints. */
    for (size_t i = 0; i < h->name_len; i++) {
        if (!admin_is_tchar(h->name[i]))
            return admin_http_fail(h, 400);
    }
    if (admin_token_eq(h->name, h->name_len, "transfer-encoding"))
        return admin_http_fail(h, 411); /* we only take bodies with a Content-Length */
    return 0;
}

/* Between a header's name and its value only ':' and blanks: anything else (CR LF) is an
 * obsolete line fold, which http-parser joins and we refuse (RFC 9112 5.2). */
static bool admin_http_only_colon_ows(const char *from, const char *to)
{
    if (from >= to || *from != ':')
        return false;
    for (from++; from < to; from++) {
        if (*from != ' ' && *from != '\t')
            return false;
    }
    return true;
}

static int admin_http_on_header_value(http_parser *p, const char *at, size_t n)
{
    mt_admin_http_t *h = p->data;
    if (h->last == ADMIN_HTTP_FIELD) {
        /* An empty value is reported at the start of the next line: nothing to check. */
        if (n > 0 && !admin_http_only_colon_ows(h->name + h->name_len, at))
            return admin_http_fail(h, 400);
        h->last = ADMIN_HTTP_VALUE;
        h->value = at;
        h->value_len = 0;
    } else if (at != h->value + h->value_len) {
        return admin_http_fail(h, 400); /* a fold: the value goes on past a line end */
    }
    h->value_len += n;
    return 0;
}

static int admin_http_on_headers_complete(http_parser *p)
{
    mt_admin_http_t *h = p->data;
    mt_admin_request_t *rq = &h->rq;
    if (admin_http_end_span(h) != 0)
        return -1;
    if (p->http_major != 1 || p->http_minor > 1)
        return admin_http_fail(h, 505);
    if (!h->method_unknown) {
        rq->method = http_method_str((enum http_method)p->method);
        rq->method_len = strlen(rq->method);
        rq->head = p->method == HTTP_HEAD;
    }
    rq->keep_alive = http_should_keep_alive(p) != 0;
    if (p->flags & F_CONTENTLENGTH)
        rq->content_length = p->content_length > MT_ADMIN_MAX_REQUEST ? MT_ADMIN_MAX_REQUEST + 1
                                                                      : (size_t)p->content_length;
    h->headers_done = true;
    http_parser_pause(p, 1); /* so that the parse loop learns where the headers end */
    return 0;
}

static int admin_http_on_message_complete(http_parser *p)
{
    mt_admin_http_t *h = p->data;
    h->complete = true;
    http_parser_pause(p, 1); /* a pipelined request stays unparsed until this one is answered */
    return 0;
}

static const http_parser_settings admin_http_settings = {
    .on_url = admin_http_on_url,
    .on_header_field = admin_http_on_header_field,
    .on_header_value = admin_http_on_header_value,
    .on_headers_complete = admin_http_on_headers_complete,
    .on_message_complete = admin_http_on_message_complete,
};

void mt_admin_http_reset(mt_admin_http_t *h)
{
    memset(h, 0, sizeof(*h));
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
}

mt_admin_http_t *mt_admin_http_new(void)
{
    mt_admin_http_t *h = malloc(sizeof(*h));
    if (h != NULL)
        mt_admin_http_reset(h);
    return h;
}

void mt_admin_http_free(mt_admin_http_t *h)
{
    free(h);
}

/*
 * http-parser knows a fixed list of uppercase methods and stops at any other token ("get",
 * "FOO"), which used to get 405 on a known path and 404 elsewhere, and still does: when the
 * token is followed by a space we keep it as the method, then let http-parser parse the rest
 * of the request behind a stand-in method it knows. MT_AGAIN: the token may not be complete.
 */
static mt_status_t admin_http_unknown_method(mt_admin_http_t *h, const char *buf, size_t len)
{
    size_t start = 0;
    while (start < len && (buf[start] == '\r' || buf[start] == '\n'))
        start++; /* RFC 9112 2.2: empty lines before the request line are ignored */
    size_t end = start;
    while (end < len && end - start <= ADMIN_HTTP_MAX_METHOD && admin_is_tchar(buf[end]))
        end++;
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    h->fed = 0;
    if (end == len && end - start <= ADMIN_HTTP_MAX_METHOD)
        return MT_AGAIN; /* parsed again from the start with more bytes */
    if (end == start || end - start > ADMIN_HTTP_MAX_METHOD || buf[end] != ' ') {
        admin_http_fail(h, 400);
        return MT_ERROR;
    }
    static const char stand_in[] = "GET ";
    http_parser_execute(&h->parser, &admin_http_settings, stand_in, sizeof(stand_in) - 1);
    h->method_unknown = true;
    h->rq.method = buf + start;
    h->rq.method_len = end - start;
    h->fed = end + 1;
    return MT_OK;
}

static int admin_http_error_status(const mt_admin_http_t *h, enum http_errno e)
{
    switch (e) {
    case HPE_CB_url:
    case HPE_CB_header_field:
    case HPE_CB_header_value:
    case HPE_CB_headers_complete:
        return h->rq.error_status; /* set by our callback */
    case HPE_HEADER_OVERFLOW:
        return 413;
    case HPE_INVALID_VERSION:
        return 505; /* "HTTP/" then something else than 1.0 or 1.1 */
    case HPE_INVALID_TRANSFER_ENCODING:
        return 411;
    default:
        return 400;
    }
}

static mt_status_t admin_http_result(mt_admin_http_t *h, mt_status_t st, mt_admin_request_t *rq)
{
    if (st == MT_ERROR)
        h->failed = true;
    if (st != MT_AGAIN)
        *rq = h->rq;
    return st;
}

mt_status_t mt_admin_http_parse(mt_admin_http_t *h, const char *buf, size_t len,
                                mt_admin_request_t *rq)
{
    if (h->failed || h->complete)
        return admin_http_result(h, h->failed ? MT_ERROR : MT_OK, rq);
    if (len > MT_ADMIN_MAX_REQUEST)
        len = MT_ADMIN_MAX_REQUEST;
    h->end = buf + len;
    while (h->fed < len && !h->complete) {
        size_t n =
            http_parser_execute(&h->parser, &admin_http_settings, buf + h->fed, len - h->fed);
        h->fed += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
        if (e == HPE_INVALID_METHOD && !h->method_unknown) {
            mt_status_t st = admin_http_unknown_method(h, buf, len);
            if (st != MT_OK)
                return admin_http_result(h, st, rq);
            continue;
        }
        if (e == HPE_OK)
            continue;
        if (e != HPE_PAUSED) {
            h->rq.error_status = admin_http_error_status(h, e);
            return admin_http_result(h, MT_ERROR, rq);
        }
        http_parser_pause(&h->parser, 0);
        if (h->complete)
            break;
        /* Paused at the headers' last LF, which the parser has not consumed yet. */
        h->header_len = h->fed + 1;
        if (h->rq.content_length > MT_ADMIN_MAX_REQUEST - h->header_len) {
            h->rq.error_status = 413; /* refused before the body is sent */
            return admin_http_result(h, MT_ERROR, rq);
        }
    }
    if (h->complete) {
        h->rq.total_len = h->fed;
        return admin_http_result(h, MT_OK, rq);
    }
    if (len >= MT_ADMIN_MAX_REQUEST) {
        h->rq.error_status = 413;
        return admin_http_result(h, MT_ERROR, rq);
    }
    return MT_AGAIN;
}

/* ---- endpoints ----------------------------------------------------------------------------- */

typedef void (*admin_handler_t)(mt_admin_t *a, const mt_admin_request_t *rq, admin_response_t *r);

static void admin_handle_index(mt_admin_t *a, const mt_admin_request_t *rq, admin_response_t *r);

static void admin_handle_ready(mt_admin_t *a, const mt_admin_request_t *rq, admin_response_t *r)
{
    if (a->hooks.ready == NULL)
        admin_response_text(r, 501, "not implemented\n");
    else if (a->hooks.ready(a->hooks.ud))
        admin_response_text(r, 200, "ready\n");
    else {
        char *why = a->hooks.not_ready_why ? a->hooks.not_ready_why(a->hooks.ud) : NULL;
        admin_response_text(r, 503, why ? why : "not ready\n");
        free(why);
    }
}

static void admin_handle_prometheus(mt_admin_t *a, const mt_admin_request_t *rq,
                                    admin_response_t *r)
{
    r->status = 200;
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    r->body = mt_stats_render_prometheus(&r->body_len);
}

/* The value of name=... in the query (not decoded: the values we take are plain words). */
static bool admin_query_param(const mt_admin_request_t *rq, const char *name, const char **v,
                              size_t *vlen)
{
    size_t n = strlen(name);
    const char *p = rq->query, *end = rq->query ? rq->query + rq->query_len : NULL;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > n && memcmp(p, name, n) == 0 && p[n] == '=') {
            *v = p + n + 1;
            *vlen = (size_t)(stop - p - (ptrdiff_t)n - 1);
            return true;
        }
        p = amp ? amp + 1 : NULL;
    }
    return false;
}

static bool admin_query_is(const mt_admin_request_t *rq, const char *name, const char *want)
{
    const char *v;
    size_t n;
    return admin_query_param(rq, name, &v, &n) && n == strlen(want) && memcmp(v, want, n) == 0;
}

/* POST /logging?level=debug|info|warn|error|off: the log level, now, for every thread. */
static void admin_handle_logging(mt_admin_t *a, const mt_admin_request_t *rq, admin_response_t *r)
{
    MT_UNUSED(a);
    const char *v;
    size_t n;
    char level[16];
    if (!admin_query_param(rq, "level", &v, &n) || n == 0 || n >= sizeof(level)) {
        admin_response_text(r, 400, "usage: POST /logging?level=debug|info|warn|error|off\n");
        return;
    }
    memcpy(level, v, n);
    level[n] = '\0';
    int l = mt_log_level_parse(level);
    if (l < 0) {
        admin_response_text(r, 400, "unknown level: use debug, info, warn, error or off\n");
        return;
    }
    __atomic_store_n(&mt_log_threshold, (mt_log_level_t)l, __ATOMIC_RELAXED);
    mt_log_write(MT_LOG_INFO, "admin: log level is now %s", level);
    r->status = 200;
    r->content_type = "text/plain; charset=utf-8";
    r->body = admin_strdup_printf("log level: %s\n", level);
    r->body_len = r->body ? strlen(r->body) : 0;
}

/* /stats?format=json: every sample as {"name":..,"labels":{..},"value":..}. */
static char *admin_stats_json(const char *text, size_t len, size_t *out_len)
{
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    if (!f)
        return NULL;
    fputs("{\"stats\":[", f);
    bool first = true;
    for (size_t i = 0; i < len;) {
        const char *ln = text + i;
        const char *nl = memchr(ln, '\n', len - i);
        size_t ll = nl ? (size_t)(nl - ln) : len - i;
        i += ll + 1;
        if (ll == 0 || ln[0] == '#')
            continue;
        const char *sp = memrchr(ln, ' ', ll);
        const char *brace = memchr(ln, '{', ll);
        if (!sp)
            continue;
        size_t name_len = brace && brace < sp ? (size_t)(brace - ln) : (size_t)(sp - ln);
        fprintf(f, "%s{\"name\":\"%.*s\",\"labels\":{", first ? "" : ",", (int)name_len, ln);
        first = false;
        if (brace && brace < sp) {
            /* the label values are escaped as Prometheus does (\\ \" \n): valid in JSON too */
            const char *p = brace + 1, *end = sp - 1; /* end: the closing brace */
            bool lfirst = true;
            while (p < end) {
                const char *eq = memchr(p, '=', (size_t)(end - p));
                if (!eq || eq + 1 >= end || eq[1] != '"')
                    break;
                const char *q = eq + 2;
                while (q < end && !(*q == '"' && q[-1] != '\\'))
                    q++;
                fprintf(f, "%s\"%.*s\":\"%.*s\"", lfirst ? "" : ",", (int)(eq - p), p,
                        (int)(q - eq - 2), eq + 2);
                lfirst = false;
                p = q + 1;
                if (p < end && *p == ',')
                    p++;
            }
        }
        const char *val = sp + 1;
        size_t vl = (size_t)(ln + ll - val);
        bool numeric = vl > 0 && strspn(val, "0123456789.-+eE") == vl;
        if (numeric)
            fprintf(f, "},\"value\":%.*s}", (int)vl, val);
        else
            fprintf(f, "},\"value\":\"%.*s\"}", (int)vl, val);
    }
    fputs("]}\n", f);
    fclose(f);
    *out_len = n;
    return out;
}

/* The status page (runtime/server/status.html, embedded by cmake/embed_file.cmake). */
extern const char mt_status_page[];
extern const size_t mt_status_page_len;

/* /: a live status page; everything it shows comes from the JSON endpoints, once a second. */
static void admin_handle_status(mt_admin_t *a, const mt_admin_request_t *rq, admin_response_t *r)
{
    MT_UNUSED(a);
    MT_UNUSED(rq);
    r->status = 200;
    r->content_type = "text/html; charset=utf-8";
    r->body = malloc(mt_status_page_len + 1);
    if (!r->body) {
        admin_response_text(r, 500, "internal error\n");
        return;
    }
    memcpy(r->body, mt_status_page, mt_status_page_len + 1);
    r->body_len = mt_status_page_len;
}

/* /healthz: the process is alive and its admin loop answers (liveness; /ready is readiness). */
static void admin_handle_healthz(mt_admin_t *a, const mt_admin_request_t *rq, admin_response_t *r)
{
    MT_UNUSED(a);
    admin_response_text(r, 200, "ok\n");
}

/* /server_info: what runs, since when, on which configuration generation (JSON). */
static void admin_handle_server_info(mt_admin_t *a, const mt_admin_request_t *rq,
                                     admin_response_t *r)
{
    const mt_stats_global_t *g = &mt_stats_global;
    bool ready = a->hooks.ready && a->hooks.ready(a->hooks.ud);
    double uptime = mt_stats_uptime();
    const mt_stats_identity_t *id = mt_stats_identity();
    r->status = 200;
    r->content_type = "application/json";
    r->body = admin_strdup_printf(
        "{\"version\":\"%s\",\"state\":\"%s\",\"uptime_seconds\":%.3f,"
        "\"config_generation\":%llu,\"config_reloads\":%llu,\"config_reload_failures\":%llu,"
        "\"workers\":%u,\"pid\":%ld,\"workload\":\"%s\",\"namespace\":\"%s\"}\n",
        MELTEMI_VERSION, ready ? "LIVE" : "INITIALIZING", uptime,
        (unsigned long long)g->config_generation, (unsigned long long)g->config_reloads,
        (unsigned long long)g->config_reload_failures, mt_stats_nworkers, (long)getpid(),
        id->workload, id->namespace);
    r->body_len = r->body ? strlen(r->body) : 0;
}

/* /stats: the same samples without the # HELP / # TYPE lines, for humans; ?format=json. */
static void admin_handle_stats(mt_admin_t *a, const mt_admin_request_t *rq, admin_response_t *r)
{
    size_t len;
    char *text = mt_stats_render_prometheus(&len);
    if (admin_query_is(rq, "format", "json")) {
        r->status = 200;
        r->content_type = "application/json";
        r->body = admin_stats_json(text, len, &r->body_len);
        free(text);
        if (!r->body)
            admin_response_text(r, 500, "internal error\n");
        return;
    }
    size_t out = 0;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t line_end = nl ? (size_t)(nl - text) + 1 : len;
        if (text[i] != '#') {
            memmove(text + out, text + i, line_end - i);
            out += line_end - i;
        }
        i = line_end;
    }
    r->status = 200;
    r->content_type = "text/plain; charset=utf-8";
    r->body = text;
    r->body_len = out;
}

static const char *admin_guess_type(const char *body, size_t len)
{
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
        i++;
    if (i < len && (body[i] == '{' || body[i] == '['))
        return "application/json";
    return "text/plain; charset=utf-8";
}

static void admin_handle_dump_hook(admin_response_t *r, char *(*hook)(void *, size_t *), void *ud,
                                   const char *content_type)
{
    if (hook == NULL) {
        admin_response_text(r, 501, "not implemented\n");
        return;
    }
    size_t len = 0;
    char *body = hook(ud, &len);
    if (body == NULL) {
        admin_response_text(r, 500, "internal error\n");
        return;
    }
    r->status = 200;
    r->content_type = content_type ? content_type : admin_guess_type(body, len);
    r->body = body;
    r->body_len = len;
}

static void admin_handle_config_dump(mt_admin_t *a, const mt_admin_request_t *rq,
                                     admin_response_t *r)
{
    admin_handle_dump_hook(r, a->hooks.config_dump, a->hooks.ud, "application/json");
}

static void admin_handle_clusters(mt_admin_t *a, const mt_admin_request_t *rq, admin_response_t *r)
{
    if (a->hooks.clusters == NULL) {
        admin_response_text(r, 501, "not implemented\n");
        return;
    }
    bool json = admin_query_is(rq, "format", "json");
    size_t len = 0;
    char *body = a->hooks.clusters(a->hooks.ud, json, &len);
    if (body == NULL) {
        admin_response_text(r, 500, "internal error\n");
        return;
    }
    r->status = 200;
    r->content_type = json ? "application/json" : "text/plain; charset=utf-8";
    r->body = body;
    r->body_len = len;
}

static void admin_handle_reload(mt_admin_t *a, const mt_admin_request_t *rq, admin_response_t *r)
{
    if (a->hooks.reload == NULL) {
        admin_response_text(r, 501, "not implemented\n");
        return;
    }
    char *msg = NULL;
    int rc = a->hooks.reload(a->hooks.ud, &msg);
    int status = rc == 0 ? 200 : 400;
    const char *text = msg ? msg : (rc == 0 ? "reloaded" : "reload rejected");
    size_t n = strlen(text);
    /* Always end with a newline, so `curl -X POST .../reload` prints cleanly. */
    if (n > 0 && text[n - 1] == '\n')
        admin_response_text(r, status, text);
    else {
        r->status = status;
        r->content_type = "text/plain; charset=utf-8";
        r->body = admin_strdup_printf("%s\n", text);
        r->body_len = r->body ? n + 1 : 0;
    }
    free(msg);
}

typedef struct admin_route {
    const char *path;
    const char *method; /* "GET" (HEAD too) or "POST" */
    admin_handler_t handler;
    const char *help;
} admin_route_t;

static const admin_route_t admin_routes[] = {
    {"/", "GET", admin_handle_status, "a live status page (HTML, updates every second)"},
    {"/help", "GET", admin_handle_index, "this list"},
    {"/ready", "GET", admin_handle_ready, "200 when serving a configuration, else 503"},
    {"/stats", "GET", admin_handle_stats, "all metrics, one sample per line"},
    {"/stats/prometheus", "GET", admin_handle_prometheus, "all metrics, Prometheus text format"},
    {"/metrics", "GET", admin_handle_prometheus, "the same as /stats/prometheus"},
    {"/healthz", "GET", admin_handle_healthz, "200 while the process runs (liveness)"},
    {"/server_info", "GET", admin_handle_server_info,
     "version, state, uptime, configuration generation (JSON)"},
    {"/config_dump", "GET", admin_handle_config_dump,
     "the configuration served (JSON, secrets "
     "redacted)"},
    {"/clusters", "GET", admin_handle_clusters, "upstream clusters and their endpoints"},
    {"/reload", "POST", admin_handle_reload, "reload the configuration directory now"},
    {"/logging", "POST", admin_handle_logging, "?level=debug|info|warn|error|off: the log level"},
};

static void admin_handle_index(mt_admin_t *a, const mt_admin_request_t *rq, admin_response_t *r)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL) {
        admin_response_text(r, 500, "internal error\n");
        return;
    }
    fprintf(f, "meltemi %s admin\n\n", MELTEMI_VERSION);
    for (size_t i = 0; i < MT_ARRAY_LEN(admin_routes); i++)
        fprintf(f, "  %-5s %-18s %s\n", admin_routes[i].method, admin_routes[i].path,
                admin_routes[i].help);
    fclose(f);
    r->status = 200;
    r->content_type = "text/plain; charset=utf-8";
    r->body = text;
    r->body_len = len;
}

static bool admin_method_allowed(const admin_route_t *route, const mt_admin_request_t *rq)
{
    /* Methods are case-sensitive (RFC 9110 9.1). */
    if (rq->method_len == strlen(route->method) &&
        memcmp(rq->method, route->method, rq->method_len) == 0)
        return true;
    return strcmp(route->method, "GET") == 0 && rq->head;
}

/* ---- who may call a mutating endpoint ------------------------------------------------------ */

/* The address this connection arrived on, as a Host header names it: "10.0.0.5", "[fe80::1]";
 * an IPv4-mapped IPv6 address in its IPv4 form. Empty string if unknown. */
static void admin_local_name(const admin_client_t *c, char *out, size_t size)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];
    out[0] = '\0';
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        if (inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip)))
            snprintf(out, size, "%s", ip);
        return;
    }
    const struct in6_addr *a6 = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6)) {
        if (inet_ntop(AF_INET, &a6->s6_addr[12], ip, sizeof(ip)))
            snprintf(out, size, "%s", ip);
    } else if (inet_ntop(AF_INET6, a6, ip, sizeof(ip))) {
        snprintf(out, size, "[%s]", ip);
    }
}

/* DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 still sends
 * "Host: evil.example:15000". A request without Host is not from a browser (they always
 * send one) and passes. */
static bool admin_host_allowed(const admin_client_t *c, const mt_admin_request_t *rq)
{
    if (rq->host == NULL)
        return true;
    if (rq->host_port != c->admin->port)
        return false; /* no port means 80; a malformed port is -1 */
    static const char *const loopback[] = {"127.0.0.1", "localhost", "[::1]"};
    for (size_t i = 0; i < MT_ARRAY_LEN(loopback); i++) {
        if (admin_token_eq(rq->host_name, rq->host_name_len, loopback[i]))
            return true; /* names compare case-insensitively (DNS names, IPv6 hex) */
    }
    char local[INET6_ADDRSTRLEN + 2];
    admin_local_name(c, local, sizeof(local));
    return local[0] != '\0' && admin_token_eq(rq->host_name, rq->host_name_len, local);
}

/* Constant-time: compares SHA-256 digests, so neither the token nor its length leaks through
 * timing. */
static bool admin_token_ok(const mt_admin_t *a, const mt_admin_request_t *rq)
{
    if (rq->bearer == NULL)
        return false;
    unsigned char got[EVP_MAX_MD_SIZE];
    unsigned int got_len = 0;
    if (!EVP_Digest(rq->bearer, rq->bearer_len, got, &got_len, EVP_sha256(), NULL) ||
        got_len != sizeof(a->token_sha256))
        return false;
    return CRYPTO_memcmp(got, a->token_sha256, sizeof(a->token_sha256)) == 0;
}

/* Returns true if the request may go on; else fills r with the refusal (403 or 401). */
static bool admin_mutation_allowed(const admin_client_t *c, const mt_admin_request_t *rq,
                                   admin_response_t *r)
{
    if (rq->has_origin) {
        admin_response_text(r, 403,
                            "forbidden: requests with an Origin header (sent by web browsers) "
                            "may not call mutating admin endpoints\n");
        return false;
    }
    if (!admin_host_allowed(c, rq)) {
        admin_response_text(r, 403,
                            "forbidden: the Host header must name the admin address "
                            "(127.0.0.1:PORT, localhost:PORT or [::1]:PORT) on mutating "
                            "admin endpoints\n");
        return false;
    }
    if (c->admin->has_token && !admin_token_ok(c->admin, rq)) {
        admin_response_text(r, 401,
                            "unauthorized: this endpoint needs \"Authorization: Bearer "
                            "<token>\" with the token of --admin-token-file\n");
        r->www_authenticate = "Bearer realm=\"meltemi-admin\"";
        return false;
    }
    return true;
}

static void admin_dispatch(admin_client_t *c, const mt_admin_request_t *rq, admin_response_t *r)
{
    mt_admin_t *a = c->admin;
    for (size_t i = 0; i < MT_ARRAY_LEN(admin_routes); i++) {
        const admin_route_t *route = &admin_routes[i];
        if (strlen(route->path) != rq->path_len || memcmp(route->path, rq->path, rq->path_len) != 0)
            continue;
        if (!admin_method_allowed(route, rq)) {
            admin_response_text(r, 405, "method not allowed\n");
            r->allow = strcmp(route->method, "GET") == 0 ? "GET, HEAD" : route->method;
            return;
        }
        if (strcmp(route->method, "GET") != 0 && !admin_mutation_allowed(c, rq, r))
            return;
        route->handler(a, rq, r);
        return;
    }
    admin_response_text(r, 404, "not found\n");
}

/* ---- connections --------------------------------------------------------------------------- */

static void admin_maybe_free(mt_admin_t *a)
{
    if (a->stopping && !a->listener_open && a->nclients == 0)
        free(a);
}

static void admin_on_client_close(uv_handle_t *h)
{
    admin_client_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    mt_admin_t *a = c->admin;
    free(c->out);
    mt_admin_http_free(c->http);
    free(c);
    a->nclients--;
    admin_maybe_free(a);
}

static void admin_client_close(admin_client_t *c)
{
    if (c->state == ADMIN_CLIENT_CLOSING)
        return;
    c->state = ADMIN_CLIENT_CLOSING;
    c->admin->nlinked--;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->admin->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    uv_close((uv_handle_t *)&c->tcp, admin_on_client_close);
    uv_close((uv_handle_t *)&c->timer, admin_on_client_close);
}

static void admin_on_timeout(uv_timer_t *t)
{
    admin_client_close(t->data);
}

static void admin_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    admin_client_t *c = h->data;
    if (c->state == ADMIN_CLIENT_LINGERING)
        c->in_len = 0; /* input after the last response is dropped */
    *buf = uv_buf_init(c->in + c->in_len, (unsigned)(sizeof(c->in) - c->in_len));
}

static void admin_client_process(admin_client_t *c);
static void admin_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void admin_on_shutdown(uv_shutdown_t *req, int status)
{
    admin_client_t *c = req->data;
    if (status < 0)
        admin_client_close(c);
}

/* After a "Connection: close" response: send FIN, then drop input until EOF or the timer. */
static void admin_client_linger(admin_client_t *c)
{
    c->state = ADMIN_CLIENT_LINGERING;
    c->in_len = 0;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, admin_on_shutdown) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, admin_on_alloc, admin_on_read) != 0) {
        admin_client_close(c);
        return;
    }
    uv_timer_start(&c->timer, admin_on_timeout, MT_ADMIN_LINGER_MS, 0);
}

static void admin_on_write(uv_write_t *req, int status)
{
    admin_client_t *c = req->data;
    free(c->out);
    c->out = NULL;
    if (c->state == ADMIN_CLIENT_CLOSING)
        return;
    if (status < 0) {
        admin_client_close(c);
        return;
    }
    if (!c->keep_alive || c->admin->stopping) {
        admin_client_linger(c);
        return;
    }
    /* Keep-alive: drop the answered request, then serve what is already buffered (pipelining)
     * before reading more. */
    memmove(c->in, c->in + c->consumed, c->in_len - c->consumed);
    c->in_len -= c->consumed;
    c->consumed = 0;
    mt_admin_http_reset(c->http);
    c->state = ADMIN_CLIENT_READING;
    uv_timer_start(&c->timer, admin_on_timeout, MT_ADMIN_IDLE_TIMEOUT_MS, 0);
    admin_client_process(c);
    if (c->state == ADMIN_CLIENT_READING &&
        uv_read_start((uv_stream_t *)&c->tcp, admin_on_alloc, admin_on_read) != 0)
        admin_client_close(c);
}

/* Serializes r (taking its body) and writes it; reading stays paused until the write ends. */
static void admin_client_send(admin_client_t *c, const mt_admin_request_t *rq, admin_response_t *r)
{
    char head[512];
    int n = snprintf(
        head, sizeof(head),
        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
        "Cache-Control: no-cache\r\nConnection: %s\r\n%s%s%s%s%s%s\r\n",
        r->status, admin_reason(r->status), r->content_type, r->body_len,
        c->keep_alive ? "keep-alive" : "close", r->allow ? "Allow: " : "", r->allow ? r->allow : "",
        r->allow ? "\r\n" : "", r->www_authenticate ? "WWW-Authenticate: " : "",
        r->www_authenticate ? r->www_authenticate : "", r->www_authenticate ? "\r\n" : "");
    size_t body_len = rq != NULL && rq->head ? 0 : r->body_len;
    c->out = malloc((size_t)n + body_len);
    if (c->out == NULL) {
        free(r->body);
        admin_client_close(c);
        return;
    }
    memcpy(c->out, head, (size_t)n);
    if (body_len > 0)
        memcpy(c->out + n, r->body, body_len);
    free(r->body);
    r->body = NULL;

    uv_read_stop((uv_stream_t *)&c->tcp);
    c->state = ADMIN_CLIENT_WRITING;
    c->write_req.data = c;
    uv_buf_t buf = uv_buf_init(c->out, (unsigned)((size_t)n + body_len));
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &buf, 1, admin_on_write) != 0) {
        admin_client_close(c);
        return;
    }
    uv_timer_start(&c->timer, admin_on_timeout, MT_ADMIN_WRITE_TIMEOUT_MS, 0);
}

static void admin_client_process(admin_client_t *c)
{
    mt_admin_request_t rq;
    admin_response_t r = {0};
    mt_status_t st = mt_admin_http_parse(c->http, c->in, c->in_len, &rq);
    if (st == MT_AGAIN)
        return;
    if (st == MT_ERROR) {
        c->keep_alive = false; /* the framing is unknown after an error: close */
        r.status = rq.error_status;
        r.content_type = "text/plain; charset=utf-8";
        r.body = admin_strdup_printf("%d %s\n", r.status, admin_reason(r.status));
        r.body_len = r.body ? strlen(r.body) : 0;
        admin_client_send(c, NULL, &r);
        return;
    }
    c->keep_alive = rq.keep_alive;
    c->consumed = rq.total_len;
    admin_dispatch(c, &rq, &r);
    /* A handler that ran out of memory, or a hook that stopped the server (not supported, but
     * must not write to a closing handle). */
    if ((r.body == NULL && r.body_len > 0) || c->state == ADMIN_CLIENT_CLOSING) {
        free(r.body);
        admin_client_close(c);
        return;
    }
    admin_client_send(c, &rq, &r);
}

static void admin_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    admin_client_t *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        admin_client_close(c); /* EOF, reset, or ENOBUFS (cannot happen: we pause first) */
        return;
    }
    if (c->state == ADMIN_CLIENT_LINGERING)
        return;
    c->in_len += (size_t)nread;
    admin_client_process(c);
}

/* Same peer IP (the port does not matter); an unknown peer matches nothing. */
static bool admin_same_peer(const struct sockaddr_storage *x, const struct sockaddr_storage *y)
{
    if (x->ss_family != y->ss_family)
        return false;
    if (x->ss_family == AF_INET)
        return ((const struct sockaddr_in *)x)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)y)->sin_addr.s_addr;
    if (x->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)x)->sin6_addr,
                      &((const struct sockaddr_in6 *)y)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return false;
}

static unsigned admin_count_peer(const mt_admin_t *a, const admin_client_t *c)
{
    unsigned n = 0;
    for (const admin_client_t *o = a->clients; o != NULL; o = o->next) {
        if (o != c && admin_same_peer(&o->peer, &c->peer))
            n++;
    }
    return n;
}

/*
 * Makes room for c: closes the oldest other client that is only waiting for (the rest of) a
 * request, from c's address when same_peer is set. Returns false if there is none, i.e.
 * every other slot is busy sending a response. Idle connections are cheap to open, and the
 * readiness probe must not lose to them; a client being answered is never cut off.
 */
static bool admin_evict_idle(mt_admin_t *a, const admin_client_t *c, bool same_peer)
{
    admin_client_t *victim = NULL;
    for (admin_client_t *o = a->clients; o != NULL; o = o->next) {
        if (o == c || o->state != ADMIN_CLIENT_READING)
            continue;
        if (same_peer && !admin_same_peer(&o->peer, &c->peer))
            continue;
        victim = o; /* the list is newest first: the last match is the oldest */
    }
    if (victim == NULL)
        return false;
    mt_debug("admin: connection limit reached, closing the oldest idle connection");
    admin_client_close(victim);
    return true;
}

/* Applies the per-address and total caps to a just-accepted c; false: refuse c. */
static bool admin_admit(mt_admin_t *a, admin_client_t *c)
{
    /* Closed clients are freed on the next loop iteration; a burst of accepts must not pile
     * them up without bound either. */
    if (a->nclients > 2 * MT_ADMIN_MAX_CLIENTS)
        return false;
    if (admin_count_peer(a, c) >= MT_ADMIN_MAX_CLIENTS_PER_ADDR && !admin_evict_idle(a, c, true))
        return false;
    return a->nlinked <= MT_ADMIN_MAX_CLIENTS || admin_evict_idle(a, c, false);
}

static void admin_on_connection(uv_stream_t *server, int status)
{
    mt_admin_t *a = server->data;
    if (status < 0) {
        mt_warn("admin: accept failed: %s", uv_strerror(status));
        return;
    }
    admin_client_t *c = calloc(1, sizeof(*c));
    mt_admin_http_t *http = c ? mt_admin_http_new() : NULL;
    if (http == NULL) {
        mt_warn("admin: out of memory accepting a connection");
        free(c);
        return;
    }
    c->http = http;
    c->admin = a;
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    a->nclients++;
    a->nlinked++;
    c->next = a->clients;
    if (a->clients)
        a->clients->prev = c;
    a->clients = c;

    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        admin_client_close(c);
        return;
    }
    int peer_len = sizeof(c->peer);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &peer_len) != 0)
        memset(&c->peer, 0, sizeof(c->peer));
    if (!admin_admit(a, c)) {
        mt_warn("admin: %d connections (%d per address) all busy, closing a new one",
                MT_ADMIN_MAX_CLIENTS, MT_ADMIN_MAX_CLIENTS_PER_ADDR);
        admin_client_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, admin_on_alloc, admin_on_read) != 0) {
        admin_client_close(c);
        return;
    }
    uv_timer_start(&c->timer, admin_on_timeout, MT_ADMIN_IDLE_TIMEOUT_MS, 0);
}

/* ---- start / stop -------------------------------------------------------------------------- */

/* "host:port", "[v6]:port"; host may be "localhost" or "*" (any IPv4 address). */
static int admin_parse_addr(const char *addr, struct sockaddr_storage *ss)
{
    char host[64];
    const char *port_s;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof(host))
            return -1;
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = '\0';
        port_s = end + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (colon == NULL || strchr(addr, ':') != colon || (size_t)(colon - addr) >= sizeof(host))
            return -1;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
        port_s = colon + 1;
    }
    if (*port_s == '\0' || strlen(port_s) > 5 || strspn(port_s, "0123456789") != strlen(port_s))
        return -1;
    int port = atoi(port_s);
    if (port > 65535)
        return -1;
    if (addr[0] == '[')
        return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0 ? 0 : -1;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    else if (strcmp(host, "*") == 0 || host[0] == '\0')
        strcpy(host, "0.0.0.0");
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0 ? 0 : -1;
}

static void admin_on_listener_close(uv_handle_t *h)
{
    mt_admin_t *a = h->data;
    a->listener_open = false;
    admin_maybe_free(a);
}

static int admin_bound_port(uv_tcp_t *tcp)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getsockname(tcp, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

mt_admin_t *mt_admin_start(uv_loop_t *loop, const char *addr, const mt_admin_hooks_t *hooks,
                           char **err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (admin_parse_addr(addr, &ss) != 0) {
        *err = admin_strdup_printf("admin: invalid address '%s' (want HOST:PORT or [IPV6]:PORT)",
                                   addr);
        return NULL;
    }
    mt_admin_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        *err = strdup("admin: out of memory");
        return NULL;
    }
    a->loop = loop;
    if (hooks != NULL)
        a->hooks = *hooks;
    uv_tcp_init(loop, &a->listener);
    a->listener.data = a;
    a->listener_open = true;

    int rc = uv_tcp_bind(&a->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0) /* Linux reports EADDRINUSE from listen(), not bind() */
        rc = uv_listen((uv_stream_t *)&a->listener, 128, admin_on_connection);
    if (rc != 0) {
        *err = admin_strdup_printf("admin: cannot bind %s: %s", addr, uv_strerror(rc));
        a->stopping = true;
        uv_close((uv_handle_t *)&a->listener, admin_on_listener_close);
        return NULL;
    }
    a->port = admin_bound_port(&a->listener);
    mt_info("admin: listening on %s (port %d)", addr, a->port);
    return a;
}

int mt_admin_set_token_file(mt_admin_t *a, const char *path, char **err)
{
    char buf[4097];
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        *err =
            admin_strdup_printf("admin: cannot read the token file %s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, sizeof(buf), f);
    bool failed = ferror(f) != 0;
    fclose(f);
    int rc = -1;
    const char *why = NULL;
    size_t start = 0;
    if (failed)
        why = "read error";
    else if (n == sizeof(buf))
        why = "longer than 4096 bytes";
    while (why == NULL && n > start && strchr(" \t\r\n", buf[n - 1]) != NULL)
        n--;
    while (why == NULL && start < n && strchr(" \t", buf[start]) != NULL)
        start++;
    if (why == NULL && n == start)
        why = "empty";
    else if (why == NULL && memchr(buf + start, '\n', n - start) != NULL)
        why = "more than one line";
    unsigned int len = 0;
    if (why == NULL &&
        EVP_Digest(buf + start, n - start, a->token_sha256, &len, EVP_sha256(), NULL) &&
        len == sizeof(a->token_sha256)) {
        a->has_token = true;
        rc = 0;
    } else {
        *err = admin_strdup_printf("admin: token file %s: %s", path, why ? why : "digest failed");
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

int mt_admin_port(const mt_admin_t *a)
{
    return a->port;
}

void mt_admin_stop(mt_admin_t *a)
{
    if (a == NULL || a->stopping)
        return;
    a->stopping = true;
    while (a->clients != NULL)
        admin_client_close(a->clients); /* unlinks it */
    uv_close((uv_handle_t *)&a->listener, admin_on_listener_close);
}
