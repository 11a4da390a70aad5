/*
 * test_access_log.c - the access log (runtime/core/access_log.c): the %FIELD% parser, JSON and
 * text lines as a worker buffers them, escaping, sampling bounds, and writing through the
 * shared descriptor to a real file (reopened in place).
 */
#include <criterion/criterion.h>

#include "runtime/core/access_log.h"
#include "runtime/core/stats.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static char *line_of(mt_alog_worker_t *aw)
{
    char *s = strndup(aw->buf, aw->len);
    aw->len = 0;
    return s;
}

static mt_alog_entry_t entry(void)
{
    uint64_t now = uv_hrtime();
    return (mt_alog_entry_t){.start_ns = now - 3500000,
                             .end_ns = now,
                             .listener = "10.0.0.1:6379",
                             .protocol = "redis",
                             .peer = "127.0.0.1:40000",
                             .upstream_host = "127.0.0.1:7000",
                             .cluster = "outbound|6379||r",
                             .service = "r.ns.svc.cluster.local",
                             .op = "get",
                             .code = "OK",
                             .flags = MT_RF_UF | MT_RF_URX,
                             .bytes_in = 22,
                             .bytes_out = 9,
                             .connection_id = 42};
}

Test(access_log, text_format_fields_literals_and_percent)
{
    mt_alog_conf_t c = {0};
    char *err = NULL;
    cr_assert_eq(
        mt_alog_parse_format(&c,
                             "%PROTOCOL% %COMMAND% %RESPONSE_CODE% %RESPONSE_FLAGS% "
                             "%BYTES_RECEIVED%/%BYTES_SENT% %DURATION%ms 100%% %TRACE_ID% %",
                             &err),
        0, "%s", err);
    mt_alog_worker_t aw;
    mt_alog_worker_init(&aw, 0);
    mt_alog_entry_t e = entry();
    mt_alog_write(&c, &aw, &e);
    char *l = line_of(&aw);
    cr_assert_str_eq(l, "redis get OK UF,URX 22/9 3ms 100% - %\n");
    free(l);
    mt_alog_worker_free(&aw);
    free(c.text);
    free(c.segs);
}

Test(access_log, unknown_field_is_an_error_naming_it)
{
    mt_alog_conf_t c = {0};
    char *err = NULL;
    cr_assert_eq(mt_alog_parse_format(&c, "%START_TIME% %REQ(:PATH)%", &err), -1);
    cr_assert_not_null(err);
    cr_assert(strstr(err, "%REQ(:PATH)%") != NULL, "%s", err);
    free(err);
    free(c.text);
    free(c.segs);
    cr_assert_eq(mt_alog_field_named("UPSTREAM_HOST", 13), MT_ALOG_UPSTREAM_HOST);
    cr_assert_eq(mt_alog_field_named("upstream_host", 13), MT_ALOG_LITERAL, "names are upper case");
}

Test(access_log, json_lines_escape_and_mark_absent_values)
{
    mt_alog_conf_t c = {.json = true};
    mt_alog_worker_t aw;
    mt_alog_worker_init(&aw, 1);
    mt_alog_entry_t e = entry();
    e.op = "we\"ird\n";
    e.upstream_host = NULL;
    e.flags = 0;
    mt_alog_write(&c, &aw, &e);
    char *l = line_of(&aw);
    cr_assert(strstr(l, "\"command\":\"we\\\"ird\\u000a\"") != NULL, "%s", l);
    cr_assert(strstr(l, "\"upstream_host\":null") != NULL, "%s", l);
    cr_assert(strstr(l, "\"response_flags\":\"-\"") != NULL, "%s", l);
    cr_assert(strstr(l, "\"bytes_received\":22,") != NULL, "%s", l);
    cr_assert(strstr(l, "\"duration\":3,") != NULL, "%s", l);
    cr_assert(strstr(l, "\"start_time\":\"20") != NULL, "%s", l);
    cr_assert_eq(strchr(l, '\n'), l + strlen(l) - 1, "one line");
    free(l);
    mt_alog_worker_free(&aw);
}

Test(access_log, stream_lines_carry_frames_and_how_the_stream_ended)
{
    /* JSON: a stream's line has three keys more, a request's line none of them */
    mt_alog_conf_t j = {.json = true};
    mt_alog_worker_t aw;
    mt_alog_worker_init(&aw, 3);
    mt_alog_entry_t e = entry();
    mt_alog_write(&j, &aw, &e);
    char *l = line_of(&aw);
    cr_assert(strstr(l, "frames_") == NULL && strstr(l, "stream_end") == NULL, "%s", l);
    cr_assert(strstr(l, "\"connection_id\":42}") != NULL, "%s", l);
    free(l);
    e.stream_end = "timeout";
    e.frames_in = 3;
    e.frames_out = 5;
    mt_alog_write(&j, &aw, &e);
    l = line_of(&aw);
    cr_assert(strstr(l, "\"connection_id\":42,\"frames_received\":3,\"frames_sent\":5,"
                        "\"stream_end\":\"timeout\"}\n") != NULL,
              "%s", l);
    free(l);
    /* text: the values on a stream's line, "-" on a request's */
    mt_alog_conf_t c = {0};
    char *err = NULL;
    cr_assert_eq(
        mt_alog_parse_format(&c, "%STREAM_END% %FRAMES_RECEIVED% %FRAMES_SENT% %BYTES_SENT%", &err),
        0, "%s", err);
    mt_alog_write(&c, &aw, &e);
    l = line_of(&aw);
    cr_assert_str_eq(l, "timeout 3 5 9\n");
    free(l);
    e.stream_end = NULL;
    mt_alog_write(&c, &aw, &e);
    l = line_of(&aw);
    cr_assert_str_eq(l, "- - - 9\n");
    free(l);
    mt_alog_worker_free(&aw);
    free(c.text);
    free(c.segs);
}

Test(access_log, sampling_none_and_all)
{
    mt_alog_worker_t aw;
    mt_alog_worker_init(&aw, 2);
    mt_alog_conf_t none = {.sample_below = 0}, all = {.sample_all = true};
    mt_alog_conf_t half = {.sample_below = UINT64_MAX / 2};
    int n = 0;
    for (int i = 0; i < 10000; i++) {
        cr_assert(!mt_alog_sampled(&none, &aw));
        cr_assert(mt_alog_sampled(&all, &aw));
        n += mt_alog_sampled(&half, &aw);
    }
    cr_assert(n > 4500 && n < 5500, "%d of 10000 at one half", n);
    mt_alog_worker_free(&aw);
}

Test(access_log, lines_reach_the_file_and_follow_a_reopen)
{
    char dir[] = "/tmp/mt-alog-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256], moved[256];
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(moved, sizeof(moved), "%s/access.log.1", dir);
    mt_alog_conf_t c = {0};
    char *err = NULL;
    cr_assert_eq(mt_alog_parse_format(&c, "%COMMAND%", &err), 0);
    c.path = path;
    cr_assert_eq(mt_alog_open(&c, &err), 0, "%s", err);
    mt_alog_worker_t aw;
    mt_alog_worker_init(&aw, 0);
    mt_alog_entry_t e = entry();
    mt_alog_write(&c, &aw, &e);
    mt_alog_flush(&aw);
    cr_assert_eq(rename(path, moved), 0);
    mt_alog_reopen();
    e.op = "set";
    mt_alog_write(&c, &aw, &e);
    mt_alog_flush(&aw);
    char buf[64] = {0};
    FILE *f = fopen(moved, "r");
    cr_assert_not_null(f);
    cr_assert_eq(fread(buf, 1, sizeof(buf) - 1, f), 4);
    fclose(f);
    cr_assert_str_eq(buf, "get\n");
    memset(buf, 0, sizeof(buf));
    f = fopen(path, "r");
    cr_assert_not_null(f, "reopened at its path");
    cr_assert_eq(fread(buf, 1, sizeof(buf) - 1, f), 4);
    fclose(f);
    cr_assert_str_eq(buf, "set\n");
    mt_alog_worker_free(&aw);
    unlink(path);
    unlink(moved);
    rmdir(dir);
    free(c.text);
    free(c.segs);
}
