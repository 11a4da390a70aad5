/*
 * common.h - status codes and small helpers shared by the runtime, the codecs and (through
 * FFI) Lua. One status enum for everything, as nginx and lua-resty-core do.
 */
#ifndef MELTEMI_COMMON_H
#define MELTEMI_COMMON_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum mt_status {
    MT_OK = 0,     /* done: a whole frame / operation completed */
    MT_AGAIN = 1,  /* need more input; call again with the same bytes plus more */
    MT_ERROR = -1, /* malformed input or failure; an error text says why */
} mt_status_t;

#define MT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define MT_UNUSED(x) ((void)(x))
#define MT_LIKELY(x) __builtin_expect(!!(x), 1)
#define MT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MT_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Exit codes of the CLI. */
enum { MT_EXIT_OK = 0, MT_EXIT_INVALID_CONFIG = 1, MT_EXIT_USAGE = 2 };

#endif
