/*
 * lua_pattern.h - a Lua 5.1 pattern matcher that can be stopped: the string.find / match /
 * gmatch / gsub that user filters get (docs/lua-filters.md, "Sandbox and limits").
 *
 * LuaJIT's own matcher backtracks without bound inside one C call, where no debug hook can
 * run: `string.find(key, ".-.-.-.-b")` on a 204-byte key runs for minutes. This one has the
 * same semantics (classes, sets, anchors, * + - ?, captures and position captures, %b, %f,
 * back references, plain find) and counts its steps: past a step budget or a wall-clock
 * deadline it stops with MT_PAT_ABORTED instead of an answer.
 *
 * The Lua side ("meltemi.pattern", luaopen_meltemi_pattern) also holds the per-state
 * watchdog the sandbox arms around each call into user code: a deadline that this matcher
 * and the sandbox's instruction hook both check.
 */
#ifndef MELTEMI_LUA_PATTERN_H
#define MELTEMI_LUA_PATTERN_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MT_PAT_MAXCAPTURES 32 /* LUA_MAXCAPTURES */
#define MT_PAT_MAXDEPTH 200   /* nested pattern items; deeper is "pattern too complex" */
#define MT_PAT_CAP_UNFINISHED (-1)
#define MT_PAT_CAP_POSITION (-2)

typedef enum mt_pat_status {
    MT_PAT_OK = 0,      /* matched or not: see the result */
    MT_PAT_ERROR = 1,   /* malformed pattern: ms->error says why */
    MT_PAT_ABORTED = 2, /* step budget or deadline exhausted */
} mt_pat_status_t;

typedef struct mt_pat_capture {
    const char *init;
    ptrdiff_t len; /* or MT_PAT_CAP_UNFINISHED / MT_PAT_CAP_POSITION */
} mt_pat_capture_t;

/* One subject and pattern's matching state: mt_pat_init sets it up, then mt_pat_match runs
 * once per start position (level reset to 0 before each), or mt_pat_find does the loop. */
typedef struct mt_pat_state {
    const char *src_init, *src_end, *p_end;
    int level, depth;
    mt_pat_capture_t capture[MT_PAT_MAXCAPTURES];
    uint64_t steps_left;         /* UINT64_MAX: unlimited */
    uint64_t deadline_ns;        /* CLOCK_MONOTONIC; 0: none */
    uint64_t until_check, chunk; /* countdown to the next budget and clock check, and its
                                    start (the budget is charged a chunk at a time) */
    mt_pat_status_t status;
    const char *error; /* static text, when status is MT_PAT_ERROR or MT_PAT_ABORTED */
} mt_pat_state_t;

/* Matches pattern p (no leading '^': the caller handles anchors) at s. Returns the end of the
 * match, or NULL when it does not match here or ms->status is no longer MT_PAT_OK. */
const char *mt_pat_match(mt_pat_state_t *ms, const char *s, const char *p);

/* max_steps: UINT64_MAX for no budget; deadline_ns: 0 for none. */
void mt_pat_init(mt_pat_state_t *ms, const char *s, size_t ls, const char *p, size_t lp,
                 uint64_t max_steps, uint64_t deadline_ns);

/*
 * string.find semantics in C, for the subject and pattern p that ms was set up with: the first
 * match from byte offset init (0-based, at most the subject's length), '^' anchoring it.
 * Returns 1 and sets *start / *end (0-based, end exclusive) and the captures in ms, 0 when
 * there is none, -1 on a malformed pattern or an abort (ms->status, ms->error).
 */
int mt_pat_find(mt_pat_state_t *ms, const char *p, size_t init, size_t *start, size_t *end);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t mt_pat_now_ns(void);

/* The "meltemi.pattern" module: find, match, gmatch, gsub (bounded while the watchdog is
 * armed); starts_with, ends_with, contains (plain byte comparisons); and the watchdog:
 * arm(timeout_ms [, memory_cap_bytes]), disarm(), expired(), tripped(), heap(). */
int luaopen_meltemi_pattern(lua_State *L);

#endif
