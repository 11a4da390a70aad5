/*
 * protocol.h - which proxy serves a listener or cluster. The values index the worker's
 * per-proxy state (mt_worker_t.proxy); the registry (proxy.h) maps them to their proxies.
 */
#ifndef MELTEMI_CORE_PROTOCOL_H
#define MELTEMI_CORE_PROTOCOL_H

typedef enum mt_protocol {
    MT_PROTO_TCP = 0,
    MT_PROTO_REDIS = 1,
    MT_PROTO_META = 2,
    MT_PROTO_COUNT
} mt_protocol_t;

#endif
