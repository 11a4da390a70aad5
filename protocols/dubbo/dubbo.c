/*
 * dubbo.c - the Dubbo 2 codec: framing, Hessian2 request bodies to attributes, attachment
 * mutation, heartbeats, native error responses and request id rewriting.
 *
 * Decoding is resumable without keeping anything but limits: the 16-byte header says how
 * long the frame is, so each call re-reads the header (O(1)) and waits until the whole
 * frame is there; the size limit is checked from the header, before the body arrives.
 * Only two-way/one-way requests in Hessian2 are parsed past the header; other
 * serializations are framed and forwarded but expose no attributes and take no mutation.
 */
#include "protocols/dubbo/dubbo.h"
#include "protocols/dubbo/hessian2.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct dubbo_decoder {
    mt_codec_limits_t limits;
    hessian2_classes_t classes; /* reused across frames to avoid a malloc per request */
    /* what the filter want_of (at generation want_gen) answered for the invocation's fixed
     * keys and a response's status: asked once per filter, not per frame */
    const mt_attr_filter_t *want_of;
    uint32_t want_gen;
    bool want_interface, want_method, want_version, want_status;
} dubbo_decoder_t;

/* Parse info kept in mt_msg_t.priv for encode. Offsets are relative to the frame. */
typedef struct dubbo_priv {
    uint32_t attach_off; /* attachments value; == frame_len when the body has none */
    uint32_t attach_end;
    uint32_t max_depth;
    uint8_t flag;
    uint8_t status;
    bool body_parsed; /* a Hessian2 invocation whose attachments we located */
} dubbo_priv_t;

_Static_assert(sizeof(dubbo_priv_t) <= sizeof(((mt_msg_t *)0)->priv), "dubbo priv too big");

static const char *const dubbo_aliases[] = {"aeraki.meta_protocol.codec.dubbo", NULL};

/* ---- helpers ----------------------------------------------------------------------------- */

static uint32_t dubbo_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t dubbo_be64(const uint8_t *p)
{
    return (uint64_t)dubbo_be32(p) << 32 | dubbo_be32(p + 4);
}

static dubbo_priv_t *dubbo_priv(mt_msg_t *m)
{
    return (dubbo_priv_t *)(void *)&m->priv;
}

static const dubbo_priv_t *dubbo_cpriv(const mt_msg_t *m)
{
    return (const dubbo_priv_t *)(const void *)&m->priv;
}

/* Counts parameters in a JVM descriptor such as "Ljava/lang/String;[IJ". */
static mt_status_t dubbo_count_params(mt_str_t desc, uint32_t *count, mt_codec_err_t *err)
{
    const char *d = desc.ptr;
    size_t n = desc.ptr ? desc.len : 0;
    size_t i = 0;
    uint32_t k = 0;
    while (i < n) {
        while (i < n && d[i] == '[')
            i++;
        const char *semi = i < n && d[i] == 'L' ? memchr(d + i, ';', n - i) : NULL;
        if (i < n && d[i] != '\0' && strchr("ZBCDFIJS", d[i]) != NULL)
            i++;
        else if (semi != NULL)
            i = (size_t)(semi - d) + 1;
        else
            return mt_codec_fail(err, MT_CODEC_E_MALFORMED,
                                 "dubbo: bad parameter types descriptor at char %zu", i);
        k++;
    }
    *count = k;
    return MT_OK;
}

/* ---- invocation body --------------------------------------------------------------------- */

typedef struct dubbo_invocation {
    mt_str_t path, version, method;
    size_t attach_off; /* where the attachments value starts (or body end) */
} dubbo_invocation_t;

/* Reads the fixed part of a Hessian2 RpcInvocation and skips its arguments. */
static mt_status_t dubbo_parse_invocation(hessian2_reader_t *r, dubbo_invocation_t *inv)
{
    mt_str_t dubbo_version, desc;
    uint32_t nparams = 0;
    if (hessian2_read_string(r, &dubbo_version) != MT_OK ||
        hessian2_read_string(r, &inv->path) != MT_OK ||
        hessian2_read_string(r, &inv->version) != MT_OK ||
        hessian2_read_string(r, &inv->method) != MT_OK || hessian2_read_string(r, &desc) != MT_OK)
        return MT_ERROR;
    if (dubbo_count_params(desc, &nparams, r->err) != MT_OK)
        return MT_ERROR;
    for (uint32_t i = 0; i < nparams; i++) {
        if (hessian2_skip(r) != MT_OK)
            return MT_ERROR;
    }
    inv->attach_off = r->pos;
    return MT_OK;
}

typedef enum { DUBBO_ATTACH_NONE, DUBBO_ATTACH_NULL, DUBBO_ATTACH_MAP } dubbo_attach_kind_t;

/* Positions the reader on the first entry of the attachments map (after 'H' or 'M' type). */
static mt_status_t dubbo_attach_open(hessian2_reader_t *r, dubbo_attach_kind_t *kind)
{
    uint8_t t = 0;
    if (!hessian2_peek(r, &t)) {
        *kind = DUBBO_ATTACH_NONE;
        return MT_OK;
    }
    r->pos++;
    if (t == 'N') {
        *kind = DUBBO_ATTACH_NULL;
        return MT_OK;
    }
    *kind = DUBBO_ATTACH_MAP;
    if (t == 'H')
        return MT_OK;
    if (t == 'M') {
        /* typed map: the type is a string or a type-table index */
        uint8_t tt;
        if (!hessian2_peek(r, &tt))
            return mt_codec_fail(r->err, MT_CODEC_E_MALFORMED, "dubbo: attachments truncated");
        if (hessian2_tag_is_string(tt)) {
            mt_str_t type;
            return hessian2_read_string(r, &type);
        }
        int32_t idx;
        return hessian2_read_int(r, &idx);
    }
    return mt_codec_fail(r->err, MT_CODEC_E_MALFORMED,
                         "dubbo: attachments are not a map (tag 0x%02x)", t);
}

typedef struct dubbo_attach_entry {
    size_t key_off, val_off, val_end;
    mt_str_t key; /* ptr NULL when the key is not a string */
    mt_str_t val; /* ptr NULL when the value is not a string */
    bool val_scalar;
} dubbo_attach_entry_t;

/* Reads the next map entry; *done when the 'Z' terminator was consumed. */
static mt_status_t dubbo_attach_next(hessian2_reader_t *r, dubbo_attach_entry_t *e, bool *done)
{
    uint8_t t = 0;
    *done = false;
    if (!hessian2_peek(r, &t))
        return mt_codec_fail(r->err, MT_CODEC_E_MALFORMED, "dubbo: attachments map not terminated");
    if (t == 'Z') {
        r->pos++;
        *done = true;
        return MT_OK;
    }
    e->key_off = r->pos;
    e->key = (mt_str_t){NULL, 0};
    mt_status_t rc =
        hessian2_tag_is_string(t) ? hessian2_read_string(r, &e->key) : hessian2_skip(r);
    if (rc != MT_OK)
        return MT_ERROR;
    e->val_off = r->pos;
    e->val = (mt_str_t){NULL, 0};
    if (!hessian2_peek(r, &t))
        return mt_codec_fail(r->err, MT_CODEC_E_MALFORMED, "dubbo: attachment without value");
    e->val_scalar = hessian2_tag_is_scalar(t);
    rc = hessian2_tag_is_string(t) ? hessian2_read_string(r, &e->val) : hessian2_skip(r);
    e->val_end = r->pos;
    return rc;
}

/* ---- decode ------------------------------------------------------------------------------ */

static mt_status_t dubbo_init(void *state, const mt_codec_limits_t *limits)
{
    dubbo_decoder_t *d = state;
    memset(d, 0, sizeof(*d));
    if (limits != NULL)
        d->limits = *limits;
    if (d->limits.max_frame_size == 0)
        d->limits.max_frame_size = DUBBO_DEFAULT_MAX_FRAME;
    if (d->limits.max_depth == 0)
        d->limits.max_depth = DUBBO_DEFAULT_MAX_DEPTH;
    return MT_OK;
}

static void dubbo_free(void *state)
{
    dubbo_decoder_t *d = state;
    hessian2_classes_free(&d->classes);
}

/* Stores key = val unless val is a null string; the caller asked the filter already. */
static inline mt_status_t dubbo_store(mt_msg_t *m, mt_str_t key, mt_str_t val, mt_codec_err_t *err)
{
    if (val.ptr == NULL)
        return MT_OK;
    if (mt_msg__store_attr(m, key, val) != MT_OK)
        return mt_codec_fail(err, MT_CODEC_E_NOMEM, "dubbo: no memory for attributes");
    return MT_OK;
}

/* Sets d's answers for the fixed keys (the invocation's, a response's status) under filter f
 * (NULL: every key). */
static void dubbo_want_fixed(dubbo_decoder_t *d, const mt_attr_filter_t *f)
{
    if (f != NULL && f == d->want_of && f->gen == d->want_gen && f->gen != 0)
        return;
    d->want_of = f;
    d->want_gen = f ? f->gen : 0;
    d->want_interface = f == NULL || mt_attr_filter_has(f, "interface", 9);
    d->want_method = f == NULL || mt_attr_filter_has(f, "method", 6);
    d->want_version = f == NULL || mt_attr_filter_has(f, "version", 7);
    d->want_status = f == NULL || mt_attr_filter_has(f, "status", 6);
}

static mt_status_t dubbo_decode_invocation(dubbo_decoder_t *d, mt_msg_t *m, mt_codec_err_t *err)
{
    dubbo_priv_t *p = dubbo_priv(m);
    hessian2_reader_t r;
    hessian2_reader_init(&r, m->frame, m->frame_len, DUBBO_HEADER_LEN, d->limits.max_depth,
                         &d->classes, &m->arena, err);
    dubbo_invocation_t inv;
    if (dubbo_parse_invocation(&r, &inv) != MT_OK)
        return MT_ERROR;
    dubbo_want_fixed(d, m->want);
    if ((d->want_interface && dubbo_store(m, MT_STR("interface"), inv.path, err) != MT_OK) ||
        (d->want_method && dubbo_store(m, MT_STR("method"), inv.method, err) != MT_OK) ||
        (d->want_version && dubbo_store(m, MT_STR("version"), inv.version, err) != MT_OK))
        return MT_ERROR;
    p->attach_off = (uint32_t)inv.attach_off;
    dubbo_attach_kind_t kind;
    if (dubbo_attach_open(&r, &kind) != MT_OK)
        return MT_ERROR;
    for (bool done = kind != DUBBO_ATTACH_MAP; !done;) {
        /* the common entry: key and value compact ASCII strings, read in one step each */
        size_t entry = r.pos;
        mt_str_t key, val;
        if (hessian2_read_compact_ascii(&r, &key)) {
            if (hessian2_read_compact_ascii(&r, &val)) {
                if (mt_msg__add_attr(m, key, val) != MT_OK)
                    return mt_codec_fail(err, MT_CODEC_E_NOMEM, "dubbo: no memory for attributes");
                continue;
            }
            r.pos = entry; /* the general reader takes the whole entry again */
        }
        dubbo_attach_entry_t e;
        if (dubbo_attach_next(&r, &e, &done) != MT_OK)
            return MT_ERROR;
        if (done || e.key.ptr == NULL || e.val.ptr == NULL)
            continue;
        if (mt_msg__add_attr(m, e.key, e.val) != MT_OK)
            return mt_codec_fail(err, MT_CODEC_E_NOMEM, "dubbo: no memory for attributes");
    }
    p->attach_end = (uint32_t)r.pos;
    p->body_parsed = true;
    return MT_OK;
}

static mt_status_t dubbo_decode_response(dubbo_decoder_t *d, mt_msg_t *m, mt_codec_err_t *err)
{
    const dubbo_priv_t *p = dubbo_cpriv(m);
    dubbo_want_fixed(d, m->want);
    if (!d->want_status)
        return MT_OK;
    mt_str_t v = mt_msg__dec(m, p->status);
    if (v.ptr == NULL)
        return mt_codec_fail(err, MT_CODEC_E_NOMEM, "dubbo: no memory for attributes");
    return dubbo_store(m, MT_STR("status"), v, err);
}

static mt_status_t dubbo_check_magic(const uint8_t *buf, size_t len, mt_codec_err_t *err)
{
    if ((len >= 1 && buf[0] != DUBBO_MAGIC_HI) || (len >= 2 && buf[1] != DUBBO_MAGIC_LO))
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED,
                             "dubbo: bad magic 0x%02x%02x (expected 0xdabb)", buf[0],
                             len >= 2 ? buf[1] : 0);
    return MT_OK;
}

static mt_status_t dubbo_decode(void *state, const uint8_t *buf, size_t len, mt_msg_t *msg,
                                mt_codec_err_t *err)
{
    dubbo_decoder_t *d = state;
    if (dubbo_check_magic(buf, len, err) != MT_OK)
        return MT_ERROR;
    if (len < DUBBO_HEADER_LEN)
        return MT_AGAIN;
    int32_t body = (int32_t)dubbo_be32(buf + 12);
    if (body < 0)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED, "dubbo: negative body length %d", body);
    if ((uint64_t)body + DUBBO_HEADER_LEN > d->limits.max_frame_size)
        return mt_codec_fail(err, MT_CODEC_E_TOO_LARGE,
                             "dubbo: frame of %llu bytes exceeds the limit of %u",
                             (unsigned long long)body + DUBBO_HEADER_LEN, d->limits.max_frame_size);
    size_t frame_len = DUBBO_HEADER_LEN + (size_t)body;
    if (len < frame_len)
        return MT_AGAIN;

    uint8_t flag = buf[2];
    mt_msg__begin(msg, &mt_codec_dubbo, buf, frame_len);
    dubbo_priv_t *p = dubbo_priv(msg);
    *p = (dubbo_priv_t){0};
    p->flag = flag;
    p->status = buf[3];
    p->attach_off = p->attach_end = (uint32_t)frame_len;
    p->max_depth = d->limits.max_depth;
    msg->request_id = dubbo_be64(buf + 4);
    msg->is_reply = (flag & DUBBO_FLAG_REQUEST) == 0;
    msg->expects_reply = !msg->is_reply && (flag & DUBBO_FLAG_TWOWAY) != 0;

    mt_status_t rc = MT_OK;
    if (flag & DUBBO_FLAG_EVENT) {
        msg->type = MT_MSG_HEARTBEAT;
    } else if (msg->is_reply) {
        msg->type = p->status == DUBBO_OK ? MT_MSG_RESPONSE : MT_MSG_ERROR;
        rc = dubbo_decode_response(d, msg, err);
    } else {
        msg->type = msg->expects_reply ? MT_MSG_REQUEST : MT_MSG_ONEWAY;
        if ((flag & DUBBO_SERIALIZATION_MASK) == DUBBO_SERIALIZATION_HESSIAN2)
            rc = dubbo_decode_invocation(d, msg, err);
    }
    return rc;
}

/* ---- encode ------------------------------------------------------------------------------ */

static bool dubbo_mut_key_eq(const mt_attr_t *it, mt_str_t key)
{
    return key.ptr != NULL && mt_str_eq(it->key, key.ptr, key.len);
}

/* Index of the first mutation item for `key`, or -1. */
static long dubbo_mut_find(const mt_mutation_t *mut, mt_str_t key)
{
    for (size_t i = 0; i < mut->count; i++) {
        if (dubbo_mut_key_eq(&mut->items[i], key))
            return (long)i;
    }
    return -1;
}

static mt_status_t dubbo_write_pair(mt_wbuf_t *out, const mt_attr_t *it, mt_codec_err_t *err)
{
    if (hessian2_write_string(out, it->key.ptr, it->key.len) != MT_OK ||
        hessian2_write_string(out, it->val.ptr, it->val.len) != MT_OK)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED,
                             "dubbo: attachment %.*s is not valid UTF-8 (or out of memory)",
                             (int)MT_MIN(it->key.len, 64), it->key.ptr);
    return MT_OK;
}

/* Rewrites existing entries (copying untouched ones byte for byte). */
static mt_status_t dubbo_rewrite_entries(hessian2_reader_t *r, const mt_msg_t *msg,
                                         const mt_mutation_t *mut, bool *used, mt_wbuf_t *out)
{
    for (;;) {
        dubbo_attach_entry_t e;
        bool done;
        if (dubbo_attach_next(r, &e, &done) != MT_OK)
            return MT_ERROR;
        if (done)
            return MT_OK;
        long i = dubbo_mut_find(mut, e.key);
        if (i < 0) {
            if (mt_wbuf_append(out, msg->frame + e.key_off, e.val_end - e.key_off) != MT_OK)
                return mt_codec_fail(r->err, MT_CODEC_E_NOMEM, "dubbo: no memory");
            continue;
        }
        if (!e.val_scalar)
            return mt_codec_fail(r->err, MT_CODEC_E_UNSUPPORTED,
                                 "dubbo: attachment %.*s holds an object; replacing it would "
                                 "renumber Hessian2 references",
                                 (int)MT_MIN(e.key.len, 64), e.key.ptr);
        used[i] = true;
        if (mut->items[i].val.ptr == NULL)
            continue; /* removal */
        if (dubbo_write_pair(out, &mut->items[i], r->err) != MT_OK)
            return MT_ERROR;
    }
}

/* Appends the mutation items that matched no existing entry (first occurrence wins). */
static mt_status_t dubbo_append_new(const mt_mutation_t *mut, bool *used, mt_wbuf_t *out,
                                    mt_codec_err_t *err)
{
    for (size_t i = 0; i < mut->count; i++) {
        const mt_attr_t *it = &mut->items[i];
        if (used[i] || dubbo_mut_find(mut, it->key) != (long)i)
            continue;
        used[i] = true;
        if (it->val.ptr != NULL && dubbo_write_pair(out, it, err) != MT_OK)
            return MT_ERROR;
    }
    return MT_OK;
}

static bool dubbo_mut_adds(const mt_mutation_t *mut)
{
    for (size_t i = 0; i < mut->count; i++) {
        if (mut->items[i].val.ptr != NULL)
            return true;
    }
    return false;
}

static mt_status_t dubbo_encode_attachments(const mt_msg_t *msg, const mt_mutation_t *mut,
                                            bool *used, mt_wbuf_t *out, mt_codec_err_t *err)
{
    const dubbo_priv_t *p = dubbo_cpriv(msg);
    hessian2_classes_t classes = {0};
    mt_arena_t arena;
    mt_arena_init(&arena);
    hessian2_reader_t r;
    hessian2_reader_init(&r, msg->frame, msg->frame_len, DUBBO_HEADER_LEN, p->max_depth, &classes,
                         &arena, err);
    dubbo_invocation_t inv;
    dubbo_attach_kind_t kind = DUBBO_ATTACH_NONE;
    mt_status_t rc = dubbo_parse_invocation(&r, &inv);
    if (rc == MT_OK)
        rc = dubbo_attach_open(&r, &kind);
    if (rc != MT_OK) {
        /* the frame decoded before, so only a different depth limit could get here */
    } else if (kind == DUBBO_ATTACH_MAP) {
        /* keep the map's own header ('H', or 'M' + type) as it was */
        rc = mt_wbuf_append(out, msg->frame + p->attach_off, r.pos - p->attach_off);
        if (rc == MT_OK)
            rc = dubbo_rewrite_entries(&r, msg, mut, used, out);
        if (rc == MT_OK)
            rc = dubbo_append_new(mut, used, out, err);
        if (rc == MT_OK)
            rc = mt_wbuf_append_u8(out, 'Z');
    } else if (dubbo_mut_adds(mut)) {
        /* no map (or a null one): write a fresh untyped map in its place */
        rc = mt_wbuf_append_u8(out, 'H');
        if (rc == MT_OK)
            rc = dubbo_append_new(mut, used, out, err);
        if (rc == MT_OK)
            rc = mt_wbuf_append_u8(out, 'Z');
    } else {
        /* only removals and nothing to remove them from */
        rc = mt_wbuf_append(out, msg->frame + p->attach_off, p->attach_end - p->attach_off);
    }
    hessian2_classes_free(&classes);
    mt_arena_free(&arena);
    return rc;
}

static mt_status_t dubbo_encode(const mt_msg_t *msg, const mt_mutation_t *mut, mt_wbuf_t *out,
                                mt_codec_err_t *err)
{
    const dubbo_priv_t *p = dubbo_cpriv(msg);
    size_t mark = out->len;
    if (err != NULL)
        err->code = MT_CODEC_E_NONE;
    if (mut == NULL || mut->count == 0) {
        if (mt_wbuf_append(out, msg->frame, msg->frame_len) != MT_OK)
            return mt_codec_fail(err, MT_CODEC_E_NOMEM, "dubbo: no memory");
        return MT_OK;
    }
    if (msg->is_reply || msg->type == MT_MSG_HEARTBEAT)
        return mt_codec_fail(err, MT_CODEC_E_NO_MUTABLE_HEADERS,
                             "dubbo: %s frames carry no attachments to mutate",
                             mt_msg_type_name(msg->type));
    if (!p->body_parsed)
        return mt_codec_fail(err, MT_CODEC_E_UNSUPPORTED,
                             "dubbo: cannot mutate attachments of serialization id %u",
                             p->flag & DUBBO_SERIALIZATION_MASK);
    bool *used = calloc(mut->count, sizeof(*used));
    if (used == NULL)
        return mt_codec_fail(err, MT_CODEC_E_NOMEM, "dubbo: no memory");
    mt_status_t rc = mt_wbuf_append(out, msg->frame, p->attach_off);
    if (rc == MT_OK)
        rc = dubbo_encode_attachments(msg, mut, used, out, err);
    if (rc == MT_OK)
        rc = mt_wbuf_append(out, msg->frame + p->attach_end, msg->frame_len - p->attach_end);
    free(used);
    size_t body = out->len - mark - DUBBO_HEADER_LEN;
    if (rc == MT_OK && body > INT32_MAX)
        rc = mt_codec_fail(err, MT_CODEC_E_TOO_LARGE, "dubbo: mutated body too large");
    if (rc != MT_OK) {
        if (err != NULL && err->code == MT_CODEC_E_NONE)
            mt_codec_set_error(err, MT_CODEC_E_NOMEM, "dubbo: no memory");
        out->len = mark;
        return MT_ERROR;
    }
    mt_wbuf_put_be32_at(out, mark + 12, (uint32_t)body);
    return MT_OK;
}

/* ---- local replies ----------------------------------------------------------------------- */

uint8_t dubbo_status_for_error(mt_error_kind_t kind)
{
    switch (kind) {
    case MT_ERR_ROUTE_NOT_FOUND:
    case MT_ERR_CLUSTER_NOT_FOUND:
        return DUBBO_SERVICE_NOT_FOUND;
    case MT_ERR_UPSTREAM_TIMEOUT:
        return DUBBO_SERVER_TIMEOUT;
    case MT_ERR_BAD_RESPONSE:
        return DUBBO_BAD_RESPONSE;
    case MT_ERR_OVER_LIMIT:
        return DUBBO_SERVER_THREADPOOL_EXHAUSTED;
    case MT_ERR_NO_HEALTHY_UPSTREAM:
    case MT_ERR_UNSPECIFIED:
    default:
        return DUBBO_SERVER_ERROR;
    }
}

/* Response header + body; the body is always Hessian2 (every Dubbo client can read it). */
static mt_status_t dubbo_write_response(uint8_t flag, uint8_t status, uint64_t id, const char *text,
                                        size_t text_len, bool null_body, mt_wbuf_t *out)
{
    size_t mark = out->len;
    uint8_t h[4] = {DUBBO_MAGIC_HI, DUBBO_MAGIC_LO, flag, status};
    mt_status_t rc = mt_wbuf_append(out, h, sizeof(h));
    if (rc == MT_OK)
        rc = mt_wbuf_append_be64(out, id);
    if (rc == MT_OK)
        rc = mt_wbuf_append_be32(out, 0);
    if (rc == MT_OK)
        rc = null_body ? mt_wbuf_append_u8(out, 'N') : hessian2_write_string(out, text, text_len);
    if (rc != MT_OK) {
        out->len = mark;
        return MT_ERROR;
    }
    mt_wbuf_put_be32_at(out, mark + 12, (uint32_t)(out->len - mark - DUBBO_HEADER_LEN));
    return MT_OK;
}

/* Keeps the longest prefix of `text` that is valid UTF-8, so any text can be sent. */
static size_t dubbo_utf8_prefix(const char *text)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    while (s[i] != 0) {
        size_t n = s[i] < 0x80                      ? 1
                   : (s[i] >= 0xc2 && s[i] <= 0xdf) ? 2
                   : (s[i] >= 0xe0 && s[i] <= 0xef) ? 3
                   : (s[i] >= 0xf0 && s[i] <= 0xf4) ? 4
                                                    : 0;
        if (n == 0)
            break;
        size_t k = 1;
        while (k < n && (s[i + k] & 0xc0) == 0x80)
            k++;
        if (k < n)
            break;
        i += n;
    }
    return i;
}

static mt_status_t dubbo_on_error(const mt_msg_t *req, mt_error_kind_t kind, const char *text,
                                  mt_wbuf_t *out)
{
    if (!req->expects_reply)
        return MT_OK;
    if (text == NULL)
        text = mt_error_kind_name(kind);
    return dubbo_write_response(DUBBO_SERIALIZATION_HESSIAN2, dubbo_status_for_error(kind),
                                req->request_id, text, dubbo_utf8_prefix(text), false, out);
}

static mt_status_t dubbo_heartbeat_reply(const mt_msg_t *req, mt_wbuf_t *out)
{
    if (!req->expects_reply)
        return MT_OK;
    return dubbo_write_response(DUBBO_FLAG_EVENT | DUBBO_SERIALIZATION_HESSIAN2, DUBBO_OK,
                                req->request_id, NULL, 0, true, out);
}

static mt_status_t dubbo_set_request_id(uint8_t *frame, size_t len, uint64_t id)
{
    if (len < DUBBO_HEADER_LEN || frame[0] != DUBBO_MAGIC_HI || frame[1] != DUBBO_MAGIC_LO)
        return MT_ERROR;
    uint8_t be[8] = {(uint8_t)(id >> 56), (uint8_t)(id >> 48), (uint8_t)(id >> 40),
                     (uint8_t)(id >> 32), (uint8_t)(id >> 24), (uint8_t)(id >> 16),
                     (uint8_t)(id >> 8),  (uint8_t)id};
    memcpy(frame + 4, be, sizeof(be)); /* one store: this runs twice per call */
    return MT_OK;
}

const mt_codec_t mt_codec_dubbo = {
    .name = "dubbo",
    .aliases = dubbo_aliases,
    .flags = MT_CODEC_F_MULTIPLEXED | MT_CODEC_F_LOCAL_HEARTBEAT,
    .state_size = sizeof(dubbo_decoder_t),
    .init = dubbo_init,
    .free = dubbo_free,
    .decode = dubbo_decode,
    .encode = dubbo_encode,
    .on_error = dubbo_on_error,
    .heartbeat_reply = dubbo_heartbeat_reply,
    .set_request_id = dubbo_set_request_id,
};
