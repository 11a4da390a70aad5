/*
 * test_timer.c - runtime/core/timer.c on a real uv loop in the test's thread: many timers fire
 * in due order, never before their due time on the loop clock; stop before the due time,
 * restart, a callback that stops another timer due in the same slot and one that restarts
 * itself; timeouts long enough to cascade through upper levels (10 minutes, 49 days), checked
 * by moving the wheel's clock with the loop's; and an empty wheel leaves no active handle.
 * No wall-clock upper bounds: the machine is noisy.
 */
#include "runtime/core/timer.h"

#include <criterion/criterion.h>
#include <stdlib.h>

typedef struct probe {
    mt_timer_t t;
    uint64_t want_ms;  /* the due time asked for */
    uint64_t fired_ms; /* uv_now when called, 0 if never */
    int order;         /* 1-based rank of the call */
    int calls;
} probe_t;

static mt_timer_wheel_t wheel;
static uv_loop_t loop;
static int n_calls;
static bool p_stop; /* probe_fired stops the loop too */

static void setup(void)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(mt_timer_wheel_init(&wheel, &loop), 0);
    n_calls = 0;
    p_stop = false;
}

static void teardown(void)
{
    mt_timer_wheel_close(&wheel);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "every handle closed");
}

static void probe_fired(mt_timer_t *t)
{
    probe_t *p = (probe_t *)t;
    if (p_stop)
        uv_stop(&loop);
    p->fired_ms = uv_now(&loop);
    p->order = ++n_calls;
    p->calls++;
}

static void probe_start(probe_t *p, uint64_t timeout_ms)
{
    p->want_ms = uv_now(&loop) + timeout_ms;
    mt_timer_start(&wheel, &p->t, timeout_ms, probe_fired);
}

TestSuite(timer, .init = setup, .fini = teardown);

Test(timer, many_timers_fire_in_due_order_and_never_early)
{
    enum { N = 300 };
    probe_t *p = calloc(N, sizeof(*p));
    /* Timeouts scattered over 0..~200 ms, in no order, several sharing a due time. */
    for (int i = 0; i < N; i++)
        probe_start(&p[i], (uint64_t)((i * 37) % 211));
    cr_assert_eq(mt_timer_wheel_pending(&wheel), N);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once nothing is pending */
    cr_assert_eq(mt_timer_wheel_pending(&wheel), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(p[i].calls, 1, "timer %d fired once", i);
        cr_assert_geq(p[i].fired_ms, p[i].want_ms, "timer %d not before its due time", i);
        for (int j = 0; j < N; j++) {
            if (p[j].want_ms < p[i].want_ms)
                cr_assert_lt(p[j].order, p[i].order, "due %lu before due %lu",
                             (unsigned long)p[j].want_ms, (unsigned long)p[i].want_ms);
        }
    }
    free(p);
}

Test(timer, exact_to_the_millisecond_on_the_loop_clock)
{
    probe_t p[5] = {0};
    uint64_t timeouts[5] = {1, 7, 63, 64, 65};
    for (int i = 0; i < 5; i++)
        probe_start(&p[i], timeouts[i]);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(p[i].calls, 1);
        cr_assert_geq(p[i].fired_ms, p[i].want_ms, "%lu ms: not early", (unsigned long)timeouts[i]);
    }
}

Test(timer, stopped_before_due_never_fires)
{
    probe_t a = {0}, b = {0};
    probe_start(&a, 5);
    probe_start(&b, 10);
    mt_timer_stop(&wheel, &a.t);
    cr_assert(!mt_timer_pending(&a.t));
    mt_timer_stop(&wheel, &a.t); /* a second stop is a no-op */
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(a.calls, 0);
    cr_assert_eq(b.calls, 1);
}

Test(timer, restart_moves_the_due_time)
{
    probe_t a = {0}, b = {0};
    probe_start(&a, 5);
    probe_start(&b, 20);
    probe_start(&a, 40); /* restarted while pending: only the new due time counts */
    cr_assert_eq(mt_timer_wheel_pending(&wheel), 2);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(a.calls, 1);
    cr_assert_geq(a.fired_ms, a.want_ms);
    cr_assert_lt(b.order, a.order);
}

static probe_t *victim;

static void stop_victim(mt_timer_t *t)
{
    probe_fired(t);
    mt_timer_stop(&wheel, &victim->t);
}

Test(timer, callback_stops_another_timer_of_the_same_slot)
{
    probe_t killer = {0}, v = {0};
    victim = &v;
    killer.want_ms = uv_now(&loop) + 3;
    mt_timer_start(&wheel, &killer.t, 3, stop_victim);
    probe_start(&v, 3); /* same due time, started after: runs after the killer */
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(killer.calls, 1);
    cr_assert_eq(v.calls, 0, "stopped by a callback of the same run: never called");
    cr_assert_eq(mt_timer_wheel_pending(&wheel), 0);
}

static void restart_self(mt_timer_t *t)
{
    probe_t *p = (probe_t *)t;
    probe_fired(t);
    if (p->calls < 3) {
        p->want_ms = uv_now(&loop) + 2;
        mt_timer_start(&wheel, t, 2, restart_self);
    } else {
        mt_timer_start(&wheel, t, 0, restart_self);
        mt_timer_stop(&wheel, t); /* and a callback may stop itself */
    }
}

Test(timer, callback_restarts_and_stops_itself)
{
    probe_t p = {0};
    p.want_ms = uv_now(&loop) + 2;
    mt_timer_start(&wheel, &p.t, 2, restart_self);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(p.calls, 3);
    cr_assert_geq(p.fired_ms, p.want_ms);
}

static void zero_again(mt_timer_t *t)
{
    probe_t *p = (probe_t *)t;
    probe_fired(t);
    if (p->calls < 100)
        mt_timer_start(&wheel, t, 0, zero_again);
}

Test(timer, zero_timeout_from_a_callback_waits_for_a_later_run)
{
    probe_t p = {0};
    mt_timer_start(&wheel, &p.t, 0, zero_again);
    cr_assert_eq(uv_run(&loop, UV_RUN_NOWAIT), 1, "the first run calls it once, re-armed");
    cr_assert_eq(p.calls, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(p.calls, 100);
}

/* Long timeouts: nobody waits 49 days, so the wheel is run on a clock of the test's own
 * (mt_timer_wheel_run, what the uv callback calls with uv_now), a millisecond before the due
 * time and at it. */
static uint64_t virtual_fired_ms;

static void virtual_fired(mt_timer_t *t)
{
    virtual_fired_ms = wheel.run_ms;
    ((probe_t *)t)->calls++;
}

static void cascade_check(uint64_t timeout_ms, unsigned min_level)
{
    probe_t p = {0}, q = {0};
    uint64_t now = uv_now(&loop);
    virtual_fired_ms = 0;
    mt_timer_start(&wheel, &p.t, timeout_ms, virtual_fired);
    mt_timer_start(&wheel, &q.t, timeout_ms + 1, virtual_fired);
    cr_assert_geq((unsigned)p.t.where / MT_TIMER_SLOTS, min_level, "starts in an upper level");
    uint64_t due = now + timeout_ms;
    for (uint64_t step = timeout_ms / 7; step < timeout_ms; step += timeout_ms / 7)
        mt_timer_wheel_run(&wheel, now + step); /* cascades on the way */
    mt_timer_wheel_run(&wheel, due - 1);
    cr_assert_eq(p.calls, 0, "%lu ms: not a millisecond early", (unsigned long)timeout_ms);
    cr_assert(mt_timer_pending(&p.t));
    mt_timer_wheel_run(&wheel, due);
    cr_assert_eq(p.calls, 1, "%lu ms: fired at its due time", (unsigned long)timeout_ms);
    cr_assert_eq(virtual_fired_ms, due);
    cr_assert_eq(q.calls, 0, "the next millisecond's is still pending");
    mt_timer_wheel_run(&wheel, due + 1);
    cr_assert_eq(q.calls, 1);
    cr_assert_eq(mt_timer_wheel_pending(&wheel), 0);
}

Test(timer, ten_minutes_cascade_from_upper_levels)
{
    cascade_check(10u * 60 * 1000, 3);
}

Test(timer, forty_nine_days_as_uint32_cascade_from_the_top)
{
    cascade_check(UINT32_MAX, 5);
}

Test(timer, a_run_far_behind_fires_everything_in_due_order)
{
    probe_t p[4] = {0};
    uint64_t now = uv_now(&loop);
    uint64_t timeouts[4] = {UINT32_MAX, 70000, 65, 3};
    for (int i = 0; i < 4; i++)
        mt_timer_start(&wheel, &p[i].t, timeouts[i], probe_fired);
    mt_timer_wheel_run(&wheel, now + (uint64_t)UINT32_MAX); /* one run, a long stall */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(p[i].calls, 1);
    cr_assert(p[3].order < p[2].order && p[2].order < p[1].order && p[1].order < p[0].order);
}

Test(timer, long_timers_stay_pending_and_do_not_fire_early)
{
    probe_t ten_min = {0}, days = {0}, soon = {0};
    probe_start(&ten_min, 10u * 60 * 1000);
    probe_start(&days, UINT32_MAX);
    /* `soon` stops the loop: when the machine is slow enough that it is already due as
     * uv_run starts, UV_RUN_ONCE would otherwise run it and then poll until the next event,
     * minutes away (seen once under a load of 25). */
    p_stop = true;
    probe_start(&soon, 10);
    while (soon.calls == 0)
        cr_assert_eq(uv_run(&loop, UV_RUN_ONCE), 1, "the wheel stays armed for the others");
    cr_assert_eq(ten_min.calls, 0);
    cr_assert_eq(days.calls, 0);
    cr_assert_eq(mt_timer_wheel_pending(&wheel), 2);
    cr_assert(uv_is_active((uv_handle_t *)&wheel.uv), "armed for the next one");
    mt_timer_stop(&wheel, &ten_min.t);
    mt_timer_stop(&wheel, &days.t);
    cr_assert_eq(mt_timer_wheel_pending(&wheel), 0);
}

Test(timer, an_empty_wheel_leaves_no_active_handle)
{
    cr_assert(!uv_is_active((uv_handle_t *)&wheel.uv));
    probe_t a = {0};
    probe_start(&a, 100000);
    cr_assert(uv_is_active((uv_handle_t *)&wheel.uv));
    mt_timer_stop(&wheel, &a.t);
    cr_assert(!uv_is_active((uv_handle_t *)&wheel.uv), "nothing pending: the uv timer stops");
    cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0, "the loop exits at once");
    probe_start(&a, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(a.calls, 1);
    cr_assert(!uv_is_active((uv_handle_t *)&wheel.uv), "the last timer fired: stopped again");
}

Test(timer, close_forgets_pending_timers_without_calling_them)
{
    probe_t a = {0};
    probe_start(&a, 1);
    mt_timer_wheel_close(&wheel);
    cr_assert(!mt_timer_pending(&a.t));
    mt_timer_stop(&wheel, &a.t); /* a no-op now */
    probe_start(&a, 1);          /* ignored */
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(a.calls, 0);
}
