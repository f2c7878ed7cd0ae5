-- czctl.signal: a signal sent to this process becomes a pending name, an
-- interrupt error with the right exit code, and wakes signal.wait.
local signal = require "czctl.signal"
local sys = require "czctl.core.sys"

-- Ask a background shell to send `name` to this process shortly; the test
-- then blocks in signal.wait (system() would ignore SIGINT while it runs).
local function send_soon(name)
  os.execute(string.format("(sleep 0.05; kill -%s %d) >/dev/null 2>&1 &", name, sys.getpid()))
end

describe("signal", function()
  before_each(function() signal.clear() end)
  after_each(function() signal.clear() end)

  it("check does nothing when no signal is pending", function()
    assert.is_nil(signal.pending())
    signal.check()
  end)

  it("wait returns nil when the timeout passes", function()
    assert.is_nil(signal.wait(0.05))
  end)

  for _, case in ipairs({ { "TERM", "SIGTERM", 143 }, { "INT", "SIGINT", 130 }, { "HUP", "SIGHUP", 129 } }) do
    local kill_name, name, code = case[1], case[2], case[3]
    it("turns " .. name .. " into an interrupt error with exit code " .. code, function()
      send_soon(kill_name)
      assert.equal(name, signal.wait(5))
      assert.equal(name, signal.pending(), "the signal stays pending after wait")
      local err = assert.has_error(signal.check)
      assert.truthy(signal.is_interrupt(err))
      assert.equal(name, err.signal)
      assert.equal(code, err.exit_code)
      assert.equal("interrupted (" .. name .. ")", tostring(err))
      assert.equal(name, signal.pending(), "check does not clear the signal")
      signal.clear()
      assert.is_nil(signal.pending())
    end)
  end

  it("maps signal names to exit codes", function()
    assert.equal(130, signal.exit_code("SIGINT"))
    assert.equal(143, signal.exit_code("SIGTERM"))
    assert.equal(129, signal.exit_code("SIGHUP"))
  end)

  it("tells interrupt errors from other errors", function()
    assert.truthy(signal.is_interrupt(signal.interrupt("SIGINT")))
    assert.falsy(signal.is_interrupt("interrupted"))
    assert.falsy(signal.is_interrupt({ signal = "SIGINT" }))
  end)
end)
