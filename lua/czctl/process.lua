-- czctl.process: child processes as objects (after Neovim's vim.system) over
-- the thin czctl.core.proc spawn. Adds what recipes want and C should not
-- decide: wait with a timeout that kills (exit code 124, like timeout(1)),
-- a TERM-then-KILL grace period, and run() to capture a command's output.
-- Like the core, calls that wait return nil, "interrupted" on a signal
-- instead of raising; callers decide (usually signal.check()).
local cproc = require "czctl.core.proc"

local M = {}

--- Exit code reported by wait() when the timeout expired and the process was killed.
M.TIMEOUT = 124

---@class czctl.Process
---@field pid integer
---@field argv string[]
---@field code integer|nil exit code once reaped
---@field timed_out boolean
local Process = {}
Process.__index = Process
Process.__name = "czctl.process"

--- Start a process. opts are those of czctl.core.proc.spawn (env, env_extra,
--- cwd, stdin, stdout, stderr); stdout and stderr default to "pipe".
--- opts.group: the process leads a new process group, and :kill() signals
--- the whole group; opts.foreground (implies group): with stdin "inherit" on
--- the terminal this process holds, the group gets the terminal until it is
--- reaped (Ctrl-C then reaches it alone, as with a shell's job);
--- opts.parent_death_signal ("TERM", ...): sent to the process when this one
--- dies, even by SIGKILL (Linux PR_SET_PDEATHSIG).
--- Raises on misuse; returns nil, message when the command cannot start.
---@param argv string[]
---@param opts? table
---@return czctl.Process|nil
---@return string|nil err
function M.spawn(argv, opts)
  if type(argv) ~= "table" or type(argv[1]) ~= "string" then
    error("process.spawn: argv must be a non-empty list of strings", 2)
  end
  local spec = {}
  for k, v in pairs(opts or {}) do spec[k] = v end
  spec.argv = argv
  if spec.stdout == nil then spec.stdout = "pipe" end
  if spec.stderr == nil then spec.stderr = "pipe" end
  local handle, err = cproc.spawn(spec)
  if not handle then return nil, err end
  return setmetatable({ handle = handle, pid = handle:pid(), argv = argv,
                        code = nil, timed_out = false }, Process)
end

--- Read one line (without the newline) from "stdout" (default) or "stderr".
---@param timeout? number seconds; nil waits forever
---@param stream? "stdout"|"stderr"
---@return string|nil line
---@return string|nil why "timeout"|"eof"|"interrupted"|message
function Process:read_line(timeout, stream)
  return self.handle:read_line(timeout, stream or "stdout")
end

--- Iterate over lines of a stream until end of file (or a timeout per line).
---@param stream? "stdout"|"stderr"
---@param timeout? number
---@return fun(): string|nil
function Process:lines(stream, timeout)
  return function()
    local line = self.handle:read_line(timeout, stream or "stdout")
    return line
  end
end

---@param data string
function Process:write(data) return self.handle:write(data) end

function Process:close_stdin() return self.handle:close_stdin() end

--- Send a signal (default "TERM").
---@param sig? string|integer
function Process:kill(sig) return self.handle:kill(sig or "TERM") end

--- Wait for the exit code (128+N if killed by signal N). With a timeout, a
--- process still running is sent TERM, then KILL after `grace` seconds
--- (default 2), and the result is 124.
---@param timeout? number seconds; nil waits forever
---@param grace? number
---@return integer|nil code
---@return string|nil why "interrupted" or an error message
function Process:wait(timeout, grace)
  if self.code then return self.code end
  local code, why = self.handle:wait(timeout)
  if code then self.code = code; return code end
  if why ~= "timeout" then return nil, why end
  self.timed_out = true
  self.handle:kill("TERM")
  if not self.handle:wait(grace or 2) then
    self.handle:kill("KILL")
    self.handle:wait(5)
  end
  self.code = M.TIMEOUT
  return M.TIMEOUT
end

--- Wait up to `timeout` seconds for the exit without stopping the process
--- (unlike wait): the exit code (128+N if killed by signal N), or nil and
--- "timeout" | "interrupted" (a signal came) | an error message.
---@param timeout? number seconds; nil waits forever
---@return integer|nil code
---@return string|nil why
function Process:await(timeout)
  if self.code then return self.code end
  local code, why = self.handle:wait(timeout)
  if code then self.code = code end
  return code, why
end

--- Release the handle; kills and reaps a process still running. Idempotent.
function Process:close()
  if self.handle then self.handle:close() end
end

Process.__close = Process.close
Process.__gc = Process.close

--- Run a command to completion and capture its output.
---@param argv string[]
---@param opts? {timeout?: number, env?: table, env_extra?: table, cwd?: string, stdin?: string}
--- opts.stdin is written to the process and its stdin closed.
---@return {code: integer, stdout: string, stderr: string, timed_out: boolean}|nil
---@return string|nil err "interrupted" or why it could not start
function M.run(argv, opts)
  opts = opts or {}
  local errfile = os.tmpname()
  local spawn_opts = { env = opts.env, env_extra = opts.env_extra, cwd = opts.cwd,
                       stdout = "pipe", stderr = { file = errfile },
                       stdin = opts.stdin and "pipe" or "null" }
  local p <close>, err = M.spawn(argv, spawn_opts)
  if not p then os.remove(errfile); return nil, err end
  if opts.stdin then p:write(opts.stdin); p:close_stdin() end
  local clock = require("czctl.core.sys").now
  local deadline = opts.timeout and clock() + opts.timeout
  local lines = {}
  local timed_out = false
  while true do
    local left = deadline and math.max(0, deadline - clock())
    local line, why = p:read_line(left, "stdout")
    if line then
      lines[#lines + 1] = line
    elseif why == "eof" then
      break
    elseif why == "timeout" then
      timed_out = true
      break
    else
      os.remove(errfile)
      return nil, why
    end
  end
  local code, why
  if timed_out then
    code, why = p:wait(0)
  else
    local left = deadline and math.max(0, deadline - clock())
    code, why = p:wait(left)
  end
  local f = io.open(errfile, "rb")
  local stderr = f and f:read("a") or ""
  if f then f:close() end
  os.remove(errfile)
  if not code then return nil, why end
  return { code = code, stdout = #lines > 0 and table.concat(lines, "\n") .. "\n" or "",
           stderr = stderr, timed_out = p.timed_out }
end

--- Start a long-lived helper in its own session, output appended to opts.log.
---@param argv string[]
---@param opts {log: string, env_extra?: table, cwd?: string}
---@return integer|nil pid
---@return string|nil err
function M.detach(argv, opts)
  opts = opts or {}
  return cproc.detach{ argv = argv, env_extra = opts.env_extra, cwd = opts.cwd, log = opts.log }
end

---@param pid integer
---@return boolean
function M.alive(pid) return cproc.alive(pid) end

--- The path of the program spawn() would run for `cmd` (found on PATH as
--- execvp does), or nil, "<cmd>: command not found".
---@param cmd string
---@return string|nil path
---@return string|nil err
function M.find(cmd) return cproc.find(cmd) end

---@param pid integer
---@param sig? string|integer default "TERM"
function M.kill(pid, sig) return cproc.kill(pid, sig or "TERM") end

return M
