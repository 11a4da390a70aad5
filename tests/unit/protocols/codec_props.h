/*
 * codec_props.h - properties every codec must keep on any input, checked by the libFuzzer
 * harnesses (tests/fuzz/fuzz_<codec>.c) and replayed over real frames by the unit tests.
 * Header only and free of Criterion so a fuzzer can include it.
 *
 * Input layout: byte 0 picks limits, the feeding step and the error kind; the rest is the
 * byte stream of one connection. The stream is fed in growing, exactly-sized, freshly
 * allocated prefixes (so an over-read or a kept pointer shows under ASan), frame after
 * frame. For every decoded frame:
 *   - it is non-empty and within what was offered;
 *   - encode with no mutation reproduces the frame;
 *   - encode with a mutation either fails cleanly (output untouched) or produces a frame
 *     that decodes whole and shows the mutated value;
 *   - on_error for a request that expects a reply decodes as an error response with the
 *     same request id; heartbeat_reply decodes as a heartbeat with the same id;
 *   - set_request_id either fails leaving the frame alone or the frame decodes with the
 *     new id;
 *   - a second decoder fed the same bytes with an attribute filter (mt_msg_t.want) gives
 *     the same outcome - status, error code and text, frame, type, id - and exactly the
 *     unfiltered attributes whose keys the filter names, with the same values.
 * A violated property calls abort().
 */
#ifndef MELTEMI_CODEC_PROPS_H
#define MELTEMI_CODEC_PROPS_H

#include "protocols/codec.h"

#include <stdlib.h>
#include <string.h>

#define CP_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* Decodes `data` as one whole frame with a fresh default decoder. */
static inline bool cp_decode_whole(const mt_codec_t *c, const uint8_t *data, size_t len,
                                   mt_msg_t *msg)
{
    void *st = calloc(1, c->state_size);
    CP_CHECK(st != NULL && mt_codec_init(c, st, NULL) == MT_OK);
    mt_codec_err_t err = {0};
    mt_status_t rc = c->decode(st, data, len, msg, &err);
    c->free(st);
    free(st);
    return rc == MT_OK && msg->frame_len == len;
}

static inline void cp_check_encode(const mt_codec_t *c, const mt_msg_t *m)
{
    mt_wbuf_t out;
    mt_wbuf_init(&out);
    mt_codec_err_t err = {0};
    CP_CHECK(c->encode(m, NULL, &out, &err) == MT_OK);
    CP_CHECK(out.len == m->frame_len && memcmp(out.data, m->frame, out.len) == 0);
    out.len = 0;

    mt_attr_t items[3];
    size_t n = 0;
    items[n++] = (mt_attr_t){MT_STR("x-fuzz"), MT_STR("v\xc3\xa9")};
    if (m->nattrs > 3) /* replace one existing key, remove another */
        items[n++] = (mt_attr_t){m->attrs[3].key, MT_STR("replaced")};
    if (m->nattrs > 4)
        items[n++] = (mt_attr_t){m->attrs[4].key, {NULL, 0}};
    mt_mutation_t mut = {items, n};
    if (c->encode(m, &mut, &out, &err) == MT_OK) {
        mt_msg_t again;
        mt_msg_init(&again);
        CP_CHECK(cp_decode_whole(c, out.data, out.len, &again));
        const mt_str_t *v = mt_msg_get_cstr(&again, "x-fuzz");
        CP_CHECK(v != NULL && mt_str_eq(*v, "v\xc3\xa9", 3));
        CP_CHECK(again.request_id == m->request_id && again.type == m->type);
        mt_msg_free(&again);
    } else {
        CP_CHECK(out.len == 0 && err.text[0] != '\0');
    }
    mt_wbuf_free(&out);
}

static inline void cp_check_replies(const mt_codec_t *c, const mt_msg_t *m, mt_error_kind_t k)
{
    mt_wbuf_t out;
    mt_wbuf_init(&out);
    mt_msg_t r;
    mt_msg_init(&r);
    bool request = m->type == MT_MSG_REQUEST || m->type == MT_MSG_ONEWAY;
    if (request && !m->is_reply) {
        CP_CHECK(c->on_error(m, k, "fuzz error", &out) == MT_OK);
        if (m->expects_reply) {
            CP_CHECK(cp_decode_whole(c, out.data, out.len, &r));
            CP_CHECK(r.type == MT_MSG_ERROR && r.request_id == m->request_id && r.is_reply);
        } else {
            CP_CHECK(out.len == 0);
        }
    }
    out.len = 0;
    if (m->type == MT_MSG_HEARTBEAT && !m->is_reply && c->heartbeat_reply != NULL) {
        CP_CHECK(c->heartbeat_reply(m, &out) == MT_OK);
        if (m->expects_reply) {
            CP_CHECK(cp_decode_whole(c, out.data, out.len, &r));
            CP_CHECK(r.type == MT_MSG_HEARTBEAT && r.request_id == m->request_id);
        }
    }
    mt_msg_free(&r);
    mt_wbuf_free(&out);
}

static inline void cp_check_request_id(const mt_codec_t *c, const mt_msg_t *m)
{
    if (!mt_codec_has_request_id(c))
        return;
    uint8_t *copy = malloc(m->frame_len);
    CP_CHECK(copy != NULL);
    memcpy(copy, m->frame, m->frame_len);
    mt_msg_t r;
    mt_msg_init(&r);
    if (mt_codec_set_request_id(c, copy, m->frame_len, 5) == MT_OK) {
        if (cp_decode_whole(c, copy, m->frame_len, &r))
            CP_CHECK(r.request_id == 5);
    } else {
        CP_CHECK(memcmp(copy, m->frame, m->frame_len) == 0);
    }
    mt_msg_free(&r);
    free(copy);
}

/* The filter of the second decoder: keys the codecs produce (and one they never do). */
static inline const mt_attr_filter_t *cp_filter(void)
{
    static mt_str_t keys[] = {MT_STR("method"), MT_STR("status"), MT_STR("seq_id"), MT_STR("path"),
                              MT_STR("absent-key")};
    static mt_attr_filter_t f; /* never freed: it lives as long as the test */
    if (f.n == 0) {
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            CP_CHECK(mt_attr_filter_add(&f, keys[i].ptr, keys[i].len) == MT_OK);
    }
    return &f;
}

static inline void cp_check_filtered(mt_status_t rc, const mt_codec_err_t *err, const mt_msg_t *m,
                                     mt_status_t rc2, const mt_codec_err_t *err2,
                                     const mt_msg_t *m2)
{
    CP_CHECK(rc == rc2);
    if (rc == MT_ERROR)
        CP_CHECK(err->code == err2->code && strcmp(err->text, err2->text) == 0);
    if (rc != MT_OK)
        return;
    CP_CHECK(m->frame == m2->frame && m->frame_len == m2->frame_len && m->type == m2->type);
    CP_CHECK(m->request_id == m2->request_id && m->is_reply == m2->is_reply);
    CP_CHECK(m->expects_reply == m2->expects_reply);
    uint32_t wanted = 0;
    for (uint32_t i = 0; i < m->nattrs; i++) {
        const mt_attr_t *a = &m->attrs[i];
        const mt_str_t *v = mt_msg__find(m2, a->key.ptr, a->key.len);
        if (!mt_attr_filter_has(m2->want, a->key.ptr, a->key.len)) {
            CP_CHECK(v == NULL);
            continue;
        }
        CP_CHECK(v != NULL && v->len == a->val.len && memcmp(v->ptr, a->val.ptr, v->len) == 0);
        wanted++;
    }
    CP_CHECK(m2->nattrs == wanted);
}

/*
 * `sniffs`: the codec detects the transport from a connection's first bytes (Thrift), so a
 * fresh decoder - used to check replies and rewritten ids - only agrees with the
 * connection's on its first frame (an old-binary method name starting with a NUL byte
 * reads as a frame length when it comes first). Later frames skip those two checks.
 */
static inline void cp_run(const mt_codec_t *c, bool sniffs, const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    uint8_t mode = data[0];
    data++;
    size--;
    mt_codec_limits_t small = {.max_frame_size = 512, .max_depth = 6};
    size_t step = (mode >> 1) & 0x1f; /* 0: offer everything at once */
    mt_error_kind_t kind = (mt_error_kind_t)((mode >> 6) % 7);
    void *st = calloc(1, c->state_size);
    CP_CHECK(st != NULL && mt_codec_init(c, st, (mode & 1) ? &small : NULL) == MT_OK);
    void *st2 = calloc(1, c->state_size); /* the same, decoding through cp_filter() */
    CP_CHECK(st2 != NULL && mt_codec_init(c, st2, (mode & 1) ? &small : NULL) == MT_OK);
    mt_msg_t m, m2;
    mt_msg_init(&m);
    mt_msg_init(&m2);
    m2.want = cp_filter();
    size_t off = 0;
    for (int frames = 0; frames < 32 && off < size; frames++) {
        size_t left = size - off;
        size_t avail = step ? MT_MIN(step, left) : left;
        mt_status_t rc;
        for (;;) {
            uint8_t *copy = malloc(avail ? avail : 1);
            CP_CHECK(copy != NULL);
            memcpy(copy, data + off, avail);
            mt_codec_err_t err = {0};
            rc = c->decode(st, copy, avail, &m, &err);
            mt_codec_err_t err2 = {0};
            mt_status_t rc2 = c->decode(st2, copy, avail, &m2, &err2);
            cp_check_filtered(rc, &err, &m, rc2, &err2, &m2);
            if (rc == MT_OK) {
                CP_CHECK(m.frame_len > 0 && m.frame_len <= avail && m.frame == copy);
                cp_check_encode(c, &m);
                if (!sniffs || frames == 0) {
                    cp_check_replies(c, &m, kind);
                    cp_check_request_id(c, &m);
                }
                off += m.frame_len;
            } else if (rc == MT_ERROR) {
                CP_CHECK(err.text[0] != '\0' && err.code != MT_CODEC_E_NONE);
            }
            free(copy);
            if (rc != MT_AGAIN || avail == left)
                break;
            avail = step ? MT_MIN(avail + step, left) : left;
        }
        if (rc != MT_OK)
            break;
    }
    mt_msg_free(&m);
    mt_msg_free(&m2);
    c->free(st);
    free(st);
    c->free(st2);
    free(st2);
}

#endif
