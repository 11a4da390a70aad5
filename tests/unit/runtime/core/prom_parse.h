/*
 * prom_parse.h - a strict reader of the Prometheus text format 0.0.4, for tests only. It
 * checks what a scraper would reject (names, label syntax and escapes, values, one TYPE per
 * family, before its samples; histogram rows need le) and returns the samples so a test can
 * look values up by name and labels.
 */
#ifndef MELTEMI_TEST_PROM_PARSE_H
#define MELTEMI_TEST_PROM_PARSE_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROM_MAX_LABELS 16 /* Istio's series carry 13 */

typedef struct prom_sample {
    char name[128];
    int nlabels;
    char key[PROM_MAX_LABELS][32];
    char val[PROM_MAX_LABELS][256];
    double value;
} prom_sample_t;

typedef struct prom_type {
    char name[128];
    char type[16];
} prom_type_t;

typedef struct prom_doc {
    prom_sample_t *samples;
    size_t nsamples;
    prom_type_t *types;
    size_t ntypes;
    char error[256]; /* empty if the text parsed */
} prom_doc_t;

static inline bool prom_name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

/* Reads a metric or label name at *p into out; returns false if there is none. */
static inline bool prom_read_name(const char **p, const char *end, char *out, size_t cap,
                                  bool metric)
{
    size_t n = 0;
    while (*p < end && prom_name_char(**p, n == 0) && (metric || **p != ':')) {
        if (n + 1 >= cap)
            return false;
        out[n++] = *(*p)++;
    }
    out[n] = '\0';
    return n > 0;
}

static inline bool prom_read_value(const char *s, const char *end, double *out)
{
    size_t n = (size_t)(end - s);
    char tmp[64];
    if (n == 0 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (strcmp(tmp, "+Inf") == 0) {
        *out = INFINITY;
        return true;
    }
    if (strcmp(tmp, "-Inf") == 0) {
        *out = -INFINITY;
        return true;
    }
    if (strcmp(tmp, "NaN") == 0) {
        *out = NAN;
        return true;
    }
    char *e;
    *out = strtod(tmp, &e);
    return *e == '\0' && !isinf(*out) && !isnan(*out);
}

static inline const prom_type_t *prom_type_of(const prom_doc_t *d, const char *name)
{
    for (size_t i = 0; i < d->ntypes; i++) {
        if (strcmp(d->types[i].name, name) == 0)
            return &d->types[i];
    }
    return NULL;
}

static inline bool prom_fail(prom_doc_t *d, size_t lineno, const char *why)
{
    snprintf(d->error, sizeof(d->error), "line %zu: %s", lineno, why);
    return false;
}

/* Parses a label set starting after '{'; leaves *p after '}'. */
static inline bool prom_read_labels(const char **p, const char *end, prom_sample_t *s)
{
    while (*p < end && **p != '}') {
        if (s->nlabels == PROM_MAX_LABELS)
            return false;
        int i = s->nlabels++;
        if (!prom_read_name(p, end, s->key[i], sizeof(s->key[i]), false))
            return false;
        if (*p + 1 >= end || (*p)[0] != '=' || (*p)[1] != '"')
            return false;
        *p += 2;
        size_t n = 0;
        while (*p < end && **p != '"') {
            char c = *(*p)++;
            if (c == '\n')
                return false;
            if (c == '\\') {
                if (*p >= end)
                    return false;
                c = *(*p)++;
                if (c == 'n')
                    c = '\n';
                else if (c != '\\' && c != '"')
                    return false;
            }
            if (n + 1 >= sizeof(s->val[i]))
                return false;
            s->val[i][n++] = c;
        }
        s->val[i][n] = '\0';
        if (*p >= end)
            return false;
        (*p)++; /* closing quote */
        if (*p < end && **p == ',')
            (*p)++;
    }
    if (*p >= end)
        return false;
    (*p)++;
    return true;
}

static inline const char *prom_family_of(const prom_doc_t *d, const prom_sample_t *s, char *base,
                                         size_t cap)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    snprintf(base, cap, "%s", s->name);
    if (prom_type_of(d, s->name))
        return base;
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(s->name), k = strlen(suffixes[i]);
        if (n > k && strcmp(s->name + n - k, suffixes[i]) == 0) {
            snprintf(base, cap, "%.*s", (int)(n - k), s->name);
            const prom_type_t *t = prom_type_of(d, base);
            if (t && strcmp(t->type, "histogram") == 0)
                return base;
        }
    }
    return NULL;
}

static inline bool prom_parse_comment(prom_doc_t *d, const char *l, const char *end, size_t lineno)
{
    bool is_type = (size_t)(end - l) > 7 && strncmp(l, "# TYPE ", 7) == 0;
    bool is_help = (size_t)(end - l) > 7 && strncmp(l, "# HELP ", 7) == 0;
    if (!is_type && !is_help)
        return true; /* a plain comment */
    const char *p = l + 7;
    char name[128];
    if (!prom_read_name(&p, end, name, sizeof(name), true) || p >= end || *p != ' ')
        return prom_fail(d, lineno, "bad HELP/TYPE name");
    if (!is_type)
        return true;
    p++;
    size_t n = (size_t)(end - p);
    const char *types[] = {"counter", "gauge", "histogram", "summary", "untyped"};
    bool known = false;
    for (size_t i = 0; i < 5; i++)
        known = known || (n == strlen(types[i]) && strncmp(p, types[i], n) == 0);
    if (!known)
        return prom_fail(d, lineno, "unknown type");
    if (prom_type_of(d, name))
        return prom_fail(d, lineno, "second TYPE line for a family");
    for (size_t i = 0; i < d->nsamples; i++) {
        if (strcmp(d->samples[i].name, name) == 0)
            return prom_fail(d, lineno, "TYPE after samples");
    }
    d->types = realloc(d->types, sizeof(*d->types) * (d->ntypes + 1));
    prom_type_t *t = &d->types[d->ntypes++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    snprintf(t->type, sizeof(t->type), "%.*s", (int)n, p);
    return true;
}

static inline bool prom_has_label(const prom_sample_t *s, const char *key)
{
    for (int i = 0; i < s->nlabels; i++) {
        if (strcmp(s->key[i], key) == 0)
            return true;
    }
    return false;
}

static inline bool prom_parse_sample(prom_doc_t *d, const char *l, const char *end, size_t lineno)
{
    prom_sample_t s;
    memset(&s, 0, sizeof(s));
    const char *p = l;
    if (!prom_read_name(&p, end, s.name, sizeof(s.name), true))
        return prom_fail(d, lineno, "bad metric name");
    if (p < end && *p == '{') {
        p++;
        if (!prom_read_labels(&p, end, &s))
            return prom_fail(d, lineno, "bad label set");
    }
    if (p >= end || *p != ' ')
        return prom_fail(d, lineno, "no space before the value");
    p++;
    const char *vend = memchr(p, ' ', (size_t)(end - p)); /* an optional timestamp follows */
    if (!prom_read_value(p, vend ? vend : end, &s.value))
        return prom_fail(d, lineno, "bad value");
    char base[128];
    if (prom_family_of(d, &s, base, sizeof(base)) == NULL)
        return prom_fail(d, lineno, "sample without a TYPE line");
    size_t blen = strlen(base);
    if (strcmp(s.name + blen, "_bucket") == 0 && !prom_has_label(&s, "le"))
        return prom_fail(d, lineno, "histogram bucket without le");
    d->samples = realloc(d->samples, sizeof(*d->samples) * (d->nsamples + 1));
    d->samples[d->nsamples++] = s;
    return true;
}

/* Parses text[0, len). Returns false and fills d->error on the first problem. */
static inline bool prom_parse(prom_doc_t *d, const char *text, size_t len)
{
    memset(d, 0, sizeof(*d));
    if (len == 0 || text[len - 1] != '\n')
        return prom_fail(d, 0, "text does not end with a newline");
    size_t lineno = 0;
    for (const char *l = text; l < text + len;) {
        const char *end = memchr(l, '\n', (size_t)(text + len - l));
        lineno++;
        if (end == l)
            return prom_fail(d, lineno, "empty line");
        bool ok = *l == '#' ? prom_parse_comment(d, l, end, lineno)
                            : prom_parse_sample(d, l, end, lineno);
        if (!ok)
            return false;
        l = end + 1;
    }
    return true;
}

static inline void prom_free(prom_doc_t *d)
{
    free(d->samples);
    free(d->types);
}

/* Finds the sample with exactly these labels: name, then key, value pairs, then NULL. */
static inline const prom_sample_t *prom_find(const prom_doc_t *d, const char *name, ...)
{
    for (size_t i = 0; i < d->nsamples; i++) {
        const prom_sample_t *s = &d->samples[i];
        if (strcmp(s->name, name) != 0)
            continue;
        va_list ap;
        va_start(ap, name);
        int n = 0;
        bool match = true;
        for (const char *k = va_arg(ap, const char *); k; k = va_arg(ap, const char *)) {
            const char *v = va_arg(ap, const char *);
            bool found = false;
            for (int j = 0; j < s->nlabels; j++)
                found = found || (strcmp(s->key[j], k) == 0 && strcmp(s->val[j], v) == 0);
            match = match && found;
            n++;
        }
        va_end(ap);
        if (match && n == s->nlabels)
            return s;
    }
    return NULL;
}

/* Sum of the values of every sample of name whose labels include the key, value pairs given
 * (NULL-terminated); NaN when none matches. */
static inline double prom_sum(const prom_doc_t *d, const char *name, ...)
{
    double sum = 0;
    bool any = false;
    for (size_t i = 0; i < d->nsamples; i++) {
        const prom_sample_t *s = &d->samples[i];
        if (strcmp(s->name, name) != 0)
            continue;
        va_list ap;
        va_start(ap, name);
        bool match = true;
        for (const char *k = va_arg(ap, const char *); k; k = va_arg(ap, const char *)) {
            const char *v = va_arg(ap, const char *);
            bool found = false;
            for (int j = 0; j < s->nlabels; j++)
                found = found || (strcmp(s->key[j], k) == 0 && strcmp(s->val[j], v) == 0);
            match = match && found;
        }
        va_end(ap);
        if (match) {
            sum += s->value;
            any = true;
        }
    }
    return any ? sum : NAN;
}

/* Number of samples of a metric name carrying label key=value. */
static inline size_t prom_count(const prom_doc_t *d, const char *name, const char *key,
                                const char *value)
{
    size_t n = 0;
    for (size_t i = 0; i < d->nsamples; i++) {
        const prom_sample_t *s = &d->samples[i];
        if (strcmp(s->name, name) != 0)
            continue;
        for (int j = 0; j < s->nlabels; j++) {
            if (strcmp(s->key[j], key) == 0 && strcmp(s->val[j], value) == 0)
                n++;
        }
    }
    return n;
}

#endif
