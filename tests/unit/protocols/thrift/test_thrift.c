/*
 * test_thrift.c - the Thrift codec (protocols/thrift/thrift.c, with the protocol level of
 * thrift_proto.c it drives, which has no API of its own) against frames captured from Apache
 * Thrift's Python library (fixtures/, made by tools/gen_thrift_fixtures.py) and frames built here
 * by hand for the cases a well-behaved library never produces.
 */
#include "protocols/codec.h"
#include "protocols/thrift/thrift.h"
#include "tests/unit/protocols/codec_props.h"
#include "tests/unit/protocols/codec_test_util.h"

#include <criterion/criterion.h>
#include <libgen.h>
#include <string.h>

static const char *const combos[] = {
    "binary_unframed",  "binary_framed",    "binary_header",  "binaryold_unframed",
    "binaryold_framed", "compact_unframed", "compact_framed", "compact_header",
};

static uint8_t *fixture(const char *combo, const char *kind, size_t *len)
{
    char src[512], path[768];
    snprintf(src, sizeof(src), "%s", __FILE__);
    snprintf(path, sizeof(path), "%s/fixtures/%s_%s.bin", dirname(src), combo, kind);
    return ct_read_file(path, len);
}

static bool is_header(const char *combo)
{
    return strstr(combo, "header") != NULL;
}

/* ---- real frames ------------------------------------------------------------------------- */

typedef struct expect {
    const char *kind;
    mt_msg_type_t type;
    const char *method;
    const char *mtype;
    uint32_t seq;
    bool headers;       /* the client set info headers on this frame */
    const char *status; /* an exception's decoded type (the status attribute) */
} expect_t;

static const expect_t expectations[] = {
    {"call", MT_MSG_REQUEST, "echo", "call", 42, true, NULL},
    {"reply", MT_MSG_RESPONSE, "echo", "reply", 42, false, NULL},
    {"declared", MT_MSG_RESPONSE, "echo", "reply", 43, false, NULL},
    {"internal", MT_MSG_ERROR, "ping", "exception", 44, false, "INTERNAL_ERROR"},
    {"oneway", MT_MSG_ONEWAY, "fire", "oneway", 7, true, NULL},
    {"appex", MT_MSG_ERROR, "echo", "exception", 42, false, "UNKNOWN_METHOD"},
};

Test(thrift_fixtures, every_protocol_and_transport_decodes_at_every_split_point)
{
    for (size_t c = 0; c < MT_ARRAY_LEN(combos); c++) {
        for (size_t e = 0; e < MT_ARRAY_LEN(expectations); e++) {
            const expect_t *x = &expectations[e];
            size_t len;
            uint8_t *data = fixture(combos[c], x->kind, &len);
            mt_msg_t m;
            mt_msg_init(&m);
            uint8_t *keep = NULL;
            ct_decode_everywhere(&mt_codec_thrift, data, len, &m, &keep);
            cr_assert_eq(m.type, x->type, "%s_%s: type %s", combos[c], x->kind,
                         mt_msg_type_name(m.type));
            cr_assert_eq(m.request_id, x->seq, "%s_%s", combos[c], x->kind);
            cr_assert_eq(m.expects_reply, x->type == MT_MSG_REQUEST);
            cr_assert_eq(m.is_reply, x->type == MT_MSG_RESPONSE || x->type == MT_MSG_ERROR);
            ct_assert_attr(&m, "method", x->method);
            ct_assert_attr(&m, "message_type", x->mtype);
            char seq[16];
            snprintf(seq, sizeof(seq), "%u", x->seq);
            ct_assert_attr(&m, "seq_id", seq);
            if (x->status)
                ct_assert_attr(&m, "status", x->status);
            uint32_t base = x->status ? 4 : 3;
            if (is_header(combos[c]) && x->headers) {
                ct_assert_attr(&m, "x-request-id", "abc-123");
                ct_assert_attr(&m, "env", "canary");
                cr_assert_eq(m.nattrs, base + 2);
            } else {
                cr_assert_eq(m.nattrs, base, "%s_%s", combos[c], x->kind);
            }
            free(keep);
            free(data);
            mt_msg_free(&m);
        }
    }
}

Test(thrift_fixtures, pipelined_messages_on_one_connection)
{
    for (size_t c = 0; c < MT_ARRAY_LEN(combos); c++) {
        mt_wbuf_t all;
        mt_wbuf_init(&all);
        const char *kinds[] = {"call", "oneway", "call", "oneway"};
        size_t ends[4];
        for (int i = 0; i < 4; i++) {
            size_t len;
            uint8_t *data = fixture(combos[c], kinds[i], &len);
            mt_wbuf_append(&all, data, len);
            ends[i] = all.len;
            free(data);
        }
        ct_decoder_t d = ct_decoder_new(&mt_codec_thrift, NULL);
        mt_msg_t m;
        mt_msg_init(&m);
        mt_codec_err_t err;
        size_t off = 0;
        for (int i = 0; i < 4; i++) {
            /* offer everything that is left: exactly one frame is consumed */
            uint8_t *copy = malloc(all.len - off);
            memcpy(copy, all.data + off, all.len - off);
            cr_assert_eq(mt_codec_thrift.decode(d.state, copy, all.len - off, &m, &err), MT_OK,
                         "%s frame %d: %s", combos[c], i, err.text);
            off += m.frame_len;
            cr_assert_eq(off, ends[i], "%s frame %d", combos[c], i);
            cr_assert_eq(m.type, i % 2 ? MT_MSG_ONEWAY : MT_MSG_REQUEST);
            free(copy);
        }
        mt_msg_free(&m);
        ct_decoder_free(&d);
        mt_wbuf_free(&all);
    }
}

/* ---- on_error ---------------------------------------------------------------------------- */

Test(thrift_on_error, matches_the_library_byte_for_byte_in_every_dialect)
{
    for (size_t c = 0; c < MT_ARRAY_LEN(combos); c++) {
        size_t call_len, want_len;
        uint8_t *call = fixture(combos[c], "call", &call_len);
        uint8_t *want = fixture(combos[c], "appex", &want_len);
        mt_msg_t req;
        mt_msg_init(&req);
        uint8_t *keep = NULL;
        ct_decode_one(&mt_codec_thrift, call, call_len, &req, &keep);
        mt_wbuf_t out;
        mt_wbuf_init(&out);
        cr_assert_eq(
            mt_codec_thrift.on_error(&req, MT_ERR_ROUTE_NOT_FOUND, "meltemi: no route", &out),
            MT_OK);
        cr_assert_eq(out.len, want_len, "%s: %zu bytes, library wrote %zu", combos[c], out.len,
                     want_len);
        cr_assert_arr_eq(out.data, want, want_len, "%s differs from the library", combos[c]);
        free(keep);
        mt_msg_free(&req);
        mt_wbuf_free(&out);
        free(call);
        free(want);
    }
}

Test(thrift_on_error, every_kind_decodes_as_an_exception_reply)
{
    const mt_error_kind_t kinds[] = {
        MT_ERR_ROUTE_NOT_FOUND,  MT_ERR_CLUSTER_NOT_FOUND, MT_ERR_NO_HEALTHY_UPSTREAM,
        MT_ERR_UPSTREAM_TIMEOUT, MT_ERR_BAD_RESPONSE,      MT_ERR_OVER_LIMIT,
        MT_ERR_UNSPECIFIED,
    };
    const int32_t types[] = {1, 6, 6, 6, 7, 6, 0};
    for (size_t c = 0; c < MT_ARRAY_LEN(combos); c++) {
        size_t call_len;
        uint8_t *call = fixture(combos[c], "call", &call_len);
        mt_msg_t req, resp;
        mt_msg_init(&req);
        mt_msg_init(&resp);
        uint8_t *keep = NULL, *keep2 = NULL;
        ct_decode_one(&mt_codec_thrift, call, call_len, &req, &keep);
        for (size_t k = 0; k < MT_ARRAY_LEN(kinds); k++) {
            mt_wbuf_t out;
            mt_wbuf_init(&out);
            cr_assert_eq(mt_codec_thrift.on_error(&req, kinds[k], NULL, &out), MT_OK);
            ct_decode_everywhere(&mt_codec_thrift, out.data, out.len, &resp, &keep2);
            cr_assert_eq(resp.type, MT_MSG_ERROR);
            cr_assert_eq(resp.request_id, 42);
            ct_assert_attr(&resp, "method", "echo");
            /* the decoded status: the exception's type by Apache Thrift's name, every dialect */
            ct_assert_attr(&resp, "status", thrift_appex_type_name(types[k]));
            /* the exception type is the last i32 before the stop byte (binary) */
            if (strncmp(combos[c], "compact", 7) != 0) {
                int32_t t = (int32_t)((uint32_t)out.data[out.len - 5] << 24 |
                                      (uint32_t)out.data[out.len - 4] << 16 |
                                      (uint32_t)out.data[out.len - 3] << 8 | out.data[out.len - 2]);
                cr_assert_eq(t, types[k], "%s kind %zu", combos[c], k);
            }
            free(keep2);
            mt_wbuf_free(&out);
        }
        free(keep);
        free(call);
        mt_msg_free(&req);
        mt_msg_free(&resp);
    }
}

Test(thrift_exception_type, names_and_malformed_structs)
{
    cr_assert_str_eq(thrift_appex_type_name(1), "UNKNOWN_METHOD");
    cr_assert_str_eq(thrift_appex_type_name(10), "UNSUPPORTED_CLIENT_TYPE");
    cr_assert_null(thrift_appex_type_name(11));
    cr_assert_null(thrift_appex_type_name(-1));
    /* binary: {1: "ab", 2: 7} then the type; fields out of order; a truncated string */
    const uint8_t bin[] = {11, 0, 1, 0, 0, 0, 2, 'a', 'b', 8, 0, 2, 0, 0, 0, 7, 0};
    cr_assert_eq(thrift_read_app_exception_type(THRIFT_PROTO_BINARY, bin, 0, sizeof(bin)), 7);
    const uint8_t only_type[] = {8, 0, 2, 0, 0, 0, 4, 0};
    cr_assert_eq(
        thrift_read_app_exception_type(THRIFT_PROTO_BINARY, only_type, 0, sizeof(only_type)), 4);
    const uint8_t cut[] = {11, 0, 1, 0, 0, 0, 9, 'a'};
    cr_assert_eq(thrift_read_app_exception_type(THRIFT_PROTO_BINARY, cut, 0, sizeof(cut)), -1);
    const uint8_t other[] = {12, 0, 1, 0}; /* a struct field: not a TApplicationException */
    cr_assert_eq(thrift_read_app_exception_type(THRIFT_PROTO_BINARY, other, 0, sizeof(other)), -1);
    /* compact: field 1 binary "x" (delta 1), field 2 i32 zigzag(12) = 24 (delta 1) */
    const uint8_t cmp[] = {0x18, 1, 'x', 0x15, 24, 0};
    cr_assert_eq(thrift_read_app_exception_type(THRIFT_PROTO_COMPACT, cmp, 0, sizeof(cmp)), 12);
    const uint8_t cmp_long_id[] = {0x05, 4, 6, 0}; /* field id 2 as a zigzag varint, i32 3 */
    cr_assert_eq(
        thrift_read_app_exception_type(THRIFT_PROTO_COMPACT, cmp_long_id, 0, sizeof(cmp_long_id)),
        3);
    cr_assert_eq(thrift_read_app_exception_type(THRIFT_PROTO_COMPACT, cmp, 0, 2), -1);
}

Test(thrift_on_error, oneway_gets_no_reply)
{
    size_t len;
    uint8_t *data = fixture("binary_framed", "oneway", &len);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_one(&mt_codec_thrift, data, len, &m, &keep);
    mt_wbuf_t out;
    mt_wbuf_init(&out);
    cr_assert_eq(mt_codec_thrift.on_error(&m, MT_ERR_OVER_LIMIT, "x", &out), MT_OK);
    cr_assert_eq(out.len, 0);
    free(keep);
    free(data);
    mt_msg_free(&m);
}

/* ---- mutation ---------------------------------------------------------------------------- */

Test(thrift_mutation, theader_headers_replaced_added_removed)
{
    const char *hc[] = {"binary_header", "compact_header"};
    for (size_t c = 0; c < 2; c++) {
        size_t len;
        uint8_t *data = fixture(hc[c], "call", &len);
        mt_msg_t before, after;
        mt_msg_init(&before);
        mt_msg_init(&after);
        uint8_t *keep = NULL, *keep2 = NULL;
        ct_decode_one(&mt_codec_thrift, data, len, &before, &keep);
        const mt_attr_t items[] = {
            {MT_STR("env"), MT_STR("production")},
            {MT_STR("x-canary"), MT_STR("1")},
            {MT_STR("x-request-id"), {NULL, 0}},
        };
        mt_wbuf_t out;
        mt_wbuf_init(&out);
        mt_codec_err_t err;
        cr_assert_eq(mt_codec_thrift.encode(&before, &(mt_mutation_t){items, 3}, &out, &err), MT_OK,
                     "%s", err.text);
        ct_decode_everywhere(&mt_codec_thrift, out.data, out.len, &after, &keep2);
        ct_assert_attr(&after, "env", "production");
        ct_assert_attr(&after, "x-canary", "1");
        cr_assert_null(mt_msg_get_cstr(&after, "x-request-id"));
        ct_assert_attr(&after, "method", "echo");
        cr_assert_eq(after.request_id, 42);
        cr_assert_eq(after.type, MT_MSG_REQUEST);
        cr_assert_eq(after.nattrs, 5);
        /* payload untouched: the tail (message) is byte-identical */
        size_t payload = len - (14 + 36); /* 36-byte header block in the fixtures */
        cr_assert_eq(memcmp(out.data + out.len - payload, data + len - payload, payload), 0);
        cr_assert_eq((out.data[12] << 8 | out.data[13]) * 4 + 14 + payload, out.len);
        free(keep);
        free(keep2);
        free(data);
        mt_msg_free(&before);
        mt_msg_free(&after);
        mt_wbuf_free(&out);
    }
}

Test(thrift_mutation, no_mutable_headers_without_theader)
{
    for (size_t c = 0; c < MT_ARRAY_LEN(combos); c++) {
        if (is_header(combos[c]))
            continue;
        size_t len;
        uint8_t *data = fixture(combos[c], "call", &len);
        mt_msg_t m;
        mt_msg_init(&m);
        uint8_t *keep = NULL;
        ct_decode_one(&mt_codec_thrift, data, len, &m, &keep);
        mt_wbuf_t out;
        mt_wbuf_init(&out);
        mt_codec_err_t err;
        const mt_attr_t it[] = {{MT_STR("k"), MT_STR("v")}};
        cr_assert_eq(mt_codec_thrift.encode(&m, &(mt_mutation_t){it, 1}, &out, &err), MT_ERROR);
        cr_assert_eq(err.code, MT_CODEC_E_NO_MUTABLE_HEADERS);
        cr_assert_not_null(strstr(err.text, "no mutable headers"), "%s", err.text);
        cr_assert_eq(out.len, 0);
        cr_assert_eq(memcmp(keep, data, len), 0, "frame not touched");
        cr_assert_eq(mt_codec_thrift.encode(&m, NULL, &out, &err), MT_OK, "empty: a copy");
        cr_assert_eq(out.len, len);
        cr_assert_eq(memcmp(out.data, data, len), 0);
        free(keep);
        free(data);
        mt_msg_free(&m);
        mt_wbuf_free(&out);
    }
}

/* ---- hand-built frames ------------------------------------------------------------------- */

static void put(mt_wbuf_t *b, const void *p, size_t n)
{
    cr_assert_eq(mt_wbuf_append(b, p, n), MT_OK);
}

static void put1(mt_wbuf_t *b, uint8_t v)
{
    put(b, &v, 1);
}

/* Strict binary message header for `name`, type and seqid. */
static void bin_msg(mt_wbuf_t *b, const char *name, uint8_t type, int32_t seq)
{
    mt_wbuf_append_be32(b, 0x80010000u | type);
    mt_wbuf_append_be32(b, (uint32_t)strlen(name));
    put(b, name, strlen(name));
    mt_wbuf_append_be32(b, (uint32_t)seq);
}

/* THeader frame around `payload` with KEYVALUE and PKEYVALUE blocks. */
static void theader(mt_wbuf_t *out, const mt_wbuf_t *payload, uint32_t seq)
{
    mt_wbuf_t h;
    mt_wbuf_init(&h);
    const uint8_t block[] = {0, 0,                       /* binary, no transforms */
                             1, 1, 1, 'a', 1, '1',       /* KEYVALUE a=1 */
                             2, 1, 1, 'p', 2, 'p', 'v'}; /* PKEYVALUE p=pv */
    put(&h, block, sizeof(block));
    while (h.len % 4)
        put1(&h, 0);
    mt_wbuf_append_be32(out, (uint32_t)(10 + h.len + payload->len));
    mt_wbuf_append_be16(out, 0x0fff);
    mt_wbuf_append_be16(out, 0);
    mt_wbuf_append_be32(out, seq);
    mt_wbuf_append_be16(out, (uint16_t)(h.len / 4));
    put(out, h.data, h.len);
    put(out, payload->data, payload->len);
    mt_wbuf_free(&h);
}

Test(thrift_mutation, persistent_headers_are_rewritten_in_their_own_block)
{
    mt_wbuf_t p, f, out;
    mt_wbuf_init(&p);
    mt_wbuf_init(&f);
    mt_wbuf_init(&out);
    bin_msg(&p, "get", 1, 5);
    put1(&p, 0); /* empty args struct */
    theader(&f, &p, 5);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_everywhere(&mt_codec_thrift, f.data, f.len, &m, &keep);
    ct_assert_attr(&m, "a", "1");
    ct_assert_attr(&m, "p", "pv");
    const mt_attr_t items[] = {{MT_STR("p"), MT_STR("new")}, {MT_STR("a"), {NULL, 0}}};
    mt_codec_err_t err;
    cr_assert_eq(mt_codec_thrift.encode(&m, &(mt_mutation_t){items, 2}, &out, &err), MT_OK);
    free(keep);
    ct_decode_everywhere(&mt_codec_thrift, out.data, out.len, &m, &keep);
    ct_assert_attr(&m, "p", "new");
    cr_assert_null(mt_msg_get_cstr(&m, "a"));
    /* header block: 0 0, then only PKEYVALUE (2) with one pair */
    cr_assert_eq(out.data[14 + 2], 2);
    cr_assert_eq(out.data[14 + 3], 1);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&p);
    mt_wbuf_free(&f);
    mt_wbuf_free(&out);
}

/* ---- request ids ------------------------------------------------------------------------- */

Test(thrift_request_id, rewritten_in_place_for_every_dialect)
{
    for (size_t c = 0; c < MT_ARRAY_LEN(combos); c++) {
        size_t len;
        uint8_t *data = fixture(combos[c], "call", &len);
        bool compact = strncmp(combos[c], "compact", 7) == 0;
        uint32_t id = compact ? 100 : 0x7fff1234; /* seq 42 is a 1-byte varint */
        cr_assert_eq(mt_codec_thrift.set_request_id(data, len, id), MT_OK, "%s", combos[c]);
        mt_msg_t m;
        mt_msg_init(&m);
        uint8_t *keep = NULL;
        ct_decode_one(&mt_codec_thrift, data, len, &m, &keep);
        cr_assert_eq(m.request_id, id, "%s", combos[c]);
        ct_assert_attr(&m, "method", "echo");
        if (is_header(combos[c]))
            cr_assert_eq((uint32_t)data[8] << 24 | (uint32_t)data[9] << 16 |
                             (uint32_t)data[10] << 8 | data[11],
                         id, "THeader seq follows");
        if (compact) {
            uint8_t *copy = malloc(len);
            memcpy(copy, data, len);
            cr_assert_eq(mt_codec_thrift.set_request_id(data, len, 1000), MT_ERROR,
                         "1000 needs two varint bytes");
            cr_assert_eq(memcmp(copy, data, len), 0, "untouched on error");
            free(copy);
        }
        cr_assert_eq(mt_codec_thrift.set_request_id(data, len, 1ull << 32), MT_ERROR);
        free(keep);
        free(data);
        mt_msg_free(&m);
    }
}

/* ---- malformed input --------------------------------------------------------------------- */

Test(thrift_malformed, unknown_first_byte_and_bad_versions)
{
    const uint8_t junk[] = {0x90, 0, 0, 0, 0, 0};
    ct_expect_error(&mt_codec_thrift, NULL, junk, sizeof(junk), MT_CODEC_E_MALFORMED,
                    "unrecognised first byte");
    const uint8_t badver[] = {0x80, 0x02, 0, 1, 0, 0, 0, 0};
    ct_expect_error(&mt_codec_thrift, NULL, badver, sizeof(badver), MT_CODEC_E_MALFORMED,
                    "bad binary protocol version");
    const uint8_t badtype[] = {0x80, 0x01, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0};
    ct_expect_error(&mt_codec_thrift, NULL, badtype, sizeof(badtype), MT_CODEC_E_MALFORMED,
                    "invalid message type 9");
    const uint8_t badcompact[] = {0x82, 0x22, 0, 0};
    ct_expect_error(&mt_codec_thrift, NULL, badcompact, sizeof(badcompact), MT_CODEC_E_MALFORMED,
                    "bad compact protocol");
    const uint8_t longvarint[] = {0x82, 0x21, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    ct_expect_error(&mt_codec_thrift, NULL, longvarint, sizeof(longvarint), MT_CODEC_E_MALFORMED,
                    "varint too long");
}

Test(thrift_malformed, oversize_frames_rejected_from_the_length)
{
    const uint8_t big[] = {0x7f, 0, 0, 0, 0x80, 0x01, 0, 1};
    ct_expect_error(&mt_codec_thrift, NULL, big, sizeof(big), MT_CODEC_E_TOO_LARGE,
                    "exceeds the limit of 16384000");
    const mt_codec_limits_t small = {.max_frame_size = 32};
    const uint8_t framed[] = {0, 0, 0, 29, 0x80, 0x01, 0, 1};
    ct_expect_error(&mt_codec_thrift, &small, framed, sizeof(framed), MT_CODEC_E_TOO_LARGE,
                    "frame of 33 bytes");
    /* unframed: the limit applies while skipping, before the end is seen */
    mt_wbuf_t b;
    mt_wbuf_init(&b);
    bin_msg(&b, "m", 1, 1);
    const uint8_t field[] = {THRIFT_T_STRING, 0, 1, 0, 0, 0, 100};
    put(&b, field, sizeof(field));
    for (int i = 0; i < 40; i++)
        put1(&b, 'x');
    ct_expect_error(&mt_codec_thrift, &small, b.data, b.len, MT_CODEC_E_TOO_LARGE,
                    "frame size limit");
    mt_wbuf_free(&b);
}

Test(thrift_malformed, truncated_strings)
{
    /* framed: method name longer than the frame */
    const uint8_t name[] = {0, 0, 0, 12, 0x80, 0x01, 0, 1, 0, 0, 0, 50, 'a', 'b', 'c', 'd'};
    ct_expect_error(&mt_codec_thrift, NULL, name, sizeof(name), MT_CODEC_E_MALFORMED,
                    "truncated by its frame");
    /* unframed: negative string length in the args */
    mt_wbuf_t b;
    mt_wbuf_init(&b);
    bin_msg(&b, "m", 1, 1);
    const uint8_t neg[] = {THRIFT_T_STRING, 0, 1, 0xff, 0xff, 0xff, 0xf0};
    put(&b, neg, sizeof(neg));
    ct_expect_error(&mt_codec_thrift, NULL, b.data, b.len, MT_CODEC_E_MALFORMED,
                    "negative string length");
    /* THeader: header block larger than the frame */
    const uint8_t th[] = {0, 0, 0, 10, 0x0f, 0xff, 0, 0, 0, 0, 0, 1, 0, 9};
    ct_expect_error(&mt_codec_thrift, NULL, th, sizeof(th), MT_CODEC_E_MALFORMED,
                    "header size larger than its frame");
    /* THeader: an info key running past the header block */
    b.len = 0;
    const uint8_t info[] = {0, 0, 0, 0, 0x0f, 0xff, 0, 0, 0,   0, 0,
                            1, 0, 2, 0, 0,    1,    1, 5, 'a', 0, 0}; /* key of 5 bytes, 1 left */
    put(&b, info, sizeof(info));
    bin_msg(&b, "m", 1, 1);
    put1(&b, 0);
    mt_wbuf_put_be32_at(&b, 0, (uint32_t)(b.len - 4));
    ct_expect_error(&mt_codec_thrift, NULL, b.data, b.len, MT_CODEC_E_MALFORMED,
                    "info headers malformed");
    mt_wbuf_free(&b);
}

Test(thrift_malformed, theader_transforms_and_protocols_unsupported)
{
    const uint8_t zlib[] = {0, 0, 0, 14, 0x0f, 0xff, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 0};
    ct_expect_error(&mt_codec_thrift, NULL, zlib, sizeof(zlib), MT_CODEC_E_UNSUPPORTED,
                    "transforms");
    const uint8_t json[] = {0, 0, 0, 14, 0x0f, 0xff, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0};
    ct_expect_error(&mt_codec_thrift, NULL, json, sizeof(json), MT_CODEC_E_UNSUPPORTED,
                    "protocol id 1");
}

Test(thrift_malformed, nesting_too_deep_and_bad_types)
{
    mt_wbuf_t b;
    mt_wbuf_init(&b);
    bin_msg(&b, "m", 1, 1);
    for (int i = 0; i < 100; i++) {
        const uint8_t f[] = {THRIFT_T_STRUCT, 0, 1};
        put(&b, f, 3);
    }
    ct_expect_error(&mt_codec_thrift, NULL, b.data, b.len, MT_CODEC_E_TOO_DEEP,
                    "nesting deeper than 64");
    b.len = 0;
    bin_msg(&b, "m", 1, 1);
    const uint8_t list_field[] = {THRIFT_T_LIST, 0, 1};
    put(&b, list_field, 3);
    for (int i = 0; i < 30; i++) { /* list<list<list<...>>> */
        const uint8_t hdr[] = {THRIFT_T_LIST, 0, 0, 0, 1};
        put(&b, hdr, 5);
    }
    const mt_codec_limits_t shallow = {.max_depth = 10};
    ct_expect_error(&mt_codec_thrift, &shallow, b.data, b.len, MT_CODEC_E_TOO_DEEP,
                    "deeper than 10");
    b.len = 0;
    bin_msg(&b, "m", 1, 1);
    const uint8_t badfield[] = {17, 0, 1};
    put(&b, badfield, 3);
    ct_expect_error(&mt_codec_thrift, NULL, b.data, b.len, MT_CODEC_E_MALFORMED, "invalid type 17");
    b.len = 0;
    bin_msg(&b, "m", 1, 1);
    const uint8_t badelem[] = {THRIFT_T_LIST, 0, 1, THRIFT_T_VOID, 0, 0, 0, 2};
    put(&b, badelem, sizeof(badelem));
    ct_expect_error(&mt_codec_thrift, NULL, b.data, b.len, MT_CODEC_E_MALFORMED, "invalid type 1");
    mt_wbuf_free(&b);
}

Test(thrift_decode, old_binary_unframed_hand_built_and_containers)
{
    /* non-strict binary, unframed: name length first, type byte after the name */
    mt_wbuf_t b;
    mt_wbuf_init(&b);
    mt_wbuf_append_be32(&b, 3);
    put(&b, "add", 3);
    put1(&b, 1);
    mt_wbuf_append_be32(&b, 9);
    const uint8_t args[] = {THRIFT_T_MAP,
                            0,
                            1,
                            THRIFT_T_STRING,
                            THRIFT_T_SET,
                            0,
                            0,
                            0,
                            1, /* map<string,set<i64>> */
                            0,
                            0,
                            0,
                            1,
                            'k',
                            THRIFT_T_I64,
                            0,
                            0,
                            0,
                            1,
                            1,
                            2,
                            3,
                            4,
                            5,
                            6,
                            7,
                            8,
                            THRIFT_T_MAP,
                            0,
                            2,
                            0,
                            0,
                            0,
                            0,
                            0,
                            0, /* empty map: element types not checked */
                            THRIFT_T_DOUBLE,
                            0,
                            3,
                            1,
                            2,
                            3,
                            4,
                            5,
                            6,
                            7,
                            8,
                            THRIFT_T_BOOL,
                            0,
                            4,
                            1,
                            THRIFT_T_I16,
                            0,
                            5,
                            0,
                            1,
                            THRIFT_T_BYTE,
                            0,
                            6,
                            7,
                            THRIFT_T_UUID,
                            0,
                            7,
                            1,
                            2,
                            3,
                            4,
                            5,
                            6,
                            7,
                            8,
                            9,
                            10,
                            11,
                            12,
                            13,
                            14,
                            15,
                            16,
                            0};
    put(&b, args, sizeof(args));
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_everywhere(&mt_codec_thrift, b.data, b.len, &m, &keep);
    ct_assert_attr(&m, "method", "add");
    cr_assert_eq(m.request_id, 9);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&b);
}

Test(thrift_decode, compact_unframed_hand_built_long_field_ids_and_bool_lists)
{
    mt_wbuf_t b;
    mt_wbuf_init(&b);
    const uint8_t head[] = {0x82, 0x21, 0x05, 0x01, 'f'};
    put(&b, head, sizeof(head));
    const uint8_t f1[] = {0x01, 0x90, 0x03};                   /* id 200 (zigzag 400), bool true */
    const uint8_t f2[] = {0x19, 0x31, 0x01, 0x00, 0x01};       /* id 201 list<bool> x3 */
    const uint8_t f3[] = {0x1b, 0x01, 0x85, 0x01, 'k', 0x04};  /* id 202 map<string,i64> */
    const uint8_t f4[] = {0x1c, 0x18, 0x02, 'h', 'i', 0x00};   /* id 203 struct {1: "hi"} */
    const uint8_t f5[] = {0x1b, 0x00};                         /* id 204 empty map */
    const uint8_t f6[] = {0x17, 1, 2, 3, 4, 5, 6, 7, 8, 0x00}; /* id 205 double, stop */
    put(&b, f1, sizeof(f1));
    put(&b, f2, sizeof(f2));
    put(&b, f3, sizeof(f3));
    put(&b, f4, sizeof(f4));
    put(&b, f5, sizeof(f5));
    put(&b, f6, sizeof(f6));
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_everywhere(&mt_codec_thrift, b.data, b.len, &m, &keep);
    ct_assert_attr(&m, "method", "f");
    cr_assert_eq(m.request_id, 5);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&b);
}

/* ---- codec properties (the fuzzers' checks) over the real frames ------------------------- */

Test(thrift_properties, hold_on_every_fixture_with_every_feeding)
{
    const char *kinds[] = {"call", "reply", "declared", "internal", "oneway", "appex"};
    for (size_t c = 0; c < MT_ARRAY_LEN(combos); c++) {
        for (size_t k = 0; k < MT_ARRAY_LEN(kinds); k++) {
            size_t len;
            uint8_t *data = fixture(combos[c], kinds[k], &len);
            uint8_t *in = malloc(len + 1);
            memcpy(in + 1, data, len);
            const uint8_t modes[] = {0x00, 0x02, 0x0e, 0x40, 0x81, 0xc0};
            for (size_t m = 0; m < sizeof(modes); m++) {
                in[0] = modes[m];
                cp_run(&mt_codec_thrift, true, in, len + 1); /* aborts on a violation */
            }
            free(in);
            free(data);
        }
    }
}

/* ---- attribute filters ------------------------------------------------------------------- */

Test(thrift_filter, seq_id_and_headers_only_when_wanted)
{
    mt_wbuf_t p, f;
    mt_wbuf_init(&p);
    mt_wbuf_init(&f);
    bin_msg(&p, "echo", 1, -5);
    put1(&p, 0); /* empty args struct */
    theader(&f, &p, 3);
    mt_attr_filter_t want = {0};
    cr_assert_eq(mt_attr_filter_add(&want, "method", 6), MT_OK);
    cr_assert_eq(mt_attr_filter_add(&want, "p", 1), MT_OK);
    ct_decoder_t d = ct_decoder_new(&mt_codec_thrift, NULL);
    mt_msg_t m;
    mt_msg_init(&m);
    mt_codec_err_t err;
    m.want = &want;
    cr_assert_eq(mt_codec_thrift.decode(d.state, f.data, f.len, &m, &err), MT_OK, "%s", err.text);
    cr_assert_eq(m.nattrs, 2);
    ct_assert_attr(&m, "method", "echo");
    ct_assert_attr(&m, "p", "pv");
    cr_assert_eq(m.request_id, (uint32_t)-5, "the id does not depend on the filter");
    m.want = NULL;
    cr_assert_eq(mt_codec_thrift.decode(d.state, f.data, f.len, &m, &err), MT_OK);
    ct_assert_attr(&m, "seq_id", "-5");
    ct_assert_attr(&m, "message_type", "call");
    ct_assert_attr(&m, "a", "1");
    cr_assert_eq(m.nattrs, 5);
    ct_decoder_free(&d);
    mt_msg_free(&m);
    mt_attr_filter_free(&want);
    mt_wbuf_free(&f);
    mt_wbuf_free(&p);
}
