-- czctl.undo: the order steps run in, and that one failure does not stop the rest.
local undo = require "czctl.undo"

describe("undo stack", function()
  local stack, log
  before_each(function()
    stack = undo.new()
    log = {}
  end)

  it("runs steps newest first", function()
    for _, name in ipairs({ "create a", "create b", "create c" }) do
      stack:defer("undo " .. name, function() log[#log + 1] = name end)
    end
    local ran, failed = stack:run{ on_error = function() end }
    assert.same({ "create c", "create b", "create a" }, log)
    assert.equal(3, ran)
    assert.same({}, failed)
  end)

  it("reports a failing step and still runs the ones before it", function()
    local reported = {}
    stack:defer("one", function() log[#log + 1] = "one" end)
    stack:defer("two", function() error("boom", 0) end)
    stack:defer("three", function() log[#log + 1] = "three" end)
    local ran, failed = stack:run{ on_error = function(desc, err) reported[#reported + 1] = desc .. "=" .. tostring(err) end }
    assert.same({ "three", "one" }, log)
    assert.equal(2, ran)
    assert.equal(1, #failed)
    assert.equal("two", failed[1].description)
    assert.equal("boom", failed[1].error)
    assert.same({ "two=boom" }, reported)
  end)

  it("never runs a step twice", function()
    local count = 0
    stack:defer("count", function() count = count + 1 end)
    stack:run()
    stack:run()
    assert.equal(1, count)
    assert.equal(0, stack:size())
  end)

  it("runs steps deferred while it runs", function()
    stack:defer("outer", function()
      log[#log + 1] = "outer"
      stack:defer("inner", function() log[#log + 1] = "inner" end)
    end)
    stack:run()
    assert.same({ "outer", "inner" }, log)
  end)

  it("forgets everything on discard", function()
    stack:defer("x", function() log[#log + 1] = "x" end)
    stack:discard()
    assert.equal(0, stack:size())
    assert.equal(0, (stack:run()))
    assert.same({}, log)
  end)

  it("lists pending steps in the order they would run", function()
    stack:defer("a", function() end)
    stack:defer("b", function() end)
    assert.same({ "b", "a" }, stack:pending())
  end)

  it("wraps each step with on_step", function()
    stack:defer("a", function() log[#log + 1] = "a" end)
    stack:defer("b", function() error("nope", 0) end)
    local wrapped = {}
    local _, failed = stack:run{
      on_step = function(desc, fn) wrapped[#wrapped + 1] = desc; return fn() end,
      on_error = function() end,
    }
    assert.same({ "b", "a" }, wrapped)
    assert.equal(1, #failed)
  end)

  it("shields signals while it runs: the steps' calls are not interrupted, the signal is pending after", function()
    local sys = require "czctl.core.sys"
    local signal = require "czctl.signal"
    local seen = {}
    stack:defer("first deferred", function()
      seen.slept = sys.sleep(0.05)
      seen.check = pcall(signal.check)
    end)
    stack:defer("signalled", function()
      os.execute("kill -TERM " .. sys.getpid())
      seen.recorded = sys.pending_signal(true)
      seen.visible = sys.pending_signal()
    end)
    local depth_before = sys.shield_signals()
    local ran, failed = stack:run{ on_error = function() end }
    local after = sys.pending_signal()
    sys.clear_signal()
    assert.equal(2, ran)
    assert.same({}, failed)
    assert.equal("SIGTERM", seen.recorded)
    assert.is_nil(seen.visible)
    assert.is_true(seen.slept)
    assert.is_true(seen.check)
    assert.equal("SIGTERM", after)
    assert.equal(depth_before, sys.shield_signals())
  end)

  it("lowers the shield again when a reporter raises", function()
    local sys = require "czctl.core.sys"
    local depth_before = sys.shield_signals()
    stack:defer("bad", function() error("step", 0) end)
    assert.error_matches(function() stack:run{ on_error = function() error("reporter broke", 0) end } end,
                         "reporter broke")
    assert.equal(depth_before, sys.shield_signals())
  end)

  it("skips an only_if_clean step after a failure and runs it otherwise", function()
    stack:defer("remove the record", function() log[#log + 1] = "record" end, { only_if_clean = true })
    stack:defer("delete object", function() error("gone wrong", 0) end)
    stack:defer("stop process", function() log[#log + 1] = "stop" end)
    local ran, failed, skipped = stack:run{ on_error = function() end }
    assert.same({ "stop" }, log)
    assert.equal(1, ran)
    assert.equal(1, #failed)
    assert.same({ "remove the record" }, skipped)
    stack:defer("remove the record", function() log[#log + 1] = "record" end, { only_if_clean = true })
    ran, failed, skipped = stack:run()
    assert.same({ "stop", "record" }, log)
    assert.equal(1, ran)
    assert.same({}, skipped)
  end)

  it("keeps a remedy for the runner to print", function()
    assert.is_nil(stack:remedy())
    stack:set_remedy("czctl session close abc -n default")
    assert.equal("czctl session close abc -n default", stack:remedy())
    assert.error_matches(function() stack:set_remedy(42) end, "must be a string")
  end)

  it("rejects a step without a function", function()
    assert.error_matches(function() stack:defer("x", "not a function") end, "must be a function")
    assert.error_matches(function() stack:defer(nil, function() end) end, "description must be a string")
    assert.error_matches(function() stack:defer("x", function() end, "clean") end, "opts must be a table")
  end)
end)
