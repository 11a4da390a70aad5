/*
 * main.c - the meltemi command line: run, validate, compile (and `lua`, for tests).
 * Exit codes: 0 ok, 1 invalid configuration, 2 usage error.
 *
 * Every option of `run` is one row of run_options[]: the parser, the MELTEMI_<FLAG>
 * environment variable (for containers and systemd units) and `meltemi run --help` are all
 * made from that one table, so the help text cannot drift from what is parsed. A flag on the
 * command line wins over its variable; an empty variable counts as unset.
 */
#include "runtime/core/common.h"
#include "runtime/server/config.h"
#include "runtime/core/log.h"
#include "runtime/core/session.h"
#include "runtime/core/stats.h"
#include "runtime/core/tls.h"
#include "runtime/server/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: meltemi <command> [options]\n"
    "\n"
    "A layer-7 sidecar proxy for Redis and RPC protocols, configured with the Kubernetes,\n"
    "Istio and Aeraki YAML you already write.\n"
    "\n"
    "commands:\n"
    "  run -c DIR [options]  serve the configuration in DIR (every *.yaml / *.yml file);\n"
    "                        'meltemi run --help' lists the options and their variables\n"
    "  validate [DIR]        check the configuration; print every problem as\n"
    "                        file:line: Kind/name: field: message\n"
    "  compile [DIR]         print the compiled configuration snapshot as Lua\n"
    "  --help                this text\n"
    "  --version             print the version\n"
    "\n"
    "DIR defaults to $MELTEMI_CONFIG for every command.\n"
    "Transparent interception rules (iptables): see meltemi-iptables --help.\n"
    "\n"
    "exit codes: 0 ok, 1 invalid configuration, 2 usage error\n";

static const char validate_help[] =
    "usage: meltemi validate [DIR]\n"
    "\n"
    "Compiles every *.yaml / *.yml file in DIR (default $MELTEMI_CONFIG) as `run` would and\n"
    "prints every problem on stderr as file:line: Kind/name: field: message (warnings\n"
    "prefixed 'warning: '). On success prints 'ok: N objects, N listeners, N clusters'.\n"
    "Nothing is bound or connected.\n"
    "\n"
    "exit codes: 0 valid (warnings allowed), 1 invalid, 2 usage error\n";

static const char compile_help[] =
    "usage: meltemi compile [DIR]\n"
    "\n"
    "Prints the compiled snapshot of DIR (default $MELTEMI_CONFIG) as Lua, passwords\n"
    "redacted; problems go to stderr as with validate.\n"
    "\n"
    "exit codes: 0 ok, 1 invalid, 2 usage error\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "meltemi: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'meltemi --help'.\n");
    return MT_EXIT_USAGE;
}

static int parse_uint(const char *s, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v > 1000000)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* ---- run's options ------------------------------------------------------------------------ */

typedef enum {
    OPT_CONFIG,
    OPT_ADMIN,
    OPT_ADMIN_TOKEN_FILE,
    OPT_WORKERS,
    OPT_LOG_LEVEL,
    OPT_DRAIN_TIMEOUT,
    OPT_CAPTURE_OUTBOUND,
    OPT_CAPTURE_INBOUND,
    OPT_WORKLOAD,
    OPT_NAMESPACE,
    OPT_ISTIO_CERTS,
    OPT_TLS_HANDSHAKE_TIMEOUT,
} run_opt_id_t;

typedef struct run_opt {
    run_opt_id_t id;
    const char *flag;  /* --name */
    const char *alias; /* another spelling, or NULL */
    const char *env;   /* MELTEMI_<FLAG> */
    const char *arg;   /* the value's name in the help text */
    const char *help;  /* lines after the first are indented under it */
} run_opt_t;

static const run_opt_t run_options[] = {
    {OPT_CONFIG, "--config", "-c", "MELTEMI_CONFIG", "DIR",
     "the configuration directory (required); a Kubernetes ConfigMap mount works:\n"
     "its ..data symlink swap reloads"},
    {OPT_ADMIN, "--admin", NULL, "MELTEMI_ADMIN", "ADDR",
     "admin HTTP server address (default 127.0.0.1:15000; 'off')"},
    {OPT_ADMIN_TOKEN_FILE, "--admin-token-file", NULL, "MELTEMI_ADMIN_TOKEN_FILE", "PATH",
     "POST /reload (every mutating admin endpoint) then needs\n"
     "'Authorization: Bearer <token>', the token being the file's one line"},
    {OPT_WORKERS, "--workers", NULL, "MELTEMI_WORKERS", "N",
     "worker threads, 0 to 64 (default 0: number of cores)"},
    {OPT_LOG_LEVEL, "--log-level", NULL, "MELTEMI_LOG_LEVEL", "L",
     "debug | info | warn | error (default info)"},
    {OPT_DRAIN_TIMEOUT, "--drain-timeout", NULL, "MELTEMI_DRAIN_TIMEOUT", "MS",
     "how long SIGTERM waits for requests in flight (default 5000)"},
    {OPT_CAPTURE_OUTBOUND, "--capture-outbound", NULL, "MELTEMI_CAPTURE_OUTBOUND", "ADDR[,ADDR]",
     "transparent outbound capture port, e.g. 127.0.0.1:15001,[::1]:15001\n"
     "(default off; up to 4 addresses, an IPv6 one takes IPv6 only):\n"
     "connections redirected there by iptables are served by the listener of\n"
     "their original destination (SO_ORIGINAL_DST); unknown destinations are\n"
     "relayed as plain TCP (PassthroughCluster). With a capture port set,\n"
     "listeners are matched, not bound"},
    {OPT_CAPTURE_INBOUND, "--capture-inbound", NULL, "MELTEMI_CAPTURE_INBOUND", "ADDR[,ADDR]",
     "transparent inbound capture port, e.g. 0.0.0.0:15006,[::]:15006 (default off):\n"
     "served by the Sidecar ingress listener of the original port; others\n"
     "pass through to the original destination"},
    {OPT_WORKLOAD, "--workload", NULL, "MELTEMI_WORKLOAD", "NAME",
     "source_workload of Istio's metrics (default: the environment's\n"
     "ISTIO_META_WORKLOAD_NAME, else POD_NAME's Deployment part)"},
    {OPT_NAMESPACE, "--namespace", NULL, "MELTEMI_NAMESPACE", "NS",
     "source_workload_namespace (default: POD_NAMESPACE)"},
    {OPT_ISTIO_CERTS, "--istio-certs", NULL, "MELTEMI_ISTIO_CERTS", "DIR",
     "the workload's Istio mTLS files: cert-chain.pem, key.pem, root-cert.pem\n"
     "(default /etc/certs; polled, a replaced file reloads)"},
    {OPT_TLS_HANDSHAKE_TIMEOUT, "--tls-handshake-timeout", NULL, "MELTEMI_TLS_HANDSHAKE_TIMEOUT",
     "MS",
     "a TLS client must finish its handshake, and a PERMISSIVE port's client\n"
     "send its first bytes, within MS milliseconds (default 10000)"},
};
#define N_RUN_OPTIONS (sizeof(run_options) / sizeof(run_options[0]))

static void print_run_help(FILE *f)
{
    fputs("usage: meltemi run -c DIR [options]\n\n"
          "Serves the configuration in DIR until SIGTERM or SIGINT (drain, then exit);\n"
          "SIGHUP, POST /reload or a change in DIR reloads it.\n\n"
          "options (each also set by the environment variable shown; the flag wins):\n",
          f);
    for (size_t i = 0; i < N_RUN_OPTIONS; i++) {
        const run_opt_t *o = &run_options[i];
        fprintf(f, "  %s%s%s %s  [%s]\n", o->alias ? o->alias : "", o->alias ? ", " : "", o->flag,
                o->arg, o->env);
        for (const char *p = o->help; *p;) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            fprintf(f, "        %.*s\n", (int)n, p);
            p += n + (nl ? 1 : 0);
        }
    }
    fputs("\nexit codes: 0 ok, 1 invalid configuration (or a listener that cannot bind),\n"
          "2 usage error\n",
          f);
}

/* Applies value v (from the command line, or from o->env when from_env) to out. */
static int run_opt_apply(const run_opt_t *o, const char *v, bool from_env, mt_server_options_t *out,
                         mt_stats_identity_t *id)
{
    const char *who = from_env ? o->env : o->flag;
    char what[96];
    switch (o->id) {
    case OPT_CONFIG:
        out->config_dir = v;
        return 0;
    case OPT_ADMIN:
        out->admin_addr = v;
        return 0;
    case OPT_ADMIN_TOKEN_FILE:
        out->admin_token_file = v;
        return 0;
    case OPT_CAPTURE_OUTBOUND:
        out->capture_outbound = strcmp(v, "off") == 0 ? NULL : v;
        return 0;
    case OPT_CAPTURE_INBOUND:
        out->capture_inbound = strcmp(v, "off") == 0 ? NULL : v;
        return 0;
    case OPT_ISTIO_CERTS:
        if (!*v) {
            snprintf(what, sizeof what, "%s needs a directory%%s", who);
            return usage_error(what, "");
        }
        mt_tls_istio_dir = v;
        return 0;
    case OPT_WORKLOAD:
    case OPT_NAMESPACE:
        if (!*v) {
            snprintf(what, sizeof what, "%s needs a name%%s", who);
            return usage_error(what, "");
        }
        if (o->id == OPT_WORKLOAD)
            id->workload = v;
        else
            id->namespace = v;
        return 0;
    case OPT_WORKERS:
        if (parse_uint(v, &out->workers) != 0 || out->workers > 64) {
            snprintf(what, sizeof what, "%s needs a number from 0 to 64, got '%%s'", who);
            return usage_error(what, v);
        }
        return 0;
    case OPT_TLS_HANDSHAKE_TIMEOUT: {
        unsigned ms;
        if (parse_uint(v, &ms) != 0 || ms == 0) {
            snprintf(what, sizeof what, "%s needs milliseconds from 1 to 1000000, got '%%s'", who);
            return usage_error(what, v);
        }
        mt_session_tls_handshake_ms = ms;
        return 0;
    }
    case OPT_DRAIN_TIMEOUT:
        if (parse_uint(v, &out->drain_timeout_ms) != 0) {
            snprintf(what, sizeof what, "%s needs milliseconds, got '%%s'", who);
            return usage_error(what, v);
        }
        return 0;
    case OPT_LOG_LEVEL: {
        int l = mt_log_level_parse(v);
        if (l < 0) {
            snprintf(what, sizeof what, "%s: unknown log level '%%s'", who);
            return usage_error(what, v);
        }
        mt_log_threshold = (mt_log_level_t)l;
        return 0;
    }
    }
    return usage_error("internal error: option %s", who);
}

static const run_opt_t *run_opt_find(const char *a)
{
    for (size_t i = 0; i < N_RUN_OPTIONS; i++) {
        const run_opt_t *o = &run_options[i];
        if (strcmp(a, o->flag) == 0 || (o->alias && strcmp(a, o->alias) == 0))
            return o;
    }
    return NULL;
}

static int cmd_run(int argc, char **argv)
{
    mt_stats_identity_t id = {0};
    mt_server_options_t o = {.config_dir = NULL,
                             .admin_addr = "127.0.0.1:15000",
                             .workers = 0,
                             .drain_timeout_ms = 5000};
    /* Every option of run takes exactly one value: walk the arguments in (option, value)
     * pairs; a missing value is reported here, by name. A flag given replaces its variable,
     * which is then not even looked at. */
    const char *given[N_RUN_OPTIONS] = {NULL};
    for (int i = 0; i < argc; i += 2) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_run_help(stdout);
            return MT_EXIT_OK;
        }
        const run_opt_t *opt = run_opt_find(a);
        if (!opt)
            return usage_error("unknown option '%s' for run", a);
        if (i + 1 >= argc) {
            char what[96];
            snprintf(what, sizeof what, "%%s needs a value (%s)", opt->arg);
            return usage_error(what, a);
        }
        given[opt - run_options] = argv[i + 1];
    }
    for (size_t i = 0; i < N_RUN_OPTIONS; i++) {
        const char *v = given[i];
        bool from_env = !v;
        if (from_env && !((v = getenv(run_options[i].env)) && *v))
            continue;
        if (run_opt_apply(&run_options[i], v, from_env, &o, &id) != 0)
            return MT_EXIT_USAGE;
    }
    if (!o.config_dir)
        return usage_error("%s", "run needs -c DIR (or MELTEMI_CONFIG)");
    mt_stats_set_identity(&id);
    /* Before the first snapshot parses a key (security.md, "Keys"). */
    int sh = mt_tls_secure_heap_init();
    if (sh == 0)
        mt_warn("TLS: no secure heap: private keys live in ordinary memory (core dumps "
                "may hold them)");
    else
        mt_info("TLS: private keys in OpenSSL's secure heap (%u KiB, %s, excluded from core "
                "dumps)",
                MT_TLS_SECURE_HEAP >> 10,
                sh == 1 ? "locked in memory" : "not locked: RLIMIT_MEMLOCK is too low");
    return mt_server_run(&o);
}

/* validate / compile [DIR] (DIR from MELTEMI_CONFIG when absent). */
static int cmd_check(const char *cmd, int argc, char **argv)
{
    bool validate = cmd[0] == 'v';
    if (argc == 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
        fputs(validate ? validate_help : compile_help, stdout);
        return MT_EXIT_OK;
    }
    const char *dir = argc == 1 ? argv[0] : getenv("MELTEMI_CONFIG");
    if (argc > 1 || !dir || !*dir)
        return usage_error("%s takes exactly one directory (or MELTEMI_CONFIG)", cmd);
    return validate ? mt_cmd_validate(dir) : mt_cmd_compile(dir);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("%s", "no command given");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return MT_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("meltemi %s\n", MELTEMI_VERSION);
        return MT_EXIT_OK;
    }
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (strcmp(cmd, "validate") == 0 || strcmp(cmd, "compile") == 0)
        return cmd_check(cmd, argc - 2, argv + 2);
    if (strcmp(cmd, "lua") == 0) {
        if (argc < 3)
            return usage_error("%s", "lua needs a script");
        return mt_cmd_lua(argv[2], argc - 3, argv + 3);
    }
    return usage_error("unknown command '%s'", cmd);
}
