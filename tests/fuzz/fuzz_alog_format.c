/*
 * fuzz_alog_format.c - the access log's %FIELD% format parser (runtime/core/access_log.c) on
 * arbitrary text, then one line rendered with it: never a crash, a parse error names a field,
 * a rendered line is one line.
 */
#include "runtime/core/access_log.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    mt_alog_conf_t c = {0};
    char *err = NULL;
    static mt_alog_worker_t aw;
    static int init;
    if (!init) {
        mt_alog_worker_init(&aw, 0);
        init = 1;
    }
    if (mt_alog_parse_format(&c, text, &err) == 0) {
        mt_alog_entry_t e = {.start_ns = 1000000000,
                             .end_ns = 3000000000,
                             .op = "get\n\"x",
                             .code = "OK",
                             .protocol = "redis",
                             .bytes_in = 3};
        mt_alog_write(&c, &aw, &e);
        size_t n = aw.len;
        if (n == 0 || aw.buf[n - 1] != '\n')
            abort();
        if (strlen(text) == size && memchr(text, '\n', size) == NULL &&
            memchr(aw.buf, '\n', n - 1) != NULL)
            abort(); /* a format without a newline renders one line */
        aw.len = 0;
    } else if (!err || !strstr(err, "unknown field")) {
        if (err && !strstr(err, "out of memory"))
            abort();
    }
    free(err);
    free(c.text);
    free(c.segs);
    free(text);
    return 0;
}
