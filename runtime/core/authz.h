/*
 * authz.h - Istio AuthorizationPolicy (security.istio.io/v1) for every protocol: the
 * listener's policies as the compiler flattened them (docs/snapshot.md, `authz`), and one
 * check per request that the proxies call with what they decoded (Redis: the command and its
 * keys; MetaProtocol: interface/service and method). Written once, below the proxies.
 *
 * Istio's evaluation order: a matching DENY policy denies; then, if any ALLOW policy exists,
 * the request must match one; AUDIT policies only mark the request as audited (logged).
 * CUSTOM is refused by the compiler.
 *
 * Matching, as Istio: values are exact, "prefix*", "*suffix" or "*"; lists inside a field
 * are OR, fields of a source / operation are AND, sources OR, operations OR, `when`
 * conditions AND. A `not*` field matches when none of its values does. "*" in principals or
 * namespaces needs an authenticated peer (mTLS). keys (meltemi's Redis extension) match key
 * prefixes: in an ALLOW rule every key of the command must match, in DENY and AUDIT rules
 * one key is enough (so neither can be sidestepped with a multi-key command).
 */
#ifndef MELTEMI_CORE_AUTHZ_H
#define MELTEMI_CORE_AUTHZ_H

#include "runtime/core/common.h"

#include <lua.h>
#include <sys/socket.h>

typedef enum mt_authz_action {
    MT_AUTHZ_ALLOW = 0,
    MT_AUTHZ_DENY,
    MT_AUTHZ_AUDIT,
} mt_authz_action_t;

typedef struct mt_authz_strs {
    char **v;
    uint32_t n;
} mt_authz_strs_t;

typedef struct mt_authz_cidr {
    int family; /* AF_INET / AF_INET6 */
    uint8_t bits;
    uint8_t addr[16];
} mt_authz_cidr_t;

typedef struct mt_authz_cidrs {
    mt_authz_cidr_t *v;
    uint32_t n;
} mt_authz_cidrs_t;

typedef struct mt_authz_ports {
    uint16_t *v;
    uint32_t n;
} mt_authz_ports_t;

/* One field of a source, an operation or a condition: its values and their not* values;
 * `set` / `not_set` tell an empty list from an absent field. */
typedef struct mt_authz_field {
    mt_authz_strs_t is, isnt;
    mt_authz_cidrs_t nets, not_nets;
    mt_authz_ports_t ports, not_ports;
    bool set, not_set;
} mt_authz_field_t;

enum {
    MT_AZ_PRINCIPAL = 0,
    MT_AZ_NAMESPACE,
    MT_AZ_IP,        /* ipBlocks: the peer's address */
    MT_AZ_REMOTE_IP, /* remoteIpBlocks: also the peer's address (nothing in front of meltemi) */
    MT_AZ_METHOD,
    MT_AZ_PATH,
    MT_AZ_KEY,
    MT_AZ_PORT,
    MT_AZ__FIELDS
};

typedef struct mt_authz_clause {
    mt_authz_field_t f[MT_AZ__FIELDS];
} mt_authz_clause_t;

typedef struct mt_authz_rule {
    mt_authz_clause_t *from; /* OR; none: any source */
    uint32_t n_from;
    mt_authz_clause_t *to; /* OR; none: any operation */
    uint32_t n_to;
    mt_authz_clause_t *when; /* AND (one field each); none: no condition */
    uint32_t n_when;
} mt_authz_rule_t;

typedef struct mt_authz_policy {
    char *name; /* namespace/name, for logs */
    mt_authz_action_t action;
    mt_authz_rule_t *rules; /* OR; none: matches nothing */
    uint32_t n_rules;
} mt_authz_policy_t;

typedef struct mt_authz {
    mt_authz_policy_t *policies;
    uint32_t n_policies;
    bool has_allow;
} mt_authz_t;

/* What a request is, as the proxy decoded it. Strings are byte strings (not NUL-terminated). */
typedef struct mt_authz_request {
    const char *principal; /* SPIFFE identity without "spiffe://", or NULL */
    const struct sockaddr *peer;
    uint16_t port; /* the listener's */
    const char *method;
    size_t method_len;
    bool method_nocase; /* Redis: command names in any case */
    const char *path;
    size_t path_len;
    const char *const *keys;
    const size_t *key_lens;
    uint32_t n_keys;
} mt_authz_request_t;

typedef struct mt_authz_verdict {
    bool allowed;
    const char *policy; /* the policy that denied, or that audited */
    bool audited;
} mt_authz_verdict_t;

/* The `authz` table of a listener (absolute index t), or NULL without one / on error (then
 * *err is set, malloc'd). */
mt_authz_t *mt_authz_from_lua(lua_State *L, int t, char **err);
void mt_authz_free(mt_authz_t *a);

mt_authz_verdict_t mt_authz_check(const mt_authz_t *a, const mt_authz_request_t *r);

#endif
