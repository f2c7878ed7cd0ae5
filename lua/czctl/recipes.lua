-- czctl.recipes: where recipes come from and how one is loaded. One registry
-- (the user's directories, then the built-ins compiled into the binary) and
-- one loader, used by the command line and by library code that runs a
-- recipe's workflow. It knows nothing about flags, help or output.
--
-- Lookup: NAME.lua in each directory of $CZCTL_RECIPE_PATH (colon-separated),
-- then $XDG_CONFIG_HOME/czctl/recipes, then the built-in NAME. A recipe file
-- is Lua returning a table with a `run` function; loading one that is empty,
-- broken or of the wrong shape raises a LoadError naming the file.
local util = require "czctl.util"

local M = {}

--- An error met while loading a recipe: `what` ("recipe NAME"), `file` (the
--- user file, nil for a built-in), `value` (the Lua error or a message),
--- `syntax` (a syntax error), `traceback`.
---@class czctl.recipes.LoadError
---@field what string
---@field file string|nil
---@field value any
---@field syntax boolean|nil
---@field traceback string|nil
local LoadError = { __name = "czctl.recipes.load_error" }
LoadError.__index = LoadError
LoadError.__tostring = function(e)
  local v = e.value
  if type(v) == "table" and getmetatable(v) and getmetatable(v).__tostring then v = tostring(v) end
  if type(v) == "table" then v = v.message end
  return tostring(v)
end

---@return boolean
function M.is_load_error(e) return getmetatable(e) == LoadError end

local function load_error(fields) return setmetatable(fields, LoadError) end

local function valid_name(name)
  return type(name) == "string" and name:match("^[%w][%w_.%-]*$") ~= nil and not name:find("%.%.")
end
M.valid_name = valid_name

--- Read a whole file: data | nil, message.
---@param path string
---@return string|nil
---@return string|nil err
function M.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data, rerr = f:read("a")
  f:close()
  if not data then return nil, path .. ": " .. tostring(rerr) end
  return data
end

---@class czctl.recipes.Entry
---@field name string
---@field source string "built-in" or the file's path
---@field path string|nil the user file
---@field code string
---@field chunkname string
---@field builtin boolean
---@field overrides boolean a user file with a built-in's name

---@class czctl.Registry
---@field getenv fun(name: string): string|nil
---@field config_dir fun(): string|nil
---@field embed table czctl.core.embed or a stand-in
---@field listdir fun(path: string): string[]|nil
local Registry = {}
Registry.__index = Registry

--- A registry. opts (for tests and tools): getenv, config_dir (function
--- returning the czctl config directory), embed (a table like
--- czctl.core.embed), listdir (function(path) -> names|nil).
---@param opts? {getenv?: function, config_dir?: function, embed?: table, listdir?: function}
---@return czctl.Registry
function M.new(opts)
  opts = opts or {}
  local csys = require "czctl.core.sys"
  return setmetatable({
    getenv = opts.getenv or os.getenv,
    config_dir = opts.config_dir or csys.config_dir,
    listdir = opts.listdir or csys.listdir,
    embed = opts.embed or require "czctl.core.embed",
  }, Registry)
end

--- User recipe directories, in precedence order.
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

--- The directory `recipe copy` writes to ($XDG_CONFIG_HOME/czctl/recipes).
---@return string|nil
function Registry:user_dir()
  local cfg = self.config_dir()
  return cfg and (cfg .. "/recipes") or nil
end

local function is_builtin(self, name)
  for _, b in ipairs(self.embed.recipes()) do if b == name then return true end end
  return false
end

--- The built-in recipe NAME (never a user file), or nil.
---@param name string
---@return czctl.recipes.Entry|nil
function Registry:builtin(name)
  if not valid_name(name) then return nil end
  local code, chunkname = self.embed.recipe_source(name)
  if not code then return nil end
  return { name = name, source = "built-in", code = code, chunkname = chunkname, builtin = true, overrides = false }
end

--- Find a recipe by name, as `czctl NAME` would run it; nil when there is
--- none. Raises a LoadError when a user file exists but cannot be read.
---@param name string
---@return czctl.recipes.Entry|nil
function Registry:find(name)
  if not valid_name(name) then return nil end
  for _, dir in ipairs(self:dirs()) do
    local path = dir .. "/" .. name .. ".lua"
    local code, err = M.read_file(path)
    if code then
      return { name = name, source = path, path = path, code = code, chunkname = "@" .. path,
               builtin = false, overrides = is_builtin(self, name) }
    end
    if err and not err:find("No such file or directory", 1, true) then
      error(load_error{ what = "recipe " .. name, file = path, value = "cannot read " .. path .. ": " .. err }, 0)
    end
  end
  return self:builtin(name)
end

--- Every visible recipe, sorted by name, each as find() resolves it.
---@return czctl.recipes.Entry[]
function Registry:list()
  local names, seen = {}, {}
  local function add(name)
    if name and valid_name(name) and not seen[name] then seen[name] = true; names[#names + 1] = name end
  end
  for _, dir in ipairs(self:dirs()) do
    for _, file in ipairs(self.listdir(dir) or {}) do add(file:match("^(.+)%.lua$")) end
  end
  for _, name in ipairs(self.embed.recipes()) do add(name) end
  table.sort(names)
  local list = {}
  for _, name in ipairs(names) do
    local ok, rec = pcall(self.find, self, name)
    if ok and rec then list[#list + 1] = rec end
  end
  return list
end

-- What to tell the owner of a user file that is not a recipe.
local function shape_problem(entry, recipe)
  local fix = entry.overrides
    and string.format("; remove it to use the built-in, or start again with: czctl recipe copy %s --force", entry.name)
    or ""
  if recipe == nil then
    return string.format("%s is empty: a recipe file returns a table with a run function%s",
                         entry.path or entry.chunkname, fix)
  end
  if type(recipe) ~= "table" then
    return string.format("recipe %s must return a table with a run function (got %s)%s", entry.name,
                         type(recipe), fix)
  end
  if type(recipe.run) ~= "function" then
    return string.format("recipe %s has no run function%s", entry.name, fix)
  end
  return nil
end

local function default_handler(e)
  return { value = e, traceback = debug.traceback(type(e) == "string" and e or tostring(e), 2) }
end

--- Load a recipe: run its file's top level in an environment of its own
--- (its globals do not leak) and check it returns a table with a `run`
--- function. Raises a LoadError (syntax error, runtime error at the top
--- level, empty file, wrong shape), naming the user file.
---@param entry czctl.recipes.Entry
---@param handler? fun(e: any): table message handler for xpcall, returning {value=, traceback=}
---@return table recipe
function M.load(entry, handler)
  local what = "recipe " .. entry.name
  local env = setmetatable({}, { __index = _G })
  local chunk, err = load(entry.code, entry.chunkname, "t", env)
  if not chunk then error(load_error{ what = what, file = entry.path, value = err, syntax = true }, 0) end
  local ok, res = xpcall(chunk, handler or default_handler, entry.name)
  if not ok then
    res.what, res.file = what, entry.path
    error(load_error(res), 0)
  end
  local problem = shape_problem(entry, res)
  if problem then error(load_error{ what = what, file = entry.path, value = problem, shape = true }, 0) end
  return res
end

--- Find and load a recipe in one call: recipe, entry | nil when no such recipe.
---@param registry czctl.Registry
---@param name string
---@return table|nil recipe
---@return czctl.recipes.Entry|nil entry
function M.require(registry, name)
  local entry = registry:find(name)
  if not entry then return nil end
  return M.load(entry), entry
end

--- Copy the built-in recipe NAME into the user's recipe directory (created
--- 0700). Refuses to overwrite an existing file unless `force`.
---@param registry czctl.Registry
---@param name string
---@param force? boolean
---@return string|nil path written
---@return string|nil err
function M.copy(registry, name, force)
  local entry = registry:builtin(name)
  if not entry then return nil, string.format("no built-in recipe named %q (see czctl recipe list)", name) end
  local dir = registry:user_dir()
  if not dir then return nil, "cannot tell the user's configuration directory (set HOME or XDG_CONFIG_HOME)" end
  local csys = require "czctl.core.sys"
  local ok, merr = csys.mkdir_p(dir, tonumber("700", 8))
  if not ok then return nil, "cannot create " .. dir .. ": " .. tostring(merr) end
  local path = dir .. "/" .. name .. ".lua"
  if not force and M.read_file(path) then
    return nil, string.format("%s exists; overwrite it with --force", path)
  end
  local wok, werr = csys.write_file(path, entry.code, tonumber("644", 8))
  if not wok then return nil, "cannot write " .. path .. ": " .. tostring(werr) end
  return path
end

return M
