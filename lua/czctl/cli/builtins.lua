-- czctl.cli.builtins: the commands that are part of the command line, not
-- recipes (help, version, recipe list/show/copy, completion, run), declared
-- like recipes (summary, args, flags) so that help, the man page and shell
-- completion are generated from the same declarations. User recipes cannot
-- override them.
local util = require "czctl.util"
local errors = require "czctl.cli.errors"
local flagmod = require "czctl.cli.flags"
local help = require "czctl.cli.help"
local runner = require "czctl.cli.runner"
local recipes = require "czctl.recipes"

local M = {}

local raise_usage, fail = errors.raise_usage, errors.fail

local OUTPUT_FLAG = { name = "output", short = "o", type = "string", default = "text",
                      choices = { "text", "json", "yaml" }, help = "output format" }

local function cli() return require "czctl.cli" end

--- What this build can do that scripts may need to know (`version -o json`,
--- `features`): "intercept-command" (`service intercept ... -- CMD`),
--- "progress-json" (`--progress json`), "multi-session" (several sessions
--- hold one Service, each with its own rule: tests/e2e/test_ci_parallel.sh
--- then expects five parallel jobs to pass).
M.FEATURES = { "intercept-command", "progress-json", "multi-session" }

local function version_info(load_curl)
  local embed = require "czctl.core.embed"
  local v = embed.versions(load_curl)
  return { apiVersion = "czctl.io/v1", kind = "Version", czctl = embed.version, commit = v.commit,
           lua = v.lua, libyaml = v.libyaml, cjson = require("cjson")._VERSION, libcurl = v.libcurl,
           features = setmetatable({ table.unpack(M.FEATURES) }, util.array_mt) }
end

local function document(state, format, doc, text)
  if format == "json" then
    state.stdout(util.json_encode(doc, { indent = true }) .. "\n")
  elseif format == "yaml" then
    state.stdout(require("czctl.yaml").encode(doc))
  else
    state.stdout(text)
  end
end

local function print_recipe_list(state, parsed)
  local reg = state.registry
  local rows, items = {}, setmetatable({}, util.array_mt)
  for _, rec in ipairs(reg:list()) do
    local summary = cli().recipe_summary(rec)
    local source = rec.source
    if rec.overrides then source = source .. " (overrides built-in)" end
    rows[#rows + 1] = { rec.name, source, summary }
    items[#items + 1] = { kind = "Recipe", name = rec.name, source = rec.source, overridesBuiltin = rec.overrides,
                          summary = summary }
  end
  document(state, parsed.flags.output, { apiVersion = "czctl.io/v1", kind = "RecipeList", items = items },
           require("czctl.output").table({ "NAME", "SOURCE", "SUMMARY" }, rows))
  return 0
end

local function no_such_recipe(reg, name, state)
  local names = {}
  for _, r in ipairs(reg:list()) do names[#names + 1] = r.name end
  local hint = util.closest(name, names)
  state.hint = "czctl recipe list"
  raise_usage(string.format("no recipe named %q%s", name, hint and string.format("; did you mean %q?", hint) or ""))
end

M.LIST = {
  { name = "help", usage = "[COMMAND]", summary = "Show help for czctl or a command",
    args = { { name = "command", variadic = true, complete = "commands" } } },
  { name = "version", summary = "Print the versions of czctl, its commit and its libraries",
    description = [[
Prints czctl's version and commit and the versions of Lua, libyaml and
lua-cjson built into it. libcurl is loaded on first use (not by this
command): its version is shown with --verbose, which loads it.
`czctl --version` is the same command.]],
    flags = { OUTPUT_FLAG },
    run = function(state, parsed)
      local info = version_info(state.verbose or parsed.flags.verbose)
      local lines = {
        string.format("czctl %s (commit %s)", info.czctl, info.commit),
        info.lua, "libyaml " .. info.libyaml, "lua-cjson " .. info.cjson,
        info.libcurl and ("libcurl " .. info.libcurl) or "libcurl (loaded on first use; --verbose shows its version)",
        "features: " .. table.concat(info.features, ", "),
      }
      document(state, parsed.flags.output, info, table.concat(lines, "\n") .. "\n")
      return 0
    end },
  { name = "recipe list", summary = "List recipes and where each comes from", flags = { OUTPUT_FLAG },
    run = print_recipe_list },
  { name = "recipe show", usage = "NAME", summary = "Print a recipe's source (to read)",
    args = { { name = "name", required = true, variadic = true, complete = "recipes" } },
    run = function(state, parsed)
      local name = table.concat(parsed.args.name, "-")
      local rec = state.registry:find(name)
      if not rec then no_such_recipe(state.registry, name, state) end
      state.stdout(rec.code)
      return 0
    end },
  { name = "recipe copy", usage = "NAME [--force]",
    summary = "Copy a built-in recipe into your recipe directory, to change it",
    description = [[
Writes the built-in recipe NAME to ~/.config/czctl/recipes/NAME.lua
($XDG_CONFIG_HOME/czctl/recipes), creating the directory. That file then
replaces the built-in: it no longer receives czctl's fixes. To change one
step of the intercept, a short recipe that passes hooks to the library
workflow is usually better (see the README, "Customising the intercept").]],
    args = { { name = "name", required = true, variadic = true, complete = "recipes" } },
    flags = { { name = "force", short = "f", type = "boolean", help = "overwrite an existing file" } },
    run = function(state, parsed)
      local name = table.concat(parsed.args.name, "-")
      if not state.registry:builtin(name) then no_such_recipe(state.registry, name, state) end
      local path, err = recipes.copy(state.registry, name, parsed.flags.force)
      if not path then fail(err) end
      state.stdout(string.format("Copied the built-in recipe %s to %s\n", name, path))
      return 0
    end },
  { name = "completion", usage = "bash|zsh|fish",
    summary = "Print a shell completion script",
    description = [[
Prints the completion script for SHELL, generated from the commands and
their flag declarations. Service and session names are asked from the
cluster when it answers within a second.
  bash: czctl completion bash > ~/.local/share/bash-completion/completions/czctl
  zsh:  czctl completion zsh > "${fpath[1]}/_czctl"
  fish: czctl completion fish > ~/.config/fish/completions/czctl.fish]],
    args = { { name = "shell", required = true, choices = { "bash", "zsh", "fish" } } },
    run = function(state, parsed)
      state.stdout(require("czctl.cli.completion").script(parsed.args.shell, M.commands(state.registry)))
      return 0
    end },
  { name = "run", usage = "FILE.lua [ARGS...]", summary = "Run a Lua script or recipe file with the czctl API",
    description = [[
FILE runs with the same API as recipes. If it returns a recipe table, its
flags are parsed from ARGS and it runs like a recipe; otherwise its top-level
code runs with `arg` (arg[0] = FILE) and `...` set to ARGS, and `ctx` available.
FILE's directory is added to package.path.]],
    args = { { name = "file", required = true, complete = "files" }, { name = "args", variadic = true } } },
  -- Internal: asked by the completion scripts for names from the cluster.
  { name = "__complete", hidden = true, usage = "KIND [WORDS...]",
    args = { { name = "kind", required = true }, { name = "words", variadic = true } },
    run = function(state, parsed)
      for _, name in ipairs(require("czctl.cli.completion").names(parsed.args.kind, parsed.args.words)) do
        state.stdout(name .. "\n")
      end
      return 0
    end },
  -- Internal: the man page, generated at build time (make man).
  { name = "__man", hidden = true,
    run = function(state)
      state.stdout(require("czctl.cli.man").page(M.commands(state.registry)))
      return 0
    end },
}

--- The built-in named NAME ("recipe show"), or nil.
function M.find(name)
  for _, b in ipairs(M.LIST) do if b.name == name then return b end end
  return nil
end

--- Names of the visible built-ins.
function M.names()
  local list = {}
  for _, b in ipairs(M.LIST) do if not b.hidden then list[#list + 1] = b.name end end
  return list
end

--- Verbs of a built-in noun ("recipe" -> list, show, copy).
function M.verbs(noun)
  local list = {}
  for _, b in ipairs(M.LIST) do
    local verb = b.name:match("^" .. noun:gsub("%p", "%%%0") .. " (.+)$")
    if verb then list[#list + 1] = verb end
  end
  return list
end

--- Every visible command with its declarations, for completion and the man
--- page: { name = "service intercept", summary, usage, description, args,
--- flags (normalised, global flags included), builtin = bool }.
---@param reg czctl.Registry
---@return table[]
function M.commands(reg)
  local list = {}
  for _, b in ipairs(M.LIST) do
    if not b.hidden then
      local flags, args = flagmod.prepare_spec({ flags = b.flags, args = b.args, run = M.find }, b.name)
      list[#list + 1] = { name = b.name, summary = b.summary, usage = b.usage, description = b.description,
                          flags = flags, args = args, builtin = true }
    end
  end
  for _, rec in ipairs(reg:list()) do
    local ok, recipe = pcall(recipes.load, rec)
    if ok and not recipe.hidden then
      local fok, flags, args = pcall(flagmod.prepare_spec, recipe, rec.name)
      if fok then
        list[#list + 1] = { name = cli().command_name(rec.name), summary = recipe.summary, usage = recipe.usage,
                            description = recipe.description, flags = flags, args = args,
                            examples = recipe.examples }
      end
    end
  end
  return list
end

--- Help text of a built-in.
function M.help(b)
  local flags, args = flagmod.prepare_spec({ flags = b.flags, args = b.args, run = M.find }, b.name)
  local text = b.summary .. "\n\nUsage:\n  czctl " .. b.name .. (b.usage and " " .. b.usage or "") .. "\n"
  if b.description then text = text .. "\n" .. util.trim(b.description) .. "\n" end
  local own, global = {}, {}
  for _, d in ipairs(flags) do if d.global then global[#global + 1] = d else own[#own + 1] = d end end
  if #own > 0 then text = text .. "\nFlags:\n" .. help.format_rows(help.flag_rows(own)) .. "\n" end
  local _ = args
  return text .. "\nGlobal flags:\n" .. help.format_rows(help.flag_rows(global)) .. "\n"
end

--- The general help: commands (recipes), built-ins, global flags.
function M.general_help(reg)
  local out = {}
  out[#out + 1] = "czctl: intercept traffic to a Kubernetes Service and send it to your machine.\n"
  out[#out + 1] = "Usage:\n  czctl COMMAND [ARGS...] [flags]\n"
  local rows = {}
  for _, rec in ipairs(reg:list()) do
    local summary, recipe = cli().recipe_summary(rec)
    if not (recipe and recipe.hidden) then rows[#rows + 1] = { cli().command_name(rec.name), summary } end
  end
  if #rows > 0 then out[#out + 1] = "Commands:\n" .. help.format_rows(rows) .. "\n" end
  rows = {}
  for _, b in ipairs(M.LIST) do
    if not b.hidden then rows[#rows + 1] = { b.name .. (b.usage and " " .. b.usage or ""), b.summary } end
  end
  out[#out + 1] = "Built-in commands:\n" .. help.format_rows(rows) .. "\n"
  out[#out + 1] = "Global flags:\n" .. help.format_rows(help.flag_rows(flagmod.GLOBAL_FLAGS))
    .. "\n      --version   print the versions of czctl and its libraries (= czctl version)\n"
  out[#out + 1] = "Recipes are Lua files. A NAME.lua in $CZCTL_RECIPE_PATH (colon-separated) or in\n"
    .. tostring(reg.config_dir()) .. "/recipes overrides the built-in NAME;\n"
    .. "`czctl recipe show NAME` prints one. `czctl help COMMAND` for details.\n"
  return table.concat(out, "\n")
end

--- Run a built-in with its arguments.
---@return integer
function M.run(b, argv, state)
  state.hint = "czctl " .. b.name .. " --help"
  local flags, args = flagmod.prepare_spec({ flags = b.flags, args = b.args, run = M.find }, b.name)
  local parsed = flagmod.parse(flags, args, argv, { command = b.name })
  if parsed.flags.debug then state.debug = true end
  if parsed.flags.verbose then state.verbose = true end
  if parsed.flags.output == "json" or parsed.flags.output == "yaml" then state.format = parsed.flags.output end
  return b.run(state, parsed)
end

--- `czctl run FILE.lua [ARGS...]`.
---@return integer
function M.run_script(words, state)
  local path = words[1]
  local argv = { table.unpack(words, 2) }
  local code, err = recipes.read_file(path)
  if not code then fail("cannot read " .. path .. ": " .. tostring(err):gsub("^" .. path:gsub("%p", "%%%0") .. ": ", "")) end
  if code:sub(1, 1) == "#" then code = "--" .. code end   -- shebang line, keep line numbers
  local what = "script " .. path
  local arg = { [0] = path }
  for i, a in ipairs(argv) do arg[i] = a end
  local dir = util.dirname(path)
  package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
  local cmd = { name = util.basename(path):gsub("%.lua$", ""), display = "run " .. path,
                what = what, help_command = "run " .. path, words = { "run", path } }
  state.argv = argv
  local ctx = runner.make_ctx(cmd, {}, { flags = {}, args = {}, positional = argv, sources = {} }, state)
  state.undo = ctx.undo
  local env = setmetatable({ arg = arg, ctx = ctx }, { __index = _G })
  local chunk, lerr = load(code, "@" .. path, "t", env)
  if not chunk then
    return runner.report_error({ value = lerr, syntax = true, what = what }, nil, state)
  end
  local returned
  local status = runner.supervise(function() returned = table.pack(chunk(table.unpack(argv))); return returned[1] end,
                                  ctx, what, nil, state)
  if status ~= 0 or not returned then return status end
  local value = returned[1]
  if type(value) == "table" and type(value.run) == "function" then
    return cli().run_recipe(value, cmd, argv, state)
  end
  return status
end

M.raise_usage = raise_usage

return M
