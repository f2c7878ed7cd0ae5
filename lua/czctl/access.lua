-- czctl.access: which Kubernetes permissions each czctl command needs, and a
-- check, before anything changes, that the user has all of them. The table
-- below is the source of docs/permissions.md and of
-- examples/czctl-developer-role.yaml; tests/e2e/test_permissions.sh runs
-- every command with exactly that Role and with each permission removed.
--
-- The check asks the API server once for the user's rules in the namespace
-- (SelfSubjectRulesReview) and matches them as RBAC does; a permission the
-- rules do not show is then asked about on its own (SelfSubjectAccessReview),
-- because another authorizer (a webhook) may grant what RBAC does not list.
-- Only what the server answers "not allowed" to is reported missing.
local M = {}

-- A permission: verb on resource (group "" is the core group), in the
-- command's namespace; `name` narrows it to one object when known.
---@class czctl.access.Permission
---@field verb string
---@field resource string
---@field group string
---@field name? string
---@field why string

local function p(verb, group, resource, why) return { verb = verb, group = group, resource = resource, why = why } end

--- What each command needs, by command. The intercept needs what closing
--- the session needs too (its undo steps, and `session close` from another
--- machine).
M.NEEDS = {
  ["service intercept"] = {
    p("get", "", "services", "read the Service; restore it when the last session closes"),
    p("patch", "", "services", "join its sessions (annotations); route it through the proxy, and back"),
    p("create", "", "services", "the copy of the Service (the proxy's route to the original)"),
    p("delete", "", "services", "remove that copy when the last session closes"),
    p("list", "", "services", "find sessions to close (session close, session list)"),
    p("watch", "", "services", "see a patch whose answer was lost, to undo it"),
    p("list", "", "endpoints", "see when the Service routes through the proxy"),
    p("watch", "", "endpoints", "see when the Service routes through the proxy; the holder's watch"),
    p("list", "", "pods", "resolve named target ports; which proxy pods run the routes; why one fails"),
    p("create", "", "secrets", "the proxy's NGINX configuration (immutable, named by its hash) and the "
                              .. "session's route into its tunnel (URL, secret, certificates)"),
    p("delete", "", "secrets", "remove configurations no pod uses, the session's route, and all when the last "
                              .. "session closes"),
    p("list", "", "secrets", "find the proxy's configurations"),
    p("watch", "", "secrets", "see a create whose answer was lost, to undo it"),
    p("get", "apps", "deployments", "the Service's proxy"),
    p("create", "apps", "deployments", "the proxy, for the first session"),
    p("patch", "apps", "deployments", "point the proxy at a new configuration (a rolling update)"),
    p("delete", "apps", "deployments", "remove the proxy when the last session closes"),
    p("list", "apps", "deployments", "wait for the proxy; find proxies no session uses"),
    p("watch", "apps", "deployments", "wait for the proxy to roll out, and to be gone"),
    p("create", "coordination.k8s.io", "leases", "the session's heartbeat"),
    p("patch", "coordination.k8s.io", "leases", "renew the heartbeat"),
    p("delete", "coordination.k8s.io", "leases", "remove it when the session closes"),
    p("list", "coordination.k8s.io", "leases", "the sessions' heartbeats (session list)"),
    p("create", "", "events", "tell other sessions' holders what this one's holder did"),
    p("list", "", "events", "hear what other sessions' holders did"),
  },
  ["session close"] = {
    p("get", "", "services", "read the intercepted Service"),
    p("patch", "", "services", "take the session off it; the last one restores it"),
    p("delete", "", "services", "remove the copy of the Service"),
    p("list", "", "services", "find the sessions (by owner, with no local record)"),
    p("list", "", "pods", "which proxy pods still run an old configuration"),
    p("create", "", "secrets", "the proxy's configuration without the session"),
    p("delete", "", "secrets", "remove the proxy's configurations and the session's route"),
    p("list", "", "secrets", "find the proxy's configurations"),
    p("get", "apps", "deployments", "the Service's proxy"),
    p("patch", "apps", "deployments", "roll the proxy to the configuration without the session"),
    p("delete", "apps", "deployments", "remove the proxy"),
    p("list", "apps", "deployments", "find proxies no session uses"),
    p("watch", "apps", "deployments", "wait until the proxy rolled out, or is gone"),
    p("delete", "coordination.k8s.io", "leases", "remove the session's heartbeat"),
    p("list", "coordination.k8s.io", "leases", "remove the heartbeats with the proxy; --stale: whose holder is gone"),
  },
  ["session list"] = {
    p("list", "", "services", "intercepted Services"),
    p("list", "", "secrets", "proxies no session uses"),
    p("get", "apps", "deployments", "whether each Service's proxy runs"),
    p("list", "apps", "deployments", "proxies no session uses"),
    p("list", "coordination.k8s.io", "leases", "the sessions' heartbeats"),
  },
  ["service env"] = {
    p("get", "", "services", "the Service's selector"),
    p("list", "", "pods", "a ready pod behind the Service"),
    p("get", "", "configmaps", "values from ConfigMaps (env, envFrom, --mount)"),
    p("get", "", "secrets", "values from Secrets (env, envFrom, --mount)"),
  },
}

--- The permissions of a command (a copy), plus those of other commands
--- it runs (e.g. {"service intercept", "service env"} for --env-file).
---@param ... string command names
---@return czctl.access.Permission[]
function M.needs(...)
  local out, seen = {}, {}
  for i = 1, select("#", ...) do
    for _, q in ipairs(M.NEEDS[select(i, ...)] or error("czctl.access: no command " .. tostring(select(i, ...)), 2)) do
      local key = q.verb .. " " .. q.group .. "/" .. q.resource
      if not seen[key] then
        seen[key] = true
        out[#out + 1] = { verb = q.verb, group = q.group, resource = q.resource, why = q.why }
      end
    end
  end
  return out
end

--- "create deployments.apps", "get services": how RBAC names a permission.
---@param q czctl.access.Permission
---@return string
function M.describe(q)
  return q.verb .. " " .. q.resource .. (q.group ~= "" and ("." .. q.group) or "")
end

local function has(list, value)
  for _, v in ipairs(list or {}) do if v == value or v == "*" then return true end end
  return false
end

--- Whether an RBAC rule (a PolicyRule or a SelfSubjectRulesReview
--- resourceRule) allows a permission: verbs, apiGroups, resources (with
--- "*" and "*/subresource") and resourceNames, as the RBAC authorizer
--- matches them.
---@param rule table
---@param q czctl.access.Permission
---@return boolean
function M.rule_allows(rule, q)
  if not has(rule.verbs, q.verb) or not has(rule.apiGroups, q.group) then return false end
  local resource_ok = false
  for _, r in ipairs(rule.resources or {}) do
    if r == "*" or r == q.resource then resource_ok = true end
  end
  if not resource_ok then return false end
  local names = rule.resourceNames
  if type(names) == "table" and #names > 0 then
    if not q.name then return false end
    return has(names, q.name)
  end
  return true
end

local function rules_review(client, namespace)
  local review, err = client:create({ apiVersion = "authorization.k8s.io/v1", kind = "SelfSubjectRulesReview",
                                      spec = { namespace = namespace } })
  if not review then return nil, err end
  return review.status or {}
end

local function access_review(client, namespace, q)
  local review, err = client:create({
    apiVersion = "authorization.k8s.io/v1", kind = "SelfSubjectAccessReview",
    spec = { resourceAttributes = { namespace = namespace, verb = q.verb, group = q.group, resource = q.resource,
                                    name = q.name } } })
  if not review then return nil, err end
  return (review.status or {}).allowed == true
end

--- The permissions of `needs` the user lacks in `namespace` (empty when
--- all are granted), asked of the API server; nil, err when it cannot tell.
---@param client table czctl.kube client
---@param namespace string
---@param needs czctl.access.Permission[]
---@return czctl.access.Permission[]|nil missing
---@return any err
function M.missing(client, namespace, needs)
  local status, rerr = rules_review(client, namespace)
  local kube = require "czctl.kube"
  -- a server that refuses or lacks rules reviews still answers access
  -- reviews; anything else (401, unreachable) is the answer
  if not status and not (kube.forbidden(rerr) or kube.not_found(rerr)) then return nil, rerr end
  local rules = status and status.resourceRules or {}
  local missing = {}
  for _, q in ipairs(needs) do
    local granted = false
    for _, rule in ipairs(type(rules) == "table" and rules or {}) do
      if M.rule_allows(rule, q) then granted = true; break end
    end
    if not granted then
      local allowed, err = access_review(client, namespace, q)
      if allowed == nil then return nil, err end
      if not allowed then missing[#missing + 1] = q end
    end
  end
  return missing
end

--- One line naming what is missing, for an error message.
---@param namespace string
---@param missing czctl.access.Permission[]
---@param command string
---@return string
function M.message(namespace, missing, command)
  local names = {}
  for i, q in ipairs(missing) do names[i] = M.describe(q) end
  return string.format("%s needs permissions you do not have in namespace %q: %s (see docs/permissions.md; "
                       .. "check with: kubectl auth can-i --list -n %s)", command, namespace,
                       table.concat(names, ", "), namespace)
end

--- Check that the user may do everything `needs` lists in `namespace`;
--- returns true, or nil and a one-line message naming what is missing.
---@param client table
---@param namespace string
---@param needs czctl.access.Permission[]
---@param command string for the message
---@param object_name? string the object the command is about (a Service)
---@return true|nil
---@return any err
function M.check(client, namespace, needs, command, object_name)
  -- A name kubectl refuses (".", "..", "/" or "%" in it) is refused by the
  -- client, with kubectl's message, before the first request that uses it:
  -- asking about permissions first would send a request for nothing.
  for _, s in ipairs({ namespace, object_name or "x" }) do
    if s == "" or s == "." or s == ".." or s:find("[/%%]") then return true end
  end
  local missing, err = M.missing(client, namespace, needs)
  if not missing then return nil, err end
  if #missing > 0 then return nil, M.message(namespace, missing, command) end
  return true
end

return M
