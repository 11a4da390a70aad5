/*
 * main.c - meltemi_bench_mrpc: the meltemi binary plus the C codec of mrpc (mrpc_codec.c),
 * registered as "mrpc_c" before meltemi's own main (runtime/server/main.c, compiled into
 * this target with main renamed meltemi_main) runs. Only tests/bench/lua_codec/ uses it.
 */
#include "protocols/codec.h"

#include <stdio.h>

extern const mt_codec_t mt_bench_codec_mrpc;
int meltemi_main(int argc, char **argv);
int main(int argc, char **argv);

int main(int argc, char **argv)
{
    if (mt_codec_register_builtins() != MT_OK || mt_codec_register(&mt_bench_codec_mrpc) != MT_OK) {
        fprintf(stderr, "meltemi_bench_mrpc: cannot register the mrpc_c codec\n");
        return 2;
    }
    return meltemi_main(argc, argv);
}
