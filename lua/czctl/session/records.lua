-- czctl.session.records: a session's local record on the machine that
-- started it: $XDG_STATE_HOME/czctl/sessions/<id>.json (mode 0600, no
-- secrets) and its companions (<id>.tunnel.json, the keeper's <id>.log, the
-- agent's <id>.ngrok.log). No cluster, no processes, no printing.
local sys = require "czctl.core.sys"
local cjson = require "cjson"
local util = require "czctl.util"

local M = {}

local null = cjson.null

--- Directory of the local session files (created 0700 by the first write:
--- reading never creates it).
---@return string
function M.dir()
  return sys.state_dir() .. "/sessions"
end

local function refuse(message)
  error(setmetatable({ message = message }, { __tostring = function(e) return e.message end }), 0)
end

--- Raise when the directory of the session files exists but others could
--- have written it (as ssh refuses a ~/.ssh it cannot trust): a planted or
--- edited session file would make czctl delete objects or signal processes
--- it never made. A missing directory is fine.
function M.check_dir()
  local dir = M.dir()
  local st = sys.lstat(dir)
  if not st then return end
  if st.kind ~= "dir" then
    refuse(string.format("the sessions directory %s is not a directory (a %s); remove it and run again", dir,
                         st.kind))
  end
  if st.uid ~= sys.getuid() then
    refuse(string.format("the sessions directory %s belongs to user id %d, not to you; remove it and run again",
                         dir, st.uid))
  end
  if st.mode & tonumber("022", 8) ~= 0 then
    refuse(string.format("the sessions directory %s is mode %03o, writable by others; check its files, "
                         .. "then run: chmod 700 %s", dir, st.mode, dir))
  end
end

--- Create the directory of the session files (0700) if it is missing.
---@return string dir
function M.ensure_dir()
  local dir = M.dir()
  sys.mkdir_p(dir, tonumber("700", 8))
  M.check_dir()
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

--- Read a JSON file of the session directory, or nil.
---@param path string
---@return table|nil
function M.read_json(path)
  local data = sys.read_file(path)
  if not data then return nil end
  local ok, v = pcall(cjson.decode, data)
  if ok and type(v) == "table" then return v end
  return nil
end

--- Save a session file (atomic, mode 0600).
---@param session table
function M.save(session)
  M.ensure_dir()
  local ok, err = sys.write_file(M.path(session.id), util.json_encode(session, { indent = true }) .. "\n",
                                 tonumber("600", 8))
  if not ok then refuse("cannot write the session file: " .. tostring(err)) end
end

--- The local session file of `id`, or nil.
---@param id string
---@return table|nil
function M.load(id)
  if type(id) ~= "string" or not id:find("^[%w-]+$") then return nil end
  M.check_dir()
  return M.read_json(M.path(id))
end

--- Every session file on this machine, oldest first.
---@return table[]
function M.list_local()
  M.check_dir()
  local names = sys.listdir(M.dir()) or {}
  local list = {}
  for _, name in ipairs(names) do
    local id = name:match("^([%w-]+)%.json$")
    if id and not name:find("%.tunnel%.json$") then
      local s = M.read_json(M.dir() .. "/" .. name)
      if s and s.id == id then list[#list + 1] = s end
    end
  end
  table.sort(list, function(a, b) return (a.started or 0) < (b.started or 0) end)
  return list
end

--- Remove the local files of a session (idempotent).
---@param id string
function M.remove(id)
  for _, suffix in ipairs({ ".json", ".tunnel.json", ".end.json", ".log", ".ngrok.log" }) do sys.remove(M.path(id, suffix)) end
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

--- The stable id of this machine's czctl state (16 characters, kept in
--- $XDG_STATE_HOME/czctl/machine-id, mode 0600): what makes a session "mine"
--- in the cluster. Created on first use when `create` is true; nil when
--- missing and not created (a reading command never writes).
---@param create? boolean
---@return string|nil
function M.machine_id(create)
  local path = sys.state_dir() .. "/machine-id"
  local id = (sys.read_file(path) or ""):match("^(%w+)")
  if id or not create then return id end
  sys.mkdir_p(sys.state_dir(), tonumber("700", 8))
  id = sys.random_id(16)
  sys.write_file(path, id .. "\n", tonumber("600", 8))
  return id
end

--- Who owns a session started here: user, machine name and machine id.
---@return {user: string, host: string, machine: string}
function M.owner()
  return { user = M.user_name(), host = sys.hostname(), machine = M.machine_id(true) }
end

--- This user's name: $USER, else $LOGNAME, else the passwd entry of the uid.
---@return string
function M.user_name()
  local name = os.getenv("USER") or os.getenv("LOGNAME")
  if name and name ~= "" then return name end
  local uid = (sys.read_file("/proc/self/status") or ""):match("\nUid:%s+(%d+)")
  for line in (sys.read_file("/etc/passwd") or ""):gmatch("[^\n]+") do
    local user, id = line:match("^([^:]+):[^:]*:(%d+):")
    if id and id == uid then return user end
  end
  return uid and ("uid " .. uid) or "unknown"
end

--- Whether a session's owner (as recorded in the cluster) is this machine's
--- czctl state; when the state directory is gone (its id with it), whether
--- it is this user on this machine.
---@param owner table|nil
---@return boolean
function M.is_mine(owner)
  if type(owner) ~= "table" then return false end
  local mine = M.machine_id(false)
  if mine then return owner.machine == mine end
  return owner.user == M.user_name() and owner.host == sys.hostname()
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
