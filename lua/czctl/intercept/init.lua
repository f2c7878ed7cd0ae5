-- czctl.intercept: how an intercept is done in the cluster. Resolving the
-- Service and its port, building the proxy objects (copy Service, ConfigMap,
-- Deployment), waiting for the proxy, and patching / restoring the Service
-- with its original state saved in an annotation.
--
-- It must not print, parse flags or decide the order of things: the recipe
-- (recipes/service-intercept.lua) says what happens when; this says how.
-- Failures of the world return nil, message (one line, what to do); only
-- misuse raises.
local cjson = require "cjson"
local util = require "czctl.util"

local M = {}

M.ANNOTATION = "czctl.io/intercept"      -- on the intercepted Service: the undo record
M.SESSION_LABEL = "czctl.io/session"     -- on every object a session creates
M.PROXY_LABEL = "czctl.io/proxy"         -- the proxy pods' selector label
M.MANAGED_BY = "app.kubernetes.io/managed-by"
-- Pinned: a tag that moves could change nginx defaults (keepalive since 1.29.7).
M.DEFAULT_IMAGE = "nginxinc/nginx-unprivileged:1.27.4"
M.PROXY_FIRST_PORT = 8080                -- unprivileged: the proxy never needs root
M.HEALTH_PORT = 8079

local null = cjson.null

---@param v any
local function is_null(v) return v == nil or v == null end

local Failure = { __name = "czctl.intercept.failure", __tostring = function(e) return e.message end }

--- Raise a failure as an error object (a one-line message, never mistaken
--- for a Lua "file:line:" error by the runner). Kubernetes errors (tables
--- with __tostring) are raised as they are.
---@param err any
function M.raise(err)
  if type(err) == "table" and getmetatable(err) and getmetatable(err).__tostring then error(err, 0) end
  error(setmetatable({ message = tostring(err) }, Failure), 0)
end

--- Names of the objects a session creates: derived from the session id alone,
--- so a session can be cleaned up knowing only its id and namespace.
---@param id string session id
---@return {deployment: string, configmap: string, service: string, secret: string}
function M.names(id)
  return { deployment = "czctl-" .. id, configmap = "czctl-" .. id,
           service = "czctl-" .. id .. "-original", secret = "czctl-" .. id }
end

-- Where the proxy reads the session's route files (its tunnel's URL, secret
-- and certificates) from the session's Secret.
M.ROUTE_DIR = "/etc/czctl-session"

--- The session's Secret: the files of its route into the tunnel
--- (czctl.proxy.route), mounted into the proxy at M.ROUTE_DIR. Only the
--- proxy and the session's holder know what it holds (decisions section 2).
---@param namespace string
---@param id string
---@param files table<string,string> name -> content, from proxy.render
---@return table
function M.route_secret(namespace, id, files)
  local data = {}
  for k, v in pairs(files) do data[k] = v end
  return {
    apiVersion = "v1", kind = "Secret", type = "Opaque",
    metadata = { name = M.names(id).secret, namespace = namespace, labels = M.session_labels(id) },
    stringData = data,
  }
end

--- The NGINX version of a proxy image, from its tag ("nginx:1.27.4" ->
--- "1.27.4"), or nil when the tag does not say (the configuration then
--- keeps to what every supported NGINX accepts).
---@param image string
---@return string|nil
function M.image_nginx_version(image)
  return tostring(image or ""):match(":(%d+%.%d+%.%d+)[^:/]*$") or tostring(image or ""):match(":(%d+%.%d+)[^:/]*$")
end

--- Labels of every object of a session.
---@param id string
---@return table<string,string>
function M.session_labels(id)
  return { [M.MANAGED_BY] = "czctl", [M.SESSION_LABEL] = id }
end

--- The label selector string for a selector map (sorted, stable).
---@param selector table<string,string>
---@return string
function M.selector_string(selector)
  local keys = {}
  for k in pairs(selector) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = k .. "=" .. selector[k] end
  return table.concat(parts, ",")
end

local function kube_message(err)
  if type(err) == "table" then return err.message or tostring(err) end
  return tostring(err)
end

--- GET the Service; a 404 tells apart a missing Service from a missing namespace.
---@param client table czctl.kube client
---@param namespace string
---@param name string
---@return table|nil service
---@return any err
function M.get_service(client, namespace, name)
  local svc, err = client:get("Service", name, { namespace = namespace })
  if svc then return svc end
  local kube = require "czctl.kube"
  if kube.not_found(err) then
    local ns, nerr = client:get("Namespace", namespace)
    if not ns and kube.not_found(nerr) then
      return nil, string.format("namespace %q not found (use -n to pick the Service's namespace)", namespace)
    end
    return nil, string.format("Service %q not found in namespace %q (list them with: kubectl get services -n %s)",
                              name, namespace, namespace)
  end
  return nil, err
end

--- Why this Service cannot be intercepted, or nil when it can.
---@param svc table
---@return string|nil
function M.not_interceptable(svc)
  local spec = svc.spec or {}
  local name = svc.metadata.name
  if spec.type == "ExternalName" then
    return string.format("Service %q is of type ExternalName: it has no pods whose traffic could be intercepted", name)
  end
  if is_null(spec.selector) or next(spec.selector) == nil then
    return string.format("Service %q has no selector (its endpoints are managed by hand); "
      .. "czctl can only intercept Services that select pods", name)
  end
  if is_null(spec.ports) or #spec.ports == 0 then
    return string.format("Service %q has no ports", name)
  end
  return nil
end

local function describe_port(p)
  local s = tostring(math.tointeger(p.port) or p.port)
  if not is_null(p.name) and p.name ~= "" then s = s .. " (" .. p.name .. ")" end
  if not is_null(p.protocol) and p.protocol ~= "TCP" then s = s .. "/" .. p.protocol end
  return s
end

--- The ports of a Service as "80 (http), 443 (https)".
---@param svc table
---@return string
function M.describe_ports(svc)
  local list = {}
  for i, p in ipairs(svc.spec.ports) do list[i] = describe_port(p) end
  return table.concat(list, ", ")
end

--- Pick the port to intercept: `remote` (number or name), or the only one.
---@param svc table
---@param remote string|number|nil
---@return integer|nil index into svc.spec.ports
---@return string|nil err
function M.choose_port(svc, remote)
  local ports = svc.spec.ports
  local name = svc.metadata.name
  if remote == nil or remote == "" then
    if #ports == 1 then return 1 end
    return nil, string.format("Service %q has %d ports: pick one with -r (%s)", name, #ports,
                              M.describe_ports(svc))
  end
  local want = tostring(remote)
  local number = tonumber(want)
  for i, p in ipairs(ports) do
    if (number and p.port == number) or (not number and p.name == want) then
      if not is_null(p.protocol) and p.protocol ~= "TCP" then
        return nil, string.format("port %s of Service %q is %s; only TCP (HTTP) ports can be intercepted",
                                  want, name, p.protocol)
      end
      return i
    end
  end
  return nil, string.format("Service %q has no port %s (its ports: %s)", name, want, M.describe_ports(svc))
end

--- The pod port a Service port reaches. Named targetPorts are looked up in
--- the containers of the pods the Service selects (one LIST, only when named).
---@param client table
---@param svc table
---@param port table an entry of svc.spec.ports
---@return integer|nil pod_port
---@return string|nil warning when it cannot be resolved (no pods, no such name)
function M.resolve_target_port(client, svc, port)
  local target = port.targetPort
  if is_null(target) then return math.tointeger(port.port) end
  if type(target) == "number" then return math.tointeger(target) end
  local pods, err = client:list("Pod", { namespace = svc.metadata.namespace,
                                         labelSelector = M.selector_string(svc.spec.selector) })
  if not pods then return nil, "could not list the Service's pods: " .. kube_message(err) end
  for _, pod in ipairs(pods.items or {}) do
    for _, c in ipairs((pod.spec or {}).containers or {}) do
      for _, cp in ipairs(c.ports or {}) do
        if cp.name == target then return math.tointeger(cp.containerPort) end
      end
    end
  end
  if #(pods.items or {}) == 0 then
    return nil, string.format("no pod is selected by Service %q right now, so requests without the header will fail",
                              svc.metadata.name)
  end
  return nil, string.format("no pod selected by Service %q has a container port named %q",
                            svc.metadata.name, target)
end

--- Which tool manages this Service and may revert czctl's change, or nil.
---@param svc table
---@return string|nil "Helm" | "Argo CD" | "Flux"
function M.managed_by(svc)
  local labels = is_null(svc.metadata.labels) and {} or svc.metadata.labels
  local annotations = is_null(svc.metadata.annotations) and {} or svc.metadata.annotations
  local function any_prefix(t, prefix)
    for k in pairs(t) do if k:sub(1, #prefix) == prefix then return true end end
    return false
  end
  if any_prefix(labels, "kustomize.toolkit.fluxcd.io/") or any_prefix(annotations, "kustomize.toolkit.fluxcd.io/")
     or any_prefix(labels, "helm.toolkit.fluxcd.io/") or any_prefix(annotations, "helm.toolkit.fluxcd.io/") then
    return "Flux"
  end
  if any_prefix(labels, "argocd.argoproj.io/") or any_prefix(annotations, "argocd.argoproj.io/") then
    return "Argo CD"
  end
  if labels[M.MANAGED_BY] == "Helm" or annotations["meta.helm.sh/release-name"] then
    return "Helm"
  end
  return nil
end

--- The intercept record saved on an intercepted Service, or nil.
---@param svc table
---@return table|nil record {session, selector, ports, header, all, port, objects, ...}
function M.record(svc)
  local annotations = svc.metadata and svc.metadata.annotations
  if is_null(annotations) then return nil end
  local text = annotations[M.ANNOTATION]
  if type(text) ~= "string" then return nil end
  local ok, record = pcall(cjson.decode, text)
  if not ok or type(record) ~= "table" or type(record.session) ~= "string" then return nil end
  return record
end

--- The proxy's listening ports, one per Service port, in the Service's order.
--- The intercepted port is routed by header; the others pass through.
---@param svc table
---@param intercepted integer index of the intercepted port
---@param original_ip string ClusterIP of the copy Service (the route to the original)
---@return table[] ports {name, port, listen, original, intercept, protocol} (proxy.render's ports)
function M.proxy_ports(svc, intercepted, original_ip)
  local ports = {}
  for i, p in ipairs(svc.spec.ports) do
    local port = math.tointeger(p.port)
    ports[i] = {
      name = (not is_null(p.name) and p.name ~= "") and p.name or ("port-" .. port),
      listen = M.PROXY_FIRST_PORT + i - 1,
      port = port,
      original = original_ip .. ":" .. port,
      intercept = (i == intercepted),
      protocol = (not is_null(p.protocol) and p.protocol) or "TCP",
    }
  end
  return ports
end

--- The copy of the Service: the original selector and ports, so the proxy
--- reaches the in-cluster version through its ClusterIP (no cluster DNS).
---@param svc table
---@param id string
---@return table
function M.copy_service(svc, id)
  local ports = {}
  for i, p in ipairs(svc.spec.ports) do
    ports[i] = { name = p.name, port = p.port, targetPort = p.targetPort, protocol = p.protocol,
                 appProtocol = p.appProtocol }
  end
  return {
    apiVersion = "v1", kind = "Service",
    metadata = { name = M.names(id).service, namespace = svc.metadata.namespace,
                 labels = M.session_labels(id),
                 annotations = { ["czctl.io/copy-of"] = svc.metadata.name } },
    spec = { type = "ClusterIP", selector = util.deep_copy(svc.spec.selector), ports = ports },
  }
end

--- The ConfigMap holding the rendered nginx.conf.
---@param namespace string
---@param id string
---@param nginx_conf string
---@return table
function M.config_map(namespace, id, nginx_conf)
  return {
    apiVersion = "v1", kind = "ConfigMap",
    metadata = { name = M.names(id).configmap, namespace = namespace, labels = M.session_labels(id) },
    data = { ["nginx.conf"] = nginx_conf },
  }
end

--- The proxy Deployment: one NGINX pod that passes the `restricted` Pod
--- Security Standard (non-root uid 101, no capabilities, RuntimeDefault
--- seccomp, read-only root with an emptyDir on /tmp, unprivileged ports).
---@param opts {namespace: string, id: string, image: string, ports: table[], service: string, health_port?: integer}
---@return table
function M.deployment(opts)
  local id = opts.id
  local names = M.names(id)
  local pod_labels = M.session_labels(id)
  pod_labels[M.PROXY_LABEL] = id
  local health = opts.health_port or M.HEALTH_PORT
  local container_ports = {}
  for i, p in ipairs(opts.ports) do
    container_ports[i] = { name = "p" .. (i - 1), containerPort = p.listen, protocol = p.protocol or "TCP" }
  end
  container_ports[#container_ports + 1] = { name = "health", containerPort = health, protocol = "TCP" }
  return {
    apiVersion = "apps/v1", kind = "Deployment",
    metadata = { name = names.deployment, namespace = opts.namespace, labels = M.session_labels(id),
                 annotations = { ["czctl.io/service"] = opts.service } },
    spec = {
      replicas = 1,
      selector = { matchLabels = { [M.PROXY_LABEL] = id } },
      template = {
        metadata = { labels = pod_labels },
        spec = {
          automountServiceAccountToken = false,
          enableServiceLinks = false,
          terminationGracePeriodSeconds = 5,
          -- fsGroup: the Secret's files (0440) belong to NGINX's group.
          securityContext = { runAsNonRoot = true, runAsUser = 101, runAsGroup = 101, fsGroup = 101,
                              seccompProfile = { type = "RuntimeDefault" } },
          containers = { {
            name = "proxy",
            image = opts.image,
            command = { "nginx", "-e", "/dev/stderr", "-c", "/etc/czctl/nginx.conf", "-g", "daemon off;" },
            ports = container_ports,
            readinessProbe = { httpGet = { path = "/healthz", port = health },
                               periodSeconds = 1, failureThreshold = 2, timeoutSeconds = 1 },
            resources = { requests = { cpu = "10m", memory = "16Mi" },
                          limits = { cpu = "500m", memory = "64Mi" } },
            securityContext = { allowPrivilegeEscalation = false, readOnlyRootFilesystem = true,
                                runAsNonRoot = true, runAsUser = 101,
                                capabilities = { drop = { "ALL" } } },
            volumeMounts = { { name = "config", mountPath = "/etc/czctl", readOnly = true },
                             { name = "route", mountPath = M.ROUTE_DIR, readOnly = true },
                             { name = "tmp", mountPath = "/tmp" } },
          } },
          volumes = { { name = "config", configMap = { name = names.configmap } },
                      { name = "route", secret = { secretName = names.secret, defaultMode = tonumber("440", 8) } },
                      { name = "tmp", emptyDir = {} } },
        },
      },
    },
  }
end

local WAITING_FAILURES = {
  ErrImagePull = true, ImagePullBackOff = true, InvalidImageName = true, CrashLoopBackOff = true,
  CreateContainerConfigError = true, CreateContainerError = true, RunContainerError = true,
}

--- Why the proxy cannot become ready (from the Deployment's conditions), or nil.
---@param d table Deployment
---@return string|nil
local function deployment_failure(d)
  for _, c in ipairs((d.status or {}).conditions or {}) do
    if c.type == "ReplicaFailure" and c.status == "True" then
      return string.format("the proxy pod could not be created: %s", c.message or c.reason or "ReplicaFailure")
    end
    if c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" then
      return "the proxy Deployment did not progress: " .. (c.message or "deadline exceeded")
    end
  end
  return nil
end

--- Why the proxy pods are failing (image pull, crash...), or nil.
local function pods_failure(client, namespace, id)
  local pods = client:list("Pod", { namespace = namespace, labelSelector = M.PROXY_LABEL .. "=" .. id })
  if not pods then return nil end
  for _, pod in ipairs(pods.items or {}) do
    for _, cs in ipairs((pod.status or {}).containerStatuses or {}) do
      local w = cs.state and cs.state.waiting
      if w and WAITING_FAILURES[w.reason] then
        return string.format("the proxy pod %s is failing: %s%s", pod.metadata.name, w.reason,
                             w.message and (": " .. w.message) or "")
      end
    end
  end
  return nil
end

--- Whether a Deployment has rolled out with an available replica.
---@param d table
---@return boolean
function M.deployment_ready(d)
  local st = d.status or {}
  return (st.observedGeneration or 0) >= (d.metadata.generation or 1)
     and (st.availableReplicas or 0) >= 1 and (st.readyReplicas or st.availableReplicas or 0) >= 1
end

--- Wait, by watch, until the proxy Deployment is available. Pod failures
--- (image pull, PodSecurity rejection, crash loop) end the wait with their
--- reason instead of a silent timeout. The first watch starts at the
--- resourceVersion of the created Deployment (no extra GET); when it is slow,
--- the pods are checked for failures between further watches.
---@param client table
---@param namespace string
---@param id string
---@param timeout number seconds
---@param created? table the Deployment as returned by create
---@return table|nil deployment
---@return any err
function M.wait_ready(client, namespace, id, timeout, created)
  local sys = require "czctl.core.sys"
  local kube = require "czctl.kube"
  local name = M.names(id).deployment
  local deadline = sys.now() + timeout
  local failure
  local function ready(obj)
    if obj == nil then return false end
    failure = deployment_failure(obj)
    return failure ~= nil or M.deployment_ready(obj)
  end
  local slice = 3
  local rv = created and created.metadata and created.metadata.resourceVersion
  while true do
    local remaining = deadline - sys.now()
    if remaining <= 0 then break end
    local d, err
    if rv then
      d, err = client:watch("Deployment", { namespace = namespace, fieldSelector = "metadata.name=" .. name,
                                            resourceVersion = rv, timeout = math.min(slice, remaining) },
        function(event_type, obj)
          if event_type == "DELETED" then failure = "the proxy Deployment was deleted"; return true end
          return ready(obj)
        end)
      rv = nil
    else
      d, err = client:wait_for("Deployment", name, ready, math.min(slice, remaining), { namespace = namespace })
    end
    if failure then return nil, failure end
    if d then return d end
    if not kube.timeout(err) then return nil, err end
    failure = pods_failure(client, namespace, id)
    if failure then return nil, failure end
    slice = math.min(slice * 2, 15)
  end
  failure = pods_failure(client, namespace, id)
  return nil, failure or string.format("the proxy Deployment %s was not ready after %ds "
    .. "(see: kubectl describe deployment %s -n %s)", name, math.floor(timeout), name, namespace)
end

--- The merge patch that points the Service at the proxy, guarded by the
--- resourceVersion it was computed from, and saving the undo record.
---@param svc table the Service as last read
---@param id string
---@param proxy_ports table[] from M.proxy_ports
---@param record table extra fields for the record (header, all, port, ...)
---@return table patch
function M.intercept_patch(svc, id, proxy_ports, record)
  local selector = {}
  for k in pairs(svc.spec.selector) do selector[k] = null end
  selector[M.PROXY_LABEL] = id
  local ports = {}
  for i, p in ipairs(svc.spec.ports) do
    local copy = util.deep_copy(p)
    copy.targetPort = proxy_ports[i].listen
    ports[i] = copy
  end
  local full = util.deep_copy(record)
  full.session = id
  full.selector = util.deep_copy(svc.spec.selector)
  full.ports = util.deep_copy(svc.spec.ports)
  full.objects = M.names(id)
  return {
    metadata = { resourceVersion = svc.metadata.resourceVersion,
                 annotations = { [M.ANNOTATION] = util.json_encode(full) } },
    spec = { selector = selector, ports = ports },
  }
end

--- The merge patch that restores a Service from its record, guarded by the
--- resourceVersion of `svc` (the Service as last read).
---@param svc table
---@param record table from M.record
---@return table patch
function M.restore_patch(svc, record)
  local selector = {}
  for k in pairs(is_null(svc.spec.selector) and {} or svc.spec.selector) do selector[k] = null end
  for k, v in pairs(record.selector) do selector[k] = v end
  local ports = record.ports
  if #ports == 0 then ports = setmetatable({}, util.array_mt) end
  -- Removing our key is enough: the API server drops a map that becomes
  -- empty, so a Service that had no annotations has none again.
  return {
    metadata = { resourceVersion = svc.metadata.resourceVersion, annotations = { [M.ANNOTATION] = null } },
    spec = { selector = selector, ports = ports },
  }
end

--- Patch a Service with a patch computed from its current state, retrying
--- from a fresh GET when the resourceVersion guard fails (409).
---@param client table
---@param namespace string
---@param name string
---@param svc table|nil the Service as last read (nil: GET it first)
---@param make_patch fun(svc: table): table|nil, string|nil  nil patch = nothing to do (returns svc, reason)
---@return table|nil service after the patch (or as read when nothing was done)
---@return any err
---@return string|nil reason when nothing was done
function M.guarded_patch(client, namespace, name, svc, make_patch)
  local kube = require "czctl.kube"
  local err
  for _ = 1, 5 do
    if not svc then
      svc, err = client:get("Service", name, { namespace = namespace })
      if not svc then return nil, err end
    end
    local patch, reason = make_patch(svc)
    if not patch then return svc, nil, reason end
    local patched
    patched, err = client:patch("Service", name, patch, { namespace = namespace, type = "merge" })
    if patched then return patched end
    if not kube.conflict(err) then return nil, err end
    svc = nil
  end
  return nil, err
end

--- Whether a Service's Endpoints list only pods of the session's proxy
--- Deployment (at least one ready), that is, whether the patched selector has
--- taken effect and no request can still reach an original pod directly.
---@param ep table|nil Endpoints object
---@param id string session id
---@return boolean
function M.endpoints_routed(ep, id)
  if ep == nil or is_null(ep.subsets) then return false end
  -- Pods of a Deployment are named DEPLOYMENT-RSHASH-SUFFIX.
  local pattern = "^" .. M.names(id).deployment:gsub("%-", "%%-") .. "%-%w+%-%w+$"
  local ready = 0
  for _, subset in ipairs(ep.subsets) do
    for _, key in ipairs { "addresses", "notReadyAddresses" } do
      local list = subset[key]
      for _, a in ipairs(is_null(list) and {} or list) do
        local ref = a.targetRef
        if is_null(ref) or ref.kind ~= "Pod" or type(ref.name) ~= "string" or not ref.name:find(pattern) then
          return false
        end
        if key == "addresses" then ready = ready + 1 end
      end
    end
  end
  return ready > 0
end

--- Wait, by watch, until the Service's Endpoints list only the proxy pods:
--- from then on every new connection to the Service reaches the proxy.
---@param client table
---@param namespace string
---@param name string the Service
---@param id string session id
---@param timeout number seconds
---@return table|nil endpoints
---@return string|nil err one line
function M.wait_routed(client, namespace, name, id, timeout)
  local ep, err = client:wait_for("Endpoints", name, function(o) return M.endpoints_routed(o, id) end, timeout,
                                  { namespace = namespace })
  if ep then return ep end
  local kube = require "czctl.kube"
  if kube.timeout(err) then
    return nil, string.format("the Endpoints of Service %s still listed pods other than the proxy after %ds "
      .. "(see: kubectl get endpoints %s -n %s -o yaml)", name, math.floor(timeout), name, namespace)
  end
  return nil, "cannot watch the Endpoints of Service " .. name .. ": " .. kube_message(err)
end

--- Delete one object, treating "already gone" as success.
---@return boolean|nil ok
---@return any err
---@return table|nil answer what the API server returned (the object being deleted, or a Status)
function M.delete_if_present(client, kind, name, namespace, opts)
  local kube = require "czctl.kube"
  opts = opts or {}
  opts.namespace = namespace
  local ok, answer = client:delete(kind, name, opts)
  if ok then return true, nil, answer end
  if kube.not_found(answer) then return true end
  return nil, answer
end


--- The intercept workflow with options instead of flags, for scripts that
--- build their own routing rule (see examples/team-routing.lua): the
--- built-in service-intercept recipe's steps, run by czctl.intercept.workflow.
--- Returns start(ctx, opts) -> exit code (opts: czctl.intercept.Options).
---@return fun(ctx: table, opts: table): integer
function M.workflow()
  local recipe = M.builtin_recipe()
  return function(ctx, opts) return require("czctl.intercept.workflow").start(ctx, opts, recipe.steps) end
end

--- The built-in service-intercept recipe (never a user's file of that name),
--- to extend with recipe:with{ hooks = ..., defaults = ..., flags = ... }.
---@return table recipe
function M.builtin_recipe()
  local recipes = require "czctl.recipes"
  local registry = recipes.new()
  local entry = registry:builtin("service-intercept")
  if not entry then error("the built-in service-intercept recipe is missing", 2) end
  return recipes.load(entry)
end

return M
