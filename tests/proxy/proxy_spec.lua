-- czctl.proxy: routing rules (validation, flags), escaping, and what the
-- rendered NGINX configuration contains for each rule and option. The
-- behaviour of that configuration under a real nginx is tests/proxy/test_routing.sh.
local proxy = require "czctl.proxy"

local function has(text, needle)
  return text:find(needle, 1, true) ~= nil
end

local function render(overrides)
  local opts = {
    ports = { { name = "http", port = 80, listen = 8080, original = "10.0.0.7:80", intercept = true },
              { name = "metrics", port = 9090, listen = 8081, original = "10.0.0.7:9090" } },
    rule = { header = { name = "X-C6O-INTERCEPT", equals = "yes" } },
    tunnel_upstream = { url = "http://127.0.0.1:3000" },
    session = "abc123",
  }
  for k, v in pairs(overrides or {}) do opts[k] = v end
  local conf, warnings, files = proxy.render(opts)
  assert(conf, warnings)
  return conf, warnings, files
end
local INCLUDE_LOCATION = "include /etc/czctl-session/tunnel-location.conf;"

describe("proxy.from_flags", function()
  local cases = {
    { "no flags gives the default header", {}, { header = { name = "X-C6O-INTERCEPT", equals = "yes" } } },
    { "--all routes everything", { all = true, header = "X-A:b" }, { all = true } },
    { "splits at the first colon", { header = "X-Target:http://a:b" },
      { header = { name = "X-Target", equals = "http://a:b" } } },
    { "trims whitespace around name and value", { header = "  X-Dev :  alice  " },
      { header = { name = "X-Dev", equals = "alice" } } },
    { "keeps the value's case", { header = "X-Dev:Alice" }, { header = { name = "X-Dev", equals = "Alice" } } },
  }
  for _, c in ipairs(cases) do
    it(c[1], function() assert.same(c[3], proxy.from_flags(c[2])) end)
  end

  local bad = {
    { "a header without a colon", "X-Dev", "expected NAME:VALUE" },
    { "an empty name", ":yes", "name before ':' is empty" },
    { "an empty value", "X-Dev:  ", "value after ':' is empty" },
    { "a name with a space", "X Dev:1", "invalid header name" },
    { "a name with a character NGINX ignores", "X.Dev:1", "NGINX ignores" },
    { "a name with non-token characters", "X(Dev):1", "invalid header name" },
  }
  for _, c in ipairs(bad) do
    it("rejects " .. c[1] .. " with a one-line message", function()
      local rule, err = proxy.from_flags{ header = c[2] }
      assert.is_nil(rule)
      assert.truthy(has(err, c[3]), err)
      assert.truthy(has(err, "--header"), err)
      assert.falsy(err:find("\n"), "one line")
    end)
  end
end)

describe("proxy.validate", function()
  local good = {
    { header = { name = "X-A", equals = "1" } },
    { header = { name = "X-A", matches = "^v[0-9]+$" } },
    { cookie = { name = "dev", equals = "me" } },
    { path_prefix = "/api" },
    { all = true },
    { any = { { path_prefix = "/a" }, { all = true } } },
    { every = { { path_prefix = "/a" }, { ["not"] = { cookie = { name = "x", equals = "1" } } } } },
  }
  for i, rule in ipairs(good) do
    it("accepts valid rule #" .. i .. " (" .. proxy.describe(rule) .. ")", function()
      assert.truthy(proxy.validate(rule))
    end)
  end

  local bad = {
    { "an empty rule", {}, "empty rule" },
    { "two kinds in one rule", { all = true, path_prefix = "/" }, "exactly one" },
    { "an unknown key", { hedaer = {} }, "unknown rule key" },
    { "a header with both equals and matches", { header = { name = "X", equals = "a", matches = "b" } }, "exactly one of" },
    { "a header with an empty value", { header = { name = "X", equals = "" } }, "empty" },
    { "a value with a newline", { header = { name = "X", equals = "a\nb" } }, "control character" },
    { "a path without a leading slash", { path_prefix = "api" }, "must start with '/'" },
    { "an empty any", { any = {} }, "non-empty list" },
    { "all = false", { all = false }, "all must be true" },
    { "a nested error, with its path", { every = { { all = true }, { header = { name = "", equals = "x" } } } },
      "rule.every[2]" },
  }
  for _, c in ipairs(bad) do
    it("rejects " .. c[1], function()
      local ok, err = proxy.validate(c[2])
      assert.is_nil(ok)
      assert.truthy(has(err, c[3]), err)
    end)
  end

  it("warns that NGINX treats '_' and '-' alike in an underscore header name", function()
    local ok, warnings = proxy.validate{ header = { name = "X_Team", equals = "a" } }
    assert.truthy(ok)
    assert.equal(1, #warnings)
    assert.truthy(has(warnings[1], "X-Team"), warnings[1])
  end)
end)

describe("escaping", function()
  it("escapes every PCRE metacharacter and keeps letters and digits", function()
    assert.equal("abc123", proxy.pcre_escape("abc123"))
    assert.equal("a\\.b\\*c\\$\\(\\)\\[\\]\\{\\}\\|\\?\\+\\^\\\\", proxy.pcre_escape("a.b*c$()[]{}|?+^\\"))
  end)
  it("writes non-ASCII and control bytes as \\xHH", function()
    assert.equal("\\xc3\\xa9", proxy.pcre_escape("é"))
    assert.equal("a\\x09b", proxy.pcre_escape("a\tb"))
  end)
  it("quotes for NGINX by escaping backslashes and double quotes only", function()
    assert.equal([["a\"b\\c$d;{}"]], proxy.nginx_quote([[a"b\c$d;{}]]))
  end)
  it("puts an exact-match value into an anchored, case-sensitive regex inside a rule", function()
    local conf = render{ rule = { ["not"] = { header = { name = "X-Odd", equals = 'a"b.c' } } } }
    assert.truthy(has(conf, [["~^a\\\"b\\.c$" 1;]]), conf)
  end)
  it("quotes a value with quotes and regex characters for `if` as a literal", function()
    local conf = render{ rule = { header = { name = "X-Odd", equals = 'a"b.c' } } }
    assert.truthy(has(conf, [[if ($http_x_odd = "a\"b.c") {]]), conf)
  end)
end)

describe("proxy.render: the rule", function()
  it("compares one header's value in `if` (exact, case-sensitive), without a map", function()
    local conf = render()
    assert.truthy(has(conf, 'if ($http_x_c6o_intercept = "yes") {\n                return 418;'), conf)
    assert.falsy(has(conf, "map $http_x_c6o_intercept"))
  end)
  it("matches a value holding '$' through a map (in `if` it would be a variable)", function()
    local conf = render{ rule = { header = { name = "X-Odd", equals = "a$b" } } }
    assert.truthy(has(conf, "map $http_x_odd $czctl_rule_1 {"), conf)
    assert.truthy(has(conf, [["~^a\\$b$" 1;]]), conf)
    assert.truthy(has(conf, "if ($czctl_rule_1) {"))
    assert.falsy(conf:find("\n%s*a%$b%s+1;"), "no case-insensitive string key")
  end)
  it("uses the user's regular expression as is for matches=", function()
    local conf = render{ rule = { header = { name = "X-V", matches = "^v2(\\.\\d+)?$" } } }
    assert.truthy(has(conf, [["~^v2(\\.\\d+)?$" 1;]]), conf)
  end)
  it("matches a cookie on the raw Cookie header with exact name and value", function()
    local conf = render{ rule = { cookie = { name = "dev", equals = "me" } } }
    assert.truthy(has(conf, "map $http_cookie $czctl_rule_1"))
    assert.truthy(has(conf, [["~(?:^|;)\\s*dev=me\\s*(?:;|$)" 1;]]), conf)
  end)
  it("matches a path prefix on the normalised $uri", function()
    local conf = render{ rule = { path_prefix = "/api/" } }
    assert.truthy(has(conf, "map $uri $czctl_rule_1"))
    assert.truthy(has(conf, [["~^\\/api\\/" 1;]]))
  end)
  it("routes everything with all = true: no rule map, no `if`; the original only as the fallback", function()
    local conf = render{ rule = { all = true } }
    assert.falsy(has(conf, "$czctl_rule_1"))
    assert.falsy(has(conf, "if ("))
    assert.truthy(has(conf, "        location / {\n            access_log /dev/stdout czctl buffer=64k flush=1s;\n"), conf)
    assert.truthy(has(conf:match("location / {(.-)\n        }") or "", INCLUDE_LOCATION), conf)
    assert.truthy(has(conf, "location @czctl_fallback {\n            proxy_pass http://czctl_original_http;"), conf)
  end)
  it("composes every with a map over the concatenation of its parts", function()
    local conf = render{ rule = { every = { { header = { name = "X-A", equals = "1" } }, { path_prefix = "/a" } } } }
    assert.truthy(has(conf, 'map "$czctl_rule_1$czctl_rule_2" $czctl_rule_3'), conf)
    assert.truthy(has(conf, [["~^11$" 1;]]))
  end)
  it("composes any with a map that matches when one part is 1", function()
    local conf = render{ rule = { any = { { header = { name = "X-A", equals = "1" } }, { path_prefix = "/a" } } } }
    assert.truthy(has(conf, 'map "$czctl_rule_1$czctl_rule_2" $czctl_rule_3'), conf)
    assert.truthy(has(conf, '"~1" 1;'))
  end)
  it("negates with not", function()
    local conf = render{ rule = { ["not"] = { path_prefix = "/health" } } }
    assert.truthy(has(conf, 'map "$czctl_rule_1" $czctl_rule_2 {\n        default 1;\n        "~1" "";'), conf)
  end)
  it("enables underscores_in_headers only when the rule needs it", function()
    assert.falsy(has(render(), "underscores_in_headers"))
    assert.truthy(has(render{ rule = { header = { name = "X_A", equals = "1" } } }, "underscores_in_headers on;"))
  end)
  it("refuses an invalid rule", function()
    local conf, err = proxy.render{ ports = { { listen = 8080, original = "1.2.3.4:80", intercept = true } },
                                    rule = { path_prefix = "x" }, tunnel_upstream = { url = "http://127.0.0.1:1" } }
    assert.is_nil(conf)
    assert.truthy(has(err, "path_prefix"), err)
  end)
end)

describe("proxy.render: the server blocks", function()
  local conf = render()
  local required = {
    { "runs unprivileged: pid in /tmp", "pid /tmp/nginx.pid;" },
    { "temp paths in /tmp", "client_body_temp_path /tmp/client_temp;" },
    { "logs errors to stderr", "error_log stderr" },
    { "logs requests to stdout with route and upstream", "route=intercept upstream=$upstream_addr" },
    { "logs nothing by default", "    access_log off;\n" },
    { "logs intercepted requests in the tunnel location",
      "location @czctl_tunnel {\n            access_log /dev/stdout czctl buffer=64k flush=1s;" },
    { "runs one worker (the pod's CPU limit is half a CPU)", "worker_processes 1;" },
    { "sizes events", "worker_connections 4096;" },
    { "keeps the original Host", "proxy_set_header Host              $http_host;" },
    { "adds X-Forwarded-For", "X-Forwarded-For   $proxy_add_x_forwarded_for;" },
    { "adds X-Forwarded-Proto", "X-Forwarded-Proto $czctl_forwarded_proto;" },
    { "speaks HTTP/1.1 upstream", "proxy_http_version 1.1;" },
    { "keeps upstream connections", "keepalive 64;" },
    { "passes Upgrade", "proxy_set_header Upgrade           $http_upgrade;" },
    { "maps Connection for upgrades", "map $http_upgrade $czctl_connection {\n        default upgrade;\n        \"\"      \"\";" },
    { "streams request bodies", "proxy_request_buffering off;" },
    { "accepts any body size", "client_max_body_size 0;" },
    { "keeps WebSockets open", "proxy_read_timeout 3600s;" },
    { "never retries on the other route", "proxy_next_upstream off;" },
    { "listens on the intercepted proxy port", "listen 8080 reuseport;" },
    { "listens on the pass-through proxy port", "listen 8081 reuseport;" },
    { "passes the other port straight through, byte for byte", "stream {" },
    { "forwards the other port's connections to its original", "        proxy_pass 10.0.0.7:9090;\n    }" },
    { "hands requests matching the rule to the tunnel location",
      "error_page 418 = @czctl_tunnel;\n" ..
      "            # (`=` compares the value exactly; the header's name matches in any case)\n" ..
      "            if ($http_x_c6o_intercept = \"yes\") {\n                return 418;\n            }" },
    { "sends them into the tunnel, through the route's file", "            " .. INCLUDE_LOCATION .. "\n        }" },
    { "includes the route's upstream in http", "    include /etc/czctl-session/tunnel-http.conf;" },
    { "keeps the body of a tunnel request for the fallback", "            proxy_request_buffering on;" },
    { "falls back to the original on a failure NGINX sees", "            error_page 502 504 = @czctl_fallback;" },
    { "lets the tunnel location's error_page work behind error_page 418", "        recursive_error_pages on;" },
    { "has the fallback location", "location @czctl_fallback {\n            proxy_pass http://czctl_original_http;\n        }" },
    { "sends the other requests of the intercepted port to the original", "proxy_pass http://czctl_original_http;" },
    { "reaches the original by ClusterIP", "server 10.0.0.7:80;" },
    { "has a health endpoint", "listen 8079;" },
    { "answers the probe itself", "return 200 \"ok\\n\";" },
    { "names the session", "session abc123" },
  }
  for _, c in ipairs(required) do
    it(c[1], function() assert.truthy(has(conf, c[2]), c[2]) end)
  end
  it("has no user directive", function() assert.falsy(conf:find("\nuser ")) end)
  it("does not add X-Czctl-Route unless asked", function()
    assert.falsy(has(conf, "X-Czctl-Route"))
    local debug = render{ route_header = true }
    assert.truthy(has(debug, "add_header X-Czctl-Route original always;\n            proxy_pass http://czctl_original_http;"))
    assert.truthy(has(debug, "add_header X-Czctl-Route intercept always;"))
    assert.truthy(has(debug, "add_header X-Czctl-Route fallback always;"))
  end)
  it("drops upstream keep-alive when upstream_keepalive = 0 (benchmark baseline)", function()
    assert.falsy(has(render{ upstream_keepalive = 0 }, "keepalive 64"))
  end)
  it("does not modify the caller's ports", function()
    local ports = { { listen = 8080, original = "1.2.3.4:80", intercept = true } }
    proxy.render{ ports = ports, tunnel_upstream = { url = "http://127.0.0.1:1" } }
    assert.same({ { listen = 8080, original = "1.2.3.4:80", intercept = true } }, ports)
  end)
  local bad = {
    { "no ports", { ports = {} }, "ports is empty" },
    { "a bad listen port", { ports = { { listen = 0, original = "1.2.3.4:80" } } }, "listen" },
    { "two ports on one listen port", { ports = { { listen = 8080, original = "1.2.3.4:80" },
                                                { listen = 8080, original = "1.2.3.4:81" } } }, "used twice" },
    { "the health port reused", { ports = { { listen = 8079, original = "1.2.3.4:80" } } }, "used twice" },
    { "an original without a port", { ports = { { listen = 8080, original = "1.2.3.4" } } }, "HOST:PORT" },
    { "an intercepted port without tunnel", { tunnel_upstream = false }, "tunnel_upstream is required" },
    { "a tunnel URL that is not http(s)", { tunnel_upstream = { url = "tcp://x:1" } }, "http:// or https://" },
    { "a session id with spaces", { session = "a b" }, "session id" },
    { "an extra header value NGINX would expand", { tunnel_upstream = { url = "http://127.0.0.1:1",
        extra_headers = { ["X-A"] = "$host" } } }, "without '$'" },
  }
  for _, c in ipairs(bad) do
    it("refuses " .. c[1], function()
      local opts = {
        ports = { { name = "http", port = 80, listen = 8080, original = "10.0.0.7:80", intercept = true } },
        tunnel_upstream = { url = "http://127.0.0.1:3000" },
      }
      for k, v in pairs(c[2]) do opts[k] = v or nil end
      local conf2, err = proxy.render(opts)
      assert.is_nil(conf2)
      assert.truthy(has(err, c[3]), err)
    end)
  end
end)

describe("proxy.render: ports that are not intercepted (stream pass-through)", function()
  local ports = {
    { name = "http", port = 80, listen = 8080, original = "10.0.0.7:80", intercept = true },
    { name = "https", port = 443, listen = 8081, original = "10.0.0.7:443", protocol = "TCP" },
    { name = "dns", port = 53, listen = 8082, original = "10.0.0.7:53", protocol = "UDP" },
  }
  local conf = render{ ports = ports }
  local http_part, stream_part = conf:match("^.-\n(http {.-\n}\n)(.*)$")
  it("splits into an http block and a stream block after it", function()
    assert.truthy(http_part, conf)
    assert.truthy(stream_part:find("^\n# [^\n]*\n.-\nstream {\n"), stream_part)
  end)
  it("renders only the intercepted port as an HTTP server", function()
    assert.truthy(has(http_part, "listen 8080 reuseport;"))
    assert.falsy(has(http_part, "8081"), "8081 in http")
    assert.falsy(has(http_part, "8082"), "8082 in http")
    assert.falsy(has(http_part, "czctl_original_https"))
    assert.falsy(has(http_part, "10.0.0.7:443"))
  end)
  local cases = {
    { "passes a TCP port (TLS) through to its original",
      "    server {\n        listen 8081 reuseport;\n        # Idle connections (pools, long-lived TLS) stay open for an hour.\n"
      .. "        proxy_timeout 3600s;\n        proxy_pass 10.0.0.7:443;\n    }" },
    { "passes a UDP port through on a UDP listener",
      "        listen 8082 udp reuseport;" },
    { "ends idle UDP sessions after a minute", "        proxy_timeout 60s;\n        proxy_pass 10.0.0.7:53;" },
    { "bounds connecting to the original", "    proxy_connect_timeout 10s;" },
    { "logs each connection to stdout", "    access_log /dev/stdout czctl_stream buffer=64k flush=1s;" },
  }
  for _, c in ipairs(cases) do
    it(c[1], function() assert.truthy(has(stream_part, c[2]), stream_part) end)
  end
  it("does not limit UDP replies (any number per datagram)", function()
    assert.falsy(stream_part:find("\n%s*proxy_responses"))
  end)
  it("turns the stream log off with access_log = false", function()
    assert.truthy(has(render{ ports = ports, access_log = false }, "stream {\n    # One line per connection (TCP) or session (UDP) on stdout.\n"
      .. "    log_format czctl_stream"))
    local off = render{ ports = ports, access_log = false }
    assert.falsy(has(off, "czctl_stream buffer"))
  end)
  it("has no stream block when every port is intercepted", function()
    local one = render{ ports = { ports[1] } }
    assert.falsy(has(one, "stream {"))
  end)
  it("passes every port through when none is intercepted", function()
    local none = render{ ports = { { name = "a", listen = 8080, original = "10.0.0.7:80" } }, tunnel_upstream = false }
    assert.truthy(has(none, "stream {"))
    assert.truthy(has(none, "proxy_pass 10.0.0.7:80;"))
    assert.falsy(has(none, "proxy_pass http://"))
  end)
  local bad = {
    { "an SCTP port", { { name = "s", listen = 8080, original = "1.2.3.4:9", protocol = "SCTP" } },
      "protocol SCTP cannot pass through" },
    { "an intercepted UDP port", { { name = "u", listen = 8080, original = "1.2.3.4:9", protocol = "UDP", intercept = true } },
      "only a TCP (HTTP) port can be intercepted" },
  }
  for _, c in ipairs(bad) do
    it("refuses " .. c[1], function()
      local conf2, err = proxy.render{ ports = c[2], tunnel_upstream = { url = "http://127.0.0.1:3000" } }
      assert.is_nil(conf2)
      assert.truthy(has(err, c[3]), err)
    end)
  end
end)

describe("proxy.render: the tunnel's route (in the session's Secret)", function()
  local up = { url = "https://ab12.ngrok-free.app", host_header = "ab12.ngrok-free.app",
               extra_headers = { ["ngrok-skip-browser-warning"] = "1" },
               secret_header = { name = "X-Czctl-Tunnel-Secret", value = string.rep("s3cret", 8) },
               fallback_on = { header = "ngrok-error-code", values = { "ERR_NGROK_3200", "ERR_NGROK_8012" } } }
  local conf, _, files = render{ tunnel_upstream = up }
  local loc, http = files["tunnel-location.conf"] or "", files["tunnel-http.conf"] or ""
  local server_level = conf:match("listen 8080 reuseport;(.-)location /") or ""
  it("keeps the tunnel's URL and secret out of nginx.conf (the ConfigMap)", function()
    assert.falsy(has(conf, "ab12.ngrok-free.app"))
    assert.falsy(has(conf, up.secret_header.value))
  end)
  it("sends the secret header into the tunnel only", function()
    assert.truthy(has(loc, 'proxy_set_header X-Czctl-Tunnel-Secret "' .. up.secret_header.value .. '";'), loc)
  end)
  it("verifies the tunnel's certificate against the image's CA bundle and its name, with SNI", function()
    for _, line in ipairs{ "proxy_ssl_verify on;", "proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;",
                           "proxy_ssl_name ab12.ngrok-free.app;", "proxy_ssl_server_name on;" } do
      assert.truthy(has(http, line), line)
    end
  end)
  it("sends the tunnel's Host on the intercept route only, the original in X-Forwarded-Host", function()
    assert.truthy(has(loc, 'proxy_set_header Host              "ab12.ngrok-free.app";'), loc)
    assert.truthy(has(loc, "proxy_set_header X-Forwarded-Host  $http_host;"))
    assert.truthy(has(server_level, "proxy_set_header Host              $http_host;"), conf)
    assert.falsy(has(server_level, "X-Forwarded-Host"))
  end)
  it("restates the headers of both routes and adds ngrok-skip-browser-warning", function()
    for _, h in ipairs{ "X-Forwarded-For   $proxy_add_x_forwarded_for;", "X-Forwarded-Proto $czctl_forwarded_proto;",
                        "Upgrade           $http_upgrade;", "Connection        $czctl_connection;",
                        'ngrok-skip-browser-warning "1";' } do
      assert.truthy(has(loc, "proxy_set_header " .. h), h)
    end
    assert.falsy(has(server_level, "ngrok-skip-browser-warning"))
  end)
  it("marks only the tunnel's own errors for the fallback, in an inner server", function()
    assert.truthy(has(http, "map $upstream_http_ngrok_error_code $czctl_tunnel_abc123_fallback {"), http)
    assert.truthy(has(http, [["~^(ERR\_NGROK\_3200|ERR\_NGROK\_8012)$" "@czctl_fallback";]]), http)
    assert.truthy(has(http, "add_header X-Accel-Redirect $czctl_tunnel_abc123_fallback always;"))
    assert.truthy(has(http, "proxy_ignore_headers X-Accel-Redirect;"))
    -- on a Unix socket named by the route: routes of a shared proxy never share one
    assert.truthy(has(http, "listen unix:/tmp/czctl-route-abc123.sock;"), http)
    assert.truthy(has(http, "server unix:/tmp/czctl-route-abc123.sock;"), http)
    assert.truthy(has(loc, "proxy_pass http://czctl_tunnel_abc123_inner;"))
  end)
  it("resolves a host name per request on NGINX < 1.27.3 (no keep-alive to it)", function()
    assert.truthy(has(http, "resolver kube-dns.kube-system.svc.cluster.local valid=30s"))
    assert.truthy(has(http, 'map "" $czctl_tunnel_abc123_address {\n    default "ab12.ngrok-free.app:443";'))
    assert.truthy(has(http, "proxy_pass https://$czctl_tunnel_abc123_address;"))
  end)
  it("keeps connections to a re-resolved name on NGINX >= 1.27.3 (the image)", function()
    local _, _, f = render{ tunnel_upstream = up, nginx_version = "1.27.4" }
    local h = f["tunnel-http.conf"]
    -- the upstream's own resolver (an upstream directive since 1.27.3): one per route
    assert.truthy(has(h, "upstream czctl_tunnel_abc123 {\n    zone czctl_tunnel_abc123 64k;\n" ..
                         "    resolver kube-dns.kube-system.svc.cluster.local valid=30s ipv6=off;\n" ..
                         "    server ab12.ngrok-free.app:443 resolve;\n    keepalive 64;"), h)
    assert.truthy(has(h, "proxy_pass https://czctl_tunnel_abc123;"))
  end)
  it("uses a given resolver address, in the location that resolves (never twice in `http {}`)", function()
    local _, _, f = render{ tunnel_upstream = { url = up.url, resolver = "10.96.0.10" } }
    assert.truthy(has(f["tunnel-location.conf"], "resolver 10.96.0.10 valid=30s ipv6=off;\nproxy_pass https://$"))
    assert.falsy(has(f["tunnel-http.conf"], "resolver 10.96.0.10"))
    local _, _, g = render{ tunnel_upstream = { url = up.url, resolver = "10.96.0.10" }, nginx_version = "1.27.4" }
    assert.truthy(has(g["tunnel-http.conf"], "    zone czctl_tunnel_abc123 64k;\n    resolver 10.96.0.10 valid=30s"))
  end)
  it("resolves once at start, with keep-alive, when resolver = false", function()
    local _, _, f = render{ tunnel_upstream = { url = up.url, resolver = false } }
    assert.truthy(has(f["tunnel-http.conf"], "upstream czctl_tunnel_abc123 {\n    server ab12.ngrok-free.app:443;\n    keepalive"))
    assert.falsy(has(f["tunnel-http.conf"], "resolver "))
  end)
  it("keeps connections to an address and checks its name without SNI", function()
    local _, _, f = render{ tunnel_upstream = { url = "https://127.0.0.1:4443" } }
    local h = f["tunnel-location.conf"]
    assert.truthy(has(f["tunnel-http.conf"], "server 127.0.0.1:4443;\n    keepalive 64;"))
    assert.truthy(has(h, "proxy_ssl_name 127.0.0.1;"))
    assert.falsy(has(h, "proxy_ssl_server_name"), "no SNI for an address")
  end)
  it("gives a landing the proxy's client certificate and trusts the session's CA (mutual TLS)", function()
    local pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    local key = "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n"
    local _, _, f = render{ tunnel_upstream = { url = "https://10.1.2.3:4443", keep_host = true,
                                                tls = { ca = pem, client_cert = pem, client_key = key } } }
    local h = f["tunnel-location.conf"]
    for _, line in ipairs{ "proxy_ssl_certificate /etc/czctl-session/tunnel-client.crt;",
                           "proxy_ssl_certificate_key /etc/czctl-session/tunnel-client.key;",
                           "proxy_ssl_trusted_certificate /etc/czctl-session/tunnel-ca.crt;", "proxy_ssl_verify on;",
                           "proxy_set_header Host              $http_host;" } do
      assert.truthy(has(h, line), line)
    end
    assert.equal(key, f["tunnel-client.key"])
    assert.equal(pem, f["tunnel-ca.crt"])
  end)
end)

describe("proxy.route.parse_url: a tunnel URL from any provider", function()
  local refused = {
    { "https://a.example;\n        add_header X-Injected yes", "invalid host" },
    { "https://a.example/;add_header", "has a path" },
    { "https://a.example:99999", "invalid port" },
    { "https://a.example:0", "invalid port" },
    { "https://user@a.example", "invalid host" },
    { "https://a..example", "invalid host" },
    { "https://-a.example", "invalid host" },
    { "https://300.1.1.1", "invalid host" },
    { "https://a.example?x=1", "has a path" },
    { "https://a b.example", "invalid host" },
    { "ftp://a.example", "does not start with http:// or https://" },
    { "https://a\"b.example", "invalid host" },
  }
  for _, c in ipairs(refused) do
    it("refuses " .. c[1]:gsub("\n", "\\n"), function()
      local u, err = proxy.route.parse_url(c[1])
      assert.is_nil(u)
      assert.truthy(has(err, c[2]), err)
      assert.falsy(err:find("\n"), "one line")
    end)
  end
  local accepted = {
    { "https://ab12.ngrok-free.app", "ab12.ngrok-free.app", 443 },
    { "https://ab12.ngrok-free.app/", "ab12.ngrok-free.app", 443 },
    { "http://10.0.0.1:8080", "10.0.0.1", 8080 },
    { "https://[fd00::1]:4443", "[fd00::1]", 4443 },
  }
  for _, c in ipairs(accepted) do
    it("accepts " .. c[1], function()
      local u = assert(proxy.route.parse_url(c[1]))
      assert.equal(c[2], u.host)
      assert.equal(c[3], u.port)
    end)
  end
end)

describe("proxy.describe, proxy.example_request and proxy.example_header", function()
  it("describes the default rule as the header to send", function()
    assert.equal("X-C6O-INTERCEPT: yes", proxy.describe(proxy.from_flags{}))
    assert.same({ headers = { "X-C6O-INTERCEPT: yes" }, path = "/" }, proxy.example_request(proxy.from_flags{}))
    assert.equal("X-C6O-INTERCEPT: yes", proxy.example_header(proxy.from_flags{}))
  end)
  local cases = {
    { "a header", { header = { name = "X-A", equals = "b" } }, { headers = { "X-A: b" }, path = "/" } },
    { "all", { all = true }, { headers = {}, path = "/" } },
    { "a path prefix", { path_prefix = "/api" }, { headers = {}, path = "/api" } },
    { "a cookie under a path", { every = { { cookie = { name = "team", equals = "blue" } },
                                           { path_prefix = "/api/" } } },
      { headers = { "Cookie: team=blue" }, path = "/api/" } },
    { "the first usable alternative", { any = { { header = { name = "X", matches = "^a" } },
                                                { header = { name = "Y", equals = "1" } } } },
      { headers = { "Y: 1" }, path = "/" } },
    { "every part, nothing for not", { every = { { header = { name = "X-Team", equals = "blue" } },
                             { any = { { cookie = { name = "c", equals = "1" } }, { path_prefix = "/a" } } },
                             { ["not"] = { header = { name = "X-Skip", equals = "1" } } } } },
      { headers = { "X-Team: blue", "Cookie: c=1" }, path = "/" } },
  }
  for _, c in ipairs(cases) do
    it("builds an example request for " .. c[1], function() assert.same(c[3], proxy.example_request(c[2])) end)
  end
  it("gives up on a regex-only rule and on paths that cannot both hold", function()
    assert.is_nil(proxy.example_request{ header = { name = "X", matches = "^a" } })
    assert.is_nil(proxy.example_request{ every = { { path_prefix = "/a" }, { path_prefix = "/b" } } })
  end)
  it("names a header only for a one-header rule", function()
    assert.is_nil(proxy.example_header{ all = true })
    assert.is_nil(proxy.example_header{ cookie = { name = "c", equals = "1" } })
  end)
end)
