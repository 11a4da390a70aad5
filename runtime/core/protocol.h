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
    /* Not a protocol: the transparent capture ports (runtime/proxy/capture), which hand each
     * connection to the proxy of the listener its original destination selects. Its slot
     * holds the capture's per-worker state; no listener or cluster of a snapshot has it. */
    MT_PROTO_CAPTURE = 3,
    /* Not a protocol either: a Gateway port routed by SNI (runtime/proxy/sni), which hands
     * each handshaken client to the listener of the server its SNI names. */
    MT_PROTO_SNI = 4,
    MT_PROTO_COUNT
} mt_protocol_t;

/* The upstream pools of an endpoint (mt_wendpoint_t.pools): one per protocol, then the extra
 * pools a proxy keeps apart from its main one — Redis's RESP3 connections (said HELLO 3), so
 * that a connection only ever carries one protocol version. Listed here, with the protocols,
 * so that core sizes the array without naming a proxy. */
enum { MT_UPSTREAM_POOL_REDIS_RESP3 = MT_PROTO_COUNT, MT_UPSTREAM_POOLS };

#endif
