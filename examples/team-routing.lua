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

return {
  summary = "Intercept a Service for one team (cookie or X-Team header, under a path prefix)",
  usage = "SERVICE --team NAME [flags]",
  args = { { name = "service", help = "the Service to intercept", required = true } },
  flags = {
    { name = "team", type = "string", required = true, help = "the team name (letters, digits, -)" },
    { name = "pathPrefix", type = "string", default = "/api/", help = "only paths under this prefix" },
    { name = "localPort", short = "l", type = "number", help = "local port (default: the Service port's number)" },
    { name = "remotePort", short = "r", type = "string", help = "the Service port (number or name)" },
    { name = "namespace", short = "n", type = "string", default = "default", help = "the Service's namespace" },
    { name = "tunnel", type = "string", default = "ngrok", help = "tunnel provider: ngrok or direct" },
    { name = "tunnelHost", type = "string", help = "this machine's address the cluster reaches (direct; default: detected)" },
    { name = "wait", short = "w", type = "boolean", help = "stay until SIGINT/SIGTERM, then clean up" },
    { name = "kubeconfig", short = "k", type = "string", env = "KUBECONFIG", help = "kubeconfig file" },
    { name = "context", type = "string", help = "kubeconfig context" },
    { name = "quiet", short = "q", type = "boolean", help = "only display errors" },
    { name = "output", short = "o", type = "string", default = "text", help = "text or json" },
  },
  run = function(ctx)
    local f = ctx.flags
    if not f.team:find("^[%w][%w-]*$") then return ctx.usage_error("--team must be letters, digits and -") end
    local rule = {
      every = {
        { any = {
            { cookie = { name = "team", equals = f.team } },
            { header = { name = "X-Team", matches = "^" .. proxy.pcre_escape(f.team) .. "(-[A-Za-z0-9]+)?$" } },
        } },
        { path_prefix = f.pathPrefix },
      },
    }
    local ok, err = proxy.validate(rule)
    if not ok then return ctx.usage_error(err) end
    local start = intercept.workflow()
    return start(ctx, {
      service = ctx.args.service, namespace = f.namespace, remote_port = f.remotePort,
      local_port = f.localPort and math.tointeger(f.localPort), rule = rule,
      tunnel = f.tunnel, tunnel_host = f.tunnelHost, wait = f.wait,
      kubeconfig = f.kubeconfig, context = f.context,
    })
  end,
}
