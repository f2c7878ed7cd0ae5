-- czctl.cli: the command line. Finds the command (a built-in such as help,
-- version, recipe list/show and run, or a recipe NOUN-VERB from the user's
-- recipe directories or the binary), parses its flags from the recipe's
-- declarations, gives the recipe a ctx, and turns every way a run can end
-- (result, error, usage error, signal) into one line for the user and an
-- exit code: 0 ok, 1 failed, 2 usage, 128+N interrupted.
--
-- It knows nothing about Kubernetes or intercepts: ctx.kube() only forwards
-- the declared kubeconfig/context/namespace flags to czctl.kube. main() is
-- the only place that prints fatal errors; nothing below it calls os.exit.
local util = require "czctl.util"

local M = {}

-- ---------------------------------------------------------------------------
-- Error values raised inside the runner

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

local function raise_usage(message) error(M.usage_error(message), 0) end

local function fail(message) error(setmetatable({ message = message }, Failure), 0) end

local function one_line(s)
  return (tostring(s):gsub("%s*\n%s*", " "))
end

-- The text of an error value: strings as they are, tables via __tostring or
-- their message field.
local function error_text(e)
  if type(e) == "table" then
    local mt = getmetatable(e)
    if mt and mt.__tostring then return tostring(e) end
    if e.message ~= nil then return tostring(e.message) end
    return "(error object without a message)"
  end
  return tostring(e)
end

-- ---------------------------------------------------------------------------
-- Flag declarations

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
local function prepare_spec(recipe, what)
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
local function spellings(decl)
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
    local ok = false
    for _, c in ipairs(decl.choices) do if c == raw then ok = true end end
    if not ok then
      local hint = util.closest(raw, decl.choices)
      raise_usage(string.format("invalid value %q for flag %s: expected one of %s%s", raw, spelled,
                                table.concat(decl.choices, ", "),
                                hint and string.format("; did you mean %q?", hint) or ""))
    end
  end
  return raw
end

local function arg_label(a)
  return a.metavar or util.kebab(a.name):upper()
end

--- Parse argv against flag and argument declarations.
---@param flag_decls table[] normalised declarations (see prepare_spec)
---@param arg_decls table[]
---@param argv string[]
---@param opts? {command?: string, getenv?: fun(name: string): string|nil}
---@return {flags: table, args: table, positional: string[], sources: table<string, "flag"|"env"|"default">}
function M.parse(flag_decls, arg_decls, argv, opts)
  opts = opts or {}
  local getenv = opts.getenv or os.getenv
  local command = opts.command or "czctl"
  local long, short, candidates = {}, {}, {}
  for _, d in ipairs(flag_decls) do
    for _, s in ipairs(spellings(d)) do
      long[s] = d
      candidates[#candidates + 1] = "--" .. s
    end
    if d.type == "boolean" then candidates[#candidates + 1] = "--no-" .. util.kebab(d.name) end
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

  local only_positional = false
  while i <= n do
    local a = argv[i]
    if only_positional then
      positional[#positional + 1] = a
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
        raise_usage(string.format("missing argument %s", arg_label(ad)))
      end
      args[ad.name], args[idx] = rest, rest
    else
      local v = positional[k]
      k = k + 1
      if v == nil then
        if ad.required then raise_usage(string.format("missing argument %s", arg_label(ad))) end
        v = ad.default
      end
      args[ad.name], args[idx] = v, v
    end
  end
  if k <= #positional then
    raise_usage(string.format("unexpected argument %q", positional[k]))
  end
  return { flags = flags, args = args, positional = positional, sources = sources }
end

-- ---------------------------------------------------------------------------
-- Help text

local function default_text(d)
  local parts = {}
  if d.env then parts[#parts + 1] = "$" .. d.env end
  local v = d.default
  if v ~= nil and not (d.type == "boolean" and v == false) then
    if type(v) == "table" then
      local items = {}
      for _, x in ipairs(v) do items[#items + 1] = string.format("%q", tostring(x)) end
      parts[#parts + 1] = "[" .. table.concat(items, ", ") .. "]"
    elseif type(v) == "string" then
      parts[#parts + 1] = string.format("%q", v)
    else
      parts[#parts + 1] = tostring(v)
    end
  end
  if #parts == 0 then return nil end
  return "default " .. table.concat(parts, ", else ")
end

local function flag_rows(decls)
  local rows = {}
  for _, d in ipairs(decls) do
    local left = (d.short and ("-" .. d.short .. ", ") or "    ") .. "--" .. util.kebab(d.name)
    if d.type ~= "boolean" then
      left = left .. " " .. (d.metavar or (d.type == "list" and "string" or d.type))
    end
    local notes = {}
    local alts = {}
    for _, s in ipairs(spellings(d)) do
      if s ~= util.kebab(d.name) then alts[#alts + 1] = "--" .. s end
    end
    if #alts > 0 then notes[#notes + 1] = "also " .. table.concat(alts, ", ") end
    if d.type == "list" then notes[#notes + 1] = "repeatable" end
    if d.choices then notes[#notes + 1] = "one of " .. table.concat(d.choices, ", ") end
    if d.required then notes[#notes + 1] = "required" end
    local dt = default_text(d)
    if dt then notes[#notes + 1] = dt end
    local text = d.help or ""
    if #notes > 0 then text = text .. (text ~= "" and " " or "") .. "(" .. table.concat(notes, "; ") .. ")" end
    rows[#rows + 1] = { left, text }
  end
  return rows
end

local function format_rows(rows)
  local width = 0
  for _, r in ipairs(rows) do width = math.max(width, utf8.len(r[1]) or #r[1]) end
  local lines = {}
  for _, r in ipairs(rows) do
    local pad = string.rep(" ", width - (utf8.len(r[1]) or #r[1]) + 3)
    lines[#lines + 1] = ("  " .. r[1] .. (r[2] ~= "" and pad .. r[2] or "")):gsub("%s+$", "")
  end
  return table.concat(lines, "\n")
end

local function usage_words(recipe, arg_decls)
  if recipe.usage then return recipe.usage end
  local words = {}
  for _, a in ipairs(arg_decls) do
    local w = arg_label(a) .. (a.variadic and "..." or "")
    words[#words + 1] = a.required and w or "[" .. w .. "]"
  end
  return table.concat(words, " ")
end

--- Help text generated from a recipe's declarations.
---@param command string e.g. "service intercept"
---@param recipe table
---@return string
function M.help_text(command, recipe)
  local flags, args = prepare_spec(recipe, command)
  local out = {}
  if recipe.summary then out[#out + 1] = recipe.summary .. "\n" end
  local usage = usage_words(recipe, args)
  if not usage:find("flags", 1, true) then usage = util.trim(usage .. " [flags]") end
  out[#out + 1] = "Usage:\n  czctl " .. command .. " " .. usage .. "\n"
  if recipe.description then out[#out + 1] = util.trim(recipe.description) .. "\n" end
  if #args > 0 then
    local rows = {}
    for _, a in ipairs(args) do
      local notes = {}
      if a.required then notes[#notes + 1] = "required" end
      if a.default ~= nil then notes[#notes + 1] = string.format("default %q", tostring(a.default)) end
      local text = a.help or ""
      if #notes > 0 then text = text .. (text ~= "" and " " or "") .. "(" .. table.concat(notes, "; ") .. ")" end
      rows[#rows + 1] = { arg_label(a) .. (a.variadic and "..." or ""), text }
    end
    out[#out + 1] = "Arguments:\n" .. format_rows(rows) .. "\n"
  end
  local own, global = {}, {}
  for _, d in ipairs(flags) do
    if d.global then global[#global + 1] = d else own[#own + 1] = d end
  end
  if #own > 0 then out[#out + 1] = "Flags:\n" .. format_rows(flag_rows(own)) .. "\n" end
  out[#out + 1] = "Global flags:\n" .. format_rows(flag_rows(global)) .. "\n"
  if recipe.examples and #recipe.examples > 0 then
    local ex = {}
    for _, e in ipairs(recipe.examples) do ex[#ex + 1] = "  " .. e end
    out[#out + 1] = "Examples:\n" .. table.concat(ex, "\n") .. "\n"
  end
  return table.concat(out, "\n")
end

-- ---------------------------------------------------------------------------
-- Recipe registry: user directories first, then the built-ins.

local function valid_recipe_name(name)
  return type(name) == "string" and name:match("^[%w][%w_.%-]*$") ~= nil and not name:find("%.%.")
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data, rerr = f:read("a")
  f:close()
  if not data then return nil, path .. ": " .. tostring(rerr) end
  return data
end

---@class czctl.Registry
local Registry = {}
Registry.__index = Registry

--- A recipe registry. opts (all optional, for tests): getenv, config_dir
--- (function returning the czctl config directory), embed (a table like
--- czctl.core.embed), listdir (function(path) -> names|nil).
---@return czctl.Registry
function M.registry(opts)
  opts = opts or {}
  local reg = setmetatable({}, Registry)
  reg.getenv = opts.getenv or os.getenv
  reg.config_dir = opts.config_dir
  reg.embed = opts.embed
  reg.listdir = opts.listdir
  if not (reg.config_dir and reg.embed and reg.listdir) then
    local sys = require "czctl.core.sys"
    reg.config_dir = reg.config_dir or sys.config_dir
    reg.listdir = reg.listdir or sys.listdir
    reg.embed = reg.embed or require "czctl.core.embed"
  end
  return reg
end

--- User recipe directories in precedence order.
---@return string[]
function Registry:dirs()
  local dirs = {}
  local path = self.getenv("CZCTL_RECIPE_PATH")
  if path and path ~= "" then
    for _, d in ipairs(util.split(path, ":")) do
      if d ~= "" then dirs[#dirs + 1] = (d:gsub("/+$", "")) end
    end
  end
  local cfg = self.config_dir()
  if cfg then dirs[#dirs + 1] = cfg .. "/recipes" end
  return dirs
end

local function is_builtin(reg, name)
  for _, b in ipairs(reg.embed.recipes()) do if b == name then return true end end
  return false
end

--- Find a recipe by name: { name, source = "built-in"|path, path?, code,
--- chunkname, builtin = bool, overrides = bool } or nil.
---@param name string
---@return table|nil
function Registry:find(name)
  if not valid_recipe_name(name) then return nil end
  for _, dir in ipairs(self:dirs()) do
    local path = dir .. "/" .. name .. ".lua"
    local code, err = read_file(path)
    if code then
      return { name = name, source = path, path = path, code = code, chunkname = "@" .. path,
               builtin = false, overrides = is_builtin(self, name) }
    end
    if err and not err:find("No such file or directory", 1, true) then
      fail("cannot read recipe " .. name .. ": " .. err)
    end
  end
  local code, chunkname = self.embed.recipe_source(name)
  if code then
    return { name = name, source = "built-in", code = code, chunkname = chunkname,
             builtin = true, overrides = false }
  end
  return nil
end

--- Every recipe name visible, sorted, each resolved as find() would.
---@return table[]
function Registry:list()
  local names, seen = {}, {}
  for _, dir in ipairs(self:dirs()) do
    for _, file in ipairs(self.listdir(dir) or {}) do
      local name = file:match("^(.+)%.lua$")
      if name and valid_recipe_name(name) and not seen[name] then
        seen[name] = true
        names[#names + 1] = name
      end
    end
  end
  for _, name in ipairs(self.embed.recipes()) do
    if not seen[name] then seen[name] = true; names[#names + 1] = name end
  end
  table.sort(names)
  local list = {}
  for _, name in ipairs(names) do
    local ok, rec = pcall(self.find, self, name)
    if ok and rec then list[#list + 1] = rec end
  end
  return list
end

-- "service-intercept" -> "service intercept"
local function command_name(recipe_name) return (recipe_name:gsub("%-", " ", 1)) end

-- ---------------------------------------------------------------------------
-- Loading recipes and scripts

-- Run a chunk, catching errors with a traceback for --debug.
local function traceback_handler(e)
  local tb
  if type(e) == "string" then
    tb = debug.traceback(e, 2)
  else
    tb = debug.traceback(error_text(e), 2)
  end
  local record = { value = e, traceback = tb }
  -- error("message") and assert(x, "message") are how a recipe says what
  -- went wrong: show the message alone. Their position prefix names the
  -- caller's line; a message carrying another position (a rethrown runtime
  -- error) keeps it.
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

local function new_env(extra)
  local env = {}
  for k, v in pairs(extra or {}) do env[k] = v end
  return setmetatable(env, { __index = _G })
end

-- Load and run a recipe file's top level; returns the recipe table or raises
-- a caught-error record ({value=, traceback=, what=}).
local function load_recipe(rec)
  local what = "recipe " .. rec.name
  local chunk, err = load(rec.code, rec.chunkname, "t", new_env())
  if not chunk then
    error({ value = err, syntax = true, what = what }, 0)
  end
  local ok, res = xpcall(chunk, traceback_handler, rec.name)
  if not ok then
    res.what = what
    error(res, 0)
  end
  return res
end

M.load_recipe = load_recipe

-- ---------------------------------------------------------------------------
-- The runner

local function writer(stream)
  return function(s) stream:write(s); stream:flush() end
end

local function flag_decl(flags, name)
  for _, d in ipairs(flags) do if d.name == name then return d end end
end

-- Build the ctx a recipe runs with.
local function make_ctx(cmd, spec_flags, parsed, state)
  local output = require "czctl.output"
  local undo = require "czctl.undo"
  local flags = parsed.flags
  local mode = "normal"
  local quiet_decl, output_decl = flag_decl(spec_flags, "quiet"), flag_decl(spec_flags, "output")
  if quiet_decl and quiet_decl.type == "boolean" and flags.quiet then mode = "quiet" end
  if output_decl and flags.output == "json" then mode = "json" end
  local verbose = state.verbose or flags.verbose == true
  local debug_on = state.debug or flags.debug == true
  local ctx = {
    recipe = cmd.name,
    command = cmd.display,
    args = parsed.args,
    flags = flags,
    positional = parsed.positional,
    sources = parsed.sources, -- per flag: "flag" (given), "env" or "default"
    verbose = verbose,
    debug = debug_on,
    undo = state.undo or undo.new(),
    out = output.new{ mode = mode, verbose = verbose, stdout = state.stdout, stderr = state.stderr },
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
                                 namespace = flags.namespace, verbose = verbose }
    if not c then error(err or "cannot connect to the cluster", 0) end
    client = c
    return c
  end
  --- Stop with a usage error (exit 2) naming the command's help.
  function ctx.usage_error(msg, ...)
    if select("#", ...) > 0 then msg = string.format(msg, ...) end
    error(M.usage_error(msg), 0)
  end
  --- Stop with "czctl: error: MESSAGE" (exit 1), without a file:line.
  function ctx.fail(msg, ...)
    if select("#", ...) > 0 then msg = string.format(msg, ...) end
    fail(msg)
  end
  return ctx
end

-- Run the undo stack (signals shielded), showing each step; returns steps
-- run and failures. When a step failed, tells the user how to finish
-- (the stack's remedy, e.g. "czctl session close ID -n NS").
local function rollback(ctx, state)
  local stack = ctx.undo
  if stack:size() == 0 then return 0, {} end
  local ran, failed = stack:run{
    on_step = function(description, fn)
      return ctx.out:step("undo: " .. description, fn)
    end,
    on_error = function(description, err)
      state.stderr(string.format("czctl: undo step %q failed: %s\n", description,
                                 one_line(error_text(err))))
    end,
  }
  local remedy = #failed > 0 and stack.remedy and stack:remedy() or nil
  return ran, failed, remedy
end

-- Print the one line for a caught error and return the exit code. caught is
-- a traceback_handler record (value, traceback) plus what/syntax.
local function report_error(caught, hint, state, quiet)
  local e = caught.value
  local line, code
  if M.is_usage_error(e) then
    line = "czctl: " .. one_line(e.message) .. (hint and " (see " .. hint .. ")" or "")
    code = 2
  elseif type(e) == "string" and caught.message then
    line = "czctl: error: " .. one_line(caught.message)
    code = 1
  elseif type(e) == "string" then
    local loc, msg = e:match("^(.-:%d+): (.*)$")
    if loc and caught.what then
      if caught.syntax then
        line = string.format("czctl: syntax error in %s (%s): %s", caught.what, loc, one_line(msg))
      else
        line = string.format("czctl: error in %s (%s): %s", caught.what, loc, one_line(msg))
      end
    else
      line = "czctl: error: " .. one_line(e)
    end
    code = 1
  else
    line = "czctl: error: " .. one_line(error_text(e))
    code = 1
  end
  state.stderr(line .. "\n")
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

-- Run fn(ctx) under the rules every command shares: errors and signals roll
-- back ctx.undo and become one line and an exit code.
local function supervise(fn, ctx, what, hint, state)
  local sys = state.sys
  local ok, res = xpcall(fn, traceback_handler, ctx)
  local sig
  if ok then
    sig = sys and sys.pending_signal()
    if not sig then return exit_code_of(res) end
  else
    local signal = require "czctl.signal"
    if signal.is_interrupt(res.value) then sig = res.value.signal
    else sig = sys and sys.pending_signal() end
  end
  if sig then
    local signal = require "czctl.signal"
    sys.clear_signal()   -- let the undo steps' own calls run (shielded)
    local ran, failed, remedy = rollback(ctx, state)
    if ctx.out.mode ~= "quiet" or remedy then
      local line = "czctl: interrupted (" .. sig .. ")"
      if ran + #failed > 0 then
        line = line .. string.format(", rolled back %d step%s", ran, ran == 1 and "" or "s")
        if #failed > 0 then line = line .. string.format(" (%d failed)", #failed) end
      end
      if remedy then line = line .. "; finish the cleanup with: " .. remedy end
      state.stderr(line .. "\n")
    end
    return signal.exit_code(sig)
  end
  local _, _, remedy = rollback(ctx, state)
  res.what = res.what or what
  local code = report_error(res, hint, state)
  if remedy then state.stderr("czctl: the rollback is incomplete; finish it with: " .. remedy .. "\n") end
  return code
end

-- ---------------------------------------------------------------------------
-- Built-in commands

local BUILTINS = {
  { name = "help", usage = "[COMMAND]", summary = "Show help for czctl or a command" },
  { name = "version", usage = "", summary = "Print the version of czctl and its libraries" },
  { name = "recipe list", usage = "", summary = "List recipes and where each comes from" },
  { name = "recipe show", usage = "NAME", summary = "Print a recipe's source (to read or copy)" },
  { name = "run", usage = "FILE.lua [ARGS...]", summary = "Run a Lua script or recipe file with the czctl API" },
}

local function builtin_names()
  local list = {}
  for _, b in ipairs(BUILTINS) do list[#list + 1] = b.name end
  return list
end

local function recipe_summary(rec)
  local ok, recipe = pcall(load_recipe, rec)
  if not ok then
    local e = recipe
    local text = type(e) == "table" and e.value ~= nil and error_text(e.value) or error_text(e)
    return "(cannot load: " .. one_line(text) .. ")", nil
  end
  if type(recipe) ~= "table" then return "(not a recipe: returns " .. type(recipe) .. ")", nil end
  return recipe.summary or "", recipe
end

local function general_help(reg)
  local out = {}
  out[#out + 1] = "czctl: intercept traffic to a Kubernetes Service and send it to your machine.\n"
  out[#out + 1] = "Usage:\n  czctl COMMAND [ARGS...] [flags]\n"
  local rows = {}
  for _, rec in ipairs(reg:list()) do
    local summary, recipe = recipe_summary(rec)
    if not (recipe and recipe.hidden) then rows[#rows + 1] = { command_name(rec.name), summary } end
  end
  if #rows > 0 then out[#out + 1] = "Commands:\n" .. format_rows(rows) .. "\n" end
  rows = {}
  for _, b in ipairs(BUILTINS) do
    rows[#rows + 1] = { b.name .. (b.usage ~= "" and " " .. b.usage or ""), b.summary }
  end
  out[#out + 1] = "Built-in commands:\n" .. format_rows(rows) .. "\n"
  out[#out + 1] = "Global flags:\n" .. format_rows(flag_rows(M.GLOBAL_FLAGS)) .. "\n"
  out[#out + 1] = "Recipes are Lua files. A NAME.lua in $CZCTL_RECIPE_PATH (colon-separated) or in\n"
    .. reg.config_dir() .. "/recipes overrides the built-in NAME;\n"
    .. "`czctl recipe show NAME` prints one to copy. `czctl help COMMAND` for details.\n"
  return table.concat(out, "\n")
end

local function builtin_help(b)
  local text = b.summary .. "\n\nUsage:\n  czctl " .. b.name .. (b.usage ~= "" and " " .. b.usage or "") .. "\n"
  if b.name == "run" then
    text = text .. "\nFILE runs with the same API as recipes. If it returns a recipe table, its\n"
      .. "flags are parsed from ARGS and it runs like a recipe; otherwise its top-level\n"
      .. "code runs with `arg` (arg[0] = FILE) and `...` set to ARGS, and `ctx` available.\n"
      .. "FILE's directory is added to package.path.\n"
  end
  return text .. "\nGlobal flags:\n" .. format_rows(flag_rows(M.GLOBAL_FLAGS)) .. "\n"
end

-- Resolve command words to { kind = "builtin"|"recipe"|"group", ... } and the
-- number of words used; nil when nothing matches.
local function resolve(reg, words)
  local w1, w2 = words[1], words[2]
  if w2 and w2:sub(1, 1) == "-" then w2 = nil end
  if w1 == "recipe" then
    if w2 == "list" or w2 == "show" then
      for _, b in ipairs(BUILTINS) do
        if b.name == "recipe " .. w2 then return { kind = "builtin", builtin = b, display = b.name }, 2 end
      end
    end
    return { kind = "group", noun = "recipe", verbs = { "list", "show" } }, 1
  end
  for _, b in ipairs(BUILTINS) do
    if b.name == w1 then return { kind = "builtin", builtin = b, display = b.name }, 1 end
  end
  if w2 then
    local rec = reg:find(w1 .. "-" .. w2)
    if rec then return { kind = "recipe", rec = rec, name = rec.name, display = w1 .. " " .. w2 }, 2 end
  end
  local rec = reg:find(w1)
  if rec then return { kind = "recipe", rec = rec, name = rec.name, display = command_name(rec.name) }, 1 end
  local verbs = {}
  for _, r in ipairs(reg:list()) do
    local verb = r.name:match("^" .. w1:gsub("%p", "%%%0") .. "%-(.+)$")
    if verb then verbs[#verbs + 1] = verb end
  end
  if #verbs > 0 then return { kind = "group", noun = w1, verbs = verbs }, 1 end
  return nil
end

local function unknown_command(reg, words)
  local typed = words[1]
  if words[2] and words[2]:sub(1, 1) ~= "-" then typed = words[1] .. " " .. words[2] end
  local candidates = builtin_names()
  for _, r in ipairs(reg:list()) do
    candidates[#candidates + 1] = command_name(r.name)
    if r.name:find("-", 1, true) then candidates[#candidates + 1] = r.name end
  end
  local hint = util.closest(typed, candidates)
  if not hint and typed ~= words[1] then
    hint = util.closest(words[1], candidates)
    typed = hint and words[1] or typed
  end
  raise_usage(string.format("unknown command %q%s", typed,
                            hint and string.format("; did you mean %q?", hint) or ""))
end

local function print_recipe_list(reg, state)
  local rows = {}
  for _, rec in ipairs(reg:list()) do
    local source = rec.source
    if rec.overrides then source = source .. " (overrides built-in)" end
    rows[#rows + 1] = { rec.name, source, (recipe_summary(rec)) }
  end
  state.stdout(require("czctl.output").table({ "NAME", "SOURCE", "SUMMARY" }, rows))
  return 0
end

local function strip_globals(words, state)
  -- Global flags may come before the command (czctl --debug run x.lua).
  local rest, i = {}, 1
  while i <= #words do
    local w = words[i]
    if w == "--debug" then state.debug = true
    elseif w == "--verbose" then state.verbose = true
    elseif w == "--help" or w == "-h" then state.help = true
    else break end
    i = i + 1
  end
  if words[i] and words[i]:sub(1, 1) == "-" and words[i] ~= "-" and words[i] ~= "--" then
    local hint = util.closest(words[i], { "--help", "--verbose", "--debug" })
    raise_usage(string.format("unknown flag %q%s", words[i],
                              hint and string.format("; did you mean %q?", hint) or ""))
  end
  for j = i, #words do rest[#rest + 1] = words[j] end
  return rest
end

local function has_help(argv)
  for _, a in ipairs(argv) do
    if a == "--" then return false end
    if a == "--help" or a == "-h" then return true end
  end
  return false
end

-- Parse a recipe's ARGS and run it (recipes from the registry and recipe
-- tables returned by `czctl run` scripts).
local function run_recipe(recipe, cmd, argv, state)
  local hint = "czctl " .. cmd.help_command .. " --help"
  state.hint = hint
  local flags, args = prepare_spec(recipe, cmd.what)
  if has_help(argv) then
    state.stdout(M.help_text(cmd.display, recipe))
    return 0
  end
  local parsed = M.parse(flags, args, argv, { command = cmd.display })
  if parsed.flags.debug then state.debug = true end
  if parsed.flags.verbose then state.verbose = true end
  local ctx = make_ctx(cmd, flags, parsed, state)
  return supervise(recipe.run, ctx, cmd.what, hint, state)
end

local function run_script(words, state)
  local path = words[1]
  local argv = {}
  for i = 2, #words do argv[#argv + 1] = words[i] end
  local code, err = read_file(path)
  if not code then fail("cannot read " .. path .. ": " .. tostring(err):gsub("^" .. path:gsub("%p", "%%%0") .. ": ", "")) end
  if code:sub(1, 1) == "#" then code = "--" .. code end   -- shebang line, keep line numbers
  local what = "script " .. path
  local arg = { [0] = path }
  for i, a in ipairs(argv) do arg[i] = a end
  local dir = util.dirname(path)
  package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
  local cmd = { name = util.basename(path):gsub("%.lua$", ""), display = "run " .. path,
                what = what, help_command = "run " .. path }
  local ctx = make_ctx(cmd, {}, { flags = {}, args = {}, positional = argv, sources = {} }, state)
  state.undo = ctx.undo
  local chunk, lerr = load(code, "@" .. path, "t", new_env{ arg = arg, ctx = ctx })
  if not chunk then
    return report_error({ value = lerr, syntax = true, what = what }, nil, state)
  end
  local returned
  local status = supervise(function() returned = table.pack(chunk(table.unpack(argv))); return returned[1] end,
                           ctx, what, nil, state)
  if status ~= 0 or not returned then return status end
  local value = returned[1]
  if type(value) == "table" and type(value.run) == "function" then
    return run_recipe(value, cmd, argv, state)
  end
  return status
end

local function dispatch(args, state)
  local reg = state.registry or M.registry()
  state.registry = reg
  local words = strip_globals(args, state)
  if #words == 0 then
    state.stdout(general_help(reg))
    return 0
  end
  if words[1] == "run" then
    local rest = strip_globals({ table.unpack(words, 2) }, state)
    if state.help or #rest == 0 then
      if state.help then state.stdout(builtin_help(BUILTINS[5])); return 0 end
      raise_usage("run needs a FILE.lua")
    end
    return run_script(rest, state)
  end
  if words[1] == "help" then
    local topic = {}
    for i = 2, #words do
      if words[i]:sub(1, 1) ~= "-" then topic[#topic + 1] = words[i] end
    end
    if #topic == 0 then state.stdout(general_help(reg)); return 0 end
    local cmd = resolve(reg, topic)
    if not cmd then unknown_command(reg, topic) end
    return M.print_help(cmd, reg, state)
  end
  local cmd, used = resolve(reg, words)
  if not cmd then unknown_command(reg, words) end
  local argv = {}
  for i = used + 1, #words do argv[#argv + 1] = words[i] end
  if state.help or (cmd.kind ~= "recipe" and has_help(argv)) then
    return M.print_help(cmd, reg, state)
  end
  if cmd.kind == "group" then
    state.hint = "czctl help " .. cmd.noun
    if argv[1] and argv[1]:sub(1, 1) ~= "-" then unknown_command(reg, { cmd.noun, argv[1] }) end
    raise_usage(string.format("%q needs a command: %s", cmd.noun, table.concat(cmd.verbs, ", ")))
  end
  if cmd.kind == "builtin" then
    local name = cmd.builtin.name
    state.hint = "czctl " .. name .. " --help"
    local positional = {}
    for _, a in ipairs(argv) do
      if a == "--debug" then state.debug = true
      elseif a == "--verbose" then state.verbose = true
      elseif a:sub(1, 1) == "-" and a ~= "-" then
        local hint = util.closest(a, { "--help", "--verbose", "--debug" })
        raise_usage(string.format("unknown flag %q for %q%s", a, name,
                                  hint and string.format("; did you mean %q?", hint) or ""))
      else positional[#positional + 1] = a end
    end
    if name == "version" then
      if #positional > 0 then raise_usage(string.format("unexpected argument %q", positional[1])) end
      local embed = require "czctl.core.embed"
      local line2 = _VERSION
      local okn, net = pcall(require, "czctl.core.net")
      local curl = okn and net.curl_version
      if type(curl) == "function" then curl = curl() end
      if type(curl) == "string" then line2 = line2 .. ", libcurl " .. curl end
      state.stdout("czctl " .. embed.version .. "\n" .. line2 .. "\n")
      return 0
    elseif name == "recipe list" then
      if #positional > 0 then raise_usage(string.format("unexpected argument %q", positional[1])) end
      return print_recipe_list(reg, state)
    elseif name == "recipe show" then
      if #positional == 0 then raise_usage("recipe show needs a NAME (see czctl recipe list)") end
      local rname = table.concat(positional, "-")
      local rec = reg:find(rname)
      if not rec then
        local names = {}
        for _, r in ipairs(reg:list()) do names[#names + 1] = r.name end
        local hint = util.closest(rname, names)
        state.hint = "czctl recipe list"
        raise_usage(string.format("no recipe named %q%s", rname,
                                  hint and string.format("; did you mean %q?", hint) or ""))
      end
      state.stdout(rec.code)
      return 0
    end
  end
  -- a recipe
  local rec = cmd.rec
  cmd.what = "recipe " .. rec.name
  cmd.help_command = cmd.display
  state.hint = "czctl " .. cmd.display .. " --help"
  local ok, recipe = pcall(load_recipe, rec)
  if not ok then
    if type(recipe) == "table" and recipe.what then return report_error(recipe, nil, state) end
    error(recipe, 0)
  end
  return run_recipe(recipe, cmd, argv, state)
end

--- Print help for a resolved command.
function M.print_help(cmd, reg, state)
  if cmd.kind == "builtin" then
    state.stdout(builtin_help(cmd.builtin))
  elseif cmd.kind == "group" then
    local rows = {}
    for _, verb in ipairs(cmd.verbs) do
      local summary = ""
      if cmd.noun == "recipe" then
        for _, b in ipairs(BUILTINS) do if b.name == "recipe " .. verb then summary = b.summary end end
      else
        local rec = reg:find(cmd.noun .. "-" .. verb)
        local recipe
        if rec then summary, recipe = recipe_summary(rec) end
        if recipe and recipe.hidden then summary = nil end
      end
      if summary then rows[#rows + 1] = { cmd.noun .. " " .. verb, summary } end
    end
    state.stdout("Usage:\n  czctl " .. cmd.noun .. " COMMAND [flags]\n\nCommands:\n" .. format_rows(rows) .. "\n")
  else
    local ok, recipe = pcall(load_recipe, cmd.rec)
    if not ok then
      if type(recipe) == "table" and recipe.what then return report_error(recipe, nil, state) end
      error(recipe, 0)
    end
    state.stdout(M.help_text(cmd.display, recipe))
  end
  return 0
end

--- Entry point called by core/main.c with argv[1..]. Never raises; prints
--- every user-facing error itself and returns the exit code.
---@param args string[]
---@param opts? {stdout?: fun(s: string), stderr?: fun(s: string), registry?: czctl.Registry, sys?: table}
---@return integer
function M.main(args, opts)
  opts = opts or {}
  local state = {
    stdout = opts.stdout or writer(io.stdout),
    stderr = opts.stderr or writer(io.stderr),
    registry = opts.registry,
    sys = opts.sys,
  }
  if not state.sys then
    local ok, sys = pcall(require, "czctl.core.sys")
    state.sys = ok and sys or nil
  end
  local ok, res = xpcall(dispatch, traceback_handler, args, state)
  if ok then return res end
  local e = res.value
  if M.is_usage_error(e) then
    return report_error(res, state.hint or "czctl help", state)
  end
  if type(e) == "table" and e.value ~= nil and (e.what or e.syntax) then
    return report_error(e, nil, state)
  end
  if getmetatable(e) == Failure then
    return report_error(res, nil, state)
  end
  -- a bug in czctl itself (or an error from the registry)
  res.what = "czctl"
  return report_error(res, nil, state)
end

return M
