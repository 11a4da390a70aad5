/*
 * codec.h - the MetaProtocol codec contract: how the runtime turns bytes of any RPC protocol
 * (Dubbo, Thrift, in-house ones) into messages it can route, mutate, mirror, multiplex and
 * answer locally, and back into bytes.
 *
 * The shape follows Aeraki's MetaProtocol codec (decode / encode / onError, message types,
 * string attributes, request ids) with three changes that suit a C data plane:
 *   - decoding is a resumable state machine per connection and direction; it never copies
 *     a frame and never reads past the bytes it was given;
 *   - a decoded message keeps views (pointer + length) into the caller's buffer, so an
 *     unmodified frame is forwarded from the read buffer as is;
 *   - encode is only called when there is something to rewrite (a mutation, a new request
 *     id, a local reply); the runtime forwards untouched frames without calling it.
 *
 * Ownership, in one place:
 *   - mt_codec_t tables are static and immutable; the registry stores pointers to them.
 *   - decoder state (codec->state_size bytes) is allocated by the caller, initialised with
 *     codec->init and released with codec->free. One per connection and direction.
 *   - mt_msg_t is owned by the caller (mt_msg_init / mt_msg_free). Its attribute views point
 *     either into the frame (valid while those bytes stay where they are; see mt_msg_rebase)
 *     or into the message's own arena (valid until the message is reused or freed). A
 *     message can therefore outlive the decoder call and the next frames of a pipeline.
 *   - mt_wbuf_t is an output buffer owned by the caller; codecs only append to it.
 *
 * Threading: the registry is written at startup (before workers exist) and read afterwards.
 * Everything else is per worker and lock free.
 */
#ifndef MELTEMI_CODEC_H
#define MELTEMI_CODEC_H

#include "protocols/status.h"

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- small value types ----------------------------------------------------------------- */

/* A byte string view. Not NUL terminated. ptr == NULL means "absent" (see mt_mutation_t). */
typedef struct mt_str {
    const char *ptr;
    size_t len;
} mt_str_t;

#define MT_STR(lit) ((mt_str_t){(lit), sizeof(lit) - 1})

/* Equality of n bytes, inline: attribute keys are a few bytes, for which a memcmp call
 * costs more than the comparison (words at a time, the last one overlapping). */
static inline bool mt_bytes_eq(const void *a, const void *b, size_t n)
{
    const unsigned char *p = a, *q = b;
    if (n >= 8) {
        uint64_t x, y;
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, p + i, 8);
            memcpy(&y, q + i, 8);
            if (x != y)
                return false;
        }
        memcpy(&x, p + n - 8, 8);
        memcpy(&y, q + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        uint32_t x0, y0, x1, y1;
        memcpy(&x0, p, 4);
        memcpy(&y0, q, 4);
        memcpy(&x1, p + n - 4, 4);
        memcpy(&y1, q + n - 4, 4);
        return x0 == y0 && x1 == y1;
    }
    unsigned diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)(p[i] ^ q[i]);
    return diff == 0;
}

static inline bool mt_str_eq(mt_str_t a, const char *b, size_t blen)
{
    return a.len == blen && mt_bytes_eq(a.ptr, b, blen);
}

/* A metadata attribute: both views are read-only for the caller. */
typedef struct mt_attr {
    mt_str_t key;
    mt_str_t val;
} mt_attr_t;

/* ---- attribute filters ------------------------------------------------------------------ */

/*
 * The attribute keys a message's readers can ask for: a listener's compiled routes (match
 * keys), its clusters' hash keys, the names in its error texts. A decoder given a filter
 * (mt_msg_t.want) still walks and checks the whole frame - it fails on the same bytes with
 * the same error as without one - but stores only the wanted attributes and formats nothing
 * for the others, so a frame whose readers need two keys does not pay for twenty. Keys are
 * views the filter does not own (the snapshot's strings); `keys` is the filter's own array.
 */
typedef struct mt_attr_filter {
    mt_str_t *keys;
    uint32_t n;
    uint32_t cap;
    /* by mt_attr_filter_slot(key): 0 no key there, k keys[k - 1] is the only one,
     * MT_ATTR_FILTER_MANY more than one (then the keys are walked): one look and at most one
     * comparison per key asked for, whether the filter lets it in or not */
    uint8_t slot[64];
    /* changes with every key added (never 0 once one was): a decoder may keep its answers
     * for fixed keys while the filter and this number stay the same; 0: do not keep them.
     * A filter built by hand that never changes may set any number but 0 */
    uint32_t gen;
} mt_attr_filter_t;

#define MT_ATTR_FILTER_MANY 0xff

/* A key's slot: its length and first and last bytes, mixed, so that keys of one length
 * ("version" and "service", "status" and "method") seldom share one. */
#define MT_ATTR_FILTER_SLOT(len, first, last)                                                      \
    ((((size_t)(len)*7 + (size_t)(first)*3 + (size_t)(last)) & 63))

static inline size_t mt_attr_filter_slot(const char *key, size_t len)
{
    if (len == 0)
        return MT_ATTR_FILTER_SLOT(0, 0, 0);
    return MT_ATTR_FILTER_SLOT(len, (unsigned char)key[0], (unsigned char)key[len - 1]);
}

/* Adds key (a view that must outlive the filter); no-op if present. MT_ERROR: no memory. */
mt_status_t mt_attr_filter_add(mt_attr_filter_t *f, const char *key, size_t len);
void mt_attr_filter_free(mt_attr_filter_t *f);

static inline bool mt_attr_filter_has(const mt_attr_filter_t *f, const char *key, size_t len)
{
    uint8_t k = f->slot[mt_attr_filter_slot(key, len)];
    if (k == 0)
        return false;
    if (k != MT_ATTR_FILTER_MANY)
        return mt_str_eq(f->keys[k - 1], key, len);
    for (uint32_t i = 0; i < f->n; i++) {
        if (mt_str_eq(f->keys[i], key, len))
            return true;
    }
    return false;
}

/* ---- growable output buffer -------------------------------------------------------------- */

/*
 * mt_wbuf_t: bytes produced by encode / on_error / heartbeat_reply. The caller owns it and
 * frees it with mt_wbuf_free; codecs only append. On allocation failure an append returns
 * MT_ERROR and leaves data/len as they were, so a partial frame can be dropped by resetting
 * len to the value it had before the call (codecs do that themselves on failure).
 */
typedef struct mt_wbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
} mt_wbuf_t;

void mt_wbuf_init(mt_wbuf_t *b);
void mt_wbuf_free(mt_wbuf_t *b);
mt_status_t mt_wbuf_reserve(mt_wbuf_t *b, size_t extra); /* room for `extra` more bytes */
mt_status_t mt_wbuf_append(mt_wbuf_t *b, const void *data, size_t n);
mt_status_t mt_wbuf_append_u8(mt_wbuf_t *b, uint8_t v);
mt_status_t mt_wbuf_append_be16(mt_wbuf_t *b, uint16_t v);
mt_status_t mt_wbuf_append_be32(mt_wbuf_t *b, uint32_t v);
mt_status_t mt_wbuf_append_be64(mt_wbuf_t *b, uint64_t v);
/* Unsigned LEB128, as Thrift compact and THeader use. */
mt_status_t mt_wbuf_append_uvarint(mt_wbuf_t *b, uint64_t v);
/* Overwrites 4 bytes already written at `off` (length fields patched after the body). */
void mt_wbuf_put_be32_at(mt_wbuf_t *b, size_t off, uint32_t v);

/* ---- arena for decoded strings ----------------------------------------------------------- */

/*
 * A message-owned bump allocator for strings that do not exist contiguously in the frame
 * (Hessian2 chunked strings, numbers rendered as text). Blocks never move, so a view stays
 * valid until mt_arena_reset / mt_arena_free. Reset keeps the first block for reuse.
 */
typedef struct mt_arena_block mt_arena_block_t;
typedef struct mt_arena {
    mt_arena_block_t *head;
} mt_arena_t;

void mt_arena_init(mt_arena_t *a);
void mt_arena_reset(mt_arena_t *a);
void mt_arena_free(mt_arena_t *a);
void *mt_arena_alloc(mt_arena_t *a, size_t n); /* NULL when out of memory */

/* ---- messages ---------------------------------------------------------------------------- */

typedef enum mt_msg_type {
    MT_MSG_REQUEST = 0, /* expects a response correlated by request id (or order) */
    MT_MSG_RESPONSE,    /* a normal response (may still carry an application exception) */
    MT_MSG_ONEWAY,      /* a request that takes no response */
    MT_MSG_HEARTBEAT,   /* keep-alive; see is_reply / expects_reply for its direction */
    MT_MSG_ERROR,       /* an error response (Dubbo status != OK, Thrift EXCEPTION) */
    /* Streaming (tRPC streams, Dubbo triple): request_id is the stream id. A stream is
     * routed once at its init frame; its data, close and reset frames follow it to the
     * same upstream connection (runtime/proxy/meta/meta_stream.h). CLOSE_ONE_WAY ends the
     * sender's half, CLOSE_TWO_WAY both, RESET aborts the stream from either side. */
    MT_MSG_STREAM_INIT,
    MT_MSG_STREAM_DATA,
    MT_MSG_STREAM_CLOSE_ONE_WAY,
    MT_MSG_STREAM_CLOSE_TWO_WAY,
    MT_MSG_STREAM_RESET,
} mt_msg_type_t;

static inline bool mt_msg_type_is_stream(mt_msg_type_t t)
{
    return t >= MT_MSG_STREAM_INIT && t <= MT_MSG_STREAM_RESET;
}

const char *mt_msg_type_name(mt_msg_type_t t); /* "request", "response", ... */

/* Size of the codec-private parse info carried by a message (offsets for encode). */
#define MT_MSG_PRIV_WORDS 16

typedef struct mt_codec mt_codec_t;

/*
 * A decoded message. Public fields are read-only for the caller; they are written by
 * decode and valid until the message is reused (next decode into it) or freed.
 */
typedef struct mt_msg {
    /* public, read-only */
    const mt_codec_t *codec; /* codec that decoded it; encode/on_error need the same one */
    mt_msg_type_t type;
    bool is_reply;        /* the frame flows server -> client */
    bool expects_reply;   /* the peer waits for an answer to this frame */
    uint64_t request_id;  /* Dubbo id; Thrift seq id as uint32 */
    const uint8_t *frame; /* the whole frame inside the caller's buffer (not copied) */
    size_t frame_len;     /* bytes consumed from the caller's buffer */
    mt_attr_t *attrs;     /* nattrs attributes, in frame order, unique keys */
    uint32_t nattrs;
    /* set by the caller, kept across decodes: the only attributes decode stores; NULL:
     * every attribute. mt_msg_locate finds one that was left out. */
    const mt_attr_filter_t *want;

    /* private: used by codecs through the helpers below */
    uint32_t attrs_cap;
    mt_arena_t arena;
    union {
        uint64_t u64[MT_MSG_PRIV_WORDS];
        uint32_t u32[2 * MT_MSG_PRIV_WORDS];
    } priv;
} mt_msg_t;

void mt_msg_init(mt_msg_t *m);
void mt_msg_free(mt_msg_t *m);

/* The stored attribute of key; NULL when absent or left out by m->want. */
static inline const mt_str_t *mt_msg__find(const mt_msg_t *m, const char *key, size_t key_len)
{
    for (uint32_t i = 0; i < m->nattrs; i++) {
        if (mt_str_eq(m->attrs[i].key, key, key_len))
            return &m->attrs[i].val;
    }
    return NULL;
}

/* Attribute lookup by key; NULL when absent. Linear: messages carry a handful of keys. A
 * reader may only ask for keys of m->want (the listener's filter says what its readers read):
 * asking for another is a bug - the answer would be NULL whatever the frame holds - and
 * asserts in builds with assertions; a reader outside the filter uses mt_msg_locate. */
static inline const mt_str_t *mt_msg_get(const mt_msg_t *m, const char *key, size_t key_len)
{
    assert(m->want == NULL || mt_attr_filter_has(m->want, key, key_len));
    return mt_msg__find(m, key, key_len);
}
static inline const mt_str_t *mt_msg_get_cstr(const mt_msg_t *m, const char *key)
{
    return mt_msg_get(m, key, strlen(key));
}

/*
 * The value of `key` in msg whatever msg->want left out: msg's own attribute when decode
 * stored it, else the frame decoded again without a filter into `scratch` (a message the
 * caller owns, initialised with mt_msg_init and reused; the view is valid while msg's frame
 * and scratch are). NULL when the frame has no such attribute. The slow path, for readers
 * outside the filter; the decode is the one that accepted the frame, so it cannot fail
 * differently.
 */
const mt_str_t *mt_msg_locate(const mt_msg_t *msg, const char *key, size_t key_len,
                              mt_msg_t *scratch);

/*
 * The frame bytes moved (buffer compaction or a copy kept for a retry/mirror): re-point
 * `frame` and every view that pointed into the old frame. Arena views are unchanged.
 */
void mt_msg_rebase(mt_msg_t *m, const uint8_t *new_frame);

/* For codecs: start filling `m` for a frame of `len` bytes at `frame` (clears attributes,
 * resets the arena; priv is not touched: the codec sets or clears what it keeps there). */
void mt_msg__begin(mt_msg_t *m, const mt_codec_t *codec, const uint8_t *frame, size_t len);
/* For codecs: whether m->want lets key in (always without a filter). Codecs ask before
 * building a value (formatting a number) that only an attribute would use. */
static inline bool mt_msg__wants(const mt_msg_t *m, const char *key, size_t key_len)
{
    return m->want == NULL || mt_attr_filter_has(m->want, key, key_len);
}
/* For codecs: make room for one more attribute (m->attrs_cap grows). MT_ERROR: no memory. */
mt_status_t mt_msg__grow_attrs(mt_msg_t *m);
/* mt_msg__add_attr past its filter test; inline: a frame stores a few, each one a call
 * costs as much as the store */
static inline __attribute__((always_inline)) mt_status_t
mt_msg__store_attr(mt_msg_t *m, mt_str_t key, mt_str_t val)
{
    if (mt_msg__find(m, key.ptr, key.len) != NULL)
        return MT_OK;
    if (__builtin_expect(m->nattrs == m->attrs_cap, 0) && mt_msg__grow_attrs(m) != MT_OK)
        return MT_ERROR;
    m->attrs[m->nattrs].key = key;
    m->attrs[m->nattrs].val = val;
    m->nattrs++;
    return MT_OK;
}
/* For codecs: add an attribute unless the key is already present (first writer wins) or
 * m->want leaves it out (then nothing is stored and MT_OK returned). Views must point into
 * the frame, the message's arena or static storage. MT_ERROR on out of memory. Always inline:
 * codecs add fixed keys (MT_STR literals), whose filter slot then folds at compile time, and
 * an out-of-line copy (gcc made one for Thrift) cost ~20 instructions of call per key. */
static inline __attribute__((always_inline)) mt_status_t mt_msg__add_attr(mt_msg_t *m, mt_str_t key,
                                                                          mt_str_t val)
{
    if (!mt_msg__wants(m, key.ptr, key.len))
        return MT_OK;
    return mt_msg__store_attr(m, key, val);
}
/* For codecs: the decimal text of v as a view (static storage for 0-99, else the arena;
 * ptr NULL on out of memory). No printf: it runs per message. */
mt_str_t mt_msg__dec(mt_msg_t *m, int64_t v);
/* For codecs: copy bytes into the arena and return a view of the copy (ptr NULL on OOM). */
mt_str_t mt_msg__strdup(mt_msg_t *m, const void *data, size_t len);

/* ---- mutations --------------------------------------------------------------------------- */

/*
 * Key/value pairs to write into an outgoing frame: Dubbo attachments, THeader headers.
 * An existing key is replaced in place (keeping its position), a new key is appended,
 * and an item whose val.ptr is NULL removes the key. Keys and values are byte strings;
 * codecs whose wire format requires UTF-8 (Hessian2) reject invalid UTF-8.
 */
typedef struct mt_mutation {
    const mt_attr_t *items;
    size_t count;
} mt_mutation_t;

/* ---- errors ------------------------------------------------------------------------------ */

/* Why a proxy answers a request itself (Aeraki's ErrorType, plus a timeout). */
typedef enum mt_error_kind {
    MT_ERR_ROUTE_NOT_FOUND = 0,
    MT_ERR_CLUSTER_NOT_FOUND,
    MT_ERR_NO_HEALTHY_UPSTREAM,
    MT_ERR_UPSTREAM_TIMEOUT,
    MT_ERR_BAD_RESPONSE,
    MT_ERR_OVER_LIMIT,
    MT_ERR_UNSPECIFIED,
} mt_error_kind_t;

const char *mt_error_kind_name(mt_error_kind_t k); /* "route_not_found", ... */

/* Why a codec call failed: lets the runtime count and react without parsing text. */
typedef enum mt_codec_errc {
    MT_CODEC_E_NONE = 0,
    MT_CODEC_E_MALFORMED,          /* bytes violate the protocol: close the connection */
    MT_CODEC_E_TOO_LARGE,          /* frame or field over the configured limit */
    MT_CODEC_E_TOO_DEEP,           /* nesting over the configured limit */
    MT_CODEC_E_UNSUPPORTED,        /* valid protocol, feature we do not implement */
    MT_CODEC_E_NO_MUTABLE_HEADERS, /* encode: this frame has nowhere to put a mutation */
    MT_CODEC_E_NOMEM,
    MT_CODEC_E_CODEC_FAILED, /* the codec itself failed (a Lua codec raised an error, returned
                              * nonsense or hit its time or instruction limit) */
} mt_codec_errc_t;

#define MT_CODEC_ERR_TEXT 160

/* Caller-provided error out-parameter; text is NUL terminated and names the codec. */
typedef struct mt_codec_err {
    mt_codec_errc_t code;
    char text[MT_CODEC_ERR_TEXT];
} mt_codec_err_t;

/* For codecs: fill `err` (may be NULL). */
void mt_codec_set_error(mt_codec_err_t *err, mt_codec_errc_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* For codecs: fill `err` (may be NULL) and evaluate to MT_ERROR. A macro, not a function, so
 * the compiler sees at every call site that a failure path never returns MT_OK: otherwise
 * GCC -O3 inlines "if (decode(..., &out) != MT_OK) return" chains and warns that `out` may
 * be read uninitialized after a failure it cannot prove is one. */
#define mt_codec_fail(err, code, ...) (mt_codec_set_error((err), (code), __VA_ARGS__), MT_ERROR)

/* ---- limits ------------------------------------------------------------------------------ */

typedef struct mt_codec_limits {
    uint32_t max_frame_size; /* bytes of one whole frame; 0: the codec's default */
    uint32_t max_depth;      /* nesting of containers while skipping values; 0: default */
} mt_codec_limits_t;

/* ---- the codec table --------------------------------------------------------------------- */

enum {
    /* Responses are matched to requests by request id, so many downstream requests may share
     * one upstream connection after set_request_id (Dubbo). Without it responses come back
     * in request order on each connection (Thrift, Redis). */
    MT_CODEC_F_MULTIPLEXED = 1u << 0,
    /* Heartbeats are answered by the proxy with heartbeat_reply, never forwarded. */
    MT_CODEC_F_LOCAL_HEARTBEAT = 1u << 1,
};

struct mt_codec {
    const char *name;           /* registry name, e.g. "dubbo" */
    const char *const *aliases; /* NULL-terminated other names (Aeraki's), may be NULL */
    uint32_t flags;             /* MT_CODEC_F_* */
    size_t state_size;          /* bytes of per-connection decoder state */

    /* Prepares `state` (state_size bytes, caller-allocated). limits may be NULL. */
    mt_status_t (*init)(void *state, const mt_codec_limits_t *limits);
    /* Releases what init and decode allocated inside `state` (not the state itself). */
    void (*free)(void *state);

    /*
     * Decodes the frame that starts at buf[0]. MT_OK: `msg` describes it and
     * msg->frame_len bytes are consumed; the state is ready for the next frame.
     * MT_AGAIN: call again with the same bytes plus more (they may have moved: the state
     * keeps offsets only); `msg` is untouched. MT_ERROR: `err` says why; the state and the
     * connection are unusable. Limits are enforced while parsing, before buffering a frame
     * that would exceed them. Never reads at or beyond buf[len].
     */
    mt_status_t (*decode)(void *state, const uint8_t *buf, size_t len, mt_msg_t *msg,
                          mt_codec_err_t *err);

    /*
     * Appends to `out` the frame of `msg` with `mut` applied (mut may be NULL or empty: a
     * plain copy). msg->frame must still be valid. MT_ERROR with
     * MT_CODEC_E_NO_MUTABLE_HEADERS when the frame has nowhere to carry metadata; `out` is
     * left as it was on any error.
     */
    mt_status_t (*encode)(const mt_msg_t *msg, const mt_mutation_t *mut, mt_wbuf_t *out,
                          mt_codec_err_t *err);

    /*
     * Appends a protocol-native error response to request `req` (same transport, protocol
     * and request id). Appends nothing and returns MT_OK when the request takes no reply
     * (oneway). `text` is a NUL-terminated message for the client.
     */
    mt_status_t (*on_error)(const mt_msg_t *req, mt_error_kind_t kind, const char *text,
                            mt_wbuf_t *out);

    /* Appends the answer to heartbeat `req`. NULL for protocols without heartbeats. */
    mt_status_t (*heartbeat_reply)(const mt_msg_t *req, mt_wbuf_t *out);

    /*
     * Rewrites in place the request id of a complete frame (a request on its way to a shared
     * upstream connection, or its response on the way back). Frame size never changes.
     * MT_ERROR when the id does not fit the frame (see each codec's notes).
     */
    mt_status_t (*set_request_id)(uint8_t *frame, size_t len, uint64_t id);

    /*
     * Codecs built at run time (Lua codecs, runtime/proxy/meta/lua_codec.c) share one set of
     * C functions between many tables, so these two receive the table they were called
     * through. A codec sets either init or init_self, and at most one of set_request_id and
     * set_request_id_self; callers go through mt_codec_init / mt_codec_set_request_id.
     */
    mt_status_t (*init_self)(const mt_codec_t *self, void *state, const mt_codec_limits_t *limits);

    /*
     * Streams: appends a reset frame toward the server for the stream whose init frame is
     * `init` (same stream id), sent when the client goes away with the stream open. NULL:
     * the protocol has no such frame (the server is not told). Optional.
     */
    mt_status_t (*stream_reset)(const mt_msg_t *init, mt_wbuf_t *out);
    mt_status_t (*set_request_id_self)(const mt_codec_t *self, uint8_t *frame, size_t len,
                                       uint64_t id);
};

static inline mt_status_t mt_codec_init(const mt_codec_t *c, void *state,
                                        const mt_codec_limits_t *limits)
{
    return c->init_self ? c->init_self(c, state, limits) : c->init(state, limits);
}

static inline bool mt_codec_has_request_id(const mt_codec_t *c)
{
    return c->set_request_id || c->set_request_id_self;
}

static inline mt_status_t mt_codec_set_request_id(const mt_codec_t *c, uint8_t *frame, size_t len,
                                                  uint64_t id)
{
    if (c->set_request_id_self)
        return c->set_request_id_self(c, frame, len, id);
    return c->set_request_id ? c->set_request_id(frame, len, id) : MT_ERROR;
}

/* ---- registry ---------------------------------------------------------------------------- */

#define MT_CODEC_REGISTRY_MAX 32

/* Registers a codec under its name and aliases. MT_ERROR if a name is taken or full. */
mt_status_t mt_codec_register(const mt_codec_t *codec);
/* Finds a codec by name or alias; NULL when unknown. */
const mt_codec_t *mt_codec_find(const char *name);
/* Forgets every codec (tests and shutdown). */
void mt_codec_registry_clear(void);

/* The built-in codecs, defined in protocols/<name>/. */
extern const mt_codec_t mt_codec_dubbo;
extern const mt_codec_t mt_codec_thrift;

/*
 * Registers the built-ins; safe to call more than once. Inline on purpose: each protocol
 * folder is its own static library linked before mt_proto_core, so the references to
 * the codec tables must sit in the caller's object, not in codec.c.
 */
static inline mt_status_t mt_codec_register_builtins(void)
{
    const mt_codec_t *builtins[] = {&mt_codec_dubbo, &mt_codec_thrift};
    for (size_t i = 0; i < MT_ARRAY_LEN(builtins); i++) {
        if (mt_codec_find(builtins[i]->name) == builtins[i])
            continue;
        if (mt_codec_register(builtins[i]) != MT_OK)
            return MT_ERROR;
    }
    return MT_OK;
}

#endif
