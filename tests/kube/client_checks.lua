-- Checks for czctl.kube against a running sandbox cluster, printed as TAP
-- lines ("ok - name" / "not ok - name"). Run by tests/kube/test_client.sh:
--   czctl run tests/kube/client_checks.lua KUBECONFIG
-- The kubeconfig has the sandbox's contexts plus `bad` (wrong token),
-- `sni-good` / `sni-bad` (tls-server-name localhost / wrong.example).
local kube = require "czctl.kube"
local sys = require "czctl.core.sys"

local kubeconfig = assert(arg and arg[1], "usage: client_checks.lua KUBECONFIG")
local failures = 0

local function check(name, cond, diag)
  if cond then
    print("ok - " .. name)
  else
    failures = failures + 1
    print("not ok - " .. name)
    if diag ~= nil then print("#   " .. tostring(diag):gsub("\n", "\n#   ")) end
  end
  return cond
end

local function sh(cmd)
  -- background helper commands (kubectl) that change the cluster while we watch
  os.execute("(" .. cmd .. ") >/dev/null 2>&1 &")
end

local kubectl = "kubectl --kubeconfig " .. kubeconfig .. " "
local c = assert(kube.connect{ kubeconfig = kubeconfig, verbose = true })
local suffix = sys.random_id(5)
local function name(base) return base .. "-" .. suffix end

-- info ---------------------------------------------------------------------
local info = c:info()
check("connect: context sandbox, namespace default, token auth",
      info.context == "sandbox" and c.namespace == "default" and info.auth == "token", info.context)
check("connect: info carries no secret", info.token == nil and info.password == nil)
do
  local status, _, headers = c.raw:request{ path = "/api/v1/namespaces/default/configmaps" }
  check("raw request: headers come back with lower-cased names",
        status == 200 and type(headers["content-type"]) == "string"
          and headers["content-type"]:find("application/json", 1, true) ~= nil,
        headers and headers["content-type"])
end
local cn = assert(kube.connect{ kubeconfig = kubeconfig, namespace = "kube-system" })
check("connect: opts.namespace overrides the context's namespace", cn.namespace == "kube-system")

-- create / get / 404 / 409 AlreadyExists -------------------------------------
local cm, err = c:create{ apiVersion = "v1", kind = "ConfigMap", metadata = { name = name("cm") },
                          data = { a = "1" } }
check("create ConfigMap returns the object with a resourceVersion",
      cm and cm.metadata.resourceVersion and cm.data.a == "1", err)
local got
got, err = c:get("ConfigMap", name("cm"))
check("get returns the created object", got and got.metadata.uid == cm.metadata.uid, err)
got, err = c:get("ConfigMap", "does-not-exist-" .. suffix)
check("get of a missing object: 404 NotFound decoded from Status",
      got == nil and kube.not_found(err) and err.code == 404 and err.reason == "NotFound"
        and err.message == 'configmaps "does-not-exist-' .. suffix .. '" not found'
        and err.verb == "get" and err.resource == "configmaps" and err.namespace == "default", err)
check("errors print as one line", tostring(err) == err.message and not tostring(err):find("\n"), err)
local _
_, err = c:create{ apiVersion = "v1", kind = "ConfigMap", metadata = { name = name("cm") } }
check("create of an existing name: 409 AlreadyExists",
      kube.already_exists(err) and err.code == 409 and not kube.conflict(err), err)

-- patch: merge, strategic, json ------------------------------------------------
got, err = c:patch("ConfigMap", name("cm"), { data = { b = "2" } }, { type = "merge" })
check("merge patch adds a key", got and got.data.a == "1" and got.data.b == "2", err)
got, err = c:patch("ConfigMap", name("cm"), { { op = "replace", path = "/data/a", value = "z" } }, { type = "json" })
check("json patch replaces a value", got and got.data.a == "z" and got.data.b == "2", err)
local svc
svc, err = c:create{ apiVersion = "v1", kind = "Service", metadata = { name = name("svc") },
                     spec = { selector = { app = "x" }, ports = { { name = "http", port = 80, targetPort = 8080 } } } }
check("create Service", svc ~= nil, err)
got, err = c:patch("Service", name("svc"), { spec = { ports = { { name = "extra", port = 81 } } } }, { type = "strategic" })
check("strategic merge patch merges Service ports by port",
      got and #got.spec.ports == 2, err or (got and #got.spec.ports))
got, err = c:patch("Service", name("svc"), { spec = { ports = { { name = "only", port = 82 } } } }, { type = "merge" })
check("merge patch replaces the ports list wholesale", got and #got.spec.ports == 1 and got.spec.ports[1].port == 82,
      err)
got, err = c:patch("ConfigMap", name("cm"), { metadata = { labels = kube.array() } }, { type = "merge" })
check("kube.array{} encodes an empty list as []", kube.encode({ x = kube.array() }) == '{"x":[]}'
      and kube.encode({}) == "{}")

-- 409 Conflict on a stale resourceVersion ----------------------------------------
_, err = c:patch("ConfigMap", name("cm"), { metadata = { resourceVersion = cm.metadata.resourceVersion },
                                             data = { c = "3" } })
check("patch guarded by a stale resourceVersion: 409 Conflict",
      kube.conflict(err) and err.code == 409 and err.message:find("the object has been modified", 1, true), err)

-- 422 Invalid with causes ------------------------------------------------------
_, err = c:create{ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "Bad_Name" } }
check("invalid object: 422 Invalid with causes",
      kube.invalid(err) and err.code == 422 and err.details and err.details.causes
        and err.details.causes[1] and err.details.causes[1].field == "metadata.name", err)

-- list with limit + continue -----------------------------------------------------
for i = 1, 5 do
  assert(c:create{ apiVersion = "v1", kind = "ConfigMap",
                   metadata = { name = name("page" .. i), labels = { page = suffix } } })
end
local before = c:stats().requests
local list
list, err = c:list("ConfigMap", { labelSelector = "page=" .. suffix, limit = 2 })
local pages = c:stats().requests - before
check("list follows continue tokens (5 items in 2-item pages)", list and #list.items == 5 and pages == 3,
      err or string.format("%d items, %d requests", list and #list.items or -1, pages))
list, err = c:list("ConfigMap", { fieldSelector = "metadata.name=" .. name("page3") })
check("list with a fieldSelector", list and #list.items == 1 and list.items[1].metadata.name == name("page3"), err)
list, err = c:list("Namespace")
check("list of a cluster-scoped kind", list and #list.items >= 1, err)
list, err = c:list("Deployment", { all_namespaces = true })
check("list apps/v1 Deployments in all namespaces", list ~= nil, err)

-- delete -----------------------------------------------------------------------
_, err = c:delete("ConfigMap", name("page1"), { preconditions = { resourceVersion = "1" } })
check("delete with a stale resourceVersion precondition: 409 Conflict", kube.conflict(err), err)
local okd
okd, err = c:delete("ConfigMap", name("page1"), { propagationPolicy = "Foreground" })
check("delete (Foreground) returns true", okd == true, err)
got, err = c:wait_for("ConfigMap", name("page1"), function(o) return o == nil end, 10)
_, err = c:get("ConfigMap", name("page1"))
check("deleted object is gone (wait_for deletion, then 404)", got ~= nil and kube.not_found(err), err)
_, err = c:delete("ConfigMap", name("page1"))
check("delete of a missing object: NotFound", kube.not_found(err) and err.verb == "delete", err)

-- watch ------------------------------------------------------------------------
list = assert(c:list("ConfigMap", { labelSelector = "page=" .. suffix }))
local rv = list.metadata.resourceVersion
assert(c:create{ apiVersion = "v1", kind = "ConfigMap", metadata = { name = name("w1"), labels = { page = suffix } } })
local events = {}
got, err = c:watch("ConfigMap", { resourceVersion = rv, labelSelector = "page=" .. suffix, timeout = 10 },
  function(t, o)
    events[#events + 1] = t .. " " .. o.metadata.name
    return t == "ADDED" and o.metadata.name == name("w1")
  end)
check("watch from a resourceVersion delivers the ADDED event", got and got.metadata.name == name("w1"),
      err or table.concat(events, ","))

sh("sleep 0.5; " .. kubectl .. "label configmap " .. name("w1") .. " touched=yes")
got, err = c:watch("ConfigMap", { resourceVersion = got.metadata.resourceVersion, timeout = 15,
                                  fieldSelector = "metadata.name=" .. name("w1") },
  function(t, o) return t == "MODIFIED" and o.metadata.labels.touched == "yes" end)
check("watch sees a MODIFIED event made by another client", got and got.metadata.labels.touched == "yes", err)

-- the server ends each stream after timeoutSeconds=1: the change after 2.5 s
-- arrives on a later stream, re-watched from the last resourceVersion
local t0 = sys.now()
local watch_requests = 0
sh("sleep 2.5; " .. kubectl .. "label configmap " .. name("w1") .. " again=yes")
got, err = c:watch("ConfigMap", { resourceVersion = got.metadata.resourceVersion, timeout = 20, timeoutSeconds = 1,
                                  fieldSelector = "metadata.name=" .. name("w1") },
  function(t, o) watch_requests = watch_requests + 1; return o.metadata.labels.again == "yes" end)
check("watch re-watches after the server ends the stream (timeoutSeconds)",
      got and got.metadata.labels.again == "yes" and sys.now() - t0 >= 2, err)

-- the server drops every watch: the client re-watches from the last RV
sh("sleep 0.7; " .. kubectl .. "create --raw /sandbox/drop-watches -f /dev/null; sleep 0.5; "
   .. kubectl .. "label configmap " .. name("w1") .. " third=yes")
got, err = c:watch("ConfigMap", { resourceVersion = got.metadata.resourceVersion, timeout = 20,
                                  fieldSelector = "metadata.name=" .. name("w1") },
  function(t, o) return o.metadata.labels.third == "yes" end)
check("watch re-watches after the connection ends (EOF)", got and got.metadata.labels.third == "yes", err)

got, err = c:watch("ConfigMap", { resourceVersion = got.metadata.resourceVersion, timeout = 1.5,
                                  fieldSelector = "metadata.name=" .. name("w1") }, function() return false end)
check("watch with nothing happening ends with a Timeout error", got == nil and kube.timeout(err), err)

-- 410 Expired (injected): a clear error, or a relist when asked
local st, body = c.raw:request{ method = "POST", path = "/sandbox/faults", content_type = "application/json",
  body = kube.encode{ { method = "GET", path = "/api/v1/namespaces/default/configmaps$", query = "watch=1",
                        status = 410, reason = "Expired", message = "too old resource version: 1 (99)", times = 1 } } }
assert(st == 200, body)
got, err = c:watch("ConfigMap", { resourceVersion = "1", timeout = 5 }, function() return true end)
check("watch answered 410 Expired: error names the expiry and says to list again",
      got == nil and err.code == 410 and err.message:find("expired", 1, true) and err.message:find("list again", 1, true),
      err)

-- wait_for -----------------------------------------------------------------------
sh("sleep 0.5; " .. kubectl .. "label configmap " .. name("w1") .. " ready=true")
got, err = c:wait_for("ConfigMap", name("w1"), function(o) return o and o.metadata.labels.ready == "true" end, 15)
check("wait_for returns once the predicate holds", got and got.metadata.labels.ready == "true", err)
got, err = c:wait_for("ConfigMap", name("w1"), function(o) return o ~= nil end, 5)
check("wait_for returns at once when the current state already matches", got ~= nil, err)
sh("sleep 0.5; " .. kubectl .. "delete configmap " .. name("w1"))
got, err = c:wait_for("ConfigMap", name("w1"), function(o) return o == nil end, 15)
check("wait_for a deletion (predicate(nil) on DELETED)", got ~= nil, err)
got, err = c:wait_for("ConfigMap", "never-" .. suffix, function(o) return o ~= nil end, 1)
check("wait_for times out with reason Timeout", got == nil and kube.timeout(err) and err.name == "never-" .. suffix
      and tostring(err):find("timed out", 1, true), err)

-- discovery, kinds ---------------------------------------------------------------
got, err = c:get("rbac.authorization.k8s.io/v1/ClusterRole", "does-not-exist")
check("group/version/Kind form works (rbac ClusterRole 404)", kube.not_found(err) and err.namespace == nil, err)
list, err = c:list("Lease", { namespace = "kube-node-lease" })
check("coordination.k8s.io Lease is built in", list ~= nil, err)
_, err = c:get("NoSuchKind", "x")
check("unknown kind: discovery says so", err and err.message:find("does not know the kind", 1, true), err)

-- 401 and 403 -----------------------------------------------------------------------
local bad = assert(kube.connect{ kubeconfig = kubeconfig, context = "bad" })
_, err = bad:get("ConfigMap", name("cm"))
check("wrong token: 401 Unauthorized", err and err.code == 401 and err.reason == "Unauthorized", err)
local r = assert(kube.connect{ kubeconfig = kubeconfig, context = "restricted" })
_, err = r:patch("Service", name("svc"), { metadata = { labels = { a = "b" } } })
local line = tostring(err)
check("restricted user: 403 names verb, resource and namespace",
      kube.forbidden(err) and err.code == 403 and err.verb == "patch" and err.resource == "services"
        and err.namespace == "default" and line:find("patch", 1, true) and line:find("services", 1, true)
        and line:find('"default"', 1, true) and line:find("restricted", 1, true), line)

-- transport errors -------------------------------------------------------------------
local sni = assert(kube.connect{ kubeconfig = kubeconfig, context = "sni-good" })
got, err = sni:get("Namespace", "default")
check("tls-server-name: certificate verified against that name (localhost)", got ~= nil, err)
local sbad = assert(kube.connect{ kubeconfig = kubeconfig, context = "sni-bad" })
_, err = sbad:get("Namespace", "default")
check("tls-server-name not in the certificate: Transport error", err and err.reason == "Transport", err)

-- connection reuse ---------------------------------------------------------------------
local fresh = assert(kube.connect{ kubeconfig = kubeconfig })
for _ = 1, 25 do assert(fresh:get("Namespace", "default")) end
local stats = fresh:stats()
check("25 requests over one TLS connection", stats.requests == 25 and stats.connections == 1,
      string.format("%d requests, %d connections", stats.requests, stats.connections))

-- cleanup
c:delete("Service", name("svc"))
c:delete("ConfigMap", name("cm"))
for i = 2, 5 do c:delete("ConfigMap", name("page" .. i)) end
os.exit(failures == 0 and 0 or 1)
