-- czctl.session.keeper: the processes that hold a session on this machine.
-- The keeper (`czctl session keep ID`, started detached for every session)
-- owns the session's tunnel and its guard: it starts the tunnel, reports it
-- in <id>.tunnel.json, and ends with the session (see recipes/session-keep.lua).
-- Processes are recorded with their start time, so none is ever signalled
-- after its PID was reused.
-- Also: whether a process still holds a session, and stopping them.
local sys = require "czctl.core.sys"
local util = require "czctl.util"
local records = require "czctl.session.records"

local M = {}

local read_json = records.read_json

-- The state (field 3 of /proc/PID/stat: R, S, Z, ...) and start time
-- (field 22, clock ticks since boot) of a process, or nil.
local function stat(pid)
  pid = math.tointeger(pid) -- numbers read back from JSON are floats
  if not pid or pid <= 0 then return nil end
  local data = sys.read_file("/proc/" .. pid .. "/stat")
  if not data then return nil end
  -- the command name (field 2) may hold spaces and ")": fields start after the last ")"
  local rest = data:match("^%d+ %(.*%) (.*)$")
  if not rest then return nil end
  local i, state = 3, nil
  for field in rest:gmatch("%S+") do
    if i == 3 then state = field end
    if i == 22 then return state, field end
    i = i + 1
  end
  return nil
end

--- When a process started, in clock ticks since boot (field 22 of
--- /proc/PID/stat), as a string; nil when there is no such process. A PID is
--- reused, a start time with it is not: a process is recorded with both, so
--- nothing signals a process that is not the one czctl started.
---@param pid integer|nil
---@return string|nil
function M.process_start(pid)
  local _, start = stat(pid)
  return start
end

--- Whether `pid` is still the process recorded with start time `start`,
--- and still running (a zombie has exited: its parent, init for a detached
--- keeper, has only not reaped it yet). Without a recorded start time
--- nothing can tell, so the answer is no: czctl never signals a process it
--- cannot identify.
---@param pid integer|nil
---@param start string|nil
---@return boolean
function M.same_process(pid, start)
  if not math.tointeger(pid) or start == nil then return false end
  local state, now = stat(pid)
  return now == start and state ~= "Z"
end

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
           inspector = handle.inspector, pid = handle.pid, start = M.process_start(handle.pid) }
end

--- Start the keeper of a session: a detached `czctl session keep ID`.
---@param session table
---@return integer|nil pid
---@return string|nil err
function M.start_keeper(session)
  local process = require "czctl.process"
  return process.detach({ sys.exe(), "session", "keep", session.id }, { log = records.path(session.id, ".log") })
end

local function last_log_line(id)
  local data = sys.read_file(records.path(id, ".log")) or ""
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
  local deadline = sys.now() + timeout
  local path = records.path(session.id, ".tunnel.json")
  while true do
    local t = read_json(path)
    if t and t.status == "up" then return t end
    if t and t.status == "failed" then return nil, t.error or "the tunnel failed to start" end
    if session.keeper_pid and not M.same_process(session.keeper_pid, session.keeper_start) then
      t = read_json(path)
      if t and t.status == "up" then return t end
      if t and t.error then return nil, t.error end
      return nil, "the session keeper exited before the tunnel started: "
        .. (last_log_line(session.id) or "no output")
    end
    if sys.now() > deadline then
      return nil, string.format("the tunnel did not start within %ds (log: %s)", math.floor(timeout),
                                records.path(session.id, ".log"))
    end
    local _, why = sys.sleep(0.02)
    if why == "interrupted" then return nil, "interrupted" end
  end
end

--- Why a session's tunnel is no longer usable (its keeper exited, or the
--- keeper reported the tunnel dead), or why its guard ended it (second
--- value "ended"); nil while it is fine or when the session has no keeper.
---@param session table
---@return string|nil
---@return "ended"|nil
function M.keeper_problem(session)
  if not session.keeper_pid then return nil end
  local t = M.tunnel_status(session.id) or {}
  if t.status == "ended" then return t.error or "the session was ended", "ended" end
  if t.status == "dead" then return t.error or "the tunnel stopped" end
  if not M.same_process(session.keeper_pid, session.keeper_start) then
    return "the session keeper exited: " .. (last_log_line(session.id) or "no output")
  end
  return nil
end

--- Write the keeper's report about the tunnel.
function M.write_tunnel_status(id, facts)
  records.ensure_dir()
  sys.write_file(records.path(id, ".tunnel.json"), util.json_encode(facts, { indent = true }) .. "\n",
                 tonumber("600", 8))
end

--- Record why the guard ended a session (read by the keeper).
---@param id string
---@param reason string
function M.write_end(id, reason)
  records.ensure_dir()
  sys.write_file(records.path(id, ".end.json"), util.json_encode({ reason = reason }) .. "\n", tonumber("600", 8))
end

--- Why the guard ended a session, or nil.
---@param id string
---@return string|nil
function M.read_end(id)
  local t = read_json(records.path(id, ".end.json"))
  return t and t.reason
end

--- Read the keeper's report about the tunnel, or nil.
function M.tunnel_status(id)
  return read_json(records.path(id, ".tunnel.json"))
end

--- Stop the processes of a local session (keeper, then tunnel), waiting up
--- to a few seconds for each; never signals this process, nor a process
--- that is not the one recorded (its PID reused: start time differs).
---@param session table
function M.stop_processes(session)
  local process = require "czctl.process"
  local me = sys.getpid()
  local procs = {}
  if session.keeper_pid and session.keeper_pid ~= me then
    procs[#procs + 1] = { session.keeper_pid, session.keeper_start }
  end
  local t = M.tunnel_status(session.id) or {}
  local tpid, tstart = t.pid, t.start
  if not tpid then tpid, tstart = (session.tunnel or {}).pid, (session.tunnel or {}).start end
  if tpid and tpid ~= me then procs[#procs + 1] = { tpid, tstart } end
  for _, p in ipairs(procs) do
    local pid, start = p[1], p[2]
    if M.same_process(pid, start) then
      process.kill(pid, "TERM")
      local deadline = sys.now() + 3
      while M.same_process(pid, start) and sys.now() < deadline do sys.sleep(0.02) end
      if M.same_process(pid, start) then process.kill(pid, "KILL") end
    end
  end
end

--- Whether a process of this machine still holds the session: its keeper,
--- or the command that is setting it up or holding it (--wait).
---@param s table
---@return boolean
function M.held(s)
  if s.keeper_pid and M.same_process(s.keeper_pid, s.keeper_start) then return true end
  if s.parent_pid and s.parent_pid ~= sys.getpid() and (s.state == "starting" or s.wait)
     and M.same_process(s.parent_pid, s.parent_start) then
    return true
  end
  return false
end

--- Forget a local session: stop its processes and remove its files,
--- without contacting the cluster.
---@param s table
function M.forget(s)
  M.stop_processes(s)
  records.remove(s.id)
end

return M
