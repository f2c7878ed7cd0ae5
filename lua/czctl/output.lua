-- czctl.output: what a recipe shows the user, in three modes.
--
--   normal  progress (steps, info, warnings) on stderr; the result on stdout,
--           so `czctl ... > file` captures only the result. On a TTY the
--           running step is a live line redrawn in place ("… title", then
--           "✓ title  0.12s" or "✗ title  0.12s"); otherwise plain lines
--           "✓ title (0.12s)" when a step succeeds, and nothing when it
--           fails (the error line that follows says it all).
--   quiet   only errors (out:error); steps, info, warnings and results are silent.
--   json    exactly one JSON document on stdout (out:result); progress is
--           silent, warnings and errors still go to stderr.
--   yaml    the same document as YAML.
--
-- Progress can instead be a JSON-lines stream on stderr (progress "json",
-- `--progress json`), whatever the mode: one object per line, as it
-- happens, with the same step titles as the text:
--   {"event":"step","status":"started","step":"Resolve Service default/demo"}
--   {"event":"step","status":"done","step":"Resolve Service default/demo","ms":12}
--   {"event":"step","status":"failed","step":"...","ms":500,"error":"..."}
--   {"event":"info"|"warning"|"error","message":"..."}
--   {"event":"<name>", ...}  (out:event, e.g. "command" for `-- CMD`)
--   {"event":"result", ...}  the result document, when it goes to stderr
--                            (results_on_stderr) in text, json or yaml mode
-- Every line czctl itself writes to stderr is then such an object (the
-- runner writes the final error as {"event":"error",...} too).
--
-- Colour only on a terminal, and never when NO_COLOR is set to a non-empty
-- value (https://no-color.org).
--
-- It never decides what to show: recipes do. Writers are injectable so tests
-- capture output without a terminal.
local util = require "czctl.util"
local csys = require "czctl.core.sys"

local M = {}

---@class czctl.Output
---@field mode "normal"|"quiet"|"json"|"yaml"
---@field progress "text"|"json"
local Out = {}
Out.__index = Out
Out.__name = "czctl.output"

local function default_tty()
  return csys.isatty(2) and os.getenv("TERM") ~= "dumb"
end

--- Whether NO_COLOR asks for no colour: set and not empty.
---@param getenv? fun(name: string): string|nil
---@return boolean
function M.no_color(getenv)
  local v = (getenv or os.getenv)("NO_COLOR")
  return v ~= nil and v ~= ""
end

local DOCUMENT = { json = true, yaml = true }

--- A new output object.
---@param opts? {mode?: "normal"|"quiet"|"json"|"yaml", progress?: "text"|"json", stdout?: fun(s: string), stderr?: fun(s: string), tty?: boolean, color?: boolean, verbose?: boolean, clock?: fun(): number}
--- stdout/stderr default to the process streams; tty defaults to isatty(2)
--- (and TERM ~= "dumb"); color defaults to tty unless NO_COLOR is non-empty.
---@return czctl.Output
function M.new(opts)
  opts = opts or {}
  local mode = opts.mode or "normal"
  if mode ~= "normal" and mode ~= "quiet" and not DOCUMENT[mode] then
    error("output.new: unknown mode " .. tostring(mode), 2)
  end
  local progress = opts.progress or "text"
  if progress ~= "text" and progress ~= "json" then
    error("output.new: unknown progress " .. tostring(progress), 2)
  end
  local tty = opts.tty
  if tty == nil then tty = default_tty() end
  -- the JSON stream is for programs: no live line, no colour
  if progress == "json" then tty = false end
  local color = opts.color
  if color == nil then color = tty and not M.no_color() end
  return setmetatable({
    mode = mode,
    progress = progress,
    tty = tty,
    color = color,
    verbose = opts.verbose or false,
    clock = opts.clock or csys.now,
    write_out = opts.stdout or function(s) io.stdout:write(s); io.stdout:flush() end,
    write_err = opts.stderr or function(s) io.stderr:write(s); io.stderr:flush() end,
    running = {},       -- steps started and not finished, outermost first
    live = false,       -- a live line is on screen (TTY only)
    results = 0,
  }, Out)
end

local function fmt(f, ...)
  if select("#", ...) == 0 then return tostring(f) end
  return string.format(f, ...)
end

local function paint(self, code, s)
  if not self.color then return s end
  return "\27[" .. code .. "m" .. s .. "\27[0m"
end

-- Remove the live line before printing anything else on the terminal.
local function clear_live(self)
  if self.live then
    self.write_err("\r\27[2K")
    self.live = false
  end
end

-- One object of the JSON-lines progress stream (see the header).
local function emit(self, event)
  self.write_err(util.json_encode(event) .. "\n")
end

-- The first line of an error value, for the stream.
local function error_line(err)
  local text = tostring(err)
  if type(err) == "table" and not (getmetatable(err) or {}).__tostring and err.message ~= nil then
    text = tostring(err.message)
  end
  return (text:gsub("%s*\n.*", ""))
end

-- Show the innermost running step as the live line.
local function draw_live(self)
  local step = self.running[#self.running]
  if not (self.tty and step and self.mode == "normal") then return end
  self.write_err(string.rep("  ", #self.running - 1) .. paint(self, "2", "…") .. " " .. step.title)
  self.live = true
end

-- Print one complete line on stderr without disturbing the live line.
local function err_line(self, line)
  clear_live(self)
  self.write_err(line .. "\n")
  draw_live(self)
end

--- Run fn as a named step and show it with its duration. Returns what fn
--- returns; an error from fn marks the step failed (✗) and propagates
--- unchanged (tracebacks keep the original location).
---@param title string
---@param fn fun(...): ...
---@return ...
function Out:step(title, fn, ...)
  if type(fn) ~= "function" then error("out:step: fn must be a function", 2) end
  local step = { title = tostring(title), start = self.clock() }
  if self.progress == "json" then
    emit(self, { event = "step", status = "started", step = step.title })
    local _ <close> = setmetatable({}, { __close = function(_, err)
      emit(self, { event = "step", status = err ~= nil and "failed" or "done", step = step.title,
                   ms = math.floor((self.clock() - step.start) * 1000 + 0.5),
                   error = err ~= nil and error_line(err) or nil })
    end })
    return fn(...)
  end
  clear_live(self)
  self.running[#self.running + 1] = step
  draw_live(self)
  local _ <close> = setmetatable({}, { __close = function(_, err)
    local depth = #self.running
    for i = depth, 1, -1 do
      if self.running[i] == step then table.remove(self.running, i); depth = i; break end
    end
    if self.mode ~= "normal" then return end
    -- Off a terminal a failed step prints nothing: the error that follows
    -- ("czctl: error: ...") says it all, in one line. On a terminal the
    -- live line ends as "✗ title".
    if err ~= nil and not self.tty then clear_live(self); draw_live(self); return end
    local mark = err ~= nil and paint(self, "31", "✗") or paint(self, "32", "✓")
    local dur = util.format_duration(self.clock() - step.start)
    local indent = string.rep("  ", depth - 1)
    clear_live(self)
    if self.tty then
      self.write_err(indent .. mark .. " " .. step.title .. "  " .. paint(self, "2", dur) .. "\n")
    else
      self.write_err(indent .. mark .. " " .. step.title .. " (" .. dur .. ")\n")
    end
    draw_live(self)
  end })
  return fn(...)
end

--- A progress message on stderr (normal mode only).
---@param f string format (or plain text when no arguments follow)
function Out:info(f, ...)
  if self.progress == "json" then return emit(self, { event = "info", message = fmt(f, ...) }) end
  if self.mode ~= "normal" then return end
  err_line(self, fmt(f, ...))
end

--- Extra detail shown only with --verbose (normal mode only).
function Out:detail(f, ...)
  if not self.verbose then return end
  if self.progress == "json" then return emit(self, { event = "detail", message = fmt(f, ...) }) end
  if self.mode ~= "normal" then return end
  err_line(self, paint(self, "2", fmt(f, ...)))
end

--- "warning: ..." on stderr, except in quiet mode.
function Out:warn(f, ...)
  if self.progress == "json" then return emit(self, { event = "warning", message = fmt(f, ...) }) end
  if self.mode == "quiet" then return end
  err_line(self, paint(self, "33", "warning:") .. " " .. fmt(f, ...))
end

--- "error: ..." on stderr, in every mode (for problems that do not stop the
--- recipe, e.g. an undo step that failed; fatal errors are printed by the runner).
function Out:error(f, ...)
  if self.progress == "json" then return emit(self, { event = "error", message = fmt(f, ...) }) end
  err_line(self, paint(self, "31", "error:") .. " " .. fmt(f, ...))
end

--- Something that happened, other than a step: with JSON progress the
--- object {event = name, ...fields}; otherwise `text` as an info line
--- (normal mode only; nothing when text is nil).
---@param name string
---@param fields table
---@param text? string
function Out:event(name, fields, text)
  if self.progress == "json" then
    local e = util.deep_copy(fields)
    e.event = name
    return emit(self, e)
  end
  if text then self:info("%s", text) end
end

--- From now on the result (out:result, out:print) goes to stderr: stdout
--- belongs to a command czctl runs (`-- CMD`).
function Out:results_on_stderr()
  self.write_out = self.write_err
  self.results_stderr = true
end

--- A line of result text on stdout (normal mode only).
function Out:print(f, ...)
  if self.mode ~= "normal" then return end
  clear_live(self)
  self.write_out(fmt(f, ...) .. "\n")
  draw_live(self)
end

--- The recipe's result. json/yaml: `tbl` as one document (sorted keys) on
--- stdout, and only once. normal: render(tbl) on stdout (a string result is
--- printed as is; without render, indented JSON). quiet: nothing.
---@param tbl any
---@param render? fun(tbl: any): string
function Out:result(tbl, render)
  if self.mode == "quiet" then return end
  if self.results_stderr and self.progress == "json" then
    -- the stream stays one object per line
    if self.results > 0 and self.mode ~= "normal" then
      error("out:result: " .. self.mode .. " mode prints one document only", 2)
    end
    self.results = self.results + 1
    local e = type(tbl) == "table" and util.deep_copy(tbl) or { value = tbl }
    e.event = "result"
    return emit(self, e)
  end
  if DOCUMENT[self.mode] then
    if self.results > 0 then error("out:result: " .. self.mode .. " mode prints one document only", 2) end
    self.results = 1
    if self.mode == "yaml" then
      self.write_out(require("czctl.yaml").encode(tbl))
    else
      self.write_out(util.json_encode(tbl, { indent = true }) .. "\n")
    end
    return
  end
  local text
  if render then
    text = render(tbl)
  elseif type(tbl) == "string" then
    text = tbl
  else
    text = util.json_encode(tbl, { indent = true })
  end
  if text == nil or text == "" then return end
  text = tostring(text)
  if text:sub(-1) ~= "\n" then text = text .. "\n" end
  clear_live(self)
  self.write_out(text)
  self.results = self.results + 1
  draw_live(self)
end

--- Format rows as an aligned text table (for result renderers).
---@param headers string[]
---@param rows string[][]
---@return string
function M.table(headers, rows)
  local widths = {}
  local all = { headers }
  for _, r in ipairs(rows) do all[#all + 1] = r end
  for _, r in ipairs(all) do
    for i = 1, #headers do
      local cell = tostring(r[i] == nil and "" or r[i])
      widths[i] = math.max(widths[i] or 0, utf8.len(cell) or #cell)
    end
  end
  local lines = {}
  for _, r in ipairs(all) do
    local cells = {}
    for i = 1, #headers do
      local cell = tostring(r[i] == nil and "" or r[i])
      cells[i] = i < #headers and cell .. string.rep(" ", widths[i] - (utf8.len(cell) or #cell)) or cell
    end
    lines[#lines + 1] = (table.concat(cells, "   "):gsub("%s+$", ""))
  end
  return table.concat(lines, "\n") .. "\n"
end

return M
