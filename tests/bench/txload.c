/*
 * txload.c - a load generator for Redis transactions, for tests/bench/bench.py's MULTI row
 * (redis-benchmark runs one command at a time and cannot send a transaction).
 *
 *   txload --port P [--host 127.0.0.1] [--conns 50] [--duration 3] [--warmup 0.5] [--ping 1]
 *
 * Each of --conns connections sends, in one write, MULTI / INCR k / INCR k / INCR k / EXEC
 * (k = txload:<connection>), waits for the five replies (+OK, three +QUEUED, EXEC's array of
 * three integers: eight CRLF-terminated lines, none of which can hold a CRLF of its own) and
 * sends the next transaction at once. Transactions that complete inside the measured window
 * (after --warmup) count. One line of key=value pairs on stdout:
 *   conns=50 seconds=3.000 tx=123456 errors=0 tx_per_s=41152 p50_us=740.0 p99_us=1510.0
 * Exits non-zero when a reply was an error or a connection closed.
 *
 * --ping 1 queues a PING before the INCRs (ten lines per transaction): through meltemi that
 * makes the transaction one that takes a lease instead of the shared connection
 * (docs/redis-codec.md#transactions), to compare the two paths in one binary.
 *
 * One thread, epoll, non-blocking sockets, no dependencies.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int lines_per_tx = 8;
#define MAX_SAMPLES (1u << 22)

typedef struct conn {
    int fd;
    char req[256];
    size_t req_len;
    int lines; /* reply lines still owed for the transaction in flight */
    bool cr;   /* the last byte read was '\r' */
    bool bol;  /* the next byte starts a line */
    uint64_t sent_ns;
} conn_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static size_t append_cmd(char *out, size_t at, size_t cap, const char *a, const char *b)
{
    int n = b ? snprintf(out + at, cap - at, "*2\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n", strlen(a), a,
                         strlen(b), b)
              : snprintf(out + at, cap - at, "*1\r\n$%zu\r\n%s\r\n", strlen(a), a);
    return n > 0 ? at + (size_t)n : at;
}

static bool send_tx(conn_t *c)
{
    c->lines = lines_per_tx;
    c->sent_ns = now_ns();
    size_t off = 0;
    while (off < c->req_len) {
        ssize_t n = write(c->fd, c->req + off, c->req_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false; /* 120 bytes into an empty socket buffer: a short write is a failure */
        off += (size_t)n;
    }
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int connect_to(const char *host, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, nconns = 50;
    double duration = 3, warmup = 0.5;
    bool ping = false;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--host") == 0)
            host = argv[i + 1];
        else if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--conns") == 0)
            nconns = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--duration") == 0)
            duration = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--warmup") == 0)
            warmup = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--ping") == 0)
            ping = atoi(argv[i + 1]) != 0;
    }
    if (port <= 0 || nconns <= 0) {
        fprintf(stderr, "usage: txload --port P [--host H] [--conns N] [--duration S] "
                        "[--warmup S]\n");
        return 2;
    }
    lines_per_tx = ping ? 10 : 8;
    conn_t *conns = calloc((size_t)nconns, sizeof(*conns));
    uint64_t *samples = malloc(sizeof(uint64_t) * MAX_SAMPLES);
    int ep = epoll_create1(0);
    if (!conns || !samples || ep < 0)
        return 2;
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        char key[32];
        snprintf(key, sizeof(key), "txload:%d", i);
        c->req_len = append_cmd(c->req, 0, sizeof(c->req), "MULTI", NULL);
        if (ping)
            c->req_len = append_cmd(c->req, c->req_len, sizeof(c->req), "PING", NULL);
        for (int k = 0; k < 3; k++)
            c->req_len = append_cmd(c->req, c->req_len, sizeof(c->req), "INCR", key);
        c->req_len = append_cmd(c->req, c->req_len, sizeof(c->req), "EXEC", NULL);
        c->bol = true;
        c->fd = connect_to(host, port);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (c->fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0 || !send_tx(c)) {
            fprintf(stderr, "txload: connection %d to %s:%d failed: %s\n", i, host, port,
                    strerror(errno));
            return 1;
        }
    }
    uint64_t start = now_ns();
    uint64_t from = start + (uint64_t)(warmup * 1e9);
    uint64_t until = from + (uint64_t)(duration * 1e9);
    uint64_t tx = 0, errors = 0;
    size_t n_samples = 0;
    char buf[65536];
    struct epoll_event evs[64];
    while (now_ns() < until && errors == 0) {
        int n = epoll_wait(ep, evs, 64, 100);
        for (int e = 0; e < n; e++) {
            conn_t *c = evs[e].data.ptr;
            ssize_t got = read(c->fd, buf, sizeof(buf));
            if (got <= 0) {
                if (got < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                errors++;
                continue;
            }
            for (ssize_t i = 0; i < got; i++) {
                if (c->bol && buf[i] == '-')
                    errors++; /* a line that starts with '-' is an error reply */
                c->bol = c->cr && buf[i] == '\n';
                if (c->cr && buf[i] == '\n' && --c->lines == 0) {
                    uint64_t t = now_ns();
                    if (t >= from && t < until) {
                        tx++;
                        if (n_samples < MAX_SAMPLES)
                            samples[n_samples++] = t - c->sent_ns;
                    }
                    if (!send_tx(c))
                        errors++;
                }
                c->cr = buf[i] == '\r';
            }
        }
    }
    qsort(samples, n_samples, sizeof(uint64_t), cmp_u64);
    double p50 = n_samples ? (double)samples[n_samples / 2] / 1e3 : 0;
    double p99 = n_samples ? (double)samples[(size_t)((double)n_samples * 0.99)] / 1e3 : 0;
    printf("conns=%d seconds=%.3f tx=%llu errors=%llu tx_per_s=%.0f p50_us=%.1f p99_us=%.1f\n",
           nconns, duration, (unsigned long long)tx, (unsigned long long)errors,
           (double)tx / duration, p50, p99);
    for (int i = 0; i < nconns; i++)
        close(conns[i].fd);
    free(conns);
    free(samples);
    return errors ? 1 : 0;
}
