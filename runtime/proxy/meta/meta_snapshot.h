/*
 * meta_snapshot.h - reading and freeing the MetaProtocol part of a snapshot (meta_conf.h);
 * the registry entry mt_proxy_meta hands these to snapshot.c.
 */
#ifndef MELTEMI_META_SNAPSHOT_H
#define MELTEMI_META_SNAPSHOT_H

#include "runtime/proxy/meta/meta_conf.h"

#include <lua.h>

int mt_meta_read_cluster(lua_State *L, int ct, mt_cluster_conf_t *c, char **err);
int mt_meta_read_listener(lua_State *L, int t, mt_snapshot_t *s, mt_listener_conf_t *l, char **err);
void mt_meta_free_cluster(mt_cluster_conf_t *c);
void mt_meta_free_listener(mt_listener_conf_t *l);
/* Istio's response_code values for a codec's listeners (static or made once). */
const mt_istio_codes_t *mt_meta_istio_codes(const mt_codec_t *codec);
extern const mt_istio_codes_t mt_meta_dubbo_codes;
extern const mt_istio_codes_t mt_meta_thrift_codes;

#endif
