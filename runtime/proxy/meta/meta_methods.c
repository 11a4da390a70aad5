/*
 * meta_methods.c - the bounded per-method request counts of MetaProtocol listeners
 * (meta_methods.h).
 */
#include "runtime/proxy/meta/meta_methods.h"

#include "runtime/core/common.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define METHODS_SLOTS (2 * MT_META_METHODS_MAX) /* never more than half full */
#define METHODS_IFACE_MAX 120                   /* as the access log's op text cuts them */
#define METHODS_METHOD_MAX 80

typedef struct methods_entry {
    uint64_t hash;
    uint32_t iface_len, method_len;
    mt_stats_block_t *block;
    char key[]; /* "iface.method", or "method" when iface_len is 0 */
} methods_entry_t;

struct mt_meta_methods {
    char *listener;
    mt_stats_block_t *other;
    methods_entry_t *slots[METHODS_SLOTS]; /* published with a release store, never removed */
    uint32_t count;                        /* names taken; read without the lock */
    pthread_mutex_t mu;                    /* adding a name */
    mt_meta_methods_t *next;
};

static const mt_stats_detail_t meta_method_stats = {
    .prefix = "meltemi_meta_method",
    .label = "method",
    .help_total = "MetaProtocol requests answered, per listener and method (the first 32 "
                  "methods a listener sees by name, the others as \"other\").",
    .help_errors = "MetaProtocol requests answered with an error, per listener and method.",
    .no_duration = true, /* a histogram per method cost ~10% of a Dubbo call (callgrind) */
};

static mt_meta_methods_t *methods_tables; /* main thread */

mt_meta_methods_t *mt_meta_methods_for(const char *listener)
{
    for (mt_meta_methods_t *t = methods_tables; t; t = t->next) {
        if (strcmp(t->listener, listener) == 0)
            return t;
    }
    mt_meta_methods_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->listener = strdup(listener);
    if (!t->listener) {
        free(t);
        return NULL;
    }
    t->other = mt_stats_detail_block(&meta_method_stats, listener, "other");
    pthread_mutex_init(&t->mu, NULL);
    t->next = methods_tables;
    methods_tables = t;
    return t;
}

/* Up to 8 bytes of a text's end as a number (its last bytes tell interfaces of one
 * package apart, methods too); 0 for an empty text. Overlapping loads, no byte loop: it
 * runs per request. */
static inline uint64_t methods_tail(const char *p, size_t n)
{
    uint64_t v = 0;
    if (n >= 8) {
        memcpy(&v, p + n - 8, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + n - 4, 4);
        v = (uint64_t)a << 32 | b;
    } else {
        for (size_t i = 0; i < n; i++)
            v = v << 8 | (unsigned char)p[i];
    }
    return v;
}

/* Cheap on purpose (it runs per request): the lengths and the last 8 bytes of both parts,
 * mixed; a collision only costs a comparison, which is exact. */
static uint64_t methods_hash(const char *iface, size_t ilen, const char *method, size_t mlen)
{
    uint64_t h = (methods_tail(iface, ilen) ^ (uint64_t)ilen << 56) * 0x9e3779b97f4a7c15ull;
    h ^= (methods_tail(method, mlen) ^ (uint64_t)mlen << 48) * 0xc2b2ae3d27d4eb4full;
    return h ^ h >> 29;
}

/* a == b over n bytes, inline (names are short; a call to memcmp costs more): 8 bytes a
 * step and the last word overlapping, 4-byte words below 8, bytes below 4 */
static inline bool methods_same(const char *a, const char *b, size_t n)
{
    if (n >= 8) {
        uint64_t x, y;
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y)
                return false;
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        uint32_t x0, y0, x1, y1;
        memcpy(&x0, a, 4);
        memcpy(&y0, b, 4);
        memcpy(&x1, a + n - 4, 4);
        memcpy(&y1, b + n - 4, 4);
        return x0 == y0 && x1 == y1;
    }
    for (; n; a++, b++, n--) {
        if (*a != *b)
            return false;
    }
    return true;
}

static inline bool methods_entry_is(const methods_entry_t *e, uint64_t h, const char *iface,
                                    size_t ilen, const char *method, size_t mlen)
{
    if (e->hash != h || e->iface_len != ilen || e->method_len != mlen)
        return false;
    size_t at = ilen ? ilen + 1 : 0;
    return methods_same(e->key, iface, ilen) && methods_same(e->key + at, method, mlen);
}

/* The entry for the name, probing from its slot; *free_slot: the first empty slot seen. */
static methods_entry_t *methods_find(mt_meta_methods_t *t, uint64_t h, const char *iface,
                                     size_t ilen, const char *method, size_t mlen,
                                     uint32_t *free_slot)
{
    for (uint32_t n = 0, i = (uint32_t)h % METHODS_SLOTS; n < METHODS_SLOTS;
         n++, i = (i + 1) % METHODS_SLOTS) {
        methods_entry_t *e = __atomic_load_n(&t->slots[i], __ATOMIC_ACQUIRE);
        if (!e) {
            *free_slot = i;
            return NULL;
        }
        if (methods_entry_is(e, h, iface, ilen, method, mlen))
            return e;
    }
    *free_slot = METHODS_SLOTS;
    return NULL;
}

static mt_stats_block_t *methods_add(mt_meta_methods_t *t, uint64_t h, const char *iface,
                                     size_t ilen, const char *method, size_t mlen)
{
    mt_stats_block_t *b = t->other;
    pthread_mutex_lock(&t->mu);
    uint32_t slot;
    methods_entry_t *e = methods_find(t, h, iface, ilen, method, mlen, &slot);
    if (e) {
        b = e->block; /* another worker added it meanwhile */
    } else if (t->count < MT_META_METHODS_MAX && slot < METHODS_SLOTS &&
               (e = malloc(sizeof(*e) + ilen + 1 + mlen + 1)) != NULL) {
        *e = (methods_entry_t){h, (uint32_t)ilen, (uint32_t)mlen, NULL};
        size_t at = 0;
        if (ilen) {
            memcpy(e->key, iface, ilen);
            e->key[ilen] = '.';
            at = ilen + 1;
        }
        memcpy(e->key + at, method, mlen);
        e->key[at + mlen] = '\0';
        e->block = mt_stats_detail_block(&meta_method_stats, t->listener, e->key);
        __atomic_store_n(&t->slots[slot], e, __ATOMIC_RELEASE);
        __atomic_store_n(&t->count, t->count + 1, __ATOMIC_RELEASE);
        b = e->block;
    }
    pthread_mutex_unlock(&t->mu);
    return b;
}

/* The block of a name already clamped; *found: its own entry, or NULL ("other", or no
 * memory). */
static mt_stats_block_t *methods_block(mt_meta_methods_t *t, const char *iface, size_t ilen,
                                       const char *method, size_t mlen,
                                       const methods_entry_t **found)
{
    uint64_t h = methods_hash(iface, ilen, method, mlen);
    uint32_t slot;
    methods_entry_t *e = methods_find(t, h, iface, ilen, method, mlen, &slot);
    *found = e;
    if (MT_LIKELY(e != NULL))
        return e->block;
    /* full: every other name is "other", without the lock (a flood of new names from
     * clients costs a probe each, never the mutex) */
    if (__atomic_load_n(&t->count, __ATOMIC_ACQUIRE) >= MT_META_METHODS_MAX) {
        /* once full the table never changes: probing again after reading the count sees
         * every name, the one another worker added between our probe and the count too */
        e = methods_find(t, h, iface, ilen, method, mlen, &slot);
        return e ? e->block : t->other;
    }
    return methods_add(t, h, iface, ilen, method, mlen);
}

mt_stats_block_t *mt_meta_methods_block(mt_meta_methods_t *t, const char *iface, size_t iface_len,
                                        const char *method, size_t method_len)
{
    if (!iface)
        iface = "", iface_len = 0;
    if (!method)
        method = "", method_len = 0;
    const methods_entry_t *e;
    return methods_block(t, iface, MT_MIN(iface_len, (size_t)METHODS_IFACE_MAX), method,
                         MT_MIN(method_len, (size_t)METHODS_METHOD_MAX), &e);
}

mt_stats_block_t *mt_meta_methods_block_cached(mt_meta_methods_t *t, mt_meta_methods_cache_t *cache,
                                               const char *iface, size_t iface_len,
                                               const char *method, size_t method_len)
{
    if (!iface)
        iface = "", iface_len = 0;
    if (!method)
        method = "", method_len = 0;
    size_t ilen = MT_MIN(iface_len, (size_t)METHODS_IFACE_MAX);
    size_t mlen = MT_MIN(method_len, (size_t)METHODS_METHOD_MAX);
    const methods_entry_t *e = cache->entry;
    /* the kept name: lengths and bytes compared, no hash, no probe (per request) */
    if (MT_LIKELY(e != NULL && cache->table == t) && e->iface_len == ilen &&
        e->method_len == mlen && methods_same(e->key, iface, ilen) &&
        methods_same(e->key + (ilen ? ilen + 1 : 0), method, mlen))
        return e->block;
    mt_stats_block_t *b = methods_block(t, iface, ilen, method, mlen, &e);
    if (e) {
        cache->table = t;
        cache->entry = e;
    }
    return b;
}

uint32_t mt_meta_methods_count(const mt_meta_methods_t *t)
{
    return __atomic_load_n(&t->count, __ATOMIC_ACQUIRE);
}
