/*
 * kafka.h - a passive decoder of the Kafka wire protocol, for metrics only: it watches the
 * bytes a client sends (requests) and the bytes the broker sends back (responses), never
 * changes or holds them, and reports each request and response as an event: API key and
 * version, correlation id, frame size, and for responses the request's start time (matched
 * by correlation id) and the top-level error code where the response has one.
 *
 * Memory per connection is fixed (mt_kafka_t): the first KAFKA_REQ_PEEK bytes of a request
 * and KAFKA_RESP_PEEK of a response are looked at, the rest is skipped by length; at most
 * KAFKA_MAX_PENDING requests wait for their responses (the oldest is dropped beyond). A
 * stream that is not Kafka (a frame length out of bounds, an API key or version no broker
 * knows) stops the decoder for good: one MT_KAFKA_EV_STOPPED event, then silence.
 */
#ifndef MELTEMI_KAFKA_H
#define MELTEMI_KAFKA_H

#include "protocols/lpframe.h"

#include <stdbool.h>
#include <stdint.h>

#define KAFKA_REQ_PEEK 512u
#define KAFKA_RESP_PEEK 2048u
#define KAFKA_MAX_PENDING 64u
/* Brokers refuse requests over socket.request.max.bytes (100 MiB by default); responses
 * are bounded by fetch.max.bytes (50 MiB). Longer frames mean the stream is not Kafka. */
#define KAFKA_MAX_FRAME (256u << 20)
/* API keys the decoder names (0 .. KAFKA_API_COUNT-1); versions above this are garbage. */
#define KAFKA_API_COUNT 69
#define KAFKA_MAX_VERSION 31

typedef struct mt_kafka_pending {
    int32_t correlation_id;
    int16_t api_key;
    int16_t api_version;
    uint64_t start; /* the caller's clock when the request completed */
} mt_kafka_pending_t;

typedef struct mt_kafka {
    mt_lpframe_t req, resp;
    mt_kafka_pending_t pending[KAFKA_MAX_PENDING]; /* a ring, oldest at head */
    uint32_t head, npending;
    bool stopped;
    uint8_t req_peek[KAFKA_REQ_PEEK];
    uint8_t resp_peek[KAFKA_RESP_PEEK];
} mt_kafka_t;

typedef enum mt_kafka_event_kind {
    MT_KAFKA_EV_REQUEST,    /* a request frame */
    MT_KAFKA_EV_RESPONSE,   /* a response that matched a waiting request */
    MT_KAFKA_EV_UNMATCHED,  /* a response whose correlation id no waiting request has */
    MT_KAFKA_EV_UNANSWERED, /* a waiting request given up: a later one was answered first, or
                             * KAFKA_MAX_PENDING were waiting */
    MT_KAFKA_EV_STOPPED,    /* the stream is not Kafka: decoding ends (reason) */
} mt_kafka_event_kind_t;

typedef struct mt_kafka_event {
    mt_kafka_event_kind_t kind;
    int16_t api_key; /* REQUEST, RESPONSE, UNANSWERED */
    int16_t api_version;
    int32_t correlation_id;
    uint32_t bytes;        /* REQUEST, RESPONSE, UNMATCHED: the frame, its length prefix included */
    bool expects_response; /* REQUEST: false for a Produce with acks=0 */
    uint64_t start;        /* RESPONSE, UNANSWERED: the request's time */
    bool has_error_code;   /* RESPONSE: an error code was found in the decoded part */
    int16_t error_code;    /* RESPONSE: the first non-zero one found, else 0 */
    const char *reason;    /* STOPPED */
} mt_kafka_event_t;

typedef void (*mt_kafka_cb)(void *ud, const mt_kafka_event_t *ev);

void mt_kafka_init(mt_kafka_t *k);
/* Bytes a client sent (from_client) or the broker sent, in stream order per direction; now is
 * the caller's clock (any unit), handed back in RESPONSE events' start. */
void mt_kafka_feed(mt_kafka_t *k, bool from_client, const uint8_t *p, size_t n, uint64_t now,
                   mt_kafka_cb cb, void *ud);

/* "Produce", "Fetch", ... or NULL for a key out of the table. */
const char *mt_kafka_api_name(int api_key);
/* True when version v of api_key uses the flexible (compact, tagged) encoding. */
bool mt_kafka_flexible(int api_key, int version);
/* The top-level (or first per-topic / per-partition) error code of a response body: true
 * when the decoded part held one, *code the first non-zero found (else 0). Exposed for the
 * unit tests; body starts after the response header. */
bool mt_kafka_response_error(int api_key, int version, const uint8_t *body, size_t n,
                             int16_t *code);

#endif
