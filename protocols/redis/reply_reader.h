/*
 * reply_reader.h - reading the parts of one complete RESP reply (the reply scanner in resp.h
 * has already found where it ends): a line of a given type, an integer, a bulk string, or a
 * whole element skipped. Used where meltemi looks inside replies: CLUSTER SLOTS, the parts of
 * split commands, SCAN cursors. A reader that meets anything unexpected stays failed.
 */
#ifndef MELTEMI_REDIS_REPLY_READER_H
#define MELTEMI_REDIS_REPLY_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct redis_reader {
    const char *p, *end;
    bool bad; /* set at the first unexpected byte; every later read fails */
} redis_reader_t;

static inline redis_reader_t redis_reader(const char *p, size_t len)
{
    return (redis_reader_t){p, p + len, false};
}

/* s[0..n) as a decimal integer with an optional '-' (every byte a digit, within int64_t):
 * the bounded parser for slices of requests and replies, which are not NUL-terminated. */
bool redis_parse_int(const char *s, size_t n, int64_t *out);
/* A line starting with type ('+', '-', ':', '$', '*'): its text without the type and CRLF. */
bool redis_read_line(redis_reader_t *r, char type, const char **s, size_t *n);
/* The integer of a line of that type (':', '*', '$'); -1 (and r->bad) when it is not one. A
 * null array or bulk ("*-1", "$-1") reads as -1 without failing the reader. */
int64_t redis_read_num(redis_reader_t *r, char type);
/* A bulk string; *s = NULL for a null bulk. */
bool redis_read_bulk(redis_reader_t *r, const char **s, size_t *n);
/* Skips one complete element of any type; its start and length when asked. */
bool redis_read_skip(redis_reader_t *r, const char **start, size_t *len);

#endif
