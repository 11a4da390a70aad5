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
 */
#include "runtime/admin.h"

#include "runtime/common.h"
#include "runtime/log.h"
#include "runtime/stats.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    struct admin_client *prev, *next; /* in admin->clients while not CLOSING */
    admin_client_state_t state;
    int open_handles; /* handles not yet closed; the client is freed at 0 */
    bool keep_alive;  /* after the response in flight */
    char *out;        /* response in flight; owned here, freed after the write */
    size_t in_len;    /* bytes buffered in `in` */
    size_t consumed;  /* length of the request being answered, dropped after the write */
    char in[MT_ADMIN_MAX_REQUEST];
} admin_client_t;

struct mt_admin {
    uv_loop_t *loop;
    uv_tcp_t listener;
    mt_admin_hooks_t hooks;
    admin_client_t *clients;
    unsigned nclients; /* allocated clients, closing ones included */
    bool listener_open;
    bool stopping;
    int port;
};

typedef struct admin_request {
    const char *method;
    size_t method_len;
    const char *path; /* without the query string */
    size_t path_len;
    bool head;       /* HEAD: answer like GET without the body */
    bool keep_alive; /* what the client asked for (version default + Connection header) */
    size_t content_length;
    size_t total_len; /* request line + headers + body */
    int error_status; /* on MT_ERROR: the HTTP status to answer with */
} admin_request_t;

typedef struct admin_response {
    int status;
    const char *content_type;
    const char *allow; /* Allow header for 405, else NULL */
    char *body;        /* malloc'd, may be NULL for an empty body */
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

/* Finds the next line in [*pos, len); returns false if no complete line is buffered yet.
 * Lines end in LF with an optional CR before it. */
static bool admin_next_line(const char *buf, size_t len, size_t *pos, const char **line,
                            size_t *line_len)
{
    const char *nl = memchr(buf + *pos, '\n', len - *pos);
    if (nl == NULL)
        return false;
    *line = buf + *pos;
    *line_len = (size_t)(nl - *line);
    if (*line_len > 0 && (*line)[*line_len - 1] == '\r')
        (*line_len)--;
    *pos = (size_t)(nl - buf) + 1;
    return true;
}

static bool admin_token_eq(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

static mt_status_t admin_fail(admin_request_t *rq, int status)
{
    rq->error_status = status;
    return MT_ERROR;
}

/* RFC 9110 token characters (method and header names). */
static bool admin_is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* "GET /path?query HTTP/1.1" */
static mt_status_t admin_parse_request_line(const char *l, size_t n, admin_request_t *rq)
{
    const char *sp1 = memchr(l, ' ', n);
    if (sp1 == NULL || sp1 == l)
        return admin_fail(rq, 400);
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', (size_t)(l + n - target));
    if (sp2 == NULL || sp2 == target || *target != '/')
        return admin_fail(rq, 400);
    const char *version = sp2 + 1;
    size_t vlen = (size_t)(l + n - version);

    rq->method = l;
    rq->method_len = (size_t)(sp1 - l);
    for (size_t i = 0; i < rq->method_len; i++) {
        if (!admin_is_tchar(l[i]))
            return admin_fail(rq, 400);
    }
    rq->path = target;
    const char *q = memchr(target, '?', (size_t)(sp2 - target));
    rq->path_len = (size_t)((q ? q : sp2) - target);

    if (vlen == 8 && memcmp(version, "HTTP/1.1", 8) == 0)
        rq->keep_alive = true;
    else if (vlen == 8 && memcmp(version, "HTTP/1.0", 8) == 0)
        rq->keep_alive = false;
    else if (vlen >= 5 && memcmp(version, "HTTP/", 5) == 0)
        return admin_fail(rq, 505);
    else
        return admin_fail(rq, 400);
    return MT_OK;
}

static mt_status_t admin_parse_content_length(const char *v, size_t n, admin_request_t *rq,
                                              bool *seen)
{
    if (n == 0)
        return admin_fail(rq, 400);
    size_t value = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return admin_fail(rq, 400);
        if (value > MT_ADMIN_MAX_REQUEST) /* stop before overflow; too large anyway */
            return admin_fail(rq, 413);
        value = value * 10 + (size_t)(v[i] - '0');
    }
    if (*seen && value != rq->content_length)
        return admin_fail(rq, 400); /* conflicting lengths: a smuggling attempt or a bug */
    *seen = true;
    rq->content_length = value;
    return MT_OK;
}

/* Connection: a comma-separated token list. */
static void admin_parse_connection(const char *v, size_t n, admin_request_t *rq)
{
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t end = i;
        while (start < end && (v[start] == ' ' || v[start] == '\t'))
            start++;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (admin_token_eq(v + start, end - start, "close"))
            rq->keep_alive = false;
        else if (admin_token_eq(v + start, end - start, "keep-alive"))
            rq->keep_alive = true;
        i++;
    }
}

static mt_status_t admin_parse_header(const char *l, size_t n, admin_request_t *rq, bool *cl_seen)
{
    if (l[0] == ' ' || l[0] == '\t')
        return admin_fail(rq, 400); /* obsolete line folding */
    const char *colon = memchr(l, ':', n);
    if (colon == NULL || colon == l)
        return admin_fail(rq, 400);
    size_t name_len = (size_t)(colon - l);
    const char *v = colon + 1;
    size_t vlen = (size_t)(l + n - v);
    while (vlen > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;

    if (memchr(l, ' ', name_len) != NULL || memchr(l, '\t', name_len) != NULL)
        return admin_fail(rq, 400);
    if (admin_token_eq(l, name_len, "content-length"))
        return admin_parse_content_length(v, vlen, rq, cl_seen);
    if (admin_token_eq(l, name_len, "transfer-encoding"))
        return admin_fail(rq, 411); /* we only take bodies with a Content-Length */
    if (admin_token_eq(l, name_len, "connection"))
        admin_parse_connection(v, vlen, rq);
    return MT_OK;
}

/*
 * Parses one request from buf[0, len). MT_AGAIN: incomplete, read more. MT_ERROR:
 * rq->error_status says what to answer. MT_OK: rq is filled and rq->total_len bytes (the body
 * included) are buffered. Re-parses from the start on every call; the buffer is small.
 */
static mt_status_t admin_parse_request(const char *buf, size_t len, admin_request_t *rq)
{
    memset(rq, 0, sizeof(*rq));
    size_t pos = 0;
    const char *line;
    size_t line_len;
    bool have_request_line = false, cl_seen = false;

    for (;;) {
        if (!admin_next_line(buf, len, &pos, &line, &line_len))
            return len >= MT_ADMIN_MAX_REQUEST ? admin_fail(rq, 413) : MT_AGAIN;
        if (!have_request_line) {
            if (line_len == 0)
                continue; /* RFC 9112 2.2: ignore empty lines before the request line */
            if (admin_parse_request_line(line, line_len, rq) != MT_OK)
                return MT_ERROR;
            have_request_line = true;
            continue;
        }
        if (line_len == 0)
            break;
        if (admin_parse_header(line, line_len, rq, &cl_seen) != MT_OK)
            return MT_ERROR;
    }
    rq->head = admin_token_eq(rq->method, rq->method_len, "HEAD");
    rq->total_len = pos + rq->content_length;
    if (rq->total_len > MT_ADMIN_MAX_REQUEST)
        return admin_fail(rq, 413);
    return len >= rq->total_len ? MT_OK : MT_AGAIN;
}

/* ---- endpoints ----------------------------------------------------------------------------- */

typedef void (*admin_handler_t)(mt_admin_t *a, admin_response_t *r);

static void admin_handle_index(mt_admin_t *a, admin_response_t *r);

static void admin_handle_ready(mt_admin_t *a, admin_response_t *r)
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

static void admin_handle_prometheus(mt_admin_t *a, admin_response_t *r)
{
    r->status = 200;
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    r->body = mt_stats_render_prometheus(&r->body_len);
}

/* /stats: the same samples without the # HELP / # TYPE lines, for humans. */
static void admin_handle_stats(mt_admin_t *a, admin_response_t *r)
{
    size_t len;
    char *text = mt_stats_render_prometheus(&len);
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

static void admin_handle_config_dump(mt_admin_t *a, admin_response_t *r)
{
    admin_handle_dump_hook(r, a->hooks.config_dump, a->hooks.ud, "application/json");
}

static void admin_handle_clusters(mt_admin_t *a, admin_response_t *r)
{
    admin_handle_dump_hook(r, a->hooks.clusters, a->hooks.ud, NULL);
}

static void admin_handle_reload(mt_admin_t *a, admin_response_t *r)
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
    {"/", "GET", admin_handle_index, "this list"},
    {"/ready", "GET", admin_handle_ready, "200 when serving a configuration, else 503"},
    {"/stats", "GET", admin_handle_stats, "all metrics, one sample per line"},
    {"/stats/prometheus", "GET", admin_handle_prometheus, "all metrics, Prometheus text format"},
    {"/config_dump", "GET", admin_handle_config_dump,
     "the configuration served (JSON, secrets "
     "redacted)"},
    {"/clusters", "GET", admin_handle_clusters, "upstream clusters and their endpoints"},
    {"/reload", "POST", admin_handle_reload, "reload the configuration directory now"},
};

static void admin_handle_index(mt_admin_t *a, admin_response_t *r)
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

static bool admin_method_allowed(const admin_route_t *route, const admin_request_t *rq)
{
    /* Methods are case-sensitive (RFC 9110 9.1). */
    if (rq->method_len == strlen(route->method) &&
        memcmp(rq->method, route->method, rq->method_len) == 0)
        return true;
    return strcmp(route->method, "GET") == 0 && rq->head;
}

static void admin_dispatch(mt_admin_t *a, const admin_request_t *rq, admin_response_t *r)
{
    for (size_t i = 0; i < MT_ARRAY_LEN(admin_routes); i++) {
        const admin_route_t *route = &admin_routes[i];
        if (strlen(route->path) != rq->path_len || memcmp(route->path, rq->path, rq->path_len) != 0)
            continue;
        if (!admin_method_allowed(route, rq)) {
            admin_response_text(r, 405, "method not allowed\n");
            r->allow = strcmp(route->method, "GET") == 0 ? "GET, HEAD" : route->method;
            return;
        }
        route->handler(a, r);
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
    free(c);
    a->nclients--;
    admin_maybe_free(a);
}

static void admin_client_close(admin_client_t *c)
{
    if (c->state == ADMIN_CLIENT_CLOSING)
        return;
    c->state = ADMIN_CLIENT_CLOSING;
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
    c->state = ADMIN_CLIENT_READING;
    uv_timer_start(&c->timer, admin_on_timeout, MT_ADMIN_IDLE_TIMEOUT_MS, 0);
    admin_client_process(c);
    if (c->state == ADMIN_CLIENT_READING &&
        uv_read_start((uv_stream_t *)&c->tcp, admin_on_alloc, admin_on_read) != 0)
        admin_client_close(c);
}

/* Serializes r (taking its body) and writes it; reading stays paused until the write ends. */
static void admin_client_send(admin_client_t *c, const admin_request_t *rq, admin_response_t *r)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-cache\r\nConnection: %s\r\n%s%s%s\r\n",
                     r->status, admin_reason(r->status), r->content_type, r->body_len,
                     c->keep_alive ? "keep-alive" : "close", r->allow ? "Allow: " : "",
                     r->allow ? r->allow : "", r->allow ? "\r\n" : "");
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
    uv_timer_start(&c->timer, admin_on_timeout, MT_ADMIN_IDLE_TIMEOUT_MS, 0);
}

static void admin_client_process(admin_client_t *c)
{
    admin_request_t rq;
    admin_response_t r = {0};
    mt_status_t st = admin_parse_request(c->in, c->in_len, &rq);
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
    admin_dispatch(c->admin, &rq, &r);
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

static void admin_on_connection(uv_stream_t *server, int status)
{
    mt_admin_t *a = server->data;
    if (status < 0) {
        mt_warn("admin: accept failed: %s", uv_strerror(status));
        return;
    }
    admin_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        mt_warn("admin: out of memory accepting a connection");
        return;
    }
    c->admin = a;
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    a->nclients++;
    c->next = a->clients;
    if (a->clients)
        a->clients->prev = c;
    a->clients = c;

    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        admin_client_close(c);
        return;
    }
    if (a->nclients > MT_ADMIN_MAX_CLIENTS) {
        mt_warn("admin: more than %d connections, closing a new one", MT_ADMIN_MAX_CLIENTS);
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
