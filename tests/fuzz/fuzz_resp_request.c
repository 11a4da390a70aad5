/*
 * fuzz_resp_request.c - libFuzzer harness for the RESP2 request parser and everything a
 * request reaches in protocols/redis (command lookup, keys, local replies, error texts, the
 * administration rules, the timeout of a blocking command).
 *
 * Beyond "no crash", it checks the parser's contract: the frames and the error are the same
 * whether the input comes in one piece or in chunks whose bytes move between calls; argv
 * never points outside the frame (or the parser's scratch, for inline); a re-encoded command
 * parses back to the same argv; every local reply is exactly one well-formed RESP reply.
 * Build: see tests/fuzz/README.md.
 */
#include "protocols/redis/admin.h"
#include "protocols/redis/commands.h"
#include "protocols/redis/local.h"
#include "protocols/redis/resp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    char *log;
    size_t len;
    char err[128];
    bool error;
} outcome_t;

static void log_add(outcome_t *o, const void *p, size_t n)
{
    o->log = realloc(o->log, o->len + n + 1);
    CHECK(o->log);
    memcpy(o->log + o->len, p, n);
    o->len += n;
}

/* A reply in the protocol the connection speaks: RESP3 once HELLO 3 chose it. */
static void one_reply(const resp_out_t *out, bool resp3)
{
    resp_reply_scanner_t s;
    resp_reply_scanner_init(&s, NULL);
    s.resp3 = resp3;
    size_t flen = 0;
    const char *err = NULL;
    CHECK(resp_scan_reply(&s, out->data, out->len, &flen, &err) == MT_OK);
    CHECK(flen == out->len);
}

/* What the session would do with the request: lookup, keys, local reply, error texts. */
static void exercise_command(const resp_request_t *req)
{
    if (req->argc == 0)
        return;
    resp_out_t out = {0};
    const redis_command_t *cmd = redis_command_lookup(req->argv[0].ptr, req->argv[0].len);
    if (!cmd) {
        redis_reply_unknown_command(&out, req->argc, req->argv);
        one_reply(&out, false);
        resp_out_free(&out);
        return;
    }
    uint32_t idx[16];
    uint32_t n = redis_command_keys(cmd, req->argc, req->argv, idx, 16);
    for (uint32_t i = 0; i < n && i < 16; i++) {
        CHECK(idx[i] > 0 && idx[i] < req->argc);
        (void)redis_slot_of_key(req->argv[idx[i]].ptr, req->argv[idx[i]].len);
    }
    /* A rule names this command (or its subcommand); a keyed one's key is an argument. */
    const redis_admin_rule_t *rule = redis_admin_rule(cmd, req->argc, req->argv);
    if (rule) {
        CHECK(strncmp(rule->name, cmd->name, cmd->name_len) == 0);
        CHECK(rule->merge != REDIS_MERGE_BY_KEY || rule->key_arg > 0);
    }
    uint64_t ms = 0;
    if (redis_command_block_timeout_ms(cmd, req->argc, req->argv, &ms))
        CHECK(ms <= 1000000000000000ull); /* at most 10^12 s, in ms */
    if (cmd->proxy == REDIS_PROXY_LOCAL) {
        redis_local_ctx_t ctx = {.client_id = 1, .mode = "standalone"};
        /* COMMAND without arguments is 100 KB of output: fine, but slow for fuzzing */
        if (!(req->argc == 1 && strcmp(cmd->name, "command") == 0)) {
            redis_local_reply(&ctx, cmd, req->argc, req->argv, &out);
            one_reply(&out, ctx.resp == 3);
        }
        free(ctx.client_name);
    } else if (!redis_command_arity_ok(cmd, req->argc)) {
        redis_reply_wrong_arity(&out, cmd->name);
        one_reply(&out, false);
    }
    resp_out_free(&out);
}

/* Re-encoding a request and parsing it again gives the same argv. */
static void roundtrip(const resp_request_t *req)
{
    resp_out_t out = {0};
    resp_out_command(&out, req->argc, req->argv);
    resp_req_parser_t p;
    resp_req_parser_init(&p, NULL);
    resp_request_t again;
    const char *err = NULL;
    mt_status_t rc = resp_parse_request(&p, out.data, out.len, &again, &err);
    if (req->argc == 0) {
        CHECK(rc == MT_OK && again.argc == 0);
    } else {
        CHECK(rc == MT_OK);
        CHECK(again.frame_len == out.len);
        CHECK(again.argc == req->argc);
        for (uint32_t i = 0; i < req->argc; i++) {
            CHECK(again.argv[i].len == req->argv[i].len);
            CHECK(memcmp(again.argv[i].ptr, req->argv[i].ptr, req->argv[i].len) == 0);
        }
    }
    resp_req_parser_free(&p);
    resp_out_free(&out);
}

static void record(outcome_t *o, const resp_req_parser_t *p, const resp_request_t *req,
                   const char *buf, bool deep)
{
    log_add(o, &req->argc, sizeof(req->argc));
    log_add(o, &req->frame_len, sizeof(req->frame_len));
    for (uint32_t i = 0; i < req->argc; i++) {
        const char *a = req->argv[i].ptr;
        size_t n = req->argv[i].len;
        if (req->is_inline)
            CHECK(a >= p->scratch && a + n <= p->scratch + p->scratch_cap);
        else
            CHECK(a >= buf && a + n <= buf + req->frame_len);
        log_add(o, &n, sizeof(n));
        log_add(o, a, n);
    }
    if (deep) {
        roundtrip(req);
        exercise_command(req);
    }
}

/* Feeds data in chunks of the given sizes (cycled); moves the bytes at every call. */
static outcome_t run(const resp_limits_t *lim, const uint8_t *data, size_t len,
                     const uint8_t *chunks, size_t nchunks, bool deep)
{
    outcome_t o = {0};
    resp_req_parser_t p;
    resp_req_parser_init(&p, lim);
    char *buf = NULL;
    size_t have = 0, delivered = 0, c = 0;
    while (delivered < len) {
        size_t step = nchunks ? (size_t)chunks[c++ % nchunks] + 1 : len;
        step = step > len - delivered ? len - delivered : step;
        char *fresh = malloc(have + step + 1);
        CHECK(fresh);
        if (have)
            memcpy(fresh, buf, have);
        free(buf);
        buf = fresh;
        memcpy(buf + have, data + delivered, step);
        have += step;
        delivered += step;
        for (;;) {
            resp_request_t req;
            const char *err = NULL;
            mt_status_t rc = resp_parse_request(&p, buf, have, &req, &err);
            if (rc == MT_AGAIN)
                break;
            if (rc == MT_ERROR) {
                CHECK(err && strlen(err) < sizeof(o.err));
                CHECK(!strchr(err, '\r') && !strchr(err, '\n'));
                snprintf(o.err, sizeof(o.err), "%s", err);
                o.error = true;
                free(buf);
                resp_req_parser_free(&p);
                return o;
            }
            CHECK(req.frame_len > 0 && req.frame_len <= have);
            record(&o, &p, &req, buf, deep);
            memmove(buf, buf + req.frame_len, have - req.frame_len);
            have -= req.frame_len;
        }
    }
    free(buf);
    resp_req_parser_free(&p);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* byte 0: limits; bytes 1..8: chunk sizes; the rest: the stream */
    if (size < 9)
        return 0;
    resp_limits_t lim = resp_default_limits;
    if (data[0] & 1) {
        lim.max_bulk_len = data[0] >> 1;
        lim.max_args = (data[0] >> 3) + 1;
        lim.max_inline = (data[0] >> 2) + 8;
    }
    const uint8_t *chunks = data + 1;
    const uint8_t *stream = data + 9;
    size_t len = size - 9;
    outcome_t whole = run(&lim, stream, len, NULL, 0, true);
    outcome_t cut = run(&lim, stream, len, chunks, 8, false);
    CHECK(whole.error == cut.error);
    CHECK(strcmp(whole.err, cut.err) == 0);
    CHECK(whole.len == cut.len);
    CHECK(whole.len == 0 || memcmp(whole.log, cut.log, whole.len) == 0);
    free(whole.log);
    free(cut.log);
    return 0;
}
