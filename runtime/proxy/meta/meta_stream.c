/*
 * meta_stream.c - stream records for meta_proxy.c (see meta_stream.h).
 */
#include "runtime/proxy/meta/meta_stream.h"

#include "runtime/core/snapshot.h"

#include <stdlib.h>

const char *mt_meta_stream_end_name(mt_meta_stream_end_t how)
{
    static const char *const names[] = {"close",         "reset",       "timeout",
                                        "upstream_gone", "client_gone", "error"};
    return (size_t)how < sizeof(names) / sizeof(names[0]) ? names[how] : "error";
}

mt_meta_stream_t *mt_meta_stream_new(void)
{
    return calloc(1, sizeof(mt_meta_stream_t));
}

void mt_meta_stream_free(mt_buf_pool_t *pool, mt_meta_stream_t *st)
{
    if (st->init.buf)
        mt_buf_unref(pool, st->init.buf);
    if (st->snap)
        mt_snapshot_unref(st->snap);
    free(st);
}

void mt_meta_stream_link_down(mt_meta_stream_list_t *l, mt_meta_stream_t *st)
{
    st->dprev = NULL;
    st->dnext = l->head;
    if (l->head)
        l->head->dprev = st;
    l->head = st;
}

void mt_meta_stream_link_up(mt_meta_stream_list_t *l, mt_meta_stream_t *st)
{
    st->uprev = NULL;
    st->unext = l->head;
    if (l->head)
        l->head->uprev = st;
    l->head = st;
}

void mt_meta_stream_unlink_down(mt_meta_stream_list_t *l, mt_meta_stream_t *st)
{
    if (st->dprev)
        st->dprev->dnext = st->dnext;
    else if (l->head == st)
        l->head = st->dnext;
    if (st->dnext)
        st->dnext->dprev = st->dprev;
    st->dnext = st->dprev = NULL;
    st->sess = NULL;
}

void mt_meta_stream_unlink_up(mt_meta_stream_list_t *l, mt_meta_stream_t *st)
{
    if (st->uprev)
        st->uprev->unext = st->unext;
    else if (l->head == st)
        l->head = st->unext;
    if (st->unext)
        st->unext->uprev = st->uprev;
    st->unext = st->uprev = NULL;
    st->up = NULL;
}

mt_meta_stream_t *mt_meta_stream_find_down(const mt_meta_stream_list_t *l, uint64_t id)
{
    for (mt_meta_stream_t *st = l->head; st; st = st->dnext) {
        if (st->down_id == id)
            return st;
    }
    return NULL;
}

mt_meta_stream_t *mt_meta_stream_find_up(const mt_meta_stream_list_t *l, uint64_t id)
{
    for (mt_meta_stream_t *st = l->head; st; st = st->unext) {
        if (st->up_id == id)
            return st;
    }
    return NULL;
}

bool mt_meta_stream_frame(mt_meta_stream_t *st, mt_msg_type_t t, bool from_client)
{
    switch (t) {
    case MT_MSG_STREAM_RESET:
    case MT_MSG_STREAM_CLOSE_TWO_WAY:
        st->client_closed = st->server_closed = true;
        break;
    case MT_MSG_STREAM_CLOSE_ONE_WAY:
        if (from_client)
            st->client_closed = true;
        else
            st->server_closed = true;
        break;
    default:
        break;
    }
    return st->client_closed && st->server_closed;
}
