-- Test helper: render a proxy config from a JSON spec (the proxy.render
-- options, plus "flags" = {header=, all=} to build the rule like the CLI).
--   czctl run tests/proxy/render.lua SPEC.json > nginx.conf
-- Prints warnings on stderr as "warning: ..."; a render error exits 1. The
-- route's files (the tunnel's Secret) are written into spec.route_dir
-- (default: spec.runtime_dir), 0600; with spec.routes, each route's into
-- route_dir/<id>/.
local cjson = require "cjson"
local proxy = require "czctl.proxy"

local f = assert(io.open(arg[1], "rb"))
local spec = cjson.decode(f:read("a"))
f:close()
local function plain(v)  -- cjson.null -> nil, recursively
  if v == cjson.null then return nil end
  if type(v) == "table" then
    local t = {}
    for k, x in pairs(v) do t[k] = plain(x) end
    return t
  end
  return v
end
spec = plain(spec)
if spec.flags then
  local rule, err = proxy.from_flags(spec.flags)
  if not rule then io.stderr:write("error: ", err, "\n"); return 1 end
  spec.rule = rule
  spec.flags = nil
end
-- the route's files go beside the config unless the spec says where
spec.route_dir = spec.route_dir or spec.runtime_dir
local conf, warnings, files = proxy.render(spec)
if not conf then io.stderr:write("error: ", warnings, "\n"); return 1 end
local sys = require "czctl.core.sys"
for name, content in pairs(files) do
  assert(spec.route_dir, "the spec needs route_dir for the tunnel's files")
  -- with routes, each route's files are in route_dir/<id>/, as the proxy mounts them
  local sub = name:match("^(.*)/[^/]*$")
  if sub then assert(sys.mkdir_p(spec.route_dir .. "/" .. sub, tonumber("700", 8))) end
  assert(sys.write_file(spec.route_dir .. "/" .. name, content, tonumber("600", 8)))
end
for _, w in ipairs(warnings) do io.stderr:write("warning: ", w, "\n") end
io.write(conf)
return 0
