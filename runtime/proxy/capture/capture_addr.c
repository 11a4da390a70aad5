/*
 * capture_addr.c - the capture flags' address syntax (capture.h): "IP:PORT" or
 * "[IPv6]:PORT". Its own file so that the fuzz target (tests/fuzz/fuzz_capture_addr.c) links
 * it with libuv alone.
 */
#include "runtime/proxy/capture/capture.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

int mt_capture_parse_addr(const char *s, struct sockaddr_storage *sa, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || colon[1] == '\0')
        return -1;
    size_t hl = (size_t)(colon - s);
    bool bracketed = s[0] == '[';
    if (bracketed) {
        if (hl < 3 || s[hl - 1] != ']')
            return -1;
        s++;
        hl -= 2;
    }
    if (!bracketed && memchr(s, ':', hl))
        return -1; /* an IPv6 address needs its brackets: "::1:15001" is ambiguous */
    if (hl >= sizeof(host))
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port == 0 || port > 65535)
        return -1;
    memset(sa, 0, sizeof(*sa));
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)sa) == 0) {
        *len = sizeof(struct sockaddr_in);
        return 0;
    }
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)sa) == 0) {
        *len = sizeof(struct sockaddr_in6);
        return 0;
    }
    return -1;
}
