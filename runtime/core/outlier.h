/*
 * outlier.h - DestinationRule outlierDetection, written once for every protocol: endpoints
 * that fail several times in a row are ejected (skipped by every picker through
 * mt_upstream_healthy) for baseEjectionTime x the number of times they were ejected, and come
 * back by themselves when that time is up.
 *
 * The state is one set of atomics per configured endpoint, kept in the cluster's part of the
 * snapshot, so the workers detect together: an endpoint failing on any worker counts, and
 * one ejection holds on every worker (users read consecutive5xxErrors: 5 as five failures of
 * the endpoint, not five per worker). A reload that keeps the cluster (same fingerprint)
 * keeps the workers on the old state; a changed cluster starts afresh.
 *
 * What counts (the proxies report): MT_OUTLIER_GATEWAY for transport failures - a refused or
 * timed-out connect, a connection closed or failing under requests, a request timeout -
 * which count towards both consecutiveGatewayErrors and consecutive5xxErrors;
 * MT_OUTLIER_ERROR for an error answer (Dubbo status other than OK, Thrift exception), which
 * counts towards consecutive5xxErrors only; MT_OUTLIER_SUCCESS resets both.
 */
#ifndef MELTEMI_OUTLIER_H
#define MELTEMI_OUTLIER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum mt_outlier_event {
    MT_OUTLIER_SUCCESS = 0,
    MT_OUTLIER_ERROR,   /* an error answer from the endpoint */
    MT_OUTLIER_GATEWAY, /* the endpoint could not be reached or did not answer */
} mt_outlier_event_t;

typedef struct mt_outlier_state {
    _Atomic uint32_t errors;  /* consecutive errors of either kind */
    _Atomic uint32_t gateway; /* consecutive gateway errors */
    _Atomic uint32_t ejections;
    _Atomic uint64_t ejected_until_ms; /* 0: never ejected */
} mt_outlier_state_t;

typedef struct mt_outlier_conf {
    bool enabled;
    uint32_t consecutive_errors;  /* consecutive5xxErrors; 0: off */
    uint32_t consecutive_gateway; /* consecutiveGatewayErrors; 0: off */
    uint32_t interval_ms;         /* a healthy interval forgets one past ejection */
    uint32_t base_ejection_ms;
    uint32_t max_ejection_pct; /* at most this share ejected at once (always one) */
    uint32_t min_health_pct;   /* below this share healthy, nothing more is ejected */
    mt_outlier_state_t *eps;   /* one per configured endpoint */
    uint32_t n_eps;
} mt_outlier_conf_t;

/* Ejection never lasts longer than this (Envoy's default max_ejection_time), unless
 * baseEjectionTime itself is longer. */
#define MT_OUTLIER_MAX_EJECTION_MS 300000u

/* Allocates the state of n endpoints (o's settings already set). 0, or -1 out of memory. */
int mt_outlier_init(mt_outlier_conf_t *o, uint32_t n);
void mt_outlier_free(mt_outlier_conf_t *o);

/* Endpoint i had event ev at now_ms. Returns true when this ejected it (the caller counts
 * and logs). Safe from any worker at once. */
bool mt_outlier_report(mt_outlier_conf_t *o, uint32_t i, mt_outlier_event_t ev, uint64_t now_ms);

/* Whether endpoint i is ejected at now_ms. */
static inline bool mt_outlier_ejected(const mt_outlier_conf_t *o, uint32_t i, uint64_t now_ms)
{
    if (!o->enabled || i >= o->n_eps)
        return false;
    return atomic_load_explicit(&o->eps[i].ejected_until_ms, memory_order_relaxed) > now_ms;
}

#endif
