/*
 * mrpc_codec.c - a C codec of the example protocol mrpc (examples/custom-protocol/mrpc.lua has
 * the frame layout), written only to measure the Lua codec against (tests/bench/lua_codec/):
 * it is not shipped, only the bench binary meltemi_bench_mrpc registers it, as "mrpc_c".
 *
 * It does what mrpc.lua does - the same attributes (service, method, every header), the same
 * mutation, error and heartbeat frames, the id rewritten at bytes 8-11 - the way the built-in
 * codecs do it: views into the frame, no copies, no state beyond the frame. Unlike mrpc.lua
 * it keeps one attribute per key, so encode drops a repeated header or one named "service"
 * or "method" (the benchmark's frames have neither).
 */
#include "protocols/codec.h"

#include <string.h>

#define MRPC_MAGIC 0x4d52
#define MRPC_HEADER 12
#define MRPC_F_RESPONSE 1
#define MRPC_F_ONEWAY 2
#define MRPC_F_HEARTBEAT 4
#define MRPC_F_ERROR 8
#define MRPC_MAX_FRAME (1u << 20)

extern const mt_codec_t mt_bench_codec_mrpc;

static uint16_t mrpc_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t mrpc_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static mt_status_t mrpc_init(void *state, const mt_codec_limits_t *limits)
{
    (void)state;
    (void)limits;
    return MT_OK;
}

static void mrpc_free(void *state)
{
    (void)state;
}

/* A u16-prefixed string at *pos within len bytes of f. */
static bool mrpc_str(const uint8_t *f, size_t len, size_t *pos, mt_str_t *out)
{
    if (*pos + 2 > len)
        return false;
    size_t n = mrpc_u16(f + *pos);
    if (*pos + 2 + n > len)
        return false;
    *out = (mt_str_t){(const char *)f + *pos + 2, n};
    *pos += 2 + n;
    return true;
}

static mt_msg_type_t mrpc_type(uint8_t flags)
{
    if (flags & MRPC_F_HEARTBEAT)
        return MT_MSG_HEARTBEAT;
    if (flags & MRPC_F_ERROR)
        return MT_MSG_ERROR;
    if (flags & MRPC_F_RESPONSE)
        return MT_MSG_RESPONSE;
    return (flags & MRPC_F_ONEWAY) ? MT_MSG_ONEWAY : MT_MSG_REQUEST;
}

static mt_status_t mrpc_decode(void *state, const uint8_t *buf, size_t len, mt_msg_t *msg,
                               mt_codec_err_t *err)
{
    (void)state;
    if (len < MRPC_HEADER)
        return MT_AGAIN;
    if (mrpc_u16(buf) != MRPC_MAGIC)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED, "mrpc_c: bad magic");
    uint32_t flen = mrpc_u32(buf + 4);
    if (flen < MRPC_HEADER + 6)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED, "mrpc_c: frame length too small");
    if (flen > MRPC_MAX_FRAME)
        return mt_codec_fail(err, MT_CODEC_E_TOO_LARGE, "mrpc_c: frame too large");
    if (len < flen)
        return MT_AGAIN;
    mt_str_t service, method, k, v;
    size_t pos = MRPC_HEADER;
    if (!mrpc_str(buf, flen, &pos, &service) || !mrpc_str(buf, flen, &pos, &method) ||
        pos + 2 > flen)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED, "mrpc_c: header overruns the frame");
    uint16_t count = mrpc_u16(buf + pos);
    pos += 2;
    mt_msg__begin(msg, &mt_bench_codec_mrpc, buf, flen);
    if (mt_msg__add_attr(msg, MT_STR("service"), service) != MT_OK ||
        mt_msg__add_attr(msg, MT_STR("method"), method) != MT_OK)
        return mt_codec_fail(err, MT_CODEC_E_NOMEM, "mrpc_c: out of memory");
    for (uint16_t i = 0; i < count; i++) {
        if (!mrpc_str(buf, flen, &pos, &k) || !mrpc_str(buf, flen, &pos, &v))
            return mt_codec_fail(err, MT_CODEC_E_MALFORMED, "mrpc_c: header overruns the frame");
        if (mt_msg__add_attr(msg, k, v) != MT_OK)
            return mt_codec_fail(err, MT_CODEC_E_NOMEM, "mrpc_c: out of memory");
    }
    uint8_t flags = buf[2];
    msg->type = mrpc_type(flags);
    msg->is_reply = (flags & MRPC_F_RESPONSE) != 0;
    msg->expects_reply =
        msg->type == MT_MSG_REQUEST || (msg->type == MT_MSG_HEARTBEAT && !msg->is_reply);
    msg->request_id = mrpc_u32(buf + 8);
    msg->priv.u32[0] = (uint32_t)pos; /* where the headers end: the body starts */
    return MT_OK;
}

static mt_status_t mrpc_put_str(mt_wbuf_t *out, mt_str_t s)
{
    if (mt_wbuf_append_be16(out, (uint16_t)s.len) != MT_OK)
        return MT_ERROR;
    return mt_wbuf_append(out, s.ptr, s.len);
}

static mt_status_t mrpc_head(mt_wbuf_t *out, uint8_t flags, uint8_t version, uint32_t id)
{
    uint8_t h[MRPC_HEADER] = {0x4d,
                              0x52,
                              flags,
                              version,
                              0,
                              0,
                              0,
                              0,
                              (uint8_t)(id >> 24),
                              (uint8_t)(id >> 16),
                              (uint8_t)(id >> 8),
                              (uint8_t)id};
    return mt_wbuf_append(out, h, sizeof(h));
}

/* The headers of msg (attributes after service and method), each replaced, kept or dropped
 * by mut, then mut's new keys; the count is patched in afterwards. */
static mt_status_t mrpc_put_headers(const mt_msg_t *msg, const mt_mutation_t *mut, mt_wbuf_t *out)
{
    size_t count_at = out->len;
    uint16_t count = 0;
    if (mt_wbuf_append_be16(out, 0) != MT_OK)
        return MT_ERROR;
    size_t nmut = mut ? mut->count : 0;
    for (uint32_t i = 2; i < msg->nattrs; i++) {
        const mt_attr_t *a = &msg->attrs[i];
        mt_str_t val = a->val;
        bool drop = false;
        for (size_t j = 0; j < nmut; j++) {
            if (mt_str_eq(mut->items[j].key, a->key.ptr, a->key.len)) {
                drop = mut->items[j].val.ptr == NULL;
                val = mut->items[j].val;
                break;
            }
        }
        if (drop)
            continue;
        if (mrpc_put_str(out, a->key) != MT_OK || mrpc_put_str(out, val) != MT_OK)
            return MT_ERROR;
        count++;
    }
    for (size_t j = 0; j < nmut; j++) {
        const mt_attr_t *m = &mut->items[j];
        if (!m->val.ptr || mt_msg_get(msg, m->key.ptr, m->key.len))
            continue;
        if (mrpc_put_str(out, m->key) != MT_OK || mrpc_put_str(out, m->val) != MT_OK)
            return MT_ERROR;
        count++;
    }
    out->data[count_at] = (uint8_t)(count >> 8);
    out->data[count_at + 1] = (uint8_t)count;
    return MT_OK;
}

static mt_status_t mrpc_encode(const mt_msg_t *msg, const mt_mutation_t *mut, mt_wbuf_t *out,
                               mt_codec_err_t *err)
{
    size_t start = out->len;
    const uint8_t *f = msg->frame;
    size_t body = msg->priv.u32[0];
    if (mrpc_head(out, f[2], f[3], (uint32_t)msg->request_id) != MT_OK ||
        mrpc_put_str(out, msg->attrs[0].val) != MT_OK ||
        mrpc_put_str(out, msg->attrs[1].val) != MT_OK || mrpc_put_headers(msg, mut, out) != MT_OK ||
        mt_wbuf_append(out, f + body, msg->frame_len - body) != MT_OK) {
        out->len = start;
        return mt_codec_fail(err, MT_CODEC_E_NOMEM, "mrpc_c: out of memory");
    }
    mt_wbuf_put_be32_at(out, start + 4, (uint32_t)(out->len - start));
    return MT_OK;
}

static mt_status_t mrpc_reply(const mt_msg_t *req, uint8_t flags, mt_str_t service, mt_str_t method,
                              mt_str_t kind, const char *text, mt_wbuf_t *out)
{
    size_t start = out->len;
    mt_status_t rc = mrpc_head(out, flags, 1, (uint32_t)req->request_id);
    if (rc == MT_OK)
        rc = mrpc_put_str(out, service);
    if (rc == MT_OK)
        rc = mrpc_put_str(out, method);
    if (rc == MT_OK)
        rc = mt_wbuf_append_be16(out, kind.ptr ? 1 : 0);
    if (rc == MT_OK && kind.ptr)
        rc = mrpc_put_str(out, MT_STR("error-kind")) == MT_OK ? mrpc_put_str(out, kind) : MT_ERROR;
    if (rc == MT_OK && text)
        rc = mt_wbuf_append(out, text, strlen(text));
    if (rc != MT_OK) {
        out->len = start;
        return MT_ERROR;
    }
    mt_wbuf_put_be32_at(out, start + 4, (uint32_t)(out->len - start));
    return MT_OK;
}

static mt_status_t mrpc_on_error(const mt_msg_t *req, mt_error_kind_t kind, const char *text,
                                 mt_wbuf_t *out)
{
    if (req->frame[2] & MRPC_F_ONEWAY)
        return MT_OK;
    const char *k = mt_error_kind_name(kind);
    return mrpc_reply(req, MRPC_F_RESPONSE | MRPC_F_ERROR, req->attrs[0].val, req->attrs[1].val,
                      (mt_str_t){k, strlen(k)}, text, out);
}

static mt_status_t mrpc_heartbeat_reply(const mt_msg_t *req, mt_wbuf_t *out)
{
    return mrpc_reply(req, MRPC_F_RESPONSE | MRPC_F_HEARTBEAT, MT_STR(""), MT_STR(""),
                      (mt_str_t){NULL, 0}, NULL, out);
}

static mt_status_t mrpc_set_request_id(uint8_t *frame, size_t len, uint64_t id)
{
    if (len < MRPC_HEADER || id > UINT32_MAX)
        return MT_ERROR;
    frame[8] = (uint8_t)(id >> 24);
    frame[9] = (uint8_t)(id >> 16);
    frame[10] = (uint8_t)(id >> 8);
    frame[11] = (uint8_t)id;
    return MT_OK;
}

const mt_codec_t mt_bench_codec_mrpc = {
    .name = "mrpc_c",
    .flags = MT_CODEC_F_MULTIPLEXED | MT_CODEC_F_LOCAL_HEARTBEAT,
    .state_size = 1,
    .init = mrpc_init,
    .free = mrpc_free,
    .decode = mrpc_decode,
    .encode = mrpc_encode,
    .on_error = mrpc_on_error,
    .heartbeat_reply = mrpc_heartbeat_reply,
    .set_request_id = mrpc_set_request_id,
};
