-- czctl.tunnel.direct: no tunnel at all. For clusters that can reach this
-- machine (the sandbox, kind, minikube, a VPN), the proxy sends intercepted
-- traffic straight to http://HOST:LOCALPORT. Nothing is spawned.
local net = require "czctl.core.net"

local M = {}

M.DEFAULT_HOST = "127.0.0.1"
-- Optional provider field: no process to keep alive, so a session needs no
-- keeper for this provider.
M.needs_process = false

local Handle = {}
Handle.__index = Handle

function Handle:stop()
  self.stopped = true
  return true
end

--- true when something accepts connections on the local port.
function Handle:healthy()
  if self.stopped then return nil, "stopped" end
  local ok, err = net.probe(self.probe_host, self.local_port, 1)
  if ok then return true end
  return nil, string.format("nothing listens on %s:%d (%s)", self.probe_host, self.local_port, tostring(err))
end

--- Start a "direct tunnel".
---@param opts {local_port: integer, host?: string, log?: fun(msg: string)}
---@return table|nil handle
---@return string|nil err
function M.start(opts)
  opts = opts or {}
  local port = math.tointeger(opts.local_port)
  if not port or port < 1 or port > 65535 then
    return nil, "direct tunnel: local_port must be a port number"
  end
  local host = opts.host or M.DEFAULT_HOST
  if type(host) ~= "string" or not host:find("^[%w.%-]+$") then
    return nil, string.format("direct tunnel: invalid host %q", tostring(host))
  end
  local log = opts.log or function() end
  local url = string.format("http://%s:%d", host, port)
  local handle = setmetatable({
    url = url,
    upstream = { url = url },
    inspector = nil,
    pid = nil,
    local_port = port,
    probe_host = (host == "0.0.0.0") and "127.0.0.1" or host,
  }, Handle)
  if not net.probe(handle.probe_host, port, 0.5) then
    log(string.format("warning: nothing listens on %s:%d yet; intercepted requests fail until it does",
      handle.probe_host, port))
  end
  return handle
end

return M
