-- czctl.cli: flag parsing from declarations, generated help, recipe lookup
-- precedence, and the one-line errors and exit codes of cli.main.
local cli = require "czctl.cli"
local sys = require "czctl.core.sys"

-- The intercept flags from the reference page, plus one of each type.
local FLAGS = {
  { name = "namespace", short = "n", type = "string", default = "default", help = "namespace" },
  { name = "remotePort", short = "r", type = "string", help = "remote port" },
  { name = "localPort", short = "l", type = "number", help = "local port" },
  { name = "header", short = "x", type = "list", help = "header name:value" },
  { name = "kubeconfig", short = "k", type = "string", env = "KUBECONFIG", help = "kubeconfig file" },
  { name = "all", short = "a", type = "boolean", help = "all traffic" },
  { name = "quiet", short = "q", type = "boolean", help = "only errors" },
  { name = "wait", short = "w", type = "boolean", help = "wait" },
  { name = "output", short = "o", type = "string", choices = { "text", "json" }, default = "text" },
  { name = "replicas", type = "integer", default = 1 },
}
local ARGS = { { name = "service", help = "the Service", required = true } }

local function recipe(extra)
  local r = { summary = "Intercept a Service", flags = FLAGS, args = ARGS, run = function() end }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

-- Parse through the same path recipes use (declarations normalised first).
local function parse(argv, env)
  local spec_flags = {}
  for _, d in ipairs(FLAGS) do spec_flags[#spec_flags + 1] = d end
  for _, g in ipairs(cli.GLOBAL_FLAGS) do spec_flags[#spec_flags + 1] = g end
  return cli.parse(spec_flags, ARGS, argv, {
    command = "service intercept",
    getenv = function(name) return (env or {})[name] end,
  })
end

describe("flag parsing", function()
  local cases = {
    { "a long flag with a separate value", { "web", "--namespace", "prod" }, "namespace", "prod" },
    { "a long flag with =", { "web", "--namespace=prod" }, "namespace", "prod" },
    { "a short flag with a separate value", { "web", "-n", "prod" }, "namespace", "prod" },
    { "a short flag with the value attached", { "web", "-nprod" }, "namespace", "prod" },
    { "a short flag with =", { "web", "-n=prod" }, "namespace", "prod" },
    { "camelCase as declared", { "web", "--localPort", "3000" }, "localPort", 3000 },
    { "kebab-case of a camelCase name", { "web", "--local-port", "3000" }, "localPort", 3000 },
    { "kebab-case with =", { "web", "--local-port=3000" }, "localPort", 3000 },
    { "a number with a fraction", { "web", "-l", "2.5" }, "localPort", 2.5 },
    { "a string flag with a numeric value", { "web", "-r", "8080" }, "remotePort", "8080" },
    { "a value that starts with a dash", { "web", "-r", "-1" }, "remotePort", "-1" },
    { "a boolean flag", { "web", "--all" }, "all", true },
    { "a boolean short flag", { "web", "-a" }, "all", true },
    { "bundled boolean shorts", { "web", "-aq" }, "quiet", true },
    { "bundled booleans ending in a valued short", { "web", "-aqn", "prod" }, "namespace", "prod" },
    { "bundled booleans with an attached value", { "web", "-aqnprod" }, "namespace", "prod" },
    { "--no- negates a boolean", { "web", "--all", "--no-all" }, "all", false },
    { "--flag=false", { "web", "--all=false" }, "all", false },
    { "--flag=true", { "web", "--all=true" }, "all", true },
    { "a boolean defaults to false", { "web" }, "all", false },
    { "the declared default", { "web" }, "namespace", "default" },
    { "the last of a repeated flag wins", { "web", "-n", "a", "-n", "b" }, "namespace", "b" },
    { "a repeatable list", { "web", "-x", "a:1", "--header", "b:2", "--header=c:3" }, "header", { "a:1", "b:2", "c:3" } },
    { "an empty list when unset", { "web" }, "header", {} },
    { "an integer", { "web", "--replicas", "3" }, "replicas", 3 },
    { "a choice", { "web", "-o", "json" }, "output", "json" },
    { "flags before the argument", { "-n", "prod", "web" }, "namespace", "prod" },
  }
  for _, c in ipairs(cases) do
    local name, argv, flag, want = c[1], c[2], c[3], c[4]
    it("accepts " .. name, function()
      local parsed = parse(argv)
      assert.same(want, parsed.flags[flag])
      assert.equal("web", parsed.args.service)
      assert.equal("web", parsed.args[1])
    end)
  end

  it("treats everything after -- as arguments", function()
    local parsed = parse({ "--", "-web" })
    assert.equal("-web", parsed.args.service)
    assert.equal(false, parsed.flags.all)
    local ok, err = pcall(parse, { "web", "--", "--all" })
    assert.falsy(ok)
    assert.equal('unexpected argument "--all"', err.message)
  end)

  it("gives a recipe that declares a command the words after -- as that command, flags and all", function()
    local spec_flags = {}
    for _, d in ipairs(FLAGS) do spec_flags[#spec_flags + 1] = d end
    local function with_command(argv)
      return cli.parse(spec_flags, ARGS, argv, { command = "service intercept", trailing = true,
                                                 getenv = function() return nil end })
    end
    local parsed = with_command({ "web", "-a", "--", "make", "test", "--all", "-n", "x", "--" })
    assert.same({ "make", "test", "--all", "-n", "x", "--" }, parsed.command)
    assert.equal("web", parsed.args.service)
    assert.equal("default", parsed.flags.namespace, "flags after -- are the command's")
    assert.equal(true, parsed.flags.all)
    assert.is_nil(with_command({ "web" }).command, "no -- : no command")
    assert.is_nil(parse({ "web" }).command)
    local ok, err = pcall(with_command, { "web", "--" })
    assert.falsy(ok)
    assert.equal("-- must be followed by a command to run", err.message)
    ok, err = pcall(with_command, { "--", "make" })
    assert.falsy(ok)
    assert.equal("missing argument SERVICE", err.message, "arguments come before --")
  end)

  it("takes a default from the declared environment variable", function()
    local parsed = parse({ "web" }, { KUBECONFIG = "/tmp/kc" })
    assert.equal("/tmp/kc", parsed.flags.kubeconfig)
    assert.equal("env", parsed.sources.kubeconfig)
    parsed = parse({ "web", "-k", "/other" }, { KUBECONFIG = "/tmp/kc" })
    assert.equal("/other", parsed.flags.kubeconfig)
    assert.equal("flag", parsed.sources.kubeconfig)
  end)

  it("parses the global flags everywhere", function()
    local parsed = parse({ "--debug", "web", "--verbose" })
    assert.truthy(parsed.flags.debug)
    assert.truthy(parsed.flags.verbose)
  end)

  local errors = {
    { "an unknown flag, with the closest suggestion", { "web", "--locl-port", "3" },
      'unknown flag "--locl-port" for "service intercept"; did you mean "--local-port"?' },
    { "an unknown camelCase flag, suggesting camelCase", { "web", "--localPrt", "3" },
      'unknown flag "--localPrt" for "service intercept"; did you mean "--localPort"?' },
    { "a transposition typo", { "web", "--nmaespace", "x" },
      'unknown flag "--nmaespace" for "service intercept"; did you mean "--namespace"?' },
    { "an unknown flag with nothing close, without a suggestion", { "web", "--frobnicate" },
      'unknown flag "--frobnicate" for "service intercept"$' },
    { "an unknown short flag", { "web", "-z" }, 'unknown flag "-z" for "service intercept"' },
    { "an unknown short in a bundle", { "web", "-az" }, 'unknown flag "-z"' },
    { "a number flag given text", { "web", "--localPort", "abc" },
      'invalid value "abc" for flag --localPort: expected a number' },
    { "a number flag given text via kebab", { "web", "--local-port=abc" },
      'invalid value "abc" for flag --local-port: expected a number' },
    { "an integer flag given a fraction", { "web", "--replicas", "1.5" },
      'invalid value "1.5" for flag --replicas: expected an integer' },
    { "a bad boolean value", { "web", "--all=maybe" }, 'invalid value "maybe" for flag --all: expected true or false' },
    { "a value outside the choices", { "web", "-o", "jsno" },
      'invalid value "jsno" for flag -o: expected one of text, json; did you mean "json"?' },
    { "a missing value", { "web", "--namespace" }, "flag --namespace needs a value" },
    { "a missing value for a short flag", { "web", "-n" }, "flag -n needs a value" },
    { "a missing required argument", {}, "missing argument SERVICE" },
    { "an extra argument", { "web", "db" }, 'unexpected argument "db"' },
  }
  for _, c in ipairs(errors) do
    local name, argv, want = c[1], c[2], c[3]
    it("rejects " .. name, function()
      local ok, err = pcall(parse, argv)
      assert.falsy(ok)
      assert.truthy(cli.is_usage_error(err), "a usage error")
      assert.match("^" .. want:gsub("[%(%)%.%%%+%-%*%?%[%]%^]", "%%%0"):gsub("%%%$$", "$"), err.message)
    end)
  end

  it("rejects a bad value from the environment, naming the variable", function()
    local flags = { { name = "port", type = "number", env = "PORT" } }
    local ok, err = pcall(cli.parse, flags, {}, {}, { getenv = function() return "eighty" end })
    assert.falsy(ok)
    assert.equal('invalid value "eighty" for flag $PORT: expected a number', err.message)
  end)

  it("requires a flag declared required", function()
    local flags = { { name = "token-file", type = "string", required = true } }
    local ok, err = pcall(cli.parse, flags, {}, {}, { getenv = function() end })
    assert.falsy(ok)
    assert.equal("required flag --token-file is not set", err.message)
  end)

  it("collects a variadic last argument", function()
    local parsed = cli.parse({}, { { name = "first" }, { name = "rest", variadic = true } },
                             { "a", "b", "c" }, { getenv = function() end })
    assert.equal("a", parsed.args.first)
    assert.same({ "b", "c" }, parsed.args.rest)
  end)
end)

describe("generated help", function()
  local text = cli.help_text("service intercept", recipe{ examples = { "czctl service intercept web -l 3000" } })

  local expected_lines = {
    "^Intercept a Service\n",
    "\nUsage:\n  czctl service intercept SERVICE %[flags%]\n",
    "\nArguments:\n  SERVICE +the Service %(required%)\n",
    "\n  %-n, %-%-namespace string +namespace %(default \"default\"%)\n",
    "\n  %-r, %-%-remote%-port string +remote port %(also %-%-remotePort%)\n",
    "\n  %-l, %-%-local%-port number +local port %(also %-%-localPort%)\n",
    "\n  %-x, %-%-header string +header name:value %(repeatable%)\n",
    "\n  %-k, %-%-kubeconfig string +kubeconfig file %(default %$KUBECONFIG%)\n",
    "\n  %-a, %-%-all +all traffic\n",
    "\n  %-o, %-%-output string +%(one of text, json; default \"text\"%)\n",
    "\nGlobal flags:\n  %-h, %-%-help ",
    "\n      %-%-debug ",
    "\nExamples:\n  czctl service intercept web %-l 3000\n",
  }
  for _, pattern in ipairs(expected_lines) do
    it("contains " .. pattern:gsub("\n", " "):gsub("%%", ""), function()
      assert.match(pattern, text)
    end)
  end

  it("lists -- CMD [ARGS...] with the arguments of a recipe that declares a command", function()
    local help = cli.help_text("service intercept", recipe{ command = { help = "run it while the session lives" } })
    assert.truthy(help:find("%-%- CMD %[ARGS%.%.%.%] +run it while the session lives"), help)
  end)

  it("keeps a recipe's own usage line", function()
    assert.match("\n  czctl hello NAME %[flags%]\n", cli.help_text("hello", recipe{ usage = "NAME [flags]" }))
  end)
end)

-- Recipe directories made for the test, removed afterwards.
local function tempdir()
  local path = os.tmpname()
  os.remove(path)
  assert(sys.mkdir_p(path, 448))
  return path
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function recipe_source(summary, body)
  return string.format("return { summary = %q, run = function(ctx) %s end }\n", summary, body or "")
end

local BUILTIN = {
  hello = recipe_source("built-in hello"),
  ["service-intercept"] = recipe_source("built-in intercept"),
}
local fake_embed = {
  version = "9.9.9",
  recipes = function() return { "hello", "service-intercept" } end,
  recipe_source = function(name)
    if BUILTIN[name] then return BUILTIN[name], "@recipes/" .. name .. ".lua" end
    return nil, "no built-in recipe named '" .. name .. "'"
  end,
}

describe("recipe lookup", function()
  local path_dir, path_dir2, config, env, reg
  before_each(function()
    path_dir, path_dir2, config = tempdir(), tempdir(), tempdir()
    sys.mkdir_p(config .. "/recipes", 448)
    env = { CZCTL_RECIPE_PATH = path_dir .. ":" .. path_dir2 }
    reg = cli.registry{ getenv = function(n) return env[n] end, config_dir = function() return config end,
                        embed = fake_embed, listdir = sys.listdir }
  end)
  after_each(function()
    os.execute("rm -rf " .. path_dir .. " " .. path_dir2 .. " " .. config)
  end)

  it("finds a built-in when no user recipe has its name", function()
    local rec = reg:find("hello")
    assert.equal("built-in", rec.source)
    assert.equal(BUILTIN.hello, rec.code)
  end)

  it("prefers ~/.config/czctl/recipes over the built-in", function()
    write(config .. "/recipes/hello.lua", recipe_source("config hello"))
    local rec = reg:find("hello")
    assert.equal(config .. "/recipes/hello.lua", rec.source)
    assert.truthy(rec.overrides)
  end)

  it("prefers CZCTL_RECIPE_PATH over ~/.config/czctl/recipes, in order", function()
    write(config .. "/recipes/hello.lua", recipe_source("config hello"))
    write(path_dir2 .. "/hello.lua", recipe_source("second hello"))
    assert.equal(path_dir2 .. "/hello.lua", reg:find("hello").source)
    write(path_dir .. "/hello.lua", recipe_source("first hello"))
    assert.equal(path_dir .. "/hello.lua", reg:find("hello").source)
  end)

  it("lists every recipe once, resolved by precedence", function()
    write(path_dir .. "/hello.lua", recipe_source("first hello"))
    write(config .. "/recipes/mine.lua", recipe_source("mine"))
    write(config .. "/recipes/notes.txt", "not a recipe")
    local got = {}
    for _, rec in ipairs(reg:list()) do got[#got + 1] = rec.name .. "=" .. rec.source end
    assert.same({ "hello=" .. path_dir .. "/hello.lua", "mine=" .. config .. "/recipes/mine.lua",
                  "service-intercept=built-in" }, got)
  end)

  it("does not look outside the recipe directories", function()
    assert.is_nil(reg:find("../etc/passwd"))
    assert.is_nil(reg:find("a/b"))
  end)

  -- cli.main with captured streams against this registry
  local function main(args)
    local out, err = {}, {}
    local code = cli.main(args, { registry = reg, stdout = function(s) out[#out + 1] = s end,
                                  stderr = function(s) err[#err + 1] = s end })
    return code, table.concat(out), table.concat(err)
  end

  it("prints a built-in recipe's exact source", function()
    local code, out = main({ "recipe", "show", "service-intercept" })
    assert.equal(0, code)
    assert.equal(BUILTIN["service-intercept"], out)
    code, out = main({ "recipe", "show", "service", "intercept" })
    assert.equal(BUILTIN["service-intercept"], out)
  end)

  it("prints a user override's file for recipe show", function()
    write(path_dir .. "/hello.lua", "-- mine\n" .. recipe_source("mine"))
    local _, out = main({ "recipe", "show", "hello" })
    assert.equal("-- mine\n" .. recipe_source("mine"), out)
  end)

  it("dispatches NOUN VERB and NOUN-VERB to the same recipe", function()
    write(path_dir .. "/service-intercept.lua", recipe_source("x", "ctx.out:print('intercepting %s', ctx.args[1])")
      :gsub("return {", "return { args = { { name = 'service' } },"))
    local code, out = main({ "service", "intercept", "web" })
    assert.equal(0, code)
    assert.equal("intercepting web\n", out)
    code, out = main({ "service-intercept", "db" })
    assert.equal("intercepting db\n", out)
  end)

  it("returns the recipe's exit code", function()
    write(path_dir .. "/exit3.lua", recipe_source("x", "return 3"))
    assert.equal(3, (main({ "exit3" })))
  end)

  local failures = {
    { "an unknown command", { "servce", "intercept" }, 2,
      '^czctl: unknown command "servce intercept"; did you mean "service intercept"%? %(see czctl help%)\n$' },
    { "an unknown flag", { "service", "intercept", "--bogus" }, 2,
      '^czctl: unknown flag "%-%-bogus" for "service intercept" %(see czctl service intercept %-%-help%)\n$' },
    { "a string error", { "fails" }, 1, "^czctl: error: no such thing\n$" },
    { "ctx.fail", { "failf" }, 1, "^czctl: error: bad 42\n$" },
    { "error(message) without its position", { "errpos" }, 1, "^czctl: error: service web not found\n$" },
    { "assert(nil, message) without its position", { "assertmsg" }, 1, "^czctl: error: /nonexistent/x: No such file" },
    { "a bare assert with its position", { "assertbare" }, 1,
      "^czctl: error in recipe assertbare %(.-/assertbare%.lua:1%): assertion failed!\n$" },
    { "ctx.usage_error", { "usage" }, 2, '^czctl: need a port %(see czctl usage %-%-help%)\n$' },
    { "an error object with __tostring", { "kubeerr" }, 1, "^czctl: error: services \"web\" not found\n$" },
    { "a Lua error, with file and line", { "buggy" }, 1,
      "^czctl: error in recipe buggy %(.-/buggy%.lua:1%): attempt to index a nil value" },
    { "a syntax error, with file and line", { "broken" }, 1,
      "^czctl: syntax error in recipe broken %(.-/broken%.lua:1%): .-\n$" },
    { "a recipe that is not a table", { "notable" }, 1,
      "^czctl: error: recipe notable must return a table with a run function %(got number%)\n$" },
    { "a recipe with a bad flag type", { "badflag" }, 1, 'flag %-%-x has unknown type "strng"' },
  }
  for _, c in ipairs(failures) do
    local name, args, want_code, want_err = c[1], c[2], c[3], c[4]
    it("reports " .. name .. " in one line with exit code " .. want_code, function()
      write(path_dir .. "/fails.lua", recipe_source("x", "error('no such thing', 0)"))
      write(path_dir .. "/failf.lua", recipe_source("x", "ctx.fail('bad %d', 42)"))
      write(path_dir .. "/errpos.lua", recipe_source("x", "error('service web not found')"))
      write(path_dir .. "/assertmsg.lua", recipe_source("x", "assert(io.open('/nonexistent/x'))"))
      write(path_dir .. "/assertbare.lua", recipe_source("x", "assert(false)"))
      write(path_dir .. "/usage.lua", recipe_source("x", "ctx.usage_error('need a port')"))
      write(path_dir .. "/kubeerr.lua", recipe_source("x",
        "error(setmetatable({ code = 404 }, { __tostring = function() return 'services \"web\" not found' end }))"))
      write(path_dir .. "/buggy.lua", recipe_source("x", "local t; return t.x"))
      write(path_dir .. "/broken.lua", "return { run = function( }")
      write(path_dir .. "/notable.lua", "return 42")
      write(path_dir .. "/badflag.lua", "return { flags = { { name = 'x', type = 'strng' } }, run = function() end }")
      local code, out, err = main(args)
      assert.equal(want_code, code)
      assert.equal("", out)
      assert.match(want_err, err)
      local _, lines = err:gsub("\n", "")
      assert.equal(1, lines, "exactly one line")
    end)
  end

  it("runs the undo stack in reverse on error, then prints the error", function()
    write(path_dir .. "/undoer.lua", recipe_source("x", [[
      ctx.undo:defer("first", function() ctx.out:print("undo first") end)
      ctx.undo:defer("second", function() error("cannot", 0) end)
      ctx.undo:defer("third", function() ctx.out:print("undo third") end)
      error("failed", 0)]]))
    local code, out, err = main({ "undoer" })
    assert.equal(1, code)
    assert.equal("undo third\nundo first\n", out)
    assert.match('czctl: undo step "second" failed: cannot\n', err)
    assert.match("czctl: error: failed\n$", err)
  end)

  it("does not run the undo stack when the recipe succeeds", function()
    write(path_dir .. "/keeps.lua", recipe_source("x", [[ctx.undo:defer("x", function() ctx.out:print("undone") end)]]))
    local code, out = main({ "keeps" })
    assert.equal(0, code)
    assert.equal("", out)
  end)

  it("prints generated help for --help and for help COMMAND", function()
    write(path_dir .. "/greet.lua", [[return { summary = "Greet", args = { { name = "name", required = true } },
      flags = { { name = "loudVoice", short = "L", type = "boolean", help = "shout" } }, run = function() end }]])
    local code, a = main({ "greet", "--help" })
    assert.equal(0, code)
    local _, b = main({ "help", "greet" })
    local _, c = main({ "greet", "-h", "--no-such-flag" })
    assert.equal(a, b)
    assert.equal(a, c)
    assert.match("Usage:\n  czctl greet NAME %[flags%]", a)
    assert.match("%-L, %-%-loud%-voice +shout %(also %-%-loudVoice%)", a)
  end)

  it("lists recipes with their source and summary", function()
    write(path_dir .. "/hello.lua", recipe_source("my hello"))
    local code, out = main({ "recipe", "list" })
    assert.equal(0, code)
    assert.match("\nhello +" .. path_dir:gsub("%p", "%%%0") .. "/hello%.lua %(overrides built%-in%) +my hello\n", out)
    assert.match("\nservice%-intercept +built%-in +built%-in intercept\n", out)
  end)

  it("prints the version from the binary", function()
    local code, out = main({ "version" })
    assert.equal(0, code)
    assert.match("^czctl %d+%.%d+%.%d+", out)
  end)

  it("leaves hidden recipes out of the general help but not out of recipe list", function()
    write(path_dir .. "/session-keep.lua", "return { summary = 'internal', hidden = true, run = function() end }")
    local _, help = main({ "help" })
    assert.falsy(help:find("session keep", 1, true))
    assert.truthy(help:find("service intercept", 1, true))
    local _, list = main({ "recipe", "list" })
    assert.truthy(list:find("session-keep", 1, true))
  end)

  it("suggests the verb for a noun alone", function()
    local code, _, err = main({ "service" })
    assert.equal(2, code)
    assert.equal('czctl: "service" needs a command: intercept (see czctl help service)\n', err)
  end)
end)
