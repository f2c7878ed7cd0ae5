-- czctl.env, czctl.env.dotenv and czctl.access: the kubelet's rules and the
-- quoting, as pure functions (the end-to-end checks are tests/e2e/test_env.sh
-- and tests/e2e/test_permissions.sh).
local env = require "czctl.env"
local dotenv = require "czctl.env.dotenv"
local access = require "czctl.access"

-- control characters as \N in test names (one TAP line each)
local function show(s) return (s:gsub("[%c\128-\255]", function(ch) return "\\" .. ch:byte() end)) end

describe("env.expand: the kubelet's $(VAR) expansion", function()
  local vars = { VAR_A = "A", VAR_B = "B", EMPTY = "" }
  local function lookup(n) return vars[n] end
  for _, c in ipairs({
    { "$(VAR_A)", "A" }, { "___$(VAR_B)___", "___B___" }, { "$(VAR_A)-$(VAR_B)", "A-B" },
    { "$(EMPTY)x", "x" }, { "$(UNDEFINED)", "$(UNDEFINED)" }, { "$$(VAR_A)", "$(VAR_A)" },
    { "$$$$(VAR_A)", "$$(VAR_A)" }, { "$$$(VAR_A)", "$A" }, { "$$", "$" }, { "$", "$" }, { "x$", "x$" },
    { "$VAR_A", "$VAR_A" }, { "${VAR_A}", "${VAR_A}" }, { "$(", "$(" }, { "$(VAR_A", "$(VAR_A" },
    { "$()", "$()" }, { "$(VAR_A)$(", "A$(" }, { "($(VAR_A))", "(A)" }, { "$(VAR_A)$", "A$" },
    { "$\xc3\xa9", "$\xc3\x83\xa9" }, -- Go's string(byte): é (c3 a9) after $ comes out as $Ã then a9
  }) do
    it(string.format("expands [%s] to [%s]", show(c[1]), show(c[2])), function()
      assert.equal(c[2], (env.expand(c[1], lookup)))
    end)
  end
end)

describe("env.resource_value: ceil(quantity / divisor)", function()
  local container = { resources = { limits = { cpu = "1500m", memory = "1Gi", ["ephemeral-storage"] = "2G" },
                                    requests = { cpu = "0.25", memory = "64Mi" } } }
  for _, c in ipairs({
    { "limits.cpu", nil, "2" }, { "limits.cpu", "1m", "1500" }, { "requests.cpu", nil, "1" },
    { "requests.cpu", "1m", "250" }, { "limits.memory", nil, "1073741824" }, { "limits.memory", "1Mi", "1024" },
    { "limits.memory", "1M", "1074" }, { "requests.memory", "1k", "67109" }, { "requests.memory", "1Ki", "65536" },
    { "limits.ephemeral-storage", "1Gi", "2" },
  }) do
    it(string.format("%s with divisor %s is %s", c[1], c[2] or "1", c[3]), function()
      assert.equal(c[3], env.resource_value(container, { resource = c[1], divisor = c[2] }))
    end)
  end
  it("uses the node's allocatable for a missing limit", function()
    assert.equal("4000", env.resource_value({}, { resource = "limits.cpu", divisor = "1m" }, { cpu = "4" }))
  end)
  it("gives 0 for a missing request", function()
    assert.equal("0", env.resource_value({}, { resource = "requests.memory" }))
  end)
  it("refuses an unknown resource", function()
    assert.is_nil(env.resource_value(container, { resource = "limits.gpu" }))
  end)
end)

describe("env.field_value", function()
  local pod = { metadata = { name = "p", namespace = "ns", uid = "u", labels = { app = "web" } },
                spec = { nodeName = "n1", serviceAccountName = "sa" },
                status = { podIP = "10.0.0.1", podIPs = { { ip = "10.0.0.1" }, { ip = "fd00::1" } }, hostIP = "192.0.2.1" } }
  for _, c in ipairs({ { "metadata.name", "p" }, { "metadata.labels['app']", "web" }, { "metadata.labels['no']", "" },
                       { "metadata.annotations['x']", "" }, { "status.podIPs", "10.0.0.1,fd00::1" },
                       { "status.hostIPs", "192.0.2.1" }, { "spec.serviceAccountName", "sa" } }) do
    it(string.format("%s is %q", c[1], c[2]), function() assert.equal(c[2], env.field_value(pod, c[1])) end)
  end
  it("refuses a field the kubelet does not resolve", function() assert.is_nil(env.field_value(pod, "spec.hostname")) end)
end)

describe("dotenv.quote", function()
  for _, c in ipairs({
    { "plain", "'plain'", false }, { "", "''", false }, { "a\nb", "'a\nb'", false }, { "$HOME `x`", "'$HOME `x`'", false },
    { "C:\\dir", "'C:\\dir'", false }, { "it's", "\"it's\"", false }, { "a\\\\b", "\"a\\\\\\\\b\"", false },
    { "it's $HOME", "\"it's \\$HOME\"", true }, { "it's $ 5", "\"it's $ 5\"", false },
    { "it's `x`", "\"it's \\`x\\`\"", true }, { "end\\", "\"end\\\\\"", true }, { "a\rb", "'a\rb'", true },
  }) do
    it(string.format("quotes [%s] as %s", show(c[1]), show(c[2])), function()
      local quoted, conflict = dotenv.quote(c[1])
      assert.equal(c[2], quoted)
      assert.equal(c[3], conflict)
    end)
  end
  it("leaves out names a shell cannot assign and values with NUL", function()
    local text, skipped = dotenv.encode({ { name = "a.b", value = "x" }, { name = "N", value = "a\0b" },
                                          { name = "OK", value = "y" } })
    assert.equal("OK='y'\n", text)
    assert.same({ "a.b", "N" }, skipped)
  end)
end)

describe("access.rule_allows: RBAC matching", function()
  local q = { verb = "patch", group = "", resource = "services" }
  for _, c in ipairs({
    { { verbs = { "patch" }, apiGroups = { "" }, resources = { "services" } }, true },
    { { verbs = { "*" }, apiGroups = { "*" }, resources = { "*" } }, true },
    { { verbs = { "get" }, apiGroups = { "" }, resources = { "services" } }, false },
    { { verbs = { "patch" }, apiGroups = { "apps" }, resources = { "services" } }, false },
    { { verbs = { "patch" }, apiGroups = { "" }, resources = { "services/status" } }, false },
    { { verbs = { "patch" }, apiGroups = { "" }, resources = { "services" }, resourceNames = { "web" } }, false },
  }) do
    it(string.format("rule %d %s patch services", _, c[2] and "allows" or "does not allow"), function()
      assert.equal(c[2], access.rule_allows(c[1], q))
    end)
  end
  it("lets resourceNames allow the named object", function()
    assert.is_true(access.rule_allows({ verbs = { "get" }, apiGroups = { "" }, resources = { "services" },
                                        resourceNames = { "web" } }, { verb = "get", group = "", resource = "services",
                                                                       name = "web" }))
  end)
  it("merges the needs of several commands without repeats", function()
    local n1, n2 = #access.needs("service intercept"), #access.needs("service env")
    local both = access.needs("service intercept", "service env")
    assert.equal(n1 + 2, #both) -- env adds get configmaps and get secrets
    assert.is_true(n2 == 4)
  end)
end)
