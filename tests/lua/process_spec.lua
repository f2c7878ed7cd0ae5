-- czctl.process: the process object over czctl.core.proc (read, wait with a
-- timeout that kills and reports 124, kill, run, detach).
local process = require "czctl.process"
local sys = require "czctl.core.sys"

describe("process.spawn", function()
  it("reads lines from stdout and stderr and reports the exit code", function()
    local p <close> = assert(process.spawn({ "sh", "-c", "echo one; echo two; echo oops >&2; exit 3" }))
    assert.truthy(p.pid > 0)
    assert.equal("one", p:read_line(5))
    assert.equal("two", p:read_line(5))
    assert.equal("oops", p:read_line(5, "stderr"))
    local line, why = p:read_line(5)
    assert.is_nil(line)
    assert.equal("eof", why)
    assert.equal(3, p:wait(5))
    assert.equal(3, p:wait(5), "wait after exit returns the same code")
  end)

  it("times out a read without killing the process", function()
    local p <close> = assert(process.spawn({ "sleep", "5" }))
    local line, why = p:read_line(0.05)
    assert.is_nil(line)
    assert.equal("timeout", why)
    assert.truthy(process.alive(p.pid))
  end)

  it("kills a process still running when wait times out and returns 124", function()
    local p <close> = assert(process.spawn({ "sleep", "30" }))
    local started = sys.now()
    assert.equal(124, p:wait(0.1))
    assert.truthy(p.timed_out)
    assert.truthy(sys.now() - started < 5)
    assert.falsy(process.alive(p.pid))
  end)

  it("escalates to KILL when TERM is ignored", function()
    local p <close> = assert(process.spawn({ "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done" }))
    assert.equal("ready", p:read_line(5))
    assert.equal(124, p:wait(0.05, 0.2))
    assert.falsy(process.alive(p.pid))
  end)

  it("reports death by signal as 128+N", function()
    local p <close> = assert(process.spawn({ "sleep", "30" }))
    p:kill("TERM")
    assert.equal(143, p:wait(5))
  end)

  it("writes to stdin", function()
    local p <close> = assert(process.spawn({ "cat" }, { stdin = "pipe" }))
    p:write("hello\n")
    p:close_stdin()
    assert.equal("hello", p:read_line(5))
    assert.equal(0, p:wait(5))
  end)

  it("with group, leads its own process group and kill() reaches the whole group", function()
    local p <close> = assert(process.spawn({ "sh", "-c", "sleep 30 & echo $!; wait" }, { group = true }))
    local grandchild = assert(math.tointeger(tonumber(p:read_line(5))))
    local ps = assert(process.run({ "ps", "-o", "pgid=", "-p", tostring(grandchild) }))
    assert.equal(p.pid, tonumber(ps.stdout), "the child's children are in its group")
    p:kill("TERM")
    assert.equal(143, p:wait(5))
    local deadline = sys.now() + 5
    while process.alive(grandchild) and sys.now() < deadline do sys.sleep(0.02) end
    assert.falsy(process.alive(grandchild), "the grandchild got the signal too")
  end)

  it("with parent_death_signal, the child is signalled when its parent is SIGKILLed", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
local process = require "czctl.process"
local p = assert(process.spawn({ "sleep", "30" }, { parent_death_signal = "TERM", stdout = "null" }))
io.stdout:write(p.pid, "\n"); io.stdout:flush()
p:wait()
]])
    f:close()
    local parent <close> = assert(process.spawn({ sys.exe(), "run", script }))
    local child = assert(math.tointeger(tonumber(parent:read_line(5))))
    assert.truthy(process.alive(child))
    parent:kill("KILL")
    assert.equal(137, parent:wait(5))
    local deadline = sys.now() + 5
    while process.alive(child) and sys.now() < deadline do sys.sleep(0.02) end
    assert.falsy(process.alive(child), "the orphan got SIGTERM")
    os.remove(script)
  end)

  it("returns nil and a message naming the command when it does not exist", function()
    local p, err = process.spawn({ "/nonexistent/czctl-test-command" })
    assert.is_nil(p)
    assert.match("/nonexistent/czctl%-test%-command", err)
  end)

  it("rejects an empty argv", function()
    assert.error_matches(function() process.spawn({}) end, "argv")
  end)
end)

describe("process.run", function()
  it("captures stdout, stderr and the exit code", function()
    local r = assert(process.run({ "sh", "-c", "printf 'a\\nb\\n'; echo err >&2; exit 2" }))
    assert.equal("a\nb\n", r.stdout)
    assert.equal("err\n", r.stderr)
    assert.equal(2, r.code)
    assert.falsy(r.timed_out)
  end)

  it("feeds stdin", function()
    local r = assert(process.run({ "tr", "a-z", "A-Z" }, { stdin = "shout\n" }))
    assert.equal("SHOUT\n", r.stdout)
  end)

  it("stops a command that runs past its timeout", function()
    local r = assert(process.run({ "sleep", "30" }, { timeout = 0.1 }))
    assert.equal(124, r.code)
    assert.truthy(r.timed_out)
  end)
end)

describe("process.detach", function()
  it("starts a helper in its own session with its output in a log file", function()
    local log = os.tmpname()
    local pid = assert(process.detach({ "sh", "-c", "echo detached; sleep 30" }, { log = log }))
    assert.truthy(process.alive(pid))
    local deadline = sys.now() + 5
    local text = ""
    while sys.now() < deadline do
      local f = io.open(log)
      text = f and f:read("a") or ""
      if f then f:close() end
      if text:find("detached") then break end
      sys.sleep(0.02)
    end
    assert.match("detached", text)
    local function sid(of)
      local ps = assert(process.run({ "ps", "-o", "sid=", "-p", tostring(of) }))
      return assert(tonumber(ps.stdout))
    end
    assert.not_equal(sid(sys.getpid()), sid(pid), "the helper is in another session")
    process.kill(pid, "KILL")
    deadline = sys.now() + 5
    while process.alive(pid) and sys.now() < deadline do sys.sleep(0.02) end
    assert.falsy(process.alive(pid))
    os.remove(log)
  end)
end)
