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

  it("rejects a step without a function", function()
    assert.error_matches(function() stack:defer("x", "not a function") end, "must be a function")
    assert.error_matches(function() stack:defer(nil, function() end) end, "description must be a string")
  end)
end)
