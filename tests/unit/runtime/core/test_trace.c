/*
 * test_trace.c - trace context (runtime/core/trace.c): W3C traceparent and B3 parsing, what
 * is refused, new span and trace ids, the traceparent sent upstream, and a span's JSON.
 */
#include <criterion/criterion.h>

#include "runtime/core/trace.h"

#include <stdlib.h>
#include <string.h>

static const char *TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

Test(trace, traceparent_round_trip_keeps_the_trace_and_makes_a_span)
{
    mt_trace_ctx_t c;
    cr_assert(mt_trace_parse_traceparent(TP, strlen(TP), &c));
    cr_assert(c.sampled && c.has_parent && !c.b3);
    mt_trace_worker_t tw;
    mt_trace_worker_init(&tw, 0);
    mt_trace_new_span(&tw, &c);
    char out[56], hex[33];
    mt_trace_format_traceparent(&c, out);
    cr_assert_eq(strlen(out), 55);
    cr_assert_eq(strncmp(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36), 0, "%s", out);
    cr_assert_str_neq(out + 36, "00f067aa0ba902b7-01", "a new span id");
    cr_assert_str_eq(out + 52, "-01");
    mt_trace_hex(c.parent_id, 8, hex);
    cr_assert_str_eq(hex, "00f067aa0ba902b7");
    mt_trace_worker_free(&tw);
}

Test(trace, bad_traceparents_are_refused)
{
    mt_trace_ctx_t c;
    const char *bad[] = {
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero parent */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* version ff */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",   /* not hex */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 with a tail */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",      /* short */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert(!mt_trace_parse_traceparent(bad[i], strlen(bad[i]), &c), "%s", bad[i]);
    const char *future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
    cr_assert(mt_trace_parse_traceparent(future, strlen(future), &c), "a later version's prefix");
    cr_assert(!c.sampled);
}

Test(trace, b3_headers_64_and_128_bit)
{
    mt_trace_ctx_t c;
    cr_assert(mt_trace_parse_b3("a3ce929d0e0e4736", 16, "00f067aa0ba902b7", 16, "0", 1, &c));
    char hex[33];
    mt_trace_hex(c.trace_id, 16, hex);
    cr_assert_str_eq(hex, "0000000000000000a3ce929d0e0e4736", "64-bit ids are left-padded");
    cr_assert(c.b3 && !c.sampled);
    cr_assert(mt_trace_parse_b3("4bf92f3577b34da6a3ce929d0e0e4736", 32, "00f067aa0ba902b7", 16,
                                NULL, 0, &c));
    cr_assert(c.sampled, "no X-B3-Sampled: sampled");
    cr_assert(!mt_trace_parse_b3("4bf92f", 6, "00f067aa0ba902b7", 16, NULL, 0, &c));
}

Test(trace, a_new_trace_gets_random_non_zero_ids)
{
    mt_trace_worker_t tw;
    mt_trace_worker_init(&tw, 3);
    mt_trace_ctx_t a = {.sampled = true}, b = {.sampled = true};
    mt_trace_new_span(&tw, &a);
    mt_trace_new_span(&tw, &b);
    cr_assert_neq(memcmp(a.trace_id, b.trace_id, 16), 0);
    cr_assert_neq(memcmp(a.span_id, b.span_id, 8), 0);
    mt_trace_worker_free(&tw);
}

Test(trace, span_json_names_its_parent_and_tags)
{
    mt_trace_worker_t tw;
    mt_trace_worker_init(&tw, 0);
    mt_trace_ctx_t c;
    cr_assert(mt_trace_parse_traceparent(TP, strlen(TP), &c));
    mt_trace_new_span(&tw, &c);
    mt_trace_span_t sp = {.ctx = &c,
                          .name = "svc.\"m\"",
                          .service = "checkout",
                          .system = "dubbo",
                          .peer_ip = "127.0.0.1",
                          .peer_port = 20880,
                          .code = "20",
                          .start_ns = 1000,
                          .end_ns = 2001000};
    mt_trace_record(&tw, &sp);
    char *j = strndup(tw.buf, tw.len);
    cr_assert(strstr(j, "\"traceId\":\"4bf92f3577b34da6a3ce929d0e0e4736\"") != NULL, "%s", j);
    cr_assert(strstr(j, "\"parentId\":\"00f067aa0ba902b7\"") != NULL, "%s", j);
    cr_assert(strstr(j, "\"name\":\"svc.\\\"m\\\"\"") != NULL, "%s", j);
    cr_assert(strstr(j, "\"duration\":2000,") != NULL, "%s", j);
    cr_assert(strstr(j, "\"remoteEndpoint\":{\"ipv4\":\"127.0.0.1\",\"port\":20880}") != NULL, "%s",
              j);
    cr_assert(strstr(j, "\"response_code\":\"20\"") != NULL, "%s", j);
    free(j);
    tw.len = 0;
    mt_trace_worker_free(&tw);
}
