/*
 * log.h - leveled logging to stderr. Thread-safe (one write(2) per line). Never pass a
 * secret to these functions: nothing here redacts.
 */
#ifndef MELTEMI_LOG_H
#define MELTEMI_LOG_H

#include <stdarg.h>

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
#define mt_debug(...) MT_LOG(MT_LOG_DEBUG, __VA_ARGS__)
#define mt_info(...) MT_LOG(MT_LOG_INFO, __VA_ARGS__)
#define mt_warn(...) MT_LOG(MT_LOG_WARN, __VA_ARGS__)
#define mt_error(...) MT_LOG(MT_LOG_ERROR, __VA_ARGS__)

#endif
