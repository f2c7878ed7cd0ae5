-- czctl.util: names, typo distance, quoting and stable JSON.
local util = require "czctl.util"

describe("util.levenshtein", function()
  for _, c in ipairs({
    { "", "", 0 }, { "abc", "", 3 }, { "local-port", "local-port", 0 },
    { "locl-port", "local-port", 1 }, { "lcoal", "local", 1 }, { "kitten", "sitting", 3 },
  }) do
    it(string.format("counts %d edits between %q and %q", c[3], c[1], c[2]), function()
      assert.equal(c[3], util.levenshtein(c[1], c[2]))
    end)
  end
end)

describe("util.closest", function()
  local names = { "--namespace", "--local-port", "--remote-port", "--all" }
  it("suggests a close name", function() assert.equal("--local-port", util.closest("--locl-port", names)) end)
  it("suggests a unique completion of a prefix", function() assert.equal("--namespace", util.closest("--names", names)) end)
  it("suggests nothing when nothing is close", function() assert.is_nil(util.closest("--frobnicate", names)) end)
end)

describe("util.kebab and util.camel", function()
  for _, c in ipairs({ { "localPort", "local-port", "localPort" }, { "local-port", "local-port", "localPort" },
                       { "tunnel_host", "tunnel-host", "tunnelHost" }, { "all", "all", "all" } }) do
    it("converts " .. c[1], function()
      assert.equal(c[2], util.kebab(c[1]))
      assert.equal(c[3], util.camel(c[1]))
    end)
  end
end)

describe("util.shell_quote", function()
  it("leaves safe words alone", function() assert.equal("X-C6O-INTERCEPT:yes", util.shell_quote("X-C6O-INTERCEPT:yes")) end)
  it("quotes spaces and quotes", function() assert.equal("'it'\\''s here'", util.shell_quote("it's here")) end)
  it("joins an argv", function() assert.equal("curl -H 'a: b' ''", util.shell_join({ "curl", "-H", "a: b", "" })) end)
end)

describe("util.json_encode", function()
  it("sorts object keys", function()
    assert.equal('{"a":1,"b":{"c":true,"d":null}}', util.json_encode({ b = { d = require("cjson").null, c = true }, a = 1 }))
  end)
  it("encodes arrays, and empty tables as objects unless marked", function()
    assert.equal('[1,"x",[]]', util.json_encode({ 1, "x", setmetatable({}, util.array_mt) }))
    assert.equal("{}", util.json_encode({}))
  end)
  it("escapes strings", function()
    assert.equal('"a\\"b\\\\c\\nd\\u0001"', util.json_encode('a"b\\c\nd\1'))
  end)
  it("keeps integers integral and floats exact", function()
    assert.equal("[8080,0.5,3]", util.json_encode({ 8080, 0.5, 3.0 }))
  end)
  it("indents when asked", function()
    assert.equal('{\n  "a": [\n    1\n  ]\n}', util.json_encode({ a = { 1 } }, { indent = true }))
  end)
  it("round-trips through cjson", function()
    local cjson = require "cjson"
    local v = { name = "web", ports = { { port = 80, name = "http" } }, labels = { ["app.kubernetes.io/name"] = "x" } }
    assert.same(v, cjson.decode(util.json_encode(v)))
  end)
  it("refuses values JSON cannot hold", function()
    assert.error_matches(function() util.json_encode({ f = print }) end, "cannot encode a function")
    assert.error_matches(function() util.json_encode(0 / 0) end, "cannot encode")
  end)
end)

describe("util paths and durations", function()
  for _, c in ipairs({ { "/a/b/c.lua", "/a/b", "c.lua" }, { "c.lua", ".", "c.lua" }, { "/c.lua", "/", "c.lua" } }) do
    it("splits " .. c[1], function()
      assert.equal(c[2], util.dirname(c[1]))
      assert.equal(c[3], util.basename(c[1]))
    end)
  end
  for _, c in ipairs({ { 0.123, "0.12s" }, { 12.34, "12.3s" }, { 125, "2m05s" } }) do
    it("formats " .. c[1] .. " seconds as " .. c[2], function() assert.equal(c[2], util.format_duration(c[1])) end)
  end
  it("copies tables deeply", function()
    local t = { a = { b = { 1 } } }
    local c = util.deep_copy(t)
    assert.same(t, c)
    c.a.b[1] = 2
    assert.equal(1, t.a.b[1])
  end)
end)
