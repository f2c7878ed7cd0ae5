-- Test helper for test_ngrok_provider.sh: starts a tunnel provider and
-- prints what a recipe would see, then obeys commands on stdin.
--   czctl run tests/proxy/ngrok_driver.lua PROVIDER LOCAL_PORT [TIMEOUT] [HOST]
-- First line: {"url":..,"inspector":..,"pid":..,"upstream":{..}} or "error: MSG"
-- (exit 1). Then per stdin line: "healthy" -> "healthy" | "unhealthy: WHY";
-- "stop" -> stops (twice: stop is idempotent) and prints "stopped". EOF stops.
-- TUNNEL_CA=FILE: the CA the provider names for the proxy (opts.ca).
local tunnel = require "czctl.tunnel"
local cjson = require "cjson"

local name, port, timeout = arg[1], math.tointeger(tonumber(arg[2])), tonumber(arg[3])
local host = arg[4] ~= "" and arg[4] or nil
local ca
if os.getenv("TUNNEL_CA") then
  local f = assert(io.open(os.getenv("TUNNEL_CA"), "rb"))
  ca = f:read("a")
  f:close()
end
local handle, err = tunnel.start(name, {
  local_port = port, timeout = timeout, host = host, ca = ca,
  log = function(msg) io.stderr:write("log: ", msg, "\n") end,
})
if not handle then
  print("error: " .. err)
  return 1
end
print(cjson.encode{ url = handle.url, inspector = handle.inspector or cjson.null,
                    pid = handle.pid or cjson.null, upstream = handle.upstream })
io.stdout:flush()
for line in io.lines() do
  if line == "healthy" then
    local ok, why = handle:healthy()
    print(ok and "healthy" or ("unhealthy: " .. tostring(why)))
  elseif line == "stop" then
    handle:stop()
    handle:stop()
    print("stopped")
  end
  io.stdout:flush()
end
handle:stop()
return 0
