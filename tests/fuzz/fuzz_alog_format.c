/*
 * fuzz_alog_format.c - the access log's %FIELD% format parser (runtime/core/access_log.c) on
 * arbitrary text, then one line rendered with it: never a crash, a parse error names a field,
 * a rendered line is one line. The input is also a value (the command) in a JSON and a text
 * line, compared with a byte-at-a-time escaper written here: the writer's 16-byte fast path
 * must render every value exactly as the simple rule does.
 */
#include "runtime/core/access_log.h"

#include <stdlib.h>
#include <string.h>

/* The rule, one byte at a time: printable ASCII as it is (in JSON '"' and '\\' backslashed),
 * anything else \u00XX (JSON) or \xXX (text). */
static size_t reference_escape(char *o, const unsigned char *s, size_t n, int json)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x7f && !(json && (c == '"' || c == '\\'))) {
            o[k++] = (char)c;
        } else if (json && (c == '"' || c == '\\')) {
            o[k++] = '\\';
            o[k++] = (char)c;
        } else {
            memcpy(o + k, json ? "\\u00" : "\\x", json ? 4 : 2);
            k += json ? 4 : 2;
            o[k++] = hex[c >> 4];
            o[k++] = hex[c & 15];
        }
    }
    return k;
}

static void check_value(mt_alog_worker_t *aw, const unsigned char *data, size_t size, int json)
{
    if (size == 0)
        return;
    size_t n = size < 256 ? size : 256; /* values are cut at 256 bytes */
    mt_alog_conf_t c = {.json = json != 0};
    char *err = NULL;
    if (!json && mt_alog_parse_format(&c, "%COMMAND%", &err) != 0)
        abort();
    mt_alog_entry_t e = {.op = (const char *)data, .op_len = size};
    mt_alog_write(&c, aw, &e);
    char want[256 * 6 + 1];
    size_t k = reference_escape(want, data, n, json);
    const char *line = aw->buf;
    if (json) {
        const char *at = memmem(line, aw->len, "\"command\":\"", 11);
        if (!at || (size_t)(line + aw->len - at) < 11 + k + 1 || memcmp(at + 11, want, k) != 0 ||
            at[11 + k] != '"')
            abort();
    } else if (aw->len != k + 1 || memcmp(line, want, k) != 0) {
        abort();
    }
    aw->len = 0;
    free(c.text);
    free(c.segs);
}

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
    check_value(&aw, data, size, 1);
    check_value(&aw, data, size, 0);
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
