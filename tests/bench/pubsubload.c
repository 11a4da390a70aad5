/*
 * pubsubload.c - pub/sub fan-out load for tests/bench/pubsub_bench.py: N subscribers of one
 * channel and one publisher, on one epoll thread.
 *
 *   pubsubload HOST PORT SUBSCRIBERS MESSAGES SIZE [PASSWORD]
 *
 * Connects SUBSCRIBERS connections, each sending (AUTH and) SUBSCRIBE bench, and waits until
 * every one has its confirmation; prints "subscribed" and waits for a line on stdin (the caller
 * measures memory then); then publishes MESSAGES messages of SIZE bytes, at most 64 unanswered,
 * and stops when every subscriber has received every message (by bytes: each message frame has
 * a known size) or after 120 s. Prints one JSON line: delivered messages, seconds, rate.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WINDOW 64
#define DEADLINE_S 120.0

typedef struct conn {
    int fd;
    uint64_t want; /* bytes still expected */
} conn_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int dial(const char *host, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) {
            usleep(50);
            continue;
        }
        if (w <= 0) {
            perror("write");
            exit(1);
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Reads what is there on c (non-blocking); returns the bytes read, -1 on EOF/error. */
static ssize_t drain(conn_t *c, char *buf, size_t cap)
{
    ssize_t total = 0;
    for (;;) {
        ssize_t r = read(c->fd, buf, cap);
        if (r > 0) {
            total += r;
            c->want = (uint64_t)r >= c->want ? 0 : c->want - (uint64_t)r;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return total;
        return -1;
    }
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT SUBSCRIBERS MESSAGES SIZE [PASSWORD]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    int n = atoi(argv[3]);
    long messages = atol(argv[4]);
    int size = atoi(argv[5]);
    const char *pass = argc > 6 ? argv[6] : NULL;
    char auth[256] = "";
    if (pass)
        snprintf(auth, sizeof(auth), "*2\r\n$4\r\nAUTH\r\n$%zu\r\n%s\r\n", strlen(pass), pass);
    const char *sub = "*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n";
    const uint64_t confirm = strlen("*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n") +
                             (pass ? 5 : 0);
    char hdr[64];
    int hlen = snprintf(hdr, sizeof(hdr), "*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$%d\r\n", size);
    const uint64_t frame = (uint64_t)hlen + (uint64_t)size + 2;

    int ep = epoll_create1(0);
    conn_t *subs = calloc((size_t)n, sizeof(*subs));
    char *buf = malloc(1 << 20);
    for (int i = 0; i < n; i++) {
        subs[i].fd = dial(host, port);
        if (pass)
            send_all(subs[i].fd, auth, strlen(auth));
        send_all(subs[i].fd, sub, strlen(sub));
        subs[i].want = confirm;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &subs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev);
    }
    /* blocking reads until each is confirmed */
    for (int i = 0; i < n; i++) {
        while (subs[i].want > 0) {
            ssize_t r = read(subs[i].fd, buf, subs[i].want);
            if (r <= 0) {
                fprintf(stderr, "subscriber %d: no confirmation\n", i);
                return 1;
            }
            subs[i].want -= (uint64_t)r;
        }
        subs[i].want = frame * (uint64_t)messages;
        set_nonblock(subs[i].fd);
    }
    printf("subscribed\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof(line), stdin))
        return 1;

    int pub = dial(host, port);
    if (pass) {
        send_all(pub, auth, strlen(auth));
        if (read(pub, buf, 5) != 5)
            return 1;
    }
    char *cmd = malloc((size_t)size + 128);
    int clen = snprintf(cmd, 128, "*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$%d\r\n", size);
    memset(cmd + clen, 'x', (size_t)size);
    memcpy(cmd + clen + size, "\r\n", 2);
    clen += size + 2;
    set_nonblock(pub);
    conn_t pubc = {.fd = pub, .want = 0};
    struct epoll_event pev = {.events = EPOLLIN, .data.ptr = &pubc};
    epoll_ctl(ep, EPOLL_CTL_ADD, pub, &pev);

    long sent = 0, answered = 0;
    int remaining = n;
    double t0 = now_s();
    struct epoll_event evs[256];
    while (remaining > 0 && now_s() - t0 < DEADLINE_S) {
        while (sent < messages && sent - answered < WINDOW) {
            send_all(pub, cmd, (size_t)clen); /* small: the socket buffer takes it */
            sent++;
        }
        int k = epoll_wait(ep, evs, 256, 100);
        for (int e = 0; e < k; e++) {
            conn_t *c = evs[e].data.ptr;
            if (c == &pubc) {
                for (;;) {
                    ssize_t r = read(pub, buf, 1 << 20);
                    if (r <= 0)
                        break;
                    for (ssize_t j = 0; j < r; j++)
                        answered += buf[j] == '\n';
                }
                continue;
            }
            uint64_t before = c->want;
            if (drain(c, buf, 1 << 20) < 0 && c->want > 0) {
                fprintf(stderr, "a subscriber was closed\n");
                return 1;
            }
            if (before > 0 && c->want == 0) {
                remaining--;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
        }
    }
    double secs = now_s() - t0;
    long delivered = 0;
    for (int i = 0; i < n; i++)
        delivered += (long)((frame * (uint64_t)messages - subs[i].want) / frame);
    printf("{\"subscribers\": %d, \"messages\": %ld, \"size\": %d, \"delivered\": %ld, "
           "\"seconds\": %.4f, \"delivered_per_s\": %.0f, \"complete\": %s}\n",
           n, messages, size, delivered, secs, (double)delivered / secs,
           remaining == 0 ? "true" : "false");
    return remaining == 0 ? 0 : 1;
}
