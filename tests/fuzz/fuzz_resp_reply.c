/*
 * fuzz_resp_reply.c - libFuzzer harness for the reply scanner: no crash, no read past the
 * given bytes, and the same frame boundaries and error whether the replies come in one
 * piece or in chunks whose bytes move between calls. Build: see tests/fuzz/README.md.
 */
#include "protocols/redis/resp.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    size_t frames[4096];
    size_t nframes;
    const char *err;
} outcome_t;

static void run(const resp_limits_t *lim, bool resp3, const uint8_t *data, size_t len,
                const uint8_t *chunks, size_t nchunks, outcome_t *o)
{
    memset(o, 0, sizeof(*o));
    resp_reply_scanner_t s;
    resp_reply_scanner_init(&s, lim);
    s.resp3 = resp3;
    char *buf = NULL;
    size_t have = 0, delivered = 0, c = 0;
    while (delivered < len) {
        size_t step = nchunks ? (size_t)chunks[c++ % nchunks] + 1 : len;
        step = step > len - delivered ? len - delivered : step;
        /* exact-size copies: ASan catches any read past `have` */
        char *fresh = malloc(have + step);
        CHECK(fresh);
        if (have)
            memcpy(fresh, buf, have);
        free(buf);
        buf = fresh;
        memcpy(buf + have, data + delivered, step);
        have += step;
        delivered += step;
        for (;;) {
            size_t flen = 0;
            const char *err = NULL;
            mt_status_t rc = resp_scan_reply(&s, buf, have, &flen, &err);
            if (rc == MT_AGAIN)
                break;
            if (rc == MT_ERROR) {
                CHECK(err != NULL);
                o->err = err; /* static texts */
                free(buf);
                return;
            }
            CHECK(flen > 0 && flen <= have);
            CHECK(strchr(resp3 ? "+-:$*_,#(!=%~|>" : "+-:$*", buf[0]) != NULL);
            if (o->nframes < 4096)
                o->frames[o->nframes++] = flen;
            memmove(buf, buf + flen, have - flen);
            have -= flen;
        }
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9)
        return 0;
    resp_limits_t lim = resp_default_limits;
    if (data[0] & 1) {
        lim.max_bulk_len = data[0] >> 1;
        lim.max_depth = (data[0] >> 4) + 1;
    }
    bool resp3 = (data[0] & 2) != 0; /* RESP3 types as on a HELLO 3 connection */
    static outcome_t whole, cut;
    run(&lim, resp3, data + 9, size - 9, NULL, 0, &whole);
    run(&lim, resp3, data + 9, size - 9, data + 1, 8, &cut);
    CHECK(whole.nframes == cut.nframes);
    CHECK(memcmp(whole.frames, cut.frames, whole.nframes * sizeof(size_t)) == 0);
    CHECK((whole.err == NULL) == (cut.err == NULL));
    CHECK(whole.err == NULL || strcmp(whole.err, cut.err) == 0);
    return 0;
}
