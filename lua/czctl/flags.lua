-- czctl.flags: flag declarations that several recipes share, so a flag means
-- the same everywhere (name, short letter, default, help, choices). A recipe
-- lists its own flags and adds these sets:
--
--   flags = flags.join({ { name = "all", short = "a", type = "boolean" } },
--                      flags.kube{ namespace_default = "default" }, flags.output())
--
-- Declarations are plain data (see docs/lua-api.md, "Recipes"); parsing them
-- is the command line's job.
local M = {}

--- Output formats every command with -o accepts.
M.FORMATS = { "text", "json", "yaml" }

--- How to reach the cluster: --kubeconfig (default $KUBECONFIG, merged as
--- kubectl does), --context and --namespace.
---@param opts? {namespace_default?: string, namespace_help?: string}
---@return table[] declarations
function M.kube(opts)
  opts = opts or {}
  return {
    { name = "namespace", short = "n", type = "string", default = opts.namespace_default, complete = "namespaces",
      help = opts.namespace_help or "the namespace" },
    { name = "kubeconfig", short = "k", type = "string", env = "KUBECONFIG", complete = "files",
      help = "kubeconfig file (a $KUBECONFIG list is merged as kubectl does; else ~/.kube/config)" },
    { name = "context", type = "string", help = "kubeconfig context to use" },
  }
end

--- How steps are reported on stderr: --progress text|json.
M.PROGRESS = { "text", "json" }

--- What to print: --output text|json|yaml, --quiet and --progress text|json.
---@return table[] declarations
function M.output()
  return {
    { name = "output", short = "o", type = "string", default = "text", choices = M.FORMATS,
      help = "output format (json and yaml: one document on stdout, errors as a Status on stderr)" },
    { name = "quiet", short = "q", type = "boolean", help = "print only errors" },
    { name = "progress", type = "string", default = "text", choices = M.PROGRESS,
      help = "progress on stderr: text lines, or json: one JSON object per line as each step starts and ends "
             .. "(whatever --output and --quiet say)" },
  }
end

--- Concatenate declaration lists (a recipe's own first, then shared sets).
---@param ... table[]
---@return table[]
function M.join(...)
  local all = {}
  for i = 1, select("#", ...) do
    for _, d in ipairs(select(i, ...)) do all[#all + 1] = d end
  end
  return all
end

return M
