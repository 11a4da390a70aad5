/*
 * loop_wait.h - bounded waits on a real uv loop for the unit tests of the shells
 * (test_session.c, test_upstream.c): run until a condition holds (failing after 5 s instead
 * of hanging), or for a while to show that something does not happen.
 */
#ifndef MELTEMI_TEST_LOOP_WAIT_H
#define MELTEMI_TEST_LOOP_WAIT_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

static inline uint64_t loop_wait_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs loop until cond() holds; fails the test after 5 s rather than hang. */
static inline void loop_run_until(uv_loop_t *loop, bool (*cond)(void), const char *what)
{
    uint64_t deadline = loop_wait_now_ms() + 5000;
    while (!cond() && loop_wait_now_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    cr_assert(cond(), "timed out waiting for %s", what);
}

/* Runs loop for about ms milliseconds. */
static inline void loop_run_for(uv_loop_t *loop, uint64_t ms)
{
    uint64_t end = loop_wait_now_ms() + ms;
    while (loop_wait_now_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
}

#endif
