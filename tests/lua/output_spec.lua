-- czctl.output: what each mode prints, and where (captured through injected writers).
local output = require "czctl.output"

-- An output object whose streams and clock are captured.
local function capture(mode, opts)
  opts = opts or {}
  local cap = { out = {}, err = {} }
  local t = 0
  cap.o = output.new{
    mode = mode, tty = opts.tty or false, color = false, verbose = opts.verbose, progress = opts.progress,
    stdout = function(s) cap.out[#cap.out + 1] = s end,
    stderr = function(s) cap.err[#cap.err + 1] = s end,
    clock = function() t = t + 0.125; return t end,
  }
  function cap.stdout() return table.concat(cap.out) end
  function cap.stderr() return table.concat(cap.err) end
  return cap
end

describe("output in normal mode without a terminal", function()
  it("prints a plain line with the duration when a step ends", function()
    local c = capture("normal")
    local a, b = c.o:step("Create ConfigMap", function() return 1, 2 end)
    assert.equal(1, a)
    assert.equal(2, b)
    assert.equal("✓ Create ConfigMap (0.12s)\n", c.stderr())
    assert.equal("", c.stdout())
  end)

  it("prints no line for a failed step (the error line says it all) and lets its error through unchanged", function()
    local c = capture("normal")
    local marker = {}
    local ok, err = pcall(c.o.step, c.o, "Patch Service", function() error(marker) end)
    assert.falsy(ok)
    assert.equal(marker, err)
    assert.equal("", c.stderr())
  end)

  it("still prints the steps that succeeded before a nested step failed", function()
    local c = capture("normal")
    local ok = pcall(c.o.step, c.o, "outer", function()
      c.o:step("first", function() end)
      c.o:step("second", function() error("boom", 0) end)
    end)
    assert.falsy(ok)
    assert.equal("  ✓ first (0.12s)\n", c.stderr())
  end)

  it("indents nested steps", function()
    local c = capture("normal")
    c.o:step("outer", function() c.o:step("inner", function() end) end)
    assert.equal("  ✓ inner (0.12s)\n✓ outer (0.38s)\n", c.stderr())
  end)

  it("sends info and warnings to stderr and results to stdout", function()
    local c = capture("normal")
    c.o:info("tunnel at %s", "http://x")
    c.o:warn("Helm may revert %d change", 1)
    c.o:result({ id = "abc" }, function(r) return "session " .. r.id end)
    c.o:print("%d%% done", 100)
    assert.equal("tunnel at http://x\nwarning: Helm may revert 1 change\n", c.stderr())
    assert.equal("session abc\n100% done\n", c.stdout())
  end)

  it("prints a message with a percent sign as is when no arguments follow", function()
    local c = capture("normal")
    c.o:info("100% ready")
    assert.equal("100% ready\n", c.stderr())
  end)

  it("shows details only when verbose", function()
    local quiet, loud = capture("normal"), capture("normal", { verbose = true })
    quiet.o:detail("GET /api")
    loud.o:detail("GET /api")
    assert.equal("", quiet.stderr())
    assert.equal("GET /api\n", loud.stderr())
  end)
end)

describe("output in normal mode on a terminal", function()
  it("draws the running step and redraws it in place when done", function()
    local c = capture("normal", { tty = true })
    c.o:step("Wait for proxy", function()
      assert.equal("… Wait for proxy", c.stderr())
    end)
    assert.equal("… Wait for proxy\r\27[2K✓ Wait for proxy  0.12s\n", c.stderr())
  end)

  it("ends a failed step's live line with a cross", function()
    local c = capture("normal", { tty = true })
    local ok = pcall(c.o.step, c.o, "Resolve Service", function() error("boom", 0) end)
    assert.falsy(ok)
    assert.equal("… Resolve Service\r\27[2K✗ Resolve Service  0.12s\n", c.stderr())
  end)

  it("keeps the running step at the bottom when a message is printed", function()
    local c = capture("normal", { tty = true })
    c.o:step("Start tunnel", function() c.o:warn("slow") end)
    assert.equal("… Start tunnel\r\27[2Kwarning: slow\n… Start tunnel\r\27[2K✓ Start tunnel  0.12s\n",
                 c.stderr())
  end)
end)

describe("output in quiet mode", function()
  it("prints nothing but errors", function()
    local c = capture("quiet")
    c.o:step("x", function() end)
    c.o:info("info")
    c.o:warn("warn")
    c.o:print("text")
    c.o:result({ a = 1 })
    c.o:error("undo failed")
    assert.equal("", c.stdout())
    assert.equal("error: undo failed\n", c.stderr())
  end)
end)

describe("output in json mode", function()
  it("prints exactly one JSON document with sorted keys on stdout", function()
    local c = capture("json")
    c.o:step("x", function() end)
    c.o:info("info")
    c.o:print("text")
    c.o:result({ session = "s1", ports = { 80, 443 }, all = false }, function() return "text" end)
    assert.equal('{\n  "all": false,\n  "ports": [\n    80,\n    443\n  ],\n  "session": "s1"\n}\n', c.stdout())
    assert.equal("", c.stderr())
    local cjson = require "cjson"
    assert.equal("s1", cjson.decode(c.stdout()).session)
  end)

  it("refuses a second document", function()
    local c = capture("json")
    c.o:result({})
    assert.error_matches(function() c.o:result({}) end, "one document")
  end)

  it("still shows warnings on stderr", function()
    local c = capture("json")
    c.o:warn("careful")
    assert.equal("warning: careful\n", c.stderr())
    assert.equal("", c.stdout())
  end)
end)

describe("output.table", function()
  it("aligns columns", function()
    assert.equal("NAME                SOURCE\nhello               /x/hello.lua\nservice-intercept   built-in\n",
      output.table({ "NAME", "SOURCE" }, { { "hello", "/x/hello.lua" }, { "service-intercept", "built-in" } }))
  end)
end)

describe("output.new", function()
  it("rejects an unknown mode", function()
    assert.error_matches(function() output.new{ mode = "xml" } end, "unknown mode")
  end)
  it("prints the result as one YAML document in yaml mode", function()
    local out = {}
    local o = output.new{ mode = "yaml", tty = false, stdout = function(s) out[#out + 1] = s end, stderr = function() end }
    o:step("quiet in yaml mode", function() end)
    o:result({ kind = "Session", id = "abc", items = setmetatable({}, require("czctl.util").array_mt), port = 80,
               rule = "X-C6O-INTERCEPT: yes", flag = "true" })
    assert.equal('---\nflag: "true"\nid: abc\nitems: []\nkind: Session\nport: 80\nrule: "X-C6O-INTERCEPT: yes"\n',
                 table.concat(out))
  end)
end)

describe("NO_COLOR", function()
  local cases = { { "unset", nil, false }, { "empty", "", false }, { "set", "1", true }, { "set to 0", "0", true } }
  for _, c in ipairs(cases) do
    it("is " .. (c[3] and "honoured" or "ignored") .. " when " .. c[1], function()
      assert.equal(c[3], output.no_color(function(name) return name == "NO_COLOR" and c[2] or nil end))
    end)
  end
end)

describe("JSON-lines progress", function()
  local cjson = require "cjson"
  local function events(c)
    local list = {}
    for line in c.stderr():gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) end
    return list
  end

  for _, mode in ipairs({ "normal", "quiet", "json" }) do
    it("reports each step as started and done, one object per line, with the text's title (mode " .. mode .. ")",
       function()
      local c = capture(mode, { progress = "json", tty = true })
      c.o:step("Resolve Service default/demo", function() end)
      c.o:warn("Service %s looks managed by %s", "demo", "Helm")
      local e = events(c)
      assert.equal(3, #e)
      assert.same({ event = "step", status = "started", step = "Resolve Service default/demo" }, e[1])
      assert.same({ event = "step", status = "done", step = "Resolve Service default/demo", ms = 125 }, e[2])
      assert.same({ event = "warning", message = "Service demo looks managed by Helm" }, e[3])
      assert.falsy(c.stderr():find("\27", 1, true), "no terminal control codes")
    end)
  end

  it("reports a failed step with the first line of its error, and lets the error through", function()
    local c = capture("normal", { progress = "json" })
    local ok, err = pcall(c.o.step, c.o, "Patch Service demo", function() error("conflict\nsecond line", 0) end)
    assert.falsy(ok)
    assert.equal("conflict\nsecond line", err)
    local e = events(c)
    assert.same({ event = "step", status = "failed", step = "Patch Service demo", ms = 125, error = "conflict" },
                e[2])
  end)

  it("writes a result sent to stderr as one result object, keeping stdout free", function()
    for _, mode in ipairs({ "normal", "json" }) do
      local c = capture(mode, { progress = "json" })
      c.o:results_on_stderr()
      c.o:result({ kind = "Session", id = "abc" }, function() return "Session abc" end)
      assert.equal("", c.stdout(), mode)
      assert.same({ { event = "result", kind = "Session", id = "abc" } }, events(c), mode)
    end
    local t = capture("normal")
    t.o:results_on_stderr()
    t.o:result({ id = "abc" }, function(r) return "Session " .. r.id end)
    assert.equal("", t.stdout())
    assert.equal("Session abc\n", t.stderr(), "without JSON progress: the text, on stderr")
  end)

  it("writes events and info as objects, and as text lines without it", function()
    local c = capture("normal", { progress = "json" })
    c.o:event("command", { status = "exited", code = 7 }, "the command exited with code 7")
    c.o:info("Closing session %s", "abc")
    assert.same({ { event = "command", status = "exited", code = 7 }, { event = "info", message = "Closing session abc" } },
                events(c))
    local t = capture("normal")
    t.o:event("command", { status = "exited", code = 7 }, "the command exited with code 7")
    assert.equal("the command exited with code 7\n", t.stderr())
  end)
end)
