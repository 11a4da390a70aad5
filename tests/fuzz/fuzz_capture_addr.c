/*
 * fuzz_capture_addr.c - libFuzzer harness for the capture flags' address parser
 * (runtime/proxy/capture/capture_addr.c): no crash and no read past the input (an exact-size
 * NUL-terminated copy), and every accepted address is IPv4 or IPv6 with a port from 1 to 65535
 * whose text, formatted back, parses again to the same address.
 * Build: see tests/fuzz/README.md.
 */
#include "runtime/proxy/capture/capture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    struct sockaddr_storage sa, again;
    socklen_t len, len2;
    if (mt_capture_parse_addr(s, &sa, &len) == 0) {
        char ip[INET6_ADDRSTRLEN], text[INET6_ADDRSTRLEN + 16];
        unsigned port;
        if (sa.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
            port = ntohs(in->sin_port);
            inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
            snprintf(text, sizeof text, "%s:%u", ip, port);
        } else if (sa.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa;
            port = ntohs(in6->sin6_port);
            inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
            snprintf(text, sizeof text, "[%s]:%u", ip, port);
        } else {
            abort(); /* accepted, but neither family */
        }
        if (port == 0 || len > sizeof(sa))
            abort();
        /* Family, address and port (an IPv6 zone, "%eth0", is not in the text). */
        if (mt_capture_parse_addr(text, &again, &len2) != 0 || len2 != len ||
            again.ss_family != sa.ss_family)
            abort(); /* its own text does not parse back */
        if (sa.ss_family == AF_INET
                ? memcmp(&((struct sockaddr_in *)&sa)->sin_addr,
                         &((struct sockaddr_in *)&again)->sin_addr, sizeof(struct in_addr)) != 0 ||
                      ((struct sockaddr_in *)&sa)->sin_port !=
                          ((struct sockaddr_in *)&again)->sin_port
                : memcmp(&((struct sockaddr_in6 *)&sa)->sin6_addr,
                         &((struct sockaddr_in6 *)&again)->sin6_addr,
                         sizeof(struct in6_addr)) != 0 ||
                      ((struct sockaddr_in6 *)&sa)->sin6_port !=
                          ((struct sockaddr_in6 *)&again)->sin6_port)
            abort(); /* parsed back to another address */
    }
    free(s);
    return 0;
}
