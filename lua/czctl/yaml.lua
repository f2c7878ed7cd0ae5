-- czctl.yaml: plain data (what -o json prints) as a YAML document, for
-- `-o yaml`. Block style, keys sorted as in czctl.util.json_encode, strings
-- quoted whenever a YAML reader could take them for something else. Emits
-- only; reading YAML is the C core's (libyaml).
local util = require "czctl.util"

local M = {}

local null = require("cjson").null

-- Plain scalars a YAML 1.1/1.2 reader would turn into a boolean, null or number.
local SPECIAL = { [""] = true, ["~"] = true, null = true, Null = true, NULL = true, ["true"] = true,
                  ["false"] = true, True = true, False = true, TRUE = true, FALSE = true, yes = true,
                  no = true, Yes = true, No = true, YES = true, NO = true, on = true, off = true,
                  On = true, Off = true, ON = true, OFF = true, y = true, n = true, Y = true, N = true }

local function scalar_string(s)
  if SPECIAL[s] or tonumber(s) or s:find("^[%s%-?:,%[%]{}#&*!|>'\"%%@`]") or s:find("[:#]%s")
     or s:find(":$") or s:find("%s$") or s:find("[%c\128-\255]") then
    return util.json_encode(s) -- a JSON string is a valid double-quoted YAML scalar
  end
  return s
end

local function scalar(v)
  if v == nil or v == null then return "null" end
  local t = type(v)
  if t == "boolean" then return tostring(v) end
  if t == "number" then return util.json_encode(v) end
  if t == "string" then return scalar_string(v) end
  error("cannot encode a " .. t .. " as YAML", 0)
end

local function is_array(v)
  return getmetatable(v) == util.array_mt or (next(v) ~= nil and #v > 0 and next(v, #v) == nil)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

local function emit(v, indent, out)
  local pad = string.rep("  ", indent)
  if is_array(v) then
    for _, item in ipairs(v) do
      if type(item) == "table" and next(item) ~= nil then
        local sub = {}
        emit(item, indent + 1, sub)
        -- the first line of the item goes after "- "
        sub[1] = pad .. "- " .. sub[1]:sub(#pad + 3)
        for _, l in ipairs(sub) do out[#out + 1] = l end
      elseif type(item) == "table" then
        out[#out + 1] = pad .. "- " .. (is_array(item) and "[]" or "{}")
      else
        out[#out + 1] = pad .. "- " .. scalar(item)
      end
    end
    return
  end
  for _, k in ipairs(sorted_keys(v)) do
    local x = v[k]
    local key = scalar_string(tostring(k))
    if type(x) == "table" and next(x) ~= nil then
      out[#out + 1] = pad .. key .. ":"
      emit(x, is_array(x) and indent or indent + 1, out)
    elseif type(x) == "table" then
      out[#out + 1] = pad .. key .. ": " .. (getmetatable(x) == util.array_mt and "[]" or "{}")
    else
      out[#out + 1] = pad .. key .. ": " .. scalar(x)
    end
  end
end

--- Encode a value as one YAML document ("---" first, newline-terminated).
---@param value any
---@return string
function M.encode(value)
  if type(value) ~= "table" then return "--- " .. scalar(value) .. "\n" end
  if next(value) == nil then return "--- " .. (getmetatable(value) == util.array_mt and "[]" or "{}") .. "\n" end
  local out = { "---" }
  emit(value, 0, out)
  return table.concat(out, "\n") .. "\n"
end

return M
