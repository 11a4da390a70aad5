/*
 * codec_test_util.h - helpers shared by the codec unit tests (header only: each test group
 * is its own binary). The decode helpers copy the input into exactly-sized heap blocks, so
 * AddressSanitizer flags any read past `len`, and into a fresh block on every call, so a
 * decoder that keeps pointers instead of offsets between calls is caught too.
 */
#ifndef MELTEMI_CODEC_TEST_UTIL_H
#define MELTEMI_CODEC_TEST_UTIL_H

#include "protocols/codec.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ct_decoder {
    const mt_codec_t *codec;
    void *state;
} ct_decoder_t;

static inline ct_decoder_t ct_decoder_new(const mt_codec_t *c, const mt_codec_limits_t *limits)
{
    ct_decoder_t d = {c, calloc(1, c->state_size)};
    cr_assert_not_null(d.state);
    cr_assert_eq(c->init(d.state, limits), MT_OK);
    return d;
}

static inline void ct_decoder_free(ct_decoder_t *d)
{
    d->codec->free(d->state);
    free(d->state);
    d->state = NULL;
}

/* Decodes a private, exactly-sized copy of data[0..len). The copy is leaked into *keep so
 * views in `msg` stay valid; the caller frees *keep. */
static inline mt_status_t ct_decode_copy(ct_decoder_t *d, const uint8_t *data, size_t len,
                                         mt_msg_t *msg, mt_codec_err_t *err, uint8_t **keep)
{
    uint8_t *copy = malloc(len ? len : 1);
    cr_assert_not_null(copy);
    if (len)
        memcpy(copy, data, len);
    mt_status_t rc = d->codec->decode(d->state, copy, len, msg, err);
    if (keep != NULL && rc == MT_OK) {
        *keep = copy;
    } else {
        free(copy);
    }
    return rc;
}

/*
 * Pins resumability for one complete frame:
 *   - for every split point k: a fresh decoder sees k bytes (MT_AGAIN), then all of them
 *     at a new address (MT_OK, whole frame consumed);
 *   - byte by byte through one decoder, each call on a new copy.
 * Returns the message of the last decode, whose frame lives in *keep (caller frees).
 */
static inline void ct_decode_everywhere(const mt_codec_t *c, const uint8_t *frame, size_t len,
                                        mt_msg_t *msg, uint8_t **keep)
{
    mt_codec_err_t err = {0};
    for (size_t k = 0; k < len; k++) {
        ct_decoder_t d = ct_decoder_new(c, NULL);
        mt_status_t rc = ct_decode_copy(&d, frame, k, msg, &err, NULL);
        cr_assert_eq(rc, MT_AGAIN, "split at %zu of %zu: rc %d (%s)", k, len, rc, err.text);
        uint8_t *whole = NULL;
        rc = ct_decode_copy(&d, frame, len, msg, &err, &whole);
        cr_assert_eq(rc, MT_OK, "split at %zu of %zu: second call rc %d (%s)", k, len, rc,
                     err.text);
        cr_assert_eq(msg->frame_len, len, "split at %zu: frame_len %zu", k, msg->frame_len);
        free(whole);
        ct_decoder_free(&d);
    }
    ct_decoder_t d = ct_decoder_new(c, NULL);
    for (size_t k = 1; k < len; k++) {
        mt_status_t rc = ct_decode_copy(&d, frame, k, msg, &err, NULL);
        cr_assert_eq(rc, MT_AGAIN, "byte by byte at %zu of %zu: rc %d (%s)", k, len, rc, err.text);
    }
    cr_assert_eq(ct_decode_copy(&d, frame, len, msg, &err, keep), MT_OK, "%s", err.text);
    cr_assert_eq(msg->frame_len, len);
    ct_decoder_free(&d);
}

/* Decodes one complete frame with a fresh decoder; the frame must be consumed whole. */
static inline void ct_decode_one(const mt_codec_t *c, const uint8_t *frame, size_t len,
                                 mt_msg_t *msg, uint8_t **keep)
{
    ct_decoder_t d = ct_decoder_new(c, NULL);
    mt_codec_err_t err = {0};
    mt_status_t rc = ct_decode_copy(&d, frame, len, msg, &err, keep);
    cr_assert_eq(rc, MT_OK, "decode rc %d: %s", rc, err.text);
    cr_assert_eq(msg->frame_len, len, "frame_len %zu of %zu", msg->frame_len, len);
    ct_decoder_free(&d);
}

/* Expects MT_ERROR with an error text containing `needle`. */
static inline void ct_expect_error(const mt_codec_t *c, const mt_codec_limits_t *limits,
                                   const uint8_t *data, size_t len, mt_codec_errc_t code,
                                   const char *needle)
{
    ct_decoder_t d = ct_decoder_new(c, limits);
    mt_msg_t msg;
    mt_msg_init(&msg);
    mt_codec_err_t err = {0};
    mt_status_t rc = ct_decode_copy(&d, data, len, &msg, &err, NULL);
    cr_assert_eq(rc, MT_ERROR, "expected an error containing '%s', got rc %d", needle, rc);
    cr_assert_eq(err.code, code, "code %d, expected %d (%s)", err.code, code, err.text);
    cr_assert_not_null(strstr(err.text, needle), "error text '%s' lacks '%s'", err.text, needle);
    mt_msg_free(&msg);
    ct_decoder_free(&d);
}

/* Asserts attribute `key` equals `want`. */
static inline void ct_assert_attr(const mt_msg_t *m, const char *key, const char *want)
{
    const mt_str_t *v = mt_msg_get_cstr(m, key);
    cr_assert_not_null(v, "attribute %s missing", key);
    cr_assert(mt_str_eq(*v, want, strlen(want)), "attribute %s = '%.*s', want '%s'", key,
              (int)v->len, v->ptr, want);
}

/* Reads a whole file (fixtures); *len set; caller frees. */
static inline uint8_t *ct_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

#endif
