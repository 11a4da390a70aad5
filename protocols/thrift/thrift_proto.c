/*
 * thrift_proto.c - Thrift protocol level: message headers, the resumable struct skipper
 * and TApplicationException writers (see thrift.h).
 *
 * Every reader here works on offsets and only commits a token (field header, scalar,
 * string, container header) when all of its bytes are present, so an MT_AGAIN never leaves
 * a half-read token behind and the caller may move the bytes between calls.
 */
#include "protocols/thrift/thrift.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ------------------------------------------------------------------------------- */

const char *thrift_transport_name(thrift_transport_t t)
{
    switch (t) {
    case THRIFT_TRANSPORT_UNFRAMED:
        return "unframed";
    case THRIFT_TRANSPORT_FRAMED:
        return "framed";
    case THRIFT_TRANSPORT_HEADER:
        return "header";
    default:
        return "unknown";
    }
}

const char *thrift_protocol_name(thrift_protocol_t p)
{
    switch (p) {
    case THRIFT_PROTO_BINARY:
        return "binary";
    case THRIFT_PROTO_BINARY_OLD:
        return "binary (non-strict)";
    case THRIFT_PROTO_COMPACT:
        return "compact";
    default:
        return "unknown";
    }
}

/* ---- primitive readers ------------------------------------------------------------------- */

static uint32_t thrift_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Reads an unsigned LEB128 varint of at most `max_bytes` bytes at buf[pos] (end exclusive).
 * Returns the byte count, 0 when incomplete, -1 when longer than max_bytes.
 */
static int thrift_uvarint(const uint8_t *buf, size_t pos, size_t end, int max_bytes, uint64_t *v)
{
    uint64_t r = 0;
    for (int i = 0; i < max_bytes; i++) {
        if (pos + (size_t)i >= end)
            return 0;
        uint8_t b = buf[pos + (size_t)i];
        r |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *v = r;
            return i + 1;
        }
    }
    return -1;
}

static mt_status_t thrift_bad_varint(mt_codec_err_t *err, size_t pos)
{
    return mt_codec_fail(err, MT_CODEC_E_MALFORMED, "thrift: varint too long at offset %zu", pos);
}

/* ---- message headers --------------------------------------------------------------------- */

static mt_status_t thrift_check_type(uint8_t type, mt_codec_err_t *err)
{
    if (type < THRIFT_CALL || type > THRIFT_ONEWAY)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED, "thrift: invalid message type %u", type);
    return MT_OK;
}

static mt_status_t thrift_check_name(int64_t n, size_t max_name, mt_codec_err_t *err)
{
    if (n < 0)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED, "thrift: negative method name length");
    if ((uint64_t)n > max_name)
        return mt_codec_fail(err, MT_CODEC_E_TOO_LARGE,
                             "thrift: method name of %lld bytes exceeds the limit of %zu",
                             (long long)n, max_name);
    return MT_OK;
}

static mt_status_t thrift_binary_header(bool strict, const uint8_t *buf, size_t start, size_t end,
                                        size_t max_name, thrift_msg_header_t *h,
                                        mt_codec_err_t *err)
{
    size_t pos = start;
    if (strict) {
        if (end - pos < 4)
            return MT_AGAIN;
        uint32_t v = thrift_be32(buf + pos);
        if ((v & 0xffff0000u) != 0x80010000u)
            return mt_codec_fail(err, MT_CODEC_E_MALFORMED,
                                 "thrift: bad binary protocol version 0x%08x", v);
        h->type = (uint8_t)(v & 0xff);
        pos += 4;
    }
    if (end - pos < 4)
        return MT_AGAIN;
    int32_t n = (int32_t)thrift_be32(buf + pos);
    if (thrift_check_name(n, max_name, err) != MT_OK)
        return MT_ERROR;
    pos += 4;
    h->name_off = pos;
    h->name_len = (size_t)n;
    if (end - pos < (size_t)n + (strict ? 4u : 5u))
        return MT_AGAIN;
    pos += (size_t)n;
    if (!strict)
        h->type = buf[pos++];
    h->seqid_off = pos;
    h->seqid_width = 4;
    h->seqid = (int32_t)thrift_be32(buf + pos);
    h->body_off = pos + 4;
    return thrift_check_type(h->type, err);
}

static mt_status_t thrift_compact_header(const uint8_t *buf, size_t start, size_t end,
                                         size_t max_name, thrift_msg_header_t *h,
                                         mt_codec_err_t *err)
{
    size_t pos = start;
    if (end - pos < 2)
        return MT_AGAIN;
    if (buf[pos] != 0x82 || (buf[pos + 1] & 0x1f) != 1)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED,
                             "thrift: bad compact protocol id/version 0x%02x%02x", buf[pos],
                             buf[pos + 1]);
    h->type = (uint8_t)(buf[pos + 1] >> 5);
    pos += 2;
    uint64_t v;
    int n = thrift_uvarint(buf, pos, end, 5, &v);
    if (n <= 0)
        return n == 0 ? MT_AGAIN : thrift_bad_varint(err, pos);
    h->seqid_off = pos;
    h->seqid_width = (uint8_t)n;
    h->seqid = (int32_t)(uint32_t)v;
    pos += (size_t)n;
    n = thrift_uvarint(buf, pos, end, 5, &v);
    if (n <= 0)
        return n == 0 ? MT_AGAIN : thrift_bad_varint(err, pos);
    if (thrift_check_name((int64_t)(uint32_t)v, max_name, err) != MT_OK)
        return MT_ERROR;
    pos += (size_t)n;
    h->name_off = pos;
    h->name_len = (size_t)(uint32_t)v;
    if (end - pos < h->name_len)
        return MT_AGAIN;
    h->body_off = pos + h->name_len;
    return thrift_check_type(h->type, err);
}

mt_status_t thrift_parse_msg_header(thrift_protocol_t p, const uint8_t *buf, size_t start,
                                    size_t end, size_t max_name, thrift_msg_header_t *h,
                                    mt_codec_err_t *err)
{
    assert(start <= end);
    switch (p) {
    case THRIFT_PROTO_BINARY:
        return thrift_binary_header(true, buf, start, end, max_name, h, err);
    case THRIFT_PROTO_BINARY_OLD:
        return thrift_binary_header(false, buf, start, end, max_name, h, err);
    case THRIFT_PROTO_COMPACT:
        return thrift_compact_header(buf, start, end, max_name, h, err);
    default:
        return mt_codec_fail(err, MT_CODEC_E_UNSUPPORTED, "thrift: unknown protocol");
    }
}

/* ---- skipper ----------------------------------------------------------------------------- */

mt_status_t thrift_skipper_init(thrift_skipper_t *s, uint32_t max_depth)
{
    memset(s, 0, sizeof(*s));
    s->max_depth = MT_MIN(MT_MAX(max_depth, 1u), THRIFT_HARD_MAX_DEPTH);
    s->stack = calloc(s->max_depth, sizeof(*s->stack));
    return s->stack != NULL ? MT_OK : MT_ERROR;
}

void thrift_skipper_free(thrift_skipper_t *s)
{
    free(s->stack);
    s->stack = NULL;
}

void thrift_skipper_start(thrift_skipper_t *s, size_t pos, size_t limit)
{
    s->pos = pos;
    s->limit = limit;
    s->pending = THRIFT_T_STRUCT;
    s->depth = 0;
}

/* Per-call view of the input: bytes readable are [0, end), end = min(len, limit). */
typedef struct thrift_in {
    const uint8_t *buf;
    size_t end;
    bool at_limit; /* end is the limit, not the data: running out is an error */
    mt_codec_err_t *err;
} thrift_in_t;

/* A token needs `n` bytes at `pos`: MT_OK, MT_AGAIN, or MT_ERROR when over the limit. */
static mt_status_t thrift_need(const thrift_in_t *in, size_t pos, uint64_t n)
{
    if (pos <= in->end && n <= in->end - pos)
        return MT_OK;
    if (in->at_limit)
        return mt_codec_fail(in->err, MT_CODEC_E_TOO_LARGE,
                             "thrift: message runs past the frame size limit at offset %zu",
                             in->end);
    return MT_AGAIN;
}

static mt_status_t thrift_varint_at(const thrift_in_t *in, size_t pos, int max_bytes, uint64_t *v,
                                    size_t *n)
{
    int r = thrift_uvarint(in->buf, pos, in->end, max_bytes, v);
    if (r > 0) {
        *n = (size_t)r;
        return MT_OK;
    }
    if (r < 0)
        return thrift_bad_varint(in->err, pos);
    if (in->at_limit)
        return mt_codec_fail(in->err, MT_CODEC_E_TOO_LARGE,
                             "thrift: message runs past the frame size limit at offset %zu",
                             in->end);
    return MT_AGAIN;
}

static bool thrift_valid_value_type(uint8_t t)
{
    switch (t) {
    case THRIFT_T_BOOL:
    case THRIFT_T_BYTE:
    case THRIFT_T_DOUBLE:
    case THRIFT_T_I16:
    case THRIFT_T_I32:
    case THRIFT_T_I64:
    case THRIFT_T_STRING:
    case THRIFT_T_STRUCT:
    case THRIFT_T_MAP:
    case THRIFT_T_SET:
    case THRIFT_T_LIST:
    case THRIFT_T_UUID:
        return true;
    default:
        return false;
    }
}

/* Compact type nibble -> TType; 0xff when invalid. Booleans in a field header (1, 2) carry
 * their value, the caller handles that before calling this. */
static uint8_t thrift_compact_to_ttype(uint8_t c)
{
    static const uint8_t map[16] = {
        0xff,         THRIFT_T_BOOL, THRIFT_T_BOOL,   THRIFT_T_BYTE,   THRIFT_T_I16,
        THRIFT_T_I32, THRIFT_T_I64,  THRIFT_T_DOUBLE, THRIFT_T_STRING, THRIFT_T_LIST,
        THRIFT_T_SET, THRIFT_T_MAP,  THRIFT_T_STRUCT, THRIFT_T_UUID,   0xff,
        0xff,
    };
    return map[c & 0x0f];
}

static mt_status_t thrift_bad_type(const thrift_in_t *in, uint8_t t, size_t pos)
{
    return mt_codec_fail(in->err, MT_CODEC_E_MALFORMED, "thrift: invalid type %u at offset %zu", t,
                         pos);
}

static mt_status_t thrift_push(thrift_skipper_t *s, const thrift_in_t *in, uint8_t kind,
                               uint8_t ktype, uint8_t vtype, uint64_t count)
{
    if (s->depth >= s->max_depth)
        return mt_codec_fail(in->err, MT_CODEC_E_TOO_DEEP,
                             "thrift: nesting deeper than %u at offset %zu", s->max_depth, s->pos);
    /* Every element takes at least one byte: a count beyond the limit cannot be honest. */
    if (count > s->limit)
        return mt_codec_fail(in->err, MT_CODEC_E_TOO_LARGE,
                             "thrift: container of %llu elements exceeds the frame limit",
                             (unsigned long long)count);
    if (kind != THRIFT_T_STRUCT && count > 0 &&
        (!thrift_valid_value_type(ktype) ||
         (kind == THRIFT_T_MAP && !thrift_valid_value_type(vtype))))
        return thrift_bad_type(in, thrift_valid_value_type(ktype) ? vtype : ktype, s->pos);
    thrift_skip_frame_t *f = &s->stack[s->depth++];
    f->kind = kind;
    f->ktype = ktype;
    f->vtype = vtype;
    f->want_value = false;
    f->remaining = (uint32_t)count;
    return MT_OK;
}

/* Binary protocol: reads one value (or container header) of type t. */
static mt_status_t thrift_binary_value(thrift_skipper_t *s, const thrift_in_t *in, uint8_t t)
{
    static const uint8_t fixed[17] = {
        [THRIFT_T_BOOL] = 1, [THRIFT_T_BYTE] = 1, [THRIFT_T_DOUBLE] = 8, [THRIFT_T_I16] = 2,
        [THRIFT_T_I32] = 4,  [THRIFT_T_I64] = 8,  [THRIFT_T_UUID] = 16};
    const uint8_t *p = in->buf + s->pos;
    mt_status_t rc;
    if (t < sizeof(fixed) && fixed[t] != 0) {
        if ((rc = thrift_need(in, s->pos, fixed[t])) == MT_OK)
            s->pos += fixed[t];
        return rc;
    }
    switch (t) {
    case THRIFT_T_STRING: {
        if ((rc = thrift_need(in, s->pos, 4)) != MT_OK)
            return rc;
        int32_t n = (int32_t)thrift_be32(p);
        if (n < 0)
            return mt_codec_fail(in->err, MT_CODEC_E_MALFORMED,
                                 "thrift: negative string length at offset %zu", s->pos);
        if ((rc = thrift_need(in, s->pos, 4 + (uint64_t)n)) == MT_OK)
            s->pos += 4 + (size_t)n;
        return rc;
    }
    case THRIFT_T_STRUCT:
        return thrift_push(s, in, THRIFT_T_STRUCT, 0, 0, 0);
    case THRIFT_T_MAP: {
        if ((rc = thrift_need(in, s->pos, 6)) != MT_OK)
            return rc;
        int32_t n = (int32_t)thrift_be32(p + 2);
        if (n < 0)
            return mt_codec_fail(in->err, MT_CODEC_E_MALFORMED,
                                 "thrift: negative map size at offset %zu", s->pos);
        if ((rc = thrift_push(s, in, THRIFT_T_MAP, p[0], p[1], (uint64_t)n)) == MT_OK)
            s->pos += 6;
        return rc;
    }
    case THRIFT_T_SET:
    case THRIFT_T_LIST: {
        if ((rc = thrift_need(in, s->pos, 5)) != MT_OK)
            return rc;
        int32_t n = (int32_t)thrift_be32(p + 1);
        if (n < 0)
            return mt_codec_fail(in->err, MT_CODEC_E_MALFORMED,
                                 "thrift: negative list size at offset %zu", s->pos);
        if ((rc = thrift_push(s, in, t, p[0], 0, (uint64_t)n)) == MT_OK)
            s->pos += 5;
        return rc;
    }
    default:
        return thrift_bad_type(in, t, s->pos);
    }
}

/* Compact protocol: reads one value (or container header) of (normalised) type t. */
static mt_status_t thrift_compact_value(thrift_skipper_t *s, const thrift_in_t *in, uint8_t t)
{
    mt_status_t rc;
    uint64_t v;
    size_t n;
    size_t fixed = t == THRIFT_T_BOOL || t == THRIFT_T_BYTE ? 1
                   : t == THRIFT_T_DOUBLE                   ? 8
                   : t == THRIFT_T_UUID                     ? 16
                                                            : 0;
    if (fixed) {
        if ((rc = thrift_need(in, s->pos, fixed)) == MT_OK)
            s->pos += fixed;
        return rc;
    }
    switch (t) {
    case THRIFT_T_I16:
    case THRIFT_T_I32:
    case THRIFT_T_I64:
        if ((rc = thrift_varint_at(in, s->pos, t == THRIFT_T_I64 ? 10 : 5, &v, &n)) == MT_OK)
            s->pos += n;
        return rc;
    case THRIFT_T_STRING:
        if ((rc = thrift_varint_at(in, s->pos, 5, &v, &n)) != MT_OK)
            return rc;
        if ((rc = thrift_need(in, s->pos, n + v)) == MT_OK)
            s->pos += n + v;
        return rc;
    case THRIFT_T_STRUCT:
        return thrift_push(s, in, THRIFT_T_STRUCT, 0, 0, 0);
    case THRIFT_T_SET:
    case THRIFT_T_LIST: {
        if ((rc = thrift_need(in, s->pos, 1)) != MT_OK)
            return rc;
        uint8_t b = in->buf[s->pos];
        v = b >> 4;
        n = 1;
        if (v == 15) {
            if ((rc = thrift_varint_at(in, s->pos + 1, 5, &v, &n)) != MT_OK)
                return rc;
            n += 1;
        }
        if ((rc = thrift_push(s, in, t, thrift_compact_to_ttype(b), 0, v)) == MT_OK)
            s->pos += n;
        return rc;
    }
    case THRIFT_T_MAP: {
        if ((rc = thrift_varint_at(in, s->pos, 5, &v, &n)) != MT_OK)
            return rc;
        uint8_t kv = 0;
        if (v > 0) {
            if ((rc = thrift_need(in, s->pos, n + 1)) != MT_OK)
                return rc;
            kv = in->buf[s->pos + n];
            n += 1;
        }
        if ((rc = thrift_push(s, in, THRIFT_T_MAP, thrift_compact_to_ttype(kv >> 4),
                              thrift_compact_to_ttype(kv), v)) == MT_OK)
            s->pos += n;
        return rc;
    }
    default:
        return thrift_bad_type(in, t, s->pos);
    }
}

/* Reads a field header inside a struct: sets s->pending, or pops on STOP. */
static mt_status_t thrift_field_header(thrift_skipper_t *s, thrift_protocol_t p,
                                       const thrift_in_t *in)
{
    mt_status_t rc;
    if ((rc = thrift_need(in, s->pos, 1)) != MT_OK)
        return rc;
    uint8_t b = in->buf[s->pos];
    if (b == THRIFT_T_STOP) {
        s->pos++;
        s->depth--;
        return MT_OK;
    }
    if (p != THRIFT_PROTO_COMPACT) {
        if (!thrift_valid_value_type(b))
            return thrift_bad_type(in, b, s->pos);
        if ((rc = thrift_need(in, s->pos, 3)) == MT_OK) {
            s->pos += 3;
            s->pending = b;
        }
        return rc;
    }
    size_t n = 1;
    if ((b >> 4) == 0) { /* long form: zigzag i16 field id follows */
        uint64_t id;
        size_t idn;
        if ((rc = thrift_varint_at(in, s->pos + 1, 3, &id, &idn)) != MT_OK)
            return rc;
        n += idn;
    }
    uint8_t ct = b & 0x0f;
    uint8_t t = thrift_compact_to_ttype(ct);
    if (t == 0xff)
        return thrift_bad_type(in, ct, s->pos);
    s->pos += n;
    /* compact booleans keep their value in the field header */
    s->pending = (ct == 1 || ct == 2) ? THRIFT_T_STOP : t;
    return MT_OK;
}

/* Decides what comes next inside the innermost open container. */
static mt_status_t thrift_step(thrift_skipper_t *s, thrift_protocol_t p, const thrift_in_t *in)
{
    thrift_skip_frame_t *f = &s->stack[s->depth - 1];
    if (f->kind == THRIFT_T_STRUCT)
        return thrift_field_header(s, p, in);
    if (f->remaining == 0) {
        s->depth--;
        return MT_OK;
    }
    if (f->kind != THRIFT_T_MAP) {
        f->remaining--;
        s->pending = f->ktype;
    } else if (!f->want_value) {
        f->want_value = true;
        s->pending = f->ktype;
    } else {
        f->want_value = false;
        f->remaining--;
        s->pending = f->vtype;
    }
    return MT_OK;
}

mt_status_t thrift_skip(thrift_skipper_t *s, thrift_protocol_t p, const uint8_t *buf, size_t len,
                        mt_codec_err_t *err)
{
    thrift_in_t in = {buf, MT_MIN(len, s->limit), len >= s->limit, err};
    for (;;) {
        mt_status_t rc;
        if (s->pending != THRIFT_T_STOP) {
            uint8_t t = s->pending;
            rc = p == THRIFT_PROTO_COMPACT ? thrift_compact_value(s, &in, t)
                                           : thrift_binary_value(s, &in, t);
            if (rc != MT_OK)
                return rc;
            s->pending = THRIFT_T_STOP;
            continue;
        }
        if (s->depth == 0)
            return MT_OK;
        if ((rc = thrift_step(s, p, &in)) != MT_OK)
            return rc;
    }
}

/* ---- writers ----------------------------------------------------------------------------- */

mt_status_t thrift_write_msg_header(mt_wbuf_t *out, thrift_protocol_t p, mt_str_t name,
                                    uint8_t type, int32_t seqid)
{
    mt_status_t rc = MT_OK;
    switch (p) {
    case THRIFT_PROTO_BINARY:
        rc = mt_wbuf_append_be32(out, 0x80010000u | type);
        if (rc == MT_OK)
            rc = mt_wbuf_append_be32(out, (uint32_t)name.len);
        if (rc == MT_OK)
            rc = mt_wbuf_append(out, name.ptr, name.len);
        return rc == MT_OK ? mt_wbuf_append_be32(out, (uint32_t)seqid) : rc;
    case THRIFT_PROTO_BINARY_OLD:
        rc = mt_wbuf_append_be32(out, (uint32_t)name.len);
        if (rc == MT_OK)
            rc = mt_wbuf_append(out, name.ptr, name.len);
        if (rc == MT_OK)
            rc = mt_wbuf_append_u8(out, type);
        return rc == MT_OK ? mt_wbuf_append_be32(out, (uint32_t)seqid) : rc;
    case THRIFT_PROTO_COMPACT:
        rc = mt_wbuf_append_u8(out, 0x82);
        if (rc == MT_OK)
            rc = mt_wbuf_append_u8(out, (uint8_t)(1 | (type << 5)));
        if (rc == MT_OK)
            rc = mt_wbuf_append_uvarint(out, (uint32_t)seqid);
        if (rc == MT_OK)
            rc = mt_wbuf_append_uvarint(out, name.len);
        return rc == MT_OK ? mt_wbuf_append(out, name.ptr, name.len) : rc;
    default:
        return MT_ERROR;
    }
}

mt_status_t thrift_write_app_exception(mt_wbuf_t *out, thrift_protocol_t p, mt_str_t message,
                                       int32_t type)
{
    mt_status_t rc;
    if (p == THRIFT_PROTO_COMPACT) {
        /* field 1 (delta 1) binary, field 2 (delta 1) i32 as zigzag varint, stop */
        rc = mt_wbuf_append_u8(out, 0x18);
        if (rc == MT_OK)
            rc = mt_wbuf_append_uvarint(out, message.len);
        if (rc == MT_OK)
            rc = mt_wbuf_append(out, message.ptr, message.len);
        if (rc == MT_OK)
            rc = mt_wbuf_append_u8(out, 0x15);
        if (rc == MT_OK)
            rc = mt_wbuf_append_uvarint(out, ((uint32_t)type << 1) ^ (uint32_t)(type >> 31));
        return rc == MT_OK ? mt_wbuf_append_u8(out, THRIFT_T_STOP) : rc;
    }
    uint8_t f1[3] = {THRIFT_T_STRING, 0, 1};
    uint8_t f2[3] = {THRIFT_T_I32, 0, 2};
    rc = mt_wbuf_append(out, f1, sizeof(f1));
    if (rc == MT_OK)
        rc = mt_wbuf_append_be32(out, (uint32_t)message.len);
    if (rc == MT_OK)
        rc = mt_wbuf_append(out, message.ptr, message.len);
    if (rc == MT_OK)
        rc = mt_wbuf_append(out, f2, sizeof(f2));
    if (rc == MT_OK)
        rc = mt_wbuf_append_be32(out, (uint32_t)type);
    return rc == MT_OK ? mt_wbuf_append_u8(out, THRIFT_T_STOP) : rc;
}

/* Binary protocol: TApplicationException's fields in [pos, end); the type, or -1. */
static int32_t thrift_appex_type_binary(const uint8_t *buf, size_t pos, size_t end)
{
    while (pos + 1 <= end && buf[pos] != THRIFT_T_STOP) {
        if (pos + 3 > end)
            return -1;
        uint8_t type = buf[pos];
        uint16_t id = (uint16_t)(buf[pos + 1] << 8 | buf[pos + 2]);
        pos += 3;
        if (type == THRIFT_T_I32 && pos + 4 <= end) {
            uint32_t v = thrift_be32(buf + pos);
            if (id == 2)
                return (int32_t)v;
            pos += 4;
        } else if (type == THRIFT_T_STRING && pos + 4 <= end) {
            uint32_t n = thrift_be32(buf + pos);
            if (n > end - pos - 4)
                return -1;
            pos += 4 + (size_t)n;
        } else {
            return -1; /* not a field TApplicationException has */
        }
    }
    return -1;
}

/* Compact protocol: the same, with its field headers (delta or zigzag id) and varints. */
static int32_t thrift_appex_type_compact(const uint8_t *buf, size_t pos, size_t end)
{
    int32_t last_id = 0;
    while (pos < end && buf[pos] != 0) {
        uint8_t hdr = buf[pos++], ctype = hdr & 0x0f;
        int32_t id;
        uint64_t v;
        if (hdr >> 4) {
            id = last_id + (hdr >> 4);
        } else {
            int n = thrift_uvarint(buf, pos, end, 3, &v);
            if (n <= 0)
                return -1;
            pos += (size_t)n;
            id = (int32_t)((v >> 1) ^ (~(v & 1) + 1));
        }
        last_id = id;
        int n = thrift_uvarint(buf, pos, end, 5, &v);
        if (n <= 0)
            return -1;
        pos += (size_t)n;
        if (ctype == 5 && id == 2) /* i32, zigzag */
            return (int32_t)((uint32_t)(v >> 1) ^ (uint32_t)(~(v & 1) + 1));
        if (ctype == 8) { /* binary: v is its length */
            if (v > end - pos)
                return -1;
            pos += (size_t)v;
        } else if (ctype != 5) {
            return -1;
        }
    }
    return -1;
}

int32_t thrift_read_app_exception_type(thrift_protocol_t p, const uint8_t *buf, size_t pos,
                                       size_t end)
{
    if (pos >= end)
        return -1;
    return p == THRIFT_PROTO_COMPACT ? thrift_appex_type_compact(buf, pos, end)
                                     : thrift_appex_type_binary(buf, pos, end);
}

const char *thrift_appex_type_name(int32_t type)
{
    /* Apache Thrift's TApplicationException.TYPE names (lib/cpp TApplicationException.h) */
    static const char *const names[] = {
        "UNKNOWN",           "UNKNOWN_METHOD",   "INVALID_MESSAGE_TYPE",   "WRONG_METHOD_NAME",
        "BAD_SEQUENCE_ID",   "MISSING_RESULT",   "INTERNAL_ERROR",         "PROTOCOL_ERROR",
        "INVALID_TRANSFORM", "INVALID_PROTOCOL", "UNSUPPORTED_CLIENT_TYPE"};
    return type >= 0 && (size_t)type < MT_ARRAY_LEN(names) ? names[type] : NULL;
}

int32_t thrift_appex_type_for_error(mt_error_kind_t kind)
{
    switch (kind) {
    case MT_ERR_ROUTE_NOT_FOUND:
        return THRIFT_APPEX_UNKNOWN_METHOD; /* as Envoy's thrift_proxy does */
    case MT_ERR_CLUSTER_NOT_FOUND:
    case MT_ERR_NO_HEALTHY_UPSTREAM:
    case MT_ERR_UPSTREAM_TIMEOUT:
    case MT_ERR_OVER_LIMIT:
        return THRIFT_APPEX_INTERNAL_ERROR;
    case MT_ERR_BAD_RESPONSE:
        return THRIFT_APPEX_PROTOCOL_ERROR;
    case MT_ERR_UNSPECIFIED:
    default:
        return THRIFT_APPEX_UNKNOWN;
    }
}
