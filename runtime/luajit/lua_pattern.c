/*
 * lua_pattern.c - a Lua 5.1 pattern matcher with a step budget and a deadline, and the
 * "meltemi.pattern" Lua module built on it (see lua_pattern.h for why it exists).
 *
 * The matcher is a backtracking one, like Lua's: the semantics are the language's, only the
 * cost is bounded. Every call of match_here, and every byte a loop (max_expand, min_expand,
 * %b, back references) looks at, is one step. While the watchdog is armed the clock is read
 * every MT_PAT_CLOCK_EVERY steps (a few microseconds of matching), so a pathological pattern
 * stops within about that much of its deadline.
 */
#include "runtime/luajit/lua_pattern.h"

#include <ctype.h>
#include <lauxlib.h>
#include <string.h>
#include <time.h>

#define MT_PAT_CLOCK_EVERY 4096u
#define L_ESC '%'
#define SPECIALS "^$*+?.([%-"

static const char ERR_TIME[] = "time limit exceeded";
static const char ERR_MEMORY[] = "memory limit exceeded";

uint64_t mt_pat_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- the matcher ---------------------------------------------------------------------------- */

static void pat_fail(mt_pat_state_t *ms, mt_pat_status_t status, const char *why)
{
    if (ms->status == MT_PAT_OK) {
        ms->status = status;
        ms->error = why;
    }
    ms->until_check = ms->chunk = 0; /* every later step takes the slow path and fails */
}

/* The next countdown: MT_PAT_CLOCK_EVERY steps, or what is left of the budget. */
static void pat_refill(mt_pat_state_t *ms)
{
    ms->chunk = ms->steps_left < MT_PAT_CLOCK_EVERY ? ms->steps_left : MT_PAT_CLOCK_EVERY;
    ms->until_check = ms->chunk;
}

/* The end of a countdown: charge its steps to the budget and look at the clock. */
static bool pat_step_slow(mt_pat_state_t *ms, uint64_t n)
{
    if (ms->status != MT_PAT_OK)
        return false;
    uint64_t used = ms->chunk - ms->until_check + n;
    if (ms->steps_left != UINT64_MAX) {
        if (used > ms->steps_left) {
            pat_fail(ms, MT_PAT_ABORTED, "pattern step budget exceeded");
            return false;
        }
        ms->steps_left -= used;
    }
    if (ms->deadline_ns != 0 && mt_pat_now_ns() >= ms->deadline_ns) {
        pat_fail(ms, MT_PAT_ABORTED, ERR_TIME);
        return false;
    }
    pat_refill(ms);
    return true;
}

/* Counts n steps; false once the budget or the deadline is spent (or matching failed). */
static inline bool pat_step(mt_pat_state_t *ms, uint64_t n)
{
    if (ms->until_check > n) {
        ms->until_check -= n;
        return true;
    }
    return pat_step_slow(ms, n);
}

void mt_pat_init(mt_pat_state_t *ms, const char *s, size_t ls, const char *p, size_t lp,
                 uint64_t max_steps, uint64_t deadline_ns)
{
    ms->src_init = s;
    ms->src_end = s + ls;
    /* Lua 5.1 (and LuaJIT) patterns end at their first NUL; %z matches a NUL byte. */
    const char *nul = memchr(p, '\0', lp);
    ms->p_end = nul ? nul : p + lp;
    ms->level = 0;
    ms->depth = 0;
    ms->steps_left = max_steps;
    ms->deadline_ns = deadline_ns;
    ms->status = MT_PAT_OK;
    ms->error = NULL;
    pat_refill(ms);
}

/* %a, %d, ... : whether c is in class cl (upper case: the complement). */
static bool class_has(int c, int cl)
{
    bool res;
    switch (tolower(cl)) {
    case 'a':
        res = isalpha(c);
        break;
    case 'c':
        res = iscntrl(c);
        break;
    case 'd':
        res = isdigit(c);
        break;
    case 'g':
        res = isgraph(c);
        break;
    case 'l':
        res = islower(c);
        break;
    case 'p':
        res = ispunct(c);
        break;
    case 's':
        res = isspace(c);
        break;
    case 'u':
        res = isupper(c);
        break;
    case 'w':
        res = isalnum(c);
        break;
    case 'x':
        res = isxdigit(c);
        break;
    case 'z':
        res = c == 0;
        break;
    default:
        return cl == c; /* %. %% %] ...: the character itself */
    }
    return isupper(cl) ? !res : res;
}

/* The end of the single-character class starting at p: past "x", "%x" or "[...]". */
static const char *class_end(mt_pat_state_t *ms, const char *p)
{
    if (*p == L_ESC) {
        if (p + 1 >= ms->p_end) {
            pat_fail(ms, MT_PAT_ERROR, "malformed pattern (ends with '%')");
            return NULL;
        }
        return p + 2;
    }
    if (*p != '[')
        return p + 1;
    p++;
    if (p < ms->p_end && *p == '^')
        p++;
    do { /* look for the closing ']'; the first character is never it */
        if (p >= ms->p_end) {
            pat_fail(ms, MT_PAT_ERROR, "malformed pattern (missing ']')");
            return NULL;
        }
        if (*(p++) == L_ESC && p < ms->p_end)
            p++; /* %] and friends */
    } while (p >= ms->p_end || *p != ']');
    return p + 1;
}

/* [set] from p ('[') to ec (its ']'). */
static bool set_has(int c, const char *p, const char *ec)
{
    bool in = true;
    if (*(p + 1) == '^') {
        in = false;
        p++;
    }
    while (++p < ec) {
        if (*p == L_ESC) {
            p++;
            if (class_has(c, (unsigned char)*p))
                return in;
        } else if (*(p + 1) == '-' && p + 2 < ec) {
            p += 2;
            if ((unsigned char)*(p - 2) <= c && c <= (unsigned char)*p)
                return in;
        } else if ((unsigned char)*p == c) {
            return in;
        }
    }
    return !in;
}

/* Whether the subject byte at s matches the class p..ep (s must be before src_end). */
static bool single_match(const mt_pat_state_t *ms, const char *s, const char *p, const char *ep)
{
    int c = (unsigned char)*s;
    switch (*p) {
    case '.':
        return true;
    case L_ESC:
        return class_has(c, (unsigned char)*(p + 1));
    case '[':
        return set_has(c, p, ep - 1);
    default:
        return (unsigned char)*p == c;
    }
}

static const char *match_here(mt_pat_state_t *ms, const char *s, const char *p);

static const char *match_nested(mt_pat_state_t *ms, const char *s, const char *p)
{
    if (ms->depth >= MT_PAT_MAXDEPTH) {
        pat_fail(ms, MT_PAT_ERROR, "pattern too complex");
        return NULL;
    }
    ms->depth++;
    const char *res = match_here(ms, s, p);
    ms->depth--;
    return res;
}

/* x*: the longest run first, then shorter ones. */
static const char *max_expand(mt_pat_state_t *ms, const char *s, const char *p, const char *ep)
{
    ptrdiff_t i = 0;
    while (s + i < ms->src_end && single_match(ms, s + i, p, ep))
        i++;
    if (!pat_step(ms, (uint64_t)i + 1))
        return NULL;
    for (; i >= 0; i--) {
        const char *res = match_nested(ms, s + i, ep + 1);
        if (res || ms->status != MT_PAT_OK)
            return res;
    }
    return NULL;
}

/* x-: the shortest run first, then longer ones. */
static const char *min_expand(mt_pat_state_t *ms, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *res = match_nested(ms, s, ep + 1);
        if (res || ms->status != MT_PAT_OK)
            return res;
        if (s < ms->src_end && single_match(ms, s, p, ep))
            s++;
        else
            return NULL;
    }
}

static const char *start_capture(mt_pat_state_t *ms, const char *s, const char *p, ptrdiff_t what)
{
    if (ms->level >= MT_PAT_MAXCAPTURES) {
        pat_fail(ms, MT_PAT_ERROR, "too many captures");
        return NULL;
    }
    ms->capture[ms->level].init = s;
    ms->capture[ms->level].len = what;
    ms->level++;
    const char *res = match_nested(ms, s, p);
    if (res == NULL)
        ms->level--;
    return res;
}

static const char *end_capture(mt_pat_state_t *ms, const char *s, const char *p)
{
    int l = ms->level - 1;
    while (l >= 0 && ms->capture[l].len != MT_PAT_CAP_UNFINISHED)
        l--;
    if (l < 0) {
        pat_fail(ms, MT_PAT_ERROR, "invalid pattern capture");
        return NULL;
    }
    ms->capture[l].len = s - ms->capture[l].init;
    const char *res = match_nested(ms, s, p);
    if (res == NULL)
        ms->capture[l].len = MT_PAT_CAP_UNFINISHED;
    return res;
}

/* %1..%9: the text of a closed capture again. */
static const char *match_backref(mt_pat_state_t *ms, const char *s, int digit)
{
    int l = digit - '1';
    if (l < 0 || l >= ms->level || ms->capture[l].len == MT_PAT_CAP_UNFINISHED) {
        pat_fail(ms, MT_PAT_ERROR, "invalid capture index");
        return NULL;
    }
    size_t len = (size_t)ms->capture[l].len; /* a position capture never fits */
    if (!pat_step(ms, 1 + (len < 1u << 30 ? len : 0)))
        return NULL;
    if ((size_t)(ms->src_end - s) >= len && memcmp(ms->capture[l].init, s, len) == 0)
        return s + len;
    return NULL;
}

/* %bxy at s (p points at x). */
static const char *match_balance(mt_pat_state_t *ms, const char *s, const char *p)
{
    if (p + 1 >= ms->p_end) {
        pat_fail(ms, MT_PAT_ERROR, "unbalanced pattern");
        return NULL;
    }
    if (s >= ms->src_end || *s != *p)
        return NULL;
    int b = *p, e = *(p + 1), open = 1;
    const char *start = s;
    while (++s < ms->src_end) {
        if (*s == e) {
            if (--open == 0)
                return pat_step(ms, (uint64_t)(s - start)) ? s + 1 : NULL;
        } else if (*s == b) {
            open++;
        }
    }
    pat_step(ms, (uint64_t)(s - start));
    return NULL;
}

/* %f[set] at s; returns where the pattern goes on, or NULL. */
static const char *match_frontier(mt_pat_state_t *ms, const char *s, const char *p,
                                  const char **next)
{
    if (p >= ms->p_end || *p != '[') {
        pat_fail(ms, MT_PAT_ERROR, "missing '[' after '%f' in pattern");
        return NULL;
    }
    const char *ep = class_end(ms, p);
    if (!ep)
        return NULL;
    int prev = s == ms->src_init ? 0 : (unsigned char)*(s - 1);
    int cur = s < ms->src_end ? (unsigned char)*s : 0;
    if (set_has(prev, p, ep - 1) || !set_has(cur, p, ep - 1))
        return NULL;
    *next = ep;
    return s;
}

const char *mt_pat_match(mt_pat_state_t *ms, const char *s, const char *p)
{
    return match_nested(ms, s, p);
}

static const char *match_here(mt_pat_state_t *ms, const char *s, const char *p)
{
    for (;;) { /* each iteration matches one item; the tail is the loop, not a call */
        if (!pat_step(ms, 1))
            return NULL;
        if (p == ms->p_end)
            return s;
        switch (*p) {
        case '(':
            if (p + 1 < ms->p_end && *(p + 1) == ')')
                return start_capture(ms, s, p + 2, MT_PAT_CAP_POSITION);
            return start_capture(ms, s, p + 1, MT_PAT_CAP_UNFINISHED);
        case ')':
            return end_capture(ms, s, p + 1);
        case '$':
            if (p + 1 == ms->p_end)
                return s == ms->src_end ? s : NULL;
            break;
        case L_ESC:
            if (p + 1 < ms->p_end && *(p + 1) == 'b') {
                s = match_balance(ms, s, p + 2);
                if (!s)
                    return NULL;
                p += 4;
                continue;
            }
            if (p + 1 < ms->p_end && *(p + 1) == 'f') {
                const char *next = NULL;
                if (!match_frontier(ms, s, p + 2, &next))
                    return NULL;
                p = next;
                continue;
            }
            if (p + 1 < ms->p_end && isdigit((unsigned char)*(p + 1))) {
                s = match_backref(ms, s, (unsigned char)*(p + 1));
                if (!s)
                    return NULL;
                p += 2;
                continue;
            }
            break;
        default:
            break;
        }
        /* a single-character class, maybe with a repetition suffix */
        const char *ep = class_end(ms, p);
        if (!ep)
            return NULL;
        bool m = s < ms->src_end && single_match(ms, s, p, ep);
        char suffix = ep < ms->p_end ? *ep : '\0';
        switch (suffix) {
        case '?': {
            if (m) {
                const char *res = match_nested(ms, s + 1, ep + 1);
                if (res || ms->status != MT_PAT_OK)
                    return res;
            }
            p = ep + 1;
            continue;
        }
        case '*':
            return max_expand(ms, s, p, ep);
        case '+':
            return m ? max_expand(ms, s + 1, p, ep) : NULL;
        case '-':
            return min_expand(ms, s, p, ep);
        default:
            if (!m)
                return NULL;
            s++;
            p = ep;
            continue;
        }
    }
}

/* memmem with Lua's answer for an empty needle (a match right at s). */
static const char *plain_find(const char *s, size_t ls, const char *p, size_t lp)
{
    if (lp == 0)
        return s;
    if (lp > ls)
        return NULL;
    return memmem(s, ls, p, lp);
}

static bool has_specials(const char *p, size_t lp)
{
    for (size_t i = 0; i < lp; i++) {
        if (p[i] != '\0' && strchr(SPECIALS, p[i]))
            return true;
    }
    return false;
}

int mt_pat_find(mt_pat_state_t *ms, const char *p, size_t init, size_t *start, size_t *end)
{
    const char *s = ms->src_init;
    bool anchor = p < ms->p_end && *p == '^';
    if (anchor)
        p++;
    const char *s1 = s + init;
    do {
        ms->level = 0;
        const char *e = mt_pat_match(ms, s1, p);
        if (ms->status != MT_PAT_OK)
            return -1;
        if (e) {
            *start = (size_t)(s1 - s);
            *end = (size_t)(e - s);
            return 1;
        }
    } while (s1++ < ms->src_end && !anchor);
    return 0;
}

/* ---- the watchdog --------------------------------------------------------------------------- */

/*
 * The hard memory cap: the state's allocator, wrapped. The instruction hook checks the heap
 * only every 1000 instructions, and one C call (table.concat of a long list, s .. s in a
 * short loop) can ask for gigabytes in between. While the watchdog is armed with a cap, an
 * allocation that would take the state past it is refused (Lua raises "not enough memory"
 * and the watchdog trips with "memory limit exceeded"). Unarmed, nothing is refused.
 */
typedef struct mt_memcap {
    lua_Alloc orig;
    void *orig_ud;
    size_t total; /* bytes the state holds through this allocator */
    size_t limit; /* 0: no cap */
    bool refused; /* an allocation was refused since the watchdog was armed */
} mt_memcap_t;

static void *memcap_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    mt_memcap_t *mc = ud;
    if (nsize > osize && mc->limit && mc->total + (nsize - osize) > mc->limit) {
        mc->refused = true;
        return NULL;
    }
    void *p = mc->orig(mc->orig_ud, ptr, osize, nsize);
    if (p != NULL || nsize == 0) /* never wraps, even if a size was reported oddly */
        mc->total = (mc->total >= osize ? mc->total - osize : 0) + nsize;
    return p;
}

/* One per Lua state (the module's upvalue). Armed by the sandbox for the length of a call
 * into user code; unarmed, the functions below are as unlimited as the standard ones. */
typedef struct mt_watchdog {
    bool armed;
    uint64_t deadline_ns;
    const char *tripped; /* the limit that stopped the current call, or NULL */
    mt_memcap_t memcap;  /* installed as the state's allocator (memcap.orig != NULL) */
} mt_watchdog_t;

/* The current limit that stopped the call, if any (a refused allocation trips it late: the
 * allocator cannot call into Lua). */
static const char *wd_limit(mt_watchdog_t *wd)
{
    if (wd->armed && wd->tripped == NULL && wd->memcap.refused)
        wd->tripped = ERR_MEMORY;
    return wd->armed ? wd->tripped : NULL;
}

static mt_watchdog_t *watchdog(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* A matching state with the watchdog's limits: its deadline when armed, else none. */
static void wd_init(lua_State *L, mt_pat_state_t *ms, const char *s, size_t ls, const char *p,
                    size_t lp)
{
    mt_watchdog_t *wd = watchdog(L);
    mt_pat_init(ms, s, ls, p, lp, UINT64_MAX, wd->armed ? wd->deadline_ns : 0);
}

/* Raises the error of a failed match; an abort also trips the watchdog so that the
 * sandbox's pcall does not let user code swallow it. */
static int pat_raise(lua_State *L, const mt_pat_state_t *ms)
{
    if (ms->status == MT_PAT_ABORTED) {
        mt_watchdog_t *wd = watchdog(L);
        if (wd->armed)
            wd->tripped = ERR_TIME;
        return luaL_error(L, "%s", ms->error);
    }
    return luaL_error(L, "%s", ms->error ? ms->error : "malformed pattern");
}

/* arm(timeout_ms [, memory_cap_bytes]): starts a call's deadline and hard memory cap. */
static int wd_arm(lua_State *L)
{
    mt_watchdog_t *wd = watchdog(L);
    lua_Number ms = luaL_checknumber(L, 1);
    lua_Number cap = luaL_optnumber(L, 2, 0);
    if (ms < 1)
        ms = 1;
    wd->armed = true;
    wd->tripped = NULL;
    wd->deadline_ns = mt_pat_now_ns() + (uint64_t)(ms * 1e6);
    wd->memcap.refused = false;
    wd->memcap.limit = wd->memcap.orig && cap > 0 ? (size_t)cap : 0;
    return 0;
}

static int wd_disarm(lua_State *L)
{
    mt_watchdog_t *wd = watchdog(L);
    wd->armed = false;
    wd->tripped = NULL;
    wd->memcap.limit = 0;
    wd->memcap.refused = false;
    return 0;
}

/* expired() -> the message of the limit that stopped the call (the deadline has passed, or
 * an allocation was refused), or false. Called by the sandbox's hook. */
static int wd_expired(lua_State *L)
{
    mt_watchdog_t *wd = watchdog(L);
    if (wd->armed && wd->tripped == NULL && mt_pat_now_ns() >= wd->deadline_ns)
        wd->tripped = ERR_TIME;
    const char *t = wd_limit(wd);
    if (t)
        lua_pushstring(L, t);
    else
        lua_pushboolean(L, 0);
    return 1;
}

/* tripped() -> the message of the limit that stopped the current call, or nil. */
static int wd_tripped(lua_State *L)
{
    const char *t = wd_limit(watchdog(L));
    if (t)
        lua_pushstring(L, t);
    else
        lua_pushnil(L);
    return 1;
}

/* heap() -> bytes the state holds, as the allocator counts them (nil without the cap). */
static int wd_heap(lua_State *L)
{
    mt_watchdog_t *wd = watchdog(L);
    if (!wd->memcap.orig)
        return 0;
    lua_pushnumber(L, (lua_Number)wd->memcap.total);
    return 1;
}

/* __gc of the watchdog, run by lua_close before the state frees its objects: hand the
 * allocator back, so nothing reaches memcap_alloc once this userdata is gone. */
static int wd_gc(lua_State *L)
{
    mt_watchdog_t *wd = lua_touserdata(L, 1);
    if (wd->memcap.orig) {
        void *ud = NULL;
        if (lua_getallocf(L, &ud) == memcap_alloc && ud == &wd->memcap)
            lua_setallocf(L, wd->memcap.orig, wd->memcap.orig_ud);
        wd->memcap.orig = NULL;
    }
    return 0;
}

static void wd_install_memcap(lua_State *L, mt_watchdog_t *wd)
{
    void *ud = NULL;
    lua_Alloc f = lua_getallocf(L, &ud);
    if (f == memcap_alloc)
        return; /* another watchdog of this state has it; this one runs without a cap */
    wd->memcap.orig = f;
    wd->memcap.orig_ud = ud;
    wd->memcap.total =
        (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024u + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, memcap_alloc, &wd->memcap);
}

/* ---- string.find / match / gmatch / gsub ---------------------------------------------------- */

/* Lua 5.1's string position rules: negative counts from the end, then clamp to [0, len]. */
static size_t start_offset(lua_State *L, int arg, size_t len)
{
    lua_Integer pos = luaL_optinteger(L, arg, 1);
    if (pos < 0)
        pos += (lua_Integer)len + 1;
    if (pos < 1)
        return 0;
    if ((size_t)pos > len)
        return len;
    return (size_t)pos - 1;
}

static void push_capture(lua_State *L, const mt_pat_state_t *ms, int i, const char *s,
                         const char *e)
{
    if (i >= ms->level) {
        if (i == 0) {
            lua_pushlstring(L, s, (size_t)(e - s)); /* no captures: the whole match */
            return;
        }
        luaL_error(L, "invalid capture index");
        return;
    }
    ptrdiff_t l = ms->capture[i].len;
    if (l == MT_PAT_CAP_UNFINISHED)
        luaL_error(L, "unfinished capture");
    if (l == MT_PAT_CAP_POSITION)
        lua_pushinteger(L, (lua_Integer)(ms->capture[i].init - ms->src_init) + 1);
    else
        lua_pushlstring(L, ms->capture[i].init, (size_t)l);
}

/* Pushes the captures (or the whole match when s is given and there are none). */
static int push_captures(lua_State *L, const mt_pat_state_t *ms, const char *s, const char *e)
{
    int n = (ms->level == 0 && s) ? 1 : ms->level;
    luaL_checkstack(L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(L, ms, i, s, e);
    return n;
}

static int find_aux(lua_State *L, bool find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_offset(L, 3, ls);
    if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
        const char *hit = plain_find(s + init, ls - init, p, lp);
        if (!hit) {
            lua_pushnil(L);
            return 1;
        }
        lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
        lua_pushinteger(L, (lua_Integer)(hit - s) + (lua_Integer)lp);
        return 2;
    }
    mt_pat_state_t ms;
    wd_init(L, &ms, s, ls, p, lp);
    size_t start, end;
    int rc = mt_pat_find(&ms, p, init, &start, &end);
    if (rc < 0)
        return pat_raise(L, &ms);
    if (rc == 0) {
        lua_pushnil(L);
        return 1;
    }
    if (!find)
        return push_captures(L, &ms, s + start, s + end);
    lua_pushinteger(L, (lua_Integer)start + 1);
    lua_pushinteger(L, (lua_Integer)end);
    return push_captures(L, &ms, NULL, NULL) + 2;
}

static int str_find(lua_State *L)
{
    return find_aux(L, true);
}

static int str_match(lua_State *L)
{
    return find_aux(L, false);
}

/* The gmatch iterator: upvalues are the watchdog, the subject, the pattern, the offset. */
static int gmatch_next(lua_State *L)
{
    size_t ls, lp;
    const char *s = lua_tolstring(L, lua_upvalueindex(2), &ls);
    const char *p = lua_tolstring(L, lua_upvalueindex(3), &lp);
    size_t from = (size_t)lua_tointeger(L, lua_upvalueindex(4));
    mt_pat_state_t ms;
    wd_init(L, &ms, s, ls, p, lp);
    for (const char *src = s + from; src <= ms.src_end; src++) {
        ms.level = 0;
        const char *e = mt_pat_match(&ms, src, p);
        if (ms.status != MT_PAT_OK)
            return pat_raise(L, &ms);
        if (e) {
            size_t next = (size_t)(e - s) + (e == src ? 1 : 0); /* empty match: move on */
            lua_pushinteger(L, (lua_Integer)next);
            lua_replace(L, lua_upvalueindex(4));
            return push_captures(L, &ms, src, e);
        }
    }
    return 0;
}

static int str_gmatch(lua_State *L)
{
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, gmatch_next, 4);
    return 1;
}

/* gsub's replacement string: %0..%9 captures, %x any other character itself (Lua 5.1). */
static void add_repl_string(lua_State *L, luaL_Buffer *b, const mt_pat_state_t *ms, const char *s,
                            const char *e)
{
    size_t l;
    const char *r = lua_tolstring(L, 3, &l);
    for (size_t i = 0; i < l; i++) {
        if (r[i] != L_ESC || i + 1 == l) {
            luaL_addchar(b, r[i]);
            continue;
        }
        i++;
        if (!isdigit((unsigned char)r[i])) {
            luaL_addchar(b, r[i]);
        } else if (r[i] == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else {
            push_capture(L, ms, r[i] - '1', s, e);
            luaL_addvalue(b); /* a position capture is added as its number */
        }
    }
}

static void add_repl_value(lua_State *L, luaL_Buffer *b, const mt_pat_state_t *ms, const char *s,
                           const char *e)
{
    int t = lua_type(L, 3);
    if (t == LUA_TNUMBER || t == LUA_TSTRING) {
        add_repl_string(L, b, ms, s, e);
        return;
    }
    if (t == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = push_captures(L, ms, s, e);
        lua_call(L, n, 1);
    } else { /* a table, looked up with the first capture */
        push_capture(L, ms, 0, s, e);
        lua_gettable(L, 3);
    }
    if (!lua_toboolean(L, -1)) { /* nil or false: keep the original text */
        lua_pop(L, 1);
        lua_pushlstring(L, s, (size_t)(e - s));
    } else if (!lua_isstring(L, -1)) {
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    }
    luaL_addvalue(b);
}

static int str_gsub(lua_State *L)
{
    size_t ls, lp;
    const char *src = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    int tr = lua_type(L, 3);
    lua_Integer max_n = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argcheck(L,
                  tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE,
                  3, "string/function/table expected");
    bool anchor = lp > 0 && *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    mt_pat_state_t ms;
    wd_init(L, &ms, src, ls, p, lp);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_Integer n = 0;
    while (n < max_n) {
        ms.level = 0;
        const char *e = mt_pat_match(&ms, src, p);
        if (ms.status != MT_PAT_OK)
            return pat_raise(L, &ms);
        if (e) {
            n++;
            add_repl_value(L, &b, &ms, src, e);
        }
        if (e && e > src)
            src = e;
        else if (src < ms.src_end)
            luaL_addchar(&b, *src++);
        else
            break;
        if (anchor)
            break;
        /* Replacement functions and a long result take time outside the matcher. */
        if (!pat_step(&ms, 1))
            return pat_raise(L, &ms);
    }
    luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
    luaL_pushresult(&b);
    lua_pushinteger(L, n);
    return 2;
}

/* ---- plain helpers: byte comparisons, linear in the subject --------------------------------- */

/* starts_with(s, prefix) -> boolean */
static int str_starts_with(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    lua_pushboolean(L, lp <= ls && memcmp(s, p, lp) == 0);
    return 1;
}

/* ends_with(s, suffix) -> boolean */
static int str_ends_with(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    lua_pushboolean(L, lp <= ls && memcmp(s + ls - lp, p, lp) == 0);
    return 1;
}

/* contains(s, needle) -> boolean (glibc's memmem is linear: two-way matching) */
static int str_contains(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    lua_pushboolean(L, plain_find(s, ls, p, lp) != NULL);
    return 1;
}

int luaopen_meltemi_pattern(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"find", str_find},
        {"match", str_match},
        {"gmatch", str_gmatch},
        {"gsub", str_gsub},
        {"arm", wd_arm},
        {"disarm", wd_disarm},
        {"expired", wd_expired},
        {"tripped", wd_tripped},
        {"heap", wd_heap},
        {"starts_with", str_starts_with},
        {"ends_with", str_ends_with},
        {"contains", str_contains},
        {NULL, NULL},
    };
    lua_newtable(L);
    mt_watchdog_t *wd = lua_newuserdata(L, sizeof(*wd));
    memset(wd, 0, sizeof(*wd));
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, wd_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    wd_install_memcap(L, wd);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -3, f->name);
    }
    lua_pop(L, 1);
    return 1;
}
