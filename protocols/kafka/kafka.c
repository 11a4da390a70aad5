/*
 * kafka.c - the passive Kafka decoder (kafka.h): request and response headers, Produce's acks,
 * and the error codes of ApiVersions, Metadata, Produce and Fetch responses. Field layouts
 * follow the protocol's message definitions (clients/src/main/resources/common/message/).
 */
#include "protocols/kafka/kafka.h"

#include <string.h>

/* Names as Kafka's ApiKeys enum spells them, and the first flexible version (0: none). */
static const struct {
    const char *name;
    int8_t flexible_from;
} kafka_apis[KAFKA_API_COUNT] = {
    {"Produce", 9},
    {"Fetch", 12},
    {"ListOffsets", 6},
    {"Metadata", 9},
    {"LeaderAndIsr", 4},
    {"StopReplica", 2},
    {"UpdateMetadata", 6},
    {"ControlledShutdown", 3},
    {"OffsetCommit", 8},
    {"OffsetFetch", 6},
    {"FindCoordinator", 3},
    {"JoinGroup", 6},
    {"Heartbeat", 4},
    {"LeaveGroup", 4},
    {"SyncGroup", 4},
    {"DescribeGroups", 5},
    {"ListGroups", 3},
    {"SaslHandshake", -1},
    {"ApiVersions", 3},
    {"CreateTopics", 5},
    {"DeleteTopics", 4},
    {"DeleteRecords", 2},
    {"InitProducerId", 2},
    {"OffsetForLeaderEpoch", 4},
    {"AddPartitionsToTxn", 3},
    {"AddOffsetsToTxn", 3},
    {"EndTxn", 3},
    {"WriteTxnMarkers", 1},
    {"TxnOffsetCommit", 3},
    {"DescribeAcls", 2},
    {"CreateAcls", 2},
    {"DeleteAcls", 2},
    {"DescribeConfigs", 4},
    {"AlterConfigs", 2},
    {"AlterReplicaLogDirs", 2},
    {"DescribeLogDirs", 2},
    {"SaslAuthenticate", 2},
    {"CreatePartitions", 2},
    {"CreateDelegationToken", 2},
    {"RenewDelegationToken", 2},
    {"ExpireDelegationToken", 2},
    {"DescribeDelegationToken", 2},
    {"DeleteGroups", 2},
    {"ElectLeaders", 2},
    {"IncrementalAlterConfigs", 1},
    {"AlterPartitionReassignments", 0},
    {"ListPartitionReassignments", 0},
    {"OffsetDelete", -1},
    {"DescribeClientQuotas", 1},
    {"AlterClientQuotas", 1},
    {"DescribeUserScramCredentials", 0},
    {"AlterUserScramCredentials", 0},
    {"Vote", 0},
    {"BeginQuorumEpoch", 0},
    {"EndQuorumEpoch", 0},
    {"DescribeQuorum", 0},
    {"AlterPartition", 0},
    {"UpdateFeatures", 0},
    {"Envelope", 0},
    {"FetchSnapshot", 0},
    {"DescribeCluster", 0},
    {"DescribeProducers", 0},
    {"BrokerRegistration", 0},
    {"BrokerHeartbeat", 0},
    {"UnregisterBroker", 0},
    {"DescribeTransactions", 0},
    {"ListTransactions", 0},
    {"AllocateProducerIds", 0},
    {"ConsumerGroupHeartbeat", 0},
};

enum { KAFKA_PRODUCE = 0, KAFKA_FETCH = 1, KAFKA_METADATA = 3, KAFKA_API_VERSIONS = 18 };

const char *mt_kafka_api_name(int api_key)
{
    return api_key >= 0 && api_key < KAFKA_API_COUNT ? kafka_apis[api_key].name : NULL;
}

bool mt_kafka_flexible(int api_key, int version)
{
    if (api_key < 0 || api_key >= KAFKA_API_COUNT || kafka_apis[api_key].flexible_from < 0)
        return false;
    return version >= kafka_apis[api_key].flexible_from;
}

/* ---- field readers in both encodings ------------------------------------------------------ */

/* An array's element count; -1 for a null array (or a read past the end). */
static int32_t kafka_array_len(mt_lprd_t *r, bool flex)
{
    if (flex) {
        uint32_t v = mt_lprd_uvarint(r);
        return r->ok ? (int32_t)v - 1 : -1;
    }
    int32_t v = mt_lprd_i32(r);
    return r->ok ? v : -1;
}

/* A (nullable) string or bytes: skipped. bytes_len32 for the int32-sized BYTES type. */
static void kafka_skip_str(mt_lprd_t *r, bool flex, bool bytes_len32)
{
    int64_t len;
    if (flex)
        len = (int64_t)mt_lprd_uvarint(r) - 1;
    else if (bytes_len32)
        len = mt_lprd_i32(r);
    else
        len = mt_lprd_i16(r);
    if (len > 0)
        mt_lprd_skip(r, (size_t)len);
}

/* The tagged fields that end every structure of a flexible version. */
static void kafka_skip_tags(mt_lprd_t *r, bool flex)
{
    if (!flex)
        return;
    uint32_t n = mt_lprd_uvarint(r);
    for (uint32_t i = 0; i < n && r->ok; i++) {
        mt_lprd_uvarint(r); /* tag */
        mt_lprd_skip(r, mt_lprd_uvarint(r));
    }
}

static void kafka_skip_int32_array(mt_lprd_t *r, bool flex)
{
    int32_t n = kafka_array_len(r, flex);
    if (n > 0)
        mt_lprd_skip(r, (size_t)n * 4);
}

/* Keeps the first non-zero code; returns true once one was read. */
static bool kafka_note_code(mt_lprd_t *r, int16_t *code)
{
    int16_t c = mt_lprd_i16(r);
    if (!r->ok)
        return false;
    if (*code == 0)
        *code = c;
    return true;
}

/* ---- responses ---------------------------------------------------------------------------- */

/* ProduceResponse: responses [name, partitions [index, error_code, ...]], throttle. */
static bool kafka_produce_error(mt_lprd_t *r, int v, bool flex, int16_t *code)
{
    bool found = false;
    int32_t topics = kafka_array_len(r, flex);
    for (int32_t t = 0; t < topics && r->ok; t++) {
        kafka_skip_str(r, flex, false);
        int32_t parts = kafka_array_len(r, flex);
        for (int32_t i = 0; i < parts && r->ok; i++) {
            mt_lprd_skip(r, 4); /* index */
            found |= kafka_note_code(r, code);
            mt_lprd_skip(r, 8); /* base_offset */
            if (v >= 2)
                mt_lprd_skip(r, 8); /* log_append_time_ms */
            if (v >= 5)
                mt_lprd_skip(r, 8); /* log_start_offset */
            if (v >= 8) {
                int32_t errs = kafka_array_len(r, flex);
                for (int32_t e = 0; e < errs && r->ok; e++) {
                    mt_lprd_skip(r, 4);
                    kafka_skip_str(r, flex, false);
                    kafka_skip_tags(r, flex);
                }
                kafka_skip_str(r, flex, false); /* error_message */
            }
            kafka_skip_tags(r, flex);
        }
        kafka_skip_tags(r, flex);
    }
    return found;
}

/* FetchResponse: [throttle (v1+)], [error_code (v7+)], [session_id (v7+)], responses [topic
 * (v13+: topic_id), partitions [index, error_code, high_watermark, ...records]]. */
static bool kafka_fetch_error(mt_lprd_t *r, int v, bool flex, int16_t *code)
{
    bool found = false;
    if (v >= 1)
        mt_lprd_skip(r, 4);
    if (v >= 7) {
        found = kafka_note_code(r, code);
        mt_lprd_skip(r, 4);
    }
    int32_t topics = kafka_array_len(r, flex);
    for (int32_t t = 0; t < topics && r->ok; t++) {
        if (v >= 13)
            mt_lprd_skip(r, 16);
        else
            kafka_skip_str(r, flex, false);
        int32_t parts = kafka_array_len(r, flex);
        for (int32_t i = 0; i < parts && r->ok; i++) {
            mt_lprd_skip(r, 4);
            found |= kafka_note_code(r, code);
            mt_lprd_skip(r, 8); /* high_watermark */
            if (v >= 4) {
                mt_lprd_skip(r, 8); /* last_stable_offset */
                if (v >= 5)
                    mt_lprd_skip(r, 8); /* log_start_offset */
                int32_t aborted = kafka_array_len(r, flex);
                for (int32_t a = 0; a < aborted && r->ok; a++) {
                    mt_lprd_skip(r, 16);
                    kafka_skip_tags(r, flex);
                }
            }
            if (v >= 11)
                mt_lprd_skip(r, 4); /* preferred_read_replica */
            if (flex) {
                /* v12+ may put diverging_epoch etc. in tagged fields after the records */
                kafka_skip_str(r, flex, true);
                kafka_skip_tags(r, flex);
            } else {
                kafka_skip_str(r, false, true); /* records */
            }
        }
        kafka_skip_tags(r, flex);
    }
    return found;
}

/* MetadataResponse: [throttle (v3+)], brokers [node_id, host, port, rack (v1+)], cluster_id
 * (v2+), controller_id (v1+), topics [error_code, name, (v10+ topic_id), is_internal (v1+),
 * partitions [error_code, ...]]. */
static bool kafka_metadata_error(mt_lprd_t *r, int v, bool flex, int16_t *code)
{
    bool found = false;
    if (v >= 3)
        mt_lprd_skip(r, 4);
    int32_t brokers = kafka_array_len(r, flex);
    for (int32_t b = 0; b < brokers && r->ok; b++) {
        mt_lprd_skip(r, 4);
        kafka_skip_str(r, flex, false);
        mt_lprd_skip(r, 4);
        if (v >= 1)
            kafka_skip_str(r, flex, false);
        kafka_skip_tags(r, flex);
    }
    if (v >= 2)
        kafka_skip_str(r, flex, false);
    if (v >= 1)
        mt_lprd_skip(r, 4);
    int32_t topics = kafka_array_len(r, flex);
    for (int32_t t = 0; t < topics && r->ok; t++) {
        found |= kafka_note_code(r, code);
        kafka_skip_str(r, flex, false);
        if (v >= 10)
            mt_lprd_skip(r, 16);
        if (v >= 1)
            mt_lprd_skip(r, 1);
        int32_t parts = kafka_array_len(r, flex);
        for (int32_t i = 0; i < parts && r->ok; i++) {
            found |= kafka_note_code(r, code);
            mt_lprd_skip(r, 8); /* partition_index, leader_id */
            if (v >= 7)
                mt_lprd_skip(r, 4); /* leader_epoch */
            kafka_skip_int32_array(r, flex);
            kafka_skip_int32_array(r, flex);
            if (v >= 5)
                kafka_skip_int32_array(r, flex);
            kafka_skip_tags(r, flex);
        }
        if (v >= 8)
            mt_lprd_skip(r, 4); /* topic_authorized_operations */
        kafka_skip_tags(r, flex);
    }
    return found;
}

bool mt_kafka_response_error(int api_key, int version, const uint8_t *body, size_t n, int16_t *code)
{
    mt_lprd_t r = mt_lprd(body, n);
    bool flex = mt_kafka_flexible(api_key, version);
    *code = 0;
    switch (api_key) {
    case KAFKA_API_VERSIONS:
        /* error_code comes first in every version (and a broker answering a version it does
         * not support answers v0 with UNSUPPORTED_VERSION). */
        return kafka_note_code(&r, code);
    case KAFKA_PRODUCE:
        return kafka_produce_error(&r, version, flex, code);
    case KAFKA_FETCH:
        return kafka_fetch_error(&r, version, flex, code);
    case KAFKA_METADATA:
        return kafka_metadata_error(&r, version, flex, code);
    default:
        return false;
    }
}

/* ---- the stream --------------------------------------------------------------------------- */

void mt_kafka_init(mt_kafka_t *k)
{
    memset(k, 0, sizeof(*k));
    /* A request header is at least api_key, api_version, correlation_id, client_id length. */
    mt_lpframe_init(&k->req, 10, KAFKA_MAX_FRAME, k->req_peek, KAFKA_REQ_PEEK);
    mt_lpframe_init(&k->resp, 4, KAFKA_MAX_FRAME, k->resp_peek, KAFKA_RESP_PEEK);
}

static void kafka_stop(mt_kafka_t *k, const char *reason, mt_kafka_cb cb, void *ud)
{
    k->stopped = true;
    mt_kafka_event_t ev = {.kind = MT_KAFKA_EV_STOPPED, .reason = reason};
    cb(ud, &ev);
}

static void kafka_give_up_oldest(mt_kafka_t *k, mt_kafka_cb cb, void *ud)
{
    const mt_kafka_pending_t *q = &k->pending[k->head];
    mt_kafka_event_t ev = {.kind = MT_KAFKA_EV_UNANSWERED,
                           .api_key = q->api_key,
                           .api_version = q->api_version,
                           .correlation_id = q->correlation_id,
                           .start = q->start};
    k->head = (k->head + 1) % KAFKA_MAX_PENDING;
    k->npending--;
    cb(ud, &ev);
}

/* Produce's acks: v0-2 first in the body, v3+ after transactional_id. acks=0 gets no reply. */
static bool kafka_produce_expects_response(mt_lprd_t *r, int v, bool flex)
{
    if (v >= 3)
        kafka_skip_str(r, flex, false);
    int16_t acks = mt_lprd_i16(r);
    return !r->ok || acks != 0; /* unknown: assume a response comes (a later one purges it) */
}

static void kafka_request(mt_kafka_t *k, uint64_t now, mt_kafka_cb cb, void *ud)
{
    mt_lprd_t r = mt_lprd(k->req_peek, k->req.npeek);
    int16_t key = mt_lprd_i16(&r);
    int16_t ver = mt_lprd_i16(&r);
    int32_t corr = mt_lprd_i32(&r);
    if (key < 0 || key >= KAFKA_API_COUNT || ver < 0 || ver > KAFKA_MAX_VERSION) {
        kafka_stop(k, "request with an unknown API key or version", cb, ud);
        return;
    }
    bool flex = mt_kafka_flexible(key, ver);
    kafka_skip_str(&r, false, false); /* client_id: never compact (request header v1/v2) */
    kafka_skip_tags(&r, flex);
    bool expects = key != KAFKA_PRODUCE || kafka_produce_expects_response(&r, ver, flex);
    mt_kafka_event_t ev = {.kind = MT_KAFKA_EV_REQUEST,
                           .api_key = key,
                           .api_version = ver,
                           .correlation_id = corr,
                           .bytes = k->req.len + 4,
                           .expects_response = expects};
    cb(ud, &ev);
    if (!expects)
        return;
    if (k->npending == KAFKA_MAX_PENDING)
        kafka_give_up_oldest(k, cb, ud);
    mt_kafka_pending_t *q = &k->pending[(k->head + k->npending) % KAFKA_MAX_PENDING];
    q->correlation_id = corr;
    q->api_key = key;
    q->api_version = ver;
    q->start = now;
    k->npending++;
}

/* Brokers answer in request order on a connection, so requests before the one answered
 * were dropped (or their responses lost to a decoder that joined late). */
static void kafka_response(mt_kafka_t *k, mt_kafka_cb cb, void *ud)
{
    mt_lprd_t r = mt_lprd(k->resp_peek, k->resp.npeek);
    int32_t corr = mt_lprd_i32(&r);
    uint32_t i = 0;
    while (i < k->npending && k->pending[(k->head + i) % KAFKA_MAX_PENDING].correlation_id != corr)
        i++;
    if (i == k->npending) {
        mt_kafka_event_t ev = {
            .kind = MT_KAFKA_EV_UNMATCHED, .correlation_id = corr, .bytes = k->resp.len + 4};
        cb(ud, &ev);
        return;
    }
    while (i-- > 0)
        kafka_give_up_oldest(k, cb, ud);
    mt_kafka_pending_t q = k->pending[k->head];
    k->head = (k->head + 1) % KAFKA_MAX_PENDING;
    k->npending--;
    /* Response header v1 (flexible versions) adds tagged fields; ApiVersions keeps v0 so that
     * a client can read it before it knows what the broker speaks. */
    if (q.api_key != KAFKA_API_VERSIONS)
        kafka_skip_tags(&r, mt_kafka_flexible(q.api_key, q.api_version));
    mt_kafka_event_t ev = {.kind = MT_KAFKA_EV_RESPONSE,
                           .api_key = q.api_key,
                           .api_version = q.api_version,
                           .correlation_id = corr,
                           .bytes = k->resp.len + 4,
                           .start = q.start};
    if (r.ok)
        ev.has_error_code =
            mt_kafka_response_error(q.api_key, q.api_version, r.p, r.n, &ev.error_code);
    cb(ud, &ev);
}

void mt_kafka_feed(mt_kafka_t *k, bool from_client, const uint8_t *p, size_t n, uint64_t now,
                   mt_kafka_cb cb, void *ud)
{
    mt_lpframe_t *f = from_client ? &k->req : &k->resp;
    while (!k->stopped && n > 0) {
        mt_lpframe_status_t st = mt_lpframe_next(f, &p, &n);
        if (st == MT_LPFRAME_AGAIN)
            return;
        if (st == MT_LPFRAME_BAD) {
            kafka_stop(k,
                       from_client ? "request frame length out of bounds"
                                   : "response frame length out of bounds",
                       cb, ud);
            return;
        }
        if (from_client)
            kafka_request(k, now, cb, ud);
        else
            kafka_response(k, cb, ud);
    }
}
