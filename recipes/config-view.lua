-- config-view: show how czctl resolves the kubeconfig (the same rules as
-- kubectl: --kubeconfig, else KUBECONFIG merged, else ~/.kube/config, else
-- in-cluster): context, cluster, user, namespace, server and auth method.
-- Never shows a secret. Does not contact the cluster.
local ckube = require "czctl.core.kube"

return {
  summary = "Show the resolved kubeconfig context (no secrets)",
  usage = "[flags]",
  flags = {
    { name = "kubeconfig", short = "k", type = "string", help = "kubeconfig file to use (default: $KUBECONFIG, ~/.kube/config)" },
    { name = "context", type = "string", help = "kubeconfig context to use (default: current-context)" },
    { name = "output", short = "o", type = "string", default = "text", help = "output format: text or json" },
  },
  run = function(ctx)
    local f = ctx.flags
    if f.output ~= "text" and f.output ~= "json" then return ctx.usage_error("--output must be text or json") end
    local cfg, err = ckube.load_config{ kubeconfig = f.kubeconfig, context = f.context }
    if not cfg then error(err, 0) end
    local info = cfg:info()
    cfg:close()
    if f.output == "json" then
      -- one JSON document on stdout, whatever the output mode of ctx.out
      local util = require "czctl.util"
      io.stdout:write(util.json_encode(info, { indent = true }), "\n")
      return 0
    end
    local order = { "context", "cluster", "user", "namespace", "server", "auth", "source",
                    "in_cluster", "insecure", "tls_server_name", "proxy_url", "certificate_authority",
                    "certificate_authority_data", "client_certificate", "client_key", "token_file",
                    "exec_command" }
    for _, k in ipairs(order) do
      local v = info[k]
      if v ~= nil and v ~= false and v ~= "" then
        io.stdout:write(string.format("%-27s %s\n", k .. ":", tostring(v)))
      end
    end
    return 0
  end,
}
