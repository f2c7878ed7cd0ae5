-- Specification of czctl.intercept's pure parts: choosing the port, telling
-- what cannot be intercepted or who manages a Service, the proxy's ports.
-- The Service's annotations and patches are czctl.session.shared's
-- (tests/e2e/shared_spec.lua). The example request shown to users is
-- proxy.example_request (tests/proxy). The cluster side is in
-- tests/e2e/test_*.sh.
local intercept = require "czctl.intercept"

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

describe("proxy ports keep the Service port's protocol", function()
  local svc = service({ { name = "http", port = 80, protocol = "TCP" }, { name = "dns", port = 53, protocol = "UDP" },
                        { name = "plain", port = 81 } })
  local ports = intercept.proxy_ports(svc, 1, "10.0.0.99")
  it("carries TCP, UDP, and TCP when the Service leaves it out", function()
    assert.same({ "TCP", "UDP", "TCP" }, { ports[1].protocol, ports[2].protocol, ports[3].protocol })
  end)
  it("declares the proxy container's ports with the same protocol", function()
    local d = intercept.deployment{ namespace = "default", name = "p", labels = {}, selector = "s", image = "x",
                                    ports = ports, config = { name = "config", emptyDir = {} } }
    local cp = d.spec.template.spec.containers[1].ports
    assert.same({ "TCP", "UDP", "TCP" }, { cp[1].protocol, cp[2].protocol, cp[3].protocol })
  end)
end)
