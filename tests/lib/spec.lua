-- tests/lib/spec.lua: a tiny busted-like runner for *_spec.lua files.
--
--   czctl run tests/lib/spec.lua tests/lua/undo_spec.lua [MORE_spec.lua ...]
--
-- Each spec file runs in its own environment holding describe, it,
-- before_each, after_each, pending and assert (nothing is added to the real
-- _G). Tests run after the whole file is loaded, in order; each prints a TAP
-- line "ok N - describe... it" or "not ok N - ..." followed by "# " lines
-- with the failure. The exit status is non-zero when any test failed or a
-- file could not be loaded. It must stay dependency-free: it tests the
-- library it would otherwise use.
local files = { ... }
if #files == 0 then
  io.stderr:write("usage: czctl run tests/lib/spec.lua FILE_spec.lua...\n")
  return 2
end

local function fmt_value(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  local seen = {}
  local function dump(t, depth)
    if type(t) ~= "table" then return type(t) == "string" and string.format("%q", t) or tostring(t) end
    if seen[t] then return "<cycle>" end
    if depth > 4 then return "{...}" end
    seen[t] = true
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      if type(a) == type(b) and (type(a) == "number" or type(a) == "string") then return a < b end
      return type(a) < type(b)
    end)
    local parts = {}
    for _, k in ipairs(keys) do
      local ks = math.type(k) == "integer" and "" or (type(k) == "string" and k:match("^[%a_][%w_]*$") and k .. "=" or "[" .. tostring(k) .. "]=")
      parts[#parts + 1] = ks .. dump(t[k], depth + 1)
    end
    seen[t] = nil
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  return dump(v, 0)
end

-- Deep comparison; returns nil when equal, else the path of the first difference.
local function diff(a, b, path)
  if a == b then return nil end
  if type(a) ~= "table" or type(b) ~= "table" then return path end
  for k, v in pairs(a) do
    local d = diff(v, b[k], path .. "." .. tostring(k))
    if d then return d end
  end
  for k in pairs(b) do
    if a[k] == nil then return path .. "." .. tostring(k) end
  end
  return nil
end

local Failure = {}
Failure.__tostring = function(f) return f.message end

local function fail(message, level)
  error(setmetatable({ message = message }, Failure), (level or 2) + 1)
end

local function describe_error(e)
  if type(e) == "table" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then return tostring(e) end
    return fmt_value(e)
  end
  return tostring(e)
end

local assert_table = {}

function assert_table.equal(expected, actual, msg)
  if expected ~= actual then
    fail((msg and msg .. ": " or "") .. "expected " .. fmt_value(expected) .. ", got " .. fmt_value(actual))
  end
end

function assert_table.not_equal(unexpected, actual, msg)
  if unexpected == actual then
    fail((msg and msg .. ": " or "") .. "expected anything but " .. fmt_value(actual))
  end
end

function assert_table.same(expected, actual, msg)
  local d = diff(expected, actual, "")
  if d then
    fail((msg and msg .. ": " or "") .. "tables differ at " .. (d == "" and "the top" or d:sub(2))
         .. "\nexpected " .. fmt_value(expected) .. "\n     got " .. fmt_value(actual))
  end
end

function assert_table.truthy(v, msg)
  if not v then fail((msg and msg .. ": " or "") .. "expected a truthy value, got " .. fmt_value(v)) end
  return v
end

function assert_table.falsy(v, msg)
  if v then fail((msg and msg .. ": " or "") .. "expected a falsy value, got " .. fmt_value(v)) end
end

function assert_table.is_nil(v, msg)
  if v ~= nil then fail((msg and msg .. ": " or "") .. "expected nil, got " .. fmt_value(v)) end
end

--- match(pattern, actual): a Lua pattern search.
function assert_table.match(pattern, actual, msg)
  if type(actual) ~= "string" or not actual:find(pattern) then
    fail((msg and msg .. ": " or "") .. "expected " .. fmt_value(actual) .. " to match " .. fmt_value(pattern))
  end
end

--- The error raised by fn, after checking it matches pattern (plain text
--- search first, then a Lua pattern). Returns the error value.
function assert_table.error_matches(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then fail((msg and msg .. ": " or "") .. "expected an error matching " .. fmt_value(pattern) .. ", got none") end
  local text = describe_error(err)
  if not (text:find(pattern, 1, true) or text:find(pattern)) then
    fail((msg and msg .. ": " or "") .. "expected an error matching " .. fmt_value(pattern) .. ", got " .. fmt_value(text))
  end
  return err
end

--- The error raised by fn (fails when fn does not raise).
function assert_table.has_error(fn, msg)
  local ok, err = pcall(fn)
  if ok then fail((msg and msg .. ": " or "") .. "expected an error, got none") end
  return err
end

function assert_table.not_nil(v, msg)
  if v == nil then fail((msg and msg .. ": " or "") .. "expected a value, got nil") end
  return v
end

--- fn must not raise; returns what it returns.
function assert_table.no_error(fn, msg)
  local res = table.pack(pcall(fn))
  if not res[1] then fail((msg and msg .. ": " or "") .. "expected no error, got " .. describe_error(res[2])) end
  return table.unpack(res, 2, res.n)
end

-- A few busted spellings, so specs written from habit still work.
assert_table.are = assert_table
assert_table.is = assert_table
assert_table.equals = assert_table.equal
assert_table.are_equal = assert_table.equal
assert_table.are_same = assert_table.same
assert_table.matches = assert_table.match
assert_table.has_errors = assert_table.has_error
assert_table.is_not_nil = assert_table.not_nil
assert_table.has_no_error = assert_table.no_error
function assert_table.is_true(v, msg) assert_table.equal(true, v, msg) end
function assert_table.is_false(v, msg) assert_table.equal(false, v, msg) end

-- assert(v, msg) still works like Lua's own assert.
setmetatable(assert_table, { __call = function(_, v, msg, ...)
  if not v then fail(msg or "assertion failed!") end
  return v, msg, ...
end })

-- ---------------------------------------------------------------------------

local total, failed = 0, 0

local function tap_comment(text)
  for line in (tostring(text) .. "\n"):gmatch("(.-)\n") do print("# " .. line) end
end

local function run_file(path)
  local root = { name = nil, children = {}, before = {}, after = {} }
  local current = root
  local env
  local function describe(name, body)
    local node = { name = name, children = {}, before = {}, after = {}, parent = current }
    current.children[#current.children + 1] = { kind = "describe", node = node }
    local saved = current
    current = node
    body()
    current = saved
  end
  local function it(name, body)
    current.children[#current.children + 1] = { kind = "it", name = name, body = body }
  end
  local function pending(name)
    current.children[#current.children + 1] = { kind = "pending", name = name }
  end
  local function before_each(fn) current.before[#current.before + 1] = fn end
  local function after_each(fn) current.after[#current.after + 1] = fn end

  env = setmetatable({
    describe = describe, it = it, pending = pending,
    before_each = before_each, after_each = after_each,
    assert = assert_table, spec_file = path,
  }, { __index = _G })

  local f, err = io.open(path, "rb")
  if not f then
    total, failed = total + 1, failed + 1
    print(string.format("not ok %d - %s could not be read", total, path))
    tap_comment(err)
    return
  end
  local code = f:read("a")
  f:close()
  local dir = path:match("^(.*)/[^/]*$") or "."
  local saved_path = package.path
  package.path = dir .. "/?.lua;" .. package.path
  local chunk, lerr = load(code, "@" .. path, "t", env)
  local ok, perr
  if chunk then
    ok, perr = xpcall(chunk, debug.traceback)
  else
    ok, perr = false, lerr
  end
  if not ok then
    total, failed = total + 1, failed + 1
    print(string.format("not ok %d - %s could not be loaded", total, path))
    tap_comment(perr)
    package.path = saved_path
    return
  end

  local function hooks(node, kind, list)
    if node.parent then hooks(node.parent, kind, list) end
    for _, fn in ipairs(node[kind]) do list[#list + 1] = fn end
    return list
  end

  local function run_node(node, prefix)
    for _, child in ipairs(node.children) do
      if child.kind == "describe" then
        run_node(child.node, prefix .. child.node.name .. " ")
      elseif child.kind == "pending" then
        total = total + 1
        print(string.format("ok %d - %s%s # SKIP pending", total, prefix, child.name))
      else
        total = total + 1
        local name = prefix .. child.name
        local problems = {}
        local function protect(fn)
          local okf, e = xpcall(fn, function(x)
            if getmetatable(x) == Failure then
              local where = debug.traceback("", 2):match("\n%s*(" .. path:gsub("%p", "%%%0") .. ":%d+):")
              return (where and where .. ": " or "") .. x.message
            end
            -- the runner's own frames say nothing about the spec
            local tb = debug.traceback(describe_error(x), 2)
            return (tb:gsub("\n%s*%[C%]: in function 'xpcall'.*$", ""))
          end)
          if not okf then problems[#problems + 1] = e end
          return okf
        end
        local before_ok = true
        for _, fn in ipairs(hooks(node, "before", {})) do
          if not protect(fn) then before_ok = false; break end
        end
        if before_ok then protect(child.body) end
        local afters = hooks(node, "after", {})
        for i = #afters, 1, -1 do protect(afters[i]) end
        if #problems == 0 then
          print(string.format("ok %d - %s", total, name))
        else
          failed = failed + 1
          print(string.format("not ok %d - %s", total, name))
          for _, p in ipairs(problems) do tap_comment(p) end
        end
      end
    end
  end
  run_node(root, "")
  package.path = saved_path
end

for _, path in ipairs(files) do run_file(path) end
print("1.." .. total)
io.stdout:flush()
return failed > 0 and 1 or 0
