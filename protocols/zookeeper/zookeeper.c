/*
 * zookeeper.c - the passive ZooKeeper decoder (zookeeper.h). Layouts from ZooKeeper's jute
 * definitions (zookeeper.jute): ConnectRequest / ConnectResponse, RequestHeader {xid, type},
 * ReplyHeader {xid, zxid, err}, WatcherEvent {type, state, path}.
 */
#include "protocols/zookeeper/zookeeper.h"

#include <string.h>

const char *mt_zk_op_name(int32_t opcode)
{
    switch (opcode) {
    case ZK_OP_NOTIFICATION:
        return "notification";
    case ZK_OP_CREATE:
        return "create";
    case ZK_OP_DELETE:
        return "delete";
    case ZK_OP_EXISTS:
        return "exists";
    case ZK_OP_GET_DATA:
        return "getData";
    case ZK_OP_SET_DATA:
        return "setData";
    case ZK_OP_GET_ACL:
        return "getACL";
    case ZK_OP_SET_ACL:
        return "setACL";
    case ZK_OP_GET_CHILDREN:
        return "getChildren";
    case ZK_OP_SYNC:
        return "sync";
    case ZK_OP_PING:
        return "ping";
    case ZK_OP_GET_CHILDREN2:
        return "getChildren2";
    case ZK_OP_CHECK:
        return "check";
    case ZK_OP_MULTI:
        return "multi";
    case ZK_OP_CREATE2:
        return "create2";
    case ZK_OP_RECONFIG:
        return "reconfig";
    case ZK_OP_CHECK_WATCHES:
        return "checkWatches";
    case ZK_OP_REMOVE_WATCHES:
        return "removeWatches";
    case ZK_OP_CREATE_CONTAINER:
        return "createContainer";
    case ZK_OP_DELETE_CONTAINER:
        return "deleteContainer";
    case ZK_OP_CREATE_TTL:
        return "createTTL";
    case ZK_OP_MULTI_READ:
        return "multiRead";
    case ZK_OP_AUTH:
        return "auth";
    case ZK_OP_SET_WATCHES:
        return "setWatches";
    case ZK_OP_SASL:
        return "sasl";
    case ZK_OP_GET_EPHEMERALS:
        return "getEphemerals";
    case ZK_OP_GET_ALL_CHILDREN_NUMBER:
        return "getAllChildrenNumber";
    case ZK_OP_SET_WATCHES2:
        return "setWatches2";
    case ZK_OP_ADD_WATCH:
        return "addWatch";
    case ZK_OP_WHO_AM_I:
        return "whoAmI";
    case ZK_OP_CREATE_SESSION:
        return "createSession";
    case ZK_OP_CLOSE:
        return "close";
    case ZK_OP_CONNECT:
        return "connect";
    default:
        return NULL;
    }
}

void mt_zk_init(mt_zk_t *z)
{
    memset(z, 0, sizeof(*z));
    /* The smallest frames: a RequestHeader (xid, type) and a ReplyHeader (xid, zxid, err). */
    mt_lpframe_init(&z->req, 8, ZK_MAX_FRAME, z->req_peek, ZK_REQ_PEEK);
    mt_lpframe_init(&z->resp, 16, ZK_MAX_FRAME, z->resp_peek, ZK_RESP_PEEK);
}

static void zk_stop(mt_zk_t *z, const char *reason, mt_zk_cb cb, void *ud)
{
    z->stopped = true;
    mt_zk_event_t ev = {.kind = MT_ZK_EV_STOPPED, .reason = reason};
    cb(ud, &ev);
}

static void zk_push(mt_zk_t *z, int32_t xid, int32_t opcode, uint64_t now, mt_zk_cb cb, void *ud)
{
    if (z->npending == ZK_MAX_PENDING) {
        const mt_zk_pending_t *q = &z->pending[z->head];
        mt_zk_event_t ev = {
            .kind = MT_ZK_EV_UNANSWERED, .opcode = q->opcode, .xid = q->xid, .start = q->start};
        z->head = (z->head + 1) % ZK_MAX_PENDING;
        z->npending--;
        cb(ud, &ev);
    }
    mt_zk_pending_t *q = &z->pending[(z->head + z->npending) % ZK_MAX_PENDING];
    q->xid = xid;
    q->opcode = opcode;
    q->start = now;
    z->npending++;
}

/* Removes the waiting request with xid; false when none. Servers answer in order, but the
 * auth (-4) and set-watches (-8) replies are sent outside the request pipeline, so the
 * match is searched for rather than taken from the head. */
static bool zk_take(mt_zk_t *z, int32_t xid, mt_zk_pending_t *out)
{
    for (uint32_t i = 0; i < z->npending; i++) {
        uint32_t at = (z->head + i) % ZK_MAX_PENDING;
        if (z->pending[at].xid != xid)
            continue;
        *out = z->pending[at];
        for (uint32_t j = i; j + 1 < z->npending; j++)
            z->pending[(z->head + j) % ZK_MAX_PENDING] =
                z->pending[(z->head + j + 1) % ZK_MAX_PENDING];
        z->npending--;
        return true;
    }
    return false;
}

/* ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId, passwd, [readOnly]. */
static bool zk_is_connect_request(const mt_zk_t *z)
{
    mt_lprd_t r = mt_lprd(z->req_peek, z->req.npeek);
    int32_t version = mt_lprd_i32(&r);
    mt_lprd_skip(&r, 8);
    int32_t timeout = mt_lprd_i32(&r);
    mt_lprd_skip(&r, 8);
    int32_t passwd = mt_lprd_i32(&r);
    /* The fixed part is 28 bytes; passwd and an optional readOnly byte end the frame. */
    return r.ok && version == 0 && timeout >= 0 && passwd >= -1 && z->req.len >= 28 &&
           (int64_t)z->req.len - 28 - (passwd > 0 ? passwd : 0) >= 0 &&
           (int64_t)z->req.len - 28 - (passwd > 0 ? passwd : 0) <= 1;
}

/* The path (ustring) then the watch flag of exists / getData / getChildren(2). */
static bool zk_watch_flag(mt_lprd_t *r)
{
    int32_t len = mt_lprd_i32(r);
    if (len > 0)
        mt_lprd_skip(r, (size_t)len);
    uint8_t w = mt_lprd_u8(r);
    return r->ok && w != 0;
}

static bool zk_sets_watch(int32_t opcode, mt_lprd_t *r)
{
    switch (opcode) {
    case ZK_OP_EXISTS:
    case ZK_OP_GET_DATA:
    case ZK_OP_GET_CHILDREN:
    case ZK_OP_GET_CHILDREN2:
        return zk_watch_flag(r);
    case ZK_OP_ADD_WATCH:
    case ZK_OP_SET_WATCHES:
    case ZK_OP_SET_WATCHES2:
        return true;
    default:
        return false;
    }
}

static void zk_request(mt_zk_t *z, uint64_t now, mt_zk_cb cb, void *ud)
{
    mt_zk_event_t ev = {.kind = MT_ZK_EV_REQUEST, .bytes = z->req.len + 4};
    if (!z->connect_seen) {
        if (!zk_is_connect_request(z)) {
            zk_stop(z, "first client frame is not a ConnectRequest", cb, ud);
            return;
        }
        z->connect_seen = true;
        ev.opcode = ZK_OP_CONNECT;
        cb(ud, &ev);
        zk_push(z, 0, ZK_OP_CONNECT, now, cb, ud);
        return;
    }
    mt_lprd_t r = mt_lprd(z->req_peek, z->req.npeek);
    ev.xid = mt_lprd_i32(&r);
    ev.opcode = mt_lprd_i32(&r);
    ev.watch = zk_sets_watch(ev.opcode, &r);
    cb(ud, &ev);
    zk_push(z, ev.xid, ev.opcode, now, cb, ud);
}

static void zk_connect_reply(mt_zk_t *z, mt_zk_cb cb, void *ud)
{
    mt_lprd_t r = mt_lprd(z->resp_peek, z->resp.npeek);
    mt_lprd_skip(&r, 4); /* protocolVersion */
    int32_t timeout = mt_lprd_i32(&r);
    z->connected = true;
    mt_zk_pending_t q = {0, ZK_OP_CONNECT, 0};
    bool matched = zk_take(z, 0, &q) && q.opcode == ZK_OP_CONNECT;
    mt_zk_event_t ev = {.kind = matched ? MT_ZK_EV_REPLY : MT_ZK_EV_UNMATCHED,
                        .opcode = ZK_OP_CONNECT,
                        .bytes = z->resp.len + 4,
                        .start = q.start,
                        /* A server that refuses the session (expired) answers timeOut 0. */
                        .err = timeout <= 0 ? ZK_ERR_SESSION_EXPIRED : 0};
    cb(ud, &ev);
}

static void zk_reply(mt_zk_t *z, mt_zk_cb cb, void *ud)
{
    if (!z->connected) {
        /* A ConnectResponse is at least protocolVersion, timeOut, sessionId, passwd length. */
        if (z->resp.len < 20 || !z->connect_seen) {
            zk_stop(z, "first server frame is not a ConnectResponse", cb, ud);
            return;
        }
        zk_connect_reply(z, cb, ud);
        return;
    }
    mt_lprd_t r = mt_lprd(z->resp_peek, z->resp.npeek);
    int32_t xid = mt_lprd_i32(&r);
    mt_lprd_skip(&r, 8); /* zxid */
    int32_t err = mt_lprd_i32(&r);
    mt_zk_event_t ev = {.xid = xid, .err = err, .bytes = z->resp.len + 4};
    if (xid == ZK_XID_WATCH_EVENT) {
        ev.kind = MT_ZK_EV_WATCH_EVENT;
        ev.opcode = ZK_OP_NOTIFICATION;
        ev.event_type = mt_lprd_i32(&r);
        cb(ud, &ev);
        return;
    }
    mt_zk_pending_t q;
    if (!zk_take(z, xid, &q)) {
        ev.kind = MT_ZK_EV_UNMATCHED;
        cb(ud, &ev);
        return;
    }
    ev.kind = MT_ZK_EV_REPLY;
    ev.opcode = q.opcode;
    ev.start = q.start;
    cb(ud, &ev);
}

void mt_zk_feed(mt_zk_t *z, bool from_client, const uint8_t *p, size_t n, uint64_t now, mt_zk_cb cb,
                void *ud)
{
    mt_lpframe_t *f = from_client ? &z->req : &z->resp;
    while (!z->stopped && n > 0) {
        mt_lpframe_status_t st = mt_lpframe_next(f, &p, &n);
        if (st == MT_LPFRAME_AGAIN)
            return;
        if (st == MT_LPFRAME_BAD) {
            zk_stop(z,
                    from_client ? "request frame length out of bounds"
                                : "reply frame length out of bounds",
                    cb, ud);
            return;
        }
        if (from_client)
            zk_request(z, now, cb, ud);
        else
            zk_reply(z, cb, ud);
    }
}
