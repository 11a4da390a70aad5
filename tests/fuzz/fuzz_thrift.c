/*
 * fuzz_thrift.c - libFuzzer harness for the Thrift codec: decodes arbitrary connection bytes
 * and checks the codec properties of tests/unit/protocols/codec_props.h on every frame.
 * The first input byte selects limits, feeding step and error kind.
 *
 * Build and run from the repository root (clang's libFuzzer with ASan and UBSan):
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I. \
 *         protocols/codec.c protocols/thrift/thrift.c protocols/thrift/thrift_proto.c \
 *         tests/fuzz/fuzz_thrift.c -o /tmp/fuzz_thrift
 *     /tmp/fuzz_thrift -max_total_time=60 -max_len=4096 CORPUS_DIR
 *
 * docs/codecs.md says how to seed the corpus.
 */
#include "protocols/codec.h"
#include "tests/unit/protocols/codec_props.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cp_run(&mt_codec_thrift, true, data, size);
    return 0;
}
