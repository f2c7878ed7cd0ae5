-- czctl.sys: this process and this machine, for recipes and scripts. The
-- library's face of czctl.core.sys (and of czctl.core.net's port probe):
-- recipes require this, never czctl.core.*, so the core can change below
-- them. Plain forwarding only; nothing here decides anything.
local csys = require "czctl.core.sys"

local M = {}

--- This process's id.
---@return integer
function M.pid() return csys.getpid() end

--- This machine's host name.
---@return string
function M.hostname() return csys.hostname() end

--- Absolute path of the running czctl binary (to start czctl commands).
---@return string
function M.exe() return csys.exe() end

--- Monotonic seconds (for durations and deadlines).
---@return number
function M.now() return csys.now() end

--- Wall-clock seconds since the epoch.
---@return number
function M.time() return csys.time() end

--- Sleep; returns nil, "interrupted" when a signal arrives.
---@param seconds number
---@return boolean|nil ok
---@return string|nil why
function M.sleep(seconds) return csys.sleep(seconds) end

--- $XDG_CONFIG_HOME/czctl (or ~/.config/czctl).
---@return string
function M.config_dir() return csys.config_dir() end

--- $XDG_STATE_HOME/czctl (or ~/.local/state/czctl).
---@return string
function M.state_dir() return csys.state_dir() end

--- Read a whole file: data | nil, message.
---@param path string
---@return string|nil
---@return string|nil err
function M.read_file(path) return csys.read_file(path) end

--- Write a file atomically (default mode 0600): true | nil, message.
---@param path string
---@param data string
---@param mode? integer
function M.write_file(path, data, mode) return csys.write_file(path, data, mode) end

--- Create a directory and its parents (default mode 0700).
---@param path string
---@param mode? integer
function M.mkdir_p(path, mode) return csys.mkdir_p(path, mode) end

--- Sorted names in a directory | nil, message.
---@param path string
function M.listdir(path) return csys.listdir(path) end

--- Whether a file descriptor (0 stdin, 1 stdout, 2 stderr) is a terminal.
---@param fd integer
---@return boolean
function M.isatty(fd) return csys.isatty(fd) end

--- Whether something accepts TCP connections on host:port within timeout seconds.
---@param host string
---@param port integer
---@param timeout? number default 2
---@return boolean|nil ok
---@return string|nil err
function M.listening(host, port, timeout)
  return require("czctl.core.net").probe(host, port, timeout)
end

--- Hold signals off until the returned value is closed: cleanup that must
--- finish (`local _ <close> = sys.shield()`). A signal that arrives meanwhile
--- is recorded and pending again afterwards (see czctl.signal).
---@return table closable
function M.shield()
  csys.shield_signals(true)
  return setmetatable({}, { __close = function() csys.shield_signals(false) end })
end

return M
