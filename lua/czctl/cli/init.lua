-- czctl.cli: the command line. Finds the command (a built-in such as help,
-- version, recipe list/show/copy, completion and run, or a recipe NOUN-VERB
-- from czctl.recipes), parses its flags from its declarations and runs it
-- under czctl.cli.runner, which turns every ending into one line (or a
-- Status document) and an exit code: 0 ok, 1 failed, 2 usage, 128+N
-- interrupted.
--
-- The top of the layers: nothing below it requires czctl.cli. It knows
-- nothing about Kubernetes or intercepts. main() is the only entry point;
-- nothing below it calls os.exit.
local util = require "czctl.util"
local errors = require "czctl.cli.errors"
local flagmod = require "czctl.cli.flags"
local help = require "czctl.cli.help"
local runner = require "czctl.cli.runner"
local recipes = require "czctl.recipes"

local M = {}

M.GLOBAL_FLAGS = flagmod.GLOBAL_FLAGS
M.parse = flagmod.parse
M.help_text = help.help_text
M.usage_error = errors.usage_error
M.is_usage_error = errors.is_usage_error
--- The recipe registry (czctl.recipes.new), exported for tests and tools.
M.registry = recipes.new

local raise_usage, fail = errors.raise_usage, errors.fail

-- "service-intercept" -> "service intercept"
local function command_name(recipe_name) return (recipe_name:gsub("%-", " ", 1)) end

local function load_recipe(rec)
  return recipes.load(rec, runner.traceback_handler)
end

-- A recipe's summary for listings, and the recipe (nil when it cannot load).
local function recipe_summary(rec)
  local ok, recipe = pcall(load_recipe, rec)
  if not ok then return "(cannot load: " .. errors.one_line(errors.text(recipe)) .. ")", nil end
  return recipe.summary or "", recipe
end

M.recipe_summary = recipe_summary
M.command_name = command_name

local builtins = require "czctl.cli.builtins"

-- Resolve command words to { kind = "builtin"|"recipe"|"group", ... } and the
-- number of words used; nil when nothing matches.
local function resolve(reg, words)
  local w1, w2 = words[1], words[2]
  if w2 and w2:sub(1, 1) == "-" then w2 = nil end
  if w2 then
    local b = builtins.find(w1 .. " " .. w2)
    if b then return { kind = "builtin", builtin = b, display = b.name }, 2 end
  end
  local b = builtins.find(w1)
  if b then return { kind = "builtin", builtin = b, display = b.name }, 1 end
  local group_verbs = builtins.verbs(w1)
  if #group_verbs > 0 then return { kind = "group", noun = w1, verbs = group_verbs }, 1 end
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
M.resolve = resolve

local function unknown_command(reg, words)
  local typed = words[1]
  if words[2] and words[2]:sub(1, 1) ~= "-" then typed = words[1] .. " " .. words[2] end
  local candidates = builtins.names()
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

-- Global flags may come before the command (czctl --debug run x.lua).
local function strip_globals(words, state)
  local rest, i = {}, 1
  while i <= #words do
    local w = words[i]
    if w == "--debug" then state.debug = true
    elseif w == "--verbose" then state.verbose = true
    elseif w == "--help" or w == "-h" then state.help = true
    elseif w == "--version" then state.version = true
    else break end
    i = i + 1
  end
  if words[i] and words[i]:sub(1, 1) == "-" and words[i] ~= "-" and words[i] ~= "--" then
    local hint = util.closest(words[i], { "--help", "--verbose", "--debug", "--version" })
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

--- Parse a recipe's ARGS and run it (recipes from the registry and recipe
--- tables returned by `czctl run` scripts).
---@return integer
function M.run_recipe(recipe, cmd, argv, state)
  local hint = "czctl " .. cmd.help_command .. " --help"
  state.hint = hint
  local flags, args = flagmod.prepare_spec(recipe, cmd.what)
  if has_help(argv) then
    state.stdout(help.help_text(cmd.display, recipe))
    return 0
  end
  local parsed = flagmod.parse(flags, args, argv, { command = cmd.display, trailing = recipe.command ~= nil })
  if parsed.flags.debug then state.debug = true end
  if parsed.flags.verbose then state.verbose = true end
  state.argv = argv
  local ctx = runner.make_ctx(cmd, flags, parsed, state)
  return runner.supervise(recipe.run, ctx, cmd.what, hint, state)
end

--- Print help for a resolved command.
function M.print_help(cmd, reg, state)
  if cmd.kind == "builtin" then
    state.stdout(builtins.help(cmd.builtin))
  elseif cmd.kind == "group" then
    local rows = {}
    for _, verb in ipairs(cmd.verbs) do
      local summary
      local b = builtins.find(cmd.noun .. " " .. verb)
      if b then
        summary = b.summary
      else
        local rec = reg:find(cmd.noun .. "-" .. verb)
        local recipe
        if rec then summary, recipe = recipe_summary(rec) end
        if recipe and recipe.hidden then summary = nil end
      end
      if summary then rows[#rows + 1] = { cmd.noun .. " " .. verb, summary } end
    end
    state.stdout("Usage:\n  czctl " .. cmd.noun .. " COMMAND [flags]\n\nCommands:\n" .. help.format_rows(rows) .. "\n")
  else
    state.stdout(help.help_text(cmd.display, load_recipe(cmd.rec)))
  end
  return 0
end

local function dispatch(args, state)
  local reg = state.registry or recipes.new()
  state.registry = reg
  local words = strip_globals(args, state)
  if state.version and #words == 0 then words = { "version" } end
  if #words == 0 then
    state.stdout(builtins.general_help(reg))
    return 0
  end
  if words[1] == "run" then
    local rest = strip_globals({ table.unpack(words, 2) }, state)
    if state.help then state.stdout(builtins.help(builtins.find("run"))); return 0 end
    if #rest == 0 then state.hint = "czctl run --help"; raise_usage("run needs a FILE.lua") end
    return builtins.run_script(rest, state)
  end
  if words[1] == "help" then
    local topic = {}
    for i = 2, #words do
      if words[i]:sub(1, 1) ~= "-" then topic[#topic + 1] = words[i] end
    end
    if #topic == 0 then state.stdout(builtins.general_help(reg)); return 0 end
    local cmd = resolve(reg, topic)
    if not cmd then unknown_command(reg, topic) end
    return M.print_help(cmd, reg, state)
  end
  local cmd, used = resolve(reg, words)
  if not cmd then unknown_command(reg, words) end
  local argv = {}
  for i = used + 1, #words do argv[#argv + 1] = words[i] end
  cmd.words = { table.unpack(words, 1, used) }
  if state.help or (cmd.kind ~= "recipe" and has_help(argv)) then
    return M.print_help(cmd, reg, state)
  end
  if cmd.kind == "group" then
    state.hint = "czctl help " .. cmd.noun
    if argv[1] and argv[1]:sub(1, 1) ~= "-" then unknown_command(reg, { cmd.noun, argv[1] }) end
    raise_usage(string.format("%q needs a command: %s", cmd.noun, table.concat(cmd.verbs, ", ")))
  end
  if cmd.kind == "builtin" then
    return builtins.run(cmd.builtin, argv, state)
  end
  local rec = cmd.rec
  cmd.what = "recipe " .. rec.name
  cmd.help_command = cmd.display
  state.hint = "czctl " .. cmd.display .. " --help"
  return M.run_recipe(load_recipe(rec), cmd, argv, state)
end

--- Entry point called by core/main.c with argv[1..]. Never raises; prints
--- every user-facing error itself and returns the exit code.
---@param args string[]
---@param opts? {stdout?: fun(s: string), stderr?: fun(s: string), registry?: czctl.Registry}
---@return integer
function M.main(args, opts)
  opts = opts or {}
  local state = {
    stdout = opts.stdout or runner.writer(io.stdout),
    stderr = opts.stderr or runner.writer(io.stderr),
    registry = opts.registry,
  }
  state.format = runner.scan_output(args)
  state.progress = runner.scan_progress(args)
  local ok, res = xpcall(dispatch, runner.traceback_handler, args, state)
  if ok then return res end
  local e = res.value
  if errors.is_usage_error(e) then
    return runner.report_error(res, state.hint or "czctl help", state)
  end
  if recipes.is_load_error(e) then
    -- e carries its own traceback record (value, traceback, what, syntax)
    return runner.report_error(e, nil, state)
  end
  if type(e) == "table" and e.value ~= nil and (e.what or e.syntax) then
    return runner.report_error(e, nil, state)
  end
  if errors.is_failure(e) then
    return runner.report_error(res, nil, state)
  end
  -- a bug in czctl itself
  res.what = "czctl"
  return runner.report_error(res, nil, state)
end

-- fail is used by builtins through errors; keep the local referenced.
M.fail = fail

return M
