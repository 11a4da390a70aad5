/*
 * test_tls.c - runtime/core/tls.c: PERMISSIVE sniffing; settings read from a snapshot table
 * (refusals with their reasons: unknown mode, no certificate, a key of another certificate,
 * a missing file); and whole handshakes between a client and a server mt_tls_t in memory,
 * their ciphertext carried by hand from one raw queue to the other: MUTUAL with the SPIFFE
 * identity, plaintext sealed from the output queue and read back, a SAN that matches
 * nothing, an unknown CA, an expired certificate, and a resumed session.
 */
#include "runtime/core/tls.h"

#include "tests/unit/runtime/core/tls_testkeys.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <lualib.h>
#include <string.h>

Test(tls, sniff_tells_a_client_hello_from_plain_text)
{
    const unsigned char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00};
    cr_assert_eq(mt_tls_sniff(hello, 5), 1);
    cr_assert_eq(mt_tls_sniff(hello, 1), -1, "one byte: wait");
    cr_assert_eq(mt_tls_sniff(hello, 2), -1);
    cr_assert_eq(mt_tls_sniff(hello, 3), 1);
    cr_assert_eq(mt_tls_sniff((const unsigned char *)"*1\r\n", 4), 0, "RESP");
    cr_assert_eq(mt_tls_sniff((const unsigned char *)"PING\r\n", 6), 0, "inline command");
    const unsigned char dubbo[] = {0xda, 0xbb, 0xc2, 0x00};
    cr_assert_eq(mt_tls_sniff(dubbo, 4), 0);
    const unsigned char not_v3[] = {0x16, 0x02, 0x00};
    cr_assert_eq(mt_tls_sniff(not_v3, 3), 0);
    const unsigned char v3_9[] = {0x16, 0x03, 0x09};
    cr_assert_eq(mt_tls_sniff(v3_9, 3), 0);
    cr_assert_eq(mt_tls_sniff(hello, 0), -1);
}

/* ---- settings --------------------------------------------------------------------------- */

typedef struct kv {
    const char *k, *v;
} kv_t;

/* { tls = { k = v, ... } } on L's stack; sans (may be NULL) as subject_alt_names. */
static int push_conf(lua_State *L, const kv_t *fields, const char *san)
{
    lua_newtable(L);
    lua_newtable(L);
    for (const kv_t *f = fields; f->k; f++) {
        lua_pushstring(L, f->v);
        lua_setfield(L, -2, f->k);
    }
    if (san) {
        lua_newtable(L);
        lua_pushstring(L, san);
        lua_rawseti(L, -2, 1);
        lua_setfield(L, -2, "subject_alt_names");
    }
    lua_setfield(L, -2, "tls");
    return lua_gettop(L);
}

static mt_tls_conf_t *conf_of(lua_State *L, const kv_t *fields, const char *san, bool server,
                              char **err)
{
    int t = push_conf(L, fields, san);
    mt_tls_conf_t *c = mt_tls_conf_from_lua(L, t, server, "listener t", err);
    lua_settop(L, 0);
    return c;
}

typedef struct pki {
    tk_pair_t ca, other_ca, server, client, expired, plain_client;
} pki_t;

static pki_t pki_make(void)
{
    pki_t p;
    p.ca = tk_make(NULL, "test ca", NULL, 0, 86400);
    p.other_ca = tk_make(NULL, "other ca", NULL, 0, 86400);
    p.server = tk_make(&p.ca, "server", "DNS:redis.test,URI:spiffe://cluster.local/ns/r/sa/server",
                       0, 86400);
    p.client = tk_make(&p.ca, "client", "URI:spiffe://cluster.local/ns/a/sa/b", 0, 86400);
    p.expired = tk_make(&p.ca, "old", "URI:spiffe://cluster.local/ns/a/sa/b", -86400 * 3, -86400);
    p.plain_client = tk_make(&p.other_ca, "stranger", "DNS:stranger.test", 0, 86400);
    return p;
}

static void pki_free(pki_t *p)
{
    tk_free(&p->ca);
    tk_free(&p->other_ca);
    tk_free(&p->server);
    tk_free(&p->client);
    tk_free(&p->expired);
    tk_free(&p->plain_client);
}

Test(tls, settings_refused_with_a_reason)
{
    lua_State *L = luaL_newstate();
    pki_t p = pki_make();
    char *err = NULL;
    kv_t bad_mode[] = {{"mode", "STRICTEST"}, {NULL, NULL}};
    cr_assert_null(conf_of(L, bad_mode, NULL, true, &err));
    cr_assert(err && strstr(err, "unknown mode \"STRICTEST\""), "%s", err);
    free(err);
    kv_t no_cert[] = {{"mode", "SIMPLE"}, {NULL, NULL}};
    cr_assert_null(conf_of(L, no_cert, NULL, true, &err));
    cr_assert(err && strstr(err, "listener t: tls: this mode needs a certificate"), "%s", err);
    free(err);
    kv_t mismatch[] = {{"mode", "SIMPLE"},
                       {"cert_pem", p.server.cert_pem},
                       {"key_pem", p.client.key_pem},
                       {NULL, NULL}};
    cr_assert_null(conf_of(L, mismatch, NULL, true, &err));
    cr_assert(err && strstr(err, "certificate and private key: private key mismatch"), "%s", err);
    cr_assert(!strstr(err, "BEGIN"), "no key material in the message");
    free(err);
    kv_t missing[] = {{"mode", "SIMPLE"},
                      {"cert_file", "/nonexistent/cert.pem"},
                      {"key_pem", p.server.key_pem},
                      {NULL, NULL}};
    cr_assert_null(conf_of(L, missing, NULL, true, &err));
    cr_assert(err && strstr(err, "cert /nonexistent/cert.pem: No such file or directory"), "%s",
              err);
    free(err);
    kv_t mutual_no_ca[] = {{"mode", "MUTUAL"},
                           {"cert_pem", p.server.cert_pem},
                           {"key_pem", p.server.key_pem},
                           {NULL, NULL}};
    cr_assert_null(conf_of(L, mutual_no_ca, NULL, true, &err));
    cr_assert(err && strstr(err, "it needs caCertificates"), "%s", err);
    free(err);
    kv_t off[] = {{"mode", "DISABLE"}, {NULL, NULL}};
    cr_assert_null(conf_of(L, off, NULL, false, &err));
    cr_assert_null(err, "DISABLE: no TLS and no error");
    pki_free(&p);
    lua_close(L);
}

/* ---- handshakes in memory --------------------------------------------------------------- */

typedef struct side {
    mt_outq_t plain;
    mt_tls_t *t;
} side_t;

/* Moves what a's SSL wrote (its raw queue: no socket in these tests) into b. */
static void carry(side_t *a, side_t *b)
{
    mt_outq_t *raw = &a->t->raw;
    for (uint32_t i = 0; i < raw->n; i++)
        cr_assert_eq(mt_tls_feed(b->t, raw->v[i].p, raw->v[i].len), 0);
    mt_outq_drop(raw, raw->queued_bytes);
}

/* Runs both handshakes to their end; returns the client's result and the server's in *srv. */
static int shake(side_t *c, side_t *s, int *srv)
{
    int rc = 0, rs = 0;
    rc = mt_tls_handshake(c->t);
    for (int round = 0; round < 10 && (rc == 0 || rs == 0); round++) {
        carry(c, s);
        if (rs == 0)
            rs = mt_tls_handshake(s->t);
        carry(s, c);
        if (rc == 0)
            rc = mt_tls_handshake(c->t);
        if (rc < 0 || rs < 0)
            break;
    }
    *srv = rs;
    return rc;
}

typedef struct pair {
    mt_buf_pool_t pool;
    mt_tls_conf_t *cc, *sc;
    side_t c, s;
    void *session;
} pair_t;

static void pair_open(pair_t *p)
{
    char err[256];
    mt_outq_init(&p->c.plain, &p->pool, NULL);
    mt_outq_init(&p->s.plain, &p->pool, NULL);
    p->c.t = mt_tls_new(p->cc, 0, &p->c.plain, &p->pool, &p->session, err, sizeof(err));
    p->s.t = mt_tls_new(p->sc, 0, &p->s.plain, &p->pool, NULL, err, sizeof(err));
    cr_assert(p->c.t && p->s.t, "%s", err);
}

static void pair_close(pair_t *p)
{
    mt_tls_free(p->c.t);
    mt_tls_free(p->s.t);
    mt_outq_reset(&p->c.plain);
    mt_outq_reset(&p->s.plain);
}

static mt_tls_conf_t *server_conf(lua_State *L, const pki_t *k, const char *mode)
{
    char *err = NULL;
    kv_t f[] = {{"mode", mode},
                {"cert_pem", k->server.cert_pem},
                {"key_pem", k->server.key_pem},
                {"ca_pem", k->ca.cert_pem},
                {NULL, NULL}};
    mt_tls_conf_t *c = conf_of(L, f, NULL, true, &err);
    cr_assert_not_null(c, "%s", err);
    return c;
}

static mt_tls_conf_t *client_conf(lua_State *L, const pki_t *k, const tk_pair_t *me,
                                  const char *ca_pem, const char *san)
{
    char *err = NULL;
    kv_t f[] = {{"mode", me ? "MUTUAL" : "SIMPLE"},
                {"ca_pem", ca_pem},
                {me ? "cert_pem" : "sni", me ? me->cert_pem : "redis.test"},
                {me ? "key_pem" : "sni", me ? me->key_pem : "redis.test"},
                {NULL, NULL}};
    mt_tls_conf_t *c = conf_of(L, f, san, false, &err);
    cr_assert_not_null(c, "%s", err);
    return c;
}

Test(tls, mutual_handshake_identity_and_data_both_ways)
{
    lua_State *L = luaL_newstate();
    pki_t k = pki_make();
    pair_t p = {0};
    mt_buf_pool_init(&p.pool);
    p.sc = server_conf(L, &k, "MUTUAL");
    p.cc = client_conf(L, &k, &k.client, k.ca.cert_pem, "spiffe://cluster.local/ns/r/sa/server");
    pair_open(&p);
    /* Queued before the handshake ends: held, then sealed. */
    cr_assert_eq(mt_outq_add_copy(&p.c.plain, "*1\r\n$4\r\nPING\r\n", 14), 0);
    cr_assert_eq(mt_outq_flush(&p.c.plain), 0);
    cr_assert_eq(p.c.plain.queued_bytes, 14, "nothing sealed before the handshake");
    int rs;
    cr_assert_eq(shake(&p.c, &p.s, &rs), 1, "%s", p.c.t->error);
    cr_assert_eq(rs, 1, "%s", p.s.t->error);
    cr_assert_str_eq(p.s.t->principal, "cluster.local/ns/a/sa/b");
    cr_assert_str_eq(mt_tls_security_policy(p.s.t), "mutual_tls");
    cr_assert_str_eq(p.c.t->principal, "cluster.local/ns/r/sa/server");
    cr_assert_eq(mt_outq_flush(&p.c.plain), 0);
    cr_assert_eq(p.c.plain.n, 0, "sealed into raw");
    cr_assert_gt(mt_outq_pending(&p.c.plain), 14, "raw's ciphertext counts as pending");
    carry(&p.c, &p.s);
    char buf[64];
    long n = mt_tls_read(p.s.t, buf, sizeof(buf));
    cr_assert_eq(n, 14);
    cr_assert(memcmp(buf, "*1\r\n$4\r\nPING\r\n", 14) == 0);
    cr_assert_eq(mt_tls_read(p.s.t, buf, sizeof(buf)), 0, "then: needs more");
    /* Large data the other way: many records. */
    static char big[100000];
    memset(big, 'x', sizeof(big));
    cr_assert_eq(mt_outq_add_copy(&p.s.plain, big, sizeof(big)), 0);
    cr_assert_eq(mt_outq_flush(&p.s.plain), 0);
    carry(&p.s, &p.c);
    size_t got = 0;
    while ((n = mt_tls_read(p.c.t, buf, sizeof(buf))) > 0)
        got += (size_t)n;
    cr_assert_eq(got, sizeof(big));
    /* close_notify reads as EOF. */
    mt_tls_shutdown(p.s.t);
    carry(&p.s, &p.c);
    cr_assert_eq(mt_tls_read(p.c.t, buf, sizeof(buf)), MT_TLS_EOF);
    mt_tls_shutdown(p.c.t); /* OpenSSL resumes only sessions of connections shut down cleanly */
    pair_close(&p);
    /* The session the first connection kept resumes on the next one. */
    cr_assert_not_null(p.session, "a session was kept for the endpoint");
    pair_open(&p);
    cr_assert_eq(shake(&p.c, &p.s, &rs), 1, "%s", p.c.t->error);
    cr_assert(p.c.t->resumed, "resumed");
    pair_close(&p);
    mt_tls_session_free(p.session);
    mt_tls_conf_free(p.cc);
    mt_tls_conf_free(p.sc);
    cr_assert_eq(p.pool.allocated, 0, "every chunk back");
    mt_buf_pool_destroy(&p.pool);
    pki_free(&k);
    lua_close(L);
}

static void expect_refused(const pki_t *k, const tk_pair_t *me, const char *ca, const char *san,
                           const char *server_mode, const char *why, bool server_side)
{
    lua_State *L = luaL_newstate();
    pair_t p = {0};
    mt_buf_pool_init(&p.pool);
    p.sc = server_conf(L, k, server_mode);
    p.cc = client_conf(L, k, me, ca, san);
    pair_open(&p);
    int rs = 0;
    int rc = shake(&p.c, &p.s, &rs);
    mt_tls_t *t = server_side ? p.s.t : p.c.t;
    cr_assert_eq(server_side ? rs : rc, -1, "refused");
    cr_assert(strstr(t->error, why), "reason: %s", t->error);
    pair_close(&p);
    mt_tls_session_free(p.session);
    mt_tls_conf_free(p.cc);
    mt_tls_conf_free(p.sc);
    mt_buf_pool_destroy(&p.pool);
    lua_close(L);
}

Test(tls, refusals_say_why)
{
    pki_t k = pki_make();
    expect_refused(&k, NULL, k.ca.cert_pem, "spiffe://cluster.local/ns/r/sa/other", "SIMPLE",
                   "its SANs (DNS:redis.test, URI:spiffe://cluster.local/ns/r/sa/server) match "
                   "none of subjectAltNames",
                   false);
    expect_refused(&k, NULL, k.other_ca.cert_pem, NULL, "SIMPLE",
                   "peer certificate refused: unable to get local issuer certificate", false);
    expect_refused(&k, &k.expired, k.ca.cert_pem, NULL, "MUTUAL",
                   "peer certificate refused: certificate has expired", true);
    expect_refused(&k, &k.plain_client, k.ca.cert_pem, NULL, "MUTUAL",
                   "peer certificate refused: unable to get local issuer certificate", true);
    expect_refused(&k, NULL, k.ca.cert_pem, NULL, "MUTUAL", "peer did not return a certificate",
                   true);
    pki_free(&k);
}
