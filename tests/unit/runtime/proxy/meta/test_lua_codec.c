/*
 * test_lua_codec.c - Lua codecs as the runtime sees them (runtime/proxy/meta/lua_codec.c):
 * the example's mrpc codec keeps every property of tests/unit/protocols/codec_props.h,
 * frames come out of a pipelined, byte-by-byte fed stream with their attributes, C waits for
 * the bytes a codec said it needs without asking it again, the frame limit is C's, a codec
 * that fails is MT_CODEC_E_CODEC_FAILED for that call (counted) and the next call works,
 * and equal definitions share one reference-counted codec.
 */
#include "runtime/luajit/lua_env.h"
#include "runtime/proxy/meta/lua_codec.h"
#include "tests/unit/protocols/codec_props.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------- */

static char *read_repo_file(const char *rel)
{
    const char *self = __FILE__;
    const char *tail = strstr(self, "tests/unit/runtime/proxy/meta/");
    cr_assert_not_null(tail, "built from %s", self);
    char path[4096];
    snprintf(path, sizeof(path), "%.*s%s", (int)(tail - self), self, rel);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

/* A codec from Lua source, built the way the compiler and snapshot reader build it. */
static const mt_codec_t *codec_from(const char *protocol, const char *code)
{
    lua_State *L = mt_lua_new();
    cr_assert_not_null(L);
    const char *prog = "local protocol, code = ...\n"
                       "local codec = require 'meltemi.codec'\n"
                       "local cd = assert(codec.load(code, protocol))\n"
                       "local def = codec.props(cd)\n"
                       "def.protocol, def.code, def.chunkname = protocol, code, protocol\n"
                       "return { lua_codec = def }\n";
    cr_assert_eq(luaL_loadstring(L, prog), 0);
    lua_pushstring(L, protocol);
    lua_pushstring(L, code);
    cr_assert_eq(lua_pcall(L, 2, 1, 0), 0, "%s", lua_tostring(L, -1));
    char *err = NULL;
    const mt_codec_t *c = mt_lua_codec_from_snapshot(L, lua_gettop(L), &err);
    cr_assert_not_null(c, "%s", err ? err : "?");
    lua_close(L);
    return c;
}

static const mt_codec_t *mrpc_codec(void)
{
    char *code = read_repo_file("examples/custom-protocol/mrpc.lua");
    const mt_codec_t *c = codec_from("mrpc", code);
    free(code);
    return c;
}

/* An mrpc frame: flags, id, service, method, headers (k, v pairs, NULL-terminated), body. */
static size_t mrpc_frame(uint8_t *out, uint8_t flags, uint32_t id, const char *service,
                         const char *method, const char *const *headers, const char *body)
{
    size_t n = 12;
    const char *strs[2] = {service, method};
    for (int i = 0; i < 2; i++) {
        size_t l = strlen(strs[i]);
        out[n] = (uint8_t)(l >> 8);
        out[n + 1] = (uint8_t)l;
        memcpy(out + n + 2, strs[i], l);
        n += 2 + l;
    }
    size_t count = 0;
    while (headers && headers[2 * count])
        count++;
    out[n] = 0;
    out[n + 1] = (uint8_t)count;
    n += 2;
    for (size_t i = 0; i < 2 * count; i++) {
        size_t l = strlen(headers[i]);
        out[n] = 0;
        out[n + 1] = (uint8_t)l;
        memcpy(out + n + 2, headers[i], l);
        n += 2 + l;
    }
    memcpy(out + n, body, strlen(body));
    n += strlen(body);
    uint8_t head[12] = {0x4d,
                        0x52,
                        flags,
                        1,
                        (uint8_t)(n >> 24),
                        (uint8_t)(n >> 16),
                        (uint8_t)(n >> 8),
                        (uint8_t)n,
                        (uint8_t)(id >> 24),
                        (uint8_t)(id >> 16),
                        (uint8_t)(id >> 8),
                        (uint8_t)id};
    memcpy(out, head, 12);
    return n;
}

static void *state_of(const mt_codec_t *c)
{
    void *st = calloc(1, c->state_size);
    cr_assert_not_null(st);
    cr_assert_eq(mt_codec_init(c, st, NULL), MT_OK);
    return st;
}

static void state_free(const mt_codec_t *c, void *st)
{
    c->free(st);
    free(st);
}

static void fini(void)
{
    mt_lua_codec_thread_end();
}

TestSuite(lua_codec, .fini = fini);

/* ---- mrpc, the example ------------------------------------------------------------------ */

Test(lua_codec, mrpc_decodes_a_pipelined_stream_fed_byte_by_byte)
{
    const mt_codec_t *c = mrpc_codec();
    cr_assert(mt_lua_codec_is(c));
    cr_assert_str_eq(c->name, "mrpc");
    cr_assert(c->flags & MT_CODEC_F_MULTIPLEXED);
    cr_assert(c->flags & MT_CODEC_F_LOCAL_HEARTBEAT);
    uint8_t stream[512];
    const char *h[] = {"user", "alice", "trace", "t1", NULL};
    size_t a = mrpc_frame(stream, 0, 7, "Orders", "get", h, "body");
    size_t b = mrpc_frame(stream + a, 2, 8, "Orders", "notify", NULL, "");
    size_t d = mrpc_frame(stream + a + b, 4, 9, "", "", NULL, "");
    size_t total = a + b + d;
    void *st = state_of(c);
    mt_msg_t m;
    mt_msg_init(&m);
    size_t off = 0, avail = 0;
    int frames = 0;
    mt_msg_type_t types[3];
    uint64_t ids[3];
    while (off < total) {
        avail++;
        mt_codec_err_t err = {0};
        mt_status_t rc = c->decode(st, stream + off, avail, &m, &err);
        cr_assert_neq(rc, MT_ERROR, "%s", err.text);
        if (rc == MT_AGAIN)
            continue;
        if (frames == 0) {
            cr_assert_eq(m.frame_len, a);
            const mt_str_t *u = mt_msg_get_cstr(&m, "user"), *s = mt_msg_get_cstr(&m, "service");
            cr_assert(u && mt_str_eq(*u, "alice", 5));
            cr_assert(s && mt_str_eq(*s, "Orders", 6));
            cr_assert_eq(m.nattrs, 4);
            cr_assert(m.expects_reply && !m.is_reply);
        }
        types[frames] = m.type;
        ids[frames++] = m.request_id;
        off += m.frame_len;
        avail = 0;
    }
    cr_assert_eq(frames, 3);
    cr_assert_eq(types[0], MT_MSG_REQUEST);
    cr_assert_eq(types[1], MT_MSG_ONEWAY);
    cr_assert_eq(types[2], MT_MSG_HEARTBEAT);
    cr_assert(ids[0] == 7 && ids[1] == 8 && ids[2] == 9);
    mt_msg_free(&m);
    state_free(c, st);
    mt_lua_codec_release(c);
}

Test(lua_codec, mrpc_keeps_the_codec_properties)
{
    const mt_codec_t *c = mrpc_codec();
    uint8_t in[1 + 512];
    const char *h[] = {"a", "1", "b", "2", "c", "3", NULL};
    size_t n = 0;
    in[n++] = 0; /* whole stream at once, default limits, route_not_found */
    n += mrpc_frame(in + n, 0, 1, "S", "m", h, "x");
    n += mrpc_frame(in + n, 2, 2, "S", "m", NULL, "");
    n += mrpc_frame(in + n, 4, 3, "", "", NULL, "");
    n += mrpc_frame(in + n, 1, 4, "S", "m", h, "reply");
    cp_run(c, false, in, n); /* aborts on a violated property */
    in[0] = 3 << 1;          /* fed 3 bytes at a time */
    cp_run(c, false, in, n);
    mt_lua_codec_release(c);
}

Test(lua_codec, mrpc_mutation_and_declared_request_id)
{
    const mt_codec_t *c = mrpc_codec();
    uint8_t f[256];
    const char *h[] = {"user", "bob", "drop", "me", NULL};
    size_t n = mrpc_frame(f, 0, 41, "Orders", "get", h, "b");
    void *st = state_of(c);
    mt_msg_t m;
    mt_msg_init(&m);
    mt_codec_err_t err = {0};
    cr_assert_eq(c->decode(st, f, n, &m, &err), MT_OK);
    mt_attr_t items[] = {{MT_STR("user"), MT_STR("carol")},
                         {MT_STR("drop"), {NULL, 0}},
                         {MT_STR("x-new"), MT_STR("1")},
                         {MT_STR("user"), {NULL, 0}}}; /* a repeated key: the first wins */
    mt_mutation_t mut = {items, 4};
    mt_wbuf_t out;
    mt_wbuf_init(&out);
    cr_assert_eq(c->encode(&m, &mut, &out, &err), MT_OK, "%s", err.text);
    mt_msg_t again;
    mt_msg_init(&again);
    cr_assert_eq(c->decode(st, out.data, out.len, &again, &err), MT_OK);
    const mt_str_t *u = mt_msg_get_cstr(&again, "user"), *x = mt_msg_get_cstr(&again, "x-new");
    cr_assert(u && mt_str_eq(*u, "carol", 5));
    cr_assert(x && mt_str_eq(*x, "1", 1));
    cr_assert_null(mt_msg_get_cstr(&again, "drop"));
    cr_assert_eq(again.request_id, 41);
    /* the id is rewritten in C where the codec declared it */
    cr_assert_eq(mt_codec_set_request_id(c, out.data, out.len, 0x01020304), MT_OK);
    cr_assert(out.data[8] == 1 && out.data[9] == 2 && out.data[10] == 3 && out.data[11] == 4);
    cr_assert_eq(mt_codec_set_request_id(c, out.data, out.len, 1ull << 40), MT_ERROR, "4 bytes");
    cr_assert_eq(mt_codec_set_request_id(c, out.data, 10, 1), MT_ERROR, "short frame");
    mt_wbuf_free(&out);
    mt_msg_free(&again);
    mt_msg_free(&m);
    state_free(c, st);
    mt_lua_codec_release(c);
}

Test(lua_codec, kvtext_keeps_the_codec_properties)
{
    char *code = read_repo_file("examples/custom-protocol/kvtext.lua");
    const mt_codec_t *c = codec_from("kvtext", code);
    free(code);
    cr_assert(!(c->flags & MT_CODEC_F_MULTIPLEXED));
    static const char stream[] = "\x00get user:1\r\nset k 3\r\nabc\r\nset k 1 noreply\r\nz\r\n"
                                 "delete k\r\nVALUE k 3\r\nabc\r\nEND\r\nSTORED\r\nEND\r\n"
                                 "SERVER_ERROR x\r\n";
    cp_run(c, false, (const uint8_t *)stream, sizeof(stream) - 1);
    void *st = state_of(c);
    mt_msg_t m;
    mt_msg_init(&m);
    mt_codec_err_t err = {0};
    const char *set = "set user:9 5 noreply\r\nhello\r\n";
    cr_assert_eq(c->decode(st, (const uint8_t *)set, strlen(set), &m, &err), MT_OK, "%s", err.text);
    cr_assert_eq(m.frame_len, strlen(set));
    cr_assert_eq(m.type, MT_MSG_ONEWAY);
    const mt_str_t *k = mt_msg_get_cstr(&m, "key");
    cr_assert(k && mt_str_eq(*k, "user:9", 6));
    mt_msg_free(&m);
    state_free(c, st);
    mt_lua_codec_release(c);
}

/* ---- what C keeps ----------------------------------------------------------------------- */

/* Says it needs 100 bytes, and raises if asked again with fewer. */
static const char *NEEDY = "return { max_frame_size = 200,\n"
                           "  decode = function(buf)\n"
                           "    if #buf < 100 then\n"
                           "      if #buf > 1 then error('asked again too early') end\n"
                           "      return nil, 100 - #buf\n"
                           "    end\n"
                           "    if buf:sub(1, 1) == 'L' then return nil, 1000 end\n"
                           "    return 100, { type = 'request', attrs = { k = 'v' } }\n"
                           "  end,\n"
                           "  error_reply = function() return 'E' end }\n";

Test(lua_codec, c_waits_for_the_missing_bytes_and_enforces_the_frame_limit)
{
    const mt_codec_t *c = codec_from("needy", NEEDY);
    void *st = state_of(c);
    uint8_t buf[300];
    memset(buf, 'a', sizeof(buf));
    mt_msg_t m;
    mt_msg_init(&m);
    mt_codec_err_t err = {0};
    cr_assert_eq(c->decode(st, buf, 1, &m, &err), MT_AGAIN);
    for (size_t n = 2; n < 100; n++) /* Lua would raise: C must not ask */
        cr_assert_eq(c->decode(st, buf, n, &m, &err), MT_AGAIN, "%zu: %s", n, err.text);
    cr_assert_eq(c->decode(st, buf, 150, &m, &err), MT_OK, "%s", err.text);
    cr_assert_eq(m.frame_len, 100);
    buf[100] = 'L'; /* the next frame wants more than max_frame_size */
    cr_assert_eq(c->decode(st, buf + 100, 150, &m, &err), MT_ERROR);
    cr_assert_eq(err.code, MT_CODEC_E_TOO_LARGE, "%s", err.text);
    cr_assert_eq(mt_lua_codec_failures(c), 0, "a too large frame is the peer's fault");
    mt_msg_free(&m);
    state_free(c, st);
    mt_lua_codec_release(c);
}

static const char *BROKEN =
    "return {\n"
    "  decode = function(buf)\n"
    "    local b = buf:sub(1, 1)\n"
    "    if b == 'e' then error('broken on purpose') end\n"
    "    if b == 'n' then return 10 ^ 9, { type = 'request' } end\n"
    "    if b == 'z' then return nil, -3 end\n"
    "    if b == 'l' then while true do end end\n"
    "    if b == 't' then return 1, { type = 'nope' } end\n"
    "    if b == 'a' then return 1, { type = 'request', attrs = { k = 1 } } end\n"
    "    return 1, { type = 'request' }\n"
    "  end,\n"
    "  error_reply = function(frame) if frame == 'x' then\n"
    "    error('no reply') end return 'E' end }\n";

Test(lua_codec, a_failing_codec_fails_the_call_is_counted_and_recovers)
{
    const mt_codec_t *c = codec_from("broken", BROKEN);
    const char *traps[] = {"e", "n", "z", "l", "t"};
    const char *texts[] = {"broken on purpose", "is not within", "bytes still missing", "exceeded",
                           "unknown message type"};
    for (size_t i = 0; i < MT_ARRAY_LEN(traps); i++) {
        void *st = state_of(c);
        mt_msg_t m;
        mt_msg_init(&m);
        mt_codec_err_t err = {0};
        cr_assert_eq(c->decode(st, (const uint8_t *)traps[i], 1, &m, &err), MT_ERROR, "%s",
                     traps[i]);
        cr_assert_eq(err.code, MT_CODEC_E_CODEC_FAILED);
        cr_assert(strstr(err.text, "lua codec broken: decode") != NULL, "%s", err.text);
        cr_assert(strstr(err.text, texts[i]) != NULL, "%s: %s", traps[i], err.text);
        cr_assert_eq(mt_lua_codec_failures(c), 2 * i + 1, "decode and on_error failures count");
        state_free(c, st);
        /* a fresh connection decodes again */
        st = state_of(c);
        cr_assert_eq(c->decode(st, (const uint8_t *)"ok", 2, &m, &err), MT_OK, "%s", err.text);
        /* on_error failing is an error for the caller, with nothing appended */
        m.frame = (const uint8_t *)"x";
        m.frame_len = 1;
        mt_wbuf_t out;
        mt_wbuf_init(&out);
        cr_assert_eq(c->on_error(&m, MT_ERR_ROUTE_NOT_FOUND, "t", &out), MT_ERROR);
        cr_assert_eq(out.len, 0);
        mt_wbuf_free(&out);
        mt_msg_free(&m);
        state_free(c, st);
    }
    mt_lua_codec_release(c);
}

Test(lua_codec, encode_without_an_encode_function_copies_or_has_no_mutable_headers)
{
    const mt_codec_t *c = codec_from("broken", BROKEN);
    void *st = state_of(c);
    mt_msg_t m;
    mt_msg_init(&m);
    mt_codec_err_t err = {0};
    cr_assert_eq(c->decode(st, (const uint8_t *)"ok", 2, &m, &err), MT_OK);
    mt_wbuf_t out;
    mt_wbuf_init(&out);
    cr_assert_eq(c->encode(&m, NULL, &out, &err), MT_OK, "no mutation: a byte copy");
    cr_assert(out.len == 1 && out.data[0] == (uint8_t)'o', "the one-byte frame");
    out.len = 0;
    mt_attr_t item = {MT_STR("k"), MT_STR("v")};
    mt_mutation_t mut = {&item, 1};
    cr_assert_eq(c->encode(&m, &mut, &out, &err), MT_ERROR);
    cr_assert_eq(err.code, MT_CODEC_E_NO_MUTABLE_HEADERS);
    cr_assert_eq(out.len, 0);
    cr_assert_eq(mt_lua_codec_failures(c), 0);
    cr_assert_null(c->heartbeat_reply, "no local heartbeat declared");
    cr_assert(!mt_codec_has_request_id(c), "in order: no id to rewrite");
    mt_wbuf_free(&out);
    mt_msg_free(&m);
    state_free(c, st);
    mt_lua_codec_release(c);
}

/* ---- sharing and lifetime --------------------------------------------------------------- */

Test(lua_codec, equal_definitions_share_one_codec_that_outlives_its_snapshots)
{
    const mt_codec_t *a = codec_from("needy", NEEDY);
    const mt_codec_t *b = codec_from("needy", NEEDY);
    cr_assert_eq(a, b, "an unchanged codec is the same table after a reload");
    const mt_codec_t *other = codec_from("needy", BROKEN);
    cr_assert_neq(a, other, "a changed source is a new codec");
    void *st = state_of(a); /* a connection holds its codec */
    mt_lua_codec_release(a);
    mt_lua_codec_release(b);
    mt_lua_codec_release(other);
    uint8_t buf[120];
    memset(buf, 'a', sizeof(buf));
    mt_msg_t m;
    mt_msg_init(&m);
    mt_codec_err_t err = {0};
    cr_assert_eq(a->decode(st, buf, sizeof(buf), &m, &err), MT_OK, "%s", err.text);
    cr_assert_eq(m.codec, a);
    mt_msg_free(&m);
    state_free(a, st); /* the last reference: freed (ASan checks) */
    mt_lua_codec_release(NULL);
}
