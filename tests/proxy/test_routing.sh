#!/usr/bin/env bash
# The rendered intercept proxy, run by the real nginx against test backends on
# loopback addresses: which requests reach the local server and which the
# original, on every kind of rule; pass-through ports; headers both routes
# must carry; WebSocket; a 5 MiB streamed upload; upstream keep-alive.
#
# Topology (127.0.77.0/24, nothing else uses it):
#   original backend  127.0.77.1:8000   second port's original 127.0.77.1:9000
#   local backend     127.0.77.2:3000   (the "tunnel": direct upstream)
#   not HTTP          127.0.77.1:9443 HTTPS, :9025 TCP (server speaks first), :9053 UDP
#   proxy N           127.0.77.(10+N):8080 intercepted, :8081 pass-through (HTTP),
#                     :8082 HTTPS, :8083 TCP, :8084 UDP pass-through, :8079 health
source "$(dirname "$0")/lib.sh"

T=$(mktemp -d /tmp/czctl-proxy-test.XXXXXX)
chmod 755 "$T"   # nginx workers (nobody) write temp files below it
source tests/lib/procs.sh   # PIDS, wait_port, stop_pids, on_exit
cleanup() {
  stop_pids "${PIDS[@]}"
  rm -rf "$T"
}
on_exit cleanup

start_backend() {  # NAME ADDR:PORT
  python3 tests/proxy/backend.py "$1" "$2" >"$T/backend-$1.log" 2>&1 &
  PIDS+=($!)
  wait_port "${2%:*}" "${2##*:}"
}

start_backend original 127.0.77.1:8000
start_backend original-metrics 127.0.77.1:9000
start_backend local 127.0.77.2:3000

# Ports that are not HTTP: HTTPS (self-signed), a server-speaks-first TCP
# protocol, UDP. They must pass through the proxy byte for byte.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=czctl-test-original" \
  -keyout "$T/tls.key" -out "$T/tls.crt" >/dev/null 2>&1 || fail "openssl makes a test certificate"
python3 tests/proxy/rawbackend.py https original-tls 127.0.77.1:9443 "$T/tls.crt" "$T/tls.key" >"$T/backend-tls.log" 2>&1 &
PIDS+=($!)
python3 tests/proxy/rawbackend.py banner original-banner 127.0.77.1:9025 >"$T/backend-banner.log" 2>&1 &
PIDS+=($!)
python3 tests/proxy/rawbackend.py udp original-udp 127.0.77.1:9053 >"$T/backend-udp.log" 2>&1 &
PIDS+=($!)
wait_port 127.0.77.1 9443; wait_port 127.0.77.1 9025

source tests/lib/nginx.sh   # NGINX_G, start_rendered

N=0
# proxy NAME RULE_JSON_FIELDS [EXTRA_JSON_FIELDS]: render with czctl, nginx -t,
# start, wait for the health port. Sets ADDR_<NAME>.
proxy() {
  local name=$1 rulefields=$2 extra=${3:-}
  N=$((N + 1))
  local addr="127.0.77.$((10 + N))" dir="$T/$name"
  printf -v "ADDR_$name" '%s' 127.0.77.254   # nothing listens there until the proxy runs
  mkdir -p "$dir"
  cat >"$dir/spec.json" <<EOF
{ $rulefields,
  "session": "test-$name", "runtime_dir": "$dir", "listen_address": "$addr",
  "ports": [ {"name": "http", "port": 80, "listen": 8080, "original": "127.0.77.1:8000", "intercept": true},
             {"name": "metrics", "port": 9090, "listen": 8081, "original": "127.0.77.1:9000", "intercept": false},
             {"name": "https", "port": 443, "listen": 8082, "original": "127.0.77.1:9443"},
             {"name": "smtp", "port": 25, "listen": 8083, "original": "127.0.77.1:9025", "protocol": "TCP"},
             {"name": "dns", "port": 53, "listen": 8084, "original": "127.0.77.1:9053", "protocol": "UDP"} ],
  "tunnel_upstream": {"url": "http://127.0.77.2:3000"} ${extra:+, $extra} }
EOF
  if ! "$CZCTL" run tests/proxy/render.lua "$dir/spec.json" >"$dir/nginx.conf" 2>"$dir/render.err"; then
    fail "renders the $name config"; sed 's/^/#   /' "$dir/render.err"; return 1
  fi
  start_rendered "$dir" "$addr" "nginx -t accepts the $name config" || return 1
  wait_port "$addr" 8080 || { fail "$name proxy starts"; cat "$dir/error.log"; return 1; }
  printf -v "ADDR_$name" '%s' "$addr"
}

# backend_of ADDR:PORT PATH [curl args...]: which backend answered
backend_of() {
  local target=$1 path=$2; shift 2
  curl -sS --max-time 10 "$@" "http://$target$path" | python3 -c 'import json,sys; print(json.load(sys.stdin)["backend"])' 2>/dev/null
}
field_of() {  # FIELD ADDR:PORT PATH [curl args...]: a field of the JSON answer
  local field=$1 target=$2 path=$3; shift 3
  curl -sS --max-time 10 "$@" "http://$target$path" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); v=d
for k in sys.argv[1].split("."): v=v.get(k, "") if isinstance(v, dict) else ""
print(v)' "$field" 2>/dev/null
}
route() {  # NAME PROXY_ADDR WANT PATH [curl args...]
  local name=$1 addr=$2 want=$3 path=$4; shift 4
  is "$(backend_of "$addr:8080" "$path" "$@")" "$want" "$name"
}

# ---------------------------------------------------------------- default header
proxy default '"flags": {}'
A=$ADDR_default
route "the default header X-C6O-INTERCEPT: yes reaches the local server" "$A" local / -H 'X-C6O-INTERCEPT: yes'
route "a request without the header reaches the original" "$A" original /
route "the header name matches case-insensitively" "$A" local / -H 'x-c6o-intercept: yes'
route "the header value matches exactly: YES is not yes" "$A" original / -H 'X-C6O-INTERCEPT: YES'
route "a value that only starts with the expected one does not match" "$A" original / -H 'X-C6O-INTERCEPT: yess'
route "a value that only ends with the expected one does not match" "$A" original / -H 'X-C6O-INTERCEPT: ayes'
is "$(backend_of "$A:8081" / -H 'X-C6O-INTERCEPT: yes')" original-metrics \
  "the port that is not intercepted passes through to its original even with the header"
is "$(backend_of "$A:8081" /)" original-metrics "the pass-through port answers without the header"
is "$(curl -sS --max-time 5 "http://$A:8079/healthz")" ok "the health endpoint answers ok on its own port"

# ---------------------------------------------------------------- ports that are not HTTP
is "$(curl -sS -k --max-time 5 "https://$A:8082/" -H 'X-C6O-INTERCEPT: yes' 2>&1)" original-tls \
  "an HTTPS port passes through to its original (TLS not terminated by the proxy)"
subject=$(openssl s_client -connect "$A:8082" </dev/null 2>/dev/null | openssl x509 -noout -subject 2>/dev/null)
like "$subject" "CN ?= ?czctl-test-original" "the TLS client sees the original's own certificate"
is "$(python3 tests/proxy/rawbackend.py banner-client "$A:8083" 'EHLO me' 2>&1 | tr '\n' '|')" \
  "original-banner ready|original-banner:EHLO me|" \
  "a TCP protocol where the server speaks first passes through byte for byte"
is "$(python3 tests/proxy/rawbackend.py udp-client "$A:8084" ping 2>&1)" "original-udp:ping" \
  "a UDP port passes datagrams through to its original and back"
before=$(field_of requests 127.0.77.1:8000 /__stats)
curl -sS --max-time 5 -o /dev/null "http://$A:8079/healthz"
after=$(field_of requests 127.0.77.1:8000 /__stats)
is "$after" "$((before + 1))" "probing the health endpoint never reaches the application"

# ---------------------------------------------------------------- headers on both routes
for r in local original; do
  hdr=(); [ "$r" = local ] && hdr=(-H 'X-C6O-INTERCEPT: yes')
  is "$(field_of headers.host "$A:8080" / -H 'Host: shop.example.com' "${hdr[@]}")" shop.example.com \
    "the $r route keeps the original Host"
  like "$(field_of headers.x-forwarded-for "$A:8080" / -H 'X-Forwarded-For: 203.0.113.9' "${hdr[@]}")" \
    '^203\.0\.113\.9, 127\.0\.0\.1$' "the $r route appends the client to X-Forwarded-For"
  is "$(field_of headers.x-forwarded-proto "$A:8080" / "${hdr[@]}")" http "the $r route sets X-Forwarded-Proto"
  # the Host itself is kept, so no X-Forwarded-Host is added (a client's passes through)
  is "$(field_of headers.x-forwarded-host "$A:8080" / -H 'Host: shop.example.com' "${hdr[@]}")" "" \
    "the $r route keeps the Host, so adds no X-Forwarded-Host"
  is "$(field_of headers.x-forwarded-host "$A:8080" / -H 'X-Forwarded-Host: edge.example.com' "${hdr[@]}")" \
    edge.example.com "the $r route passes a client's X-Forwarded-Host through"
  is "$(field_of headers.connection "$A:8080" / "${hdr[@]}")" "" \
    "the $r route sends no Connection: close upstream (keep-alive)"
done

# ---------------------------------------------------------------- requests arrive as sent
for r in local original; do
  hdr=(); [ "$r" = local ] && hdr=(-H 'X-C6O-INTERCEPT: yes')
  is "$(field_of method "$A:8080" '/a/b?x=1&y=%2F' -X PUT -d 'k=v' "${hdr[@]}") $(field_of path "$A:8080" '/a/b?x=1&y=%2F' -X PUT "${hdr[@]}")" \
    'PUT /a/b?x=1&y=%2F' "the $r route keeps the method, path and query"
  # the intercept route is reached through an internal 418 (error_page); an
  # application's own 418 must still reach the client as the application sent it
  got=$(curl -sS --max-time 10 -o "$T/status.json" -w '%{http_code}' "${hdr[@]}" "http://$A:8080/__status/418")
  is "$got $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["backend"])' "$T/status.json" 2>/dev/null)" \
    "418 $r" "an application's own 418 reaches the client unchanged on the $r route"
done

# ---------------------------------------------------------------- WebSocket
is "$(python3 tests/proxy/wsclient.py "$A:8080" /ws hello 'X-C6O-INTERCEPT: yes' 2>&1)" "local:hello" \
  "a WebSocket round trip works on the intercept route"
is "$(python3 tests/proxy/wsclient.py "$A:8080" /ws hello 2>&1)" "original:hello" \
  "a WebSocket round trip works on the original route"
is "$(python3 tests/proxy/wsclient.py "$A:8081" /ws hi 2>&1)" "original-metrics:hi" \
  "a WebSocket round trip works on a pass-through port"

# ---------------------------------------------------------------- 5 MiB uploads
head -c $((5 * 1024 * 1024)) /dev/urandom >"$T/upload.bin"
sum=$(sha256sum "$T/upload.bin" | cut -d' ' -f1)
buffered() { grep -c 'a client request body is buffered to a temporary file' "$T/default/error.log"; }
for r in local original; do
  hdr=(); [ "$r" = local ] && hdr=(-H 'X-C6O-INTERCEPT: yes')
  before=$(buffered)
  out=$(curl -sS --max-time 30 --data-binary @"$T/upload.bin" "${hdr[@]}" "http://$A:8080/upload")
  got=$(printf '%s' "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["backend"], d["body_len"], d["body_sha256"])' 2>/dev/null)
  is "$got" "$r $((5 * 1024 * 1024)) $sum" "a 5 MiB upload reaches the $r route intact (sha256)"
  out=$(curl -sS --max-time 30 -H 'Transfer-Encoding: chunked' --data-binary @"$T/upload.bin" "${hdr[@]}" "http://$A:8080/upload")
  got=$(printf '%s' "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["backend"], d["body_len"], d["body_sha256"])' 2>/dev/null)
  is "$got" "$r $((5 * 1024 * 1024)) $sum" "a chunked 5 MiB upload reaches the $r route intact"
  if [ "$r" = original ]; then
    is "$(buffered)" "$before" "request bodies to the original are streamed, not buffered to disk"
  else
    # decisions section 3: kept (in /tmp) so a request the tunnel cannot deliver can go to the original
    is "$(buffered)" "$((before + 2))" "request bodies into the tunnel are kept in a file for the fallback"
  fi
done

# ---------------------------------------------------------------- upstream keep-alive
for r in local original; do
  hdr=(); [ "$r" = local ] && hdr=(-H 'X-C6O-INTERCEPT: yes')
  be=127.0.77.1:8000; [ "$r" = local ] && be=127.0.77.2:3000
  c0=$(field_of connections "$be" /__stats)
  for _ in $(seq 40); do curl -sS --max-time 5 -o /dev/null "${hdr[@]}" "http://$A:8080/"; done
  c1=$(field_of connections "$be" /__stats)
  # 40 client connections, one after the other; with keep-alive the proxy
  # (one worker) reuses one upstream connection; the /__stats probes add their own.
  used=$((c1 - c0 - 1))
  if [ "$used" -le 1 ]; then ok "the $r route reuses upstream connections (40 requests, $used new connections)"
  else fail "the $r route reuses upstream connections (40 requests, $used new connections)"; fi
done

grep -q 'route=intercept upstream=127.0.77.2:3000' "$T/default/access.log" 2>/dev/null ||
  sleep 1.2   # the access log is flushed every second
like "$(grep -c 'route=intercept upstream=127.0.77.2:3000' "$T/default/access.log")" '^[1-9]' \
  "the access log names the route and the upstream of each intercepted request"
# (HTTP lines carry the request; the pass-through ports' connection lines do not)
is "$(grep -cE '"(GET|POST) [^"]*" [0-9]+ [0-9]+ route=original' "$T/default/access.log")" 0 \
  "the access log leaves out the original route's requests"

# ---------------------------------------------------------------- custom -x header
proxy custom '"flags": {"header": "X-Dev-User:  alice "}'
A=$ADDR_custom
route "a custom -x header routes to the local server (value trimmed)" "$A" local / -H 'X-Dev-User: alice'
route "the default header does nothing when -x names another" "$A" original / -H 'X-C6O-INTERCEPT: yes'
route "a different value of the custom header reaches the original" "$A" original / -H 'X-Dev-User: bob'

proxy colon '"flags": {"header": "X-Target:http://a:b"}'
route "-x splits at the first colon: the value keeps its own colons" "$ADDR_colon" local / -H 'X-Target: http://a:b'

proxy special '"rule": {"header": {"name": "X-Odd", "equals": "a\"b$c{;} .*+?[x]\\\\ é"}}'
route "a value with quotes, \$, braces, regex and non-ASCII characters matches literally" "$ADDR_special" local / \
  -H 'X-Odd: a"b$c{;} .*+?[x]\\ é'
route "the same value with a regex-like difference does not match" "$ADDR_special" original / \
  -H 'X-Odd: a"b$c{;} x*+?[x]\\ é'

# The longest values a rule may hold (1024 bytes), of the characters that are
# escaped most (each one doubled in the map's regular expression, quoted in
# `if`): NGINX reads each parameter into a 4 KiB buffer, and both still fit.
long_map=$(printf '$.%.0s' $(seq 512))     # with '$': compared in a map
long_if=$(printf '".%.0s' $(seq 512))      # without: compared in if
proxy longmap "\"rule\": {\"header\": {\"name\": \"X-Long\", \"equals\": \"$long_map\"}}"
route "a 1024-byte value of escaped characters matches in a map" "$ADDR_longmap" local / -H "X-Long: $long_map"
proxy longif "\"rule\": {\"header\": {\"name\": \"X-Long\", \"equals\": \"${long_if//\"/\\\"}\"}}"
route "a 1024-byte value of quotes matches in if" "$ADDR_longif" local / -H "X-Long: $long_if"

# (without '$' the value is compared in `if` instead of a map: the same literal match)
proxy literal '"rule": {"header": {"name": "X-Odd", "equals": "a\"b.c{;} *+?[x]\\\\ é"}}'
route "a value with quotes, braces, regex and non-ASCII characters compared in if matches literally" "$ADDR_literal" local / \
  -H 'X-Odd: a"b.c{;} *+?[x]\\ é'
route "a value differing in one regex-like character does not match in if" "$ADDR_literal" original / \
  -H 'X-Odd: a"bxc{;} *+?[x]\\ é'
route "a value differing in case does not match in if" "$ADDR_literal" original / -H 'X-Odd: A"b.c{;} *+?[x]\\ é'

proxy underscore '"rule": {"header": {"name": "X_Team", "equals": "blue"}}'
route "a header name with an underscore still routes (underscores_in_headers)" "$ADDR_underscore" local / \
  -H 'X_Team: blue'

# ---------------------------------------------------------------- --all
proxy all '"flags": {"all": true}'
route "--all sends a request without any header to the local server" "$ADDR_all" local /
is "$(backend_of "$ADDR_all:8081" /)" original-metrics "--all leaves the other ports to the original"

# ---------------------------------------------------------------- regex
proxy regex '"rule": {"header": {"name": "X-Version", "matches": "^v2(\\.[0-9]+)?$"}}'
route "a header matching the regular expression routes to local" "$ADDR_regex" local / -H 'X-Version: v2.1'
route "a header not matching the regular expression goes to the original" "$ADDR_regex" original / -H 'X-Version: v3'
route "regular expressions are case-sensitive" "$ADDR_regex" original / -H 'X-Version: V2'

# ---------------------------------------------------------------- cookie
proxy cookie '"rule": {"cookie": {"name": "dev", "equals": "me"}}'
route "a matching cookie among others routes to local" "$ADDR_cookie" local / -H 'Cookie: a=1; dev=me; b=2'
route "a matching cookie alone routes to local" "$ADDR_cookie" local / -H 'Cookie: dev=me'
route "a cookie value differing in case goes to the original" "$ADDR_cookie" original / -H 'Cookie: dev=ME'
route "a cookie whose name only ends with the name goes to the original" "$ADDR_cookie" original / -H 'Cookie: xdev=me'
route "a cookie whose value only starts with the value goes to the original" "$ADDR_cookie" original / -H 'Cookie: dev=meh'

# ---------------------------------------------------------------- path prefix
proxy path '"rule": {"path_prefix": "/api/"}'
route "a path under the prefix routes to local" "$ADDR_path" local /api/users
route "a path outside the prefix goes to the original" "$ADDR_path" original /web/api/
route "the prefix is matched on the normalised path" "$ADDR_path" local '/x/../api/v1' --path-as-is
is "$(field_of path "$ADDR_path:8080" '/api/a?q=1%2F2')" '/api/a?q=1%2F2' "the request URI is passed upstream unchanged"

# ---------------------------------------------------------------- combined
proxy every '"rule": {"every": [ {"header": {"name": "X-Team", "equals": "blue"}},
                                   {"any": [ {"cookie": {"name": "canary", "equals": "1"}}, {"path_prefix": "/api/"} ]},
                                   {"not": {"header": {"name": "X-Skip", "equals": "1"}}} ]}'
A=$ADDR_every
route "every: header and path both match -> local" "$A" local /api/x -H 'X-Team: blue'
route "every: header and cookie both match -> local" "$A" local /web -H 'X-Team: blue' -H 'Cookie: canary=1'
route "every: the header alone is not enough" "$A" original /web -H 'X-Team: blue'
route "every: the path alone is not enough" "$A" original /api/x
route "every: a negated part that matches keeps the request on the original" "$A" original /api/x \
  -H 'X-Team: blue' -H 'X-Skip: 1'
proxy any '"rule": {"any": [ {"header": {"name": "X-A", "equals": "1"}}, {"header": {"name": "X-B", "equals": "1"}} ]}'
route "any: the first alternative routes to local" "$ADDR_any" local / -H 'X-A: 1'
route "any: the second alternative routes to local" "$ADDR_any" local / -H 'X-B: 1'
route "any: neither goes to the original" "$ADDR_any" original / -H 'X-A: 2'

# ---------------------------------------------------------------- debug route header
proxy debug '"flags": {}' '"route_header": true'
like "$(curl -sS -D - -o /dev/null -H 'X-C6O-INTERCEPT: yes' "http://$ADDR_debug:8080/")" 'X-Czctl-Route: intercept' \
  "with route_header the response says the intercept route"
like "$(curl -sS -D - -o /dev/null "http://$ADDR_debug:8080/")" 'X-Czctl-Route: original' \
  "with route_header the response says the original route"
if curl -sS -D - -o /dev/null -H 'X-C6O-INTERCEPT: yes' "http://$ADDR_default:8080/" | grep -qi 'x-czctl-route'; then
  fail "by default no X-Czctl-Route header leaks to clients"
else
  ok "by default no X-Czctl-Route header leaks to clients"
fi

# ---------------------------------------------------------------- no keepalive variant is different
proxy nokeep '"flags": {}' '"upstream_keepalive": 0'
c0=$(field_of connections 127.0.77.1:8000 /__stats)
for _ in $(seq 10); do curl -sS --max-time 5 -o /dev/null "http://$ADDR_nokeep:8080/"; done
c1=$(field_of connections 127.0.77.1:8000 /__stats)
is "$((c1 - c0 - 1))" 10 "with upstream_keepalive = 0 every request opens an upstream connection (the bench baseline)"

# ---------------------------------------------------------------- DNS at load time
# A tunnel named by host (ngrok) must not stop NGINX from starting when DNS
# fails: by default the name is resolved per request through `resolver`.
mkdir -p "$T/dns"
cat >"$T/dns/spec.json" <<EOF
{ "flags": {}, "session": "dns", "runtime_dir": "$T/dns", "listen_address": "127.0.77.99",
  "ports": [ {"name": "http", "port": 80, "listen": 8080, "original": "127.0.77.1:8000", "intercept": true} ],
  "tunnel_upstream": {"url": "https://no-such-tunnel.invalid", "resolver": "127.0.0.1",
                      "extra_headers": {"ngrok-skip-browser-warning": "1"}} }
EOF
"$CZCTL" run tests/proxy/render.lua "$T/dns/spec.json" >"$T/dns/nginx.conf" 2>/dev/null
check "a tunnel host name that does not resolve does not fail nginx -t (resolved per request)" \
  "$NGINX" -t -q -p "$T/dns" -c "$T/dns/nginx.conf" -e "$T/dns/test.err"
# (resolver = false would make nginx -t resolve the name at load; not run here,
# since that lookup would leave 127.0.0.0/8. proxy_spec.lua checks that config.)

done_testing
