/*
 * hash_bench.c - the hashes meltemi computes per request, in a loop, for instruction counts
 * under callgrind (see RESULTS.md, "Library swaps"). mt_meta_hash is what a RING_HASH
 * MetaRouter cluster computes on every request (the hashed attribute's value); the keys are
 * the lengths such values have: a short user id, a UUID, a JWT-like token.
 *
 *   cmake --build build --target bench_hash
 *   valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect=mt_meta_hash \
 *       build/bench_hash [calls per key, default 100000] [key index 0..2, default all]
 *
 * Prints a checksum so the compiler cannot drop the calls.
 */
#include "runtime/proxy/meta/meta_router.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPS_PER_KEY 100000u

int main(int argc, char **argv)
{
    static const char *keys[] = {
        "user-042",
        "6f1c2a9e-3b47-4d2e-9a61-0c5e8f7b2d14",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmN",
    };
    unsigned ops = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : OPS_PER_KEY;
    size_t nkeys = sizeof keys / sizeof keys[0], first = 0;
    if (argc > 2 && (size_t)strtoul(argv[2], NULL, 10) < nkeys) {
        first = (size_t)strtoul(argv[2], NULL, 10);
        nkeys = first + 1;
    }
    uint64_t sum = 0;
    for (size_t k = first; k < nkeys; k++) {
        char buf[80];
        size_t n = strlen(keys[k]);
        memcpy(buf, keys[k], n);
        for (unsigned i = 0; i < ops; i++) {
            buf[0] = (char)('a' + (i & 15)); /* vary the key so each call does the work */
            sum += mt_meta_hash(buf, n);
        }
        printf("%zu-byte key: %u calls\n", n, ops);
    }
    printf("checksum %016llx\n", (unsigned long long)sum);
    return 0;
}
