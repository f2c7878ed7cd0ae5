-- czctl.tunnel.direct: for clusters that reach this machine themselves (kind,
-- minikube, the sandbox, a VPN). The proxy sends intercepted traffic to a
-- landing (czctl.core.landing) that listens on the address of this machine
-- the cluster reaches, and admits only peers from that address's network
-- (the cluster's side); the landing forwards each connection to the local
-- port on 127.0.0.1, where the app keeps listening. The landing lives in the
-- session's holder process (the keeper), so this provider needs a process.
--
-- Only the session's proxy gets in (docs/decisions.md section 2): each start
-- makes a CA for the session, a certificate for the landing (naming the
-- address the proxy dials) and one for the proxy; the landing speaks TLS and
-- admits only a peer showing the proxy's certificate. The CA's key is never
-- kept; the proxy's certificate and key leave this module only in
-- handle.upstream.tls, for the proxy's Secret, with a second certificate
-- for the landing's name (fallback_cert): the proxy's stand-in that passes
-- a TCP-level intercept's connections to the original when the landing
-- cannot be reached (czctl.proxy.route).
--
-- The address is found, when not given, from the cluster's Nodes: the
-- address this machine sends from towards a Node's InternalIP, when that
-- Node is on a network of this machine (kind's and minikube's docker network,
-- the sandbox's host link): that is the host gateway pods reach. Docker
-- Desktop (context docker-desktop) lands on host.docker.internal.
local landing = require "czctl.core.landing"
local net = require "czctl.core.net"

local M = {}

-- Where the app listens; the landing forwards there.
M.APP_HOST = "127.0.0.1"
-- Docker Desktop's name for this machine; its forwarder connects from this
-- machine's loopback, so the landing listens there.
M.DOCKER_DESKTOP_HOST = "host.docker.internal"
M.NEEDS_HOST = "give the address of this machine that the cluster reaches with --tunnel-host ADDRESS"
-- The landing is in-process: the session needs a holder (a keeper, or --wait).
M.needs_process = true
-- The landing moves bytes (splice), whatever they are: HTTP/1.1, HTTP/2
-- (h2c, gRPC) and whole TCP connections (czctl.proxy.protocol).
M.carries = { "http", "h2c", "tcp" }

local function ipv4(s)
  local a, b, c, d = tostring(s):match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  local n = 0
  for _, part in ipairs({ a, b, c, d }) do
    local v = tonumber(part)
    if v > 255 then return nil end
    n = n * 256 + v
  end
  return n
end

local function network_of(address, prefix)
  local n = ipv4(address)
  local mask = prefix == 0 and 0 or ((0xffffffff << (32 - prefix)) & 0xffffffff)
  n = n & mask
  return string.format("%d.%d.%d.%d/%d", (n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255, prefix)
end

--- Where the landing listens for a tunnel host, and whom it admits.
---@param host string the address (or Docker Desktop's name) the cluster dials
---@return {listen: string, allow: string[], deny?: string[]}|nil plan
---@return string|nil err one line
function M.landing_for(host)
  if host == M.DOCKER_DESKTOP_HOST then
    return { listen = "127.0.0.1", allow = { "127.0.0.0/8" } }
  end
  if not ipv4(host) then
    return nil, string.format("--tunnel-host %s: the direct tunnel needs an IPv4 address of this machine "
      .. "(or %s with Docker Desktop)", host, M.DOCKER_DESKTOP_HOST)
  end
  if host:find("^127%.") then
    return nil, string.format("--tunnel-host %s is this machine's loopback, which pods cannot reach; %s", host,
      M.NEEDS_HOST)
  end
  local itf = landing.interface_of(host)
  if not itf then
    return nil, string.format("--tunnel-host %s is not an address of this machine; %s", host, M.NEEDS_HOST)
  end
  -- the cluster's side of that network; this machine's own address is not
  return { listen = host, allow = { network_of(host, itf.prefix) }, deny = { host .. "/32" } }
end

--- The address of this machine the cluster reaches, from its Nodes (see above).
---@param client table a czctl.kube client
---@return string|nil host
---@return string|nil err one line
function M.detect_host(client)
  local nodes, err = client:list("Node")
  local seen = {}
  for _, node in ipairs(nodes and nodes.items or {}) do
    for _, a in ipairs((node.status or {}).addresses or {}) do
      if a.type == "InternalIP" and ipv4(a.address) then
        local route = landing.route_source(a.address)
        if route and route.on_link then return route.address end
        seen[#seen + 1] = a.address
      end
    end
  end
  local info = client:info() or {}
  if info.context == "docker-desktop" then return M.DOCKER_DESKTOP_HOST end
  local why
  if not nodes then
    why = "cannot list the cluster's nodes (" .. tostring(type(err) == "table" and err.message or err) .. ")"
  elseif #seen == 0 then
    why = "no node reports an IPv4 InternalIP"
  else
    why = "no node (" .. table.concat(seen, ", ") .. ") is on a network of this machine"
  end
  return nil, "cannot tell which address of this machine the cluster reaches: " .. why .. "; " .. M.NEEDS_HOST
end

local Handle = {}
Handle.__index = Handle

--- Close the landing (open connections are reset). Idempotent.
function Handle:stop()
  if self.landing then
    self.landing:close()
    self.landing = nil
  end
  return true
end

--- true when the landing runs and something accepts connections on the local port.
function Handle:healthy()
  if not self.landing then return nil, "stopped" end
  local ok, err = net.probe(M.APP_HOST, self.local_port, 1)
  if ok then return true end
  return nil, string.format("nothing listens on %s:%d (%s)", M.APP_HOST, self.local_port, tostring(err))
end

--- Start a direct tunnel: a landing on `host` forwarding to 127.0.0.1:local_port.
---@param opts {local_port: integer, host: string, log?: fun(msg: string)}
---@return table|nil handle
---@return string|nil err
function M.start(opts)
  opts = opts or {}
  local port = math.tointeger(opts.local_port)
  if not port or port < 1 or port > 65535 then
    return nil, "direct tunnel: local_port must be a port number"
  end
  local host = opts.host
  if host == nil then
    return nil, "direct tunnel: no host (find it with direct.detect_host(client)); " .. M.NEEDS_HOST
  end
  if type(host) ~= "string" or not host:find("^[%w.%-]+$") then
    return nil, string.format("direct tunnel: invalid host %q", tostring(host))
  end
  local log = opts.log or function() end
  local plan, perr = M.landing_for(host)
  if not plan then return nil, perr end
  local pki, perr2 = landing.session_pki{ server_name = host }
  if not pki then return nil, "direct tunnel: " .. tostring(perr2) end
  local l, lerr = landing.open{ host = plan.listen, port = 0, target_host = M.APP_HOST, target_port = port,
                                allow = plan.allow, deny = plan.deny,
                                tls = { cert = pki.server_cert, key = pki.server_key, client_ca = pki.ca_cert } }
  if not l then return nil, "direct tunnel: cannot listen: " .. tostring(lerr) end
  local _, landing_port = l:address()
  local url = string.format("https://%s:%d", host, landing_port)
  local upstream = {
    url = url,
    -- the app gets the request's own Host: the landing forwards bytes
    keep_host = true,
    tls = { ca = pki.ca_cert, name = host, client_cert = pki.client_cert, client_key = pki.client_key,
            fallback_cert = pki.fallback_cert, fallback_key = pki.fallback_key },
  }
  local handle = setmetatable({ url = url, upstream = upstream, inspector = nil, pid = nil,
                                local_port = port, landing = l }, Handle)
  log(string.format("%s (admits %s, with the session's client certificate)", tostring(l),
                    table.concat(plan.allow, ", ")))
  if not net.probe(M.APP_HOST, port, 0.5) then
    log(string.format("warning: nothing listens on %s:%d yet; intercepted requests fail until it does",
                      M.APP_HOST, port))
  end
  return handle
end

return M
