/*
 * thrift.c - the Thrift codec (mt_codec_thrift): per-connection transport and protocol
 * detection, framed / THeader / unframed decoding, THeader header mutation, native
 * TApplicationException replies and seq id rewriting.
 *
 * Choices worth knowing:
 *   - Responses are correlated in order (no MT_CODEC_F_MULTIPLEXED): that is what every
 *     Thrift server does on one connection. set_request_id still works (binary: always;
 *     compact: when the new id fits the width of the existing varint, written non-minimally,
 *     which every Thrift reader accepts) so a runtime may multiplex later.
 *   - Framed and THeader frames are not walked past the message header: their length is
 *     known, so only unframed connections pay for (and are limited by) the struct skipper.
 *   - Mutations go into THeader info headers; other transports have nowhere to carry them
 *     and encode answers MT_CODEC_E_NO_MUTABLE_HEADERS without touching anything.
 */
#include "protocols/thrift/thrift.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct thrift_decoder {
    mt_codec_limits_t limits;
    thrift_transport_t transport; /* detected from the first frame, then fixed */
    thrift_protocol_t protocol;   /* for unframed and framed; THeader says it per frame */
    bool in_body;                 /* unframed: header parsed, skipping the struct */
    thrift_msg_header_t hdr;      /* unframed: the header of the message being skipped */
    thrift_skipper_t skip;
} thrift_decoder_t;

/* Parse info kept in mt_msg_t.priv (offsets relative to the frame). */
typedef struct thrift_priv {
    uint8_t transport;
    uint8_t protocol; /* of the message itself (THeader payload included) */
    uint16_t header_flags;
    uint32_t header_seq;
    uint32_t msg_off; /* where the protocol message starts */
    uint32_t name_off;
    uint32_t name_len;
    uint32_t info_off;   /* THeader: first info header */
    uint32_t header_end; /* THeader: end of the header block = payload start */
    int32_t seqid;
} thrift_priv_t;

_Static_assert(sizeof(thrift_priv_t) <= sizeof(((mt_msg_t *)0)->priv), "thrift priv too big");

static const char *const thrift_aliases[] = {"aeraki.meta_protocol.codec.thrift", NULL};

static uint32_t thrift_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t thrift_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static thrift_priv_t *thrift_priv(mt_msg_t *m)
{
    return (thrift_priv_t *)(void *)&m->priv;
}

static const thrift_priv_t *thrift_cpriv(const mt_msg_t *m)
{
    return (const thrift_priv_t *)(const void *)&m->priv;
}

/* Unsigned varint bounded by `end`; false when incomplete or longer than 5 bytes. */
static bool thrift_hvarint(const uint8_t *buf, size_t *pos, size_t end, uint32_t *v)
{
    uint64_t r = 0;
    for (int i = 0; i < 5 && *pos < end; i++) {
        uint8_t b = buf[(*pos)++];
        r |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            if (r > UINT32_MAX)
                return false;
            *v = (uint32_t)r;
            return true;
        }
    }
    return false;
}

/* ---- detection --------------------------------------------------------------------------- */

/* Protocol of a message starting with bytes b[0], b[1] (framed payloads). */
static thrift_protocol_t thrift_protocol_of(const uint8_t *b)
{
    if (b[0] == 0x80 && b[1] == 0x01)
        return THRIFT_PROTO_BINARY;
    if (b[0] == 0x82)
        return THRIFT_PROTO_COMPACT;
    if (b[0] == 0x00) /* old binary: high byte of a method name length */
        return THRIFT_PROTO_BINARY_OLD;
    return THRIFT_PROTO_UNKNOWN;
}

/*
 * From the first bytes of a connection: 0x8001 / 0x82 is an unframed strict binary /
 * compact message. Otherwise the first word is a frame length (or an old binary name
 * length) and bytes 4-5 decide: 0x0fff THeader, a protocol start framed, a printable
 * method-name byte an unframed old binary message.
 */
static mt_status_t thrift_detect(const uint8_t *buf, size_t len, thrift_transport_t *t,
                                 thrift_protocol_t *p, mt_codec_err_t *err)
{
    if (len < 1)
        return MT_AGAIN;
    if (buf[0] == 0x80 || buf[0] == 0x82) {
        *t = THRIFT_TRANSPORT_UNFRAMED;
        *p = buf[0] == 0x80 ? THRIFT_PROTO_BINARY : THRIFT_PROTO_COMPACT;
        return MT_OK;
    }
    if (buf[0] & 0x80)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED,
                             "thrift: unrecognised first byte 0x%02x (not binary, compact, "
                             "framed or THeader)",
                             buf[0]);
    if (len < 6)
        return MT_AGAIN;
    if (thrift_be16(buf + 4) == THRIFT_HEADER_MAGIC) {
        *t = THRIFT_TRANSPORT_HEADER;
        *p = THRIFT_PROTO_UNKNOWN;
        return MT_OK;
    }
    *p = thrift_protocol_of(buf + 4);
    *t = *p == THRIFT_PROTO_UNKNOWN ? THRIFT_TRANSPORT_UNFRAMED : THRIFT_TRANSPORT_FRAMED;
    if (*p == THRIFT_PROTO_UNKNOWN)
        *p = THRIFT_PROTO_BINARY_OLD;
    return MT_OK;
}

/* ---- state ------------------------------------------------------------------------------- */

static mt_status_t thrift_init(void *state, const mt_codec_limits_t *limits)
{
    thrift_decoder_t *d = state;
    memset(d, 0, sizeof(*d));
    if (limits != NULL)
        d->limits = *limits;
    if (d->limits.max_frame_size == 0)
        d->limits.max_frame_size = THRIFT_DEFAULT_MAX_FRAME;
    if (d->limits.max_depth == 0)
        d->limits.max_depth = THRIFT_DEFAULT_MAX_DEPTH;
    return thrift_skipper_init(&d->skip, d->limits.max_depth);
}

static void thrift_free(void *state)
{
    thrift_decoder_t *d = state;
    thrift_skipper_free(&d->skip);
}

/* ---- filling the message ----------------------------------------------------------------- */

static const mt_str_t thrift_type_names[] = {MT_STR(""), MT_STR("call"), MT_STR("reply"),
                                             MT_STR("exception"), MT_STR("oneway")};

static mt_status_t thrift_nomem(mt_codec_err_t *err)
{
    return mt_codec_fail(err, MT_CODEC_E_NOMEM, "thrift: no memory for attributes");
}

static mt_status_t thrift_fill_msg(mt_msg_t *m, const uint8_t *frame, size_t frame_len,
                                   thrift_transport_t t, thrift_protocol_t p, size_t msg_off,
                                   const thrift_msg_header_t *h, mt_codec_err_t *err)
{
    mt_msg__begin(m, &mt_codec_thrift, frame, frame_len);
    thrift_priv_t *pr = thrift_priv(m);
    *pr = (thrift_priv_t){0};
    pr->transport = (uint8_t)t;
    pr->protocol = (uint8_t)p;
    pr->msg_off = (uint32_t)msg_off;
    pr->name_off = (uint32_t)h->name_off;
    pr->name_len = (uint32_t)h->name_len;
    pr->seqid = h->seqid;
    static const mt_msg_type_t types[] = {MT_MSG_REQUEST, MT_MSG_REQUEST, MT_MSG_RESPONSE,
                                          MT_MSG_ERROR, MT_MSG_ONEWAY};
    m->type = types[h->type];
    m->is_reply = h->type == THRIFT_REPLY || h->type == THRIFT_EXCEPTION;
    m->expects_reply = h->type == THRIFT_CALL;
    m->request_id = (uint32_t)h->seqid;

    /* seq_id is text only for a reader that wants it: formatting it is most of the cost */
    mt_str_t seq = {NULL, 0};
    if (mt_msg__wants(m, "seq_id", 6) && (seq = mt_msg__dec(m, h->seqid)).ptr == NULL)
        return thrift_nomem(err);
    if (mt_msg__add_attr(m, MT_STR("method"),
                         (mt_str_t){(const char *)frame + h->name_off, h->name_len}) != MT_OK ||
        mt_msg__add_attr(m, MT_STR("message_type"), thrift_type_names[h->type]) != MT_OK ||
        (seq.ptr != NULL && mt_msg__add_attr(m, MT_STR("seq_id"), seq) != MT_OK))
        return thrift_nomem(err);
    /* an EXCEPTION's status: its TApplicationException type by Apache Thrift's name, as
     * Dubbo's status is its status byte (Istio's response_code); "EXCEPTION" when the struct
     * has no type this reader knows */
    if (h->type == THRIFT_EXCEPTION && mt_msg__wants(m, "status", 6)) {
        const char *name = thrift_appex_type_name(
            thrift_read_app_exception_type(p, frame, h->body_off, frame_len));
        mt_str_t st = name ? (mt_str_t){name, strlen(name)} : MT_STR("EXCEPTION");
        if (mt_msg__add_attr(m, MT_STR("status"), st) != MT_OK)
            return thrift_nomem(err);
    }
    return MT_OK;
}

/* ---- framed ------------------------------------------------------------------------------ */

/* Reads a frame length; MT_OK once the whole frame (4 + length bytes) is in buf. */
static mt_status_t thrift_whole_frame(const thrift_decoder_t *d, const uint8_t *buf, size_t len,
                                      size_t *total, mt_codec_err_t *err)
{
    if (len < 4)
        return MT_AGAIN;
    uint32_t n = thrift_be32(buf);
    if (n & 0x80000000u)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED, "thrift: negative frame length");
    if ((uint64_t)n + 4 > d->limits.max_frame_size)
        return mt_codec_fail(err, MT_CODEC_E_TOO_LARGE,
                             "thrift: frame of %llu bytes exceeds the limit of %u",
                             (unsigned long long)n + 4, d->limits.max_frame_size);
    *total = 4 + (size_t)n;
    return len < *total ? MT_AGAIN : MT_OK;
}

static mt_status_t thrift_header_in_frame(thrift_protocol_t p, const uint8_t *buf, size_t start,
                                          size_t end, thrift_msg_header_t *h, mt_codec_err_t *err)
{
    /* no name limit of its own: the frame bounds it, and running past it is truncation */
    mt_status_t rc = thrift_parse_msg_header(p, buf, start, end, SIZE_MAX, h, err);
    if (rc == MT_AGAIN)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED,
                             "thrift: message header truncated by its frame (%zu bytes)",
                             end - start);
    return rc;
}

static mt_status_t thrift_decode_framed(thrift_decoder_t *d, const uint8_t *buf, size_t len,
                                        mt_msg_t *msg, mt_codec_err_t *err)
{
    size_t total;
    mt_status_t rc = thrift_whole_frame(d, buf, len, &total, err);
    if (rc != MT_OK)
        return rc;
    thrift_msg_header_t h;
    if (thrift_header_in_frame(d->protocol, buf, 4, total, &h, err) != MT_OK)
        return MT_ERROR;
    return thrift_fill_msg(msg, buf, total, THRIFT_TRANSPORT_FRAMED, d->protocol, 4, &h, err);
}

/* ---- THeader ----------------------------------------------------------------------------- */

/* Iterates the key/value pairs of KEYVALUE (1) and PKEYVALUE (2) info headers. */
typedef struct thrift_info_iter {
    const uint8_t *buf;
    size_t pos;
    size_t end;
    uint32_t left; /* pairs left in the current block */
    uint8_t block; /* THRIFT_HEADER_INFO_* of the current block */
} thrift_info_iter_t;

typedef struct thrift_info_pair {
    uint8_t block;
    size_t off, end; /* raw bytes of the pair */
    mt_str_t key, val;
} thrift_info_pair_t;

static mt_status_t thrift_info_bad(mt_codec_err_t *err)
{
    return mt_codec_fail(err, MT_CODEC_E_MALFORMED, "thrift: THeader info headers malformed");
}

static bool thrift_info_str(thrift_info_iter_t *it, mt_str_t *s)
{
    uint32_t n;
    if (!thrift_hvarint(it->buf, &it->pos, it->end, &n) || n > it->end - it->pos)
        return false;
    *s = (mt_str_t){(const char *)it->buf + it->pos, n};
    it->pos += n;
    return true;
}

/* MT_OK with *has set when a pair was read; padding or an unknown info id ends the walk
 * (as Apache Thrift does), since unknown infos cannot be skipped. */
static mt_status_t thrift_info_next(thrift_info_iter_t *it, thrift_info_pair_t *pair, bool *has,
                                    mt_codec_err_t *err)
{
    *has = false;
    while (it->left == 0) {
        uint32_t id, count;
        if (it->pos >= it->end)
            return MT_OK;
        size_t save = it->pos;
        if (!thrift_hvarint(it->buf, &it->pos, it->end, &id))
            return thrift_info_bad(err);
        if (id != THRIFT_HEADER_INFO_KEYVALUE && id != THRIFT_HEADER_INFO_PKEYVALUE) {
            it->pos = save;
            it->end = save; /* stop here for good */
            return MT_OK;
        }
        if (!thrift_hvarint(it->buf, &it->pos, it->end, &count))
            return thrift_info_bad(err);
        it->left = count;
        it->block = (uint8_t)id;
    }
    pair->off = it->pos;
    pair->block = it->block;
    if (!thrift_info_str(it, &pair->key) || !thrift_info_str(it, &pair->val))
        return thrift_info_bad(err);
    pair->end = it->pos;
    it->left--;
    *has = true;
    return MT_OK;
}

typedef struct thrift_theader {
    uint16_t flags;
    uint32_t seq;
    size_t info_off;
    size_t header_end;
    thrift_protocol_t protocol;
} thrift_theader_t;

/* Parses the fixed part and the header block of a complete THeader frame. */
static mt_status_t thrift_parse_theader(const uint8_t *buf, size_t total, thrift_theader_t *th,
                                        mt_codec_err_t *err)
{
    if (total < 14 || thrift_be16(buf + 4) != THRIFT_HEADER_MAGIC)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED, "thrift: bad THeader frame");
    th->flags = thrift_be16(buf + 6);
    th->seq = thrift_be32(buf + 8);
    th->header_end = 14 + (size_t)thrift_be16(buf + 12) * 4;
    if (th->header_end > total)
        return mt_codec_fail(err, MT_CODEC_E_MALFORMED,
                             "thrift: THeader header size larger than its frame");
    size_t pos = 14;
    uint32_t proto, ntransforms;
    if (!thrift_hvarint(buf, &pos, th->header_end, &proto) ||
        !thrift_hvarint(buf, &pos, th->header_end, &ntransforms))
        return thrift_info_bad(err);
    if (ntransforms > 0)
        return mt_codec_fail(err, MT_CODEC_E_UNSUPPORTED,
                             "thrift: THeader transforms (compression) are not supported");
    if (proto == THRIFT_HEADER_PROTO_COMPACT)
        th->protocol = THRIFT_PROTO_COMPACT;
    else if (proto == THRIFT_HEADER_PROTO_BINARY)
        th->protocol = th->header_end < total && buf[th->header_end] == 0x80
                           ? THRIFT_PROTO_BINARY
                           : THRIFT_PROTO_BINARY_OLD;
    else
        return mt_codec_fail(err, MT_CODEC_E_UNSUPPORTED,
                             "thrift: THeader protocol id %u not supported", proto);
    th->info_off = pos;
    return MT_OK;
}

static mt_status_t thrift_decode_header(thrift_decoder_t *d, const uint8_t *buf, size_t len,
                                        mt_msg_t *msg, mt_codec_err_t *err)
{
    size_t total;
    mt_status_t rc = thrift_whole_frame(d, buf, len, &total, err);
    if (rc != MT_OK)
        return rc;
    thrift_theader_t th;
    thrift_msg_header_t h;
    if (thrift_parse_theader(buf, total, &th, err) != MT_OK ||
        thrift_header_in_frame(th.protocol, buf, th.header_end, total, &h, err) != MT_OK ||
        thrift_fill_msg(msg, buf, total, THRIFT_TRANSPORT_HEADER, th.protocol, th.header_end, &h,
                        err) != MT_OK)
        return MT_ERROR;
    thrift_priv_t *pr = thrift_priv(msg);
    pr->header_flags = th.flags;
    pr->header_seq = th.seq;
    pr->info_off = (uint32_t)th.info_off;
    pr->header_end = (uint32_t)th.header_end;
    thrift_info_iter_t it = {buf, th.info_off, th.header_end, 0, 0};
    for (;;) {
        thrift_info_pair_t pair;
        bool has;
        if (thrift_info_next(&it, &pair, &has, err) != MT_OK)
            return MT_ERROR;
        if (!has)
            return MT_OK;
        if (mt_msg__add_attr(msg, pair.key, pair.val) != MT_OK)
            return thrift_nomem(err);
    }
}

/* ---- unframed ---------------------------------------------------------------------------- */

static mt_status_t thrift_decode_unframed(thrift_decoder_t *d, const uint8_t *buf, size_t len,
                                          mt_msg_t *msg, mt_codec_err_t *err)
{
    size_t max = d->limits.max_frame_size;
    if (!d->in_body) {
        mt_status_t rc =
            thrift_parse_msg_header(d->protocol, buf, 0, MT_MIN(len, max), max, &d->hdr, err);
        if (rc == MT_AGAIN && len >= max)
            return mt_codec_fail(err, MT_CODEC_E_TOO_LARGE,
                                 "thrift: message header exceeds the limit of %zu", max);
        if (rc != MT_OK)
            return rc;
        thrift_skipper_start(&d->skip, d->hdr.body_off, max);
        d->in_body = true;
    }
    mt_status_t rc = thrift_skip(&d->skip, d->protocol, buf, len, err);
    if (rc != MT_OK)
        return rc;
    d->in_body = false;
    return thrift_fill_msg(msg, buf, d->skip.pos, THRIFT_TRANSPORT_UNFRAMED, d->protocol, 0,
                           &d->hdr, err);
}

static mt_status_t thrift_decode(void *state, const uint8_t *buf, size_t len, mt_msg_t *msg,
                                 mt_codec_err_t *err)
{
    thrift_decoder_t *d = state;
    if (d->transport == THRIFT_TRANSPORT_UNKNOWN) {
        mt_status_t rc = thrift_detect(buf, len, &d->transport, &d->protocol, err);
        if (rc != MT_OK) {
            d->transport = THRIFT_TRANSPORT_UNKNOWN;
            return rc;
        }
    }
    switch (d->transport) {
    case THRIFT_TRANSPORT_FRAMED:
        return thrift_decode_framed(d, buf, len, msg, err);
    case THRIFT_TRANSPORT_HEADER:
        return thrift_decode_header(d, buf, len, msg, err);
    default:
        return thrift_decode_unframed(d, buf, len, msg, err);
    }
}

/* ---- encode (THeader mutation) ----------------------------------------------------------- */

static long thrift_mut_find(const mt_mutation_t *mut, mt_str_t key)
{
    for (size_t i = 0; i < mut->count; i++) {
        if (mt_str_eq(mut->items[i].key, key.ptr, key.len))
            return (long)i;
    }
    return -1;
}

/* Marks the mutation items whose key already exists in some info block. */
static mt_status_t thrift_mark_existing(const mt_msg_t *msg, const mt_mutation_t *mut, bool *exists,
                                        mt_codec_err_t *err)
{
    const thrift_priv_t *pr = thrift_cpriv(msg);
    thrift_info_iter_t it = {msg->frame, pr->info_off, pr->header_end, 0, 0};
    for (;;) {
        thrift_info_pair_t pair;
        bool has;
        if (thrift_info_next(&it, &pair, &has, err) != MT_OK)
            return MT_ERROR;
        if (!has)
            return MT_OK;
        long i = thrift_mut_find(mut, pair.key);
        if (i >= 0)
            exists[i] = true;
    }
}

static mt_status_t thrift_write_pair(mt_wbuf_t *out, mt_str_t key, mt_str_t val)
{
    if (mt_wbuf_append_uvarint(out, key.len) != MT_OK ||
        mt_wbuf_append(out, key.ptr, key.len) != MT_OK ||
        mt_wbuf_append_uvarint(out, val.len) != MT_OK)
        return MT_ERROR;
    return mt_wbuf_append(out, val.ptr, val.len);
}

/*
 * Writes one info block: the block's existing pairs with the mutation applied (in place,
 * untouched pairs copied byte for byte) and, for KEYVALUE, the keys that exist nowhere yet.
 * Two passes because the pair count precedes the pairs; an empty block is left out.
 */
static mt_status_t thrift_write_info_block(const mt_msg_t *msg, const mt_mutation_t *mut,
                                           uint8_t block, const bool *exists, mt_wbuf_t *out,
                                           mt_codec_err_t *err)
{
    const thrift_priv_t *pr = thrift_cpriv(msg);
    for (int pass = 0; pass < 2; pass++) {
        uint64_t count = 0;
        thrift_info_iter_t it = {msg->frame, pr->info_off, pr->header_end, 0, 0};
        for (;;) {
            thrift_info_pair_t pair;
            bool has;
            if (thrift_info_next(&it, &pair, &has, err) != MT_OK)
                return MT_ERROR;
            if (!has)
                break;
            if (pair.block != block)
                continue;
            long i = thrift_mut_find(mut, pair.key);
            if (i >= 0 && mut->items[i].val.ptr == NULL)
                continue; /* removed */
            count++;
            if (pass == 0)
                continue;
            mt_status_t rc = i < 0 ? mt_wbuf_append(out, msg->frame + pair.off, pair.end - pair.off)
                                   : thrift_write_pair(out, pair.key, mut->items[i].val);
            if (rc != MT_OK)
                return MT_ERROR;
        }
        for (size_t i = 0; block == THRIFT_HEADER_INFO_KEYVALUE && i < mut->count; i++) {
            const mt_attr_t *m = &mut->items[i];
            if (exists[i] || m->val.ptr == NULL || thrift_mut_find(mut, m->key) != (long)i)
                continue;
            count++;
            if (pass == 1 && thrift_write_pair(out, m->key, m->val) != MT_OK)
                return MT_ERROR;
        }
        if (pass == 0 && count == 0)
            return MT_OK;
        if (pass == 0 && (mt_wbuf_append_uvarint(out, block) != MT_OK ||
                          mt_wbuf_append_uvarint(out, count) != MT_OK))
            return MT_ERROR;
    }
    return MT_OK;
}

static mt_status_t thrift_encode_header(const mt_msg_t *msg, const mt_mutation_t *mut,
                                        mt_wbuf_t *out, mt_codec_err_t *err)
{
    const thrift_priv_t *pr = thrift_cpriv(msg);
    const uint8_t *f = msg->frame;
    bool *exists = calloc(mut->count, sizeof(*exists));
    if (exists == NULL)
        return MT_ERROR;
    size_t mark = out->len;
    mt_status_t rc = thrift_mark_existing(msg, mut, exists, err);
    if (rc == MT_OK)
        rc = mt_wbuf_append(out, f, 14); /* length (patched), magic, flags, seq, size */
    size_t hstart = out->len;
    if (rc == MT_OK)
        rc = mt_wbuf_append(out, f + 14, pr->info_off - 14); /* protocol id, no transforms */
    if (rc == MT_OK)
        rc = thrift_write_info_block(msg, mut, THRIFT_HEADER_INFO_KEYVALUE, exists, out, err);
    if (rc == MT_OK)
        rc = thrift_write_info_block(msg, mut, THRIFT_HEADER_INFO_PKEYVALUE, exists, out, err);
    free(exists);
    static const uint8_t zeros[3] = {0};
    size_t hlen = out->len - hstart;
    if (rc == MT_OK && (hlen % 4) != 0)
        rc = mt_wbuf_append(out, zeros, 4 - hlen % 4);
    hlen = out->len - hstart;
    if (rc == MT_OK && hlen / 4 > 0xffff)
        rc = mt_codec_fail(err, MT_CODEC_E_TOO_LARGE, "thrift: THeader headers too large");
    if (rc == MT_OK)
        rc = mt_wbuf_append(out, f + pr->header_end, msg->frame_len - pr->header_end);
    if (rc != MT_OK) {
        out->len = mark;
        return MT_ERROR;
    }
    out->data[mark + 12] = (uint8_t)(hlen / 4 >> 8);
    out->data[mark + 13] = (uint8_t)(hlen / 4);
    mt_wbuf_put_be32_at(out, mark, (uint32_t)(out->len - mark - 4));
    return MT_OK;
}

static mt_status_t thrift_encode(const mt_msg_t *msg, const mt_mutation_t *mut, mt_wbuf_t *out,
                                 mt_codec_err_t *err)
{
    const thrift_priv_t *pr = thrift_cpriv(msg);
    if (err != NULL)
        err->code = MT_CODEC_E_NONE;
    if (mut == NULL || mut->count == 0) {
        if (mt_wbuf_append(out, msg->frame, msg->frame_len) != MT_OK)
            return mt_codec_fail(err, MT_CODEC_E_NOMEM, "thrift: no memory");
        return MT_OK;
    }
    if (pr->transport != THRIFT_TRANSPORT_HEADER)
        return mt_codec_fail(err, MT_CODEC_E_NO_MUTABLE_HEADERS,
                             "thrift: no mutable headers on a %s %s connection (only THeader "
                             "carries headers)",
                             thrift_transport_name(pr->transport),
                             thrift_protocol_name(pr->protocol));
    if (thrift_encode_header(msg, mut, out, err) != MT_OK) {
        if (err != NULL && err->code == MT_CODEC_E_NONE)
            mt_codec_set_error(err, MT_CODEC_E_NOMEM, "thrift: no memory");
        return MT_ERROR;
    }
    return MT_OK;
}

/* ---- local replies ----------------------------------------------------------------------- */

static mt_status_t thrift_on_error(const mt_msg_t *req, mt_error_kind_t kind, const char *text,
                                   mt_wbuf_t *out)
{
    const thrift_priv_t *pr = thrift_cpriv(req);
    if (!req->expects_reply)
        return MT_OK;
    if (text == NULL)
        text = mt_error_kind_name(kind);
    thrift_protocol_t proto = pr->protocol;
    mt_str_t name = {(const char *)req->frame + pr->name_off, pr->name_len};
    size_t mark = out->len;
    mt_status_t rc = MT_OK;
    if (pr->transport == THRIFT_TRANSPORT_FRAMED) {
        rc = mt_wbuf_append_be32(out, 0);
    } else if (pr->transport == THRIFT_TRANSPORT_HEADER) {
        /* fixed part, then a 4-byte header block: protocol id, no transforms, padding */
        uint8_t h[14] = {
            0, 0, 0, 0, 0x0f, 0xff, (uint8_t)(pr->header_flags >> 8), (uint8_t)pr->header_flags};
        h[8] = (uint8_t)(pr->header_seq >> 24);
        h[9] = (uint8_t)(pr->header_seq >> 16);
        h[10] = (uint8_t)(pr->header_seq >> 8);
        h[11] = (uint8_t)pr->header_seq;
        h[13] = 1;
        uint8_t block[4] = {proto == THRIFT_PROTO_COMPACT ? THRIFT_HEADER_PROTO_COMPACT
                                                          : THRIFT_HEADER_PROTO_BINARY,
                            0, 0, 0};
        rc = mt_wbuf_append(out, h, sizeof(h));
        if (rc == MT_OK)
            rc = mt_wbuf_append(out, block, sizeof(block));
    }
    if (rc == MT_OK)
        rc = thrift_write_msg_header(out, proto, name, THRIFT_EXCEPTION, pr->seqid);
    if (rc == MT_OK)
        rc = thrift_write_app_exception(out, proto, (mt_str_t){text, strlen(text)},
                                        thrift_appex_type_for_error(kind));
    if (rc != MT_OK) {
        out->len = mark;
        return MT_ERROR;
    }
    if (pr->transport != THRIFT_TRANSPORT_UNFRAMED)
        mt_wbuf_put_be32_at(out, mark, (uint32_t)(out->len - mark - 4));
    return MT_OK;
}

/* ---- request id rewriting ---------------------------------------------------------------- */

/* Writes `id` as a varint of exactly `width` bytes (non-minimal when it is small). */
static void thrift_put_varint_width(uint8_t *p, uint8_t width, uint32_t id)
{
    for (uint8_t i = 0; i < width; i++) {
        uint8_t b = (uint8_t)((id >> (7 * i)) & 0x7f);
        p[i] = i + 1 < width ? (uint8_t)(b | 0x80) : b;
    }
}

static mt_status_t thrift_set_request_id(uint8_t *frame, size_t len, uint64_t id)
{
    thrift_transport_t t;
    thrift_protocol_t p;
    if (id > UINT32_MAX || thrift_detect(frame, len, &t, &p, NULL) != MT_OK)
        return MT_ERROR;
    size_t msg_off = 0;
    thrift_theader_t th;
    if (t == THRIFT_TRANSPORT_FRAMED) {
        msg_off = 4;
    } else if (t == THRIFT_TRANSPORT_HEADER) {
        if (thrift_parse_theader(frame, len, &th, NULL) != MT_OK)
            return MT_ERROR;
        msg_off = th.header_end;
        p = th.protocol;
    }
    thrift_msg_header_t h;
    if (thrift_parse_msg_header(p, frame, msg_off, len, len, &h, NULL) != MT_OK)
        return MT_ERROR;
    uint8_t *s = frame + h.seqid_off;
    if (p != THRIFT_PROTO_COMPACT) {
        s[0] = (uint8_t)(id >> 24);
        s[1] = (uint8_t)(id >> 16);
        s[2] = (uint8_t)(id >> 8);
        s[3] = (uint8_t)id;
    } else {
        if (h.seqid_width < 5 && id >> (7 * h.seqid_width) != 0)
            return MT_ERROR; /* does not fit the varint already on the wire */
        thrift_put_varint_width(s, h.seqid_width, (uint32_t)id);
    }
    if (t == THRIFT_TRANSPORT_HEADER) {
        for (int i = 0; i < 4; i++)
            frame[8 + i] = (uint8_t)(id >> (24 - 8 * i));
    }
    return MT_OK;
}

const mt_codec_t mt_codec_thrift = {
    .name = "thrift",
    .aliases = thrift_aliases,
    .flags = 0, /* in order; no heartbeats */
    .state_size = sizeof(thrift_decoder_t),
    .init = thrift_init,
    .free = thrift_free,
    .decode = thrift_decode,
    .encode = thrift_encode,
    .on_error = thrift_on_error,
    .heartbeat_reply = NULL,
    .set_request_id = thrift_set_request_id,
};
