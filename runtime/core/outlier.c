/*
 * outlier.c - outlier detection's ejection rule (outlier.h).
 */
#include "runtime/core/outlier.h"

#include <stdlib.h>

int mt_outlier_init(mt_outlier_conf_t *o, uint32_t n)
{
    o->eps = calloc(n ? n : 1, sizeof(*o->eps));
    if (!o->eps)
        return -1;
    o->n_eps = n;
    return 0;
}

void mt_outlier_free(mt_outlier_conf_t *o)
{
    free(o->eps);
    o->eps = NULL;
    o->n_eps = 0;
}

/* maxEjectionPercent and minHealthPercent, over every endpoint of the cluster at now_ms. */
static bool outlier_may_eject(const mt_outlier_conf_t *o, uint64_t now_ms)
{
    uint32_t ejected = 0;
    for (uint32_t i = 0; i < o->n_eps; i++)
        ejected += mt_outlier_ejected(o, i, now_ms) ? 1u : 0u;
    uint64_t healthy_after = o->n_eps - ejected - 1;
    if (healthy_after * 100u < (uint64_t)o->min_health_pct * o->n_eps)
        return false;
    return ejected == 0 ||
           (uint64_t)(ejected + 1) * 100u <= (uint64_t)o->max_ejection_pct * o->n_eps;
}

static bool outlier_eject(mt_outlier_conf_t *o, mt_outlier_state_t *st, uint64_t now_ms)
{
    uint64_t until = atomic_load_explicit(&st->ejected_until_ms, memory_order_relaxed);
    if (until > now_ms || !outlier_may_eject(o, now_ms))
        return false;
    /* Each interval spent healthy since the last ejection ended forgets one ejection, so the
     * time grows only for an endpoint that keeps failing (Envoy's rule). */
    uint32_t n = atomic_load_explicit(&st->ejections, memory_order_relaxed);
    if (until && o->interval_ms) {
        uint64_t forget = (now_ms - until) / o->interval_ms;
        n = forget >= n ? 0 : n - (uint32_t)forget;
    }
    n++;
    uint64_t max = o->base_ejection_ms > MT_OUTLIER_MAX_EJECTION_MS ? o->base_ejection_ms
                                                                    : MT_OUTLIER_MAX_EJECTION_MS;
    uint64_t len = (uint64_t)o->base_ejection_ms * n;
    if (len > max)
        len = max;
    /* Two workers crossing the threshold together eject once: the CAS picks one. */
    if (!atomic_compare_exchange_strong_explicit(&st->ejected_until_ms, &until, now_ms + len,
                                                 memory_order_relaxed, memory_order_relaxed))
        return false;
    atomic_store_explicit(&st->ejections, n, memory_order_relaxed);
    atomic_store_explicit(&st->errors, 0, memory_order_relaxed);
    atomic_store_explicit(&st->gateway, 0, memory_order_relaxed);
    return true;
}

bool mt_outlier_report(mt_outlier_conf_t *o, uint32_t i, mt_outlier_event_t ev, uint64_t now_ms)
{
    if (!o->enabled || i >= o->n_eps)
        return false;
    mt_outlier_state_t *st = &o->eps[i];
    if (ev == MT_OUTLIER_SUCCESS) {
        /* Loads first: a healthy endpoint's line is only read, not bounced between cores. */
        if (atomic_load_explicit(&st->errors, memory_order_relaxed))
            atomic_store_explicit(&st->errors, 0, memory_order_relaxed);
        if (atomic_load_explicit(&st->gateway, memory_order_relaxed))
            atomic_store_explicit(&st->gateway, 0, memory_order_relaxed);
        return false;
    }
    uint32_t errors = atomic_fetch_add_explicit(&st->errors, 1, memory_order_relaxed) + 1;
    uint32_t gateway = ev == MT_OUTLIER_GATEWAY
                           ? atomic_fetch_add_explicit(&st->gateway, 1, memory_order_relaxed) + 1
                           : (atomic_store_explicit(&st->gateway, 0, memory_order_relaxed), 0u);
    bool over = (o->consecutive_errors && errors >= o->consecutive_errors) ||
                (o->consecutive_gateway && gateway >= o->consecutive_gateway);
    return over && outlier_eject(o, st, now_ms);
}
