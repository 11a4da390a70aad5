/*
 * redis_snapshot.h - reading and freeing the Redis part of a snapshot (redis_conf.h); the
 * registry entry mt_proxy_redis hands these to snapshot.c.
 */
#ifndef MELTEMI_REDIS_SNAPSHOT_H
#define MELTEMI_REDIS_SNAPSHOT_H

#include "runtime/proxy/redis/redis_conf.h"

#include <lua.h>

int mt_redis_read_cluster(lua_State *L, int t, mt_cluster_conf_t *c, char **err);
int mt_redis_read_listener(lua_State *L, int t, mt_snapshot_t *s, mt_listener_conf_t *l,
                           char **err);
void mt_redis_free_cluster(mt_cluster_conf_t *c);
void mt_redis_free_listener(mt_listener_conf_t *l);

#endif
