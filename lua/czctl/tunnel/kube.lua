-- czctl.tunnel.kube: a tunnel through the Kubernetes API (docs/decisions.md
-- section 6), for clusters that cannot reach this machine and teams without
-- ngrok. The session gets a relay of its own in the cluster (Deployment,
-- Service and NetworkPolicy `czctl-relay-<id>`); the proxy sends intercepted
-- traffic to the relay's Service, and the session's holder keeps a pool of
-- port-forward streams open to the relay pod through the API server
-- (czctl.core.portforward), each paired one handed to 127.0.0.1:LOCAL_PORT.
-- Nothing listens on this machine beyond the app itself; nothing is public.
--
-- Two halves, in two processes:
--   prepare(run)   in the intercept command (the workflow's tunnel step): the
--                  relay's objects, each created with its undo registered;
--   start(opts)    in the session's keeper: a handle whose poll() (called by
--                  the keeper's loop) finds the relay pod, opens the pool,
--                  follows a replaced pod and reports the state, which the
--                  keeper writes to <id>.tunnel.json (`session list` shows it).
-- This module must not print: it reports through opts.log and its handle.
local embed = require "czctl.core.embed"
local intercept = require "czctl.intercept"

local M = {}

-- The release builds relay/Dockerfile and publishes it under this name, with
-- the version of the czctl that creates it (the pairing protocol is theirs).
M.IMAGE_REPOSITORY = "ghcr.io/czctl/czctl-relay"
M.DEFAULT_IMAGE = M.IMAGE_REPOSITORY .. ":" .. embed.version
M.PROXY_PORT = 9000    -- the proxy connects here (the relay's Service)
M.LAPTOP_PORT = 9001   -- port-forward streams arrive here (the pod's loopback)
M.HEALTH_PORT = 9002   -- probes
M.POOL_SIZE = 16       -- idle streams kept open: a burst beyond waits for the next
M.COMPONENT = "relay"
M.COMPONENT_LABEL = "app.kubernetes.io/component"
-- The holder polls quickly until the pool is up, then at the keeper's pace.
M.FAST_POLL, M.SLOW_POLL = 0.05, 1
-- The URL is the relay's Service, whatever process holds the pool: a new
-- keeper can take over a session whose keeper died.
M.stable_url = true
-- The proxy's hop to the relay stays inside the cluster, plain HTTP with no
-- secret header: the relay forwards bytes and checks nothing, and the
-- relay's NetworkPolicy (prepare) admits only the pods of the Service's
-- proxy to its proxy port (docs/decisions.md section 2). The workflow does
-- not warn about a tunnel without a secret for such a provider.
M.in_cluster_hop = true
-- What this tunnel carries (czctl.proxy.protocol): HTTP/1.1 and h2c (the
-- relay moves bytes untouched; tests/e2e/test_protocols.sh runs every gRPC
-- call type through it). TCP-level routes are not tested through it yet,
-- so they are refused.
M.carries = { "http", "h2c" }
M.cannot_carry = {
  tcp = "TCP-level routes through the kube tunnel's relay are not tested yet",
}

local SESSION_LABEL, MANAGED_BY = "czctl.io/session", "app.kubernetes.io/managed-by"

--- Names of the relay's objects, from the session id alone (so `session
--- close` finds them without any local state).
---@param id string
---@return {deployment: string, service: string, network_policy: string}
function M.names(id)
  local name = "czctl-relay-" .. id
  return { deployment = name, service = name, network_policy = name }
end

--- Where the proxy sends intercepted traffic: the relay's Service.
---@param namespace string
---@param id string
---@return string url
function M.url(namespace, id)
  return string.format("http://%s.%s.svc.cluster.local:%d", M.names(id).service, namespace, M.PROXY_PORT)
end

local function labels(id)
  return { [MANAGED_BY] = "czctl", [SESSION_LABEL] = id, [M.COMPONENT_LABEL] = M.COMPONENT }
end

--- The label selector of a session's relay pods.
---@param id string
---@return string
function M.pod_selector(id)
  return string.format("%s=%s,%s=%s", SESSION_LABEL, id, M.COMPONENT_LABEL, M.COMPONENT)
end

--- The relay's objects for a session (relay/kubernetes.yaml is the reference):
--- a Deployment that passes the `restricted` Pod Security Standard, a
--- Service on the proxy port, and a NetworkPolicy admitting only the pods
--- of the intercepted Service's shared proxy (czctl.session.shared, whose
--- pods carry czctl.io/proxy=<service>) to the proxy port.
---@param opts {namespace: string, id: string, image?: string, service: string}
---@return table[] objects Deployment, Service, NetworkPolicy
function M.objects(opts)
  local id, ns = opts.id, opts.namespace
  local names = M.names(id)
  local selector = { [SESSION_LABEL] = id, [M.COMPONENT_LABEL] = M.COMPONENT }
  local meta = function(name)
    return { name = name, namespace = ns, labels = labels(id), annotations = { ["czctl.io/service"] = opts.service } }
  end
  local probe = { httpGet = { path = "/healthz", port = "health" }, periodSeconds = 1, failureThreshold = 2,
                  timeoutSeconds = 1 }
  local deployment = {
    apiVersion = "apps/v1", kind = "Deployment", metadata = meta(names.deployment),
    spec = {
      replicas = 1,
      selector = { matchLabels = selector },
      -- one relay per session: the laptop's streams follow the new pod
      strategy = { type = "Recreate" },
      template = {
        metadata = { labels = labels(id) },
        spec = {
          automountServiceAccountToken = false, -- the relay talks to no API
          enableServiceLinks = false,
          terminationGracePeriodSeconds = 5,
          securityContext = { runAsNonRoot = true, runAsUser = 65532, runAsGroup = 65532,
                              seccompProfile = { type = "RuntimeDefault" } },
          containers = { {
            name = "relay",
            image = opts.image or M.DEFAULT_IMAGE,
            args = { "--proxy-listen", "0.0.0.0:" .. M.PROXY_PORT, "--laptop-listen", "127.0.0.1:" .. M.LAPTOP_PORT,
                     "--health-listen", "0.0.0.0:" .. M.HEALTH_PORT },
            -- 127.0.0.1:9001 is not a container port: only port-forward reaches it
            ports = { { name = "proxy", containerPort = M.PROXY_PORT, protocol = "TCP" },
                      { name = "health", containerPort = M.HEALTH_PORT, protocol = "TCP" } },
            readinessProbe = probe,
            livenessProbe = { httpGet = probe.httpGet, periodSeconds = 10, failureThreshold = 3, timeoutSeconds = 1 },
            resources = { requests = { cpu = "10m", memory = "16Mi" }, limits = { cpu = "500m", memory = "64Mi" } },
            securityContext = { allowPrivilegeEscalation = false, readOnlyRootFilesystem = true, runAsNonRoot = true,
                                capabilities = { drop = { "ALL" } } },
          } },
        },
      },
    },
  }
  local service = {
    apiVersion = "v1", kind = "Service", metadata = meta(names.service),
    spec = { type = "ClusterIP", selector = selector,
             ports = { { name = "proxy", port = M.PROXY_PORT, targetPort = "proxy", protocol = "TCP" } } },
  }
  local policy = {
    apiVersion = "networking.k8s.io/v1", kind = "NetworkPolicy", metadata = meta(names.network_policy),
    spec = {
      podSelector = { matchLabels = selector },
      policyTypes = { "Ingress" },
      -- the probe port is the kubelet's, which policies do not restrict
      ingress = { {
        from = { { podSelector = { matchLabels = { [MANAGED_BY] = "czctl",
                                                   [intercept.PROXY_LABEL] = opts.service } } } },
        ports = { { protocol = "TCP", port = M.PROXY_PORT } },
      } },
    },
  }
  return { deployment, service, policy }
end

--- The workflow's tunnel step, before the keeper starts: create the relay's
--- objects (each with its undo registered by run:create). The NetworkPolicy
--- is what keeps every pod but the proxy's off the relay's proxy port (the
--- hop is plain HTTP inside the cluster, docs/decisions.md section 2): one
--- the user may not create is a warning naming that.
---@param run table the intercept run (run.opts, run.id, run:create, run.out)
function M.prepare(run)
  local kube = require "czctl.kube"
  for _, obj in ipairs(M.objects{ namespace = run.opts.namespace, id = run.id, image = run.opts.relay_image,
                                  service = run.opts.service }) do
    if obj.kind == "NetworkPolicy" then
      local ok, err = pcall(run.create, run, obj)
      if not ok then
        if not kube.forbidden(err) then error(err, 0) end
        run.out:warn("cannot create NetworkPolicy %s (%s); other pods may reach the relay's proxy port",
                     obj.metadata.name, tostring(err))
      end
    else
      run:create(obj)
    end
  end
end

--- Delete a session's relay (Deployment in the foreground, waited for;
--- Service; NetworkPolicy). Missing objects are fine.
---@param client table
---@param namespace string
---@param id string
---@param step fun(title: string, fn: fun())
function M.delete(client, namespace, id, step)
  local cluster = require "czctl.session.cluster"
  local names = M.names(id)
  for _, o in ipairs({ { "Deployment", names.deployment }, { "Service", names.service },
                       { "NetworkPolicy", names.network_policy } }) do
    step(string.format("Delete relay %s %s", o[1], o[2]), function()
      cluster.delete_object(client, namespace, o[1], o[2])
    end)
  end
end

--- The relays in the cluster, one entry per session (its Deployment,
--- Service and NetworkPolicy found by their labels): `session list` and
--- `session close` compare them with the sessions on the Services to find
--- relays left behind (a close that died half-way, an intercept killed
--- while it started). A user who may not list NetworkPolicies still gets
--- the others.
---@param client table
---@param scope {namespace?: string, all_namespaces?: boolean}
---@return {id: string, namespace: string, service?: string, created?: string, name: string, objects: string[]}[]|nil
---@return any err
function M.find(client, scope)
  local kube = require "czctl.kube"
  local by, found = {}, {}
  local selector = string.format("%s=czctl,%s=%s", MANAGED_BY, M.COMPONENT_LABEL, M.COMPONENT)
  for _, kind in ipairs({ "Deployment", "Service", "NetworkPolicy" }) do
    local list, err = client:list(kind, { namespace = scope.namespace, all_namespaces = scope.all_namespaces,
                                          labelSelector = selector })
    if not list and not (kind == "NetworkPolicy" and kube.forbidden(err)) then return nil, err end
    for _, obj in ipairs(list and list.items or {}) do
      local md = obj.metadata
      local id = type(md.labels) == "table" and md.labels[SESSION_LABEL]
      if type(id) == "string" then
        local key = md.namespace .. "/" .. id
        local r = by[key]
        if not r then
          r = { id = id, namespace = md.namespace, name = "relay " .. M.names(id).deployment, objects = {} }
          by[key], found[#found + 1] = r, r
        end
        r.objects[#r.objects + 1] = kind
        r.service = r.service or (type(md.annotations) == "table" and md.annotations["czctl.io/service"]) or nil
        local created = md.creationTimestamp
        if type(created) == "string" and (not r.created or created < r.created) then r.created = created end
      end
    end
  end
  return found
end

--- After the proxy is ready: wait until the keeper's pool has reached the
--- relay, so the first intercepted request already finds the laptop.
---@param run table
---@param timeout number seconds
---@return boolean|nil ok
---@return string|nil err
function M.wait_ready(run, timeout)
  local session = require "czctl.session"
  local sys = require "czctl.core.sys"
  local deadline = sys.now() + timeout
  while true do
    local t = session.tunnel_status(run.id) or {}
    if t.state == "up" then return true end
    if t.state == "failed" then return nil, "the kube tunnel's relay cannot start: " .. tostring(t.error) end
    local problem = session.keeper_problem(run.session)
    if problem then return nil, problem end
    if sys.now() > deadline then
      return nil, string.format("the kube tunnel did not reach relay %s within %ds: %s", M.names(run.id).deployment,
                                math.floor(timeout), t.error or t.state or "no relay pod")
    end
    local _, why = sys.sleep(0.05)
    if why == "interrupted" then return nil, "interrupted" end
  end
end

---------------------------------------------------------------------------
-- The holder's side
---------------------------------------------------------------------------

local Handle = {}
Handle.__index = Handle

-- Container states that do not pass by themselves: the relay cannot start.
local FAILING = { ErrImagePull = true, ImagePullBackOff = true, InvalidImageName = true, CrashLoopBackOff = true,
                  CreateContainerConfigError = true, CreateContainerError = true, RunContainerError = true }

-- The newest running relay pod that is not being deleted, or nil, why, and
-- whether the relay is failing (an image that cannot be pulled, a crash loop).
local function running_pod(h)
  local pods, err = h.client:list("Pod", { namespace = h.namespace, labelSelector = M.pod_selector(h.id) })
  if not pods then return nil, tostring(type(err) == "table" and err.message or err) end
  local best, failing
  for _, p in ipairs(pods.items or {}) do
    local st = p.status or {}
    if st.phase == "Running" and not p.metadata.deletionTimestamp
       and (not best or tostring(p.metadata.creationTimestamp) > tostring(best.metadata.creationTimestamp)) then
      best = p
    end
    for _, c in ipairs(st.containerStatuses or {}) do
      local w = type(c.state) == "table" and c.state.waiting
      if type(w) == "table" and FAILING[w.reason] then
        failing = string.format("relay pod %s: %s: %s", p.metadata.name, w.reason, tostring(w.message or ""))
      end
    end
  end
  if not best then return nil, failing or "waiting for the relay pod", failing ~= nil end
  return best.metadata.name
end

-- Move the pool to the current relay pod (opening it the first time).
function Handle:follow_pod()
  local pod, why, failing = running_pod(self)
  if not pod then
    self.error = why
    if failing then self.state = "failed" end
    return
  end
  if pod == self.pod then return end
  if not self.pool then
    local pool, err = require("czctl.core.portforward").pool(self.client.raw, {
      namespace = self.namespace, pod = pod, port = M.LAPTOP_PORT, target_port = self.local_port,
      size = self.size })
    if not pool then self.error = tostring(err); return end
    self.pool = pool
    self.log(string.format("port-forward pool to relay pod %s/%s (%d streams) -> 127.0.0.1:%d", self.namespace, pod,
                           self.size, self.local_port))
  else
    self.pool:retarget(pod)
    self.log(string.format("relay pod replaced: following %s", pod))
  end
  self.pod = pod
end

--- Called by the keeper's loop: opens the pool once the relay pod runs,
--- logs the pool's events, follows a replaced relay pod. Returns the fields
--- of <id>.tunnel.json that changed (state, pod, since, reconnects, error),
--- or nil.
---@return table|nil changed
function Handle:poll()
  if not self.pool and self.next_lookup <= require("czctl.core.sys").now() then
    -- (every poll while it starts; a relay that fails is asked about every 2 s)
    if self.state == "failed" then self.next_lookup = require("czctl.core.sys").now() + 2 end
    self:follow_pod()
  end
  local pod_gone = false
  while self.pool do
    local ev = self.pool:event(0)
    if not ev then break end
    if ev.kind == "up" then
      self.state, self.since, self.error = "up", ev.time, nil
      self.log(string.format("kube tunnel up (relay pod %s)", self.pod))
    elseif ev.kind == "down" or ev.kind == "connecting" then
      if self.state == "up" then self.log("kube tunnel down: " .. tostring(ev.message)) end
      self.state, self.error = ev.kind, ev.message or self.error
      if ev.kind == "down" and tostring(ev.message):find("not found", 1, true) then pod_gone = true end
    else
      self.log("kube tunnel: " .. tostring(ev.message))
    end
  end
  -- The pod is gone (deleted, evicted): the Deployment makes another.
  if pod_gone or (self.pool and self.state ~= "up" and self.next_lookup <= require("czctl.core.sys").now()) then
    self.next_lookup = require("czctl.core.sys").now() + 2
    self:follow_pod()
  end
  self.poll_interval = self.state == "up" and M.SLOW_POLL or M.FAST_POLL
  local stats = self.pool and self.pool:stats() or {}
  local now = { state = self.state, pod = self.pod, since = self.since, error = self.error,
                reconnects = stats.reconnects }
  local changed = false
  for k, v in pairs(now) do
    if self.reported[k] ~= v then changed = true end
  end
  for k in pairs(self.reported) do
    if now[k] == nil then changed = true end
  end
  if not changed then return nil end
  self.reported = now
  local out = {}
  for k, v in pairs(now) do out[k] = v end
  out.error = now.error or false -- cleared in the keeper's report too
  return out
end

--- true while the pool reaches the relay.
function Handle:healthy()
  if self.state == "up" then return true end
  return nil, self.error or self.state
end

--- Close the pool and the client. Idempotent.
function Handle:stop()
  if self.pool then self.pool:close(); self.pool = nil end
  if self.client then self.client:close(); self.client = nil end
  return true
end

--- Start the holder's side of a kube tunnel (in the session's keeper).
---@param opts {local_port: integer, session: table, log?: fun(msg: string), size?: integer}
---@return table|nil handle
---@return string|nil err
function M.start(opts)
  opts = opts or {}
  local port = math.tointeger(opts.local_port)
  if not port or port < 1 or port > 65535 then return nil, "kube tunnel: local_port must be a port number" end
  local s = opts.session
  if type(s) ~= "table" or type(s.id) ~= "string" or type(s.namespace) ~= "string" then
    return nil, "kube tunnel: the session (id, namespace, kubeconfig) is required"
  end
  local client, err = require("czctl.kube").connect{ kubeconfig = s.kubeconfig, context = s.context,
                                                     component = "session-keep" }
  if not client then return nil, "kube tunnel: " .. tostring(err) end
  local url = M.url(s.namespace, s.id)
  local handle = setmetatable({
    -- resolver = false: NGINX resolves the relay's Service when it starts (it
    -- exists by then) and keeps connections to it alive, so a request pays no
    -- pairing; the Service's address never changes while the session lives.
    url = url, upstream = { url = url, resolver = false }, inspector = nil, pid = nil,
    client = client, namespace = s.namespace, id = s.id, local_port = port, size = opts.size or M.POOL_SIZE,
    log = opts.log or function() end, state = "connecting", reported = {}, next_lookup = 0,
    poll_interval = M.FAST_POLL,
  }, Handle)
  return handle
end

return M
