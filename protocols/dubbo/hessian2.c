/*
 * hessian2.c - Hessian 2.0 skipper, string/int reader and string writer (see hessian2.h).
 *
 * Tag map (Hessian 2.0 serialization spec, section "Bytecode map"):
 *   x00-x1f string 0-31      x20-x2f binary 0-15     x30-x33 string 0-1023
 *   x34-x37 binary 0-1023    x38-x3f long (3 octets) 'A'/'B' binary chunk / final
 *   'C' class def            'D' double              'F'/'T' false/true
 *   'H' untyped map          'I' int                 x4a/x4b date (ms / minutes)
 *   'L' long                 'M' typed map           'N' null
 *   'O' object               'Q' ref                 'R'/'S' string chunk / final
 *   'U'/'V' typed list var/fixed  'W'/'X' untyped list var/fixed  'Y' long as int32
 *   'Z' end of list/map      x5b-x5f compact doubles x60-x6f object, direct class index
 *   x70-x77 typed fixed list x78-x7f untyped fixed list x80-xbf int (1 octet)
 *   xc0-xcf int (2 octets)   xd0-xd7 int (3 octets)  xd8-xef long (1 octet)
 *   xf0-xff long (2 octets)
 */
#include "protocols/dubbo/hessian2.h"

#include <stdlib.h>
#include <string.h>

void hessian2_classes_free(hessian2_classes_t *c)
{
    free(c->fields);
    c->fields = NULL;
    c->count = 0;
    c->cap = 0;
}

bool hessian2_peek(const hessian2_reader_t *r, uint8_t *tag)
{
    if (r->pos >= r->len)
        return false;
    *tag = r->buf[r->pos];
    return true;
}

/* ---- primitives -------------------------------------------------------------------------- */

static mt_status_t h2_truncated(hessian2_reader_t *r)
{
    return mt_codec_fail(r->err, MT_CODEC_E_MALFORMED,
                         "dubbo: hessian2 value truncated at body offset %zu", r->pos);
}

static mt_status_t h2_bad_tag(hessian2_reader_t *r, uint8_t tag, const char *expected)
{
    return mt_codec_fail(r->err, MT_CODEC_E_MALFORMED,
                         "dubbo: hessian2 unexpected tag 0x%02x at offset %zu (expected %s)", tag,
                         r->pos ? r->pos - 1 : 0, expected);
}

static bool h2_has(const hessian2_reader_t *r, size_t n)
{
    return r->len - r->pos >= n;
}

static mt_status_t h2_take(hessian2_reader_t *r, uint8_t *tag)
{
    if (!h2_has(r, 1))
        return h2_truncated(r);
    *tag = r->buf[r->pos++];
    return MT_OK;
}

static mt_status_t h2_advance(hessian2_reader_t *r, size_t n)
{
    if (!h2_has(r, n))
        return h2_truncated(r);
    r->pos += n;
    return MT_OK;
}

static uint32_t h2_be(const uint8_t *p, size_t n)
{
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Decodes an int whose tag was already taken. */
static mt_status_t h2_int_after_tag(hessian2_reader_t *r, uint8_t t, int32_t *out)
{
    const uint8_t *p = r->buf + r->pos;
    if (t >= 0x80 && t <= 0xbf) {
        *out = (int32_t)t - 0x90;
        return MT_OK;
    }
    if (t >= 0xc0 && t <= 0xcf) {
        if (h2_advance(r, 1) != MT_OK)
            return MT_ERROR;
        *out = ((int32_t)t - 0xc8) * 256 + p[0];
        return MT_OK;
    }
    if (t >= 0xd0 && t <= 0xd7) {
        if (h2_advance(r, 2) != MT_OK)
            return MT_ERROR;
        *out = ((int32_t)t - 0xd4) * 65536 + (int32_t)h2_be(p, 2);
        return MT_OK;
    }
    if (t == 'I') {
        if (h2_advance(r, 4) != MT_OK)
            return MT_ERROR;
        *out = (int32_t)h2_be(p, 4);
        return MT_OK;
    }
    return h2_bad_tag(r, t, "an int");
}

mt_status_t hessian2_read_int(hessian2_reader_t *r, int32_t *out)
{
    uint8_t t = 0;
    if (h2_take(r, &t) != MT_OK)
        return MT_ERROR;
    return h2_int_after_tag(r, t, out);
}

/* A count (list length, field count, class index) must be non-negative. */
static mt_status_t h2_read_count(hessian2_reader_t *r, uint32_t *out)
{
    int32_t v;
    if (hessian2_read_int(r, &v) != MT_OK)
        return MT_ERROR;
    if (v < 0)
        return mt_codec_fail(r->err, MT_CODEC_E_MALFORMED,
                             "dubbo: hessian2 negative count %d at offset %zu", v, r->pos);
    *out = (uint32_t)v;
    return MT_OK;
}

/* ---- strings ----------------------------------------------------------------------------- */

/* Advances over `chars` UTF-16 units of UTF-8 text (Hessian lengths count Java chars; a
 * 4-byte sequence is a surrogate pair, i.e. two chars). A run of ASCII is one unit per byte,
 * so it is skipped by length (hessian2__reader_ascii_run); only a non-ASCII lead byte takes the
 * character-by-character path. Both end on the same byte with the same error as a walk of
 * every character would (a truncated string fails at the end of the buffer). */
static mt_status_t h2_skip_chars(hessian2_reader_t *r, uint32_t chars)
{
    while (chars > 0) {
        size_t ascii =
            hessian2__reader_ascii_run(r, r->pos, MT_MIN((size_t)chars, r->len - r->pos));
        r->pos += ascii;
        chars -= (uint32_t)ascii;
        if (chars == 0)
            return MT_OK;
        uint8_t lead = 0;
        if (h2_take(r, &lead) != MT_OK)
            return MT_ERROR;
        size_t more;
        uint32_t units = 1;
        if (lead < 0x80)
            more = 0;
        else if (lead >= 0xc0 && lead <= 0xdf)
            more = 1;
        else if (lead >= 0xe0 && lead <= 0xef)
            more = 2;
        else if (lead >= 0xf0 && lead <= 0xf7 && chars >= 2)
            more = 3, units = 2;
        else
            return mt_codec_fail(r->err, MT_CODEC_E_MALFORMED,
                                 "dubbo: hessian2 invalid UTF-8 byte 0x%02x at offset %zu", lead,
                                 r->pos - 1);
        if (h2_advance(r, more) != MT_OK)
            return MT_ERROR;
        chars -= units;
    }
    return MT_OK;
}

/* Reads the header of one string chunk whose tag was taken: its char count and finality. */
static mt_status_t h2_string_chunk(hessian2_reader_t *r, uint8_t t, uint32_t *chars, bool *final)
{
    const uint8_t *p = r->buf + r->pos;
    *final = true;
    if (t <= 0x1f) {
        *chars = t;
        return MT_OK;
    }
    if (t >= 0x30 && t <= 0x33) {
        if (h2_advance(r, 1) != MT_OK)
            return MT_ERROR;
        *chars = (uint32_t)(t - 0x30) * 256 + p[0];
        return MT_OK;
    }
    if (t == 'R' || t == 'S') {
        if (h2_advance(r, 2) != MT_OK)
            return MT_ERROR;
        *chars = h2_be(p, 2);
        *final = t == 'S';
        return MT_OK;
    }
    return h2_bad_tag(r, t, "a string");
}

/* Skips a string whose first tag was taken. Reports the chunk count and total bytes so a
 * reader can decide whether a view is enough. */
static mt_status_t h2_skip_string_after_tag(hessian2_reader_t *r, uint8_t t, uint32_t *chunks,
                                            size_t *bytes)
{
    *chunks = 0;
    *bytes = 0;
    for (;;) {
        uint32_t chars;
        bool final;
        if (h2_string_chunk(r, t, &chars, &final) != MT_OK)
            return MT_ERROR;
        size_t start = r->pos;
        if (h2_skip_chars(r, chars) != MT_OK)
            return MT_ERROR;
        *bytes += r->pos - start;
        (*chunks)++;
        if (final)
            return MT_OK;
        if (h2_take(r, &t) != MT_OK)
            return MT_ERROR;
    }
}

/* Copies the text of a multi-chunk string starting at `pos` (its first tag) into dst, which
 * holds the byte count the first pass (h2_skip_string_after_tag) measured. The first pass
 * validated these bytes, so this cannot fail; the statuses are still checked so that a
 * chunk header is never used unread. */
static mt_status_t h2_join_chunks(hessian2_reader_t *r, size_t pos, char *dst)
{
    hessian2_reader_t c = *r;
    c.pos = pos;
    bool final = false;
    while (!final) {
        uint8_t t = 0;
        uint32_t chars;
        if (h2_take(&c, &t) != MT_OK || h2_string_chunk(&c, t, &chars, &final) != MT_OK)
            return MT_ERROR;
        size_t start = c.pos;
        if (h2_skip_chars(&c, chars) != MT_OK)
            return MT_ERROR;
        memcpy(dst, c.buf + start, c.pos - start);
        dst += c.pos - start;
    }
    return MT_OK;
}

mt_status_t hessian2__read_string(hessian2_reader_t *r, mt_str_t *out)
{
    size_t text;
    uint8_t t = 0;
    size_t start = r->pos;
    if (h2_take(r, &t) != MT_OK)
        return MT_ERROR;
    if (t == 'N') {
        *out = (mt_str_t){NULL, 0};
        return MT_OK;
    }
    if (t <= 0x1f) { /* compact, not all ASCII (or truncated): one final chunk of t chars */
        text = r->pos;
        if (h2_skip_chars(r, t) != MT_OK)
            return MT_ERROR;
        *out = (mt_str_t){(const char *)r->buf + text, r->pos - text};
        return MT_OK;
    }
    uint32_t chunks;
    size_t bytes;
    if (h2_skip_string_after_tag(r, t, &chunks, &bytes) != MT_OK)
        return MT_ERROR;
    if (chunks == 1) {
        *out = (mt_str_t){(const char *)r->buf + r->pos - bytes, bytes};
        return MT_OK;
    }
    char *dst = r->arena ? mt_arena_alloc(r->arena, bytes ? bytes : 1) : NULL;
    if (dst == NULL)
        return mt_codec_fail(r->err, MT_CODEC_E_NOMEM,
                             "dubbo: no memory to join a chunked string of %zu bytes", bytes);
    if (h2_join_chunks(r, start, dst) != MT_OK)
        return MT_ERROR;
    *out = (mt_str_t){dst, bytes};
    return MT_OK;
}

/* ---- binaries ---------------------------------------------------------------------------- */

static mt_status_t h2_skip_binary_after_tag(hessian2_reader_t *r, uint8_t t)
{
    for (;;) {
        const uint8_t *p = r->buf + r->pos;
        size_t n;
        bool final = true;
        if (t >= 0x20 && t <= 0x2f) {
            n = t - 0x20u;
        } else if (t >= 0x34 && t <= 0x37) {
            if (h2_advance(r, 1) != MT_OK)
                return MT_ERROR;
            n = (size_t)(t - 0x34) * 256 + p[0];
        } else if (t == 'A' || t == 'B') {
            if (h2_advance(r, 2) != MT_OK)
                return MT_ERROR;
            n = h2_be(p, 2);
            final = t == 'B';
        } else {
            return h2_bad_tag(r, t, "a binary chunk");
        }
        if (h2_advance(r, n) != MT_OK)
            return MT_ERROR;
        if (final)
            return MT_OK;
        if (h2_take(r, &t) != MT_OK)
            return MT_ERROR;
    }
}

/* ---- containers -------------------------------------------------------------------------- */

static mt_status_t h2_skip_depth(hessian2_reader_t *r);

/* type ::= string | int (an index into the types seen so far) */
static mt_status_t h2_skip_type(hessian2_reader_t *r)
{
    uint8_t t = 0;
    if (h2_take(r, &t) != MT_OK)
        return MT_ERROR;
    if (hessian2_tag_is_string(t)) {
        uint32_t chunks;
        size_t bytes;
        return h2_skip_string_after_tag(r, t, &chunks, &bytes);
    }
    int32_t idx;
    return h2_int_after_tag(r, t, &idx);
}

/* Skips values until the 'Z' terminator (variable-length lists and maps). */
static mt_status_t h2_skip_until_end(hessian2_reader_t *r)
{
    for (;;) {
        uint8_t t = 0;
        if (!hessian2_peek(r, &t))
            return h2_truncated(r);
        if (t == 'Z') {
            r->pos++;
            return MT_OK;
        }
        if (h2_skip_depth(r) != MT_OK)
            return MT_ERROR;
    }
}

/* Skips `n` values; each takes at least one byte, so a bogus huge n stops at the end. */
static mt_status_t h2_skip_n(hessian2_reader_t *r, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        if (h2_skip_depth(r) != MT_OK)
            return MT_ERROR;
    }
    return MT_OK;
}

static mt_status_t h2_class_def(hessian2_reader_t *r)
{
    hessian2_classes_t *c = r->classes;
    uint32_t nfields;
    uint8_t t = 0;
    if (h2_take(r, &t) != MT_OK)
        return MT_ERROR;
    uint32_t chunks;
    size_t bytes;
    if (h2_skip_string_after_tag(r, t, &chunks, &bytes) != MT_OK) /* class name */
        return MT_ERROR;
    if (h2_read_count(r, &nfields) != MT_OK)
        return MT_ERROR;
    for (uint32_t i = 0; i < nfields; i++) {
        if (h2_take(r, &t) != MT_OK)
            return MT_ERROR;
        if (h2_skip_string_after_tag(r, t, &chunks, &bytes) != MT_OK) /* field name */
            return MT_ERROR;
    }
    if (c->count == c->cap) {
        if (c->cap >= HESSIAN2_MAX_CLASSES)
            return mt_codec_fail(r->err, MT_CODEC_E_TOO_LARGE,
                                 "dubbo: hessian2 more than %u class definitions",
                                 HESSIAN2_MAX_CLASSES);
        uint32_t cap = c->cap ? c->cap * 2 : 16;
        uint32_t *p = realloc(c->fields, cap * sizeof(*p));
        if (p == NULL)
            return mt_codec_fail(r->err, MT_CODEC_E_NOMEM, "dubbo: no memory for classes");
        c->fields = p;
        c->cap = cap;
    }
    c->fields[c->count++] = nfields;
    return MT_OK;
}

static mt_status_t h2_object(hessian2_reader_t *r, uint32_t idx)
{
    if (idx >= r->classes->count)
        return mt_codec_fail(r->err, MT_CODEC_E_MALFORMED,
                             "dubbo: hessian2 object refers to undefined class %u at offset %zu",
                             idx, r->pos);
    return h2_skip_n(r, r->classes->fields[idx]);
}

/* Fixed scalar sizes after the tag, or -1 when the tag is not a fixed-size scalar. */
static int h2_fixed_size(uint8_t t)
{
    if (t >= 0x80 && t <= 0xbf)
        return 0; /* int, 1 octet */
    if (t >= 0xc0 && t <= 0xcf)
        return 1;
    if (t >= 0xd0 && t <= 0xd7)
        return 2;
    if (t >= 0xd8 && t <= 0xef)
        return 0; /* long, 1 octet */
    if (t >= 0xf0)
        return 1;
    if (t >= 0x38 && t <= 0x3f)
        return 2;
    switch (t) {
    case 'N':
    case 'T':
    case 'F':
    case 0x5b:
    case 0x5c:
        return 0;
    case 0x5d:
        return 1;
    case 0x5e:
        return 2;
    case 'I':
    case 'Y':
    case 0x5f:
    case 0x4b:
        return 4;
    case 'L':
    case 'D':
    case 0x4a:
        return 8;
    default:
        return -1;
    }
}

static mt_status_t h2_skip_compound(hessian2_reader_t *r, uint8_t t)
{
    uint32_t n;
    if (t >= 0x60 && t <= 0x6f)
        return h2_object(r, t - 0x60u);
    if (t >= 0x70 && t <= 0x77)
        return h2_skip_type(r) == MT_OK ? h2_skip_n(r, t - 0x70u) : MT_ERROR;
    if (t >= 0x78 && t <= 0x7f)
        return h2_skip_n(r, t - 0x78u);
    switch (t) {
    case 'C': /* class-def value */
        return h2_class_def(r) == MT_OK ? h2_skip_depth(r) : MT_ERROR;
    case 'O':
        return h2_read_count(r, &n) == MT_OK ? h2_object(r, n) : MT_ERROR;
    case 'Q': /* reference to an earlier list/map/object */
        return h2_read_count(r, &n);
    case 'U':
    case 'M': /* typed: type, then values (or key/value pairs) until 'Z' */
        return h2_skip_type(r) == MT_OK ? h2_skip_until_end(r) : MT_ERROR;
    case 'W':
    case 'H':
        return h2_skip_until_end(r);
    case 'V':
        if (h2_skip_type(r) != MT_OK)
            return MT_ERROR;
        /* fall through */
    case 'X':
        return h2_read_count(r, &n) == MT_OK ? h2_skip_n(r, n) : MT_ERROR;
    default:
        return h2_bad_tag(r, t, "a value");
    }
}

static mt_status_t h2_skip_value(hessian2_reader_t *r)
{
    mt_str_t text;
    if (hessian2_read_compact_ascii(r, &text))
        return MT_OK;
    uint8_t t = 0;
    if (h2_take(r, &t) != MT_OK)
        return MT_ERROR;
    int fixed = h2_fixed_size(t);
    if (fixed >= 0)
        return h2_advance(r, (size_t)fixed);
    if (hessian2_tag_is_string(t)) {
        uint32_t chunks;
        size_t bytes;
        return h2_skip_string_after_tag(r, t, &chunks, &bytes);
    }
    if ((t >= 0x20 && t <= 0x2f) || (t >= 0x34 && t <= 0x37) || t == 'A' || t == 'B')
        return h2_skip_binary_after_tag(r, t);
    return h2_skip_compound(r, t);
}

static mt_status_t h2_skip_depth(hessian2_reader_t *r)
{
    if (r->depth >= r->max_depth)
        return mt_codec_fail(r->err, MT_CODEC_E_TOO_DEEP,
                             "dubbo: hessian2 nesting deeper than %u at offset %zu", r->max_depth,
                             r->pos);
    r->depth++;
    mt_status_t rc = h2_skip_value(r);
    r->depth--;
    return rc;
}

mt_status_t hessian2_skip(hessian2_reader_t *r)
{
    return h2_skip_depth(r);
}

/* ---- writer ------------------------------------------------------------------------------ */

/* Length of the UTF-8 sequence starting at s[i] and its UTF-16 units; 0 when invalid. */
static size_t h2_utf8_seq(const uint8_t *s, size_t len, size_t i, uint32_t *units)
{
    uint8_t lead = s[i];
    size_t n;
    *units = 1;
    if (lead < 0x80)
        return 1;
    if (lead >= 0xc2 && lead <= 0xdf)
        n = 2;
    else if (lead >= 0xe0 && lead <= 0xef)
        n = 3;
    else if (lead >= 0xf0 && lead <= 0xf4)
        n = 4, *units = 2;
    else
        return 0;
    if (len - i < n)
        return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[i + k] & 0xc0) != 0x80)
            return 0;
    }
    return n;
}

static mt_status_t h2_write_chunk_header(mt_wbuf_t *out, uint32_t chars, bool final)
{
    if (!final) {
        if (mt_wbuf_append_u8(out, 'R') != MT_OK)
            return MT_ERROR;
        return mt_wbuf_append_be16(out, (uint16_t)chars);
    }
    if (chars <= 31)
        return mt_wbuf_append_u8(out, (uint8_t)chars);
    if (chars <= 1023) {
        uint8_t h[2] = {(uint8_t)(0x30 + (chars >> 8)), (uint8_t)chars};
        return mt_wbuf_append(out, h, 2);
    }
    if (mt_wbuf_append_u8(out, 'S') != MT_OK)
        return MT_ERROR;
    return mt_wbuf_append_be16(out, (uint16_t)chars);
}

#define H2_CHUNK_CHARS 0x8000u

mt_status_t hessian2_write_string(mt_wbuf_t *out, const char *str, size_t len)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    do {
        /* Measure the next chunk: at most H2_CHUNK_CHARS units, split between sequences. */
        size_t start = i;
        uint32_t chars = 0;
        while (i < len) {
            uint32_t units;
            size_t n = h2_utf8_seq(s, len, i, &units);
            if (n == 0)
                return MT_ERROR;
            if (chars + units > H2_CHUNK_CHARS)
                break;
            chars += units;
            i += n;
        }
        bool final = i == len;
        if (h2_write_chunk_header(out, chars, final) != MT_OK)
            return MT_ERROR;
        if (mt_wbuf_append(out, s + start, i - start) != MT_OK)
            return MT_ERROR;
    } while (i < len);
    return MT_OK;
}
