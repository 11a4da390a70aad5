/*
 * test_vs_redis.c - the codec against a real redis-server (Debian's 7.0.15, started on a free
 * 127.0.0.1 port and stopped by PID): the same bytes in, the same replies out, for error texts,
 * inline splitting, COMMAND INFO/GETKEYS and the local replies Redis would give itself.
 * Skipped when /usr/bin/redis-server is not installed.
 *
 * Named by topic, not by source: one comparison covers resp.c (parser, encoders), commands.c
 * (arity, COMMAND INFO/GETKEYS) and local.c (local replies) together, the way a client sees
 * them, and needs a running redis-server the per-file tests do not.
 */
#include "protocols/redis/local.h"
#include "redis_test.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REDIS_SERVER "/usr/bin/redis-server"
#define S(lit) lit, sizeof(lit) - 1

static pid_t server_pid;
static int server_port;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t l = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static int connect_redis(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)server_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void start_server(void)
{
    if (access(REDIS_SERVER, X_OK) != 0)
        cr_skip_test("redis-server not installed");
    server_port = free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", server_port);
    server_pid = fork();
    if (server_pid == 0) {
        /* the server goes when this test process goes, even if it is killed before .fini */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execl(REDIS_SERVER, REDIS_SERVER, "--port", port, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--dir", "/tmp", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) { /* up to 10 s */
        int fd = connect_redis();
        if (fd >= 0) {
            close(fd);
            return;
        }
        usleep(50000);
    }
    cr_assert_fail("redis-server did not start on port %d", server_port);
}

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
        server_pid = 0;
    }
}

TestSuite(vs_redis, .init = start_server, .fini = stop_server, .timeout = 60);

/* Sends bytes, reads one complete reply (framed by our scanner) into out. With
 * close_expected, a reply followed by the server closing is fine too. */
static void roundtrip(int fd, const char *req, size_t len, resp_out_t *out)
{
    out->len = 0;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, req + off, len - off);
        cr_assert_gt(n, 0);
        off += (size_t)n;
    }
    resp_reply_scanner_t s;
    resp_reply_scanner_init(&s, NULL);
    char buf[65536];
    for (;;) {
        size_t flen;
        const char *err;
        if (out->len > 0) {
            mt_status_t rc = resp_scan_reply(&s, out->data, out->len, &flen, &err);
            cr_assert_neq(rc, MT_ERROR, "redis sent something our scanner refuses: %s", err);
            if (rc == MT_OK) {
                cr_assert_eq(flen, out->len, "one reply expected");
                return;
            }
        }
        ssize_t n = read(fd, buf, sizeof(buf));
        cr_assert_gt(n, 0, "no reply from redis (%s)", n < 0 ? strerror(errno) : "closed");
        resp_out_raw(out, buf, (size_t)n);
    }
}

static void command_bytes(resp_out_t *o, const char *line)
{
    resp_req_parser_t p;
    resp_req_parser_init(&p, NULL);
    resp_request_t req;
    const char *err;
    char buf[1024];
    int n = snprintf(buf, sizeof(buf), "%s\r\n", line);
    cr_assert_eq(resp_parse_request(&p, buf, (size_t)n, &req, &err), MT_OK);
    o->len = 0;
    resp_out_command(o, req.argc, req.argv);
    resp_req_parser_free(&p);
}

/* Our local reply to `line` equals Redis's reply to the same line. */
static void same_local_reply(int fd, redis_local_ctx_t *ctx, const char *line)
{
    resp_out_t cmd = {0}, ours = {0}, theirs = {0};
    command_bytes(&cmd, line);
    roundtrip(fd, cmd.data, cmd.len, &theirs);
    resp_req_parser_t p;
    resp_req_parser_init(&p, NULL);
    resp_request_t req;
    const char *err;
    cr_assert_eq(resp_parse_request(&p, cmd.data, cmd.len, &req, &err), MT_OK);
    const redis_command_t *c = redis_command_lookup(req.argv[0].ptr, req.argv[0].len);
    if (!c)
        redis_reply_unknown_command(&ours, req.argc, req.argv);
    else if (!redis_command_arity_ok(c, req.argc))
        redis_reply_wrong_arity(&ours, c->name);
    else
        redis_local_reply(ctx, c, req.argc, req.argv, &ours);
    cr_expect_eq(ours.len, theirs.len, "%s:\n ours:   %.*s\n theirs: %.*s", line, (int)ours.len,
                 ours.data, (int)theirs.len, theirs.data);
    cr_expect(ours.len == theirs.len && memcmp(ours.data, theirs.data, ours.len) == 0,
              "%s:\n ours:   %.*s\n theirs: %.*s", line, (int)ours.len, ours.data, (int)theirs.len,
              theirs.data);
    resp_req_parser_free(&p);
    resp_out_free(&cmd);
    resp_out_free(&ours);
    resp_out_free(&theirs);
}

Test(vs_redis, local_replies_and_error_texts_match)
{
    int fd = connect_redis();
    cr_assert_geq(fd, 0);
    redis_local_ctx_t ctx = {.client_id = 1, .mode = "standalone"};
    static const char *lines[] = {
        "PING",
        "PING hello",
        "PING a b",
        "ECHO \"a b\\x00c\"",
        "ECHO",
        "SELECT 0",
        "SELECT x",
        "SELECT 99999999999",
        "HELLO two",
        "HELLO 2 FOO",
        "HELLO 2 AUTH x",
        "HELLO 4",
        "CLIENT SETNAME \"a b\"",
        "CLIENT SETNAME app",
        "CLIENT GETNAME",
        "CLIENT SETNAME",
        "CLIENT NOSUCH",
        "CLIENT GETNAME",
        "CLIENT NO-EVICT on",
        "CLIENT NO-EVICT maybe",
        "COMMAND COUNT",
        "COMMAND NOSUCH",
        "COMMAND INFO get nosuch set",
        "COMMAND INFO client|setname object|encoding config|get",
        "COMMAND GETKEYS PING x",
        "COMMAND GETKEYS nosuch a",
        "COMMAND GETKEYS GET a b",
        "COMMAND GETKEYS GET",
        "COMMAND GETKEYS EVAL s 0",
        "COMMAND GETKEYS MSET a 1 b 2 c 3",
        "COMMAND GETKEYS EVAL s 2 k1 k2 a",
        "COMMAND GETKEYS FCALL_RO f 1 k a",
        "COMMAND GETKEYS XREAD COUNT 2 STREAMS a b 0 0",
        "COMMAND GETKEYS XREADGROUP GROUP g c NOACK STREAMS s >",
        "COMMAND GETKEYS ZUNIONSTORE d 2 a b",
        "COMMAND GETKEYS LMOVE a b LEFT LEFT",
        "COMMAND GETKEYS OBJECT ENCODING k",
        "COMMAND GETKEYS MEMORY USAGE k",
        "COMMAND GETKEYS SORT k BY x STORE dst",
        "COMMAND GETKEYS SORT k LIMIT 0 1 GET store STORE d1 STORE d2",
        "COMMAND GETKEYS SORT_RO k BY x",
        "COMMAND GETKEYS MIGRATE h 1 k 0 5",
        "COMMAND GETKEYS MIGRATE h 1 \"\" 0 5 COPY KEYS a b",
        "COMMAND GETKEYS BLMPOP 0 2 a b LEFT",
        "COMMAND GETKEYS GEORADIUS k 0 0 1 km STORE d",
        "COMMAND GETKEYS SPUBLISH ch m",
        "COMMAND GETKEYS DEL a b c",
        "COMMAND GETKEYS EVAL s 5 k",
        "nosuchcommand",
        "nosuchcommand a \"b c\" d",
        "GET",
        "SET a",
        "READONLY",
        "AUTH secret",
        "QUIT",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        bool differs = strcmp(lines[i], "READONLY") == 0; /* Redis: cluster support disabled */
        if (!differs)
            same_local_reply(fd, &ctx, lines[i]);
    }
    free(ctx.client_name);
    close(fd);
}

Test(vs_redis, unknown_command_texts_match_with_long_and_binary_args)
{
    int fd = connect_redis();
    cr_assert_geq(fd, 0);
    char big[300];
    memset(big, 'b', sizeof(big));
    resp_arg_t sets[][5] = {
        {{big, 300}, {big, 100}, {big, 50}, {big, 10}, {"x", 1}},
        {{"x", 1}, {big, 127}, {"yy", 2}, {"z", 1}, {"w", 1}},
        {{"x", 1}, {big, 124}, {"yy", 2}, {"z", 1}, {"w", 1}},
        {{"a\r\nb", 4}, {"\0x", 2}, {"y\0", 2}, {"\n", 1}, {"", 0}},
    };
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        resp_out_t cmd = {0}, ours = {0}, theirs = {0};
        resp_out_command(&cmd, 5, sets[i]);
        roundtrip(fd, cmd.data, cmd.len, &theirs);
        redis_reply_unknown_command(&ours, 5, sets[i]);
        cr_expect(ours.len == theirs.len && memcmp(ours.data, theirs.data, ours.len) == 0,
                  "set %zu:\n ours:   %.*s\n theirs: %.*s", i, (int)ours.len, ours.data,
                  (int)theirs.len, theirs.data);
        resp_out_free(&cmd);
        resp_out_free(&ours);
        resp_out_free(&theirs);
    }
    close(fd);
}

typedef struct {
    const char *p;
    size_t n;
} slice_t;

static int slice_cmp(const void *a, const void *b)
{
    const slice_t *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? -1 : 1;
    return memcmp(x->p, y->p, x->n);
}

static size_t scan_one(const char *p, size_t n)
{
    resp_reply_scanner_t s;
    resp_reply_scanner_init(&s, NULL);
    size_t flen = 0;
    const char *err;
    cr_assert_eq(resp_scan_reply(&s, p, n, &flen, &err), MT_OK);
    return flen;
}

/* Cuts "*1 *10 <9 fields> *N <N subcommand entries>" into its head and sorted entries. */
static size_t split_info(const resp_out_t *o, slice_t *subs, size_t max, size_t *nsubs)
{
    cr_assert_eq(memcmp(o->data, "*1\r\n*10\r\n", 9), 0);
    size_t off = 9;
    for (int i = 0; i < 9; i++)
        off += scan_one(o->data + off, o->len - off);
    const char *crlf = memmem(o->data + off, o->len - off, "\r\n", 2);
    size_t n = strtoul(o->data + off + 1, NULL, 10);
    off = (size_t)(crlf - o->data) + 2;
    size_t head = off;
    cr_assert_leq(n, max);
    for (size_t i = 0; i < n; i++) {
        subs[i].p = o->data + off;
        subs[i].n = scan_one(o->data + off, o->len - off);
        off += subs[i].n;
    }
    cr_assert_eq(off, o->len);
    qsort(subs, n, sizeof(*subs), slice_cmp);
    *nsubs = n;
    return head;
}

/* Equal, except that Redis lists subcommands in its dict's order (random per start). */
static bool same_command_info(const resp_out_t *ours, const resp_out_t *theirs)
{
    if (ours->len != theirs->len)
        return false;
    if (memcmp(ours->data, theirs->data, ours->len) == 0)
        return true;
    if (theirs->len < 9 || memcmp(theirs->data, "*1\r\n*10\r\n", 9) != 0)
        return false;
    static slice_t a[64], b[64];
    size_t na, nb;
    size_t ha = split_info(ours, a, 64, &na), hb = split_info(theirs, b, 64, &nb);
    if (ha != hb || na != nb || memcmp(ours->data, theirs->data, ha) != 0)
        return false;
    for (size_t i = 0; i < na; i++) {
        if (slice_cmp(&a[i], &b[i]) != 0)
            return false;
    }
    return true;
}

Test(vs_redis, command_info_of_every_command_matches_byte_for_byte)
{
    int fd = connect_redis();
    cr_assert_geq(fd, 0);
    size_t n;
    const redis_command_t *t = redis_command_table(&n);
    redis_local_ctx_t ctx = {.client_id = 1, .mode = "standalone"};
    resp_out_t cmd = {0}, ours = {0}, theirs = {0};
    size_t checked = 0;
    for (size_t i = 0; i < n; i++) {
        size_t nsub;
        const redis_command_t *subs = redis_command_subcommands(&t[i], &nsub);
        for (size_t j = 0; j <= nsub; j++) {
            const char *name = j ? subs[j - 1].name : t[i].name;
            resp_arg_t argv[3] = {{"COMMAND", 7}, {"INFO", 4}, {name, strlen(name)}};
            cmd.len = 0;
            resp_out_command(&cmd, 3, argv);
            roundtrip(fd, cmd.data, cmd.len, &theirs);
            ours.len = 0;
            redis_local_reply(&ctx, redis_command_lookup("command", 7), 3, argv, &ours);
            cr_expect(same_command_info(&ours, &theirs),
                      "COMMAND INFO %s:\n ours:   %.*s\n theirs: %.*s", name, (int)ours.len,
                      ours.data, (int)theirs.len, theirs.data);
            checked++;
        }
    }
    cr_assert_eq(checked, 366);
    resp_out_free(&cmd);
    resp_out_free(&ours);
    resp_out_free(&theirs);
    close(fd);
}

/* The request parser's error texts are the ones Redis sends for the same bytes. */
Test(vs_redis, protocol_error_texts_match)
{
    static const struct {
        const char *in;
        size_t len;
    } cases[] = {
        {S("*abc\r\n")},
        {S("*\r\n")},
        {S("*01\r\n")},
        {S("*2147483648\r\n")},
        {S("*1\r\n$abc\r\n")},
        {S("*1\r\n$-1\r\n")},
        {S("*1\r\n$536870913\r\n")},
        {S("*1\r\n:3\r\n")},
        {S("*2\r\n$1\r\na\r\nfoo\r\n")},
        {S("*1\r\n\r\n")},
        {S("set \"a\r\n")},
        {S("set 'a'b\r\n")},
    };
    resp_out_t theirs = {0};
    char want[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int fd = connect_redis();
        cr_assert_geq(fd, 0);
        roundtrip(fd, cases[i].in, cases[i].len, &theirs);
        close(fd);
        feed_result_t r = feed_requests(NULL, cases[i].in, cases[i].len, NULL, 0, false);
        cr_assert(r.error, "case %zu accepted", i);
        int n = snprintf(want, sizeof(want), "-ERR %s\r\n", r.err);
        cr_expect(theirs.len == (size_t)n && memcmp(theirs.data, want, (size_t)n) == 0,
                  "case %zu: ours %s theirs %.*s", i, want, (int)theirs.len, theirs.data);
        feed_result_free(&r);
    }
    /* a count line that never ends: both trip past 64 KB */
    size_t big = 64 * 1024 + 10;
    char *in = malloc(big);
    in[0] = '*';
    memset(in + 1, '1', big - 1);
    int fd = connect_redis();
    roundtrip(fd, in, big, &theirs);
    close(fd);
    cr_expect(theirs.len > 5 && memmem(theirs.data, theirs.len, "too big mbulk count string", 26),
              "%.*s", (int)theirs.len, theirs.data);
    memcpy(in, "*1\r\n$", 5);
    fd = connect_redis();
    roundtrip(fd, in, big, &theirs);
    close(fd);
    cr_expect(memmem(theirs.data, theirs.len, "too big bulk count string", 25), "%.*s",
              (int)theirs.len, theirs.data);
    memset(in, 'a', big);
    fd = connect_redis();
    roundtrip(fd, in, big, &theirs);
    close(fd);
    cr_expect(memmem(theirs.data, theirs.len, "too big inline request", 22), "%.*s",
              (int)theirs.len, theirs.data);
    free(in);
    resp_out_free(&theirs);
}

/* Inline commands split like sdssplitargs: ECHO each token back and compare. */
Test(vs_redis, inline_splitting_matches)
{
    static const char *tokens[] = {
        "plain",
        "\"a b\"",
        "'a b'",
        "\"\\x41\\x4a\\x4A\"",
        "\"\\n\\r\\t\\b\\a\\z\"",
        "'it\\'s'",
        "\"\\xZZ\"",
        "x\"y z\"",
        "\"\"",
        "''",
        "\"a\\\\b\"",
        "'a\\\\b'",
        "\"\\\"q\\\"\"",
    };
    int fd = connect_redis();
    cr_assert_geq(fd, 0);
    resp_out_t theirs = {0}, ours = {0};
    for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
        char line[128];
        int n = snprintf(line, sizeof(line), "ECHO %s\r\n", tokens[i]);
        roundtrip(fd, line, (size_t)n, &theirs);
        resp_req_parser_t p;
        resp_req_parser_init(&p, NULL);
        resp_request_t req;
        const char *err;
        cr_assert_eq(resp_parse_request(&p, line, (size_t)n, &req, &err), MT_OK, "%s", line);
        cr_assert_eq(req.argc, 2, "%s", line);
        ours.len = 0;
        resp_out_bulk(&ours, req.argv[1].ptr, req.argv[1].len);
        cr_expect(ours.len == theirs.len && memcmp(ours.data, theirs.data, ours.len) == 0,
                  "%s: ours %.*s theirs %.*s", tokens[i], (int)ours.len, ours.data, (int)theirs.len,
                  theirs.data);
        resp_req_parser_free(&p);
    }
    resp_out_free(&theirs);
    resp_out_free(&ours);
    close(fd);
}
