/*
 * fuzz_pubsub_frame.c - libFuzzer harness for the subscribed connection's frame reader
 * (protocols/redis/pubsub_frame.c), as the hub uses it: the reply scanner frames the bytes
 * (RESP3 types on when the first byte's low bit is set), the reader reads each frame. No crash,
 * no read past the frame (exact-size copies: ASan), and on MT_OK a name inside the frame.
 */
#include "protocols/redis/pubsub_frame.h"
#include "protocols/redis/resp.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    resp_reply_scanner_t s;
    resp_reply_scanner_init(&s, NULL);
    s.resp3 = (data[0] & 1) != 0;
    const char *in = (const char *)data + 1;
    size_t len = size - 1, off = 0;
    while (off < len) {
        size_t flen = 0;
        const char *err = NULL;
        if (resp_scan_reply(&s, in + off, len - off, &flen, &err) != MT_OK)
            break;
        char *frame = malloc(flen);
        CHECK(frame);
        memcpy(frame, in + off, flen);
        redis_pubsub_frame_t f;
        if (redis_pubsub_parse(frame, flen, &f) == MT_OK) {
            CHECK(f.name >= frame && f.name + f.name_len <= frame + flen);
            CHECK(f.kind < REDIS_PUBSUB_KINDS);
            CHECK(!(f.message && f.subscribe));
        }
        free(frame);
        off += flen;
    }
    return 0;
}
