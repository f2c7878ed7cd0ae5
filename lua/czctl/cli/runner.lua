-- czctl.cli.runner: runs a recipe's `run(ctx)` under the rules every command
-- shares. Builds the ctx (flags, args, out, undo, kube), catches errors and
-- signals, rolls back ctx.undo, and turns every ending into one line (or, with
-- -o json/yaml, one Status document) on stderr and an exit code: 0 ok,
-- 1 failed, 2 usage, 128+N interrupted. The only module that reports errors.
local errors = require "czctl.cli.errors"
local util = require "czctl.util"
local csys = require "czctl.core.sys"

local M = {}

local one_line, error_text = errors.one_line, errors.text

--- Message handler for xpcall: the error with a traceback (for --debug).
--- error("message") and assert(x, "message") are how a recipe says what went
--- wrong: their position prefix (the caller's line) is dropped; a message
--- carrying another position (a rethrown runtime error) keeps it.
---@param e any
---@return {value: any, traceback: string, message?: string}
function M.traceback_handler(e)
  local tb = debug.traceback(type(e) == "string" and e or error_text(e), 2)
  local record = { value = e, traceback = tb }
  if type(e) == "string" then
    local raiser = debug.getinfo(2, "f")
    if raiser and (raiser.func == error or raiser.func == assert) then
      local caller = debug.getinfo(3, "Sl")
      if caller and caller.currentline and caller.currentline > 0 then
        local prefix = caller.short_src .. ":" .. caller.currentline .. ": "
        local rest = e:sub(#prefix + 1)
        if e:sub(1, #prefix) == prefix and rest ~= "assertion failed!" then record.message = rest end
      end
    end
  end
  return record
end

--- A stream writer that flushes after each write.
---@param stream file*
---@return fun(s: string)
function M.writer(stream)
  return function(s) stream:write(s); stream:flush() end
end

local function flag_decl(flags, name)
  for _, d in ipairs(flags) do if d.name == name then return d end end
end

--- The output format asked for on a command line (-o/--output), before or
--- without parsing it, so that even a usage error can be reported as JSON.
---@param argv string[]
---@return string|nil
function M.scan_output(argv)
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then return nil end
    local v = a:match("^%-%-output=(.+)$") or a:match("^%-o=?(%a+)$")
    if (a == "-o" or a == "--output") and argv[i + 1] then v = argv[i + 1]; i = i + 1 end
    if v == "json" or v == "yaml" then return v end
    i = i + 1
  end
  return nil
end

--- Whether a command line asks for JSON-lines progress (--progress json),
--- scanned like scan_output so that even a usage error is reported as one.
---@param argv string[]
---@return boolean
function M.scan_progress(argv)
  for i, a in ipairs(argv) do
    if a == "--" then return false end
    if a == "--progress=json" or (a == "--progress" and argv[i + 1] == "json") then return true end
  end
  return false
end

--- Build the ctx a recipe runs with.
---@param cmd {name: string, display: string, words: string[]}
---@param spec_flags table[] normalised declarations
---@param parsed table from czctl.cli.flags.parse
---@param state table the run's state (stdout, stderr, verbose, debug, undo, argv)
---@return table ctx
function M.make_ctx(cmd, spec_flags, parsed, state)
  local output = require "czctl.output"
  local undo = require "czctl.undo"
  local flags = parsed.flags
  local mode = "normal"
  local quiet_decl, output_decl = flag_decl(spec_flags, "quiet"), flag_decl(spec_flags, "output")
  if quiet_decl and quiet_decl.type == "boolean" and flags.quiet then mode = "quiet" end
  if output_decl and (flags.output == "json" or flags.output == "yaml") then mode = flags.output end
  state.format = (mode == "json" or mode == "yaml") and mode or state.format
  local progress = flag_decl(spec_flags, "progress") and flags.progress == "json" and "json" or "text"
  state.progress = progress == "json" or state.progress
  local verbose = state.verbose or flags.verbose == true
  local debug_on = state.debug or flags.debug == true
  local ctx = {
    recipe = cmd.name,
    command = cmd.display,
    args = parsed.args,
    flags = flags,
    positional = parsed.positional,
    -- The words after `--` for a recipe that declares `command` (nil without `--`).
    command_argv = parsed.command,
    sources = parsed.sources, -- per flag: "flag" (given), "env" or "default"
    -- How this command was invoked, to run it again in a child process
    -- (czctl.intercept's --wait holder): the words that name the command
    -- and the arguments after them.
    invocation = { words = cmd.words or {}, argv = state.argv or {} },
    verbose = verbose,
    debug = debug_on,
    undo = state.undo or undo.new(),
    out = output.new{ mode = mode, progress = progress, verbose = verbose, stdout = state.stdout,
                      stderr = state.stderr },
  }
  local client
  --- A connected czctl.kube client from the kubeconfig/context/namespace
  --- flags (when declared); raises the connection error.
  function ctx.kube()
    if client then return client end
    local kube = require "czctl.kube"
    local kubeconfig = flags.kubeconfig
    local kdecl = flag_decl(spec_flags, "kubeconfig")
    -- $KUBECONFIG is a list of files that kube.connect merges itself;
    -- passing it as one explicit file would break that.
    if kdecl and parsed.sources.kubeconfig == "env" and kdecl.env == "KUBECONFIG" then
      kubeconfig = nil
    end
    local c, err = kube.connect{ kubeconfig = kubeconfig, context = flags.context,
                                 namespace = flags.namespace, verbose = verbose, component = cmd.name }
    if not c then error(err or "cannot connect to the cluster", 0) end
    client = c
    return c
  end
  --- Stop with a usage error (exit 2) naming the command's help.
  function ctx.usage_error(msg, ...)
    if select("#", ...) > 0 then msg = string.format(msg, ...) end
    error(errors.usage_error(msg), 0)
  end
  --- Stop with "czctl: error: MESSAGE" (exit 1), without a file:line.
  function ctx.fail(msg, ...)
    if select("#", ...) > 0 then msg = string.format(msg, ...) end
    errors.fail(msg)
  end
  return ctx
end

-- Run the undo stack (signals shielded), showing each step; returns steps
-- run, failures and, when a step failed, what the user should run to finish
-- (the stack's remedy, e.g. "czctl session close ID -n NS").
local function rollback(ctx, state)
  local stack = ctx.undo
  if stack:size() == 0 then return 0, {} end
  local ran, failed = stack:run{
    on_step = function(description, fn)
      return ctx.out:step("undo: " .. description, fn)
    end,
    on_error = function(description, err)
      if state.format or state.progress then return end -- the final Status or the step event says it
      state.stderr(string.format("czctl: undo step %q failed: %s\n", description, one_line(error_text(err))))
    end,
  }
  local remedy = #failed > 0 and stack.remedy and stack:remedy() or nil
  return ran, failed, remedy
end

--- Print the final error: one line "czctl: ..." on stderr, or with -o json
--- or yaml one Status document (kind Status, status Failure, reason Usage |
--- Failed | Interrupted, message = the same line without "czctl: error: ", code =
--- the exit code), or with --progress json the same fields as one line
--- {"event":"error",...} of the progress stream. Returns the exit code.
---@param line string the one-line message, starting with "czctl: "
---@param code integer
---@param reason string
---@param state table
---@return integer
local function emit(line, code, reason, state)
  if state.format or state.progress then
    local doc = { apiVersion = "czctl.io/v1", kind = "Status", status = "Failure", reason = reason,
                  message = (line:gsub("^czctl: ", ""):gsub("^error: ", "")), code = code }
    if state.progress then
      doc.event = "error"
      state.stderr(util.json_encode(doc) .. "\n")
    elseif state.format == "yaml" then
      state.stderr(require("czctl.yaml").encode(doc))
    else
      state.stderr(util.json_encode(doc) .. "\n")
    end
  else
    state.stderr(line .. "\n")
  end
  return code
end

--- Report a caught error (a traceback_handler record, or a recipe load
--- error) and return the exit code.
---@param caught table {value, traceback?, message?, what?, syntax?, file?}
---@param hint string|nil the help command for usage errors
---@param state table
---@return integer
function M.report_error(caught, hint, state)
  local e = caught.value
  local line
  local code, reason = 1, "Failed"
  -- a failure may carry its own exit code (`-- CMD` not found: 127)
  if type(e) == "table" and math.type(rawget(e, "exit_code")) == "integer" then code = e.exit_code end
  if errors.is_usage_error(e) then
    line = "czctl: " .. one_line(e.message) .. (hint and " (see " .. hint .. ")" or "")
    code, reason = 2, "Usage"
  elseif type(e) == "string" and caught.message then
    line = "czctl: error: " .. one_line(caught.message)
  elseif type(e) == "string" then
    local loc, msg = e:match("^(.-:%d+): (.*)$")
    -- Lua shortens long chunk names ("...ipes/x.lua:3"); a user file is named in full.
    if loc and caught.file and loc:find("^%.%.%.") then loc = caught.file .. ":" .. loc:match(":(%d+)$") end
    if loc and caught.what then
      line = string.format("czctl: %s in %s (%s): %s", caught.syntax and "syntax error" or "error", caught.what,
                           loc, one_line(msg))
    else
      line = "czctl: error: " .. one_line(e)
    end
  else
    line = "czctl: error: " .. one_line(error_text(e))
  end
  if caught.remedy then line = line .. "; the rollback is incomplete, finish it with: " .. caught.remedy end
  emit(line, code, reason, state)
  if state.debug and caught.traceback and not caught.syntax then
    state.stderr(caught.traceback .. "\n")
  end
  return code
end

local function exit_code_of(result)
  if result == nil or result == true then return 0 end
  if result == false then return 1 end
  if math.type(result) == "integer" then return result end
  if type(result) == "number" then return math.floor(result) end
  return 0
end

--- Run fn(ctx) under the rules every command shares: errors and signals
--- roll back ctx.undo and become one line (or Status) and an exit code.
---@param fn fun(ctx: table): any
---@param ctx table
---@param what string "recipe NAME" or "script FILE"
---@param hint string|nil
---@param state table
---@return integer
function M.supervise(fn, ctx, what, hint, state)
  local signal = require "czctl.signal"
  local ok, res = xpcall(fn, M.traceback_handler, ctx)
  local sig
  if ok then
    sig = csys.pending_signal()
    if not sig then return exit_code_of(res) end
  elseif signal.is_interrupt(res.value) then
    sig = res.value.signal
  else
    sig = csys.pending_signal()
  end
  if sig then
    csys.clear_signal()   -- let the undo steps' own calls run (shielded)
    local ran, failed, remedy = rollback(ctx, state)
    if ctx.out.mode ~= "quiet" or remedy then
      local line = "czctl: interrupted (" .. sig .. ")"
      if ran + #failed > 0 then
        line = line .. string.format(", rolled back %d step%s", ran, ran == 1 and "" or "s")
        if #failed > 0 then line = line .. string.format(" (%d failed)", #failed) end
      end
      if remedy then line = line .. "; finish the cleanup with: " .. remedy end
      emit(line, signal.exit_code(sig), "Interrupted", state)
    end
    return signal.exit_code(sig)
  end
  local _, _, remedy = rollback(ctx, state)
  res.what = res.what or what
  if remedy and state.format then
    -- one Status document: the error and how to finish the rollback
    res.remedy = remedy
  end
  local code = M.report_error(res, hint, state)
  if remedy and not state.format then
    emit("czctl: the rollback is incomplete; finish it with: " .. remedy, code, "Failed", state)
  end
  return code
end

return M
