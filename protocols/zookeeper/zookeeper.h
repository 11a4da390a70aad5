/*
 * zookeeper.h - a passive decoder of ZooKeeper's client protocol (jute over 4-byte
 * length-prefixed frames), for metrics only: it watches the client's bytes (the
 * ConnectRequest, then requests: xid, opcode, body) and the server's (the ConnectResponse,
 * then replies: xid, zxid, err; watch events carry xid -1), never changes or holds them, and
 * reports events: each request with its opcode and whether it sets a watch, each reply
 * matched to its request by xid (opcode, err, the request's start time), each watch event.
 *
 * Memory per connection is fixed (mt_zk_t): the first ZK_REQ_PEEK bytes of a request and
 * ZK_RESP_PEEK of a reply are looked at; at most ZK_MAX_PENDING requests wait for replies.
 * A stream that is not ZooKeeper (a frame length out of bounds, a first frame that is no
 * ConnectRequest — the four-letter words "ruok", "stat", ... included) stops the decoder
 * for good: one MT_ZK_EV_STOPPED event, then silence.
 */
#ifndef MELTEMI_ZOOKEEPER_H
#define MELTEMI_ZOOKEEPER_H

#include "protocols/lpframe.h"

#include <stdbool.h>
#include <stdint.h>

#define ZK_REQ_PEEK 512u
#define ZK_RESP_PEEK 64u
#define ZK_MAX_PENDING 64u
/* jute.maxbuffer is 1 MiB by default (0xfffff); servers may raise it. */
#define ZK_MAX_FRAME (64u << 20)

/* Opcodes (ZooDefs.OpCode), and one of the decoder's own for the session handshake. */
enum {
    ZK_OP_NOTIFICATION = 0,
    ZK_OP_CREATE = 1,
    ZK_OP_DELETE = 2,
    ZK_OP_EXISTS = 3,
    ZK_OP_GET_DATA = 4,
    ZK_OP_SET_DATA = 5,
    ZK_OP_GET_ACL = 6,
    ZK_OP_SET_ACL = 7,
    ZK_OP_GET_CHILDREN = 8,
    ZK_OP_SYNC = 9,
    ZK_OP_PING = 11,
    ZK_OP_GET_CHILDREN2 = 12,
    ZK_OP_CHECK = 13,
    ZK_OP_MULTI = 14,
    ZK_OP_CREATE2 = 15,
    ZK_OP_RECONFIG = 16,
    ZK_OP_CHECK_WATCHES = 17,
    ZK_OP_REMOVE_WATCHES = 18,
    ZK_OP_CREATE_CONTAINER = 19,
    ZK_OP_DELETE_CONTAINER = 20,
    ZK_OP_CREATE_TTL = 21,
    ZK_OP_MULTI_READ = 22,
    ZK_OP_AUTH = 100,
    ZK_OP_SET_WATCHES = 101,
    ZK_OP_SASL = 102,
    ZK_OP_GET_EPHEMERALS = 103,
    ZK_OP_GET_ALL_CHILDREN_NUMBER = 104,
    ZK_OP_SET_WATCHES2 = 105,
    ZK_OP_ADD_WATCH = 106,
    ZK_OP_WHO_AM_I = 107,
    ZK_OP_CREATE_SESSION = -10,
    ZK_OP_CLOSE = -11,
    ZK_OP_CONNECT = 1000, /* not on the wire: the ConnectRequest / ConnectResponse pair */
};

/* Special xids (ClientCnxn). */
enum { ZK_XID_WATCH_EVENT = -1, ZK_XID_PING = -2, ZK_XID_AUTH = -4, ZK_XID_SET_WATCHES = -8 };

typedef struct mt_zk_pending {
    int32_t xid;
    int32_t opcode;
    uint64_t start;
} mt_zk_pending_t;

typedef struct mt_zk {
    mt_lpframe_t req, resp;
    mt_zk_pending_t pending[ZK_MAX_PENDING]; /* a ring, oldest at head */
    uint32_t head, npending;
    bool connect_seen; /* the client's ConnectRequest went by */
    bool connected;    /* the server's ConnectResponse went by */
    bool stopped;
    uint8_t req_peek[ZK_REQ_PEEK];
    uint8_t resp_peek[ZK_RESP_PEEK];
} mt_zk_t;

typedef enum mt_zk_event_kind {
    MT_ZK_EV_REQUEST, /* opcode, xid, watch, bytes (opcode ZK_OP_CONNECT: the handshake) */
    MT_ZK_EV_REPLY, /* opcode, xid, err, start, bytes (ZK_OP_CONNECT: err is ZK_ERR_SESSION_EXPIRED
                     * when the server refused the session) */
    MT_ZK_EV_WATCH_EVENT, /* xid -1: event_type (created 1, deleted 2, changed 3, child 4...) */
    MT_ZK_EV_UNMATCHED,   /* a reply whose xid no waiting request has */
    MT_ZK_EV_UNANSWERED,  /* a waiting request dropped: ZK_MAX_PENDING were waiting */
    MT_ZK_EV_STOPPED,     /* the stream is not ZooKeeper: decoding ends (reason) */
} mt_zk_event_kind_t;

/* KeeperException.Code.SESSIONEXPIRED: what a refused ConnectResponse (timeout 0) means. */
#define ZK_ERR_SESSION_EXPIRED (-112)

typedef struct mt_zk_event {
    mt_zk_event_kind_t kind;
    int32_t opcode;
    int32_t xid;
    int32_t err;        /* REPLY */
    int32_t event_type; /* WATCH_EVENT */
    bool watch;         /* REQUEST: it sets a watch (exists, getData, getChildren(2) with the
                         * flag; addWatch; setWatches re-registering) */
    uint32_t bytes;     /* REQUEST, REPLY, WATCH_EVENT, UNMATCHED: the frame with its prefix */
    uint64_t start;     /* REPLY, UNANSWERED: the request's time */
    const char *reason; /* STOPPED */
} mt_zk_event_t;

typedef void (*mt_zk_cb)(void *ud, const mt_zk_event_t *ev);

void mt_zk_init(mt_zk_t *z);
/* Bytes the client sent (from_client) or the server sent, in stream order per direction. */
void mt_zk_feed(mt_zk_t *z, bool from_client, const uint8_t *p, size_t n, uint64_t now, mt_zk_cb cb,
                void *ud);

/* "create", "getData", ... ("connect" for ZK_OP_CONNECT), NULL for an unknown opcode. */
const char *mt_zk_op_name(int32_t opcode);

#endif
