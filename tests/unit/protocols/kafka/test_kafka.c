/*
 * test_kafka.c - the passive Kafka decoder (protocols/kafka) and its framer
 * (protocols/lpframe): frames built here field by field after Kafka's message definitions,
 * fed whole and byte by byte; garbage, acks=0, lost responses and the pending bound.
 */
#include "protocols/kafka/kafka.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* ---- a frame builder ----------------------------------------------------------------------- */

typedef struct wbuf {
    uint8_t b[4096];
    size_t n;
} wbuf_t;

static void w8(wbuf_t *w, uint8_t v)
{
    w->b[w->n++] = v;
}
static void w16(wbuf_t *w, int16_t v)
{
    w8(w, (uint8_t)((uint16_t)v >> 8));
    w8(w, (uint8_t)v);
}
static void w32(wbuf_t *w, int32_t v)
{
    w16(w, (int16_t)((uint32_t)v >> 16));
    w16(w, (int16_t)v);
}
static void w64(wbuf_t *w, int64_t v)
{
    w32(w, (int32_t)((uint64_t)v >> 32));
    w32(w, (int32_t)v);
}
static void wstr(wbuf_t *w, const char *s)
{
    w16(w, (int16_t)strlen(s));
    memcpy(w->b + w->n, s, strlen(s));
    w->n += strlen(s);
}
/* Starts a frame: a length placeholder, patched by wend. */
static size_t wbegin(wbuf_t *w)
{
    size_t at = w->n;
    w32(w, 0);
    return at;
}
static void wend(wbuf_t *w, size_t at)
{
    uint32_t len = (uint32_t)(w->n - at - 4);
    w->b[at] = (uint8_t)(len >> 24);
    w->b[at + 1] = (uint8_t)(len >> 16);
    w->b[at + 2] = (uint8_t)(len >> 8);
    w->b[at + 3] = (uint8_t)len;
}

static void request(wbuf_t *w, int16_t key, int16_t ver, int32_t corr)
{
    size_t at = wbegin(w);
    w16(w, key);
    w16(w, ver);
    w32(w, corr);
    wstr(w, "test-client");
    if (key == 0) { /* Produce v3+: transactional_id, then acks, timeout, no topics */
        if (ver >= 3)
            w16(w, -1);
        w16(w, 1);
        w32(w, 1000);
        w32(w, 0);
    }
    wend(w, at);
}

/* ---- event capture ------------------------------------------------------------------------- */

typedef struct events {
    mt_kafka_event_t ev[256];
    int n;
} events_t;

static void capture(void *ud, const mt_kafka_event_t *ev)
{
    events_t *e = ud;
    cr_assert_lt(e->n, 256);
    e->ev[e->n++] = *ev;
}

static void feed(mt_kafka_t *k, bool client, const wbuf_t *w, uint64_t now, events_t *e,
                 bool bytewise)
{
    if (!bytewise) {
        mt_kafka_feed(k, client, w->b, w->n, now, capture, e);
        return;
    }
    for (size_t i = 0; i < w->n; i++)
        mt_kafka_feed(k, client, w->b + i, 1, now, capture, e);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void api_versions_round_trip(bool bytewise)
{
    mt_kafka_t *k = malloc(sizeof(*k));
    mt_kafka_init(k);
    events_t e = {0};
    wbuf_t req = {0}, resp = {0};
    request(&req, 18, 2, 7);
    request(&req, 3, 1, 8); /* two pipelined requests in one write */
    feed(k, true, &req, 100, &e, bytewise);
    cr_assert_eq(e.n, 2);
    cr_assert_eq(e.ev[0].kind, MT_KAFKA_EV_REQUEST);
    cr_assert_eq(e.ev[0].api_key, 18);
    cr_assert_eq(e.ev[0].api_version, 2);
    cr_assert_eq(e.ev[0].correlation_id, 7);
    cr_assert_eq(e.ev[0].bytes, 4 + 2 + 2 + 4 + 2 + 11);
    cr_assert(e.ev[0].expects_response);
    cr_assert_eq(e.ev[1].api_key, 3);

    size_t at = wbegin(&resp);
    w32(&resp, 7);
    w16(&resp, 35); /* UNSUPPORTED_VERSION */
    w32(&resp, 0);
    w32(&resp, 0);
    wend(&resp, at);
    feed(k, false, &resp, 250, &e, bytewise);
    cr_assert_eq(e.n, 3);
    cr_assert_eq(e.ev[2].kind, MT_KAFKA_EV_RESPONSE);
    cr_assert_eq(e.ev[2].api_key, 18);
    cr_assert_eq(e.ev[2].start, 100);
    cr_assert(e.ev[2].has_error_code);
    cr_assert_eq(e.ev[2].error_code, 35);
    cr_assert_eq(k->npending, 1);
    free(k);
}

Test(kafka, requests_and_response_whole)
{
    api_versions_round_trip(false);
}

Test(kafka, requests_and_response_byte_by_byte)
{
    api_versions_round_trip(true);
}

Test(kafka, metadata_v1_topic_error)
{
    /* brokers [node 0 "h":9092 rack null], controller 0, topics [err 3 "t" internal 0 []] */
    wbuf_t b = {0};
    w32(&b, 1);
    w32(&b, 0);
    wstr(&b, "h");
    w32(&b, 9092);
    w16(&b, -1);
    w32(&b, 0);
    w32(&b, 2);
    w16(&b, 0);
    wstr(&b, "ok");
    w8(&b, 0);
    w32(&b, 0);
    w16(&b, 3);
    wstr(&b, "missing");
    w8(&b, 0);
    w32(&b, 0);
    int16_t code = -7;
    cr_assert(mt_kafka_response_error(3, 1, b.b, b.n, &code));
    cr_assert_eq(code, 3);
}

Test(kafka, metadata_v9_flexible_partition_error)
{
    /* throttle, brokers compact [node, host, port, rack null, tags], cluster_id null,
     * controller, topics [err 0, name, internal, partitions [err 6 ...], auth ops, tags] */
    wbuf_t b = {0};
    w32(&b, 0);
    w8(&b, 2);
    w32(&b, 1);
    w8(&b, 2);
    w8(&b, 'h');
    w32(&b, 9092);
    w8(&b, 0);
    w8(&b, 0);
    w8(&b, 0);
    w32(&b, 1);
    w8(&b, 2);
    w16(&b, 0);
    w8(&b, 2);
    w8(&b, 't');
    w8(&b, 0);
    w8(&b, 2);
    w16(&b, 6); /* NOT_LEADER_OR_FOLLOWER */
    w32(&b, 0);
    w32(&b, 1);
    w32(&b, 0);
    w8(&b, 1);
    w8(&b, 1);
    w8(&b, 1);
    w8(&b, 0);
    w32(&b, 0);
    w8(&b, 0);
    w8(&b, 0);
    int16_t code;
    cr_assert(mt_kafka_response_error(3, 9, b.b, b.n, &code));
    cr_assert_eq(code, 6);
}

Test(kafka, produce_v2_partition_error_and_fetch_v7_top_level)
{
    wbuf_t b = {0};
    w32(&b, 1);
    wstr(&b, "t");
    w32(&b, 2);
    w32(&b, 0);
    w16(&b, 0);
    w64(&b, 10);
    w64(&b, -1);
    w32(&b, 1);
    w16(&b, 2); /* CORRUPT_MESSAGE */
    w64(&b, -1);
    w64(&b, -1);
    w32(&b, 0);
    int16_t code;
    cr_assert(mt_kafka_response_error(0, 2, b.b, b.n, &code));
    cr_assert_eq(code, 2);

    wbuf_t f = {0};
    w32(&f, 0);
    w16(&f, 70); /* FETCH_SESSION_ID_NOT_FOUND */
    w32(&f, 0);
    w32(&f, 0);
    cr_assert(mt_kafka_response_error(1, 7, f.b, f.n, &code));
    cr_assert_eq(code, 70);
}

Test(kafka, fetch_v2_clean_response_has_code_zero)
{
    wbuf_t f = {0};
    w32(&f, 0);
    w32(&f, 1);
    wstr(&f, "t");
    w32(&f, 1);
    w32(&f, 0);
    w16(&f, 0);
    w64(&f, 5);
    w32(&f, 3);
    w8(&f, 1);
    w8(&f, 2);
    w8(&f, 3);
    int16_t code = 99;
    cr_assert(mt_kafka_response_error(1, 2, f.b, f.n, &code));
    cr_assert_eq(code, 0);
    /* a truncated body: nothing decodable, no code claimed */
    cr_assert_not(mt_kafka_response_error(1, 2, f.b, 3, &code));
}

Test(kafka, produce_acks_zero_expects_no_response)
{
    mt_kafka_t *k = malloc(sizeof(*k));
    mt_kafka_init(k);
    events_t e = {0};
    wbuf_t w = {0};
    size_t at = wbegin(&w);
    w16(&w, 0);
    w16(&w, 7);
    w32(&w, 1);
    wstr(&w, "c");
    w16(&w, -1); /* transactional_id */
    w16(&w, 0);  /* acks */
    w32(&w, 1000);
    w32(&w, 0);
    wend(&w, at);
    feed(k, true, &w, 1, &e, false);
    cr_assert_eq(e.n, 1);
    cr_assert_not(e.ev[0].expects_response);
    cr_assert_eq(k->npending, 0);
    free(k);
}

Test(kafka, lost_and_unmatched_responses)
{
    mt_kafka_t *k = malloc(sizeof(*k));
    mt_kafka_init(k);
    events_t e = {0};
    wbuf_t req = {0}, resp = {0};
    request(&req, 3, 0, 1);
    request(&req, 3, 0, 2);
    feed(k, true, &req, 1, &e, false);
    size_t at = wbegin(&resp);
    w32(&resp, 2); /* the second answered first: the first is given up */
    wend(&resp, at);
    at = wbegin(&resp);
    w32(&resp, 99);
    wend(&resp, at);
    feed(k, false, &resp, 2, &e, false);
    cr_assert_eq(e.n, 5);
    cr_assert_eq(e.ev[2].kind, MT_KAFKA_EV_UNANSWERED);
    cr_assert_eq(e.ev[2].correlation_id, 1);
    cr_assert_eq(e.ev[3].kind, MT_KAFKA_EV_RESPONSE);
    cr_assert_eq(e.ev[3].correlation_id, 2);
    cr_assert_not(e.ev[3].has_error_code); /* a truncated Metadata body */
    cr_assert_eq(e.ev[4].kind, MT_KAFKA_EV_UNMATCHED);
    free(k);
}

Test(kafka, pending_is_bounded)
{
    mt_kafka_t *k = malloc(sizeof(*k));
    mt_kafka_init(k);
    events_t e = {0};
    wbuf_t req = {0};
    for (int i = 0; i < (int)KAFKA_MAX_PENDING + 3; i++)
        request(&req, 12, 3, i);
    feed(k, true, &req, 1, &e, false);
    cr_assert_eq(k->npending, KAFKA_MAX_PENDING);
    int unanswered = 0;
    for (int i = 0; i < e.n; i++)
        unanswered += e.ev[i].kind == MT_KAFKA_EV_UNANSWERED;
    cr_assert_eq(unanswered, 3);
    free(k);
}

Test(kafka, garbage_stops_once)
{
    mt_kafka_t *k = malloc(sizeof(*k));
    mt_kafka_init(k);
    events_t e = {0};
    const char *http = "GET / HTTP/1.1\r\n\r\n";
    mt_kafka_feed(k, true, (const uint8_t *)http, strlen(http), 1, capture, &e);
    cr_assert_eq(e.n, 1);
    cr_assert_eq(e.ev[0].kind, MT_KAFKA_EV_STOPPED);
    wbuf_t req = {0};
    request(&req, 18, 0, 1);
    feed(k, true, &req, 1, &e, false);
    cr_assert_eq(e.n, 1, "a stopped decoder stays silent");
    free(k);
}

Test(kafka, unknown_api_key_stops)
{
    mt_kafka_t *k = malloc(sizeof(*k));
    mt_kafka_init(k);
    events_t e = {0};
    wbuf_t req = {0};
    request(&req, 900, 0, 1);
    feed(k, true, &req, 1, &e, false);
    cr_assert_eq(e.n, 1);
    cr_assert_eq(e.ev[0].kind, MT_KAFKA_EV_STOPPED);
    free(k);
}

Test(kafka, names_and_flexible_versions)
{
    cr_assert_str_eq(mt_kafka_api_name(0), "Produce");
    cr_assert_str_eq(mt_kafka_api_name(18), "ApiVersions");
    cr_assert_str_eq(mt_kafka_api_name(68), "ConsumerGroupHeartbeat");
    cr_assert_null(mt_kafka_api_name(69));
    cr_assert_null(mt_kafka_api_name(-1));
    cr_assert(mt_kafka_flexible(3, 9));
    cr_assert_not(mt_kafka_flexible(3, 8));
    cr_assert_not(mt_kafka_flexible(17, 1)); /* SaslHandshake never */
}

Test(lpframe, bounds_and_peek)
{
    uint8_t peek[4];
    mt_lpframe_t f;
    mt_lpframe_init(&f, 1, 10, peek, sizeof(peek));
    const uint8_t in[] = {0, 0, 0, 6, 'a', 'b', 'c', 'd', 'e', 'f', 0, 0, 0, 11};
    const uint8_t *p = in;
    size_t n = sizeof(in);
    cr_assert_eq(mt_lpframe_next(&f, &p, &n), MT_LPFRAME_FRAME);
    cr_assert_eq(f.len, 6);
    cr_assert_eq(f.npeek, 4);
    cr_assert_eq(memcmp(peek, "abcd", 4), 0);
    cr_assert_eq(mt_lpframe_next(&f, &p, &n), MT_LPFRAME_BAD, "11 > max_len 10");
}
