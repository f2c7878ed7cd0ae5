-- czctl.session.cluster: sessions as the cluster knows them (the annotation
-- on an intercepted Service, the objects labelled czctl.io/session=<id>):
-- finding them, restoring a Service, deleting a session's objects, and
-- closing a session completely. Works from the cluster alone; the local
-- record only adds the processes to stop.
local sys = require "czctl.core.sys"
local intercept = require "czctl.intercept"
local records = require "czctl.session.records"
local keeper = require "czctl.session.keeper"

local M = {}

local function objects_of(list, kind, into)
  for _, obj in ipairs(list and list.items or {}) do
    local labels = obj.metadata.labels
    local id = type(labels) == "table" and labels[intercept.SESSION_LABEL]
    if id and labels[intercept.MANAGED_BY] == "czctl" then
      local key = obj.metadata.namespace .. "/" .. id
      local s = into[key] or { id = id, namespace = obj.metadata.namespace, objects = {} }
      s.objects[#s.objects + 1] = kind .. "/" .. obj.metadata.name
      if kind == "Deployment" and type(obj.metadata.annotations) == "table" then
        s.service = s.service or obj.metadata.annotations["czctl.io/service"]
      end
      s.started = s.started or obj.metadata.creationTimestamp
      into[key] = s
    end
  end
end

--- Sessions found in the cluster: intercepted Services (their annotation)
--- and objects labelled with a session (also those of a session that
--- crashed before patching its Service). Three LISTs.
---@param client table
---@param opts {namespace?: string, all_namespaces?: boolean, id?: string}
---@return table[]|nil sessions {id, namespace, service, record, objects, started}
---@return any err
function M.discover(client, opts)
  local scope = { namespace = opts.namespace, all_namespaces = opts.all_namespaces }
  local found = {}
  local services, err = client:list("Service", scope)
  if not services then return nil, err end
  for _, svc in ipairs(services.items or {}) do
    local record = intercept.record(svc)
    if record and (not opts.id or record.session == opts.id) then
      local key = svc.metadata.namespace .. "/" .. record.session
      local s = found[key] or { id = record.session, namespace = svc.metadata.namespace, objects = {} }
      s.service, s.record, s.service_object = svc.metadata.name, record, svc
      s.started = record.started or s.started
      found[key] = s
    end
  end
  local labelled = intercept.MANAGED_BY .. "=czctl"
  if opts.id then labelled = labelled .. "," .. intercept.SESSION_LABEL .. "=" .. opts.id end
  local svc_only = { items = {} }
  for _, svc in ipairs(services.items or {}) do
    local labels = svc.metadata.labels
    if type(labels) == "table" and labels[intercept.MANAGED_BY] == "czctl"
       and (not opts.id or labels[intercept.SESSION_LABEL] == opts.id) then
      svc_only.items[#svc_only.items + 1] = svc
    end
  end
  objects_of(svc_only, "Service", found)
  for _, kind in ipairs({ "Deployment", "ConfigMap", "Secret" }) do
    local list, lerr = client:list(kind, { namespace = opts.namespace, all_namespaces = opts.all_namespaces,
                                           labelSelector = labelled })
    if not list then return nil, lerr end
    objects_of(list, kind, found)
  end
  local sessions = {}
  for _, s in pairs(found) do sessions[#sessions + 1] = s end
  table.sort(sessions, function(a, b)
    if a.namespace ~= b.namespace then return a.namespace < b.namespace end
    return a.id < b.id
  end)
  return sessions
end

local function noop_step(_, fn) return fn() end

--- Restore the Service a session intercepted, if it still carries this
--- session's record. Guarded by resourceVersion, retried on conflict.
---@param client table
---@param namespace string
---@param service string
---@param id string
---@param svc? table the Service as last read (saves a GET)
---@return boolean|nil restored (false: nothing to restore)
---@return any err
function M.restore_service(client, namespace, service, id, svc)
  local kube = require "czctl.kube"
  local result, err, reason = intercept.guarded_patch(client, namespace, service, svc, function(current)
    local record = intercept.record(current)
    if not record or record.session ~= id then return nil, "not intercepted by this session" end
    return intercept.restore_patch(current, record)
  end)
  if result and reason then return false end
  if result then return true end
  if kube.not_found(err) then return false end
  return nil, err
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
    if werr then intercept.raise(werr) end
  end
end

--- Delete the objects of a session by their names (derived from the id),
--- the proxy first, waiting until its pods are gone. Missing objects are fine.
---@param client table
---@param namespace string
---@param id string
---@param step? fun(title: string, fn: fun())
function M.delete_objects(client, namespace, id, step)
  step = step or noop_step
  local names = intercept.names(id)
  for _, o in ipairs({ { "Deployment", names.deployment, "proxy Deployment" },
                       { "ConfigMap", names.configmap, "ConfigMap" }, { "Secret", names.secret, "Secret" },
                       { "Lease", "czctl-" .. id, "heartbeat Lease" }, { "Service", names.service, "Service" } }) do
    step("Delete " .. o[3] .. " " .. o[2], function() M.delete_object(client, namespace, o[1], o[2]) end)
  end
end

--- Close one session completely: restore the Service, delete the objects,
--- stop local processes and remove the local files. Idempotent.
---@param client table
---@param target {id: string, namespace: string, service?: string, service_object?: table, local_session?: table}
---@param step? fun(title: string, fn: fun())
---@return boolean restored whether a Service was restored
function M.close(client, target, step)
  step = step or noop_step
  local restored = false
  if target.service then
    step("Restore Service " .. target.service, function()
      local ok, err = M.restore_service(client, target.namespace, target.service, target.id, target.service_object)
      if ok == nil then intercept.raise(err) end
      restored = ok
    end)
  end
  M.delete_objects(client, target.namespace, target.id, step)
  local s = target.local_session or records.load(target.id)
  local t = s and (keeper.tunnel_status(s.id) or s.tunnel or {})
  if s and (s.keeper_pid and s.keeper_pid ~= sys.getpid() or t.pid) then
    step("Stop local tunnel and keeper", function() keeper.stop_processes(s) end)
  end
  records.remove(target.id)
  return restored
end

return M
