-- Bench helper: render a proxy spec (as tests/proxy/render.lua takes it)
-- with another version of lua/czctl/proxy/nginx.lua, e.g. main's, for a
-- same-machine comparison with today's configuration.
--   czctl run bench/lib/render_main.lua SPEC.json NGINX_LUA > nginx.conf
local cjson = require "cjson"
local proxy = require "czctl.proxy"
local f = assert(io.open(arg[1], "rb"))
local spec = cjson.decode(f:read("a"))
f:close()
spec.rule = assert(proxy.from_flags(spec.flags or {}))
spec.flags = nil
local other = assert(loadfile(arg[2]))()
local conf, err = other.render(spec)
io.write((assert(conf, err)))
return 0
