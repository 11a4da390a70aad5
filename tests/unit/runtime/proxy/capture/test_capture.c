/*
 * test_capture.c - the capture ports' pieces that need no netfilter: address parsing, the
 * set-up's refusals (bad address, a port already taken: nothing stays open), and the original
 * destination of a connection iptables did not redirect. The redirect itself is tested with
 * real rules in network namespaces (tests/integration/test_sidecar_netns.py).
 */
#include "runtime/proxy/capture/capture.h"
#include "runtime/core/stats.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint16_t port_of(const struct sockaddr_storage *sa)
{
    return sa->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)sa)->sin_port)
                                    : ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
}

Test(capture, parses_ipv4_and_bracketed_ipv6)
{
    struct sockaddr_storage sa;
    socklen_t len;
    cr_assert_eq(mt_capture_parse_addr("127.0.0.1:15001", &sa, &len), 0);
    cr_assert_eq(sa.ss_family, AF_INET);
    cr_assert_eq(len, sizeof(struct sockaddr_in));
    cr_assert_eq(port_of(&sa), 15001);
    cr_assert_eq(mt_capture_parse_addr("[::1]:15006", &sa, &len), 0);
    cr_assert_eq(sa.ss_family, AF_INET6);
    cr_assert_eq(port_of(&sa), 15006);
    cr_assert_eq(mt_capture_parse_addr("[::]:1", &sa, &len), 0);
}

Test(capture, refuses_what_is_not_ip_and_port)
{
    struct sockaddr_storage sa;
    socklen_t len;
    const char *bad[] = {"",
                         "15001",
                         ":15001",
                         "127.0.0.1:",
                         "127.0.0.1:0",
                         "127.0.0.1:65536",
                         "127.0.0.1:1x",
                         "localhost:1",
                         "::1:15001",
                         "[::1:15001",
                         "[]:15001",
                         "1.2.3:4",
                         NULL};
    for (const char **b = bad; *b; b++)
        cr_assert_eq(mt_capture_parse_addr(*b, &sa, &len), -1, "'%s' must be refused", *b);
}

/* A port the kernel picked, still held by fd (no SO_REUSEPORT: the capture cannot share it). */
static int hold_port(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(fd, 1) == 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

Test(capture, setup_refuses_a_bad_address_and_a_taken_port_and_stays_off)
{
    mt_stats_init(2);
    char *err = NULL;
    cr_assert_eq(mt_capture_setup("127.0.0.1:nope", NULL, 2, &err), -1);
    cr_assert_not_null(strstr(err, "--capture-outbound: '127.0.0.1:nope' is not IP:PORT"), "%s",
                       err);
    free(err);
    cr_assert_not(mt_capture_enabled());

    uint16_t port;
    int held = hold_port(&port);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    cr_assert_eq(mt_capture_setup(NULL, addr, 2, &err), -1);
    cr_assert_not_null(strstr(err, "--capture-inbound"), "%s", err);
    cr_assert_not_null(strstr(err, "cannot listen"), "%s", err);
    free(err);
    cr_assert_not(mt_capture_enabled());
    close(held);
}

Test(capture, setup_opens_one_socket_per_worker_and_teardown_closes_them)
{
    mt_stats_init(2);
    uint16_t port;
    int held = hold_port(&port);
    close(held); /* free again: the capture takes it */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    char *err = NULL;
    cr_assert_eq(mt_capture_setup(addr, NULL, 2, &err), 0, "%s", err ? err : "");
    cr_assert(mt_capture_enabled());
    /* Listening: a client connects (the backlog takes it). */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    close(c);
    mt_capture_teardown();
    cr_assert_not(mt_capture_enabled());
    c = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(c, (struct sockaddr *)&a, sizeof(a)), -1, "closed at teardown");
    close(c);
}

Test(capture, a_connection_not_redirected_has_no_other_original_destination)
{
    uint16_t port;
    int l = hold_port(&port);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    int s = accept(l, NULL, NULL);
    cr_assert(s >= 0);
    struct sockaddr_storage dst;
    /* Without conntrack: no entry (-1). With it: the address connected to, never another. */
    if (mt_capture_original_dst(s, &dst) == 0) {
        cr_assert_eq(dst.ss_family, AF_INET);
        cr_assert_eq(port_of(&dst), port);
    } else {
        cr_assert(errno == ENOENT || errno == ENOPROTOOPT, "errno %d", errno);
    }
    close(s);
    close(c);
    close(l);
}
