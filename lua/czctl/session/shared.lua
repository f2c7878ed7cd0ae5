-- czctl.session.shared: the one proxy a Service has while any session
-- intercepts it (docs/decisions.md, section 1). The Service is the source
-- of truth: its annotations hold what czctl replaced (the original selector
-- and target ports), the sessions with their rules, owners and tunnels, and
-- a routes-version counted up by every join and leave. What opens a tunnel
-- (its URL, secret, certificates) is never there: each session keeps it in
-- its own route Secret (czctl-route-<id>), which the proxy pod mounts at
-- /etc/czctl-session/<id> and the configuration includes by id. Every change of them
-- is one merge patch guarded by the Service's resourceVersion, retried on
-- conflict, so two developers joining at once are serialised by the API
-- server. The proxy's configuration is a pure function of that state,
-- written into an immutable Secret named by its hash; the Deployment's pod
-- template points at it, so a change is a rolling update (maxSurge 1,
-- maxUnavailable 0) and the old pod drains (preStop, keepalive_time).
--
-- No printing and no processes here: the workflow and the holders call it.
local cjson = require "cjson"
local util = require "czctl.util"
local intercept = require "czctl.intercept"
local proxy = require "czctl.proxy"

local M = {}

local null = cjson.null
local function is_null(v) return v == nil or v == null end

M.SESSIONS = "czctl.io/sessions"         -- on the Service: the sessions (JSON list)
M.ORIGINAL = "czctl.io/original"         -- on the Service: what czctl replaced (JSON)
M.VERSION = "czctl.io/routes-version"    -- on the Service, the Deployment and its pods
M.SERVICE_LABEL = "czctl.io/service"     -- on every object of a Service's proxy
M.PROXY_LABEL = intercept.PROXY_LABEL    -- the proxy pods' selector label (value: the Service)
-- How long a client connection to the proxy lives (NGINX keepalive_time):
-- it is then closed after a response, so clients move to a new pod.
M.KEEPALIVE_TIME = 3
-- preStop sleep: the pod keeps serving while its endpoint removal reaches
-- every node and every connection has been asked to close (keepalive_time).
M.PRESTOP_SECONDS = 5
M.GRACE_SECONDS = 15
-- The longest the last session out waits for the endpoints controller to
-- take the proxy's pods off the restored Service before deleting them.
M.UNROUTE_TIMEOUT = 10

local function port_key(p)
  return tostring(math.tointeger(p.port)) .. "/" .. tostring(is_null(p.protocol) and "TCP" or p.protocol)
end

-- The proxy's listening port for each port of the original Service, by
-- port/protocol (proxy ports follow the original's order).
local function listen_ports(original_ports)
  local by_key = {}
  for i, p in ipairs(intercept.proxy_ports({ spec = { ports = original_ports } }, 0, "0.0.0.0")) do
    by_key[port_key(original_ports[i])] = p.listen
  end
  return by_key
end

--- Names of the objects of a Service's proxy (the Secret adds a hash).
---@param service string
---@return {deployment: string, service: string, secret_prefix: string}
function M.names(service)
  local base = "czctl-proxy-" .. service
  return { deployment = base, service = base .. "-original", secret_prefix = base .. "-" }
end

--- Labels of every object of a Service's proxy.
---@param service string
---@return table<string,string>
function M.labels(service)
  return { [intercept.MANAGED_BY] = "czctl", [M.SERVICE_LABEL] = service }
end

local function is_list(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  return n == #v
end

local function is_map_of_strings(v)
  if type(v) ~= "table" then return false end
  for k, x in pairs(v) do
    if type(k) ~= "string" or type(x) ~= "string" then return false end
  end
  return true
end

-- What is wrong with the value of annotation `key`, or nil (absent is fine).
local ANNOTATION_SHAPES = {
  [M.SESSIONS] = { "a JSON list of sessions", function(v)
    if not is_list(v) then return false end
    for _, e in ipairs(v) do
      if type(e) ~= "table" or type(e.id) ~= "string" or not e.id:match("^[a-z0-9]+$") then return false end
    end
    return true
  end },
  [M.ORIGINAL] = { "a JSON object with the original selector and ports", function(v)
    return type(v) == "table" and not is_list(v) and is_map_of_strings(v.selector) and is_list(v.ports)
           and (v.targets == nil or is_list(v.targets))
  end },
}

local function decode(svc, key)
  local a = svc.metadata and svc.metadata.annotations
  local text = not is_null(a) and a[key] or nil
  if text == nil then return nil end
  local shape = ANNOTATION_SHAPES[key]
  local ok, v = pcall(cjson.decode, text)
  if ok and shape[2](v) then return v end
  return nil, string.format("Service %s/%s: its %s annotation is not %s (edited by hand?), so czctl changed "
    .. "nothing; put back what czctl wrote (kubectl edit service %s -n %s) or restore the Service by hand "
    .. "(docs/decisions.md, \"Repairing a Service by hand\")", svc.metadata.namespace, svc.metadata.name, key,
    shape[1], svc.metadata.name, svc.metadata.namespace)
end

---@class czctl.session.SharedState
---@field sessions table[]   {id, port, rule, ruleText, tunnel, owner, started}, in join order
---@field original table|nil {selector, ports, targets} what czctl replaced, once redirected
---@field version integer    routes-version
---@field redirected boolean whether the selector points at the proxy

--- The czctl state a Service carries (empty when it carries none).
---@param svc table
---@return czctl.session.SharedState
--- Annotations that are there but not what czctl writes (edited by hand, a
--- broken tool) raise a one-line error before anything is changed: acting on
--- a guess could cut the Service off its pods.
function M.state(svc)
  local a = svc.metadata and svc.metadata.annotations
  if is_null(a) then a = {} end
  local sessions, err = decode(svc, M.SESSIONS)
  local original, oerr = decode(svc, M.ORIGINAL)
  if err or oerr then error(err or oerr, 0) end
  local selector = svc.spec and svc.spec.selector
  local redirected = not is_null(selector) and selector[M.PROXY_LABEL] == svc.metadata.name
  return { sessions = sessions or {}, original = original,
           version = math.tointeger(tonumber(a[M.VERSION])) or 0, redirected = redirected }
end

--- Whether a Service carries any czctl state.
---@param svc table
---@return boolean
function M.touched(svc)
  local a = svc.metadata and svc.metadata.annotations
  if is_null(a) then return false end
  return a[M.SESSIONS] ~= nil or a[M.ORIGINAL] ~= nil or a[M.VERSION] ~= nil
end

--- The entry of session `id` in a state, or nil.
---@param state czctl.session.SharedState
---@param id string
---@return table|nil
function M.find(state, id)
  for _, s in ipairs(state.sessions) do if s.id == id then return s end end
  return nil
end

-- A rule in a canonical form: header names in lower case, keys sorted.
local function canonical(rule)
  local function norm(r)
    if type(r) ~= "table" then return r end
    local out = {}
    for k, v in pairs(r) do out[k] = norm(v) end
    if r.name and (r.equals or r.matches) and out.name then out.name = tostring(out.name):lower() end
    return out
  end
  return util.json_encode(norm(rule))
end

--- Whether two rules are the same rule (header names in any case).
---@param a table
---@param b table
---@return boolean
function M.same_rule(a, b)
  return canonical(a) == canonical(b)
end

local function owner_text(owner)
  if type(owner) ~= "table" then return "unknown owner" end
  return string.format("%s@%s", tostring(owner.user or "?"), tostring(owner.host or "?"))
end
M.owner_text = owner_text

--- Why `entry` cannot join next to the sessions of `state` (a one-line
--- message naming the holder and its owner), or nil. Two rules conflict on
--- the same port when they would take the same requests: the same rule, or
--- either one routing every request (--all).
---@param state czctl.session.SharedState
---@param entry table
---@return string|nil
function M.conflict(state, entry)
  for _, s in ipairs(state.sessions) do
    if s.id ~= entry.id and s.port == entry.port then
      local why
      if (s.protocol or "http") ~= (entry.protocol or "http") then
        why = string.format("intercepts it as %s, not %s (one proxy server per port)", s.protocol or "http",
                            entry.protocol or "http")
      elseif s.rule and s.rule.all then
        why = "routes every request (--all)"
      elseif entry.rule and entry.rule.all then
        why = "holds it with " .. tostring(s.ruleText) .. ", so --all would take its requests"
      elseif canonical(s.rule) == canonical(entry.rule) then
        why = "already routes " .. tostring(s.ruleText)
      end
      if why then
        return string.format("port %s of Service %s: session %s of %s %s; pick another rule (-x NAME:VALUE)",
                             tostring(math.tointeger(entry.port) or entry.port), tostring(entry.service or "?"),
                             s.id, owner_text(s.owner), why)
      end
    end
  end
  return nil
end

local function annotations_patch(sessions, version)
  local list = setmetatable(util.deep_copy(sessions), util.array_mt)
  return { [M.SESSIONS] = util.json_encode(list), [M.VERSION] = tostring(version) }
end

--- Join: add a session to the Service (one guarded patch, retried on
--- conflict). Fails with the conflict message when its rule would take
--- another session's requests. Joining twice is a no-op.
---@param client table
---@param namespace string
---@param name string the Service
---@param entry table {id, port, rule, ruleText, tunnel, owner, started} (nothing secret: Service readers see it)
---@param svc? table the Service as last read
---@return table|nil svc after the patch
---@return any err
function M.join(client, namespace, name, entry, svc)
  local conflict
  local patched, err = intercept.guarded_patch(client, namespace, name, svc, function(current)
    local state = M.state(current)
    if M.find(state, entry.id) then return nil, "joined" end
    conflict = M.conflict(state, entry)
    if conflict then return nil, "conflict" end
    local sessions = util.deep_copy(state.sessions)
    sessions[#sessions + 1] = entry
    return { metadata = { resourceVersion = current.metadata.resourceVersion,
                          annotations = annotations_patch(sessions, state.version + 1) } }
  end)
  if conflict then return nil, conflict end
  return patched, err
end

--- The selector and ports to restore, from the Service as it is now and what
--- czctl replaced: czctl's own selector key goes, the original keys come back
--- unless someone set them again meanwhile (theirs are kept, with a
--- warning); ports still pointing at the proxy get their original target
--- port back; ports others added or changed stay as they are.
---@param current table the Service now
---@param original table {selector, ports, targets}
---@return table selector_patch
---@return table[] ports
---@return string[] warnings
function M.restore_spec(current, original)
  local warnings = {}
  local now = is_null(current.spec.selector) and {} or current.spec.selector
  local selector = { [M.PROXY_LABEL] = null }
  for k, v in pairs(original.selector or {}) do
    if now[k] == nil or is_null(now[k]) then
      selector[k] = v
    elseif now[k] ~= v then
      warnings[#warnings + 1] = string.format("selector %s=%s was set by someone else during the session; kept "
                                              .. "(it was %s=%s)", k, tostring(now[k]), k, tostring(v))
    end
  end
  local by_key = {}
  for i, p in ipairs(original.ports or {}) do
    by_key[port_key(p)] = { port = p, set = (original.targets or {})[i] }
  end
  local ports = {}
  for i, p in ipairs(is_null(current.spec.ports) and {} or current.spec.ports) do
    local copy = util.deep_copy(p)
    local o = by_key[port_key(p)]
    if o and o.set and math.tointeger(p.targetPort) == math.tointeger(o.set) then
      copy.targetPort = o.port.targetPort
      if is_null(copy.targetPort) then copy.targetPort = nil end
    elseif o and o.set then
      warnings[#warnings + 1] = string.format("the targetPort of port %s was changed by someone else during the "
                                              .. "session; kept", tostring(math.tointeger(p.port)))
    end
    ports[i] = copy
  end
  return selector, setmetatable(ports, util.array_mt), warnings
end

--- The patch that gives a Service back: czctl's annotations removed, and
--- the selector and target ports czctl replaced restored (restore_spec),
--- guarded by the resourceVersion of `current`.
---@param current table the Service now
---@return table patch
---@return string[] warnings
function M.restore_patch(current)
  local state = M.state(current)
  local warnings = {}
  local patch = { metadata = { resourceVersion = current.metadata.resourceVersion,
                               annotations = { [M.SESSIONS] = null, [M.ORIGINAL] = null, [M.VERSION] = null } } }
  if state.original then
    local selector, ports
    selector, ports, warnings = M.restore_spec(current, state.original)
    patch.spec = { selector = selector, ports = ports }
  elseif state.redirected then
    warnings[#warnings + 1] = "the Service points at the proxy but its original selector is lost; restore it by hand"
  end
  return patch, warnings
end

--- Leave: remove a session from the Service (one guarded patch). The last
--- session out restores the selector and target ports in the same patch
--- (see restore_spec) and removes czctl's annotations.
---@param client table
---@param namespace string
---@param name string
---@param id string
---@param svc? table
---@return table|nil result {left: boolean, last: boolean, svc: table, version: integer, warnings: string[]}
---@return any err
function M.leave(client, namespace, name, id, svc)
  local result = { left = false, last = false, warnings = {} }
  local patched, err, reason = intercept.guarded_patch(client, namespace, name, svc, function(current)
    local state = M.state(current)
    local rest = {}
    for _, s in ipairs(state.sessions) do if s.id ~= id then rest[#rest + 1] = s end end
    result.left = #rest < #state.sessions
    if #rest > 0 then
      if not result.left then return nil, "not a member" end
      result.last, result.version = false, state.version + 1
      return { metadata = { resourceVersion = current.metadata.resourceVersion,
                            annotations = annotations_patch(rest, state.version + 1) } }
    end
    if not M.touched(current) and not state.redirected then return nil, "nothing to restore" end
    result.last, result.version = true, state.version + 1
    local patch
    patch, result.warnings = M.restore_patch(current)
    return patch
  end)
  if not patched then return nil, err end
  result.svc = patched
  if reason then result.left, result.last = false, false end -- nothing was patched
  return result
end

--- Redirect the Service to the proxy (one guarded patch): the selector
--- becomes {czctl.io/proxy: SERVICE} and each port's target the proxy's
--- listening port; what it replaced is saved in the same patch, once. A
--- Service already redirected is left alone.
---@param client table
---@param namespace string
---@param name string
---@param svc? table
---@return table|nil svc
---@return any err
function M.redirect(client, namespace, name, svc)
  return intercept.guarded_patch(client, namespace, name, svc, function(current)
    local state = M.state(current)
    if #state.sessions == 0 then return nil, "no sessions" end
    if state.redirected and not M.drift(current) then return nil, "redirected" end
    -- written once, by the first redirect: a later one (re-asserting the
    -- route after a `kubectl apply`) keeps it
    local original = state.original or { selector = util.deep_copy(current.spec.selector),
                                         ports = util.deep_copy(current.spec.ports) }
    local listen = listen_ports(original.ports)
    original.targets = {}
    for i, p in ipairs(original.ports) do original.targets[i] = listen[port_key(p)] end
    local selector, ports = {}, {}
    for k in pairs(current.spec.selector) do selector[k] = null end
    for k in pairs(original.selector or {}) do selector[k] = null end
    selector[M.PROXY_LABEL] = name
    -- ports someone added during the session are theirs: left as they are
    for i, p in ipairs(current.spec.ports) do
      local copy = util.deep_copy(p)
      copy.targetPort = listen[port_key(p)] or p.targetPort
      ports[i] = copy
    end
    return { metadata = { resourceVersion = current.metadata.resourceVersion,
                          annotations = { [M.ORIGINAL] = util.json_encode(original) } },
             spec = { selector = selector, ports = ports } }
  end)
end

--- Whether a Service that carries sessions routes through the proxy: the
--- selector is the proxy's alone and every port targets the proxy.
---@param svc table
---@return boolean
---@return string|nil what is wrong
function M.drift(svc)
  local state = M.state(svc)
  if #state.sessions == 0 then return false end
  local selector = is_null(svc.spec.selector) and {} or svc.spec.selector
  if selector[M.PROXY_LABEL] ~= svc.metadata.name then
    return true, string.format("its selector is %s, not the proxy", intercept.selector_string(selector))
  end
  for k in pairs(selector) do
    if k ~= M.PROXY_LABEL then return true, "its selector has the extra key " .. k .. ", which no proxy pod has" end
  end
  local listen = listen_ports((state.original or {}).ports or svc.spec.ports)
  for _, p in ipairs(svc.spec.ports) do
    local want = listen[port_key(p)]
    if want and math.tointeger(p.targetPort) ~= want then
      return true, string.format("port %s targets %s, not the proxy", tostring(math.tointeger(p.port)),
                                 tostring(p.targetPort))
    end
  end
  return false
end

---------------------------------------------------------------------------
-- The proxy objects
---------------------------------------------------------------------------

--- The copy Service: the original selector and ports, so the proxy reaches
--- the in-cluster version by ClusterIP.
---@param svc table
---@param original table|nil {selector, ports}; nil: the Service's own
---@return table
function M.copy_service(svc, original)
  local name = svc.metadata.name
  local from = original or { selector = svc.spec.selector, ports = svc.spec.ports }
  local ports = {}
  for i, p in ipairs(from.ports) do
    ports[i] = { name = p.name, port = p.port, targetPort = p.targetPort, protocol = p.protocol,
                 appProtocol = p.appProtocol }
  end
  return {
    apiVersion = "v1", kind = "Service",
    metadata = { name = M.names(name).service, namespace = svc.metadata.namespace, labels = M.labels(name),
                 annotations = { ["czctl.io/copy-of"] = name } },
    spec = { type = "ClusterIP", selector = util.deep_copy(from.selector), ports = ports },
  }
end

-- FNV-1a, 64 bits, in hex: a content hash for the Secret's name.
local function content_hash(s)
  local h = -3750763034362895579 -- the offset basis 14695981039346656037, as a signed 64-bit integer
  for i = 1, #s do
    h = (h ~ s:byte(i)) * 1099511628211
  end
  return string.format("%016x", h)
end
M.content_hash = content_hash

--- The routes of a state, for czctl.proxy.render: each by its id, its
--- files mounted from its route Secret.
---@param state czctl.session.SharedState
---@return table[]
function M.routes(state)
  local routes = {}
  for i, s in ipairs(state.sessions) do
    routes[i] = { id = s.id, port = s.port, rule = s.rule, tunnel_files = "mounted", mode = s.protocol }
  end
  return routes
end

--- The proxy's nginx.conf for a Service's state (a pure function of it).
---@param svc table
---@param state czctl.session.SharedState
---@param original_ip string the copy Service's ClusterIP
---@return string|nil conf
---@return any err
function M.render(svc, state, original_ip)
  local base = (state.original and state.original.ports) or svc.spec.ports
  local ports = intercept.proxy_ports({ spec = { ports = base } }, 0, original_ip)
  return proxy.render{ ports = ports, routes = M.routes(state), session = svc.metadata.name,
                       health_port = intercept.HEALTH_PORT, keepalive_time = M.KEEPALIVE_TIME,
                       route_dir = intercept.ROUTE_DIR }
end

--- The immutable Secret holding a configuration for a routes-version,
--- named by the hash of its content. The content starts with the version
--- (a comment line), so every version has a Secret of its own, labelled
--- with it: collect_secrets relies on that (a configuration that comes back,
--- as after a join and a leave, is a new Secret, never an older one that a
--- collector may be deleting at that moment).
---@param namespace string
---@param service string
---@param conf string
---@param version integer
---@return table
function M.config_secret(namespace, service, conf, version)
  conf = string.format("# czctl routes-version %d\n%s", math.tointeger(version) or 0, conf)
  local labels = M.labels(service)
  labels[M.VERSION] = tostring(math.tointeger(version) or 0)
  return {
    apiVersion = "v1", kind = "Secret", type = "Opaque", immutable = true,
    metadata = { name = M.names(service).secret_prefix .. content_hash(conf), namespace = namespace,
                 labels = labels },
    stringData = { ["nginx.conf"] = conf },
  }
end

-- The volumes and mounts of the sessions' route Secrets: one per session,
-- read-only at ROUTE_DIR/<id>, its files 0440 for NGINX's group (fsGroup).
local function route_volumes(sessions)
  local volumes, mounts = {}, {}
  for i, id in ipairs(sessions) do
    volumes[i] = { name = "route-" .. id, secret = { secretName = intercept.route_secret_name(id),
                                                     defaultMode = tonumber("440", 8) } }
    mounts[i] = { name = "route-" .. id, mountPath = intercept.ROUTE_DIR .. "/" .. id, readOnly = true }
  end
  return volumes, mounts
end

-- A pod template's volumes and its first container's mounts with the route
-- volumes of `sessions` in place of any it had (others' edits are kept).
local function with_routes(spec, sessions)
  local volumes, mounts = route_volumes(sessions)
  local function keep(list, extra)
    local out = {}
    for _, v in ipairs(is_null(list) and {} or list or {}) do
      if not tostring(v.name):find("^route%-") then out[#out + 1] = v end
    end
    for _, v in ipairs(extra) do out[#out + 1] = v end
    return setmetatable(out, util.array_mt)
  end
  spec.volumes = keep(spec.volumes, volumes)
  local c = spec.containers[1]
  c.volumeMounts = keep(c.volumeMounts, mounts)
  return spec
end

-- The ids of a state's sessions.
local function session_ids(state)
  local ids = {}
  for i, s in ipairs(state.sessions) do ids[i] = s.id end
  return ids
end

--- The proxy Deployment of a Service: one NGINX pod (restricted Pod
--- Security Standard), changed by rolling update one pod at a time. It
--- mounts the configuration Secret and each session's route Secret.
---@param opts {namespace: string, service: string, image: string, ports: table[], secret: string, version: integer, sessions?: string[]}
---@return table
function M.deployment(opts)
  local labels = M.labels(opts.service)
  local d = intercept.deployment{ namespace = opts.namespace, name = M.names(opts.service).deployment,
                                  labels = labels, selector = opts.service, image = opts.image, ports = opts.ports,
                                  config = { name = "config", secret = { secretName = opts.secret } } }
  with_routes(d.spec.template.spec, opts.sessions or {})
  d.metadata.annotations = { [M.VERSION] = tostring(opts.version) }
  d.spec.revisionHistoryLimit = 1
  d.spec.strategy = { type = "RollingUpdate", rollingUpdate = { maxSurge = 1, maxUnavailable = 0 } }
  local t = d.spec.template
  t.metadata.annotations = { [M.VERSION] = tostring(opts.version) }
  t.spec.terminationGracePeriodSeconds = M.GRACE_SECONDS
  t.spec.containers[1].lifecycle = { preStop = { sleep = { seconds = M.PRESTOP_SECONDS } } }
  return d
end

local function deployment_version(d)
  local a = d and d.metadata and d.metadata.annotations
  return (not is_null(a)) and math.tointeger(tonumber(a[M.VERSION])) or 0
end

--- Make the proxy match the Service's state: render from a fresh read,
--- write the Secret, create the Deployment or point its template at the
--- Secret, only when the Deployment's routes-version is older than the
--- rendered one (guarded by its resourceVersion, retried). The last writer
--- therefore writes the newest state; any session's holder may run it.
---@param client table
---@param namespace string
---@param name string the Service
---@param opts {image: string, svc?: table, deployment_hook?: fun(d: table): table, create?: fun(obj: table): table}
---@return table|nil result {version, deployment, changed, svc, state}
---@return any err
--- (opts.svc: the Service as the API server just answered a patch of it,
--- as fresh as a read; used for the first try instead of reading it again)
function M.reconcile(client, namespace, name, opts)
  local kube = require "czctl.kube"
  local names = M.names(name)
  local create = opts.create or function(obj) return client:create(obj, { namespace = namespace }) end
  local last_err
  local fresh = opts.svc
  for _ = 1, 6 do
    local svc, err = fresh, nil
    fresh = nil
    if not svc then svc, err = client:get("Service", name, { namespace = namespace }) end
    if not svc then return nil, err end
    local state = M.state(svc)
    if #state.sessions == 0 then return { version = state.version, svc = svc, state = state, changed = false } end
    local copy, cerr = client:get("Service", names.service, { namespace = namespace })
    if not copy then
      if not kube.not_found(cerr) then return nil, cerr end
      if state.redirected and not state.original then
        return nil, "Service " .. name .. " points at the proxy but its original selector is lost"
      end
      local obj = M.copy_service(svc, state.original)
      copy, cerr = create(obj)
      if not copy and kube.already_exists(cerr) then
        copy, cerr = client:get("Service", names.service, { namespace = namespace })
      end
      if not copy then return nil, cerr end
    end
    local conf, rerr = M.render(svc, state, copy.spec.clusterIP)
    if not conf then return nil, "cannot render the proxy configuration: " .. tostring(rerr) end
    local secret = M.config_secret(namespace, name, conf, state.version)
    local made, serr = create(secret)
    if not made and not kube.already_exists(serr) then return nil, serr end
    local d, derr = client:get("Deployment", names.deployment, { namespace = namespace })
    if not d and not kube.not_found(derr) then return nil, derr end
    local base = (state.original and state.original.ports) or svc.spec.ports
    local proxy_ports = intercept.proxy_ports({ spec = { ports = base } }, 0, copy.spec.clusterIP)
    if not d then
      local obj = M.deployment{ namespace = namespace, service = name, image = opts.image, ports = proxy_ports,
                                secret = secret.metadata.name, version = state.version,
                                sessions = session_ids(state) }
      if opts.deployment_hook then obj = opts.deployment_hook(obj) or obj end
      local created, cerr2 = create(obj)
      if created then return { version = state.version, deployment = created, changed = true, svc = svc, state = state } end
      if not kube.already_exists(cerr2) then return nil, cerr2 end
      last_err = cerr2
    elseif deployment_version(d) >= state.version then
      return { version = deployment_version(d), deployment = d, changed = false, svc = svc, state = state }
    else
      local spec = with_routes({ volumes = util.deep_copy(d.spec.template.spec.volumes),
                                 containers = util.deep_copy(d.spec.template.spec.containers) },
                               session_ids(state))
      for _, v in ipairs(spec.volumes) do
        if v.name == "config" then v.configMap = nil; v.secret = { secretName = secret.metadata.name } end
      end
      -- (a merge patch replaces lists whole: the containers go with their mounts)
      local patch = {
        metadata = { resourceVersion = d.metadata.resourceVersion,
                     annotations = { [M.VERSION] = tostring(state.version) } },
        spec = { template = { metadata = { annotations = { [M.VERSION] = tostring(state.version) } },
                              spec = { volumes = spec.volumes, containers = setmetatable(spec.containers,
                                                                                          util.array_mt) } } },
      }
      local patched, perr = client:patch("Deployment", names.deployment, patch,
                                         { namespace = namespace, type = "merge" })
      if patched then return { version = state.version, deployment = patched, changed = true, svc = svc, state = state } end
      -- changed meanwhile, or deleted by the last session out: read again
      if not kube.conflict(perr) and not kube.not_found(perr) then return nil, perr end
      last_err = perr
    end
  end
  return nil, last_err
end

-- Pods of a Service's proxy: name -> {version, ready, terminating, secret}.
local function proxy_pods(client, namespace, name)
  local list, err = client:list("Pod", { namespace = namespace, labelSelector = M.PROXY_LABEL .. "=" .. name })
  if not list then return nil, err end
  local pods = {}
  for _, pod in ipairs(list.items or {}) do
    local a = pod.metadata.annotations
    pods[pod.metadata.name] = {
      version = (not is_null(a)) and math.tointeger(tonumber(a[M.VERSION])) or 0,
      terminating = not is_null(pod.metadata.deletionTimestamp),
    }
  end
  return pods
end

--- Whether the Endpoints of a Service list only proxy pods of at least
--- `version` (one ready at least): every new connection then sees it.
---@param ep table|nil
---@param pods table from proxy_pods
---@param version integer
---@return boolean
local function endpoints_at(ep, pods, version)
  if ep == nil or is_null(ep.subsets) then return false end
  local ready = 0
  for _, subset in ipairs(ep.subsets) do
    for _, key in ipairs { "addresses", "notReadyAddresses" } do
      local list = subset[key]
      for _, a in ipairs(is_null(list) and {} or list) do
        local ref = a.targetRef
        local pod = not is_null(ref) and ref.kind == "Pod" and pods[ref.name]
        if not pod or pod.version < version then return false end
        if key == "addresses" then ready = ready + 1 end
      end
    end
  end
  return ready > 0
end

--- Wait, by watch, until the Service's Endpoints list only proxy pods
--- rendered at `version` or later.
---@param client table
---@param namespace string
---@param name string
---@param version integer
---@param timeout number
---@return table|nil endpoints
---@return any err
function M.wait_routed(client, namespace, name, version, timeout)
  local pods_err
  local ep, err = client:wait_for("Endpoints", name, function(o)
    if o == nil then return false end
    local pods, perr = proxy_pods(client, namespace, name)
    if not pods then pods_err = perr; return true end
    return endpoints_at(o, pods, version)
  end, timeout, { namespace = namespace })
  if pods_err then return nil, pods_err end
  if ep then return ep end
  local kube = require "czctl.kube"
  if kube.timeout(err) then
    return nil, string.format("the Endpoints of Service %s did not list only the proxy (routes version %d) after %ds "
      .. "(see: kubectl get endpoints %s -n %s -o yaml)", name, version, math.floor(timeout), name, namespace)
  end
  return nil, err
end

--- Wait, by watch, until the proxy Deployment has rolled out `version`
--- (or later): its pods run that configuration; with `drain`, also until
--- no older pod is left, terminating ones included (their drain ends with
--- the grace period): a leaving session keeps its tunnel until then.
---@param client table
---@param namespace string
---@param name string
---@param version integer
---@param timeout number
---@param drain? boolean
---@return table|nil deployment
---@return any err
function M.wait_rollout(client, namespace, name, version, timeout, drain)
  local sys = require "czctl.core.sys"
  local deadline = sys.now() + timeout
  local d, err = intercept.wait_ready(client, namespace, M.names(name).deployment, name, timeout, {
    absent_ok = drain, -- leaving: the last session out may delete the proxy meanwhile
    ready = function(o)
      if deployment_version(o) < version then return false end
      local st = o.status or {}
      return (st.observedGeneration or 0) >= (o.metadata.generation or 1) and (st.updatedReplicas or 0) >= 1
        and (st.replicas or 0) == (st.updatedReplicas or 0) and (st.availableReplicas or 0) >= 1
    end,
  })
  if not d or not drain or d.gone then return d, err end
  -- the old pods' drain: wait until none older than `version` is left
  local _, perr = M.wait_pods(client, namespace, name, function(pods)
    for _, p in pairs(pods) do if p.version < version then return false end end
    return true
  end, deadline - sys.now())
  if perr then return nil, perr end
  return d
end

--- Wait until `done(pods)` holds for the proxy pods of a Service (name ->
--- {version, terminating}), or `timeout` passes (then false, no error).
--- Polled every `interval` seconds (default 0.1; the session's permissions
--- have no watch on pods).
---@param client table
---@param namespace string
---@param name string
---@param done fun(pods: table<string, {version: integer, terminating: boolean}>): boolean
---@param timeout number
---@param interval? number
---@return boolean|nil done
---@return any err
function M.wait_pods(client, namespace, name, done, timeout, interval)
  local sys = require "czctl.core.sys"
  local deadline = sys.now() + timeout
  while true do
    local pods, perr = proxy_pods(client, namespace, name)
    if not pods then return nil, perr end
    if done(pods) then return true end
    if sys.now() >= deadline then return false end
    local _, why = sys.sleep(interval or 0.1)
    if why == "interrupted" then return nil, "interrupted" end
  end
end

--- The proxy pods that may still route to a session that is no longer on
--- the Service (whose state is `state`): those rendered before its
--- routes-version, or every one when no session is left (the proxy goes).
--- A holder keeps its tunnel until they are gone, so the requests they
--- still route to it are answered.
---@param client table
---@param namespace string
---@param name string
---@param state czctl.session.SharedState
---@return table<string, boolean>|nil names
---@return any err
function M.pods_routing_before(client, namespace, name, state)
  local pods, err = proxy_pods(client, namespace, name)
  if not pods then return nil, err end
  local old = {}
  for pod, p in pairs(pods) do
    if #state.sessions == 0 or p.version < state.version then old[pod] = true end
  end
  return old
end

--- Delete the configuration Secrets of a Service's proxy that no pod and no
--- template uses and that are older than the template's routes-version (the
--- sessions' route Secrets are each session's to delete). A writer of a newer
--- version may have created its Secret and not yet pointed the Deployment at
--- it (reconcile): its Secret is newer than any template a collector can
--- have read, so it stays. Without a Deployment nothing is collected (a
--- first writer may be about to create it; the last leave deletes them all).
---@param client table
---@param namespace string
---@param name string
function M.collect_secrets(client, namespace, name)
  local used = {}
  local d = client:get("Deployment", M.names(name).deployment, { namespace = namespace })
  if not d then return end
  local floor = deployment_version(d)
  local function note(spec)
    for _, v in ipairs(spec and spec.volumes or {}) do
      if not is_null(v.secret) then used[v.secret.secretName] = true end
    end
  end
  note(d.spec.template.spec)
  local pods = client:list("Pod", { namespace = namespace, labelSelector = M.PROXY_LABEL .. "=" .. name })
  for _, pod in ipairs(pods and pods.items or {}) do note(pod.spec) end
  local list = client:list("Secret", { namespace = namespace,
                                       labelSelector = M.SERVICE_LABEL .. "=" .. name .. "," .. intercept.MANAGED_BY
                                         .. "=czctl" })
  local prefix = M.names(name).secret_prefix
  for _, s in ipairs(list and list.items or {}) do
    local labels = s.metadata.labels
    local version = (not is_null(labels)) and math.tointeger(tonumber(labels[M.VERSION])) or 0
    if not used[s.metadata.name] and version < floor and s.metadata.name:sub(1, #prefix) == prefix then
      intercept.delete_if_present(client, "Secret", s.metadata.name, namespace)
    end
  end
end

--- Wait, by watch, until the Endpoints of a Service that no longer selects
--- the proxy list none of the proxy's pods (the endpoints controller has
--- seen the restored selector): from then on new connections are sent to
--- the Service's own pods, once the data path follows (the proxy pods'
--- preStop hook covers that lag). Returns at once (true) for a Service
--- that is gone or still points at the proxy; gives up after `timeout`
--- (false).
---@param client table
---@param namespace string
---@param name string
---@param timeout number
---@return boolean
function M.wait_unrouted(client, namespace, name, timeout)
  local svc = client:get("Service", name, { namespace = namespace })
  if not svc or M.state(svc).redirected or is_null(svc.spec.selector) then return true end
  local pods = proxy_pods(client, namespace, name)
  if not pods or next(pods) == nil then return true end
  local ep = client:wait_for("Endpoints", name, function(o)
    for _, subset in ipairs((o == nil or is_null(o.subsets)) and {} or o.subsets) do
      for _, key in ipairs { "addresses", "notReadyAddresses" } do
        for _, a in ipairs(is_null(subset[key]) and {} or subset[key]) do
          local ref = a.targetRef
          if not is_null(ref) and ref.kind == "Pod" and pods[ref.name] then return false end
        end
      end
    end
    return true
  end, timeout, { namespace = namespace })
  return ep ~= nil
end

--- Delete a Service's proxy: once the Service's Endpoints no longer list
--- its pods (wait_unrouted), the Deployment (foreground, waited for: its
--- pods drain first), the copy Service, the Secrets. Missing objects are
--- fine.
---@param client table
---@param namespace string
---@param name string
---@param step? fun(title: string, fn: fun())
function M.delete_proxy(client, namespace, name, step)
  step = step or function(_, fn) return fn() end
  local names = M.names(name)
  local cluster = require "czctl.session.cluster"
  step("Delete proxy Deployment " .. names.deployment, function()
    M.wait_unrouted(client, namespace, name, M.UNROUTE_TIMEOUT)
    cluster.delete_object(client, namespace, "Deployment", names.deployment)
  end)
  step("Delete Service " .. names.service, function()
    cluster.delete_object(client, namespace, "Service", names.service)
  end)
  step("Delete the proxy's configuration Secrets, the sessions' route Secrets and heartbeats", function()
    for _, kind in ipairs({ "Secret", "Lease" }) do
      local list, err = client:list(kind, { namespace = namespace, labelSelector = M.SERVICE_LABEL .. "=" .. name
                                              .. "," .. intercept.MANAGED_BY .. "=czctl" })
      if not list then intercept.raise(err) end
      for _, s in ipairs(list.items or {}) do cluster.delete_object(client, namespace, kind, s.metadata.name) end
    end
  end)
end

return M
