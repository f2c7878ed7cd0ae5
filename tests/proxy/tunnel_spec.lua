-- czctl.tunnel: the provider registry, handle checks, the ngrok log parser and
-- argument errors of the built-in providers. Processes and traffic are in
-- tests/proxy/test_ngrok_provider.sh.
local tunnel = require "czctl.tunnel"
local ngrok = require "czctl.tunnel.ngrok"
local direct = require "czctl.tunnel.direct"

describe("tunnel.get", function()
  it("loads the built-in providers", function()
    assert.equal(ngrok, tunnel.get("ngrok"))
    assert.equal(direct, tunnel.get("direct"))
  end)
  it("names the built-in providers when one is unknown", function()
    local p, err = tunnel.get("nosuch")
    assert.is_nil(p)
    assert.match('unknown tunnel provider "nosuch" %(built in: ngrok, direct', err)
  end)
  it("refuses names that are not module names", function()
    local p, err = tunnel.get("../x")
    assert.is_nil(p)
    assert.match("invalid tunnel provider name", err)
  end)
  it("refuses a module without start", function()
    package.preload["czctl.tunnel.nostart"] = function() return {} end
    local p, err = tunnel.get("nostart")
    package.preload["czctl.tunnel.nostart"], package.loaded["czctl.tunnel.nostart"] = nil, nil
    assert.is_nil(p)
    assert.match("has no start function", err)
  end)
end)

describe("tunnel.check_handle", function()
  local function handle(over)
    local h = { url = "http://127.0.0.1:3000", upstream = { url = "http://127.0.0.1:3000" },
                stop = function() end, healthy = function() return true end }
    for k, v in pairs(over or {}) do h[k] = v end
    return h
  end
  it("accepts a complete handle", function() assert.truthy(tunnel.check_handle(handle())) end)
  local bad = {
    { "a URL that is not http(s)", { url = "tcp://x:1" }, "handle.url" },
    { "no upstream", { upstream = false }, "upstream.url" },
    { "no stop", { stop = false }, "stop" },
    { "no healthy", { healthy = false }, "healthy" },
    { "a pid that is not an integer", { pid = "12" }, "pid" },
  }
  for _, c in ipairs(bad) do
    it("refuses " .. c[1], function()
      local h = handle()
      for k, v in pairs(c[2]) do h[k] = v or nil end
      local ok, err = tunnel.check_handle(h)
      assert.is_nil(ok)
      assert.truthy(err:find(c[3], 1, true), err)
    end)
  end
  it("stops a handle that fails the check in tunnel.start", function()
    local stopped = false
    package.preload["czctl.tunnel.broken"] = function()
      return { start = function() return { url = "nope", stop = function() stopped = true end } end }
    end
    local h, err = tunnel.start("broken", { local_port = 1 })
    package.preload["czctl.tunnel.broken"], package.loaded["czctl.tunnel.broken"] = nil, nil
    assert.is_nil(h)
    assert.match('tunnel provider "broken": handle.url', err)
    assert.truthy(stopped)
  end)
end)

describe("ngrok.parse_log_line", function()
  it("reads the agent's JSON lines", function()
    local rec = ngrok.parse_log_line('{"addr":"127.0.0.1:4041","lvl":"info","msg":"starting web service","obj":"web","t":"2026-01-01T00:00:00Z"}')
    assert.equal("starting web service", rec.msg)
    assert.equal("127.0.0.1:4041", rec.addr)
  end)
  it("reads logfmt lines, quoted and bare values", function()
    local rec = ngrok.parse_log_line('t=2026-01-01T00:00:00Z lvl=info msg="started tunnel" obj=tunnels name=command_line addr=http://localhost:3000 url=https://ab.ngrok-free.app')
    assert.equal("started tunnel", rec.msg)
    assert.equal("https://ab.ngrok-free.app", rec.url)
    assert.equal("command_line", rec.name)
  end)
  it("ignores lines that are not log records", function()
    assert.is_nil(ngrok.parse_log_line("ERROR:  authentication failed"))
    assert.is_nil(ngrok.parse_log_line("{not json"))
  end)
end)

describe("provider arguments", function()
  it("direct refuses a missing port", function()
    local h, err = direct.start{}
    assert.is_nil(h)
    assert.match("local_port", err)
  end)
  it("direct refuses a host with spaces", function()
    local h, err = direct.start{ local_port = 3000, host = "a b" }
    assert.is_nil(h)
    assert.match("invalid host", err)
  end)
  it("direct needs a host, and says how to give one", function()
    local h, err = direct.start{ local_port = 3000 }
    assert.is_nil(h)
    assert.match("%-%-tunnel%-host ADDRESS", err)
  end)
  it("direct lands where the cluster connects and is held by the session's process", function()
    assert.equal(true, direct.needs_process)
    assert.same({ listen = "127.0.0.1", allow = { "127.0.0.0/8" } }, direct.landing_for("host.docker.internal"))
    for _, case in ipairs({
      { "127.0.0.1", "is this machine's loopback, which pods cannot reach" },
      { "192.0.2.254", "is not an address of this machine" },
      { "my.laptop", "needs an IPv4 address of this machine" },
    }) do
      local plan, err = direct.landing_for(case[1])
      assert.is_nil(plan)
      assert.truthy(err:find(case[2], 1, true), err)
      assert.truthy(err:find("--tunnel-host", 1, true), err)
    end
  end)
  it("direct builds https://HOST:LANDING_PORT and stops twice", function()
    local h = assert(direct.start{ local_port = 1, host = "host.docker.internal", log = function() end })
    assert.match("^https://host%.docker%.internal:%d+$", h.url)
    assert.equal(h.url, h.upstream.url)
    assert.truthy(h.upstream.keep_host, "the app gets the request's own Host")
    assert.match("^%-%-%-%-%-BEGIN CERTIFICATE", h.upstream.tls.ca)
    assert.match("^%-%-%-%-%-BEGIN PRIVATE KEY", h.upstream.tls.client_key)
    assert.is_nil(h.pid)
    assert.truthy(h:stop())
    assert.truthy(h:stop())
  end)
  it("direct finds no host when no node is on a network of this machine", function()
    local function client(nodes, context, err)
      return { list = function() return nodes, err end, info = function() return { context = context } end }
    end
    local loopback_node = { items = { { status = { addresses = { { type = "InternalIP", address = "127.0.0.1" } } } } } }
    for _, case in ipairs({
      { client(loopback_node, "kind-kind"), "no node %(127%.0%.0%.1%) is on a network of this machine" },
      { client({ items = {} }, "x"), "no node reports an IPv4 InternalIP" },
      { client(nil, "x", { message = 'nodes is forbidden: User "u" cannot list resource "nodes"' }),
        "cannot list the cluster's nodes %(nodes is forbidden" },
    }) do
      local host, err = direct.detect_host(case[1])
      assert.is_nil(host)
      assert.match(case[2], err)
      assert.match("%-%-tunnel%-host ADDRESS$", err)
    end
    assert.equal("host.docker.internal", direct.detect_host(client({ items = {} }, "docker-desktop")))
  end)
  it("ngrok refuses a bad port", function()
    local h, err = ngrok.start{ local_port = 70000 }
    assert.is_nil(h)
    assert.match("local_port", err)
  end)
  it("ngrok explains how to install it when the command is missing", function()
    local h, err = ngrok.start{ local_port = 3000, command = "/nonexistent/ngrok" }
    assert.is_nil(h)
    assert.equal("ngrok is not installed: install it from https://ngrok.com/download (or use --tunnel direct)", err)
  end)
end)
