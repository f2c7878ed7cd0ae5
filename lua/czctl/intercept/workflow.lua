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
local shared = require "czctl.session.shared"
local proxy = require "czctl.proxy"
local protocol = require "czctl.proxy.protocol"
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
-- Seconds to watch for an object whose create (or a Service patch) lost
-- its answer: it may still land, and must then be undone too.
M.LATE_CREATE_GRACE = 3
-- How often a --wait holder checks the tunnel, the guard's warnings and the
-- session file.
M.HOLD_CHECK_INTERVAL = 1
-- `-- CMD`: seconds CMD has to exit after czctl passed it a signal, before
-- its process group gets SIGKILL and the session is closed. With the close
-- (0.35 s on the sandbox, bench/ci-cancel.sh) this fits the 10 s a CI runner
-- gives between its first signal and SIGKILL (GitHub Actions: SIGINT, 7.5 s,
-- SIGTERM, 2.5 s, then the process tree is killed). See docs/ci.md.
M.COMMAND_GRACE = 5

---@class czctl.intercept.Hooks
--- Each hook gets the object czctl built and the run (run.session, run.ctx,
--- run.opts); it edits the object in place or returns a replacement.
---@field rule? fun(rule: table, run: czctl.intercept.Run): table|nil         the routing rule (a czctl.proxy rule)
---@field service_copy? fun(svc: table, run: czctl.intercept.Run): table|nil  the copy of the Service (route to the original), before it is created
---@field config_secret? fun(s: table, run: czctl.intercept.Run): table|nil   the Secret with nginx.conf, before it is created
---@field deployment? fun(d: table, run: czctl.intercept.Run): table|nil      the proxy Deployment, before it is created (by the first session)

---@class czctl.intercept.Options
---@field service string                 the Service to intercept
---@field namespace? string              default: the kubeconfig context's, else "default"
---@field remote_port? string|integer    the Service port (number or name); optional with one port
---@field local_port? integer            default: the Service port's number
---@field rule? table                    a czctl.proxy rule; default the header X-C6O-INTERCEPT: yes
---@field header? string                 the header as typed (name:value), for display
---@field tunnel? string                 tunnel provider: "ngrok" (default), "direct", "kube", or yours
---@field tunnel_host? string            with direct: this machine's address the cluster reaches (default: detected)
---@field relay_image? string            with kube: the relay's image (default: czctl.tunnel.kube.DEFAULT_IMAGE)
---@field protocol? string               what the port speaks: "auto" (default: from appProtocol, name, number), "http", "h2c", "grpc", "tls", "tcp"
---@field tunnel_ca? string              PEM of the CA the proxy trusts for the tunnel (default: the provider's, or the image's bundle)
---@field image? string                  the proxy image
---@field wait? boolean                  stay until a signal, then close the session
---@field command? string[]              run this command, and close the session when it exits (implies wait)
---@field grace? number                  with command: seconds it has to exit after a signal (M.COMMAND_GRACE)
---@field kubeconfig? string
---@field context? string
---@field hooks? czctl.intercept.Hooks
---@field env_file? string               also write the app's environment there (czctl.env, mode 0600)
---@field access_checked? boolean       (internal) the permissions were checked already (before --clean)
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
---@field protocol string      how the port is intercepted: "http", "h2c" (HTTP/2, gRPC) or "tcp" (every connection)
---@field protocolAssumed boolean|nil  true when the port declares no protocol and HTTP/1.1 is assumed
---@field localPort integer
---@field all boolean
---@field rule string           the routing rule, as text ("X-C6O-INTERCEPT: yes", "all requests")
---@field header string|nil     the header to send, "Name: value" (nil with --all or another rule)
---@field tunnel string
---@field tunnelUrl string|nil
---@field inspector string|nil
---@field clusterIP string|nil
---@field proxy table|nil       names of the Service's proxy objects: deployment, service (the copy)
---@field wait boolean
---@field closeCommand string
---@field curl string|nil       a request that is routed to this machine, ready to paste

-- Raise a failure that exits with `code` instead of 1 (`-- CMD`: 126/127
-- when CMD cannot run, as a shell says it).
local function fail_with(code, message)
  error(setmetatable({ message = message, exit_code = code }, { __tostring = function(e) return e.message end }), 0)
end

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
  o.tunnel = o.tunnel or "ngrok"
  o.image = o.image or intercept.DEFAULT_IMAGE
  o.rule = o.rule or assert(proxy.from_flags{})
  if o.local_port ~= nil and (math.type(o.local_port) ~= "integer" or o.local_port < 1 or o.local_port > 65535) then
    ctx.usage_error("--localPort must be a port number (1-65535)")
  end
  local provider, provider_err = require("czctl.tunnel").get(o.tunnel)
  if not provider then ctx.usage_error(provider_err) end
  if o.relay_image ~= nil and (o.tunnel ~= "kube" or not tostring(o.relay_image):find("^[%w][%w.:/@_%-]*$")) then
    ctx.usage_error(o.tunnel ~= "kube" and "--relay-image is for --tunnel kube only"
                    or string.format("--relay-image %q is not an image reference (REGISTRY/NAME:TAG)", o.relay_image))
  end
  local run = setmetatable({ ctx = ctx, opts = o, hooks = o.hooks, provider = provider, out = ctx.out }, Run)
  run.client = ctx.kube()
  -- -n, else the kubeconfig context's namespace, else default (as kubectl)
  o.namespace = o.namespace or run.client.namespace or "default"
  if run.hooks.rule then
    run.opts.rule = apply_hook(run.hooks.rule, run.opts.rule, run)
    local ok, err = proxy.validate(run.opts.rule)
    if not ok then ctx.usage_error("the rule from hooks.rule is not valid: " .. err) end
  end
  run.rule_text = proxy.describe(run.opts.rule)
  return run
end

--- Step: before anything changes, ask the API server whether the user may
--- do every step, the undo steps and closing the session included
--- (czctl.access); fails with one line naming every missing permission.
function Run:check_access()
  if self.opts.access_checked then return end -- before --clean, for this run too
  M.check_access(self.ctx, self.opts, self.opts.env_file and { "service intercept", "service env" }
                                      or { "service intercept" })
end

--- Fail (one line naming them) unless the user has every permission the
--- commands need in opts.namespace (czctl.access); also used before --clean.
---@param ctx table
---@param opts czctl.intercept.Options
---@param commands string[] names in czctl.access.NEEDS
function M.check_access(ctx, opts, commands)
  local access = require "czctl.access"
  -- a tunnel whose provider makes cluster objects of its own needs more ("tunnel kube")
  local tunnel = "tunnel " .. tostring(opts.tunnel)
  if access.NEEDS[tunnel] and commands[1] == "service intercept" then
    commands = { table.unpack(commands) }
    commands[#commands + 1] = tunnel
  end
  -- not a step of its own on screen: when it passes there is nothing to say
  local ok, err = access.check(ctx.kube(), opts.namespace or "default", access.needs(table.unpack(commands)),
                               "czctl service intercept", opts.service)
  if not ok then fail(err) end
end

--- Step (with --env-file): the environment of the Service's app, resolved
--- from its pods before the Service is routed elsewhere, written to a 0600
--- file (removed again if the intercept rolls back).
function Run:export_env()
  local path = self.opts.env_file
  if not path then return end
  local env = require "czctl.env"
  self.out:step("Write the environment of Service " .. self.opts.service .. " to " .. path, function()
    local existed = io.open(path, "rb")
    if existed then existed:close() end
    local result, err = env.resolve(self.client, { namespace = self.opts.namespace, service = self.opts.service })
    if not result then fail(err) end
    for _, w in ipairs(result.warnings) do self.out:warn("%s", w) end
    if not existed then self.ctx.undo:defer("remove " .. path, function() os.remove(path) end) end
    local ok, werr = env.write_file(path, (env.render(result, "dotenv", { secrets = true })))
    if not ok then fail(werr) end
  end)
end

--- Step: the Service and the port to intercept (-r, or its only port). A
--- session of this machine's on the same port with the same rule ends the
--- run with that session (run.existing); a rule that would take another
--- session's requests fails, naming that session and its owner.
function Run:resolve_service()
  local o, ns, name = self.opts, self.opts.namespace, self.opts.service
  local svc, index = self.out:step(string.format("Resolve Service %s/%s", ns, name), function()
    local svc, err = intercept.get_service(self.client, ns, name)
    if not svc then fail(err) end
    local why = intercept.not_interceptable(svc) or protocol.not_interceptable(svc)
    if why then fail(why) end
    local index, port_err = intercept.choose_port(svc, o.remote_port)
    if not index then self.ctx.usage_error(port_err) end
    self:check_protocol(svc.spec.ports[index], name)
    return svc, index
  end)
  self.svc, self.port_index = svc, index
  local state = shared.state(svc)
  -- what the pods are: the original selector and ports while others intercept it
  local original = svc
  if state.original and state.redirected then
    original = { metadata = svc.metadata, spec = { selector = state.original.selector, ports = state.original.ports } }
  end
  local service_port = svc.spec.ports[index]
  self.port = math.tointeger(service_port.port)
  for _, s in ipairs(state.sessions) do
    if s.port == self.port and session.is_mine(s.owner) and shared.same_rule(s.rule, o.rule) then
      self:existing_session(s)
    end
  end
  local conflict = shared.conflict(state, { id = o.session_id or "-", port = self.port, rule = o.rule, service = name,
                                            protocol = self.mode })
  if conflict then fail(conflict) end
  local target_port = service_port
  for _, p in ipairs(original.spec.ports) do
    if math.tointeger(p.port) == self.port and (p.protocol or "TCP") == (service_port.protocol or "TCP") then
      target_port = p
    end
  end
  local pod_port, warning = intercept.resolve_target_port(self.client, original, target_port)
  if warning then self.out:warn("%s", warning) end
  -- the original route's endpoints: the Service's own, or the copy's once it is routed
  local endpoints = self.client:list("Endpoints", { namespace = ns, fieldSelector = "metadata.name="
    .. (state.redirected and shared.names(name).service or name) })
  if endpoints and not warning then
    local none = protocol.no_ready_endpoint(endpoints.items[1], service_port, name)
    if none then self.out:warn("%s", none) end
  end
  local manager = intercept.managed_by(svc)
  if manager then
    self.out:warn("Service %s looks managed by %s, which may revert czctl's change while the session runs", name,
                  manager)
  end
  self.pod_port = pod_port
  self.local_port = o.local_port or self.port
  -- Where the cluster reaches this machine (direct: detected from the Nodes).
  if not o.tunnel_host and self.provider.detect_host then
    local host, host_err = self.provider.detect_host(self.client)
    if not host then fail(host_err) end
    o.tunnel_host = host
  end
end

--- What the port speaks (--protocol, appProtocol, name, number) and how it
--- is intercepted (run.mode: "http", "h2c" or "tcp"). A rule that needs
--- headers on a port that is TLS or not HTTP is refused, offering --all;
--- a mode the tunnel cannot carry is refused with the reason. Nothing has
--- changed yet.
---@param port table the Service port
---@param service string
function Run:check_protocol(port, service)
  local o = self.opts
  local spoken, err = protocol.detect(port, o.protocol)
  if not spoken then self.ctx.usage_error(err) end
  local mode, merr = protocol.mode(spoken, o.rule.all == true, port, service)
  if not mode then fail(merr) end
  local ok, terr = protocol.check_tunnel(mode, o.tunnel, self.provider)
  if not ok then fail(terr) end
  self.mode, self.spoken = mode, spoken
end

-- A session of this machine's holds the port with the same rule: with the
-- same settings it is reported (run.existing); otherwise an error.
function Run:existing_session(existing)
  local o, ns, name = self.opts, self.opts.namespace, self.opts.service
  local mine = session.load(existing.id)
  if not mine or (o.local_port and o.local_port ~= mine.local_port)
     or (mine.tunnel and mine.tunnel.provider ~= o.tunnel) then
    fail(string.format("Service %s/%s port %d is already intercepted by your session %s (%s)%s; to replace it, "
                       .. "run again with -c, or close it with: %s", ns, name, self.port, existing.id,
                       tostring(existing.ruleText), mine and string.format(" -> localhost:%s, tunnel %s",
                         tostring(math.tointeger(mine.local_port) or mine.local_port),
                         tostring(mine.tunnel and mine.tunnel.provider)) or " started from another state directory",
                       session.close_command(existing.id, ns)))
  end
  if self.provider.stable_url and not mine.wait and mine.keeper_pid
     and not session.same_process(mine.keeper_pid, mine.keeper_start) then
    self:restart_keeper(mine)
  end
  local tunnel = session.tunnel_status(mine.id) or mine.tunnel or {}
  self.existing = {
    status = "existing", id = mine.id, service = name, namespace = ns, port = existing.port,
    localPort = mine.local_port, all = o.rule.all == true, rule = existing.ruleText,
    header = (not o.rule.all) and proxy.example_header(o.rule) or nil,
    tunnel = mine.tunnel and mine.tunnel.provider, tunnelUrl = tunnel.url, inspector = tunnel.inspector,
    wait = mine.wait == true, closeCommand = session.close_command(mine.id, ns),
  }
  error(M.DONE, 0)
end

--- Create an object of this run (a tunnel's, in provider.prepare), its
--- delete registered as the undo first: a create whose answer was lost is
--- watched for briefly and deleted if it lands.
---@param obj table
---@return table created
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
  state = (type(err) == "table" and type(err.code) == "number" and err.code >= 400 and err.code < 500) and "refused"
          or "unknown"
  fail(err)
end

-- Start the keeper of session s and wait until it reports the tunnel.
local function launch_keeper(s)
  local pid, err = session.start_keeper(s)
  if not pid then fail("cannot start the session keeper: " .. tostring(err)) end
  s.keeper_pid, s.keeper_start = pid, session.process_start(pid) or "gone"
  session.save(s)
  local facts, terr = session.wait_keeper_tunnel(s, M.TUNNEL_TIMEOUT)
  if not facts then fail(terr) end
  return facts
end

-- The keeper of this machine's session is gone (killed, the machine
-- restarted): start another. Only for a tunnel whose URL does not change
-- (kube: the relay's Service), so the proxy's configuration stays right.
function Run:restart_keeper(mine)
  self.out:step("Restart the session keeper", function()
    session.write_tunnel_status(mine.id, { status = "starting", provider = mine.tunnel.provider })
    launch_keeper(mine)
    if self.provider.wait_ready then
      local ok, werr = self.provider.wait_ready({ id = mine.id, session = mine }, M.PROXY_READY_TIMEOUT)
      if not ok then fail(werr) end
    end
  end)
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
    owner = session.owner(), started = csys.time(),
    parent_pid = o.held_by or csys.getpid(), state = "starting", wait = (o.wait or o.held_by ~= nil),
  }
  s.parent_start = session.process_start(s.parent_pid)
  self.session, self.id = s, id
  -- Removed last, and only when every other undo step worked: otherwise it
  -- is what lets `czctl session close` find and finish the session.
  self.ctx.undo:defer("remove the local session file", function() session.remove(id) end, { only_if_clean = true })
  self.ctx.undo:set_remedy(session.close_command(id, o.namespace))
  session.save(s)
end

--- Step: the tunnel, before the proxy, so its URL goes into the proxy's
--- configuration. It is owned by the session's keeper process, for every
--- tunnel kind: the keeper must outlive this command without --wait (and
--- dies with the --wait process), and it also runs the session's guard.
function Run:start_tunnel()
  local o, s = self.opts, self.session
  local tunnel = self.out:step(string.format("Start %s tunnel to localhost:%d", o.tunnel, self.local_port), function()
    -- Cluster objects of the tunnel (the kube tunnel's relay), undone on failure.
    if self.provider.prepare then self.provider.prepare(self) end
    self.ctx.undo:defer("stop the session keeper", function() session.stop_processes(s) end)
    return launch_keeper(s)
  end)
  -- A URL from any provider is checked before anything is built from it.
  local checked, url_err = proxy.route.parse_url(tunnel.upstream and tunnel.upstream.url or tunnel.url)
  if not checked then fail(string.format("tunnel provider %q: %s", o.tunnel, url_err)) end
  self.tunnel = tunnel
  s.tunnel = { provider = o.tunnel, url = tunnel.url, inspector = tunnel.inspector, pid = tunnel.pid,
               start = tunnel.start }
  session.save(s)
  if not require("czctl.sys").listening("127.0.0.1", self.local_port, 0.5) then
    self.out:warn("nothing listens on 127.0.0.1:%d yet; intercepted requests go to the in-cluster version "
                  .. "until your server runs there", self.local_port)
  end
  -- (a provider whose URL is inside the cluster, guarded by a NetworkPolicy
  -- its prepare made or warned about, declares in_cluster_hop: kube's relay)
  if not (self.provider.in_cluster_hop
          or tunnel.upstream and (tunnel.upstream.secret_header or (tunnel.upstream.tls or {}).client_cert)) then
    self.out:warn("tunnel provider %q gives no secret or client certificate: anyone who reaches %s reaches "
                  .. "your local port", o.tunnel, tostring(tunnel.url))
  end
end

-- Whether a request's answer is known ("known": it succeeded, or the API
-- server refused it) or was lost ("lost": a signal, a dropped connection),
-- in which case the change may still land and its undo watches for it.
local function answer_of(ok, err)
  return (ok or type(err) ~= "table" or (type(err.code) == "number" and err.code >= 400)) and "known" or "lost"
end

--- Step: the session's route into its tunnel (URL, secret header, TLS
--- certificates: czctl.proxy.route's files) in its own Secret, which the
--- Service's proxy mounts at ROUTE_DIR/<id>; the Service's annotation and
--- the proxy's configuration name the session only by id.
function Run:create_route_secret()
  local o = self.opts
  local dir = intercept.ROUTE_DIR .. "/" .. self.id
  local planned, err = proxy.route.plan(self.tunnel.upstream or { url = self.tunnel.url },
                                        { id = self.id, dir = dir, mode = self.mode,
                                          nginx_version = intercept.image_nginx_version(o.image) })
  if not planned then fail("cannot render the tunnel's route: " .. tostring(err)) end
  local secret = intercept.route_secret(o.namespace, o.service, self.id, proxy.route.files(planned))
  local client, name, answer = self.client, secret.metadata.name, "waiting"
  self.out:step("Create Secret " .. name .. " (the tunnel's route)", function()
    self.ctx.undo:defer("delete Secret " .. name, function()
      session.delete_object(client, o.namespace, "Secret", name)
      if answer ~= "known" then
        -- the create's answer was lost (a signal, a dropped connection): it may still land
        local late = client:wait_for("Secret", name, function(x) return x ~= nil end, M.LATE_CREATE_GRACE,
                                     { namespace = o.namespace })
        if late and late.metadata then session.delete_object(client, o.namespace, "Secret", name) end
      end
    end)
    local created, cerr = client:create(secret, { namespace = o.namespace })
    answer = answer_of(created, cerr)
    if not created then fail(cerr) end
    return created
  end)
end

--- Step: join the Service: one patch, guarded by its resourceVersion, adds
--- this session (rule, tunnel provider, owner: nothing secret) to the
--- Service's czctl.io/sessions annotation and counts up its routes-version.
--- Two developers joining at once are serialised by the API server; a rule
--- that would take another session's requests is refused.
function Run:join_service()
  local o, ns, name = self.opts, self.opts.namespace, self.opts.service
  local client = self.client
  local entry = {
    id = self.id, port = self.port, rule = o.rule, ruleText = self.rule_text, tunnel = o.tunnel,
    owner = self.session.owner, started = session.now_rfc3339(),
    protocol = self.mode ~= "http" and self.mode or nil,
  }
  local answer = "waiting"
  self.ctx.undo:defer("take the route off Service " .. name, function()
    local target = { id = self.id, namespace = ns, service = name, image = o.image }
    session.leave(client, target)
    if answer == "lost" then
      -- the join's answer was lost: it may still land; watch briefly for it
      local late = client:wait_for("Service", name, function(obj)
        return obj ~= nil and shared.find(shared.state(obj), self.id) ~= nil
      end, M.LATE_CREATE_GRACE, { namespace = ns })
      if late and late.metadata then session.leave(client, target) end
    end
  end)
  self.svc = self.out:step(string.format("Join Service %s (routes shared with other sessions)", name), function()
    local patched, err = shared.join(client, ns, name, entry, self.svc)
    answer = answer_of(patched, err)
    if not patched then fail(err) end
    return patched
  end)
  local state = shared.state(self.svc)
  self.version = state.version
  self.first = not state.redirected
end

--- Step: the proxy from the Service's state: the copy Service (the route to
--- the original pods; hooks.service_copy), the configuration in an
--- immutable Secret named by its hash (hooks.config_secret), and the
--- Deployment (hooks.deployment, when it is created) pointed at it, which
--- rolls one new pod.
function Run:update_proxy()
  local o, ns, name = self.opts, self.opts.namespace, self.opts.service
  local client = self.client
  local by_kind = { Service = self.hooks.service_copy, Secret = self.hooks.config_secret,
                    Deployment = self.hooks.deployment }
  local result = self.out:step(string.format("Update proxy Deployment %s", shared.names(name).deployment), function()
    local r, err = shared.reconcile(client, ns, name, { image = o.image, svc = self.svc, create = function(obj)
      obj = apply_hook(by_kind[obj.kind], obj, self)
      local created, cerr = client:create(obj, { namespace = ns })
      if not created and not (type(cerr) == "table" and type(cerr.code) == "number" and cerr.code >= 400) then
        -- the answer was lost (a signal, a dropped connection): the object
        -- may still be created by the request in flight; undone if it is
        local kind, obj_name = obj.kind, obj.metadata.name
        self.ctx.undo:defer(string.format("delete %s %s if it was created late", kind, obj_name), function()
          local late = client:wait_for(kind, obj_name, function(x) return x ~= nil end, M.LATE_CREATE_GRACE,
                                       { namespace = ns })
          if late and late.metadata then session.delete_object(client, ns, kind, obj_name) end
        end)
      end
      return created, cerr
    end })
    if not r then fail(err) end
    -- older configurations no pod uses go now, while the new pod starts
    shared.collect_secrets(client, ns, name)
    return r
  end)
  self.deployment = result.deployment
  self.names = { deployment = shared.names(name).deployment, service = shared.names(name).service }
end

--- Step: wait, by watch, until the proxy runs a configuration with this
--- session's route (older pods drain meanwhile; wait_routed then waits
--- until the Endpoints list only the new ones).
function Run:wait_proxy_ready()
  self.out:step("Wait for the proxy to run the new routes", function()
    local d, err = shared.wait_rollout(self.client, self.opts.namespace, self.opts.service, self.version,
                                       M.PROXY_READY_TIMEOUT)
    if not d then fail(err) end
  end)
  -- A tunnel that connects from this machine (kube) is ready once it reached the cluster.
  if self.provider.wait_ready then
    self.out:step("Wait for the " .. self.opts.tunnel .. " tunnel", function()
      local ok, err = self.provider.wait_ready(self, M.PROXY_READY_TIMEOUT)
      if not ok then fail(err) end
    end)
  end
end

--- Step: point the Service at the proxy, once, for the first session: one
--- patch guarded by its resourceVersion that saves what it replaces
--- (selector and target ports) in an annotation. Later sessions find it
--- done.
function Run:route_service()
  local ns, name = self.opts.namespace, self.opts.service
  local client, answer = self.client, "waiting"
  self.ctx.undo:defer("wait for a lost route patch of Service " .. name, function()
    if answer ~= "lost" then return end
    -- it may still land: wait for it, so the restore that follows sees it
    client:wait_for("Service", name, function(obj) return obj ~= nil and shared.state(obj).redirected end,
                    M.LATE_CREATE_GRACE, { namespace = ns })
  end)
  self.svc = self.out:step(string.format("Route Service %s through the proxy", name), function()
    local patched, err = shared.redirect(client, ns, name)
    answer = answer_of(patched, err)
    if not patched then fail(err) end
    return patched
  end)
end

--- Step: wait, by watch, until the Service's Endpoints list only proxy
--- pods with this session's route, so the first request after the command
--- returns is already routed.
function Run:wait_routed()
  local ns, name = self.opts.namespace, self.opts.service
  self.out:step(string.format("Wait for Service %s to route through the proxy", name), function()
    local ep, err = shared.wait_routed(self.client, ns, name, self.version, M.ROUTE_TIMEOUT)
    if not ep then fail(err) end
  end)
  self.session.state = "active"
  session.save(self.session)
end

--- The ready-to-paste curl line for a session, or nil when the rule cannot
--- be met by fixed headers and a path.
local function curl_example(facts, rule)
  local example = proxy.example_request(rule)
  if not example or facts.protocol == "tcp" then return nil end
  local parts = { "curl" }
  if facts.protocol == "h2c" then parts[#parts + 1] = "--http2-prior-knowledge" end
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
    protocol = self.mode, protocolAssumed = (self.spoken and not self.spoken.declared) or nil,
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
  add("Route", r.protocol == "tcp" and "every connection, bytes untouched (TCP level)"
               or r.all and "all requests" or r.header and ("requests with header " .. r.header) or r.rule)
  if r.protocol == "h2c" then add("Protocol", "HTTP/2 (h2c, gRPC): the header is gRPC metadata too") end
  if r.protocolAssumed then
    add("Protocol", "HTTP/1.1, assumed: the port declares none (say otherwise with --protocol h2c|tls|tcp)")
  end
  add("Tunnel", r.tunnelUrl and (r.tunnelUrl .. " (" .. r.tunnel .. ")"))
  add("Inspector", r.inspector)
  add("Try", r.curl and (r.curl .. "   # from inside the cluster"))
  if r.command then
    add("Command", util.shell_join(r.command.argv) .. " (the session closes when it exits)")
  elseif r.wait then
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

--- Wait until a signal arrives, the session's tunnel dies, its guard ends
--- it, or it is closed by another command, or, given a process (`-- CMD`),
--- until it exits. Returns why: "signal", "closed", "tunnel" or "ended"
--- (with a message), or "exited" and the process's exit code. The guard's
--- warnings (in the keeper's log) are passed to `warn` as they come.
---@param s table the local session record
---@param child? czctl.Process
---@param warn? fun(line: string)
---@return string reason
---@return string|integer|nil detail
function M.hold(s, child, warn)
  local log_path = session.path(s.id, ".log")
  local seen = #(require("czctl.sys").read_file(log_path) or "")
  while true do
    if child then
      local code, why = child:await(M.HOLD_CHECK_INTERVAL)
      if code then return "exited", code end
      if why == "interrupted" then return "signal" end
      if why ~= "timeout" then return "exited", 1 end -- cannot happen for our own child
    elseif signal.wait(M.HOLD_CHECK_INTERVAL) then
      return "signal"
    end
    if warn then
      local data = require("czctl.sys").read_file(log_path) or ""
      if #data > seen then
        for line in data:sub(seen + 1):gmatch("[^\n]+") do
          local text = line:match("^%S+ warning: (.*)$") or line:match("^%S+ repaired (.*)$")
          if text then warn(text) end
        end
        seen = #data
      end
    end
    -- closed elsewhere first: closing also stops the keeper, which is then no tunnel problem
    if not session.load(s.id) then return "closed" end
    local problem, kind = session.keeper_problem(s)
    if problem then return kind or "tunnel", problem end
  end
end

-- How a holder ends: print why, close what is left, and fail when it was
-- not the user's choice.
local function end_held(ctx, s, why, detail)
  if why == "closed" then ctx.out:info("session %s was closed by another command", s.id); return 0 end
  signal.clear()
  if why == "tunnel" or why == "ended" then ctx.out:info("Closing session %s", s.id) end
  M.close(ctx, s)
  if why == "tunnel" then intercept.raise("the session ended because the tunnel stopped: " .. tostring(detail)) end
  if why == "ended" then intercept.raise("the session ended: " .. tostring(detail)) end
  return nil
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

-- `-- CMD`: the environment names CMD finds the session's facts under
-- (documented in docs/ci.md); any of them inherited from an outer czctl is
-- removed, so an unset one (CZCTL_HEADER with --all) is really unset.
M.COMMAND_ENV = { "CZCTL_SESSION", "CZCTL_SERVICE", "CZCTL_NAMESPACE", "CZCTL_SERVICE_PORT", "CZCTL_SERVICE_URL",
                  "CZCTL_CLUSTER_IP", "CZCTL_RULE", "CZCTL_HEADER", "CZCTL_HEADER_NAME", "CZCTL_HEADER_VALUE",
                  "CZCTL_LOCAL_PORT", "CZCTL_TUNNEL", "CZCTL_TUNNEL_URL" }

--- The environment of `-- CMD`: ours (or `base`), plus the session's facts.
---@param facts czctl.intercept.Session
---@param base? table<string, string> default: this process's environment
---@return table<string, string>
function M.command_env(facts, base)
  local env = util.deep_copy(base or csys.environ())
  for _, name in ipairs(M.COMMAND_ENV) do env[name] = nil end
  local header_name, header_value
  if facts.header then header_name, header_value = facts.header:match("^([^:]+):%s*(.-)%s*$") end
  local function num(n) return n and tostring(math.tointeger(n) or n) end
  local set = {
    CZCTL_SESSION = facts.id, CZCTL_SERVICE = facts.service, CZCTL_NAMESPACE = facts.namespace,
    CZCTL_SERVICE_PORT = num(facts.port),
    CZCTL_SERVICE_URL = string.format("http://%s.%s.svc.cluster.local:%s", facts.service, facts.namespace,
                                      num(facts.port)),
    CZCTL_CLUSTER_IP = facts.clusterIP, CZCTL_RULE = facts.rule,
    CZCTL_HEADER = facts.header, CZCTL_HEADER_NAME = header_name, CZCTL_HEADER_VALUE = header_value,
    CZCTL_LOCAL_PORT = num(facts.localPort), CZCTL_TUNNEL = facts.tunnel, CZCTL_TUNNEL_URL = facts.tunnelUrl,
  }
  for k, v in pairs(set) do env[k] = v end
  return env
end

-- Stop CMD after a signal came to czctl: the signal (and any that follow)
-- goes to CMD's process group, which gets `grace` seconds to exit and then
-- SIGKILL. Returns CMD's exit code.
local function stop_command(ctx, child, sig, grace)
  local clock = csys.now
  local deadline = clock() + grace
  while true do
    if sig then
      ctx.out:event("command", { status = "signalled", signal = sig },
                    string.format("passing %s to the command (%gs to exit)", sig, grace))
      child:kill(sig)
      signal.clear()
    end
    local code, why = child:await(math.max(0, deadline - clock()))
    if code then return code end
    if why == "interrupted" then
      sig = signal.pending() -- another one (the runner's SIGTERM after its SIGINT): passed on too
    else
      ctx.out:event("command", { status = "killed", signal = "SIGKILL" },
                    string.format("the command did not exit within %gs: SIGKILL", grace))
      child:kill("KILL")
      return child:await(5) or 137
    end
  end
end

-- Run `-- CMD` for a session set up in this process, hold the session for
-- as long as CMD runs, then close it. Exit: CMD's code; 128+N when a signal
-- N came to czctl (passed on to CMD); 1 when czctl failed (the close, the
-- tunnel, the session closed by another command: CMD is stopped first).
local function run_command(ctx, facts, command, grace)
  ctx.undo:discard() -- from here on the session is closed as a whole, from the cluster
  local s = assert(session.load(facts.id), "the session file disappeared")
  local process = require "czctl.process"
  local started = csys.now()
  ctx.out:event("command", { status = "started", argv = setmetatable(util.deep_copy(command), util.array_mt) },
                "Running " .. util.shell_join(command))
  -- Its own process group (czctl passes signals to all of it), the terminal
  -- when czctl has it (Ctrl-C then reaches CMD alone, as in a shell), and
  -- SIGTERM if czctl dies, even by SIGKILL, so it never runs unattended.
  local child, err = process.spawn(command, { env = M.command_env(facts), stdin = "inherit", stdout = "inherit",
                                              stderr = "inherit", foreground = true,
                                              parent_death_signal = "TERM" })
  local code, why, detail, first_signal
  if not child and err == "interrupted" then
    -- a signal came between the setup and the start: CMD never ran
    first_signal = signal.pending()
    code = signal.exit_code(first_signal)
  elseif not child then
    code, detail = tostring(err):find("command not found", 1, true) and 127 or 126, err
  else
    why, detail = M.hold(s, child, function(line) ctx.out:warn("%s", line) end)
    if why == "exited" then
      code = detail
    elseif why == "signal" then
      first_signal = signal.pending()
      code = stop_command(ctx, child, first_signal, grace)
    else
      -- the session ended under CMD: it would go on testing the cluster's version
      ctx.out:event("command", { status = "stopped", reason = why }, "stopping the command: the session ended")
      child:kill("TERM")
      code = child:await(grace)
      if not code then child:kill("KILL"); code = child:await(5) or 137 end
    end
    child:close()
  end
  if child then
    local seconds = csys.now() - started
    ctx.out:event("command", { status = "exited", code = code, ms = math.floor(seconds * 1000 + 0.5) },
                  string.format("The command exited with code %d (%s)", code, util.format_duration(seconds)))
  end
  signal.clear()
  if why ~= "closed" then
    local ok, close_err = pcall(M.close, ctx, s)
    if not ok then intercept.raise(string.format("%s (the command exited with %d)", tostring(close_err), code)) end
  end
  if why == "closed" then intercept.raise(string.format("session %s was closed by another command while "
                                                        .. "the command ran (it exited with %d)", s.id, code)) end
  if why == "tunnel" then
    intercept.raise(string.format("the session ended because the tunnel stopped: %s (the command exited with %d)",
                                  tostring(detail), code))
  end
  if not child and not first_signal then
    fail_with(code, string.format("cannot run the command: %s", tostring(detail)))
  end
  return first_signal and signal.exit_code(first_signal) or code, code
end

-- Hold a session set up in this process, then close it.
local function hold_here(ctx, facts)
  ctx.undo:discard() -- from here on the session is closed as a whole, from the cluster
  local s = session.load(facts.id)
  if not s then return 0 end
  local why, detail = M.hold(s, nil, function(line) ctx.out:warn("%s", line) end)
  return end_held(ctx, s, why, detail) or 0
end

--- The intercept, start to end, in this process: check the options, run
--- the steps, report the result; with opts.wait, hold the session until a
--- signal and close it; with opts.command, run it and close the session
--- when it exits (the exit code is the command's, 128+N after signal N, 127
--- when it is not found, before anything is done). Returns the exit code.
---@param ctx table
---@param opts czctl.intercept.Options
---@param steps (string|function)[]
---@return integer
function M.start(ctx, opts, steps)
  if opts.command then
    -- refused before anything is done, with the code a shell would give
    local found, find_err = require("czctl.process").find(opts.command[1])
    if not found then fail_with(127, string.format("cannot run the command: %s; nothing was changed", find_err)) end
    -- held by this process while the command runs (the keeper and
    -- `session close` see its holder die, even by SIGKILL)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.wait = true
    opts = o
  end
  local run = M.new(ctx, opts)
  local facts = run:run_steps(steps)
  if facts.status == "existing" and opts.command then
    fail(string.format("Service %s/%s is already intercepted by session %s of this machine; `-- CMD` needs a "
                       .. "session of its own, which it closes: close that one first (%s), or add -c",
                       facts.namespace, facts.service, facts.id, facts.closeCommand))
  end
  if opts.command then
    signal.check() -- last chance to roll back: from here on the session is closed as a whole
    -- CMD's output is the command's own: czctl's result goes to stderr
    ctx.out:results_on_stderr()
    facts.command = { argv = setmetatable(util.deep_copy(opts.command), util.array_mt) }
    if ctx.out.mode == "normal" then M.report(ctx, facts) end
    local exit, code = run_command(ctx, facts, opts.command, opts.grace or M.COMMAND_GRACE)
    if ctx.out.mode ~= "normal" then
      facts.command.exitCode, facts.status = code, "closed"
      M.report(ctx, facts)
    end
    return exit
  end
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
  if not stopped then why, detail = M.hold(s, nil, function(line) ctx.out:warn("%s", line) end) end
  return end_held(ctx, s, why, detail) or (stop_signal and signal.exit_code(stop_signal)) or 0
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
      help = "tunnel provider: ngrok, direct, kube, or czctl/tunnel/NAME.lua on package.path" },
    { name = "protocol", type = "string", default = "auto", choices = protocol.CHOICES,
      help = "what the port speaks (auto: from its appProtocol, name or port number; grpc is h2c)" },
    { name = "tunnelHost", type = "string",
      help = "with --tunnel direct: the address of this machine the cluster reaches (default: detected)" },
    { name = "relayImage", type = "string",
      help = "with --tunnel kube: the relay's image (default " .. require("czctl.tunnel.kube").DEFAULT_IMAGE .. ")" },
    { name = "tunnelCa", type = "string",
      help = "a PEM file: the CA the proxy trusts for the tunnel's certificate (default: $CZCTL_TUNNEL_CA, "
             .. "else the proxy image's CA bundle)" },
    { name = "image", type = "string", default = intercept.DEFAULT_IMAGE, help = "the proxy image" },
    { name = "grace", type = "number", default = M.COMMAND_GRACE,
      help = "with -- CMD: seconds CMD has to exit after czctl passes it SIGINT/SIGTERM, then SIGKILL" },
    { name = "envFile", type = "string", complete = "files",
      help = "also write the environment of the Service's app to this file (mode 0600; see czctl service env)" },
    -- Internal: the setup child of a --wait holder (see hold_from_command_line).
    { name = "heldBy", type = "integer", hidden = true, help = "(internal) pid of the --wait holder" },
    { name = "sessionId", type = "string", hidden = true, help = "(internal) the session id the holder chose" },
  }, flagsets.kube{ namespace_help = "the namespace of the Service (default: the kubeconfig context's, else default)" },
     flagsets.output())
end

-- --clean: close this machine's sessions on the Service (found in the
-- cluster by their owner, and by local records); returns them. Others'
-- sessions are left alone.
local function close_sessions_on(ctx, namespace, name)
  local client, closed = ctx.kube(), {}
  ctx.out:step(string.format("Close your sessions on %s/%s", namespace, name), function()
    local svc, gerr = intercept.get_service(client, namespace, name)
    if not svc then fail(gerr) end
    local seen = {}
    for _, e in ipairs(shared.state(svc).sessions) do
      if session.is_mine(e.owner) then
        seen[e.id] = true
        session.close(client, { id = e.id, namespace = namespace, service = name })
        closed[#closed + 1] = { id = e.id, namespace = namespace, service = name }
      end
    end
    for _, mine in ipairs(session.list_local()) do
      if mine.namespace == namespace and mine.service == name and not seen[mine.id] then
        session.close(client, { id = mine.id, namespace = namespace, service = name, local_session = mine })
        closed[#closed + 1] = { id = mine.id, namespace = namespace, service = name }
      end
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
    relay_image = f.relayImage,
    protocol = f.protocol, tunnel_ca = ca,
    image = f.image, wait = f.wait, kubeconfig = f.kubeconfig, context = f.context,
    held_by = f.heldBy, session_id = f.sessionId, env_file = f.envFile,
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
    usage = "SERVICE [flags] [-- CMD [ARGS...]]",
    command = { help = "run CMD with the session's facts in CZCTL_* variables; close the session when it exits" },
    description = spec.description or [[
Requests to SERVICE that carry the header (default X-C6O-INTERCEPT:yes), or
all requests with --all, go through a tunnel to --localPort on this machine;
every other request reaches the in-cluster version. Without --wait the
command returns once the intercept is live (close it with `czctl session
close`); with --wait it stays and cleans up on Ctrl-C or SIGTERM (exit 0).
With -- CMD it runs CMD once the intercept is live and closes the session
when CMD exits, exiting with CMD's code (SIGINT/SIGTERM are passed to CMD;
czctl's own failures: 1, usage 2, CMD not found 127; see docs/ci.md).
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
    if ctx.command_argv then
      if f.wait then ctx.usage_error("give --wait or -- CMD, not both (with CMD the session lasts while it runs)") end
      if f.grace < 0 then ctx.usage_error("--grace must be a number of seconds >= 0") end
      opts.command, opts.grace = ctx.command_argv, f.grace
    end
    -- --wait: this process only holds the session; the setup runs as a child.
    if f.wait and not f.heldBy then return M.hold_from_command_line(ctx) end
    -- --clean: close this machine's sessions on this Service, then go on (or stop).
    if f.clean then
      -- -n, else the kubeconfig context's namespace, else default (as kubectl)
      opts.namespace = opts.namespace or ctx.kube().namespace or "default"
      local given = ctx.sources
      local alone = not (given.localPort == "flag" or given.remotePort == "flag" or given.header == "flag" or f.all
                         or f.wait or ctx.command_argv)
      M.check_access(ctx, opts, alone and { "session close" }
                                or opts.env_file and { "service intercept", "service env" } or { "service intercept" })
      opts.access_checked = not alone
      local closed = close_sessions_on(ctx, opts.namespace, opts.service)
      if alone then
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
