/*
 * server.c - `meltemi run`: the main thread. It compiles the configuration, builds the C
 * snapshot, opens one SO_REUSEPORT listening socket per listener and worker (so bind errors
 * surface here, synchronously, before anything is served), starts the workers, and then owns
 * signals, the admin server and stats until a drain ends the process.
 */
#include "runtime/server/server.h"

#include "runtime/server/admin.h"
#include "runtime/core/common.h"
#include "runtime/server/config.h"
#include "runtime/server/notify.h"
#include "runtime/core/log.h"
#include "runtime/core/proxy.h"
#include "runtime/luajit/lua_env.h"
#include "runtime/core/snapshot.h"
#include "runtime/core/stats.h"
#include "runtime/core/tls.h"
#include "runtime/core/worker.h"
#include "runtime/proxy/capture/capture.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct mt_server {
    const mt_server_options_t *opts;
    uv_loop_t *loop;
    lua_State *L;
    int snapshot_ref; /* registry ref to the live snapshot table */
    mt_snapshot_t *snap;
    uint64_t generation;
    char *last_reload_error;
    mt_worker_t *workers;
    unsigned nworkers;
    mt_admin_t *admin;
    uv_signal_t sigterm, sigint, sighup, sigusr1;
    uv_timer_t drain_timer, drain_poll;
    uv_timer_t ready_poll; /* until /ready would answer 200: then READY=1 (notify.h) */
    uv_fs_event_t watch;   /* the config directory */
    uv_timer_t reload_debounce;
    uv_timer_t cert_poll;  /* TLS files of the live snapshot, checked every second */
    uint64_t cert_sig;     /* their (inode, size, mtime) digest ... */
    uint64_t cert_sig_gen; /* ... for this generation */
    bool draining;
    bool forced;
} mt_server_t;

/* ---- listening sockets ------------------------------------------------------------------------
 */

static bool snapshot_has_listener(const mt_snapshot_t *s, const char *name)
{
    for (uint32_t i = 0; i < s->n_listeners; i++) {
        if (strcmp(s->listeners[i].name, name) == 0)
            return true;
    }
    return false;
}

/* Does s have a listener on l's address (under another name: a renamed service)? */
static bool snapshot_has_address(const mt_snapshot_t *s, const mt_listener_conf_t *l)
{
    for (uint32_t i = 0; i < s->n_listeners; i++) {
        const mt_listener_conf_t *h = &s->listeners[i];
        if (h->salen == l->salen && memcmp(&h->sa, &l->sa, l->salen) == 0)
            return true;
    }
    return false;
}

static int listen_error(const mt_listener_conf_t *l, const char *why, char **err)
{
    if (asprintf(err, "listener %s: cannot listen on %s:%u: %s", l->name, l->address, l->port,
                 why) < 0)
        *err = NULL;
    return -1;
}

/*
 * Is l's address free of every other process? SO_REUSEPORT, which gives each worker its own
 * socket, would also let a second meltemi (same user) join the first's listeners and take
 * half its connections without a word. So before the workers' sockets are opened for a new
 * listener, one socket without SO_REUSEPORT binds and listens there: it fails with
 * EADDRINUSE whenever anybody listens on the address, and is closed at once. (A process that
 * binds in the instant between the probe and the workers' sockets is not seen; a plain
 * listener is, later, because the workers' sockets then fail to bind.)
 */
static int probe_address_free(const mt_listener_conf_t *l, char **err)
{
    int fd = socket(l->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)&l->sa, l->salen) != 0 || listen(fd, 1) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return listen_error(l,
                            e == EADDRINUSE ? "the address is already in use by another "
                                              "process (another meltemi?)"
                                            : strerror(e),
                            err);
    }
    close(fd);
    return 0;
}

static int open_listen_socket(const mt_listener_conf_t *l, char **err)
{
    if (mt_capture_enabled() || l->sni_of)
        return MT_LISTENER_FD_VIRTUAL; /* matched by the capture ports (or handed its clients by
                                          its port's SNI front: runtime/proxy/sni), not bound */
    int fd = socket(l->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)&l->sa, l->salen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return listen_error(l, strerror(e), err);
    }
    return fd;
}

/*
 * fds[w * n + i]: worker w's socket for listener i of s, for every listener that `held` (the
 * live snapshot, or NULL at startup) does not already have (-1 there: the workers keep theirs).
 * Each new listener's address is probed first (probe_address_free). Returns NULL (and closes
 * all it opened) on error, with a malloc'd message in *err.
 */
static int *open_listeners(const mt_snapshot_t *s, const mt_snapshot_t *held, unsigned nworkers,
                           char **err)
{
    size_t n = s->n_listeners;
    int *fds = malloc(sizeof(int) * (n * nworkers + 1));
    if (!fds) {
        *err = strdup("out of memory");
        return NULL;
    }
    for (size_t k = 0; k < n * nworkers; k++)
        fds[k] = -1;
    for (size_t i = 0; i < n; i++) {
        if (held && snapshot_has_listener(held, s->listeners[i].name))
            continue;
        /* Our own workers may hold the address under an old name: no probe then. */
        bool ok = mt_capture_enabled() || s->listeners[i].sni_of ||
                  (held && snapshot_has_address(held, &s->listeners[i])) ||
                  probe_address_free(&s->listeners[i], err) == 0;
        for (unsigned w = 0; ok && w < nworkers; w++) {
            fds[w * n + i] = open_listen_socket(&s->listeners[i], err);
            ok = fds[w * n + i] != -1; /* MT_LISTENER_FD_VIRTUAL: a capture port matches it */
        }
        if (!ok) {
            for (size_t k = 0; k < n * nworkers; k++) {
                if (fds[k] >= 0)
                    close(fds[k]);
            }
            free(fds);
            return NULL;
        }
    }
    return fds;
}

/* ---- configuration ----------------------------------------------------------------------------
 */

static void print_errors(lua_State *L, int idx)
{
    size_t n = lua_objlen(L, idx);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        mt_error("%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_pop(L, 1);
    }
}

static void print_warnings(lua_State *L, int idx)
{
    lua_getfield(L, idx, "warnings");
    if (lua_istable(L, -1)) {
        size_t n = lua_objlen(L, -1);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, (int)i);
            mt_warn("%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* ---- certificate rotation ------------------------------------------------------------------ */

static uint64_t sig_mix(uint64_t h, uint64_t v)
{
    return (h ^ v) * 0x100000001b3ull;
}

static uint64_t tls_files_sig(const mt_tls_conf_t *c, uint64_t h)
{
    for (uint32_t i = 0; c && i < c->n_files; i++) {
        struct stat st;
        if (stat(c->files[i], &st) != 0) {
            h = sig_mix(h, 0xdead); /* gone (mid-replace): changes again once it is back */
            continue;
        }
        h = sig_mix(h, (uint64_t)st.st_ino);
        h = sig_mix(h, (uint64_t)st.st_size);
        h = sig_mix(h, (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec);
    }
    return h;
}

static uint64_t snapshot_tls_sig(const mt_snapshot_t *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < s->n_listeners; i++)
        h = tls_files_sig(s->listeners[i].tls, h);
    for (uint32_t i = 0; i < s->n_clusters; i++)
        h = tls_files_sig(s->clusters[i].tls, h);
    return h;
}

/* Certificates and keys are read when a snapshot is built: a file replaced on disk means a
 * reload (new handshakes use it; established connections keep theirs). Polled rather than
 * watched: the files live anywhere (/etc/certs), and Kubernetes replaces them by swapping a
 * symlink, which inotify on the files would miss. */
/* Compiles the directory and builds a snapshot; on success the table is kept in the registry. */
static mt_snapshot_t *server_load(mt_server_t *srv, char **err)
{
    lua_State *L = srv->L;
    int top = lua_gettop(L);
    *err = NULL;
    if (mt_config_compile(L, srv->opts->config_dir) != 0) {
        int errs = lua_gettop(L);
        print_errors(L, errs);
        size_t n = lua_objlen(L, errs);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, errs, (int)i);
            luaL_addvalue(&b);
            luaL_addchar(&b, '\n');
        }
        luaL_pushresult(&b);
        *err = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "invalid configuration");
        lua_settop(L, top);
        return NULL;
    }
    print_warnings(L, -1);
    mt_snapshot_t *s = mt_snapshot_from_lua(L, -1, srv->generation + 1, err);
    if (s && s->access_log && mt_alog_open(s->access_log, err) != 0) {
        mt_snapshot_unref(s); /* a log file that cannot be opened is a configuration error */
        s = NULL;
    }
    if (s)
        mt_trace_configure(s->tracing);
    if (!s) {
        mt_error("%s",
                 *err ? *err : "out of memory building the snapshot"); /* as compile errors are */
        lua_settop(L, top);
        return NULL;
    }
    if (srv->snap)
        mt_snapshot_carry_outlier_state(s, srv->snap); /* ejections outlive a reload */
    if (srv->snapshot_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, srv->snapshot_ref);
    srv->snapshot_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    srv->generation++;
    srv->cert_sig = snapshot_tls_sig(s); /* rotation: the files as this snapshot read them */
    srv->cert_sig_gen = srv->generation;
    lua_settop(L, top);
    return s;
}

/* ---- reload -------------------------------------------------------------------------------------
 */

/* What a reload changes, at info: listeners and clusters added, removed, changed (by
 * fingerprint), so an operator reads the diff in the log. */
static void log_reload_diff(const mt_snapshot_t *old, const mt_snapshot_t *s)
{
    unsigned changes = 0;
    for (uint32_t i = 0; i < s->n_listeners; i++) {
        const mt_listener_conf_t *l = &s->listeners[i], *o = NULL;
        for (uint32_t k = 0; k < old->n_listeners && !o; k++)
            o = strcmp(old->listeners[k].name, l->name) == 0 ? &old->listeners[k] : NULL;
        if (!o || strcmp(o->fingerprint, l->fingerprint) != 0) {
            mt_info("reload: listener %s %s", l->name, o ? "changed" : "added");
            changes++;
        }
    }
    for (uint32_t k = 0; k < old->n_listeners; k++) {
        if (!snapshot_has_listener(s, old->listeners[k].name)) {
            mt_info("reload: listener %s removed", old->listeners[k].name);
            changes++;
        }
    }
    for (uint32_t i = 0; i < s->n_clusters; i++) {
        const mt_cluster_conf_t *c = &s->clusters[i];
        const mt_cluster_conf_t *o = mt_snapshot_cluster(old, c->name);
        if (!o || strcmp(o->fingerprint, c->fingerprint) != 0) {
            mt_info("reload: cluster %s %s", c->name, o ? "changed" : "added");
            changes++;
        }
    }
    for (uint32_t k = 0; k < old->n_clusters; k++) {
        if (!mt_snapshot_cluster(s, old->clusters[k].name)) {
            mt_info("reload: cluster %s removed", old->clusters[k].name);
            changes++;
        }
    }
    if (!changes)
        mt_info("reload: no listener or cluster changed");
}

/*
 * Builds a new snapshot off the request path and hands it to every worker, which swaps it in
 * between requests. An invalid configuration (or a new listener that cannot bind) changes
 * nothing: the old snapshot keeps serving and the failure is counted and kept for
 * /config_dump. Returns 0 or -1 with a malloc'd message.
 */
/* READY=1 with the generation serving, for the service manager (notify.h). */
static void server_notify_ready(const mt_server_t *srv, const char *how)
{
    char state[160];
    snprintf(state, sizeof state, "READY=1\nSTATUS=serving configuration generation %llu%s",
             (unsigned long long)srv->generation, how);
    mt_notify(state);
}

static int server_reload_run(mt_server_t *srv, const char *why, char **msg);

static int server_reload(mt_server_t *srv, const char *why, char **msg)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char state[96];
    snprintf(state, sizeof state, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    mt_notify(state);
    int rc = server_reload_run(srv, why, msg);
    server_notify_ready(srv, rc == 0 ? "" : " (the last reload was rejected)");
    return rc;
}

static int server_reload_run(mt_server_t *srv, const char *why, char **msg)
{
    char *err = NULL;
    uint64_t t0 = uv_hrtime();
    mt_info("reload (%s): compiling %s", why, srv->opts->config_dir);
    int old_ref = srv->snapshot_ref;
    srv->snapshot_ref = LUA_NOREF; /* server_load must not drop the live table yet */
    mt_snapshot_t *s = server_load(srv, &err);
    if (!s) {
        srv->snapshot_ref = old_ref;
        goto failed;
    }
    s->reload_start_ns = t0;
    double built_ms = (double)(uv_hrtime() - t0) / 1e6;
    size_t n = s->n_listeners;
    int *fds = open_listeners(s, srv->snap, srv->nworkers, &err);
    if (!fds) {
        mt_error("reload (%s): %s", why, err ? err : "cannot listen"); /* says which, and why */
        mt_snapshot_unref(s);
        luaL_unref(srv->L, LUA_REGISTRYINDEX, srv->snapshot_ref);
        srv->snapshot_ref = old_ref;
        srv->generation--;
        goto failed;
    }
    luaL_unref(srv->L, LUA_REGISTRYINDEX, old_ref);
    for (unsigned w = 0; w < srv->nworkers; w++) {
        int *mine = malloc(sizeof(int) * (n + 1));
        memcpy(mine, fds + (size_t)w * n, sizeof(int) * n);
        mt_worker_post(&srv->workers[w], MT_MAIL_SNAPSHOT, mt_snapshot_ref(s), mine);
    }
    free(fds);
    log_reload_diff(srv->snap, s);
    mt_snapshot_unref(srv->snap);
    srv->snap = s;
    free(srv->last_reload_error);
    srv->last_reload_error = NULL;
    mt_stats_global.config_generation = srv->generation;
    mt_stats_global.config_reloads++;
    mt_info("reload (%s): generation %llu is live (%u listeners, %u clusters; compiled and "
            "built in %.1f ms, handed to the workers)",
            why, (unsigned long long)srv->generation, s->n_listeners, s->n_clusters, built_ms);
    if (msg && asprintf(msg, "generation %llu\n", (unsigned long long)srv->generation) < 0)
        *msg = NULL;
    return 0;
failed:
    mt_stats_global.config_reload_failures++;
    mt_error("reload (%s) rejected; generation %llu keeps serving", why,
             (unsigned long long)srv->generation);
    free(srv->last_reload_error);
    srv->last_reload_error = err ? err : strdup("invalid configuration");
    if (msg)
        *msg = strdup(srv->last_reload_error);
    return -1;
}

static int hook_reload(void *ud, char **msg)
{
    mt_server_t *srv = ud;
    if (srv->draining) {
        *msg = strdup("draining: reload refused\n");
        return -1;
    }
    return server_reload(srv, "POST /reload", msg);
}

static void on_cert_poll(uv_timer_t *t)
{
    mt_server_t *srv = t->data;
    if (srv->draining || !srv->snap)
        return;
    uint64_t sig = snapshot_tls_sig(srv->snap);
    if (srv->cert_sig_gen != srv->generation) { /* a new snapshot: its files as they are now */
        srv->cert_sig_gen = srv->generation;
        srv->cert_sig = sig;
        return;
    }
    if (sig == srv->cert_sig)
        return;
    srv->cert_sig = sig; /* a failed reload is not retried until the files change again */
    server_reload(srv, "TLS certificate files changed", NULL);
}

static void on_reload_debounce(uv_timer_t *t)
{
    mt_server_t *srv = t->data;
    if (!srv->draining)
        server_reload(srv, "config directory changed", NULL);
}

static void on_config_dir_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    mt_server_t *srv = h->data;
    /* Only configuration files count: YAML, and the Lua files LuaFilters load with
     * scriptFile (logs or editor swap files in the directory do not); and "..data", which
     * a Kubernetes ConfigMap or Secret volume renames over the old one to publish a new
     * version: its *.yaml entries are symlinks through ..data that never change themselves. */
    if (filename) {
        size_t n = strlen(filename);
        bool config = strcmp(filename, "..data") == 0 ||
                      (n > 5 && strcmp(filename + n - 5, ".yaml") == 0) ||
                      (n > 4 && strcmp(filename + n - 4, ".yml") == 0) ||
                      (n > 4 && strcmp(filename + n - 4, ".lua") == 0);
        if (!config)
            return;
    }
    /* Editors write a file in several steps: wait for the directory to settle. */
    uv_timer_start(&srv->reload_debounce, on_reload_debounce, 300, 0);
}

/* ---- admin hooks --------------------------------------------------------------------------------
 */

/*
 * Why the server is not ready, written into buf (NULL when it is): draining, a worker that
 * has not applied a snapshot yet, or a stuck worker, one whose loop has not ticked for
 * MT_WORKER_STUCK_MS (a filter call running that long, or a bug). Each stuck worker is named.
 */
static const char *server_not_ready(mt_server_t *srv, char *buf, size_t size)
{
    if (srv->draining)
        return "not ready: draining\n";
    for (unsigned i = 0; i < srv->nworkers; i++) {
        if (!__atomic_load_n(&srv->workers[i].ready, __ATOMIC_ACQUIRE))
            return "not ready: a worker has not loaded the configuration yet\n";
    }
    uint64_t now = uv_hrtime() / 1000000u;
    size_t len = 0;
    for (unsigned i = 0; i < srv->nworkers && len < size; i++) {
        uint64_t beat = __atomic_load_n(&srv->workers[i].heartbeat_ms, __ATOMIC_RELAXED);
        if (now <= beat + MT_WORKER_STUCK_MS)
            continue;
        int n = snprintf(buf + len, size - len,
                         "%sworker %u is stuck: its event loop has not run for %llu ms\n",
                         len ? "" : "not ready: ", i, (unsigned long long)(now - beat));
        len += n > 0 ? (size_t)n : 0;
    }
    return len ? buf : NULL;
}

static bool hook_ready(void *ud)
{
    char buf[512];
    return server_not_ready(ud, buf, sizeof buf) == NULL;
}

static char *hook_not_ready_why(void *ud)
{
    char buf[512];
    const char *why = server_not_ready(ud, buf, sizeof buf);
    return why ? strdup(why) : NULL;
}

static char *hook_config_dump(void *ud, size_t *len)
{
    mt_server_t *srv = ud;
    lua_State *L = srv->L;
    int top = lua_gettop(L);
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, (lua_Number)srv->generation);
    lua_setfield(L, -2, "generation");
    if (srv->last_reload_error) {
        lua_pushstring(L, srv->last_reload_error);
        lua_setfield(L, -2, "last_reload_error");
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->snapshot_ref);
    lua_setfield(L, -2, "config");
    if (mt_lua_call_module(L, "meltemi.dump", "json", 1, 1) != 0 || !lua_isstring(L, -1)) {
        mt_error("config_dump: %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_settop(L, top);
        return NULL;
    }
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, s, n + 1);
        *len = n;
    }
    lua_settop(L, top);
    return out;
}

/* ---- /clusters ------------------------------------------------------------------------------ */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* One endpoint of a cluster as every worker sees it. */
typedef struct ep_view {
    char address[64];
    uint16_t port;
    uint32_t workers, healthy, unresolved;
    uint64_t retry_in_ms;
    uint32_t shared, exclusive;
    char last_error[200];
    uint32_t conf_index; /* 1 + its index among the configured endpoints; 0: discovered */
} ep_view_t;

static ep_view_t *ep_view_find(ep_view_t *v, uint32_t *n, uint32_t cap, const char *a, uint16_t p)
{
    for (uint32_t i = 0; i < *n; i++) {
        if (v[i].port == p && strcmp(v[i].address, a) == 0)
            return &v[i];
    }
    if (*n == cap)
        return NULL;
    ep_view_t *e = &v[(*n)++];
    memset(e, 0, sizeof(*e));
    snprintf(e->address, sizeof(e->address), "%s", a);
    e->port = p;
    return e;
}

/* Merges the workers' published status of cluster c; *proxy_json: the first worker's proxy
 * part (malloc'd, or NULL). */
static uint32_t cluster_endpoints(mt_server_t *srv, const mt_cluster_conf_t *c, ep_view_t *v,
                                  uint32_t cap, char **proxy_json)
{
    uint32_t n = 0;
    *proxy_json = NULL;
    for (uint32_t i = 0; i < c->n_endpoints; i++) {
        ep_view_t *e = ep_view_find(v, &n, cap, c->endpoints[i].address, c->endpoints[i].port);
        if (e && !e->conf_index)
            e->conf_index = i + 1;
    }
    for (unsigned w = 0; w < srv->nworkers; w++) {
        mt_worker_t *wk = &srv->workers[w];
        pthread_mutex_lock(&wk->status_mu);
        const mt_wstatus_t *st = wk->status;
        for (uint32_t k = 0; st && k < st->n_eps; k++) {
            const mt_wstatus_ep_t *se = &st->eps[k];
            if (strcmp(st->clusters[se->cluster].name, c->name) != 0)
                continue;
            ep_view_t *e = ep_view_find(v, &n, cap, se->address, se->port);
            if (!e)
                continue;
            e->workers++;
            e->healthy += se->healthy;
            e->unresolved += !se->resolved;
            e->retry_in_ms = MT_MAX(e->retry_in_ms, se->retry_in_ms);
            e->shared += se->shared;
            e->exclusive += se->exclusive;
            if (se->last_error[0])
                snprintf(e->last_error, sizeof(e->last_error), "%s", se->last_error);
        }
        for (uint32_t k = 0; st && !*proxy_json && k < st->n_clusters; k++) {
            if (st->clusters[k].proxy_json && strcmp(st->clusters[k].name, c->name) == 0)
                *proxy_json = strdup(st->clusters[k].proxy_json);
        }
        pthread_mutex_unlock(&wk->status_mu);
    }
    return n;
}

static bool ep_ejected(mt_server_t *srv, const mt_cluster_conf_t *c, const ep_view_t *e)
{
    return c->outlier.enabled && e->conf_index &&
           mt_outlier_ejected(&c->outlier, e->conf_index - 1, uv_now(srv->loop));
}

static unsigned ep_ejections(const mt_cluster_conf_t *c, const ep_view_t *e)
{
    return c->outlier.enabled && e->conf_index
               ? (unsigned)atomic_load(&c->outlier.eps[e->conf_index - 1].ejections)
               : 0;
}

static const char *ep_health(const ep_view_t *e)
{
    if (e->unresolved)
        return "unresolved";
    if (e->workers == 0)
        return "unknown"; /* no worker has published yet */
    return e->healthy == e->workers ? "healthy" : "unhealthy";
}

static void clusters_one(mt_server_t *srv, FILE *f, const mt_cluster_conf_t *c, bool json,
                         bool first)
{
    ep_view_t v[256];
    char *proxy = NULL;
    uint32_t n = cluster_endpoints(srv, c, v, MT_ARRAY_LEN(v), &proxy);
    static const struct {
        const char *name;
        unsigned slot;
    } st[] = {{"upstream_cx_active", MT_ST_UPSTREAM_CX_ACTIVE},
              {"upstream_cx_total", MT_ST_UPSTREAM_CX_TOTAL},
              {"upstream_cx_connect_fail", MT_ST_UPSTREAM_CX_CONNECT_FAIL},
              {"upstream_cx_leased", MT_ST_UPSTREAM_CX_LEASED},
              {"upstream_cx_idle", MT_ST_UPSTREAM_CX_IDLE},
              {"upstream_rq_pending_active", MT_ST_UPSTREAM_RQ_PENDING},
              {"upstream_rq_total", MT_ST_UPSTREAM_RQ_TOTAL},
              {"upstream_rq_errors", MT_ST_UPSTREAM_RQ_ERRORS},
              {"upstream_rq_timeout", MT_ST_UPSTREAM_RQ_TIMEOUT}};
    const char *proto = mt_proxy_for(c->protocol)->name;
    if (!json) {
        fprintf(f, "%s::protocol::%s\n", c->name, proto);
        for (size_t k = 0; k < MT_ARRAY_LEN(st); k++)
            fprintf(f, "%s::%s::%lld\n", c->name, st[k].name,
                    (long long)mt_stats_sum(c->stats, st[k].slot));
        for (uint32_t i = 0; i < n; i++) {
            const ep_view_t *e = &v[i];
            fprintf(f, "%s::%s:%u::health::%s\n", c->name, e->address, e->port, ep_health(e));
            if (c->outlier.enabled && e->conf_index) {
                fprintf(f, "%s::%s:%u::outlier_ejected::%s\n", c->name, e->address, e->port,
                        ep_ejected(srv, c, e) ? "true" : "false");
                fprintf(f, "%s::%s:%u::outlier_ejections::%u\n", c->name, e->address, e->port,
                        ep_ejections(c, e));
            }
            fprintf(f, "%s::%s:%u::cx_shared::%u\n", c->name, e->address, e->port, e->shared);
            fprintf(f, "%s::%s:%u::cx_exclusive::%u\n", c->name, e->address, e->port, e->exclusive);
            if (e->last_error[0])
                fprintf(f, "%s::%s:%u::last_error::%s\n", c->name, e->address, e->port,
                        e->last_error);
        }
        if (proxy)
            fprintf(f, "%s::%s::%s\n", c->name, proto, proxy);
        free(proxy);
        return;
    }
    fprintf(f, "%s{\"name\":", first ? "" : ",");
    json_str(f, c->name);
    fprintf(f, ",\"protocol\":\"%s\",\"service\":", proto);
    json_str(f, c->service ? c->service : "");
    fputs(",\"stats\":{", f);
    for (size_t k = 0; k < MT_ARRAY_LEN(st); k++)
        fprintf(f, "%s\"%s\":%lld", k ? "," : "", st[k].name,
                (long long)mt_stats_sum(c->stats, st[k].slot));
    fputs("},\"endpoints\":[", f);
    for (uint32_t i = 0; i < n; i++) {
        const ep_view_t *e = &v[i];
        fprintf(f, "%s{\"address\":", i ? "," : "");
        json_str(f, e->address);
        fprintf(f,
                ",\"port\":%u,\"health\":\"%s\",\"healthy_workers\":%u,\"workers\":%u,"
                "\"retry_in_ms\":%llu,\"connections\":{\"shared\":%u,\"exclusive\":%u},"
                "\"last_error\":",
                e->port, ep_health(e), e->healthy, e->workers, (unsigned long long)e->retry_in_ms,
                e->shared, e->exclusive);
        json_str(f, e->last_error);
        if (c->outlier.enabled && e->conf_index)
            fprintf(f, ",\"outlier\":{\"ejected\":%s,\"ejections\":%u}",
                    ep_ejected(srv, c, e) ? "true" : "false", ep_ejections(c, e));
        fputc('}', f);
    }
    fprintf(f, "],\"%s\":%s}", proto, proxy ? proxy : "null");
    free(proxy);
}

static char *hook_clusters(void *ud, bool json, size_t *len)
{
    mt_server_t *srv = ud;
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    if (!f)
        return NULL;
    if (json)
        fputs("{\"clusters\":[", f);
    for (uint32_t i = 0; i < srv->snap->n_clusters; i++)
        clusters_one(srv, f, &srv->snap->clusters[i], json, i == 0);
    if (json)
        fputs("]}\n", f);
    fclose(f);
    *len = n;
    return out;
}

/* ---- signals and drain -------------------------------------------------------------------------
 */

static void server_finish_if_done(mt_server_t *srv)
{
    for (unsigned i = 0; i < srv->nworkers; i++) {
        if (!__atomic_load_n(&srv->workers[i].exited, __ATOMIC_ACQUIRE))
            return;
    }
    uv_stop(srv->loop);
}

/* The service manager hears READY=1 when /ready would say so: every worker has applied the
 * first snapshot. */
static void on_ready_poll(uv_timer_t *t)
{
    mt_server_t *srv = t->data;
    char buf[512];
    if (srv->draining) {
        uv_timer_stop(t);
    } else if (!server_not_ready(srv, buf, sizeof buf)) {
        uv_timer_stop(t);
        server_notify_ready(srv, "");
    }
}

static void on_drain_poll(uv_timer_t *t)
{
    server_finish_if_done(t->data);
}

static void on_drain_timeout(uv_timer_t *t)
{
    mt_server_t *srv = t->data;
    mt_warn("drain timeout (%u ms) reached: closing the remaining connections",
            srv->opts->drain_timeout_ms);
    srv->forced = true;
    for (unsigned i = 0; i < srv->nworkers; i++)
        mt_worker_post(&srv->workers[i], MT_MAIL_STOP, NULL, NULL);
}

static void server_drain(mt_server_t *srv)
{
    if (srv->draining)
        return;
    srv->draining = true;
    mt_notify("STOPPING=1\nSTATUS=draining");
    uv_fs_event_stop(&srv->watch);
    uv_timer_stop(&srv->cert_poll);
    mt_info("draining: no new connections; waiting up to %u ms for requests in flight",
            srv->opts->drain_timeout_ms);
    for (unsigned i = 0; i < srv->nworkers; i++)
        mt_worker_post(&srv->workers[i], MT_MAIL_DRAIN, NULL, NULL);
    uv_timer_start(&srv->drain_timer, on_drain_timeout, srv->opts->drain_timeout_ms, 0);
    uv_timer_start(&srv->drain_poll, on_drain_poll, 10, 10);
}

static void on_signal(uv_signal_t *h, int signum)
{
    mt_server_t *srv = h->data;
    if (signum == SIGHUP) {
        if (!srv->draining)
            server_reload(srv, "SIGHUP", NULL);
        return;
    }
    if (signum == SIGUSR1) { /* logrotate moved the access log away */
        mt_alog_reopen();
        return;
    }
    server_drain(srv);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* ---- run
 * ----------------------------------------------------------------------------------------- */

/* The Lua state and the first snapshot (with its listening sockets, one per worker and
 * listener): what must work before anything starts. Returns 0, or an exit code. */
static int server_load_first(mt_server_t *srv, int **fds)
{
    srv->L = mt_lua_new();
    if (!srv->L) {
        mt_error("out of memory creating the Lua state");
        return MT_EXIT_INVALID_CONFIG;
    }
    char *err = NULL;
    srv->snap = server_load(srv, &err);
    if (!srv->snap) {
        if (err && !strchr(err, ':'))
            mt_error("%s", err);
        mt_error("invalid configuration in %s: not starting", srv->opts->config_dir);
        free(err);
        lua_close(srv->L);
        return MT_EXIT_INVALID_CONFIG;
    }
    mt_stats_global.config_generation = srv->generation;
    *fds = open_listeners(srv->snap, NULL, srv->nworkers, &err);
    if (!*fds) {
        mt_error("%s", err ? err : "out of memory");
        free(err);
        mt_snapshot_unref(srv->snap);
        lua_close(srv->L);
        return MT_EXIT_INVALID_CONFIG;
    }
    return 0;
}

/* The main loop's handles: drain timers, the config directory watch, signals. */
static void server_init_handles(mt_server_t *srv)
{
    const mt_server_options_t *opts = srv->opts;
    srv->loop = uv_default_loop();
    uv_timer_init(srv->loop, &srv->drain_timer);
    uv_timer_init(srv->loop, &srv->drain_poll);
    srv->drain_timer.data = srv->drain_poll.data = srv;
    uv_timer_init(srv->loop, &srv->ready_poll);
    srv->ready_poll.data = srv;
    uv_timer_init(srv->loop, &srv->reload_debounce);
    srv->reload_debounce.data = srv;
    uv_timer_init(srv->loop, &srv->cert_poll);
    srv->cert_poll.data = srv;
    uv_timer_start(&srv->cert_poll, on_cert_poll, 1000, 1000);
    uv_unref((uv_handle_t *)&srv->cert_poll);
    uv_fs_event_init(srv->loop, &srv->watch);
    srv->watch.data = srv;
    if (uv_fs_event_start(&srv->watch, on_config_dir_event, opts->config_dir, 0) != 0)
        mt_warn("cannot watch %s for changes: reload with SIGHUP or POST /reload",
                opts->config_dir);
    uv_signal_init(srv->loop, &srv->sigterm);
    uv_signal_init(srv->loop, &srv->sigint);
    uv_signal_init(srv->loop, &srv->sighup);
    srv->sigterm.data = srv->sigint.data = srv->sighup.data = srv;
    uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    uv_signal_start(&srv->sigint, on_signal, SIGINT);
    uv_signal_start(&srv->sighup, on_signal, SIGHUP);
    uv_signal_init(srv->loop, &srv->sigusr1);
    srv->sigusr1.data = srv;
    uv_signal_start(&srv->sigusr1, on_signal, SIGUSR1);
}

/* Starts every worker with its share of the listening sockets in fds. */
static int server_start_workers(mt_server_t *srv, const int *fds)
{
    srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
    if (!srv->workers)
        return -1;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        if (mt_worker_start(&srv->workers[i], i) != 0) {
            mt_error("cannot start worker %u", i);
            return -1;
        }
        size_t n = srv->snap->n_listeners;
        int *mine = malloc(sizeof(int) * (n + 1));
        if (!mine)
            return -1;
        memcpy(mine, fds + (size_t)i * n, sizeof(int) * n);
        mt_worker_post(&srv->workers[i], MT_MAIL_SNAPSHOT, mt_snapshot_ref(srv->snap), mine);
    }
    return 0;
}

/* The admin server, unless it is off. Runs before any worker starts: a port that cannot be
 * bound ends the start with one error naming it (and no "started" line). Returns 0 or -1. */
static int server_start_admin(mt_server_t *srv)
{
    const mt_server_options_t *opts = srv->opts;
    if (strcmp(opts->admin_addr, "off") == 0)
        return 0;
    char *err = NULL;
    mt_admin_hooks_t hooks = {.ud = srv,
                              .ready = hook_ready,
                              .not_ready_why = hook_not_ready_why,
                              .config_dump = hook_config_dump,
                              .clusters = hook_clusters,
                              .reload = hook_reload};
    srv->admin = mt_admin_start(srv->loop, opts->admin_addr, &hooks, &err);
    if (srv->admin && opts->admin_token_file &&
        mt_admin_set_token_file(srv->admin, opts->admin_token_file, &err) != 0) {
        mt_admin_stop(srv->admin);
        srv->admin = NULL;
    }
    if (!srv->admin) {
        mt_error("%s: not starting", err ? err : "admin: cannot start");
        free(err);
        return -1;
    }
    return 0;
}

/* The start failed before any worker ran: close what server_load_first and
 * server_init_handles opened. */
static void server_abort_start(mt_server_t *srv, int *fds)
{
    size_t n = (size_t)srv->nworkers * srv->snap->n_listeners;
    for (size_t i = 0; i < n; i++) {
        if (fds[i] >= 0) /* a capture-only listener has none (MT_LISTENER_FD_VIRTUAL) */
            close(fds[i]);
    }
    free(fds);
    uv_walk(srv->loop, close_walk, NULL);
    uv_run(srv->loop, UV_RUN_DEFAULT);
    mt_snapshot_unref(srv->snap);
    lua_close(srv->L);
}

static void server_log_started(const mt_server_t *srv)
{
    for (uint32_t i = 0; i < srv->snap->n_listeners; i++) {
        const mt_listener_conf_t *l = &srv->snap->listeners[i];
        mt_info("%s %s:%u (%s, service %s)", mt_capture_enabled() ? "capturing" : "listening on",
                l->address, l->port, mt_proxy_for(l->protocol)->name,
                l->service ? l->service : "-");
    }
    mt_info("meltemi %s started: %u workers, config generation %llu%s%s", MELTEMI_VERSION,
            srv->nworkers, (unsigned long long)srv->generation, srv->admin ? ", admin on " : "",
            srv->admin ? srv->opts->admin_addr : "");
}

int mt_server_run(const mt_server_options_t *opts)
{
    mt_server_t srv_storage, *srv = &srv_storage;
    memset(srv, 0, sizeof(*srv));
    srv->opts = opts;
    srv->snapshot_ref = LUA_NOREF;
    srv->nworkers = opts->workers;
    if (srv->nworkers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        srv->nworkers = n > 0 ? (unsigned)MT_MIN(n, MT_MAX_WORKERS) : 1;
    }
    signal(SIGPIPE, SIG_IGN);
    mt_stats_init(srv->nworkers);
    char *cerr = NULL;
    if (mt_capture_setup(opts->capture_outbound, opts->capture_inbound, srv->nworkers, &cerr) !=
        0) {
        mt_error("%s", cerr ? cerr : "out of memory");
        free(cerr);
        return MT_EXIT_INVALID_CONFIG;
    }
    if (opts->capture_outbound)
        mt_info("outbound capture on %s", opts->capture_outbound);
    if (opts->capture_inbound)
        mt_info("inbound capture on %s", opts->capture_inbound);
    int *fds = NULL;
    int rc = server_load_first(srv, &fds);
    if (rc != 0) {
        mt_capture_teardown();
        return rc;
    }
    server_init_handles(srv);
    if (server_start_admin(srv) != 0) {
        server_abort_start(srv, fds);
        mt_trace_shutdown();
        mt_capture_teardown();
        return MT_EXIT_INVALID_CONFIG;
    }
    if (server_start_workers(srv, fds) != 0)
        return MT_EXIT_INVALID_CONFIG; /* as before: a worker that cannot start ends the run */
    free(fds);
    server_log_started(srv);
    uv_timer_start(&srv->ready_poll, on_ready_poll, 0, 5);

    uv_run(srv->loop, UV_RUN_DEFAULT);

    for (unsigned i = 0; i < srv->nworkers; i++)
        mt_worker_join(&srv->workers[i]);
    if (srv->admin)
        mt_admin_stop(srv->admin);
    uv_walk(srv->loop, close_walk, NULL);
    uv_run(srv->loop, UV_RUN_DEFAULT);
    free(srv->workers);
    mt_snapshot_unref(srv->snap);
    free(srv->last_reload_error);
    lua_close(srv->L);
    mt_trace_shutdown();
    mt_capture_teardown();
    mt_info("stopped");
    return MT_EXIT_OK;
}
