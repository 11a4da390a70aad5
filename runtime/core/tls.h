/*
 * tls.h - the TLS transport of the session and upstream shells (OpenSSL 3, memory BIOs).
 *
 * Two objects:
 *   - mt_tls_conf_t: one side's settings (a listener's or a cluster's), read by the main
 *     thread at snapshot time: certificate chain, key and roots parsed once from PEM (files
 *     or a Secret), peer SANs to accept, SNI, ALPN. Each worker builds its own SSL_CTX from
 *     it the first time it needs one (no file I/O on a worker, no SSL_CTX shared between
 *     threads); the snapshot frees them.
 *   - mt_tls_t: one connection's SSL with two memory BIOs. The shell reads the socket into a
 *     per-thread scratch buffer, feeds it in (mt_tls_feed) and takes plaintext out
 *     (mt_tls_read); plaintext queued on the connection's output queue is sealed into the
 *     TLS object's own ciphertext queue (`raw`, which writes to the socket), so the proxies
 *     keep queueing slices on s->out / u->out as before and never see TLS.
 *
 * Why memory BIOs rather than a socket BIO: the shells read and write through libuv streams
 * (uv_read_start, one writev per flush pass); a socket BIO would need its own readiness
 * watcher on the same fd, which libuv does not allow beside a uv_tcp_t. With memory BIOs a
 * handshake is only ever bytes in, bytes out: it never blocks the worker.
 */
#ifndef MELTEMI_CORE_TLS_H
#define MELTEMI_CORE_TLS_H

#include "runtime/core/common.h"
#include "runtime/core/outq.h"

#include <lua.h>

#define MT_TLS_MAX_WORKERS 64 /* per-worker SSL_CTX slots (the CLI caps --workers lower) */

typedef enum mt_tls_mode {
    MT_TLS_DISABLE = 0,
    MT_TLS_SIMPLE,       /* server: our certificate; client: verify the server's */
    MT_TLS_MUTUAL,       /* both present certificates, both verified */
    MT_TLS_ISTIO_MUTUAL, /* MUTUAL with the workload's Istio files and SPIFFE identities */
} mt_tls_mode_t;

/* One certificate a listener can present, chosen by SNI (server_names, "*.x" wildcards) or
 * the default (the first). */
typedef struct mt_tls_cert {
    char **server_names;
    uint32_t n_server_names;
    void *x509;  /* X509 * */
    void *chain; /* STACK_OF(X509) * (may be NULL) */
    void *pkey;  /* EVP_PKEY * */
} mt_tls_cert_t;

/* A Gateway port whose TLS servers lead to different services (runtime/proxy/sni): the
 * listener a client whose SNI matches server_names is handed to. */
typedef struct mt_tls_route {
    char **server_names;
    uint32_t n_server_names;
    char *listener; /* its name in the snapshot */
} mt_tls_route_t;

typedef struct mt_tls_conf {
    int refs; /* atomic: the snapshot's, plus one per connection (a reload may free the
                 snapshot while a connection still handshakes or reports its policy) */
    mt_tls_mode_t mode;
    bool server;               /* a listener's (accept) or a cluster's (connect) */
    bool permissive;           /* server: plain text is served too (PeerAuthentication) */
    bool insecure_skip_verify; /* client: no verification of the server at all */
    char *what;                /* "listener X" / "cluster Y", for logs */
    mt_tls_cert_t *certs;      /* ours; a client has at most one */
    uint32_t n_certs;
    void *roots; /* STACK_OF(X509) *: peer roots (NULL: the system's, client only) */
    void *crls;  /* STACK_OF(X509_CRL) *: caCrl's lists (NULL: no revocation check) */
    char *sni;   /* client: server name sent */
    char **sans; /* accepted peer SANs (DNS, URI, IP); none: any the roots sign */
    uint32_t n_sans;
    /* server: Istio's verifyCertificateSpki / verifyCertificateHash, SHA-256 digests of the
     * client certificate's SubjectPublicKeyInfo / DER; when either list is set, a verified
     * client certificate must match one entry of either (Envoy's rule). */
    unsigned char (*pin_spki)[32];
    uint32_t n_pin_spki;
    unsigned char (*pin_cert)[32];
    uint32_t n_pin_cert;
    unsigned char *alpn; /* wire format (length-prefixed names), or NULL */
    size_t alpn_len;
    /* server: routing by SNI; when set, a ClientHello whose SNI matches no route (or that
     * has none) is refused during the handshake (Envoy's "no matching filter chain"). */
    mt_tls_route_t *routes;
    uint32_t n_routes;
    char **files; /* every file it was read from (rotation: the server watches them) */
    uint32_t n_files;
    void *ctx[MT_TLS_MAX_WORKERS]; /* SSL_CTX * per worker, built on first use */
} mt_tls_conf_t;

typedef struct mt_tls {
    void *ssl; /* SSL * */
    void *rbio, *wbio;
    const mt_tls_conf_t *conf;
    mt_outq_t raw;       /* ciphertext for the socket (raw.stream is the socket) */
    mt_outq_t *plain;    /* the connection's queue sealed into raw */
    void **session_slot; /* client: where new sessions are kept for resumption */
    char *principal;     /* the peer's SPIFFE identity without "spiffe://", or NULL */
    int32_t route;       /* server: index into conf->routes the client's SNI chose; -1 none */
    bool handshake_done;
    bool reason_set;    /* a callback of ours wrote error (tls_set_error keeps it) */
    bool peer_verified; /* the peer presented a certificate that was verified */
    bool resumed;       /* the handshake resumed a session */
    char error[256];    /* why the handshake or a read failed */
} mt_tls_t;

/*
 * Reads t (absolute stack index) = the snapshot's `tls` table of a listener (server) or a
 * cluster (client) into a new conf: files read and PEM parsed now, one SSL_CTX built to
 * check the whole (a key that does not match its certificate fails here, not at the first
 * handshake). NULL with a malloc'd *err on bad input; NULL without *err when the table is
 * absent or its mode is DISABLE.
 */
mt_tls_conf_t *mt_tls_conf_from_lua(lua_State *L, int t, bool server, const char *what, char **err);
/* Drops a reference (the snapshot's, or a connection's); the last one frees c. */
void mt_tls_conf_free(mt_tls_conf_t *c);

/*
 * A connection of conf on worker wid. The caller sets raw.stream (the socket) once it has
 * one. plain is the connection's plaintext queue: its flushes seal into raw (plain->seal),
 * and raw's write completions are reported as plain's (plain->on_done). Client: session_slot
 * keeps the session for the next connection to the same endpoint. NULL with err on failure.
 */
mt_tls_t *mt_tls_new(mt_tls_conf_t *conf, unsigned wid, mt_outq_t *plain, mt_buf_pool_t *pool,
                     void **session_slot, char *err, size_t errlen);
/* Frees t (after the socket's handle is closed: raw's write callbacks have run) and drops its
 * reference on its conf. */
void mt_tls_free(mt_tls_t *t);

/* Moves t onto another connection's plaintext queue and socket (runtime/proxy/sni hands a
 * handshaken client to the listener its SNI chose): plain's flushes seal into raw from now
 * on. raw must have nothing in flight (its writes were on the old socket). */
void mt_tls_adopt(mt_tls_t *t, mt_outq_t *plain, uv_stream_t *stream);
/* The listener the client's SNI chose (conf->routes), or NULL. */
const char *mt_tls_route_listener(const mt_tls_t *t);

/* Bytes read from the socket. Returns -1 (t->error) if the BIO refuses them. */
int mt_tls_feed(mt_tls_t *t, const char *p, size_t n);
/* Advances the handshake and writes what it produced. Returns 1 once done (the peer
 * verified: SANs checked, principal set), 0 while it needs more bytes, -1 on failure
 * (t->error says why: the verify error, the alert, the SAN that did not match). */
int mt_tls_handshake(mt_tls_t *t);
/* Plaintext into dst. Returns the bytes read, 0 when it needs more input, MT_TLS_EOF once
 * the peer sent close_notify, -1 on failure (t->error). Writes what reading produced
 * (post-handshake messages). */
#define MT_TLS_EOF (-2)
long mt_tls_read(mt_tls_t *t, char *dst, size_t cap);
/* Every byte of plaintext the SSL has, into *bp (made room for from pool, at least room bytes
 * at a time; the shells' read buffers). *got: the bytes added. Returns 0 (the SSL needs more
 * input), MT_TLS_EOF (close_notify; what came before it is in *bp) or -1 (t->error). */
int mt_tls_read_all(mt_tls_t *t, mt_buf_pool_t *pool, mt_buf_t **bp, size_t room, size_t *got);
/* Sends close_notify (best effort, before a close). */
void mt_tls_shutdown(mt_tls_t *t);

/* "mutual_tls" when the peer's certificate was verified, "tls" otherwise (Istio's
 * connection_security_policy says "none" for plain text: the session's, not ours). */
const char *mt_tls_security_policy(const mt_tls_t *t);

/* A per-thread buffer the shells read ciphertext into before mt_tls_feed. */
#define MT_TLS_SCRATCH 65536
char *mt_tls_scratch(void);

/* Where ISTIO_MUTUAL finds cert-chain.pem, key.pem and root-cert.pem when the snapshot
 * names no files (default /etc/certs; main.c: --istio-certs). Set before the first snapshot. */
extern const char *mt_tls_istio_dir;

/* PERMISSIVE: do the first bytes of a connection look like a TLS ClientHello (a handshake
 * record, version 3.x)? 1 yes, 0 no (plain text), -1 not enough bytes to tell yet. */
int mt_tls_sniff(const unsigned char *p, size_t n);

/* Starts OpenSSL's secure heap (MT_TLS_SECURE_HEAP bytes, before any key is parsed): the
 * private keys' numbers live there, in pages that are locked (when RLIMIT_MEMLOCK allows) and
 * excluded from core dumps (MADV_DONTDUMP), and are cleared when freed. Returns 1 (locked), 2
 * (not locked: still excluded from dumps), 0 (no secure heap: keys live in ordinary memory). */
#define MT_TLS_SECURE_HEAP (1u << 20)
int mt_tls_secure_heap_init(void);

/* Frees a kept client session (an endpoint's session_slot). */
void mt_tls_session_free(void *session);

#endif
