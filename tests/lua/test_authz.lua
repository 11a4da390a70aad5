-- luacheck: no max line length (inline YAML fixtures and expected messages)
-- AuthorizationPolicy in the compiler: flattened onto every listener, selector against the
-- Sidecar's workload labels, order by namespace/name, and the refusals (CUSTOM, JWT and HTTP
-- attributes, unknown `when` keys, bad CIDR blocks and ports).
local H = dofile("tests/lua/helper.lua")

local SE = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: r, namespace: redis}
spec:
  hosts: [r.redis.svc.cluster.local]
  addresses: [127.0.0.10]
  ports: [{number: 6380, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-redis: 7380}}]
]]

local function ap(name, spec)
  return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: " .. name .. ", namespace: redis}\nspec:\n" .. spec
end

H.test("AuthorizationPolicy: rules flattened onto the listeners, in name order", function()
  local s = H.snapshot_of({ ["se.yaml"] = SE,
    ["b.yaml"] = ap("b", "  action: DENY\n  rules:\n  - from: [{source: {ipBlocks: [10.0.0.0/8], notPrincipals: ['*']}}]\n    to: [{operation: {methods: [DEL], keys: ['secret:'], ports: [6380]}}]\n    when: [{key: source.namespace, values: [evil]}]\n"),
    ["a.yaml"] = ap("a", "  rules: [{}]\n") })
  local az = H.listener(s, "127.0.0.10:6380").authz
  H.eq(#az.policies, 2, "two policies")
  H.eq(az.policies[1].name, "redis/a", "name order"); H.eq(az.policies[1].action, "ALLOW", "default ALLOW")
  local r = az.policies[2].rules[1]
  H.eq(r.from[1].ip_blocks[1], "10.0.0.0/8", "ip"); H.eq(r.from[1].not_principals[1], "*", "not principals")
  H.eq(r.to[1].methods[1], "DEL", "methods"); H.eq(r.to[1].keys[1], "secret:", "keys"); H.eq(r.to[1].ports[1], "6380", "ports as text")
  H.eq(r.when[1].namespaces[1], "evil", "when")
end)

H.test("AuthorizationPolicy: selectors, and what is refused", function()
  local s = H.snapshot_of({ ["se.yaml"] = SE, ["a.yaml"] = ap("a", "  selector: {matchLabels: {app: nobody}}\n  action: DENY\n  rules: [{}]\n") })
  H.eq(H.listener(s, "127.0.0.10:6380").authz, nil, "a selector for another workload")
  H.find(s.warnings, "selects no workload meltemi serves", "warned")
  local e = H.errors_of({ ["se.yaml"] = SE, ["a.yaml"] = ap("a", "  action: CUSTOM\n  provider: {name: ext}\n") })
  H.find(e, "a.yaml:5: AuthorizationPolicy/a: spec.action: CUSTOM (an external authorizer) is not supported", "custom")
  e = H.errors_of({ ["se.yaml"] = SE, ["a.yaml"] = ap("a", "  rules:\n  - from: [{source: {requestPrincipals: ['*']}}]\n") })
  H.find(e, "spec.rules[0].from[0].source.requestPrincipals: not supported", "jwt")
  e = H.errors_of({ ["se.yaml"] = SE, ["a.yaml"] = ap("a", "  rules:\n  - to: [{operation: {hosts: [x]}}]\n") })
  H.find(e, "spec.rules[0].to[0].operation.hosts: not supported", "hosts")
  e = H.errors_of({ ["se.yaml"] = SE, ["a.yaml"] = ap("a", "  rules:\n  - when: [{key: 'request.headers[x]', values: [y]}]\n") })
  H.find(e, "spec.rules[0].when[0].key: \"request.headers[x]\" is not supported", "when key")
  e = H.errors_of({ ["se.yaml"] = SE, ["a.yaml"] = ap("a", "  rules:\n  - from: [{source: {ipBlocks: [10.0.0.300]}}]\n") })
  H.find(e, "spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.300\" is not an IP address or CIDR block", "cidr")
  e = H.errors_of({ ["se.yaml"] = SE, ["a.yaml"] = ap("a", "  rules:\n  - to: [{operation: {ports: [redis]}}]\n") })
  H.find(e, "\"redis\" is not a port number", "port")
end)

H.run()
