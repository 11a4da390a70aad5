/*
 * main.c - the meltemi command line: run, validate, compile (and `lua`, for tests).
 * Exit codes: 0 ok, 1 invalid configuration, 2 usage error.
 */
#include "runtime/core/tls.h"
#include "runtime/core/common.h"
#include "runtime/server/config.h"
#include "runtime/core/log.h"
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
    "  run -c DIR [--admin ADDR] [--admin-token-file PATH] [--workers N] [--log-level L]\n"
    "      [--drain-timeout MS] [--istio-certs DIR]\n"
    "        serve the configuration in DIR (every *.yaml / *.yml file)\n"
    "        --admin ADDR       admin HTTP server address (default 127.0.0.1:15000; 'off')\n"
    "        --admin-token-file PATH\n"
    "                           POST /reload (every mutating admin endpoint) then needs\n"
    "                           'Authorization: Bearer <token>', the token being the file's\n"
    "                           one line (never given on the command line: ps shows it)\n"
    "        --workers N        worker threads (default: number of cores)\n"
    "        --log-level L      debug | info | warn | error (default info)\n"
    "        --drain-timeout MS how long SIGTERM waits for requests in flight (default 5000)\n"
    "        --istio-certs DIR  the workload's Istio mTLS files: cert-chain.pem, key.pem,\n"
    "                           root-cert.pem (default /etc/certs; re-read when they change)\n"
    "  validate DIR   check the configuration; print every problem as\n"
    "                 file:line: Kind/name: field: message\n"
    "  compile DIR    print the compiled configuration snapshot as Lua\n"
    "  --help         this text\n"
    "  --version      print the version\n"
    "\n"
    "exit codes: 0 ok, 1 invalid configuration, 2 usage error\n";

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

static int cmd_run(int argc, char **argv)
{
    mt_server_options_t o = {.config_dir = NULL,
                             .admin_addr = "127.0.0.1:15000",
                             .workers = 0,
                             .drain_timeout_ms = 5000};
    /* Every option of run takes exactly one value: walk the arguments in (option, value)
     * pairs; a missing value is reported by the option's own branch. */
    for (int i = 0; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (!v)
                return usage_error("%s needs a directory", a);
            o.config_dir = v;
        } else if (strcmp(a, "--admin") == 0) {
            if (!v)
                return usage_error("%s needs an address", a);
            o.admin_addr = v;
        } else if (strcmp(a, "--admin-token-file") == 0) {
            if (!v)
                return usage_error("%s needs a file name", a);
            o.admin_token_file = v;
        } else if (strcmp(a, "--workers") == 0) {
            if (!v || parse_uint(v, &o.workers) != 0 || o.workers > 64)
                return usage_error("--workers needs a number from 0 to 64, got '%s'", v ? v : "");
        } else if (strcmp(a, "--drain-timeout") == 0) {
            if (!v || parse_uint(v, &o.drain_timeout_ms) != 0)
                return usage_error("--drain-timeout needs milliseconds, got '%s'", v ? v : "");
        } else if (strcmp(a, "--istio-certs") == 0) {
            if (!v || !*v)
                return usage_error("%s needs a directory", a);
            mt_tls_istio_dir = v;
        } else if (strcmp(a, "--log-level") == 0) {
            int l = v ? mt_log_level_parse(v) : -1;
            if (l < 0)
                return usage_error("unknown log level '%s'", v ? v : "");
            mt_log_threshold = (mt_log_level_t)l;
        } else {
            return usage_error("unknown option '%s' for run", a);
        }
    }
    if (!o.config_dir)
        return usage_error("%s", "run needs -c DIR");
    return mt_server_run(&o);
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
    if (strcmp(cmd, "validate") == 0 || strcmp(cmd, "compile") == 0) {
        if (argc != 3)
            return usage_error("%s takes exactly one directory", cmd);
        return cmd[0] == 'v' ? mt_cmd_validate(argv[2]) : mt_cmd_compile(argv[2]);
    }
    if (strcmp(cmd, "lua") == 0) {
        if (argc < 3)
            return usage_error("%s", "lua needs a script");
        return mt_cmd_lua(argv[2], argc - 3, argv + 3);
    }
    return usage_error("unknown command '%s'", cmd);
}
