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
-- of proxy_pass; the route's tunnel-grpc.conf, no request buffering), or
-- "tcp" (a stream server including the route's tunnel-stream.conf). Both
-- fail open through the original's stand-in, a server on a Unix socket
-- that is the backup of the route's upstream (czctl.proxy.route).
--
-- The intercepted server's `location /` hands a matching request to the
-- named location @czctl_tunnel (`if (CONDITION) { return 418; }` with
-- `error_page 418 = @czctl_tunnel`: method, headers and unread body are
-- kept) and proxies every other request to the original. The tunnel
-- location has its own headers, TLS settings and access log, so the
-- original route pays for no map but the rule's own.
--
-- The tunnel itself (URL, secret, certificates) is the route's
-- (czctl.proxy.route): nginx.conf only includes the route's files, which
-- render returns apart for a Secret (or, for a route whose files are
-- mounted already, only names). The tunnel location buffers the request
-- body and falls back to the original (@czctl_fallback) when the request
-- did not reach the developer's app (decisions section 3).
--
-- Several sessions on one proxy (opts.routes): each route's rule is one
-- variable, a map per intercepted port picks the first matching route's
-- named location (@czctl_tunnel_<id>, "" for none) and `error_page 418 =
-- $map` jumps there; each named location includes its own route's files.
local rules = require "czctl.proxy.rules"
local route = require "czctl.proxy.route"

local M = {}

M.DEFAULT_HEALTH_PORT = 8079
-- Idle upstream connections kept per worker and upstream group.
M.DEFAULT_KEEPALIVE = 64
-- The cluster DNS Service under its conventional name (kubeadm, kind, minikube,
-- k3s, GKE, EKS, AKS all keep it); used to resolve a tunnel's host name.
M.DEFAULT_RESOLVER = route.DEFAULT_RESOLVER
-- A request body up to this size stays in memory while it waits for the
-- tunnel's answer; larger ones go to a file in the pod's /tmp emptyDir.
M.TUNNEL_BODY_BUFFER = "128k"

local function fail(fmt, ...)
  return nil, string.format(fmt, ...)
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

-- The route of a session: planned from its tunnel upstream (its files are
-- rendered here), or, with tunnel_files = "mounted", only referenced (its
-- files were rendered apart, by the session, and are mounted at dir).
local function tunnel_route(up, files_mode, o)
  if files_mode == "mounted" then return route.ref(o.id, o.dir) end
  if files_mode ~= nil then return fail("proxy.render: tunnel_files must be \"mounted\" or absent") end
  return route.plan(up, o)
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
-- when a route names it, and each route's files live in route_dir/<id>;
-- one route is rendered as opts.rule and opts.tunnel_upstream would be, two
-- or more by plan_routes.
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
    rest.route_root = opts.route_dir or route.DEFAULT_DIR
    if #opts.routes == 1 then
      local r = opts.routes[1]
      rest.rule, rest.tunnel_upstream, rest.tunnel_files = r.rule, r.tunnel_upstream, r.tunnel_files
      rest.session = r.id or opts.session
      rest.route_dir = rest.route_root .. "/" .. tostring(rest.session)
      rest.files_prefix = tostring(rest.session) .. "/"
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

  local keepalive = opts.upstream_keepalive
  if keepalive == nil then keepalive = M.DEFAULT_KEEPALIVE end
  keepalive = math.tointeger(keepalive)
  if not keepalive or keepalive < 0 then return fail("proxy.render: upstream_keepalive must be a count >= 0") end
  if multi then
    return plan_routes(multi, { ports = ports, warnings = warnings, runtime_dir = runtime_dir,
                                health_port = health_port, listen = listen, session = session,
                                any_intercept = any_intercept, access_log = opts.access_log,
                                route_header = opts.route_header == true, keepalive = keepalive,
                                keepalive_time = math.tointeger(opts.keepalive_time) }, opts)
  end
  local expr, maps = rules.compile(rule)
  local tunnel
  if any_intercept then
    local err, mode
    local count = { http = 0, h2c = 0, tcp = 0 }
    for _, p in ipairs(ports) do
      if p.intercept then
        count[p.mode] = count[p.mode] + 1
        if p.mode ~= "http" then mode = p.mode end
      end
    end
    if count.h2c + count.tcp > 1 then
      -- each has the session's one stand-in socket (czctl.proxy.route)
      return fail("proxy.render: one session intercepts at most one port as h2c or tcp; use one route per port "
                  .. "(opts.routes)")
    end
    tunnel, err = tunnel_route(opts.tunnel_upstream, opts.tunnel_files,
                               { id = session, dir = opts.route_dir, runtime_dir = runtime_dir,
                                 nginx_version = opts.nginx_version, keepalive = keepalive, mode = mode })
    if not tunnel then return nil, err end
  end
  local route_header = opts.route_header == true

  local intercepted, tcp_intercepted = split_intercepted(ports)
  return {
    ports = ports, rule = rule, warnings = warnings, runtime_dir = runtime_dir, health_port = health_port,
    listen = listen, session = session, any_intercept = any_intercept, tunnel = tunnel,
    expr = expr, maps = maps, keepalive = keepalive, route_header = route_header,
    access_log = opts.access_log, intercepted = intercepted, tcp_intercepted = tcp_intercepted,
    route_all = expr == "1",
    keepalive_time = math.tointeger(opts.keepalive_time), files_prefix = opts.files_prefix or "",
  }
end

-- The plan for two or more routes (sessions) on one proxy. Each route's
-- rule becomes one variable ("1" when it matches); per intercepted port a
-- map over those variables gives the first matching route's named location
-- ("" for none: the original). Everything about a route's tunnel is in its
-- own files (route_dir/<id>), so the original route pays one map plus the
-- rules, whatever the count, and nginx.conf names no tunnel.
function plan_routes(routes, c, opts)
  c.routes, c.route_by_port = {}, {}
  local seen_id, seen_ident = {}, {}
  local root = opts.route_root or route.DEFAULT_DIR
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
    local tunnel, err = tunnel_route(r.tunnel_upstream, r.tunnel_files,
                                     { id = id, dir = root .. "/" .. id, runtime_dir = c.runtime_dir,
                                       nginx_version = opts.nginx_version, keepalive = c.keepalive,
                                       mode = r.mode })
    if not tunnel then return fail("%s: %s", what, err) end
    if seen_ident[tunnel.id] then return fail("%s: id %s names the same route as %s", what, id, seen_ident[tunnel.id]) end
    seen_ident[tunnel.id] = id
    local entry = { id = id, key = key, rule = r.rule, var = var, maps = maps, tunnel = tunnel,
                    port = math.tointeger(r.port), mode = r.mode or "http", location = "@czctl_tunnel_" .. tunnel.id,
                    files_prefix = id .. "/" }
    c.routes[i] = entry
    local list = c.route_by_port[entry.port] or {}
    list[#list + 1] = entry
    c.route_by_port[entry.port] = list
  end
  c.intercepted, c.tcp_intercepted = split_intercepted(c.ports)
  c.route_all, c.maps = false, {}
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
      add("#   %s session %s, port %d: %s -> its tunnel (%s)", r.key, r.id, r.port, short(r.rule), r.tunnel.dir)
    end
  else
    add("# Routing rule: %s", short(c.rule))
  end
  for _, p in ipairs(c.ports) do
    add("#   port %-8s proxy :%d%s -> %s%s", p.name, p.listen, p.protocol == "TCP" and "" or "/" .. p.protocol,
      p.intercept and "rule ? tunnel (else, or when it fails) : " or "", p.original)
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

-- The maps of several routes: each rule's, then per port the named location
-- of the route that matches first.
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
    add("    # Port %s: the named location of the first route whose rule matches", p.name)
    add("    # (regular expressions in a map are tried in order), or \"\" for the original.")
    add("    map %s $czctl_route_%s {", rules.nginx_quote(table.concat(vars, ":") .. ":"), p.id)
    add("        default \"\";")
    for i, r in ipairs(list) do
      add("        %s %s;", rules.nginx_quote("~^" .. string.rep(":", i - 1) .. "1"), r.location)
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

-- The upstreams: the originals of the intercepted ports (also the fallback
-- of the tunnel route) and the route's own file.
local function emit_upstreams(add, c)
  add("    # ---- Upstreams. `keepalive` keeps idle connections open in the worker so")
  add("    # requests do not pay a TCP (or TLS) handshake each.")
  for _, p in ipairs(c.intercepted) do
    add("    # The in-cluster version of port %s (the copy Service, by ClusterIP).", p.name)
    add("    upstream czctl_original_%s {", p.id)
    add("        server %s;", p.original)
    route.keepalive_lines(add, c.keepalive, "        ")
    add("    }")
  end
  if c.routes then
    for _, r in ipairs(c.routes) do
      add("    # %s: the tunnel of session %s (upstream, TLS, secret), from its Secret.", r.key, r.id)
      add("    include %s;", r.tunnel.http_include)
    end
  elseif c.any_intercept then
    add("    # The tunnel of session %s: its upstream, TLS and secret, from the", c.session)
    add("    # session's Secret (mounted at %s).", c.tunnel.dir)
    add("    include %s;", c.tunnel.http_include)
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

  -- The body of the location that sends a request into a tunnel.
  local function tunnel_location(indent, tunnel, session, p)
    if c.access_log ~= false then
      add("%saccess_log /dev/stdout czctl buffer=64k flush=1s;", indent)
    end
    if p.mode == "h2c" then
      add("%s# Fail open where NGINX can tell: a call whose connection to the tunnel", indent)
      add("%s# fails (refused, timed out, TLS) goes to the in-cluster version through", indent)
      add("%s# the route's upstream, whose backup is the original's stand-in (below).", indent)
      add("%s# The body is not kept (client and bidirectional streams would wait for", indent)
      add("%s# their end), so a call is never replayed once the tunnel took it.", indent)
    else
      add("%s# Fail open: the body is kept (in memory up to %s, then in /tmp) so a", indent, M.TUNNEL_BODY_BUFFER)
      add("%s# request that did not reach the developer's app (refused, reset, timed", indent)
      add("%s# out, the tunnel's own error) goes to the in-cluster version instead.", indent)
      add("%s# Every answer of the app passes unchanged (no proxy_intercept_errors).", indent)
      add("%sproxy_request_buffering on;", indent)
      add("%sclient_body_buffer_size %s;", indent, M.TUNNEL_BODY_BUFFER)
      add("%serror_page 502 504 = @czctl_fallback;", indent)
    end
    if c.route_header then add("%sadd_header X-Czctl-Route intercept always;", indent) end
    add("%s# The route of session %s: headers, secret, TLS and upstream.", indent, session)
    add("%sinclude %s;", indent, p.mode == "h2c" and tunnel.grpc_include or tunnel.location_include)
  end

  -- The original's pass of a port (grpc:// for h2c).
  local function original_pass(indent, p)
    add("%s%s %s://czctl_original_%s;", indent, directive(p, "pass"), upstream_scheme(p.mode, "http"), p.id)
  end

  -- `location /` of an intercepted port: a request whose condition holds
  -- goes to the named location `target` (error_page 418), the rest to the original.
  local function dispatch(p, comment, target, condition, note)
    add("        location / {")
    for _, line in ipairs(comment) do add("            # %s", line) end
    add("            error_page 418 = %s;", target)
    if note then add("            # %s", note) end
    add("            if (%s) {", condition)
    add("                return 418;")
    add("            }")
    if c.route_header then add("            add_header X-Czctl-Route original always;") end
    original_pass("            ", p)
    add("        }")
  end

  local underscores = (not c.routes) and rules.uses_underscore_header(c.rule)
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
    add("        # Never replay a request to the other route: a retry could run it twice")
    add("        # (the fallback below takes only requests that never reached the app).")
    add("        %s off;", directive(p, "next_upstream"))
    add("        # The tunnel location is reached through error_page 418; its own")
    add("        # error_page (the fallback) needs this.")
    add("        recursive_error_pages on;")
    h2c_settings(add, p)
    add("")
    if c.routes then
      dispatch(p, { "A request matching a route's rule is handed to that route's named",
                    "location with its method, headers and unread body (the 418 is never",
                    "sent: error_page takes the location from the port's map)." },
               "$czctl_route_" .. p.id, "$czctl_route_" .. p.id)
      for _, r in ipairs(c.route_by_port[p.port] or {}) do
        add("")
        add("        # %s: into the tunnel of session %s, one access-log line per request.", r.key, r.id)
        add("        location %s {", r.location)
        tunnel_location("            ", r.tunnel, r.id, p)
        add("        }")
      end
    elseif c.route_all then
      add("        location / {")
      tunnel_location("            ", c.tunnel, c.session, p)
      add("        }")
    else
      dispatch(p, { "A request matching the rule is handed to @czctl_tunnel with its",
                    "method, headers and unread body; the 418 is never sent. (`return`",
                    "is the one directive always safe inside `if`; the tunnel's own",
                    "headers, TLS and log live there, so this route pays only the rule.)" },
               "@czctl_tunnel", c.expr,
               #c.maps == 0 and "(`=` compares the value exactly; the header's name matches in any case)" or nil)
      add("")
      add("        # The intercept route: into the tunnel, one access-log line per request.")
      add("        location @czctl_tunnel {")
      tunnel_location("            ", c.tunnel, c.session, p)
      add("        }")
    end
    if p.mode ~= "h2c" then
      add("")
      add("        # A request the tunnel could not deliver: the in-cluster version answers.")
      add("        location @czctl_fallback {")
      if c.route_header then add("            add_header X-Czctl-Route fallback always;") end
      original_pass("            ", p)
      add("        }")
    end
    add("    }")
    add("")
    if p.mode == "h2c" then
      for _, r in ipairs(c.routes and c.route_by_port[p.port] or { { tunnel = c.tunnel, id = c.session } }) do
        add("    # The original's stand-in for the tunnel of session %s (port %s): the backup", r.id, p.name)
        add("    # of the route's upstream, for a call that never reached the tunnel. Its")
        add("    # listen line and TLS (the tunnel's, which grpc_ssl speaks to the whole")
        add("    # upstream) are in the session's Secret.")
        add("    server {")
        add("        include %s;", r.tunnel.grpc_standin_include)
        add("        access_log off;")
        add("        grpc_read_timeout 3600s;")
        add("        grpc_send_timeout 3600s;")
        add("        location / {")
        original_pass("            ", p)
        add("        }")
        add("    }")
        add("")
      end
    end
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
-- Two servers per port, from the route's files (czctl.proxy.route): the
-- port's server sends each connection to the route's upstream (the tunnel,
-- with its TLS where it has TLS: `proxy_ssl on` and the proxy's client
-- certificate for a landing), whose backup is the second server, the
-- original's stand-in on a Unix socket: it answers the tunnel's TLS and
-- passes the bytes to the original. NGINX's stream proxy_ssl applies to
-- every server of an upstream, hence the stand-in: a connection whose
-- connect or TLS handshake to the tunnel fails reaches the original (fail
-- open, decisions section 7); one the tunnel accepted is never replayed.
local function stream_intercept_server(add, c, p)
  local r = c.routes and (c.route_by_port[p.port] or {})[1]
  local tunnel = r and r.tunnel or c.tunnel
  add("    # Port %s (Service port %s): intercepted at TCP level; every connection goes", p.name,
    tostring(p.port or "?"))
  add("    # to the tunnel of session %s, bytes untouched, or to the original when the", r and r.id or c.session)
  add("    # tunnel cannot be reached. The route's upstream (tunnel, stand-in as backup):")
  add("    include %s;", tunnel.tcp_include)
  add("    server {")
  add("        listen %s reuseport;", c.listen(p.listen))
  if c.access_log ~= false then add("        access_log /dev/stdout czctl_tcp buffer=64k flush=1s;") end
  add("        proxy_timeout 3600s;")
  add("        # The route: TLS to the tunnel and its upstream, from the session's Secret.")
  add("        include %s;", tunnel.stream_include)
  add("    }")
  add("    # The original's stand-in for the tunnel of port %s: its listen line and TLS", p.name)
  add("    # from the session's Secret, then the bytes to the original.")
  add("    server {")
  add("        include %s;", tunnel.stream_standin_include)
  if c.access_log ~= false then add("        access_log /dev/stdout czctl_stream buffer=64k flush=1s;") end
  add("        proxy_timeout 3600s;")
  add("        proxy_pass %s;", p.original)
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

--- Render the complete nginx.conf of the intercept proxy, and the files of
--- the tunnel routes it includes (for Secrets mounted at opts.route_dir;
--- with opts.routes, each route's under route_dir/<id>).
---@param opts table  see docs/lua-api.md, "czctl.proxy"
---@return string|nil conf
---@return string[]|string warnings_or_error
---@return table<string,string>|nil files the routes' files, name -> content (with opts.routes, "<id>/name");
---        none for a route without a tunnel or whose files are mounted already
function M.render(opts)
  local c, err = plan(opts)
  if not c then return nil, err end
  local files = {}
  local function collect(t, prefix)
    if t and t.up then
      for name, content in pairs(route.files(t)) do files[prefix .. name] = content end
    end
  end
  if c.routes then
    for _, r in ipairs(c.routes) do collect(r.tunnel, r.files_prefix) end
  else
    collect(c.tunnel, c.files_prefix)
  end
  local out = {}
  local function add(s, ...) out[#out + 1] = select("#", ...) > 0 and string.format(s, ...) or s end
  for _, emit in ipairs(EMITTERS) do emit(add, c) end
  return table.concat(out, "\n") .. "\n", c.warnings, files
end

return M
