-- czctl.intercept: how an intercept is done in the cluster. Resolving the
-- Service and its port, the proxy's ports and its Deployment, waiting for
-- it, and the guarded patch every change of the Service goes through. The
-- one proxy a Service shares between sessions, and the Service's
-- annotations, are czctl.session.shared's.
--
-- It must not print, parse flags or decide the order of things: the recipe
-- (recipes/service-intercept.lua) says what happens when; this says how.
-- Failures of the world return nil, message (one line, what to do); only
-- misuse raises.
local cjson = require "cjson"
local util = require "czctl.util"

local M = {}

M.PROXY_LABEL = "czctl.io/proxy"         -- the proxy pods' selector label (value: the Service)
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

-- Where the proxy reads the sessions' route files (each tunnel's URL,
-- secret and certificates): one directory per session, ROUTE_DIR/<id>,
-- mounted from the session's route Secret.
M.ROUTE_DIR = "/etc/czctl-session"
M.SESSION_LABEL = "czctl.io/session"    -- on a session's route Secret: its id

--- The name of a session's route Secret.
---@param id string
---@return string
function M.route_secret_name(id)
  return "czctl-route-" .. id
end

--- A session's route Secret: the files of its route into the tunnel
--- (czctl.proxy.route), mounted into the Service's proxy at ROUTE_DIR/<id>.
--- Only the proxy and the session's holder know what it holds (decisions
--- section 2); the Service's annotation names the session, never these.
---@param namespace string
---@param service string the intercepted Service (its proxy mounts it)
---@param id string
---@param files table<string,string> name -> content, from proxy.route.files
---@return table
function M.route_secret(namespace, service, id, files)
  local data = {}
  for k, v in pairs(files) do data[k] = v end
  return {
    apiVersion = "v1", kind = "Secret", type = "Opaque",
    metadata = { name = M.route_secret_name(id), namespace = namespace,
                 labels = { [M.MANAGED_BY] = "czctl", ["czctl.io/service"] = service, [M.SESSION_LABEL] = id } },
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

--- The proxy Deployment: one NGINX pod that passes the `restricted` Pod
--- Security Standard (non-root uid 101, no capabilities, RuntimeDefault
--- seccomp, read-only root with an emptyDir on /tmp, unprivileged ports).
--- The pods are labelled `czctl.io/proxy: SELECTOR` and mount the
--- configuration (nginx.conf) from opts.config, a volume source.
---@param opts {namespace: string, name: string, labels: table, selector: string, image: string, ports: table[], config: table, health_port?: integer}
---@return table
function M.deployment(opts)
  local pod_labels = util.deep_copy(opts.labels)
  pod_labels[M.PROXY_LABEL] = opts.selector
  local health = opts.health_port or M.HEALTH_PORT
  local container_ports = {}
  for i, p in ipairs(opts.ports) do
    container_ports[i] = { name = "p" .. (i - 1), containerPort = p.listen, protocol = p.protocol or "TCP" }
  end
  container_ports[#container_ports + 1] = { name = "health", containerPort = health, protocol = "TCP" }
  return {
    apiVersion = "apps/v1", kind = "Deployment",
    metadata = { name = opts.name, namespace = opts.namespace, labels = util.deep_copy(opts.labels) },
    spec = {
      replicas = 1,
      selector = { matchLabels = { [M.PROXY_LABEL] = opts.selector } },
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
                             { name = "tmp", mountPath = "/tmp" } },
          } },
          volumes = { util.deep_copy(opts.config),
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
local function pods_failure(client, namespace, selector)
  local pods = client:list("Pod", { namespace = namespace, labelSelector = M.PROXY_LABEL .. "=" .. selector })
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
--- `ready(d)` says when the Deployment is where the caller wants it
--- (default: M.deployment_ready). With `absent_ok`, a Deployment that is
--- missing or deleted meanwhile ends the wait with {gone = true}.
---@param client table
---@param namespace string
---@param name string the Deployment
---@param selector string the value of the pods' czctl.io/proxy label
---@param timeout number seconds
---@param opts? {created?: table, ready?: fun(d: table): boolean, absent_ok?: boolean}
---@return table|nil deployment
---@return any err
function M.wait_ready(client, namespace, name, selector, timeout, opts)
  local sys = require "czctl.core.sys"
  local kube = require "czctl.kube"
  opts = opts or {}
  local created = opts.created
  local is_ready = opts.ready or M.deployment_ready
  local id = selector
  local deadline = sys.now() + timeout
  local failure, gone
  local function ready(obj)
    if obj == nil then
      -- opts.absent_ok: a Deployment deleted meanwhile is as good as ready
      -- (the last session to leave a shared proxy deletes it)
      gone = opts.absent_ok == true
      return gone
    end
    failure = deployment_failure(obj)
    return failure ~= nil or is_ready(obj)
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
          if event_type == "DELETED" then
            if opts.absent_ok then gone = true else failure = "the proxy Deployment was deleted" end
            return true
          end
          return ready(obj)
        end)
      rv = nil
    else
      d, err = client:wait_for("Deployment", name, ready, math.min(slice, remaining), { namespace = namespace })
    end
    if failure then return nil, failure end
    if gone then return { gone = true } end
    if d then return d end
    if not kube.timeout(err) and not kube.expired(err) then return nil, err end -- 410: wait_for lists again
    failure = pods_failure(client, namespace, id)
    if failure then return nil, failure end
    slice = math.min(slice * 2, 15)
  end
  failure = pods_failure(client, namespace, id)
  return nil, failure or string.format("the proxy Deployment %s was not ready after %ds "
    .. "(see: kubectl describe deployment %s -n %s)", name, math.floor(timeout), name, namespace)
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
