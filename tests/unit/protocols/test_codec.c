/*
 * test_codec.c - protocols/codec.c, the protocol-independent codec pieces: output buffer, arena,
 * message attributes and rebasing, error text, the registry.
 */
#include "protocols/codec.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

Test(wbuf, appends_grow_and_encode_big_endian)
{
    mt_wbuf_t b;
    mt_wbuf_init(&b);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(mt_wbuf_append_u8(&b, (uint8_t)i), MT_OK);
    cr_assert_eq(b.len, 1000);
    cr_assert_geq(b.cap, 1000);
    cr_assert_eq(b.data[999], (uint8_t)999);
    b.len = 0;
    mt_wbuf_append_be16(&b, 0x0102);
    mt_wbuf_append_be32(&b, 0x03040506);
    mt_wbuf_append_be64(&b, 0x0708090a0b0c0d0eull);
    const uint8_t want[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
    cr_assert_eq(b.len, sizeof(want));
    cr_assert_arr_eq(b.data, want, sizeof(want));
    mt_wbuf_put_be32_at(&b, 2, 0xdeadbeef);
    cr_assert_eq(b.data[2], 0xde);
    cr_assert_eq(b.data[5], 0xef);
    mt_wbuf_free(&b);
    cr_assert_null(b.data);
}

Test(wbuf, uvarint_is_leb128)
{
    mt_wbuf_t b;
    mt_wbuf_init(&b);
    mt_wbuf_append_uvarint(&b, 0);
    mt_wbuf_append_uvarint(&b, 127);
    mt_wbuf_append_uvarint(&b, 128);
    mt_wbuf_append_uvarint(&b, 300);
    const uint8_t want[] = {0x00, 0x7f, 0x80, 0x01, 0xac, 0x02};
    cr_assert_eq(b.len, sizeof(want));
    cr_assert_arr_eq(b.data, want, sizeof(want));
    mt_wbuf_free(&b);
}

Test(arena, allocations_are_stable_and_reset_keeps_one_block)
{
    mt_arena_t a;
    mt_arena_init(&a);
    char *first = mt_arena_alloc(&a, 10);
    memcpy(first, "0123456789", 10);
    for (int i = 0; i < 100; i++)
        cr_assert_not_null(mt_arena_alloc(&a, 100)); /* forces new blocks */
    cr_assert_eq(memcmp(first, "0123456789", 10), 0, "earlier allocations never move");
    char *big = mt_arena_alloc(&a, 1 << 20);
    cr_assert_not_null(big);
    memset(big, 'x', 1 << 20);
    mt_arena_reset(&a);
    cr_assert_not_null(a.head);
    cr_assert_not_null(mt_arena_alloc(&a, 8));
    mt_arena_free(&a);
    cr_assert_null(a.head);
}

Test(msg, attributes_first_writer_wins_and_lookup_by_key)
{
    mt_msg_t m;
    mt_msg_init(&m);
    static const uint8_t frame[] = "method=get;group=blue";
    mt_msg__begin(&m, NULL, frame, sizeof(frame) - 1);
    mt_msg__add_attr(&m, MT_STR("method"), (mt_str_t){(const char *)frame + 7, 3});
    mt_msg__add_attr(&m, MT_STR("group"), (mt_str_t){(const char *)frame + 17, 4});
    mt_msg__add_attr(&m, MT_STR("method"), MT_STR("ignored"));
    cr_assert_eq(m.nattrs, 2);
    const mt_str_t *v = mt_msg_get_cstr(&m, "method");
    cr_assert(mt_str_eq(*v, "get", 3));
    cr_assert_null(mt_msg_get_cstr(&m, "missing"));
    cr_assert_null(mt_msg_get(&m, "meth", 4), "prefix of a key is not a match");
    for (int i = 0; i < 100; i++) { /* grows the attribute array */
        mt_str_t k = mt_msg__strdup(&m, &i, sizeof(i));
        cr_assert_eq(mt_msg__add_attr(&m, k, MT_STR("v")), MT_OK);
    }
    cr_assert_eq(m.nattrs, 102);
    mt_msg__begin(&m, NULL, frame, 3); /* reuse clears */
    cr_assert_eq(m.nattrs, 0);
    mt_msg_free(&m);
}

Test(msg, rebase_moves_frame_views_and_keeps_arena_views)
{
    mt_msg_t m;
    mt_msg_init(&m);
    uint8_t a[16] = "interface=Foo";
    uint8_t b[16];
    mt_msg__begin(&m, NULL, a, 13);
    mt_msg__add_attr(&m, MT_STR("interface"), (mt_str_t){(const char *)a + 10, 3});
    mt_str_t copy = mt_msg__strdup(&m, "arena", 5);
    mt_msg__add_attr(&m, MT_STR("x"), copy);
    memcpy(b, a, sizeof(a));
    memset(a, '?', sizeof(a));
    mt_msg_rebase(&m, b);
    cr_assert_eq(m.frame, b);
    const mt_str_t *v = mt_msg_get_cstr(&m, "interface");
    cr_assert(mt_str_eq(*v, "Foo", 3));
    cr_assert_eq(v->ptr, (const char *)b + 10);
    cr_assert_eq(mt_msg_get_cstr(&m, "x")->ptr, copy.ptr);
    mt_msg_free(&m);
}

Test(errors, names_and_fail_fills_text)
{
    cr_assert_str_eq(mt_error_kind_name(MT_ERR_ROUTE_NOT_FOUND), "route_not_found");
    cr_assert_str_eq(mt_error_kind_name(MT_ERR_OVER_LIMIT), "over_limit");
    cr_assert_str_eq(mt_error_kind_name((mt_error_kind_t)99), "unspecified");
    cr_assert_str_eq(mt_msg_type_name(MT_MSG_HEARTBEAT), "heartbeat");
    cr_assert_str_eq(mt_msg_type_name(MT_MSG_STREAM_INIT), "stream_init");
    mt_codec_err_t err = {0};
    cr_assert_eq(mt_codec_fail(&err, MT_CODEC_E_TOO_LARGE, "x: %d > %d", 3, 2), MT_ERROR);
    cr_assert_eq(err.code, MT_CODEC_E_TOO_LARGE);
    cr_assert_str_eq(err.text, "x: 3 > 2");
    cr_assert_eq(mt_codec_fail(NULL, MT_CODEC_E_MALFORMED, "ignored"), MT_ERROR);
}

static mt_status_t fake_decode(void *s, const uint8_t *b, size_t l, mt_msg_t *m, mt_codec_err_t *e)
{
    return MT_AGAIN;
}

static const char *const fake_aliases[] = {"acme.codec.fake", NULL};
static const mt_codec_t fake = {.name = "fake", .aliases = fake_aliases, .decode = fake_decode};
static const mt_codec_t fake_clash = {.name = "acme.codec.fake", .decode = fake_decode};

Test(registry, builtins_answer_to_names_and_aeraki_aliases)
{
    mt_codec_registry_clear();
    cr_assert_eq(mt_codec_register_builtins(), MT_OK);
    cr_assert_eq(mt_codec_register_builtins(), MT_OK, "idempotent");
    cr_assert_eq(mt_codec_find("dubbo"), &mt_codec_dubbo);
    cr_assert_eq(mt_codec_find("thrift"), &mt_codec_thrift);
    cr_assert_eq(mt_codec_find("aeraki.meta_protocol.codec.dubbo"), &mt_codec_dubbo);
    cr_assert_eq(mt_codec_find("aeraki.meta_protocol.codec.thrift"), &mt_codec_thrift);
    cr_assert_null(mt_codec_find("redis"));
    cr_assert_null(mt_codec_find(NULL));
    cr_assert(mt_codec_dubbo.flags & MT_CODEC_F_MULTIPLEXED);
    cr_assert(mt_codec_dubbo.flags & MT_CODEC_F_LOCAL_HEARTBEAT);
    cr_assert_not(mt_codec_thrift.flags & MT_CODEC_F_MULTIPLEXED, "thrift is in order");
    cr_assert_null(mt_codec_thrift.heartbeat_reply);
    mt_codec_registry_clear();
}

Test(registry, rejects_duplicate_names_and_aliases)
{
    mt_codec_registry_clear();
    cr_assert_eq(mt_codec_register(&fake), MT_OK);
    cr_assert_eq(mt_codec_register(&fake), MT_ERROR);
    cr_assert_eq(mt_codec_register(&fake_clash), MT_ERROR, "name clashes with an alias");
    cr_assert_eq(mt_codec_find("acme.codec.fake"), &fake);
    cr_assert_eq(mt_codec_register(NULL), MT_ERROR);
    mt_codec_registry_clear();
    cr_assert_null(mt_codec_find("fake"));
}

/* ---- attribute filters, numbers as text, locating what a filter left out ------------------ */

Test(attr_filter, keys_are_found_by_length_and_bytes_and_added_once)
{
    mt_attr_filter_t f = {0};
    cr_assert_not(mt_attr_filter_has(&f, "method", 6), "an empty filter has nothing");
    cr_assert_eq(mt_attr_filter_add(&f, "method", 6), MT_OK);
    cr_assert_eq(mt_attr_filter_add(&f, "method", 6), MT_OK);
    cr_assert_eq(mt_attr_filter_add(&f, NULL, 0), MT_OK, "a missing key is no key");
    cr_assert_eq(f.n, 1);
    char long_key[100];
    memset(long_key, 'k', sizeof(long_key));
    for (int i = 0; i < 20; i++) /* grows past its first array */
        cr_assert_eq(mt_attr_filter_add(&f, long_key, 64 + (size_t)i), MT_OK);
    cr_assert_eq(f.n, 21);
    cr_assert(mt_attr_filter_has(&f, "method", 6));
    cr_assert_not(mt_attr_filter_has(&f, "metho", 5));
    cr_assert_not(mt_attr_filter_has(&f, "methox", 6), "same length, other bytes");
    cr_assert(mt_attr_filter_has(&f, long_key, 70));
    cr_assert_not(mt_attr_filter_has(&f, long_key, 90), "a length it does not hold");
    mt_attr_filter_free(&f);
    cr_assert_eq(f.n, 0);
}

Test(attr_filter, keys_sharing_a_slot_are_all_found_and_each_add_changes_the_generation)
{
    mt_attr_filter_t f = {0};
    cr_assert_eq(mt_attr_filter_slot("ab", 2), mt_attr_filter_slot("c\\", 2), "a shared slot");
    cr_assert_eq(mt_attr_filter_add(&f, "ab", 2), MT_OK);
    uint32_t g1 = f.gen;
    cr_assert_neq(g1, 0);
    cr_assert_not(mt_attr_filter_has(&f, "c\\", 2), "the slot's one key is compared");
    cr_assert_eq(mt_attr_filter_add(&f, "c\\", 2), MT_OK);
    cr_assert_neq(f.gen, g1);
    cr_assert_eq(f.slot[mt_attr_filter_slot("ab", 2)], MT_ATTR_FILTER_MANY);
    cr_assert(mt_attr_filter_has(&f, "ab", 2));
    cr_assert(mt_attr_filter_has(&f, "c\\", 2));
    cr_assert_not(mt_attr_filter_has(&f, "zz", 2));
    cr_assert_not(mt_attr_filter_has(&f, "", 0));
    cr_assert_eq(mt_attr_filter_add(&f, "", 0), MT_OK, "an empty key is a key");
    cr_assert(mt_attr_filter_has(&f, "", 0));
    mt_attr_filter_free(&f);
    cr_assert_not(mt_attr_filter_has(&f, "ab", 2));
}

Test(msg, add_attr_stores_only_what_the_filter_wants)
{
    mt_attr_filter_t f = {0};
    cr_assert_eq(mt_attr_filter_add(&f, "b", 1), MT_OK);
    mt_msg_t m;
    mt_msg_init(&m);
    m.want = &f;
    const uint8_t frame[] = "abcd";
    mt_msg__begin(&m, NULL, frame, 4);
    cr_assert_eq(mt_msg__add_attr(&m, MT_STR("a"), MT_STR("1")), MT_OK);
    cr_assert_eq(mt_msg__add_attr(&m, MT_STR("b"), MT_STR("2")), MT_OK);
    cr_assert_eq(m.nattrs, 1);
    cr_assert_not(mt_msg__wants(&m, "a", 1));
    cr_assert(mt_msg__wants(&m, "b", 1));
    cr_assert_null(mt_msg__find(&m, "a", 1));
    cr_assert_eq(mt_msg_get_cstr(&m, "b")->ptr[0], '2');
    mt_msg__begin(&m, NULL, frame, 4);
    cr_assert_eq(m.want, &f, "the filter outlives a decode");
    m.want = NULL;
    cr_assert(mt_msg__wants(&m, "a", 1), "no filter: everything");
    mt_msg_free(&m);
    mt_attr_filter_free(&f);
}

static void expect_dec(mt_msg_t *m, int64_t v, const char *want)
{
    mt_str_t s = mt_msg__dec(m, v);
    cr_assert_not_null(s.ptr);
    cr_assert(mt_str_eq(s, want, strlen(want)), "%lld -> %.*s, want %s", (long long)v, (int)s.len,
              s.ptr, want);
}

Test(msg, dec_writes_decimal_text_without_printf)
{
    mt_msg_t m;
    mt_msg_init(&m);
    char want[32];
    for (int64_t v = -1000; v <= 1000; v++) {
        snprintf(want, sizeof(want), "%lld", (long long)v);
        expect_dec(&m, v, want);
    }
    expect_dec(&m, INT32_MIN, "-2147483648");
    expect_dec(&m, INT32_MAX, "2147483647");
    expect_dec(&m, INT64_MIN, "-9223372036854775808");
    expect_dec(&m, INT64_MAX, "9223372036854775807");
    mt_msg_free(&m);
}

static const mt_codec_t kv_codec;

/* A codec whose decode stores attribute "k<i>" = "v<i>" for i in 0..3 (through the filter). */
static mt_status_t kv_decode(void *s, const uint8_t *b, size_t l, mt_msg_t *m, mt_codec_err_t *e)
{
    (void)s;
    (void)e;
    static const mt_attr_t kv[] = {{MT_STR("k0"), MT_STR("v0")},
                                   {MT_STR("k1"), MT_STR("v1")},
                                   {MT_STR("k2"), MT_STR("v2")},
                                   {MT_STR("k3"), MT_STR("v3")}};
    mt_msg__begin(m, &kv_codec, b, l);
    for (size_t i = 0; i < MT_ARRAY_LEN(kv); i++) {
        if (mt_msg__add_attr(m, kv[i].key, kv[i].val) != MT_OK)
            return MT_ERROR;
    }
    return MT_OK;
}

static mt_status_t kv_init(void *s, const mt_codec_limits_t *l)
{
    (void)s;
    (void)l;
    return MT_OK;
}

static void kv_free(void *s)
{
    (void)s;
}

static const mt_codec_t kv_codec = {
    .name = "kv", .state_size = 1, .init = kv_init, .free = kv_free, .decode = kv_decode};

Test(msg, locate_decodes_again_for_a_key_the_filter_left_out)
{
    mt_attr_filter_t f = {0};
    cr_assert_eq(mt_attr_filter_add(&f, "k1", 2), MT_OK);
    mt_msg_t m, scratch;
    mt_msg_init(&m);
    mt_msg_init(&scratch);
    m.codec = &kv_codec;
    m.want = &f;
    const uint8_t frame[] = "frame";
    cr_assert_eq(kv_decode(NULL, frame, 5, &m, NULL), MT_OK);
    cr_assert_eq(m.nattrs, 1);
    const mt_str_t *v = mt_msg_locate(&m, "k3", 2, &scratch);
    cr_assert_not_null(v);
    cr_assert(mt_str_eq(*v, "v3", 2));
    v = mt_msg_locate(&m, "k1", 2, &scratch);
    cr_assert(v == mt_msg_get_cstr(&m, "k1"), "a stored attribute is the message's own");
    cr_assert_null(mt_msg_locate(&m, "k9", 2, &scratch), "absent from the frame too");
    mt_msg_free(&scratch);
    mt_msg_free(&m);
    mt_attr_filter_free(&f);
}
