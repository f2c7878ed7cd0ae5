-- czctl.undo: a stack of compensating steps. A recipe defers the undo of each
-- change right after making it; the runner (czctl.cli) runs the stack in
-- reverse on error and on signal. A failing step is reported and the rest
-- still run: partial cleanup beats none. This module does no output itself
-- unless no reporter is given, and knows nothing about what the steps do.
local M = {}

---@class czctl.UndoStack
---@field private steps {description: string, fn: fun()}[]
local Stack = {}
Stack.__index = Stack
Stack.__name = "czctl.undo.stack"

--- A new, empty undo stack.
---@return czctl.UndoStack
function M.new()
  return setmetatable({ steps = {} }, Stack)
end

--- Push a step; it runs before every step deferred earlier.
---@param description string what the step undoes, e.g. "delete ConfigMap x"
---@param fn fun() the compensating action; may raise
---@return integer position (1 = first deferred)
function Stack:defer(description, fn)
  if type(description) ~= "string" then
    error("undo:defer: description must be a string", 2)
  end
  if type(fn) ~= "function" then error("undo:defer: fn must be a function", 2) end
  self.steps[#self.steps + 1] = { description = description, fn = fn }
  return #self.steps
end

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
--- run too.
---@param opts? {on_step?: fun(description: string, fn: fun()), on_error?: fun(description: string, err: any)}
--- on_step wraps each step (e.g. out:step) and must call fn (errors propagate
--- to the stack, which reports them through on_error).
---@return integer ran steps that succeeded
---@return {description: string, error: any}[] failed
function Stack:run(opts)
  opts = opts or {}
  local on_error = opts.on_error or default_on_error
  local ran, failed = 0, {}
  while #self.steps > 0 do
    local step = table.remove(self.steps)
    local ok, err
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
  return ran, failed
end

return M
