-- czctl.tunnel: the registry of tunnel providers. A provider is a Lua module
-- `czctl.tunnel.<name>` (built in: ngrok, direct, kube; a user adds one by putting
-- czctl/tunnel/<name>.lua on package.path) with one function (and optional
-- parts the workflow, the keeper and close use when present:
-- detect_host(client), prepare(run), wait_ready(run, timeout),
-- delete(client, namespace, id, step), find(client, scope), handle:poll()
-- and handle.poll_interval, in_cluster_hop (its URL is inside the cluster,
-- guarded by a NetworkPolicy prepare made: no warning about a tunnel without
-- secret); see czctl.tunnel.direct and czctl.tunnel.kube):
--
--   provider.start{ local_port=, host=, log=function(msg) end, ... }
--     -> handle | nil, err
--   handle.url        what the proxy sends intercepted traffic to
--   handle.upstream   { url=, host_header=, extra_headers= } for proxy.render
--   handle.inspector  URL of a traffic inspector, or nil
--   handle.pid        a process that must stay alive, or nil
--   handle:stop()     idempotent
--   handle:healthy()  true | nil, why
--
-- and, optionally, what it carries (czctl.proxy.protocol.check_tunnel):
--   provider.carries       list of "http" (HTTP/1.1), "h2c" (HTTP/2, gRPC),
--                          "tcp" (whole connections); default { "http" }
--   provider.cannot_carry  { [mode] = "why not" } for the refusal message
--
-- This module only finds and checks providers; it starts nothing itself.
local M = {}

M.BUILTIN = { "ngrok", "direct", "kube" }

--- Load a provider by name.
---@param name string
---@return table|nil provider
---@return string|nil err one line
function M.get(name)
  if type(name) ~= "string" or not name:find("^[%w_][%w_%-]*$") then
    return nil, string.format("invalid tunnel provider name %q", tostring(name))
  end
  local module = "czctl.tunnel." .. name
  local ok, provider = pcall(require, module)
  if not ok then
    local msg = tostring(provider)
    if msg:find("module '" .. module .. "' not found", 1, true) then
      return nil, string.format("unknown tunnel provider %q (built in: %s; or add %s.lua on package.path)",
        name, table.concat(M.BUILTIN, ", "), module:gsub("%.", "/"))
    end
    return nil, string.format("tunnel provider %q failed to load: %s", name, msg:match("^[^\n]*"))
  end
  if type(provider) ~= "table" or type(provider.start) ~= "function" then
    return nil, string.format("tunnel provider %q has no start function", name)
  end
  return provider
end

--- Check that a handle returned by a provider has the documented shape.
---@param handle table
---@return boolean|nil ok
---@return string|nil err
function M.check_handle(handle)
  if type(handle) ~= "table" then return nil, "start returned no handle" end
  if type(handle.url) ~= "string" or not handle.url:find("^https?://") then
    return nil, "handle.url must be an http:// or https:// URL"
  end
  local up = handle.upstream
  if type(up) ~= "table" or type(up.url) ~= "string" then return nil, "handle.upstream.url is missing" end
  if type(handle.stop) ~= "function" then return nil, "handle:stop() is missing" end
  if type(handle.healthy) ~= "function" then return nil, "handle:healthy() is missing" end
  if handle.pid ~= nil and math.type(handle.pid) ~= "integer" then return nil, "handle.pid must be an integer" end
  return true
end

--- Load a provider and start a tunnel with it; the handle is checked.
---@param name string
---@param opts table provider options (local_port, host, log, ...)
---@return table|nil handle
---@return string|nil err
function M.start(name, opts)
  local provider, err = M.get(name)
  if not provider then return nil, err end
  local handle, serr = provider.start(opts or {})
  if not handle then return nil, serr end
  local ok, cerr = M.check_handle(handle)
  if not ok then
    if type(handle) == "table" and type(handle.stop) == "function" then pcall(handle.stop, handle) end
    return nil, string.format("tunnel provider %q: %s", name, cerr)
  end
  return handle
end

return M
