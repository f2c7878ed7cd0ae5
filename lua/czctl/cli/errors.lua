-- czctl.cli.errors: the error values the command line raises and the text of
-- any error value. Usage errors exit 2, failures exit 1; nothing here prints.
local M = {}

local UsageError = { __name = "czctl.usage_error" }
UsageError.__index = UsageError
UsageError.__tostring = function(e) return e.message end

local Failure = { __name = "czctl.failure" }
Failure.__index = Failure
Failure.__tostring = function(e) return e.message end

--- A usage error: printed as "czctl: MESSAGE (see czctl COMMAND --help)", exit 2.
---@param message string
---@return table
function M.usage_error(message)
  return setmetatable({ message = message }, UsageError)
end

---@return boolean
function M.is_usage_error(e) return getmetatable(e) == UsageError end

---@return boolean
function M.is_failure(e) return getmetatable(e) == Failure end

--- Raise a usage error.
---@param message string
function M.raise_usage(message) error(M.usage_error(message), 0) end

--- Raise a failure: "czctl: error: MESSAGE", exit 1.
---@param message string
function M.fail(message) error(setmetatable({ message = message }, Failure), 0) end

--- A message on one line.
---@param s any
---@return string
function M.one_line(s)
  return (tostring(s):gsub("%s*\n%s*", " "))
end

--- The text of an error value: strings as they are, tables via __tostring or
--- their message field.
---@param e any
---@return string
function M.text(e)
  if type(e) == "table" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then return tostring(e) end
    if e.message ~= nil then return tostring(e.message) end
    return "(error object without a message)"
  end
  return tostring(e)
end

return M
