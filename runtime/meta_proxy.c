/*
 * meta_proxy.c - MetaProtocol listeners (Dubbo, Thrift, codecs by name).
 *
 * Until the codec-aware data path lands, a MetaProtocol port is relayed as plain TCP, which
 * is what a port of unknown protocol gets too: traffic flows, without L7 routing.
 */
#include "runtime/worker.h"

void mt_meta_accept(mt_wlistener_t *l, uv_stream_t *server)
{
    mt_tcp_accept(l, server);
}
