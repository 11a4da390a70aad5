-- meltemi.tls: Istio's TLS settings -> the snapshot's `tls` tables (docs/snapshot.md).
--
--   client(obj, c, path, t)   DestinationRule trafficPolicy.tls (ClientTLSSettings) -> a
--                             cluster's tls
--   server(obj, c, path, t)   Sidecar ingress[].tls (ServerTLSSettings) -> a listener's tls
--   istio_mutual_server(permissive)  PeerAuthentication STRICT / PERMISSIVE -> a listener's tls
--
-- Certificates come from files (paths as Istio writes them; a relative path is taken from the
-- directory of the YAML file) or from a kubernetes.io/tls Secret named by credentialName
-- (keys tls.crt, tls.key, ca.crt, or cert, key, cacert; the CA may also be in the Secret
-- <credentialName>-cacert, as Istio allows). The runtime reads the files when it builds the
-- snapshot and watches them for rotation. ISTIO_MUTUAL takes the workload's files
-- (cert-chain.pem, key.pem, root-cert.pem under meltemi's --istio-certs, /etc/certs by
-- default) and checks SPIFFE identities.

local C = require "meltemi.c"
local T = require "meltemi.schema"

local M = {}

M.client_schema = T.obj({
  mode = T.enum({ "DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL" }),
  clientCertificate = T.str{ non_empty = true }, privateKey = T.str{ non_empty = true },
  caCertificates = T.str{ non_empty = true }, credentialName = T.str{ non_empty = true },
  subjectAltNames = T.list(T.str{ non_empty = true }), sni = T.str{ non_empty = true },
  insecureSkipVerify = T.bool(), caCrl = T.str(),
  -- meltemi extension: ALPN protocols offered to the server.
  alpnProtocols = T.list(T.str{ non_empty = true }),
})

local sni_cert = T.obj({
  hosts = T.list(T.str{ non_empty = true }, { required = true, min_items = 1 }),
  serverCertificate = T.str{ non_empty = true }, privateKey = T.str{ non_empty = true },
  credentialName = T.str{ non_empty = true },
})

-- What the fields of ServerTLSSettings at `prefix` do (meltemi.fields), for the kinds that
-- embed it (Sidecar ingress, Gateway servers).
function M.server_declarations(prefix, consumed, unenforced)
  consumed[#consumed + 1] = prefix
  local no = {
    cipherSuites = "OpenSSL's default cipher suites are used",
    httpsRedirect = "no HTTP is served: there is nothing to redirect",
  }
  for f, why in pairs(no) do unenforced[prefix .. "." .. f] = why end
end

M.server_schema = T.obj({
  mode = T.enum({ "SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "PASSTHROUGH", "AUTO_PASSTHROUGH",
    "OPTIONAL_MUTUAL" }),
  serverCertificate = T.str{ non_empty = true }, privateKey = T.str{ non_empty = true },
  caCertificates = T.str{ non_empty = true }, credentialName = T.str{ non_empty = true },
  subjectAltNames = T.list(T.str{ non_empty = true }),
  minProtocolVersion = T.enum({ "TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3" }),
  maxProtocolVersion = T.enum({ "TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3" }),
  cipherSuites = T.list(T.str()), httpsRedirect = T.bool(),
  verifyCertificateSpki = T.list(T.str()), verifyCertificateHash = T.list(T.str()),
  caCrl = T.str(),
  -- meltemi extensions: ALPN protocols the listener accepts (in preference order), and
  -- certificates chosen by the client's SNI (the default is the one above).
  alpnProtocols = T.list(T.str{ non_empty = true }),
  sniCertificates = T.list(sni_cert),
})

-- A path from the YAML as the runtime should open it.
local function file_path(obj, p)
  if p:sub(1, 1) == "/" then return p end
  local dir = obj.file:match("^(.*)/[^/]*$") or "."
  return dir .. "/" .. p
end

local function secret_value(sec, keys)
  for _, k in ipairs(keys) do
    local v = sec.values[k]
    if v then return v.value end
  end
  return nil
end

-- credentialName's Secret (in obj's namespace) into out's *_pem fields; reports and returns
-- false when it is missing or lacks a certificate/key (want_key) or a CA (want_ca).
local function from_secret(obj, c, path, name, out, want_key, want_ca)
  local key = obj.namespace .. "/" .. name
  local sec = c.secrets[key]
  if not sec then
    if not c.tainted.secrets[key] then
      c:error(obj, path, string.format("Secret %q not found in namespace %s", name, obj.namespace))
    end
    return false
  end
  if want_key then
    out.cert_pem = secret_value(sec, { "tls.crt", "cert" })
    out.key_pem = secret_value(sec, { "tls.key", "key" })
    if not out.cert_pem or not out.key_pem then
      c:error(obj, path, string.format("Secret %s needs the keys tls.crt and tls.key (a "
        .. "kubernetes.io/tls Secret)", name))
      return false
    end
  end
  out.ca_pem = secret_value(sec, { "ca.crt", "cacert" })
  local ca_sec = c.secrets[key .. "-cacert"]
  if not out.ca_pem and ca_sec then out.ca_pem = secret_value(ca_sec, { "ca.crt", "cacert" }) end
  if want_ca and not out.ca_pem then
    c:error(obj, path, string.format("Secret %s has no ca.crt (nor a Secret %s-cacert): this "
      .. "mode verifies the peer", name, name))
    return false
  end
  return true
end

-- ClientTLSSettings -> cluster tls, or nil after reporting.
function M.client(obj, c, path, t)
  local mode = t.mode or "DISABLE"
  if mode == "DISABLE" then return { mode = "DISABLE" } end
  local out = { mode = mode, sni = t.sni, subject_alt_names = t.subjectAltNames,
    insecure_skip_verify = t.insecureSkipVerify or nil, alpn = t.alpnProtocols }
  if t.caCrl and t.caCrl ~= "" then
    if t.insecureSkipVerify then
      c:warn(obj, T.join(path, "caCrl"), "insecureSkipVerify: the server is not verified; ignored")
    else
      out.crl_file = file_path(obj, t.caCrl) -- runtime/core/tls.c: OpenSSL's CRL check
    end
  end
  if mode == "ISTIO_MUTUAL" then
    for _, f in ipairs({ "clientCertificate", "privateKey", "caCertificates", "credentialName" }) do
      if t[f] then
        c:warn(obj, T.join(path, f), "ISTIO_MUTUAL uses the workload's Istio certificates; ignored")
      end
    end
    return out
  end
  if t.credentialName then
    if t.clientCertificate or t.privateKey or t.caCertificates then
      c:warn(obj, T.join(path, "credentialName"), "credentialName is used; clientCertificate, "
        .. "privateKey and caCertificates are ignored (as Istio does)")
    end
    if not from_secret(obj, c, T.join(path, "credentialName"), t.credentialName, out,
      mode == "MUTUAL", false) then
      return nil
    end
  else
    if mode == "MUTUAL" and not (t.clientCertificate and t.privateKey) then
      c:error(obj, path, "mode MUTUAL needs clientCertificate and privateKey (or credentialName)")
      return nil
    end
    if (t.clientCertificate == nil) ~= (t.privateKey == nil) then
      c:error(obj, path, "clientCertificate and privateKey go together")
      return nil
    end
    out.cert_file = t.clientCertificate and file_path(obj, t.clientCertificate)
    out.key_file = t.privateKey and file_path(obj, t.privateKey)
    out.ca_file = t.caCertificates and file_path(obj, t.caCertificates)
  end
  if t.insecureSkipVerify and (out.ca_file or out.ca_pem or t.subjectAltNames) then
    c:warn(obj, T.join(path, "insecureSkipVerify"), "the server is not verified at all: "
      .. "caCertificates and subjectAltNames are not used")
  end
  return out
end

local function server_cert(obj, c, path, t, out)
  if t.credentialName then
    return from_secret(obj, c, T.join(path, "credentialName"), t.credentialName, out, true,
      out.mode == "MUTUAL")
  end
  if not (t.serverCertificate and t.privateKey) then
    c:error(obj, path, "a TLS listener needs serverCertificate and privateKey (or credentialName)")
    return false
  end
  out.cert_file = file_path(obj, t.serverCertificate)
  out.key_file = file_path(obj, t.privateKey)
  return true
end

-- verifyCertificateSpki (base64 of a SHA-256) / verifyCertificateHash (hex, colons allowed)
-- -> lowercase hex digests (runtime/core/tls.c compares them with the client certificate's),
-- or nil after reporting the first bad entry.
local function hex_of(bytes)
  return (bytes:gsub(".", function(ch) return string.format("%02x", ch:byte()) end))
end

local function pins(obj, c, path, t)
  local spki, hash = {}, {}
  for i, v in ipairs(t.verifyCertificateSpki or {}) do
    local raw, err = C.base64_decode(v)
    if not raw or #raw ~= 32 then
      c:error(obj, T.join(T.join(path, "verifyCertificateSpki"), i), string.format("%q: want the "
        .. "base64 of a SHA-256 digest (32 bytes)%s", v, err and (": " .. err) or
        string.format(", got %d bytes", raw and #raw or 0)))
      return nil
    end
    spki[#spki + 1] = hex_of(raw)
  end
  for i, v in ipairs(t.verifyCertificateHash or {}) do
    local h = v:gsub(":", ""):lower()
    if #h ~= 64 or h:find("[^0-9a-f]") then
      c:error(obj, T.join(T.join(path, "verifyCertificateHash"), i), string.format("%q: want the "
        .. "SHA-256 of the DER certificate in hex (64 digits, colons allowed)", v))
      return nil
    end
    hash[#hash + 1] = h
  end
  return spki, hash
end

-- ServerTLSSettings -> listener tls, or nil after reporting.
function M.server(obj, c, path, t)
  local mode = t.mode or "SIMPLE"
  if mode == "PASSTHROUGH" or mode == "AUTO_PASSTHROUGH" or mode == "OPTIONAL_MUTUAL" then
    c:error(obj, T.join(path, "mode"), mode .. " is not supported; use SIMPLE, MUTUAL or ISTIO_MUTUAL")
    return nil
  end
  for _, f in ipairs({ "minProtocolVersion", "maxProtocolVersion" }) do
    local v = t[f]
    if v and v ~= "TLS_AUTO" and v ~= "TLSV1_2" and v ~= "TLSV1_3" then
      c:warn(obj, T.join(path, f), v .. ": meltemi speaks TLS 1.2 and 1.3 only")
    end
  end
  local out = { mode = mode, subject_alt_names = t.subjectAltNames, alpn = t.alpnProtocols }
  if t.caCrl and t.caCrl ~= "" then
    if mode == "SIMPLE" then
      c:warn(obj, T.join(path, "caCrl"), "mode SIMPLE does not verify clients; ignored")
    else
      out.crl_file = file_path(obj, t.caCrl) -- runtime/core/tls.c: OpenSSL's CRL check
    end
  end
  local spki, hash = pins(obj, c, path, t)
  if not spki then return nil end
  if #spki + #hash > 0 then
    if mode == "SIMPLE" then
      c:warn(obj, T.join(path, #spki > 0 and "verifyCertificateSpki" or "verifyCertificateHash"),
        "mode SIMPLE does not ask clients for a certificate: nothing to pin; ignored")
    else -- runtime/core/tls.c: after the chain verifies, one pin of either list must match
      out.pin_spki_sha256 = #spki > 0 and spki or nil
      out.pin_cert_sha256 = #hash > 0 and hash or nil
    end
  end
  if mode == "ISTIO_MUTUAL" then return out end
  if not server_cert(obj, c, path, t, out) then return nil end
  if mode == "MUTUAL" and not t.credentialName then
    if not t.caCertificates then
      c:error(obj, path, "mode MUTUAL verifies clients: it needs caCertificates")
      return nil
    end
    out.ca_file = file_path(obj, t.caCertificates)
  end
  for i, sc in ipairs(t.sniCertificates or {}) do
    local p = T.join(T.join(path, "sniCertificates"), i)
    local one = { mode = "SIMPLE" }
    if not server_cert(obj, c, p, sc, one) then return nil end
    out.sni_certs = out.sni_certs or {}
    out.sni_certs[#out.sni_certs + 1] = { server_names = sc.hosts, cert_file = one.cert_file,
      key_file = one.key_file, cert_pem = one.cert_pem, key_pem = one.key_pem }
  end
  return out
end

-- PeerAuthentication mTLS on an inbound listener (STRICT, or PERMISSIVE: plain text too).
function M.istio_mutual_server(permissive)
  return { mode = "ISTIO_MUTUAL", permissive = permissive or nil }
end

return M
