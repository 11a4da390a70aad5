/*
 * authz.c - AuthorizationPolicy (authz.h): the compiler's flattened policies read from the
 * snapshot, and the per-request check. No allocation on the request path.
 */
#include "runtime/core/authz.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- reading (main thread) ------------------------------------------------------------------ */

static const char *const field_names[MT_AZ__FIELDS] = {
    [MT_AZ_PRINCIPAL] = "principals",
    [MT_AZ_NAMESPACE] = "namespaces",
    [MT_AZ_IP] = "ip_blocks",
    [MT_AZ_REMOTE_IP] = "remote_ip_blocks",
    [MT_AZ_METHOD] = "methods",
    [MT_AZ_PATH] = "paths",
    [MT_AZ_KEY] = "keys",
    [MT_AZ_PORT] = "ports",
};

static int read_fail(char **err, const char *fmt, const char *arg)
{
    if (asprintf(err, fmt, arg) < 0)
        *err = NULL;
    return -1;
}

static int parse_cidr(const char *s, mt_authz_cidr_t *c)
{
    char ip[64];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n >= sizeof(ip))
        return -1;
    memcpy(ip, s, n);
    ip[n] = '\0';
    memset(c, 0, sizeof(*c));
    int max;
    if (inet_pton(AF_INET, ip, c->addr) == 1) {
        c->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, ip, c->addr) == 1) {
        c->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    long bits = max;
    if (slash) {
        char *end;
        bits = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || bits < 0 || bits > max)
            return -1;
    }
    c->bits = (uint8_t)bits;
    return 0;
}

/* t[key] (a list of strings) into one of the field's lists. */
static int read_values(lua_State *L, int t, const char *key, int kind, mt_authz_field_t *f,
                       bool negated, char **err)
{
    lua_getfield(L, t, key);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    int lt = lua_gettop(L);
    size_t n = lua_objlen(L, lt);
    if (negated)
        f->not_set = true;
    else
        f->set = true;
    mt_authz_strs_t *ss = negated ? &f->isnt : &f->is;
    mt_authz_cidrs_t *cs = negated ? &f->not_nets : &f->nets;
    mt_authz_ports_t *ps = negated ? &f->not_ports : &f->ports;
    int rc = 0;
    if (kind == MT_AZ_IP || kind == MT_AZ_REMOTE_IP)
        cs->v = calloc(n ? n : 1, sizeof(*cs->v));
    else if (kind == MT_AZ_PORT)
        ps->v = calloc(n ? n : 1, sizeof(*ps->v));
    else
        ss->v = calloc(n ? n : 1, sizeof(*ss->v));
    for (size_t i = 0; rc == 0 && i < n; i++) {
        lua_rawgeti(L, lt, (int)i + 1);
        const char *v = lua_tostring(L, -1);
        if (!v) {
            rc = read_fail(err, "authz: %s: not a string", key);
        } else if (kind == MT_AZ_IP || kind == MT_AZ_REMOTE_IP) {
            if (!cs->v || parse_cidr(v, &cs->v[cs->n++]) != 0)
                rc = read_fail(err, "authz: \"%s\" is not an address or CIDR block", v);
        } else if (kind == MT_AZ_PORT) {
            long p = strtol(v, NULL, 10);
            if (!ps->v || p <= 0 || p > 65535)
                rc = read_fail(err, "authz: \"%s\" is not a port", v);
            else
                ps->v[ps->n++] = (uint16_t)p;
        } else if (ss->v) {
            ss->v[ss->n++] = strdup(v);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

static int read_clause(lua_State *L, int t, mt_authz_clause_t *c, char **err)
{
    char key[64];
    for (int k = 0; k < MT_AZ__FIELDS; k++) {
        snprintf(key, sizeof(key), "not_%s", field_names[k]);
        if (read_values(L, t, field_names[k], k, &c->f[k], false, err) != 0 ||
            read_values(L, t, key, k, &c->f[k], true, err) != 0)
            return -1;
    }
    return 0;
}

static int read_clauses(lua_State *L, int t, const char *key, mt_authz_clause_t **out, uint32_t *n,
                        char **err)
{
    lua_getfield(L, t, key);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    int lt = lua_gettop(L);
    size_t m = lua_objlen(L, lt);
    *out = calloc(m ? m : 1, sizeof(**out));
    int rc = *out ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < m; i++) {
        lua_rawgeti(L, lt, (int)i + 1);
        rc = read_clause(L, lua_gettop(L), &(*out)[(*n)++], err);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

static int read_policy(lua_State *L, int t, mt_authz_policy_t *p, char **err)
{
    lua_getfield(L, t, "name");
    p->name = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_pop(L, 1);
    lua_getfield(L, t, "action");
    const char *a = lua_tostring(L, -1);
    p->action = a && strcmp(a, "DENY") == 0    ? MT_AUTHZ_DENY
                : a && strcmp(a, "AUDIT") == 0 ? MT_AUTHZ_AUDIT
                                               : MT_AUTHZ_ALLOW;
    lua_pop(L, 1);
    lua_getfield(L, t, "rules");
    int rc = 0;
    if (lua_istable(L, -1)) {
        int rt = lua_gettop(L);
        size_t n = lua_objlen(L, rt);
        p->rules = calloc(n ? n : 1, sizeof(*p->rules));
        for (size_t i = 0; p->rules && rc == 0 && i < n; i++) {
            lua_rawgeti(L, rt, (int)i + 1);
            int r = lua_gettop(L);
            mt_authz_rule_t *rule = &p->rules[p->n_rules++];
            rc = read_clauses(L, r, "from", &rule->from, &rule->n_from, err);
            if (rc == 0)
                rc = read_clauses(L, r, "to", &rule->to, &rule->n_to, err);
            if (rc == 0)
                rc = read_clauses(L, r, "when", &rule->when, &rule->n_when, err);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return rc;
}

mt_authz_t *mt_authz_from_lua(lua_State *L, int t, char **err)
{
    *err = NULL;
    lua_getfield(L, t, "authz");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    int at = lua_gettop(L);
    lua_getfield(L, at, "policies");
    mt_authz_t *a = calloc(1, sizeof(*a));
    int rc = a ? 0 : -1;
    if (a && lua_istable(L, -1)) {
        int pt = lua_gettop(L);
        size_t n = lua_objlen(L, pt);
        a->policies = calloc(n ? n : 1, sizeof(*a->policies));
        for (size_t i = 0; a->policies && rc == 0 && i < n; i++) {
            lua_rawgeti(L, pt, (int)i + 1);
            mt_authz_policy_t *p = &a->policies[a->n_policies++];
            rc = read_policy(L, lua_gettop(L), p, err);
            a->has_allow |= p->action == MT_AUTHZ_ALLOW;
            lua_pop(L, 1);
        }
    }
    lua_settop(L, at - 1);
    if (rc != 0) {
        if (!*err)
            *err = strdup("authz: out of memory");
        mt_authz_free(a);
        return NULL;
    }
    return a;
}

static void field_free(mt_authz_field_t *f)
{
    for (uint32_t i = 0; i < f->is.n; i++)
        free(f->is.v[i]);
    for (uint32_t i = 0; i < f->isnt.n; i++)
        free(f->isnt.v[i]);
    free(f->is.v);
    free(f->isnt.v);
    free(f->nets.v);
    free(f->not_nets.v);
    free(f->ports.v);
    free(f->not_ports.v);
}

static void clauses_free(mt_authz_clause_t *c, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        for (int k = 0; k < MT_AZ__FIELDS; k++)
            field_free(&c[i].f[k]);
    free(c);
}

void mt_authz_free(mt_authz_t *a)
{
    if (!a)
        return;
    for (uint32_t i = 0; i < a->n_policies; i++) {
        mt_authz_policy_t *p = &a->policies[i];
        for (uint32_t j = 0; j < p->n_rules; j++) {
            clauses_free(p->rules[j].from, p->rules[j].n_from);
            clauses_free(p->rules[j].to, p->rules[j].n_to);
            clauses_free(p->rules[j].when, p->rules[j].n_when);
        }
        free(p->rules);
        free(p->name);
    }
    free(a->policies);
    free(a);
}

/* ---- the check ------------------------------------------------------------------------------ */

/* Istio's string match: exact, "prefix*", "*suffix", "*" (any non-empty value). */
static bool str_match(const char *pat, const char *v, size_t n, bool nocase)
{
    size_t pl = strlen(pat);
    int (*cmp)(const char *, const char *, size_t) = nocase ? strncasecmp : strncmp;
    if (pl == 1 && pat[0] == '*')
        return true;
    if (pl > 0 && pat[pl - 1] == '*')
        return n >= pl - 1 && cmp(pat, v, pl - 1) == 0;
    if (pat[0] == '*')
        return n >= pl - 1 && cmp(pat + 1, v + n - (pl - 1), pl - 1) == 0;
    return n == pl && cmp(pat, v, n) == 0;
}

static bool strs_any(const mt_authz_strs_t *s, const char *v, size_t n, bool nocase)
{
    for (uint32_t i = 0; i < s->n; i++) {
        if (str_match(s->v[i], v, n, nocase))
            return true;
    }
    return false;
}

/* A key pattern is a prefix (a trailing "*" changes nothing; "*" alone is any key). */
static bool key_match(const mt_authz_strs_t *s, const char *k, size_t n)
{
    for (uint32_t i = 0; i < s->n; i++) {
        size_t pl = strlen(s->v[i]);
        if (pl > 0 && s->v[i][pl - 1] == '*')
            pl--;
        if (n >= pl && memcmp(s->v[i], k, pl) == 0)
            return true;
    }
    return false;
}

static bool cidr_has(const mt_authz_cidr_t *c, const struct sockaddr *sa)
{
    const uint8_t *a;
    if (sa->sa_family == AF_INET && c->family == AF_INET)
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    else if (sa->sa_family == AF_INET6 && c->family == AF_INET6)
        a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    else
        return false;
    uint32_t full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(a, c->addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (c->addr[full] & mask);
}

static bool nets_any(const mt_authz_cidrs_t *s, const struct sockaddr *sa)
{
    for (uint32_t i = 0; sa && i < s->n; i++) {
        if (cidr_has(&s->v[i], sa))
            return true;
    }
    return false;
}

static bool ports_any(const mt_authz_ports_t *s, uint16_t p)
{
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->v[i] == p)
            return true;
    }
    return false;
}

/* The namespace of a principal "td/ns/<ns>/sa/<sa>". */
static const char *principal_ns(const char *p, size_t *n)
{
    const char *s = p ? strstr(p, "/ns/") : NULL;
    if (!s)
        return NULL;
    s += 4;
    const char *e = strchr(s, '/');
    *n = e ? (size_t)(e - s) : strlen(s);
    return s;
}

/* A string field against one value (NULL: the request has none: only not* can match). */
static bool field_str(const mt_authz_field_t *f, const char *v, size_t n, bool nocase)
{
    if (f->set && (!v || !strs_any(&f->is, v, n, nocase)))
        return false;
    if (f->not_set && v && strs_any(&f->isnt, v, n, nocase))
        return false;
    return true;
}

/* keys: in ALLOW rules every key must match (all_keys), in DENY / AUDIT rules one does. */
static bool field_keys(const mt_authz_field_t *f, const mt_authz_request_t *r, bool all_keys)
{
    if (f->set) {
        if (r->n_keys == 0)
            return false;
        uint32_t hits = 0;
        for (uint32_t i = 0; i < r->n_keys; i++)
            hits += key_match(&f->is, r->keys[i], r->key_lens[i]);
        if (all_keys ? hits != r->n_keys : hits == 0)
            return false;
    }
    if (f->not_set) {
        uint32_t hits = 0;
        for (uint32_t i = 0; i < r->n_keys; i++)
            hits += key_match(&f->isnt, r->keys[i], r->key_lens[i]);
        if (all_keys ? hits > 0 : (r->n_keys > 0 && hits == r->n_keys))
            return false;
    }
    return true;
}

static bool clause_match(const mt_authz_clause_t *c, const mt_authz_request_t *r, bool all_keys)
{
    const mt_authz_field_t *f = c->f;
    size_t pn = r->principal ? strlen(r->principal) : 0, nsn = 0;
    const char *ns = principal_ns(r->principal, &nsn);
    if (!field_str(&f[MT_AZ_PRINCIPAL], r->principal, pn, false) ||
        !field_str(&f[MT_AZ_NAMESPACE], ns, nsn, false) ||
        !field_str(&f[MT_AZ_METHOD], r->method, r->method_len, r->method_nocase) ||
        !field_str(&f[MT_AZ_PATH], r->path, r->path_len, false) ||
        !field_keys(&f[MT_AZ_KEY], r, all_keys))
        return false;
    for (int k = MT_AZ_IP; k <= MT_AZ_REMOTE_IP; k++) {
        if (f[k].set && !nets_any(&f[k].nets, r->peer))
            return false;
        if (f[k].not_set && nets_any(&f[k].not_nets, r->peer))
            return false;
    }
    const mt_authz_field_t *pf = &f[MT_AZ_PORT];
    if (pf->set && !ports_any(&pf->ports, r->port))
        return false;
    if (pf->not_set && ports_any(&pf->not_ports, r->port))
        return false;
    return true;
}

static bool any_clause(const mt_authz_clause_t *c, uint32_t n, const mt_authz_request_t *r,
                       bool all_keys)
{
    if (n == 0)
        return true;
    for (uint32_t i = 0; i < n; i++) {
        if (clause_match(&c[i], r, all_keys))
            return true;
    }
    return false;
}

static bool policy_match(const mt_authz_policy_t *p, const mt_authz_request_t *r)
{
    bool all_keys = p->action == MT_AUTHZ_ALLOW;
    for (uint32_t i = 0; i < p->n_rules; i++) {
        const mt_authz_rule_t *rule = &p->rules[i];
        if (!any_clause(rule->from, rule->n_from, r, all_keys) ||
            !any_clause(rule->to, rule->n_to, r, all_keys))
            continue;
        bool when = true;
        for (uint32_t k = 0; when && k < rule->n_when; k++)
            when = clause_match(&rule->when[k], r, all_keys);
        if (when)
            return true;
    }
    return false;
}

mt_authz_verdict_t mt_authz_check(const mt_authz_t *a, const mt_authz_request_t *r)
{
    mt_authz_verdict_t v = {.allowed = true};
    for (uint32_t i = 0; i < a->n_policies; i++) {
        const mt_authz_policy_t *p = &a->policies[i];
        if (p->action == MT_AUTHZ_DENY && policy_match(p, r)) {
            v.allowed = false;
            v.policy = p->name;
            return v;
        }
    }
    for (uint32_t i = 0; i < a->n_policies && !v.audited; i++) {
        const mt_authz_policy_t *p = &a->policies[i];
        if (p->action == MT_AUTHZ_AUDIT && policy_match(p, r)) {
            v.audited = true;
            v.policy = p->name;
        }
    }
    if (!a->has_allow)
        return v;
    for (uint32_t i = 0; i < a->n_policies; i++) {
        const mt_authz_policy_t *p = &a->policies[i];
        if (p->action == MT_AUTHZ_ALLOW && policy_match(p, r))
            return v;
    }
    v.allowed = false;
    v.policy = NULL; /* no ALLOW policy matched */
    return v;
}
