-- Specification of czctl.intercept's pure parts: choosing the port, telling
-- what cannot be intercepted or who manages a Service, the guarded patches
-- (intercept then restore gives back exactly the original Service). The
-- example request shown to users is proxy.example_request (tests/proxy).
-- The cluster side is in tests/e2e/test_*.sh.
local intercept = require "czctl.intercept"
local kube = require "czctl.kube"
local cjson = require "cjson"

-- RFC 7386 merge patch, as the API server applies application/merge-patch+json.
local function merge(target, patch)
  if type(patch) ~= "table" or patch[1] ~= nil then return patch end
  if type(target) ~= "table" or target[1] ~= nil then target = {} end
  for k, v in pairs(patch) do
    if v == cjson.null then target[k] = nil else target[k] = merge(target[k], v) end
  end
  return target
end

-- What the API server stores: the patch travels as JSON (kube.encode).
local function apply(obj, patch)
  local wire = kube.decode(kube.encode(patch))
  wire.metadata.resourceVersion = nil -- the precondition, checked by the server
  local out = merge(kube.decode(kube.encode(obj)), wire)
  out.metadata.resourceVersion = tostring(tonumber(obj.metadata.resourceVersion) + 1)
  return out
end

local function service(ports, extra)
  local svc = {
    metadata = { name = "web", namespace = "default", resourceVersion = "7",
                 annotations = { keep = "me" }, labels = { app = "web" } },
    spec = { selector = { app = "web", tier = "front" }, ports = ports, clusterIP = "10.0.0.1",
             type = "ClusterIP" },
  }
  for k, v in pairs(extra or {}) do svc.spec[k] = v end
  return svc
end

local two_ports = {
  { name = "http", port = 80, targetPort = "http", protocol = "TCP" },
  { name = "admin", port = 9090, targetPort = 9090, protocol = "TCP", nodePort = 31000 },
}

describe("choose_port", function()
  it("takes the only port when -r is not given", function()
    assert.equal(1, intercept.choose_port(service({ { port = 80, targetPort = 8080 } })))
  end)
  local cases = {
    { "by number", "9090", 2 }, { "by name", "http", 1 }, { "by number as a number", 80, 1 },
  }
  for _, c in ipairs(cases) do
    it("finds a port " .. c[1], function()
      assert.equal(c[3], intercept.choose_port(service(two_ports), c[2]))
    end)
  end
  it("lists the ports by number and name when there are several and -r is missing", function()
    local i, err = intercept.choose_port(service(two_ports))
    assert.is_nil(i)
    assert.equal('Service "web" has 2 ports: pick one with -r (80 (http), 9090 (admin))', err)
  end)
  it("names the ports when -r matches none", function()
    local _, err = intercept.choose_port(service(two_ports), "81")
    assert.equal('Service "web" has no port 81 (its ports: 80 (http), 9090 (admin))', err)
  end)
  it("refuses a UDP port", function()
    local _, err = intercept.choose_port(service({ { name = "dns", port = 53, protocol = "UDP" } }), "dns")
    assert.truthy(err:find("only TCP", 1, true))
  end)
end)

describe("not_interceptable", function()
  it("accepts a Service with a selector", function()
    assert.is_nil(intercept.not_interceptable(service(two_ports)))
  end)
  it("refuses a Service without a selector", function()
    local svc = service(two_ports); svc.spec.selector = nil
    assert.truthy(intercept.not_interceptable(svc):find("has no selector", 1, true))
  end)
  it("refuses an ExternalName Service", function()
    local svc = service(two_ports, { type = "ExternalName" })
    assert.truthy(intercept.not_interceptable(svc):find("ExternalName", 1, true))
  end)
end)

describe("managed_by", function()
  local cases = {
    { "Helm", { labels = { ["app.kubernetes.io/managed-by"] = "Helm" } } },
    { "Helm", { annotations = { ["meta.helm.sh/release-name"] = "web" } } },
    { "Argo CD", { annotations = { ["argocd.argoproj.io/tracking-id"] = "app:/Service:default/web" } } },
    { "Argo CD", { labels = { ["argocd.argoproj.io/instance"] = "app" } } },
    { "Flux", { labels = { ["kustomize.toolkit.fluxcd.io/name"] = "apps" } } },
    { "Flux", { labels = { ["helm.toolkit.fluxcd.io/name"] = "web" } } },
  }
  for _, c in ipairs(cases) do
    local what = next(c[2].labels or {}) or next(c[2].annotations)
    it("says " .. c[1] .. " for " .. what, function()
      local svc = service(two_ports)
      svc.metadata.labels, svc.metadata.annotations = c[2].labels or {}, c[2].annotations or {}
      assert.equal(c[1], intercept.managed_by(svc))
    end)
  end
  it("says nothing for a plain Service", function()
    assert.is_nil(intercept.managed_by(service(two_ports)))
  end)
end)

describe("intercept_patch and restore_patch", function()
  local original = service(two_ports)
  local ports = intercept.proxy_ports(original, 1, "10.0.0.99")
  local patch = intercept.intercept_patch(original, "abc123", ports, { header = "X-A:b", port = 80 })
  local patched = apply(original, patch)

  it("is guarded by the resourceVersion it was computed from", function()
    assert.equal("7", patch.metadata.resourceVersion)
  end)
  it("selects only the proxy (old selector keys are removed)", function()
    assert.same({ [intercept.PROXY_LABEL] = "abc123" }, patched.spec.selector)
  end)
  it("points every port at the proxy, keeping the other fields", function()
    assert.equal(8080, patched.spec.ports[1].targetPort)
    assert.equal(8081, patched.spec.ports[2].targetPort)
    assert.equal(31000, patched.spec.ports[2].nodePort)
    assert.equal("admin", patched.spec.ports[2].name)
  end)
  it("routes only the chosen port through the rule; the others pass through to the copy", function()
    assert.same({ true, false }, { ports[1].intercept, ports[2].intercept })
    assert.equal("10.0.0.99:9090", ports[2].original)
  end)
  it("saves the original selector, ports and session in the annotation", function()
    local record = intercept.record(patched)
    assert.equal("abc123", record.session)
    assert.same(original.spec.selector, record.selector)
    assert.equal("http", record.ports[1].targetPort)
    assert.equal("me", patched.metadata.annotations.keep)
  end)
  it("restores the spec and annotations exactly (named targetPorts stay names)", function()
    local restored = apply(patched, intercept.restore_patch(patched, intercept.record(patched)))
    local want = kube.decode(kube.encode(original))
    assert.same(want.spec, restored.spec)
    assert.same(want.metadata.annotations, restored.metadata.annotations)
  end)
  it("leaves no annotation behind when the Service had none before", function()
    -- (the API server then drops the emptied map; the e2e tests check that)
    local bare = service(two_ports); bare.metadata.annotations = nil
    local p1 = intercept.intercept_patch(bare, "abc123", ports, { header = "X-A:b", port = 80 })
    local on = apply(bare, p1)
    local restored = apply(on, intercept.restore_patch(on, intercept.record(on)))
    assert.is_nil(next(restored.metadata.annotations or {}))
  end)
  it("restores from a Service changed meanwhile by someone else (their selector key goes too)", function()
    local changed = kube.decode(kube.encode(patched))
    changed.spec.selector.extra = "x"
    local restored = apply(changed, intercept.restore_patch(changed, intercept.record(changed)))
    assert.same(original.spec.selector, restored.spec.selector)
  end)
end)

describe("names", function()
  it("derives every object name from the session id", function()
    assert.same({ deployment = "czctl-abc", configmap = "czctl-abc", service = "czctl-abc-original",
                  secret = "czctl-abc" },
                intercept.names("abc"))
  end)
end)

describe("proxy ports keep the Service port's protocol", function()
  local svc = service({ { name = "http", port = 80, protocol = "TCP" }, { name = "dns", port = 53, protocol = "UDP" },
                        { name = "plain", port = 81 } })
  local ports = intercept.proxy_ports(svc, 1, "10.0.0.99")
  it("carries TCP, UDP, and TCP when the Service leaves it out", function()
    assert.same({ "TCP", "UDP", "TCP" }, { ports[1].protocol, ports[2].protocol, ports[3].protocol })
  end)
  it("declares the proxy container's ports with the same protocol", function()
    local d = intercept.deployment{ namespace = "default", id = "abc", image = "x", ports = ports, service = "s" }
    local cp = d.spec.template.spec.containers[1].ports
    assert.same({ "TCP", "UDP", "TCP" }, { cp[1].protocol, cp[2].protocol, cp[3].protocol })
  end)
end)

describe("endpoints_routed: the Service reaches only the proxy", function()
  local function addr(name, ip) return { ip = ip or "10.1.0.1", targetRef = { kind = "Pod", name = name } } end
  local proxy_pod = addr("czctl-abc-7d9f8c6b5-x2k4q")
  local cases = {
    { "no Endpoints yet", nil, false },
    { "no subsets", { subsets = {} }, false },
    { "only the proxy pod, ready", { subsets = { { addresses = { proxy_pod } } } }, true },
    { "the proxy and an original pod", { subsets = { { addresses = { proxy_pod, addr("demo-5c7d-abcde") } } } }, false },
    { "the original pod in another subset", { subsets = { { addresses = { proxy_pod } },
                                                          { addresses = { addr("demo-5c7d-abcde") } } } }, false },
    { "an original pod that is not ready", { subsets = { { addresses = { proxy_pod },
                                                           notReadyAddresses = { addr("demo-5c7d-abcde") } } } }, false },
    { "the proxy pod, not ready yet", { subsets = { { notReadyAddresses = { proxy_pod } } } }, false },
    { "an address without targetRef", { subsets = { { addresses = { proxy_pod, { ip = "10.1.0.9" } } } } }, false },
    { "a pod of another session's proxy", { subsets = { { addresses = { addr("czctl-abcd-7d9f8c6b5-x2k4q") } } } }, false },
  }
  for _, c in ipairs(cases) do
    it(c[1] .. (c[3] and ": routed" or ": not yet"), function()
      assert.equal(c[3], intercept.endpoints_routed(c[2], "abc"))
    end)
  end
end)
