/*
 * test_zookeeper.c - the passive ZooKeeper decoder (protocols/zookeeper): the session
 * handshake, requests with and without watches, replies matched by xid (out of order for
 * auth), errors, watch events, and streams that are not ZooKeeper.
 */
#include "protocols/zookeeper/zookeeper.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

typedef struct wbuf {
    uint8_t b[2048];
    size_t n;
    size_t at;
} wbuf_t;

static void w8(wbuf_t *w, uint8_t v)
{
    w->b[w->n++] = v;
}
static void w32(wbuf_t *w, int32_t v)
{
    for (int s = 24; s >= 0; s -= 8)
        w8(w, (uint8_t)((uint32_t)v >> s));
}
static void w64(wbuf_t *w, int64_t v)
{
    w32(w, (int32_t)((uint64_t)v >> 32));
    w32(w, (int32_t)v);
}
static void wstr(wbuf_t *w, const char *s)
{
    w32(w, (int32_t)strlen(s));
    memcpy(w->b + w->n, s, strlen(s));
    w->n += strlen(s);
}
static void wbegin(wbuf_t *w)
{
    w->at = w->n;
    w32(w, 0);
}
static void wend(wbuf_t *w)
{
    uint32_t len = (uint32_t)(w->n - w->at - 4);
    for (int i = 0; i < 4; i++)
        w->b[w->at + (size_t)i] = (uint8_t)(len >> (24 - 8 * i));
}

static void connect_request(wbuf_t *w)
{
    wbegin(w);
    w32(w, 0);     /* protocolVersion */
    w64(w, 0);     /* lastZxidSeen */
    w32(w, 10000); /* timeOut */
    w64(w, 0);     /* sessionId */
    wstr(w, "0123456789abcdef");
    w8(w, 0); /* readOnly */
    wend(w);
}

static void connect_response(wbuf_t *w, int32_t timeout)
{
    wbegin(w);
    w32(w, 0);
    w32(w, timeout);
    w64(w, 0x1234);
    wstr(w, "0123456789abcdef");
    w8(w, 0);
    wend(w);
}

static void req_path(wbuf_t *w, int32_t xid, int32_t op, const char *path, int watch)
{
    wbegin(w);
    w32(w, xid);
    w32(w, op);
    wstr(w, path);
    if (watch >= 0)
        w8(w, (uint8_t)watch);
    wend(w);
}

static void reply(wbuf_t *w, int32_t xid, int32_t err)
{
    wbegin(w);
    w32(w, xid);
    w64(w, 77);
    w32(w, err);
    wend(w);
}

typedef struct events {
    mt_zk_event_t ev[128];
    int n;
} events_t;

static void capture(void *ud, const mt_zk_event_t *ev)
{
    events_t *e = ud;
    cr_assert_lt(e->n, 128);
    e->ev[e->n++] = *ev;
}

static void feed(mt_zk_t *z, bool client, const wbuf_t *w, uint64_t now, events_t *e, bool bytewise)
{
    if (!bytewise) {
        mt_zk_feed(z, client, w->b, w->n, now, capture, e);
        return;
    }
    for (size_t i = 0; i < w->n; i++)
        mt_zk_feed(z, client, w->b + i, 1, now, capture, e);
}

static void session(bool bytewise)
{
    mt_zk_t *z = malloc(sizeof(*z));
    mt_zk_init(z);
    events_t e = {0};
    wbuf_t c = {0}, s = {0};
    connect_request(&c);
    feed(z, true, &c, 10, &e, bytewise);
    cr_assert_eq(e.n, 1);
    cr_assert_eq(e.ev[0].opcode, ZK_OP_CONNECT);
    connect_response(&s, 10000);
    feed(z, false, &s, 20, &e, bytewise);
    cr_assert_eq(e.n, 2);
    cr_assert_eq(e.ev[1].kind, MT_ZK_EV_REPLY);
    cr_assert_eq(e.ev[1].opcode, ZK_OP_CONNECT);
    cr_assert_eq(e.ev[1].err, 0);
    cr_assert_eq(e.ev[1].start, 10);

    c.n = s.n = 0;
    req_path(&c, 1, ZK_OP_GET_DATA, "/a", 1);
    req_path(&c, 2, ZK_OP_EXISTS, "/b", 0);
    req_path(&c, ZK_XID_PING, ZK_OP_PING, "", -1);
    feed(z, true, &c, 30, &e, bytewise);
    cr_assert_eq(e.n, 5);
    cr_assert_eq(e.ev[2].opcode, ZK_OP_GET_DATA);
    cr_assert(e.ev[2].watch);
    cr_assert_not(e.ev[3].watch);
    cr_assert_eq(e.ev[4].opcode, ZK_OP_PING);

    reply(&s, 1, 0);
    reply(&s, 2, -101); /* NONODE */
    wbegin(&s);         /* a watch event: xid -1, NodeDataChanged, SyncConnected, path */
    w32(&s, -1);
    w64(&s, -1);
    w32(&s, 0);
    w32(&s, 3);
    w32(&s, 3);
    wstr(&s, "/a");
    wend(&s);
    reply(&s, ZK_XID_PING, 0);
    feed(z, false, &s, 45, &e, bytewise);
    cr_assert_eq(e.n, 9);
    cr_assert_eq(e.ev[5].opcode, ZK_OP_GET_DATA);
    cr_assert_eq(e.ev[5].start, 30);
    cr_assert_eq(e.ev[6].opcode, ZK_OP_EXISTS);
    cr_assert_eq(e.ev[6].err, -101);
    cr_assert_eq(e.ev[7].kind, MT_ZK_EV_WATCH_EVENT);
    cr_assert_eq(e.ev[7].event_type, 3);
    cr_assert_eq(e.ev[8].opcode, ZK_OP_PING);
    cr_assert_eq(z->npending, 0);
    free(z);
}

Test(zookeeper, session_whole)
{
    session(false);
}

Test(zookeeper, session_byte_by_byte)
{
    session(true);
}

Test(zookeeper, refused_session_is_an_error)
{
    mt_zk_t *z = malloc(sizeof(*z));
    mt_zk_init(z);
    events_t e = {0};
    wbuf_t c = {0}, s = {0};
    connect_request(&c);
    connect_response(&s, 0);
    feed(z, true, &c, 1, &e, false);
    feed(z, false, &s, 2, &e, false);
    cr_assert_eq(e.ev[1].err, ZK_ERR_SESSION_EXPIRED);
    free(z);
}

Test(zookeeper, out_of_order_auth_reply_matches)
{
    mt_zk_t *z = malloc(sizeof(*z));
    mt_zk_init(z);
    events_t e = {0};
    wbuf_t c = {0}, s = {0};
    connect_request(&c);
    req_path(&c, 5, ZK_OP_GET_CHILDREN2, "/", 1);
    req_path(&c, ZK_XID_AUTH, ZK_OP_AUTH, "digest", -1);
    connect_response(&s, 5000);
    reply(&s, ZK_XID_AUTH, -115); /* AUTHFAILED, before the earlier request's reply */
    reply(&s, 5, 0);
    reply(&s, 6, 0); /* nobody asked */
    feed(z, true, &c, 1, &e, false);
    feed(z, false, &s, 2, &e, false);
    cr_assert_eq(e.n, 7);
    cr_assert_eq(e.ev[4].opcode, ZK_OP_AUTH);
    cr_assert_eq(e.ev[4].err, -115);
    cr_assert_eq(e.ev[5].opcode, ZK_OP_GET_CHILDREN2);
    cr_assert_eq(e.ev[6].kind, MT_ZK_EV_UNMATCHED);
    free(z);
}

Test(zookeeper, four_letter_word_stops)
{
    mt_zk_t *z = malloc(sizeof(*z));
    mt_zk_init(z);
    events_t e = {0};
    mt_zk_feed(z, true, (const uint8_t *)"ruok", 4, 1, capture, &e);
    cr_assert_eq(e.n, 1);
    cr_assert_eq(e.ev[0].kind, MT_ZK_EV_STOPPED);
    mt_zk_feed(z, false, (const uint8_t *)"imok", 4, 1, capture, &e);
    cr_assert_eq(e.n, 1);
    free(z);
}

Test(zookeeper, first_frame_not_connect_stops)
{
    mt_zk_t *z = malloc(sizeof(*z));
    mt_zk_init(z);
    events_t e = {0};
    wbuf_t c = {0};
    req_path(&c, 1, ZK_OP_GET_DATA, "/a", 0);
    feed(z, true, &c, 1, &e, false);
    cr_assert_eq(e.n, 1);
    cr_assert_eq(e.ev[0].kind, MT_ZK_EV_STOPPED);
    free(z);
}

Test(zookeeper, op_names)
{
    cr_assert_str_eq(mt_zk_op_name(ZK_OP_GET_CHILDREN2), "getChildren2");
    cr_assert_str_eq(mt_zk_op_name(ZK_OP_CLOSE), "close");
    cr_assert_str_eq(mt_zk_op_name(ZK_OP_CONNECT), "connect");
    cr_assert_null(mt_zk_op_name(55));
}
