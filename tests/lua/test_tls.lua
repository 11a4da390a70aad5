-- luacheck: no max line length (inline YAML fixtures and expected messages)
-- TLS in the compiler (meltemi.tls): DestinationRule trafficPolicy.tls (files, credentialName,
-- per port, DISABLE overriding), Sidecar ingress tls (SIMPLE, MUTUAL, SNI certificates,
-- refusals), PeerAuthentication (STRICT / PERMISSIVE / DISABLE per port, selectors), and the
-- private key kept out of `meltemi compile` and /config_dump.
local H = dofile("tests/lua/helper.lua")
local dump = require "meltemi.dump"

local SE = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: r, namespace: redis}
spec:
  hosts: [r.redis.svc.cluster.local]
  addresses: [127.0.0.10]
  ports: [{number: 6380, name: tcp-redis}, {number: 6381, name: tcp-redis-b}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-redis: 7380, tcp-redis-b: 7381}}]
]]

local function dr(tls)
  return "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: r, namespace: redis}\nspec:\n  host: r\n  trafficPolicy:\n" .. tls
end

H.test("DestinationRule tls: files relative to the YAML, per-port DISABLE, SANs and SNI", function()
  local s = H.snapshot_of({ ["conf/se.yaml"] = SE, ["conf/dr.yaml"] = dr([[
    tls: {mode: MUTUAL, clientCertificate: certs/c.pem, privateKey: /abs/k.pem, caCertificates: ca.pem, sni: r.test, subjectAltNames: [r.test]}
    portLevelSettings:
      - port: {number: 6381}
        tls: {mode: DISABLE}
]]) })
  local t = s.clusters["outbound|6380||r.redis.svc.cluster.local"].tls
  H.eq(t.mode, "MUTUAL", "mode")
  H.eq(t.cert_file, "conf/certs/c.pem", "relative to the YAML file")
  H.eq(t.key_file, "/abs/k.pem", "absolute kept")
  H.eq(t.ca_file, "conf/ca.pem", "ca")
  H.eq(t.sni, "r.test", "sni"); H.eq(t.subject_alt_names[1], "r.test", "sans")
  H.eq(s.clusters["outbound|6381||r.redis.svc.cluster.local"].tls.mode, "DISABLE", "port override")
end)

H.test("DestinationRule tls: MUTUAL needs a certificate; credentialName reads the Secret", function()
  local e = H.errors_of({ ["se.yaml"] = SE, ["dr.yaml"] = dr("    tls: {mode: MUTUAL, caCertificates: ca.pem}\n") })
  H.find(e, "dr.yaml:7: DestinationRule/r: spec.trafficPolicy.tls: mode MUTUAL needs clientCertificate and privateKey (or credentialName)", "mutual")
  e = H.errors_of({ ["se.yaml"] = SE, ["dr.yaml"] = dr("    tls: {mode: SIMPLE, credentialName: nope}\n") })
  H.find(e, 'spec.trafficPolicy.tls.credentialName: Secret "nope" not found in namespace redis', "missing secret")
  local secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: c, namespace: redis}\ntype: kubernetes.io/tls\nstringData: {tls.crt: CERT, tls.key: KEY, ca.crt: CA}\n"
  local s = H.snapshot_of({ ["se.yaml"] = SE, ["s.yaml"] = secret, ["dr.yaml"] = dr("    tls: {mode: MUTUAL, credentialName: c}\n") })
  local t = s.clusters["outbound|6380||r.redis.svc.cluster.local"].tls
  H.eq(t.cert_pem, "CERT", "cert"); H.eq(t.key_pem, "KEY", "key"); H.eq(t.ca_pem, "CA", "ca")
  local text = dump.lua_redacted(s)
  H.ok(not text:find("KEY", 1, true), "the key is redacted in `meltemi compile`")
  H.ok(not dump.json(s):find("\"KEY\"", 1, true), "and in /config_dump")
  e = H.errors_of({ ["se.yaml"] = SE, ["s.yaml"] = secret:gsub("tls.key: KEY, ", ""), ["dr.yaml"] = dr("    tls: {mode: MUTUAL, credentialName: c}\n") })
  H.find(e, "Secret c needs the keys tls.crt and tls.key", "incomplete secret")
end)

H.test("DestinationRule tls: ignored fields warn; TCP upstreams take TLS", function()
  local s = H.snapshot_of({ ["se.yaml"] = SE, ["dr.yaml"] = dr("    tls: {mode: ISTIO_MUTUAL, caCrl: crl.pem, clientCertificate: c.pem}\n") })
  H.none(s.warnings, "caCrl", "caCrl is enforced")
  H.eq(s.clusters["outbound|6380||r.redis.svc.cluster.local"].tls.crl_file, "./crl.pem", "caCrl kept with ISTIO_MUTUAL")
  H.find(s.warnings, "spec.trafficPolicy.tls.clientCertificate: ISTIO_MUTUAL uses the workload's Istio certificates; ignored", "istio files")
  local tcp = SE:gsub("tcp%-redis%-b", "tcp-plain")
  s = H.snapshot_of({ ["se.yaml"] = tcp, ["dr.yaml"] = dr("    portLevelSettings:\n      - port: {number: 6381}\n        tls: {mode: SIMPLE, sni: b.test}\n") })
  local tc = s.clusters["outbound|6381||r.redis.svc.cluster.local"]
  H.eq(tc.protocol, "tcp", "a plain TCP cluster"); H.eq(tc.tls.mode, "SIMPLE", "tcp cluster tls")
  H.eq(tc.tls.sni, "b.test", "tcp cluster sni")
end)

H.test("auto-mTLS: endpoints labelled tlsMode istio get ISTIO_MUTUAL, others plain; a rule's tls wins", function()
  local se = SE:gsub("endpoints: %[.-%]\n", "endpoints:\n  - {address: 127.0.0.1, ports: {tcp-redis: 7380}, labels: {security.istio.io/tlsMode: istio}}\n  - {address: 127.0.0.2, ports: {tcp-redis: 7380}}\n")
  local s = H.snapshot_of({ ["se.yaml"] = se })
  local cl = s.clusters["outbound|6380||r.redis.svc.cluster.local"]
  H.eq(cl.tls.mode, "ISTIO_MUTUAL", "auto mode"); H.eq(cl.tls.auto, true, "marked auto")
  H.eq(cl.endpoints[1].plain, nil, "labelled: mTLS"); H.eq(cl.endpoints[2].plain, true, "unlabelled: plain")
  s = H.snapshot_of({ ["se.yaml"] = se, ["dr.yaml"] = dr("    tls: {mode: DISABLE}\n") })
  H.eq(s.clusters["outbound|6380||r.redis.svc.cluster.local"].tls.mode, "DISABLE", "an explicit DISABLE wins")
  s = H.snapshot_of({ ["se.yaml"] = SE })
  H.eq(s.clusters["outbound|6380||r.redis.svc.cluster.local"].tls, nil, "no label: no TLS")
end)

local function sidecar(tls, name)
  return "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata: {name: s, namespace: redis}\nspec:\n  workloadSelector: {labels: {app: db}}\n  ingress:\n    - port: {number: 16379, name: " .. (name or "tcp-redis") .. "}\n      bind: 127.0.0.1\n      defaultEndpoint: 127.0.0.1:6379\n" .. (tls and ("      tls: " .. tls .. "\n") or "")
end

H.test("Sidecar ingress tls: SIMPLE, MUTUAL, SNI certificates; PASSTHROUGH refused", function()
  local s = H.snapshot_of({ ["sc.yaml"] = sidecar("{mode: SIMPLE, serverCertificate: s.pem, privateKey: k.pem, alpnProtocols: [redis], sniCertificates: [{hosts: [b.test], serverCertificate: b.pem, privateKey: bk.pem}]}") })
  local t = H.listener(s, "127.0.0.1:16379").tls
  H.eq(t.mode, "SIMPLE", "mode"); H.eq(t.cert_file, "./s.pem", "cert"); H.eq(t.alpn[1], "redis", "alpn")
  H.eq(t.sni_certs[1].server_names[1], "b.test", "sni names"); H.eq(t.sni_certs[1].cert_file, "./b.pem", "sni cert")
  local e = H.errors_of({ ["sc.yaml"] = sidecar("{mode: MUTUAL, serverCertificate: s.pem, privateKey: k.pem}") })
  H.find(e, "mode MUTUAL verifies clients: it needs caCertificates", "mutual ca")
  e = H.errors_of({ ["sc.yaml"] = sidecar("{mode: PASSTHROUGH}") })
  H.find(e, "spec.ingress[0].tls.mode: PASSTHROUGH is not supported", "passthrough")
  s = H.snapshot_of({ ["sc.yaml"] = sidecar("{mode: SIMPLE, serverCertificate: s.pem, privateKey: k.pem}", "tcp-plain") })
  t = H.listener(s, "127.0.0.1:16379")
  H.eq(t.protocol, "tcp", "tcp listener"); H.eq(t.tls.mode, "SIMPLE", "tcp listener tls")
  s = H.snapshot_of({ ["sc.yaml"] = sidecar("{mode: SIMPLE, serverCertificate: s.pem, privateKey: k.pem, minProtocolVersion: TLSV1_0, cipherSuites: [x]}") })
  H.find(s.warnings, "minProtocolVersion: TLSV1_0: meltemi speaks TLS 1.2 and 1.3 only", "old tls")
  H.find(s.warnings, "tls.cipherSuites: accepted but not enforced: OpenSSL's default cipher suites are used", "ciphers")
end)

local function pa(spec, name)
  return "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " .. (name or "default") .. ", namespace: redis}\nspec:\n" .. spec
end

H.test("PeerAuthentication: STRICT, PERMISSIVE, per port, selectors", function()
  local s = H.snapshot_of({ ["sc.yaml"] = sidecar(), ["pa.yaml"] = pa("  mtls: {mode: STRICT}\n") })
  local t = H.listener(s, "127.0.0.1:16379").tls
  H.eq(t.mode, "ISTIO_MUTUAL", "strict"); H.eq(t.permissive, nil, "not permissive")
  s = H.snapshot_of({ ["sc.yaml"] = sidecar(), ["pa.yaml"] = pa("  mtls: {mode: PERMISSIVE}\n") })
  H.eq(H.listener(s, "127.0.0.1:16379").tls.permissive, true, "permissive")
  s = H.snapshot_of({ ["sc.yaml"] = sidecar(), ["pa.yaml"] = pa("  mtls: {mode: STRICT}\n  portLevelMtls:\n    6379: {mode: DISABLE}\n") })
  H.eq(H.listener(s, "127.0.0.1:16379").tls, nil, "the target port's DISABLE wins")
  s = H.snapshot_of({ ["sc.yaml"] = sidecar(), ["pa.yaml"] = pa("  mtls: {mode: STRICT}\n  portLevelMtls:\n    9999: {mode: DISABLE}\n") })
  H.find(s.warnings, "no inbound listener (Sidecar ingress) has this port", "unknown port")
  s = H.snapshot_of({ ["sc.yaml"] = sidecar(), ["a.yaml"] = pa("  mtls: {mode: STRICT}\n", "a"),
    ["b.yaml"] = pa("  selector: {matchLabels: {app: db}}\n  mtls: {mode: DISABLE}\n", "b") })
  H.eq(H.listener(s, "127.0.0.1:16379").tls, nil, "the workload's own beats the namespace's")
  s = H.snapshot_of({ ["sc.yaml"] = sidecar(), ["a.yaml"] = pa("  mtls: {mode: STRICT}\n", "a"),
    ["b.yaml"] = pa("  selector: {matchLabels: {app: other}}\n  mtls: {mode: DISABLE}\n", "b") })
  H.eq(H.listener(s, "127.0.0.1:16379").tls.mode, "ISTIO_MUTUAL", "a selector for another workload does not apply")
  s = H.snapshot_of({ ["sc.yaml"] = sidecar(), ["a.yaml"] = pa("  mtls: {mode: STRICT}\n", "a"), ["b.yaml"] = pa("  mtls: {mode: DISABLE}\n", "b") })
  H.find(s.warnings, "this one is ignored", "two at one level")
  H.eq(H.listener(s, "127.0.0.1:16379").tls.mode, "ISTIO_MUTUAL", "the first by name wins")
end)

local function gw(servers)
  return "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: redis}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n" .. servers
end

H.test("Gateway: TLS termination to a service, SNI certificates from servers on one port", function()
  local s = H.snapshot_of({ ["se.yaml"] = SE, ["g.yaml"] = gw([[
  - port: {number: 6443, name: redis-tls, protocol: TLS, targetPort: 6380}
    bind: 127.0.0.20
    hosts: [redis/r.redis.svc.cluster.local]
    tls: {mode: SIMPLE, serverCertificate: a.pem, privateKey: ak.pem}
  - port: {number: 6443, name: redis-tls, protocol: TLS, targetPort: 6380}
    bind: 127.0.0.20
    hosts: [r.redis.svc.cluster.local, "*.alias.test"]
    tls: {mode: SIMPLE, serverCertificate: b.pem, privateKey: bk.pem}
]]) })
  local l = H.listener(s, "127.0.0.20:6443")
  H.eq(l.protocol, "redis", "the destination port's protocol")
  H.eq(l.cluster, "outbound|6380||r.redis.svc.cluster.local", "to the service")
  H.eq(l.tls.cert_file, "./a.pem", "default certificate")
  H.eq(l.tls.sni_certs[1].cert_file, "./b.pem", "by SNI"); H.eq(l.tls.sni_certs[1].server_names[2], "*.alias.test", "names")
  local e = H.errors_of({ ["se.yaml"] = SE, ["g.yaml"] = gw([[
  - port: {number: 6443, name: redis-tls}
    hosts: [r.redis.svc.cluster.local]
]]) })
  H.find(e, "has several redis ports (6380, 6381)", "ambiguous port")
  e = H.errors_of({ ["se.yaml"] = SE, ["g.yaml"] = gw([[
  - port: {number: 6443, name: redis-tls, targetPort: 6380}
    hosts: [r.redis.svc.cluster.local]
    tls: {mode: SIMPLE, serverCertificate: a.pem, privateKey: ak.pem}
  - port: {number: 6443, name: redis-tls, targetPort: 6381}
    hosts: [r.redis.svc.cluster.local]
    tls: {mode: SIMPLE, serverCertificate: b.pem, privateKey: bk.pem}
]]) })
  H.find(e, "leads to outbound|6381||r.redis.svc.cluster.local here and to "
    .. "outbound|6380||r.redis.svc.cluster.local", "one SNI name, one destination")
end)

local SE2 = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: q, namespace: redis}
spec:
  hosts: [q.redis.svc.cluster.local]
  addresses: [127.0.0.11]
  ports: [{number: 6390, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-redis: 7390}}]
]]

H.test("Gateway: servers on one port leading to different services are routed by SNI", function()
  local e = H.errors_of({ ["se.yaml"] = SE, ["g.yaml"] = gw([[
  - port: {number: 6443, name: redis-tls, targetPort: 6380}
    bind: 127.0.0.20
    hosts: [redis/r.redis.svc.cluster.local, a.test]
    tls: {mode: SIMPLE, serverCertificate: a.pem, privateKey: ak.pem}
  - port: {number: 6443, name: redis-tls, targetPort: 6381}
    bind: 127.0.0.20
    hosts: [redis/r.redis.svc.cluster.local, b.test]
    tls: {mode: SIMPLE, serverCertificate: b.pem, privateKey: bk.pem}
]]) })
  H.find(e, "SNI name \"r.redis.svc.cluster.local\" leads to", "one name, two destinations")
  local s = H.snapshot_of({ ["se.yaml"] = SE, ["se2.yaml"] = SE2, ["g.yaml"] = gw([[
  - port: {number: 6443, name: redis-tls, targetPort: 6380}
    bind: 127.0.0.20
    hosts: [redis/r.redis.svc.cluster.local, a.test]
    tls: {mode: SIMPLE, serverCertificate: a.pem, privateKey: ak.pem}
  - port: {number: 6443, name: redis-tls}
    bind: 127.0.0.20
    hosts: [redis/q.redis.svc.cluster.local, b.test]
    tls: {mode: SIMPLE, serverCertificate: b.pem, privateKey: bk.pem}
]]) })
  local front = H.listener(s, "127.0.0.20:6443")
  H.eq(front.protocol, "sni", "the bound listener only routes"); H.eq(front.cluster, nil, "no destination")
  H.eq(front.tls.cert_file, "./a.pem", "default certificate"); H.eq(front.tls.sni_certs[1].cert_file, "./b.pem", "by SNI")
  local r1, r2 = front.tls.sni_routes[1], front.tls.sni_routes[2]
  H.eq(r1.server_names[2], "a.test", "first server's names")
  H.eq(r1.listener, "127.0.0.20:6443/r.redis.svc.cluster.local:6380", "first server's listener")
  H.eq(r2.listener, "127.0.0.20:6443/q.redis.svc.cluster.local:6390", "second server's listener")
  local l2 = H.listener(s, r2.listener)
  H.eq(l2.sni_of, "127.0.0.20:6443", "behind the front"); H.eq(l2.protocol, "redis", "its own protocol")
  H.eq(l2.cluster, "outbound|6390||q.redis.svc.cluster.local", "its own service")
end)

H.run()
