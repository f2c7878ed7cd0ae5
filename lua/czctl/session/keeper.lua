-- czctl.session.keeper: the processes that hold a session on this machine.
-- The keeper (`czctl session keep ID`, started detached) owns a session's
-- tunnel process when the tunnel needs one: it starts the tunnel, reports it
-- in <id>.tunnel.json, and ends with the session (see recipes/session-keep.lua).
-- Also: whether a process still holds a session, and stopping them.
local sys = require "czctl.core.sys"
local util = require "czctl.util"
local records = require "czctl.session.records"

local M = {}

local read_json = records.read_json

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

--- Whether a session with this tunnel needs a keeper process: a tunnel that
--- is a process (ngrok) or runs in one (the direct tunnel's landing) must
--- outlive the command that started it.
---@param provider table the provider module
---@return boolean
function M.needs_keeper(provider)
  return provider.needs_process ~= false
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
  local process = require "czctl.process"
  local deadline = sys.now() + timeout
  local path = records.path(session.id, ".tunnel.json")
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
                                records.path(session.id, ".log"))
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
  records.ensure_dir()
  sys.write_file(records.path(id, ".tunnel.json"), util.json_encode(facts, { indent = true }) .. "\n",
                 tonumber("600", 8))
end

--- Read the keeper's report about the tunnel, or nil.
function M.tunnel_status(id)
  return read_json(records.path(id, ".tunnel.json"))
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
  records.remove(s.id)
end

return M
