-- config-view: show how czctl resolves the kubeconfig (the same rules as
-- kubectl: --kubeconfig, else KUBECONFIG merged, else ~/.kube/config, else
-- in-cluster): context, cluster, user, namespace, server and auth method.
-- Never shows a secret. Does not contact the cluster.
local kube = require "czctl.kube"
local util = require "czctl.util"
local flags = require "czctl.flags"

-- The fields in the order the text shows them (JSON/YAML keys are camelCase).
local ORDER = { "context", "cluster", "user", "namespace", "server", "auth", "source", "in_cluster", "insecure",
                "tls_server_name", "proxy_url", "certificate_authority", "certificate_authority_data",
                "client_certificate", "client_key", "token_file", "exec_command" }

return {
  summary = "Show the resolved kubeconfig context (no secrets)",
  usage = "[flags]",
  flags = flags.join(flags.kube{ namespace_help = "the namespace to show instead of the context's" },
                     flags.output()),
  run = function(ctx)
    local f = ctx.flags
    local kubeconfig = ctx.sources.kubeconfig == "flag" and f.kubeconfig or nil
    local info, err = kube.config_info{ kubeconfig = kubeconfig, context = f.context }
    if not info then error(err, 0) end
    if f.namespace then info.namespace = f.namespace end
    local doc = { apiVersion = "czctl.io/v1", kind = "KubeconfigView" }
    for k, v in pairs(info) do doc[util.camel(k)] = v end
    ctx.out:result(doc, function()
      local lines = {}
      for _, k in ipairs(ORDER) do
        local v = info[k]
        if v ~= nil and v ~= false and v ~= "" then lines[#lines + 1] = string.format("%-27s %s", k .. ":", tostring(v)) end
      end
      return table.concat(lines, "\n")
    end)
    return 0
  end,
}
