-- czctl.proxy.protocol: what a Service port speaks, and how (or whether)
-- czctl can intercept it. Decisions only, no I/O: the intercept workflow
-- asks before it changes anything, and czctl.proxy.nginx renders the mode
-- decided here (a port's `mode`).
--
-- A port speaks one of:
--   http  HTTP/1.1 (WebSocket included): routed by header, as always
--   h2c   HTTP/2 over cleartext with prior knowledge, gRPC's transport inside
--         clusters: routed by header (gRPC metadata are HTTP/2 headers)
--   tls   TLS end to end: NGINX cannot read the headers inside
--   tcp   anything else that is not HTTP (databases, brokers, ...)
-- and is intercepted in one of three modes: "http" (an HTTP/1.1 server),
-- "h2c" (an HTTP/2 server, grpc_pass to both routes) or "tcp" (NGINX's
-- stream module, bytes untouched: only with --all).
--
-- What a port speaks comes from, in order: --protocol, the port's
-- appProtocol (Kubernetes' kubernetes.io/h2c, kubernetes.io/ws,
-- kubernetes.io/wss; IANA names; Istio's values), its name as Istio's
-- convention has it (`<protocol>[-<suffix>]`), a well-known port number of a
-- TLS or non-HTTP protocol, and otherwise HTTP/1.1 (what czctl always
-- assumed). It must not guess silently: every answer says where it came from.
local M = {}

-- --protocol's values ("grpc" is h2c: gRPC runs on HTTP/2).
M.CHOICES = { "auto", "http", "h2c", "grpc", "tls", "tcp" }

-- Declared names (appProtocol values and port-name prefixes) -> protocol.
-- Istio's list (http, http2, https, tcp, tls, grpc, grpc-web, mongo, mysql,
-- redis), Kubernetes' prefixed values, and IANA's names for the same.
local DECLARED = {
  ["http"] = "http", ["http1"] = "http", ["kubernetes.io/ws"] = "http", ["ws"] = "http",
  ["grpc-web"] = "http",
  ["h2c"] = "h2c", ["http2"] = "h2c", ["grpc"] = "h2c", ["kubernetes.io/h2c"] = "h2c",
  ["kubernetes.io/grpc"] = "h2c",
  ["https"] = "tls", ["tls"] = "tls", ["kubernetes.io/wss"] = "tls", ["wss"] = "tls",
  ["grpcs"] = "tls", ["h2"] = "tls",
  ["tcp"] = "tcp", ["mongo"] = "tcp", ["mysql"] = "tcp", ["redis"] = "tcp", ["postgres"] = "tcp",
  ["postgresql"] = "tcp", ["amqp"] = "tcp", ["kafka"] = "tcp", ["memcache"] = "tcp", ["mqtt"] = "tcp",
  ["ssh"] = "tcp", ["ldap"] = "tcp", ["ldaps"] = "tls", ["nats"] = "tcp", ["cql"] = "tcp",
}

-- Undeclared ports whose number belongs to a TLS or non-HTTP protocol.
local WELL_KNOWN = {
  [443] = { "tls", "HTTPS" }, [8443] = { "tls", "HTTPS" }, [6443] = { "tls", "HTTPS" },
  [22] = { "tcp", "SSH" }, [3306] = { "tcp", "MySQL" }, [5432] = { "tcp", "PostgreSQL" },
  [6379] = { "tcp", "Redis" }, [27017] = { "tcp", "MongoDB" }, [9092] = { "tcp", "Kafka" },
  [5672] = { "tcp", "AMQP" }, [11211] = { "tcp", "memcached" }, [9042] = { "tcp", "Cassandra" },
  [2181] = { "tcp", "ZooKeeper" }, [4222] = { "tcp", "NATS" }, [1883] = { "tcp", "MQTT" },
}

local WHAT = {
  http = "HTTP/1.1", h2c = "HTTP/2 in cleartext (h2c)", tls = "TLS end to end", tcp = "a protocol that is not HTTP",
}

local function present(v) return v ~= nil and type(v) == "string" and v ~= "" end

---@class czctl.proxy.Protocol
---@field protocol "http"|"h2c"|"tls"|"tcp"
---@field grpc boolean      declared as gRPC (same handling as h2c)
---@field source string     where it came from, for messages ("appProtocol kubernetes.io/h2c")
---@field declared boolean  false when it is only czctl's default assumption

--- What a Service port speaks.
---@param port table an entry of a Service's spec.ports
---@param flag? string --protocol ("auto" or nil: from the port)
---@return czctl.proxy.Protocol|nil
---@return string|nil err for an unknown --protocol value
function M.detect(port, flag)
  port = port or {}
  if flag ~= nil and flag ~= "auto" then
    local p = DECLARED[flag]
    if not p then
      return nil, string.format("--protocol must be one of %s, got %q", table.concat(M.CHOICES, ", "), tostring(flag))
    end
    return { protocol = p, grpc = flag == "grpc", source = "--protocol " .. flag, declared = true }
  end
  if present(port.appProtocol) then
    local value = port.appProtocol:lower()
    local p = DECLARED[value]
    -- an appProtocol czctl does not know is still a declaration that the port
    -- speaks something particular: not assumed to be HTTP
    return { protocol = p or "tcp", grpc = value:find("grpc", 1, true) ~= nil and p == "h2c",
             source = "appProtocol " .. port.appProtocol, declared = true, unknown = p == nil }
  end
  if present(port.name) then
    local name = port.name:lower()
    local prefix = (name == "grpc-web" or name:find("^grpc%-web%-")) and "grpc-web" or name:match("^([^-]+)")
    local p = DECLARED[prefix]
    if p then
      return { protocol = p, grpc = prefix == "grpc", source = "port name " .. port.name, declared = true }
    end
  end
  local number = math.tointeger(port.port)
  local known = number and WELL_KNOWN[number]
  if known then
    return { protocol = known[1], grpc = false, declared = true,
             source = string.format("port number %d (%s's)", number, known[2]) }
  end
  return { protocol = "http", grpc = false, source = "no appProtocol or protocol name (HTTP/1.1 assumed)",
           declared = false }
end

--- A port's description for messages: "port 443 (https)".
---@param port table
---@return string
local function port_text(port)
  local s = "port " .. tostring(math.tointeger(port.port) or port.port)
  if present(port.name) then s = s .. " (" .. port.name .. ")" end
  return s
end

--- How a port that speaks `p` is intercepted with a rule: "http", "h2c" or
--- "tcp" (the proxy's mode), or nil and the one-line reason it cannot be.
--- A header (or any other) rule needs HTTP; --all on TLS or a non-HTTP
--- protocol intercepts every connection at TCP level.
---@param p czctl.proxy.Protocol
---@param all boolean the rule routes everything (--all)
---@param port table the Service port
---@param service string the Service's name, for the message
---@return string|nil mode
---@return string|nil err
function M.mode(p, all, port, service)
  if p.protocol == "http" or p.protocol == "h2c" then return p.protocol end
  if all then return "tcp" end
  local hint = p.protocol == "tls" and "" or " (or --protocol http if it is HTTP after all)"
  return nil, string.format("%s of Service %s speaks %s (%s), so czctl cannot route it by header; "
    .. "intercept every connection with --all (bytes passed untouched)%s",
    port_text(port), service, WHAT[p.protocol], p.source, hint)
end

--- Whether a tunnel provider carries a mode. Providers declare what they
--- carry in `provider.carries` (a list of modes; default { "http" }) and may
--- say why not in `provider.cannot_carry[mode]`. The kube tunnel is the hook:
--- a byte relay, it declares { "http", "h2c", "tcp" } as direct does.
---@param mode string "http"|"h2c"|"tcp"
---@param name string the provider's name
---@param provider table the provider module
---@return boolean|nil ok
---@return string|nil err one line
function M.check_tunnel(mode, name, provider)
  local carries = provider.carries or { "http" }
  for _, m in ipairs(carries) do if m == mode then return true end end
  local why = provider.cannot_carry and provider.cannot_carry[mode]
  local what = mode == "h2c" and "HTTP/2 (h2c, gRPC)" or mode == "tcp" and "raw TCP connections" or mode
  return nil, string.format("the %s tunnel cannot carry %s%s; use --tunnel direct", name, what,
                            why and (": " .. why) or "")
end

--- Why a Service cannot be intercepted for what it is (headless), or nil.
--- A headless Service has no virtual IP: its clients resolve its name to
--- the pods' own addresses and dial the pods' ports, so pointing its
--- selector at the proxy would hand them the proxy's address, on ports it
--- does not listen on, and take away the per-pod names (StatefulSets) and
--- the set of peers they discover (docs/decisions.md, "Headless Services").
---@param svc table
---@return string|nil
function M.not_interceptable(svc)
  local spec = svc.spec or {}
  if spec.clusterIP == "None" then
    return string.format("Service %q is headless (clusterIP: None): its clients reach the pods by their own "
      .. "addresses, not through a Service address czctl could route, so it cannot be intercepted; "
      .. "intercept a Service with a ClusterIP that selects the same pods", svc.metadata.name)
  end
  return nil
end

--- A warning when the Endpoints of the original route have no ready
--- address for the port (its requests fail with or without czctl), or nil.
---@param endpoints table|nil the Endpoints object (nil: none exists)
---@param port table the Service port
---@param service string
---@return string|nil
function M.no_ready_endpoint(endpoints, port, service)
  for _, subset in ipairs((endpoints or {}).subsets or {}) do
    if #(subset.addresses or {}) > 0 then
      local ports = subset.ports or {}
      if #ports == 0 then return nil end
      for _, ep in ipairs(ports) do
        if (not present(port.name) and #ports == 1) or ep.name == port.name then return nil end
      end
    end
  end
  return string.format("Service %s has no ready endpoint for %s: requests that are not intercepted fail "
    .. "(as they did before czctl) until a pod is ready", service, port_text(port))
end

return M
