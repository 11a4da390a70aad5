/*
 * server.h - `meltemi run`: the main thread (config, signals, admin, stats) and the workers.
 */
#ifndef MELTEMI_SERVER_H
#define MELTEMI_SERVER_H

typedef struct mt_server_options {
    const char *config_dir;
    const char *admin_addr;       /* "127.0.0.1:15000"; "off" disables the admin server */
    const char *admin_token_file; /* NULL: mutating admin endpoints need no token */
    unsigned workers;             /* 0: number of cores */
    unsigned drain_timeout_ms;
    const char *capture_outbound; /* "127.0.0.1:15001": transparent outbound capture; NULL off */
    const char *capture_inbound;  /* "0.0.0.0:15006": transparent inbound capture; NULL off */
} mt_server_options_t;

/* Runs until SIGTERM/SIGINT and the drain finish; returns a process exit code. */
int mt_server_run(const mt_server_options_t *opts);

#endif
