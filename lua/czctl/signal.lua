-- czctl.signal: SIGINT/SIGTERM/SIGHUP as Lua values. The C core only records
-- a pending signal (and wakes blocking calls with "interrupted"); this module
-- turns that into an interrupt error a recipe can raise between steps, which
-- the runner (czctl.cli) answers by running the undo stack and exiting
-- 128+signo. It must not clear a signal behind the runner's back: only
-- check() raising, or an explicit clear(), decides what happens to it.
local sys = require "czctl.core.sys"

local M = {}

local exit_codes = { SIGHUP = 129, SIGINT = 130, SIGTERM = 143 }

---@class czctl.Interrupt
---@field signal string "SIGINT"|"SIGTERM"|"SIGHUP"
---@field exit_code integer 130|143|129
---@field message string
local Interrupt = {}
Interrupt.__index = Interrupt
Interrupt.__name = "czctl.interrupt"
Interrupt.__tostring = function(e) return e.message end

--- The exit code for a signal name: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP).
---@param name string
---@return integer
function M.exit_code(name) return exit_codes[name] or 1 end

--- A new interrupt error object for a signal name.
---@param name string
---@return czctl.Interrupt
function M.interrupt(name)
  return setmetatable({ signal = name, exit_code = M.exit_code(name),
                        message = "interrupted (" .. name .. ")" }, Interrupt)
end

--- Whether a value is an interrupt error raised by check().
---@return boolean
function M.is_interrupt(v) return getmetatable(v) == Interrupt end

--- The pending signal name, or nil. Does not clear it.
---@return string|nil
function M.pending() return sys.pending_signal() end

--- Raise an interrupt error if SIGINT, SIGTERM or SIGHUP is pending.
--- Call it between steps of long work; the signal stays pending.
function M.check()
  local name = sys.pending_signal()
  if name then error(M.interrupt(name), 0) end
end

--- Block until a signal arrives or `timeout` seconds pass (nil: forever).
--- Returns the signal name (still pending) or nil on timeout.
---@param timeout? number
---@return string|nil
function M.wait(timeout)
  return sys.wait_signal(timeout)
end

--- Forget the pending signal (after handling it yourself).
function M.clear() sys.clear_signal() end

return M
