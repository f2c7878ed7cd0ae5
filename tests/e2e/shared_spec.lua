-- Specification of czctl.session.shared: the Service's annotations as the
-- source of truth for several sessions on one Service, and the guarded
-- patches that change them. A small in-memory API server applies merge
-- patches the way the real one does (RFC 7386, a resourceVersion
-- precondition answered 409 when stale), so two developers joining from the
-- same stale read both end up on the Service. The cluster side is in
-- tests/e2e/test_shared.sh.
local shared = require "czctl.session.shared"
local kube = require "czctl.kube"
local cjson = require "cjson"

local function merge(target, patch)
  if type(patch) ~= "table" or patch[1] ~= nil or next(patch) == nil and getmetatable(patch) then return patch end
  if type(target) ~= "table" or target[1] ~= nil then target = {} end
  for k, v in pairs(patch) do
    if v == cjson.null then target[k] = nil else target[k] = merge(target[k], v) end
  end
  return target
end

-- A fake API server holding one Service; patch checks the resourceVersion.
local function server(svc)
  local store = { svc = kube.decode(kube.encode(svc)), patches = 0, conflicts = 0 }
  local client = {}
  function client.get(_, kind, name)
    assert.equal("Service", kind)
    assert.equal(store.svc.metadata.name, name)
    return kube.decode(kube.encode(store.svc))
  end
  function client.patch(_, kind, _, patch)
    assert.equal("Service", kind)
    local wire = kube.decode(kube.encode(patch))
    local rv = wire.metadata and wire.metadata.resourceVersion
    if rv and rv ~= store.svc.metadata.resourceVersion then
      store.conflicts = store.conflicts + 1
      return nil, { code = 409, reason = "Conflict", message = "the object has been modified" }
    end
    if wire.metadata then wire.metadata.resourceVersion = nil end
    local out = merge(store.svc, wire)
    if out.metadata.annotations and next(out.metadata.annotations) == nil then out.metadata.annotations = nil end
    out.metadata.resourceVersion = tostring(tonumber(store.svc.metadata.resourceVersion) + 1)
    store.svc = out
    store.patches = store.patches + 1
    return kube.decode(kube.encode(out))
  end
  return client, store
end

local function service()
  return {
    metadata = { name = "web", namespace = "default", resourceVersion = "7", annotations = { keep = "me" },
                 labels = { app = "web" } },
    spec = { selector = { app = "web", tier = "front" }, clusterIP = "10.0.0.1", type = "ClusterIP",
             ports = { { name = "http", port = 80, targetPort = "http", protocol = "TCP" },
                       { name = "admin", port = 9090, targetPort = 9090, protocol = "TCP", nodePort = 31000 } } },
  }
end

local function entry(id, rule, user)
  return { id = id, port = 80, rule = rule, ruleText = "r", tunnel = "direct",
           owner = { user = user or id, host = "h", machine = id } }
end
local function header(name, value) return { header = { name = name, equals = value } } end

local function clean(v) return kube.decode(kube.encode(v)) end

describe("join", function()
  it("adds a session and counts up the routes version, leaving the selector alone", function()
    local client, store = server(service())
    local svc = assert(shared.join(client, "default", "web", entry("a", header("X-Dev", "a"))))
    local state = shared.state(svc)
    assert.same({ "a" }, { state.sessions[1].id })
    assert.equal(1, state.version)
    assert.same({ app = "web", tier = "front" }, store.svc.spec.selector)
  end)
  it("lets two developers who read the same version both join (the second retries on 409)", function()
    local client, store = server(service())
    local stale = client:get("Service", "web")
    assert(shared.join(client, "default", "web", entry("a", header("X-Dev", "a")), stale))
    assert(shared.join(client, "default", "web", entry("b", header("X-Dev", "b")), stale))
    local state = shared.state(store.svc)
    assert.same({ "a", "b" }, { state.sessions[1].id, state.sessions[2].id })
    assert.equal(2, state.version)
    assert.equal(1, store.conflicts)
  end)
  it("is a no-op the second time", function()
    local client, store = server(service())
    assert(shared.join(client, "default", "web", entry("a", header("X-Dev", "a"))))
    assert(shared.join(client, "default", "web", entry("a", header("X-Dev", "a"))))
    assert.equal(1, store.patches)
  end)
end)

describe("conflict: rules that would take the same requests", function()
  local held = { sessions = { entry("a", header("X-Dev", "alice"), "alice") } }
  local cases = {
    { "the same header and value", header("X-Dev", "alice"), "already routes" },
    { "the same header in another case", header("x-dev", "alice"), "already routes" },
    { "--all while another holds the port", { all = true }, "so %-%-all would take its requests" },
    { "another value", header("X-Dev", "bob"), nil },
    { "a cookie", { cookie = { name = "dev", equals = "alice" } }, nil },
  }
  for _, c in ipairs(cases) do
    it((c[3] and "refuses " or "accepts ") .. c[1], function()
      local e = entry("b", c[2], "bob")
      e.service = "web"
      local why = shared.conflict(held, e)
      if c[3] then
        assert.match("session a of alice@h", why)
        assert.match(c[3], why)
      else
        assert.is_nil(why)
      end
    end)
  end
  it("refuses any rule while a session holds the port with --all", function()
    local why = shared.conflict({ sessions = { entry("a", { all = true }, "alice") } }, entry("b", header("X", "1")))
    assert.match("routes every request %(%-%-all%)", why)
  end)
  it("refuses another protocol on the same port (h2c next to HTTP/1.1)", function()
    local e = entry("b", header("X-Dev", "bob"), "bob"); e.protocol = "h2c"
    assert.match("intercepts it as http, not h2c", shared.conflict(held, e))
  end)
  it("lets rules on another port of the Service be", function()
    local e = entry("b", header("X-Dev", "alice")); e.port = 9090
    assert.is_nil(shared.conflict(held, e))
  end)
end)

describe("redirect, drift and leave", function()
  local function intercepted()
    local client, store = server(service())
    assert(shared.join(client, "default", "web", entry("a", header("X-Dev", "a"))))
    assert(shared.redirect(client, "default", "web"))
    return client, store
  end
  it("points the selector and every port at the proxy, saving what it replaced", function()
    local _, store = intercepted()
    assert.same({ ["czctl.io/proxy"] = "web" }, store.svc.spec.selector)
    assert.same({ 8080, 8081 }, { store.svc.spec.ports[1].targetPort, store.svc.spec.ports[2].targetPort })
    assert.equal(31000, store.svc.spec.ports[2].nodePort)
    local original = shared.state(store.svc).original
    assert.same({ app = "web", tier = "front" }, original.selector)
    assert.equal("http", original.ports[1].targetPort)
    assert.is_false((shared.drift(store.svc)))
  end)
  it("sees a `kubectl apply` of the original (its selector key back) as drift, and re-asserts keeping the original", function()
    local client, store = intercepted()
    store.svc.spec.selector.app = "web"
    store.svc.spec.ports[1].targetPort = "http"
    local drifted, why = shared.drift(store.svc)
    assert.is_true(drifted)
    assert.match("extra key app", why)
    assert(shared.redirect(client, "default", "web"))
    assert.same({ ["czctl.io/proxy"] = "web" }, store.svc.spec.selector)
    assert.equal(8080, store.svc.spec.ports[1].targetPort)
    assert.same({ app = "web", tier = "front" }, shared.state(store.svc).original.selector)
  end)
  it("a leave that is not the last only takes the session off", function()
    local client, store = intercepted()
    assert(shared.join(client, "default", "web", entry("b", header("X-Dev", "b"))))
    local r = assert(shared.leave(client, "default", "web", "a"))
    assert.is_false(r.last)
    assert.same({ "b" }, { shared.state(store.svc).sessions[1].id })
    assert.equal(3, shared.state(store.svc).version)
    assert.same({ ["czctl.io/proxy"] = "web" }, store.svc.spec.selector)
  end)
  it("the last leave gives the Service back exactly", function()
    local client, store = intercepted()
    local r = assert(shared.leave(client, "default", "web", "a"))
    assert.is_true(r.last)
    local want = clean(service())
    assert.same(want.spec, store.svc.spec)
    assert.same({ keep = "me" }, store.svc.metadata.annotations)
  end)
  it("the last leave keeps what others changed: an added port, a new selector key, a key set again", function()
    local client, store = intercepted()
    store.svc.spec.ports[3] = { name = "metrics", port = 9100, targetPort = 9100, protocol = "TCP" }
    store.svc.spec.selector.tier = "back"  -- czctl removed tier=front; someone set it again
    store.svc.spec.ports[2].targetPort = 9191 -- someone retargeted a port czctl had set
    store.svc.metadata.labels.team = "blue"
    local r = assert(shared.leave(client, "default", "web", "a"))
    assert.same({ app = "web", tier = "back" }, store.svc.spec.selector)
    assert.same({ "http", 9191, 9100 }, { store.svc.spec.ports[1].targetPort, store.svc.spec.ports[2].targetPort,
                                         store.svc.spec.ports[3].targetPort })
    assert.equal("blue", store.svc.metadata.labels.team)
    assert.equal(2, #r.warnings)
    assert.match("tier=back was set by someone else", r.warnings[1] .. r.warnings[2])
  end)
  it("a port someone added is neither drift nor re-asserted", function()
    local client, store = intercepted()
    store.svc.spec.ports[3] = { name = "metrics", port = 9100, targetPort = 9100, protocol = "TCP" }
    assert.is_false((shared.drift(store.svc)))
    store.svc.spec.selector.app = "web"
    assert(shared.redirect(client, "default", "web"))
    assert.equal(9100, store.svc.spec.ports[3].targetPort)
  end)
end)

describe("the proxy's configuration", function()
  local svc = service()
  local state = { sessions = { entry("a", header("X-Dev", "a")), entry("b", { cookie = { name = "dev", equals = "b" } }) },
                  version = 2 }
  it("is one NGINX configuration with a route per session, first match wins", function()
    local conf = assert(shared.render(svc, state, "10.0.0.99"))
    assert.match("r1 session a, port 80", conf)
    assert.match("r2 session b, port 80", conf)
    assert.match('"~%^1" @czctl_tunnel_a;', conf)
    assert.match('"~%^:1" @czctl_tunnel_b;', conf)
    assert.match("error_page 418 = $czctl_route_http;", conf)
    assert.match("keepalive_time 3s;", conf)
  end)
  it("names each session's tunnel only by id: its files come from the session's Secret", function()
    local conf = assert(shared.render(svc, state, "10.0.0.99"))
    assert.match("include /etc/czctl%-session/a/tunnel%-http%.conf;", conf)
    assert.match("location @czctl_tunnel_b {.-include /etc/czctl%-session/b/tunnel%-location%.conf;", conf)
    assert.is_nil(conf:find("proxy_pass http[s]?://[%d.]+:%d+;"), "no tunnel address in the configuration")
  end)
  it("mounts each session's route Secret read-only at /etc/czctl-session/<id>", function()
    local d = shared.deployment{ namespace = "default", service = "web", image = "x", ports = {
      { name = "http", listen = 8080, port = 80, protocol = "TCP" } }, secret = "czctl-proxy-web-1", version = 4,
      sessions = { "a", "b" } }
    local spec = d.spec.template.spec
    assert.same({ name = "route-b", secret = { secretName = "czctl-route-b", defaultMode = tonumber("440", 8) } },
                spec.volumes[#spec.volumes])
    local mounts = {}
    for _, m in ipairs(spec.containers[1].volumeMounts) do mounts[m.name] = m end
    assert.same({ name = "route-a", mountPath = "/etc/czctl-session/a", readOnly = true }, mounts["route-a"])
    assert.equal(101, spec.securityContext.fsGroup)
  end)
  it("is named by its content, which starts with the routes-version: a version has one Secret", function()
    local a = shared.config_secret("default", "web", assert(shared.render(svc, state, "10.0.0.99")), 2)
    local b = shared.config_secret("default", "web", assert(shared.render(svc, state, "10.0.0.99")), 2)
    assert.equal(a.metadata.name, b.metadata.name)
    assert.match("^czctl%-proxy%-web%-%x+$", a.metadata.name)
    assert.is_true(a.immutable)
    assert.equal("2", a.metadata.labels["czctl.io/routes-version"])
    assert.match("^# czctl routes%-version 2\n", a.stringData["nginx.conf"])
    local one = { sessions = { state.sessions[1] }, version = 3 }
    local c = shared.config_secret("default", "web", assert(shared.render(svc, one, "10.0.0.99")), 3)
    assert.not_equal(a.metadata.name, c.metadata.name)
    -- the same routes again (a join, then a leave): a new Secret, not the old one
    local again = shared.config_secret("default", "web", assert(shared.render(svc, state, "10.0.0.99")), 4)
    assert.not_equal(a.metadata.name, again.metadata.name)
  end)
  it("collects only configurations older than the Deployment's and unused, never a writer's newer one", function()
    -- routes-version 3 in the template, its old pod (version 2) still
    -- draining; a writer of version 4 has created its Secret and not yet
    -- patched the Deployment (three developers joining at once)
    local function secret(name, version)
      return { metadata = { name = name, labels = version and { ["czctl.io/routes-version"] = version } or nil } }
    end
    local volumes = function(name) return { { name = "config", secret = { secretName = name } } } end
    local deleted = {}
    local client = {
      get = function(_, kind)
        assert.equal("Deployment", kind)
        return { metadata = { annotations = { ["czctl.io/routes-version"] = "3" } },
                 spec = { template = { spec = { volumes = volumes("czctl-proxy-web-c3") } } } }
      end,
      list = function(_, kind)
        if kind == "Pod" then return { items = { { spec = { volumes = volumes("czctl-proxy-web-b2") } } } } end
        return { items = { secret("czctl-proxy-web-a1", "1"), secret("czctl-proxy-web-b2", "2"),
                           secret("czctl-proxy-web-c3", "3"), secret("czctl-proxy-web-d4", "4"),
                           secret("czctl-proxy-web-old"), secret("czctl-route-x", "1") } }
      end,
      delete = function(_, kind, name) assert.equal("Secret", kind); deleted[#deleted + 1] = name; return true end,
    }
    shared.collect_secrets(client, "default", "web")
    table.sort(deleted)
    assert.same({ "czctl-proxy-web-a1", "czctl-proxy-web-old" }, deleted)
  end)
  it("rolls one pod at a time and drains the old one", function()
    local d = shared.deployment{ namespace = "default", service = "web", image = "x", ports = {
      { name = "http", listen = 8080, port = 80, protocol = "TCP" } }, secret = "czctl-proxy-web-1", version = 4 }
    assert.same({ maxSurge = 1, maxUnavailable = 0 }, d.spec.strategy.rollingUpdate)
    assert.equal("4", d.spec.template.metadata.annotations["czctl.io/routes-version"])
    assert.equal(shared.PRESTOP_SECONDS, d.spec.template.spec.containers[1].lifecycle.preStop.sleep.seconds)
    assert.equal("czctl-proxy-web-1", d.spec.template.spec.volumes[1].secret.secretName)
    assert.equal("web", d.spec.selector.matchLabels["czctl.io/proxy"])
  end)
end)
