/*
 * meta_methods.h - MetaProtocol per-method request counts with a bound: method names come
 * from clients, so each listener counts at most MT_META_METHODS_MAX distinct methods by name
 * (the first ones seen, process-wide) and every other method as "other".
 *
 * A listener's table is found by the listener's name when a snapshot is read (main thread)
 * and lives for the process, as stats blocks do, so counts survive reloads. Workers look
 * methods up without a lock (an append-only open-addressing table whose slots are published
 * with a release store); adding a name takes the table's mutex, once per name and process.
 * The counters are stats detail blocks (meltemi_meta_method_total and _errors_total, labels
 * listener and method), written on each worker's own shard.
 */
#ifndef MELTEMI_META_METHODS_H
#define MELTEMI_META_METHODS_H

#include "runtime/core/stats.h"

#include <stddef.h>
#include <stdint.h>

#define MT_META_METHODS_MAX 32 /* named methods per listener; the rest are "other" */

typedef struct mt_meta_methods mt_meta_methods_t;

/* The table of the listener named `listener` (created on first use; never freed). NULL on
 * out of memory. Main thread. */
mt_meta_methods_t *mt_meta_methods_for(const char *listener);

/* The block that counts requests to method `iface`.`method` (iface may be empty: the
 * method alone) on this table: its own while fewer than MT_META_METHODS_MAX names are
 * taken, else the table's "other" block. Any worker. NULL only on out of memory. */
mt_stats_block_t *mt_meta_methods_block(mt_meta_methods_t *t, const char *iface, size_t iface_len,
                                        const char *method, size_t method_len);

/* One name's answer kept by its caller (a session: clients mostly call one method again and
 * again): mt_meta_methods_block_cached compares the name with it before hashing and probing.
 * Zero it to start; it stays valid as long as its table (tables and entries are never freed). */
typedef struct mt_meta_methods_cache {
    const mt_meta_methods_t *table;
    const struct methods_entry *entry; /* NULL: nothing kept */
} mt_meta_methods_cache_t;

/* mt_meta_methods_block, first asking cache (and keeping the answer there when it is a name
 * the table had already taken: not "other", not the call that adds it). Any worker; cache is
 * the caller's alone. */
mt_stats_block_t *mt_meta_methods_block_cached(mt_meta_methods_t *t, mt_meta_methods_cache_t *cache,
                                               const char *iface, size_t iface_len,
                                               const char *method, size_t method_len);

/* Names taken so far (tests). */
uint32_t mt_meta_methods_count(const mt_meta_methods_t *t);

#endif
