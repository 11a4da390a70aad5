/*
 * tcp_observe.h - request metrics for byte-for-byte TCP ports whose protocol meltemi can read
 * but does not route: Kafka and ZooKeeper (a listener with protocol tcp and codec "kafka" or
 * "zookeeper"; the compiler sets it from the port name). The relay hands every chunk it
 * reads to tcp_observe, which feeds a passive decoder (protocols/kafka, protocols/zookeeper)
 * and adds its events to meltemi_kafka_* / meltemi_zookeeper_* (docs/observability.md). The
 * bytes themselves are relayed untouched whatever the decoder makes of them.
 */
#ifndef MELTEMI_TCP_OBSERVE_H
#define MELTEMI_TCP_OBSERVE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct mt_worker mt_worker_t;
typedef struct mt_listener_conf mt_listener_conf_t;
typedef struct tcp_observer tcp_observer_t;

/* True when the listener's codec names a protocol tcp_observe decodes. */
bool tcp_observe_wanted(const mt_listener_conf_t *lc);
/* The observer of one connection of lc (its memory is fixed: see the decoders), or NULL
 * when lc wants none or memory ran out (the relay goes on unobserved). */
tcp_observer_t *tcp_observer_new(mt_worker_t *w, const mt_listener_conf_t *lc);
/* n bytes read from the client (from_client) or the upstream, at the worker's now_ns. */
void tcp_observe(tcp_observer_t *o, bool from_client, const char *p, size_t n);
void tcp_observer_free(tcp_observer_t *o);

#endif
