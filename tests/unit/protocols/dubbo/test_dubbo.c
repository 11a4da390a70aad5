/*
 * test_dubbo.c - the Dubbo codec against frames built here byte by byte from the Dubbo 2
 * protocol and Hessian 2.0 specs (independently of the codec's own Hessian writer).
 */
#include "protocols/codec.h"
#include "protocols/dubbo/dubbo.h"
#include "protocols/dubbo/hessian2.h"
#include "tests/unit/protocols/codec_props.h"
#include "tests/unit/protocols/codec_test_util.h"

#include <criterion/criterion.h>
#include <string.h>

/* ---- a hand-rolled Hessian2 writer for building test bodies ----------------------------- */

static void put(mt_wbuf_t *b, const void *p, size_t n)
{
    cr_assert_eq(mt_wbuf_append(b, p, n), MT_OK);
}

static void put1(mt_wbuf_t *b, uint8_t v)
{
    put(b, &v, 1);
}

/* Strings of ASCII only here: char count == byte count. */
static void h_str(mt_wbuf_t *b, const char *s)
{
    size_t n = strlen(s);
    if (n <= 31) {
        put1(b, (uint8_t)n);
    } else if (n <= 1023) {
        put1(b, (uint8_t)(0x30 + (n >> 8)));
        put1(b, (uint8_t)n);
    } else {
        put1(b, 'S');
        put1(b, (uint8_t)(n >> 8));
        put1(b, (uint8_t)n);
    }
    put(b, s, n);
}

/* A string split into a non-final 'R' chunk and a final compact chunk. */
static void h_str_chunked(mt_wbuf_t *b, const char *s, size_t first)
{
    size_t n = strlen(s);
    put1(b, 'R');
    put1(b, (uint8_t)(first >> 8));
    put1(b, (uint8_t)first);
    put(b, s, first);
    put1(b, (uint8_t)(n - first)); /* n - first <= 31 in tests */
    put(b, s + first, n - first);
}

static void h_int(mt_wbuf_t *b, int32_t v)
{
    if (v >= -16 && v <= 47) {
        put1(b, (uint8_t)(0x90 + v));
    } else if (v >= -2048 && v <= 2047) {
        put1(b, (uint8_t)(0xc8 + (v >> 8)));
        put1(b, (uint8_t)v);
    } else if (v >= -262144 && v <= 262143) {
        put1(b, (uint8_t)(0xd4 + (v >> 16)));
        put1(b, (uint8_t)(v >> 8));
        put1(b, (uint8_t)v);
    } else {
        put1(b, 'I');
        mt_wbuf_append_be32(b, (uint32_t)v);
    }
}

typedef struct kv {
    const char *k, *v;
} kv_t;

/* Dubbo frame: header + body. */
static void dubbo_frame(mt_wbuf_t *out, uint8_t flag, uint8_t status, uint64_t id,
                        const mt_wbuf_t *body)
{
    uint8_t h[4] = {0xda, 0xbb, flag, status};
    put(out, h, 4);
    mt_wbuf_append_be64(out, id);
    mt_wbuf_append_be32(out, (uint32_t)body->len);
    put(out, body->data, body->len);
}

#define REQ_FLAGS (DUBBO_FLAG_REQUEST | DUBBO_FLAG_TWOWAY | DUBBO_SERIALIZATION_HESSIAN2)

/* Writes the fixed part of an invocation: dubbo version, path, version, method, desc. */
static void h_invocation(mt_wbuf_t *b, const char *path, const char *version, const char *method,
                         const char *desc)
{
    h_str(b, "2.0.2");
    h_str(b, path);
    if (version)
        h_str(b, version);
    else
        put1(b, 'N');
    h_str(b, method);
    h_str(b, desc);
}

static void h_attachments(mt_wbuf_t *b, const kv_t *kv, size_t n)
{
    put1(b, 'H');
    for (size_t i = 0; i < n; i++) {
        h_str(b, kv[i].k);
        h_str(b, kv[i].v);
    }
    put1(b, 'Z');
}

/* A typical request: sayHello(String, int) with three attachments. */
static void build_hello(mt_wbuf_t *frame, uint64_t id)
{
    mt_wbuf_t body;
    mt_wbuf_init(&body);
    h_invocation(&body, "org.apache.dubbo.demo.DemoService", "1.0.0", "sayHello",
                 "Ljava/lang/String;I");
    h_str(&body, "world");
    h_int(&body, 12345);
    const kv_t att[] = {
        {"path", "org.apache.dubbo.demo.DemoService"}, {"group", "blue"}, {"timeout", "3000"}};
    h_attachments(&body, att, 3);
    dubbo_frame(frame, REQ_FLAGS, 0, id, &body);
    mt_wbuf_free(&body);
}

/* ---- decode ------------------------------------------------------------------------------ */

Test(dubbo_decode, request_attributes_at_every_split_point)
{
    mt_wbuf_t f;
    mt_wbuf_init(&f);
    build_hello(&f, 0x0102030405060708ull);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_everywhere(&mt_codec_dubbo, f.data, f.len, &m, &keep);
    cr_assert_eq(m.type, MT_MSG_REQUEST);
    cr_assert(m.expects_reply);
    cr_assert_not(m.is_reply);
    cr_assert_eq(m.request_id, 0x0102030405060708ull);
    cr_assert_eq(m.codec, &mt_codec_dubbo);
    ct_assert_attr(&m, "interface", "org.apache.dubbo.demo.DemoService");
    ct_assert_attr(&m, "method", "sayHello");
    ct_assert_attr(&m, "version", "1.0.0");
    ct_assert_attr(&m, "group", "blue");
    ct_assert_attr(&m, "timeout", "3000");
    ct_assert_attr(&m, "path", "org.apache.dubbo.demo.DemoService");
    cr_assert_eq(m.nattrs, 6);
    /* views point into the decoded frame, not copies */
    const mt_str_t *method = mt_msg_get_cstr(&m, "method");
    cr_assert(method->ptr >= (const char *)keep && method->ptr < (const char *)keep + m.frame_len);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&f);
}

Test(dubbo_decode, pipelined_frames_decode_one_after_another)
{
    mt_wbuf_t f;
    mt_wbuf_init(&f);
    build_hello(&f, 1);
    size_t first = f.len;
    build_hello(&f, 2);
    ct_decoder_t d = ct_decoder_new(&mt_codec_dubbo, NULL);
    mt_msg_t m;
    mt_msg_init(&m);
    mt_codec_err_t err;
    cr_assert_eq(mt_codec_dubbo.decode(d.state, f.data, f.len, &m, &err), MT_OK);
    cr_assert_eq(m.frame_len, first);
    cr_assert_eq(m.request_id, 1);
    cr_assert_eq(mt_codec_dubbo.decode(d.state, f.data + first, f.len - first, &m, &err), MT_OK);
    cr_assert_eq(m.request_id, 2);
    cr_assert_eq(m.frame_len, f.len - first);
    mt_msg_free(&m);
    ct_decoder_free(&d);
    mt_wbuf_free(&f);
}

Test(dubbo_decode, oneway_null_version_no_attachments)
{
    mt_wbuf_t body, f;
    mt_wbuf_init(&body);
    mt_wbuf_init(&f);
    h_invocation(&body, "com.acme.Audit", NULL, "log", "");
    dubbo_frame(&f, DUBBO_FLAG_REQUEST | DUBBO_SERIALIZATION_HESSIAN2, 0, 9, &body);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_one(&mt_codec_dubbo, f.data, f.len, &m, &keep);
    cr_assert_eq(m.type, MT_MSG_ONEWAY);
    cr_assert_not(m.expects_reply);
    ct_assert_attr(&m, "interface", "com.acme.Audit");
    ct_assert_attr(&m, "method", "log");
    cr_assert_null(mt_msg_get_cstr(&m, "version"), "a null version is absent");
    cr_assert_eq(m.nattrs, 2);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&body);
    mt_wbuf_free(&f);
}

/* Arguments of every Hessian2 type must be skipped to reach the attachments. */
static void h_every_type(mt_wbuf_t *b)
{
    put1(b, 'N');
    put1(b, 'T');
    put1(b, 'F');
    h_int(b, 0);
    h_int(b, -2000);
    h_int(b, 200000);
    h_int(b, 1 << 30);
    const uint8_t longs[] = {0xe0, 0xf8, 0x01, 0x3c, 0x00, 0x01, 'Y', 0, 0, 1,
                             0,    'L',  1,    2,    3,    4,    5,   6, 7, 8};
    put(b, longs, sizeof(longs));
    const uint8_t doubles[] = {0x5b, 0x5c, 0x5d, 0x80, 0x5e, 0x01, 0x00, 0x5f, 1, 2, 3,
                               4,    'D',  1,    2,    3,    4,    5,    6,    7, 8};
    put(b, doubles, sizeof(doubles));
    const uint8_t dates[] = {0x4a, 0, 0, 1, 2, 3, 4, 5, 6, 0x4b, 0, 1, 2, 3};
    put(b, dates, sizeof(dates));
    const uint8_t bins[] = {0x23, 1, 2, 3, 0x34, 0x02, 9, 9, 'A', 0, 2, 7, 7, 'B', 0, 1, 5};
    put(b, bins, sizeof(bins));
    h_str(b, "");
    h_str_chunked(b, "chunked string value", 7);
    /* typed variable list 'U' type + 2 values + Z; untyped fixed 'X' len 2 */
    put1(b, 'U');
    h_str(b, "[int");
    h_int(b, 1);
    h_int(b, 2);
    put1(b, 'Z');
    put1(b, 'X');
    h_int(b, 2);
    h_str(b, "a");
    put1(b, 'N');
    /* 'V' typed fixed with a type reference (int), 'W' untyped variable, compact lists */
    put1(b, 'V');
    h_int(b, 0);
    h_int(b, 1);
    h_int(b, 5);
    put1(b, 'W');
    h_int(b, 1);
    put1(b, 'Z');
    put1(b, 0x72); /* typed fixed list of 2 */
    h_str(b, "[string");
    h_str(b, "x");
    h_str(b, "y");
    put1(b, 0x79); /* untyped fixed list of 1 */
    put1(b, 'T');
    /* typed map 'M' and untyped map 'H' nested */
    put1(b, 'M');
    h_str(b, "java.util.HashMap");
    h_str(b, "inner");
    put1(b, 'H');
    h_int(b, 1);
    h_str(b, "one");
    put1(b, 'Z');
    put1(b, 'Z');
    /* class definition + instances in both forms + a reference */
    put1(b, 'C');
    h_str(b, "com.acme.Point");
    h_int(b, 2);
    h_str(b, "x");
    h_str(b, "y");
    put1(b, 0x60); /* instance of class 0 */
    h_int(b, 3);
    h_int(b, 4);
    put1(b, 'O'); /* 'O' with explicit index */
    h_int(b, 0);
    h_int(b, 5);
    put1(b, 'N');
    put1(b, 'Q');
    h_int(b, 0);
}

Test(dubbo_decode, skips_arguments_of_every_hessian2_type)
{
    mt_wbuf_t body, f;
    mt_wbuf_init(&body);
    mt_wbuf_init(&f);
    const char *desc = "Ljava/lang/Object;ZZIIIIJJJJJDDDDDDLjava/util/Date;Ljava/util/Date;"
                       "[B[B[BLjava/lang/String;Ljava/lang/String;[I[Ljava/lang/Object;[I"
                       "Ljava/util/List;[Ljava/lang/String;[ZLjava/util/Map;Lcom/acme/Point;"
                       "Lcom/acme/Point;Lcom/acme/Point;";
    h_invocation(&body, "com.acme.Everything", "2.0", "all", desc);
    h_every_type(&body);
    const kv_t att[] = {{"group", "g1"}};
    h_attachments(&body, att, 1);
    dubbo_frame(&f, REQ_FLAGS, 0, 77, &body);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_everywhere(&mt_codec_dubbo, f.data, f.len, &m, &keep);
    ct_assert_attr(&m, "method", "all");
    ct_assert_attr(&m, "group", "g1");
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&body);
    mt_wbuf_free(&f);
}

Test(dubbo_decode, chunked_attachment_string_is_joined_in_the_arena)
{
    mt_wbuf_t body, f;
    mt_wbuf_init(&body);
    mt_wbuf_init(&f);
    h_invocation(&body, "svc", "1", "m", "");
    put1(&body, 'H');
    h_str(&body, "trace");
    h_str_chunked(&body, "0123456789abcdef", 10);
    h_str(&body, "count"); /* non-string value: skipped, not exposed */
    h_int(&body, 3);
    put1(&body, 'Z');
    dubbo_frame(&f, REQ_FLAGS, 0, 1, &body);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_one(&mt_codec_dubbo, f.data, f.len, &m, &keep);
    ct_assert_attr(&m, "trace", "0123456789abcdef");
    cr_assert_null(mt_msg_get_cstr(&m, "count"));
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&body);
    mt_wbuf_free(&f);
}

Test(dubbo_decode, responses_status_and_id)
{
    mt_wbuf_t body, f;
    mt_wbuf_init(&body);
    mt_wbuf_init(&f);
    h_int(&body, 1); /* RESPONSE_VALUE */
    h_str(&body, "hello world");
    dubbo_frame(&f, DUBBO_SERIALIZATION_HESSIAN2, DUBBO_OK, 42, &body);
    size_t ok_len = f.len;
    mt_wbuf_t err_body;
    mt_wbuf_init(&err_body);
    h_str(&err_body, "boom");
    dubbo_frame(&f, DUBBO_SERIALIZATION_HESSIAN2, DUBBO_SERVICE_ERROR, 43, &err_body);

    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_everywhere(&mt_codec_dubbo, f.data, ok_len, &m, &keep);
    cr_assert_eq(m.type, MT_MSG_RESPONSE);
    cr_assert(m.is_reply);
    cr_assert_eq(m.request_id, 42);
    ct_assert_attr(&m, "status", "20");
    free(keep);
    ct_decode_one(&mt_codec_dubbo, f.data + ok_len, f.len - ok_len, &m, &keep);
    cr_assert_eq(m.type, MT_MSG_ERROR);
    cr_assert_eq(m.request_id, 43);
    ct_assert_attr(&m, "status", "70");
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&body);
    mt_wbuf_free(&err_body);
    mt_wbuf_free(&f);
}

Test(dubbo_decode, other_serializations_frame_without_attributes)
{
    mt_wbuf_t body, f;
    mt_wbuf_init(&body);
    mt_wbuf_init(&f);
    put(&body, "{\"json\":true}", 13);
    dubbo_frame(&f, DUBBO_FLAG_REQUEST | DUBBO_FLAG_TWOWAY | 6 /* fastjson */, 0, 5, &body);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_one(&mt_codec_dubbo, f.data, f.len, &m, &keep);
    cr_assert_eq(m.type, MT_MSG_REQUEST);
    cr_assert_eq(m.nattrs, 0);
    const mt_attr_t set = {MT_STR("k"), MT_STR("v")};
    const mt_mutation_t mut = {&set, 1};
    mt_wbuf_t out;
    mt_wbuf_init(&out);
    mt_codec_err_t err;
    cr_assert_eq(mt_codec_dubbo.encode(&m, &mut, &out, &err), MT_ERROR);
    cr_assert_eq(err.code, MT_CODEC_E_UNSUPPORTED);
    cr_assert_eq(out.len, 0);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&out);
    mt_wbuf_free(&body);
    mt_wbuf_free(&f);
}

/* ---- heartbeats -------------------------------------------------------------------------- */

Test(dubbo_heartbeat, request_is_answered_with_a_heartbeat_response)
{
    mt_wbuf_t body, f, out;
    mt_wbuf_init(&body);
    mt_wbuf_init(&f);
    mt_wbuf_init(&out);
    put1(&body, 'N');
    dubbo_frame(&f, REQ_FLAGS | DUBBO_FLAG_EVENT, 0, 99, &body);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_everywhere(&mt_codec_dubbo, f.data, f.len, &m, &keep);
    cr_assert_eq(m.type, MT_MSG_HEARTBEAT);
    cr_assert(m.expects_reply);
    cr_assert_eq(mt_codec_dubbo.heartbeat_reply(&m, &out), MT_OK);
    const uint8_t want[] = {0xda, 0xbb, 0x22, 20, 0, 0, 0, 0, 0, 0, 0, 99, 0, 0, 0, 1, 'N'};
    cr_assert_eq(out.len, sizeof(want));
    cr_assert_arr_eq(out.data, want, sizeof(want));
    free(keep);
    ct_decode_one(&mt_codec_dubbo, out.data, out.len, &m, &keep);
    cr_assert_eq(m.type, MT_MSG_HEARTBEAT);
    cr_assert(m.is_reply);
    cr_assert_eq(m.request_id, 99);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&body);
    mt_wbuf_free(&f);
    mt_wbuf_free(&out);
}

/* ---- errors ------------------------------------------------------------------------------ */

Test(dubbo_on_error, native_error_response_per_kind)
{
    mt_wbuf_t f;
    mt_wbuf_init(&f);
    build_hello(&f, 1234);
    mt_msg_t req, resp;
    mt_msg_init(&req);
    mt_msg_init(&resp);
    uint8_t *keep = NULL, *keep2 = NULL;
    ct_decode_one(&mt_codec_dubbo, f.data, f.len, &req, &keep);
    const struct {
        mt_error_kind_t kind;
        uint8_t status;
    } cases[] = {
        {MT_ERR_ROUTE_NOT_FOUND, DUBBO_SERVICE_NOT_FOUND},
        {MT_ERR_CLUSTER_NOT_FOUND, DUBBO_SERVICE_NOT_FOUND},
        {MT_ERR_NO_HEALTHY_UPSTREAM, DUBBO_SERVER_ERROR},
        {MT_ERR_UPSTREAM_TIMEOUT, DUBBO_SERVER_TIMEOUT},
        {MT_ERR_BAD_RESPONSE, DUBBO_BAD_RESPONSE},
        {MT_ERR_OVER_LIMIT, DUBBO_SERVER_THREADPOOL_EXHAUSTED},
        {MT_ERR_UNSPECIFIED, DUBBO_SERVER_ERROR},
    };
    for (size_t i = 0; i < MT_ARRAY_LEN(cases); i++) {
        mt_wbuf_t out;
        mt_wbuf_init(&out);
        cr_assert_eq(mt_codec_dubbo.on_error(&req, cases[i].kind, "meltemi: no route", &out),
                     MT_OK);
        cr_assert_eq(out.data[2], DUBBO_SERIALIZATION_HESSIAN2, "response, hessian2");
        cr_assert_eq(out.data[3], cases[i].status);
        ct_decode_one(&mt_codec_dubbo, out.data, out.len, &resp, &keep2);
        cr_assert_eq(resp.type, MT_MSG_ERROR);
        cr_assert_eq(resp.request_id, 1234);
        /* body: one Hessian2 string, the message */
        cr_assert_eq(out.len, 16 + 1 + 17);
        cr_assert_eq(out.data[16], 17);
        cr_assert_eq(memcmp(out.data + 17, "meltemi: no route", 17), 0);
        free(keep2);
        mt_wbuf_free(&out);
    }
    free(keep);
    mt_msg_free(&req);
    mt_msg_free(&resp);
    mt_wbuf_free(&f);
}

Test(dubbo_on_error, oneway_requests_get_no_reply)
{
    mt_wbuf_t body, f, out;
    mt_wbuf_init(&body);
    mt_wbuf_init(&f);
    mt_wbuf_init(&out);
    h_invocation(&body, "svc", "1", "m", "");
    dubbo_frame(&f, DUBBO_FLAG_REQUEST | DUBBO_SERIALIZATION_HESSIAN2, 0, 3, &body);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_one(&mt_codec_dubbo, f.data, f.len, &m, &keep);
    cr_assert_eq(mt_codec_dubbo.on_error(&m, MT_ERR_ROUTE_NOT_FOUND, "x", &out), MT_OK);
    cr_assert_eq(out.len, 0);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&body);
    mt_wbuf_free(&f);
    mt_wbuf_free(&out);
}

/* ---- mutation ---------------------------------------------------------------------------- */

static void encode_and_redecode(const mt_wbuf_t *f, const mt_mutation_t *mut, mt_msg_t *after,
                                uint8_t **keep_after, mt_wbuf_t *out)
{
    mt_msg_t before;
    mt_msg_init(&before);
    uint8_t *keep = NULL;
    ct_decode_one(&mt_codec_dubbo, f->data, f->len, &before, &keep);
    mt_codec_err_t err = {0};
    cr_assert_eq(mt_codec_dubbo.encode(&before, mut, out, &err), MT_OK, "%s", err.text);
    /* every split point of the rewritten frame, and the body length must be right */
    ct_decode_everywhere(&mt_codec_dubbo, out->data, out->len, after, keep_after);
    cr_assert_eq(after->request_id, before.request_id);
    free(keep);
    mt_msg_free(&before);
}

Test(dubbo_mutation, replace_add_and_remove_attachments)
{
    mt_wbuf_t f, out;
    mt_wbuf_init(&f);
    mt_wbuf_init(&out);
    build_hello(&f, 7);
    const mt_attr_t items[] = {
        {MT_STR("group"), MT_STR("green")},                             /* replace */
        {MT_STR("x-canary"), MT_STR("true")},                           /* add */
        {MT_STR("timeout"), {NULL, 0}},                                 /* remove */
        {MT_STR("long"), MT_STR("\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80")}, /* UTF-8, surrogates */
    };
    const mt_mutation_t mut = {items, MT_ARRAY_LEN(items)};
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    encode_and_redecode(&f, &mut, &m, &keep, &out);
    ct_assert_attr(&m, "group", "green");
    ct_assert_attr(&m, "x-canary", "true");
    ct_assert_attr(&m, "long", "\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80");
    cr_assert_null(mt_msg_get_cstr(&m, "timeout"));
    /* the rest is unchanged */
    ct_assert_attr(&m, "interface", "org.apache.dubbo.demo.DemoService");
    ct_assert_attr(&m, "method", "sayHello");
    ct_assert_attr(&m, "version", "1.0.0");
    ct_assert_attr(&m, "path", "org.apache.dubbo.demo.DemoService");
    cr_assert_eq(m.nattrs, 7);
    /* everything before the attachments is byte-identical (header aside) */
    size_t attach = f.len - 66; /* 'H' + three string pairs (64 bytes) + 'Z' */
    cr_assert_eq(f.data[attach], 'H');
    cr_assert_eq(memcmp(out.data + 16, f.data + 16, attach - 16), 0);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&f);
    mt_wbuf_free(&out);
}

Test(dubbo_mutation, adds_a_map_when_the_request_has_none)
{
    mt_wbuf_t body, f, out;
    mt_wbuf_init(&body);
    mt_wbuf_init(&f);
    mt_wbuf_init(&out);
    h_invocation(&body, "svc", "1", "m", "I");
    h_int(&body, 5);
    dubbo_frame(&f, REQ_FLAGS, 0, 11, &body);
    const mt_attr_t items[] = {{MT_STR("group"), MT_STR("a")}, {MT_STR("group"), MT_STR("b")}};
    const mt_mutation_t mut = {items, 2};
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    encode_and_redecode(&f, &mut, &m, &keep, &out);
    ct_assert_attr(&m, "group", "a"); /* first item for a key wins */
    ct_assert_attr(&m, "interface", "svc");
    cr_assert_eq(out.len, f.len + 1 + 6 + 2 + 1);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&body);
    mt_wbuf_free(&f);
    mt_wbuf_free(&out);
}

Test(dubbo_mutation, long_values_are_chunked_and_empty_mutation_copies)
{
    mt_wbuf_t f, out;
    mt_wbuf_init(&f);
    mt_wbuf_init(&out);
    build_hello(&f, 8);
    size_t n = 70000;
    char *big = malloc(n);
    memset(big, 'z', n);
    const mt_attr_t items[] = {{MT_STR("big"), {big, n}}};
    const mt_mutation_t mut = {items, 1};
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_one(&mt_codec_dubbo, f.data, f.len, &m, &keep);
    mt_codec_err_t err;
    cr_assert_eq(mt_codec_dubbo.encode(&m, &mut, &out, &err), MT_OK);
    free(keep);
    ct_decode_one(&mt_codec_dubbo, out.data, out.len, &m, &keep);
    const mt_str_t *v = mt_msg_get_cstr(&m, "big");
    cr_assert_not_null(v);
    cr_assert_eq(v->len, n);
    cr_assert_eq(memcmp(v->ptr, big, n), 0);
    /* empty mutation: a plain copy */
    mt_wbuf_t copy;
    mt_wbuf_init(&copy);
    cr_assert_eq(mt_codec_dubbo.encode(&m, NULL, &copy, &err), MT_OK);
    cr_assert_eq(copy.len, out.len);
    cr_assert_eq(memcmp(copy.data, out.data, out.len), 0);
    free(keep);
    free(big);
    mt_msg_free(&m);
    mt_wbuf_free(&copy);
    mt_wbuf_free(&f);
    mt_wbuf_free(&out);
}

Test(dubbo_mutation, refuses_invalid_utf8_and_object_values_and_leaves_out_alone)
{
    mt_wbuf_t body, f, out;
    mt_wbuf_init(&body);
    mt_wbuf_init(&f);
    mt_wbuf_init(&out);
    h_invocation(&body, "svc", "1", "m", "");
    put1(&body, 'H');
    h_str(&body, "obj");
    put1(&body, 'H'); /* a map value: enters the reference table */
    put1(&body, 'Z');
    put1(&body, 'Z');
    dubbo_frame(&f, REQ_FLAGS, 0, 12, &body);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_one(&mt_codec_dubbo, f.data, f.len, &m, &keep);
    mt_codec_err_t err;
    put(&out, "pre", 3);
    const mt_attr_t bad_utf8[] = {{MT_STR("k"), MT_STR("\xff")}};
    cr_assert_eq(mt_codec_dubbo.encode(&m, &(mt_mutation_t){bad_utf8, 1}, &out, &err), MT_ERROR);
    cr_assert_not_null(strstr(err.text, "UTF-8"), "%s", err.text);
    cr_assert_eq(out.len, 3, "nothing appended on failure");
    const mt_attr_t obj[] = {{MT_STR("obj"), MT_STR("v")}};
    cr_assert_eq(mt_codec_dubbo.encode(&m, &(mt_mutation_t){obj, 1}, &out, &err), MT_ERROR);
    cr_assert_eq(err.code, MT_CODEC_E_UNSUPPORTED);
    cr_assert_eq(out.len, 3);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&body);
    mt_wbuf_free(&f);
    mt_wbuf_free(&out);
}

Test(dubbo_mutation, responses_have_no_mutable_headers)
{
    mt_wbuf_t body, f, out;
    mt_wbuf_init(&body);
    mt_wbuf_init(&f);
    mt_wbuf_init(&out);
    put1(&body, 'N');
    dubbo_frame(&f, DUBBO_SERIALIZATION_HESSIAN2, DUBBO_OK, 1, &body);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_one(&mt_codec_dubbo, f.data, f.len, &m, &keep);
    const mt_attr_t it[] = {{MT_STR("k"), MT_STR("v")}};
    mt_codec_err_t err;
    cr_assert_eq(mt_codec_dubbo.encode(&m, &(mt_mutation_t){it, 1}, &out, &err), MT_ERROR);
    cr_assert_eq(err.code, MT_CODEC_E_NO_MUTABLE_HEADERS);
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&body);
    mt_wbuf_free(&f);
    mt_wbuf_free(&out);
}

/* ---- request ids ------------------------------------------------------------------------- */

Test(dubbo_request_id, rewritten_in_place)
{
    mt_wbuf_t f;
    mt_wbuf_init(&f);
    build_hello(&f, 1);
    size_t len = f.len;
    cr_assert_eq(mt_codec_dubbo.set_request_id(f.data, f.len, 0xfedcba9876543210ull), MT_OK);
    cr_assert_eq(f.len, len);
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t *keep = NULL;
    ct_decode_one(&mt_codec_dubbo, f.data, f.len, &m, &keep);
    cr_assert_eq(m.request_id, 0xfedcba9876543210ull);
    ct_assert_attr(&m, "method", "sayHello");
    cr_assert_eq(mt_codec_dubbo.set_request_id(f.data, 10, 1), MT_ERROR, "short frame");
    free(keep);
    mt_msg_free(&m);
    mt_wbuf_free(&f);
}

/* ---- malformed input --------------------------------------------------------------------- */

Test(dubbo_malformed, bad_magic_is_reported_from_the_first_byte)
{
    const uint8_t one[] = {0xca};
    ct_expect_error(&mt_codec_dubbo, NULL, one, 1, MT_CODEC_E_MALFORMED, "bad magic");
    const uint8_t two[] = {0xda, 0xbc};
    ct_expect_error(&mt_codec_dubbo, NULL, two, 2, MT_CODEC_E_MALFORMED, "bad magic");
}

Test(dubbo_malformed, oversize_frame_rejected_from_the_header)
{
    uint8_t h[16] = {0xda, 0xbb, REQ_FLAGS, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x00, 0x90, 0, 0};
    ct_expect_error(&mt_codec_dubbo, NULL, h, 16, MT_CODEC_E_TOO_LARGE, "exceeds the limit");
    const mt_codec_limits_t small = {.max_frame_size = 64};
    h[12] = 0;
    h[13] = 0;
    h[14] = 0;
    h[15] = 49; /* 16 + 49 = 65 > 64 */
    ct_expect_error(&mt_codec_dubbo, &small, h, 16, MT_CODEC_E_TOO_LARGE, "65 bytes");
    h[12] = 0x80; /* negative */
    ct_expect_error(&mt_codec_dubbo, NULL, h, 16, MT_CODEC_E_MALFORMED, "negative body");
}

static void expect_body_error(const mt_wbuf_t *body, const mt_codec_limits_t *limits,
                              mt_codec_errc_t code, const char *needle)
{
    mt_wbuf_t f;
    mt_wbuf_init(&f);
    dubbo_frame(&f, REQ_FLAGS, 0, 1, body);
    ct_expect_error(&mt_codec_dubbo, limits, f.data, f.len, code, needle);
    mt_wbuf_free(&f);
}

Test(dubbo_malformed, truncated_strings_and_values)
{
    mt_wbuf_t b;
    mt_wbuf_init(&b);
    h_str(&b, "2.0.2");
    put1(&b, 10); /* says 10 chars, has 3 */
    put(&b, "abc", 3);
    expect_body_error(&b, NULL, MT_CODEC_E_MALFORMED, "truncated");
    b.len = 0;
    h_invocation(&b, "svc", "1", "m", "I");
    put1(&b, 'I'); /* int needs 4 more bytes */
    put1(&b, 0);
    expect_body_error(&b, NULL, MT_CODEC_E_MALFORMED, "truncated");
    b.len = 0;
    h_invocation(&b, "svc", "1", "m", "");
    put1(&b, 'H');
    h_str(&b, "k");
    expect_body_error(&b, NULL, MT_CODEC_E_MALFORMED, "attachment");
    mt_wbuf_free(&b);
}

Test(dubbo_malformed, bad_descriptor_bad_tags_undefined_class_bad_utf8)
{
    mt_wbuf_t b;
    mt_wbuf_init(&b);
    h_invocation(&b, "svc", "1", "m", "Ljava/lang/String");
    expect_body_error(&b, NULL, MT_CODEC_E_MALFORMED, "descriptor");
    b.len = 0;
    h_invocation(&b, "svc", "1", "m", "Q");
    expect_body_error(&b, NULL, MT_CODEC_E_MALFORMED, "descriptor");
    b.len = 0;
    h_invocation(&b, "svc", "1", "m", "I");
    put1(&b, 0x40); /* reserved tag */
    expect_body_error(&b, NULL, MT_CODEC_E_MALFORMED, "unexpected tag 0x40");
    b.len = 0;
    h_invocation(&b, "svc", "1", "m", "Ljava/lang/Object;");
    put1(&b, 0x61); /* instance of class 1: never defined */
    expect_body_error(&b, NULL, MT_CODEC_E_MALFORMED, "undefined class");
    b.len = 0;
    h_str(&b, "2.0.2");
    put1(&b, 2);
    put1(&b, 0x80); /* continuation byte as a lead */
    put1(&b, 'a');
    expect_body_error(&b, NULL, MT_CODEC_E_MALFORMED, "UTF-8");
    b.len = 0;
    h_invocation(&b, "svc", "1", "m", "");
    h_str(&b, "not a map");
    expect_body_error(&b, NULL, MT_CODEC_E_MALFORMED, "not a map");
    mt_wbuf_free(&b);
}

Test(dubbo_malformed, nesting_too_deep)
{
    mt_wbuf_t b;
    mt_wbuf_init(&b);
    h_invocation(&b, "svc", "1", "m", "Ljava/util/List;");
    for (int i = 0; i < 200; i++)
        put1(&b, 0x79); /* untyped fixed list of one element, nested */
    put1(&b, 'N');
    expect_body_error(&b, NULL, MT_CODEC_E_TOO_DEEP, "nesting deeper than 128");
    const mt_codec_limits_t shallow = {.max_depth = 8};
    b.len = 0;
    h_invocation(&b, "svc", "1", "m", "Ljava/util/List;");
    for (int i = 0; i < 8; i++)
        put1(&b, 'W');
    put1(&b, 'N');
    expect_body_error(&b, &shallow, MT_CODEC_E_TOO_DEEP, "deeper than 8");
    mt_wbuf_free(&b);
}

/* ---- codec properties (the fuzzers' checks) over hand-built frames ----------------------- */

Test(dubbo_properties, hold_on_requests_heartbeats_and_responses)
{
    mt_wbuf_t in, body;
    mt_wbuf_init(&in);
    mt_wbuf_init(&body);
    put1(&in, 0);
    build_hello(&in, 1);
    put1(&body, 'N');
    dubbo_frame(&in, REQ_FLAGS | DUBBO_FLAG_EVENT, 0, 2, &body);
    body.len = 0;
    h_str(&body, "boom");
    dubbo_frame(&in, DUBBO_SERIALIZATION_HESSIAN2, DUBBO_SERVER_ERROR, 1, &body);
    body.len = 0;
    h_invocation(&body, "com.acme.Everything", "2.0", "all", "Ljava/lang/Object;");
    put1(&body, 'N');
    dubbo_frame(&in, DUBBO_FLAG_REQUEST | DUBBO_SERIALIZATION_HESSIAN2, 0, 3, &body);
    const uint8_t modes[] = {0x00, 0x02, 0x0e, 0x40, 0x81, 0xc0};
    for (size_t m = 0; m < sizeof(modes); m++) {
        in.data[0] = modes[m];
        cp_run(&mt_codec_dubbo, false, in.data, in.len); /* aborts on a violation */
    }
    mt_wbuf_free(&in);
    mt_wbuf_free(&body);
}

/* ---- attribute filters ------------------------------------------------------------------- */

Test(dubbo_filter, stores_only_wanted_attributes_and_locates_the_rest)
{
    mt_wbuf_t f;
    mt_wbuf_init(&f);
    build_hello(&f, 7);
    mt_attr_filter_t want = {0};
    cr_assert_eq(mt_attr_filter_add(&want, "method", 6), MT_OK);
    cr_assert_eq(mt_attr_filter_add(&want, "group", 5), MT_OK);
    ct_decoder_t d = ct_decoder_new(&mt_codec_dubbo, NULL);
    mt_msg_t m, scratch;
    mt_msg_init(&m);
    mt_msg_init(&scratch);
    m.want = &want;
    mt_codec_err_t err;
    cr_assert_eq(mt_codec_dubbo.decode(d.state, f.data, f.len, &m, &err), MT_OK);
    cr_assert_eq(m.frame_len, f.len);
    cr_assert_eq(m.nattrs, 2);
    ct_assert_attr(&m, "method", "sayHello");
    ct_assert_attr(&m, "group", "blue");
    cr_assert_null(mt_msg__find(&m, "timeout", 7));
    const mt_str_t *v = mt_msg_locate(&m, "timeout", 7, &scratch);
    cr_assert(v && mt_str_eq(*v, "3000", 4), "found on demand");
    v = mt_msg_locate(&m, "interface", 9, &scratch);
    cr_assert(v && mt_str_eq(*v, "org.apache.dubbo.demo.DemoService", 33));
    /* a mutation still sees every attachment: encode walks the frame itself */
    const mt_attr_t set[] = {{MT_STR("timeout"), MT_STR("10")}};
    mt_mutation_t mut = {set, 1};
    mt_wbuf_t out;
    mt_wbuf_init(&out);
    cr_assert_eq(mt_codec_dubbo.encode(&m, &mut, &out, &err), MT_OK);
    mt_msg_t after;
    mt_msg_init(&after);
    ct_decoder_t d2 = ct_decoder_new(&mt_codec_dubbo, NULL);
    cr_assert_eq(mt_codec_dubbo.decode(d2.state, out.data, out.len, &after, &err), MT_OK);
    ct_assert_attr(&after, "timeout", "10");
    ct_assert_attr(&after, "group", "blue");
    cr_assert_eq(after.nattrs, 6);
    ct_decoder_free(&d2);
    mt_msg_free(&after);
    mt_wbuf_free(&out);
    ct_decoder_free(&d);
    mt_msg_free(&scratch);
    mt_msg_free(&m);
    mt_attr_filter_free(&want);
    mt_wbuf_free(&f);
}

Test(dubbo_filter, bad_attachments_fail_the_same_with_a_filter)
{
    mt_wbuf_t b, f;
    mt_wbuf_init(&b);
    mt_wbuf_init(&f);
    h_invocation(&b, "svc", "1", "m", "");
    put1(&b, 'H');
    h_str(&b, "k");
    put1(&b, 2);
    put1(&b, 0x80); /* a continuation byte as a lead, in a value nobody wants */
    put1(&b, 'a');
    put1(&b, 'Z');
    dubbo_frame(&f, REQ_FLAGS, 0, 1, &b);
    mt_attr_filter_t want = {0};
    cr_assert_eq(mt_attr_filter_add(&want, "method", 6), MT_OK);
    char first[MT_CODEC_ERR_TEXT] = "";
    for (int filtered = 0; filtered < 2; filtered++) {
        ct_decoder_t d = ct_decoder_new(&mt_codec_dubbo, NULL);
        mt_msg_t m;
        mt_msg_init(&m);
        m.want = filtered ? &want : NULL;
        mt_codec_err_t err = {0};
        cr_assert_eq(mt_codec_dubbo.decode(d.state, f.data, f.len, &m, &err), MT_ERROR);
        cr_assert_eq(err.code, MT_CODEC_E_MALFORMED);
        cr_assert(strstr(err.text, "invalid UTF-8 byte 0x80 at offset 35"), "%s", err.text);
        if (filtered)
            cr_assert_str_eq(err.text, first);
        memcpy(first, err.text, sizeof(first));
        ct_decoder_free(&d);
        mt_msg_free(&m);
    }
    mt_attr_filter_free(&want);
    mt_wbuf_free(&f);
    mt_wbuf_free(&b);
}

Test(dubbo_filter, response_status_only_when_wanted)
{
    mt_wbuf_t body, f;
    mt_wbuf_init(&body);
    mt_wbuf_init(&f);
    put1(&body, 0x91); /* RESPONSE_VALUE */
    h_str(&body, "hi");
    const uint8_t statuses[] = {DUBBO_OK, DUBBO_SERVER_THREADPOOL_EXHAUSTED, 5, 255};
    const char *const texts[] = {"20", "100", "5", "255"};
    mt_attr_filter_t want = {0}, none = {0};
    cr_assert_eq(mt_attr_filter_add(&want, "status", 6), MT_OK);
    cr_assert_eq(mt_attr_filter_add(&none, "method", 6), MT_OK);
    for (size_t i = 0; i < MT_ARRAY_LEN(statuses); i++) {
        f.len = 0;
        dubbo_frame(&f, DUBBO_SERIALIZATION_HESSIAN2, statuses[i], 9, &body);
        ct_decoder_t d = ct_decoder_new(&mt_codec_dubbo, NULL);
        mt_msg_t m;
        mt_msg_init(&m);
        mt_codec_err_t err;
        m.want = &want;
        cr_assert_eq(mt_codec_dubbo.decode(d.state, f.data, f.len, &m, &err), MT_OK);
        ct_assert_attr(&m, "status", texts[i]);
        m.want = &none;
        cr_assert_eq(mt_codec_dubbo.decode(d.state, f.data, f.len, &m, &err), MT_OK);
        cr_assert_eq(m.nattrs, 0);
        cr_assert_eq(m.type, statuses[i] == DUBBO_OK ? MT_MSG_RESPONSE : MT_MSG_ERROR);
        ct_decoder_free(&d);
        mt_msg_free(&m);
    }
    mt_attr_filter_free(&want);
    mt_attr_filter_free(&none);
    mt_wbuf_free(&f);
    mt_wbuf_free(&body);
}
