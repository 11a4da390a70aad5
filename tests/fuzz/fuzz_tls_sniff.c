/*
 * fuzz_tls_sniff.c - libFuzzer harness for what a PERMISSIVE listener does with a client's
 * first bytes: mt_tls_sniff at every prefix (a decision, once made, never changes with more
 * bytes), then, for what it calls TLS, the server side of runtime/core/tls.c fed the bytes in
 * two reads (split where the first input byte says): handshake, reads, and the refusal text.
 * OpenSSL parses the ClientHello; this checks that our side of it never misbehaves.
 *
 * Built by CMake with clang (MELTEMI_FUZZ); run: build-clang/fuzz_tls_sniff -max_len=4096 DIR
 */
#include "runtime/core/tls.h"
#include "tests/unit/runtime/core/tls_testkeys.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static mt_tls_conf_t *server_conf(void)
{
    static mt_tls_conf_t *conf;
    if (conf)
        return conf;
    static tk_pair_t ca, leaf;
    ca = tk_make(NULL, "fuzz ca", NULL, 0, 86400);
    leaf = tk_make(&ca, "fuzz server", "DNS:fuzz.test", 0, 86400);
    conf = calloc(1, sizeof(*conf));
    conf->refs = 1; /* ours, for the whole run */
    conf->mode = MT_TLS_SIMPLE;
    conf->server = true;
    conf->what = strdup("listener fuzz");
    conf->certs = calloc(1, sizeof(*conf->certs));
    X509_up_ref(leaf.cert);
    EVP_PKEY_up_ref(leaf.key);
    conf->certs[0].x509 = leaf.cert;
    conf->certs[0].pkey = leaf.key;
    conf->n_certs = 1;
    return conf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t split = data[0];
    data++;
    size--;
    int decided = -1;
    for (size_t n = 0; n <= size; n++) {
        int r = mt_tls_sniff(data, n);
        if (decided >= 0 && r != decided)
            abort(); /* a decision changed with more bytes */
        if (r >= 0)
            decided = r;
    }
    if (decided != 1)
        return 0;
    mt_buf_pool_t pool;
    mt_buf_pool_init(&pool);
    mt_outq_t plain;
    mt_outq_init(&plain, &pool, NULL);
    char err[256];
    mt_tls_t *t = mt_tls_new(server_conf(), 0, &plain, &pool, NULL, err, sizeof(err));
    if (!t)
        abort();
    split = split < size ? split : size;
    const char *parts[2] = {(const char *)data, (const char *)data + split};
    size_t lens[2] = {split, size - split};
    for (int i = 0; i < 2; i++) {
        if (mt_tls_feed(t, parts[i], lens[i]) != 0)
            break;
        int h = mt_tls_handshake(t);
        if (h < 0) {
            if (!t->error[0] || strlen(t->error) >= sizeof(t->error))
                abort(); /* a refusal always says why */
            break;
        }
        char buf[512];
        while (h == 1 && mt_tls_read(t, buf, sizeof(buf)) > 0) {
        }
    }
    mt_outq_drop(&t->raw, t->raw.queued_bytes);
    mt_tls_free(t);
    mt_outq_reset(&plain);
    mt_buf_pool_destroy(&pool);
    return 0;
}
