/*
 * timer.h - a worker's timer wheel: every per-connection timeout (DELAY holds, connect
 * deadlines, auth and idle timeouts) is an mt_timer_t its owner embeds, started, stopped and
 * restarted in O(1) on the one wheel of its worker (w->timers).
 *
 * Why a wheel armed to the next due slot, not the worker's 20 ms tick: a DELAY fault must
 * answer no earlier than asked and not a tick later, so the resolution is the loop's own
 * millisecond. The wheel keeps one uv_timer armed at the earliest slot that holds a timer
 * (found with one count-trailing-zeros per level), so an idle worker is not woken for empty
 * slots, and a wheel with nothing pending stops that uv_timer: it never keeps a loop alive.
 *
 * Layout: hierarchical, 11 levels of 64 one-millisecond slots (level L slot s spans 2^(6L)
 * ms), which covers every 64-bit loop time, so there is no overflow list: a timer goes to the
 * level of the highest bit in which its due time differs from the wheel's time, and moves
 * down a level (cascades) when the wheel's time reaches the start of its slot; a 49-day
 * uint32 timeout cascades at most five times. Timers fire in due order, ties in start order,
 * never before their due time on the loop clock (uv_now) and at the first wheel run after it.
 *
 * Callbacks run from the wheel's uv_timer callback; one may start, stop or restart any timer,
 * itself included. A timer started from a callback with a due time already reached fires one
 * millisecond later, in a later run (no callback can keep a run going forever).
 *
 * Owners: the wheel is the worker's (mt_worker_start initialises it, worker_main closes it);
 * a timer's memory is its owner's, who must stop it before freeing it. Single thread.
 */
#ifndef MELTEMI_CORE_TIMER_H
#define MELTEMI_CORE_TIMER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define MT_TIMER_SLOT_BITS 6
#define MT_TIMER_SLOTS (1u << MT_TIMER_SLOT_BITS)
#define MT_TIMER_LEVELS 11 /* 11 * 6 bits >= 64: any due time has a level */

typedef struct mt_timer mt_timer_t;
typedef void (*mt_timer_cb)(mt_timer_t *t);

typedef struct mt_timer_link {
    struct mt_timer_link *next, *prev;
} mt_timer_link_t;

struct mt_timer {
    mt_timer_link_t link; /* private: in a slot or the due list while pending */
    /* read-only */
    uint64_t due_ms; /* loop time (uv_now) it fires at, while pending */
    mt_timer_cb cb;
    int16_t where; /* private, while pending: slot index or MT_TIMER_WHERE_DUE */
};

typedef struct mt_timer_wheel {
    uv_timer_t uv; /* armed at the earliest slot holding a timer; stopped when none */
    uv_loop_t *loop;
    uint64_t *clock_ns; /* set to uv_hrtime() before timers run, when not NULL (the worker's
                           now_ns: durations that end in a timer callback) */
    /* private */
    uint64_t now_ms;   /* the wheel's time: every pending timer is due after it (or listed due) */
    uint64_t armed_ms; /* the uv timer's due, UINT64_MAX when it is stopped */
    uint64_t run_ms;   /* while running: the loop time of the run */
    uint32_t n_pending;
    bool running;
    bool closed;
    uint64_t used[MT_TIMER_LEVELS]; /* bit s: slot s of that level holds a timer */
    mt_timer_link_t slots[MT_TIMER_LEVELS * MT_TIMER_SLOTS];
    mt_timer_link_t due; /* reached their due time, to be called in this run */
} mt_timer_wheel_t;

#define MT_TIMER_WHERE_DUE ((int16_t)(MT_TIMER_LEVELS * MT_TIMER_SLOTS))

/* Sets up wh on loop (its uv_timer is initialised, not started). Returns uv_timer_init's code. */
int mt_timer_wheel_init(mt_timer_wheel_t *wh, uv_loop_t *loop);
/* The loop is stopping: forgets every pending timer without calling it (a later stop of one
 * is a no-op, a later start is ignored) and closes the uv_timer. wh must stay alive until the
 * loop has run the close callback (uv_run once more, as worker_main does). */
void mt_timer_wheel_close(mt_timer_wheel_t *wh);
static inline uint32_t mt_timer_wheel_pending(const mt_timer_wheel_t *wh)
{
    return wh->n_pending;
}

/* Calls every timer due at or before loop time now_ms. The wheel's uv_timer runs it with
 * uv_now; tests run it on a clock of their own. */
void mt_timer_wheel_run(mt_timer_wheel_t *wh, uint64_t now_ms);

/* A timer that is not pending (zeroed memory is one too). */
static inline void mt_timer_init(mt_timer_t *t)
{
    t->link.next = t->link.prev = NULL;
    t->where = 0;
    t->due_ms = 0;
    t->cb = NULL;
}
static inline bool mt_timer_pending(const mt_timer_t *t)
{
    return t->link.next != NULL;
}
/* Calls cb(t) once, timeout_ms after the loop's current time (uv_now); restarts t if it is
 * pending. */
void mt_timer_start(mt_timer_wheel_t *wh, mt_timer_t *t, uint64_t timeout_ms, mt_timer_cb cb);
/* The same at an absolute loop time (a due time already reached fires at the next run). */
void mt_timer_start_at(mt_timer_wheel_t *wh, mt_timer_t *t, uint64_t due_ms, mt_timer_cb cb);
/* t will not be called (until started again); a no-op when it is not pending. */
void mt_timer_stop(mt_timer_wheel_t *wh, mt_timer_t *t);

#endif
