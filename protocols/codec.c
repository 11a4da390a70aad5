/*
 * codec.c - the protocol-independent half of the codec contract: output buffers, the
 * message arena, attribute helpers, error text and the codec registry.
 */
#include "protocols/codec.h"

#include <assert.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================================== */
/* mt_wbuf                                                                                  */
/* ======================================================================================== */

void mt_wbuf_init(mt_wbuf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void mt_wbuf_free(mt_wbuf_t *b)
{
    free(b->data);
    mt_wbuf_init(b);
}

mt_status_t mt_wbuf_reserve(mt_wbuf_t *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return MT_OK;
    if (extra > SIZE_MAX / 2 - b->len)
        return MT_ERROR;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL)
        return MT_ERROR;
    b->data = p;
    b->cap = cap;
    return MT_OK;
}

mt_status_t mt_wbuf_append(mt_wbuf_t *b, const void *data, size_t n)
{
    if (n == 0)
        return MT_OK;
    if (mt_wbuf_reserve(b, n) != MT_OK)
        return MT_ERROR;
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return MT_OK;
}

mt_status_t mt_wbuf_append_u8(mt_wbuf_t *b, uint8_t v)
{
    return mt_wbuf_append(b, &v, 1);
}

mt_status_t mt_wbuf_append_be16(mt_wbuf_t *b, uint16_t v)
{
    uint8_t p[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return mt_wbuf_append(b, p, sizeof(p));
}

mt_status_t mt_wbuf_append_be32(mt_wbuf_t *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return mt_wbuf_append(b, p, sizeof(p));
}

mt_status_t mt_wbuf_append_be64(mt_wbuf_t *b, uint64_t v)
{
    if (mt_wbuf_append_be32(b, (uint32_t)(v >> 32)) != MT_OK)
        return MT_ERROR;
    return mt_wbuf_append_be32(b, (uint32_t)v);
}

mt_status_t mt_wbuf_append_uvarint(mt_wbuf_t *b, uint64_t v)
{
    uint8_t p[10];
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return mt_wbuf_append(b, p, n);
}

void mt_wbuf_put_be32_at(mt_wbuf_t *b, size_t off, uint32_t v)
{
    assert(off + 4 <= b->len);
    b->data[off] = (uint8_t)(v >> 24);
    b->data[off + 1] = (uint8_t)(v >> 16);
    b->data[off + 2] = (uint8_t)(v >> 8);
    b->data[off + 3] = (uint8_t)v;
}

/* ======================================================================================== */
/* mt_arena                                                                                 */
/* ======================================================================================== */

struct mt_arena_block {
    mt_arena_block_t *next;
    size_t cap;
    size_t used;
    max_align_t data[]; /* aligned storage; handed out as bytes */
};

#define MT_ARENA_BLOCK_MIN 1024

void mt_arena_init(mt_arena_t *a)
{
    a->head = NULL;
}

/* Keeps the oldest block (the list is newest first) so a reused message rarely mallocs. */
void mt_arena_reset(mt_arena_t *a)
{
    mt_arena_block_t *blk = a->head;
    if (blk == NULL)
        return;
    while (blk->next != NULL) {
        mt_arena_block_t *next = blk->next;
        free(blk);
        blk = next;
    }
    blk->used = 0;
    a->head = blk;
}

void mt_arena_free(mt_arena_t *a)
{
    mt_arena_block_t *blk = a->head;
    while (blk != NULL) {
        mt_arena_block_t *next = blk->next;
        free(blk);
        blk = next;
    }
    a->head = NULL;
}

void *mt_arena_alloc(mt_arena_t *a, size_t n)
{
    size_t need = (n + 7) & ~(size_t)7;
    if (need < n)
        return NULL;
    mt_arena_block_t *blk = a->head;
    if (blk != NULL && blk->cap - blk->used >= need) {
        void *p = (char *)blk->data + blk->used;
        blk->used += need;
        return p;
    }
    size_t cap = MT_MAX(need, (size_t)MT_ARENA_BLOCK_MIN);
    if (cap > SIZE_MAX - sizeof(*blk))
        return NULL;
    mt_arena_block_t *nb = malloc(sizeof(*nb) + cap);
    if (nb == NULL)
        return NULL;
    nb->cap = cap;
    nb->used = need;
    nb->next = blk;
    a->head = nb;
    return nb->data;
}

/* ======================================================================================== */
/* mt_msg                                                                                   */
/* ======================================================================================== */

static const char *const msg_type_names[] = {
    [MT_MSG_REQUEST] = "request",
    [MT_MSG_RESPONSE] = "response",
    [MT_MSG_ONEWAY] = "oneway",
    [MT_MSG_HEARTBEAT] = "heartbeat",
    [MT_MSG_ERROR] = "error",
    [MT_MSG_STREAM_INIT] = "stream_init",
    [MT_MSG_STREAM_DATA] = "stream_data",
    [MT_MSG_STREAM_CLOSE_ONE_WAY] = "stream_close_one_way",
    [MT_MSG_STREAM_CLOSE_TWO_WAY] = "stream_close_two_way",
    [MT_MSG_STREAM_RESET] = "stream_reset",
};

const char *mt_msg_type_name(mt_msg_type_t t)
{
    if ((size_t)t < MT_ARRAY_LEN(msg_type_names) && msg_type_names[t] != NULL)
        return msg_type_names[t];
    return "unknown";
}

void mt_msg_init(mt_msg_t *m)
{
    memset(m, 0, sizeof(*m));
    mt_arena_init(&m->arena);
}

void mt_msg_free(mt_msg_t *m)
{
    free(m->attrs);
    mt_arena_free(&m->arena);
    mt_msg_init(m);
}

void mt_msg__begin(mt_msg_t *m, const mt_codec_t *codec, const uint8_t *frame, size_t len)
{
    m->codec = codec;
    m->type = MT_MSG_REQUEST;
    m->is_reply = false;
    m->expects_reply = false;
    m->request_id = 0;
    m->frame = frame;
    m->frame_len = len;
    m->nattrs = 0;
    mt_arena_reset(&m->arena);
    /* priv is left to the codec, which clears the part it uses: all 128 bytes cost more
     * than the rest of a small frame's bookkeeping */
}

mt_status_t mt_msg__grow_attrs(mt_msg_t *m)
{
    uint32_t cap = m->attrs_cap ? m->attrs_cap * 2 : 16;
    mt_attr_t *p = realloc(m->attrs, (size_t)cap * sizeof(*p));
    if (p == NULL)
        return MT_ERROR;
    m->attrs = p;
    m->attrs_cap = cap;
    return MT_OK;
}

mt_str_t mt_msg__strdup(mt_msg_t *m, const void *data, size_t len)
{
    char *p = mt_arena_alloc(&m->arena, len ? len : 1);
    if (p == NULL)
        return (mt_str_t){NULL, 0};
    if (len)
        memcpy(p, data, len);
    return (mt_str_t){p, len};
}

/* "00" "01" ... "99": two digits of every number below 100, for mt_msg__dec. */
static const char msg_digits[] = "00010203040506070809101112131415161718192021222324252627282930"
                                 "31323334353637383940414243444546474849505152535455565758596061"
                                 "6263646566676869707172737475767778798081828384858687888990919293"
                                 "949596979899";

mt_str_t mt_msg__dec(mt_msg_t *m, int64_t v)
{
    if (v >= 0 && v < 10)
        return (mt_str_t){msg_digits + 2 * v + 1, 1};
    if (v >= 10 && v < 100)
        return (mt_str_t){msg_digits + 2 * v, 2};
    char text[24];
    char *end = text + sizeof(text), *p = end;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--p = '-';
    return mt_msg__strdup(m, p, (size_t)(end - p));
}

const mt_str_t *mt_msg_locate(const mt_msg_t *msg, const char *key, size_t key_len,
                              mt_msg_t *scratch)
{
    const mt_str_t *v = mt_msg__find(msg, key, key_len);
    const mt_codec_t *c = msg->codec;
    if (v != NULL || msg->want == NULL || mt_attr_filter_has(msg->want, key, key_len) || !c)
        return v;
    void *st = malloc(c->state_size ? c->state_size : 1);
    if (st == NULL)
        return NULL;
    if (mt_codec_init(c, st, NULL) == MT_OK) {
        mt_codec_err_t err;
        scratch->want = NULL;
        if (c->decode(st, msg->frame, msg->frame_len, scratch, &err) == MT_OK)
            v = mt_msg__find(scratch, key, key_len);
    }
    c->free(st);
    free(st);
    return v;
}

/* ======================================================================================== */
/* attribute filters                                                                        */
/* ======================================================================================== */

mt_status_t mt_attr_filter_add(mt_attr_filter_t *f, const char *key, size_t len)
{
    if (key == NULL || mt_attr_filter_has(f, key, len))
        return MT_OK;
    if (f->n == f->cap) {
        uint32_t cap = f->cap ? f->cap * 2 : 8;
        mt_str_t *k = realloc(f->keys, (size_t)cap * sizeof(*k));
        if (k == NULL)
            return MT_ERROR;
        f->keys = k;
        f->cap = cap;
    }
    f->keys[f->n++] = (mt_str_t){key, len};
    uint8_t *slot = &f->slot[mt_attr_filter_slot(key, len)];
    *slot = *slot == 0 && f->n < MT_ATTR_FILTER_MANY ? (uint8_t)f->n : MT_ATTR_FILTER_MANY;
    /* process-wide, so a filter freed and another built at its address differ too */
    static uint32_t filter_gen;
    uint32_t g;
    do
        g = __atomic_add_fetch(&filter_gen, 1, __ATOMIC_RELAXED);
    while (g == 0);
    f->gen = g;
    return MT_OK;
}

void mt_attr_filter_free(mt_attr_filter_t *f)
{
    free(f->keys);
    memset(f, 0, sizeof(*f));
}

static void msg_rebase_view(mt_str_t *s, uintptr_t old_lo, uintptr_t old_hi, intptr_t delta)
{
    uintptr_t p = (uintptr_t)s->ptr;
    if (s->ptr != NULL && p >= old_lo && p < old_hi)
        s->ptr = (const char *)(p + (uintptr_t)delta);
}

void mt_msg_rebase(mt_msg_t *m, const uint8_t *new_frame)
{
    uintptr_t lo = (uintptr_t)m->frame;
    uintptr_t hi = lo + m->frame_len;
    intptr_t delta = (intptr_t)((uintptr_t)new_frame - lo);
    for (uint32_t i = 0; i < m->nattrs; i++) {
        msg_rebase_view(&m->attrs[i].key, lo, hi, delta);
        msg_rebase_view(&m->attrs[i].val, lo, hi, delta);
    }
    m->frame = new_frame;
}

/* ======================================================================================== */
/* errors                                                                                   */
/* ======================================================================================== */

static const char *const error_kind_names[] = {
    [MT_ERR_ROUTE_NOT_FOUND] = "route_not_found",
    [MT_ERR_CLUSTER_NOT_FOUND] = "cluster_not_found",
    [MT_ERR_NO_HEALTHY_UPSTREAM] = "no_healthy_upstream",
    [MT_ERR_UPSTREAM_TIMEOUT] = "upstream_timeout",
    [MT_ERR_BAD_RESPONSE] = "bad_response",
    [MT_ERR_OVER_LIMIT] = "over_limit",
    [MT_ERR_UNSPECIFIED] = "unspecified",
};

const char *mt_error_kind_name(mt_error_kind_t k)
{
    if ((size_t)k < MT_ARRAY_LEN(error_kind_names) && error_kind_names[k] != NULL)
        return error_kind_names[k];
    return "unspecified";
}

void mt_codec_set_error(mt_codec_err_t *err, mt_codec_errc_t code, const char *fmt, ...)
{
    if (err == NULL)
        return;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
}

/* ======================================================================================== */
/* registry                                                                                 */
/* ======================================================================================== */

static const mt_codec_t *codec_registry[MT_CODEC_REGISTRY_MAX];
static size_t codec_registry_len;

static bool codec_answers_to(const mt_codec_t *c, const char *name)
{
    if (strcmp(c->name, name) == 0)
        return true;
    for (const char *const *a = c->aliases; a != NULL && *a != NULL; a++) {
        if (strcmp(*a, name) == 0)
            return true;
    }
    return false;
}

const mt_codec_t *mt_codec_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < codec_registry_len; i++) {
        if (codec_answers_to(codec_registry[i], name))
            return codec_registry[i];
    }
    return NULL;
}

mt_status_t mt_codec_register(const mt_codec_t *codec)
{
    if (codec == NULL || codec->name == NULL || codec->decode == NULL)
        return MT_ERROR;
    if (codec_registry_len == MT_CODEC_REGISTRY_MAX || mt_codec_find(codec->name) != NULL)
        return MT_ERROR;
    for (const char *const *a = codec->aliases; a != NULL && *a != NULL; a++) {
        if (mt_codec_find(*a) != NULL)
            return MT_ERROR;
    }
    codec_registry[codec_registry_len++] = codec;
    return MT_OK;
}

void mt_codec_registry_clear(void)
{
    codec_registry_len = 0;
}
