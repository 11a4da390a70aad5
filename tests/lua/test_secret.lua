-- luacheck: max line length 120 (expected messages are quoted whole)
-- Secret (kinds/secret.lua): data values are decoded by the C side (OpenSSL) byte for byte -
-- NUL and high bytes kept, exact length - stringData wins over data, and bad base64 is
-- reported once, at the Secret, with the decoder's reason.
local H = dofile("tests/lua/helper.lua")

local SINGLE = "outbound|6379||redis-single.redis.svc.cluster.local"
local SE = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: redis-single, namespace: redis}
spec:
  hosts: [redis-single.redis.svc.cluster.local]
  addresses: [127.0.0.10]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata: {name: rd, namespace: redis}
spec:
  host: redis-single
  trafficPolicy: {connectionPool: {redis: {auth: {secret: {name: pw, usernameField: user}}}}}
]]

local function secret(body)
  return "apiVersion: v1\nkind: Secret\nmetadata: {name: pw, namespace: redis}\n" .. body
end

local function auth_of(body)
  local s = H.snapshot_of({ ["a.yaml"] = SE, ["s.yaml"] = secret(body) })
  return s.clusters[SINGLE].redis.auth
end

H.test("data values keep NUL and high bytes and their exact length", function()
  -- "pw\0x\255" and "\0u\0"
  local auth = auth_of("data:\n  password: cHcAeP8=\n  user: AHUA\n")
  H.eq(auth.password, "pw\0x\255", "password bytes")
  H.eq(#auth.password, 5, "password length")
  H.eq(auth.username, "\0u\0", "username bytes")
  H.eq(#auth.username, 3, "username length")
end)

H.test("each padding length decodes to the right number of bytes", function()
  H.eq(auth_of("data: {password: YQ==, user: YWI=}\n").password, "a", "two '='")
  H.eq(auth_of("data: {password: YWI=, user: YWI=}\n").password, "ab", "one '='")
  H.eq(auth_of("data: {password: YWJj, user: YWI=}\n").password, "abc", "no '='")
end)

H.test("line breaks inside a data value are skipped; stringData wins over data", function()
  local auth = auth_of("data:\n  password: |\n    dGVzdHJl\n    ZGlz\n  user: YWI=\nstringData: {user: plain}\n")
  H.eq(auth.password, "testredis", "folded base64")
  H.eq(auth.username, "plain", "stringData over data")
end)

local function base64_error(value)
  local body = "data:\n  password: \"" .. value .. "\"\n  user: YWI=\n"
  local e = H.errors_of({ ["a.yaml"] = SE, ["s.yaml"] = secret(body) })
  H.eq(#e, 1, "one error: " .. table.concat(e, "; "))
  return e[1]
end

H.test("bad base64 is refused with the offset or the length/padding reason", function()
  H.eq(base64_error("YQ==YQ=="),
    "s.yaml:5: Secret/pw: data.password: invalid base64: illegal base64 data at input byte 4", "data after padding")
  H.eq(base64_error("YW-j"), "s.yaml:5: Secret/pw: data.password: invalid base64: illegal base64 data at input byte 2",
    "OpenSSL's end mark is not base64")
  H.eq(base64_error("YW Jj"), "s.yaml:5: Secret/pw: data.password: invalid base64: illegal base64 data at input byte 2",
    "space")
  H.eq(base64_error("YWJ"), "s.yaml:5: Secret/pw: data.password: invalid base64: illegal base64 data: length is not a "
    .. "multiple of 4 or bad padding", "partial quad")
  H.eq(base64_error("Y==="), "s.yaml:5: Secret/pw: data.password: invalid base64: illegal base64 data: length is not a "
    .. "multiple of 4 or bad padding", "three '='")
end)

H.test("the snapshot's sources keep key names only", function()
  local s = H.snapshot_of({ ["a.yaml"] = SE, ["s.yaml"] = secret("data: {password: cHcAeP8=, user: AHUA}\n") })
  for _, src in ipairs(s.sources) do
    if src.kind == "Secret" then
      H.eq(table.concat(src.spec.keys, ","), "password,user", "keys")
      H.eq(src.spec.data, nil, "no data")
    end
  end
end)

H.run()
