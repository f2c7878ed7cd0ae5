-- czctl.tunnel.ngrok: a public URL for the local port through the ngrok agent.
--
-- Spawns `ngrok http PORT --log stdout --log-format json` with its output sent
-- to a log file (a pipe nobody drains would fill up and stall the agent once
-- the tunnel carries traffic), follows that file for the web (inspector)
-- address and the public URL, falls back to the agent API
-- (GET http://WEB_ADDR/api/tunnels), and turns the agent's failures into one
-- line a user can act on. It never reads or prints the authtoken: ngrok finds
-- it in its own configuration.
--
-- Only the session's proxy may use the tunnel (docs/decisions.md section 2):
-- each start makes a secret, and the agent gets a traffic policy (a 0600
-- file, `--traffic-policy-file`, removed once the agent has read it) that
-- denies every request without the secret header and removes the header
-- before the request goes to the local port. The secret is in no argument,
-- log line or output; it leaves this module only in handle.upstream, for
-- the proxy's Secret. ngrok's own errors that mean "the request never
-- reached the app" are named in handle.upstream.fallback_on.
local cproc = require "czctl.core.proc"
local net = require "czctl.core.net"
local sys = require "czctl.core.sys"
local cjson = require "cjson"

local M = {}

M.DEFAULT_TIMEOUT = 20
M.NOT_INSTALLED = "ngrok is not installed: install it from https://ngrok.com/download, or use --tunnel kube "
  .. "(through the Kubernetes API: no account, nothing public) or --tunnel direct"
M.NO_AUTHTOKEN = 'ngrok needs an authtoken: run "ngrok config add-authtoken <TOKEN>" (ERR_NGROK_4018)'
-- What this tunnel carries (czctl.proxy.protocol): HTTP/1.1 only. ngrok
-- documents gRPC through `ngrok http --app-protocol=http2` (HTTP/2 to the
-- upstream) and raw TCP through `ngrok tcp` endpoints; czctl starts neither.
M.carries = { "http" }
M.cannot_carry = {
  h2c = "ngrok needs `--app-protocol=http2` for HTTP/2 upstreams, which czctl does not set up yet",
  tcp = "ngrok carries TCP only on its `ngrok tcp` endpoints, which czctl does not set up",
}
-- The request header that carries the session's secret (lower-case in the
-- policy: ngrok's req.headers has lower-case names).
M.SECRET_HEADER = "X-Czctl-Tunnel-Secret"
-- ngrok's errors after which the request has not reached the app: the
-- endpoint is offline (the agent is gone), the agent cannot reach the local port.
M.FALLBACK_ERRORS = { "ERR_NGROK_3200", "ERR_NGROK_8012" }

--- The traffic policy that admits only requests carrying the secret and
--- strips it before they reach the app (JSON, which ngrok reads as YAML).
---@param secret string letters and digits
---@return string
function M.policy(secret)
  assert(type(secret) == "string" and secret:find("^[%w]+$"), "the secret must be letters and digits")
  local name = M.SECRET_HEADER:lower()
  return cjson.encode({ on_http_request = {
    { name = "czctl: only the session's proxy",
      expressions = { string.format("!('%s' in req.headers) || req.headers['%s'][0] != '%s'", name, name, secret) },
      actions = { { type = "deny", config = { status_code = 403 } } } },
    { name = "czctl: the secret never reaches the app",
      actions = { { type = "remove-headers", config = { headers = { name } } } } },
  } })
end

-- "exited (status 1)", or for an exit code 128+N (killed by signal N, as
-- process waits report it) "exited because it was killed (SIGKILL)".
local SIGNAL_NAMES = { [1] = "SIGHUP", [2] = "SIGINT", [3] = "SIGQUIT", [6] = "SIGABRT", [9] = "SIGKILL",
                       [11] = "SIGSEGV", [13] = "SIGPIPE", [15] = "SIGTERM" }
local function exit_text(code)
  code = math.tointeger(code) or code
  if type(code) == "number" and code > 128 and code < 128 + 65 then
    return string.format("exited because it was killed (%s)", SIGNAL_NAMES[code - 128] or ("signal " .. (code - 128)))
  end
  return string.format("exited (status %s)", tostring(code))
end

local function one_line(s)
  s = tostring(s):gsub("\r", ""):gsub("\n+", " "):gsub("%s+", " ")
  return (s:match("^%s*(.-)%s*$"))
end

--- Parse one agent log line (JSON, or logfmt as a fallback) into a table.
---@param line string
---@return table|nil
function M.parse_log_line(line)
  if line:sub(1, 1) == "{" then
    local ok, rec = pcall(cjson.decode, line)
    if ok and type(rec) == "table" then return rec end
    return nil
  end
  if not line:find("lvl=", 1, true) then return nil end
  local rec = {}
  -- Lua patterns have no alternation: quoted values first, then bare ones.
  for key, value in line:gmatch('([%w_]+)="(.-[^\\])"') do rec[key] = value end
  for key, value in line:gmatch('([%w_]+)=([^"%s]%S*)') do rec[key] = rec[key] or value end
  return next(rec) and rec or nil
end

local function find_on_path(cmd, path)
  if cmd:find("/", 1, true) then
    local f = io.open(cmd, "rb")
    if f then f:close(); return cmd end
    return nil
  end
  for dir in (path or ""):gmatch("[^:]+") do
    local candidate = dir .. "/" .. cmd
    local f = io.open(candidate, "rb")
    if f then f:close(); return candidate end
  end
  return nil
end

-- Follows a file that another process appends to, line by line.
local function follower(path)
  local pos, partial = 0, ""
  return function()
    local f = io.open(path, "rb")
    if not f then return {} end
    f:seek("set", pos)
    local data = f:read("a") or ""
    pos = pos + #data
    f:close()
    local lines = {}
    data = partial .. data
    local last = 1
    for line, nl in data:gmatch("([^\n]*)()\n") do
      lines[#lines + 1] = line
      last = nl + 1
    end
    partial = data:sub(last)
    return lines
  end
end

local function failure_of(rec)
  local err = rec.err
  if err == "<nil>" then err = nil end
  if type(err) == "string" and err:find("ERR_NGROK_4018", 1, true) then return M.NO_AUTHTOKEN end
  return nil
end

local function describe(rec, raw)
  if not rec then return one_line(raw) end
  local err = rec.err ~= "<nil>" and rec.err or nil
  if err then return one_line(err) end
  return one_line(rec.msg or raw)
end

local function api_url(web_addr, path)
  return "http://" .. web_addr .. path
end

--- The public URL of the command_line tunnel from the agent API, or nil.
local function query_url(web_addr, name)
  local status, body = net.http{ method = "GET", url = api_url(web_addr, "/api/tunnels"),
                                 headers = { Accept = "application/json" }, timeout = 2 }
  if status ~= 200 then return nil end
  local ok, doc = pcall(cjson.decode, body)
  if not ok or type(doc) ~= "table" or type(doc.tunnels) ~= "table" then return nil end
  for _, t in ipairs(doc.tunnels) do
    if type(t) == "table" and t.name == name and type(t.public_url) == "string" then return t.public_url end
  end
  return nil
end

local Handle = {}
Handle.__index = Handle

--- Stop the agent: TERM, then KILL after a grace period; reaped. Idempotent.
function Handle:stop()
  if self.stopped then return true end
  self.stopped = true
  local p = self.process
  if p then
    if not p:wait(0) then
      p:kill("TERM")
      if not p:wait(3) then
        p:kill("KILL")
        p:wait(5)
      end
    end
    p:close()
  end
  if self.owns_log then os.remove(self.log_file) end
  return true
end

--- The agent process is still running (cheap: no request, so a caller
--- that only needs this never loads libcurl).
function Handle:alive()
  if self.stopped then return nil, "stopped" end
  local code = self.process:wait(0)
  if code then
    return nil, string.format("ngrok %s: %s", exit_text(code), self.last_line())
  end
  return true
end

--- The agent is alive and its API still lists the tunnel.
function Handle:healthy()
  local alive, why = self:alive()
  if not alive then return nil, why end
  if not self.web_addr then return true end
  local url = query_url(self.web_addr, self.name)
  if url == self.url then return true end
  if url then return nil, "ngrok now reports a different URL: " .. url end
  return nil, "the ngrok agent API at " .. self.web_addr .. " no longer lists the tunnel"
end

--- Start an ngrok tunnel to the local port.
---@param opts {local_port: integer, host?: string, log?: fun(msg: string), command?: string,
---             args?: string[], timeout?: number, log_file?: string, env_extra?: table, ca?: string}
--- host: local address ngrok forwards to (default: ngrok's own, localhost);
--- command: the ngrok executable (default "ngrok" on PATH); args: extra
--- arguments, e.g. { "--url", "https://me.ngrok.app" }; ca: the PEM of the
--- CA the proxy trusts for the tunnel's certificate (default: the proxy
--- image's CA bundle, which ngrok's public certificates chain to).
---@return table|nil handle
---@return string|nil err one line
function M.start(opts)
  opts = opts or {}
  local port = math.tointeger(opts.local_port)
  if not port or port < 1 or port > 65535 then
    return nil, "ngrok tunnel: local_port must be a port number"
  end
  local log = opts.log or function() end
  local command = opts.command or "ngrok"
  local path = (opts.env_extra and opts.env_extra.PATH) or sys.getenv("PATH")
  if not find_on_path(command, path) then return nil, M.NOT_INSTALLED end

  if opts.ca ~= nil and (type(opts.ca) ~= "string" or not opts.ca:find("-----BEGIN CERTIFICATE-----", 1, true)) then
    return nil, "ngrok tunnel: ca must be the PEM text of a CA certificate"
  end
  local target = opts.host and (opts.host .. ":" .. port) or tostring(port)
  -- The policy file: 0600 (os.tmpname is mkstemp's), gone once the agent read it.
  local secret = sys.random_id(48)
  local policy_file = os.tmpname()
  local okw, werr = sys.write_file(policy_file, M.policy(secret), tonumber("600", 8))
  if not okw then
    os.remove(policy_file)
    return nil, "ngrok tunnel: cannot write its traffic policy: " .. tostring(werr)
  end
  local argv = { command, "http", target, "--log", "stdout", "--log-format", "json",
                 "--traffic-policy-file", policy_file }
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local log_file, owns_log = opts.log_file, false
  if not log_file then log_file, owns_log = os.tmpname(), true end

  local p, err = cproc.spawn{ argv = argv, env_extra = opts.env_extra, stdin = "null",
                              stdout = { file = log_file }, stderr = "stdout" }
  if not p then
    os.remove(policy_file)
    if owns_log then os.remove(log_file) end
    if tostring(err):find("not found", 1, true) then return nil, M.NOT_INSTALLED end
    return nil, "ngrok could not start: " .. one_line(err)
  end

  -- The agent names a tunnel started from the command line "command_line"
  -- unless --name says otherwise.
  local tunnel_name = "command_line"
  for i, a in ipairs(opts.args or {}) do
    if a == "--name" and opts.args[i + 1] then tunnel_name = opts.args[i + 1] end
    if a:find("^%-%-name=") then tunnel_name = a:sub(8) end
  end
  local handle = setmetatable({ process = p, pid = p:pid(), log_file = log_file, owns_log = owns_log,
                                name = tunnel_name }, Handle)
  local last_raw, last_rec, failure
  handle.last_line = function()
    if last_rec then return describe(last_rec) end
    return one_line(last_raw or "no output")
  end
  local next_lines = follower(log_file)
  local function consume()
    for _, raw in ipairs(next_lines()) do
      if raw:find("%S") then
        local rec = M.parse_log_line(raw)
        -- The last structured line says most (stderr's "ERROR:" text wraps).
        if rec then last_rec = rec else last_raw = raw end
        if rec then
          failure = failure or failure_of(rec)
          if rec.msg == "starting web service" and type(rec.addr) == "string" then
            handle.web_addr = rec.addr
          elseif rec.msg == "started tunnel" and type(rec.url) == "string"
              and (rec.name == nil or rec.name == handle.name) then
            handle.url = rec.url
          end
        elseif raw:find("ERR_NGROK_4018", 1, true) then
          failure = failure or M.NO_AUTHTOKEN
        end
      end
    end
  end
  local function give_up(msg)
    os.remove(policy_file)
    handle:stop()
    return nil, msg
  end
  -- -l on the agent's own port (its inspector and API) would send the
  -- intercepted requests to the agent, not to the app.
  local function own_port()
    local whost, wport = tostring(handle.web_addr or ""):match("^(.*):(%d+)$")
    if tonumber(wport) ~= port then return nil end
    if whost ~= "127.0.0.1" and whost ~= "localhost" and whost ~= "0.0.0.0" and whost ~= (opts.host or "") then
      return nil
    end
    return string.format("local port %d is the ngrok agent's own port (its inspector and API at %s): intercepted "
      .. "requests would reach the agent, not your app; give your app's port with -l", port, handle.web_addr)
  end

  local timeout = opts.timeout or M.DEFAULT_TIMEOUT
  local started = sys.now()
  local next_api_poll = started + 0.5
  while true do
    consume()
    if failure then return give_up(failure) end
    failure = own_port()
    if failure then return give_up(failure) end
    if handle.url then break end
    local code = p:wait(0)
    if code then
      consume()
      if failure then return give_up(failure) end
      if handle.url then
        return give_up(string.format("ngrok %s right after starting: %s", exit_text(code), handle.last_line()))
      end
      return give_up(string.format("ngrok %s: %s", exit_text(code), handle.last_line()))
    end
    local now = sys.now()
    if handle.web_addr and now >= next_api_poll then
      handle.url = query_url(handle.web_addr, handle.name)
      if handle.url then break end
      next_api_poll = now + 0.5
    end
    if now - started > timeout then
      return give_up(string.format("ngrok did not report a public URL within %gs (last log line: %s)",
        timeout, handle.last_line()))
    end
    local _, why = sys.sleep(0.02)
    if why == "interrupted" then return give_up("interrupted") end
  end

  os.remove(policy_file)   -- the agent has read it: the secret stays in memory only
  failure = own_port()
  if failure then return give_up(failure) end
  if not handle.url:find("^https?://") then
    return give_up("ngrok reported an unexpected URL: " .. handle.url)
  end
  local authority = handle.url:match("^https?://([^/]+)")
  handle.upstream = {
    url = handle.url,
    -- ngrok's edge routes by Host, so the tunnel gets its own host name; the
    -- original Host travels in X-Forwarded-Host (see docs/lua-api.md).
    host_header = authority,
    -- Skips the free plan's browser interstitial (ERR_NGROK_6024).
    extra_headers = { ["ngrok-skip-browser-warning"] = "1" },
    -- What the agent's traffic policy requires (see M.policy).
    secret_header = { name = M.SECRET_HEADER, value = secret },
    fallback_on = { header = "ngrok-error-code", values = M.FALLBACK_ERRORS },
    tls = (opts.ca and handle.url:find("^https://")) and { ca = opts.ca } or nil,
  }
  if handle.web_addr then
    local whost, wport = handle.web_addr:match("^(.*):(%d+)$")
    if whost == "127.0.0.1" or whost == "localhost" or whost == "0.0.0.0" then whost = "localhost" end
    handle.inspector = whost and ("http://" .. whost .. ":" .. wport) or ("http://" .. handle.web_addr)
  end
  log(string.format("ngrok tunnel %s -> localhost:%d (inspector %s)", handle.url, port,
    handle.inspector or "disabled"))
  return handle
end

return M
