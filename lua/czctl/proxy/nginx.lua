-- czctl.proxy.nginx: the NGINX configuration of the intercept proxy
-- (nginxinc/nginx-unprivileged; Debian's 1.22 in the tests), rendered from
-- the ports, the routing rule (czctl.proxy.rules) and the tunnel. render()
-- checks the options once into a plan, then small emitters each write one
-- part of nginx.conf, in order: the header and globals, the http settings,
-- the rule's maps, the upstreams, the intercepted servers, the health
-- server, the stream pass-through. Pure functions: no I/O.
--
-- An intercepted port has a mode (czctl.proxy.protocol): "http" (HTTP/1.1,
-- as below), "h2c" (the same server on an HTTP/2 listener, grpc_pass instead
-- of proxy_pass), or "tcp" (a stream server to the tunnel, in `stream {}`).
--
-- The intercepted server's `location /` hands a matching request to the
-- named location @czctl_tunnel (`if (CONDITION) { return 418; }` with
-- `error_page 418 = @czctl_tunnel`: method, headers and unread body are
-- kept) and proxies every other request to the original. The tunnel
-- location has its own headers, TLS settings and access log, so the
-- original route pays for no map but the rule's own.
local rules = require "czctl.proxy.rules"

local M = {}

M.DEFAULT_HEALTH_PORT = 8079
-- Idle upstream connections kept per worker and upstream group.
M.DEFAULT_KEEPALIVE = 64
-- The cluster DNS Service under its conventional name (kubeadm, kind, minikube,
-- k3s, GKE, EKS, AKS all keep it); used to resolve a tunnel's host name.
M.DEFAULT_RESOLVER = "kube-dns.kube-system.svc.cluster.local"

local function fail(fmt, ...)
  return nil, string.format(fmt, ...)
end

local function parse_url(url)
  local scheme, rest = tostring(url):match("^(https?)://(.+)$")
  if not scheme then return fail("tunnel url %q must start with http:// or https://", tostring(url)) end
  local hostport = rest:match("^([^/?#]+)")
  if not hostport then return fail("tunnel url %q has no host", url) end
  local host, port = hostport:match("^%[([%x:.]+)%]:?(%d*)$")
  if host then host = "[" .. host .. "]" else host, port = hostport:match("^([^:]+):?(%d*)$") end
  if not host or host == "" then return fail("tunnel url %q has no host", url) end
  port = tonumber(port ~= "" and port or nil) or (scheme == "https" and 443 or 80)
  if port < 1 or port > 65535 then return fail("tunnel url %q has an invalid port", url) end
  return { scheme = scheme, host = host, port = port,
           is_ip = host:find("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:sub(1, 1) == "[" }
end

local function check_port(p, what)
  p = math.tointeger(p)
  if not p or p < 1 or p > 65535 then
    return fail("%s must be a port number (1-65535), got %s", what, tostring(p))
  end
  return true
end

local function ident(s)
  return (tostring(s):lower():gsub("[^%w]+", "_"))
end

-- A tunnel upstream ({url, host_header?, extra_headers?, resolver?}) checked;
-- returns the parsed URL.
local function check_upstream(up)
  if type(up) ~= "table" then return fail("proxy.render: tunnel_upstream is required when a port is intercepted") end
  local tunnel, err = parse_url(up.url)
  if not tunnel then return nil, err end
  if up.host_header ~= nil and (type(up.host_header) ~= "string" or not up.host_header:find("^[%w.%-:%[%]]+$")) then
    return fail("proxy.render: tunnel_upstream.host_header must be a host name")
  end
  for k, v in pairs(up.extra_headers or {}) do
    local okh, eh = rules.check_header_name(k)
    if not okh then return fail("proxy.render: extra header: %s", eh) end
    if type(v) ~= "string" or rules.has_control(v) or v:find("$", 1, true) then
      return fail("proxy.render: extra header %s: the value must be printable text without '$'", k)
    end
  end
  if up.resolver ~= nil and up.resolver ~= false and not tostring(up.resolver):find("^[%w.:%[%]%- ]+$") then
    return fail("proxy.render: tunnel_upstream.resolver must be one or more DNS server addresses, or false")
  end
  return tunnel
end

local plan_routes

-- How an intercepted port is served (czctl.proxy.protocol decides it): an
-- HTTP/1.1 server ("http"), an HTTP/2 server with grpc_pass to both routes
-- ("h2c"), or a stream server that sends every connection to the tunnel,
-- bytes untouched ("tcp", which needs a rule that routes everything).
local MODES = { http = true, h2c = true, tcp = true }

local function check_mode(p, what, routes)
  if not MODES[p.mode] then return fail("%s: mode must be http, h2c or tcp, got %s", what, tostring(p.mode)) end
  if p.mode == "tcp" and p.intercept then
    for _, r in ipairs(routes) do
      if (r.port == nil or math.tointeger(r.port) == p.port) and not (type(r.rule) == "table" and r.rule.all) then
        return fail("%s: a port intercepted at TCP level (mode tcp) takes every connection: its rule must be "
                    .. "{ all = true }", what)
      end
    end
  end
  return true
end

-- The scheme of a tunnel target for a mode: grpc_pass takes grpc:// and
-- grpcs:// where proxy_pass takes http:// and https://.
local function upstream_scheme(mode, scheme)
  if mode == "h2c" then return scheme == "https" and "grpcs" or "grpc" end
  return scheme
end

-- A proxy module directive for a port's mode: "proxy_pass" or "grpc_pass",
-- "proxy_ssl_name" or "grpc_ssl_name", ... (the two modules' directives
-- have the same names and meanings for what the proxy uses).
local function directive(p, name)
  return (p.mode == "h2c" and "grpc_" or "proxy_") .. name
end

-- The intercepted ports served over HTTP (http, h2c), and those at TCP level.
local function split_intercepted(ports)
  local http, tcp = {}, {}
  for _, p in ipairs(ports) do
    if p.intercept then
      if p.mode == "tcp" then tcp[#tcp + 1] = p else http[#http + 1] = p end
    end
  end
  return http, tcp
end

-- Check the options once and derive everything the emitters need (the plan
-- `c`): ports with ids, the rule's condition and maps, the tunnel, flags.
-- With opts.routes (several sessions on one proxy) a port is intercepted
-- when a route names it; one route is rendered exactly as opts.rule and
-- opts.tunnel_upstream would be, two or more by plan_routes.
local function plan(opts)
  if type(opts) ~= "table" then return fail("proxy.render needs a table") end
  if type(opts.ports) ~= "table" or #opts.ports == 0 then return fail("proxy.render: ports is empty") end
  local multi = false
  if opts.routes ~= nil then
    if type(opts.routes) ~= "table" then return fail("proxy.render: routes must be a list") end
    local routed = {}
    for i, r in ipairs(opts.routes) do
      if type(r) ~= "table" then return fail("proxy.render: routes[%d] must be a table", i) end
      local port, mode = math.tointeger(r.port) or -1, r.mode or "http"
      if routed[port] and routed[port] ~= mode then
        return fail("proxy.render: routes[%d]: port %s is intercepted as %s by another route, not %s", i,
                    tostring(r.port), routed[port], mode)
      end
      routed[port] = mode
    end
    local copy = {}
    for i, p in ipairs(opts.ports) do
      copy[i] = {}
      for k, v in pairs(p) do copy[i][k] = v end
      local mode = routed[math.tointeger(p.port) or -2]
      copy[i].intercept = mode ~= nil
      copy[i].mode = mode or p.mode
    end
    for i, r in ipairs(opts.routes) do
      local found = false
      for _, p in ipairs(copy) do found = found or (math.tointeger(p.port) == math.tointeger(r.port)) end
      if not found then return fail("proxy.render: routes[%d].port %s is not one of the ports", i, tostring(r.port)) end
    end
    local rest = {}
    for k, v in pairs(opts) do rest[k] = v end
    rest.ports, rest.routes = copy, nil
    if #opts.routes == 1 then
      local r = opts.routes[1]
      rest.rule, rest.tunnel_upstream, rest.session = r.rule, r.tunnel_upstream, r.id or opts.session
      return plan(rest)
    end
    multi = #opts.routes > 1 and opts.routes
    opts = rest
  end
  local ports = {}
  local rule = opts.rule or { all = true }
  local ok, warnings = rules.validate(rule)
  if not ok then return nil, warnings end
  local runtime_dir = opts.runtime_dir or "/tmp"
  if rules.has_control(runtime_dir) or runtime_dir:find("[%s;{}\"'#]") then
    return fail("proxy.render: runtime_dir %q has characters NGINX would misread", runtime_dir)
  end
  local health_port = math.tointeger(opts.health_port) or opts.health_port or M.DEFAULT_HEALTH_PORT
  local okp, perr = check_port(health_port, "health_port")
  if not okp then return nil, perr end
  local listen_address = opts.listen_address
  if listen_address ~= nil and not tostring(listen_address):find("^[%d.]+$") then
    return fail("proxy.render: listen_address must be an IPv4 address")
  end
  local function listen(port)
    return listen_address and (listen_address .. ":" .. port) or tostring(port)
  end
  local session = opts.session and tostring(opts.session) or "-"
  if not session:find("^[%w._-]+$") then return fail("proxy.render: session id %q is not a plain name", session) end

  local seen_listen, seen_name = { [health_port] = "health" }, {}
  local any_intercept = false
  for i, p in ipairs(opts.ports) do
    local what = string.format("ports[%d]", i)
    local name = p.name and tostring(p.name) or tostring(p.port)
    if rules.has_control(name) then return fail("%s: name has control characters", what) end
    -- Numbers from JSON arrive as floats: keep integral ones as integers.
    p = { name = name, port = math.tointeger(p.port) or p.port, listen = math.tointeger(p.listen) or p.listen,
          original = p.original, intercept = p.intercept, protocol = p.protocol or "TCP", mode = p.mode or "http" }
    ports[i] = p
    local okm, merr = check_mode(p, what, multi or { { rule = rule } })
    if not okm then return nil, merr end
    if p.protocol ~= "TCP" and p.protocol ~= "UDP" then
      return fail("%s: protocol %s cannot pass through the proxy (NGINX proxies TCP and UDP only)",
                  what, tostring(p.protocol))
    end
    if p.intercept == true and p.protocol ~= "TCP" then
      return fail("%s: only a TCP (HTTP) port can be intercepted, this one is %s", what, p.protocol)
    end
    local ok1, e1 = check_port(p.listen, what .. ".listen")
    if not ok1 then return nil, e1 end
    if p.port ~= nil then
      local ok2, e2 = check_port(p.port, what .. ".port")
      if not ok2 then return nil, e2 end
    end
    if seen_listen[p.listen] then return fail("%s: listen port %d is used twice", what, p.listen) end
    seen_listen[p.listen] = true
    if type(p.original) ~= "string" or not p.original:find("^[%w.%-]+:%d+$") and not p.original:find("^%[[%x:]+%]:%d+$") then
      return fail("%s: original must be HOST:PORT (the copy Service's ClusterIP and port), got %s", what, tostring(p.original))
    end
    local id = ident(name)
    if seen_name[id] then id = id .. "_" .. i end
    seen_name[id] = true
    p.id = id
    any_intercept = any_intercept or p.intercept == true
  end

  if multi then
    return plan_routes(multi, { ports = ports, warnings = warnings, runtime_dir = runtime_dir,
                                health_port = health_port, listen = listen, session = session,
                                any_intercept = any_intercept, access_log = opts.access_log,
                                route_header = opts.route_header == true,
                                keepalive_time = math.tointeger(opts.keepalive_time) }, opts)
  end
  local up = opts.tunnel_upstream
  local tunnel
  if any_intercept then
    local err
    tunnel, err = check_upstream(up)
    if not tunnel then return nil, err end
  end

  local expr, maps = rules.compile(rule)
  local keepalive = opts.upstream_keepalive
  if keepalive == nil then keepalive = M.DEFAULT_KEEPALIVE end
  keepalive = math.tointeger(keepalive)
  if not keepalive or keepalive < 0 then return fail("proxy.render: upstream_keepalive must be a count >= 0") end
  local route_header = opts.route_header == true

  local intercepted, tcp_intercepted = split_intercepted(ports)
  local extra = {}
  for k, v in pairs(any_intercept and up.extra_headers or {}) do extra[#extra + 1] = { k, v } end
  table.sort(extra, function(a, b) return a[1] < b[1] end)
  return {
    ports = ports, rule = rule, warnings = warnings, runtime_dir = runtime_dir, health_port = health_port,
    listen = listen, session = session, any_intercept = any_intercept, up = up, tunnel = tunnel,
    expr = expr, maps = maps, keepalive = keepalive, route_header = route_header,
    access_log = opts.access_log, intercepted = intercepted, tcp_intercepted = tcp_intercepted,
    route_all = expr == "1", extra = extra,
    keepalive_time = math.tointeger(opts.keepalive_time),
  }
end

-- The plan for two or more routes (sessions) on one proxy. Each route's
-- rule becomes one variable ("1" when it matches); per intercepted port a
-- map over those variables picks the first matching route ("" for none,
-- the original); maps keyed by the route give the tunnel's address, Host,
-- TLS name and extra headers, so one tunnel location serves every route
-- and the original route pays one map plus the rules, whatever the count.
function plan_routes(routes, c, opts)
  c.routes, c.route_by_port, c.extra_names = {}, {}, {}
  local seen_id, extra_seen = {}, {}
  for i, r in ipairs(routes) do
    local what = string.format("routes[%d]", i)
    local id = r.id and tostring(r.id) or tostring(i)
    if not id:find("^[%w._-]+$") then return fail("%s: id %q is not a plain name", what, id) end
    if seen_id[id] then return fail("%s: id %s is used twice", what, id) end
    seen_id[id] = true
    local ok, w = rules.validate(r.rule)
    if not ok then return fail("%s: %s", what, w) end
    for _, x in ipairs(w) do c.warnings[#c.warnings + 1] = x end
    local key = "r" .. i
    local var, maps = rules.compile_variable(r.rule, key)
    local tunnel, err = check_upstream(r.tunnel_upstream)
    if not tunnel then return fail("%s: %s", what, err) end
    local up = r.tunnel_upstream
    local route = { id = id, key = key, rule = r.rule, var = var, maps = maps, tunnel = tunnel, up = up,
                    port = math.tointeger(r.port), mode = r.mode or "http" }
    route.host_header = up.host_header
    if tunnel.scheme == "https" and not route.host_header and not tunnel.is_ip then route.host_header = tunnel.host end
    route.ssl_name = tunnel.scheme == "https" and not tunnel.is_ip and tunnel.host or nil
    local resolver = up.resolver
    if resolver == nil then resolver = M.DEFAULT_RESOLVER end
    route.runtime_resolve = (not tunnel.is_ip) and resolver ~= false
    if route.runtime_resolve then c.resolver = c.resolver or resolver end
    local hostport = tunnel.host .. ":" .. tunnel.port
    local scheme = upstream_scheme(route.mode, tunnel.scheme)
    if route.runtime_resolve then
      -- not an upstream's name: NGINX resolves it per request
      route.target = scheme .. "://" .. hostport
    else
      route.upstream = "czctl_tunnel_" .. key
      route.target = scheme .. "://" .. route.upstream
    end
    route.hostport = hostport
    route.extra = {}
    for k, v in pairs(up.extra_headers or {}) do
      route.extra[k:lower()] = v
      if not extra_seen[k:lower()] then extra_seen[k:lower()] = true; c.extra_names[#c.extra_names + 1] = k:lower() end
    end
    c.routes[i] = route
    local list = c.route_by_port[route.port] or {}
    list[#list + 1] = route
    c.route_by_port[route.port] = list
  end
  table.sort(c.extra_names)
  c.intercepted, c.tcp_intercepted = split_intercepted(c.ports)
  local keepalive = opts.upstream_keepalive
  if keepalive == nil then keepalive = M.DEFAULT_KEEPALIVE end
  c.keepalive = math.tointeger(keepalive)
  if not c.keepalive or c.keepalive < 0 then return fail("proxy.render: upstream_keepalive must be a count >= 0") end
  c.route_all, c.maps, c.extra = false, {}, {}
  return c
end

-- The header comment, the process settings and events.
local function emit_globals(add, c)
  if c.routes then
    add("# czctl intercept proxy — %d sessions", #c.routes)
  else
    add("# czctl intercept proxy — session %s", c.session)
  end
  add("# Generated by czctl (lua/czctl/proxy/nginx.lua); edits are lost when the session ends.")
  -- a comment line stays short whatever the rule (values are up to 1 KiB each)
  local function short(rule)
    local described = rules.describe(rule):gsub("\n", " ")
    if #described > 200 then described = described:sub(1, 197) .. "..." end
    return described
  end
  if c.routes then
    add("# Routes, first match wins (a request matching none goes to the original):")
    for _, r in ipairs(c.routes) do
      add("#   %s session %s, port %d: %s -> %s", r.key, r.id, r.port, short(r.rule), r.up.url)
    end
  else
    add("# Routing rule: %s", short(c.rule))
  end
  for _, p in ipairs(c.ports) do
    add("#   port %-8s proxy :%d%s -> %s%s", p.name, p.listen, p.protocol == "TCP" and "" or "/" .. p.protocol,
      p.intercept and "rule ? tunnel : " or "", p.original)
  end
  add("")
  add("# Runs as a non-root user: no `user` directive, pid and temp files in %s.", c.runtime_dir)
  add("# One worker: the pod is limited to half a CPU, which one worker can use")
  add("# alone, and `auto` would start one per CPU of the node (each holding its")
  add("# connection tables), enough on a large node to pass the memory limit.")
  add("worker_processes 1;")
  add("pid %s/nginx.pid;", c.runtime_dir)
  add("error_log stderr notice;")
  add("")
  add("events {")
  add("    worker_connections 4096;")
  add("}")
  add("")
end

-- `http {` and the settings every server shares (temp paths, logs, timeouts,
-- the Connection and X-Forwarded-Proto maps).
local function emit_http_settings(add, c)
  add("http {")
  add("    client_body_temp_path %s/client_temp;", c.runtime_dir)
  add("    proxy_temp_path       %s/proxy_temp;", c.runtime_dir)
  add("    fastcgi_temp_path     %s/fastcgi_temp;", c.runtime_dir)
  add("    uwsgi_temp_path       %s/uwsgi_temp;", c.runtime_dir)
  add("    scgi_temp_path        %s/scgi_temp;", c.runtime_dir)
  add("")
  add("    # One line per intercepted request on stdout (kubectl logs), written by")
  add("    # the tunnel location: which requests left the cluster, through which")
  add("    # address, and the time the tunnel and the local app took. The original")
  add("    # route's traffic is the app's own and not logged (a log line costs a")
  add("    # request more than all the routing does). Buffered, flushed every second.")
  add("    log_format czctl '$remote_addr [$time_iso8601] \"$request\" $status $body_bytes_sent '")
  add("                     'route=intercept upstream=$upstream_addr upstream_time=$upstream_response_time';")
  add("    access_log off;")
  add("    server_tokens off;")
  add("    tcp_nodelay on;")
  add("    keepalive_timeout 75s;")
  if c.keepalive_time then
    add("    # A client connection lives at most this long: it is then closed after a")
    add("    # response (never under the client's feet), so clients move to a new")
    add("    # proxy pod when the configuration changes (see docs/decisions.md).")
    add("    keepalive_time %ds;", c.keepalive_time)
  end
  add("    keepalive_requests 10000;")
  add("")
  add("    # Request bodies of any size stream to the upstream as they arrive.")
  add("    client_max_body_size 0;")
  add("    proxy_request_buffering off;")
  add("    proxy_buffering on;")
  add("    # Long reads so idle WebSocket connections are not cut after 60 s.")
  add("    proxy_read_timeout 3600s;")
  add("    proxy_send_timeout 3600s;")
  add("    proxy_connect_timeout 10s;")
  add("    # Upstream keep-alive needs HTTP/1.1 and no \"Connection: close\".")
  add("    proxy_http_version 1.1;")
  add("")
  add("    # WebSocket upgrades get \"Connection: upgrade\"; every other request an")
  add("    # empty Connection header (not sent), so upstream connections stay alive.")
  add("    map $http_upgrade $czctl_connection {")
  add("        default upgrade;")
  add("        \"\"      \"\";")
  add("    }")
  add("    # Keep an X-Forwarded-Proto set by a load balancer in front of the Service.")
  add("    map $http_x_forwarded_proto $czctl_forwarded_proto {")
  add("        default $http_x_forwarded_proto;")
  add("        \"\"      $scheme;")
  add("    }")
  add("")

end

-- The maps of several routes: each rule's, then per port the route that
-- matches first, then the tunnel parameters by route.
local function emit_route_maps(add, c)
  local function block(m) for line in (m .. "\n"):gmatch("(.-)\n") do add("    %s", line) end end
  add("    # ---- Routing rules, one variable per route: \"1\" when its rule matches.")
  add("    # String keys in `map` ignore case, so values are matched with anchored,")
  add("    # escaped regular expressions (~^...$), which are case-sensitive.")
  for _, r in ipairs(c.routes) do
    add("    # %s: session %s", r.key, r.id)
    for _, m in ipairs(r.maps) do block(m) end
  end
  add("")
  for _, p in ipairs(c.intercepted) do
    local list = c.route_by_port[p.port] or {}
    local vars = {}
    for i, r in ipairs(list) do vars[i] = r.var end
    add("    # Port %s: the first route whose rule matches (regular expressions in a", p.name)
    add("    # map are tried in order), or \"\" for the original.")
    add("    map %s $czctl_route_%s {", rules.nginx_quote(table.concat(vars, ":") .. ":"), p.id)
    add("        default \"\";")
    for i, r in ipairs(list) do
      add("        %s %s;", rules.nginx_quote("~^" .. string.rep(":", i - 1) .. "1"), r.key)
    end
    add("    }")
  end
  add("")
  add("    # The tunnel of each route.")
  add("    map $czctl_route $czctl_tunnel_target {")
  add("        default \"\";")
  for _, r in ipairs(c.routes) do add("        %s %s;", r.key, rules.nginx_quote(r.target)) end
  add("    }")
  add("    # Host sent into the tunnel: the tunnel's own name when it routes by Host")
  add("    # (the original Host then travels in X-Forwarded-Host).")
  add("    map $czctl_route $czctl_tunnel_host {")
  add("        default $http_host;")
  for _, r in ipairs(c.routes) do
    if r.host_header then add("        %s %s;", r.key, rules.nginx_quote(r.host_header)) end
  end
  add("    }")
  add("    map $czctl_route $czctl_tunnel_forwarded_host {")
  add("        default $http_x_forwarded_host;")
  for _, r in ipairs(c.routes) do
    if r.host_header then add("        %s $http_host;", r.key) end
  end
  add("    }")
  add("    map $czctl_route $czctl_tunnel_ssl_name {")
  add("        default $proxy_host;")
  for _, r in ipairs(c.routes) do
    if r.ssl_name then add("        %s %s;", r.key, rules.nginx_quote(r.ssl_name)) end
  end
  add("    }")
  for _, name in ipairs(c.extra_names) do
    add("    map $czctl_route $czctl_extra_%s {", ident(name))
    add("        default \"\";")
    for _, r in ipairs(c.routes) do
      if r.extra[name] then add("        %s %s;", r.key, rules.nginx_quote(r.extra[name])) end
    end
    add("    }")
  end
  add("")
end

-- The `map` blocks of the routing rule.
local function emit_rule_maps(add, c)
  if c.routes then return emit_route_maps(add, c) end
  if c.any_intercept and #c.maps > 0 then
    add("    # ---- Routing rule: each map yields \"1\" when its part of the rule matches.")
    add("    # String keys in `map` ignore case, so values are matched with anchored,")
    add("    # escaped regular expressions (~^...$), which are case-sensitive.")
    for _, m in ipairs(c.maps) do
      for line in (m .. "\n"):gmatch("(.-)\n") do add("    %s", line) end
    end
    add("")
  end

end

-- The upstreams: the originals of the intercepted ports and the tunnel (by
-- address, or by name resolved per request). Sets c.tunnel_target,
-- c.tunnel_host_header and c.ssl_name for the servers.
local function emit_upstreams(add, c)
  -- Upstream groups.
  add("    # ---- Upstreams. `keepalive` keeps idle connections open in the worker so")
  add("    # requests do not pay a TCP (or TLS) handshake each.")
  local function keepalive_lines()
    if c.keepalive > 0 then
      add("        keepalive %d;", c.keepalive)
      add("        keepalive_requests 10000;")
      add("        keepalive_timeout 60s;")
    end
  end
  if c.routes then
    for _, p in ipairs(c.intercepted) do
      add("    # The in-cluster version of port %s (the copy Service, by ClusterIP).", p.name)
      add("    upstream czctl_original_%s {", p.id)
      add("        server %s;", p.original)
      keepalive_lines()
      add("    }")
    end
    if c.resolver then
      add("    # Tunnels named by host are resolved per request (proxy_pass takes the")
      add("    # address from a variable), so failing DNS cannot stop the proxy.")
      add("    resolver %s valid=30s ipv6=off;", c.resolver)
    end
    for _, r in ipairs(c.routes) do
      if r.upstream then
        add("    # %s: the tunnel of session %s, %s", r.key, r.id, r.up.url)
        add("    upstream %s {", r.upstream)
        add("        server %s;", r.hostport)
        keepalive_lines()
        add("    }")
      end
    end
    add("")
    return
  end
  if not c.route_all then
    for _, p in ipairs(c.intercepted) do
      add("    # The in-cluster version of port %s (the copy Service, by ClusterIP).", p.name)
      add("    upstream czctl_original_%s {", p.id)
      add("        server %s;", p.original)
      keepalive_lines()
      add("    }")
    end
  end
  if #c.intercepted > 0 then
    -- A host name in a static `upstream` is resolved when NGINX loads its
    -- configuration; if DNS is slow or fails, NGINX does not start at all. So
    -- names are resolved per request through `resolver` (default: the cluster
    -- DNS Service by its conventional name), unless resolver = false.
    local resolver = c.up.resolver
    if resolver == nil then resolver = M.DEFAULT_RESOLVER end
    local runtime_resolve = (not c.tunnel.is_ip) and resolver ~= false
    local hostport = c.tunnel.host .. ":" .. c.tunnel.port
    c.tunnel_host_header = c.up.host_header
    if c.tunnel.scheme == "https" and not c.tunnel_host_header and not c.tunnel.is_ip then
      -- ngrok (and most tunnel edges) route by Host: send the tunnel's name.
      c.tunnel_host_header = c.tunnel.host
    end
    c.ssl_name = c.tunnel.scheme == "https" and not c.tunnel.is_ip and c.tunnel.host or nil
    if runtime_resolve then
      add("    # The tunnel: %s", c.up.url)
      add("    # Its name is resolved at request time (through the resolver below), so a")
      add("    # slow or failing DNS lookup cannot stop the proxy from starting.")
      add("    # (No upstream keep-alive on this hop: NGINX cannot pool connections")
      add("    # to a name resolved per request.)")
      add("    resolver %s valid=30s ipv6=off;", resolver)
      add("    # A variable in proxy_pass is what makes NGINX resolve at request time.")
      add("    map \"\" $czctl_tunnel_address {")
      add("        default %s;", rules.nginx_quote(hostport))
      add("    }")
      c.tunnel_target = "$czctl_tunnel_address"
    else
      add("    # The tunnel: %s", c.up.url)
      if not c.tunnel.is_ip then
        add("    # Resolved once when NGINX starts (resolver = false): keeps connections")
        add("    # to the tunnel alive, but NGINX will not start while DNS fails.")
      end
      add("    upstream czctl_tunnel {")
      add("        server %s;", hostport)
      keepalive_lines()
      add("    }")
      c.tunnel_target = "czctl_tunnel"
    end
  end
  add("")

end

-- The listen directive's parameters for an intercepted port. An h2c port
-- gets `http2`, the one spelling both NGINX 1.22 (the tests) and 1.25.1+
-- (the proxy image is 1.27) accept on a cleartext listener: 1.22 then
-- speaks only HTTP/2 with prior knowledge on it; from 1.25.1 the listener
-- reads the first bytes and serves the HTTP/2 preface as HTTP/2 and
-- anything else as HTTP/1.x, so the port's HTTP/1.1 clients keep working
-- (src/http/ngx_http_request.c, ngx_http_wait_request_handler: the test is
-- `h2scf->enable || hc->addr_conf->http2`). 1.25.1+ logs that the listen
-- parameter is deprecated in favour of `http2 on;`, which 1.22 rejects.
local function listen_parameters(c, p)
  return c.listen(p.listen) .. " reuseport" .. (p.mode == "h2c" and " http2" or "")
end

-- An h2c server's settings: gRPC calls stream for as long as they last
-- (server, client and bidirectional streams; a deadline is the client's,
-- carried in grpc-timeout to the server), so the upstream timeouts are
-- those of idle WebSocket connections, not NGINX's 60 s.
local function h2c_settings(add, p)
  if p.mode ~= "h2c" then return end
  add("        # gRPC and HTTP/2 to both routes (grpc_pass speaks HTTP/2 upstream);")
  add("        # streams stay open as long as the call does.")
  add("        grpc_read_timeout 3600s;")
  add("        grpc_send_timeout 3600s;")
  add("        grpc_connect_timeout 10s;")
end

-- One server per intercepted port: the rule hands matching requests to the
-- tunnel location, all others go to the original.
local function emit_intercepted_servers(add, c)
  -- The request headers both routes send. proxy_set_header replaces the whole
  -- inherited list, so a location that changes one header restates them all.
  local function request_headers(indent, host)
    add("%sproxy_set_header Host              %s;", indent, host)
    add("%sproxy_set_header X-Forwarded-For   $proxy_add_x_forwarded_for;", indent)
    add("%sproxy_set_header X-Forwarded-Proto $czctl_forwarded_proto;", indent)
    add("%sproxy_set_header Upgrade           $http_upgrade;", indent)
    add("%sproxy_set_header Connection        $czctl_connection;", indent)
  end

  -- The body of the location that sends a request into the tunnel. With
  -- several routes its target, Host, TLS name and extra headers come from
  -- the maps keyed by the matching route.
  local function tunnel_location(indent, p)
    if c.access_log ~= false then
      add("%saccess_log /dev/stdout czctl buffer=64k flush=1s;", indent)
    end
    if c.routes then
      request_headers(indent, "$czctl_tunnel_host")
      add("%sproxy_set_header X-Forwarded-Host  $czctl_tunnel_forwarded_host;", indent)
      for _, name in ipairs(c.extra_names) do
        add("%sproxy_set_header %-17s $czctl_extra_%s;", indent, name, ident(name))
      end
      add("%s%s on;", indent, directive(p, "ssl_server_name"))
      add("%s%s $czctl_tunnel_ssl_name;", indent, directive(p, "ssl_name"))
      if c.route_header then add("%sadd_header X-Czctl-Route intercept always;", indent) end
      add("%s%s $czctl_tunnel_target;", indent, directive(p, "pass"))
      return
    end
    if c.tunnel_host_header or #c.extra > 0 then
      if c.tunnel_host_header then
        add("%s# The tunnel routes by Host and gets its own; the original Host travels", indent)
        add("%s# in X-Forwarded-Host.", indent)
      else
        add("%s# The headers of both routes, and those only the tunnel gets.", indent)
      end
      request_headers(indent, c.tunnel_host_header and rules.nginx_quote(c.tunnel_host_header) or "$http_host")
      if c.tunnel_host_header then add("%sproxy_set_header X-Forwarded-Host  $http_host;", indent) end
      for _, h in ipairs(c.extra) do
        add("%sproxy_set_header %-17s %s;", indent, h[1], rules.nginx_quote(h[2]))
      end
    end
    if c.ssl_name then
      add("%s# TLS to the tunnel: SNI and certificate name are the tunnel's host.", indent)
      add("%s%s on;", indent, directive(p, "ssl_server_name"))
      add("%s%s %s;", indent, directive(p, "ssl_name"), c.ssl_name)
    end
    if c.route_header then add("%sadd_header X-Czctl-Route intercept always;", indent) end
    add("%s%s %s://%s;", indent, directive(p, "pass"), upstream_scheme(p.mode, c.tunnel.scheme), c.tunnel_target)
  end

  local underscores = c.rule and rules.uses_underscore_header(c.rule)
  for _, r in ipairs(c.routes or {}) do underscores = underscores or rules.uses_underscore_header(r.rule) end
  -- Only intercepted ports are HTTP servers; the others are in `stream {}` below.
  for _, p in ipairs(c.intercepted) do
    if c.routes then
      add("    # Port %s (Service port %s): intercepted by %d routes; a request matching", p.name,
        tostring(p.port or "?"), #(c.route_by_port[p.port] or {}))
      add("    # none goes to the original.")
    else
      add("    # Port %s (Service port %s): intercepted. %s", p.name, tostring(p.port or "?"),
        c.route_all and "Every request goes to the tunnel."
                  or "Requests matching the rule go\n    # to the tunnel, all others to the original.")
    end
    add("    server {")
    add("        listen %s;", listen_parameters(c, p))
    if underscores then
      add("        # The rule names a header with '_', which NGINX drops unless told not to.")
      add("        underscores_in_headers on;")
    end
    add("        # Sent upstream on both routes: the original Host (a request without")
    add("        # one, HTTP/1.0 only, is forwarded without one), where it came from,")
    add("        # and a WebSocket upgrade when one is asked for.")
    request_headers("        ", "$http_host")
    add("        # Never replay a request to the other route: a retry could run it twice.")
    add("        %s off;", directive(p, "next_upstream"))
    h2c_settings(add, p)
    add("")
    if c.route_all then
      add("        location / {")
      tunnel_location("            ", p)
      add("        }")
    else
      add("        location / {")
      add("            # A request matching the rule is handed to @czctl_tunnel with its")
      add("            # method, headers and unread body; the 418 is never sent. (`return`")
      add("            # is the one directive always safe inside `if`; the tunnel's own")
      add("            # headers, TLS and log live there, so this route pays only the rule.)")
      add("            error_page 418 = @czctl_tunnel;")
      local condition = c.expr
      if c.routes then
        add("            # the first route whose rule matches (\"\" for none), for the tunnel's maps")
        add("            set $czctl_route $czctl_route_%s;", p.id)
        condition = "$czctl_route"
      elseif #c.maps == 0 then
        add("            # (`=` compares the value exactly; the header's name matches in any case)")
      end
      add("            if (%s) {", condition)
      add("                return 418;")
      add("            }")
      if c.route_header then add("            add_header X-Czctl-Route original always;") end
      add("            %s %s://czctl_original_%s;", directive(p, "pass"), upstream_scheme(p.mode, "http"), p.id)
      add("        }")
      add("")
      add("        # The intercept route: into the tunnel, one access-log line per request.")
      add("        location @czctl_tunnel {")
      tunnel_location("            ", p)
      add("        }")
    end
    add("    }")
    add("")
  end
end

-- The probes' server, and the end of `http {}`.
local function emit_health_server(add, c)
  add("    # Readiness and liveness probes: answered by NGINX itself, so probing never")
  add("    # reaches the user's application or the tunnel.")
  add("    server {")
  add("        listen %s;", c.listen(c.health_port))
  add("        access_log off;")
  add("        location = /healthz {")
  add("            default_type text/plain;")
  add("            return 200 \"ok\\n\";")
  add("        }")
  add("        location / {")
  add("            return 404;")
  add("        }")
  add("    }")
  add("}")

end

-- A port intercepted at TCP level (--all on TLS or a protocol that is not
-- HTTP): every connection goes to the tunnel, bytes untouched, so a TLS
-- session runs end to end between the client and the developer's server.
-- A connection the tunnel refuses (the holder and its landing are gone) goes
-- to the original instead (`backup`: decisions section 3, fail open); one it
-- accepted is never replayed.
local function stream_intercept_server(add, c, p)
  local route = c.routes and (c.route_by_port[p.port] or {})[1]
  local tunnel = route and route.tunnel or c.tunnel
  add("    # Port %s (Service port %s): intercepted at TCP level; every connection goes", p.name,
    tostring(p.port or "?"))
  add("    # to the tunnel%s, bytes untouched.", route and (" of session " .. route.id) or "")
  add("    upstream czctl_tcp_%s {", p.id)
  add("        server %s:%d;", tunnel.host, tunnel.port)
  add("        # A connection the tunnel refuses goes to the in-cluster version.")
  add("        server %s backup;", p.original)
  add("    }")
  add("    server {")
  add("        listen %s reuseport;", c.listen(p.listen))
  if c.access_log ~= false then add("        access_log /dev/stdout czctl_tcp buffer=64k flush=1s;") end
  add("        proxy_timeout 3600s;")
  add("        proxy_pass czctl_tcp_%s;", p.id)
  add("    }")
end

-- Every other port: a byte-level pass-through (TLS, gRPC, databases, UDP
-- keep working; NGINX never parses them).
local function emit_stream(add, c)
  -- Every other port: a byte-level pass-through (TLS, gRPC, databases, UDP
  -- keep working; NGINX never parses them).
  local passthrough = {}
  for _, p in ipairs(c.ports) do if not p.intercept then passthrough[#passthrough + 1] = p end end
  if #passthrough + #c.tcp_intercepted > 0 then
    add("")
    add("# ---- Ports that are not intercepted pass straight through, byte for byte")
    add("# (TLS, gRPC, databases, UDP...): NGINX forwards the connection or the")
    add("# datagrams to the original and never reads what they carry.")
    add("stream {")
    add("    # One line per connection (TCP) or session (UDP) on stdout.")
    add("    log_format czctl_stream '$remote_addr [$time_iso8601] $protocol :$server_port $status '")
    add("                            'route=original upstream=$upstream_addr '")
    add("                            'bytes_in=$bytes_received bytes_out=$bytes_sent session_time=$session_time';")
    if #c.tcp_intercepted > 0 then
      add("    log_format czctl_tcp '$remote_addr [$time_iso8601] $protocol :$server_port $status '")
      add("                         'route=intercept upstream=$upstream_addr '")
      add("                         'bytes_in=$bytes_received bytes_out=$bytes_sent session_time=$session_time';")
    end
    if c.access_log == false then
      add("    access_log off;")
    else
      add("    access_log /dev/stdout czctl_stream buffer=64k flush=1s;")
    end
    add("    tcp_nodelay on;")
    add("    proxy_connect_timeout 10s;")
    add("")
    for _, p in ipairs(c.tcp_intercepted) do stream_intercept_server(add, c, p) end
    for _, p in ipairs(passthrough) do
      add("    # Port %s (Service port %s/%s): not intercepted.", p.name, tostring(p.port or "?"), p.protocol)
      add("    server {")
      if p.protocol == "UDP" then
        add("        listen %s udp reuseport;", c.listen(p.listen))
        add("        # Datagrams both ways, any number of replies per request (no")
        add("        # proxy_responses limit); a client's session ends after 60 s of silence.")
        add("        proxy_timeout 60s;")
      else
        add("        listen %s reuseport;", c.listen(p.listen))
        add("        # Idle connections (pools, long-lived TLS) stay open for an hour.")
        add("        proxy_timeout 3600s;")
      end
      add("        proxy_pass %s;", p.original)
      add("    }")
    end
    add("}")
  end
end

local EMITTERS = { emit_globals, emit_http_settings, emit_rule_maps, emit_upstreams, emit_intercepted_servers,
                   emit_health_server, emit_stream }

--- Render the complete nginx.conf of the intercept proxy.
---@param opts table  see docs/lua-api.md, "czctl.proxy"
---@return string|nil conf
---@return string[]|string warnings_or_error
function M.render(opts)
  local c, err = plan(opts)
  if not c then return nil, err end
  local out = {}
  local function add(s, ...) out[#out + 1] = select("#", ...) > 0 and string.format(s, ...) or s end
  for _, emit in ipairs(EMITTERS) do emit(add, c) end
  return table.concat(out, "\n") .. "\n", c.warnings
end

return M
