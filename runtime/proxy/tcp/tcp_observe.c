/*
 * tcp_observe.c - Kafka and ZooKeeper metrics on a relayed TCP connection (tcp_observe.h).
 *
 * Families (each a stats detail family: per listener and one bounded key, never a client
 * string): the key is an API name, a version, an opcode name, an error code number or a
 * decoder event. Blocks are looked up once per connection and key through a small cache.
 */
#include "runtime/proxy/tcp/tcp_observe.h"

#include "protocols/kafka/kafka.h"
#include "protocols/zookeeper/zookeeper.h"
#include "runtime/core/log.h"
#include "runtime/core/snapshot.h"
#include "runtime/core/stats.h"
#include "runtime/core/worker.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- families ------------------------------------------------------------------------------ */

static const mt_stats_detail_t kafka_request_stats = {
    .prefix = "meltemi_kafka_request",
    .label = "api",
    .help_total = "Kafka requests, per listener and API key.",
    .help_errors = "Kafka responses carrying a non-zero error code, per listener and API key "
                   "(ApiVersions, Metadata, Produce, Fetch).",
    .help_duration = "Kafka request to response, ms, per listener and API key (matched by "
                     "correlation id).",
};
static const mt_stats_detail_t kafka_response_stats = {
    .prefix = "meltemi_kafka_response",
    .label = "api",
    .total_only = true,
    .help_total = "Kafka responses matched to a request, per listener and API key.",
};
static const mt_stats_detail_t kafka_request_version_stats = {
    .prefix = "meltemi_kafka_request_version",
    .label = "api_version",
    .total_only = true,
    .help_total = "Kafka requests, per listener, API key and version (\"Produce/7\").",
};
static const mt_stats_detail_t kafka_response_version_stats = {
    .prefix = "meltemi_kafka_response_version",
    .label = "api_version",
    .total_only = true,
    .help_total = "Kafka responses, per listener, API key and version (\"Produce/7\").",
};
static const mt_stats_detail_t kafka_request_bytes_stats = {
    .prefix = "meltemi_kafka_request_bytes",
    .label = "api",
    .total_only = true,
    .help_total = "Bytes of Kafka request frames, per listener and API key.",
};
static const mt_stats_detail_t kafka_response_bytes_stats = {
    .prefix = "meltemi_kafka_response_bytes",
    .label = "api",
    .total_only = true,
    .help_total = "Bytes of Kafka response frames, per listener and API key.",
};
static const mt_stats_detail_t kafka_error_stats = {
    .prefix = "meltemi_kafka_response_error_code",
    .label = "code",
    .total_only = true,
    .help_total = "Kafka responses by their first non-zero error code, per listener.",
};
static const mt_stats_detail_t kafka_decoder_stats = {
    .prefix = "meltemi_kafka_decoder",
    .label = "event",
    .total_only = true,
    .help_total = "Kafka decoder events: unmatched_response, unanswered_request, stopped "
                  "(a stream that is not Kafka; its bytes are still relayed).",
};

static const mt_stats_detail_t zk_request_stats = {
    .prefix = "meltemi_zookeeper_request",
    .label = "opcode",
    .help_total = "ZooKeeper requests, per listener and opcode (connect: the session handshake).",
    .help_errors = "ZooKeeper replies with err != 0 (connect: the session was refused), per "
                   "listener and opcode.",
    .help_duration = "ZooKeeper request to reply, ms, per listener and opcode (matched by xid).",
};
static const mt_stats_detail_t zk_request_bytes_stats = {
    .prefix = "meltemi_zookeeper_request_bytes",
    .label = "opcode",
    .total_only = true,
    .help_total = "Bytes of ZooKeeper request frames, per listener and opcode.",
};
static const mt_stats_detail_t zk_response_bytes_stats = {
    .prefix = "meltemi_zookeeper_response_bytes",
    .label = "opcode",
    .total_only = true,
    .help_total = "Bytes of ZooKeeper reply frames, per listener and opcode.",
};
static const mt_stats_detail_t zk_watch_set_stats = {
    .prefix = "meltemi_zookeeper_watches_set",
    .label = "opcode",
    .total_only = true,
    .help_total = "ZooKeeper requests that set a watch, per listener and opcode.",
};
static const mt_stats_detail_t zk_watch_event_stats = {
    .prefix = "meltemi_zookeeper_watch_events",
    .label = "type",
    .total_only = true,
    .help_total = "ZooKeeper watch events (xid -1) sent to clients, per listener and event type.",
};
static const mt_stats_detail_t zk_error_stats = {
    .prefix = "meltemi_zookeeper_reply_error_code",
    .label = "code",
    .total_only = true,
    .help_total = "ZooKeeper replies by their err code (non-zero), per listener.",
};
static const mt_stats_detail_t zk_decoder_stats = {
    .prefix = "meltemi_zookeeper_decoder",
    .label = "event",
    .total_only = true,
    .help_total = "ZooKeeper decoder events: unmatched_reply, unanswered_request, stopped (a "
                  "stream that is not ZooKeeper; its bytes are still relayed).",
};

/* ---- the observer -------------------------------------------------------------------------- */

#define OBSERVE_CACHE 32 /* direct-mapped (family, key) -> block, per connection */

typedef enum { OBSERVE_KAFKA, OBSERVE_ZOOKEEPER } observe_kind_t;

struct tcp_observer {
    observe_kind_t kind;
    mt_worker_t *w;
    const mt_listener_conf_t *lc; /* the session holds its snapshot */
    struct {
        const mt_stats_detail_t *d;
        int32_t key;
        mt_stats_block_t *b;
    } cache[OBSERVE_CACHE];
    union {
        mt_kafka_t kafka;
        mt_zk_t zk;
    } u;
};

bool tcp_observe_wanted(const mt_listener_conf_t *lc)
{
    return lc->codec && (strcmp(lc->codec, "kafka") == 0 || strcmp(lc->codec, "zookeeper") == 0);
}

tcp_observer_t *tcp_observer_new(mt_worker_t *w, const mt_listener_conf_t *lc)
{
    if (!tcp_observe_wanted(lc))
        return NULL;
    /* Sized by the member in use: a Kafka decoder is larger than a ZooKeeper one. */
    bool kafka = strcmp(lc->codec, "kafka") == 0;
    size_t size = offsetof(tcp_observer_t, u) + (kafka ? sizeof(mt_kafka_t) : sizeof(mt_zk_t));
    tcp_observer_t *o = calloc(1, size);
    if (!o)
        return NULL;
    o->w = w;
    o->lc = lc;
    o->kind = kafka ? OBSERVE_KAFKA : OBSERVE_ZOOKEEPER;
    if (kafka)
        mt_kafka_init(&o->u.kafka);
    else
        mt_zk_init(&o->u.zk);
    return o;
}

void tcp_observer_free(tcp_observer_t *o)
{
    free(o);
}

/* The block of family d and key; name(key) is the label value, made on a cache miss only. */
static mt_stats_block_t *observe_block(tcp_observer_t *o, const mt_stats_detail_t *d, int32_t key,
                                       const char *label)
{
    uint32_t h = ((uint32_t)(uintptr_t)d >> 4) * 31u + (uint32_t)key;
    unsigned i = h % OBSERVE_CACHE;
    if (o->cache[i].b && o->cache[i].d == d && o->cache[i].key == key)
        return o->cache[i].b;
    mt_stats_block_t *b = mt_stats_detail_block(d, o->lc->name, label);
    o->cache[i].d = d;
    o->cache[i].key = key;
    o->cache[i].b = b;
    return b;
}

static void observe_add(tcp_observer_t *o, const mt_stats_detail_t *d, int32_t key,
                        const char *label, unsigned slot, int64_t n)
{
    mt_stat_add(observe_block(o, d, key, label), o->w->id, slot, n);
}

static void observe_latency(tcp_observer_t *o, mt_stats_block_t *b, uint64_t start)
{
    uint64_t now = o->w->now_ns;
    mt_stat_observe_ms(b, o->w->id, now > start ? (double)(now - start) / 1e6 : 0);
}

/* Error codes as label values: the protocol's numbers within a bound, else "other". */
static void observe_code_label(char *buf, size_t n, int32_t code, int32_t lo, int32_t hi)
{
    if (code >= lo && code <= hi)
        snprintf(buf, n, "%d", (int)code);
    else
        snprintf(buf, n, "other");
}

/* ---- Kafka --------------------------------------------------------------------------------- */

static void observe_kafka_event(void *ud, const mt_kafka_event_t *ev)
{
    tcp_observer_t *o = ud;
    const char *api = mt_kafka_api_name(ev->api_key);
    char ver[64];
    int32_t vkey = (int32_t)ev->api_key * 64 + ev->api_version;
    switch (ev->kind) {
    case MT_KAFKA_EV_REQUEST:
        snprintf(ver, sizeof(ver), "%s/%d", api, (int)ev->api_version);
        observe_add(o, &kafka_request_stats, ev->api_key, api, MT_ST_REQUESTS_TOTAL, 1);
        observe_add(o, &kafka_request_version_stats, vkey, ver, MT_ST_REQUESTS_TOTAL, 1);
        observe_add(o, &kafka_request_bytes_stats, ev->api_key, api, MT_ST_REQUESTS_TOTAL,
                    ev->bytes);
        break;
    case MT_KAFKA_EV_RESPONSE: {
        snprintf(ver, sizeof(ver), "%s/%d", api, (int)ev->api_version);
        observe_add(o, &kafka_response_stats, ev->api_key, api, MT_ST_REQUESTS_TOTAL, 1);
        observe_add(o, &kafka_response_version_stats, vkey, ver, MT_ST_REQUESTS_TOTAL, 1);
        observe_add(o, &kafka_response_bytes_stats, ev->api_key, api, MT_ST_REQUESTS_TOTAL,
                    ev->bytes);
        mt_stats_block_t *b = observe_block(o, &kafka_request_stats, ev->api_key, api);
        observe_latency(o, b, ev->start);
        if (ev->has_error_code && ev->error_code != 0) {
            char code[16];
            /* Kafka's codes run from -1 (UNKNOWN_SERVER_ERROR) to about 120 */
            observe_code_label(code, sizeof(code), ev->error_code, -1, 200);
            mt_stat_add(b, o->w->id, MT_ST_REQUEST_ERRORS, 1);
            observe_add(o, &kafka_error_stats, ev->error_code, code, MT_ST_REQUESTS_TOTAL, 1);
        }
        break;
    }
    case MT_KAFKA_EV_UNMATCHED:
        observe_add(o, &kafka_decoder_stats, 0, "unmatched_response", MT_ST_REQUESTS_TOTAL, 1);
        break;
    case MT_KAFKA_EV_UNANSWERED:
        observe_add(o, &kafka_decoder_stats, 1, "unanswered_request", MT_ST_REQUESTS_TOTAL, 1);
        break;
    case MT_KAFKA_EV_STOPPED:
        observe_add(o, &kafka_decoder_stats, 2, "stopped", MT_ST_REQUESTS_TOTAL, 1);
        mt_debug("listener %s: Kafka decoding stopped on a connection: %s (bytes still relayed)",
                 o->lc->name, ev->reason);
        break;
    }
}

/* ---- ZooKeeper ----------------------------------------------------------------------------- */

static const char *zk_event_type_name(int32_t type)
{
    static const char *const names[] = {"None",
                                        "NodeCreated",
                                        "NodeDeleted",
                                        "NodeDataChanged",
                                        "NodeChildrenChanged",
                                        "DataWatchRemoved",
                                        "ChildWatchRemoved",
                                        "PersistentWatchRemoved"};
    /* Watcher.Event.EventType: None is -1, the others count up from 1. */
    if (type == -1)
        return names[0];
    if (type >= 1 && type <= 7)
        return names[type];
    return "other";
}

static void observe_zk_event(void *ud, const mt_zk_event_t *ev)
{
    tcp_observer_t *o = ud;
    const char *op = mt_zk_op_name(ev->opcode);
    int32_t opkey = op ? ev->opcode : INT32_MIN;
    if (!op)
        op = "unknown";
    switch (ev->kind) {
    case MT_ZK_EV_REQUEST:
        observe_add(o, &zk_request_stats, opkey, op, MT_ST_REQUESTS_TOTAL, 1);
        observe_add(o, &zk_request_bytes_stats, opkey, op, MT_ST_REQUESTS_TOTAL, ev->bytes);
        if (ev->watch)
            observe_add(o, &zk_watch_set_stats, opkey, op, MT_ST_REQUESTS_TOTAL, 1);
        break;
    case MT_ZK_EV_REPLY: {
        observe_add(o, &zk_response_bytes_stats, opkey, op, MT_ST_REQUESTS_TOTAL, ev->bytes);
        mt_stats_block_t *b = observe_block(o, &zk_request_stats, opkey, op);
        observe_latency(o, b, ev->start);
        if (ev->err != 0) {
            char code[16];
            /* KeeperException codes run from -1 (SYSTEMERROR) to about -130 */
            observe_code_label(code, sizeof(code), ev->err, -200, -1);
            mt_stat_add(b, o->w->id, MT_ST_REQUEST_ERRORS, 1);
            observe_add(o, &zk_error_stats, ev->err, code, MT_ST_REQUESTS_TOTAL, 1);
        }
        break;
    }
    case MT_ZK_EV_WATCH_EVENT: {
        int32_t t = ev->event_type == -1 || (ev->event_type >= 1 && ev->event_type <= 7)
                        ? ev->event_type
                        : 100;
        observe_add(o, &zk_watch_event_stats, t, zk_event_type_name(ev->event_type),
                    MT_ST_REQUESTS_TOTAL, 1);
        break;
    }
    case MT_ZK_EV_UNMATCHED:
        observe_add(o, &zk_decoder_stats, 0, "unmatched_reply", MT_ST_REQUESTS_TOTAL, 1);
        break;
    case MT_ZK_EV_UNANSWERED:
        observe_add(o, &zk_decoder_stats, 1, "unanswered_request", MT_ST_REQUESTS_TOTAL, 1);
        break;
    case MT_ZK_EV_STOPPED:
        observe_add(o, &zk_decoder_stats, 2, "stopped", MT_ST_REQUESTS_TOTAL, 1);
        mt_debug("listener %s: ZooKeeper decoding stopped on a connection: %s (bytes still "
                 "relayed)",
                 o->lc->name, ev->reason);
        break;
    }
}

void tcp_observe(tcp_observer_t *o, bool from_client, const char *p, size_t n)
{
    const uint8_t *b = (const uint8_t *)p;
    if (o->kind == OBSERVE_KAFKA)
        mt_kafka_feed(&o->u.kafka, from_client, b, n, o->w->now_ns, observe_kafka_event, o);
    else
        mt_zk_feed(&o->u.zk, from_client, b, n, o->w->now_ns, observe_zk_event, o);
}
