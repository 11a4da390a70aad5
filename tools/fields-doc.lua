-- Prints the table of accepted-but-not-enforced fields that docs/configuration.md shows
-- between its fields:begin / fields:end markers (tests/lua/test_fields.lua checks it):
--   build/meltemi lua tools/fields-doc.lua
local fields = require "meltemi.fields"
local mods = {}
for _, n in ipairs({ "application_protocol", "secret", "endpoint_slice", "service_entry", "service",
  "destination_rule", "redis_destination", "redis_service", "meta_router", "sidecar", "lua_filter",
  "gateway", "peer_authentication", "authorization_policy" }) do
  mods[#mods + 1] = require("meltemi.kinds." .. n)
end
io.write(fields.markdown(mods))
