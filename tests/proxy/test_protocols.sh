#!/usr/bin/env bash
# Issue 12 on the real nginx: a rendered proxy intercepts HTTP/2 and gRPC by
# header (gRPC metadata), every kind of gRPC call with its status, trailers
# and deadline on both routes; h2c clients on both routes; gRPC calls fall
# back to the original when the tunnel is gone; a TLS port intercepted at
# TCP level (--all) through a direct tunnel's landing (mutual TLS) carries
# the TLS session end to end, and new connections reach the original once
# the landing is gone (the route's stand-in, czctl.proxy.route).
#
# Topology (127.0.91.0/24, nothing else uses it):
#   gRPC  original 127.0.91.1:7000   local (acme) 127.0.91.2:7000   local (beta) 127.0.91.3:7000
#   h2c   original 127.0.91.1:8000   local 127.0.91.2:8000 (NGINX, HTTP/2 with prior knowledge)
#   TLS   original 127.0.91.1:7443   local 127.0.91.2:7443 (certificates CN=original, CN=local),
#         behind a landing on 127.0.91.20 (tests/proxy/landing_driver.lua, as --tunnel direct)
#   proxy multi 127.0.91.10 (:8080 grpc, :8081 h2c, :8082 TLS), single 127.0.91.11 (:8080 grpc,
#         its tunnel a landing on 127.0.91.21 in front of the acme server: mutual TLS, grpcs://)
# The full gRPC checks run on the several-sessions proxy; the one-session
# rendering gets them on the sandbox (tests/e2e/test_protocols.sh).
source "$(dirname "$0")/lib.sh"
GRPC=tests/lib/grpc_app.py

T=$(mktemp -d /tmp/czctl-proto-test.XXXXXX)
chmod 755 "$T"
source tests/lib/procs.sh
cleanup() { stop_pids "${PIDS[@]}"; rm -rf "$T"; }
on_exit cleanup

source tests/lib/nginx.sh   # NGINX_G, start_rendered
# 1.25.1+ serves HTTP/1.x and HTTP/2 on one cleartext `http2` listener; older only HTTP/2
nginx_version=$("$NGINX" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
sniffs=$(printf '%s\n1.25.1\n' "$nginx_version" | sort -V | head -1)
[ "$sniffs" = 1.25.1 ] && sniffs=yes || sniffs=no

grpc_server() {  # NAME ADDR:PORT
  python3 "$GRPC" serve "$1" "$2" >"$T/grpc-$1.log" 2>&1 &
  PIDS+=($!)
}
h2c_server() {  # NAME ADDR PORT: NGINX answering every request "NAME" over h2c
  mkdir -p "$T/h2c-$1"
  cat >"$T/h2c-$1/nginx.conf" <<EOF
pid $T/h2c-$1/nginx.pid;
error_log stderr;
events {}
http {
  access_log off;
  client_body_temp_path $T/h2c-$1; proxy_temp_path $T/h2c-$1; fastcgi_temp_path $T/h2c-$1;
  uwsgi_temp_path $T/h2c-$1; scgi_temp_path $T/h2c-$1;
  server { listen $2:$3 http2; location / { return 200 "$1 \$server_protocol\n"; } }
}
EOF
  "$NGINX" -p "$T/h2c-$1" -c "$T/h2c-$1/nginx.conf" -g 'daemon off;' 2>"$T/h2c-$1/error.log" &
  PIDS+=($!)
}
grpc_server original 127.0.91.1:7000
grpc_server acme 127.0.91.2:7000
ACME=$!
grpc_server beta 127.0.91.3:7000
h2c_server original 127.0.91.1 8000
h2c_server local 127.0.91.2 8000
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=original" -keyout "$T/o.key" -out "$T/o.crt" >/dev/null 2>&1
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=local" -keyout "$T/l.key" -out "$T/l.crt" >/dev/null 2>&1
python3 tests/proxy/rawbackend.py https original-tls 127.0.91.1:7443 "$T/o.crt" "$T/o.key" >"$T/tls-o.log" 2>&1 &
PIDS+=($!)
python3 tests/proxy/rawbackend.py https local-tls 127.0.91.2:7443 "$T/l.crt" "$T/l.key" >"$T/tls-l.log" 2>&1 &
PIDS+=($!); LOCAL_TLS=$!
for a in 127.0.91.1:7000 127.0.91.2:7000 127.0.91.3:7000 127.0.91.1:8000 127.0.91.2:8000 127.0.91.1:7443 127.0.91.2:7443; do
  wait_port "${a%:*}" "${a##*:}" || { fail "test server $a starts"; exit 1; }
done
# landing NAME HOST TARGET_HOST:PORT: a landing as the direct tunnel runs it
# (its input a FIFO this script holds open); its tunnel upstream (JSON) in
# UPSTREAM_<NAME>, its pid in LAND_PID_<NAME>
landing() {
  local facts="" fd pid i
  mkfifo "$T/$1.in"
  "$CZCTL" run tests/proxy/landing_driver.lua "$2" "${3##*:}" "${3%:*}" <"$T/$1.in" >"$T/$1.out" 2>"$T/$1.err" &
  pid=$!; PIDS+=("$pid")
  exec {fd}>"$T/$1.in"
  for i in $(seq 200); do facts=$(head -1 "$T/$1.out"); [ -n "$facts" ] && break; sleep 0.05; done
  printf -v "UPSTREAM_$1" '%s' "$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["upstream"]))' \
    "$facts")" || { fail "the landing $1 starts"; sed 's/^/#   /' "$T/$1.err"; exit 1; }
  printf -v "LAND_PID_$1" '%s' "$pid"
}
landing_gone() {  # NAME: the landing ends (its holder is gone)
  local pid="LAND_PID_$1"
  stop_pids "${!pid}"
}
landing tls 127.0.91.20 127.0.91.2:7443
landing acme 127.0.91.21 127.0.91.2:7000

# proxy NAME ADDR SPEC_JSON: render with czctl, nginx -t, start, wait for the health port
# (@DIR@, @ADDR@, and @LANDING_TLS@ and @LANDING_ACME@, the landings' tunnel upstreams, are filled in)
proxy() {
  local name=$1 addr=$2 dir="$T/$1"
  mkdir -p "$dir"
  python3 -c 'import sys
s = sys.argv[1]
for k, v in zip(("@DIR@", "@ADDR@", "@LANDING_TLS@", "@LANDING_ACME@"), sys.argv[2:]): s = s.replace(k, v)
print(s)' "$3" "$dir" "$addr" "$UPSTREAM_tls" "$UPSTREAM_acme" >"$dir/spec.json"
  "$CZCTL" run tests/proxy/render.lua "$dir/spec.json" >"$dir/nginx.conf" 2>"$dir/render.err" ||
    { fail "renders the $name config"; sed 's/^/#   /' "$dir/render.err"; return 1; }
  start_rendered "$dir" "$addr" "nginx $nginx_version accepts the $name config (h2c listener, grpc_pass, stream)"
}

# Three sessions on one proxy: two gRPC routes by metadata, one h2c route, --all on TLS.
proxy multi 127.0.91.10 '{"session": "multi", "runtime_dir": "@DIR@", "listen_address": "@ADDR@",
  "ports": [ {"name": "grpc", "port": 50051, "listen": 8080, "original": "127.0.91.1:7000"},
             {"name": "h2c", "port": 8000, "listen": 8081, "original": "127.0.91.1:8000"},
             {"name": "https", "port": 443, "listen": 8082, "original": "127.0.91.1:7443"} ],
  "routes": [
    {"id": "acme", "port": 50051, "mode": "h2c", "rule": {"header": {"name": "x-tenant", "equals": "acme"}},
     "tunnel_upstream": {"url": "http://127.0.91.2:7000"}},
    {"id": "beta", "port": 50051, "mode": "h2c", "rule": {"header": {"name": "x-tenant", "matches": "^beta-"}},
     "tunnel_upstream": {"url": "http://127.0.91.3:7000"}},
    {"id": "web", "port": 8000, "mode": "h2c", "rule": {"header": {"name": "x-dev", "equals": "me"}},
     "tunnel_upstream": {"url": "http://127.0.91.2:8000"}},
    {"id": "tls", "port": 443, "mode": "tcp", "rule": {"all": true}, "tunnel_upstream": @LANDING_TLS@} ] }'
# One session: the single-route rendering (tests/e2e/test_protocols.sh runs it on the sandbox).
proxy single 127.0.91.11 '{"session": "single", "runtime_dir": "@DIR@", "listen_address": "@ADDR@",
  "flags": {"header": "x-tenant:acme"},
  "ports": [ {"name": "grpc", "port": 50051, "listen": 8080, "original": "127.0.91.1:7000", "intercept": true,
              "mode": "h2c"} ],
  "tunnel_upstream": @LANDING_ACME@}'

# check NAME ADDR:PORT WANT_SERVER [KEY=VALUE...]: every kind of call, answered by WANT_SERVER
check() {
  local what=$1 target=$2 want=$3; shift 3
  local out
  out=$(python3 "$GRPC" check "$target" "$@" 2>&1)
  field() { printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1" 2>/dev/null; }
  like "$(field unary)" "^$want:hi:" "$what: a unary call is answered by $want"
  is "$(field unary_trailer)" "$want" "$what: the unary call's trailer arrives"
  is "$(field server_stream)" "['$want:s:0', '$want:s:1', '$want:s:2']" "$what: a server stream delivers every message"
  is "$(field server_stream_trailer)" "$want" "$what: the server stream's trailer arrives"
  is "$(field client_stream)" "$want:4:a+b+c+d" "$what: a client stream delivers every message"
  is "$(field client_stream_trailer)" "$want" "$what: the client stream's trailer arrives"
  is "$(field bidi)" "['$want:x', '$want:y']" "$what: a bidirectional stream answers each message"
  is "$(field bidi_trailer)" "$want" "$what: the bidirectional stream's trailer arrives"
  is "$(field fail)" "NOT_FOUND: nothing here, said $want" "$what: a gRPC status code and message pass unchanged"
  is "$(field fail_trailer)" "$want" "$what: an error's trailer arrives"
  is "$(field deadline)" "$want:carried" "$what: the server sees the client's 3 s deadline"
  is "$(field sleep)/$(field sleep_ended_within_2s)" "DEADLINE_EXCEEDED/True" \
    "$what: a call past its 0.5 s deadline ends DEADLINE_EXCEEDED at once"
  [ "$(field unary)" = "" ] && printf '%s\n' "$out" | sed 's/^/#   /'
  return 0
}

check "metadata x-tenant: acme" 127.0.91.10:8080 acme x-tenant=acme
is "$(python3 "$GRPC" unary 127.0.91.10:8080 5 x-tenant=beta-7)" '{"beta": 5}' \
  "metadata x-tenant: beta-7 reaches the second session's server (a regex rule)"
check "no metadata" 127.0.91.10:8080 original
is "$(python3 "$GRPC" unary 127.0.91.10:8080 20 x-tenant=other)" '{"original": 20}' \
  "other metadata values reach the original (20 calls on one connection)"
is "$(python3 "$GRPC" unary 127.0.91.11:8080 5 x-tenant=acme)" '{"acme": 5}' "one session: calls with the metadata reach the local server"
is "$(python3 "$GRPC" unary 127.0.91.11:8080 5)" '{"original": 5}' "one session: calls without metadata reach the original"

h2() { curl -sS --max-time 5 --http2-prior-knowledge "$@" 2>&1; }
is "$(h2 -H 'x-dev: me' http://127.0.91.10:8081/)" "local HTTP/2.0" "an h2c client with the header reaches the local server over HTTP/2"
is "$(h2 http://127.0.91.10:8081/)" "original HTTP/2.0" "an h2c client without the header reaches the original over HTTP/2"
if [ "$sniffs" = yes ]; then
  is "$(curl -sS --max-time 5 --http1.1 http://127.0.91.10:8081/ 2>&1)" "original HTTP/2.0" \
    "an HTTP/1.1 client of the h2c port is served too (nginx $nginx_version reads the preface)"
  is "$(curl -sS --max-time 5 --http1.1 -H 'x-dev: me' http://127.0.91.10:8081/ 2>&1)" "local HTTP/2.0" \
    "an HTTP/1.1 client with the header reaches the local server"
else
  ok "# SKIP HTTP/1.1 clients of an h2c port: nginx $nginx_version speaks only HTTP/2 on a cleartext http2 listener (1.25.1+ serves both; docs/decisions.md)"
fi

subject() { openssl s_client -connect "$1" -servername example.test </dev/null 2>/dev/null | openssl x509 -noout -subject 2>/dev/null; }
like "$(subject 127.0.91.10:8082)" "CN ?= ?local" \
  "--all on a TLS port: the client sees the local server's certificate (TLS end to end, through the landing's mutual TLS)"
is "$(curl -sS -k --max-time 5 https://127.0.91.10:8082/ 2>&1)" local-tls "--all on a TLS port: HTTPS requests reach the local server"
like "$(grep -c 'route=intercept' "$T/multi/access.log")" "^[1-9]" "TCP-level intercepts are logged with route=intercept"
stop_pids "$LOCAL_TLS"
# While the landing runs with nothing behind it, it resets a connection once
# its TLS handshake is done (it dials the app only then): whether NGINX still
# counts that as the tunnel's connect failure (the original answers) or the
# connection had been handed on (it is closed) is a race; it never hangs.
like "seen:$(subject 127.0.91.10:8082)" "^seen:(|subject ?= ?CN ?= ?original)$" \
  "--all on a TLS port: landing up, nothing behind it: a connection is closed or reaches the original, at once"
landing_gone tls
like "$(subject 127.0.91.10:8082)" "CN ?= ?original" \
  "--all on a TLS port: once the landing is gone, a new connection reaches the original (the original's certificate)"
is "$(curl -sS -k --max-time 5 https://127.0.91.10:8082/ 2>&1)" original-tls \
  "--all on a TLS port: once the landing is gone, HTTPS requests reach the original"

# ---- h2c fail-open: the tunnel is gone (nothing listens at its address)
stop_pids "$ACME"
# (the same race: a call NGINX had sent is not replayed and fails UNAVAILABLE)
like "$(python3 "$GRPC" unary 127.0.91.11:8080 1 x-tenant=acme 2>&1)" '(StatusCode.UNAVAILABLE|^\{"original": 1\}$)' \
  "landing up, nothing behind it: a call with the metadata fails UNAVAILABLE or is answered by the original, at once"
landing_gone acme
check "tunnel gone, metadata x-tenant: acme (through a TLS landing's stand-in)" 127.0.91.11:8080 original \
  x-tenant=acme
is "$(python3 "$GRPC" unary 127.0.91.11:8080 5 2>&1)" '{"original": 5}' \
  "tunnel gone: gRPC calls without the metadata are answered by the original"
check "tunnel gone, metadata x-tenant: acme, several sessions" 127.0.91.10:8080 original x-tenant=acme
is "$(python3 "$GRPC" unary 127.0.91.10:8080 5 x-tenant=beta-7)" '{"beta": 5}' \
  "tunnel gone: another session's calls still reach its own server"
is "$(python3 "$GRPC" unary 127.0.91.10:8080 5 x-tenant=acme 2>&1)" '{"original": 5}' \
  "tunnel gone, several sessions: gRPC calls with the metadata are answered by the original"
# within NGINX's fail_timeout (10 s) of those failures
grpc_server acme 127.0.91.2:7000
wait_port 127.0.91.2 7000
is "$(python3 "$GRPC" unary 127.0.91.10:8080 5 x-tenant=acme 2>&1)" '{"acme": 5}' \
  "tunnel back: the next calls with the metadata reach the local server at once (the failures did not mark it down)"

done_testing
