/*
 * redis_test.h - helpers shared by the unit_redis tests: feeding a byte stream to the
 * request parser / reply scanner in arbitrary chunks, the way a connection's read buffer
 * receives it, and recording what came out.
 */
#ifndef MELTEMI_TEST_REDIS_H
#define MELTEMI_TEST_REDIS_H

#include "protocols/redis/resp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Everything a stream produced: frames serialised as "argc|len:arg|len:arg...;" plus the
 * error text (if any) and where it happened. */
typedef struct feed_result {
    char *log; /* malloc'd, NUL-terminated */
    size_t log_len;
    size_t frames;
    size_t consumed; /* bytes of complete frames */
    bool error;
    char err[128];
    size_t err_at; /* bytes delivered when the error was reported */
    bool inline_seen;
} feed_result_t;

/*
 * Delivers data[0..len) in chunks ending at the given cut offsets (ascending, then len).
 * Between calls, when `move` is set, the unconsumed bytes are copied to a freshly allocated
 * buffer and the old one is freed, so a parser that kept a pointer reads freed memory
 * (ASan reports it) or garbage (the comparison fails).
 */
feed_result_t feed_requests(const resp_limits_t *limits, const char *data, size_t len,
                            const size_t *cuts, size_t ncuts, bool move);
/* Same as feed_requests with chunks of `chunk` bytes. */
feed_result_t feed_requests_chunked(const resp_limits_t *limits, const char *data, size_t len,
                                    size_t chunk, bool move);
/* Reply scanner: log is "<frame length>;" per reply. */
feed_result_t feed_replies(const resp_limits_t *limits, const char *data, size_t len,
                           const size_t *cuts, size_t ncuts, bool move);
feed_result_t feed_replies_chunked(const resp_limits_t *limits, const char *data, size_t len,
                                   size_t chunk, bool move);
void feed_result_free(feed_result_t *r);

#endif
