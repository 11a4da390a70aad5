/*
 * test_stats.c - the stats registry (runtime/core/stats.c): find-or-create, shard sums,
 * histogram buckets and the Prometheus rendering, parsed back with a strict reader.
 * Criterion runs every test in its own process, so each starts with an empty registry.
 */
#include <criterion/criterion.h>

#include "runtime/core/stats.h"
#include "tests/unit/runtime/core/prom_parse.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

/* A proxy's detail family, as proxy/redis/reply.c defines its per-command one. */
static const mt_stats_detail_t cmd_detail = {
    .prefix = "meltemi_redis_command",
    .label = "command",
    .help_total = "Commands.",
    .help_errors = "Commands answered with an error.",
    .help_duration = "Command duration in milliseconds.",
};

static prom_doc_t render_and_parse(void)
{
    size_t len = 0;
    char *text = mt_stats_render_prometheus(&len);
    cr_assert_not_null(text);
    cr_assert_eq(strlen(text), len, "length matches the NUL-terminated text");
    prom_doc_t d;
    bool ok = prom_parse(&d, text, len);
    cr_assert(ok, "rendered text parses: %s\n%s", d.error, text);
    free(text);
    return d;
}

Test(stats_registry, same_key_returns_same_block_and_labels_name_it)
{
    mt_stats_init(2);
    mt_stats_block_t *l1 = mt_stats_block(MT_STATS_LISTENER, "redis-a", NULL);
    mt_stats_block_t *l1b = mt_stats_block(MT_STATS_LISTENER, "redis-a", NULL);
    mt_stats_block_t *c1 = mt_stats_block(MT_STATS_CLUSTER, "redis-a", NULL);
    mt_stats_block_t *cmd = mt_stats_detail_block(&cmd_detail, "redis-a", "GET");
    mt_stats_block_t *cmd2 = mt_stats_detail_block(&cmd_detail, "redis-a", "SET");

    cr_assert_eq(l1, l1b);
    cr_assert_neq(l1, c1, "kind is part of the key");
    cr_assert_neq(cmd, cmd2, "command is part of the key");
    cr_assert_eq(mt_stats_detail_block(&cmd_detail, "redis-a", "GET"), cmd);
    cr_assert_str_eq(l1->labels, "listener=\"redis-a\"");
    cr_assert_str_eq(c1->labels, "cluster=\"redis-a\"");
    cr_assert_str_eq(cmd->labels, "listener=\"redis-a\",command=\"GET\"");
    cr_assert_str_eq(cmd->name, "redis-a");
    cr_assert_str_eq(cmd->name + strlen(cmd->name) + 1, "GET");
    cr_assert_eq(((uintptr_t)l1->shards) % 64, 0, "shards are cache-line aligned");
    cr_assert_eq(mt_stats_first(), l1, "creation order");
    cr_assert_eq(l1->next, c1);
}

Test(stats_registry, many_blocks_stay_findable_as_the_index_grows)
{
    mt_stats_init(1);
    mt_stats_block_t *blocks[3000];
    char cmd[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(cmd, sizeof(cmd), "CMD%d", i);
        blocks[i] = mt_stats_detail_block(&cmd_detail, i % 2 ? "l1" : "l2", cmd);
    }
    for (int i = 0; i < 3000; i++) {
        snprintf(cmd, sizeof(cmd), "CMD%d", i);
        cr_assert_eq(mt_stats_detail_block(&cmd_detail, i % 2 ? "l1" : "l2", cmd), blocks[i]);
    }
    size_t n = 0;
    for (mt_stats_block_t *b = mt_stats_first(); b; b = b->next)
        n++;
    cr_assert_eq(n, 3000);
}

Test(stats_registry, sum_adds_every_worker_shard)
{
    mt_stats_init(4);
    cr_assert_eq(mt_stats_nworkers, 4);
    mt_stats_block_t *b = mt_stats_block(MT_STATS_CLUSTER, "backend", NULL);
    for (unsigned w = 0; w < 4; w++)
        mt_stat_add(b, w, MT_ST_UPSTREAM_RQ_TOTAL, (int64_t)(w + 1) * 10);
    mt_stat_add(b, 1, MT_ST_UPSTREAM_CX_ACTIVE, 3);
    mt_stat_add(b, 1, MT_ST_UPSTREAM_CX_ACTIVE, -1);
    mt_stat_add(b, 3, MT_ST_UPSTREAM_CX_ACTIVE, 1);
    cr_assert_eq(mt_stats_sum(b, MT_ST_UPSTREAM_RQ_TOTAL), 100);
    cr_assert_eq(mt_stats_sum(b, MT_ST_UPSTREAM_CX_ACTIVE), 3);
    cr_assert_eq(mt_stats_sum(b, MT_ST_UPSTREAM_RQ_TIMEOUT), 0);
}

Test(stats_registry, worker_count_is_capped_and_blocks_made_early_are_resharded)
{
    mt_stats_block_t *early = mt_stats_block(MT_STATS_LISTENER, "early", NULL);
    mt_stat_add(early, 0, MT_ST_REQUESTS_TOTAL, 5);
    mt_stats_init(1000);
    cr_assert_eq(mt_stats_nworkers, MT_MAX_WORKERS);
    mt_stat_add(early, MT_MAX_WORKERS - 1, MT_ST_REQUESTS_TOTAL, 2);
    cr_assert_eq(mt_stats_sum(early, MT_ST_REQUESTS_TOTAL), 7);
    cr_assert_gt(mt_stats_global.start_time, 1e9, "start time is wall-clock seconds");
}

Test(stats_histogram, bounds_are_inclusive_upper_limits)
{
    mt_stats_init(2);
    mt_stats_block_t *b = mt_stats_block(MT_STATS_LISTENER, "h", NULL);
    mt_stat_observe_ms(b, 0, 0.0);     /* le 0.5 */
    mt_stat_observe_ms(b, 0, 0.5);     /* le 0.5 */
    mt_stat_observe_ms(b, 1, 0.51);    /* le 1 */
    mt_stat_observe_ms(b, 1, 7);       /* le 10 */
    mt_stat_observe_ms(b, 0, 60000);   /* le 60000 */
    mt_stat_observe_ms(b, 1, 60000.1); /* +Inf */
    mt_stat_observe_ms(b, 1, -3);      /* a clock step: counted as 0 */

    uint64_t bucket[MT_HIST_BUCKETS + 1] = {0};
    double sum = 0;
    for (unsigned w = 0; w < 2; w++) {
        for (unsigned i = 0; i <= MT_HIST_BUCKETS; i++)
            bucket[i] += b->shards[w].hist[i];
        sum += b->shards[w].hist_sum_ms;
    }
    cr_assert_eq(bucket[0], 3);
    cr_assert_eq(bucket[1], 1);
    cr_assert_eq(bucket[3], 1);
    cr_assert_eq(bucket[MT_HIST_BUCKETS - 1], 1);
    cr_assert_eq(bucket[MT_HIST_BUCKETS], 1);
    cr_assert_float_eq(sum, 0.5 + 0.51 + 7 + 60000 + 60000.1, 1e-6);
    cr_assert_eq(mt_hist_bounds_ms[0], 0.5);
    cr_assert_eq(mt_hist_bounds_ms[MT_HIST_BUCKETS - 1], 60000);
}

Test(stats_prometheus, listener_cluster_and_command_rows_parse_back)
{
    mt_stats_init(3);
    mt_stats_block_t *l = mt_stats_block(MT_STATS_LISTENER, "redis-6379", NULL);
    mt_stats_block_t *c = mt_stats_block(MT_STATS_CLUSTER, "outbound|6379||redis.svc", NULL);
    mt_stats_block_t *cmd = mt_stats_detail_block(&cmd_detail, "redis-6379", "get");
    mt_stat_add(l, 0, MT_ST_REQUESTS_TOTAL, 4);
    mt_stat_add(l, 2, MT_ST_REQUESTS_TOTAL, 6);
    mt_stat_add(l, 1, MT_ST_DOWNSTREAM_CX_ACTIVE, 2);
    mt_stat_add(l, 1, MT_ST_AUTH_FAILURES, 1);
    mt_stat_add(c, 2, MT_ST_UPSTREAM_CX_CONNECT_FAIL, 9);
    mt_stat_add(c, 0, MT_ST_UPSTREAM_RQ_TIMEOUT, 1);
    mt_stat_add(cmd, 0, MT_ST_REQUESTS_TOTAL, 8);
    mt_stat_add(cmd, 1, MT_ST_REQUEST_ERRORS, 1);
    mt_stat_observe_ms(l, 0, 3);
    mt_stat_observe_ms(l, 2, 700);
    mt_stat_observe_ms(cmd, 1, 0.2);
    mt_stats_global.config_generation = 7;
    mt_stats_global.config_reloads = 6;
    mt_stats_global.config_reload_failures = 2;

    prom_doc_t d = render_and_parse();
    const char *L = "listener", *LV = "redis-6379";
    const char *C = "cluster", *CV = "outbound|6379||redis.svc";
    cr_assert_eq(prom_find(&d, "meltemi_requests_total", L, LV, NULL)->value, 10);
    cr_assert_eq(prom_find(&d, "meltemi_downstream_connections_active", L, LV, NULL)->value, 2);
    cr_assert_eq(prom_find(&d, "meltemi_auth_failures_total", L, LV, NULL)->value, 1);
    cr_assert_eq(prom_find(&d, "meltemi_protocol_errors_total", L, LV, NULL)->value, 0);
    cr_assert_eq(prom_find(&d, "meltemi_upstream_connect_failures_total", C, CV, NULL)->value, 9);
    cr_assert_eq(prom_find(&d, "meltemi_upstream_request_timeouts_total", C, CV, NULL)->value, 1);
    cr_assert_eq(prom_find(&d, "meltemi_upstream_connections_active", C, CV, NULL)->value, 0);
    cr_assert_eq(prom_find(&d, "meltemi_redis_command_total", L, LV, "command", "get", NULL)->value,
                 8);
    cr_assert_eq(
        prom_find(&d, "meltemi_redis_command_errors_total", L, LV, "command", "get", NULL)->value,
        1);
    cr_assert_eq(prom_find(&d, "meltemi_config_generation", NULL)->value, 7);
    cr_assert_eq(prom_find(&d, "meltemi_config_reloads_total", NULL)->value, 6);
    cr_assert_eq(prom_find(&d, "meltemi_config_reload_failures_total", NULL)->value, 2);
    cr_assert_eq(prom_find(&d, "meltemi_workers", NULL)->value, 3);
    cr_assert_geq(prom_find(&d, "meltemi_uptime_seconds", NULL)->value, 0);
    cr_assert_not_null(prom_find(&d, "meltemi_build_info", "version", MELTEMI_VERSION, NULL));

    /* Families carry rows only for blocks of their kind. */
    cr_assert_eq(prom_count(&d, "meltemi_requests_total", C, CV), 0);
    cr_assert_eq(prom_count(&d, "meltemi_requests_total", "command", "get"), 0);
    cr_assert_eq(prom_count(&d, "meltemi_upstream_requests_total", L, LV), 0);
    cr_assert_eq(prom_count(&d, "meltemi_redis_command_duration_milliseconds_count", C, CV), 0);
    cr_assert_eq(prom_count(&d, "meltemi_requests_total", L, LV), 1, "no command rows");
    cr_assert_eq(prom_count(&d, "istio_requests_total", L, LV), 0, "Istio's are not per listener");

    const prom_type_t *t = prom_type_of(&d, "meltemi_downstream_connections_active");
    cr_assert_str_eq(t->type, "gauge");
    cr_assert_str_eq(prom_type_of(&d, "meltemi_requests_total")->type, "counter");
    cr_assert_str_eq(prom_type_of(&d, "meltemi_redis_command_duration_milliseconds")->type,
                     "histogram");
    prom_free(&d);
}

Test(stats_prometheus, histogram_rows_are_cumulative_and_end_in_inf)
{
    mt_stats_init(2);
    mt_stats_block_t *l = mt_stats_detail_block(&cmd_detail, "l", "get");
    mt_stat_observe_ms(l, 0, 0.3);
    mt_stat_observe_ms(l, 1, 3);
    mt_stat_observe_ms(l, 1, 30);
    mt_stat_observe_ms(l, 0, 99999);

    prom_doc_t d = render_and_parse();
    const char *H = "meltemi_redis_command_duration_milliseconds_bucket";
    cr_assert_eq(prom_find(&d, H, "listener", "l", "command", "get", "le", "0.5", NULL)->value, 1);
    cr_assert_eq(prom_find(&d, H, "listener", "l", "command", "get", "le", "1", NULL)->value, 1);
    cr_assert_eq(prom_find(&d, H, "listener", "l", "command", "get", "le", "5", NULL)->value, 2);
    cr_assert_eq(prom_find(&d, H, "listener", "l", "command", "get", "le", "50", NULL)->value, 3);
    cr_assert_eq(prom_find(&d, H, "listener", "l", "command", "get", "le", "60000", NULL)->value,
                 3);
    cr_assert_eq(prom_find(&d, H, "listener", "l", "command", "get", "le", "+Inf", NULL)->value, 4);
    cr_assert_eq(prom_count(&d, H, "listener", "l"), MT_HIST_BUCKETS + 1);
    cr_assert_eq(prom_find(&d, "meltemi_redis_command_duration_milliseconds_count", "listener", "l",
                           "command", "get", NULL)
                     ->value,
                 4);
    cr_assert_float_eq(prom_find(&d, "meltemi_redis_command_duration_milliseconds_sum", "listener",
                                 "l", "command", "get", NULL)
                           ->value,
                       0.3 + 3 + 30 + 99999, 1e-6);

    /* Non-decreasing in the order rendered. */
    double prev = -1;
    for (size_t i = 0; i < d.nsamples; i++) {
        if (strcmp(d.samples[i].name, H) != 0)
            continue;
        cr_assert_geq(d.samples[i].value, prev);
        prev = d.samples[i].value;
    }
    prom_free(&d);
}

Test(stats_prometheus, label_values_are_escaped)
{
    mt_stats_init(1);
    const char *evil = "a\"b\\c\nd}e,f=\"g";
    mt_stats_block_t *l = mt_stats_block(MT_STATS_LISTENER, evil, NULL);
    mt_stats_block_t *cmd = mt_stats_detail_block(&cmd_detail, evil, "x\"y");
    mt_stat_add(l, 0, MT_ST_PROTOCOL_ERRORS, 3);
    mt_stat_add(cmd, 0, MT_ST_REQUESTS_TOTAL, 2);
    cr_assert_str_eq(l->labels, "listener=\"a\\\"b\\\\c\\nd}e,f=\\\"g\"");

    prom_doc_t d = render_and_parse();
    cr_assert_eq(prom_find(&d, "meltemi_protocol_errors_total", "listener", evil, NULL)->value, 3);
    cr_assert_eq(
        prom_find(&d, "meltemi_redis_command_total", "listener", evil, "command", "x\"y", NULL)
            ->value,
        2);
    prom_free(&d);
}

Test(stats_prometheus, empty_registry_renders_metadata_and_globals)
{
    mt_stats_init(1);
    prom_doc_t d = render_and_parse();
    cr_assert_not_null(prom_type_of(&d, "meltemi_requests_total"));
    cr_assert_not_null(prom_find(&d, "meltemi_workers", NULL));
    cr_assert_eq(prom_count(&d, "meltemi_requests_total", "listener", ""), 0);
    prom_free(&d);
}

Test(stats_prometheus, strict_reader_rejects_broken_text)
{
    /* The reader is only worth something if it can say no. */
    prom_doc_t d;
    const char *bad[] = {
        "x 1\n",                                     /* no TYPE */
        "# TYPE x counter\nx{a=\"b} 1\n",            /* unterminated label */
        "# TYPE x counter\nx{a=\"\\t\"} 1\n",        /* bad escape */
        "# TYPE x counter\nx one\n",                 /* bad value */
        "# TYPE x counter\n# TYPE x counter\nx 1\n", /* two TYPE lines */
        "# TYPE h histogram\nh_bucket 1\n",          /* bucket without le */
        "# TYPE x counter\nx 1",                     /* no final newline */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_not(prom_parse(&d, bad[i], strlen(bad[i])), "accepted: %s", bad[i]);
        prom_free(&d);
    }
    const char *good = "# HELP x a counter\n# TYPE x counter\nx{a=\"\\\"\\n\"} 1.5e3\n";
    cr_assert(prom_parse(&d, good, strlen(good)), "%s", d.error);
    cr_assert_eq(prom_find(&d, "x", "a", "\"\n", NULL)->value, 1500);
    prom_free(&d);
}

static double uptime_for_start(double start_time)
{
    mt_stats_global.start_time = start_time;
    prom_doc_t d = render_and_parse();
    double up = prom_find(&d, "meltemi_uptime_seconds", NULL)->value;
    double started = prom_find(&d, "meltemi_start_time_seconds", NULL)->value;
    prom_free(&d);
    cr_assert_gt(started, 1e9, "start time is reported as Unix time");
    return up;
}

Test(stats_prometheus, uptime_follows_the_clock_start_time_was_taken_on)
{
    mt_stats_init(1);
    struct timespec mono, wall;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_REALTIME, &wall);
    /* The server writes uv_now()/1000 (monotonic); mt_stats_init writes wall-clock time. */
    double up = uptime_for_start((double)mono.tv_sec - 100);
    cr_assert(up >= 99 && up < 1e5, "monotonic start: uptime %f", up);
    up = uptime_for_start((double)wall.tv_sec - 100);
    cr_assert(up >= 99 && up < 1e5, "wall-clock start: uptime %f", up);
}

/* ---- Istio's standard metrics ---------------------------------------------------------------- */

static const char *const test_codes_names[] = {"OK", "ERR", "OTHER"};
static const mt_istio_codes_t test_codes = {"redis", test_codes_names, 3};

Test(stats_istio, labels_come_from_the_identity_and_the_cluster)
{
    setenv("POD_NAME", "checkout-7d9c8b6f5-x2x9q", 1);
    setenv("POD_NAMESPACE", "shop", 1);
    unsetenv("ISTIO_META_WORKLOAD_NAME");
    mt_stats_init(1);
    mt_istio_set_t *a =
        mt_istio_set("l1", &test_codes, "outbound|6379|v2|cache.shop.svc.cluster.local",
                     "cache.shop.svc.cluster.local", NULL);
    cr_assert_str_eq(mt_stats_identity()->workload, "checkout", "the Deployment part of POD_NAME");
    cr_assert_str_eq(
        a->labels,
        "reporter=\"source\",source_workload=\"checkout\",source_workload_namespace=\"shop\","
        "source_principal=\"unknown\",destination_workload=\"unknown\","
        "destination_service=\"cache.shop.svc.cluster.local\",destination_service_name=\"cache\","
        "destination_service_namespace=\"shop\",destination_version=\"v2\","
        "request_protocol=\"redis\",connection_security_policy=\"unknown\"");
    mt_istio_set_t *b =
        mt_istio_set("l2", &test_codes, "outbound|6379|v2|cache.shop.svc.cluster.local",
                     "cache.shop.svc.cluster.local", NULL);
    cr_assert_eq(a, b, "two listeners to one destination share a label set (no duplicate series)");
    mt_istio_set_t *none = mt_istio_set("l1", &test_codes, NULL, NULL, NULL);
    cr_assert_neq(none, a);
    cr_assert_not_null(strstr(none->labels, "destination_service=\"unknown\""));
    mt_istio_set_t *ext =
        mt_istio_set("l1", NULL, "outbound|80||api.example.com", "api.example.com", "blue");
    cr_assert_not_null(strstr(ext->labels, "destination_service_namespace=\"unknown\""));
    cr_assert_not_null(strstr(ext->labels, "destination_version=\"blue\""));
    cr_assert_not_null(strstr(ext->labels, "request_protocol=\"tcp\""));
}

Test(stats_istio, workload_env_wins_over_pod_name)
{
    setenv("POD_NAME", "checkout-7d9c8b6f5-x2x9q", 1);
    setenv("ISTIO_META_WORKLOAD_NAME", "checkout-v2", 1);
    mt_stats_identity_t id = {.principal = "spiffe://cluster.local/ns/shop/sa/checkout"};
    mt_stats_set_identity(&id);
    cr_assert_str_eq(mt_stats_identity()->workload, "checkout-v2");
    cr_assert_str_eq(mt_stats_identity()->principal, "spiffe://cluster.local/ns/shop/sa/checkout");
    cr_assert_str_eq(mt_stats_identity()->pod, "checkout-7d9c8b6f5-x2x9q");
}

Test(stats_istio, outcomes_render_as_istio_families)
{
    mt_stats_init(2);
    mt_istio_set_t *set = mt_istio_set("l", &test_codes, "outbound|6379||r.ns.svc.cluster.local",
                                       "r.ns.svc.cluster.local", NULL);
    mt_istio_record(set, 0, 0, 0, 300000, 30, 5);             /* OK, 0.3 ms */
    mt_istio_record(set, 1, 0, 0, 7000000, 3000, 12);         /* OK, 7 ms */
    mt_istio_record(set, 1, 1, MT_RF_UF, 0, 20, 40);          /* ERR, UF */
    mt_istio_record(set, 0, 1, MT_RF_UT | MT_RF_DI, 2, 1, 1); /* ERR: first flag in order: UT */
    mt_istio_record(set, 0, 99, 0, 0, 0, 0);                  /* beyond the table: its last entry */
    set->tcp[0].opened += 2;
    set->tcp[1].closed += 1;
    set->tcp[1].received += 3051;
    set->tcp[0].sent += 58;

    prom_doc_t d = render_and_parse();
    const char *RC = "response_code", *RF = "response_flags";
    cr_assert_eq(prom_sum(&d, "istio_requests_total", RC, "OK", RF, "-", NULL), 2);
    cr_assert_eq(prom_sum(&d, "istio_requests_total", RC, "ERR", RF, "UF", NULL), 1);
    cr_assert_eq(prom_sum(&d, "istio_requests_total", RC, "ERR", RF, "UT", NULL), 1);
    cr_assert_eq(prom_sum(&d, "istio_requests_total", RC, "OTHER", RF, "-", NULL), 1);
    cr_assert_eq(prom_count(&d, "istio_requests_total", "reporter", "source"), 4);
    const char *H = "istio_request_duration_milliseconds_bucket";
    cr_assert_eq(prom_sum(&d, H, RC, "OK", "le", "0.5", NULL), 1);
    cr_assert_eq(prom_sum(&d, H, RC, "OK", "le", "5", NULL), 1);
    cr_assert_eq(prom_sum(&d, H, RC, "OK", "le", "10", NULL), 2);
    cr_assert_eq(prom_sum(&d, H, RC, "OK", "le", "+Inf", NULL), 2);
    cr_assert_float_eq(prom_sum(&d, "istio_request_duration_milliseconds_sum", RC, "OK", NULL), 7.3,
                       1e-9);
    const char *B = "istio_request_bytes_bucket";
    cr_assert_eq(prom_sum(&d, B, RC, "OK", "le", "10", NULL), 0);
    cr_assert_eq(prom_sum(&d, B, RC, "OK", "le", "100", NULL), 1);
    cr_assert_eq(prom_sum(&d, B, RC, "OK", "le", "10000", NULL), 2);
    cr_assert_eq(prom_sum(&d, "istio_request_bytes_sum", RC, "OK", NULL), 3030);
    cr_assert_eq(prom_sum(&d, "istio_response_bytes_sum", RC, "OK", NULL), 17);
    cr_assert_eq(prom_sum(&d, "istio_response_bytes_count", RC, "ERR", RF, "UF", NULL), 1);
    cr_assert_eq(prom_sum(&d, "istio_tcp_connections_opened_total", NULL), 2);
    cr_assert_eq(prom_sum(&d, "istio_tcp_connections_closed_total", NULL), 1);
    cr_assert_eq(prom_sum(&d, "istio_tcp_received_bytes_total", NULL), 3051);
    cr_assert_eq(prom_sum(&d, "istio_tcp_sent_bytes_total", NULL), 58);
    cr_assert_str_eq(prom_type_of(&d, "istio_request_bytes")->type, "histogram");
    cr_assert_str_eq(prom_type_of(&d, "istio_tcp_sent_bytes_total")->type, "counter");
    prom_free(&d);
}

Test(stats_istio, byte_buckets_are_powers_of_ten)
{
    cr_assert_eq(mt_bytes_bucket(0), 0);
    cr_assert_eq(mt_bytes_bucket(1), 0);
    cr_assert_eq(mt_bytes_bucket(2), 1);
    cr_assert_eq(mt_bytes_bucket(10), 1);
    cr_assert_eq(mt_bytes_bucket(11), 2);
    cr_assert_eq(mt_bytes_bucket(10000000), MT_BYTES_BUCKETS - 1);
    cr_assert_eq(mt_bytes_bucket(10000001), MT_BYTES_BUCKETS);
    cr_assert_eq(mt_rflag_index(0), 0);
    cr_assert_eq(mt_rflag_index(MT_RF_UH), 1);
    cr_assert_eq(mt_rflag_index(MT_RF_UO), MT_RF_COUNT);
    cr_assert_str_eq(mt_rflag_names[mt_rflag_index(MT_RF_DC) - 1], "DC");
}
