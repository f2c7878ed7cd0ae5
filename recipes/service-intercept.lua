-- service-intercept: send the requests of a Kubernetes Service that carry a
-- header (or all of them) to a port on this machine, while every other
-- request keeps reaching the in-cluster version.
--
-- This file is the workflow, step by step; how each step is done lives in
-- lua/czctl/intercept.lua (cluster objects) and lua/czctl/session.lua
-- (sessions, keeper, cleanup). Every change is registered with ctx.undo the
-- moment before it is made, so an error or a signal at any point rolls back.
--
-- Choices worth knowing (see docs/lua-api.md, "Intercept sessions"):
--   * --localPort defaults to the intercepted Service port's number.
--   * With --wait, SIGINT/SIGTERM end the session normally: cleanup, exit 0
--     (exit 1 when cleanup failed or the tunnel died). The waiting process
--     delegates setup and cleanup to child commands (see wait_in_holder).
--   * Without --wait the tunnel is held by a detached keeper
--     (`czctl session keep ID`); for the direct tunnel the keeper runs the
--     landing that forwards to the local port.
local intercept = require "czctl.intercept"
local session = require "czctl.session"
local proxy = require "czctl.proxy"
local signal = require "czctl.signal"
local util = require "czctl.util"
local sys = require "czctl.core.sys"

local PROXY_READY_TIMEOUT = tonumber(os.getenv("CZCTL_PROXY_TIMEOUT") or "") or 120
local TUNNEL_TIMEOUT = 30
-- After the patch, until the Service's Endpoints list only the proxy pods.
local ROUTE_TIMEOUT = 30

-- Raise a failure from the cluster or the world as a one-line error; a
-- pending signal wins, so the runner reports the interrupt instead.
local function fail(err)
  signal.check()
  intercept.raise(err)
end

-- Whether the user gave a flag on the command line (not its default).
local function given(ctx, name)
  return ctx.sources[name] == "flag"
end

local function curl_example(facts, rule)
  local example = intercept.example_request(rule)
  if not example then return nil end
  local parts = { "curl" }
  for _, h in ipairs(example.headers) do parts[#parts + 1] = "-H " .. util.shell_quote(h) end
  parts[#parts + 1] = util.shell_quote(string.format("http://%s.%s.svc.cluster.local:%d%s", facts.service,
                                                     facts.namespace, facts.port, example.path))
  return table.concat(parts, " ")
end

local function render_result(r)
  if r.status == "closed" then
    if #r.closed == 0 then return string.format("No session on Service %s/%s to close.", r.namespace, r.service) end
    return string.format("Closed session %s on Service %s/%s.", table.concat(r.closed, ", "), r.namespace,
                         r.service)
  end
  local lines = {}
  local function add(k, v) if v then lines[#lines + 1] = string.format("%-10s %s", k, v) end end
  if r.status == "existing" then lines[#lines + 1] = "This machine already intercepts this Service:" end
  add("Session", r.session)
  add("Service", string.format("%s/%s port %d -> localhost:%d", r.namespace, r.service, r.port, r.local_port))
  add("Route", r.all and "all requests" or r.header and ("requests with header " .. r.header) or r.rule)
  add("Tunnel", r.tunnel_url and (r.tunnel_url .. " (" .. r.tunnel .. ")"))
  add("Inspector", r.inspector)
  add("Try", r.curl and (r.curl .. "   # from inside the cluster"))
  if r.wait then
    add("Stop", "Ctrl-C (or SIGTERM) ends the session and restores the Service")
  else
    add("Close", r.close_command)
  end
  return table.concat(lines, "\n")
end

-- Create an object with its undo registered first. A refusal by the API
-- server (4xx) means there is nothing to undo (AlreadyExists: not ours to
-- delete). If the answer was lost (a signal, a dropped connection) the
-- object may exist, or may still be created by the request in flight, so
-- the undo deletes it and then watches a few seconds for a late arrival.
local LATE_CREATE_GRACE = 3
local function create(ctx, client, obj, undo)
  local state = "creating"
  local kind, name, ns = obj.kind, obj.metadata.name, obj.metadata.namespace
  ctx.undo:defer(string.format("delete %s %s", kind, name), function()
    if state == "refused" then return end
    undo()
    if state == "unknown" then
      local late = client:wait_for(kind, name, function(o) return o ~= nil end, LATE_CREATE_GRACE,
                                   { namespace = ns })
      if late and late.metadata then undo() end
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

-- Close every session holding the Service (for --clean); returns their ids.
local function close_sessions_on(ctx, opts)
  local client, ns, name = ctx.kube(), opts.namespace, opts.service
  local closed = {}
  ctx.out:step(string.format("Close existing session on %s/%s", ns, name), function()
    local sessions, err = session.discover(client, { namespace = ns })
    if not sessions then fail(err) end
    for _, s in ipairs(sessions) do
      if s.service == name then
        session.close(client, { id = s.id, namespace = ns, service = name, service_object = s.service_object })
        closed[#closed + 1] = s.id
      end
    end
    local mine = session.find_local(ns, name)
    if mine and #closed == 0 then
      session.close(client, { id = mine.id, namespace = ns, service = name, local_session = mine })
      closed[#closed + 1] = mine.id
    end
    -- Nothing to close: a mistyped Service or namespace is an error, not "nothing to do".
    if #closed == 0 then
      local svc, gerr = intercept.get_service(client, ns, name)
      if not svc then fail(gerr) end
    end
  end)
  return closed
end

--- The intercept workflow. opts: service, namespace, remote_port (number or
--- name), local_port, rule (a czctl.proxy rule), header (for display), tunnel,
--- tunnel_host, image, wait, kubeconfig, context. Returns the exit code.
---@param ctx table the recipe context (out, undo, kube)
---@param opts table
---@return integer
local function start(ctx, opts)
  local out = ctx.out
  local name, ns, rule = opts.service, opts.namespace or "default", opts.rule
  local all = rule.all == true
  local rule_text = proxy.describe(rule)
  local provider, provider_err = session.tunnel_provider(opts.tunnel or "ngrok")
  if not provider then return ctx.usage_error(provider_err) end
  opts.tunnel = opts.tunnel or "ngrok"
  opts.image = opts.image or intercept.DEFAULT_IMAGE
  local local_port = opts.local_port
  local client = ctx.kube()

  -- 1. The Service and the port to intercept.
  local svc, port_index = out:step(string.format("Resolve Service %s/%s", ns, name), function()
    local svc, err = intercept.get_service(client, ns, name)
    if not svc then fail(err) end
    local why = intercept.not_interceptable(svc)
    if why then fail(why) end
    local index, port_err = intercept.choose_port(svc, opts.remote_port)
    if not index then ctx.usage_error(port_err) end
    return svc, index
  end)
  local existing = intercept.record(svc)
  if existing then
    local mine = session.load(existing.session)
    local tunnel_name = opts.tunnel
    if mine and (existing.rule ~= rule_text or (local_port and local_port ~= mine.local_port)
                 or (mine.tunnel and mine.tunnel.provider ~= tunnel_name)) then
      fail(string.format("Service %s/%s is already intercepted by session %s (%s -> localhost:%s, tunnel %s), "
                         .. "started here with other flags; to replace it, run again with -c, or close it with: %s",
                         ns, name, existing.session, existing.rule or "?", tostring(math.tointeger(mine.local_port) or mine.local_port),
                         tostring(mine.tunnel and mine.tunnel.provider), session.close_command(existing.session, ns)))
    end
    if mine then
      local tunnel = session.tunnel_status(mine.id) or mine.tunnel or {}
      out:result({ status = "existing", session = mine.id, service = name, namespace = ns, port = existing.port,
                   local_port = mine.local_port, header = opts.header, all = all,
                   tunnel = mine.tunnel and mine.tunnel.provider, tunnel_url = tunnel.url,
                   inspector = tunnel.inspector, close_command = session.close_command(mine.id, ns) },
                 render_result)
      return 0
    end
    fail(string.format("Service %s/%s is already intercepted by session %s (%s); close it with: %s", ns, name,
                       existing.session, existing.rule or existing.header or "?",
                       session.close_command(existing.session, ns)))
  end
  local service_port = svc.spec.ports[port_index]
  local pod_port, pod_port_warning = intercept.resolve_target_port(client, svc, service_port)
  if pod_port_warning then out:warn("%s", pod_port_warning) end
  local manager = intercept.managed_by(svc)
  if manager then
    out:warn("Service %s looks managed by %s, which may revert czctl's change while the session runs", name,
             manager)
  end
  local port_number = math.tointeger(service_port.port)
  local_port = local_port or port_number
  -- Where the cluster reaches this machine (direct: detected from the Nodes).
  if not opts.tunnel_host and provider.detect_host then
    local host, host_err = provider.detect_host(client)
    if not host then fail(host_err) end
    opts.tunnel_host = host
  end

  -- 2. The session: a local file first, so a crash at any later point leaves a trace.
  -- Set up for a --wait holder (see wait_in_holder): its session id, and it
  -- is the process the session (and the keeper) lives and dies with.
  local holder_pid = math.tointeger(tonumber(os.getenv("CZCTL_WAIT_HOLDER") or ""))
  local id = holder_pid and os.getenv("CZCTL_SESSION_ID") or session.new_id()
  local names = intercept.names(id)
  local info = client:info() or {}
  local s = {
    id = id, service = name, namespace = ns, port = port_number, pod_port = pod_port, local_port = local_port,
    header = opts.header, all = all, rule = rule_text,
    kubeconfig = opts.kubeconfig or os.getenv("KUBECONFIG"), context = opts.context or info.context,
    server = info.server,
    tunnel = { provider = opts.tunnel }, tunnel_host = opts.tunnel_host, objects = names, started = sys.time(),
    parent_pid = holder_pid or sys.getpid(), state = "starting", wait = (opts.wait or holder_pid ~= nil),
  }
  -- Removed last, and only when every other undo step worked: otherwise it
  -- is what lets `czctl session close` find and finish the session.
  ctx.undo:defer("remove the local session file", function() session.remove(id) end, { only_if_clean = true })
  ctx.undo:set_remedy(session.close_command(id, ns))
  session.save(s)

  -- 3. The tunnel, first, so its URL is known for the proxy config.
  local tunnel = out:step(string.format("Start %s tunnel to localhost:%d", opts.tunnel, local_port), function()
    -- A tunnel process is owned by a keeper, with or without --wait: it must
    -- outlive this command without --wait, and must not outlive it (even
    -- killed with SIGKILL) with --wait.
    local keeper = provider.needs_process ~= false
    if keeper then
      -- The keeper starts and owns the tunnel so it outlives this command.
      ctx.undo:defer("stop the session keeper", function() session.stop_processes(s) end)
      local pid, err = session.start_keeper(s)
      if not pid then fail("cannot start the session keeper: " .. tostring(err)) end
      s.keeper_pid = pid
      session.save(s)
      local facts, terr = session.wait_keeper_tunnel(s, TUNNEL_TIMEOUT)
      if not facts then fail(terr) end
      return facts
    end
    local handle, err = provider.start{ local_port = local_port, host = opts.tunnel_host }
    if not handle then fail(err) end
    ctx.undo:defer("stop the tunnel", function() handle:stop() end)
    local facts = session.tunnel_facts(handle, opts.tunnel)
    facts.handle = handle
    return facts
  end)
  s.tunnel = { provider = opts.tunnel, url = tunnel.url, inspector = tunnel.inspector, pid = tunnel.pid }
  session.save(s)
  if opts.tunnel == "direct" and not require("czctl.core.net").probe("127.0.0.1", local_port, 0.5) then
    out:warn("nothing listens on 127.0.0.1:%d yet; intercepted requests fail until your server runs there",
             local_port)
  end

  -- 4. The proxy's objects, each undo registered before it is created.
  local copy = out:step("Create Service " .. names.service .. " (route to the original)", function()
    return create(ctx, client, intercept.copy_service(svc, id), function()
      local ok, err = intercept.delete_if_present(client, "Service", names.service, ns)
      if not ok then fail(err) end
    end)
  end)
  local proxy_ports = intercept.proxy_ports(svc, port_index, copy.spec.clusterIP)
  local nginx_conf, render_err = proxy.render{ ports = util.deep_copy(proxy_ports), rule = rule,
                                               tunnel_upstream = tunnel.upstream, session = id,
                                               health_port = intercept.HEALTH_PORT }
  if not nginx_conf then fail("cannot render the proxy configuration: " .. tostring(render_err)) end

  out:step("Create ConfigMap " .. names.configmap, function()
    return create(ctx, client, intercept.config_map(ns, id, nginx_conf), function()
      local ok, err = intercept.delete_if_present(client, "ConfigMap", names.configmap, ns)
      if not ok then fail(err) end
    end)
  end)
  local created_deployment = out:step("Create proxy Deployment " .. names.deployment, function()
    local deployment = intercept.deployment{ namespace = ns, id = id, image = opts.image, ports = proxy_ports,
                                             service = name }
    return create(ctx, client, deployment, function()
      session.delete_objects(client, ns, id, function(title, fn)
        if title:find("^Delete proxy Deployment") then fn() end
      end)
    end)
  end)

  -- 5. Wait for the proxy, by watch.
  out:step("Wait for the proxy to be ready", function()
    local d, err = intercept.wait_ready(client, ns, id, PROXY_READY_TIMEOUT, created_deployment)
    if not d then fail(err) end
  end)

  -- 6. Point the Service at the proxy: one request, guarded by resourceVersion,
  --    carrying the original selector and ports in an annotation.
  local patched_service, patch_state = nil, "patching"
  ctx.undo:defer("restore Service " .. name, function()
    local ok, err = session.restore_service(client, ns, name, id, patched_service)
    if ok == nil then fail(err) end
    if patch_state == "unknown" and not ok then
      -- the patch's answer was lost: it may still land; watch briefly for it
      local late = client:wait_for("Service", name, function(o)
        local r = o and intercept.record(o)
        return r ~= nil and r.session == id
      end, LATE_CREATE_GRACE, { namespace = ns })
      if late and late.metadata then
        ok, err = session.restore_service(client, ns, name, id, late)
        if ok == nil then fail(err) end
      end
    end
  end)
  patched_service = out:step(string.format("Route Service %s through the proxy", name), function()
    local patched, err = intercept.guarded_patch(client, ns, name, svc, function(current)
      local other = intercept.record(current)
      if other then
        fail(string.format("Service %s/%s was intercepted by session %s meanwhile; close it with: %s", ns, name,
                           other.session, session.close_command(other.session, ns)))
      end
      if #current.spec.ports ~= #svc.spec.ports or intercept.describe_ports(current) ~= intercept.describe_ports(svc) then
        fail(string.format("the ports of Service %s changed during setup; run the command again", name))
      end
      return intercept.intercept_patch(current, id, proxy_ports, {
        header = opts.header, all = all, rule = rule_text, port = port_number,
        started = session.now_rfc3339(), host = sys.hostname(), tunnel = opts.tunnel,
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

  -- 7. Wait, by watch, until the Service's Endpoints list only the proxy, so
  --    the first request after this command returns is already routed.
  out:step(string.format("Wait for Service %s to route through the proxy", name), function()
    local ep, err = intercept.wait_routed(client, ns, name, id, ROUTE_TIMEOUT)
    if not ep then fail(err) end
  end)

  s.state = "active"
  session.save(s)
  local facts = {
    status = "intercepting", session = id, service = name, namespace = ns, port = port_number,
    pod_port = pod_port, local_port = local_port, header = opts.header, all = all,
    rule = rule_text, tunnel = opts.tunnel, tunnel_url = tunnel.url, inspector = tunnel.inspector,
    cluster_ip = svc.spec.clusterIP, proxy = names, wait = s.wait,
    close_command = session.close_command(id, ns),
  }
  facts.curl = curl_example(facts, rule)

  if not opts.wait then
    signal.check() -- last chance to roll back: after discard the session stays
    ctx.undo:discard() -- the session now lives in the cluster and in the keeper
    out:result(facts, render_result)
    return 0
  end

  -- --wait: stay until a signal or the tunnel dies, then undo everything.
  out:result(facts, render_result)
  local tunnel_died
  while true do
    local sig = signal.wait(2)
    if sig then break end
    -- Only a tunnel process can die; a direct tunnel's "unhealthy" just means
    -- the local server is not running right now, which a developer restarts.
    tunnel_died = session.keeper_problem(s)
    if tunnel_died then break end
  end
  signal.clear()
  -- the reason is printed once, as the final error
  if tunnel_died then out:info("Closing session %s", id) end
  local _, failed = ctx.undo:run{
    on_step = function(title, fn) return out:step(title:sub(1, 1):upper() .. title:sub(2), fn) end,
    on_error = function(title, err) out:error("%s failed: %s", title, tostring(err)) end,
  }
  if #failed > 0 then
    intercept.raise(string.format("cleanup of session %s failed; finish it with: %s", id, session.close_command(id, ns)))
  end
  if tunnel_died then intercept.raise("the session ended because the tunnel stopped: " .. tostring(tunnel_died)) end
  return 0
end

-- --wait from the command line: this process only waits. The setup runs in
-- a child `czctl service intercept` (same flags, without --wait) and the
-- cleanup in a child `czctl session close`, so the process that stays for
-- hours never loads the Kubernetes client and stays small (a few MiB). The
-- session and its keeper are tied to this process (CZCTL_WAIT_HOLDER): if it
-- is killed, even by SIGKILL, the tunnel goes too and `czctl session close`
-- finishes the job. Exit: 0 after a signal and a clean cleanup; 1 when the
-- cleanup failed or the tunnel died; the child's code when setup failed.
local function wait_in_holder(ctx, argv, opts)
  local process = require "czctl.process"
  local out = ctx.out
  local id = session.new_id()
  local setup, err = process.spawn(argv, { stdin = "null", stdout = "inherit", stderr = "inherit",
                                           env_extra = { CZCTL_WAIT_HOLDER = tostring(sys.getpid()),
                                                         CZCTL_SESSION_ID = id } })
  if not setup then intercept.raise("cannot run the setup: " .. tostring(err)) end
  -- A signal during setup is not passed on: from a terminal (Ctrl-C) it has
  -- reached the child too, which rolls back and exits 130; sent to this
  -- process alone, the setup finishes and is cleaned up right away. Passing
  -- it on could hit the child's rollback a second time.
  local code, stop_signal
  repeat
    local why
    code, why = setup:wait()
    if not code then
      if why ~= "interrupted" then intercept.raise("setup: " .. tostring(why)) end
      stop_signal = stop_signal or signal.pending()
      signal.clear()
    end
  until code
  setup:close()
  local s = session.load(id)
  if code ~= 0 or not s then return code end -- failed (already reported), or an existing session reported

  local tunnel_died
  while not stop_signal do
    if signal.wait(2) then break end
    tunnel_died = session.keeper_problem(s)
    if tunnel_died then break end
    if not session.load(id) then
      out:info("session %s was closed by another command", id)
      return 0
    end
  end
  signal.clear()
  -- From here on this process only cleans up: further signals are recorded
  -- but interrupt nothing (no "interrupted" spawn or wait), and are
  -- forgotten at the end so they do not change the exit code.
  sys.shield_signals(true)
  local _ <close> = setmetatable({}, { __close = function() signal.clear(); sys.shield_signals(false) end })
  -- the reason is printed once, as the final error
  if tunnel_died then out:info("Closing session %s", id) end
  local close_argv = { sys.exe(), "session", "close", id, "-n", s.namespace }
  if opts.kubeconfig and opts.kubeconfig ~= os.getenv("KUBECONFIG") then
    close_argv[#close_argv + 1] = "--kubeconfig"; close_argv[#close_argv + 1] = opts.kubeconfig
  end
  if opts.context then close_argv[#close_argv + 1] = "--context"; close_argv[#close_argv + 1] = opts.context end
  if out.mode ~= "normal" then close_argv[#close_argv + 1] = "-q" end
  local cleanup
  cleanup, err = process.spawn(close_argv, { stdin = "null", stdout = out.mode == "normal" and "inherit" or "null",
                                             stderr = "inherit" })
  if not cleanup then intercept.raise("cannot run the cleanup: " .. tostring(err)) end
  -- A second Ctrl-C reaches the child too: it finishes under its signal
  -- shield and exits 128+N; done is when the session file is gone. Only a
  -- child killed before it could set up its handlers leaves the file: rerun.
  local cleanup_code
  for attempt = 1, 3 do
    local why
    repeat -- shielded: waits for the child, which has its own timeouts
      cleanup_code, why = cleanup:wait()
    until cleanup_code or why ~= "interrupted"
    cleanup:close()
    if not cleanup_code then out:error("cleanup: %s", tostring(why)); cleanup_code = 1 end
    if cleanup_code ~= 0 and not session.load(id) then cleanup_code = 0 end
    if attempt == 3 or not (cleanup_code == 129 or cleanup_code == 130 or cleanup_code == 143) then break end
    cleanup = process.spawn(close_argv, { stdin = "null", stdout = out.mode == "normal" and "inherit" or "null",
                                          stderr = "inherit" })
    if not cleanup then break end
  end
  if cleanup_code ~= 0 then
    intercept.raise(string.format("cleanup of session %s failed; finish it with: %s", id,
                                  session.close_command(id, s.namespace)))
  end
  if tunnel_died then intercept.raise("the session ended because the tunnel stopped: " .. tostring(tunnel_died)) end
  return stop_signal and signal.exit_code(stop_signal) or 0
end

-- The command line of the setup child: the same flags without --wait
-- (--clean is passed on: the child closes, then intercepts).
local function setup_argv(ctx)
  local f = ctx.flags
  local argv = { sys.exe(), "service", "intercept", ctx.args.service, "--namespace", f.namespace,
                 "--header", f.header, "--tunnel", f.tunnel, "--output", f.output, "--image", f.image }
  local function add(...) for _, a in ipairs({ ... }) do argv[#argv + 1] = a end end
  if f.tunnelHost then add("--tunnel-host", f.tunnelHost) end
  if f.remotePort then add("--remote-port", tostring(f.remotePort)) end
  if f.localPort then add("--local-port", tostring(math.tointeger(f.localPort) or f.localPort)) end
  if f.kubeconfig and f.kubeconfig ~= os.getenv("KUBECONFIG") then add("--kubeconfig", f.kubeconfig) end
  if f.context then add("--context", f.context) end
  if f.all then add("--all") end
  if f.clean then add("--clean") end
  if f.quiet then add("--quiet") end
  return argv
end

return {
  summary = "Intercept traffic to a Service and send it to this machine",
  usage = "SERVICE [flags]",
  description = [[
Requests to SERVICE that carry the header (default X-C6O-INTERCEPT:yes), or
all requests with --all, go through a tunnel to --localPort on this machine;
every other request reaches the in-cluster version. Without --wait the
command returns once the intercept is live (close it with `czctl session
close`); with --wait it stays and cleans up on Ctrl-C or SIGTERM (exit 0).
--localPort defaults to the intercepted Service port's number.]],
  args = { { name = "service", help = "the name of the Service to intercept", required = true } },
  flags = {
    { name = "namespace", short = "n", type = "string", default = "default",
      help = "the namespace of the Service" },
    { name = "remotePort", short = "r", type = "string",
      help = "the Service port to intercept (number or name); optional when it has one port" },
    { name = "localPort", short = "l", type = "number",
      help = "the local port to send intercepted traffic to (default: the Service port's number)" },
    { name = "header", short = "x", type = "string", default = "X-C6O-INTERCEPT:yes",
      help = "intercept requests carrying this header, as name:value" },
    { name = "kubeconfig", short = "k", type = "string", env = "KUBECONFIG",
      help = "path to a kubeconfig file for cluster credentials" },
    { name = "all", short = "a", type = "boolean", help = "intercept all traffic, whatever the headers" },
    { name = "clean", short = "c", type = "boolean",
      help = "close the existing session on this Service first (alone: just close it)" },
    { name = "quiet", short = "q", type = "boolean", help = "only display errors" },
    { name = "wait", short = "w", type = "boolean", help = "stay until SIGINT/SIGTERM, then clean up" },
    { name = "tunnel", type = "string", default = "ngrok", help = "tunnel provider: ngrok or direct" },
    { name = "tunnelHost", type = "string",
      help = "with --tunnel direct: the address of this machine the cluster reaches (default: detected)" },
    { name = "context", type = "string", help = "kubeconfig context to use" },
    { name = "output", short = "o", type = "string", default = "text", help = "output format: text or json" },
    { name = "image", type = "string", default = intercept.DEFAULT_IMAGE, help = "the proxy image" },
  },

  --- Build the workflow's options from the command line and run it.
  run = function(ctx)
    local f, out = ctx.flags, ctx.out
    if f.output ~= "text" and f.output ~= "json" then
      return ctx.usage_error("--output must be text or json")
    end
    local rule, rule_err = proxy.from_flags{ header = f.header, all = f.all }
    if not rule then return ctx.usage_error(rule_err) end
    local local_port = f.localPort
    if local_port ~= nil and (local_port ~= math.floor(local_port) or local_port < 1 or local_port > 65535) then
      return ctx.usage_error("--localPort must be a port number (1-65535)")
    end
    local opts = {
      service = ctx.args.service, namespace = f.namespace, remote_port = f.remotePort,
      local_port = local_port and math.tointeger(local_port), rule = rule,
      header = not f.all and f.header or nil, tunnel = f.tunnel, tunnel_host = f.tunnelHost,
      image = f.image, wait = f.wait, kubeconfig = f.kubeconfig, context = f.context,
    }

    -- --wait: this process only waits; setup and cleanup run as child commands.
    if f.wait and not os.getenv("CZCTL_WAIT_HOLDER") then return wait_in_holder(ctx, setup_argv(ctx), opts) end

    -- --clean: close whatever session holds this Service, then go on (or stop).
    if f.clean then
      local closed = close_sessions_on(ctx, opts)
      local anything_else = given(ctx, "localPort") or given(ctx, "remotePort") or given(ctx, "header")
        or f.all or f.wait or os.getenv("CZCTL_WAIT_HOLDER") ~= nil
      if not anything_else then
        out:result({ status = "closed", closed = closed, service = opts.service, namespace = opts.namespace },
                   render_result)
        return 0
      end
    end
    return start(ctx, opts)
  end,

  -- The workflow with options instead of flags, for scripts that build their
  -- own routing rule (see examples/team-routing.lua).
  start = start,
}
