-- czctl.env: the environment a container of a Service's pod gets, resolved
-- from the cluster as the kubelet resolves it when it starts the container
-- (pkg/kubelet/kubelet_pods.go makeEnvironmentVariables), so a process on
-- this machine can run with the same configuration.
--
--   local env = require "czctl.env"
--   local r = env.resolve(client, { namespace = "default", service = "web" })
--   r.pod, r.container, r.vars[i] = { name, value, secret, source }
--
-- The kubelet's rules kept here: envFrom sources first, in order, every key
-- with its prefix (kubelets since 1.30 no longer skip keys that are not
-- C-style names, KEP-4369); then env in order, each entry overriding what came
-- before; `value` expanded with $(VAR) over what is defined so far ($$ is a
-- literal $, an undefined reference stays as written); valueFrom never
-- expanded; optional references to a missing ConfigMap, Secret or key leave
-- the variable unset; fieldRef for the fields the kubelet resolves;
-- resourceFieldRef as ceil(quantity / divisor), limits defaulting to the
-- node's allocatable. Not reproduced: the image's ENV, the runtime's
-- variables (PATH, HOSTNAME) and Service links (X_SERVICE_HOST, addresses
-- only the cluster reaches). Secret values are marked (secret = true), also
-- when they reach another variable through $(VAR). Nothing here prints or
-- writes: see czctl.env.dotenv and recipes/service-env.lua.
local M = {}

local cjson = require "cjson"

local function is_null(v) return v == nil or v == cjson.null end

local function b64decode(s)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local index = {}
  for i = 1, 64 do index[alphabet:byte(i)] = i - 1 end
  local out, bits, nbits = {}, 0, 0
  for i = 1, #s do
    local v = index[s:byte(i)]
    if v then
      bits, nbits = (bits << 6) | v, nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        out[#out + 1] = string.char((bits >> nbits) & 0xff)
      end
    end
  end
  return table.concat(out)
end
M.b64decode = b64decode

--- Base64 (standard alphabet, padded).
---@param s string
---@return string
function M.b64encode(s)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    out[#out + 1] = string.char(alphabet:byte((n >> 18) + 1), alphabet:byte(((n >> 12) & 63) + 1),
                                b and alphabet:byte(((n >> 6) & 63) + 1) or 61, c and alphabet:byte((n & 63) + 1) or 61)
  end
  return table.concat(out)
end

--- Expand $(VAR) references as the kubelet does (third_party/forked/golang/
--- expansion): $$ is $, $(NAME) is NAME's value when `lookup` knows it and
--- stays as written otherwise, an unclosed $( and any other $ are kept
--- (bytes, as Go does it: a non-ASCII byte right after $ is re-encoded).
---@param input string
---@param lookup fun(name: string): string|nil
---@return string
---@return string[] used the names that were replaced
function M.expand(input, lookup)
  local out, used, i, n = {}, {}, 1, #input
  while i <= n do
    local c = input:sub(i, i)
    if c == "$" and i < n then
      local nxt = input:sub(i + 1, i + 1)
      if nxt == "$" then
        out[#out + 1] = "$"; i = i + 2
      elseif nxt == "(" then
        local close = input:find(")", i + 2, true)
        if close then
          local name = input:sub(i + 2, close - 1)
          local v = lookup(name)
          if v ~= nil then out[#out + 1] = v; used[#used + 1] = name
          else out[#out + 1] = "$(" .. name .. ")" end
          i = close + 1
        else
          out[#out + 1] = "$("; i = i + 2
        end
      else
        -- Go's string(input[0]) turns the byte into the code point of that
        -- value: a non-ASCII byte after $ comes out re-encoded, as the kubelet does
        local b = nxt:byte()
        out[#out + 1] = "$" .. (b >= 0x80 and utf8.char(b) or nxt); i = i + 2
      end
    else
      out[#out + 1] = c; i = i + 1
    end
  end
  return table.concat(out), used
end

-- Quantities (k8s.io/apimachinery resource.Quantity), kept exact: a value is
-- an integer mantissa times 2^b times 10^e.
local DECIMAL = { n = -9, u = -6, m = -3, [""] = 0, k = 3, M = 6, G = 9, T = 12, P = 15, E = 18 }
local BINARY = { Ki = 10, Mi = 20, Gi = 30, Ti = 40, Pi = 50, Ei = 60 }

--- Parse a Kubernetes quantity ("500m", "1.5Gi", "2e3"): {sign, digits, exp10, exp2} or nil.
---@param s string
---@return table|nil
function M.parse_quantity(s)
  if type(s) == "number" then s = tostring(math.tointeger(s) or s) end
  if type(s) ~= "string" then return nil end
  local sign, int, frac, suffix = s:match("^([+-]?)(%d*)%.?(%d*)(.*)$")
  if not sign or (int == "" and frac == "") then return nil end
  local e10, e2 = 0, 0
  if DECIMAL[suffix] then
    e10 = DECIMAL[suffix]
  elseif BINARY[suffix] then
    e2 = BINARY[suffix]
  else
    local e = suffix:match("^[eE]([+-]?%d+)$")
    if not e then return nil end
    e10 = tonumber(e)
  end
  local digits = (int .. frac):gsub("^0+", "")
  e10 = e10 - #frac
  if digits == "" then digits = "0" end
  return { negative = sign == "-", digits = digits, exp10 = e10, exp2 = e2 }
end

-- ceil(q * 10^scale) as an integer (Quantity.ScaledValue rounds up), or nil
-- when it does not fit.
local function scaled_ceil(q, scale)
  local e10 = q.exp10 + scale
  local digits = q.digits
  local value
  if e10 >= 0 then
    value = math.tointeger(tonumber(digits .. string.rep("0", e10)))
    if not value then return nil end
    value = value << q.exp2
  else
    -- divide by 10^-e10, rounding up; the binary factor goes in first
    local keep = #digits + e10
    local whole = keep > 0 and digits:sub(1, keep) or "0"
    local rest = keep > 0 and digits:sub(keep + 1) or digits
    if q.exp2 > 0 then
      local num = math.tointeger(tonumber(digits))
      if not num then return nil end
      num = num << q.exp2
      local den = math.tointeger(10 ^ (-e10))
      value = num // den + ((num % den ~= 0) and 1 or 0)
    else
      value = math.tointeger(tonumber(whole)) + (rest:match("[1-9]") and 1 or 0)
    end
  end
  if q.negative then value = -value end
  return value
end
M.scaled_ceil = scaled_ceil

--- The value of resourceFieldRef `resource` of a container, as the kubelet
--- writes it: ceil(quantity / divisor) (CPU in millicores, the rest in
--- units). `allocatable` (the node's) stands in for a missing limit.
---@param container table
---@param ref table the resourceFieldRef
---@param allocatable table|nil
---@return string|nil value
---@return string|nil err
function M.resource_value(container, ref, allocatable)
  local resource = ref.resource or ""
  local kind, name = resource:match("^(%a+)%.(.+)$")
  if (kind ~= "limits" and kind ~= "requests")
     or not (name == "cpu" or name == "memory" or name == "ephemeral-storage" or name:match("^hugepages%-")) then
    return nil, "unsupported container resource: " .. resource
  end
  local res = container.resources or {}
  local quantity = (not is_null(res[kind]) and res[kind] or {})[name]
  if quantity == nil and kind == "limits" then
    if not allocatable then return nil, "needs the node's allocatable " .. name end
    quantity = allocatable[name] or "0"
  end
  local q = M.parse_quantity(quantity or "0")
  local divisor = M.parse_quantity(is_null(ref.divisor) and "1" or (ref.divisor or "1"))
  if not q or not divisor then return nil, "bad quantity in " .. resource end
  if divisor.digits == "0" then divisor = M.parse_quantity("1") end
  local scale = name == "cpu" and 3 or 0
  local v, d = scaled_ceil(q, scale), scaled_ceil(divisor, scale)
  if not v or not d or d == 0 then return nil, "quantity out of range in " .. resource end
  return string.format("%d", math.ceil(v / d))
end

-- fieldRef paths the kubelet resolves for env (podFieldSelectorRuntimeValue
-- and fieldpath.ExtractFieldPathAsString).
local function field_value(pod, path)
  local meta, spec, status = pod.metadata or {}, pod.spec or {}, pod.status or {}
  local function ips(list, single)
    local out = {}
    for _, e in ipairs(is_null(list) and {} or list) do out[#out + 1] = e.ip end
    if #out == 0 and not is_null(single) and single then out[1] = single end
    return table.concat(out, ",")
  end
  if path == "metadata.name" then return meta.name or "" end
  if path == "metadata.namespace" then return meta.namespace or "" end
  if path == "metadata.uid" then return meta.uid or "" end
  if path == "spec.nodeName" then return is_null(spec.nodeName) and "" or spec.nodeName end
  if path == "spec.serviceAccountName" then return is_null(spec.serviceAccountName) and "" or spec.serviceAccountName end
  if path == "status.hostIP" then return is_null(status.hostIP) and "" or status.hostIP end
  if path == "status.hostIPs" then return ips(status.hostIPs, status.hostIP) end
  if path == "status.podIP" then return is_null(status.podIP) and "" or status.podIP end
  if path == "status.podIPs" then return ips(status.podIPs, status.podIP) end
  local map, key = path:match("^metadata%.(%a+)%['(.*)'%]$")
  if map == "labels" or map == "annotations" then
    local t = meta[map]
    return (not is_null(t) and t[key]) or ""
  end
  return nil, "unsupported fieldPath: " .. tostring(path)
end
M.field_value = field_value

--- Which pod stands for a Service: its selector (the original one when
--- czctl intercepts it), a pod that is Ready and not terminating, the
--- oldest first (then by name).
---@param client table
---@param namespace string
---@param service string
---@return table|nil pod
---@return any err
function M.pick_pod(client, namespace, service)
  local intercept = require "czctl.intercept"
  local svc, err = intercept.get_service(client, namespace, service)
  if not svc then return nil, err end
  local shared = require("czctl.session.shared").state(svc)
  local selector = (shared.redirected and shared.original) and shared.original.selector or svc.spec.selector
  if is_null(selector) or next(selector) == nil then
    return nil, string.format("Service %s/%s has no selector, so no pod stands for it; use --pod", namespace, service)
  end
  local pods, lerr = client:list("Pod", { namespace = namespace, labelSelector = intercept.selector_string(selector) })
  if not pods then return nil, lerr end
  local ready = {}
  for _, p in ipairs(pods.items or {}) do
    local ok = is_null(p.metadata.deletionTimestamp)
    local is_ready = false
    for _, c in ipairs(is_null((p.status or {}).conditions) and {} or p.status.conditions) do
      if c.type == "Ready" and c.status == "True" then is_ready = true end
    end
    if ok and is_ready then ready[#ready + 1] = p end
  end
  if #ready == 0 then
    return nil, string.format("no ready pod behind Service %s/%s (selector %s); check: kubectl get pods -n %s -l %s",
                              namespace, service, intercept.selector_string(selector), namespace,
                              intercept.selector_string(selector))
  end
  table.sort(ready, function(a, b)
    local ta, tb = a.metadata.creationTimestamp or "", b.metadata.creationTimestamp or ""
    if ta ~= tb then return ta < tb end
    return a.metadata.name < b.metadata.name
  end)
  return ready[1]
end

--- The container to resolve: `name`, else the pod's only container, else
--- the one named by kubectl.kubernetes.io/default-container, else the first.
---@param pod table
---@param name string|nil
---@return table|nil container
---@return string|nil err
function M.pick_container(pod, name)
  local containers = pod.spec.containers or {}
  local names = {}
  for i, c in ipairs(containers) do names[i] = c.name end
  local annotations = pod.metadata.annotations
  local want = name or (not is_null(annotations) and annotations["kubectl.kubernetes.io/default-container"]) or nil
  if want then
    for _, c in ipairs(containers) do if c.name == want then return c end end
    return nil, string.format("pod %s has no container %q (it has: %s)", pod.metadata.name, want,
                              table.concat(names, ", "))
  end
  return containers[1]
end

-- A cache of the ConfigMaps and Secrets the container refers to: each read
-- once; a missing one is false.
local function object_reader(client, namespace)
  local cache = { ConfigMap = {}, Secret = {} }
  return function(kind, name)
    local c = cache[kind]
    if c[name] == nil then
      local obj, err = client:get(kind, name, { namespace = namespace })
      if not obj then
        if require("czctl.kube").not_found(err) then c[name] = false
        else return nil, err end
      else
        c[name] = obj
      end
    end
    return c[name]
  end
end

-- The data of a ConfigMap (data only, as the kubelet) or a Secret (decoded).
local function data_of(kind, obj)
  local out = {}
  if is_null(obj.data) then return out end
  for k, v in pairs(obj.data) do out[k] = kind == "Secret" and b64decode(v) or v end
  return out
end

---@class czctl.env.Var
---@field name string
---@field value string
---@field secret boolean           the value comes from a Secret (directly or through $(VAR))
---@field source string            where it comes from: "value", "configmap NAME key K", "secret NAME", ...

---@class czctl.env.Result
---@field pod string
---@field namespace string
---@field container string
---@field vars czctl.env.Var[]     in the order they were first defined
---@field warnings string[]

--- Resolve the environment of `container` in `pod` as the kubelet would now.
--- Raises nothing: returns nil, err when the kubelet would refuse to start
--- the container (a required ConfigMap, Secret or key is missing) or a read
--- fails.
---@param client table czctl.kube client
---@param pod table
---@param container table
---@return czctl.env.Result|nil
---@return any err
function M.from_pod(client, pod, container)
  local ns = pod.metadata.namespace
  local read = object_reader(client, ns)
  local vars, index, warnings = {}, {}, {}
  local function set(name, value, secret, source)
    local v = index[name]
    if v then v.value, v.secret, v.source = value, secret, source
    else
      v = { name = name, value = value, secret = secret, source = source }
      vars[#vars + 1] = v
      index[name] = v
    end
  end
  for _, from in ipairs(is_null(container.envFrom) and {} or container.envFrom) do
    local prefix = is_null(from.prefix) and "" or (from.prefix or "")
    local kind, ref = "ConfigMap", from.configMapRef
    if is_null(ref) then kind, ref = "Secret", from.secretRef end
    if not is_null(ref) then
      local obj, err = read(kind, ref.name)
      if obj == nil then return nil, err end
      if obj == false then
        if not ref.optional then
          return nil, string.format("%s %q not found (envFrom of container %s; the kubelet would not start it)",
                                    kind, ref.name, container.name)
        end
      else
        local data, keys = data_of(kind, obj), {}
        for k in pairs(data) do keys[#keys + 1] = k end
        table.sort(keys)
        for _, k in ipairs(keys) do
          set(prefix .. k, data[k], kind == "Secret", string.format("%s %s", kind:lower(), ref.name))
        end
      end
    end
  end
  for _, e in ipairs(is_null(container.env) and {} or container.env) do
    local value, secret, source = e.value, false, "value"
    local skip = false
    if not is_null(value) and value ~= "" then
      local used
      value, used = M.expand(value, function(name) local v = index[name]; return v and v.value end)
      for _, u in ipairs(used) do if index[u].secret then secret = true end end
    elseif not is_null(e.valueFrom) then
      local vf = e.valueFrom
      if not is_null(vf.fieldRef) then
        local err
        value, err = field_value(pod, vf.fieldRef.fieldPath)
        if not value then return nil, string.format("env %s: %s", e.name, err) end
        source = "field " .. vf.fieldRef.fieldPath
      elseif not is_null(vf.resourceFieldRef) then
        local ref = vf.resourceFieldRef
        local target = container
        if not is_null(ref.containerName) and ref.containerName and ref.containerName ~= "" then
          target = M.pick_container(pod, ref.containerName)
        end
        local err
        if target then
          value, err = M.resource_value(target, ref, nil)
          if not value and err and err:find("allocatable", 1, true) then
            local node = not is_null(pod.spec.nodeName) and client:get("Node", pod.spec.nodeName) or nil
            local alloc = node and not is_null(node.status) and node.status.allocatable or nil
            if alloc then value, err = M.resource_value(target, ref, alloc)
            else err = "the container has no " .. ref.resource .. " and the node's allocatable cannot be read" end
          end
        else
          err = "no container " .. tostring(ref.containerName)
        end
        if not value then
          warnings[#warnings + 1] = string.format("%s left out: %s", e.name, err)
          skip = true
        end
        source = "resource " .. ref.resource
      else
        local kind, ref = "ConfigMap", vf.configMapKeyRef
        if is_null(ref) then kind, ref = "Secret", vf.secretKeyRef end
        if is_null(ref) then
          value = ""
        else
          local obj, err = read(kind, ref.name)
          if obj == nil then return nil, err end
          local data = obj and data_of(kind, obj) or nil
          if not obj or data[ref.key] == nil then
            if not ref.optional then
              return nil, string.format(obj and "couldn't find key %s in %s %s/%s (env %s; the kubelet would not "
                                        .. "start the container)" or "%s%s %s/%s not found (env %s; the kubelet "
                                        .. "would not start the container)", obj and ref.key or "", kind, ns,
                                        ref.name, e.name)
            end
            skip = true
          else
            value = data[ref.key]
            secret = kind == "Secret"
            source = string.format("%s %s key %s", kind:lower(), ref.name, ref.key)
          end
        end
      end
    else
      value = ""
    end
    if not skip then set(e.name, value, secret, source) end
  end
  return { pod = pod.metadata.name, namespace = ns, container = container.name, vars = vars, warnings = warnings }
end

--- The environment of the container of a pod behind a Service (or of the
--- pod opts.pod): opts.namespace, opts.service, opts.pod, opts.container.
---@param client table czctl.kube client
---@param opts {namespace: string, service?: string, pod?: string, container?: string}
---@return czctl.env.Result|nil
---@return any err
function M.resolve(client, opts)
  local pod, err
  if opts.pod then
    pod, err = client:get("Pod", opts.pod, { namespace = opts.namespace })
  else
    pod, err = M.pick_pod(client, opts.namespace, opts.service)
  end
  if not pod then return nil, err end
  local container, cerr = M.pick_container(pod, opts.container)
  if not container then return nil, cerr end
  local r, rerr = M.from_pod(client, pod, container)
  if not r then return nil, rerr end
  r.containers = #pod.spec.containers
  r.pod_object = pod
  return r
end

--- How many variables come from Secrets.
---@param result czctl.env.Result
---@return integer
function M.count_secrets(result)
  local n = 0
  for _, v in ipairs(result.vars) do if v.secret then n = n + 1 end end
  return n
end

--- The text of a result in a format: "dotenv" (czctl.env.dotenv), "json"
--- or "yaml" (an Environment document). Secret values are left out unless
--- opts.secrets (a dotenv file then names them in a comment; a document
--- marks them `hidden`).
---@param result czctl.env.Result
---@param format "dotenv"|"json"|"yaml"
---@param opts? {secrets?: boolean}
---@return string text
---@return string[] skipped (dotenv) names that cannot be written
---@return string[] conflicts (dotenv) names python-dotenv reads differently
function M.render(result, format, opts)
  opts = opts or {}
  local shown, hidden = {}, {}
  for _, v in ipairs(result.vars) do
    if v.secret and not opts.secrets then hidden[#hidden + 1] = v else shown[#shown + 1] = v end
  end
  if format == "dotenv" then
    local comments = { string.format("czctl service env: pod %s/%s, container %s", result.namespace, result.pod,
                                     result.container) }
    for _, v in ipairs(hidden) do
      comments[#comments + 1] = string.format("%s: from a Secret, not shown (use --file FILE, or --show-secrets)",
                                              v.name)
    end
    return require("czctl.env.dotenv").encode(shown, comments)
  end
  local util = require "czctl.util"
  local items = setmetatable({}, util.array_mt)
  for _, v in ipairs(result.vars) do
    local item = { name = v.name, source = v.source, secret = v.secret }
    if v.secret and not opts.secrets then item.hidden = true
    elseif utf8.len(v.value) then item.value = v.value
    else item.valueBase64 = M.b64encode(v.value) end -- JSON strings cannot carry other bytes
    items[#items + 1] = item
  end
  local doc = { apiVersion = "czctl.io/v1", kind = "Environment", namespace = result.namespace, pod = result.pod,
                container = result.container, variables = items,
                warnings = setmetatable(util.deep_copy(result.warnings), util.array_mt) }
  if format == "yaml" then return require("czctl.yaml").encode(doc), {}, {} end
  return util.json_encode(doc, { indent = true }) .. "\n", {}, {}
end

--- Run a command with the variables added to this process's environment,
--- its standard streams this process's; returns its exit code (128+N when
--- a signal ended it). SIGTERM and SIGHUP sent to czctl alone are passed
--- on (a terminal's Ctrl-C reaches the command itself).
---@param argv string[]
---@param result czctl.env.Result
---@return integer
function M.run(argv, result)
  local process = require "czctl.process"
  local signal = require "czctl.signal"
  local child, err = process.spawn(argv, { env_extra = M.as_table(result), stdin = "inherit", stdout = "inherit",
                                           stderr = "inherit" })
  if not child then require("czctl.intercept").raise(string.format("cannot run %s: %s", argv[1], tostring(err))) end
  while true do
    local code = child:wait()
    if code then child:close(); return code end
    local name = signal.pending()
    signal.clear()
    if name == "SIGTERM" or name == "SIGHUP" then child:kill(name:sub(4)) end
  end
end

--- Whether `path` can be written as an environment file: absent or a
--- regular file (it is replaced by rename, which must never happen to a
--- device, a pipe, a directory or a link: `--file /dev/null`). Returns
--- nil and a message otherwise.
---@param path string
---@return true|nil
---@return string|nil err
function M.check_path(path)
  local st = require("czctl.process").run({ "stat", "-c", "%F", "--", path })
  local kind = st and st.code == 0 and st.stdout:gsub("%s+$", "") or nil
  if kind and kind ~= "regular file" and kind ~= "regular empty file" then
    return nil, string.format("%s is a %s; give the path of a regular file (it is created with mode 0600)", path, kind)
  end
  return true
end

--- Write an environment file: checked by check_path, replaced atomically,
--- mode 0600 whatever the umask.
---@param path string
---@param text string
---@return true|nil
---@return string|nil err
function M.write_file(path, text)
  local ok, err = M.check_path(path)
  if not ok then return nil, err end
  local wrote, werr = require("czctl.sys").write_file(path, text, tonumber("600", 8))
  if not wrote then return nil, "cannot write " .. path .. ": " .. tostring(werr) end
  return true
end

--- The variables as a name -> value table (for a child process' environment).
---@param result czctl.env.Result
---@return table<string, string>
function M.as_table(result)
  local t = {}
  for _, v in ipairs(result.vars) do t[v.name] = v.value end
  return t
end

return M
