/*
 * lpframe.h - a passive reader of 4-byte big-endian length-prefixed frames (Kafka, ZooKeeper),
 * for decoders that watch a byte stream they must not alter: bytes are fed in any slicing,
 * only the first peek_cap bytes of each frame are kept (in a buffer the owner provides), the
 * rest is counted and skipped, so memory per stream is fixed whatever the frame sizes.
 */
#ifndef MELTEMI_LPFRAME_H
#define MELTEMI_LPFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mt_lpframe {
    /* set by the owner */
    uint32_t min_len;  /* shorter frames are garbage */
    uint32_t max_len;  /* longer frames (or a negative length) are garbage */
    uint32_t peek_cap; /* bytes of each frame kept in peek */
    uint8_t *peek;
    /* read-only: the frame that mt_lpframe_next completed */
    uint32_t len;   /* its length, without the 4-byte prefix */
    uint32_t npeek; /* min(len, peek_cap): bytes in peek */
    /* private */
    uint8_t lenbuf[4];
    uint8_t nlen; /* bytes of lenbuf filled */
    uint32_t got; /* body bytes seen of the current frame */
} mt_lpframe_t;

typedef enum mt_lpframe_status {
    MT_LPFRAME_AGAIN = 0, /* the input is used up, no frame completed */
    MT_LPFRAME_FRAME = 1, /* a frame completed: len, npeek, peek; call again for the rest */
    MT_LPFRAME_BAD = -1,  /* a length out of [min_len, max_len]: the stream is not framed */
} mt_lpframe_status_t;

void mt_lpframe_init(mt_lpframe_t *f, uint32_t min_len, uint32_t max_len, uint8_t *peek,
                     uint32_t peek_cap);
/* Consumes from *p / *n (advancing both) up to the end of the next frame. */
mt_lpframe_status_t mt_lpframe_next(mt_lpframe_t *f, const uint8_t **p, size_t *n);

/* ---- a bounds-checked big-endian reader over a peeked frame ------------------------------ */
typedef struct mt_lprd {
    const uint8_t *p;
    size_t n;
    bool ok; /* false once a read went past the end: every later read gives 0 */
} mt_lprd_t;

static inline mt_lprd_t mt_lprd(const uint8_t *p, size_t n)
{
    mt_lprd_t r = {p, n, true};
    return r;
}
bool mt_lprd_skip(mt_lprd_t *r, size_t n);
uint8_t mt_lprd_u8(mt_lprd_t *r);
int16_t mt_lprd_i16(mt_lprd_t *r);
int32_t mt_lprd_i32(mt_lprd_t *r);
int64_t mt_lprd_i64(mt_lprd_t *r);
/* Kafka's unsigned varint (at most 5 bytes for 32 bits). */
uint32_t mt_lprd_uvarint(mt_lprd_t *r);

#endif
