/*
 * status.h - the result codes every codec returns, and the few size and branch helpers codecs
 * share. The runtime and (through FFI) Lua use the same enum, as nginx and lua-resty-core do; it
 * lives here, below the runtime, so that protocols/ includes nothing from runtime/.
 */
#ifndef MELTEMI_PROTOCOLS_STATUS_H
#define MELTEMI_PROTOCOLS_STATUS_H

#include <stddef.h>

typedef enum mt_status {
    MT_OK = 0,     /* done: a whole frame / operation completed */
    MT_AGAIN = 1,  /* need more input; call again with the same bytes plus more */
    MT_ERROR = -1, /* malformed input or failure; an error text says why */
} mt_status_t;

#define MT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define MT_LIKELY(x) __builtin_expect(!!(x), 1)
#define MT_UNLIKELY(x) __builtin_expect(!!(x), 0)

#endif
