/*
 * rpcload.c - a small load generator and a fast echo-like server for Thrift (strict binary
 * protocol, framed transport), Dubbo 2 (Hessian2 body) and mrpc (the example protocol of
 * examples/custom-protocol, for tests/bench/lua_codec/) calls, for tests/bench/rpc.sh.
 *
 *   rpcload serve --proto thrift|dubbo|mrpc --port P [--host 127.0.0.1]
 *   rpcload run   --proto thrift|dubbo|mrpc --port P [--host 127.0.0.1] [--conns 32] [--depth 1]
 *                 [--duration 3] [--warmup 0.5]
 *
 * `run` opens --conns connections and keeps --depth calls in flight on each (pipelining:
 * every reply sends the next call at once), for --warmup + --duration seconds; only calls
 * that complete inside the measured window count. It prints one line of key=value pairs:
 *   proto=thrift conns=32 depth=1 seconds=3.000 calls=123456 errors=0 calls_per_s=41152
 *   p50_us=740.0 p99_us=1510.0 max_us=5100.0
 * and exits non-zero when any call failed (error reply, bad frame, closed connection).
 *
 * `serve` answers every call at once from one thread: Thrift with a REPLY carrying the
 * call's name and seq id (result field 0 = "ok"), Dubbo with status 20 and RESPONSE_VALUE
 * "ok" for the request's id; Dubbo heartbeats get a heartbeat reply; mrpc with a response of
 * the same id, service and method and body "ok" (a ping gets a pong). It never looks past the
 * headers it needs, so it costs far less per call than any proxy in front of it.
 *
 * One thread, epoll, non-blocking sockets, no dependencies. Calls carry ids of the form
 * (generation << 8 | slot): a reply names the slot whose send time it closes, so replies may
 * come back in any order (Dubbo through a multiplexing proxy) or in order (Thrift).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RL_MAX_DEPTH 256
#define RL_MAX_FRAME (1u << 20)

typedef enum { RL_THRIFT, RL_DUBBO, RL_MRPC } rl_proto_t;

static const char *const rl_proto_names[] = {"thrift", "dubbo", "mrpc"};

typedef struct {
    uint8_t *data;
    size_t len, cap, off; /* off: bytes already consumed (read) or sent (write) */
} rl_buf_t;

typedef struct {
    int fd;
    bool closed;
    bool want_out;
    rl_buf_t in, out;
    uint32_t gen[RL_MAX_DEPTH];     /* generation of the call in flight on each slot */
    uint64_t sent_ns[RL_MAX_DEPTH]; /* its send time; 0 = slot idle */
} rl_conn_t;

typedef struct {
    rl_proto_t proto;
    const char *host;
    uint16_t port;
    uint32_t conns, depth;
    double duration, warmup;
    bool serve;
} rl_opts_t;

/* ---- small helpers ------------------------------------------------------------------------ */

static uint64_t rl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void rl_die(const char *what)
{
    fprintf(stderr, "rpcload: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void rl_buf_reserve(rl_buf_t *b, size_t extra)
{
    if (b->off > 0 && b->off == b->len) {
        b->off = b->len = 0;
    }
    if (b->len + extra <= b->cap)
        return;
    if (b->off > 0) { /* compact before growing */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap)
            return;
    }
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        fprintf(stderr, "rpcload: out of memory\n");
        exit(2);
    }
    b->data = p;
    b->cap = cap;
}

static void rl_buf_append(rl_buf_t *b, const void *p, size_t n)
{
    rl_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void rl_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t rl_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void rl_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        rl_die("fcntl");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---- wire formats --------------------------------------------------------------------------- */

static const char rl_thrift_method[] = "hello";
static const char rl_dubbo_service[] = "org.apache.dubbo.bench.Echo";

/* Hessian2 compact string (< 32 bytes, ASCII). */
static size_t rl_h2_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    p[0] = (uint8_t)n;
    memcpy(p + 1, s, n);
    return n + 1;
}

/* The body of a Dubbo request, the same for every call: only the header's id changes. */
static size_t rl_dubbo_body(uint8_t *p)
{
    size_t n = 0;
    n += rl_h2_str(p + n, "2.0.2");
    n += rl_h2_str(p + n, rl_dubbo_service);
    n += rl_h2_str(p + n, "1.0.0");
    n += rl_h2_str(p + n, "echo");
    n += rl_h2_str(p + n, "Ljava/lang/String;");
    n += rl_h2_str(p + n, "bench");
    p[n++] = 'H';
    n += rl_h2_str(p + n, "path");
    n += rl_h2_str(p + n, rl_dubbo_service);
    n += rl_h2_str(p + n, "interface");
    n += rl_h2_str(p + n, rl_dubbo_service);
    n += rl_h2_str(p + n, "version");
    n += rl_h2_str(p + n, "1.0.0");
    p[n++] = 'Z';
    return n;
}

/* An mrpc call: service "Echo", method "echo", header user=bench, body "bench". */
static size_t rl_mrpc_call(uint8_t *f, uint32_t id)
{
    static const uint8_t rest[] = {0,   4,   'E', 'c', 'h', 'o', 0,   4,   'e', 'c', 'h',
                                   'o', 0,   1,   0,   4,   'u', 's', 'e', 'r', 0,   5,
                                   'b', 'e', 'n', 'c', 'h', 'b', 'e', 'n', 'c', 'h'};
    f[0] = 0x4d;
    f[1] = 0x52;
    f[2] = 0; /* a two-way request */
    f[3] = 1;
    rl_put32(f + 4, (uint32_t)(12 + sizeof rest));
    rl_put32(f + 8, id);
    memcpy(f + 12, rest, sizeof rest);
    return 12 + sizeof rest;
}

static void rl_write_call(rl_proto_t proto, rl_buf_t *out, uint32_t id)
{
    uint8_t f[256];
    size_t n = 0;
    if (proto == RL_MRPC) {
        n = rl_mrpc_call(f, id);
    } else if (proto == RL_THRIFT) {
        size_t ml = sizeof rl_thrift_method - 1;
        n = 4;
        rl_put32(f + n, 0x80010001u); /* strict binary, CALL */
        n += 4;
        rl_put32(f + n, (uint32_t)ml);
        n += 4;
        memcpy(f + n, rl_thrift_method, ml);
        n += ml;
        rl_put32(f + n, id & 0x7fffffffu);
        n += 4;
        f[n++] = 11; /* field 1: string "bench" */
        f[n++] = 0;
        f[n++] = 1;
        rl_put32(f + n, 5);
        n += 4;
        memcpy(f + n, "bench", 5);
        n += 5;
        f[n++] = 0; /* stop */
        rl_put32(f, (uint32_t)(n - 4));
    } else {
        static uint8_t body[200];
        static size_t blen;
        if (!blen)
            blen = rl_dubbo_body(body);
        f[0] = 0xda;
        f[1] = 0xbb;
        f[2] = 0xc2; /* request | two-way | hessian2 */
        f[3] = 0;
        rl_put32(f + 4, 0);
        rl_put32(f + 8, id);
        rl_put32(f + 12, (uint32_t)blen);
        memcpy(f + 16, body, blen);
        n = 16 + blen;
    }
    rl_buf_append(out, f, n);
}

/* Length of the complete frame at p (0 = need more, SIZE_MAX = malformed). */
static size_t rl_frame_len(rl_proto_t proto, const uint8_t *p, size_t avail)
{
    if (proto == RL_THRIFT) {
        if (avail < 4)
            return 0;
        uint32_t len = rl_get32(p);
        if (len < 12 || len > RL_MAX_FRAME)
            return SIZE_MAX;
        return avail >= 4 + (size_t)len ? 4 + (size_t)len : 0;
    }
    if (proto == RL_MRPC) {
        if (avail < 12)
            return 0;
        uint32_t len = rl_get32(p + 4);
        if (p[0] != 0x4d || p[1] != 0x52 || len < 18 || len > RL_MAX_FRAME)
            return SIZE_MAX;
        return avail >= len ? len : 0;
    }
    if (avail < 16)
        return 0;
    if (p[0] != 0xda || p[1] != 0xbb)
        return SIZE_MAX;
    uint32_t len = rl_get32(p + 12);
    if (len > RL_MAX_FRAME)
        return SIZE_MAX;
    return avail >= 16 + (size_t)len ? 16 + (size_t)len : 0;
}

/* Server side: appends the answer to the call in frame f (len n). false: malformed. */
static bool rl_answer(rl_proto_t proto, const uint8_t *f, size_t n, rl_buf_t *out)
{
    uint8_t r[512];
    if (proto == RL_THRIFT) {
        uint32_t ver = rl_get32(f + 4);
        uint32_t ml = rl_get32(f + 8);
        if ((ver & 0xffff0000u) != 0x80010000u || ml > 200 || 12 + (size_t)ml + 4 > n)
            return false;
        if ((ver & 0xff) == 4) /* oneway: no reply */
            return true;
        size_t k = 4;
        rl_put32(r + k, 0x80010002u); /* REPLY */
        k += 4;
        memcpy(r + k, f + 8, 4 + ml + 4); /* name length, name, seq id */
        k += 4 + ml + 4;
        r[k++] = 11; /* field 0 (success): string "ok" */
        r[k++] = 0;
        r[k++] = 0;
        rl_put32(r + k, 2);
        k += 4;
        r[k++] = 'o';
        r[k++] = 'k';
        r[k++] = 0;
        rl_put32(r, (uint32_t)(k - 4));
        rl_buf_append(out, r, k);
        return true;
    }
    if (proto == RL_MRPC) {
        if (f[2] & 3) /* a response or a oneway call: nothing to say */
            return true;
        size_t sl = (size_t)f[12] << 8 | f[13];
        if (14 + sl + 2 > n)
            return false;
        size_t ml = (size_t)f[14 + sl] << 8 | f[15 + sl];
        size_t names = 4 + sl + ml; /* both u16-prefixed strings */
        if (12 + names > n || 12 + names + 4 > sizeof r)
            return false;
        bool ping = f[2] & 4;
        memcpy(r, f, 12);
        r[2] = ping ? 5 : 1;
        memcpy(r + 12, f + 12, names);
        size_t k = 12 + names;
        r[k++] = 0; /* no headers */
        r[k++] = 0;
        if (!ping) {
            r[k++] = 'o';
            r[k++] = 'k';
        }
        rl_put32(r + 4, (uint32_t)k);
        rl_buf_append(out, r, k);
        return true;
    }
    uint8_t flag = f[2];
    if (!(flag & 0x80) || !(flag & 0x40)) /* not a request, or one-way: nothing to say */
        return true;
    r[0] = 0xda;
    r[1] = 0xbb;
    r[3] = 20;
    memcpy(r + 4, f + 4, 8);
    if (flag & 0x20) { /* heartbeat */
        r[2] = 0x22;
        rl_put32(r + 12, 1);
        r[16] = 'N';
        rl_buf_append(out, r, 17);
        return true;
    }
    r[2] = 0x02;
    r[16] = 0x91; /* int 1: RESPONSE_VALUE */
    r[17] = 0x02; /* "ok" */
    r[18] = 'o';
    r[19] = 'k';
    rl_put32(r + 12, 4);
    rl_buf_append(out, r, 20);
    return true;
}

/* Client side: the id of a reply, and whether it is a success. false: malformed. */
static bool rl_parse_reply(rl_proto_t proto, const uint8_t *f, size_t n, uint32_t *id, bool *ok)
{
    if (proto == RL_THRIFT) {
        uint32_t ver = rl_get32(f + 4);
        uint32_t ml = rl_get32(f + 8);
        if ((ver & 0xffff0000u) != 0x80010000u || 12 + (size_t)ml + 4 > n)
            return false;
        *id = rl_get32(f + 12 + ml);
        *ok = (ver & 0xff) == 2; /* REPLY; 3 = EXCEPTION */
        return true;
    }
    if (proto == RL_MRPC) {
        if (!(f[2] & 1)) /* a request coming back is not an answer */
            return false;
        *id = rl_get32(f + 8);
        *ok = !(f[2] & 8);
        return true;
    }
    if (f[2] & 0x80) /* a request coming back is not an answer */
        return false;
    *id = rl_get32(f + 8);
    *ok = f[3] == 20;
    return true;
}

/* ---- connections ----------------------------------------------------------------------------- */

static void rl_flush(int ep, rl_conn_t *c)
{
    while (c->out.off < c->out.len) {
        ssize_t w = send(c->fd, c->out.data + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                break;
            }
            c->closed = true;
            return;
        }
        c->out.off += (size_t)w;
    }
    bool want = c->out.off < c->out.len;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
    if (!want)
        c->out.off = c->out.len = 0;
}

/* Reads what is there; false when the peer closed or failed. */
static bool rl_read(rl_conn_t *c)
{
    for (;;) {
        rl_buf_reserve(&c->in, 65536);
        ssize_t r = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
        if (r > 0) {
            c->in.len += (size_t)r;
            continue;
        }
        if (r == 0)
            return false;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN;
    }
}

/* ---- serve ------------------------------------------------------------------------------------
 */

static int rl_serve(const rl_opts_t *o)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0)
        rl_die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(o->port)};
    if (inet_pton(AF_INET, o->host, &a.sin_addr) != 1) {
        fprintf(stderr, "rpcload: bad host %s\n", o->host);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0)
        rl_die("bind");
    if (listen(lfd, 1024) < 0)
        rl_die("listen");
    rl_set_nonblock(lfd);
    int ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    printf("rpcload serve %s on %s:%u\n", rl_proto_names[o->proto], o->host, o->port);
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            rl_die("epoll_wait");
        for (int i = 0; i < n; i++) {
            rl_conn_t *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept(lfd, NULL, NULL)) >= 0) {
                    rl_set_nonblock(fd);
                    c = calloc(1, sizeof *c);
                    if (!c)
                        rl_die("calloc");
                    c->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            bool alive = true;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                alive = rl_read(c);
            while (alive) {
                size_t fl = rl_frame_len(o->proto, c->in.data + c->in.off, c->in.len - c->in.off);
                if (fl == 0)
                    break;
                if (fl == SIZE_MAX || !rl_answer(o->proto, c->in.data + c->in.off, fl, &c->out)) {
                    alive = false;
                    break;
                }
                c->in.off += fl;
            }
            if (alive)
                rl_flush(ep, c);
            if (!alive || c->closed) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                free(c->in.data);
                free(c->out.data);
                free(c);
            }
        }
    }
}

/* ---- run ---------------------------------------------------------------------------------------
 */

typedef struct {
    uint32_t *lat; /* latencies of measured calls, in units of 100 ns */
    size_t n, cap;
    uint64_t errors;
} rl_stats_t;

static void rl_stats_add(rl_stats_t *s, uint64_t ns)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1u << 16;
        uint32_t *p = realloc(s->lat, s->cap * sizeof *p);
        if (!p) {
            fprintf(stderr, "rpcload: out of memory\n");
            exit(2);
        }
        s->lat = p;
    }
    uint64_t u = ns / 100;
    s->lat[s->n++] = u > UINT32_MAX ? UINT32_MAX : (uint32_t)u;
}

static int rl_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double rl_pct_us(const rl_stats_t *s, double q)
{
    if (s->n == 0)
        return 0;
    size_t i = (size_t)(q * (double)(s->n - 1) + 0.5);
    return s->lat[i] / 10.0;
}

static int rl_connect(const rl_opts_t *o)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        rl_die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(o->port)};
    if (inet_pton(AF_INET, o->host, &a.sin_addr) != 1) {
        fprintf(stderr, "rpcload: bad host %s\n", o->host);
        exit(2);
    }
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        rl_die("connect");
    rl_set_nonblock(fd);
    return fd;
}

static void rl_send_slot(const rl_opts_t *o, rl_conn_t *c, uint32_t slot, uint64_t now)
{
    c->gen[slot] = (c->gen[slot] + 1) & 0x7fffffu;
    c->sent_ns[slot] = now;
    rl_write_call(o->proto, &c->out, c->gen[slot] << 8 | slot);
}

static int rl_run(const rl_opts_t *o)
{
    rl_conn_t *cs = calloc(o->conns, sizeof *cs);
    if (!cs)
        rl_die("calloc");
    int ep = epoll_create1(0);
    for (uint32_t i = 0; i < o->conns; i++) {
        cs[i].fd = rl_connect(o);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    rl_stats_t st = {0};
    uint64_t t0 = rl_now_ns();
    uint64_t t_measure = t0 + (uint64_t)(o->warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(o->duration * 1e9);
    for (uint32_t i = 0; i < o->conns; i++) {
        for (uint32_t s = 0; s < o->depth; s++)
            rl_send_slot(o, &cs[i], s, t0);
        rl_flush(ep, &cs[i]);
    }
    uint32_t open_conns = o->conns;
    struct epoll_event evs[256];
    bool stopping = false;
    while (open_conns > 0) {
        uint64_t now = rl_now_ns();
        if (now >= t_end)
            break;
        int n = epoll_wait(ep, evs, 256, 10);
        if (n < 0 && errno != EINTR)
            rl_die("epoll_wait");
        now = rl_now_ns();
        stopping = now >= t_end;
        for (int i = 0; i < n; i++) {
            rl_conn_t *c = evs[i].data.ptr;
            if (c->closed)
                continue;
            bool alive = true;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                alive = rl_read(c);
            for (;;) {
                size_t fl = rl_frame_len(o->proto, c->in.data + c->in.off, c->in.len - c->in.off);
                if (fl == 0)
                    break;
                uint32_t id = 0;
                bool ok = false;
                if (fl == SIZE_MAX ||
                    !rl_parse_reply(o->proto, c->in.data + c->in.off, fl, &id, &ok)) {
                    fprintf(stderr, "rpcload: malformed reply\n");
                    alive = false;
                    break;
                }
                c->in.off += fl;
                uint32_t slot = id & 0xff;
                if (slot >= o->depth || !c->sent_ns[slot] || (id >> 8) != c->gen[slot]) {
                    fprintf(stderr, "rpcload: reply for an id not in flight (%u)\n", id);
                    alive = false;
                    break;
                }
                if (c->sent_ns[slot] >= t_measure && now <= t_end) {
                    if (ok)
                        rl_stats_add(&st, now - c->sent_ns[slot]);
                    else
                        st.errors++;
                } else if (!ok) {
                    st.errors++;
                }
                c->sent_ns[slot] = 0;
                if (!stopping)
                    rl_send_slot(o, c, slot, now);
            }
            if (alive)
                rl_flush(ep, c);
            if (!alive || c->closed) {
                if (!stopping) {
                    fprintf(stderr, "rpcload: connection %ld closed during the run\n",
                            (long)(c - cs));
                    st.errors++;
                }
                c->closed = true;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                open_conns--;
            }
        }
    }
    qsort(st.lat, st.n, sizeof *st.lat, rl_cmp_u32);
    printf("proto=%s conns=%u depth=%u seconds=%.3f calls=%zu errors=%llu calls_per_s=%.0f "
           "p50_us=%.1f p99_us=%.1f max_us=%.1f\n",
           rl_proto_names[o->proto], o->conns, o->depth, o->duration, st.n,
           (unsigned long long)st.errors, (double)st.n / o->duration, rl_pct_us(&st, 0.50),
           rl_pct_us(&st, 0.99), rl_pct_us(&st, 1.0));
    return st.errors == 0 && st.n > 0 ? 0 : 1;
}

/* ---- main -------------------------------------------------------------------------------------
 */

static void rl_usage(void)
{
    fprintf(
        stderr,
        "usage: rpcload serve --proto thrift|dubbo|mrpc --port P [--host H]\n"
        "       rpcload run --proto thrift|dubbo|mrpc --port P [--host H] [--conns N] [--depth D]\n"
        "                   [--duration S] [--warmup S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    rl_opts_t o = {.proto = RL_THRIFT,
                   .host = "127.0.0.1",
                   .conns = 32,
                   .depth = 1,
                   .duration = 3,
                   .warmup = 0.5};
    if (argc < 2)
        rl_usage();
    if (strcmp(argv[1], "serve") == 0)
        o.serve = true;
    else if (strcmp(argv[1], "run") != 0)
        rl_usage();
    bool have_port = false;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--proto")) {
            if (!strcmp(v, "thrift"))
                o.proto = RL_THRIFT;
            else if (!strcmp(v, "dubbo"))
                o.proto = RL_DUBBO;
            else if (!strcmp(v, "mrpc"))
                o.proto = RL_MRPC;
            else
                rl_usage();
        } else if (!strcmp(k, "--port")) {
            o.port = (uint16_t)atoi(v);
            have_port = true;
        } else if (!strcmp(k, "--host")) {
            o.host = v;
        } else if (!strcmp(k, "--conns")) {
            o.conns = (uint32_t)atoi(v);
        } else if (!strcmp(k, "--depth")) {
            o.depth = (uint32_t)atoi(v);
        } else if (!strcmp(k, "--duration")) {
            o.duration = atof(v);
        } else if (!strcmp(k, "--warmup")) {
            o.warmup = atof(v);
        } else {
            rl_usage();
        }
    }
    if (!have_port || o.conns == 0 || o.depth == 0 || o.depth > RL_MAX_DEPTH || o.duration <= 0 ||
        o.warmup < 0)
        rl_usage();
    signal(SIGPIPE, SIG_IGN);
    return o.serve ? rl_serve(&o) : rl_run(&o);
}
