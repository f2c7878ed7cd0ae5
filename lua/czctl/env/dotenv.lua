-- czctl.env.dotenv: a dotenv file that both a POSIX shell (`set -a; . FILE`)
-- and dotenv libraries (python-dotenv) read back byte for byte, and nothing
-- in it is ever executed by the shell. The quoting, per value (docs/env.md):
--
--   NAME='VALUE'   when VALUE has no ', no \\ and does not end with \ :
--                  the shell takes everything literally, python-dotenv
--                  decodes only \\ and \' (which then cannot occur);
--   NAME="VALUE"   otherwise, with \ " ` written \\ \" \` and a $ written \$
--                  when a shell would expand it (followed by a letter, digit,
--                  _ { ( [ or one of @*#?!$-).
--
-- Newlines and every other byte are written as they are (one value may span
-- lines). Where the two readers cannot agree (a value in double quotes with
-- a ` or an expandable $, which python-dotenv keeps backslashed; a final
-- backslash; a carriage return, which Python's universal newlines turn into
-- \n), the shell's
-- reading wins, and `conflicts` names the variables. Names that are not
-- shell names ([A-Za-z_][A-Za-z0-9_]*) and values with a NUL byte cannot be
-- written at all: they are left out and named in `skipped`.
local M = {}

--- Whether a name can be set by a shell assignment.
---@param name string
---@return boolean
function M.shell_name(name) return name:match("^[%a_][%w_]*$") ~= nil end

-- The $ of a double-quoted value that a shell would expand.
local EXPANDS = "[%w_{(%[@*#?!%$%-]"

--- Quote one value. Returns the quoted text and whether python-dotenv reads
--- it differently from a shell.
---@param value string
---@return string quoted
---@return boolean conflict
function M.quote(value)
  local conflict = value:find("\r", 1, true) ~= nil
  if not value:find("'", 1, true) and not value:find("\\\\") and value:sub(-1) ~= "\\" then
    return "'" .. value .. "'", conflict
  end
  -- python-dotenv's double-quote pattern takes the \" of a final \\" for an
  -- escaped quote: a trailing backslash cannot reach it intact
  if value:sub(-1) == "\\" then conflict = true end
  local out, n = {}, #value
  for i = 1, n do
    local c = value:sub(i, i)
    if c == "\\" or c == '"' then
      out[#out + 1] = "\\" .. c
    elseif c == "`" then
      out[#out + 1] = "\\`"; conflict = true
    elseif c == "$" and i < n and value:sub(i + 1, i + 1):match(EXPANDS) then
      out[#out + 1] = "\\$"; conflict = true
    else
      out[#out + 1] = c
    end
  end
  return '"' .. table.concat(out) .. '"', conflict
end

--- The dotenv text for a list of variables ({name, value}), with an
--- optional header comment (one line per entry of `comments`).
---@param vars {name: string, value: string}[]
---@param comments? string[]
---@return string text
---@return string[] skipped names left out (not shell names, or a NUL in the value)
---@return string[] conflicts names python-dotenv reads differently from a shell
function M.encode(vars, comments)
  local lines, skipped, conflicts = {}, {}, {}
  for _, c in ipairs(comments or {}) do lines[#lines + 1] = "# " .. c:gsub("[\r\n]", " ") end
  for _, v in ipairs(vars) do
    if not M.shell_name(v.name) or v.value:find("\0", 1, true) then
      skipped[#skipped + 1] = v.name
    else
      local quoted, conflict = M.quote(v.value)
      if conflict then conflicts[#conflicts + 1] = v.name end
      lines[#lines + 1] = v.name .. "=" .. quoted
    end
  end
  return table.concat(lines, "\n") .. (#lines > 0 and "\n" or ""), skipped, conflicts
end

return M
