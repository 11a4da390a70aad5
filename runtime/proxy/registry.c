/*
 * registry.c - the one list of proxies. Adding a protocol means a folder under runtime/proxy/
 * with an mt_proxy_ops_t in it, and a line here.
 */
#include "runtime/core/proxy.h"

extern const mt_proxy_ops_t mt_proxy_tcp;
extern const mt_proxy_ops_t mt_proxy_redis;
extern const mt_proxy_ops_t mt_proxy_meta;
extern const mt_proxy_ops_t mt_proxy_capture; /* the capture ports: worker hooks only */
extern const mt_proxy_ops_t mt_proxy_sni;     /* a Gateway port's front, routing by SNI */

const mt_proxy_ops_t *const mt_proxies[] = {&mt_proxy_tcp,     &mt_proxy_redis, &mt_proxy_meta,
                                            &mt_proxy_capture, &mt_proxy_sni,   NULL};

const mt_proxy_ops_t *mt_proxy_for(mt_protocol_t p)
{
    for (const mt_proxy_ops_t *const *o = mt_proxies; *o; o++) {
        if ((*o)->protocol == p)
            return *o;
    }
    return &mt_proxy_tcp;
}
