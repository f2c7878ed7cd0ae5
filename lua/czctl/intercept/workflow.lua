-- czctl.intercept.workflow: the machinery of `czctl service intercept`, as
-- small steps a recipe runs in order (recipes/service-intercept.lua lists
-- them) and a few hooks a user recipe passes to change one of them without
-- copying the rest. The models: wrk's wrk.lua (each default is a small
-- function a script may replace) and Neovim's vim.system (typed options in,
-- one result object out). See docs/recipes.md.
--
--   local run = workflow.new(ctx, opts)   -- opts: czctl.intercept.Options
--   run:resolve_service() ... run:wait_routed()   -- the steps
--   local session = run:result()          -- czctl.intercept.Session
--
-- Every change is registered with ctx.undo the moment before it is made, so
-- an error or a signal at any point rolls back; once the route is live the
-- session belongs to the cluster (and its holder), and closing it is
-- czctl.session's job. This module prints only through ctx.out.
local intercept = require "czctl.intercept"
local session = require "czctl.session"
local proxy = require "czctl.proxy"
local signal = require "czctl.signal"
local util = require "czctl.util"
local csys = require "czctl.core.sys"

local M = {}

-- Seconds until the proxy Deployment is available: a real cluster may need
-- to schedule the pod and pull the image.
M.PROXY_READY_TIMEOUT = 120
-- Seconds until the tunnel reports its URL.
M.TUNNEL_TIMEOUT = 30
-- Seconds until the Service's Endpoints list only the proxy, after the patch.
M.ROUTE_TIMEOUT = 30
-- Seconds to watch for an object whose create (or the Service patch) lost
-- its answer: it may still land, and must then be undone too.
M.LATE_CREATE_GRACE = 3
-- How often a --wait holder checks the tunnel and the session file.
M.HOLD_CHECK_INTERVAL = 2

---@class czctl.intercept.Hooks
--- Each hook gets the object czctl built and the run (run.session, run.ctx,
--- run.opts); it edits the object in place or returns a replacement.
---@field rule? fun(rule: table, run: czctl.intercept.Run): table|nil         the routing rule (a czctl.proxy rule)
---@field service_copy? fun(svc: table, run: czctl.intercept.Run): table|nil  the copy of the Service (route to the original)
---@field config_map? fun(cm: table, run: czctl.intercept.Run): table|nil     the ConfigMap with nginx.conf
---@field deployment? fun(d: table, run: czctl.intercept.Run): table|nil      the proxy Deployment, before it is created

---@class czctl.intercept.Options
---@field service string                 the Service to intercept
---@field namespace? string              default "default"
---@field remote_port? string|integer    the Service port (number or name); optional with one port
---@field local_port? integer            default: the Service port's number
---@field rule? table                    a czctl.proxy rule; default the header X-C6O-INTERCEPT: yes
---@field header? string                 the header as typed (name:value), for display
---@field tunnel? string                 tunnel provider: "ngrok" (default), "direct", or yours
---@field tunnel_host? string            with direct: this machine's address the cluster reaches (default: detected)
---@field tunnel_ca? string              PEM of the CA the proxy trusts for the tunnel (default: the provider's, or the image's bundle)
---@field image? string                  the proxy image
---@field wait? boolean                  stay until a signal, then close the session
---@field kubeconfig? string
---@field context? string
---@field hooks? czctl.intercept.Hooks
---@field held_by? integer               (internal) pid of the --wait holder this setup runs for
---@field session_id? string             (internal) the session id the holder chose

---@class czctl.intercept.Session
--- The result of an intercept: what it set up and how to use and close it.
---@field status "intercepting"|"existing"
---@field id string
---@field service string
---@field namespace string
---@field port integer          the intercepted Service port
---@field podPort integer|nil
---@field localPort integer
---@field all boolean
---@field rule string           the routing rule, as text ("X-C6O-INTERCEPT: yes", "all requests")
---@field header string|nil     the header to send, "Name: value" (nil with --all or another rule)
---@field tunnel string
---@field tunnelUrl string|nil
---@field inspector string|nil
---@field clusterIP string|nil
---@field proxy table|nil       names of the objects: deployment, configmap, service
---@field wait boolean
---@field closeCommand string
---@field curl string|nil       a request that is routed to this machine, ready to paste

-- Raise a failure as a one-line error; a pending signal wins, so the
-- runner reports the interrupt instead.
local function fail(err)
  signal.check()
  intercept.raise(err)
end

local function apply_hook(hook, obj, run)
  if not hook then return obj end
  local replaced = hook(obj, run)
  if replaced ~= nil then return replaced end
  return obj
end

---@class czctl.intercept.Run
---@field ctx table
---@field opts czctl.intercept.Options
---@field hooks czctl.intercept.Hooks
---@field session table the local session record
local Run = {}
Run.__index = Run
Run.__name = "czctl.intercept.run"

--- Check the options and prepare a run. Raises a usage error for options
--- that cannot work (unknown tunnel provider, a bad local port, a bad rule).
---@param ctx table the recipe's ctx (out, undo, kube)
---@param opts czctl.intercept.Options
---@return czctl.intercept.Run
function M.new(ctx, opts)
  local o = util.deep_copy(opts)
  o.hooks = opts.hooks or {}
  o.namespace = o.namespace or "default"
  o.tunnel = o.tunnel or "ngrok"
  o.image = o.image or intercept.DEFAULT_IMAGE
  o.rule = o.rule or assert(proxy.from_flags{})
  if o.local_port ~= nil and (math.type(o.local_port) ~= "integer" or o.local_port < 1 or o.local_port > 65535) then
    ctx.usage_error("--localPort must be a port number (1-65535)")
  end
  local provider, provider_err = require("czctl.tunnel").get(o.tunnel)
  if not provider then ctx.usage_error(provider_err) end
  local run = setmetatable({ ctx = ctx, opts = o, hooks = o.hooks, provider = provider, out = ctx.out }, Run)
  run.client = ctx.kube()
  if run.hooks.rule then
    run.opts.rule = apply_hook(run.hooks.rule, run.opts.rule, run)
    local ok, err = proxy.validate(run.opts.rule)
    if not ok then ctx.usage_error("the rule from hooks.rule is not valid: " .. err) end
  end
  run.rule_text = proxy.describe(run.opts.rule)
  return run
end

-- Create an object with its undo registered first. A refusal by the API
-- server (4xx) means there is nothing to undo (AlreadyExists: not ours to
-- delete). If the answer was lost (a signal, a dropped connection) the
-- object may exist, or may still be created by the request in flight, so
-- the undo deletes it and then watches a few seconds for a late arrival.
function Run:create(obj)
  local state = "creating"
  local kind, name, ns = obj.kind, obj.metadata.name, obj.metadata.namespace
  local client = self.client
  local function delete() session.delete_object(client, ns, kind, name) end
  self.ctx.undo:defer(string.format("delete %s %s", kind, name), function()
    if state == "refused" then return end
    delete()
    if state == "unknown" then
      local late = client:wait_for(kind, name, function(o) return o ~= nil end, M.LATE_CREATE_GRACE,
                                   { namespace = ns })
      if late and late.metadata then delete() end
    end
  end)
  local created, err = client:create(obj, { namespace = ns })
  if created then state = "created"; return created end
  if type(err) == "table" and type(err.code) == "number" and err.code >= 400 and err.code < 500 then
    state = "refused"
  else
    state = "unknown"
  end
  fail(err)
end

--- Step: the Service and the port to intercept (-r, or its only port). A
--- Service this machine already intercepts with the same settings ends the
--- run with that session (run.existing); with other settings it fails.
function Run:resolve_service()
  local o, ns, name = self.opts, self.opts.namespace, self.opts.service
  local svc, index = self.out:step(string.format("Resolve Service %s/%s", ns, name), function()
    local svc, err = intercept.get_service(self.client, ns, name)
    if not svc then fail(err) end
    local why = intercept.not_interceptable(svc)
    if why then fail(why) end
    local index, port_err = intercept.choose_port(svc, o.remote_port)
    if not index then self.ctx.usage_error(port_err) end
    return svc, index
  end)
  self.svc, self.port_index = svc, index
  local existing = intercept.record(svc)
  if existing then self:existing_session(existing) end
  local service_port = svc.spec.ports[index]
  local pod_port, warning = intercept.resolve_target_port(self.client, svc, service_port)
  if warning then self.out:warn("%s", warning) end
  local manager = intercept.managed_by(svc)
  if manager then
    self.out:warn("Service %s looks managed by %s, which may revert czctl's change while the session runs", name,
                  manager)
  end
  self.port, self.pod_port = math.tointeger(service_port.port), pod_port
  self.local_port = o.local_port or self.port
  -- Where the cluster reaches this machine (direct: detected from the Nodes).
  if not o.tunnel_host and self.provider.detect_host then
    local host, host_err = self.provider.detect_host(self.client)
    if not host then fail(host_err) end
    o.tunnel_host = host
  end
end

-- The Service carries a session already: this machine's with the same
-- settings is reported (run.existing); anything else is an error.
function Run:existing_session(existing)
  local o, ns, name = self.opts, self.opts.namespace, self.opts.service
  local mine = session.load(existing.session)
  if not mine then
    fail(string.format("Service %s/%s is already intercepted by session %s (%s); close it with: %s", ns, name,
                       existing.session, existing.rule or existing.header or "?",
                       session.close_command(existing.session, ns)))
  end
  if existing.rule ~= self.rule_text or (o.local_port and o.local_port ~= mine.local_port)
     or (mine.tunnel and mine.tunnel.provider ~= o.tunnel) then
    fail(string.format("Service %s/%s is already intercepted by session %s (%s -> localhost:%s, tunnel %s), "
                       .. "started here with other flags; to replace it, run again with -c, or close it with: %s",
                       ns, name, existing.session, existing.rule or "?",
                       tostring(math.tointeger(mine.local_port) or mine.local_port),
                       tostring(mine.tunnel and mine.tunnel.provider), session.close_command(existing.session, ns)))
  end
  local tunnel = session.tunnel_status(mine.id) or mine.tunnel or {}
  self.existing = {
    status = "existing", id = mine.id, service = name, namespace = ns, port = existing.port,
    localPort = mine.local_port, all = o.rule.all == true, rule = existing.rule,
    header = (not o.rule.all) and proxy.example_header(o.rule) or nil,
    tunnel = mine.tunnel and mine.tunnel.provider, tunnelUrl = tunnel.url, inspector = tunnel.inspector,
    wait = mine.wait == true, closeCommand = session.close_command(mine.id, ns),
  }
  error(M.DONE, 0)
end

-- Raised by a step to end the run early with a result (an existing session).
M.DONE = setmetatable({}, { __name = "czctl.intercept.done", __tostring = function() return "done" end })

--- Step: the local session file, first, so a crash at any later point
--- leaves a trace `czctl session close` can follow.
function Run:record_session()
  local o = self.opts
  local id = o.session_id or session.new_id()
  local info = self.client:info() or {}
  local s = {
    id = id, service = o.service, namespace = o.namespace, port = self.port, pod_port = self.pod_port,
    local_port = self.local_port, header = o.header, all = o.rule.all == true, rule = self.rule_text,
    kubeconfig = o.kubeconfig or os.getenv("KUBECONFIG"), context = o.context or info.context,
    server = info.server, tunnel = { provider = o.tunnel }, tunnel_host = o.tunnel_host, tunnel_ca = o.tunnel_ca,
    objects = intercept.names(id), started = csys.time(),
    parent_pid = o.held_by or csys.getpid(), state = "starting", wait = (o.wait or o.held_by ~= nil),
  }
  self.session, self.id, self.names = s, id, s.objects
  -- Removed last, and only when every other undo step worked: otherwise it
  -- is what lets `czctl session close` find and finish the session.
  self.ctx.undo:defer("remove the local session file", function() session.remove(id) end, { only_if_clean = true })
  self.ctx.undo:set_remedy(session.close_command(id, o.namespace))
  session.save(s)
end

--- Step: the tunnel, before the proxy, so its URL goes into the proxy's
--- configuration. A tunnel process (ngrok) is owned by a keeper process: it
--- must outlive this command without --wait, and die with its holder with it.
function Run:start_tunnel()
  local o, s = self.opts, self.session
  local tunnel = self.out:step(string.format("Start %s tunnel to localhost:%d", o.tunnel, self.local_port), function()
    if session.needs_keeper(self.provider) then
      self.ctx.undo:defer("stop the session keeper", function() session.stop_processes(s) end)
      local pid, err = session.start_keeper(s)
      if not pid then fail("cannot start the session keeper: " .. tostring(err)) end
      s.keeper_pid = pid
      session.save(s)
      local facts, terr = session.wait_keeper_tunnel(s, M.TUNNEL_TIMEOUT)
      if not facts then fail(terr) end
      return facts
    end
    local handle, err = self.provider.start{ local_port = self.local_port, host = o.tunnel_host, ca = o.tunnel_ca }
    if not handle then fail(err) end
    self.ctx.undo:defer("stop the tunnel", function() handle:stop() end)
    return session.tunnel_facts(handle, o.tunnel)
  end)
  -- A URL from any provider is checked before anything is built from it.
  local checked, url_err = proxy.route.parse_url(tunnel.upstream and tunnel.upstream.url or tunnel.url)
  if not checked then fail(string.format("tunnel provider %q: %s", o.tunnel, url_err)) end
  self.tunnel = tunnel
  s.tunnel = { provider = o.tunnel, url = tunnel.url, inspector = tunnel.inspector, pid = tunnel.pid }
  session.save(s)
  if not require("czctl.sys").listening("127.0.0.1", self.local_port, 0.5) then
    self.out:warn("nothing listens on 127.0.0.1:%d yet; intercepted requests go to the in-cluster version "
                  .. "until your server runs there", self.local_port)
  end
  if not (tunnel.upstream and (tunnel.upstream.secret_header or (tunnel.upstream.tls or {}).client_cert)) then
    self.out:warn("tunnel provider %q gives no secret or client certificate: anyone who reaches %s reaches "
                  .. "your local port", o.tunnel, tostring(tunnel.url))
  end
end

--- Step: a copy of the Service with the original selector: the proxy's
--- route to the in-cluster pods (hooks.service_copy edits it).
function Run:create_original_route()
  local copy = apply_hook(self.hooks.service_copy, intercept.copy_service(self.svc, self.id), self)
  self.copy = self.out:step("Create Service " .. copy.metadata.name .. " (route to the original)", function()
    return self:create(copy)
  end)
  self.proxy_ports = intercept.proxy_ports(self.svc, self.port_index, self.copy.spec.clusterIP)
end

--- Step: the NGINX configuration from the routing rule, in a ConfigMap
--- (hooks.config_map edits it), and the session's route into its tunnel
--- (URL, secret, certificates) in the session's Secret, which the
--- ConfigMap only names.
function Run:create_proxy_config()
  local conf, err, files = proxy.render{ ports = util.deep_copy(self.proxy_ports), rule = self.opts.rule,
                                         tunnel_upstream = self.tunnel.upstream, session = self.id,
                                         health_port = intercept.HEALTH_PORT, route_dir = intercept.ROUTE_DIR,
                                         nginx_version = intercept.image_nginx_version(self.opts.image) }
  if not conf then fail("cannot render the proxy configuration: " .. tostring(err)) end
  local secret = intercept.route_secret(self.opts.namespace, self.id, files)
  self.out:step("Create Secret " .. secret.metadata.name .. " (the tunnel's route)", function()
    return self:create(secret)
  end)
  local cm = apply_hook(self.hooks.config_map, intercept.config_map(self.opts.namespace, self.id, conf), self)
  self.out:step("Create ConfigMap " .. cm.metadata.name, function() return self:create(cm) end)
end

--- Step: the proxy Deployment (hooks.deployment edits it before it is created).
function Run:create_proxy()
  local o = self.opts
  local d = intercept.deployment{ namespace = o.namespace, id = self.id, image = o.image, ports = self.proxy_ports,
                                  service = o.service }
  d = apply_hook(self.hooks.deployment, d, self)
  self.deployment = self.out:step("Create proxy Deployment " .. d.metadata.name, function()
    return self:create(d)
  end)
end

--- Step: wait, by watch, until the proxy is ready.
function Run:wait_proxy_ready()
  self.out:step("Wait for the proxy to be ready", function()
    local d, err = intercept.wait_ready(self.client, self.opts.namespace, self.id, M.PROXY_READY_TIMEOUT,
                                        self.deployment)
    if not d then fail(err) end
  end)
end

--- Step: point the Service at the proxy: one patch guarded by its
--- resourceVersion, carrying the original selector and ports in an annotation.
function Run:route_service()
  local o, ns, name, id, svc = self.opts, self.opts.namespace, self.opts.service, self.id, self.svc
  local client = self.client
  local patched_service, patch_state = nil, "patching"
  self.ctx.undo:defer("restore Service " .. name, function()
    local ok, err = session.restore_service(client, ns, name, id, patched_service)
    if ok == nil then fail(err) end
    if patch_state == "unknown" and not ok then
      -- the patch's answer was lost: it may still land; watch briefly for it
      local late = client:wait_for("Service", name, function(obj)
        local r = obj and intercept.record(obj)
        return r ~= nil and r.session == id
      end, M.LATE_CREATE_GRACE, { namespace = ns })
      if late and late.metadata then
        ok, err = session.restore_service(client, ns, name, id, late)
        if ok == nil then fail(err) end
      end
    end
  end)
  patched_service = self.out:step(string.format("Route Service %s through the proxy", name), function()
    local patched, err = intercept.guarded_patch(client, ns, name, svc, function(current)
      local other = intercept.record(current)
      if other then
        fail(string.format("Service %s/%s was intercepted by session %s meanwhile; close it with: %s", ns, name,
                           other.session, session.close_command(other.session, ns)))
      end
      if intercept.describe_ports(current) ~= intercept.describe_ports(svc) then
        fail(string.format("the ports of Service %s changed during setup; run the command again", name))
      end
      return intercept.intercept_patch(current, id, self.proxy_ports, {
        header = o.header, all = o.rule.all == true, rule = self.rule_text, port = self.port,
        started = session.now_rfc3339(), host = csys.hostname(), tunnel = o.tunnel,
      })
    end)
    if not patched then
      patch_state = (type(err) == "table" and type(err.code) == "number" and err.code >= 400) and "refused"
                    or "unknown"
      fail(err)
    end
    patch_state = "patched"
    return patched
  end)
end

--- Step: wait, by watch, until the Service's Endpoints list only the proxy,
--- so the first request after the command returns is already routed.
function Run:wait_routed()
  local ns, name = self.opts.namespace, self.opts.service
  self.out:step(string.format("Wait for Service %s to route through the proxy", name), function()
    local ep, err = intercept.wait_routed(self.client, ns, name, self.id, M.ROUTE_TIMEOUT)
    if not ep then fail(err) end
  end)
  self.session.state = "active"
  session.save(self.session)
end

--- The ready-to-paste curl line for a session, or nil when the rule cannot
--- be met by fixed headers and a path.
local function curl_example(facts, rule)
  local example = proxy.example_request(rule)
  if not example then return nil end
  local parts = { "curl" }
  for _, h in ipairs(example.headers) do parts[#parts + 1] = "-H " .. util.shell_quote(h) end
  parts[#parts + 1] = util.shell_quote(string.format("http://%s.%s.svc.cluster.local:%d%s", facts.service,
                                                     facts.namespace, facts.port, example.path))
  return table.concat(parts, " ")
end

--- The result: the session's facts (czctl.intercept.Session).
---@return czctl.intercept.Session
function Run:result()
  if self.existing then return self.existing end
  local o, ns, t = self.opts, self.opts.namespace, self.tunnel
  local facts = {
    status = "intercepting", id = self.id, service = o.service, namespace = ns, port = self.port,
    podPort = self.pod_port, localPort = self.local_port, all = o.rule.all == true, rule = self.rule_text,
    header = (not o.rule.all) and proxy.example_header(o.rule) or nil,
    tunnel = o.tunnel, tunnelUrl = t.url, inspector = t.inspector, clusterIP = self.svc.spec.clusterIP,
    proxy = self.names, wait = self.session.wait == true, closeCommand = session.close_command(self.id, ns),
  }
  facts.curl = curl_example(facts, o.rule)
  return facts
end

--- Run the given steps in order (each a method of the run, or a function
--- of it). A step may end the run early (an existing session).
---@param steps (string|fun(run: czctl.intercept.Run))[]
---@return czctl.intercept.Session
function Run:run_steps(steps)
  local ok, err = pcall(function()
    for _, step in ipairs(steps) do
      if type(step) == "string" then
        local method = self[step]
        if type(method) ~= "function" then error("no intercept step named " .. step, 2) end
        method(self)
      else
        step(self)
      end
      signal.check()
    end
  end)
  if not ok and err ~= M.DONE then error(err, 0) end
  return self:result()
end

---------------------------------------------------------------------------
-- After the setup: hold (--wait) and close.
---------------------------------------------------------------------------

--- Text for a session result (out:result's renderer).
---@param r table a czctl.intercept.Session or a close result
---@return string
function M.render(r)
  if r.kind == "CloseResult" then
    if #r.closed == 0 then return string.format("No session on Service %s/%s to close.", r.namespace, r.service) end
    local ids = {}
    for i, c in ipairs(r.closed) do ids[i] = c.id end
    return string.format("Closed session %s on Service %s/%s.", table.concat(ids, ", "), r.namespace, r.service)
  end
  local lines = {}
  local function add(k, v) if v then lines[#lines + 1] = string.format("%-10s %s", k, v) end end
  if r.status == "existing" then lines[#lines + 1] = "This machine already intercepts this Service:" end
  add("Session", r.id)
  add("Service", string.format("%s/%s port %d -> localhost:%d", r.namespace, r.service, r.port, r.localPort))
  add("Route", r.all and "all requests" or r.header and ("requests with header " .. r.header) or r.rule)
  add("Tunnel", r.tunnelUrl and (r.tunnelUrl .. " (" .. r.tunnel .. ")"))
  add("Inspector", r.inspector)
  add("Try", r.curl and (r.curl .. "   # from inside the cluster"))
  if r.wait then
    add("Stop", "Ctrl-C (or SIGTERM) ends the session and restores the Service")
  else
    add("Close", r.closeCommand)
  end
  return table.concat(lines, "\n")
end

--- Print a result as the command's one result (text, JSON or YAML).
---@param ctx table
---@param r table
function M.report(ctx, r)
  local doc = util.deep_copy(r)
  doc.apiVersion, doc.kind = "czctl.io/v1", r.kind or "Session"
  ctx.out:result(doc, M.render)
end

--- Wait until a signal arrives, the session's tunnel dies, or the session is
--- closed by another command. Returns why: "signal", "closed", or the
--- tunnel's problem (a message).
---@param s table the local session record
---@return string reason
---@return string|nil detail
function M.hold(s)
  while true do
    if signal.wait(M.HOLD_CHECK_INTERVAL) then return "signal" end
    local problem = session.keeper_problem(s)
    if problem then return "tunnel", problem end
    if not session.load(s.id) then return "closed" end
  end
end

--- Close a session after holding it: shielded from signals (a second Ctrl-C
--- does not cut it short), each step shown. Raises when it failed, saying
--- how to finish.
---@param ctx table
---@param s table the local session record
function M.close(ctx, s)
  -- closed in reverse: the signal that came meanwhile is forgotten, then
  -- the shield comes down (so it does not change the exit code)
  local _ <close> = require("czctl.sys").shield()
  local _ <close> = setmetatable({}, { __close = function() signal.clear() end })
  local client = ctx.kube()
  local ok, err = pcall(session.close, client, { id = s.id, namespace = s.namespace, service = s.service,
                                                 local_session = s }, function(title, fn)
    return ctx.out:step(title, fn)
  end)
  if not ok then
    ctx.out:error("%s", tostring(err))
    intercept.raise(string.format("cleanup of session %s failed; finish it with: %s", s.id,
                                  session.close_command(s.id, s.namespace)))
  end
end

-- Hold a session set up in this process, then close it.
local function hold_here(ctx, facts)
  ctx.undo:discard() -- from here on the session is closed as a whole, from the cluster
  local s = session.load(facts.id)
  if not s then return 0 end
  local why, detail = M.hold(s)
  if why == "closed" then ctx.out:info("session %s was closed by another command", s.id); return 0 end
  signal.clear()
  if why == "tunnel" then ctx.out:info("Closing session %s", s.id) end
  M.close(ctx, s)
  if why == "tunnel" then intercept.raise("the session ended because the tunnel stopped: " .. tostring(detail)) end
  return 0
end

--- The intercept, start to end, in this process: check the options, run
--- the steps, report the result; with opts.wait, hold the session until a
--- signal and close it. Returns the exit code.
---@param ctx table
---@param opts czctl.intercept.Options
---@param steps (string|function)[]
---@return integer
function M.start(ctx, opts, steps)
  local run = M.new(ctx, opts)
  local facts = run:run_steps(steps)
  if facts.status == "existing" or not (opts.wait and not opts.held_by) then
    signal.check() -- last chance to roll back: after discard the session stays
    ctx.undo:discard() -- the session now lives in the cluster (and its keeper)
    M.report(ctx, facts)
    -- The setup child of a --wait holder: a signal from now on (Ctrl-C
    -- reaches both) is the holder's to act on; the setup itself succeeded.
    if opts.held_by then signal.clear() end
    return 0
  end
  M.report(ctx, facts)
  return hold_here(ctx, facts)
end

--- --wait from the command line: this process only holds the session. The
--- setup runs in a child, the same command with --held-by PID --session-id
--- ID (so a user recipe's hooks apply there too), and the process that
--- stays for hours never loads the Kubernetes client until it closes the
--- session. The session and its keeper are tied to this process: if it is
--- killed, even by SIGKILL, the tunnel goes too and `czctl session close`
--- finishes the job. Exit: 0 after a signal and a clean close; 1 when the
--- close failed or the tunnel died; the child's code when setup failed;
--- 128+N for a signal that came during setup.
---@param ctx table
---@return integer
function M.hold_from_command_line(ctx)
  local process = require "czctl.process"
  local id = session.new_id()
  local argv = { csys.exe() }
  for _, w in ipairs(ctx.invocation.words) do argv[#argv + 1] = w end
  for _, a in ipairs({ "--held-by", tostring(csys.getpid()), "--session-id", id }) do argv[#argv + 1] = a end
  for _, a in ipairs(ctx.invocation.argv) do argv[#argv + 1] = a end
  local setup, err = process.spawn(argv, { stdin = "null", stdout = "inherit", stderr = "inherit" })
  if not setup then intercept.raise("cannot run the setup: " .. tostring(err)) end
  -- A signal during setup is not passed on: from a terminal (Ctrl-C) it has
  -- reached the child too, which rolls back and exits 130; sent to this
  -- process alone, the setup finishes and is cleaned up right away. Passing
  -- it on could hit the child's rollback a second time.
  local code, stop_signal, stopped
  repeat
    local why
    code, why = setup:wait()
    if not code then
      if why ~= "interrupted" then intercept.raise("setup: " .. tostring(why)) end
      -- A signal once the setup has finished (the session is active, its
      -- result printed) is the normal way to end the session, not an
      -- interrupted setup.
      local s = session.load(id)
      if not (s and s.state == "active") then stop_signal = stop_signal or signal.pending() end
      stopped = true
      signal.clear()
    end
  until code
  setup:close()
  local s = session.load(id)
  if code ~= 0 or not s then return code end -- failed (already reported), or an existing session reported
  local why, detail = "signal", nil
  if not stopped then why, detail = M.hold(s) end
  if why == "closed" then ctx.out:info("session %s was closed by another command", id); return 0 end
  signal.clear()
  if why == "tunnel" then ctx.out:info("Closing session %s", id) end
  M.close(ctx, s)
  if why == "tunnel" then intercept.raise("the session ended because the tunnel stopped: " .. tostring(detail)) end
  return stop_signal and signal.exit_code(stop_signal) or 0
end

---------------------------------------------------------------------------
-- The command: flags -> options -> start
---------------------------------------------------------------------------

local flagsets = require "czctl.flags"

-- The flags of `czctl service intercept` (the reference page's, plus ours).
local function intercept_flags()
  return flagsets.join({
    { name = "remotePort", short = "r", type = "string",
      help = "the Service port to intercept (number or name); optional when it has one port" },
    { name = "localPort", short = "l", type = "integer",
      help = "the local port to send intercepted traffic to (default: the Service port's number)" },
    { name = "header", short = "x", type = "string", default = proxy.DEFAULT_HEADER,
      help = "intercept requests carrying this header, as name:value" },
    { name = "all", short = "a", type = "boolean", help = "intercept all traffic, whatever the headers" },
    { name = "clean", short = "c", type = "boolean",
      help = "close the existing session on this Service first (alone: just close it)" },
    { name = "wait", short = "w", type = "boolean", help = "stay until SIGINT/SIGTERM, then clean up" },
    { name = "tunnel", type = "string", default = "ngrok", complete = "tunnels",
      help = "tunnel provider: ngrok, direct, or czctl/tunnel/NAME.lua on package.path" },
    { name = "tunnelHost", type = "string",
      help = "with --tunnel direct: the address of this machine the cluster reaches (default: detected)" },
    { name = "tunnelCa", type = "string",
      help = "a PEM file: the CA the proxy trusts for the tunnel's certificate (default: $CZCTL_TUNNEL_CA, "
             .. "else the proxy image's CA bundle)" },
    { name = "image", type = "string", default = intercept.DEFAULT_IMAGE, help = "the proxy image" },
    -- Internal: the setup child of a --wait holder (see hold_from_command_line).
    { name = "heldBy", type = "integer", hidden = true, help = "(internal) pid of the --wait holder" },
    { name = "sessionId", type = "string", hidden = true, help = "(internal) the session id the holder chose" },
  }, flagsets.kube{ namespace_default = "default", namespace_help = "the namespace of the Service" },
     flagsets.output())
end

-- --clean: close whatever session holds the Service; returns their ids.
local function close_sessions_on(ctx, namespace, name)
  local client, closed = ctx.kube(), {}
  ctx.out:step(string.format("Close existing session on %s/%s", namespace, name), function()
    local found, err = session.discover(client, { namespace = namespace })
    if not found then fail(err) end
    for _, s in ipairs(found) do
      if s.service == name then
        session.close(client, { id = s.id, namespace = namespace, service = name, service_object = s.service_object })
        closed[#closed + 1] = { id = s.id, namespace = namespace, service = name, restored = true }
      end
    end
    local mine = session.find_local(namespace, name)
    if mine and #closed == 0 then
      session.close(client, { id = mine.id, namespace = namespace, service = name, local_session = mine })
      closed[#closed + 1] = { id = mine.id, namespace = namespace, service = name }
    end
    -- Nothing to close: a mistyped Service or namespace is an error, not "nothing to do".
    if #closed == 0 then
      local svc, gerr = intercept.get_service(client, namespace, name)
      if not svc then fail(gerr) end
    end
  end)
  return setmetatable(closed, util.array_mt)
end

--- The options an intercept command line gives.
---@param ctx table
---@return czctl.intercept.Options
function M.options_from_flags(ctx)
  local f = ctx.flags
  local rule, rule_err = proxy.from_flags{ header = f.header, all = f.all }
  if not rule then ctx.usage_error(rule_err) end
  local ca_file, ca = f.tunnelCa or os.getenv("CZCTL_TUNNEL_CA"), nil
  if ca_file and ca_file ~= "" then
    local fh = io.open(ca_file, "rb")
    ca = fh and fh:read("a")
    if fh then fh:close() end
    if not ca or not ca:find("-----BEGIN CERTIFICATE-----", 1, true) then
      ctx.usage_error(string.format("--tunnel-ca %s: not a readable PEM certificate file", ca_file))
    end
  end
  return {
    service = ctx.args.service, namespace = f.namespace, remote_port = f.remotePort, local_port = f.localPort,
    rule = rule, header = not f.all and f.header or nil, tunnel = f.tunnel, tunnel_host = f.tunnelHost,
    tunnel_ca = ca,
    image = f.image, wait = f.wait, kubeconfig = f.kubeconfig, context = f.context,
    held_by = f.heldBy, session_id = f.sessionId,
  }
end

--- A recipe that runs the intercept workflow: `czctl service intercept`'s
--- flags, --clean, the --wait holder, and the result, around `spec.steps`.
--- The returned recipe has :with(extra) to make a variant with hooks,
--- other defaults or more flags (a user recipe's whole job):
---
---   return require("czctl.intercept").builtin_recipe():with{
---     hooks = { deployment = function(d) d.spec.template.metadata.labels.team = "blue" end },
---   }
---@param spec {steps: (string|function)[], hooks?: czctl.intercept.Hooks, defaults?: table<string, any>, flags?: table[], summary?: string, description?: string}
---@return table recipe
function M.recipe(spec)
  local flags = flagsets.join(spec.flags or {}, intercept_flags())
  for _, d in ipairs(flags) do
    if spec.defaults and spec.defaults[d.name] ~= nil then d.default = spec.defaults[d.name] end
  end
  local recipe = {
    summary = spec.summary or "Intercept traffic to a Service and send it to this machine",
    usage = "SERVICE [flags]",
    description = spec.description or [[
Requests to SERVICE that carry the header (default X-C6O-INTERCEPT:yes), or
all requests with --all, go through a tunnel to --localPort on this machine;
every other request reaches the in-cluster version. Without --wait the
command returns once the intercept is live (close it with `czctl session
close`); with --wait it stays and cleans up on Ctrl-C or SIGTERM (exit 0).
--localPort defaults to the intercepted Service port's number.]],
    args = { { name = "service", help = "the name of the Service to intercept", required = true,
               complete = "services" } },
    flags = flags,
    steps = spec.steps,
    hooks = spec.hooks,
  }
  function recipe.run(ctx)
    local f = ctx.flags
    local opts = M.options_from_flags(ctx)
    opts.hooks = spec.hooks
    -- --wait: this process only holds the session; the setup runs as a child.
    if f.wait and not f.heldBy then return M.hold_from_command_line(ctx) end
    -- --clean: close whatever session holds this Service, then go on (or stop).
    if f.clean then
      local closed = close_sessions_on(ctx, opts.namespace, opts.service)
      local given = ctx.sources
      if not (given.localPort == "flag" or given.remotePort == "flag" or given.header == "flag" or f.all
              or f.wait) then
        M.report(ctx, { kind = "CloseResult", closed = closed, failed = setmetatable({}, util.array_mt),
                        service = opts.service, namespace = opts.namespace })
        return 0
      end
    end
    return M.start(ctx, opts, spec.steps)
  end
  --- A variant of this recipe: extra.hooks (merged over these), extra.defaults
  --- (flag defaults by flag name), extra.flags (more declarations), extra.steps.
  function recipe:with(extra)
    local hooks = util.deep_copy(spec.hooks or {})
    for k, v in pairs(extra.hooks or {}) do hooks[k] = v end
    local defaults = util.deep_copy(spec.defaults or {})
    for k, v in pairs(extra.defaults or {}) do defaults[k] = v end
    return M.recipe{ steps = extra.steps or self.steps, hooks = hooks, defaults = defaults,
                     flags = flagsets.join(spec.flags or {}, extra.flags or {}),
                     summary = extra.summary or spec.summary, description = extra.description or spec.description }
  end
  return recipe
end

return M
