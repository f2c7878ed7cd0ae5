-- examples/grpc-routing.lua: intercept the gRPC calls of one tenant. gRPC
-- metadata are HTTP/2 headers, so a routing rule on a metadata key is a
-- header rule (keys are lower case on the wire; names match in any case):
--
--     metadata x-tenant is NAME or starts with NAME- (x-tenant: acme, acme-eu)
--
-- The port must speak HTTP/2 in cleartext: declared by its appProtocol
-- (kubernetes.io/h2c, grpc) or its name (grpc, grpc-*, h2c, http2), or said
-- with --protocol grpc. It runs the same workflow as `czctl service
-- intercept` (sessions, `czctl session close`/`list`), only the rule differs.
--
--   czctl run examples/grpc-routing.lua orders --tenant acme -l 50051 --tunnel direct
--   grpcurl -plaintext -H 'x-tenant: acme' orders.default.svc.cluster.local:50051 list
local intercept = require "czctl.intercept"
local proxy = require "czctl.proxy"

return intercept.builtin_recipe():with{
  summary = "Intercept the gRPC calls of one tenant (metadata x-tenant)",
  flags = {
    { name = "tenant", type = "string", required = true, help = "the tenant (letters, digits, -)" },
    { name = "key", type = "string", default = "x-tenant", help = "the metadata key that names the tenant" },
  },
  hooks = {
    rule = function(_, run)
      local f = run.ctx.flags
      if not f.tenant:find("^[%w][%w-]*$") then run.ctx.usage_error("--tenant must be letters, digits and -") end
      return { header = { name = f.key, matches = "^" .. proxy.pcre_escape(f.tenant) .. "(-[A-Za-z0-9-]+)?$" } }
    end,
  },
}
