-- czctl.undo: a stack of compensating steps. A recipe defers the undo of each
-- change right after making it; the runner (czctl.cli) runs the stack in
-- reverse on error and on signal. A failing step is reported and the rest
-- still run: partial cleanup beats none. This module does no output itself
-- unless no reporter is given, and knows nothing about what the steps do.
-- While a stack runs, signals are shielded (czctl.sys.shield): a second
-- Ctrl-C is recorded but does not interrupt the steps' calls.
local sys = require "czctl.sys"
local M = {}

---@class czctl.UndoStack
---@field private steps {description: string, fn: fun(), only_if_clean?: boolean}[]
---@field private remedy_text? string
local Stack = {}
Stack.__index = Stack
Stack.__name = "czctl.undo.stack"

--- A new, empty undo stack.
---@return czctl.UndoStack
function M.new()
  return setmetatable({ steps = {} }, Stack)
end

--- Push a step; it runs before every step deferred earlier.
--- opts.only_if_clean: skip the step when a step of the same run failed
--- before it (e.g. keep the local record that names what is left to clean).
---@param description string what the step undoes, e.g. "delete ConfigMap x"
---@param fn fun() the compensating action; may raise
---@param opts? {only_if_clean?: boolean}
---@return integer position (1 = first deferred)
function Stack:defer(description, fn, opts)
  if type(description) ~= "string" then
    error("undo:defer: description must be a string", 2)
  end
  if type(fn) ~= "function" then error("undo:defer: fn must be a function", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("undo:defer: opts must be a table", 2) end
  self.steps[#self.steps + 1] = { description = description, fn = fn,
                                  only_if_clean = opts and opts.only_if_clean == true or nil }
  return #self.steps
end

--- Set (or with nil, clear) what the user should run to finish the job when
--- a step fails, e.g. "czctl session close ID -n NS"; the runner prints it.
---@param text? string
function Stack:set_remedy(text)
  if text ~= nil and type(text) ~= "string" then error("undo:set_remedy: text must be a string", 2) end
  self.remedy_text = text
end

--- The remedy set with set_remedy, or nil.
---@return string|nil
function Stack:remedy() return self.remedy_text end

--- Number of steps waiting to run.
---@return integer
function Stack:size() return #self.steps end

--- Descriptions of the pending steps, in the order they would run.
---@return string[]
function Stack:pending()
  local list = {}
  for i = #self.steps, 1, -1 do list[#list + 1] = self.steps[i].description end
  return list
end

--- Forget every pending step (the work is now owned elsewhere, e.g. a keeper).
function Stack:discard() self.steps = {} end

local function default_on_error(description, err)
  io.stderr:write(string.format("czctl: undo step %q failed: %s\n", description,
                                tostring(err):gsub("\n%s*", " ")))
end

--- Run every pending step, newest first. Each step is removed before it runs,
--- so running twice never repeats a step; steps deferred while running are
--- run too. Signals are shielded for the duration (nested shields add up and
--- the previous depth is restored, even when a callback raises): a signal that
--- arrives meanwhile stays recorded, is invisible to the steps (no
--- "interrupted", signal.check() does not raise) and is pending again after.
---@param opts? {on_step?: fun(description: string, fn: fun()), on_error?: fun(description: string, err: any)}
--- on_step wraps each step (e.g. out:step) and must call fn (errors propagate
--- to the stack, which reports them through on_error).
---@return integer ran steps that succeeded
---@return {description: string, error: any}[] failed
---@return string[] skipped descriptions of only_if_clean steps not run
function Stack:run(opts)
  opts = opts or {}
  local on_error = opts.on_error or default_on_error
  local ran, failed, skipped = 0, {}, {}
  local _ <close> = M.shield()
  while #self.steps > 0 do
    local step = table.remove(self.steps)
    local ok, err
    if step.only_if_clean and #failed > 0 then
      skipped[#skipped + 1] = step.description
    else
      if opts.on_step then
        ok, err = pcall(opts.on_step, step.description, step.fn)
      else
        ok, err = pcall(step.fn)
      end
      if ok then
        ran = ran + 1
      else
        failed[#failed + 1] = { description = step.description, error = err }
        on_error(step.description, err)
      end
    end
  end
  return ran, failed, skipped
end

--- Raise the signal shield until the returned value is closed (a Lua 5.4
--- to-be-closed variable: `local _ <close> = undo.shield()`), for cleanup
--- that is not an undo stack. The same as czctl.sys.shield.
---@return table closable
M.shield = sys.shield

return M
