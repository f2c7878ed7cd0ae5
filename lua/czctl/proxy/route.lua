-- czctl.proxy.route: one session's route into its tunnel, as NGINX sees it
-- (docs/decisions.md sections 2 and 3). Everything that names or opens the
-- tunnel (its URL, the secret header, the TLS certificates and keys) goes
-- into files that live in a Kubernetes Secret mounted into the proxy, never
-- into the ConfigMap: nginx.conf only `include`s them. One route per session,
-- every name in it carries the route's id, so a proxy that serves several
-- sessions (decisions section 1) holds one set of files per route.
--
--   local r = assert(route.plan(tunnel_upstream, { id =, dir =, runtime_dir =, nginx_version = }))
--   route.files(r)        -> { [name] = content }   (the Secret's data)
--   r.http_include        the file nginx.conf includes in `http {}`
--   r.location_include    the file the tunnel location includes
--   r.grpc_include        the same for an h2c port (grpc_pass, grpc_ssl_*)
--   r.stream_include      the file a TCP-level (`--all`, mode tcp) stream
--                         server includes: proxy_ssl_* and proxy_pass
--   r.tcp_include         the file nginx.conf includes in `stream {}` for
--                         such a route: its upstream, the tunnel first and
--                         the original's stand-in (below) as backup
--   r.stream_standin_include, r.grpc_standin_include
--                         the first lines of the stand-in's stream or
--                         HTTP/2 server (listen on a Unix socket, TLS as the
--                         tunnel), to which nginx.conf adds the original
--   route.ref(id, dir)    the same names, for a route whose files were
--                         rendered apart (the shared proxy's configuration
--                         knows a session by its id alone)
--
-- What the files do: TLS to the tunnel is verified (proxy_ssl_verify on:
-- the provider's CA, or the image's CA bundle, and the tunnel's name); a
-- landing of czctl gets the proxy's client certificate (mutual TLS); ngrok
-- gets the secret header its traffic policy checks; connections to the
-- tunnel are kept alive. A provider whose error responses are recognised by
-- a header (ngrok's `ngrok-error-code`) is called through an inner server
-- that marks those responses with `X-Accel-Redirect: @czctl_fallback`, so
-- the tunnel location falls back to the in-cluster version on them alone
-- and passes every answer of the developer's app unchanged (section 3).
-- Pure functions: no I/O.
local rules = require "czctl.proxy.rules"

local M = {}

-- Where the proxy image keeps its CA bundle (nginxinc/nginx-unprivileged is
-- Debian-based and installs ca-certificates).
M.IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
-- The header that carries the session's secret into a tunnel that checks it.
M.SECRET_HEADER = "X-Czctl-Tunnel-Secret"
-- Where the route's files are mounted in the proxy pod.
M.DEFAULT_DIR = "/etc/czctl-session"
-- The cluster DNS Service under its conventional name; resolves a tunnel's host name.
M.DEFAULT_RESOLVER = "kube-dns.kube-system.svc.cluster.local"
-- Idle connections kept open to the tunnel per worker.
M.KEEPALIVE = 16
-- Seconds to connect to the tunnel before the request falls back.
M.CONNECT_TIMEOUT = 3
-- NGINX re-resolves a host name in an `upstream` with keep-alive
-- (`server NAME resolve`) in the open-source version since 1.27.3.
M.RESOLVE_SINCE = { 1, 27, 3 }

local function fail(fmt, ...)
  return nil, string.format(fmt, ...)
end

local function is_ipv4(h)
  local parts = { h:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$") }
  if #parts ~= 4 then return false end
  for _, p in ipairs(parts) do
    if #p > 3 or tonumber(p) > 255 then return false end
  end
  return true
end

local function is_dns_name(h)
  if #h > 253 or h:sub(-1) == "." then return false end
  for label in (h .. "."):gmatch("([^.]*)%.") do
    if #label < 1 or #label > 63 or not label:find("^%w[%w%-]*$") or not label:find("%w$") then return false end
  end
  return not h:find("^[%d.]+$")   -- all digits and dots: a malformed address, not a name
end

--- Check a tunnel URL from any provider: scheme, host and port, nothing
--- else. Returns its parts, or nil and a one-line reason (the URL quoted
--- with control characters escaped).
---@param url any
---@return {scheme: string, host: string, port: integer, is_ip: boolean, authority: string}|nil
---@return string|nil err
function M.parse_url(url)
  local shown = string.format("%q", tostring(url)):gsub("\\\n", "\\n")
  local function bad(why)
    return fail("tunnel URL %s %s; a tunnel provider must give scheme://host[:port] (http or https)", shown, why)
  end
  if type(url) ~= "string" then return bad("is not a string") end
  local scheme, rest = url:match("^(https?)://(.*)$")
  if not scheme then return bad("does not start with http:// or https://") end
  local authority, tail = rest:match("^([^/?#]*)(.*)$")
  if tail ~= "" and tail ~= "/" then return bad("has a path, query or fragment") end
  local host, port = authority:match("^%[([%x:]+)%]:?(%d*)$")
  if host then
    if not host:find(":") then return bad("has an invalid IPv6 address") end
    host = "[" .. host .. "]"
  else
    host, port = authority:match("^([^:]*):?(%d*)$")
    if not host then return bad("has an invalid host or port") end
    if not (is_ipv4(host) or is_dns_name(host)) then return bad("has an invalid host") end
  end
  if port ~= "" and (#port > 5 or tonumber(port) < 1 or tonumber(port) > 65535) then
    return bad("has an invalid port")
  end
  port = tonumber(port ~= "" and port or nil) or (scheme == "https" and 443 or 80)
  return { scheme = scheme, host = host:lower(), port = math.tointeger(port),
           is_ip = host:sub(1, 1) == "[" or is_ipv4(host),
           authority = host:lower() .. ":" .. math.tointeger(port) }
end

--- The names nginx.conf needs of a route: its id as NGINX names carry it,
--- its directory and the two files it includes.
---@param id string the session's id
---@param dir? string where its files are (default DEFAULT_DIR)
---@return {id: string, dir: string, http_include: string, location_include: string}|nil
---@return string|nil err
function M.ref(id, dir)
  id = tostring(id or "-"):lower():gsub("[^%w]+", "_")
  dir = dir or M.DEFAULT_DIR
  if dir:find("[%s;{}\"'#$\\]") or rules.has_control(dir) then
    return fail("proxy.render: the route directory %q has characters NGINX would misread", dir)
  end
  return { id = id, dir = dir, http_include = dir .. "/tunnel-http.conf",
           location_include = dir .. "/tunnel-location.conf", grpc_include = dir .. "/tunnel-grpc.conf",
           stream_include = dir .. "/tunnel-stream.conf", tcp_include = dir .. "/tunnel-tcp.conf",
           stream_standin_include = dir .. "/tunnel-stream-standin.conf",
           grpc_standin_include = dir .. "/tunnel-grpc-standin.conf" }
end

--- Whether an nginx version string ("1.27.4") is at least `min` ({1,27,3}).
---@param version string|nil
---@param min integer[]
---@return boolean
function M.version_at_least(version, min)
  local a, b, c = tostring(version or ""):match("^(%d+)%.(%d+)%.?(%d*)")
  if not a then return false end
  local v = { tonumber(a), tonumber(b), tonumber(c) or 0 }
  for i = 1, 3 do
    if v[i] ~= min[i] then return v[i] > min[i] end
  end
  return true
end

local function check_pem(v, what)
  if v == nil then return true end
  if type(v) ~= "string" or not v:find("^%-%-%-%-%-BEGIN [%u ]+%-%-%-%-%-\n") or v:find("[%z\1-\9\11-\31\127]") then
    return fail("proxy.render: tunnel_upstream.tls.%s must be a PEM text", what)
  end
  return true
end

--- Check a tunnel upstream (a provider's handle.upstream) and plan the route.
---@param up table {url, host_header?, extra_headers?, resolver?, tls?, secret_header?, fallback_on?}
---@param opts {id: string, dir?: string, runtime_dir?: string, nginx_version?: string, keepalive?: integer, mode?: string}
--- (mode "tcp": the route serves a TCP-level intercept, which over a TLS
--- tunnel needs tls.fallback_cert and fallback_key)
--- (the inner server, when there is one, listens on a Unix socket named by
--- the id in runtime_dir: nothing outside the pod reaches it, and routes of
--- several sessions never compete for a port)
---@return table|nil route
---@return string|nil err
function M.plan(up, opts)
  if type(up) ~= "table" then return fail("proxy.render: tunnel_upstream is required when a port is intercepted") end
  local t, err = M.parse_url(up.url)
  if not t then return nil, err end
  if up.host_header ~= nil and (type(up.host_header) ~= "string" or not up.host_header:find("^[%w.%-:%[%]]+$")) then
    return fail("proxy.render: tunnel_upstream.host_header must be a host name")
  end
  local extra = {}
  for k, v in pairs(up.extra_headers or {}) do
    local okh, eh = rules.check_header_name(k)
    if not okh then return fail("proxy.render: extra header: %s", eh) end
    if type(v) ~= "string" or rules.has_control(v) or v:find("$", 1, true) then
      return fail("proxy.render: extra header %s: the value must be printable text without '$'", k)
    end
    extra[#extra + 1] = { k, v }
  end
  table.sort(extra, function(a, b) return a[1] < b[1] end)
  local secret = up.secret_header
  if secret ~= nil then
    if type(secret) ~= "table" or not rules.check_header_name(secret.name or "")
       or type(secret.value) ~= "string" or not secret.value:find("^[%w_%-]+$") or #secret.value < 32 then
      return fail("proxy.render: tunnel_upstream.secret_header must be {name=, value=} with a value of "
                  .. "at least 32 letters, digits, '-' or '_'")
    end
  end
  local tls = up.tls or {}
  if type(tls) ~= "table" then return fail("proxy.render: tunnel_upstream.tls must be a table") end
  for _, k in ipairs({ "ca", "client_cert", "client_key", "fallback_cert", "fallback_key" }) do
    local ok, perr = check_pem(tls[k], k)
    if not ok then return nil, perr end
  end
  if (tls.client_cert == nil) ~= (tls.client_key == nil) then
    return fail("proxy.render: tunnel_upstream.tls needs both client_cert and client_key, or neither")
  end
  if (tls.fallback_cert == nil) ~= (tls.fallback_key == nil) then
    return fail("proxy.render: tunnel_upstream.tls needs both fallback_cert and fallback_key, or neither")
  end
  -- A TCP-level or HTTP/2 route speaks the tunnel's TLS to its whole
  -- upstream (NGINX's proxy_ssl, grpc_ssl), the original's stand-in
  -- included: that stand-in needs a certificate the proxy accepts as the tunnel's.
  if (opts.mode == "tcp" or opts.mode == "h2c") and t.scheme == "https" and not tls.fallback_cert then
    return fail("proxy.render: a %s route to a TLS tunnel needs tunnel_upstream.tls.fallback_cert and "
                .. "fallback_key (a certificate for the tunnel's name that the proxy trusts), or it could not "
                .. "fall back to the original", opts.mode == "tcp" and "TCP-level" or "HTTP/2")
  end
  if tls.name ~= nil and not (type(tls.name) == "string" and (is_ipv4(tls.name) or is_dns_name(tls.name))) then
    return fail("proxy.render: tunnel_upstream.tls.name must be a host name or an IPv4 address")
  end
  if t.scheme == "http" and (up.tls ~= nil) then
    return fail("proxy.render: tunnel_upstream.tls needs an https:// tunnel URL")
  end
  local fb = up.fallback_on
  if fb ~= nil then
    if type(fb) ~= "table" or not rules.check_header_name(fb.header or "") or type(fb.values) ~= "table"
       or #fb.values == 0 then
      return fail("proxy.render: tunnel_upstream.fallback_on must be {header=, values={...}}")
    end
    for _, v in ipairs(fb.values) do
      if type(v) ~= "string" or not v:find("^[%w_.%-]+$") then
        return fail("proxy.render: tunnel_upstream.fallback_on values must be plain words")
      end
    end
  end
  local resolver = up.resolver
  if resolver ~= nil and resolver ~= false and not tostring(resolver):find("^[%w.:%[%]%- ]+$") then
    return fail("proxy.render: tunnel_upstream.resolver must be one or more DNS server addresses, or false")
  end
  if resolver == nil then resolver = M.DEFAULT_RESOLVER end

  local ref, rerr = M.ref(opts.id, opts.dir)
  if not ref then return nil, rerr end
  local id, dir = ref.id, ref.dir
  local runtime_dir = opts.runtime_dir or "/tmp"
  if runtime_dir:find("[%s;{}\"'#$\\]") or rules.has_control(runtime_dir) then
    return fail("proxy.render: runtime_dir %q has characters NGINX would misread", runtime_dir)
  end
  local host_header = up.host_header
  -- An HTTPS edge (ngrok) routes by Host: it gets its own name, unless the
  -- provider forwards bytes to the app (keep_host), which needs the original.
  if t.scheme == "https" and not host_header and not t.is_ip and not up.keep_host then host_header = t.host end
  local keepalive = math.tointeger(opts.keepalive or M.KEEPALIVE) or M.KEEPALIVE
  local r = {
    id = id, dir = dir, url = t, up = up, extra = extra, secret = secret, tls = tls, fallback_on = fb,
    host_header = host_header, keepalive = keepalive, resolver = resolver,
    upstream = "czctl_tunnel_" .. id,
    inner_listen = fb and ("unix:" .. runtime_dir .. "/czctl-route-" .. id .. ".sock") or nil,
    http_include = ref.http_include,
    location_include = ref.location_include,
    grpc_include = ref.grpc_include,
    stream_include = ref.stream_include,
    tcp_include = ref.tcp_include,
    stream_standin_include = ref.stream_standin_include,
    grpc_standin_include = ref.grpc_standin_include,
    -- the original's stand-ins (see standin_file), where the proxy can speak
    -- the tunnel's TLS to one: always for a plain tunnel, with a stand-in
    -- certificate for a TLS one
    standin = t.scheme ~= "https" or tls.fallback_cert ~= nil,
    stream_standin = "unix:" .. runtime_dir .. "/czctl-route-" .. id .. "-tcp.sock",
    grpc_standin = "unix:" .. runtime_dir .. "/czctl-route-" .. id .. "-grpc.sock",
  }
  -- How the tunnel's address is found: an address as it is; a name through
  -- `resolve` in the upstream where NGINX has it (keep-alive and address
  -- changes both), otherwise per request (address changes followed, no
  -- keep-alive), or once at start when resolver = false.
  if t.is_ip or resolver == false then
    r.addressing = "static"
  elseif M.version_at_least(opts.nginx_version, M.RESOLVE_SINCE) then
    r.addressing = "resolve"
  else
    r.addressing = "per-request"
    if opts.mode == "h2c" then
      return fail("proxy.render: an HTTP/2 route to a tunnel by name (%s) needs NGINX %d.%d.%d or later in the "
                  .. "proxy image, which re-resolves a name in an upstream (the fallback to the original needs "
                  .. "one); use a newer image or a tunnel address", t.host, table.unpack(M.RESOLVE_SINCE))
    end
  end
  return r
end

-- The request headers of the tunnel hop (the server level's, restated:
-- proxy_set_header replaces the inherited list), plus the tunnel's own.
-- (module "grpc": HTTP/2 has no Upgrade or Connection; grpc_pass sends the
-- request's Host unless the tunnel has its own.)
local function request_headers(add, r, indent, module)
  local q = rules.nginx_quote
  module = module or "proxy"
  local function set(name, value) add("%s%s_set_header %-17s %s;", indent, module, name, value) end
  if module == "proxy" or r.host_header then set("Host", r.host_header and q(r.host_header) or "$http_host") end
  set("X-Forwarded-For", "$proxy_add_x_forwarded_for")
  set("X-Forwarded-Proto", "$czctl_forwarded_proto")
  if module == "proxy" then
    set("Upgrade", "$http_upgrade")
    set("Connection", "$czctl_connection")
  end
  if r.host_header then set("X-Forwarded-Host", "$http_host") end
  for _, h in ipairs(r.extra) do set(h[1], q(h[2])) end
  if r.secret then
    add("%s# The session's secret: the tunnel refuses requests without it and", indent)
    add("%s# removes it before they reach the developer's app.", indent)
    set(r.secret.name, q(r.secret.value))
  end
end

-- proxy_ssl_* (or grpc_ssl_*) for the hop to the tunnel: verified, named,
-- resumed. The stream module's proxy_ssl_* have the same names and meaning,
-- and need `proxy_ssl on` (module "stream").
local function tls_lines(add, r, indent, module)
  if r.url.scheme ~= "https" then return end
  local d = (module == "grpc" and "grpc" or "proxy") .. "_ssl"
  local name = r.tls.name or r.url.host
  add("%s# TLS to the tunnel: its certificate must chain to %s and name %s.", indent,
      r.tls.ca and "the tunnel's CA" or "the image's CA bundle", name)
  if module == "stream" then add("%sproxy_ssl on;", indent) end
  add("%s%s_verify on;", indent, d)
  add("%s%s_verify_depth %d;", indent, d, r.tls.ca and 2 or 4)
  add("%s%s_trusted_certificate %s;", indent, d, r.tls.ca and (r.dir .. "/tunnel-ca.crt") or M.IMAGE_CA_BUNDLE)
  add("%s%s_name %s;", indent, d, name)
  if not is_ipv4(name) then add("%s%s_server_name on;", indent, d) end
  if r.tls.client_cert then
    add("%s# Mutual TLS: the landing admits only this certificate's holder.", indent)
    add("%s%s_certificate %s/tunnel-client.crt;", indent, d, r.dir)
    add("%s%s_certificate_key %s/tunnel-client.key;", indent, d, r.dir)
  end
  add("%s%s_session_reuse on;", indent, d)
end
--- The lines of an `upstream` block that keep idle connections open (none for 0).
---@param add fun(fmt: string, ...)
---@param keepalive integer idle connections per worker
---@param indent string
function M.keepalive_lines(add, keepalive, indent)
  if keepalive > 0 then
    add("%skeepalive %d;", indent, keepalive)
    add("%skeepalive_requests 10000;", indent)
    add("%skeepalive_timeout 60s;", indent)
  end
end

local function upstream_block(add, name, server, r, zone, backup)
  add("upstream %s {", name)
  if zone then
    add("    zone %s 64k;", name)
    -- in the upstream, not in `http {}`: every route of a shared proxy has its own
    add("    resolver %s valid=30s ipv6=off;", r.resolver)
  end
  if backup then
    add("    # never marked down: each call tries the tunnel first (a failure that took")
    add("    # the tunnel out for fail_timeout would send its calls to the original)")
    add("    server %s max_fails=0;", server)
    add("    # the original's stand-in (see the proxy's nginx.conf), when the tunnel cannot be reached")
    add("    server %s backup;", backup)
  else
    add("    server %s;", server)
  end
  M.keepalive_lines(add, r.keepalive, "    ")
  add("}")
end

-- A route file being written: add(fmt, ...) appends a line, text() is the file.
local function file_writer()
  local out = {}
  local function add(s, ...) out[#out + 1] = select("#", ...) > 0 and string.format(s, ...) or s end
  return add, function() return table.concat(out, "\n") .. "\n" end
end

-- tunnel-http.conf: the tunnel's upstream (and the inner server), in `http {}`.
local function http_file(r)
  local add, text = file_writer()
  local t = r.url
  add("# czctl route %s: the tunnel %s (in a Secret: the proxy's configuration names no tunnel).", r.id, r.up.url)
  local target
  if r.addressing == "static" then
    upstream_block(add, r.upstream, t.authority, r)
    target = t.scheme .. "://" .. r.upstream
  elseif r.addressing == "resolve" then
    add("# The name is re-resolved while connections to it are kept (NGINX >= 1.27.3).")
    upstream_block(add, r.upstream, t.authority .. " resolve", r, true)
    target = t.scheme .. "://" .. r.upstream
  else
    add("# This NGINX (< 1.27.3) cannot keep connections to a name it re-resolves:")
    add("# the name is resolved per request (no keep-alive on this hop), by the")
    add("# resolver of the location that sends to it.")
    add("map \"\" $%s_address {", r.upstream)
    add("    default %s;", rules.nginx_quote(t.authority))
    add("}")
    target = t.scheme .. "://$" .. r.upstream .. "_address"
  end
  r.target = target
  if r.addressing ~= "per-request" then
    add("")
    add("# HTTP/2 (an h2c port's tunnel-grpc.conf): the tunnel, and the original's stand-in")
    add("# for a call that never reached it (connect or TLS handshake failed).")
    upstream_block(add, r.upstream .. "_grpc", t.authority .. (r.addressing == "resolve" and " resolve" or ""), r,
                   r.addressing == "resolve", r.standin and r.grpc_standin)
  end
  -- a `resolver` in each location that resolves per request (one in `http {}`
  -- would be duplicated by a second route of a shared proxy)
  r.resolver_line = r.addressing == "per-request" and string.format("resolver %s valid=30s ipv6=off;", r.resolver)
                    or nil
  if r.fallback_on then
    local values = {}
    for i, v in ipairs(r.fallback_on.values) do values[i] = rules.pcre_escape(v) end
    add("")
    add("# The tunnel's own error responses (%s: %s) mean the request never", r.fallback_on.header,
        table.concat(r.fallback_on.values, ", "))
    add("# reached the developer's app: the inner server below marks them, and")
    add("# only them, for the tunnel location to fall back to the cluster.")
    add("map $upstream_http_%s $%s_fallback {", r.fallback_on.header:lower():gsub("%-", "_"), r.upstream)
    add("    default \"\";")
    add("    \"~^(%s)$\" \"@czctl_fallback\";", table.concat(values, "|"))
    add("}")
    upstream_block(add, r.upstream .. "_inner", r.inner_listen, r)
    add("server {")
    add("    # On a Unix socket in the pod: nothing outside the pod reaches it.")
    add("    listen %s;", r.inner_listen)
    add("    access_log off;")
    add("    location / {")
    add("        # The outer hop set every header already; pass them on.")
    add("        proxy_set_header Host       $http_host;")
    add("        proxy_set_header Upgrade    $http_upgrade;")
    add("        proxy_set_header Connection $czctl_connection;")
    add("        proxy_connect_timeout %ds;", M.CONNECT_TIMEOUT)
    add("        # The app's own X-Accel-Redirect is neither acted on nor passed out;")
    add("        # ours goes only on the tunnel's errors, or when NGINX cannot reach it.")
    add("        proxy_ignore_headers X-Accel-Redirect;")
    add("        add_header X-Accel-Redirect $%s_fallback always;", r.upstream)
    add("        error_page 502 504 = @unreachable;")
    tls_lines(add, r, "        ")
    if r.resolver_line then add("        %s", r.resolver_line) end
    add("        proxy_pass %s;", target)
    add("    }")
    add("    location @unreachable {")
    add("        add_header X-Accel-Redirect @czctl_fallback always;")
    add("        return 502;")
    add("    }")
    add("}")
  end
  return text()
end

-- tunnel-location.conf: the body of the tunnel location after the fail-open
-- settings nginx.conf gives it.
local function location_file(r)
  local add, text = file_writer()
  add("# czctl route %s: into the tunnel.", r.id)
  request_headers(add, r, "")
  add("proxy_connect_timeout %ds;", M.CONNECT_TIMEOUT)
  if r.fallback_on then
    add("# Through the inner server, which marks the tunnel's own errors.")
    add("proxy_pass http://%s_inner;", r.upstream)
  else
    tls_lines(add, r, "")
    if r.resolver_line then add("%s", r.resolver_line) end
    add("proxy_pass %s;", r.target)
  end
  return text()
end

-- tunnel-grpc.conf: the same for an h2c port (czctl.proxy.protocol): gRPC
-- and HTTP/2 through grpc_pass, grpc:// or grpcs:// with grpc_ssl_* (mutual
-- TLS to a landing). Straight to the tunnel: the inner server that marks a
-- provider's error responses speaks HTTP/1.1 only (and the providers that
-- have one, ngrok, do not carry h2c). Fail open inside the upstream (the
-- original's stand-in is its backup): NGINX sends a call to the next server
-- only while the call was not sent (a POST once sent is never retried:
-- non_idempotent is not set), and then with its body intact, which an
-- error_page to another location could not do with a body it streams.
local function grpc_file(r)
  local add, text = file_writer()
  add("# czctl route %s: into the tunnel, HTTP/2 (gRPC).", r.id)
  request_headers(add, r, "", "grpc")
  add("grpc_connect_timeout %ds;", M.CONNECT_TIMEOUT)
  local scheme = r.url.scheme == "https" and "grpcs" or "grpc"
  if r.addressing == "per-request" then
    -- no upstream, so no backup: plan refuses an h2c route here
    tls_lines(add, r, "", "grpc")
    add("%s", r.resolver_line)
    add("grpc_pass %s%s;", scheme, r.target:match("^https?(://.*)$"))
    return text()
  end
  if r.standin then
    add("# A call the tunnel did not take (it could not be reached) goes to the original's stand-in.")
    add("grpc_next_upstream error timeout;")
  end
  tls_lines(add, r, "", "grpc")
  add("grpc_pass %s://%s_grpc;", scheme, r.upstream)
  return text()
end

-- The files of a TCP-level route (mode tcp): every connection goes to the
-- tunnel, bytes untouched, and to the original when the tunnel cannot be
-- reached (decisions section 7): the upstream's backup is the original's
-- stand-in (standin_file). A connection or TLS handshake that fails counts
-- as the tunnel's failure, and NGINX moves the connection to the backup;
-- once bytes flow, nothing is replayed.

-- tunnel-tcp.conf, in `stream {}`: the route's upstream. By address (a name
-- is resolved when NGINX loads the configuration: the stream module has no
-- per-connection address here).
local function tcp_file(r)
  local add, text = file_writer()
  add("# czctl route %s: the tunnel %s, and the original when it cannot be reached.", r.id, r.up.url)
  add("upstream %s_tcp {", r.upstream)
  add("    # never marked down: each connection tries the tunnel first")
  add("    server %s max_fails=0;", r.url.authority)
  add("    # the original's stand-in (see the proxy's nginx.conf), when the tunnel cannot be reached")
  add("    server %s backup;", r.stream_standin)
  add("}")
  return text()
end

-- tunnel-stream.conf: the body of the TCP-level stream server: TLS to the
-- tunnel where it has TLS, to the route's upstream.
local function stream_file(r)
  local add, text = file_writer()
  add("# czctl route %s: every connection into the tunnel, or to the original when it cannot be reached.", r.id)
  add("proxy_connect_timeout %ds;", M.CONNECT_TIMEOUT)
  tls_lines(add, r, "", "stream")
  add("proxy_pass %s_tcp;", r.upstream)
  return text()
end

-- tunnel-stream-standin.conf and tunnel-grpc-standin.conf: the first lines
-- of the original's stand-in for the tunnel, a server of the proxy (stream,
-- or HTTP/2) on a Unix socket to which nginx.conf adds the port's original.
-- NGINX's proxy_ssl and grpc_ssl apply to every server of an upstream, so
-- the original can be the tunnel's backup only behind a server that speaks
-- the tunnel's TLS: a certificate for the tunnel's name from the tunnel's
-- CA (tls.fallback_cert; the direct tunnel's session CA signs one).
local function standin_file(r, module)
  local add, text = file_writer()
  add("# czctl route %s: the original's stand-in for the tunnel (on a Unix socket: nothing outside", r.id)
  add("# the pod reaches it).")
  local tls = r.url.scheme == "https"
  if tls then add("# It answers the tunnel's TLS with a certificate for the same name from the tunnel's CA.") end
  add("listen %s%s%s;", module == "grpc" and r.grpc_standin or r.stream_standin, tls and " ssl" or "",
      module == "grpc" and " http2" or "")
  if tls then
    add("ssl_certificate %s/tunnel-standin.crt;", r.dir)
    add("ssl_certificate_key %s/tunnel-standin.key;", r.dir)
  end
  if module == "grpc" and r.secret then
    add("# The session's secret is the tunnel's alone.")
    add("grpc_set_header %s \"\";", r.secret.name)
  end
  return text()
end

--- The route's files: name -> content (the Secret's data, mounted at r.dir).
---@param r table from M.plan
---@return table<string, string>
function M.files(r)
  local files = {}
  files["tunnel-http.conf"] = http_file(r)   -- sets r.target first
  files["tunnel-location.conf"] = location_file(r)
  files["tunnel-grpc.conf"] = grpc_file(r)
  -- a TLS tunnel without a stand-in certificate serves no TCP-level route
  -- (plan refuses one): its files would have no way back to the original
  if r.standin then
    files["tunnel-stream.conf"] = stream_file(r)
    files["tunnel-tcp.conf"] = tcp_file(r)
    files["tunnel-stream-standin.conf"] = standin_file(r, "stream")
    files["tunnel-grpc-standin.conf"] = standin_file(r, "grpc")
  end
  if r.tls.fallback_cert then
    files["tunnel-standin.crt"] = r.tls.fallback_cert
    files["tunnel-standin.key"] = r.tls.fallback_key
  end
  if r.tls.ca then files["tunnel-ca.crt"] = r.tls.ca end
  if r.tls.client_cert then
    files["tunnel-client.crt"] = r.tls.client_cert
    files["tunnel-client.key"] = r.tls.client_key
  end
  return files
end

return M
