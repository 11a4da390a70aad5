/*
 * admin.h - the admin HTTP/1.1 server. Runs on the main thread's loop; every endpoint is
 * answered synchronously from that thread (hooks included), so hooks need no locking against
 * each other or against config reloads done on the main thread.
 *
 * Endpoints: GET / (index), GET /ready, GET /stats, GET /stats/prometheus, GET /config_dump,
 * GET /clusters, POST /reload. HEAD works wherever GET does. Unknown path -> 404, wrong
 * method -> 405 (with Allow), NULL hook -> 501, request over MT_ADMIN_MAX_REQUEST -> 413.
 *
 * Memory is bounded: at most MT_ADMIN_MAX_CLIENTS connections (MT_ADMIN_MAX_CLIENTS_PER_ADDR
 * from one peer address), each with a fixed request buffer of MT_ADMIN_MAX_REQUEST bytes and
 * at most one response (whatever a hook returned) in flight. A new connection over either cap
 * evicts the oldest connection that is only waiting for a request (same address first), so
 * idle sockets cannot lock the readiness probe out; it is refused only when every slot is
 * busy writing. Keep-alive and pipelining are supported; a connection idle or with an
 * incomplete request closes after MT_ADMIN_IDLE_TIMEOUT_MS.
 *
 * Mutating endpoints (every non-GET one: POST /reload) refuse what a browser can send on a
 * web page's behalf (CSRF, DNS rebinding): a request with an Origin header, or with a Host
 * that is neither a loopback name (127.0.0.1, localhost, [::1]) nor the address the
 * connection arrived on, each with the admin's port, gets 403. With a token set
 * (mt_admin_set_token_file) they also need "Authorization: Bearer <token>", else 401.
 */
#ifndef MELTEMI_ADMIN_H
#define MELTEMI_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "runtime/core/common.h"

#define MT_ADMIN_MAX_REQUEST 16384       /* request line + headers + body, bytes */
#define MT_ADMIN_MAX_CLIENTS 128         /* connections at once, all peers */
#define MT_ADMIN_MAX_CLIENTS_PER_ADDR 64 /* connections at once from one peer address */
#define MT_ADMIN_IDLE_TIMEOUT_MS 5000    /* a request must complete within this; keep-alive idle */
#define MT_ADMIN_WRITE_TIMEOUT_MS 30000  /* a response must be taken within this */
#define MT_ADMIN_LINGER_MS 2000 /* after an error reply, drain input this long, then close */

/*
 * Hooks into the server. Every hook may be NULL (the endpoint then answers 501). Strings a
 * hook returns are malloc'd and owned by the admin server from then on (it frees them);
 * NULL from config_dump / clusters means an internal error (500).
 */
typedef struct mt_admin_hooks {
    void *ud;
    bool (*ready)(void *ud);                     /* GET /ready: 200 or 503 */
    char *(*config_dump)(void *ud, size_t *len); /* GET /config_dump: JSON, secrets redacted */
    char *(*clusters)(void *ud, bool json, size_t *len); /* GET /clusters: text, or JSON with
                                                            ?format=json */
    int (*reload)(void *ud, char **msg);                 /* POST /reload: 0 ok, -1 rejected; *msg
                                                            malloc'd (or NULL), the message or the
                                                            validation errors */
    char *(*not_ready_why)(void *ud); /* optional: the 503 body of /ready (malloc'd text,
                                         NULL: "not ready") */
} mt_admin_hooks_t;

typedef struct mt_admin mt_admin_t;

/*
 * Binds addr ("127.0.0.1:15000", "[::1]:15000", "localhost:15000"; port 0 picks a free port)
 * and starts serving on loop. hooks is copied. On failure returns NULL and sets *err to a
 * malloc'd message, e.g. "admin: cannot bind 127.0.0.1:15000: address already in use"
 * (a handle was opened on loop then: it is released once the loop runs again).
 */
mt_admin_t *mt_admin_start(uv_loop_t *loop, const char *addr, const mt_admin_hooks_t *hooks,
                           char **err);

/*
 * Reads the bearer token mutating endpoints then require from path (one line; a trailing
 * newline and surrounding blanks are dropped; at most 4 KiB). The token is never taken from
 * the command line, where `ps` shows it. Returns 0, or -1 with a malloc'd *err (unreadable
 * file, empty token); the server keeps its previous token then.
 */
int mt_admin_set_token_file(mt_admin_t *a, const char *path, char **err);

/* The port actually bound (useful with port 0). */
int mt_admin_port(const mt_admin_t *a);

/*
 * Closes the listener and every client connection; replies in flight are dropped. The
 * memory is released in the close callbacks, so the loop must run once more afterwards.
 * a must not be used after this call. Not to be called from inside a hook.
 */
void mt_admin_stop(mt_admin_t *a);

/* ---- request parsing (the server's own; exported for tests/fuzz/fuzz_admin_http.c) ------- */

/*
 * One request as parsed. Pointers refer into the buffer given to mt_admin_http_parse; only
 * what the endpoints and the mutating-endpoint checks use is kept.
 */
typedef struct mt_admin_request {
    const char *method; /* as sent; methods are case-sensitive */
    size_t method_len;
    const char *path; /* the request target up to '?', always starting with '/' */
    size_t path_len;
    const char *query; /* after '?' (NULL: none), not decoded */
    size_t query_len;
    bool head;             /* HEAD: answer like GET without the body */
    bool keep_alive;       /* what the client asked for (version default + Connection) */
    size_t content_length; /* body bytes (0 without Content-Length) */
    size_t total_len;      /* request line + headers + body */
    bool has_origin;       /* an Origin header: the request comes from a web page */
    const char *host;      /* Host value, blanks trimmed (NULL: no Host header) */
    size_t host_len;
    const char *host_name; /* host without its port; "[::1]" keeps its brackets */
    size_t host_name_len;
    int host_port;      /* 80 when no port is given, -1 when the port is not canonical decimal */
    const char *bearer; /* the token of "Authorization: Bearer <token>" (NULL: none) */
    size_t bearer_len;
    int error_status; /* on MT_ERROR: the HTTP status to answer with */
} mt_admin_request_t;

/* The parser of one connection: http-parser's state plus ours. */
typedef struct mt_admin_http mt_admin_http_t;

mt_admin_http_t *mt_admin_http_new(void); /* NULL if out of memory; free with _free */
void mt_admin_http_free(mt_admin_http_t *h);
void mt_admin_http_reset(mt_admin_http_t *h); /* before each new request */

/*
 * Parses the request that starts at buf[0]: buf holds everything received for it so far
 * (at most MT_ADMIN_MAX_REQUEST bytes are looked at) and may only have grown at its end,
 * at the same address, since the previous call for this request; only the new bytes are
 * parsed. MT_AGAIN: incomplete, call again with more. MT_OK: *rq is filled; rq->total_len
 * bytes are the request (more may be the next one, pipelined). MT_ERROR: rq->error_status
 * says what to answer (400, 411, 413 or 505); the connection must close. After MT_OK or
 * MT_ERROR, mt_admin_http_reset before parsing another request.
 */
mt_status_t mt_admin_http_parse(mt_admin_http_t *h, const char *buf, size_t len,
                                mt_admin_request_t *rq);

#endif
