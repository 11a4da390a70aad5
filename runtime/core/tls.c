/*
 * tls.c - the shells' TLS transport (tls.h): settings read at snapshot time, per-worker
 * SSL_CTX, connections on memory BIOs, peer checks (SANs, SPIFFE identity), PERMISSIVE
 * sniffing. OpenSSL 3 does all the cryptography; this file only moves bytes and decides.
 */
#include "runtime/core/tls.h"

#include "runtime/core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PEM_MAX (1u << 20) /* a certificate file larger than 1 MiB is a mistake */

/* Where ISTIO_MUTUAL finds the workload's files when the snapshot names none (main.c sets
 * it from --istio-certs). */
const char *mt_tls_istio_dir = "/etc/certs";

int mt_tls_secure_heap_init(void)
{
    if (CRYPTO_secure_malloc_initialized())
        return 1;
    return CRYPTO_secure_malloc_init(MT_TLS_SECURE_HEAP, 16);
}

/* ---- reading the settings (main thread) -------------------------------------------------- */

/* t[key] as a malloc'd string, or NULL. (snapshot.c has the same readers; tls is below the
 * snapshot in the include graph, so it keeps these three.) */
static char *field_str(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    char *v = lua_type(L, -1) == LUA_TSTRING ? strdup(lua_tostring(L, -1)) : NULL;
    lua_pop(L, 1);
    return v;
}

static bool field_bool(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Pushes t[key] and returns true if it is a table; pushes nothing otherwise. */
static bool field_table(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    if (lua_istable(L, -1))
        return true;
    lua_pop(L, 1);
    return false;
}

static int fail(char **err, const char *what, const char *fmt, const char *arg)
{
    char msg[512];
    snprintf(msg, sizeof(msg), fmt, arg ? arg : "");
    if (asprintf(err, "%s: tls: %s", what, msg) < 0)
        *err = NULL;
    return -1;
}

/* The last OpenSSL error's reason ("key values mismatch"), or fallback. */
static const char *ssl_reason(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : fallback;
}

static char *read_file(const char *path, size_t *len, char **why)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || (size_t)st.st_size > PEM_MAX) {
        *why = fd < 0 ? strerror(errno) : "larger than 1 MiB or unreadable";
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    ssize_t n = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    if (n < 0) {
        *why = strerror(errno);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static int conf_add_file(mt_tls_conf_t *c, const char *path)
{
    char **f = realloc(c->files, (c->n_files + 1) * sizeof(*f));
    if (!f)
        return -1;
    c->files = f;
    f[c->n_files] = strdup(path);
    return f[c->n_files] ? (int)c->n_files++ : -1;
}

/* The PEM of t[name.."_pem"] (inline, from a Secret) or of the file t[name.."_file"]: a
 * malloc'd copy in *pem (NULL when neither is set). Records the file for rotation. */
static int pem_source(lua_State *L, int t, const char *name, mt_tls_conf_t *c, char **pem,
                      size_t *len, char **err)
{
    char key[64];
    *pem = NULL;
    *len = 0;
    snprintf(key, sizeof(key), "%s_pem", name);
    lua_getfield(L, t, key);
    if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tolstring(L, -1, len);
        *pem = malloc(*len + 1);
        if (*pem) {
            memcpy(*pem, s, *len);
            (*pem)[*len] = '\0';
        }
        lua_pop(L, 1);
        return *pem ? 0 : fail(err, c->what, "out of memory", NULL);
    }
    lua_pop(L, 1);
    snprintf(key, sizeof(key), "%s_file", name);
    char *path = field_str(L, t, key);
    if (!path)
        return 0;
    char *why = NULL;
    *pem = read_file(path, len, &why);
    if (!*pem) {
        char msg[600];
        snprintf(msg, sizeof(msg), "%s %s: %s", name, path, why ? why : "unreadable");
        free(path);
        return fail(err, c->what, "%s", msg);
    }
    int rc = conf_add_file(c, path);
    free(path);
    return rc < 0 ? fail(err, c->what, "out of memory", NULL) : 0;
}

static void wipe_free(char *p, size_t n)
{
    if (p) {
        OPENSSL_cleanse(p, n);
        free(p);
    }
}

/* Every certificate of a PEM text, in order; NULL if it holds none. */
static STACK_OF(X509) * parse_certs(const char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    while (b && sk && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(sk, x))
            X509_free(x);
    }
    ERR_clear_error(); /* the loop ends on "no start line" */
    BIO_free(b);
    if (sk && sk_X509_num(sk) == 0) {
        sk_X509_free(sk);
        sk = NULL;
    }
    return sk;
}

/* Every CRL of a PEM text; NULL if it holds none. */
static STACK_OF(X509_CRL) * parse_crls(const char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509_CRL) *sk = sk_X509_CRL_new_null();
    X509_CRL *x;
    while (b && sk && (x = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_CRL_push(sk, x))
            X509_CRL_free(x);
    }
    ERR_clear_error();
    BIO_free(b);
    if (sk && sk_X509_CRL_num(sk) == 0) {
        sk_X509_CRL_free(sk);
        sk = NULL;
    }
    return sk;
}

/* A certificate (chain) and its key from t's <cert>/<key> sources into out. */
static int read_cert(lua_State *L, int t, const char *cert, const char *key, mt_tls_conf_t *c,
                     mt_tls_cert_t *out, char **err)
{
    char *cpem = NULL, *kpem = NULL;
    size_t clen = 0, klen = 0;
    int rc = pem_source(L, t, cert, c, &cpem, &clen, err);
    if (rc == 0)
        rc = pem_source(L, t, key, c, &kpem, &klen, err);
    if (rc == 0 && (!cpem || !kpem))
        rc = fail(err, c->what, "%s",
                  !cpem && !kpem ? "this mode needs a certificate and a private key"
                  : !cpem        ? "a private key without a certificate"
                                 : "a certificate without a private key");
    if (rc == 0) {
        STACK_OF(X509) *sk = parse_certs(cpem, clen);
        if (!sk) {
            rc = fail(err, c->what, "the certificate is not PEM (no CERTIFICATE block)", NULL);
        } else {
            out->x509 = sk_X509_shift(sk);
            out->chain = sk;
            BIO *b = BIO_new_mem_buf(kpem, (int)klen);
            out->pkey = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
            BIO_free(b);
            if (!out->pkey)
                rc = fail(err, c->what, "the private key is not PEM: %s", ssl_reason("unreadable"));
        }
    }
    free(cpem);
    wipe_free(kpem, klen);
    ERR_clear_error();
    return rc;
}

static char **read_strings(lua_State *L, int t, const char *key, uint32_t *n)
{
    *n = 0;
    if (!field_table(L, t, key))
        return NULL;
    int lt = lua_gettop(L);
    size_t m = lua_objlen(L, lt);
    char **v = calloc(m ? m : 1, sizeof(*v));
    for (size_t i = 0; v && i < m; i++) {
        lua_rawgeti(L, lt, (int)i + 1);
        if (lua_type(L, -1) == LUA_TSTRING)
            v[(*n)++] = strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return v;
}

static void free_strings(char **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ALPN names -> the wire format (each name prefixed by its length). */
static int read_alpn(lua_State *L, int t, mt_tls_conf_t *c, char **err)
{
    uint32_t n;
    char **names = read_strings(L, t, "alpn", &n);
    size_t len = 0;
    for (uint32_t i = 0; i < n; i++)
        len += 1 + strlen(names[i]);
    int rc = 0;
    if (n > 0) {
        c->alpn = malloc(len);
        size_t o = 0;
        for (uint32_t i = 0; c->alpn && i < n; i++) {
            size_t k = strlen(names[i]);
            if (k == 0 || k > 255) {
                rc = fail(err, c->what, "ALPN name \"%s\" must be 1 to 255 bytes", names[i]);
                break;
            }
            c->alpn[o++] = (unsigned char)k;
            memcpy(c->alpn + o, names[i], k);
            o += k;
        }
        c->alpn_len = o;
    }
    free_strings(names, n);
    return rc;
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* t[key]: a list of 64-digit hex SHA-256 digests (the compiler checked and lowercased them)
 * into *out. */
static int read_pins(lua_State *L, int t, const char *key, unsigned char (**out)[32], uint32_t *n,
                     mt_tls_conf_t *c, char **err)
{
    uint32_t m;
    char **hex = read_strings(L, t, key, &m);
    int rc = 0;
    *out = m ? calloc(m, sizeof(**out)) : NULL;
    *n = 0;
    if (m && !*out)
        rc = fail(err, c->what, "out of memory", NULL);
    for (uint32_t i = 0; rc == 0 && i < m; i++) {
        const char *h = hex[i];
        bool ok = strlen(h) == 64;
        for (size_t k = 0; ok && k < 32; k++) {
            int hi = hex_digit(h[2 * k]), lo = hex_digit(h[2 * k + 1]);
            ok = hi >= 0 && lo >= 0;
            (*out)[i][k] = (unsigned char)((hi << 4) | lo);
        }
        if (!ok)
            rc = fail(err, c->what, "certificate pin \"%s\" is not a hex SHA-256 digest", h);
        else
            (*n)++;
    }
    free_strings(hex, m);
    return rc;
}

/* t.sni_routes = { { server_names = {...}, listener = name }, ... } into c->routes. */
static int read_routes(lua_State *L, int t, mt_tls_conf_t *c, char **err)
{
    if (!field_table(L, t, "sni_routes"))
        return 0;
    int rt = lua_gettop(L);
    size_t n = lua_objlen(L, rt);
    c->routes = calloc(n ? n : 1, sizeof(*c->routes));
    if (!c->routes) {
        lua_pop(L, 1);
        return fail(err, c->what, "out of memory", NULL);
    }
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, rt, (int)i + 1);
        int e = lua_gettop(L);
        mt_tls_route_t *r = &c->routes[c->n_routes];
        r->listener = lua_istable(L, e) ? field_str(L, e, "listener") : NULL;
        if (r->listener) {
            r->server_names = read_strings(L, e, "server_names", &r->n_server_names);
            c->n_routes++;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

static mt_tls_mode_t parse_mode(const char *m)
{
    if (!m)
        return MT_TLS_DISABLE;
    if (strcmp(m, "SIMPLE") == 0)
        return MT_TLS_SIMPLE;
    if (strcmp(m, "MUTUAL") == 0)
        return MT_TLS_MUTUAL;
    if (strcmp(m, "ISTIO_MUTUAL") == 0)
        return MT_TLS_ISTIO_MUTUAL;
    return MT_TLS_DISABLE;
}

static void *ctx_build(mt_tls_conf_t *c, char *err, size_t errlen);

/* ISTIO_MUTUAL without explicit files: the workload's files in Istio's layout. */
static void istio_defaults(lua_State *L, int t)
{
    static const char *const names[][2] = {
        {"cert_file", "cert-chain.pem"}, {"key_file", "key.pem"}, {"ca_file", "root-cert.pem"}};
    for (size_t i = 0; i < MT_ARRAY_LEN(names); i++) {
        lua_getfield(L, t, names[i][0]);
        bool set = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (set)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", mt_tls_istio_dir, names[i][1]);
        lua_pushstring(L, path);
        lua_setfield(L, t, names[i][0]);
    }
}

static int conf_read(lua_State *L, int t, mt_tls_conf_t *c, char **err)
{
    if (c->mode == MT_TLS_ISTIO_MUTUAL)
        istio_defaults(L, t);
    c->sni = field_str(L, t, "sni");
    c->sans = read_strings(L, t, "subject_alt_names", &c->n_sans);
    c->insecure_skip_verify = field_bool(L, t, "insecure_skip_verify");
    c->permissive = c->server && field_bool(L, t, "permissive");
    if (read_alpn(L, t, c, err) != 0)
        return -1;
    if (c->server &&
        (read_pins(L, t, "pin_spki_sha256", &c->pin_spki, &c->n_pin_spki, c, err) != 0 ||
         read_pins(L, t, "pin_cert_sha256", &c->pin_cert, &c->n_pin_cert, c, err) != 0))
        return -1;
    char *ca = NULL;
    size_t calen = 0;
    if (pem_source(L, t, "ca", c, &ca, &calen, err) != 0)
        return -1;
    if (ca) {
        c->roots = parse_certs(ca, calen);
        free(ca);
        if (!c->roots)
            return fail(err, c->what, "caCertificates hold no PEM certificate", NULL);
    }
    char *crl = NULL;
    size_t crllen = 0;
    if (pem_source(L, t, "crl", c, &crl, &crllen, err) != 0)
        return -1;
    if (crl) {
        c->crls = parse_crls(crl, crllen);
        free(crl);
        if (!c->crls)
            return fail(err, c->what, "caCrl holds no PEM certificate revocation list", NULL);
    }
    /* The default certificate, then the ones chosen by SNI. */
    size_t n_sni = 0;
    if (field_table(L, t, "sni_certs")) {
        n_sni = lua_objlen(L, -1);
        lua_pop(L, 1);
    }
    c->certs = calloc(1 + n_sni, sizeof(*c->certs));
    if (!c->certs)
        return fail(err, c->what, "out of memory", NULL);
    lua_getfield(L, t, "cert_file");
    lua_getfield(L, t, "cert_pem");
    bool has_cert = !lua_isnil(L, -1) || !lua_isnil(L, -2);
    lua_pop(L, 2);
    if (has_cert || c->server || c->mode != MT_TLS_SIMPLE) {
        if (read_cert(L, t, "cert", "key", c, &c->certs[0], err) != 0)
            return -1;
        c->n_certs = 1;
    }
    if (n_sni > 0 && field_table(L, t, "sni_certs")) {
        int st = lua_gettop(L);
        for (size_t i = 0; i < n_sni; i++) {
            lua_rawgeti(L, st, (int)i + 1);
            mt_tls_cert_t *ct = &c->certs[c->n_certs++];
            ct->server_names = read_strings(L, lua_gettop(L), "server_names", &ct->n_server_names);
            int rc = read_cert(L, lua_gettop(L), "cert", "key", c, ct, err);
            lua_pop(L, 1);
            if (rc != 0)
                return -1;
        }
        lua_pop(L, 1);
    }
    if (c->server && read_routes(L, t, c, err) != 0)
        return -1;
    if (c->server && c->mode != MT_TLS_SIMPLE && !c->roots)
        return fail(err, c->what, "mode %s verifies clients: it needs caCertificates",
                    c->mode == MT_TLS_MUTUAL ? "MUTUAL" : "ISTIO_MUTUAL");
    char why[256];
    void *ctx = ctx_build(c, why, sizeof(why));
    if (!ctx)
        return fail(err, c->what, "%s", why);
    SSL_CTX_free(ctx);
    if (c->n_certs > 0)
        mt_debug("%s: TLS key%s parsed (secure heap: %zu bytes in use)", c->what,
                 c->n_certs > 1 ? "s" : "", CRYPTO_secure_used());
    return 0;
}

mt_tls_conf_t *mt_tls_conf_from_lua(lua_State *L, int t, bool server, const char *what, char **err)
{
    *err = NULL;
    if (!field_table(L, t, "tls"))
        return NULL;
    int tt = lua_gettop(L);
    char *mode = field_str(L, tt, "mode");
    mt_tls_mode_t m = parse_mode(mode);
    bool bad_mode = mode && m == MT_TLS_DISABLE && strcmp(mode, "DISABLE") != 0;
    if (bad_mode)
        fail(err, what, "unknown mode \"%s\"", mode);
    free(mode);
    if (m == MT_TLS_DISABLE) {
        lua_pop(L, 1);
        return NULL;
    }
    mt_tls_conf_t *c = calloc(1, sizeof(*c));
    if (c) {
        c->refs = 1;
        c->mode = m;
        c->server = server;
        c->what = strdup(what);
    }
    bool automatic = field_bool(L, tt, "auto");
    if (!c || !c->what || conf_read(L, tt, c, err) != 0) {
        if (!*err)
            fail(err, what, "out of memory", NULL);
        mt_tls_conf_free(c);
        c = NULL;
        if (automatic) { /* Istio's auto-mTLS: without usable workload files, plain text */
            mt_warn("%s: auto mTLS off (plain text): %s", what, *err);
            free(*err);
            *err = NULL;
        }
    }
    lua_settop(L, tt - 1);
    return c;
}

void mt_tls_conf_free(mt_tls_conf_t *c)
{
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (unsigned i = 0; i < MT_TLS_MAX_WORKERS; i++)
        SSL_CTX_free(c->ctx[i]);
    for (uint32_t i = 0; c->certs && i < c->n_certs; i++) {
        mt_tls_cert_t *ct = &c->certs[i];
        X509_free(ct->x509);
        sk_X509_pop_free(ct->chain, X509_free);
        EVP_PKEY_free(ct->pkey); /* OpenSSL clears key material as it frees it */
        free_strings(ct->server_names, ct->n_server_names);
    }
    free(c->certs);
    sk_X509_pop_free(c->roots, X509_free);
    sk_X509_CRL_pop_free(c->crls, X509_CRL_free);
    free_strings(c->sans, c->n_sans);
    free(c->pin_spki);
    free(c->pin_cert);
    for (uint32_t i = 0; c->routes && i < c->n_routes; i++) {
        free_strings(c->routes[i].server_names, c->routes[i].n_server_names);
        free(c->routes[i].listener);
    }
    free(c->routes);
    free_strings(c->files, c->n_files);
    free(c->alpn);
    free(c->sni);
    free(c->what);
    free(c);
}

/* ---- SSL_CTX (one per worker) ---------------------------------------------------------------
 */

static int tls_ex_index = -1; /* the mt_tls_t of an SSL (SSL_set_ex_data) */
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_init_once(void)
{
    tls_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static bool name_matches(const char *pattern, const char *name)
{
    if (strcasecmp(pattern, name) == 0)
        return true;
    if (pattern[0] == '*' && pattern[1] == '.') { /* "*.example.com": one label */
        const char *dot = strchr(name, '.');
        return dot && dot != name && strcasecmp(dot, pattern + 1) == 0;
    }
    return false;
}

static bool names_match(char *const *names, uint32_t n, const char *name)
{
    for (uint32_t k = 0; k < n; k++) {
        if (name_matches(names[k], name))
            return true;
    }
    return false;
}

/* Routing by SNI: the route the client's name selects into t->route; refuses (with the reason
 * in t->error) a client whose SNI matches none, or that sent none. */
static bool route_for_sni(mt_tls_t *t, const mt_tls_conf_t *c, const char *name)
{
    for (uint32_t i = 0; name && i < c->n_routes; i++) {
        if (names_match(c->routes[i].server_names, c->routes[i].n_server_names, name)) {
            t->route = (int32_t)i;
            return true;
        }
    }
    if (name)
        snprintf(t->error, sizeof(t->error),
                 "TLS handshake: refused: SNI \"%.100s\" names no server of this port", name);
    else
        snprintf(t->error, sizeof(t->error),
                 "TLS handshake: refused: the client sent no SNI (this port's servers are "
                 "chosen by it)");
    t->reason_set = true;
    return false;
}

/* Server: the route (routing by SNI), then the certificate for the client's SNI (certs[1..]
 * by server_names), else the default (certs[0], already on the SSL_CTX). */
static int cert_for_sni(SSL *ssl, void *arg)
{
    const mt_tls_conf_t *c = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    mt_tls_t *t = SSL_get_ex_data(ssl, tls_ex_index);
    if (c->n_routes > 0 && (!t || !route_for_sni(t, c, name)))
        return 0;
    if (!name)
        return 1;
    for (uint32_t i = 1; i < c->n_certs; i++) {
        const mt_tls_cert_t *ct = &c->certs[i];
        if (names_match(ct->server_names, ct->n_server_names, name))
            return SSL_use_cert_and_key(ssl, ct->x509, ct->pkey, ct->chain, 1) == 1;
    }
    return 1;
}

static bool pin_listed(unsigned char (*pins)[32], uint32_t n, const unsigned char *d)
{
    for (uint32_t i = 0; i < n; i++) {
        if (CRYPTO_memcmp(pins[i], d, 32) == 0)
            return true;
    }
    return false;
}

static void hex_text(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Server with pins: called by OpenSSL for each certificate of the client's chain; once the
 * chain verified, the client's own certificate (depth 0) must match a pin of either list.
 * A mismatch fails the handshake with OpenSSL's "application verification failure" and our
 * reason in t->error (tls_set_error keeps it). */
static int verify_pins(int ok, X509_STORE_CTX *xs)
{
    if (!ok || X509_STORE_CTX_get_error_depth(xs) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    mt_tls_t *t = ssl ? SSL_get_ex_data(ssl, tls_ex_index) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(xs);
    if (!t || !cert)
        return 0;
    const mt_tls_conf_t *c = t->conf;
    unsigned char der_sha[32], spki_sha[32];
    unsigned int len = 0;
    unsigned char *spki = NULL;
    int spki_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &spki);
    bool have = X509_digest(cert, EVP_sha256(), der_sha, &len) == 1 && len == 32 && spki_len > 0 &&
                EVP_Digest(spki, (size_t)spki_len, spki_sha, NULL, EVP_sha256(), NULL) == 1;
    OPENSSL_free(spki);
    if (have && (pin_listed(c->pin_spki, c->n_pin_spki, spki_sha) ||
                 pin_listed(c->pin_cert, c->n_pin_cert, der_sha)))
        return 1;
    char spki_hex[65] = "?", der_hex[65] = "?";
    if (have) {
        hex_text(spki_sha, 32, spki_hex);
        hex_text(der_sha, 32, der_hex);
    }
    snprintf(t->error, sizeof(t->error),
             "TLS handshake: peer certificate refused: it matches no pin of "
             "verifyCertificateSpki / verifyCertificateHash (its SPKI SHA-256 %.16s..., "
             "certificate SHA-256 %.16s...)",
             spki_hex, der_hex);
    t->reason_set = true;
    X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

/* Server: the first of our ALPN names the client offers; none in common: no ALPN (the
 * connection goes on, as a server that knows no ALPN would). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    const mt_tls_conf_t *c = arg;
    unsigned char *o = NULL;
    if (SSL_select_next_proto(&o, outlen, c->alpn, (unsigned)c->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

/* Client: a new session (TLS 1.3 sends it after the handshake) replaces the endpoint's. */
static int keep_session(SSL *ssl, SSL_SESSION *sess)
{
    mt_tls_t *t = SSL_get_ex_data(ssl, tls_ex_index);
    if (!t || !t->session_slot)
        return 0;
    if (*t->session_slot)
        SSL_SESSION_free(*t->session_slot);
    *t->session_slot = sess;
    return 1; /* we keep the reference */
}

static void *ctx_build(mt_tls_conf_t *c, char *err, size_t errlen)
{
    pthread_once(&tls_once, tls_init_once);
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx) {
        snprintf(err, errlen, "SSL_CTX_new: %s", ssl_reason("failed"));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION); /* TLS 1.2 renegotiation: a DoS lever */
    if (c->n_certs > 0) {
        mt_tls_cert_t *ct = &c->certs[0];
        if (SSL_CTX_use_cert_and_key(ctx, ct->x509, ct->pkey, ct->chain, 1) != 1) {
            snprintf(err, errlen, "certificate and private key: %s", ssl_reason("rejected"));
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    for (uint32_t i = 1; i < c->n_certs; i++) { /* checked now, used by cert_for_sni */
        if (X509_check_private_key(c->certs[i].x509, c->certs[i].pkey) != 1) {
            snprintf(err, errlen, "certificate %u and its private key: %s", i + 1,
                     ssl_reason("do not match"));
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    X509_STORE *st = SSL_CTX_get_cert_store(ctx);
    for (int i = 0; c->roots && i < sk_X509_num(c->roots); i++)
        X509_STORE_add_cert(st, sk_X509_value(c->roots, i));
    if (!c->roots && !c->server)
        SSL_CTX_set_default_verify_paths(ctx);
    /* caCrl: every certificate of the peer's chain is checked against the lists, and one
     * whose issuer has no list is refused too (Envoy's default: a CRL for one CA of a chain
     * needs CRLs for all of them). */
    for (int i = 0; c->crls && i < sk_X509_CRL_num(c->crls); i++)
        X509_STORE_add_crl(st, sk_X509_CRL_value(c->crls, i));
    if (c->crls)
        X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    if (c->server) {
        int v = c->mode == MT_TLS_SIMPLE ? SSL_VERIFY_NONE
                                         : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        bool pinned = c->mode != MT_TLS_SIMPLE && (c->n_pin_spki || c->n_pin_cert);
        SSL_CTX_set_verify(ctx, v, pinned ? verify_pins : NULL);
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"meltemi", 7);
        if (c->n_certs > 1 || c->n_routes > 0)
            SSL_CTX_set_cert_cb(ctx, cert_for_sni, c);
        if (c->alpn)
            SSL_CTX_set_alpn_select_cb(ctx, alpn_select, c);
    } else {
        SSL_CTX_set_verify(ctx, c->insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_session_cache_mode(ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, keep_session);
        if (c->alpn && SSL_CTX_set_alpn_protos(ctx, c->alpn, (unsigned)c->alpn_len) != 0) {
            snprintf(err, errlen, "ALPN: %s", ssl_reason("rejected"));
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    ERR_clear_error();
    return ctx;
}

/* ---- connections --------------------------------------------------------------------------- */

static _Thread_local char tls_scratch[MT_TLS_SCRATCH];

char *mt_tls_scratch(void)
{
    return tls_scratch;
}

/* The thread's OpenSSL error queue must be empty before an SSL call for SSL_get_error to be
 * right. Clearing it before every call costs more than the record layer of a small reply
 * (callgrind: ~800 instructions each), so the invariant is kept the other way round: every
 * failure is read here and the queue cleared, and "want read/write" leaves nothing in it. */

/* Why the last operation failed, into t->error. */
static void tls_set_error(mt_tls_t *t, const char *stage, int ssl_err)
{
    SSL *ssl = t->ssl;
    long v = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_last_error();
    if (t->reason_set) {
        /* verify_pins or route_for_sni said why */
    } else if (v != X509_V_OK) {
        snprintf(t->error, sizeof(t->error), "%s: peer certificate refused: %s", stage,
                 X509_verify_cert_error_string(v));
    } else if (e) {
        const char *r = ERR_reason_error_string(e);
        snprintf(t->error, sizeof(t->error), "%s: %s", stage, r ? r : "error");
    } else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN) {
        snprintf(t->error, sizeof(t->error), "%s: the peer closed the connection", stage);
    } else {
        snprintf(t->error, sizeof(t->error), "%s: TLS error %d", stage, ssl_err);
    }
    ERR_clear_error();
}

/* Everything the SSL wrote into its BIO goes onto raw and out to the socket. */
static int tls_push(mt_tls_t *t)
{
    BIO *w = t->wbio;
    size_t pending;
    while ((pending = BIO_ctrl_pending(w)) > 0) {
        mt_buf_t *b = mt_buf_get(t->raw.pool, MT_MIN(pending, (size_t)MT_BUF_CHUNK));
        if (!b)
            return UV_ENOMEM;
        int n = BIO_read(w, b->last, (int)MT_MIN(pending, mt_buf_room(b)));
        if (n <= 0) {
            mt_buf_unref(t->raw.pool, b);
            break;
        }
        mt_slice_t s = {b, b->last, (uint32_t)n};
        b->last += n;
        if (mt_outq_add_slice(&t->raw, s) != 0) /* takes b's reference */
            return UV_ENOMEM;
    }
    return mt_outq_flush(&t->raw);
}

/* plain's flush: once the handshake is done, every queued slice is encrypted (a memory BIO
 * takes all of it) and the records leave through raw. */
static int tls_seal(mt_outq_t *q)
{
    mt_tls_t *t = q->seal_arg;
    if (!t->handshake_done)
        return 0; /* queued until then */
    for (uint32_t i = 0; i < q->n; i++) {
        const char *p = q->v[i].p;
        size_t left = q->v[i].len;
        while (left > 0) {
            int k = (int)MT_MIN(left, (size_t)1 << 30);
            int r = SSL_write(t->ssl, p, k);
            if (r <= 0) {
                tls_set_error(t, "TLS write", SSL_get_error(t->ssl, r));
                return UV_EPROTO;
            }
            p += r;
            left -= (size_t)r;
        }
    }
    q->written_bytes += q->queued_bytes; /* the byte counters count plaintext */
    mt_outq_drop(q, q->queued_bytes);
    return tls_push(t);
}

static void raw_done(mt_outq_t *raw, int status)
{
    mt_tls_t *t = MT_CONTAINER_OF(raw, mt_tls_t, raw);
    if (t->plain->on_done)
        t->plain->on_done(t->plain, status);
}

mt_tls_t *mt_tls_new(mt_tls_conf_t *conf, unsigned wid, mt_outq_t *plain, mt_buf_pool_t *pool,
                     void **session_slot, char *err, size_t errlen)
{
    if (wid >= MT_TLS_MAX_WORKERS) {
        snprintf(err, errlen, "worker %u has no TLS context slot", wid);
        return NULL;
    }
    if (!conf->ctx[wid] && !(conf->ctx[wid] = ctx_build(conf, err, errlen)))
        return NULL;
    mt_tls_t *t = calloc(1, sizeof(*t));
    SSL *ssl = t ? SSL_new(conf->ctx[wid]) : NULL;
    BIO *r = ssl ? BIO_new(BIO_s_mem()) : NULL;
    BIO *w = r ? BIO_new(BIO_s_mem()) : NULL;
    if (!w) {
        snprintf(err, errlen, "out of memory");
        BIO_free(r);
        SSL_free(ssl);
        free(t);
        return NULL;
    }
    BIO_set_mem_eof_return(r, -1); /* empty: "retry", not EOF */
    BIO_set_mem_eof_return(w, -1);
    SSL_set_bio(ssl, r, w);
    SSL_set_ex_data(ssl, tls_ex_index, t);
    t->ssl = ssl;
    t->rbio = r;
    t->wbio = w;
    __atomic_add_fetch(&conf->refs, 1, __ATOMIC_RELAXED);
    t->conf = conf;
    t->plain = plain;
    t->session_slot = session_slot;
    t->route = -1;
    mt_outq_init(&t->raw, pool, raw_done);
    plain->seal = tls_seal;
    plain->seal_arg = t;
    plain->lower = &t->raw;
    if (conf->server) {
        SSL_set_accept_state(ssl);
        return t;
    }
    SSL_set_connect_state(ssl);
    if (conf->sni)
        SSL_set_tlsext_host_name(ssl, conf->sni);
    /* Without subjectAltNames the server's name is checked against the SNI sent (ours are
     * checked after the handshake, where URI SANs can be matched too). */
    if (conf->sni && !conf->n_sans && !conf->insecure_skip_verify)
        SSL_set1_host(ssl, conf->sni);
    if (session_slot && *session_slot)
        SSL_set_session(ssl, *session_slot);
    return t;
}

void mt_tls_adopt(mt_tls_t *t, mt_outq_t *plain, uv_stream_t *stream)
{
    if (t->plain) {
        t->plain->seal = NULL;
        t->plain->seal_arg = NULL;
        t->plain->lower = NULL;
    }
    t->plain = plain;
    plain->seal = tls_seal;
    plain->seal_arg = t;
    plain->lower = &t->raw;
    t->raw.stream = stream;
}

const char *mt_tls_route_listener(const mt_tls_t *t)
{
    return t->route >= 0 && (uint32_t)t->route < t->conf->n_routes
               ? t->conf->routes[t->route].listener
               : NULL;
}

void mt_tls_free(mt_tls_t *t)
{
    if (!t)
        return;
    if (t->plain) {
        t->plain->seal = NULL;
        t->plain->seal_arg = NULL;
        t->plain->lower = NULL;
    }
    mt_outq_reset(&t->raw);
    SSL_free(t->ssl); /* frees both BIOs */
    mt_tls_conf_free((mt_tls_conf_t *)t->conf);
    free(t->principal);
    free(t);
}

int mt_tls_feed(mt_tls_t *t, const char *p, size_t n)
{
    while (n > 0) {
        int k = BIO_write(t->rbio, p, (int)MT_MIN(n, (size_t)1 << 30));
        if (k <= 0) {
            snprintf(t->error, sizeof(t->error), "TLS: out of memory");
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* ---- the peer's certificate ------------------------------------------------------------------ */

/* "DNS:a, URI:spiffe://..." of cert, for refusals. */
static void sans_text(X509 *cert, char *out, size_t cap)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && o + 1 < cap; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        const char *kind = g->type == GEN_DNS ? "DNS" : g->type == GEN_URI ? "URI" : NULL;
        if (!kind)
            continue;
        const ASN1_IA5STRING *s =
            g->type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
        int k = snprintf(out + o, cap - o, "%s%s:%.*s", o ? ", " : "", kind, s->length,
                         (const char *)s->data);
        o = k > 0 ? MT_MIN(o + (size_t)k, cap - 1) : o;
    }
    GENERAL_NAMES_free(gens);
    if (!out[0])
        snprintf(out, cap, "none");
}

/* The first spiffe:// URI SAN of cert without its scheme (Istio's principal), or NULL. */
static char *spiffe_of(X509 *cert)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    char *id = NULL;
    for (int i = 0; gens && !id && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI)
            continue;
        const ASN1_IA5STRING *s = g->d.uniformResourceIdentifier;
        if (s->length > 9 && strncasecmp((const char *)s->data, "spiffe://", 9) == 0 &&
            !memchr(s->data, '\0', (size_t)s->length))
            id = strndup((const char *)s->data + 9, (size_t)s->length - 9);
    }
    GENERAL_NAMES_free(gens);
    return id;
}

static bool uri_san_is(X509 *cert, const char *want)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    bool hit = false;
    size_t n = strlen(want);
    for (int i = 0; gens && !hit && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        const ASN1_IA5STRING *s = g->d.uniformResourceIdentifier;
        hit = g->type == GEN_URI && (size_t)s->length == n && memcmp(s->data, want, n) == 0;
    }
    GENERAL_NAMES_free(gens);
    return hit;
}

/* Does one of the accepted SANs name cert? URIs compare exactly, IPs as addresses, DNS names
 * as X509_check_host does (wildcards of the certificate). */
static bool sans_match(const mt_tls_conf_t *c, X509 *cert)
{
    for (uint32_t i = 0; i < c->n_sans; i++) {
        const char *s = c->sans[i];
        if (strstr(s, "://")) {
            if (uri_san_is(cert, s))
                return true;
        } else if (X509_check_ip_asc(cert, s, 0) == 1 ||
                   X509_check_host(cert, s, 0, 0, NULL) == 1) {
            return true;
        }
    }
    return false;
}

/* After a handshake OpenSSL accepted: what OpenSSL does not check itself. */
static int tls_check_peer(mt_tls_t *t)
{
    const mt_tls_conf_t *c = t->conf;
    X509 *peer = SSL_get0_peer_certificate(t->ssl);
    bool verifying = c->server ? c->mode != MT_TLS_SIMPLE : !c->insecure_skip_verify;
    t->peer_verified = peer && verifying && SSL_get_verify_result(t->ssl) == X509_V_OK;
    if (peer)
        t->principal = spiffe_of(peer);
    if (!verifying)
        return 0;
    char sans[200];
    if (c->n_sans && (!peer || !sans_match(c, peer))) {
        sans_text(peer, sans, sizeof(sans));
        snprintf(t->error, sizeof(t->error),
                 "TLS handshake: peer certificate refused: its SANs (%s) match none of "
                 "subjectAltNames",
                 sans);
        return -1;
    }
    if (c->mode == MT_TLS_ISTIO_MUTUAL && !t->principal) {
        sans_text(peer, sans, sizeof(sans));
        snprintf(t->error, sizeof(t->error),
                 "TLS handshake: peer certificate refused: no SPIFFE identity (URI SAN "
                 "spiffe://...; it has %s)",
                 sans);
        return -1;
    }
    return 0;
}

int mt_tls_handshake(mt_tls_t *t)
{
    if (t->handshake_done)
        return 1;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    if (r != 1 && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        tls_set_error(t, "TLS handshake", e);
        tls_push(t); /* the alert tells the peer why */
        return -1;
    }
    int prc = tls_push(t);
    if (prc < 0) {
        snprintf(t->error, sizeof(t->error), "TLS handshake: write failed: %s", uv_strerror(prc));
        return -1;
    }
    if (r != 1)
        return 0;
    if (tls_check_peer(t) != 0)
        return -1;
    t->resumed = SSL_session_reused(t->ssl) == 1;
    t->handshake_done = true;
    return 1;
}

long mt_tls_read(mt_tls_t *t, char *dst, size_t cap)
{
    int r = SSL_read(t->ssl, dst, (int)MT_MIN(cap, (size_t)1 << 30));
    if (r > 0)
        return r;
    int e = SSL_get_error(t->ssl, r);
    if (BIO_ctrl_pending(t->wbio) > 0 && tls_push(t) < 0) {
        snprintf(t->error, sizeof(t->error), "TLS: write failed");
        return -1;
    }
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    if (e == SSL_ERROR_ZERO_RETURN)
        return MT_TLS_EOF;
    tls_set_error(t, "TLS read", e);
    return -1;
}

int mt_tls_read_all(mt_tls_t *t, mt_buf_pool_t *pool, mt_buf_t **bp, size_t room, size_t *got)
{
    *got = 0;
    for (;;) {
        /* Nothing buffered in the SSL and no input left: spare the SSL_read that would only
         * say "want read" (one per read otherwise: the cost of a pipelined depth of 1). */
        if (*got > 0 && !SSL_has_pending(t->ssl) && BIO_ctrl_pending(t->rbio) == 0)
            return 0;
        if (mt_buf_make_room(pool, bp, room, 0) != 0) {
            snprintf(t->error, sizeof(t->error), "TLS: out of memory");
            return -1;
        }
        long k = mt_tls_read(t, (*bp)->last, mt_buf_room(*bp));
        if (k <= 0)
            return (int)k; /* 0, MT_TLS_EOF or -1 */
        (*bp)->last += k;
        *got += (size_t)k;
    }
}

void mt_tls_shutdown(mt_tls_t *t)
{
    if (!t->handshake_done)
        return;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    tls_push(t);
    ERR_clear_error();
}

const char *mt_tls_security_policy(const mt_tls_t *t)
{
    return t->peer_verified && SSL_get0_peer_certificate(t->ssl) && t->conf->mode != MT_TLS_SIMPLE
               ? "mutual_tls"
               : "tls";
}

int mt_tls_sniff(const unsigned char *p, size_t n)
{
    /* A TLS record: content type 22 (handshake), then protocol version 3.x (x <= 4). */
    if (n == 0)
        return -1;
    if (p[0] != 0x16)
        return 0;
    if (n < 2)
        return -1;
    if (p[1] != 0x03)
        return 0;
    if (n < 3)
        return -1;
    return p[2] <= 0x04 ? 1 : 0;
}

void mt_tls_session_free(void *session)
{
    SSL_SESSION_free(session);
}
