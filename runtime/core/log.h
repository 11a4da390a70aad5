/*
 * log.h - leveled logging to stderr. Thread-safe (one write(2) per line). Never pass a
 * secret to these functions: nothing here redacts.
 */
#ifndef MELTEMI_LOG_H
#define MELTEMI_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum mt_log_level {
    MT_LOG_DEBUG = 0,
    MT_LOG_INFO = 1,
    MT_LOG_WARN = 2,
    MT_LOG_ERROR = 3,
    MT_LOG_OFF = 4,
} mt_log_level_t;

extern mt_log_level_t mt_log_threshold;

/* Parses "debug" | "info" | "warn" | "error" | "off"; returns -1 on anything else. */
int mt_log_level_parse(const char *name);
void mt_log_write(mt_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define MT_LOG(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) >= mt_log_threshold)                                                           \
            mt_log_write((level), __VA_ARGS__);                                                    \
    } while (0)
/* A rate limit for log lines a client can cause (failed logins, refusals): at most per_sec
 * lines a second pass; the ones held back are counted and said on the next line that passes.
 * One per worker and kind of line (not thread-safe). */
typedef struct mt_log_limit {
    uint64_t second; /* the current window, in loop ms / 1000 */
    uint32_t passed;
    uint32_t held; /* lines held back since the last that passed */
} mt_log_limit_t;

/* True when a line may be written now; *held_back is how many were held back before it. */
static inline bool mt_log_allow(mt_log_limit_t *l, uint64_t now_ms, uint32_t per_sec,
                                uint32_t *held_back)
{
    uint64_t sec = now_ms / 1000;
    if (sec != l->second) {
        l->second = sec;
        l->passed = 0;
    }
    if (l->passed >= per_sec) {
        l->held++;
        return false;
    }
    l->passed++;
    *held_back = l->held;
    l->held = 0;
    return true;
}

#define mt_debug(...) MT_LOG(MT_LOG_DEBUG, __VA_ARGS__)
#define mt_info(...) MT_LOG(MT_LOG_INFO, __VA_ARGS__)
#define mt_warn(...) MT_LOG(MT_LOG_WARN, __VA_ARGS__)
#define mt_error(...) MT_LOG(MT_LOG_ERROR, __VA_ARGS__)

#endif
