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
} hessian2_reader_t;

void hessian2_reader_init(hessian2_reader_t *r, const uint8_t *buf, size_t len, size_t pos,
                          uint32_t max_depth, hessian2_classes_t *classes, mt_arena_t *arena,
                          mt_codec_err_t *err);

/* True and the next tag byte in *tag when one is available. */
bool hessian2_peek(const hessian2_reader_t *r, uint8_t *tag);
static inline bool hessian2_tag_is_string(uint8_t t)
{
    return t <= 0x1f || (t >= 0x30 && t <= 0x33) || t == 'R' || t == 'S';
}
/* True for values that neither define classes nor enter the reference table, so they can be
 * replaced by a string without renumbering later references. */
bool hessian2_tag_is_scalar(uint8_t t);

/* Skips one complete value (nested ones included). */
mt_status_t hessian2_skip(hessian2_reader_t *r);
/* Reads a 32-bit int in any of its encodings. */
mt_status_t hessian2_read_int(hessian2_reader_t *r, int32_t *out);
/* Reads a string or null (out->ptr == NULL). A single-chunk string is a view into buf;
 * a chunked one is joined in r->arena. */
mt_status_t hessian2_read_string(hessian2_reader_t *r, mt_str_t *out);

/* Appends `s` as a Hessian2 string (chunked past 0x8000 chars). MT_ERROR on invalid UTF-8
 * (or out of memory); `out` may then hold a partial value the caller must drop. */
mt_status_t hessian2_write_string(mt_wbuf_t *out, const char *s, size_t len);

#endif
