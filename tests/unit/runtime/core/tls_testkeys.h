/*
 * tls_testkeys.h - certificates made in-process with OpenSSL for the TLS unit tests and the
 * PERMISSIVE fuzz target: a CA and leaves it signs with the SANs asked for, as PEM strings
 * (malloc'd; the caller frees them). Nothing fixed is checked in.
 */
#ifndef MELTEMI_TESTS_TLS_TESTKEYS_H
#define MELTEMI_TESTS_TLS_TESTKEYS_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

typedef struct tk_pair {
    EVP_PKEY *key;
    X509 *cert;
    char *cert_pem, *key_pem;
} tk_pair_t;

static inline char *tk_bio_string(BIO *b)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = malloc((size_t)n + 1);
    memcpy(s, p, (size_t)n);
    s[n] = '\0';
    BIO_free(b);
    return s;
}

static inline void tk_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
}

/* A certificate for cn with sans ("URI:spiffe://...,DNS:x", or NULL), signed by ca (NULL:
 * self-signed CA). Valid from `from` to `to` seconds relative to now. */
static inline tk_pair_t tk_make(const tk_pair_t *ca, const char *cn, const char *sans, long from,
                                long to)
{
    static long serial = 1;
    tk_pair_t p = {0};
    p.key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from);
    X509_gmtime_adj(X509_getm_notAfter(x), to);
    X509_set_pubkey(x, p.key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, ca ? X509_get_subject_name(ca->cert) : name);
    tk_ext(x, ca ? ca->cert : NULL, NID_basic_constraints, ca ? "CA:FALSE" : "critical,CA:TRUE");
    if (sans)
        tk_ext(x, ca ? ca->cert : NULL, NID_subject_alt_name, sans);
    X509_sign(x, ca ? ca->key : p.key, EVP_sha256());
    p.cert = x;
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    p.cert_pem = tk_bio_string(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, p.key, NULL, NULL, 0, NULL, NULL);
    p.key_pem = tk_bio_string(b);
    return p;
}

static inline void tk_free(tk_pair_t *p)
{
    EVP_PKEY_free(p->key);
    X509_free(p->cert);
    free(p->cert_pem);
    free(p->key_pem);
    memset(p, 0, sizeof(*p));
}

#endif
