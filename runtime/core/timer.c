/*
 * timer.c - the worker's hierarchical timer wheel (timer.h says why and how it is laid out).
 *
 * Invariant, relative to the wheel's time now_ms: a timer in level L, slot s has a due time
 * that agrees with now_ms in every bit above level L and whose level-L digit is s, greater
 * than now_ms's. So the lowest used slot of the lowest used level is the next event, and
 * when the wheel's time reaches the start of a slot, that slot's timers are either due (level
 * 0, or exactly at the slot's start) or belong to a lower level now.
 */
#include "runtime/core/timer.h"

#include <assert.h>
#include <stddef.h>

#define SLOT_MASK ((uint64_t)MT_TIMER_SLOTS - 1)

static inline void link_init(mt_timer_link_t *h)
{
    h->next = h->prev = h;
}

static inline bool link_empty(const mt_timer_link_t *h)
{
    return h->next == h;
}

static inline void link_append(mt_timer_link_t *h, mt_timer_link_t *l)
{
    l->prev = h->prev;
    l->next = h;
    h->prev->next = l;
    h->prev = l;
}

static inline void link_remove(mt_timer_link_t *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->next = l->prev = NULL;
}

static inline mt_timer_t *timer_of(mt_timer_link_t *l)
{
    return (mt_timer_t *)((char *)l - offsetof(mt_timer_t, link));
}

/* The loop time at which slot s of level L starts, for a wheel at time now. */
static inline uint64_t slot_start(uint64_t now, unsigned level, unsigned s)
{
    unsigned shift = level * MT_TIMER_SLOT_BITS;
    uint64_t above = shift + MT_TIMER_SLOT_BITS >= 64 ? 0 : now >> (shift + MT_TIMER_SLOT_BITS);
    uint64_t block = shift + MT_TIMER_SLOT_BITS >= 64 ? 0 : above << (shift + MT_TIMER_SLOT_BITS);
    return block | (uint64_t)s << shift;
}

/* Lists t where the invariant puts it (or as due); t is not listed. */
static void wheel_insert(mt_timer_wheel_t *wh, mt_timer_t *t)
{
    if (t->due_ms <= wh->now_ms) {
        t->where = MT_TIMER_WHERE_DUE;
        link_append(&wh->due, &t->link);
        return;
    }
    unsigned level = (unsigned)(63 - __builtin_clzll(t->due_ms ^ wh->now_ms)) / MT_TIMER_SLOT_BITS;
    unsigned s = (unsigned)(t->due_ms >> (level * MT_TIMER_SLOT_BITS) & SLOT_MASK);
    unsigned i = level * MT_TIMER_SLOTS + s;
    t->where = (int16_t)i;
    link_append(&wh->slots[i], &t->link);
    wh->used[level] |= 1ull << s;
}

static void wheel_unlink(mt_timer_wheel_t *wh, mt_timer_t *t)
{
    int16_t i = t->where;
    link_remove(&t->link);
    if (i != MT_TIMER_WHERE_DUE && link_empty(&wh->slots[i]))
        wh->used[i / MT_TIMER_SLOTS] &= ~(1ull << (i % MT_TIMER_SLOTS));
}

/* The loop time of the next thing to do: a due timer (now_ms), the start of the first used
 * slot, or UINT64_MAX when nothing is pending. */
static uint64_t wheel_next_event(const mt_timer_wheel_t *wh)
{
    if (!link_empty(&wh->due))
        return wh->now_ms;
    for (unsigned level = 0; level < MT_TIMER_LEVELS; level++) {
        if (wh->used[level])
            return slot_start(wh->now_ms, level, (unsigned)__builtin_ctzll(wh->used[level]));
    }
    return UINT64_MAX;
}

/* Moves the wheel's time to ev, the next event: the timers of every slot that starts at ev
 * are listed again, as due or one level or more lower. */
static void wheel_step(mt_timer_wheel_t *wh, uint64_t ev)
{
    mt_timer_link_t todo;
    link_init(&todo);
    wh->now_ms = ev;
    for (unsigned level = 0; level < MT_TIMER_LEVELS; level++) {
        unsigned shift = level * MT_TIMER_SLOT_BITS;
        if (shift && (ev & ((1ull << shift) - 1)) != 0)
            break; /* ev starts no slot of this level, nor of any above */
        unsigned s = (unsigned)(ev >> shift & SLOT_MASK);
        mt_timer_link_t *h = &wh->slots[level * MT_TIMER_SLOTS + s];
        if (link_empty(h))
            continue;
        /* Splice the whole slot onto todo: lower levels first keeps due order for ties. */
        h->next->prev = todo.prev;
        todo.prev->next = h->next;
        h->prev->next = &todo;
        todo.prev = h->prev;
        link_init(h);
        wh->used[level] &= ~(1ull << s);
    }
    while (!link_empty(&todo)) {
        mt_timer_t *t = timer_of(todo.next);
        link_remove(&t->link);
        wheel_insert(wh, t);
    }
}

static void wheel_on_uv(uv_timer_t *h);

/* Arms the uv timer at the next event, or stops it when nothing is pending. */
static void wheel_arm(mt_timer_wheel_t *wh)
{
    if (wh->closed || wh->running)
        return;
    if (wh->n_pending == 0) {
        if (wh->armed_ms != UINT64_MAX)
            uv_timer_stop(&wh->uv);
        wh->armed_ms = UINT64_MAX;
        return;
    }
    uint64_t ev = wheel_next_event(wh);
    if (ev == wh->armed_ms)
        return;
    uint64_t now = uv_now(wh->loop);
    wh->armed_ms = ev;
    uv_timer_start(&wh->uv, wheel_on_uv, ev > now ? ev - now : 0, 0);
}

/* Calls every timer due at loop time now, in due order. A callback may start and stop
 * timers: the due list and the slots are re-read after each one. */
void mt_timer_wheel_run(mt_timer_wheel_t *wh, uint64_t now)
{
    wh->running = true;
    wh->run_ms = now;
    for (;;) {
        if (!link_empty(&wh->due)) {
            mt_timer_t *t = timer_of(wh->due.next);
            link_remove(&t->link);
            wh->n_pending--;
            t->cb(t);
            if (wh->closed)
                return;
            continue;
        }
        uint64_t ev = wheel_next_event(wh);
        if (ev > now)
            break;
        wheel_step(wh, ev);
    }
    if (now > wh->now_ms)
        wh->now_ms = now; /* no event in between: the invariant holds at now too */
    wh->running = false;
    wheel_arm(wh);
}

static void wheel_on_uv(uv_timer_t *h)
{
    mt_timer_wheel_t *wh = h->data;
    wh->armed_ms = UINT64_MAX;
    if (wh->clock_ns)
        *wh->clock_ns = uv_hrtime();
    mt_timer_wheel_run(wh, uv_now(wh->loop));
}

int mt_timer_wheel_init(mt_timer_wheel_t *wh, uv_loop_t *loop)
{
    wh->loop = loop;
    wh->clock_ns = NULL;
    wh->now_ms = uv_now(loop);
    wh->armed_ms = UINT64_MAX;
    wh->run_ms = 0;
    wh->n_pending = 0;
    wh->running = wh->closed = false;
    for (unsigned level = 0; level < MT_TIMER_LEVELS; level++)
        wh->used[level] = 0;
    for (unsigned i = 0; i < MT_TIMER_LEVELS * MT_TIMER_SLOTS; i++)
        link_init(&wh->slots[i]);
    link_init(&wh->due);
    int rc = uv_timer_init(loop, &wh->uv);
    wh->uv.data = wh;
    return rc;
}

static void wheel_forget_list(mt_timer_link_t *h)
{
    while (!link_empty(h))
        link_remove(h->next);
}

void mt_timer_wheel_close(mt_timer_wheel_t *wh)
{
    if (wh->closed)
        return;
    wh->closed = true;
    for (unsigned i = 0; i < MT_TIMER_LEVELS * MT_TIMER_SLOTS; i++)
        wheel_forget_list(&wh->slots[i]);
    wheel_forget_list(&wh->due);
    for (unsigned level = 0; level < MT_TIMER_LEVELS; level++)
        wh->used[level] = 0;
    wh->n_pending = 0;
    wh->armed_ms = UINT64_MAX;
    if (!uv_is_closing((uv_handle_t *)&wh->uv))
        uv_close((uv_handle_t *)&wh->uv, NULL);
}

void mt_timer_start_at(mt_timer_wheel_t *wh, mt_timer_t *t, uint64_t due_ms, mt_timer_cb cb)
{
    assert(cb != NULL);
    if (wh->closed)
        return;
    if (mt_timer_pending(t)) {
        wheel_unlink(wh, t);
        wh->n_pending--;
    }
    if (wh->running && due_ms <= wh->run_ms)
        due_ms = wh->run_ms + 1; /* from a callback: a later run, never this one again */
    if (wh->n_pending == 0 && !wh->running) {
        uint64_t now = uv_now(wh->loop);
        if (now > wh->now_ms)
            wh->now_ms = now; /* nothing to keep an invariant for: start from the present */
    }
    t->cb = cb;
    t->due_ms = due_ms;
    wheel_insert(wh, t);
    wh->n_pending++;
    if (!wh->running && wheel_next_event(wh) < wh->armed_ms)
        wheel_arm(wh);
}

void mt_timer_start(mt_timer_wheel_t *wh, mt_timer_t *t, uint64_t timeout_ms, mt_timer_cb cb)
{
    mt_timer_start_at(wh, t, uv_now(wh->loop) + timeout_ms, cb);
}

void mt_timer_stop(mt_timer_wheel_t *wh, mt_timer_t *t)
{
    if (!mt_timer_pending(t))
        return;
    wheel_unlink(wh, t);
    wh->n_pending--;
    if (wh->n_pending == 0)
        wheel_arm(wh); /* nothing left: the uv timer stops, the loop may exit */
}
