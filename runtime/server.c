/* server.c - placeholder until the runtime lands (being written now). */
#include "runtime/server.h"
#include "runtime/log.h"

int mt_server_run(const mt_server_options_t *opts)
{
    (void)opts;
    mt_error("run: not implemented yet");
    return 1;
}
