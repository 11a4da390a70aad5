/*
 * hessian2.h - just enough Hessian 2.0 for a proxy: skip any value, read strings and ints,
 * write strings. Used by the Dubbo codec on fully buffered bodies (Dubbo frames carry their
 * length), so the reader is a plain recursive descent with a depth limit rather than a
 * resumable state machine.
 *
 * Every read is bounds checked against `len`; a value that runs past it is malformed (the
 * body is complete when we parse it). Class definitions are remembered because object
 * instances refer to them by index and the field count decides how many values to skip;
 * Dubbo shares one Hessian2 stream across all values of a body, so the table lives as long
 * as the reader.
 */
#ifndef MELTEMI_HESSIAN2_H
#define MELTEMI_HESSIAN2_H

#include "protocols/codec.h"

/* Field counts of the class definitions seen so far (owned by whoever owns the reader's
 * storage; grown with realloc, released with hessian2_classes_free). */
typedef struct hessian2_classes {
    uint32_t *fields;
    uint32_t count;
    uint32_t cap;
} hessian2_classes_t;

#define HESSIAN2_MAX_CLASSES 65536u

void hessian2_classes_free(hessian2_classes_t *c);

typedef struct hessian2_reader {
    const uint8_t *buf; /* the frame; offsets below are relative to it */
    size_t len;         /* readable end (exclusive) */
    size_t pos;
    uint32_t depth;
    uint32_t max_depth;
    hessian2_classes_t *classes; /* cleared by hessian2_reader_init */
    mt_arena_t *arena;           /* where chunked strings are joined; NULL: refuse them */
    mt_codec_err_t *err;
    /* every byte of [ascii_from, ascii_end) is ASCII (high bit clear), found by one scan at
     * init: a string inside that range is as many bytes as chars, with no scan of its own */
    size_t ascii_from, ascii_end;
} hessian2_reader_t;

static inline size_t hessian2__ascii_prefix(const uint8_t *buf, size_t pos, size_t len);

static inline void hessian2_reader_init(hessian2_reader_t *r, const uint8_t *buf, size_t len,
                                        size_t pos, uint32_t max_depth, hessian2_classes_t *classes,
                                        mt_arena_t *arena, mt_codec_err_t *err)
{
    r->buf = buf;
    r->len = len;
    r->pos = pos;
    r->depth = 0;
    r->max_depth = max_depth;
    r->classes = classes;
    r->classes->count = 0;
    r->arena = arena;
    r->err = err;
    r->ascii_from = pos;
    r->ascii_end = pos <= len ? hessian2__ascii_prefix(buf, pos, len) : pos;
}

/* True and the next tag byte in *tag when one is available. */
bool hessian2_peek(const hessian2_reader_t *r, uint8_t *tag);
static inline bool hessian2_tag_is_string(uint8_t t)
{
    return t <= 0x1f || (t >= 0x30 && t <= 0x33) || t == 'R' || t == 'S';
}
/* True for values that neither define classes nor enter the reference table, so they can be
 * replaced by a string without renumbering later references. */
static inline bool hessian2_tag_is_scalar(uint8_t t)
{
    if (t <= 0x3f || t >= 0x80) /* strings, binaries, 3-octet longs; compact ints and longs */
        return true;
    switch (t) {
    case 'A':
    case 'B':
    case 'D':
    case 'F':
    case 'I':
    case 0x4a:
    case 0x4b:
    case 'L':
    case 'N':
    case 'R':
    case 'S':
    case 'T':
    case 'Y':
    case 0x5b:
    case 0x5c:
    case 0x5d:
    case 0x5e:
    case 0x5f:
        return true;
    default:
        return false;
    }
}

/* Skips one complete value (nested ones included). */
mt_status_t hessian2_skip(hessian2_reader_t *r);
/* Reads a 32-bit int in any of its encodings. */
mt_status_t hessian2_read_int(hessian2_reader_t *r, int32_t *out);
/* How many of the n bytes at buf[pos..] are ASCII (high bit clear), eight at a time, where
 * pos + n <= len and len bytes are readable at buf: a word that would run past len is read
 * as the last 8 bytes before len and shifted, so nothing at or beyond buf[len] is read. */
static inline size_t hessian2__ascii_run(const uint8_t *buf, size_t pos, size_t n, size_t len)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (size_t i = 0; i < n; i += 8) {
        size_t at = pos + i;
        uint64_t w = 0;
        if (len - at >= 8) {
            memcpy(&w, buf + at, 8);
        } else if (len >= 8) {
            memcpy(&w, buf + len - 8, 8);
            w >>= 8 * (8 - (len - at)); /* byte `at` to the bottom */
        } else {
            for (size_t k = 0; k < len - at; k++)
                w |= (uint64_t)buf[at + k] << (8 * k);
        }
        uint64_t high = w & 0x8080808080808080ull;
        if (high != 0) {
            size_t k = i + (size_t)__builtin_ctzll(high) / 8; /* first byte with the bit */
            return k < n ? k : n;
        }
    }
    return n;
#else
    (void)len;
    size_t i = 0;
    while (i < n && buf[pos + i] < 0x80)
        i++;
    return i;
#endif
}

/* The end of the ASCII run that starts at buf[pos] (pos <= len): the first byte at or after
 * pos with the high bit set, or len. 32 bytes a step while they are all ASCII (a frame
 * of short strings is scanned once at reader init, not string by string). */
static inline size_t hessian2__ascii_prefix(const uint8_t *buf, size_t pos, size_t len)
{
    size_t i = pos;
    for (; len - i >= 32; i += 32) {
        uint64_t a, b, c, d;
        memcpy(&a, buf + i, 8);
        memcpy(&b, buf + i + 8, 8);
        memcpy(&c, buf + i + 16, 8);
        memcpy(&d, buf + i + 24, 8);
        if ((a | b | c | d) & 0x8080808080808080ull)
            break;
    }
    return i + hessian2__ascii_run(buf, i, len - i, len);
}

/* hessian2__ascii_run(r->buf, pos, n, r->len) (pos + n <= r->len), answered from the reader's
 * ASCII range without reading the bytes again when pos is inside it. */
static inline size_t hessian2__reader_ascii_run(const hessian2_reader_t *r, size_t pos, size_t n)
{
    if (pos >= r->ascii_from && pos <= r->ascii_end) {
        size_t run = r->ascii_end - pos; /* buf[ascii_end] is not ASCII when < len */
        if (run >= n || r->ascii_end < r->len)
            return run < n ? run : n;
    }
    return hessian2__ascii_run(r->buf, pos, n, r->len);
}

/* A compact string (tag 0x00-0x1f: one final chunk of at most 31 chars) of ASCII only, at
 * r->pos: the common case, read in one step into *out (a view into buf). False, with nothing
 * consumed, for anything else (another tag, non-ASCII text, too few bytes): the general
 * readers then take the same bytes, with the errors they always had. */
static inline bool hessian2_read_compact_ascii(hessian2_reader_t *r, mt_str_t *out)
{
    if (r->pos >= r->len)
        return false;
    uint8_t t = r->buf[r->pos];
    if (t > 0x1f)
        return false;
    /* inside the reader's ASCII range (ascii_end <= len): no length check or scan left */
    if (r->pos < r->ascii_from || r->pos + 1 + t > r->ascii_end) {
        if (t > r->len - r->pos - 1 || hessian2__ascii_run(r->buf, r->pos + 1, t, r->len) != t)
            return false;
    }
    *out = (mt_str_t){(const char *)r->buf + r->pos + 1, t};
    r->pos += 1 + (size_t)t;
    return true;
}

mt_status_t hessian2__read_string(hessian2_reader_t *r, mt_str_t *out);

/* Reads a string or null (out->ptr == NULL). A single-chunk string is a view into buf;
 * a chunked one is joined in r->arena. */
static inline mt_status_t hessian2_read_string(hessian2_reader_t *r, mt_str_t *out)
{
    if (hessian2_read_compact_ascii(r, out))
        return MT_OK;
    return hessian2__read_string(r, out);
}

/* Appends `s` as a Hessian2 string (chunked past 0x8000 chars). MT_ERROR on invalid UTF-8
 * (or out of memory); `out` may then hold a partial value the caller must drop. */
mt_status_t hessian2_write_string(mt_wbuf_t *out, const char *s, size_t len);

#endif
