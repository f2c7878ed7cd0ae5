-- czctl.session: intercept sessions on this machine and in the cluster.
--
-- A session is known in two places: the cluster (the annotation on the
-- intercepted Service, and the objects labelled czctl.io/session=<id>) and,
-- on the machine that started it, a session file in
-- $XDG_STATE_HOME/czctl/sessions/<id>.json (mode 0600, no secrets). Closing
-- a session works from the cluster alone; the local file only adds the
-- processes to stop (keeper, tunnel) and which kubeconfig to use.
--
-- The keeper (`czctl session keep ID`, started detached) owns the tunnel of a
-- session started without --wait: it starts the tunnel, reports it in
-- <id>.tunnel.json, and ends when the session is closed, when the command
-- that started it dies before finishing setup, or when the tunnel dies
-- (reported in <id>.tunnel.json and <id>.log).
--
-- This module does not print and does not decide the workflow.
local sys = require "czctl.core.sys"
local cjson = require "cjson"
local util = require "czctl.util"
local intercept = require "czctl.intercept"

local M = {}

local null = cjson.null

--- Directory of the local session files (created 0700 on first use).
---@return string
function M.dir()
  local dir = sys.state_dir() .. "/sessions"
  sys.mkdir_p(dir, tonumber("700", 8))
  return dir
end

--- A new session id: 10 characters [a-z0-9], safe in names and labels.
---@return string
function M.new_id()
  return sys.random_id(10)
end

---@param id string
---@param suffix? string ".json" (default), ".tunnel.json", ".log" (the keeper's), ".ngrok.log" (the agent's)
---@return string
function M.path(id, suffix)
  return M.dir() .. "/" .. id .. (suffix or ".json")
end

local function read_json(path)
  local data = sys.read_file(path)
  if not data then return nil end
  local ok, v = pcall(cjson.decode, data)
  if ok and type(v) == "table" then return v end
  return nil
end

--- Save a session file (atomic, mode 0600).
---@param session table
function M.save(session)
  local ok, err = sys.write_file(M.path(session.id), util.json_encode(session, { indent = true }) .. "\n",
                                 tonumber("600", 8))
  if not ok then intercept.raise("cannot write the session file: " .. tostring(err)) end
end

--- The local session file of `id`, or nil.
---@param id string
---@return table|nil
function M.load(id)
  if type(id) ~= "string" or not id:find("^[%w-]+$") then return nil end
  return read_json(M.path(id))
end

--- Every session file on this machine, oldest first.
---@return table[]
function M.list_local()
  local names = sys.listdir(M.dir()) or {}
  local list = {}
  for _, name in ipairs(names) do
    local id = name:match("^([%w-]+)%.json$")
    if id and not name:find("%.tunnel%.json$") then
      local s = read_json(M.dir() .. "/" .. name)
      if s and s.id == id then list[#list + 1] = s end
    end
  end
  table.sort(list, function(a, b) return (a.started or 0) < (b.started or 0) end)
  return list
end

--- Remove the local files of a session (idempotent).
---@param id string
function M.remove(id)
  for _, suffix in ipairs({ ".json", ".tunnel.json", ".log", ".ngrok.log" }) do sys.remove(M.path(id, suffix)) end
  -- A write cut short (killed between creating and renaming) leaves its
  -- temporary file, ID.json.tmp.XXXXXX or ID.tunnel.json.tmp.XXXXXX.
  local dir, prefix = M.dir(), id .. "."
  for _, name in ipairs(sys.listdir(dir) or {}) do
    if name:sub(1, #prefix) == prefix and name:find("%.json%.tmp%.%w+$") then sys.remove(dir .. "/" .. name) end
  end
end

--- The local session holding `service` in `namespace`, or nil.
function M.find_local(namespace, service)
  for _, s in ipairs(M.list_local()) do
    if s.namespace == namespace and s.service == service then return s end
  end
  return nil
end

--- Whether a local session belongs to the cluster at `server` (the API
--- server URL recorded as `server` when it started; files without one
--- predate the field and match any cluster).
---@param s table
---@param server string|nil
---@return boolean
function M.same_cluster(s, server)
  return s.server == nil or server == nil or s.server == server
end

--- The local sessions of the cluster at `server` (see same_cluster), oldest first.
---@param server string|nil
---@return table[]
function M.list_local_for(server)
  local kept = {}
  for _, s in ipairs(M.list_local()) do
    if M.same_cluster(s, server) then kept[#kept + 1] = s end
  end
  return kept
end

--- Whether a process of this machine still holds the session: its keeper,
--- or the command that is setting it up or holding it (--wait).
---@param s table
---@return boolean
function M.held(s)
  -- An active session lives in the cluster: with nothing there it was closed
  -- elsewhere, even while its keeper (which notices on its next check) runs.
  if s.state == "active" then return false end
  local process = require "czctl.process"
  if s.keeper_pid and process.alive(s.keeper_pid) then return true end
  if s.parent_pid and s.parent_pid ~= sys.getpid() and (s.state == "starting" or s.wait)
     and process.alive(s.parent_pid) then
    return true
  end
  return false
end

--- Forget a local session: stop its processes and remove its files,
--- without contacting the cluster.
---@param s table
function M.forget(s)
  M.stop_processes(s)
  M.remove(s.id)
end

---------------------------------------------------------------------------
-- Tunnels and the keeper
---------------------------------------------------------------------------

--- The tunnel provider module for a name ("ngrok", "direct", or a user's).
---@param name string
---@return table|nil provider
---@return string|nil err
function M.tunnel_provider(name)
  local ok, tunnel = pcall(require, "czctl.tunnel")
  if ok and type(tunnel) == "table" and type(tunnel.get) == "function" then
    return tunnel.get(name)
  end
  local okp, provider = pcall(require, "czctl.tunnel." .. tostring(name))
  if okp and type(provider) == "table" then return provider end
  return nil, string.format("unknown tunnel provider %q (built in: ngrok, direct)", tostring(name))
end

--- The facts about a started tunnel that other processes need (no handle).
function M.tunnel_facts(handle, provider)
  return { provider = provider, url = handle.url, upstream = handle.upstream,
           inspector = handle.inspector, pid = handle.pid }
end

--- Start the keeper of a session: a detached `czctl session keep ID`.
---@param session table
---@return integer|nil pid
---@return string|nil err
function M.start_keeper(session)
  local process = require "czctl.process"
  return process.detach({ sys.exe(), "session", "keep", session.id }, { log = M.path(session.id, ".log") })
end

local function last_log_line(id)
  local data = sys.read_file(M.path(id, ".log")) or ""
  local last
  for line in data:gmatch("[^\n]+") do
    if line:find("%S") then last = line end
  end
  return last
end

--- Wait until the keeper has started the tunnel (or failed to).
---@param session table
---@param timeout number seconds
---@return table|nil tunnel facts {url, upstream, inspector, pid}
---@return string|nil err
function M.wait_keeper_tunnel(session, timeout)
  local process = require "czctl.process"
  local deadline = sys.now() + timeout
  local path = M.path(session.id, ".tunnel.json")
  while true do
    local t = read_json(path)
    if t and t.status == "up" then return t end
    if t and t.status == "failed" then return nil, t.error or "the tunnel failed to start" end
    if session.keeper_pid and not process.alive(session.keeper_pid) then
      t = read_json(path)
      if t and t.status == "up" then return t end
      if t and t.error then return nil, t.error end
      return nil, "the session keeper exited before the tunnel started: "
        .. (last_log_line(session.id) or "no output")
    end
    if sys.now() > deadline then
      return nil, string.format("the tunnel did not start within %ds (log: %s)", math.floor(timeout),
                                M.path(session.id, ".log"))
    end
    local _, why = sys.sleep(0.02)
    if why == "interrupted" then return nil, "interrupted" end
  end
end

--- Why a session's tunnel is no longer usable (its keeper exited, or the
--- keeper reported the tunnel dead), or nil while it is fine or when the
--- session has no keeper.
---@param session table
---@return string|nil
function M.keeper_problem(session)
  if not session.keeper_pid then return nil end
  local t = M.tunnel_status(session.id) or {}
  if t.status == "dead" then return t.error or "the tunnel stopped" end
  if not require("czctl.process").alive(session.keeper_pid) then
    return "the session keeper exited: " .. (last_log_line(session.id) or "no output")
  end
  return nil
end

--- Write the keeper's report about the tunnel.
function M.write_tunnel_status(id, facts)
  sys.write_file(M.path(id, ".tunnel.json"), util.json_encode(facts, { indent = true }) .. "\n",
                 tonumber("600", 8))
end

--- Read the keeper's report about the tunnel, or nil.
function M.tunnel_status(id)
  return read_json(M.path(id, ".tunnel.json"))
end

--- Stop the processes of a local session (keeper, then tunnel), waiting up
--- to a few seconds for each; never signals this process.
---@param session table
function M.stop_processes(session)
  local process = require "czctl.process"
  local me = sys.getpid()
  local pids = {}
  if session.keeper_pid and session.keeper_pid ~= me then pids[#pids + 1] = session.keeper_pid end
  local t = M.tunnel_status(session.id) or {}
  local tpid = t.pid or (session.tunnel or {}).pid
  if tpid and tpid ~= me then pids[#pids + 1] = tpid end
  for _, pid in ipairs(pids) do
    if process.alive(pid) then
      process.kill(pid, "TERM")
      local deadline = sys.now() + 3
      while process.alive(pid) and sys.now() < deadline do sys.sleep(0.02) end
      if process.alive(pid) then process.kill(pid, "KILL") end
    end
  end
end

---------------------------------------------------------------------------
-- Sessions in the cluster
---------------------------------------------------------------------------

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
  for _, kind in ipairs({ "Deployment", "ConfigMap" }) do
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

--- Delete the objects of a session by their names (derived from the id),
--- waiting until the proxy pods are gone. Missing objects are fine.
---@param client table
---@param namespace string
---@param id string
---@param step? fun(title: string, fn: fun())
function M.delete_objects(client, namespace, id, step)
  step = step or noop_step
  local names = intercept.names(id)
  step("Delete proxy Deployment " .. names.deployment, function()
    local ok, err, deleting = intercept.delete_if_present(client, "Deployment", names.deployment, namespace,
                                                          { propagationPolicy = "Foreground" })
    if not ok then intercept.raise(err) end
    -- Foreground: the Deployment stays (with a deletionTimestamp) until its
    -- ReplicaSet and pods are gone; watch from the version the DELETE
    -- returned until it disappears. A Status answer means it is gone already.
    local rv = type(deleting) == "table" and deleting.kind == "Deployment" and deleting.metadata
               and deleting.metadata.resourceVersion
    if rv then
      local _, werr = client:watch("Deployment", { namespace = namespace, resourceVersion = rv, timeout = 60,
                                                   fieldSelector = "metadata.name=" .. names.deployment },
                                   function(event_type) return event_type == "DELETED" end)
      if werr then intercept.raise(werr) end
    end
  end)
  step("Delete ConfigMap " .. names.configmap, function()
    local ok, err = intercept.delete_if_present(client, "ConfigMap", names.configmap, namespace)
    if not ok then intercept.raise(err) end
  end)
  step("Delete Service " .. names.service, function()
    local ok, err = intercept.delete_if_present(client, "Service", names.service, namespace)
    if not ok then intercept.raise(err) end
  end)
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
  local s = target.local_session or M.load(target.id)
  local t = s and (M.tunnel_status(s.id) or s.tunnel or {})
  if s and (s.keeper_pid and s.keeper_pid ~= sys.getpid() or t.pid) then
    step("Stop local tunnel and keeper", function() M.stop_processes(s) end)
  end
  M.remove(target.id)
  return restored
end

--- How to close a session, as a command line to paste.
---@param id string
---@param namespace string
---@return string
function M.close_command(id, namespace)
  return string.format("czctl session close %s -n %s", id, namespace)
end

--- Seconds since an RFC 3339 timestamp or epoch number, or nil.
function M.age_seconds(started)
  if type(started) == "number" then return sys.time() - started end
  if type(started) ~= "string" then return nil end
  local y, mo, d, h, mi, s = started:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then return nil end
  -- os.time reads the table as local time; correct by the offset at that time.
  local t = { year = tonumber(y), month = tonumber(mo), day = tonumber(d),
              hour = tonumber(h), min = tonumber(mi), sec = tonumber(s), isdst = false }
  local local_t = os.time(t)
  local utc_t = os.time(os.date("!*t", local_t))
  return sys.time() - (local_t + (local_t - utc_t))
end

--- "5s", "3m", "2h", "4d".
function M.format_age(seconds)
  if not seconds then return "?" end
  seconds = math.max(0, math.floor(seconds))
  if seconds < 120 then return seconds .. "s" end
  if seconds < 7200 then return (seconds // 60) .. "m" end
  if seconds < 172800 then return (seconds // 3600) .. "h" end
  return (seconds // 86400) .. "d"
end

--- Current UTC time as RFC 3339.
function M.now_rfc3339()
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(sys.time()))
end

M.null = null
return M
