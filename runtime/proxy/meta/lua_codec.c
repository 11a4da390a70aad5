/*
 * lua_codec.c - the C side of Lua codecs (lua_codec.h): one mt_codec_t per codec definition,
 * whose functions push bytes into the calling thread's Lua codec state, call the driver
 * (lua/meltemi/codec.lua, which runs the user's function in the sandbox and checks what it
 * returns) and turn its plain answers back into mt_msg_t / mt_wbuf_t.
 *
 * What stays in C, as for every codec: buffering (the runtime's), the frame size limit
 * (max_frame_size: Lua never sees more than that many bytes, and a frame that would need
 * more fails with MT_CODEC_E_TOO_LARGE), waiting for the bytes a codec said it still needs
 * without calling it again, rewriting a declared request id in place, and everything the
 * runtime does after a verdict. Any failure of the Lua side (an error, a tripped limit, a
 * result of the wrong kind) is MT_CODEC_E_CODEC_FAILED for that one call: the runtime fails
 * the connection it came from and nothing else.
 *
 * Sections: the codec objects (main thread, shared), the per-thread Lua state, the codec
 * functions.
 */
#include "runtime/proxy/meta/lua_codec.h"

#include "runtime/core/common.h"
#include "runtime/core/log.h"
#include "runtime/core/snapshot.h"
#include "runtime/luajit/lua_env.h"

#include <lauxlib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mt_lua_codec mt_lua_codec_t;
typedef struct lc_loaded lc_loaded_t;

struct mt_lua_codec {
    mt_codec_t base; /* first: msg->codec and `self` point here */
    char *protocol;  /* base.name */
    char *key;       /* the whole definition: two snapshots share a codec when keys are equal */
    size_t key_len;
    char *code;
    size_t code_len;
    char *chunkname;
    uint32_t max_frame;
    uint32_t id_offset, id_size; /* id_size 0: no declared id field */
    bool has_set_request_id;
    bool has_encode;
    bool has_stream_reset;
    /* under lc_mu */
    uint32_t refs;
    uint32_t snap_refs; /* of refs, those held by snapshots */
    mt_lua_codec_t *next;
    uint64_t failures; /* atomic */
};

/* A codec loaded into one thread's state: the module's registry reference. */
struct lc_loaded {
    mt_lua_codec_t *lc; /* holds a reference */
    int ref;
    uint32_t users; /* decoder states of this thread */
    lc_loaded_t *next;
};

typedef struct lc_thread {
    lua_State *L;
    int f_load, f_decode, f_encode, f_error, f_heartbeat, f_set_id, f_stream_reset;
    lc_loaded_t *loaded;
} lc_thread_t;

/* Per connection and direction. */
typedef struct lc_state {
    mt_lua_codec_t *lc; /* holds a reference */
    lc_loaded_t *mod;
    size_t need; /* decode waits for this many bytes before asking Lua again */
} lc_state_t;

static pthread_mutex_t lc_mu = PTHREAD_MUTEX_INITIALIZER;
static mt_lua_codec_t *lc_all;

static mt_status_t lc_init(const mt_codec_t *self, void *state, const mt_codec_limits_t *limits);
static void lc_free_state(void *state);
static mt_status_t lc_decode(void *state, const uint8_t *buf, size_t len, mt_msg_t *msg,
                             mt_codec_err_t *err);
static mt_status_t lc_encode(const mt_msg_t *msg, const mt_mutation_t *mut, mt_wbuf_t *out,
                             mt_codec_err_t *err);
static mt_status_t lc_on_error(const mt_msg_t *req, mt_error_kind_t kind, const char *text,
                               mt_wbuf_t *out);
static mt_status_t lc_heartbeat_reply(const mt_msg_t *req, mt_wbuf_t *out);
static mt_status_t lc_stream_reset(const mt_msg_t *init, mt_wbuf_t *out);
static mt_status_t lc_set_request_id(const mt_codec_t *self, uint8_t *frame, size_t len,
                                     uint64_t id);

/* ---- codec objects ---------------------------------------------------------------------- */

bool mt_lua_codec_is(const mt_codec_t *codec)
{
    return codec && codec->init_self == lc_init;
}

uint64_t mt_lua_codec_failures(const mt_codec_t *codec)
{
    if (!mt_lua_codec_is(codec))
        return 0;
    return __atomic_load_n(&((const mt_lua_codec_t *)codec)->failures, __ATOMIC_RELAXED);
}

static void lc_destroy(mt_lua_codec_t *lc)
{
    free(lc->protocol);
    free(lc->key);
    free(lc->code);
    free(lc->chunkname);
    free(lc);
}

static void lc_ref(mt_lua_codec_t *lc)
{
    pthread_mutex_lock(&lc_mu);
    lc->refs++;
    pthread_mutex_unlock(&lc_mu);
}

/* Drops one reference (snap: one a snapshot held); frees the codec with the last one. */
static void lc_unref(mt_lua_codec_t *lc, bool snap)
{
    bool last = false;
    pthread_mutex_lock(&lc_mu);
    if (snap)
        lc->snap_refs--;
    if (--lc->refs == 0) {
        for (mt_lua_codec_t **pp = &lc_all; *pp; pp = &(*pp)->next) {
            if (*pp == lc) {
                *pp = lc->next;
                break;
            }
        }
        last = true;
    }
    pthread_mutex_unlock(&lc_mu);
    if (last)
        lc_destroy(lc);
}

static bool lc_in_snapshots(mt_lua_codec_t *lc)
{
    pthread_mutex_lock(&lc_mu);
    bool in = lc->snap_refs > 0;
    pthread_mutex_unlock(&lc_mu);
    return in;
}

void mt_lua_codec_release(const mt_codec_t *codec)
{
    if (mt_lua_codec_is(codec))
        lc_unref((mt_lua_codec_t *)codec, true);
}

static int lc_field_int(lua_State *L, int t, const char *k, int64_t dflt, int64_t min, int64_t max,
                        int64_t *out)
{
    lua_getfield(L, t, k);
    int rc = 0;
    if (lua_isnil(L, -1)) {
        *out = dflt;
    } else if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) >= (double)min &&
               lua_tonumber(L, -1) <= (double)max) {
        *out = (int64_t)lua_tonumber(L, -1);
    } else {
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

/* Builds a new codec from the lua_codec table at index d (not yet shared). */
static mt_lua_codec_t *lc_build(lua_State *L, int d, char **err)
{
    int64_t max_frame, id_offset, id_size;
    if (lc_field_int(L, d, "max_frame_size", 1 << 20, 1, 64 << 20, &max_frame) != 0 ||
        lc_field_int(L, d, "id_offset", 0, 0, 64 << 20, &id_offset) != 0 ||
        lc_field_int(L, d, "id_size", 0, 0, 8, &id_size) != 0 ||
        (id_size != 0 && id_size != 4 && id_size != 8)) {
        *err = strdup("lua_codec: max_frame_size / id_offset / id_size out of range");
        return NULL;
    }
    char *protocol = mt_snap_field_str(L, d, "protocol");
    char *chunk = mt_snap_field_str(L, d, "chunkname");
    lua_getfield(L, d, "code");
    size_t code_len = 0;
    const char *code = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &code_len) : NULL;
    mt_lua_codec_t *lc = protocol && code ? calloc(1, sizeof(*lc)) : NULL;
    if (lc) {
        lc->code = malloc(code_len + 1);
        if (lc->code) {
            memcpy(lc->code, code, code_len);
            lc->code[code_len] = '\0';
        }
    }
    lua_pop(L, 1);
    if (!lc || !lc->code) {
        *err = strdup(protocol && code ? "lua_codec: out of memory"
                                       : "lua_codec: protocol and code are required");
        free(protocol);
        free(chunk);
        if (lc)
            free(lc);
        return NULL;
    }
    lc->protocol = protocol;
    lc->chunkname = chunk ? chunk : strdup(protocol);
    lc->code_len = code_len;
    lc->max_frame = (uint32_t)max_frame;
    lc->id_offset = (uint32_t)id_offset;
    lc->id_size = (uint32_t)id_size;
    lc->has_set_request_id = mt_snap_field_bool(L, d, "has_set_request_id", false);
    lc->has_encode = mt_snap_field_bool(L, d, "has_encode", false);
    lc->has_stream_reset = mt_snap_field_bool(L, d, "has_stream_reset", false);
    bool multiplexed = mt_snap_field_bool(L, d, "multiplexed", false);
    bool heartbeat = mt_snap_field_bool(L, d, "local_heartbeat", false);
    mt_codec_t *c = &lc->base;
    c->name = lc->protocol;
    c->flags =
        (multiplexed ? MT_CODEC_F_MULTIPLEXED : 0) | (heartbeat ? MT_CODEC_F_LOCAL_HEARTBEAT : 0);
    c->state_size = sizeof(lc_state_t);
    c->init_self = lc_init;
    c->free = lc_free_state;
    c->decode = lc_decode;
    c->encode = lc_encode;
    c->on_error = lc_on_error;
    c->heartbeat_reply = heartbeat ? lc_heartbeat_reply : NULL;
    c->stream_reset = lc->has_stream_reset ? lc_stream_reset : NULL;
    if (multiplexed && (lc->id_size || lc->has_set_request_id))
        c->set_request_id_self = lc_set_request_id;
    /* key: everything above that can differ between two definitions */
    char head[160];
    int hn = snprintf(head, sizeof(head), "%u/%u/%u/%d%d%d%d%d/", lc->max_frame, lc->id_offset,
                      lc->id_size, multiplexed, heartbeat, lc->has_set_request_id, lc->has_encode,
                      lc->has_stream_reset);
    size_t pl = strlen(lc->protocol) + 1, cl = strlen(lc->chunkname) + 1;
    lc->key_len = (size_t)hn + pl + cl + code_len;
    lc->key = malloc(lc->key_len);
    if (!lc->key) {
        lc_destroy(lc);
        *err = strdup("lua_codec: out of memory");
        return NULL;
    }
    char *k = lc->key;
    memcpy(k, head, (size_t)hn);
    memcpy(k + hn, lc->protocol, pl);
    memcpy(k + hn + pl, lc->chunkname, cl);
    memcpy(k + hn + pl + cl, lc->code, code_len);
    return lc;
}

const mt_codec_t *mt_lua_codec_from_snapshot(lua_State *L, int t, char **err)
{
    if (!mt_snap_field_table(L, t, "lua_codec")) {
        *err = strdup("lua_codec: missing (the compiler writes it for codec: lua)");
        return NULL;
    }
    mt_lua_codec_t *lc = lc_build(L, lua_gettop(L), err);
    lua_pop(L, 1);
    if (!lc)
        return NULL;
    pthread_mutex_lock(&lc_mu);
    for (mt_lua_codec_t *o = lc_all; o; o = o->next) {
        if (o->key_len == lc->key_len && memcmp(o->key, lc->key, lc->key_len) == 0) {
            o->refs++;
            o->snap_refs++;
            pthread_mutex_unlock(&lc_mu);
            lc_destroy(lc);
            return &o->base;
        }
    }
    lc->refs = lc->snap_refs = 1;
    lc->next = lc_all;
    lc_all = lc;
    pthread_mutex_unlock(&lc_mu);
    return &lc->base;
}

/* ---- the per-thread Lua state ----------------------------------------------------------- */

static __thread lc_thread_t *lc_tl;
static pthread_key_t lc_key;
static pthread_once_t lc_key_once = PTHREAD_ONCE_INIT;

static void lc_unload(lc_thread_t *th, lc_loaded_t *m)
{
    for (lc_loaded_t **pp = &th->loaded; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    }
    luaL_unref(th->L, LUA_REGISTRYINDEX, m->ref);
    lc_unref(m->lc, false);
    free(m);
}

static void lc_thread_close(lc_thread_t *th)
{
    while (th->loaded)
        lc_unload(th, th->loaded);
    lua_close(th->L);
    free(th);
}

static void lc_thread_destructor(void *p)
{
    if (p)
        lc_thread_close(p);
}

static void lc_key_create(void)
{
    pthread_key_create(&lc_key, lc_thread_destructor);
}

void mt_lua_codec_thread_end(void)
{
    lc_thread_t *th = lc_tl;
    if (!th)
        return;
    lc_tl = NULL;
    pthread_setspecific(lc_key, NULL);
    lc_thread_close(th);
}

static int lc_driver_ref(lua_State *L, int drv, const char *name)
{
    lua_getfield(L, drv, name);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static lc_thread_t *lc_thread(void)
{
    if (lc_tl)
        return lc_tl;
    pthread_once(&lc_key_once, lc_key_create);
    lc_thread_t *th = calloc(1, sizeof(*th));
    lua_State *L = th ? mt_lua_new() : NULL;
    if (!L) {
        free(th);
        return NULL;
    }
    lua_getglobal(L, "require");
    lua_pushliteral(L, "meltemi.codec");
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1)) {
        mt_error("lua codec: the driver does not load: %s",
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "not a table");
        lua_close(L);
        free(th);
        return NULL;
    }
    int drv = lua_gettop(L);
    th->L = L;
    th->f_load = lc_driver_ref(L, drv, "load");
    th->f_decode = lc_driver_ref(L, drv, "decode");
    th->f_encode = lc_driver_ref(L, drv, "encode");
    th->f_error = lc_driver_ref(L, drv, "error_reply");
    th->f_heartbeat = lc_driver_ref(L, drv, "heartbeat_reply");
    th->f_set_id = lc_driver_ref(L, drv, "set_request_id");
    th->f_stream_reset = lc_driver_ref(L, drv, "stream_reset");
    lua_settop(L, 0);
    lc_tl = th;
    pthread_setspecific(lc_key, th);
    return th;
}

/* Unloads modules nobody on this thread uses and no snapshot names any more. */
static void lc_sweep(lc_thread_t *th)
{
    lc_loaded_t *next;
    for (lc_loaded_t *m = th->loaded; m; m = next) {
        next = m->next;
        if (m->users == 0 && !lc_in_snapshots(m->lc))
            lc_unload(th, m);
    }
}

/* The module of lc in this thread's state, loading it on first use; NULL after logging. */
static lc_loaded_t *lc_module(lc_thread_t *th, mt_lua_codec_t *lc)
{
    for (lc_loaded_t *m = th->loaded; m; m = m->next) {
        if (m->lc == lc)
            return m;
    }
    lc_sweep(th);
    lua_State *L = th->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, th->f_load);
    lua_pushlstring(L, lc->code, lc->code_len);
    lua_pushstring(L, lc->chunkname);
    lc_loaded_t *m = NULL;
    if (lua_pcall(L, 2, 2, 0) != 0 || !lua_istable(L, -2)) {
        mt_error("lua codec %s: does not load in the worker: %s", lc->protocol,
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
        __atomic_add_fetch(&lc->failures, 1, __ATOMIC_RELAXED);
    } else if ((m = calloc(1, sizeof(*m))) != NULL) {
        lua_pop(L, 1);
        m->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        m->lc = lc;
        lc_ref(lc);
        m->next = th->loaded;
        th->loaded = m;
    }
    lua_settop(L, top);
    return m;
}

/* ---- calls into the driver -------------------------------------------------------------- */

typedef struct lc_call {
    lc_thread_t *th;
    mt_lua_codec_t *lc;
    int base;
} lc_call_t;

/* The driver functions a call can go through. */
enum { LC_DECODE = 0, LC_ENCODE, LC_ERROR, LC_HEARTBEAT, LC_SET_ID, LC_STREAM_RESET };

/* Pushes the driver function `which` (LC_*) and lc's module; false when lc cannot run on
 * this thread (no state, or the module does not load: logged). */
static bool lc_begin(lc_call_t *c, mt_lua_codec_t *lc, int which)
{
    c->lc = lc;
    c->th = lc_thread();
    lc_loaded_t *m = c->th ? lc_module(c->th, lc) : NULL;
    if (!m)
        return false;
    lua_State *L = c->th->L;
    c->base = lua_gettop(L);
    int fref = which == LC_DECODE      ? c->th->f_decode
               : which == LC_ENCODE    ? c->th->f_encode
               : which == LC_ERROR     ? c->th->f_error
               : which == LC_HEARTBEAT ? c->th->f_heartbeat
               : which == LC_SET_ID    ? c->th->f_set_id
                                       : c->th->f_stream_reset;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, m->ref);
    return true;
}

/* Runs the call with nargs pushed after the module. Returns the index of the driver's status
 * word ("ok", "again", "error"; its values follow it); *status is "error" also when the call
 * itself failed, and the message is then at that index. */
static int lc_run(lc_call_t *c, int nargs, const char **status)
{
    lua_State *L = c->th->L;
    if (lua_pcall(L, nargs + 1, LUA_MULTRET, 0) != 0) {
        *status = "error";
        return c->base + 1; /* the message sits where the status would */
    }
    *status = lua_tostring(L, c->base + 1);
    if (!*status)
        *status = "error";
    return c->base + 1;
}

static void lc_end(lc_call_t *c)
{
    lua_settop(c->th->L, c->base);
}

/* Records a failed call: counted on the codec, put into err, and logged - at debug level for
 * decode, whose caller logs err with the connection it closes, else as a warning (the
 * callers of encode, error_reply and heartbeat_reply only see that it failed). */
static mt_status_t lc_failed(mt_lua_codec_t *lc, mt_codec_err_t *err, const char *what,
                             const char *text)
{
    __atomic_add_fetch(&lc->failures, 1, __ATOMIC_RELAXED);
    if (strcmp(what, "decode") == 0)
        mt_debug("lua codec %s: %s failed: %s", lc->protocol, what, text ? text : "?");
    else
        mt_warn("lua codec %s: %s failed: %s", lc->protocol, what, text ? text : "?");
    return mt_codec_fail(err, MT_CODEC_E_CODEC_FAILED, "lua codec %s: %s: %.100s", lc->protocol,
                         what, text ? text : "?");
}

/* ---- the codec functions ---------------------------------------------------------------- */

static mt_status_t lc_init(const mt_codec_t *self, void *state, const mt_codec_limits_t *limits)
{
    MT_UNUSED(limits); /* a Lua codec's frame limit is its own max_frame_size */
    mt_lua_codec_t *lc = (mt_lua_codec_t *)self;
    lc_state_t *st = state;
    memset(st, 0, sizeof(*st));
    lc_thread_t *th = lc_thread();
    lc_loaded_t *m = th ? lc_module(th, lc) : NULL;
    if (!m)
        return MT_ERROR;
    m->users++;
    lc_ref(lc);
    st->lc = lc;
    st->mod = m;
    return MT_OK;
}

static void lc_free_state(void *state)
{
    lc_state_t *st = state;
    if (!st->lc)
        return;
    st->mod->users--;
    lc_unref(st->lc, false);
    st->lc = NULL;
    if (st->mod->users == 0 && lc_tl)
        lc_sweep(lc_tl);
}

static mt_msg_type_t lc_type(const char *t, bool reply, bool *is_reply, bool *expects)
{
    *is_reply = false;
    *expects = false;
    switch (t[0]) {
    case 'r':
        if (t[2] == 'q') { /* request */
            *expects = true;
            return MT_MSG_REQUEST;
        }
        *is_reply = true;
        return MT_MSG_RESPONSE;
    case 'o':
        return MT_MSG_ONEWAY;
    case 'e':
        *is_reply = true;
        return MT_MSG_ERROR;
    case 's': /* stream_init, stream_data, stream_close, stream_reset */
        *is_reply = reply;
        return t[7] == 'i'   ? MT_MSG_STREAM_INIT
               : t[7] == 'd' ? MT_MSG_STREAM_DATA
               : t[7] == 'c' ? MT_MSG_STREAM_CLOSE_ONE_WAY
                             : MT_MSG_STREAM_RESET;
    default: /* heartbeat: a ping expects its pong */
        *is_reply = reply;
        *expects = !reply;
        return MT_MSG_HEARTBEAT;
    }
}

/* Copies the attrs table at index a into msg's arena: MT_AGAIN (!) when a key or value is
 * not a string (lua_tolstring would turn a number into one in place, and a table into
 * nothing), MT_ERROR when out of memory. */
static mt_status_t lc_attrs(lua_State *L, int a, mt_msg_t *msg)
{
    if (!lua_istable(L, a))
        return MT_OK;
    for (lua_pushnil(L); lua_next(L, a); lua_pop(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 2);
            return MT_AGAIN;
        }
        size_t kl, vl;
        const char *k = lua_tolstring(L, -2, &kl), *v = lua_tolstring(L, -1, &vl);
        mt_str_t ks = mt_msg__strdup(msg, k, kl), vs = mt_msg__strdup(msg, v, vl);
        if (!ks.ptr || !vs.ptr || mt_msg__add_attr(msg, ks, vs) != MT_OK) {
            lua_pop(L, 2);
            return MT_ERROR;
        }
    }
    return MT_OK;
}

static mt_status_t lc_decode(void *state, const uint8_t *buf, size_t len, mt_msg_t *msg,
                             mt_codec_err_t *err)
{
    lc_state_t *st = state;
    mt_lua_codec_t *lc = st->lc;
    if (len < st->need || len == 0)
        return MT_AGAIN;
    size_t n = MT_MIN(len, (size_t)lc->max_frame);
    lc_call_t c;
    if (!lc_begin(&c, lc, LC_DECODE))
        return lc_failed(lc, err, "decode", "the codec is not loaded");
    lua_State *L = c.th->L;
    lua_pushlstring(L, (const char *)buf, n);
    const char *status;
    int r = lc_run(&c, 1, &status);
    mt_status_t rc;
    if (strcmp(status, "again") == 0) {
        double more = lua_tonumber(L, r + 1);
        if (n == lc->max_frame || more > (double)(lc->max_frame - n)) {
            rc = mt_codec_fail(err, MT_CODEC_E_TOO_LARGE,
                               "lua codec %s: frame over max_frame_size (%u bytes)", lc->protocol,
                               lc->max_frame);
        } else {
            st->need = n + (size_t)more;
            rc = MT_AGAIN;
        }
    } else if (strcmp(status, "ok") == 0) {
        size_t flen = (size_t)lua_tonumber(L, r + 1);
        bool is_reply, expects;
        mt_msg__begin(msg, &lc->base, buf, flen);
        msg->type = lc_type(lua_tostring(L, r + 2), lua_toboolean(L, r + 5), &is_reply, &expects);
        msg->is_reply = is_reply;
        msg->expects_reply = expects;
        msg->request_id = (uint64_t)lua_tonumber(L, r + 3);
        rc = lc_attrs(L, r + 4, msg);
        if (rc == MT_AGAIN)
            rc = lc_failed(lc, err, "decode", "decode: attrs must map strings to strings");
        else if (rc != MT_OK)
            mt_codec_set_error(err, MT_CODEC_E_NOMEM, "lua codec %s: out of memory", lc->protocol);
        st->need = 0;
    } else {
        rc = lc_failed(lc, err, "decode", lua_tostring(L, r + (lua_gettop(L) > r ? 1 : 0)));
    }
    lc_end(&c);
    return rc;
}

/* Appends the string result of a call to out, or fails with its message. */
static mt_status_t lc_bytes(lc_call_t *c, int nargs, const char *what, mt_wbuf_t *out,
                            mt_codec_err_t *err, bool *none)
{
    lua_State *L = c->th->L;
    const char *status;
    int r = lc_run(c, nargs, &status);
    mt_status_t rc;
    if (strcmp(status, "ok") == 0) {
        size_t n = 0;
        const char *p = lua_tolstring(L, r + 1, &n);
        if (none)
            *none = p == NULL;
        rc = p ? mt_wbuf_append(out, p, n) : MT_OK;
        if (rc != MT_OK)
            mt_codec_set_error(err, MT_CODEC_E_NOMEM, "lua codec %s: out of memory",
                               c->lc->protocol);
    } else {
        rc = lc_failed(c->lc, err, what, lua_tostring(L, r + (lua_gettop(L) > r ? 1 : 0)));
    }
    lc_end(c);
    return rc;
}

static mt_status_t lc_encode(const mt_msg_t *msg, const mt_mutation_t *mut, mt_wbuf_t *out,
                             mt_codec_err_t *err)
{
    mt_lua_codec_t *lc = (mt_lua_codec_t *)msg->codec;
    if (!mut || mut->count == 0) /* nothing to rewrite: a byte copy, as every codec gives */
        return mt_wbuf_append(out, msg->frame, msg->frame_len) == MT_OK
                   ? MT_OK
                   : mt_codec_fail(err, MT_CODEC_E_NOMEM, "lua codec %s: out of memory",
                                   lc->protocol);
    if (!lc->has_encode)
        return mt_codec_fail(err, MT_CODEC_E_NO_MUTABLE_HEADERS,
                             "lua codec %s: no encode function, frames cannot carry a mutation",
                             lc->protocol);
    lc_call_t c;
    if (!lc_begin(&c, lc, LC_ENCODE))
        return lc_failed(lc, err, "encode", "the codec is not loaded");
    lua_State *L = c.th->L;
    lua_pushlstring(L, (const char *)msg->frame, msg->frame_len);
    size_t n = mut ? mut->count : 0;
    lua_createtable(L, (int)n, 0);
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        const mt_attr_t *a = &mut->items[i];
        bool repeated = false; /* the contract: of two items with one key, the first wins */
        for (size_t j = 0; j < i && !repeated; j++)
            repeated = mt_str_eq(mut->items[j].key, a->key.ptr, a->key.len);
        if (repeated)
            continue;
        lua_createtable(L, 2, 0);
        lua_pushlstring(L, a->key.ptr, a->key.len);
        lua_rawseti(L, -2, 1);
        if (a->val.ptr) {
            lua_pushlstring(L, a->val.ptr, a->val.len);
            lua_rawseti(L, -2, 2);
        }
        lua_rawseti(L, -2, ++k);
    }
    size_t before = out->len;
    mt_status_t rc = lc_bytes(&c, 2, "encode", out, err, NULL);
    if (rc != MT_OK)
        out->len = before;
    return rc;
}

static mt_status_t lc_on_error(const mt_msg_t *req, mt_error_kind_t kind, const char *text,
                               mt_wbuf_t *out)
{
    mt_lua_codec_t *lc = (mt_lua_codec_t *)req->codec;
    mt_codec_err_t err;
    lc_call_t c;
    if (!lc_begin(&c, lc, LC_ERROR))
        return lc_failed(lc, &err, "error_reply", "the codec is not loaded");
    lua_State *L = c.th->L;
    lua_pushlstring(L, (const char *)req->frame, req->frame_len);
    lua_pushnumber(L, (lua_Number)req->request_id);
    lua_pushstring(L, mt_error_kind_name(kind));
    lua_pushstring(L, text);
    size_t before = out->len;
    mt_status_t rc = lc_bytes(&c, 4, "error_reply", out, &err, NULL);
    if (rc != MT_OK)
        out->len = before;
    return rc;
}

static mt_status_t lc_heartbeat_reply(const mt_msg_t *req, mt_wbuf_t *out)
{
    mt_lua_codec_t *lc = (mt_lua_codec_t *)req->codec;
    mt_codec_err_t err;
    lc_call_t c;
    if (!lc_begin(&c, lc, LC_HEARTBEAT))
        return lc_failed(lc, &err, "heartbeat_reply", "the codec is not loaded");
    lua_State *L = c.th->L;
    lua_pushlstring(L, (const char *)req->frame, req->frame_len);
    lua_pushnumber(L, (lua_Number)req->request_id);
    size_t before = out->len;
    mt_status_t rc = lc_bytes(&c, 2, "heartbeat_reply", out, &err, NULL);
    if (rc != MT_OK)
        out->len = before;
    return rc;
}

static mt_status_t lc_stream_reset(const mt_msg_t *init, mt_wbuf_t *out)
{
    mt_lua_codec_t *lc = (mt_lua_codec_t *)init->codec;
    mt_codec_err_t err;
    lc_call_t c;
    if (!lc_begin(&c, lc, LC_STREAM_RESET))
        return lc_failed(lc, &err, "stream_reset", "the codec is not loaded");
    lua_State *L = c.th->L;
    lua_pushlstring(L, (const char *)init->frame, init->frame_len);
    lua_pushnumber(L, (lua_Number)init->request_id);
    size_t before = out->len;
    mt_status_t rc = lc_bytes(&c, 2, "stream_reset", out, &err, NULL);
    if (rc != MT_OK)
        out->len = before;
    return rc;
}

static mt_status_t lc_set_request_id(const mt_codec_t *self, uint8_t *frame, size_t len,
                                     uint64_t id)
{
    mt_lua_codec_t *lc = (mt_lua_codec_t *)self;
    if (lc->id_size) { /* declared: C rewrites it, big endian, no Lua call */
        if ((size_t)lc->id_offset + lc->id_size > len || (lc->id_size == 4 && id > UINT32_MAX))
            return MT_ERROR;
        for (uint32_t i = 0; i < lc->id_size; i++)
            frame[lc->id_offset + i] = (uint8_t)(id >> (8 * (lc->id_size - 1 - i)));
        return MT_OK;
    }
    if (id > (1ull << 53))
        return MT_ERROR;
    lc_call_t c;
    mt_codec_err_t err;
    if (!lc_begin(&c, lc, LC_SET_ID))
        return lc_failed(lc, &err, "set_request_id", "the codec is not loaded");
    lua_State *L = c.th->L;
    lua_pushlstring(L, (const char *)frame, len);
    lua_pushnumber(L, (lua_Number)id);
    mt_wbuf_t out;
    mt_wbuf_init(&out);
    mt_status_t rc = lc_bytes(&c, 2, "set_request_id", &out, &err, NULL);
    if (rc == MT_OK && out.len == len)
        memcpy(frame, out.data, len);
    else
        rc = MT_ERROR;
    mt_wbuf_free(&out);
    return rc;
}
