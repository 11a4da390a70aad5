/*
 * base64.c - strict base64 decoding for Secret data on top of OpenSSL's EVP_DecodeBlock.
 *
 * EVP_DecodeBlock does the decoding but is lax where Kubernetes is not: it reads '=' anywhere
 * as zero bits, drops leading whitespace and trailing whitespace or '-', and always writes
 * whole triplets (padding included). So one pass here checks the text - alphabet, '=' only at
 * the end and at most two, whole quads - and compacts away CR/LF; the exact length is then
 * three bytes per quad less one per '='.
 */
#include "runtime/luajit/base64.h"

#include <limits.h>
#include <openssl/evp.h>
#include <stdbool.h>

static bool base64_is_alphabet(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

mt_base64_status_t mt_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len,
                                    unsigned char *scratch, size_t *bad_at)
{
    size_t n = 0, pad = 0;
    *out_len = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '\n' || c == '\r')
            continue;
        if (c == '=') {
            pad++;
        } else if (pad > 0 || !base64_is_alphabet(c)) {
            *bad_at = i;
            return MT_BASE64_BAD_BYTE;
        }
        scratch[n++] = c;
    }
    if (n % 4 != 0 || pad > 2 || n > INT_MAX)
        return MT_BASE64_BAD_LENGTH;
    if (n == 0)
        return MT_BASE64_OK;
    int got = EVP_DecodeBlock(out, scratch, (int)n);
    if (got < 0 || (size_t)got != n / 4 * 3)
        return MT_BASE64_BAD_LENGTH; /* cannot happen for checked text; refuse, never guess */
    *out_len = (size_t)got - pad;
    return MT_BASE64_OK;
}
