/*
 * sni.c - the front of a Gateway port whose TLS servers lead to different services: routing
 * by SNI. Not a protocol: the port's bound listener (protocol "sni") only runs the TLS
 * handshake on the session shell; the server's certificate and the route are chosen by the
 * client's SNI during the handshake (core/tls.c cert_for_sni: a name that matches no server,
 * or none at all, is refused there, logged and counted as a handshake failure). Once the
 * handshake is done and what it wrote has left, the client — socket, TLS state and whatever it
 * sent since — is handed to the listener of its server (mt_session_hand_off), an unbound one
 * of the snapshot, whose own proxy (Redis, MetaProtocol, plain TCP...) accepts it as if it
 * had connected there. The front session is then closed without a word to the client.
 */
#include "runtime/core/log.h"
#include "runtime/core/proxy.h"
#include "runtime/core/session.h"
#include "runtime/core/tls.h"
#include "runtime/core/worker.h"

#include <stdlib.h>

/* The client handshaken, its route known: handed over, or closed with the reason. */
static void sni_hand_off(mt_session_t *s)
{
    const char *name = mt_tls_route_listener(s->tls);
    mt_wlistener_t *l = name ? mt_worker_find_listener(s->w, name) : NULL;
    if (!l || l->closing) {
        char peer[INET6_ADDRSTRLEN + 8];
        mt_warn("listener %s: closing %s: its server's listener %s is gone", s->conf->name,
                mt_session_peer(s, peer, sizeof(peer)), name ? name : "(none)");
        mt_session_close(s);
        return;
    }
    mt_session_hand_off(s, l);
}

/* The handshake's last records are on their way (TLS 1.3's session tickets): the socket moves
 * once they are written, as writes in flight belong to this handle. */
static void sni_written(mt_outq_t *q, int status)
{
    mt_session_t *s = MT_CONTAINER_OF(q, mt_session_t, out);
    if (s->closing)
        return;
    if (status < 0) {
        mt_session_close(s);
        return;
    }
    if (mt_outq_pending(&s->out) == 0)
        sni_hand_off(s);
}

static bool sni_on_handshake(mt_session_t *s)
{
    mt_session_pause(s);
    s->out.on_done = sni_written;
    if (mt_outq_pending(&s->out) == 0)
        sni_hand_off(s);
    return true;
}

/* Never called with data (the shell stops at the handshake); the client is not read here. */
static void sni_on_data(mt_session_t *s)
{
    if (s->rbuf)
        s->rbuf->pos = s->rbuf->last;
}

static const mt_session_ops_t sni_sess_ops = {
    .on_data = sni_on_data,
    .on_handshake = sni_on_handshake,
};

static void sni_accept(mt_wlistener_t *l, uv_stream_t *server)
{
    mt_session_t *s = calloc(1, sizeof(*s));
    if (!s)
        return;
    if (mt_session_accept(s, l, server, &sni_sess_ops) != 0)
        return;
    if (!s->tls) { /* the compiler gives this listener tls; a snapshot without is a mistake */
        mt_warn("listener %s: routing by SNI without TLS; closing the client", l->conf->name);
        mt_session_close(s);
        return;
    }
    mt_session_resume(s);
}

const mt_proxy_ops_t mt_proxy_sni = {
    .name = "sni",
    .protocol = MT_PROTO_SNI,
    .accept = sni_accept,
};
