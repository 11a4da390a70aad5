/*
 * pubsub_frame.c - the frames of a subscribed connection (pubsub_frame.h).
 */
#include "protocols/redis/pubsub_frame.h"

#include "protocols/redis/reply_reader.h"

#include <string.h>

static const struct {
    const char *word;
    redis_pubsub_kind_t kind;
    bool message, subscribe;
    int64_t elems; /* the array's length */
} pubsub_words[] = {
    {"message", REDIS_PUBSUB_CHANNEL, true, false, 3},
    {"pmessage", REDIS_PUBSUB_PATTERN, true, false, 4},
    {"smessage", REDIS_PUBSUB_SHARD, true, false, 3},
    {"subscribe", REDIS_PUBSUB_CHANNEL, false, true, 3},
    {"psubscribe", REDIS_PUBSUB_PATTERN, false, true, 3},
    {"ssubscribe", REDIS_PUBSUB_SHARD, false, true, 3},
    {"unsubscribe", REDIS_PUBSUB_CHANNEL, false, false, 3},
    {"punsubscribe", REDIS_PUBSUB_PATTERN, false, false, 3},
    {"sunsubscribe", REDIS_PUBSUB_SHARD, false, false, 3},
};

mt_status_t redis_pubsub_parse(const char *p, size_t len, redis_pubsub_frame_t *f)
{
    if (len == 0 || (p[0] != '*' && p[0] != '>'))
        return MT_ERROR;
    /* a RESP3 push reads as an array, with its own type byte */
    redis_reader_t rd = redis_reader(p, len);
    int64_t n = redis_read_num(&rd, p[0]);
    const char *word, *name;
    size_t wlen, nlen;
    if (rd.bad || n < 3 || !redis_read_bulk(&rd, &word, &wlen) || !word ||
        !redis_read_bulk(&rd, &name, &nlen) || !name)
        return MT_ERROR;
    for (size_t i = 0; i < MT_ARRAY_LEN(pubsub_words); i++) {
        if (strlen(pubsub_words[i].word) != wlen || memcmp(pubsub_words[i].word, word, wlen) != 0)
            continue;
        if (n != pubsub_words[i].elems)
            return MT_ERROR;
        bool rest_ok;
        if (pubsub_words[i].message) {
            const char *s;
            size_t sl;
            rest_ok = redis_read_bulk(&rd, &s, &sl) && s &&
                      (n == 3 || (redis_read_bulk(&rd, &s, &sl) && s));
        } else {
            redis_read_num(&rd, ':');
            rest_ok = !rd.bad;
        }
        if (!rest_ok || rd.p != rd.end)
            return MT_ERROR;
        f->kind = pubsub_words[i].kind;
        f->message = pubsub_words[i].message;
        f->subscribe = pubsub_words[i].subscribe;
        f->name = name;
        f->name_len = nlen;
        return MT_OK;
    }
    return MT_ERROR;
}
