-- examples/team-routing.lua: intercept a Service for one team, with a
-- routing rule the CLI flags do not offer:
--
--     (cookie team=NAME  or  header X-Team matching ^NAME(-anything)?$)
--     and the path starts with --path-prefix (default /api/)
--
-- It runs the same workflow as `czctl service intercept` (sessions, cleanup,
-- `czctl session close`/`list` all work the same), only the rule differs.
--
--   czctl run examples/team-routing.lua web --team blue -l 3000
--   czctl run examples/team-routing.lua web --team blue -l 3000 --tunnel direct --wait
--   curl -H 'Cookie: team=blue' http://web.default.svc.cluster.local/api/orders
local intercept = require "czctl.intercept"
local proxy = require "czctl.proxy"

-- The built-in intercept with two more flags and the rule built from them
-- (hooks.rule replaces the rule the --header flag gives).
return intercept.builtin_recipe():with{
  summary = "Intercept a Service for one team (cookie or X-Team header, under a path prefix)",
  flags = {
    { name = "team", type = "string", required = true, help = "the team name (letters, digits, -)" },
    { name = "pathPrefix", type = "string", default = "/api/", help = "only paths under this prefix" },
  },
  hooks = {
    rule = function(_, run)
      local f = run.ctx.flags
      if not f.team:find("^[%w][%w-]*$") then run.ctx.usage_error("--team must be letters, digits and -") end
      return {
        every = {
          { any = {
              { cookie = { name = "team", equals = f.team } },
              { header = { name = "X-Team", matches = "^" .. proxy.pcre_escape(f.team) .. "(-[A-Za-z0-9]+)?$" } },
          } },
          { path_prefix = f.pathPrefix },
        },
      }
    end,
  },
}
