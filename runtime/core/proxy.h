/*
 * proxy.h - the proxy registry: what the worker asks of a protocol. Each proxy under
 * runtime/proxy/<name>/ fills one mt_proxy_ops_t; runtime/proxy/registry.c lists them. The
 * worker walks that list and never names a protocol, so adding one touches the list and the
 * protocol's own folder only.
 *
 * Worker hooks run on the worker's thread, snapshot hooks on the main thread. Hooks a proxy
 * does not need are NULL.
 */
#ifndef MELTEMI_CORE_PROXY_H
#define MELTEMI_CORE_PROXY_H

#include "runtime/core/protocol.h"

#include <lua.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <uv.h>

/* Only pointers to these pass through the registry (worker.h and snapshot.h define them). */
typedef struct mt_worker mt_worker_t;
typedef struct mt_wlistener mt_wlistener_t;
typedef struct mt_wcluster mt_wcluster_t;
typedef struct mt_snapshot mt_snapshot_t;
typedef struct mt_cluster_conf mt_cluster_conf_t;
typedef struct mt_listener_conf mt_listener_conf_t;

typedef struct mt_proxy_ops {
    const char *name;
    mt_protocol_t protocol; /* the listener/cluster kind it serves */
    /* The worker is created (its loop and Lua state exist; its thread does not run yet):
     * set up w->proxy[protocol]. Returns 0, or -1 when the worker cannot run. */
    int (*worker_start)(mt_worker_t *w);
    /* A connection arrived on one of this protocol's listeners: accept it (or close it). */
    void (*accept)(mt_wlistener_t *l, uv_stream_t *server);
    /* A new snapshot is live in w->snap (listeners and clusters swapped). */
    void (*snapshot_applied)(mt_worker_t *w);
    /* The worker's periodic tick (MT_WORKER_TICK_MS): timeouts, retired connections. */
    void (*tick)(mt_worker_t *w, uint64_t now_ms);
    /* True while the proxy holds upstream work a drain must wait for (no session left). When
     * it turns false the proxy calls mt_worker_maybe_finish(). */
    bool (*busy)(mt_worker_t *w);
    /* The loop is stopping: fail what is in flight and close the proxy's handles. */
    void (*worker_stop)(mt_worker_t *w);
    /* The loop is closed: free the proxy's per-worker memory. */
    void (*worker_free)(mt_worker_t *w);
    /* A worker cluster of this protocol is freed: release what the proxy hung on it. */
    void (*cluster_free)(mt_wcluster_t *c);
    /* The admin's /clusters: the proxy's own state of c as one JSON value into f (worker
     * thread, every MT_WORKER_STATUS_MS). May be NULL; may write nothing (then null). */
    void (*cluster_status)(mt_wcluster_t *c, FILE *f);

    /* Snapshot hooks (main thread, load and reload): read the proxy's own part of a cluster
     * or listener table at absolute index t into c->proto / l->proto (0, or -1 and a malloc'd
     * *err), and free it again. */
    int (*read_cluster)(lua_State *L, int t, mt_cluster_conf_t *c, char **err);
    int (*read_listener)(lua_State *L, int t, mt_snapshot_t *s, mt_listener_conf_t *l, char **err);
    void (*free_cluster)(mt_cluster_conf_t *c);
    void (*free_listener)(mt_listener_conf_t *l);
} mt_proxy_ops_t;

/* The registry (runtime/proxy/registry.c), NULL-terminated. */
extern const mt_proxy_ops_t *const mt_proxies[];

/* The proxy that serves protocol p (the TCP proxy when none claims it). */
const mt_proxy_ops_t *mt_proxy_for(mt_protocol_t p);

#endif
