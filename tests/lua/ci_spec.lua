-- `czctl service intercept ... -- CMD` (docs/ci.md): the environment CMD
-- gets from a session's facts. The command itself is tested end to end in
-- tests/e2e/test_ci.sh.
local workflow = require "czctl.intercept.workflow"

local FACTS = {
  id = "abc123defg", service = "orders", namespace = "staging", port = 8080, localPort = 3000,
  clusterIP = "10.96.0.7", rule = "X-CI-Job: 42", header = "X-CI-Job: 42", tunnel = "direct",
  tunnelUrl = "http://10.250.0.9:40001",
}

describe("the environment of -- CMD", function()
  it("has every documented variable, from the session's facts", function()
    local env = workflow.command_env(FACTS, { PATH = "/usr/bin", HOME = "/home/ci" })
    assert.same({
      PATH = "/usr/bin", HOME = "/home/ci",
      CZCTL_SESSION = "abc123defg", CZCTL_SERVICE = "orders", CZCTL_NAMESPACE = "staging",
      CZCTL_SERVICE_PORT = "8080", CZCTL_SERVICE_URL = "http://orders.staging.svc.cluster.local:8080",
      CZCTL_CLUSTER_IP = "10.96.0.7", CZCTL_RULE = "X-CI-Job: 42", CZCTL_HEADER = "X-CI-Job: 42",
      CZCTL_HEADER_NAME = "X-CI-Job", CZCTL_HEADER_VALUE = "42", CZCTL_LOCAL_PORT = "3000",
      CZCTL_TUNNEL = "direct", CZCTL_TUNNEL_URL = "http://10.250.0.9:40001",
    }, env)
  end)

  it("lists exactly the names it sets in COMMAND_ENV", function()
    local env = workflow.command_env(FACTS, {})
    local names = {}
    for name in pairs(env) do names[#names + 1] = name end
    table.sort(names)
    local documented = { table.unpack(workflow.COMMAND_ENV) }
    table.sort(documented)
    assert.same(documented, names)
  end)

  it("removes inherited CZCTL_* names it does not set (--all: no header), and keeps others", function()
    local all = {}
    for k, v in pairs(FACTS) do all[k] = v end
    all.header, all.rule = nil, "all requests"
    local env = workflow.command_env(all, { CZCTL_HEADER = "X-Outer: 1", CZCTL_HEADER_NAME = "X-Outer",
                                            CZCTL_ROOT = "/src/czctl" })
    assert.is_nil(env.CZCTL_HEADER)
    assert.is_nil(env.CZCTL_HEADER_NAME)
    assert.is_nil(env.CZCTL_HEADER_VALUE)
    assert.equal("all requests", env.CZCTL_RULE)
    assert.equal("/src/czctl", env.CZCTL_ROOT, "not one of czctl's names: left alone")
  end)

  it("splits a header at its first colon and trims the value", function()
    local f = {}
    for k, v in pairs(FACTS) do f[k] = v end
    f.header = "X-Token: a:b:c "
    local env = workflow.command_env(f, {})
    assert.equal("X-Token", env.CZCTL_HEADER_NAME)
    assert.equal("a:b:c", env.CZCTL_HEADER_VALUE)
  end)
end)
