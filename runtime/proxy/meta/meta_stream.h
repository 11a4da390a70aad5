/*
 * meta_stream.h - MetaProtocol streams (frames of type MT_MSG_STREAM_*, protocols/codec.h):
 * which upstream connection a client's stream went to, under which id, and which halves
 * are closed. meta_proxy.c routes a stream at its init frame and then relays its frames
 * through these records; this file knows nothing of sessions or connections (they are
 * opaque owners here).
 *
 * A record sits on two lists: its client session's (found by the client's stream id) and
 * its upstream connection's (found by the id the stream has on that connection). It ends
 * when both halves are closed (a close from each side, or one two-way close) or on a reset
 * from either side; the owner unlinks and frees it then, or when either connection goes.
 * Lists are searched linearly: a connection carries a handful of streams.
 */
#ifndef MELTEMI_META_STREAM_H
#define MELTEMI_META_STREAM_H

#include "runtime/core/outq.h"
#include "runtime/core/timer.h"

#include "protocols/codec.h"

typedef struct mt_meta_stream mt_meta_stream_t;
typedef struct mt_snapshot mt_snapshot_t;
typedef struct mt_cluster_conf mt_cluster_conf_t;
typedef struct mt_istio_set mt_istio_set_t;

/* How a stream ended, for its metrics and its access log line (%STREAM_END%). */
typedef enum mt_meta_stream_end {
    MT_STREAM_END_CLOSE = 0,     /* a close from each side (or one two-way close) */
    MT_STREAM_END_RESET,         /* a reset from the client or the server */
    MT_STREAM_END_TIMEOUT,       /* idle for its route's timeout: reset by meltemi */
    MT_STREAM_END_UPSTREAM_GONE, /* its upstream connection closed */
    MT_STREAM_END_CLIENT_GONE,   /* its client's connection closed */
    MT_STREAM_END_ERROR,         /* meltemi could not carry it on (out of memory) */
} mt_meta_stream_end_t;

/* "close", "reset", "timeout", "upstream_gone", "client_gone", "error". */
const char *mt_meta_stream_end_name(mt_meta_stream_end_t how);

struct mt_meta_stream {
    mt_meta_stream_t *dnext, *dprev; /* the client session's list */
    mt_meta_stream_t *unext, *uprev; /* the upstream connection's list */
    void *sess;                      /* owner on the client side; NULL once it is gone */
    void *up;                        /* owner on the upstream side; NULL once it is gone */
    uint64_t down_id;                /* the client's stream id */
    uint64_t up_id;                  /* the stream's id on the upstream connection */
    bool client_closed, server_closed;
    mt_slice_t init; /* the init frame as sent upstream: native errors are built from it */
    /* idleness (the route's timeout, 0: none): no frame either way for idle_ms ends it */
    mt_timer_t idle_timer;
    uint32_t idle_ms;
    /* what its metrics and access log line say when it ends (meta_proxy.c) */
    uint64_t start_ns;
    uint64_t frames_in, frames_out; /* from the client, from the server */
    uint64_t bytes_in, bytes_out;
    mt_snapshot_t *snap;           /* held: dest, set, route and subset names point in it */
    const mt_cluster_conf_t *dest; /* where it was routed */
    mt_istio_set_t *set;           /* its subset's label set, or NULL */
    const char *route_name, *subset_name;
    uint16_t rflags; /* Envoy response flags set at its init (MT_RF_*) */
    char op[96];     /* interface.method of its init frame, when logged */
    /* mirroring (the route's mirror): a stream's copy on the mirror destination is a record
     * of its own, on the mirror's upstream list only (sess NULL), that the client's frames
     * are copied to and whose server frames are dropped; it ends with the stream */
    mt_meta_stream_t *mirror;  /* this stream's copy, or NULL */
    mt_meta_stream_t *primary; /* a copy: the stream it copies (NULL once that ended) */
    bool is_mirror;
};

typedef struct mt_meta_stream_list {
    mt_meta_stream_t *head;
} mt_meta_stream_list_t;

/* A zeroed record (NULL when out of memory); the caller fills and links it. */
mt_meta_stream_t *mt_meta_stream_new(void);
/* Releases the init frame's and the snapshot's references and the record; it must be on no
 * list and its timer stopped. */
void mt_meta_stream_free(mt_buf_pool_t *pool, mt_meta_stream_t *st);

void mt_meta_stream_link_down(mt_meta_stream_list_t *l, mt_meta_stream_t *st);
void mt_meta_stream_link_up(mt_meta_stream_list_t *l, mt_meta_stream_t *st);
void mt_meta_stream_unlink_down(mt_meta_stream_list_t *l, mt_meta_stream_t *st);
void mt_meta_stream_unlink_up(mt_meta_stream_list_t *l, mt_meta_stream_t *st);

mt_meta_stream_t *mt_meta_stream_find_down(const mt_meta_stream_list_t *l, uint64_t id);
mt_meta_stream_t *mt_meta_stream_find_up(const mt_meta_stream_list_t *l, uint64_t id);

/* Records a data, close or reset frame of type t sent by the client (from_client) or the
 * server; true when the stream has ended with it. An init frame changes nothing. */
bool mt_meta_stream_frame(mt_meta_stream_t *st, mt_msg_type_t t, bool from_client);

#endif
