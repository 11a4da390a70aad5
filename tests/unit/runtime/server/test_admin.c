/*
 * test_admin.c - the admin HTTP server (runtime/server/admin.c) on a real uv loop in a thread,
 * answering real HTTP requests written to a TCP socket by the test. The server binds
 * 127.0.0.1:0; every socket read has a timeout so no test can hang.
 */
#include <criterion/criterion.h>

#include "runtime/server/admin.h"
#include "runtime/core/stats.h"
#include "tests/unit/runtime/core/prom_parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- the server under test, in its own thread ---------------------------------------------- */

static struct {
    uv_loop_t loop;
    uv_async_t stop;
    mt_admin_t *admin;
    pthread_t thread;
    int port;
    atomic_bool ready;
    atomic_bool reject_reload;
    atomic_int reloads;
} srv;

static bool hook_ready(void *ud)
{
    /* Runs on the server thread: no Criterion asserts here; a wrong ud shows as 503. */
    return ud == &srv && atomic_load(&srv.ready);
}

static char *hook_config_dump(void *ud, size_t *len)
{
    char *s = strdup("{\"listeners\":[]}");
    *len = strlen(s);
    return s;
}

static int hook_reload(void *ud, char **msg)
{
    atomic_fetch_add(&srv.reloads, 1);
    if (atomic_load(&srv.reject_reload)) {
        *msg = strdup("cfg/redis.yaml:3: RedisService/r: spec.host: required");
        return -1;
    }
    *msg = strdup("configuration generation 2 applied\n");
    return 0;
}

static void *server_main(void *arg)
{
    uv_run(&srv.loop, UV_RUN_DEFAULT);
    return NULL;
}

static void on_stop(uv_async_t *a)
{
    mt_admin_stop(srv.admin);
    uv_close((uv_handle_t *)a, NULL);
}

static void server_start_with(const mt_admin_hooks_t *hooks)
{
    cr_assert_eq(uv_loop_init(&srv.loop), 0);
    char *err = NULL;
    srv.admin = mt_admin_start(&srv.loop, "127.0.0.1:0", hooks, &err);
    cr_assert_not_null(srv.admin, "start: %s", err ? err : "?");
    srv.port = mt_admin_port(srv.admin);
    cr_assert_gt(srv.port, 0);
    uv_async_init(&srv.loop, &srv.stop, on_stop);
    cr_assert_eq(pthread_create(&srv.thread, NULL, server_main, NULL), 0);
}

static void server_start(void)
{
    mt_stats_init(2);
    mt_stats_block_t *l = mt_stats_block(MT_STATS_LISTENER, "redis-6379", NULL);
    mt_stat_add(l, 1, MT_ST_REQUESTS_TOTAL, 3);
    mt_stats_global.config_generation = 2;
    mt_admin_hooks_t hooks = {
        .ud = &srv, .ready = hook_ready, .config_dump = hook_config_dump, .reload = hook_reload};
    server_start_with(&hooks);
}

/* Stops the server and checks that every handle was closed (uv_loop_close fails otherwise);
 * ASan's leak check covers the memory released in close callbacks. */
static void server_stop(void)
{
    uv_async_send(&srv.stop);
    pthread_join(srv.thread, NULL);
    cr_assert_eq(uv_loop_close(&srv.loop), 0, "all admin handles closed");
}

/* ---- a plain blocking HTTP client ---------------------------------------------------------- */

static int client_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
                 strerror(errno));
    return fd;
}

static void client_send(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the server may close early (413); the reply is what we check */
        data += n;
        len -= (size_t)n;
    }
}

/* Reads until the server closes; returns the bytes read (NUL-terminated, malloc'd). */
static char *client_read_all(int fd, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        cr_assert(r >= 0 || errno == ECONNRESET, "recv: %s (server did not close?)",
                  strerror(errno));
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

typedef struct http_reply {
    char *raw;
    int status;
    const char *body;
    size_t body_len;
} http_reply_t;

static http_reply_t http_parse(char *raw, size_t len)
{
    http_reply_t r = {.raw = raw};
    cr_assert_eq(strncmp(raw, "HTTP/1.1 ", 9), 0, "status line: %s", raw);
    r.status = atoi(raw + 9);
    char *end = strstr(raw, "\r\n\r\n");
    cr_assert_not_null(end);
    r.body = end + 4;
    r.body_len = len - (size_t)(r.body - raw);
    return r;
}

/* One request on a fresh connection; the raw text must make the server close. */
static http_reply_t http_raw(const char *request, size_t len)
{
    int fd = client_connect();
    client_send(fd, request, len);
    shutdown(fd, SHUT_WR);
    size_t n;
    char *raw = client_read_all(fd, &n);
    close(fd);
    return http_parse(raw, n);
}

static http_reply_t http(const char *method, const char *path)
{
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", method,
                     path, srv.port);
    return http_raw(req, (size_t)n);
}

static bool has_header(const http_reply_t *r, const char *line)
{
    const char *end = strstr(r->raw, "\r\n\r\n");
    const char *h = strstr(r->raw, line);
    return h != NULL && h < end;
}

/* ---- tests --------------------------------------------------------------------------------- */

TestSuite(admin, .fini = NULL, .timeout = 60);

Test(admin, ready_answers_200_or_503_from_the_hook)
{
    server_start();
    http_reply_t r = http("GET", "/ready");
    cr_assert_eq(r.status, 503);
    free(r.raw);
    atomic_store(&srv.ready, true);
    r = http("GET", "/ready");
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "ready\n");
    cr_assert(has_header(&r, "Content-Length: 6\r\n"));
    free(r.raw);
    server_stop();
}

Test(admin, unknown_path_is_404_and_wrong_method_405_with_allow)
{
    server_start();
    http_reply_t r = http("GET", "/nope");
    cr_assert_eq(r.status, 404);
    free(r.raw);
    r = http("GET", "/ready/");
    cr_assert_eq(r.status, 404, "paths match exactly");
    free(r.raw);
    r = http("POST", "/ready");
    cr_assert_eq(r.status, 405);
    cr_assert(has_header(&r, "Allow: GET, HEAD\r\n"), "%s", r.raw);
    free(r.raw);
    r = http("GET", "/reload");
    cr_assert_eq(r.status, 405);
    cr_assert(has_header(&r, "Allow: POST\r\n"), "%s", r.raw);
    free(r.raw);
    r = http("get", "/ready");
    cr_assert_eq(r.status, 405, "methods are case-sensitive");
    free(r.raw);
    server_stop();
}

Test(admin, oversize_requests_get_413)
{
    server_start();
    /* A header section larger than the buffer. */
    size_t big = MT_ADMIN_MAX_REQUEST + 4096;
    char *req = malloc(big + 64);
    int n = snprintf(req, big + 64, "GET /ready HTTP/1.1\r\nX-Pad: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 4);
    http_reply_t r = http_raw(req, (size_t)n + big + 4);
    cr_assert_eq(r.status, 413, "%s", r.raw);
    cr_assert(has_header(&r, "Connection: close\r\n"));
    free(r.raw);
    free(req);

    /* A body announced larger than the limit is refused before it is sent. */
    const char *cl = "POST /reload HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n";
    r = http_raw(cl, strlen(cl));
    cr_assert_eq(r.status, 413);
    free(r.raw);
    cr_assert_eq(atomic_load(&srv.reloads), 0, "the hook did not run");
    server_stop();
}

Test(admin, malformed_requests_get_4xx_or_505)
{
    server_start();
    const char *cases[][2] = {
        {"GARBAGE\r\n\r\n", "400"},
        {"GET nope HTTP/1.1\r\n\r\n", "400"},
        {"GET /ready HTTP/2.0\r\n\r\n", "505"},
        {"GET /ready HTTP/1.1\r\nBad header\r\n\r\n", "400"},
        {"POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "411"},
        {"POST /reload HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "400"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        http_reply_t r = http_raw(cases[i][0], strlen(cases[i][0]));
        cr_assert_eq(r.status, atoi(cases[i][1]), "request %zu: %s", i, r.raw);
        free(r.raw);
    }
    cr_assert_eq(atomic_load(&srv.reloads), 0);
    server_stop();
}

Test(admin, prometheus_endpoint_serves_parseable_stats)
{
    server_start();
    http_reply_t r = http("GET", "/stats/prometheus");
    cr_assert_eq(r.status, 200);
    cr_assert(has_header(&r, "Content-Type: text/plain; version=0.0.4"), "%s", r.raw);
    cr_assert_not_null(strstr(r.body, "# TYPE istio_requests_total counter\n"));
    cr_assert_not_null(strstr(r.body, "# TYPE istio_tcp_sent_bytes_total counter\n"));
    cr_assert_not_null(strstr(r.body, "meltemi_requests_total{listener=\"redis-6379\"} 3\n"));
    prom_doc_t d;
    cr_assert(prom_parse(&d, r.body, r.body_len), "%s", d.error);
    cr_assert_eq(prom_find(&d, "meltemi_config_generation", NULL)->value, 2);
    prom_free(&d);
    free(r.raw);

    r = http("GET", "/stats?filter=ignored");
    cr_assert_eq(r.status, 200, "the query string is not part of the path");
    cr_assert_not_null(strstr(r.body, "meltemi_requests_total{listener=\"redis-6379\"} 3\n"));
    cr_assert_null(strstr(r.body, "# TYPE"), "plain list without metadata");
    free(r.raw);
    server_stop();
}

Test(admin, post_reload_calls_the_hook_and_reports_its_message)
{
    server_start();
    const char *req = "POST /reload HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    http_reply_t r = http_raw(req, strlen(req));
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "configuration generation 2 applied\n");
    free(r.raw);
    cr_assert_eq(atomic_load(&srv.reloads), 1);

    atomic_store(&srv.reject_reload, true);
    r = http("POST", "/reload");
    cr_assert_eq(r.status, 400);
    cr_assert_str_eq(r.body, "cfg/redis.yaml:3: RedisService/r: spec.host: required\n");
    free(r.raw);
    cr_assert_eq(atomic_load(&srv.reloads), 2);
    server_stop();
}

Test(admin, config_dump_is_json_and_missing_hooks_are_501)
{
    server_start();
    http_reply_t r = http("GET", "/config_dump");
    cr_assert_eq(r.status, 200);
    cr_assert(has_header(&r, "Content-Type: application/json\r\n"));
    cr_assert_str_eq(r.body, "{\"listeners\":[]}");
    free(r.raw);
    r = http("GET", "/clusters");
    cr_assert_eq(r.status, 501, "clusters hook is NULL");
    free(r.raw);
    r = http("GET", "/");
    cr_assert_eq(r.status, 200);
    cr_assert(has_header(&r, "Content-Type: text/html; charset=utf-8"), "%s", r.raw);
    cr_assert_not_null(strstr(r.body, "<script>"), "the status page");
    cr_assert_null(strstr(r.body, "src=\"http"), "no external assets");
    free(r.raw);
    r = http("GET", "/help");
    cr_assert_eq(r.status, 200);
    cr_assert_not_null(strstr(r.body, "/stats/prometheus"));
    cr_assert_not_null(strstr(r.body, "/reload"));
    cr_assert_not_null(strstr(r.body, "/logging"));
    free(r.raw);
    server_stop();
}

Test(admin, all_hooks_null_means_501_but_stats_still_work)
{
    mt_stats_init(1);
    server_start_with(NULL);
    const char *paths[][2] = {
        {"GET", "/ready"}, {"GET", "/config_dump"}, {"GET", "/clusters"}, {"POST", "/reload"}};
    for (size_t i = 0; i < 4; i++) {
        http_reply_t r = http(paths[i][0], paths[i][1]);
        cr_assert_eq(r.status, 501, "%s", paths[i][1]);
        free(r.raw);
    }
    http_reply_t r = http("GET", "/stats/prometheus");
    cr_assert_eq(r.status, 200);
    free(r.raw);
    server_stop();
}

Test(admin, head_has_headers_only)
{
    server_start();
    atomic_store(&srv.ready, true);
    http_reply_t r = http("HEAD", "/ready");
    cr_assert_eq(r.status, 200);
    cr_assert(has_header(&r, "Content-Length: 6\r\n"));
    cr_assert_eq(r.body_len, 0);
    free(r.raw);
    server_stop();
}

Test(admin, keep_alive_serves_pipelined_requests_in_order)
{
    server_start();
    atomic_store(&srv.ready, true);
    const char *req = "GET /ready HTTP/1.1\r\n\r\n"
                      "GET /nope HTTP/1.1\r\n\r\n"
                      "GET /ready HTTP/1.1\r\nConnection: close\r\n\r\n";
    int fd = client_connect();
    client_send(fd, req, strlen(req));
    size_t n;
    char *raw = client_read_all(fd, &n);
    close(fd);
    const char *first = strstr(raw, "HTTP/1.1 200 OK\r\n");
    const char *second = first ? strstr(first + 1, "HTTP/1.1 404 Not Found\r\n") : NULL;
    const char *third = second ? strstr(second + 1, "HTTP/1.1 200 OK\r\n") : NULL;
    cr_assert(first == raw && second && third, "three replies in order:\n%s", raw);
    cr_assert_not_null(strstr(raw, "Connection: keep-alive\r\n"));
    cr_assert_not_null(strstr(third, "Connection: close\r\n"));
    free(raw);

    /* HTTP/1.0 closes unless asked otherwise. */
    const char *req10 = "GET /ready HTTP/1.0\r\n\r\n";
    fd = client_connect();
    client_send(fd, req10, strlen(req10)); /* no shutdown: the server must close by itself */
    raw = client_read_all(fd, &n);
    close(fd);
    cr_assert_not_null(strstr(raw, "Connection: close\r\n"), "%s", raw);
    free(raw);
    server_stop();
}

Test(admin, request_split_across_writes_is_reassembled)
{
    server_start();
    int fd = client_connect();
    const char *parts[] = {
        "PO", "ST /rel", "oad HTTP/1.1\r\nContent-Len", "gth: 3\r\n", "Connection: close\r\n\r\n",
        "a",  "bc"};
    for (size_t i = 0; i < 7; i++) {
        client_send(fd, parts[i], strlen(parts[i]));
        usleep(2000);
    }
    size_t n;
    char *raw = client_read_all(fd, &n);
    close(fd);
    http_reply_t r = http_parse(raw, n);
    cr_assert_eq(r.status, 200, "%s", raw);
    cr_assert_eq(atomic_load(&srv.reloads), 1);
    free(raw);
    server_stop();
}

Test(admin, many_concurrent_clients_are_served)
{
    server_start();
    enum { N = 64 };
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = client_connect();
    /* All connected before any request: the server holds them at once. */
    const char *req = "GET /stats/prometheus HTTP/1.1\r\nConnection: close\r\n\r\n";
    for (int i = N - 1; i >= 0; i--)
        client_send(fds[i], req, strlen(req));
    for (int i = 0; i < N; i++) {
        size_t n;
        char *raw = client_read_all(fds[i], &n);
        close(fds[i]);
        http_reply_t r = http_parse(raw, n);
        cr_assert_eq(r.status, 200);
        cr_assert_not_null(strstr(r.body, "meltemi_workers 2\n"));
        free(raw);
    }
    server_stop();
}

/* A GET on a fresh connection; 0 if the server closed it without an answer. */
static int http_status_or_0(const char *path)
{
    char req[256];
    int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nConnection: close\r\n\r\n", path);
    int fd = client_connect();
    client_send(fd, req, (size_t)len);
    size_t n;
    char *raw = client_read_all(fd, &n);
    close(fd);
    int status = n > 12 ? atoi(raw + 9) : 0;
    free(raw);
    return status;
}

Test(admin, idle_connections_over_the_limit_give_way_to_a_new_request)
{
    server_start();
    enum { N = MT_ADMIN_MAX_CLIENTS + 8 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = client_connect();
        if (i % 2)
            client_send(fds[i], "GET /rea", 8); /* slow loris: a request that never ends */
    }
    /* Every slot is held by an idle connection from this address; the probe still answers,
     * at once, well within the idle timeout. */
    cr_assert_eq(http_status_or_0("/ready"), 503, "answered (the ready hook says 503)");
    atomic_store(&srv.ready, true);
    cr_assert_eq(http_status_or_0("/ready"), 200);
    /* The oldest idle connections were the ones closed. */
    char byte;
    cr_assert_leq(recv(fds[0], &byte, 1, 0), 0, "the oldest idle connection was closed");
    for (int i = 0; i < N; i++)
        close(fds[i]);
    server_stop();
}

Test(admin, mutating_endpoints_refuse_browser_requests)
{
    server_start();
    char req[512];
    int n =
        snprintf(req, sizeof(req),
                 "POST /reload HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nOrigin: http://evil.example\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n",
                 srv.port);
    http_reply_t r = http_raw(req, (size_t)n);
    cr_assert_eq(r.status, 403);
    cr_assert_not_null(strstr(r.body, "Origin"));
    free(r.raw);
    n = snprintf(req, sizeof(req),
                 "POST /reload HTTP/1.1\r\nHost: evil.example:%d\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n",
                 srv.port);
    r = http_raw(req, (size_t)n);
    cr_assert_eq(r.status, 403);
    cr_assert_not_null(strstr(r.body, "Host"));
    free(r.raw);
    cr_assert_eq(atomic_load(&srv.reloads), 0, "no reload happened");
    /* GET endpoints stay open to probes that send their own Host. */
    const char *probe = "GET /ready HTTP/1.1\r\nHost: 10.1.2.3:15000\r\nConnection: close\r\n\r\n";
    r = http_raw(probe, strlen(probe));
    cr_assert_neq(r.status, 403);
    free(r.raw);
    for (const char *const *h = (const char *const[]){"localhost", "[::1]", "LOCALHOST", NULL}; *h;
         h++) {
        n = snprintf(req, sizeof(req),
                     "POST /reload HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", *h,
                     srv.port);
        r = http_raw(req, (size_t)n);
        cr_assert_eq(r.status, 200, "Host %s", *h);
        free(r.raw);
    }
    server_stop();
}

Test(admin, stop_closes_idle_and_busy_clients)
{
    server_start();
    int idle = client_connect();
    int partial = client_connect();
    client_send(partial, "GET /rea", 8);
    usleep(50000);
    server_stop(); /* asserts every handle closed */
    char byte;
    cr_assert_leq(recv(idle, &byte, 1, 0), 0);
    cr_assert_leq(recv(partial, &byte, 1, 0), 0);
    close(idle);
    close(partial);
}

Test(admin, bind_errors_and_bad_addresses_are_reported)
{
    server_start();
    uv_loop_t loop;
    uv_loop_init(&loop);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", srv.port);
    char *err = NULL;
    cr_assert_null(mt_admin_start(&loop, addr, NULL, &err));
    char want[128];
    snprintf(want, sizeof(want), "admin: cannot bind %s: address already in use", addr);
    cr_assert_str_eq(err, want);
    free(err);

    const char *bad[] = {"nohost", "127.0.0.1:", "127.0.0.1:99999",
                         "::1:80", "[::1]80",    "example.invalid:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        cr_assert_null(mt_admin_start(&loop, bad[i], NULL, &err), "%s", bad[i]);
        cr_assert_not_null(strstr(err, "admin: invalid address"), "%s: %s", bad[i], err);
        free(err);
    }
    uv_run(&loop, UV_RUN_DEFAULT); /* releases the handle of the failed bind */
    cr_assert_eq(uv_loop_close(&loop), 0);
    server_stop();
}

Test(admin, ipv6_loopback_works_when_available)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char *err = NULL;
    mt_admin_t *a = mt_admin_start(&loop, "[::1]:0", NULL, &err);
    if (a == NULL) {
        /* No IPv6 in this sandbox: the error must still be a bind error, not a parse error. */
        cr_assert_not_null(strstr(err, "admin: cannot bind [::1]:0"), "%s", err);
        free(err);
    } else {
        cr_assert_gt(mt_admin_port(a), 0);
        mt_admin_stop(a);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ---- the request parser alone (mt_admin_http_parse), no sockets ---------------------------- */

typedef struct parse_case {
    const char *req;
    mt_status_t st;
    int error_status; /* on MT_ERROR */
} parse_case_t;

/* Parses req whole, then again growing one byte at a time; both must agree. */
static mt_admin_request_t parse_both_ways(const parse_case_t *t)
{
    size_t len = strlen(t->req);
    mt_admin_http_t *h = mt_admin_http_new();
    cr_assert_not_null(h);
    mt_admin_request_t whole = {0}, bytes = {0};
    mt_status_t st = mt_admin_http_parse(h, t->req, len, &whole);
    cr_assert_eq(st, t->st, "%s: whole: %d", t->req, st);
    mt_admin_http_reset(h);
    st = MT_AGAIN;
    for (size_t n = 1; n <= len && st == MT_AGAIN; n++)
        st = mt_admin_http_parse(h, t->req, n, &bytes);
    cr_assert_eq(st, t->st, "%s: byte by byte: %d", t->req, st);
    mt_admin_http_free(h);
    if (st == MT_ERROR) {
        cr_assert_eq(whole.error_status, t->error_status, "%s: %d", t->req, whole.error_status);
        cr_assert_eq(bytes.error_status, t->error_status, "%s", t->req);
    } else if (st == MT_OK) {
        cr_assert_eq(whole.total_len, bytes.total_len, "%s", t->req);
        cr_assert_eq(whole.path, bytes.path);
        cr_assert_eq(whole.host, bytes.host);
        cr_assert_eq(whole.bearer, bytes.bearer);
        cr_assert_eq(whole.keep_alive, bytes.keep_alive);
    }
    return whole;
}

static bool span_is(const char *p, size_t n, const char *want)
{
    return p != NULL && n == strlen(want) && memcmp(p, want, n) == 0;
}

Test(admin_http, requests_parse_the_same_whole_or_byte_by_byte)
{
    parse_case_t t = {"GET /ready?verbose=1 HTTP/1.1\r\nHost: 127.0.0.1:15000\r\n\r\nGET /", MT_OK,
                      0};
    mt_admin_request_t rq = parse_both_ways(&t);
    cr_assert(span_is(rq.method, rq.method_len, "GET"));
    cr_assert(span_is(rq.path, rq.path_len, "/ready"), "the query string is not in the path");
    cr_assert(rq.keep_alive && !rq.head && !rq.has_origin && rq.bearer == NULL);
    cr_assert_eq(rq.total_len, strlen(t.req) - strlen("GET /"), "a pipelined request is left");
    cr_assert(span_is(rq.host_name, rq.host_name_len, "127.0.0.1"));
    cr_assert_eq(rq.host_port, 15000);

    t = (parse_case_t){
        "POST /reload HTTP/1.1\r\nHost: [::1]:15000\r\nAuthorization: bearer  tok \r\n"
        "Content-Length: 2\r\nOrigin:\r\n\r\nab",
        MT_OK, 0};
    rq = parse_both_ways(&t);
    cr_assert_eq(rq.total_len, strlen(t.req), "the body is part of the request");
    cr_assert_eq(rq.content_length, 2);
    cr_assert(span_is(rq.host_name, rq.host_name_len, "[::1]"));
    cr_assert(span_is(rq.bearer, rq.bearer_len, "tok"), "scheme case-insensitive, blanks dropped");
    cr_assert(rq.has_origin, "an empty Origin is still an Origin");

    t = (parse_case_t){"\r\nget /ready HTTP/1.0\r\nHost: localhost\r\n\r\n", MT_OK, 0};
    rq = parse_both_ways(&t);
    cr_assert(span_is(rq.method, rq.method_len, "get"), "a method http-parser does not know");
    cr_assert(!rq.keep_alive, "HTTP/1.0 closes by default");
    cr_assert_eq(rq.host_port, 80, "no port: 80");

    t = (parse_case_t){"HEAD / HTTP/1.1\r\nHost: localhost:015000\r\n\r\n", MT_OK, 0};
    rq = parse_both_ways(&t);
    cr_assert(rq.head);
    cr_assert_eq(rq.host_port, -1, "a port with a leading zero is no port of ours");
}

Test(admin_http, malformed_requests_fail_with_the_status_to_answer)
{
    const parse_case_t cases[] = {
        {"GET http://127.0.0.1:15000/ready HTTP/1.1\r\n\r\n", MT_ERROR, 400}, /* origin-form only */
        {"OPTIONS * HTTP/1.1\r\n\r\n", MT_ERROR, 400},
        {"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", MT_ERROR, 400}, /* obsolete line folding */
        {"POST /reload HTTP/1.1\r\nHost:\r\n 127.0.0.1:15000\r\n\r\n", MT_ERROR, 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", MT_ERROR, 400},
        {"POST /reload HTTP/1.1\r\nHost : evil.example\r\n\r\n", MT_ERROR, 400}, /* not a token */
        {"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", MT_ERROR, 400},
        {"GET / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab", MT_ERROR, 400},
        {"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", MT_ERROR,
         411},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", MT_ERROR, 411},
        {"GET / HTTP/1.2\r\n\r\n", MT_ERROR, 505},
        {"GET / HTTP/0.9\r\n\r\n", MT_ERROR, 505},
        {"GET / HTTP/x.1\r\n\r\n", MT_ERROR, 505},
        {"POST /reload HTTP/1.1\r\nContent-Length: 16360\r\n\r\n", MT_ERROR, 413},
        {"GET / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", MT_ERROR, 413},
        {"GARBAGE\r\n\r\n", MT_ERROR, 400},
        {"GET /ready HTTP/1.1\r\nHost: 127.0.0.1:15000\r\n", MT_AGAIN, 0},
        {"get", MT_AGAIN, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        parse_both_ways(&cases[i]);
}

Test(admin_http, a_full_buffer_without_a_complete_request_is_413)
{
    char *req = malloc(MT_ADMIN_MAX_REQUEST);
    memset(req, 'a', MT_ADMIN_MAX_REQUEST);
    memcpy(req, "GET / HTTP/1.1\r\nX-Pad: ", 23);
    mt_admin_http_t *h = mt_admin_http_new();
    mt_admin_request_t rq;
    cr_assert_eq(mt_admin_http_parse(h, req, MT_ADMIN_MAX_REQUEST - 1, &rq), MT_AGAIN);
    cr_assert_eq(mt_admin_http_parse(h, req, MT_ADMIN_MAX_REQUEST, &rq), MT_ERROR);
    cr_assert_eq(rq.error_status, 413);
    mt_admin_http_free(h);
    free(req);
}

Test(admin, methods_the_parser_does_not_know_still_get_404_or_405)
{
    server_start();
    const char *req = "FOO /ready HTTP/1.1\r\n\r\n"
                      "get /nope HTTP/1.1\r\n\r\n"
                      "GET /ready HTTP/1.1\r\nConnection: close\r\n\r\n";
    int fd = client_connect();
    client_send(fd, req, strlen(req));
    size_t n;
    char *raw = client_read_all(fd, &n);
    close(fd);
    const char *first = strstr(raw, "HTTP/1.1 405 Method Not Allowed\r\n");
    const char *second = first ? strstr(first + 1, "HTTP/1.1 404 Not Found\r\n") : NULL;
    const char *third = second ? strstr(second + 1, "HTTP/1.1 503 Service Unavailable\r\n") : NULL;
    cr_assert(first == raw && second && third, "three replies in order:\n%s", raw);
    cr_assert_not_null(strstr(raw, "Allow: GET, HEAD\r\n"));
    free(raw);
    server_stop();
}

Test(admin, a_folded_host_header_is_refused_before_any_reload)
{
    server_start();
    char req[256];
    int n = snprintf(req, sizeof(req),
                     "POST /reload HTTP/1.1\r\nHost: evil.example\r\n 127.0.0.1:%d\r\n"
                     "Content-Length: 0\r\n\r\n",
                     srv.port);
    http_reply_t r = http_raw(req, (size_t)n);
    cr_assert_eq(r.status, 400, "%s", r.raw);
    cr_assert(has_header(&r, "Connection: close\r\n"));
    free(r.raw);
    cr_assert_eq(atomic_load(&srv.reloads), 0);
    server_stop();
}
