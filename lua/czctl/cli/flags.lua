-- czctl.cli.flags: command-line parsing from declarations. Checks a
-- recipe's flag and argument declarations, adds the global flags, and parses
-- argv into flags, arguments and where each value came from. Usage errors
-- name the flag and suggest the closest spelling; nothing here prints.
local util = require "czctl.util"
local errors = require "czctl.cli.errors"

local M = {}

local raise_usage, fail = errors.raise_usage, errors.fail

M.GLOBAL_FLAGS = {
  { name = "help", short = "h", type = "boolean", help = "show help for the command" },
  { name = "verbose", type = "boolean", help = "show more detail (never secrets)" },
  { name = "debug", type = "boolean", help = "show Lua tracebacks on errors" },
}

local TYPES = { string = true, number = true, integer = true, boolean = true, list = true }

local function infer_type(decl)
  if decl.type then return decl.type end
  local d = decl.default
  if type(d) == "boolean" then return "boolean" end
  if math.type(d) == "integer" then return "integer" end
  if type(d) == "number" then return "number" end
  if type(d) == "table" then return "list" end
  return "string"
end

-- Check a recipe table and normalise its declarations (fills in types; adds
-- the global flags the recipe does not declare itself). Returns the list of
-- all flag declarations or raises a failure naming the problem.
---@param recipe table
---@param what string e.g. "recipe service-intercept" (for messages)
---@return table[] flags
---@return table[] args
function M.prepare_spec(recipe, what)
  if type(recipe) ~= "table" then
    fail(what .. " must return a table with a run function (got " .. type(recipe) .. ")")
  end
  if type(recipe.run) ~= "function" then
    fail(what .. " has no run function")
  end
  local flags, seen_long, seen_short = {}, {}, {}
  local declared = recipe.flags or {}
  if type(declared) ~= "table" then fail(what .. ": flags must be a list") end
  for i, d in ipairs(declared) do
    if type(d) ~= "table" or type(d.name) ~= "string" or not d.name:match("^%a[%w_%-]*$") then
      fail(what .. ": flag " .. i .. " needs a name made of letters, digits and dashes")
    end
    local t = infer_type(d)
    if not TYPES[t] then
      fail(string.format("%s: flag --%s has unknown type %q (string, number, integer, boolean, list)",
                         what, d.name, tostring(t)))
    end
    if d.short ~= nil and (type(d.short) ~= "string" or not d.short:match("^%w$")) then
      fail(what .. ": flag --" .. d.name .. " has a short alias that is not one letter")
    end
    if d.short == "h" then fail(what .. ": -h is reserved for --help") end
    local key = util.kebab(d.name)
    if seen_long[key] then fail(what .. ": flag --" .. d.name .. " is declared twice") end
    if d.short and seen_short[d.short] then fail(what .. ": -" .. d.short .. " is declared twice") end
    seen_long[key], seen_short[d.short or ""] = true, true
    local copy = {}
    for k, v in pairs(d) do copy[k] = v end
    copy.type = t
    flags[#flags + 1] = copy
  end
  for _, g in ipairs(M.GLOBAL_FLAGS) do
    if not seen_long[g.name] then
      local copy = {}
      for k, v in pairs(g) do copy[k] = v end
      copy.global = true
      flags[#flags + 1] = copy
    end
  end
  local args = recipe.args or {}
  if type(args) ~= "table" then fail(what .. ": args must be a list") end
  for i, a in ipairs(args) do
    if type(a) ~= "table" or type(a.name) ~= "string" then
      fail(what .. ": argument " .. i .. " needs a name")
    end
    if a.variadic and i ~= #args then
      fail(what .. ": only the last argument can be variadic")
    end
  end
  return flags, args
end

-- All spellings a flag accepts after "--": its name, kebab-case and camelCase.
---@param decl table
---@return string[]
function M.spellings(decl)
  local list, seen = {}, {}
  local function add(s) if not seen[s] then seen[s] = true; list[#list + 1] = s end end
  add(util.kebab(decl.name))
  add(decl.name)
  add(util.camel(decl.name))
  for _, a in ipairs(decl.aliases or {}) do add(a) end
  return list
end

local function parse_bool(raw)
  local v = tostring(raw):lower()
  if v == "true" or v == "1" or v == "yes" or v == "on" then return true end
  if v == "false" or v == "0" or v == "no" or v == "off" then return false end
  return nil
end

local function convert(decl, raw, spelled)
  local t = decl.type
  if t == "number" or t == "integer" then
    local n = tonumber(raw)
    if t == "integer" then n = n and math.tointeger(n) end
    if n == nil then
      raise_usage(string.format("invalid value %q for flag %s: expected %s", raw, spelled,
                                t == "integer" and "an integer" or "a number"))
    end
    return n
  elseif t == "boolean" then
    local b = parse_bool(raw)
    if b == nil then
      raise_usage(string.format("invalid value %q for flag %s: expected true or false", raw, spelled))
    end
    return b
  end
  if decl.choices then
    if not util.contains(decl.choices, raw) then
      local hint = util.closest(raw, decl.choices)
      raise_usage(string.format("invalid value %q for flag %s: expected one of %s%s", raw, spelled,
                                table.concat(decl.choices, ", "),
                                hint and string.format("; did you mean %q?", hint) or ""))
    end
  end
  return raw
end

---@param a table an argument declaration
---@return string
function M.arg_label(a)
  return a.metavar or util.kebab(a.name):upper()
end

--- Parse argv against flag and argument declarations. With opts.trailing
--- (a recipe that declares `command`), the words after the first `--` are
--- not arguments but a command to run, returned as `command` (nil when there
--- is no `--`; an empty `--` is a usage error); otherwise they are positional
--- arguments as any others.
---@param flag_decls table[] normalised declarations (see prepare_spec)
---@param arg_decls table[]
---@param argv string[]
---@param opts? {command?: string, getenv?: fun(name: string): string|nil, trailing?: boolean}
---@return {flags: table, args: table, positional: string[], sources: table<string, "flag"|"env"|"default">, command: string[]|nil}
function M.parse(flag_decls, arg_decls, argv, opts)
  opts = opts or {}
  local getenv = opts.getenv or os.getenv
  local command = opts.command or "czctl"
  local long, short, candidates = {}, {}, {}
  for _, d in ipairs(flag_decls) do
    for _, s in ipairs(M.spellings(d)) do
      long[s] = d
      if not d.hidden then candidates[#candidates + 1] = "--" .. s end
    end
    if d.type == "boolean" and not d.hidden then candidates[#candidates + 1] = "--no-" .. util.kebab(d.name) end
    if d.short then short[d.short] = d end
  end

  local function unknown(spelled)
    local hint = util.closest(spelled, candidates)
    raise_usage(string.format("unknown flag %q for %q%s", spelled, command,
                              hint and string.format("; did you mean %q?", hint) or ""))
  end

  local flags, sources, positional = {}, {}, {}
  local function set(d, v)
    if d.type == "list" then
      if sources[d.name] ~= "flag" then flags[d.name] = {} end
      local list = flags[d.name]
      list[#list + 1] = v
    else
      flags[d.name] = v
    end
    sources[d.name] = "flag"
  end

  local i, n = 1, #argv
  local function next_value(spelled)
    i = i + 1
    if i > n then raise_usage(string.format("flag %s needs a value", spelled)) end
    return argv[i]
  end

  local only_positional, trailing = false, nil
  while i <= n do
    local a = argv[i]
    if only_positional then
      positional[#positional + 1] = a
    elseif a == "--" and opts.trailing then
      trailing = { table.unpack(argv, i + 1, n) }
      if #trailing == 0 then raise_usage("-- must be followed by a command to run") end
      break
    elseif a == "--" then
      only_positional = true
    elseif a:sub(1, 2) == "--" then
      local name, value = a:sub(3):match("^([^=]+)=(.*)$")
      if not name then name = a:sub(3) end
      local spelled = "--" .. name
      local d, negated = long[name], false
      if not d then
        local base = name:match("^no%-(.+)$") or name:match("^no(%u.*)$")
        local b = base and (long[base] or long[base:sub(1, 1):lower() .. base:sub(2)])
        if b and b.type == "boolean" then d, negated = b, true end
      end
      if not d then unknown(spelled) end
      if d.type == "boolean" then
        local v = true
        if value then v = convert(d, value, spelled) end
        if negated then v = not v end
        set(d, v)
      else
        if value == nil then value = next_value(spelled) end
        set(d, convert(d, value, spelled))
      end
    elseif a:sub(1, 1) == "-" and #a > 1 and not (tonumber(a) and not short[a:sub(2, 2)]) then
      local j = 2
      while j <= #a do
        local c = a:sub(j, j)
        local d = short[c]
        if not d then unknown("-" .. c) end
        if d.type == "boolean" then
          local rest = a:sub(j + 1)
          if rest:sub(1, 1) == "=" then
            set(d, convert(d, rest:sub(2), "-" .. c))
            break
          end
          set(d, true)
          j = j + 1
        else
          local rest = a:sub(j + 1)
          if rest:sub(1, 1) == "=" then
            rest = rest:sub(2)
          elseif rest == "" then
            rest = next_value("-" .. c)
          end
          set(d, convert(d, rest, "-" .. c))
          break
        end
      end
    else
      positional[#positional + 1] = a
    end
    i = i + 1
  end

  for _, d in ipairs(flag_decls) do
    if sources[d.name] == nil then
      local env_value = d.env and getenv(d.env)
      if env_value ~= nil and env_value ~= "" then
        flags[d.name] = d.type == "list" and { env_value } or convert(d, env_value, "$" .. d.env)
        sources[d.name] = "env"
      elseif d.default ~= nil then
        flags[d.name] = util.deep_copy(d.default)
        sources[d.name] = "default"
      elseif d.type == "boolean" then
        flags[d.name] = false
      elseif d.type == "list" then
        flags[d.name] = {}
      end
    end
    if d.required and flags[d.name] == nil then
      raise_usage(string.format("required flag --%s is not set", util.kebab(d.name)))
    end
  end

  local args, k = {}, 1
  for idx, ad in ipairs(arg_decls) do
    if ad.variadic then
      local rest = {}
      for m = k, #positional do rest[#rest + 1] = positional[m] end
      k = #positional + 1
      if ad.required and #rest == 0 then
        raise_usage(string.format("missing argument %s", M.arg_label(ad)))
      end
      args[ad.name], args[idx] = rest, rest
    else
      local v = positional[k]
      k = k + 1
      if v == nil then
        if ad.required then raise_usage(string.format("missing argument %s", M.arg_label(ad))) end
        v = ad.default
      elseif ad.choices and not util.contains(ad.choices, v) then
        local hint = util.closest(v, ad.choices)
        raise_usage(string.format("invalid %s %q: expected one of %s%s", M.arg_label(ad), v,
                                  table.concat(ad.choices, ", "), hint and string.format("; did you mean %q?", hint) or ""))
      end
      args[ad.name], args[idx] = v, v
    end
  end
  if k <= #positional then
    raise_usage(string.format("unexpected argument %q", positional[k]))
  end
  return { flags = flags, args = args, positional = positional, sources = sources, command = trailing }
end

return M
