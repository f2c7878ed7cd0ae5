-- czctl.session.cluster: sessions as the cluster knows them (the
-- czctl.io/sessions annotation of an intercepted Service, see
-- czctl.session.shared): finding them, taking one off its Service, deleting
-- objects, and closing a session completely. Works from the cluster alone;
-- the local record only adds the processes to stop.
local sys = require "czctl.core.sys"
local intercept = require "czctl.intercept"
local records = require "czctl.session.records"
local keeper = require "czctl.session.keeper"
local shared = require "czctl.session.shared"

local M = {}

--- Sessions found in the cluster: the entries of the intercepted Services'
--- annotations (czctl.io/sessions), each with its owner, and proxies left
--- without any session (a crash or a failed delete between steps) as
--- {orphan = true}. A Service whose czctl annotations cannot be read
--- (edited by hand) hides no one else's sessions: it is one entry
--- {unreadable = message}, with opts.id too (the session may be on it).
--- Three LISTs (one with opts.id).
---@param client table
---@param opts {namespace?: string, all_namespaces?: boolean, id?: string}
---@return table[]|nil sessions {id, namespace, service, entry, owner, service_object, started, orphan?, unreadable?}
---@return any err
function M.discover(client, opts)
  local scope = { namespace = opts.namespace, all_namespaces = opts.all_namespaces }
  local services, err = client:list("Service", scope)
  if not services then return nil, err end
  local sessions, with_sessions = {}, {}
  for _, svc in ipairs(services.items or {}) do
    local ok, state = pcall(shared.state, svc)
    if not ok then
      with_sessions[svc.metadata.namespace .. "/" .. svc.metadata.name] = true  -- its proxy is not an orphan
      sessions[#sessions + 1] = { id = "-", namespace = svc.metadata.namespace, service = svc.metadata.name,
                                  unreadable = tostring(state), service_object = svc,
                                  started = svc.metadata.creationTimestamp }
      state = { sessions = {} }
    end
    for _, e in ipairs(state.sessions) do
      if not opts.id or e.id == opts.id then
        sessions[#sessions + 1] = { id = e.id, namespace = svc.metadata.namespace, service = svc.metadata.name,
                                    entry = e, owner = e.owner, started = e.started, service_object = svc }
      end
    end
    if #state.sessions > 0 then with_sessions[svc.metadata.namespace .. "/" .. svc.metadata.name] = true end
  end
  if not opts.id then
    -- proxy objects (Deployment, copy Service, Secrets) of a Service with no session
    local orphans = {}
    local function note(obj)
      local labels = obj.metadata.labels
      local service = type(labels) == "table" and labels[intercept.MANAGED_BY] == "czctl"
                      and labels[shared.SERVICE_LABEL]
      local key = service and (obj.metadata.namespace .. "/" .. service)
      if key and not with_sessions[key] and not orphans[key] then
        orphans[key] = true
        sessions[#sessions + 1] = { id = "-", namespace = obj.metadata.namespace, service = service, orphan = true,
                                    started = obj.metadata.creationTimestamp }
      end
    end
    for _, svc in ipairs(services.items or {}) do note(svc) end
    for _, kind in ipairs({ "Deployment", "Secret" }) do
      local list, lerr = client:list(kind, { namespace = opts.namespace, all_namespaces = opts.all_namespaces,
                                             labelSelector = intercept.MANAGED_BY .. "=czctl" })
      if not list then return nil, lerr end
      for _, obj in ipairs(list.items or {}) do note(obj) end
    end
  end
  table.sort(sessions, function(x, y)
    if x.namespace ~= y.namespace then return x.namespace < y.namespace end
    if x.service ~= y.service then return x.service < y.service end
    return x.id < y.id
  end)
  return sessions
end

local function noop_step(_, fn) return fn() end

--- The heartbeats of sessions (their Leases czctl-<id>, renewed by each
--- session's holder): id -> {renewed = seconds ago, expired = boolean,
--- tunnel_down_since = the holder's time its tunnel went down, or nil}.
---@param client table
---@param scope {namespace?: string, all_namespaces?: boolean}
---@return table<string, {renewed: number|nil, expired: boolean, tunnel_down_since: string|nil}>
function M.heartbeats(client, scope)
  local list = client:list("Lease", { namespace = scope.namespace, all_namespaces = scope.all_namespaces,
                                      labelSelector = intercept.MANAGED_BY .. "=czctl" })
  local beats = {}
  for _, l in ipairs(list and list.items or {}) do
    local id = l.metadata.name:match("^czctl%-(.+)$")
    local spec = l.spec or {}
    local age = records.age_seconds(spec.renewTime)
    if id then
      local a = l.metadata.annotations
      local down = type(a) == "table" and a["czctl.io/tunnel-down-since"] or nil
      beats[id] = { renewed = age, expired = age == nil or age > (spec.leaseDurationSeconds or 30),
                    tunnel_down_since = type(down) == "string" and down or nil }
    end
  end
  return beats
end

--- Take a session off its Service: one guarded patch of the Service's
--- annotations; the last session out restores the selector and ports (only
--- what czctl changed) and deletes the proxy; otherwise the proxy is rolled
--- to a configuration without the session and the old pod drained.
---@param client table
---@param target {id: string, namespace: string, service: string, service_object?: table, image?: string}
---@param step? fun(title: string, fn: fun())
---@return {left: boolean, last: boolean, warnings: string[]}
function M.leave(client, target, step)
  step = step or noop_step
  local ns, name = target.namespace, target.service
  local result = step(string.format("Take the route off Service %s", name), function()
    local r, err = shared.leave(client, ns, name, target.id, target.service_object)
    if not r then
      local kube = require "czctl.kube"
      if kube.not_found(err) then return { left = false, last = false, warnings = {}, gone = true } end
      intercept.raise(err)
    end
    return r
  end)
  -- (not on the Service, but nothing else is either: what is left of a
  -- proxy no session uses goes too)
  local unused = not result.left and result.svc and #shared.state(result.svc).sessions == 0
                 and not shared.state(result.svc).redirected
  if result.gone or result.last or unused then
    shared.delete_proxy(client, ns, name, step)
  else
    M.delete_object(client, ns, "Lease", "czctl-" .. target.id)
  end
  if result.left and not result.last then
    step("Update the proxy without the route", function()
      local r, err = shared.reconcile(client, ns, name, { image = target.image or intercept.DEFAULT_IMAGE })
      if not r then intercept.raise(err) end
      local _, werr = shared.wait_rollout(client, ns, name, r.version, 120, true)
      if werr then intercept.raise(werr) end
      shared.collect_secrets(client, ns, name)
    end)
  end
  if not (result.gone or result.last or unused) then
    -- no pod mounts it any more (the rollout above drained the old ones)
    step("Delete the session's route Secret " .. intercept.route_secret_name(target.id), function()
      M.delete_object(client, ns, "Secret", intercept.route_secret_name(target.id))
    end)
  end
  return result
end

--- Delete one object of a session, treating "already gone" as success. A
--- Deployment is deleted in the foreground and waited for (by watch) until
--- its ReplicaSet and pods are gone too.
---@param client table
---@param namespace string
---@param kind "Deployment"|"ConfigMap"|"Service"
---@param name string
function M.delete_object(client, namespace, kind, name)
  local foreground = kind == "Deployment" and { propagationPolicy = "Foreground" } or nil
  local ok, err, deleting = intercept.delete_if_present(client, kind, name, namespace, foreground)
  if not ok then intercept.raise(err) end
  -- Foreground: the Deployment stays (with a deletionTimestamp) until its
  -- ReplicaSet and pods are gone; watch from the version the DELETE
  -- returned until it disappears. A Status answer means it is gone already.
  local rv = foreground and type(deleting) == "table" and deleting.kind == kind and deleting.metadata
             and deleting.metadata.resourceVersion
  if rv then
    local _, werr = client:watch(kind, { namespace = namespace, resourceVersion = rv, timeout = 60,
                                         fieldSelector = "metadata.name=" .. name },
                                 function(event_type) return event_type == "DELETED" end)
    if require("czctl.kube").expired(werr) then
      -- the version expired (410): list again and wait from the current state
      _, werr = client:wait_for(kind, name, function(o) return o == nil end, 60, { namespace = namespace })
    end
    if werr then intercept.raise(werr) end
  end
end

--- Close one session completely: take it off its Service (see leave),
--- stop this machine's processes of it and remove its local files.
--- Idempotent.
---@param client table
---@param target {id: string, namespace: string, service?: string, service_object?: table, local_session?: table}
---@param step? fun(title: string, fn: fun())
---@return boolean restored whether the Service was restored (the last session left)
---@return string[] warnings what close kept of others' changes
function M.close(client, target, step)
  step = step or noop_step
  local result = { last = false, warnings = {} }
  local s = target.local_session or records.load(target.id)
  if s and target.service then
    -- The keeper sees the session leave the Service and ends; it leaves
    -- the record to this close, so that a close failing half-way (the
    -- proxy not yet deleted) can be run again.
    s.closing_pid, s.closing_start = sys.getpid(), keeper.process_start(sys.getpid())
    records.save(s)
  end
  if target.service then result = M.leave(client, target, step) end
  local t = s and (keeper.tunnel_status(s.id) or s.tunnel or {})
  if s and (s.keeper_pid and s.keeper_pid ~= sys.getpid() or t.pid) then
    step("Stop local tunnel and keeper", function() keeper.stop_processes(s) end)
  end
  records.remove(target.id)
  return result.last == true, result.warnings or {}
end

return M
