-- The `fingerprint` of every cluster and listener (meltemi.fingerprint, docs/snapshot.md):
-- workers keep the pools of a cluster whose fingerprint is unchanged across a reload, so
-- equal tables must give equal fingerprints and a changed one a different fingerprint.
local H = dofile("tests/lua/helper.lua")
local fingerprint = require "meltemi.fingerprint"

local SERVICES = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: a, namespace: redis}
spec:
  hosts: [a.redis.svc.cluster.local]
  addresses: [127.0.5.1]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-redis: 6391}}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: b, namespace: redis}
spec:
  hosts: [b.redis.svc.cluster.local]
  addresses: [127.0.5.2]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-redis: 6392}}]
]]
local A = "outbound|6379||a.redis.svc.cluster.local"
local B = "outbound|6379||b.redis.svc.cluster.local"

local function compile(text) return H.snapshot_of({ ["a.yaml"] = text }) end

H.test("every cluster and listener has a fingerprint, computed without its own field", function()
  local snap = compile(SERVICES)
  for name, cl in pairs(snap.clusters) do
    H.ok(type(cl.fingerprint) == "string" and cl.fingerprint ~= "", "cluster " .. name)
    H.eq(fingerprint.of(cl), cl.fingerprint, "cluster " .. name .. " recomputed")
  end
  for _, l in ipairs(snap.listeners) do
    H.ok(type(l.fingerprint) == "string" and l.fingerprint ~= "", "listener " .. l.name)
    H.eq(fingerprint.of(l), l.fingerprint, "listener " .. l.name .. " recomputed")
  end
end)

H.test("the same cluster in two compiles has the same fingerprint", function()
  local one, two = compile(SERVICES), compile(SERVICES)
  H.eq(two.clusters[A].fingerprint, one.clusters[A].fingerprint, "cluster a")
  H.eq(two.clusters[B].fingerprint, one.clusters[B].fingerprint, "cluster b")
  H.eq(two.listeners[1].fingerprint, one.listeners[1].fingerprint, "listener a")
  -- a comment and a blank line move the ServiceEntry's lines, not its cluster
  local moved = compile("# moved down\n\n" .. SERVICES)
  H.eq(moved.clusters[A].fingerprint, one.clusters[A].fingerprint, "cluster a after a comment")
end)

H.test("a changed endpoint changes that cluster's fingerprint, and only that one", function()
  local one = compile(SERVICES)
  local two = compile((SERVICES:gsub("tcp%-redis: 6391", "tcp-redis: 6393")))
  H.ok(two.clusters[A].fingerprint ~= one.clusters[A].fingerprint, "cluster a: new endpoint port")
  H.eq(two.clusters[B].fingerprint, one.clusters[B].fingerprint, "cluster b untouched")
  local three = compile((SERVICES:gsub("address: 127.0.0.1, ports: {tcp%-redis: 6392}",
    "address: 127.0.0.2, ports: {tcp-redis: 6392}")))
  H.ok(three.clusters[B].fingerprint ~= one.clusters[B].fingerprint, "cluster b: new endpoint address")
  H.eq(three.clusters[A].fingerprint, one.clusters[A].fingerprint, "cluster a untouched")
end)

H.test("the fingerprint does not depend on the order fields were set in", function()
  local x = { name = "c", port = 1, endpoints = { { address = "h", port = 2 } },
    labels = { a = "1", b = "2" } }
  local y = { labels = { b = "2", a = "1" }, endpoints = { { port = 2, address = "h" } },
    port = 1, name = "c" }
  H.eq(fingerprint.of(y), fingerprint.of(x), "same content")
  y.endpoints[1].port = 3
  H.ok(fingerprint.of(y) ~= fingerprint.of(x), "different content")
  x.fingerprint = "stale"
  H.eq(fingerprint.of(x), fingerprint.of({ name = "c", port = 1, endpoints = { { address = "h", port = 2 } },
    labels = { a = "1", b = "2" } }), "an old fingerprint field is left out")
  H.eq(x.fingerprint, "stale", "and left in place")
end)

H.run()
