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

-- A session without a heartbeat Lease is taken for gone only once it is
-- older than an intercept may take to start (its guard creates the Lease
-- once the session is active).
M.STALE_WITHOUT_LEASE = 300

--- Whether the cluster says a session's holder is gone: its heartbeat Lease
--- expired, or it has none and is older than STALE_WITHOUT_LEASE seconds.
---@param beat {expired: boolean}|nil the session's heartbeat (heartbeats())
---@param age number|nil seconds since the session (or what it made) started
---@return boolean
function M.holder_gone(beat, age)
  if beat then return beat.expired == true end
  return age ~= nil and age > M.STALE_WITHOUT_LEASE
end

--- Whether a tunnel's objects in the cluster belong to no live session: the
--- session is on no Service, and whoever may still hold it is gone. A
--- session of this machine is gone once no process here holds it (its
--- record knows); another's, once the cluster says so (holder_gone, by the
--- age of the tunnel's objects: an intercept that is still starting has
--- made them but has neither joined its Service nor a Lease yet).
---@param on_service boolean
---@param mine table|nil this machine's record of the session
---@param beat table|nil its heartbeat
---@param age number|nil seconds since the tunnel's objects were made
---@return boolean
function M.tunnel_left(on_service, mine, beat, age)
  if on_service then return false end
  if mine then return not keeper.held(mine) end
  return M.holder_gone(beat, age)
end

--- The cluster objects of tunnels (the kube tunnel's relays, found by
--- provider.find) that belong to no live session (tunnel_left: `gone`), or
--- with opts.force every one whose session is on no Service (`gone` says
--- which of them belong to no live session).
---@param client table
---@param scope {namespace?: string, all_namespaces?: boolean}
---@param opts {server: string, sessions?: table[], beats?: table, id?: string, force?: boolean}
---   sessions and beats: from discover and heartbeats on the same scope (read when not given; with the
---   unreadable Services, whose sessions cannot be told: a relay of such a Service is not taken for left)
---@return table[]|nil left {id, namespace, service?, created?, name, objects, tunnel, gone, local_session?}
---@return any err
function M.left_tunnels(client, scope, opts)
  local sessions, beats = opts.sessions, opts.beats
  local left = {}
  for _, name in ipairs(require("czctl.tunnel").BUILTIN) do
    local provider = keeper.tunnel_provider(name)
    local found, err = {}, nil
    if provider and provider.find then found, err = provider.find(client, scope) end
    if not found then return nil, err end
    for _, t in ipairs(found) do
      if not opts.id or t.id == opts.id then
        if not sessions then
          sessions, err = M.discover(client, { namespace = scope.namespace, all_namespaces = scope.all_namespaces,
                                               id = opts.id })
          if not sessions then return nil, err end
        end
        beats = beats or M.heartbeats(client, scope)
        -- (a Service whose annotations cannot be read may hold it: kept)
        local on_service = false
        for _, s in ipairs(sessions) do
          if s.namespace == t.namespace and (s.id == t.id or s.unreadable and (t.service == nil or s.service == t.service)) then
            on_service = true
          end
        end
        local mine = records.load(t.id)
        if mine and not records.same_cluster(mine, opts.server) then mine = nil end
        local gone = M.tunnel_left(on_service, mine, beats[t.id], records.age_seconds(t.created))
        if gone or (opts.force and not on_service) then
          t.tunnel, t.local_session, t.gone = name, mine, gone
          left[#left + 1] = t
        end
      end
    end
  end
  return left
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
---@param kind "Deployment"|"ConfigMap"|"Service"|"NetworkPolicy"
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

--- Delete what a session's tunnel made in the cluster (the kube tunnel's
--- relay: provider.delete), unless the session's tunnel is known to make
--- nothing there. Missing objects are fine.
---@param client table
---@param namespace string
---@param id string
---@param tunnel? string the session's tunnel provider, when known (nil: every built-in one's)
---@param step? fun(title: string, fn: fun())
function M.delete_tunnel(client, namespace, id, tunnel, step)
  for _, name in ipairs(tunnel and { tunnel } or require("czctl.tunnel").BUILTIN) do
    local provider = keeper.tunnel_provider(name)
    if provider and provider.delete then provider.delete(client, namespace, id, step or noop_step) end
  end
end

--- Close one session completely: take it off its Service (see leave),
--- stop this machine's processes of it and remove its local files.
--- Idempotent.
---@param client table
---@param target {id: string, namespace: string, service?: string, service_object?: table, local_session?: table, tunnel?: string}
---   (no service: a session already off its Service, e.g. its tunnel's objects left by a close that died)
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
  -- after the route is off the Service, so no request is sent to a relay being deleted
  local entry = target.service_object and shared.find(shared.state(target.service_object), target.id)
  M.delete_tunnel(client, target.namespace, target.id,
                  (s and s.tunnel and s.tunnel.provider) or (entry and entry.tunnel) or target.tunnel, step)
  local t = s and (keeper.tunnel_status(s.id) or s.tunnel or {})
  if s and (s.keeper_pid and s.keeper_pid ~= sys.getpid() or t.pid) then
    step("Stop local tunnel and keeper", function() keeper.stop_processes(s) end)
  end
  records.remove(target.id)
  return result.last == true, result.warnings or {}
end

return M
