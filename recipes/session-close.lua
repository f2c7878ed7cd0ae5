-- session-close: end intercept sessions and remove everything they changed.
--
-- What to undo is rebuilt from the cluster (the annotation on the
-- intercepted Service, the objects labelled with the session) plus the local
-- session file when there is one (its keeper and tunnel are stopped), so it
-- works after a crash, from another machine, and when run twice.
--
-- Which sessions: SESSION closes that one; --all closes every czctl session
-- in the namespace (-n, default: the context's namespace); --stale, every
-- session whose holder is gone (its heartbeat Lease is not renewed; -n, or
-- all namespaces); with none of these, the
-- sessions started on this machine are closed, and when this machine has
-- none, every session found in the namespace. Local session files count
-- only for the cluster being talked to (their recorded server URL); one the
-- cluster no longer knows, held by no local process, is stale and removed.
local session = require "czctl.session"
local intercept = require "czctl.intercept"
local signal = require "czctl.signal"
local kube = require "czctl.kube"
local util = require "czctl.util"
local flags = require "czctl.flags"
local sys = require "czctl.sys"
local heartbeat = require "czctl.session.heartbeat"

local function fail(err)
  signal.check()
  intercept.raise(err)
end

local function render(r)
  if #r.closed == 0 then return r.message or "No session to close." end
  local lines = {}
  for _, c in ipairs(r.closed) do
    if c.stale then
      lines[#lines + 1] = string.format("Removed the local record of session %s in %s (it was already closed in the cluster)",
                                        c.id, c.namespace)
    elseif c.forgotten then
      lines[#lines + 1] = string.format("Forgot the local record of session %s in %s (the cluster was not contacted)",
                                        c.id, c.namespace)
    else
      lines[#lines + 1] = string.format("Closed session %s in %s%s", c.id, c.namespace,
                                        c.restored and (" (Service " .. c.service .. " restored)") or "")
    end
  end
  return table.concat(lines, "\n")
end

return {
  summary = "Close intercept sessions and restore the Services they changed",
  usage = "[SESSION] [flags]",
  description = [[
Restores each Service exactly as it was (selector, ports, annotations) and
deletes the proxy Deployment, ConfigMap and Service copy, then stops the
local tunnel and keeper. What to undo is read from the cluster, so this
works after a crash, from another machine, and when run twice.
Which sessions: SESSION, that one; --all, every czctl session in the
namespace; neither, the sessions started on this machine, or, when there
are none, every session in the namespace (-n, default the context's).
Only local sessions of the cluster being talked to count; a local record
that cluster no longer knows is removed (and said so). When the cluster of
SESSION is gone, --forget discards its local record only. --stale closes
every session whose holder is gone (its heartbeat Lease has not been
renewed for a minute), in -n NAMESPACE or in all namespaces.]],
  args = { { name = "session", help = "the session id (see czctl session list)", complete = "sessions" } },
  flags = flags.join({
    { name = "all", short = "a", type = "boolean", help = "close every czctl session in the namespace" },
    { name = "stale", type = "boolean",
      help = "close the sessions whose holder is gone (their heartbeat Lease is not renewed), in -n or everywhere" },
    { name = "forget", type = "boolean",
      help = "with SESSION: only discard this machine's record of it (stop its tunnel, remove its files) "
             .. "without contacting the cluster, e.g. when that cluster is gone" },
  }, flags.kube{ namespace_help = "namespace (default: the context's)" }, flags.output()),
  run = function(ctx)
    -- Closing is cleanup that must finish: signals are recorded (exit 128+N
    -- afterwards) but interrupt none of its calls, which have their own timeouts.
    local _ <close> = sys.shield()
    local f, out = ctx.flags, ctx.out
    local id = ctx.args.session
    if id and f.all then return ctx.usage_error("give a SESSION or --all, not both") end
    if id and not id:find("^[a-z0-9-]+$") then return ctx.usage_error("invalid session id " .. id) end
    if f.forget and not id then return ctx.usage_error("--forget needs a SESSION") end
    if f.stale and (id or f.all or f.forget) then
      return ctx.usage_error("--stale chooses the sessions itself: give no SESSION, --all or --forget with it")
    end
    local closed, failures = setmetatable({}, util.array_mt), setmetatable({}, util.array_mt)

    if f.forget then
      local mine = session.load(id)
      if not mine then fail(string.format("no local record of session %s on this machine", id)) end
      session.forget(mine)
      closed[1] = { id = id, namespace = mine.namespace, service = mine.service, forgotten = true,
                    restored = false }
      out:result({ apiVersion = "czctl.io/v1", kind = "CloseResult", closed = closed, failed = failures }, render)
      return 0
    end

    -- One client per kubeconfig/context; flags win over what a session file says.
    local clients = {}
    -- A --kubeconfig given on the command line wins over a session's own;
    -- one from $KUBECONFIG does not.
    local given_kubeconfig = ctx.sources.kubeconfig == "flag" and f.kubeconfig or nil
    local function client_for(s)
      local kubeconfig = given_kubeconfig or (s and s.kubeconfig) or nil
      local context = f.context or (s and s.context) or nil
      if not s or (kubeconfig == given_kubeconfig and context == f.context) then
        clients.default = clients.default or ctx.kube()
        return clients.default
      end
      local key = tostring(kubeconfig) .. "\0" .. tostring(context)
      if not clients[key] then
        local c, err = kube.connect{ kubeconfig = kubeconfig, context = context }
        if not c then fail(err) end
        clients[key] = c
      end
      return clients[key]
    end

    -- Work out the targets: {id, namespace, service, service_object, local_session, client}.
    local targets = {}
    local function add_cluster_sessions(client, opts, local_session)
      local found, err = session.discover(client, opts)
      if not found then fail(err) end
      for _, s in ipairs(found) do
        targets[#targets + 1] = { id = s.id, namespace = s.namespace, service = s.service,
                                  service_object = s.service_object,
                                  local_session = local_session or session.load(s.id), client = client }
      end
      return #found
    end

    -- A local session that the cluster no longer knows and that no process
    -- here holds was closed elsewhere: only its local record is left (stale).
    local function add_local(mine, client, in_cluster)
      if in_cluster then
        targets[#targets + 1] = { id = mine.id, namespace = in_cluster.namespace, service = in_cluster.service,
                                  service_object = in_cluster.service_object, local_session = mine, client = client }
      else
        targets[#targets + 1] = { id = mine.id, namespace = mine.namespace, service = mine.service,
                                  local_session = mine, client = client, stale = not session.held(mine) }
      end
    end
    -- Where a local session is in the cluster: its Service carrying the
    -- session (one GET, which the restore then reuses), else any object
    -- labelled with it (3 LISTs in its namespace), else false; nil, err
    -- when the cluster could not be asked.
    local function locate(mine, client)
      if mine.service then
        local svc, gerr = client:get("Service", mine.service, { namespace = mine.namespace })
        if not svc and not kube.not_found(gerr) then return nil, gerr end
        local record = svc and intercept.record(svc)
        if record and record.session == mine.id then
          return { namespace = mine.namespace, service = mine.service, service_object = svc }
        end
      end
      local found, err = session.discover(client, { namespace = mine.namespace, id = mine.id })
      if not found then return nil, err end
      return found[1] or false
    end
    local function forget_hint(mine)
      return string.format("if that cluster is gone, discard the local record with: czctl session close %s --forget",
                           mine.id)
    end

    if f.stale then
      local client = client_for(nil)
      local scope = { namespace = f.namespace, all_namespaces = f.namespace == nil }
      out:step("Find sessions whose holder is gone", function()
        local found, err = session.discover(client, scope)
        if not found then fail(err) end
        local leases, lerr = heartbeat.list(client, scope)
        if not leases then fail(lerr) end
        for _, s in ipairs(found) do
          local st = heartbeat.state(leases[s.namespace .. "/" .. s.id], (s.record or {}).started or s.started)
          if st.state == "stale" then
            targets[#targets + 1] = { id = s.id, namespace = s.namespace, service = s.service,
                                      service_object = s.service_object, local_session = session.load(s.id),
                                      client = client }
          end
        end
      end)
    elseif id then
      local mine = session.load(id)
      local client
      if mine then
        -- the session's own cluster (its kubeconfig unless flags say otherwise)
        local ok, c = pcall(client_for, mine)
        if not ok then
          fail(string.format("cannot reach the cluster of session %s (%s): %s; %s", id,
                             mine.server or mine.kubeconfig or "its kubeconfig", tostring(c), forget_hint(mine)))
        end
        client = c
        local server = client:info().server
        if not session.same_cluster(mine, server) then
          fail(string.format("session %s was started on the cluster at %s, not %s; use that cluster's kubeconfig, or %s",
                             id, mine.server, tostring(server), forget_hint(mine)))
        end
      else
        client = client_for(nil)
      end
      local ns = f.namespace or (mine and mine.namespace)
      if mine and (f.namespace == nil or f.namespace == mine.namespace) then
        local where, err = locate(mine, client)
        if where == nil then
          signal.check()
          if type(err) == "table" and err.reason == "Transport" then
            fail(string.format("session %s: %s; %s", id, tostring(err), forget_hint(mine)))
          end
          fail(err)
        end
        add_local(mine, client, where or nil)
      else
        out:step("Find session " .. id, function()
          add_cluster_sessions(client, { namespace = ns, all_namespaces = ns == nil, id = id }, mine)
        end)
      end
    else
      -- Only the local sessions of the cluster being talked to count.
      local client = client_for(nil)
      local server = client:info().server
      local ns = f.namespace or client.namespace
      local locals = {}
      for _, s in ipairs(session.list_local_for(server)) do
        if (f.all and s.namespace == ns) or (not f.all and (f.namespace == nil or s.namespace == f.namespace)) then
          locals[#locals + 1] = s
        end
      end
      if f.all or #locals == 0 then
        out:step("Find sessions in namespace " .. ns, function()
          add_cluster_sessions(client, { namespace = ns })
        end)
        for _, mine in ipairs(locals) do
          local known = false
          for _, t in ipairs(targets) do known = known or t.id == mine.id end
          if not known then add_local(mine, client, nil) end
        end
      else
        out:step("Find the sessions of this machine", function()
          for _, mine in ipairs(locals) do
            local where, err = locate(mine, client)
            if where == nil then fail(err) end
            add_local(mine, client, where or nil)
          end
        end)
      end
    end

    for _, t in ipairs(targets) do
      local ok, err
      if t.stale then
        ok, err = pcall(session.forget, t.local_session)
      else
        ok, err = pcall(session.close, t.client, t, function(title, fn)
          return out:step(string.format("[%s] %s", t.id, title), fn)
        end)
      end
      if ok then
        closed[#closed + 1] = { id = t.id, namespace = t.namespace, service = t.service,
                                restored = (not t.stale and err == true), stale = t.stale or nil }
      else
        signal.check()
        failures[#failures + 1] = string.format("session %s: %s", t.id, tostring(err))
      end
    end
    local message
    if #targets == 0 then
      message = id and string.format("Session %s: nothing left to close.", id)
                or (f.stale and "No stale session: every session's holder renews its heartbeat.")
                or "No session to close."
    end
    out:result({ apiVersion = "czctl.io/v1", kind = "CloseResult", closed = closed, failed = failures,
                 message = message }, render)
    if #failures > 0 then
      intercept.raise(table.concat(failures, "; ") .. " (run czctl session close again to retry)")
    end
    return 0
  end,
}
