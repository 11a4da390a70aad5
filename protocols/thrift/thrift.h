/*
 * thrift.h - Apache Thrift wire formats as the proxy sees them: the binary (strict and old
 * non-strict) and compact protocols, over unframed, framed and THeader transports.
 *
 * thrift_proto.c holds the protocol level: message headers (name, type, seq id), a
 * resumable skipper for the struct that follows a header on unframed connections, and
 * writers for TApplicationException replies. thrift.c is the codec (mt_codec_thrift):
 * transport detection, THeader info headers, mutation, error replies, seq id rewriting.
 */
#ifndef MELTEMI_THRIFT_H
#define MELTEMI_THRIFT_H

#include "protocols/codec.h"

/* Thrift's own defaults (TConfiguration): 16384000-byte frames, recursion depth 64. */
#define THRIFT_DEFAULT_MAX_FRAME 16384000u
#define THRIFT_DEFAULT_MAX_DEPTH 64u
#define THRIFT_HARD_MAX_DEPTH 1024u

typedef enum thrift_transport {
    THRIFT_TRANSPORT_UNKNOWN = 0, /* not detected yet */
    THRIFT_TRANSPORT_UNFRAMED,    /* "buffered": messages back to back */
    THRIFT_TRANSPORT_FRAMED,      /* 4-byte big-endian length before each message */
    THRIFT_TRANSPORT_HEADER,      /* THeader: framed, magic 0x0fff, info headers */
} thrift_transport_t;

typedef enum thrift_protocol {
    THRIFT_PROTO_UNKNOWN = 0,
    THRIFT_PROTO_BINARY,     /* strict: version word 0x8001000t */
    THRIFT_PROTO_BINARY_OLD, /* non-strict: name length first, type byte after the name */
    THRIFT_PROTO_COMPACT,    /* 0x82, version 1 */
} thrift_protocol_t;

const char *thrift_transport_name(thrift_transport_t t);
const char *thrift_protocol_name(thrift_protocol_t p);

/* TMessageType */
enum { THRIFT_CALL = 1, THRIFT_REPLY = 2, THRIFT_EXCEPTION = 3, THRIFT_ONEWAY = 4 };

/* TType (binary protocol codes; the skipper normalises compact types to these) */
enum {
    THRIFT_T_STOP = 0,
    THRIFT_T_VOID = 1,
    THRIFT_T_BOOL = 2,
    THRIFT_T_BYTE = 3,
    THRIFT_T_DOUBLE = 4,
    THRIFT_T_I16 = 6,
    THRIFT_T_I32 = 8,
    THRIFT_T_I64 = 10,
    THRIFT_T_STRING = 11,
    THRIFT_T_STRUCT = 12,
    THRIFT_T_MAP = 13,
    THRIFT_T_SET = 14,
    THRIFT_T_LIST = 15,
    THRIFT_T_UUID = 16,
};

/* TApplicationException.type */
enum {
    THRIFT_APPEX_UNKNOWN = 0,
    THRIFT_APPEX_UNKNOWN_METHOD = 1,
    THRIFT_APPEX_INTERNAL_ERROR = 6,
    THRIFT_APPEX_PROTOCOL_ERROR = 7,
};

/* THeader */
#define THRIFT_HEADER_MAGIC 0x0fff
#define THRIFT_HEADER_PROTO_BINARY 0
#define THRIFT_HEADER_PROTO_COMPACT 2
#define THRIFT_HEADER_INFO_KEYVALUE 1
#define THRIFT_HEADER_INFO_PKEYVALUE 2

/* Where the parts of a message header sit, relative to the buffer given to the parser. */
typedef struct thrift_msg_header {
    size_t name_off;
    size_t name_len;
    size_t seqid_off;
    uint8_t seqid_width; /* 4 (binary) or the varint's byte count (compact) */
    uint8_t type;        /* THRIFT_CALL ... */
    int32_t seqid;
    size_t body_off; /* first byte after the header: the args/result struct */
} thrift_msg_header_t;

/*
 * Parses a message header of protocol `p` starting at buf[start], reading no further than
 * buf[end - 1]. MT_AGAIN when the header is incomplete; MT_ERROR on a bad version/type or a
 * name longer than `max_name`.
 */
mt_status_t thrift_parse_msg_header(thrift_protocol_t p, const uint8_t *buf, size_t start,
                                    size_t end, size_t max_name, thrift_msg_header_t *h,
                                    mt_codec_err_t *err);

/* A resumable skipper for one struct: keeps an offset and a stack of open containers. */
typedef struct thrift_skip_frame {
    uint8_t kind;  /* THRIFT_T_STRUCT, _LIST, _SET, _MAP */
    uint8_t ktype; /* element type (list/set) or key type (map) */
    uint8_t vtype; /* map value type */
    bool want_value;
    uint32_t remaining; /* elements (pairs for maps) still to read */
} thrift_skip_frame_t;

typedef struct thrift_skipper {
    size_t pos;         /* offset of the next unread byte */
    size_t limit;       /* the struct may not extend past this offset */
    uint32_t depth;     /* open frames in stack */
    uint32_t max_depth; /* stack capacity */
    uint8_t pending;    /* type of the value to read next, THRIFT_T_STOP when none */
    thrift_skip_frame_t *stack;
} thrift_skipper_t;

mt_status_t thrift_skipper_init(thrift_skipper_t *s, uint32_t max_depth);
void thrift_skipper_free(thrift_skipper_t *s);
/* Starts skipping a struct at offset `pos`; it may not end past `limit`. */
void thrift_skipper_start(thrift_skipper_t *s, size_t pos, size_t limit);
/* Advances over buf[0..len). MT_OK: the struct ends at s->pos. MT_AGAIN: more bytes
 * needed (s->pos never passes a partial token). MT_ERROR: malformed / too large / deep. */
mt_status_t thrift_skip(thrift_skipper_t *s, thrift_protocol_t p, const uint8_t *buf, size_t len,
                        mt_codec_err_t *err);

/* Appends a message header (name, type, seq id) in protocol `p`. */
mt_status_t thrift_write_msg_header(mt_wbuf_t *out, thrift_protocol_t p, mt_str_t name,
                                    uint8_t type, int32_t seqid);
/* Appends the struct of a TApplicationException {1: message, 2: type}. */
mt_status_t thrift_write_app_exception(mt_wbuf_t *out, thrift_protocol_t p, mt_str_t message,
                                       int32_t type);

/* The type (field 2) of the TApplicationException struct in buf[pos, end) of an EXCEPTION
 * message, or -1 when it has none or is not that struct. Reads only; never past end. */
int32_t thrift_read_app_exception_type(thrift_protocol_t p, const uint8_t *buf, size_t pos,
                                       size_t end);
/* Apache Thrift's name of a TApplicationException type ("UNKNOWN_METHOD"); NULL for a type
 * it does not define. */
const char *thrift_appex_type_name(int32_t type);

/* Maps a proxy error kind to a TApplicationException type. */
int32_t thrift_appex_type_for_error(mt_error_kind_t kind);

#endif
