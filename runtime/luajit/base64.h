/*
 * base64.h - strict standard base64 (RFC 4648 alphabet, '=' padding) as Kubernetes Secret data
 * uses it, decoded by OpenSSL. CR and LF are skipped, the way Go's decoder skips them; anything
 * else outside the alphabet, data after '=', more than two '=' or a length that is not whole
 * quads is refused.
 */
#ifndef MELTEMI_BASE64_H
#define MELTEMI_BASE64_H

#include <stddef.h>

typedef enum mt_base64_status {
    MT_BASE64_OK = 0,
    MT_BASE64_BAD_BYTE = -1,   /* *bad_at is the input offset of the offending byte */
    MT_BASE64_BAD_LENGTH = -2, /* not whole quads once CR/LF are dropped, or bad padding */
} mt_base64_status_t;

/* The most bytes mt_base64_decode writes for len bytes of text. */
static inline size_t mt_base64_decoded_max(size_t len)
{
    return len / 4 * 3 + 3;
}

/*
 * Decodes in[0..len) into out, which has room for mt_base64_decoded_max(len) bytes, and sets
 * *out_len to the exact decoded length (embedded NUL bytes included). scratch has room for len
 * bytes: the text with CR/LF taken out is put there for OpenSSL. The caller owns all buffers;
 * on failure out and scratch hold garbage and *out_len is 0.
 */
mt_base64_status_t mt_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len,
                                    unsigned char *scratch, size_t *bad_at);

#endif
