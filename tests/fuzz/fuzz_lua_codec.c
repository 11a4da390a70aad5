/*
 * fuzz_lua_codec.c - libFuzzer harness for the Lua codec boundary (runtime/proxy/meta/
 * lua_codec.c and the driver lua/meltemi/codec.lua). The first input byte picks a codec:
 *
 *   0 mrpc   (examples/custom-protocol/mrpc.lua)    the codec properties of
 *   1 kvtext (examples/custom-protocol/kvtext.lua)  tests/unit/protocols/codec_props.h
 *   2 chaos  a codec that answers whatever the input tells it to: lengths past the buffer,
 *            zero, negative, fractional or huge; "need more" counts of any kind; wrong
 *            types; attributes that are not strings; ids out of range; errors; long
 *            loops (an endless one is cut by the sandbox's budget, ~0.1 s a call: the
 *            unit and integration tests cover it, here it would starve the fuzzer). C
 *            must turn each of these
 *            into MT_OK within the bytes given, MT_AGAIN or MT_ERROR with a text, never
 *            read past the buffer, and keep decoding the next connection.
 *
 * Build: the CMake fuzz section (clang, -DMELTEMI_FUZZ=ON) as fuzz_lua_codec; run from
 * anywhere (the example codecs are found from this file's path):
 *
 *     build-clang/fuzz_lua_codec -max_len=4096 -runs=100000 CORPUS_DIR
 */
#include "runtime/core/log.h"
#include "runtime/luajit/lua_env.h"
#include "runtime/proxy/meta/lua_codec.h"
#include "tests/unit/protocols/codec_props.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Byte 0 of what decode sees picks the answer; byte 1 parametrises it. */
static const char CHAOS[] =
    "local byte = string.byte\n"
    "return { max_frame_size = 1024,\n"
    "  decode = function(buf)\n"
    "    local a, b = byte(buf, 1, 2)\n"
    "    b = b or 0\n"
    "    local k = a % 16\n"
    "    if k == 0 then return nil, b end\n"
    "    if k == 1 then return nil, b - 128 end\n"
    "    if k == 2 then return nil, 1 / 0 end\n"
    "    if k == 3 then return #buf + b, { type = 'request' } end\n"
    "    if k == 4 then return b / 7, { type = 'request' } end\n"
    "    if k == 5 then return 1, { type = ({ 'request', 'response', 'oneway', 'heartbeat',\n"
    "      'error', 'stream', 7 })[b % 7 + 1], id = b * 1e15, reply = b % 2 == 0 } end\n"
    "    if k == 6 then return 1, { type = 'request', attrs = { [b] = 'x' } } end\n"
    "    if k == 7 then return 1, { type = 'request', attrs = { k = b } } end\n"
    "    if k == 8 then error(b) end\n"
    "    if k == 9 then error({}) end\n"
    "    if k == 10 then for _ = 1, b * 1000 do end return nil, 1 end\n"
    "    if k == 11 then return 'x', 'y' end\n"
    "    if k == 12 then return nil, 2 ^ 60 end\n"
    "    if k == 13 then return math.min(#buf, b + 1), { type = 'request', id = b,\n"
    "      attrs = { key = buf:sub(1, b), [buf:sub(2, 3)] = buf } } end\n"
    "    if k == 14 then return -b, { type = 'response' } end\n"
    "    return 1, { type = 'request', id = -1 }\n"
    "  end,\n"
    "  error_reply = function(frame) return frame end }\n";

static const mt_codec_t *codecs[3];

static char *read_beside(const char *rel)
{
    const char *self = __FILE__;
    const char *tail = strstr(self, "tests/fuzz/");
    char path[4096];
    snprintf(path, sizeof(path), "%.*s%s", tail ? (int)(tail - self) : 0, self, rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_lua_codec: cannot read %s\n", path);
        abort();
    }
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

static const mt_codec_t *build(const char *protocol, const char *code)
{
    lua_State *L = mt_lua_new();
    const char *prog = "local protocol, code = ...\n"
                       "local codec = require 'meltemi.codec'\n"
                       "local cd = assert(codec.load(code, protocol))\n"
                       "local def = codec.props(cd)\n"
                       "def.protocol, def.code, def.chunkname = protocol, code, protocol\n"
                       "return { lua_codec = def }\n";
    CP_CHECK(L && luaL_loadstring(L, prog) == 0);
    lua_pushstring(L, protocol);
    lua_pushstring(L, code);
    CP_CHECK(lua_pcall(L, 2, 1, 0) == 0);
    char *err = NULL;
    const mt_codec_t *c = mt_lua_codec_from_snapshot(L, lua_gettop(L), &err);
    CP_CHECK(c != NULL);
    lua_close(L);
    return c;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mt_log_threshold = MT_LOG_OFF; /* every malformed input would log a line */
    char *mrpc = read_beside("examples/custom-protocol/mrpc.lua");
    char *kvtext = read_beside("examples/custom-protocol/kvtext.lua");
    codecs[0] = build("mrpc", mrpc);
    codecs[1] = build("kvtext", kvtext);
    codecs[2] = build("chaos", CHAOS);
    free(mrpc);
    free(kvtext);
    return 0;
}

/* The chaos codec: only what C promises, whatever Lua answers. */
static void chaos_run(const mt_codec_t *c, const uint8_t *data, size_t size)
{
    void *st = calloc(1, c->state_size);
    CP_CHECK(st != NULL && mt_codec_init(c, st, NULL) == MT_OK);
    mt_msg_t m;
    mt_msg_init(&m);
    size_t off = 0;
    for (int frames = 0; frames < 16 && off < size; frames++) {
        size_t avail = size - off;
        uint8_t *copy = malloc(avail);
        CP_CHECK(copy != NULL);
        memcpy(copy, data + off, avail);
        mt_codec_err_t err = {0};
        mt_status_t rc = c->decode(st, copy, avail, &m, &err);
        if (rc == MT_OK) {
            CP_CHECK(m.frame_len > 0 && m.frame_len <= avail && m.frame == copy);
            for (uint32_t i = 0; i < m.nattrs; i++) /* copies, readable after the call */
                CP_CHECK(m.attrs[i].key.ptr != NULL && m.attrs[i].val.ptr != NULL);
            off += m.frame_len;
        } else if (rc == MT_ERROR) {
            CP_CHECK(err.text[0] != '\0' && err.code != MT_CODEC_E_NONE);
        }
        free(copy);
        if (rc != MT_OK)
            break;
    }
    mt_msg_free(&m);
    c->free(st);
    free(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const mt_codec_t *c = codecs[data[0] % 3];
    if (data[0] % 3 == 2)
        chaos_run(c, data + 1, size - 1);
    else
        cp_run(c, false, data + 1, size - 1);
    return 0;
}
