-- czctl.kube: the Kubernetes client recipes use. It turns the C primitives of
-- czctl.core.kube (kubeconfig, REST requests, watch streams) into typed calls
-- (get/list/create/patch/delete/watch/wait_for), maps kinds to REST paths
-- (built in for core/v1, apps/v1, rbac/v1, coordination/v1; discovery for the
-- rest) and turns every non-2xx answer into an error object.
--
-- It must not see or keep credentials (they stay in C) and knows nothing
-- about intercepts or sessions.
local ckube = require "czctl.core.kube"
local cjson = require "cjson"
local util = require "czctl.util"

local M = {}

-- ---------------------------------------------------------------------------
-- JSON: encoding is czctl.util's (sorted keys, so patches are stable; cjson,
-- Debian's 2.1.0, would write every empty table as {}). Tables marked with
-- kube.array() (util.array_mt) always encode as arrays.

M.null = cjson.null

--- Mark a table as a JSON array (so an empty one encodes as []).
---@param t? table
---@return table
function M.array(t)
  return setmetatable(t or {}, util.array_mt)
end

--- Encode a Lua value as JSON (sorted keys; kube.array() tables as arrays).
---@param v any
---@return string
function M.encode(v)
  return util.json_encode(v)
end

--- Decode JSON (cjson); nil, message on malformed input.
---@param s string
---@return any
function M.decode(s)
  local ok, v = pcall(cjson.decode, s)
  if not ok then return nil, tostring(v) end
  return v
end

-- ---------------------------------------------------------------------------
-- Errors

local Error = {}
Error.__index = Error
Error.__name = "czctl.kube.error"
Error.__tostring = function(e)
  local msg = e.message or ""
  if e.code == 403 then
    -- the API server's message names user, verb, resource and namespace; make
    -- sure the refused request is named even when it does not
    local verb, res = e.verb or "", e.resource or ""
    if not (msg:find(verb, 1, true) and msg:find(res, 1, true)) then
      local where = e.namespace and string.format(' in namespace "%s"', e.namespace) or ""
      msg = string.format("cannot %s %s%s: %s", verb, res, where, msg)
    end
    return "forbidden: " .. msg
  end
  return msg
end
M.Error = Error

local reasons_by_code = {
  [400] = "BadRequest", [401] = "Unauthorized", [403] = "Forbidden", [404] = "NotFound",
  [405] = "MethodNotAllowed", [406] = "NotAcceptable", [409] = "Conflict", [410] = "Gone",
  [415] = "UnsupportedMediaType", [422] = "Invalid", [429] = "TooManyRequests",
  [500] = "InternalError", [503] = "ServiceUnavailable", [504] = "Timeout",
}

local function new_error(fields, req)
  req = req or {}
  fields.verb = fields.verb or req.verb
  fields.resource = fields.resource or req.resource
  fields.namespace = fields.namespace or req.namespace
  fields.name = fields.name or req.name
  return setmetatable(fields, Error)
end

local function first_line(s)
  s = tostring(s or "")
  local line = s:match("^%s*([^\r\n]*)") or ""
  if #line > 200 then line = line:sub(1, 200) .. "..." end
  return line
end

-- A Status object (decoded) or a raw body into an error.
local function status_error(status, body, req)
  local st = type(body) == "table" and body or M.decode(body or "")
  if type(st) == "table" and st.kind == "Status" then
    local details = st.details
    if details == cjson.null then details = nil end
    local causes = details and details.causes
    local msg = st.message ~= cjson.null and st.message or ""
    if msg == "" then msg = string.format("HTTP %d", status) end
    return new_error({
      code = math.tointeger(tonumber(st.code)) or status,
      reason = (st.reason ~= cjson.null and st.reason ~= "" and st.reason) or reasons_by_code[status] or "Unknown",
      message = msg, details = details, causes = causes,
    }, req)
  end
  local line = first_line(type(body) == "string" and body or "")
  return new_error({
    code = status, reason = reasons_by_code[status] or "Unknown",
    message = string.format("HTTP %d: %s", status, line),
  }, req)
end

local function interrupt_error()
  local signal = require "czctl.signal"
  return signal.interrupt(signal.pending() or "SIGINT")
end

local function transport_error(msg, req)
  if msg == "interrupted" then return interrupt_error() end
  return new_error({ code = 0, reason = "Transport", message = tostring(msg) }, req)
end

local function reason_is(r)
  return function(err) return type(err) == "table" and err.reason == r end
end

--- err is a NotFound (404) error.
M.not_found = function(err) return type(err) == "table" and (err.reason == "NotFound" or err.code == 404) end
--- err is a Conflict (409, stale resourceVersion) error.
M.conflict = reason_is("Conflict")
--- err is an AlreadyExists (409) error.
M.already_exists = reason_is("AlreadyExists")
--- err is a Forbidden (403) error.
M.forbidden = function(err) return type(err) == "table" and (err.reason == "Forbidden" or err.code == 403) end
--- err is an Invalid (422) error.
M.invalid = function(err) return type(err) == "table" and (err.reason == "Invalid" or err.code == 422) end
--- err is a 410 Expired/Gone: a watch's resourceVersion is too old (list again).
M.expired = function(err) return type(err) == "table" and err.code == 410 end
--- err is a Timeout (wait_for/watch deadline or 504).
M.timeout = reason_is("Timeout")
--- err is an interrupt (SIGINT/SIGTERM/SIGHUP while waiting).
function M.interrupted(err)
  if type(err) ~= "table" then return false end
  if err.reason == "Interrupted" then return true end
  return require("czctl.signal").is_interrupt(err)
end

-- ---------------------------------------------------------------------------
-- Kinds and paths

local function rt(group, version, resource, namespaced, kind)
  return { group = group, version = version, resource = resource, namespaced = namespaced, kind = kind }
end

local builtin = {}
for _, d in ipairs{
  { "", "v1", {
    { "Namespace", "namespaces", false }, { "Service", "services", true },
    { "Endpoints", "endpoints", true }, { "Pod", "pods", true }, { "ConfigMap", "configmaps", true },
    { "Secret", "secrets", true }, { "ServiceAccount", "serviceaccounts", true },
    { "Event", "events", true }, { "Node", "nodes", false },
    { "PersistentVolumeClaim", "persistentvolumeclaims", true },
    { "PersistentVolume", "persistentvolumes", false },
    { "ReplicationController", "replicationcontrollers", true },
    { "LimitRange", "limitranges", true }, { "ResourceQuota", "resourcequotas", true },
  } },
  { "apps", "v1", {
    { "Deployment", "deployments", true }, { "ReplicaSet", "replicasets", true },
    { "StatefulSet", "statefulsets", true }, { "DaemonSet", "daemonsets", true },
    { "ControllerRevision", "controllerrevisions", true },
  } },
  { "rbac.authorization.k8s.io", "v1", {
    { "Role", "roles", true }, { "RoleBinding", "rolebindings", true },
    { "ClusterRole", "clusterroles", false }, { "ClusterRoleBinding", "clusterrolebindings", false },
  } },
  { "coordination.k8s.io", "v1", { { "Lease", "leases", true } } },
  { "authorization.k8s.io", "v1", {
    { "SelfSubjectAccessReview", "selfsubjectaccessreviews", false },
    { "SelfSubjectRulesReview", "selfsubjectrulesreviews", false },
  } },
} do
  for _, k in ipairs(d[3]) do
    local t = rt(d[1], d[2], k[2], k[3], k[1])
    builtin[k[1]] = t
    builtin[k[2]] = t                                  -- "services"
    builtin[(d[1] == "" and "v1" or d[1] .. "/" .. d[2]) .. "/" .. k[1]] = t  -- "apps/v1/Deployment"
  end
end

local function group_path(group, version)
  if group == "" then return "/api/" .. version end
  return "/apis/" .. group .. "/" .. version
end

local function esc(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- ---------------------------------------------------------------------------
-- Client

---@class czctl.kube.Client
---@field namespace string effective default namespace
local Client = {}
Client.__index = Client

--- Connect: resolve the kubeconfig like kubectl and open one reusable connection.
--- How a kubeconfig resolves (the rules kubectl follows: --kubeconfig, else
--- $KUBECONFIG merged, else ~/.kube/config, else in-cluster), without
--- contacting the cluster and without any secret: context, cluster, user,
--- namespace, server, auth (the method), source and the paths involved.
---@param opts? {kubeconfig?: string, context?: string}
---@return table|nil info
---@return any err
function M.config_info(opts)
  opts = opts or {}
  local cfg, err = ckube.load_config{ kubeconfig = opts.kubeconfig, context = opts.context }
  if not cfg then return nil, err end
  local info = cfg:info()
  cfg:close()
  return info
end

--- Seconds one API request may take when connect{} is not given a timeout:
--- $CZCTL_REQUEST_TIMEOUT (a positive number, as kubectl's --request-timeout
--- in seconds), else nil (the default, 30). A bad value raises a one-line error.
---@return number|nil
function M.request_timeout()
  local v = os.getenv("CZCTL_REQUEST_TIMEOUT")
  if v == nil or v == "" then return nil end
  local n = tonumber(v)
  if not n or n <= 0 or n ~= n or n == math.huge then
    error(string.format("CZCTL_REQUEST_TIMEOUT=%s: expected a positive number of seconds", v), 0)
  end
  return n
end

--- `component` names what runs in the User-Agent (`czctl/VERSION (linux/x86_64) COMPONENT`,
--- the shape kubectl's has), so a cluster's audit log tells which command sent a request.
---@param opts? {kubeconfig?:string, context?:string, namespace?:string, verbose?:boolean, timeout?:number, connect_timeout?:number, component?:string}
---@return czctl.kube.Client|nil client
---@return string|nil err
function M.connect(opts)
  opts = opts or {}
  local cfg, err = ckube.load_config{ kubeconfig = opts.kubeconfig, context = opts.context }
  if not cfg then return nil, err end
  local raw, cerr = ckube.client(cfg, { timeout = opts.timeout or M.request_timeout() or 30,
                                        connect_timeout = opts.connect_timeout or 10,
                                        verbose = opts.verbose and true or false,
                                        component = opts.component
                                          and opts.component:gsub("[^%w._-]", "-"):sub(1, 64) })
  if not raw then return nil, cerr end
  local info = cfg:info()
  local ns = opts.namespace
  if ns == nil or ns == "" then ns = info.namespace end
  return setmetatable({ cfg = cfg, raw = raw, namespace = ns, _info = info,
                        _discovery = {} }, Client)
end

--- The resolved configuration (no secrets): context, cluster, user, namespace, server, auth, ...
---@return table
function Client:info()
  local t = {}
  for k, v in pairs(self._info) do t[k] = v end
  return t
end

--- Request counters: { requests=, connections=, exec_runs= }.
function Client:stats() return self.raw:stats() end

--- Close the connection (idempotent; also on garbage collection).
function Client:close() self.raw:close() end

-- A transport failure ("METHOD URL: reason") as what happened and what to
-- do; interrupts and request timeouts (a reachable but slow cluster) are
-- left as they are. The server URL comes from info() (no credentials).
function Client:_unreachable(msg)
  msg = tostring(msg)
  if msg == "interrupted" or msg:find(": request timed out$") then return msg end
  -- only libcurl failures ("METHOD URL: reason"); e.g. exec plugin errors stay as they are
  local why = msg:match("^%u+ https?://%S+: (.*)$")
  if not why then return msg end
  return string.format("cannot reach the cluster at %s: %s; check that it is running and the kubeconfig's server",
                       tostring(self._info.server), why)
end

-- ---------------------------------------------------------------------------
-- Retries, as client-go's rest.Request makes them (rest/with_retry.go):
-- an answer 429 or 5xx that carries Retry-After is sent again after that
-- many seconds, whatever the method (the server says it did not act on it);
-- a GET whose connection was reset or closed before the answer is sent again
-- after 1 s (client-go's IsConnectionReset/IsProbableEOF, GET only: a write
-- may have been applied). Nothing else is retried: a 500 or 503 without
-- Retry-After, a timeout, a write on a lost connection. At most
-- M.MAX_RETRIES retries (client-go's default 10); a Retry-After over
-- M.MAX_RETRY_AFTER seconds is not waited for (the error is returned).
M.MAX_RETRIES = 10
M.MAX_RETRY_AFTER = 30

-- Seconds to wait before sending again an answer with these status and
-- headers, or nil when it is not to be retried (client-go's checkWait).
local function retry_after(status, headers)
  if status ~= 429 and status < 500 then return nil end
  local v = type(headers) == "table" and headers["retry-after"]
  local n = v and math.tointeger(tonumber(v:match("^%s*(%d+)%s*$")))
  if not n or n > M.MAX_RETRY_AFTER then return nil end
  return n
end
M._retry_after = retry_after

-- Wait s seconds unless a signal comes; true when the wait ran out.
local function pause(s)
  if s <= 0 then return true end
  local ok = require("czctl.core.sys").sleep(s)
  return ok and true or false
end

-- One request, with the retries above; returns status, decoded-or-raw body,
-- headers | nil, err (transport).
function Client:_do(req, ctx)
  local method = req.method or "GET"
  for attempt = 0, M.MAX_RETRIES do
    local status, body, headers = self.raw:request(req)
    local wait
    if status then
      wait = retry_after(status, headers)
    elseif headers == "reset" and method == "GET" then
      wait = 1
    end
    if wait and attempt < M.MAX_RETRIES and not pause(wait) then return nil, interrupt_error() end
    if not wait or attempt == M.MAX_RETRIES then
      if not status then
        if headers == "reset" and attempt > 0 then
          body = string.format("%s (after %d retries)", tostring(body), attempt)
        end
        return nil, transport_error(self:_unreachable(body), ctx)
      end
      return status, body, headers
    end
    self.retries = (self.retries or 0) + 1
  end
end

-- Discover a kind not built in: /api/v1 and every group's preferred version.
function Client:_discover(kind)
  if self._discovery[kind] then return self._discovery[kind] end
  local group, version, k = kind:match("^([^/]+)/([^/]+)/([^/]+)$")
  if not group then
    version, k = kind:match("^([^/]+)/([^/]+)$")
    if version then group = "" end
  end
  k = k or kind
  local candidates = {}
  if version then
    candidates[1] = { group, version }
  else
    candidates[1] = { "", "v1" }
    local status, body = self:_do({ path = "/apis" }, { verb = "get", resource = "apis" })
    if not status then return nil, body end
    if status ~= 200 then return nil, status_error(status, body, { verb = "get", resource = "apis" }) end
    local groups = M.decode(body)
    for _, g in ipairs(type(groups) == "table" and groups.groups or {}) do
      local pv = g.preferredVersion or (g.versions and g.versions[1])
      if pv and pv.version then candidates[#candidates + 1] = { g.name, pv.version } end
    end
  end
  for _, c in ipairs(candidates) do
    local path = group_path(c[1], c[2])
    local status, body = self:_do({ path = path }, { verb = "get", resource = path })
    if not status then return nil, body end
    if status == 200 then
      local list = M.decode(body)
      for _, r in ipairs(type(list) == "table" and list.resources or {}) do
        if not r.name:find("/", 1, true) and (r.kind == k or r.name == k:lower()) then
          local t = rt(c[1], c[2], r.name, r.namespaced and true or false, r.kind)
          self._discovery[kind] = t
          return t
        end
      end
    end
  end
  return nil, new_error({ code = 0, reason = "NotFound",
                          message = string.format('the server does not know the kind "%s"', kind) })
end

function Client:_resource(kind)
  if type(kind) ~= "string" or kind == "" then error("kube: kind must be a non-empty string", 3) end
  local t = builtin[kind]
  if t then return t end
  return self:_discover(kind)
end

-- Collection path; ns nil means all namespaces (or cluster-scoped).
local function collection_path(t, ns)
  local base = group_path(t.group, t.version)
  if t.namespaced and ns then return base .. "/namespaces/" .. esc(ns) .. "/" .. t.resource end
  return base .. "/" .. t.resource
end

local function item_path(t, ns, name)
  return collection_path(t, ns) .. "/" .. esc(name)
end

function Client:_ns(t, opts)
  if not t.namespaced then return nil end
  return (opts and opts.namespace) or self.namespace
end

local function ctx_for(verb, t, ns, name)
  local res = t.group ~= "" and (t.resource .. "." .. t.group) or t.resource
  return { verb = verb, resource = res, namespace = ns, name = name }
end

-- Send and decode: 2xx -> decoded body; else the Status error.
function Client:_call(req, ctx)
  local status, body = self:_do(req, ctx)
  if not status then return nil, body end
  if status >= 200 and status < 300 then
    if body == "" then return {} end
    local obj, derr = M.decode(body)
    if obj == nil then
      return nil, new_error({ code = status, reason = "InvalidResponse",
                              message = "invalid JSON from the API server: " .. tostring(derr) }, ctx)
    end
    return obj
  end
  if status == 401 then
    -- names the user and context (never the credentials) and what to do
    local info = self._info
    return nil, new_error({ code = 401, reason = "Unauthorized", message = string.format(
      'Unauthorized: the cluster rejected the credentials of user "%s" (context "%s"); refresh them or check the kubeconfig',
      tostring(info.user or "?"), tostring(info.context or "?")) }, ctx)
  end
  return nil, status_error(status, body, ctx)
end

--- Get one object.
---@param kind string "Service", "apps/v1/Deployment", ...
---@param name string
---@param opts? {namespace?:string}
---@return table|nil obj
---@return table|nil err
function Client:get(kind, name, opts)
  local t, err = self:_resource(kind)
  if not t then return nil, err end
  local ns = self:_ns(t, opts)
  return self:_call({ method = "GET", path = item_path(t, ns, name) }, ctx_for("get", t, ns, name))
end

--- List objects, following every `continue` page.
---@param kind string
---@param opts? {namespace?:string, all_namespaces?:boolean, labelSelector?:string, fieldSelector?:string, limit?:integer}
---@return table|nil list {items=..., metadata={resourceVersion=...}}
---@return table|nil err
function Client:list(kind, opts)
  opts = opts or {}
  local t, err = self:_resource(kind)
  if not t then return nil, err end
  local ns = (not opts.all_namespaces) and self:_ns(t, opts) or nil
  local path = collection_path(t, ns)
  local ctx = ctx_for("list", t, ns)
  local query = { labelSelector = opts.labelSelector, fieldSelector = opts.fieldSelector,
                  limit = opts.limit or 500 }
  local result, items = nil, {}
  repeat
    local page, perr = self:_call({ method = "GET", path = path, query = query }, ctx)
    if not page then return nil, perr end
    for _, it in ipairs(page.items ~= cjson.null and page.items or {}) do items[#items + 1] = it end
    result = result or page
    local cont = type(page.metadata) == "table" and page.metadata.continue
    if cont == cjson.null or cont == "" then cont = nil end
    query["continue"] = cont
  until not cont
  result.items = M.array(items)
  if type(result.metadata) == "table" then result.metadata.continue = nil end
  return result
end

local function kind_of_object(obj)
  if type(obj) ~= "table" or type(obj.kind) ~= "string" then
    error("kube: create needs an object with kind (and apiVersion)", 3)
  end
  local api = obj.apiVersion
  if type(api) == "string" and api ~= "" then return api .. "/" .. obj.kind end
  return obj.kind
end

--- Create an object (POST). The namespace is opts.namespace, the object's, or the client's.
---@param obj table
---@param opts? {namespace?:string, dryRun?:boolean, fieldManager?:string}
---@return table|nil obj
---@return table|nil err
function Client:create(obj, opts)
  opts = opts or {}
  local t, err = self:_resource(kind_of_object(obj))
  if not t then return nil, err end
  local md = type(obj.metadata) == "table" and obj.metadata or {}
  local ns = t.namespaced and (opts.namespace or md.namespace or self.namespace) or nil
  local body = type(obj) == "string" and obj or M.encode(obj)
  return self:_call({ method = "POST", path = collection_path(t, ns), body = body,
                      content_type = "application/json",
                      query = { dryRun = opts.dryRun and "All" or nil, fieldManager = opts.fieldManager } },
                    ctx_for("create", t, ns, md.name))
end

local patch_types = {
  merge = "application/merge-patch+json",
  strategic = "application/strategic-merge-patch+json",
  json = "application/json-patch+json",
}

--- Patch an object. type: "merge" (default, RFC 7386), "strategic" or "json" (RFC 6902).
--- patch is a table (encoded with kube.encode; use kube.array{} for an empty list) or a JSON string.
---@param kind string
---@param name string
---@param patch table|string
---@param opts? {namespace?:string, type?:string, fieldManager?:string, subresource?:string}
---@return table|nil obj
---@return table|nil err
function Client:patch(kind, name, patch, opts)
  opts = opts or {}
  local ctype = patch_types[opts.type or "merge"]
  if not ctype then error("kube: patch type must be merge, strategic or json", 2) end
  local t, err = self:_resource(kind)
  if not t then return nil, err end
  local ns = self:_ns(t, opts)
  local body = type(patch) == "string" and patch or M.encode(patch)
  local path = item_path(t, ns, name)
  if opts.subresource then path = path .. "/" .. opts.subresource end
  return self:_call({ method = "PATCH", path = path, body = body, content_type = ctype,
                      query = { fieldManager = opts.fieldManager } },
                    ctx_for("patch", t, ns, name))
end

--- Delete an object. Returns true when the API server accepted the deletion.
---@param kind string
---@param name string
---@param opts? {namespace?:string, propagationPolicy?:string, gracePeriodSeconds?:integer, preconditions?:{uid?:string, resourceVersion?:string}}
---@return boolean|nil ok
---@return table|nil err
function Client:delete(kind, name, opts)
  opts = opts or {}
  local t, err = self:_resource(kind)
  if not t then return nil, err end
  local ns = self:_ns(t, opts)
  local options = { kind = "DeleteOptions", apiVersion = "v1",
                    propagationPolicy = opts.propagationPolicy or "Background",
                    gracePeriodSeconds = opts.gracePeriodSeconds,
                    preconditions = opts.preconditions }
  local obj, derr = self:_call({ method = "DELETE", path = item_path(t, ns, name),
                                 body = M.encode(options), content_type = "application/json" },
                               ctx_for("delete", t, ns, name))
  if not obj then return nil, derr end
  return true, obj
end

local function now() return require("czctl.core.sys").now() end

local function expired_message(ctx, rv, server_message)
  return string.format("watch of %s expired: resourceVersion %s is too old (%s); list again to get a current resourceVersion",
                       ctx.resource, tostring(rv), server_message)
end

--- Watch a collection, calling handler(event_type, obj) for each ADDED,
--- MODIFIED and DELETED event until it returns true (then returns that obj).
--- Re-watches from the last resourceVersion when the server ends the stream;
--- BOOKMARKs only move the resourceVersion. 410 Expired is an error unless
--- opts.relist (then it re-watches from the current state).
---@param kind string
---@param opts? {namespace?:string, all_namespaces?:boolean, labelSelector?:string, fieldSelector?:string, resourceVersion?:string, timeout?:number, timeoutSeconds?:integer, relist?:boolean}
---@param handler fun(event_type:string, obj:table):boolean?
---@return table|nil obj
---@return table|nil err
function Client:watch(kind, opts, handler)
  opts = opts or {}
  if type(handler) ~= "function" then error("kube: watch needs a handler function", 2) end
  local t, err = self:_resource(kind)
  if not t then return nil, err end
  local ns = (not opts.all_namespaces) and self:_ns(t, opts) or nil
  local ctx = ctx_for("watch", t, ns)
  local path = collection_path(t, ns)
  local rv = opts.resourceVersion
  local deadline = opts.timeout and (now() + opts.timeout) or nil
  local function remaining()
    if not deadline then return nil end
    return math.max(0, deadline - now())
  end
  local function timeout_error()
    return new_error({ code = 0, reason = "Timeout",
                       message = string.format("timed out after %gs watching %s", opts.timeout, ctx.resource) }, ctx)
  end
  -- 410 Gone: rv is too old. With opts.relist, forget it and re-watch from
  -- the current state (true); otherwise say what to do in e's message.
  local function relist_after(e)
    if e.code ~= 410 then return false end
    if opts.relist and rv ~= nil then
      rv = nil
      return true
    end
    e.message = expired_message(ctx, rv, e.message)
    return false
  end
  local failures, retries = 0, 0
  while true do
    local rem = remaining()
    if rem and rem <= 0 then return nil, timeout_error() end
    local server_timeout = opts.timeoutSeconds or 300
    if rem then server_timeout = math.min(server_timeout, math.ceil(rem) + 1) end
    local query = { watch = "1", allowWatchBookmarks = "true", resourceVersion = rv,
                    labelSelector = opts.labelSelector, fieldSelector = opts.fieldSelector,
                    timeoutSeconds = server_timeout }
    local w, werr, status, body, headers = self.raw:watch{ path = path, query = query, timeout = rem }
    if not w then
      local wait = status and retry_after(status, headers)
      if wait and retries < M.MAX_RETRIES and (not rem or wait < remaining()) then
        retries = retries + 1
        if not pause(wait) then return nil, interrupt_error(ctx) end
        goto continue
      end
      if status then
        local e = status_error(status, body, ctx)
        if relist_after(e) then goto continue end
        return nil, e
      end
      if werr == "interrupted" then return nil, interrupt_error(ctx) end
      failures = failures + 1
      if failures >= 3 or (rem and remaining() <= 0) then return nil, transport_error(werr, ctx) end
    else
      local stream <close> = w
      while true do
        local line, why = stream:next(remaining())
        if not line then
          if why == "timeout" then return nil, timeout_error() end
          if why == "interrupted" then return nil, interrupt_error(ctx) end
          if why ~= "eof" then failures = failures + 1 end
          if failures >= 3 then return nil, transport_error(why, ctx) end
          break -- re-watch from rv
        end
        local ev = M.decode(line)
        if type(ev) ~= "table" or type(ev.type) ~= "string" then
          return nil, new_error({ code = 0, reason = "InvalidResponse",
                                  message = "invalid watch event: " .. first_line(line) }, ctx)
        end
        local obj = ev.object
        if ev.type == "ERROR" then
          local e = status_error(math.tointeger(tonumber(type(obj) == "table" and obj.code)) or 500, obj, ctx)
          if relist_after(e) then break end
          return nil, e
        end
        failures = 0
        local md = type(obj) == "table" and obj.metadata
        if type(md) == "table" and type(md.resourceVersion) == "string" and md.resourceVersion ~= "" then
          rv = md.resourceVersion
        end
        if ev.type ~= "BOOKMARK" then
          if handler(ev.type, obj) then return obj end
        end
      end
    end
    ::continue::
  end
end

--- Wait until predicate(obj) is true for the named object. The current state
--- is listed first, then watched (fieldSelector metadata.name). predicate(nil)
--- is asked when the object does not exist or was deleted (true there means
--- "gone is what I wanted"; the last known object, or {}, is returned).
---@param kind string
---@param name string
---@param predicate fun(obj:table|nil):boolean
---@param timeout number seconds
---@param opts? {namespace?:string}
---@return table|nil obj
---@return table|nil err reason "Timeout" on timeout
function Client:wait_for(kind, name, predicate, timeout, opts)
  opts = opts or {}
  local t, err = self:_resource(kind)
  if not t then return nil, err end
  local ns = self:_ns(t, opts)
  local selector = "metadata.name=" .. name
  local deadline = now() + timeout
  local obj, werr, last, gone_ok
  repeat
    -- list (the current state and its resourceVersion), then watch from it;
    -- a 410 (the version expired meanwhile: a deletion may be in the gap)
    -- lists again, as client-go's informers do
    local list, lerr = self:list(kind, { namespace = ns, fieldSelector = selector })
    if not list then return nil, lerr end
    local current = list.items[1]
    if predicate(current) then return current or {} end
    local rv = type(list.metadata) == "table" and list.metadata.resourceVersion or nil
    last, gone_ok = current, false
    obj, werr = self:watch(kind, { namespace = ns, fieldSelector = selector, resourceVersion = rv,
                                   timeout = math.max(0, deadline - now()) },
      function(event_type, o)
        if event_type == "DELETED" then
          last = o
          if predicate(nil) then
            gone_ok = true
            return true
          end
          return false
        end
        last = o
        return predicate(o)
      end)
  until obj or not M.expired(werr) or now() >= deadline
  if M.expired(werr) then
    werr = new_error({ code = 0, reason = "Timeout", message = "timed out" }, ctx_for("watch", t, ns, name))
  end
  if obj then return gone_ok and (last or {}) or obj end
  if M.timeout(werr) then
    werr.message = string.format('timed out after %gs waiting for %s "%s"%s', timeout, t.kind, name,
                                 ns and string.format(' in namespace "%s"', ns) or "")
    werr.name = name
    werr.verb = "watch"
  end
  return nil, werr
end

return M
