-- examples/recipes/hello.lua: a small user recipe showing the recipe API
-- (declared args and flags, steps, undo, results in text or JSON).
--
-- Try it without installing:   czctl run examples/recipes/hello.lua world --loud
-- Install it as `czctl hello`:  mkdir -p ~/.config/czctl/recipes &&
--                               cp examples/recipes/hello.lua ~/.config/czctl/recipes/
-- It needs no cluster; see `czctl recipe show service-intercept` for one that does.
return {
  summary = "Say hello (an example user recipe)",
  args = { { name = "name", help = "who to greet", required = true } },
  flags = {
    { name = "greeting", short = "g", type = "string", default = "hello", help = "word to use" },
    { name = "loud", type = "boolean", help = "shout" },
    { name = "times", short = "t", type = "integer", default = 1, env = "HELLO_TIMES",
      help = "how many times to greet" },
    { name = "scratchDir", type = "string", help = "write a scratch file here while working (removed on error or Ctrl-C)" },
    { name = "quiet", short = "q", type = "boolean", help = "only display errors" },
    { name = "output", short = "o", type = "string", choices = { "text", "json" }, default = "text",
      help = "output format" },
  },
  examples = {
    "czctl hello world",
    "czctl hello world -g hi --loud -t 2",
    "czctl hello world --output json",
  },
  run = function(ctx)
    if ctx.flags.times < 1 then ctx.usage_error("--times must be at least 1, not %d", ctx.flags.times) end
    local line = ctx.flags.greeting .. ", " .. ctx.args.name
    if ctx.flags.loud then line = line:upper() end

    if ctx.flags.scratchDir then
      -- Every change is followed at once by its undo: if anything later fails
      -- or the user presses Ctrl-C, the runner removes the file again.
      local path = ctx.flags.scratchDir .. "/hello.txt"
      ctx.out:step("Write " .. path, function()
        local f = assert(io.open(path, "w"))
        f:write(line, "\n")
        f:close()
        ctx.undo:defer("remove " .. path, function() assert(os.remove(path)) end)
      end)
    end

    local lines = ctx.out:step("Compose the greeting", function()
      local list = {}
      for i = 1, ctx.flags.times do list[i] = line end
      return list
    end)
    ctx.out:result({ greeting = line, times = ctx.flags.times, name = ctx.args.name },
                   function() return table.concat(lines, "\n") end)
  end,
}
