/*
 * pubsub_frame.h - reading what a subscribed Redis connection sends: a message (message,
 * pmessage, smessage) to deliver, or the confirmation of a (P|S)SUBSCRIBE or
 * (P|S)UNSUBSCRIBE, with the topic it is about. The reply has been framed already
 * (resp_scan_reply); RESP2 arrays and RESP3 pushes read alike. No allocation: the name points
 * into the frame.
 */
#ifndef MELTEMI_REDIS_PUBSUB_FRAME_H
#define MELTEMI_REDIS_PUBSUB_FRAME_H

#include "protocols/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum redis_pubsub_kind {
    REDIS_PUBSUB_CHANNEL = 0, /* SUBSCRIBE, message */
    REDIS_PUBSUB_PATTERN,     /* PSUBSCRIBE, pmessage */
    REDIS_PUBSUB_SHARD,       /* SSUBSCRIBE, smessage */
    REDIS_PUBSUB_KINDS
} redis_pubsub_kind_t;

typedef struct redis_pubsub_frame {
    redis_pubsub_kind_t kind;
    bool message;     /* a message to deliver; else a confirmation */
    bool subscribe;   /* a confirmation of a subscribe; else of an unsubscribe */
    const char *name; /* the topic: channel, pattern (pmessage: the pattern), shard channel */
    size_t name_len;
} redis_pubsub_frame_t;

/*
 * One complete reply p[0, len). MT_OK and *f for the nine pub/sub frames, well-formed:
 * "message" / "smessage" with channel and payload, "pmessage" with pattern, channel and
 * payload, the six confirmations with a name and an integer count. MT_ERROR for anything else
 * (a PONG, an error reply, another array, a malformed one): nobody's message.
 */
mt_status_t redis_pubsub_parse(const char *p, size_t len, redis_pubsub_frame_t *f);

#endif
