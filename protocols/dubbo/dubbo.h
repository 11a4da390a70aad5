/*
 * dubbo.h - Dubbo 2 protocol constants and the codec table (mt_codec_dubbo, in codec.h).
 *
 * Frame: a 16-byte header then `body length` bytes.
 *   0-1  magic 0xdabb
 *   2    flag: 0x80 request, 0x40 two-way, 0x20 event, low 5 bits serialization id
 *   3    status (responses)
 *   4-11 request id (big endian)
 *   12-15 body length (big endian, signed)
 * Request body (Hessian2, serialization id 2): dubbo version, service path (interface),
 * service version, method name, parameter types descriptor (JVM style, e.g.
 * "Ljava/lang/String;I"), one value per parameter, then the attachments map.
 */
#ifndef MELTEMI_DUBBO_H
#define MELTEMI_DUBBO_H

#include "protocols/codec.h"

#define DUBBO_HEADER_LEN 16
#define DUBBO_MAGIC_HI 0xda
#define DUBBO_MAGIC_LO 0xbb
#define DUBBO_FLAG_REQUEST 0x80
#define DUBBO_FLAG_TWOWAY 0x40
#define DUBBO_FLAG_EVENT 0x20
#define DUBBO_SERIALIZATION_MASK 0x1f
#define DUBBO_SERIALIZATION_HESSIAN2 2

/* Response status bytes (org.apache.dubbo.remoting.exchange.Response). */
enum dubbo_status {
    DUBBO_OK = 20,
    DUBBO_CLIENT_TIMEOUT = 30,
    DUBBO_SERVER_TIMEOUT = 31,
    DUBBO_CHANNEL_INACTIVE = 35,
    DUBBO_BAD_REQUEST = 40,
    DUBBO_BAD_RESPONSE = 50,
    DUBBO_SERVICE_NOT_FOUND = 60,
    DUBBO_SERVICE_ERROR = 70,
    DUBBO_SERVER_ERROR = 80,
    DUBBO_CLIENT_ERROR = 90,
    DUBBO_SERVER_THREADPOOL_EXHAUSTED = 100,
};

/* Dubbo's default `payload` limit is 8 MiB of body. */
#define DUBBO_DEFAULT_MAX_FRAME (DUBBO_HEADER_LEN + 8u * 1024 * 1024)
#define DUBBO_DEFAULT_MAX_DEPTH 128

/* The status byte on_error writes for each error kind. */
uint8_t dubbo_status_for_error(mt_error_kind_t kind);

#endif
