/*
 * capture.h - transparent interception, the way Istio's sidecar does it without Envoy:
 * iptables (tools/meltemi-iptables) REDIRECTs an application's outbound connections to the
 * outbound capture port (e.g. 127.0.0.1:15001) and the pod's inbound ones to the inbound
 * capture port (e.g. 0.0.0.0:15006). For each connection the capture port reads the original
 * destination (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST) and hands the connection to the proxy
 * of the listener that a socket bound to that address and port would have been: the exact
 * address first, then a wildcard (0.0.0.0 / ::) one on the port. Outbound never selects a
 * Sidecar ingress listener, inbound selects only those. A destination no listener claims is
 * relayed as plain TCP to where it was going (PassthroughCluster outbound,
 * InboundPassthroughCluster inbound), counted like any listener and cluster.
 *
 * With a capture port set, the snapshot's listeners are not bound (Istio's bind_to_port:
 * false): their addresses are usually not local (cluster IPs), and inbound ones would take
 * the application's own ports.
 *
 * The main thread calls mt_capture_setup before the workers start; the capture's part of
 * the registry (mt_proxy_capture) then opens each worker's sockets on its loop.
 */
#ifndef MELTEMI_PROXY_CAPTURE_H
#define MELTEMI_PROXY_CAPTURE_H

#include <stdbool.h>
#include <sys/socket.h>

typedef enum mt_capture_dir {
    MT_CAPTURE_OUTBOUND = 0,
    MT_CAPTURE_INBOUND = 1,
    MT_CAPTURE_DIRS
} mt_capture_dir_t;

/*
 * Main thread, before any worker starts: parses each address ("IP:PORT", "[IPv6]:PORT";
 * NULL: that direction is off), opens one SO_REUSEPORT socket per worker and creates the
 * passthrough listener and cluster (their stats blocks). Returns 0, or -1 and a malloc'd
 * *err ("--capture-outbound 1.2.3.4:99: cannot listen: ..."); nothing stays open then.
 */
int mt_capture_setup(const char *outbound, const char *inbound, unsigned nworkers, char **err);
/* True when a capture port is set: the server then binds no listener of the snapshot. */
bool mt_capture_enabled(void);
/* After the workers are joined: closes the sockets no worker took and frees the setup. */
void mt_capture_teardown(void);

/* "IP:PORT" or "[IPv6]:PORT" into sa (exposed for the unit tests). Returns 0 or -1. */
int mt_capture_parse_addr(const char *s, struct sockaddr_storage *sa, socklen_t *len);
/* The original destination of an accepted, redirected socket. Returns 0, or -1 (errno) when
 * the connection was not redirected by netfilter (ENOENT) or the option is unknown. */
int mt_capture_original_dst(int fd, struct sockaddr_storage *dst);

#endif
