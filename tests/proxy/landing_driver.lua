-- Test helper: a TLS landing (czctl.core.landing with a session's
-- certificates) on HOST forwarding to TARGET_HOST:TARGET_PORT (default host 127.0.0.1), as the direct
-- tunnel runs it, for tests that need a loopback address (the provider
-- refuses loopback, which pods cannot reach).
--   czctl run tests/proxy/landing_driver.lua HOST TARGET_PORT [TARGET_HOST]
-- First line: {"url":..,"upstream":{url, tls={ca,name,client_cert,client_key,fallback_cert,fallback_key}}};
-- then per stdin line "stats" -> {"accepted":..,"untrusted":..,...}; EOF closes.
local landing = require "czctl.core.landing"
local cjson = require "cjson"

local host, target, target_host = arg[1], math.tointeger(tonumber(arg[2])), arg[3] or "127.0.0.1"
local pki = assert(landing.session_pki{ server_name = host })
local l = assert(landing.open{ host = host, target_host = target_host, target_port = target, allow = "127.0.0.0/8",
                               tls = { cert = pki.server_cert, key = pki.server_key, client_ca = pki.ca_cert } })
local _, port = l:address()
local url = string.format("https://%s:%d", host, port)
print(cjson.encode{ url = url, upstream = { url = url, keep_host = true, tls = {
  ca = pki.ca_cert, name = host, client_cert = pki.client_cert, client_key = pki.client_key,
  fallback_cert = pki.fallback_cert, fallback_key = pki.fallback_key } } })
io.stdout:flush()
for line in io.lines() do
  if line == "stats" then print(cjson.encode(l:stats())) end
  io.stdout:flush()
end
l:close()
return 0
