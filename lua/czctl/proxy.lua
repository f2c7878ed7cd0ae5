-- czctl.proxy: routing rules as data, and the NGINX configuration that
-- implements them for the intercept proxy (nginxinc/nginx-unprivileged).
--
-- Pure functions only: no I/O, no processes, no Kubernetes. The recipe decides
-- where the text goes (a ConfigMap); tests render it and run a real nginx.
--
-- How routing is compiled (see docs/lua-api.md, "czctl.proxy"):
--   * every leaf rule becomes one `map` producing "1" or "" from one request
--     variable, always through an anchored, escaped regular expression, because
--     NGINX `map` string keys match case-insensitively and header values must
--     match exactly;
--   * `any` / `every` / `not` are maps over the concatenation of their
--     children's variables ("$a$b" matched by ~1 / ~^11$ / ~1 negated);
--   * the CLI's rule (one header, one value without '$') needs no map: it is
--     the condition `$http_NAME = "VALUE"` (exact and case-sensitive);
--   * the intercepted server's `location /` hands a matching request to the
--     named location @czctl_tunnel (`if (CONDITION) { return 418; }` with
--     `error_page 418 = @czctl_tunnel`: method, headers and unread body are
--     kept) and proxies every other request to the original. The tunnel
--     location has its own headers, TLS settings and access log, so the
--     original route pays for no map but the rule's own.
local M = {}

M.DEFAULT_HEADER = "X-C6O-INTERCEPT:yes"
M.DEFAULT_HEALTH_PORT = 8079
-- Idle upstream connections kept per worker and upstream group.
M.DEFAULT_KEEPALIVE = 64
-- The cluster DNS Service under its conventional name (kubeadm, kind, minikube,
-- k3s, GKE, EKS, AKS all keep it); used to resolve a tunnel's host name.
M.DEFAULT_RESOLVER = "kube-dns.kube-system.svc.cluster.local"


-- RFC 9110 token characters.
local TCHAR = "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$"

local function fail(fmt, ...)
  return nil, string.format(fmt, ...)
end

local function has_control(s)
  return s:find("[%z\1-\8\10-\31\127]") ~= nil
end

---------------------------------------------------------------------------
-- Escaping
---------------------------------------------------------------------------

--- Escape a literal string for a PCRE pattern: alphanumerics stay, other
--- printable ASCII gets a backslash, everything else becomes \xHH.
---@param s string
---@return string
function M.pcre_escape(s)
  return (s:gsub("[^%w]", function(c)
    local b = c:byte()
    if b >= 0x20 and b <= 0x7e then return "\\" .. c end
    return string.format("\\x%02x", b)
  end))
end

--- Quote a string as one NGINX configuration token (double quotes). The NGINX
--- parser turns \\ into \ and \" into ", and keeps any other backslash pair
--- as is, so escaping those two is enough; control characters are refused
--- by validation before they get here.
---@param s string
---@return string
function M.nginx_quote(s)
  return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

---------------------------------------------------------------------------
-- Rules
---------------------------------------------------------------------------

local LEAVES = { header = true, cookie = true, path_prefix = true, all = true }
local GROUPS = { any = true, every = true }

local function rule_kind(rule)
  local kind
  for k in pairs(rule) do
    if LEAVES[k] or GROUPS[k] or k == "not" then
      if kind then return nil, "a rule has exactly one of header, cookie, path_prefix, all, any, every, not (got " .. kind .. " and " .. k .. ")" end
      kind = k
    else
      return nil, string.format("unknown rule key %q", tostring(k))
    end
  end
  if not kind then return nil, "empty rule: use one of header, cookie, path_prefix, all, any, every, not" end
  return kind
end

local function check_header_name(name, warnings)
  if type(name) ~= "string" or name == "" then return fail("header name is empty") end
  if not name:find(TCHAR) then
    return fail("invalid header name %q: only letters, digits, '-' and '_' are allowed", name)
  end
  local bad = name:match("[^%w%-_]")
  if bad then
    return fail("header name %q contains %q, which NGINX ignores in header names: only letters, digits, '-' and '_' are allowed", name, bad)
  end
  if name:find("_", 1, true) and warnings then
    warnings[#warnings + 1] = string.format(
      "header name %q contains '_': the proxy enables underscores_in_headers, so %q and %q are the same header to it",
      name, name, (name:gsub("_", "-")))
  end
  return true
end

local function check_value(what, v)
  if type(v) ~= "string" then return fail("%s must be a string", what) end
  if v == "" then return fail("%s is empty", what) end
  if has_control(v) then return fail("%s contains a control character, which cannot appear in a request", what) end
  return true
end

local function validate(rule, warnings, path)
  if type(rule) ~= "table" then return fail("%s: a rule must be a table", path) end
  local kind, err = rule_kind(rule)
  if not kind then return fail("%s: %s", path, err) end
  local v = rule[kind]
  if kind == "all" then
    if v ~= true then return fail("%s: all must be true", path) end
  elseif kind == "path_prefix" then
    local ok, e = check_value("path_prefix", v)
    if not ok then return fail("%s: %s", path, e) end
    if v:sub(1, 1) ~= "/" then return fail("%s: path_prefix %q must start with '/'", path, v) end
  elseif kind == "header" or kind == "cookie" then
    if type(v) ~= "table" then return fail("%s: %s must be a table { name=, equals= }", path, kind) end
    for k in pairs(v) do
      if k ~= "name" and k ~= "equals" and not (kind == "header" and k == "matches") then
        return fail("%s: unknown %s field %q", path, kind, tostring(k))
      end
    end
    if kind == "header" then
      local ok, e = check_header_name(v.name, warnings)
      if not ok then return fail("%s: %s", path, e) end
    else
      if type(v.name) ~= "string" or v.name == "" then return fail("%s: cookie name is empty", path) end
      if not v.name:find(TCHAR) then return fail("%s: invalid cookie name %q", path, v.name) end
    end
    if (v.equals == nil) == (v.matches == nil) then
      return fail("%s: %s needs exactly one of equals= or matches=", path, kind)
    end
    local ok, e = check_value(v.equals and "value" or "regular expression", v.equals or v.matches)
    if not ok then return fail("%s: %s %s", path, v.name, e) end
  elseif kind == "not" then
    return validate(v, warnings, path .. ".not")
  else -- any / every
    if type(v) ~= "table" or #v == 0 then return fail("%s: %s needs a non-empty list of rules", path, kind) end
    for i, child in ipairs(v) do
      local ok, e = validate(child, warnings, string.format("%s.%s[%d]", path, kind, i))
      if not ok then return nil, e end
    end
  end
  return true
end

--- Check a routing rule. Returns true and a list of warnings, or nil and a
--- one-line message naming the offending part ("rule.every[2]: ...").
---@param rule table
---@return boolean|nil ok
---@return string[]|string warnings_or_error
function M.validate(rule)
  local warnings = {}
  local ok, err = validate(rule, warnings, "rule")
  if not ok then return nil, err end
  return true, warnings
end

--- Build the rule the CLI flags describe: --all routes everything, otherwise
--- --header NAME:VALUE (split at the first colon, whitespace around the
--- value trimmed; default X-C6O-INTERCEPT:yes).
---@param flags {header?: string, all?: boolean}
---@return table|nil rule
---@return string|nil err  one line, suitable for a usage error
function M.from_flags(flags)
  flags = flags or {}
  if flags.all then return { all = true } end
  local spec = flags.header
  if spec == nil or spec == "" then spec = M.DEFAULT_HEADER end
  if type(spec) ~= "string" then return fail("--header must be NAME:VALUE") end
  local colon = spec:find(":", 1, true)
  if not colon then
    return fail("invalid --header %q: expected NAME:VALUE, for example %s", spec, M.DEFAULT_HEADER)
  end
  local name = spec:sub(1, colon - 1):match("^%s*(.-)%s*$")
  local value = spec:sub(colon + 1):match("^%s*(.-)%s*$")
  if name == "" then return fail("invalid --header %q: the header name before ':' is empty", spec) end
  if value == "" then return fail("invalid --header %q: the value after ':' is empty", spec) end
  local rule = { header = { name = name, equals = value } }
  local ok, err = M.validate(rule)
  if not ok then return fail("invalid --header %q: %s", spec, (err:gsub("^rule: ", ""))) end
  return rule
end

--- A short human description of a rule, for output ("X-C6O-INTERCEPT: yes").
---@param rule table
---@return string
function M.describe(rule)
  local kind = rule_kind(rule)
  local v = rule[kind]
  if kind == "all" then return "all requests" end
  if kind == "path_prefix" then return "path starts with " .. v end
  if kind == "header" then
    if v.equals then return v.name .. ": " .. v.equals end
    return v.name .. " matches /" .. v.matches .. "/"
  end
  if kind == "cookie" then return "cookie " .. v.name .. "=" .. v.equals end
  if kind == "not" then return "not (" .. M.describe(v) .. ")" end
  local parts = {}
  for i, child in ipairs(v) do parts[i] = "(" .. M.describe(child) .. ")" end
  return table.concat(parts, kind == "any" and " or " or " and ")
end

--- A request that a rule routes to the tunnel, for the ready-to-paste
--- example: headers to send and a path. The first alternative of `any` that
--- has one, every part of `every` (their paths must nest), nothing for `not`
--- (not sending a header is how to avoid it). nil when fixed headers and a
--- path cannot satisfy the rule (a regular expression, paths that conflict).
---@param rule table
---@return {headers: string[], path: string}|nil
function M.example_request(rule)
  local kind = rule_kind(rule)
  local v = rule[kind]
  if kind == "all" or kind == "not" then return { headers = {}, path = "/" } end
  if kind == "header" then
    return v.equals and { headers = { v.name .. ": " .. v.equals }, path = "/" } or nil
  end
  if kind == "cookie" then return { headers = { "Cookie: " .. v.name .. "=" .. v.equals }, path = "/" } end
  if kind == "path_prefix" then return { headers = {}, path = v } end
  if kind == "any" then
    for _, child in ipairs(v) do
      local r = M.example_request(child)
      if r then return r end
    end
    return nil
  end
  local out = { headers = {}, path = "/" }
  for _, child in ipairs(v) do
    local r = M.example_request(child)
    if not r then return nil end
    for _, h in ipairs(r.headers) do out.headers[#out.headers + 1] = h end
    if r.path ~= "/" then
      if out.path ~= "/" and out.path:sub(1, #r.path) ~= r.path and r.path:sub(1, #out.path) ~= out.path then
        return nil
      end
      if #r.path > #out.path then out.path = r.path end
    end
  end
  return out
end

--- The header a rule asks for, "Name: value", when the rule is exactly one
--- header with one value (the CLI's --header); nil otherwise.
---@param rule table
---@return string|nil
function M.example_header(rule)
  local h = rule.header
  if h and h.equals and next(rule, next(rule)) == nil then return h.name .. ": " .. h.equals end
  return nil
end

--- The NGINX variable holding a request header ($http_x_c6o_intercept).
---@param name string
---@return string
function M.header_variable(name)
  return "$http_" .. name:lower():gsub("[-]", "_")
end

---------------------------------------------------------------------------
-- Rule compilation: a list of `map` blocks and the expression that is "1"
-- when the rule matches.
---------------------------------------------------------------------------

local function compile(rule, maps)
  local kind = rule_kind(rule)
  local v = rule[kind]
  if kind == "all" then return "1" end
  local var = string.format("$czctl_rule_%d", #maps + 1)
  local source, key, comment
  if kind == "header" then
    source = M.header_variable(v.name)
    if v.equals then
      key = "~^" .. M.pcre_escape(v.equals) .. "$"
      comment = string.format("header %s equals %q (name case-insensitive, value exact)", v.name, v.equals)
    else
      key = "~" .. v.matches
      comment = string.format("header %s matches the regular expression %s", v.name, v.matches)
    end
  elseif kind == "cookie" then
    -- $cookie_NAME compares names case-insensitively and only knows names made
    -- of variable characters, so match the raw Cookie header instead.
    source = "$http_cookie"
    key = "~(?:^|;)\\s*" .. M.pcre_escape(v.name) .. "=" .. M.pcre_escape(v.equals) .. "\\s*(?:;|$)"
    comment = string.format("cookie %s equals %q (exact)", v.name, v.equals)
  elseif kind == "path_prefix" then
    -- $uri is decoded and normalised ("//", "/./", "/../" resolved), so a
    -- prefix cannot be dodged by spelling the path differently.
    source = "$uri"
    key = "~^" .. M.pcre_escape(v)
    comment = string.format("path starts with %s", v)
  else
    local children = {}
    local parts = rule[kind]
    if kind == "not" then parts = { v } end
    for i, child in ipairs(parts) do children[i] = compile(child, maps) end
    var = string.format("$czctl_rule_%d", #maps + 1)
    source = table.concat(children)
    if kind == "any" then
      key, comment = "~1", "any of: " .. table.concat(children, " ")
    elseif kind == "every" then
      key, comment = "~^" .. string.rep("1", #children) .. "$", "every one of: " .. table.concat(children, " ")
    else
      key, comment = "~1", "not " .. children[1]
    end
    if kind == "not" then
      maps[#maps + 1] = string.format("# %s\nmap %s %s {\n    default 1;\n    %s \"\";\n}",
        comment, M.nginx_quote(source), var, M.nginx_quote(key))
      return var
    end
  end
  maps[#maps + 1] = string.format("# %s\nmap %s %s {\n    default \"\";\n    %s 1;\n}",
    comment:gsub("\n", " "), source:find("^%$[%w_]+$") and source or M.nginx_quote(source), var,
    M.nginx_quote(key))
  return var
end

--- Compile a rule to the condition of an NGINX `if` and the maps it needs
--- (exposed for tests and for users who want to embed the rule in their own
--- configuration).
---
--- The CLI's rule, one header equal to one value, needs no map: `if`'s `=`
--- compares bytes exactly (case-sensitive, as a value must be) and costs the
--- original route less than a map with a regular expression. A value holding
--- '$' would be read as a variable there, so it goes through a map.
---@param rule table
---@return string|nil condition  "1" (every request), "$czctl_rule_N" or "$http_NAME = \"VALUE\""
---@return string[]|string maps_or_error
function M.compile(rule)
  local ok, err = M.validate(rule)
  if not ok then return nil, err end
  local h = rule.header
  if h and h.equals and not h.equals:find("$", 1, true) then
    return string.format("%s = %s", M.header_variable(h.name), M.nginx_quote(h.equals)), {}
  end
  local maps = {}
  return compile(rule, maps), maps
end

local function uses_underscore_header(rule)
  local kind = rule_kind(rule)
  local v = rule[kind]
  if kind == "header" then return v.name:find("_", 1, true) ~= nil end
  if kind == "not" then return uses_underscore_header(v) end
  if kind == "any" or kind == "every" then
    for _, child in ipairs(v) do
      if uses_underscore_header(child) then return true end
    end
  end
  return false
end

---------------------------------------------------------------------------
-- Rendering
---------------------------------------------------------------------------

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

--- Render the complete nginx.conf of the intercept proxy.
---@param opts table  see docs/lua-api.md, "czctl.proxy"
---@return string|nil conf
---@return string[]|string warnings_or_error
function M.render(opts)
  if type(opts) ~= "table" then return fail("proxy.render needs a table") end
  if type(opts.ports) ~= "table" or #opts.ports == 0 then return fail("proxy.render: ports is empty") end
  local ports = {}
  local rule = opts.rule or { all = true }
  local ok, warnings = M.validate(rule)
  if not ok then return nil, warnings end
  local runtime_dir = opts.runtime_dir or "/tmp"
  if has_control(runtime_dir) or runtime_dir:find("[%s;{}\"'#]") then
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
    if has_control(name) then return fail("%s: name has control characters", what) end
    -- Numbers from JSON arrive as floats: keep integral ones as integers.
    p = { name = name, port = math.tointeger(p.port) or p.port, listen = math.tointeger(p.listen) or p.listen,
          original = p.original, intercept = p.intercept, protocol = p.protocol or "TCP" }
    ports[i] = p
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

  local up = opts.tunnel_upstream
  local tunnel
  if any_intercept then
    if type(up) ~= "table" then return fail("proxy.render: tunnel_upstream is required when a port is intercepted") end
    local err
    tunnel, err = parse_url(up.url)
    if not tunnel then return nil, err end
    if up.host_header ~= nil and (type(up.host_header) ~= "string" or not up.host_header:find("^[%w.%-:%[%]]+$")) then
      return fail("proxy.render: tunnel_upstream.host_header must be a host name")
    end
    for k, v in pairs(up.extra_headers or {}) do
      local okh, eh = check_header_name(k)
      if not okh then return fail("proxy.render: extra header: %s", eh) end
      if type(v) ~= "string" or has_control(v) or v:find("$", 1, true) then
        return fail("proxy.render: extra header %s: the value must be printable text without '$'", k)
      end
    end
    if up.resolver ~= nil and up.resolver ~= false and not tostring(up.resolver):find("^[%w.:%[%]%- ]+$") then
      return fail("proxy.render: tunnel_upstream.resolver must be one or more DNS server addresses, or false")
    end
  end

  local expr, maps = M.compile(rule)
  local keepalive = opts.upstream_keepalive
  if keepalive == nil then keepalive = M.DEFAULT_KEEPALIVE end
  keepalive = math.tointeger(keepalive)
  if not keepalive or keepalive < 0 then return fail("proxy.render: upstream_keepalive must be a count >= 0") end
  local route_header = opts.route_header == true

  local out = {}
  local function add(s, ...) out[#out + 1] = select("#", ...) > 0 and string.format(s, ...) or s end

  add("# czctl intercept proxy — session %s", session)
  add("# Generated by czctl (lua/czctl/proxy.lua); edits are lost when the session ends.")
  add("# Routing rule: %s", M.describe(rule):gsub("\n", " "))
  for _, p in ipairs(ports) do
    add("#   port %-8s proxy :%d%s -> %s%s", p.name, p.listen, p.protocol == "TCP" and "" or "/" .. p.protocol,
      p.intercept and "rule ? tunnel : " or "", p.original)
  end
  add("")
  add("# Runs as a non-root user: no `user` directive, pid and temp files in %s.", runtime_dir)
  add("# One worker: the pod is limited to half a CPU, which one worker can use")
  add("# alone, and `auto` would start one per CPU of the node (each holding its")
  add("# connection tables), enough on a large node to pass the memory limit.")
  add("worker_processes 1;")
  add("pid %s/nginx.pid;", runtime_dir)
  add("error_log stderr notice;")
  add("")
  add("events {")
  add("    worker_connections 4096;")
  add("}")
  add("")
  add("http {")
  add("    client_body_temp_path %s/client_temp;", runtime_dir)
  add("    proxy_temp_path       %s/proxy_temp;", runtime_dir)
  add("    fastcgi_temp_path     %s/fastcgi_temp;", runtime_dir)
  add("    uwsgi_temp_path       %s/uwsgi_temp;", runtime_dir)
  add("    scgi_temp_path        %s/scgi_temp;", runtime_dir)
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

  local intercepted = {}
  for _, p in ipairs(ports) do if p.intercept then intercepted[#intercepted + 1] = p end end
  local route_all = expr == "1"

  if any_intercept and #maps > 0 then
    add("    # ---- Routing rule: each map yields \"1\" when its part of the rule matches.")
    add("    # String keys in `map` ignore case, so values are matched with anchored,")
    add("    # escaped regular expressions (~^...$), which are case-sensitive.")
    for _, m in ipairs(maps) do
      for line in (m .. "\n"):gmatch("(.-)\n") do add("    %s", line) end
    end
    add("")
  end

  -- Upstream groups.
  add("    # ---- Upstreams. `keepalive` keeps idle connections open in the worker so")
  add("    # requests do not pay a TCP (or TLS) handshake each.")
  local function keepalive_lines()
    if keepalive > 0 then
      add("        keepalive %d;", keepalive)
      add("        keepalive_requests 10000;")
      add("        keepalive_timeout 60s;")
    end
  end
  if not route_all then
    for _, p in ipairs(intercepted) do
      add("    # The in-cluster version of port %s (the copy Service, by ClusterIP).", p.name)
      add("    upstream czctl_original_%s {", p.id)
      add("        server %s;", p.original)
      keepalive_lines()
      add("    }")
    end
  end
  local tunnel_target, tunnel_host_header, ssl_name
  if any_intercept then
    -- A host name in a static `upstream` is resolved when NGINX loads its
    -- configuration; if DNS is slow or fails, NGINX does not start at all. So
    -- names are resolved per request through `resolver` (default: the cluster
    -- DNS Service by its conventional name), unless resolver = false.
    local resolver = up.resolver
    if resolver == nil then resolver = M.DEFAULT_RESOLVER end
    local runtime_resolve = (not tunnel.is_ip) and resolver ~= false
    local hostport = tunnel.host .. ":" .. tunnel.port
    tunnel_host_header = up.host_header
    if tunnel.scheme == "https" and not tunnel_host_header and not tunnel.is_ip then
      -- ngrok (and most tunnel edges) route by Host: send the tunnel's name.
      tunnel_host_header = tunnel.host
    end
    ssl_name = tunnel.scheme == "https" and not tunnel.is_ip and tunnel.host or nil
    if runtime_resolve then
      add("    # The tunnel: %s", up.url)
      add("    # Its name is resolved at request time (through the resolver below), so a")
      add("    # slow or failing DNS lookup cannot stop the proxy from starting.")
      add("    # (No upstream keep-alive on this hop: NGINX cannot pool connections")
      add("    # to a name resolved per request.)")
      add("    resolver %s valid=30s ipv6=off;", resolver)
      add("    # A variable in proxy_pass is what makes NGINX resolve at request time.")
      add("    map \"\" $czctl_tunnel_address {")
      add("        default %s;", M.nginx_quote(hostport))
      add("    }")
      tunnel_target = tunnel.scheme .. "://$czctl_tunnel_address"
    else
      add("    # The tunnel: %s", up.url)
      if not tunnel.is_ip then
        add("    # Resolved once when NGINX starts (resolver = false): keeps connections")
        add("    # to the tunnel alive, but NGINX will not start while DNS fails.")
      end
      add("    upstream czctl_tunnel {")
      add("        server %s;", hostport)
      keepalive_lines()
      add("    }")
      tunnel_target = tunnel.scheme .. "://czctl_tunnel"
    end
  end
  add("")

  local extra = {}
  for k, v in pairs(any_intercept and up.extra_headers or {}) do extra[#extra + 1] = { k, v } end
  table.sort(extra, function(a, b) return a[1] < b[1] end)

  -- The request headers both routes send. proxy_set_header replaces the whole
  -- inherited list, so a location that changes one header restates them all.
  local function request_headers(indent, host)
    add("%sproxy_set_header Host              %s;", indent, host)
    add("%sproxy_set_header X-Forwarded-For   $proxy_add_x_forwarded_for;", indent)
    add("%sproxy_set_header X-Forwarded-Proto $czctl_forwarded_proto;", indent)
    add("%sproxy_set_header Upgrade           $http_upgrade;", indent)
    add("%sproxy_set_header Connection        $czctl_connection;", indent)
  end

  -- The body of the location that sends a request into the tunnel.
  local function tunnel_location(indent)
    if opts.access_log ~= false then
      add("%saccess_log /dev/stdout czctl buffer=64k flush=1s;", indent)
    end
    if tunnel_host_header or #extra > 0 then
      if tunnel_host_header then
        add("%s# The tunnel routes by Host and gets its own; the original Host travels", indent)
        add("%s# in X-Forwarded-Host.", indent)
      else
        add("%s# The headers of both routes, and those only the tunnel gets.", indent)
      end
      request_headers(indent, tunnel_host_header and M.nginx_quote(tunnel_host_header) or "$http_host")
      if tunnel_host_header then add("%sproxy_set_header X-Forwarded-Host  $http_host;", indent) end
      for _, h in ipairs(extra) do
        add("%sproxy_set_header %-17s %s;", indent, h[1], M.nginx_quote(h[2]))
      end
    end
    if ssl_name then
      add("%s# TLS to the tunnel: SNI and certificate name are the tunnel's host.", indent)
      add("%sproxy_ssl_server_name on;", indent)
      add("%sproxy_ssl_name %s;", indent, ssl_name)
    end
    if route_header then add("%sadd_header X-Czctl-Route intercept always;", indent) end
    add("%sproxy_pass %s;", indent, tunnel_target)
  end

  -- Only intercepted ports are HTTP servers; the others are in `stream {}` below.
  for _, p in ipairs(intercepted) do
    add("    # Port %s (Service port %s): intercepted. %s", p.name, tostring(p.port or "?"),
      route_all and "Every request goes to the tunnel."
                or "Requests matching the rule go\n    # to the tunnel, all others to the original.")
    add("    server {")
    add("        listen %s reuseport;", listen(p.listen))
    if uses_underscore_header(rule) then
      add("        # The rule names a header with '_', which NGINX drops unless told not to.")
      add("        underscores_in_headers on;")
    end
    add("        # Sent upstream on both routes: the original Host (a request without")
    add("        # one, HTTP/1.0 only, is forwarded without one), where it came from,")
    add("        # and a WebSocket upgrade when one is asked for.")
    request_headers("        ", "$http_host")
    add("        # Never replay a request to the other route: a retry could run it twice.")
    add("        proxy_next_upstream off;")
    add("")
    if route_all then
      add("        location / {")
      tunnel_location("            ")
      add("        }")
    else
      add("        location / {")
      add("            # A request matching the rule is handed to @czctl_tunnel with its")
      add("            # method, headers and unread body; the 418 is never sent. (`return`")
      add("            # is the one directive always safe inside `if`; the tunnel's own")
      add("            # headers, TLS and log live there, so this route pays only the rule.)")
      add("            error_page 418 = @czctl_tunnel;")
      if #maps == 0 then
        add("            # (`=` compares the value exactly; the header's name matches in any case)")
      end
      add("            if (%s) {", expr)
      add("                return 418;")
      add("            }")
      if route_header then add("            add_header X-Czctl-Route original always;") end
      add("            proxy_pass http://czctl_original_%s;", p.id)
      add("        }")
      add("")
      add("        # The intercept route: into the tunnel, one access-log line per request.")
      add("        location @czctl_tunnel {")
      tunnel_location("            ")
      add("        }")
    end
    add("    }")
    add("")
  end
  add("    # Readiness and liveness probes: answered by NGINX itself, so probing never")
  add("    # reaches the user's application or the tunnel.")
  add("    server {")
  add("        listen %s;", listen(health_port))
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

  -- Every other port: a byte-level pass-through (TLS, gRPC, databases, UDP
  -- keep working; NGINX never parses them).
  local passthrough = {}
  for _, p in ipairs(ports) do if not p.intercept then passthrough[#passthrough + 1] = p end end
  if #passthrough > 0 then
    add("")
    add("# ---- Ports that are not intercepted pass straight through, byte for byte")
    add("# (TLS, gRPC, databases, UDP...): NGINX forwards the connection or the")
    add("# datagrams to the original and never reads what they carry.")
    add("stream {")
    add("    # One line per connection (TCP) or session (UDP) on stdout.")
    add("    log_format czctl_stream '$remote_addr [$time_iso8601] $protocol :$server_port $status '")
    add("                            'route=original upstream=$upstream_addr '")
    add("                            'bytes_in=$bytes_received bytes_out=$bytes_sent session_time=$session_time';")
    if opts.access_log == false then
      add("    access_log off;")
    else
      add("    access_log /dev/stdout czctl_stream buffer=64k flush=1s;")
    end
    add("    tcp_nodelay on;")
    add("    proxy_connect_timeout 10s;")
    add("")
    for _, p in ipairs(passthrough) do
      add("    # Port %s (Service port %s/%s): not intercepted.", p.name, tostring(p.port or "?"), p.protocol)
      add("    server {")
      if p.protocol == "UDP" then
        add("        listen %s udp reuseport;", listen(p.listen))
        add("        # Datagrams both ways, any number of replies per request (no")
        add("        # proxy_responses limit); a client's session ends after 60 s of silence.")
        add("        proxy_timeout 60s;")
      else
        add("        listen %s reuseport;", listen(p.listen))
        add("        # Idle connections (pools, long-lived TLS) stay open for an hour.")
        add("        proxy_timeout 3600s;")
      end
      add("        proxy_pass %s;", p.original)
      add("    }")
    end
    add("}")
  end
  return table.concat(out, "\n") .. "\n", warnings
end

return M
