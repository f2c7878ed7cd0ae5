-- czctl.proxy.protocol: what a Service port speaks, how it is intercepted,
-- what a tunnel carries, which Services are refused; and the modes rendered.
local protocol = require "czctl.proxy.protocol"
local proxy = require "czctl.proxy"

describe("what a port speaks", function()
  local cases = {
    -- port, --protocol, protocol, source
    { { port = 50051, appProtocol = "kubernetes.io/h2c" }, nil, "h2c", "appProtocol kubernetes.io/h2c" },
    { { port = 50051, appProtocol = "grpc", name = "http" }, nil, "h2c", "appProtocol grpc" },
    { { port = 80, appProtocol = "kubernetes.io/ws" }, nil, "http", "appProtocol kubernetes.io/ws" },
    { { port = 443, appProtocol = "kubernetes.io/wss" }, nil, "tls", "appProtocol kubernetes.io/wss" },
    { { port = 8080, appProtocol = "HTTPS" }, nil, "tls", "appProtocol HTTPS" },
    { { port = 8080, appProtocol = "example.com/custom" }, nil, "tcp", "appProtocol example.com/custom" },
    { { port = 9000, name = "grpc" }, nil, "h2c", "port name grpc" },
    { { port = 9000, name = "grpc-api" }, nil, "h2c", "port name grpc-api" },
    { { port = 9000, name = "grpc-web" }, nil, "http", "port name grpc-web" },
    { { port = 9000, name = "grpc-web-public" }, nil, "http", "port name grpc-web-public" },
    { { port = 9000, name = "h2c" }, nil, "h2c", "port name h2c" },
    { { port = 9000, name = "http2-internal" }, nil, "h2c", "port name http2-internal" },
    { { port = 9000, name = "http-web" }, nil, "http", "port name http-web" },
    { { port = 9000, name = "https" }, nil, "tls", "port name https" },
    { { port = 9000, name = "tls-passthrough" }, nil, "tls", "port name tls-passthrough" },
    { { port = 9000, name = "mysql" }, nil, "tcp", "port name mysql" },
    { { port = 9000, name = "redis-main" }, nil, "tcp", "port name redis-main" },
    { { port = 443, name = "web" }, nil, "tls", "port number 443 (HTTPS's)" },
    { { port = 5432 }, nil, "tcp", "port number 5432 (PostgreSQL's)" },
    { { port = 8080, name = "web" }, nil, "http", "no appProtocol or protocol name (HTTP/1.1 assumed)" },
    { { port = 443, name = "https" }, "http", "http", "--protocol http" },
    { { port = 8080, name = "web" }, "grpc", "h2c", "--protocol grpc" },
    { { port = 8080, appProtocol = "kubernetes.io/h2c" }, "auto", "h2c", "appProtocol kubernetes.io/h2c" },
  }
  for _, c in ipairs(cases) do
    it(string.format("%s -> %s", c[4], c[3]), function()
      local p = assert(protocol.detect(c[1], c[2]))
      assert.equal(c[3], p.protocol)
      assert.equal(c[4], p.source)
    end)
  end

  it("refuses an unknown --protocol value, naming the choices", function()
    local p, err = protocol.detect({ port = 80 }, "quic")
    assert.is_nil(p)
    assert.equal('--protocol must be one of auto, http, h2c, grpc, tls, tcp, got "quic"', err)
  end)
end)

describe("how a port is intercepted", function()
  local port = { port = 443, name = "https" }
  local cases = {
    -- protocol, --all, mode or error
    { "http", false, "http" }, { "http", true, "http" },
    { "h2c", false, "h2c" }, { "h2c", true, "h2c" },
    { "tls", true, "tcp" }, { "tcp", true, "tcp" },
    { "tls", false, "port 443 (https) of Service web speaks TLS end to end (port name https), so czctl cannot "
      .. "route it by header; intercept every connection with --all (bytes passed untouched)" },
    { "tcp", false, "port 443 (https) of Service web speaks a protocol that is not HTTP (port name https), so "
      .. "czctl cannot route it by header; intercept every connection with --all (bytes passed untouched) "
      .. "(or --protocol http if it is HTTP after all)" },
  }
  for _, c in ipairs(cases) do
    it(string.format("%s%s -> %s", c[1], c[2] and " with --all" or " by header", c[3]:sub(1, 40)), function()
      local mode, err = protocol.mode({ protocol = c[1], source = "port name https" }, c[2], port, "web")
      assert.equal(c[3], mode or err)
    end)
  end
end)

describe("what a tunnel carries", function()
  it("direct carries every mode; ngrok HTTP/1.1 only, saying what ngrok documents", function()
    local direct, ngrok = require "czctl.tunnel.direct", require "czctl.tunnel.ngrok"
    for _, mode in ipairs({ "http", "h2c", "tcp" }) do
      assert.is_true(protocol.check_tunnel(mode, "direct", direct))
    end
    assert.is_true(protocol.check_tunnel("http", "ngrok", ngrok))
    local ok, err = protocol.check_tunnel("h2c", "ngrok", ngrok)
    assert.is_nil(ok)
    assert.matches("the ngrok tunnel cannot carry HTTP/2 %(h2c, gRPC%): ngrok needs `%-%-app%-protocol=http2`", err)
    assert.matches("use %-%-tunnel direct$", err)
  end)
  it("a provider that declares nothing carries HTTP/1.1 only", function()
    local _, err = protocol.check_tunnel("tcp", "mine", { start = function() end })
    assert.equal("the mine tunnel cannot carry raw TCP connections; use --tunnel direct", err)
  end)
end)

describe("Services and endpoints", function()
  it("refuses a headless Service", function()
    assert.matches("^Service \"db\" is headless %(clusterIP: None%)",
      protocol.not_interceptable({ metadata = { name = "db" }, spec = { clusterIP = "None" } }))
    assert.is_nil(protocol.not_interceptable({ metadata = { name = "db" }, spec = { clusterIP = "10.96.0.5" } }))
  end)
  local port = { port = 80, name = "http" }
  local cases = {
    { "no Endpoints object", nil, true },
    { "no subsets", { subsets = {} }, true },
    { "only not-ready addresses", { subsets = { { notReadyAddresses = { { ip = "10.0.0.1" } },
                                                 ports = { { name = "http", port = 8080 } } } } }, true },
    { "a ready address on another port", { subsets = { { addresses = { { ip = "10.0.0.1" } },
                                                          ports = { { name = "admin", port = 9090 } } } } }, true },
    { "a ready address on the port", { subsets = { { addresses = { { ip = "10.0.0.1" } },
                                                     ports = { { name = "http", port = 8080 } } } } }, false },
  }
  for _, c in ipairs(cases) do
    it(string.format("%s: %s", c[1], c[3] and "warns" or "no warning"), function()
      local w = protocol.no_ready_endpoint(c[2], port, "web")
      if c[3] then
        assert.equal("Service web has no ready endpoint for port 80 (http): requests that are not intercepted "
          .. "fail (as they did before czctl) until a pod is ready", w)
      else
        assert.is_nil(w)
      end
    end)
  end
end)

describe("the modes rendered", function()
  local function render(mode, rule, extra)
    local opts = { session = "s1", rule = rule, tunnel_upstream = { url = "http://10.0.0.9:3000" },
                   ports = { { name = "p", port = 443, listen = 8080, original = "10.96.0.7:443", intercept = true,
                               mode = mode } } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return proxy.render(opts)
  end
  -- has(text, lines...): every line is in the text, as it is
  local function has(text, ...)
    for _, line in ipairs({ ... }) do assert.truthy(text:find(line, 1, true), line) end
  end
  -- the route's files for a mode, into a TLS landing with a client
  -- certificate (and a stand-in certificate unless without_standin)
  local pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
  local function landing_files(mode, without_standin)
    local tls = { ca = pem, name = "10.0.0.9", client_cert = pem, client_key = pem }
    if not without_standin then tls.fallback_cert, tls.fallback_key = pem, pem end
    local conf, err, files = render(mode, { all = true }, { tunnel_upstream = { url = "https://10.0.0.9:3000",
      tls = tls } })
    return files, conf, err
  end
  it("h2c: an HTTP/2 listener, grpc_pass on both routes, the route's grpc file, no body buffering", function()
    local conf, _, files = render("h2c", { header = { name = "x-tenant", equals = "acme" } })
    has(conf, "listen 8080 reuseport http2;", "grpc_pass grpc://czctl_original_p;",
        "include /etc/czctl-session/tunnel-grpc.conf;", "grpc_next_upstream off;")
    assert.is_nil(conf:find("proxy_pass", 1, true))
    assert.is_nil(conf:find("proxy_request_buffering on", 1, true))
    has(files["tunnel-grpc.conf"], "grpc_pass grpc://czctl_tunnel_s1_grpc;")
  end)
  -- both fail open inside the route's upstream: the original's stand-in is
  -- its backup, and the tunnel is never marked down (one failed call or
  -- connection must not send the next ones to the original)
  for _, c in ipairs({
    { mode = "h2c", upstream_file = "tunnel-http.conf", kind = "grpc", listen = " http2",
      original = "location / {\n            grpc_pass grpc://czctl_original_p;" },
    { mode = "tcp", upstream_file = "tunnel-tcp.conf", kind = "tcp", listen = "", original = "proxy_pass 10.96.0.7:443;" },
  }) do
    it(c.mode .. " fails open: the tunnel's upstream has the original's stand-in as backup", function()
      local conf, _, files = render(c.mode, { all = true })
      has(files[c.upstream_file], "upstream czctl_tunnel_s1_" .. c.kind .. " {\n",
          "    server 10.0.0.9:3000 max_fails=0;\n", "    server unix:/tmp/czctl-route-s1-" .. c.kind .. ".sock backup;\n")
      local standin = c.mode == "h2c" and "tunnel-grpc-standin.conf" or "tunnel-stream-standin.conf"
      has(files[standin], "listen unix:/tmp/czctl-route-s1-" .. c.kind .. ".sock" .. c.listen .. ";")
      has(conf, "server {\n        include /etc/czctl-session/" .. standin .. ";", c.original)
    end)
  end
  it("h2c: a call that was not sent moves to the backup with its body (no error_page, which could not resend it)",
     function()
    local conf, _, files = render("h2c", { header = { name = "x-tenant", equals = "acme" } })
    has(files["tunnel-grpc.conf"], "grpc_next_upstream error timeout;")
    assert.is_nil(conf:find("@czctl_fallback", 1, true))
  end)
  it("h2c to a TLS landing: grpcs:// with the client certificate, verified; the stand-in speaks its TLS", function()
    local files = landing_files("h2c")
    local g = files["tunnel-grpc.conf"]
    has(g, "grpc_pass grpcs://czctl_tunnel_s1_grpc;", "grpc_ssl_verify on;",
        "grpc_ssl_trusted_certificate /etc/czctl-session/tunnel-ca.crt;", "grpc_ssl_name 10.0.0.9;",
        "grpc_ssl_certificate /etc/czctl-session/tunnel-client.crt;",
        "grpc_ssl_certificate_key /etc/czctl-session/tunnel-client.key;")
    assert.is_nil(g:find("proxy_pass", 1, true))
    assert.is_nil(g:find("proxy_ssl", 1, true))
    has(files["tunnel-grpc-standin.conf"], "listen unix:/tmp/czctl-route-s1-grpc.sock ssl http2;",
        "ssl_certificate /etc/czctl-session/tunnel-standin.crt;",
        "ssl_certificate_key /etc/czctl-session/tunnel-standin.key;")
    assert.equal(pem, files["tunnel-standin.crt"])
  end)
  it("tcp: a stream server including the route's stream file, no HTTP server", function()
    local conf, _, files = render("tcp", { all = true })
    has(conf, "include /etc/czctl-session/tunnel-stream.conf;", "include /etc/czctl-session/tunnel-tcp.conf;")
    assert.is_nil(conf:find("10.0.0.9", 1, true))   -- nginx.conf names no tunnel
    assert.is_nil(conf:find("listen 8080 reuseport;\n        # The rule", 1, true))
    assert.is_nil(conf:find("czctl_original_p", 1, true))
    has(files["tunnel-stream.conf"], "proxy_pass czctl_tunnel_s1_tcp;")
    assert.is_nil(files["tunnel-stream.conf"]:find("proxy_ssl", 1, true))
  end)
  it("tcp to a TLS landing: proxy_ssl on with the client certificate; the stand-in speaks its TLS", function()
    local files = landing_files("tcp")
    has(files["tunnel-stream.conf"], "proxy_ssl on;", "proxy_ssl_verify on;",
        "proxy_ssl_name 10.0.0.9;", "proxy_ssl_certificate /etc/czctl-session/tunnel-client.crt;",
        "proxy_ssl_certificate_key /etc/czctl-session/tunnel-client.key;", "proxy_pass czctl_tunnel_s1_tcp;")
    has(files["tunnel-stream-standin.conf"], "listen unix:/tmp/czctl-route-s1-tcp.sock ssl;",
        "ssl_certificate /etc/czctl-session/tunnel-standin.crt;")
  end)
  for _, mode in ipairs({ "tcp", "h2c" }) do
    it(mode .. " to a TLS tunnel without a stand-in certificate is refused (it could not fail open)", function()
      local files, conf, err = landing_files(mode, true)
      assert.is_nil(files)
      assert.is_nil(conf)
      assert.matches("route to a TLS tunnel needs tunnel_upstream.tls.fallback_cert and fallback_key", err)
    end)
  end
  it("h2c to a tunnel by name on NGINX before 1.27.3 is refused (no upstream to fall back in)", function()
    local conf, err = render("h2c", { all = true }, { tunnel_upstream = { url = "http://tunnel.example:80" },
                                                      nginx_version = "1.22.1" })
    assert.is_nil(conf)
    assert.matches("HTTP/2 route to a tunnel by name %(tunnel.example%) needs NGINX 1.27.3", err)
    assert.truthy(render("h2c", { all = true }, { tunnel_upstream = { url = "http://tunnel.example:80" },
                                                  nginx_version = "1.27.4" }))
  end)
  it("one session intercepts at most one port as h2c or tcp (each has the session's one stand-in)", function()
    local conf, err = proxy.render{ session = "s", rule = { all = true }, tunnel_upstream = { url = "http://10.0.0.9:1" },
      ports = { { name = "a", port = 1, listen = 8080, original = "10.96.0.7:1", intercept = true, mode = "tcp" },
                { name = "b", port = 2, listen = 8081, original = "10.96.0.7:2", intercept = true, mode = "h2c" } } }
    assert.is_nil(conf)
    assert.matches("one session intercepts at most one port as h2c or tcp", err)
  end)
  it("tcp needs a rule that takes everything", function()
    local conf, err = render("tcp", { header = { name = "x-a", equals = "b" } })
    assert.is_nil(conf)
    assert.matches("mode tcp%) takes every connection: its rule must be { all = true }", err)
  end)
  it("routes on one port must agree on the mode", function()
    local conf, err = proxy.render{ session = "s", ports = { { name = "g", port = 50051, listen = 8080,
                                                               original = "10.96.0.7:50051" } },
      routes = { { id = "a", port = 50051, mode = "h2c", rule = { header = { name = "x", equals = "1" } },
                   tunnel_upstream = { url = "http://10.0.0.9:1" } },
                 { id = "b", port = 50051, rule = { header = { name = "x", equals = "2" } },
                   tunnel_upstream = { url = "http://10.0.0.9:2" } } } }
    assert.is_nil(conf)
    assert.equal("proxy.render: routes[2]: port 50051 is intercepted as h2c by another route, not http", err)
  end)
end)
