/*
 * common.h - small helpers shared by the runtime. The status enum (MT_OK / MT_AGAIN /
 * MT_ERROR) comes from protocols/status.h, one enum for the codecs, the runtime and Lua.
 */
#ifndef MELTEMI_COMMON_H
#define MELTEMI_COMMON_H

#include "protocols/status.h"

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MT_UNUSED(x) ((void)(x))
#define MT_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Exit codes of the CLI. */
enum { MT_EXIT_OK = 0, MT_EXIT_INVALID_CONFIG = 1, MT_EXIT_USAGE = 2 };

#endif
