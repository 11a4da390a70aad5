/*
 * test_outlier.c - outlier detection's rule: consecutive errors eject, a success resets the
 * streak, ejection grows with repeated ejections and ends by itself, healthy intervals forget
 * ejections, maxEjectionPercent and minHealthPercent hold back further ejections.
 */
#include "runtime/core/outlier.h"

#include <criterion/criterion.h>

static mt_outlier_conf_t conf(uint32_t n, uint32_t errors, uint32_t gateway)
{
    mt_outlier_conf_t o = {.enabled = true,
                           .consecutive_errors = errors,
                           .consecutive_gateway = gateway,
                           .interval_ms = 10000,
                           .base_ejection_ms = 30000,
                           .max_ejection_pct = 100,
                           .min_health_pct = 0};
    cr_assert_eq(mt_outlier_init(&o, n), 0);
    return o;
}

Test(outlier, consecutive_errors_eject_and_a_success_resets_the_streak)
{
    mt_outlier_conf_t o = conf(3, 3, 0);
    cr_assert_not(mt_outlier_report(&o, 0, MT_OUTLIER_ERROR, 1000));
    cr_assert_not(mt_outlier_report(&o, 0, MT_OUTLIER_GATEWAY, 1000));
    cr_assert_not(mt_outlier_report(&o, 0, MT_OUTLIER_SUCCESS, 1000));
    cr_assert_not(mt_outlier_report(&o, 0, MT_OUTLIER_ERROR, 1000));
    cr_assert_not(mt_outlier_report(&o, 0, MT_OUTLIER_ERROR, 1000));
    cr_assert_not(mt_outlier_ejected(&o, 0, 1000));
    cr_assert(mt_outlier_report(&o, 0, MT_OUTLIER_GATEWAY, 1000), "third in a row ejects");
    cr_assert(mt_outlier_ejected(&o, 0, 1000));
    cr_assert(mt_outlier_ejected(&o, 0, 30999));
    cr_assert_not(mt_outlier_ejected(&o, 0, 31000), "back after baseEjectionTime");
    cr_assert_not(mt_outlier_ejected(&o, 1, 1000), "only that endpoint");
    mt_outlier_free(&o);
}

Test(outlier, gateway_errors_have_their_own_threshold_and_an_error_answer_breaks_it)
{
    mt_outlier_conf_t o = conf(2, 0, 2);
    cr_assert_not(mt_outlier_report(&o, 1, MT_OUTLIER_GATEWAY, 5));
    cr_assert_not(mt_outlier_report(&o, 1, MT_OUTLIER_ERROR, 5), "errors alone never eject here");
    cr_assert_not(mt_outlier_report(&o, 1, MT_OUTLIER_GATEWAY, 5));
    cr_assert(mt_outlier_report(&o, 1, MT_OUTLIER_GATEWAY, 5));
    mt_outlier_free(&o);
}

Test(outlier, ejection_time_grows_and_healthy_intervals_forget)
{
    mt_outlier_conf_t o = conf(3, 1, 0);
    cr_assert(mt_outlier_report(&o, 0, MT_OUTLIER_ERROR, 0));
    cr_assert_not(mt_outlier_report(&o, 0, MT_OUTLIER_ERROR, 100), "already ejected");
    cr_assert(mt_outlier_report(&o, 0, MT_OUTLIER_ERROR, 30000), "fails at once on return");
    cr_assert(mt_outlier_ejected(&o, 0, 89999), "second ejection: 2 x 30 s");
    cr_assert_not(mt_outlier_ejected(&o, 0, 90000));
    /* 20 s healthy after the end (two intervals): both ejections forgotten, 30 s again */
    cr_assert(mt_outlier_report(&o, 0, MT_OUTLIER_ERROR, 110000));
    cr_assert_not(mt_outlier_ejected(&o, 0, 140000));
    mt_outlier_free(&o);
}

Test(outlier, max_ejection_percent_and_min_health_percent_hold_back)
{
    mt_outlier_conf_t o = conf(3, 1, 0);
    o.max_ejection_pct = 10; /* 10% of 3: still one may go, never two */
    cr_assert(mt_outlier_report(&o, 0, MT_OUTLIER_ERROR, 0));
    cr_assert_not(mt_outlier_report(&o, 1, MT_OUTLIER_ERROR, 0));
    cr_assert_not(mt_outlier_ejected(&o, 1, 0));
    mt_outlier_free(&o);
    o = conf(4, 1, 0);
    o.min_health_pct = 60; /* 3 of 4 healthy after one ejection (75%), 2 of 4 after two (50%) */
    cr_assert(mt_outlier_report(&o, 0, MT_OUTLIER_ERROR, 0));
    cr_assert_not(mt_outlier_report(&o, 1, MT_OUTLIER_ERROR, 0));
    mt_outlier_free(&o);
}

Test(outlier, disabled_detection_ejects_nothing)
{
    mt_outlier_conf_t o = conf(1, 1, 1);
    o.enabled = false;
    cr_assert_not(mt_outlier_report(&o, 0, MT_OUTLIER_GATEWAY, 0));
    cr_assert_not(mt_outlier_ejected(&o, 0, 0));
    mt_outlier_free(&o);
}
