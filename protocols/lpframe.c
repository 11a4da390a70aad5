/*
 * lpframe.c - length-prefixed frame boundaries without buffering the frames (lpframe.h).
 */
#include "protocols/lpframe.h"

#include <string.h>

void mt_lpframe_init(mt_lpframe_t *f, uint32_t min_len, uint32_t max_len, uint8_t *peek,
                     uint32_t peek_cap)
{
    memset(f, 0, sizeof(*f));
    f->min_len = min_len;
    f->max_len = max_len;
    f->peek = peek;
    f->peek_cap = peek_cap;
}

static uint32_t lpframe_be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

mt_lpframe_status_t mt_lpframe_next(mt_lpframe_t *f, const uint8_t **p, size_t *n)
{
    while (*n > 0) {
        if (f->nlen < 4) {
            f->lenbuf[f->nlen++] = **p;
            (*p)++;
            (*n)--;
            if (f->nlen < 4)
                continue;
            uint32_t len = lpframe_be32(f->lenbuf);
            /* A negative int32 is above any max_len (max_len <= INT32_MAX by contract). */
            if (len < f->min_len || len > f->max_len)
                return MT_LPFRAME_BAD;
            f->len = len;
            f->got = 0;
            f->npeek = 0;
        }
        uint32_t left = f->len - f->got;
        size_t take = *n < left ? *n : left;
        if (f->npeek < f->peek_cap) {
            size_t room = f->peek_cap - f->npeek;
            size_t copy = take < room ? take : room;
            memcpy(f->peek + f->npeek, *p, copy);
            f->npeek += (uint32_t)copy;
        }
        f->got += (uint32_t)take;
        *p += take;
        *n -= take;
        if (f->got == f->len) {
            f->nlen = 0;
            return MT_LPFRAME_FRAME;
        }
    }
    return MT_LPFRAME_AGAIN;
}

bool mt_lprd_skip(mt_lprd_t *r, size_t n)
{
    if (!r->ok || r->n < n) {
        r->ok = false;
        r->n = 0;
        return false;
    }
    r->p += n;
    r->n -= n;
    return true;
}

static const uint8_t *lprd_take(mt_lprd_t *r, size_t n)
{
    const uint8_t *p = r->p;
    return mt_lprd_skip(r, n) ? p : NULL;
}

uint8_t mt_lprd_u8(mt_lprd_t *r)
{
    const uint8_t *b = lprd_take(r, 1);
    return b ? b[0] : 0;
}

int16_t mt_lprd_i16(mt_lprd_t *r)
{
    const uint8_t *b = lprd_take(r, 2);
    return b ? (int16_t)((uint16_t)b[0] << 8 | b[1]) : 0;
}

int32_t mt_lprd_i32(mt_lprd_t *r)
{
    const uint8_t *b = lprd_take(r, 4);
    return b ? (int32_t)lpframe_be32(b) : 0;
}

int64_t mt_lprd_i64(mt_lprd_t *r)
{
    const uint8_t *b = lprd_take(r, 8);
    return b ? (int64_t)((uint64_t)lpframe_be32(b) << 32 | lpframe_be32(b + 4)) : 0;
}

uint32_t mt_lprd_uvarint(mt_lprd_t *r)
{
    uint32_t v = 0;
    for (int shift = 0; shift < 35; shift += 7) {
        uint8_t b = mt_lprd_u8(r);
        if (!r->ok)
            return 0;
        v |= (uint32_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return v;
    }
    r->ok = false; /* more than 5 bytes: not a 32-bit varint */
    return 0;
}
