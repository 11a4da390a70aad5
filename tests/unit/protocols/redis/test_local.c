/*
 * test_local.c - protocols/redis/local.c: replies of the commands meltemi answers itself, byte for
 * byte, and the unknown-command / arity error texts.
 */
#include "protocols/redis/local.h"
#include "redis_test.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S(lit) lit, sizeof(lit) - 1

static redis_local_ctx_t ctx;
static resp_out_t out;

static void setup(void)
{
    memset(&ctx, 0, sizeof(ctx));
    ctx.client_id = 7;
    ctx.mode = "standalone";
    memset(&out, 0, sizeof(out));
}

static void teardown(void)
{
    free(ctx.client_name);
    resp_out_free(&out);
}

TestSuite(local, .init = setup, .fini = teardown);

/* Runs an inline command line (parsed by the real parser) through redis_local_reply. */
static void run(const char *line)
{
    resp_req_parser_t p;
    resp_req_parser_init(&p, NULL);
    resp_request_t req;
    const char *err;
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "%s\r\n", line);
    cr_assert_eq(resp_parse_request(&p, buf, (size_t)n, &req, &err), MT_OK, "%s", line);
    const redis_command_t *cmd = redis_command_lookup(req.argv[0].ptr, req.argv[0].len);
    cr_assert_not_null(cmd, "%s", line);
    out.len = 0;
    redis_local_reply(&ctx, cmd, req.argc, req.argv, &out);
    resp_req_parser_free(&p);
}

static void expect(const char *want, size_t n)
{
    cr_assert_eq(out.len, n, "got (%zu) %.*s", out.len, (int)out.len, out.data);
    cr_assert_eq(memcmp(out.data, want, n), 0, "got %.*s", (int)out.len, out.data);
}

/* The reply is exactly one complete RESP value. */
static void expect_one_reply(void)
{
    resp_reply_scanner_t s;
    resp_reply_scanner_init(&s, NULL);
    size_t flen;
    const char *err;
    cr_assert_eq(resp_scan_reply(&s, out.data, out.len, &flen, &err), MT_OK);
    cr_assert_eq(flen, out.len);
}

Test(local, ping_echo_quit_readonly)
{
    run("PING");
    expect(S("+PONG\r\n"));
    run("ping hello");
    expect(S("$5\r\nhello\r\n"));
    run("PING a b");
    expect(S("-ERR wrong number of arguments for 'ping' command\r\n"));
    run("ECHO \"a b\"");
    expect(S("$3\r\na b\r\n"));
    run("ECHO");
    expect(S("-ERR wrong number of arguments for 'echo' command\r\n"));
    run("READONLY");
    expect(S("+OK\r\n"));
    run("readwrite");
    expect(S("+OK\r\n"));
    cr_assert_not(ctx.quit);
    run("QUIT");
    expect(S("+OK\r\n"));
    cr_assert(ctx.quit);
}

Test(local, select)
{
    run("SELECT 0");
    expect(S("+OK\r\n"));
    run("SELECT 1");
    expect(S("-ERR DB index is out of range\r\n"));
    run("SELECT -1");
    expect(S("-ERR DB index is out of range\r\n"));
    run("SELECT x");
    expect(S("-ERR value is not an integer or out of range\r\n"));
    run("SELECT 99999999999");
    expect(S("-ERR value is out of range, value must between -2147483648 and 2147483647\r\n"));
    ctx.mode = "cluster";
    run("SELECT 1");
    expect(S("-ERR SELECT is not allowed in cluster mode\r\n"));
    run("SELECT 0");
    expect(S("+OK\r\n"));
}

#define HELLO_REPLY(id, mode)                                                                      \
    "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:2\r\n" \
    "$2\r\nid\r\n:" id "\r\n$4\r\nmode\r\n" mode "$4\r\nrole\r\n$6\r\nmaster\r\n"                  \
    "$7\r\nmodules\r\n*0\r\n"

Test(local, hello)
{
    run("HELLO");
    expect(S(HELLO_REPLY("7", "$10\r\nstandalone\r\n")));
    run("HELLO 2");
    expect(S(HELLO_REPLY("7", "$10\r\nstandalone\r\n")));
    run("HELLO 3");
    expect(S("-NOPROTO unsupported protocol version\r\n"));
    run("HELLO 1");
    expect(S("-NOPROTO unsupported protocol version\r\n"));
    run("HELLO two");
    expect(S("-ERR Protocol version is not an integer or out of range\r\n"));
    run("HELLO 2 FOO");
    expect(S("-ERR Syntax error in HELLO option 'FOO'\r\n"));
    run("HELLO 2 AUTH user");
    expect(S("-ERR Syntax error in HELLO option 'AUTH'\r\n"));
    ctx.mode = "cluster";
    ctx.client_id = 12345;
    run("HELLO 2 AUTH default secret SETNAME app1");
    expect(S(HELLO_REPLY("12345", "$7\r\ncluster\r\n")));
    cr_assert_str_eq(ctx.client_name, "app1");
    run("HELLO 2 SETNAME \"bad name\"");
    expect(S("-ERR Client names cannot contain spaces, newlines or special characters.\r\n"));
    cr_assert_str_eq(ctx.client_name, "app1");
}

Test(local, client)
{
    run("CLIENT GETNAME");
    expect(S("$-1\r\n"));
    run("CLIENT SETNAME myapp");
    expect(S("+OK\r\n"));
    run("client getname");
    expect(S("$5\r\nmyapp\r\n"));
    run("CLIENT SETNAME \"a b\"");
    expect(S("-ERR Client names cannot contain spaces, newlines or special characters.\r\n"));
    run("CLIENT SETNAME ''");
    expect(S("+OK\r\n"));
    cr_assert_null(ctx.client_name);
    run("CLIENT SETNAME");
    expect(S("-ERR wrong number of arguments for 'client|setname' command\r\n"));
    run("CLIENT ID");
    expect(S(":7\r\n"));
    run("CLIENT SETINFO LIB-NAME redis-py");
    expect(S("+OK\r\n"));
    run("CLIENT SETINFO lib-ver 5.0.1");
    expect(S("+OK\r\n"));
    run("CLIENT SETINFO foo bar");
    expect(S("-ERR Unrecognized option 'foo'\r\n"));
    run("CLIENT SETINFO lib-name");
    expect(S("-ERR wrong number of arguments for 'client|setinfo' command\r\n"));
    run("CLIENT NOSUCH");
    expect(S("-ERR unknown subcommand 'NOSUCH'. Try CLIENT HELP.\r\n"));
    run("CLIENT KILL 1.2.3.4:5");
    expect(S("-ERR meltemi: 'client|kill' is not supported through the proxy\r\n"));
    ctx.client_name = strdup("n1");
    run("CLIENT INFO");
    expect_one_reply();
    cr_assert_not_null(memmem(out.data, out.len, "id=7 ", 5));
    cr_assert_not_null(memmem(out.data, out.len, " name=n1 ", 9));
    cr_assert_not_null(memmem(out.data, out.len, " db=0 ", 6));
    cr_assert_eq(out.data[out.len - 3], '\n', "CLIENT INFO ends with a newline");
}

Test(local, info)
{
    run("INFO");
    expect_one_reply();
    cr_assert_not_null(memmem(out.data, out.len, "# Server\r\nredis_version:7.0.15\r\n", 32));
    cr_assert_not_null(memmem(out.data, out.len, "redis_mode:standalone\r\n", 23));
    cr_assert_not_null(memmem(out.data, out.len, "proxy:meltemi\r\n", 15));
    cr_assert_not_null(memmem(out.data, out.len, "\r\n\r\n# Replication\r\nrole:master\r\n", 32));
    cr_assert_not_null(memmem(out.data, out.len, "cluster_enabled:0\r\n", 19));
    run("INFO server");
    expect_one_reply();
    cr_assert_null(memmem(out.data, out.len, "# Replication", 13));
    cr_assert_eq(memcmp(out.data + out.len - 2, "\r\n", 2), 0);
    run("INFO replication");
    expect(S("$48\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n"));
    run("INFO nosuchsection");
    expect(S("$0\r\n\r\n"));
    ctx.mode = "cluster";
    run("INFO SERVER CLUSTER");
    cr_assert_not_null(memmem(out.data, out.len, "redis_mode:cluster\r\n", 20));
    cr_assert_not_null(memmem(out.data, out.len, "\r\n\r\n# Cluster\r\ncluster_enabled:1\r\n", 34));
}

Test(local, client_no_evict_and_no_touch_are_accepted_not_forwarded)
{
    run("CLIENT NO-EVICT on");
    expect(S("+OK\r\n"));
    run("CLIENT NO-TOUCH OFF");
    expect(S("+OK\r\n"));
    run("CLIENT NO-EVICT maybe");
    expect(S("-ERR syntax error\r\n"));
    run("CLIENT NO-TOUCH");
    expect(S("-ERR wrong number of arguments for 'client|no-touch' command\r\n"));
}

Test(local, auth_without_a_configured_password)
{
    run("AUTH secret");
    expect(S("-ERR AUTH <password> called without any password configured for the default "
             "user. Are you sure your configuration is correct?\r\n"));
}

Test(local, command_count_info_docs_list_getkeys)
{
    run("COMMAND COUNT");
    expect(S(":240\r\n"));
    run("COMMAND DOCS");
    expect(S("*0\r\n"));
    run("COMMAND INFO get nosuch");
    const char get_info[] =
        "*2\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
        "*3\r\n+@read\r\n+@string\r\n+@fast\r\n*0\r\n"
        "*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n+access\r\n"
        "$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$"
        "5\r\nindex\r\n:1\r\n"
        "$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n"
        "$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n"
        "*0\r\n"
        "$-1\r\n";
    expect(get_info, sizeof(get_info) - 1);
    run("COMMAND INFO client|setname");
    expect_one_reply();
    cr_assert_not_null(memmem(out.data, out.len, "$14\r\nclient|setname\r\n:3\r\n", 25));
    run("COMMAND");
    expect_one_reply();
    cr_assert_eq(memcmp(out.data, "*240\r\n", 6), 0);
    run("COMMAND LIST");
    expect_one_reply();
    cr_assert_eq(memcmp(out.data, "*366\r\n", 6), 0, "240 commands + 126 subcommands");
    run("COMMAND LIST FILTERBY PATTERN xr*");
    expect(S("*4\r\n$6\r\nxrange\r\n$5\r\nxread\r\n$10\r\nxreadgroup\r\n$9\r\nxrevrange\r\n"));
    run("COMMAND LIST FILTERBY ACLCAT hyperloglog");
    expect_one_reply();
    cr_assert_eq(memcmp(out.data, "*5\r\n", 4), 0); /* pfadd pfcount pfdebug pfmerge pfselftest */
    run("COMMAND LIST FILTERBY MODULE x");
    expect(S("*0\r\n"));
    run("COMMAND GETKEYS MSET a 1 b 2");
    expect(S("*2\r\n$1\r\na\r\n$1\r\nb\r\n"));
    run("COMMAND GETKEYS EVAL s 0");
    expect(S("*0\r\n"));
    run("COMMAND GETKEYS PING x");
    expect(S("-ERR The command has no key arguments\r\n"));
    run("COMMAND GETKEYS PING");
    expect(S("-ERR wrong number of arguments for 'command|getkeys' command\r\n"));
    run("COMMAND GETKEYS nosuch a");
    expect(S("-ERR Invalid command specified\r\n"));
    run("COMMAND GETKEYS GET a b");
    expect(S("-ERR Invalid number of arguments specified for command\r\n"));
    run("COMMAND GETKEYS OBJECT ENCODING k");
    expect(S("*1\r\n$1\r\nk\r\n"));
    run("COMMAND NOSUCH");
    expect(S("-ERR unknown subcommand 'NOSUCH'. Try COMMAND HELP.\r\n"));
}

Test(local, command_getkeys_of_a_command_with_many_keys)
{
    char line[512] = "COMMAND GETKEYS DEL";
    for (int i = 0; i < 100; i++)
        snprintf(line + strlen(line), sizeof(line) - strlen(line), " %d", i % 10);
    run(line);
    expect_one_reply();
    cr_assert_eq(memcmp(out.data, "*100\r\n$1\r\n0\r\n", 13), 0);
}

Test(local, wrong_arity_of_the_top_level_command_is_checked_again)
{
    resp_arg_t argv[] = {{"select", 6}};
    redis_local_reply(&ctx, redis_command_lookup("select", 6), 1, argv, &out);
    expect(S("-ERR wrong number of arguments for 'select' command\r\n"));
}

/* ---- unknown command ----------------------------------------------------------------- */

static void unknown(uint32_t argc, const resp_arg_t *argv)
{
    out.len = 0;
    redis_reply_unknown_command(&out, argc, argv);
}

Test(local, unknown_command_text_matches_redis)
{
    resp_arg_t a[] = {{"foo", 3}, {"a", 1}, {"b c", 3}};
    unknown(1, a);
    expect(S("-ERR unknown command 'foo', with args beginning with: \r\n"));
    unknown(3, a);
    expect(S("-ERR unknown command 'foo', with args beginning with: 'a' 'b c' \r\n"));
    resp_arg_t crlf[] = {{"x\r\ny", 4}, {"\r\n", 2}};
    unknown(2, crlf);
    expect(S("-ERR unknown command 'x  y', with args beginning with: '  ' \r\n"));
    resp_arg_t nul[] = {{"ab\0cd", 5}, {"x\0y", 3}};
    unknown(2, nul);
    expect(S("-ERR unknown command 'ab', with args beginning with: 'x' \r\n"));
}

Test(local, unknown_command_truncation_matches_redis)
{
    char big[300];
    memset(big, 'a', sizeof(big));
    resp_arg_t a[] = {{big, 300}, {big, 100}, {big, 50}, {big, 10}};
    unknown(4, a);
    /* name cut at 128; args: 100 chars ("'" + 100 + "' " = 103), then 128 - 103 = 25 */
    char want[512];
    int n = snprintf(want, sizeof(want),
                     "-ERR unknown command '%.128s', with args beginning with: '%.100s' '%.25s' "
                     "\r\n",
                     big, big, big);
    expect(want, (size_t)n);
    resp_arg_t b[] = {{"x", 1}, {big, 300}, {"next", 4}};
    unknown(3, b);
    n = snprintf(want, sizeof(want),
                 "-ERR unknown command 'x', with args beginning with: '%.128s' \r\n", big);
    expect(want, (size_t)n);
}

Test(local, wrong_arity_text)
{
    redis_reply_wrong_arity(&out, "get");
    expect(S("-ERR wrong number of arguments for 'get' command\r\n"));
}

Test(local, glob_matches_like_redis)
{
    static const struct {
        const char *pat, *s;
        bool match;
    } cases[] = {
        {"*", "", true},
        {"*", "abc", true},
        {"a*c", "abbbc", true},
        {"a*c", "abbb", false},
        {"a?c", "abc", true},
        {"a?c", "ac", false},
        {"[abc]x", "bx", true},
        {"[^abc]x", "bx", false},
        {"[a-c]x", "Bx", true},
        {"[c-a]x", "bx", true},
        {"\\*", "*", true},
        {"\\*", "a", false},
        {"SAVE", "save", true},
        {"s[", "s", false},
        {"h*llo", "heeeello", true},
        {"*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_eq(
            redis_glob_match(cases[i].pat, strlen(cases[i].pat), cases[i].s, strlen(cases[i].s)),
            cases[i].match, "%s ~ %s", cases[i].pat, cases[i].s);
}
