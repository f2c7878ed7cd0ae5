-- czctl.util: small pure helpers shared by the Lua library (names, strings,
-- tables, stable JSON). No I/O and no knowledge of recipes or Kubernetes:
-- anything here must be safe to call from any layer and from tests.
local M = {}

--- Quote a string for a POSIX shell (for messages users paste, never for exec).
---@param s string
---@return string
function M.shell_quote(s)
  s = tostring(s)
  if s ~= "" and not s:find("[^%w%-_./:=@,+%%]") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Join an argv into one shell-quoted command line.
---@param argv string[]
---@return string
function M.shell_join(argv)
  local parts = {}
  for i, a in ipairs(argv) do parts[i] = M.shell_quote(a) end
  return table.concat(parts, " ")
end

--- Optimal string alignment distance (Damerau-Levenshtein with adjacent
--- transpositions), so "lcoal" is one edit from "local".
---@param a string
---@param b string
---@return integer
function M.levenshtein(a, b)
  local la, lb = #a, #b
  if la == 0 then return lb end
  if lb == 0 then return la end
  local d = {}
  for i = 0, la do d[i] = { [0] = i } end
  for j = 0, lb do d[0][j] = j end
  for i = 1, la do
    local ca = a:byte(i)
    for j = 1, lb do
      local cb = b:byte(j)
      local cost = ca == cb and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and ca == b:byte(j - 1) and a:byte(i - 1) == cb then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[la][lb]
end

--- The candidate closest to `word`, or nil when none is close enough to be a
--- plausible typo (distance at most a third of the word, at least 1; or
--- `word` is a prefix of at least 3 characters of exactly one candidate).
---@param word string
---@param candidates string[]
---@return string|nil
function M.closest(word, candidates)
  local best, best_d
  local lw = word:lower()
  for _, c in ipairs(candidates) do
    local d = M.levenshtein(lw, c:lower())
    if best_d == nil or d < best_d then best, best_d = c, d end
  end
  if best and best_d <= math.max(1, #word // 3) then return best end
  if #word >= 3 then
    local found
    for _, c in ipairs(candidates) do
      if c:lower():sub(1, #lw) == lw then
        if found and found ~= c then return nil end
        found = c
      end
    end
    return found
  end
  return nil
end

--- "localPort" / "local_port" -> "local-port"
---@param name string
---@return string
function M.kebab(name)
  local s = name:gsub("_", "-"):gsub("(%l)(%u)", "%1-%2"):gsub("(%d)(%u)", "%1-%2")
  return s:lower()
end

--- "local-port" / "local_port" -> "localPort"
---@param name string
---@return string
function M.camel(name)
  return (M.kebab(name):gsub("%-(%w)", function(c) return c:upper() end))
end

---@param s string
---@param sep string a plain separator
---@return string[]
function M.split(s, sep)
  local parts, start = {}, 1
  while true do
    local i, j = s:find(sep, start, true)
    if not i then parts[#parts + 1] = s:sub(start); return parts end
    parts[#parts + 1] = s:sub(start, i - 1)
    start = j + 1
  end
end

--- Whether a list holds a value.
---@param list any[]
---@param value any
---@return boolean
function M.contains(list, value)
  for _, v in ipairs(list) do if v == value then return true end end
  return false
end

---@param s string
---@return string
function M.trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

---@param path string
---@return string
function M.basename(path) return (path:gsub("/+$", ""):match("([^/]*)$")) end

---@param path string
---@return string directory part, "." when there is none
function M.dirname(path)
  local d = path:gsub("/+$", ""):match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

--- Human duration: "0.12s", "12.3s", "2m05s".
---@param seconds number
---@return string
function M.format_duration(seconds)
  if seconds < 10 then return string.format("%.2fs", seconds) end
  if seconds < 60 then return string.format("%.1fs", seconds) end
  local m = math.floor(seconds / 60)
  return string.format("%dm%02ds", m, math.floor(seconds - m * 60))
end

--- Copy a table recursively (metatables are shared, cycles preserved).
---@generic T
---@param v T
---@return T
function M.deep_copy(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local c = {}
  seen[v] = c
  for k, x in pairs(v) do c[M.deep_copy(k, seen)] = M.deep_copy(x, seen) end
  return setmetatable(c, getmetatable(v))
end

--- Deep equality of plain values and tables (ignores metatables).
---@return boolean
function M.deep_equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not M.deep_equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- Marks a table as a JSON array even when empty: setmetatable({}, util.array_mt)
M.array_mt = { __name = "czctl.json.array" }

local json_null
local function null_value()
  if json_null == nil then
    local ok, cjson = pcall(require, "cjson")
    json_null = ok and cjson.null or false
  end
  return json_null
end

local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function is_array(t)
  if getmetatable(t) == M.array_mt then return true end
  local n = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 then return false end
    n = n + 1
  end
  if n == 0 then return false end
  for i = 1, n do if t[i] == nil then return false end end
  return true
end

local function encode(v, indent, depth, out, seen)
  local tv = type(v)
  if v == nil or (v == null_value() and v ~= false) then
    out[#out + 1] = "null"
  elseif tv == "boolean" then
    out[#out + 1] = tostring(v)
  elseif tv == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      error("cannot encode " .. tostring(v) .. " as JSON", 0)
    end
    if math.type(v) == "integer" then
      out[#out + 1] = string.format("%d", v)
    elseif v == math.floor(v) and math.abs(v) < 2 ^ 53 then
      out[#out + 1] = string.format("%d", math.tointeger(v))
    else
      out[#out + 1] = string.format("%.17g", v)
    end
  elseif tv == "string" then
    out[#out + 1] = encode_string(v)
  elseif tv == "table" then
    if seen[v] then error("cannot encode a cyclic table as JSON", 0) end
    seen[v] = true
    local nl, pad, pad_in, colon = "", "", "", ":"
    if indent then
      nl = "\n"
      pad = string.rep(indent, depth)
      pad_in = string.rep(indent, depth + 1)
      colon = ": "
    end
    if is_array(v) then
      if #v == 0 then
        out[#out + 1] = "[]"
      else
        out[#out + 1] = "[" .. nl
        for i = 1, #v do
          out[#out + 1] = pad_in
          encode(v[i], indent, depth + 1, out, seen)
          out[#out + 1] = (i < #v and "," or "") .. nl
        end
        out[#out + 1] = pad .. "]"
      end
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" and type(k) ~= "number" then
          error("cannot encode a " .. type(k) .. " key as JSON", 0)
        end
        keys[#keys + 1] = tostring(k)
      end
      table.sort(keys)
      if #keys == 0 then
        out[#out + 1] = "{}"
      else
        out[#out + 1] = "{" .. nl
        for i, k in ipairs(keys) do
          local x = v[k]
          if x == nil then x = v[tonumber(k)] end
          out[#out + 1] = pad_in .. encode_string(k) .. colon
          encode(x, indent, depth + 1, out, seen)
          out[#out + 1] = (i < #keys and "," or "") .. nl
        end
        out[#out + 1] = pad .. "}"
      end
    end
    seen[v] = nil
  elseif v == null_value() then
    out[#out + 1] = "null"
  else
    error("cannot encode a " .. tv .. " as JSON", 0)
  end
end

--- Encode a value as JSON with object keys sorted, so output is stable and
--- diffable. Empty tables are objects unless marked with util.array_mt.
---@param value any
---@param opts? {indent?: string|boolean}
---@return string
function M.json_encode(value, opts)
  local indent = opts and opts.indent
  if indent == true then indent = "  " end
  local out = {}
  encode(value, indent or nil, 0, out, {})
  return table.concat(out)
end

return M
