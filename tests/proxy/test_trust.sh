#!/usr/bin/env bash
# Tunnels you can trust, on real NGINX with the configuration czctl renders
# (docs/decisions.md sections 2 and 3):
#   - TLS to the tunnel is verified: an endpoint with a certificate of
#     another CA, or for another name, gets no request (and no secret);
#   - fail open: a request that did not reach the developer's app (the app
#     down, the landing gone, ngrok's "upstream unreachable" and "endpoint
#     offline" errors) is answered by the in-cluster version, GET and POST
#     with its body (small, and 3 MB chunked, spilled to a file); the app's
#     own 404 and 500 pass through unchanged, on both tunnels;
#   - connections to the tunnel are reused (one TLS connection for many requests);
#   - on a shared proxy (several sessions' routes in one configuration), each
#     header reaches its own tunnel, and each route falls back on its own.
# The direct tunnel's landing runs with its session's certificates
# (tests/proxy/landing_driver.lua); ngrok is the stand-in (tests/fake-ngrok).
# Every address is on 127.0.93.0/24.
source "$(dirname "$0")/lib.sh"
source tests/lib/procs.sh
source tests/proxy/testca.sh
T=$(mktemp -d /tmp/czctl-trust-test.XXXXXX)
chmod 755 "$T"
stop_all_on_exit "$T"
json() {  # FIELD JSON
  python3 -c 'import json,sys; v=json.loads(sys.argv[2])
for k in sys.argv[1].split("."): v=v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$1" "$2"
}
upstream_of() {  # FACTS -> the provider's upstream, as JSON
  python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["upstream"]))' "$1"
}

ORIGINAL=127.0.93.2:8000 APP=28931 DOWN=28939   # below the ephemeral range (32768-60999); nothing ever listens on DOWN
python3 tests/proxy/backend.py original "$ORIGINAL" >/dev/null 2>&1 & PIDS+=($!)
python3 tests/proxy/backend.py local "127.0.0.1:$APP" >/dev/null 2>&1 & PIDS+=($!)
wait_port 127.0.93.2 8000 && wait_port 127.0.0.1 "$APP" || { echo "Bail out! backends"; exit 1; }
test_ca "$T" && mkdir -p "$T/other" && test_ca "$T/other" &&
  test_cert "$T" right 127.0.93.21 "IP:127.0.93.21" && test_cert "$T" wrongname 127.0.93.99 "IP:127.0.93.99" &&
  test_cert "$T/other" edge 127.0.93.21 "IP:127.0.93.21" || { echo "Bail out! openssl"; exit 1; }

# proxy NAME UPSTREAM_JSON: render a proxy for UPSTREAM into $T/NAME, run it on
# 127.0.93.10:8080 (stopping the previous one); its pid in NGINX_PID.
NGINX_PID=
proxy() {
  local d=$T/$1
  [ -n "$NGINX_PID" ] && stop_pids "$NGINX_PID"
  mkdir -p "$d"
  python3 - "$2" "$d" >"$d/spec.json" <<'EOF'
import json, sys
up, d = json.loads(sys.argv[1]), sys.argv[2]
print(json.dumps({"flags": {}, "session": "trust", "runtime_dir": d, "route_dir": d, "listen_address": "127.0.93.10",
                  "ports": [{"name": "http", "port": 80, "listen": 8080, "original": "127.0.93.2:8000", "intercept": True}],
                  "tunnel_upstream": up}))
EOF
  "$CZCTL" run tests/proxy/render.lua "$d/spec.json" >"$d/nginx.conf" 2>"$d/render.err" || { fail "render $1"; return 1; }
  "$NGINX" -p "$d" -c "$d/nginx.conf" -e stderr -g 'daemon off;' >/dev/null 2>"$d/error.log" &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  wait_port 127.0.93.10 8080
}
# ask [CURL ARGS...] PATH: an intercepted request through the proxy; prints "STATUS BACKEND BODY_LEN"
ask() {
  local path=${*: -1} out
  out=$(curl -s --max-time 20 -H 'X-C6O-INTERCEPT: yes' -o "$T/body" -w '%{http_code}' "${@:1:$#-1}" \
        "http://127.0.93.10:8080$path")
  echo "$out $(sed -n 's/.*"backend": "\([a-z]*\)", "body_len": \([0-9]*\),.*/\1 \2/p' "$T/body")"
}
BIG=$T/big.bin
head -c 3000000 /dev/urandom >"$BIG"

# ---------------------------------------------------------------- TLS verified
secret=s3cretS3cretS3cretS3cretS3cretS3cret
ca_json=$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$T/ca.crt")
# tls_case NAME CERT: an endpoint showing CERT (and its key) on 127.0.93.21:8443
# that logs every request it gets to $T/NAME.log, and a proxy in $T/NAME that
# trusts the test CA and sends the secret; the endpoint's pid in TRAP
tls_case() {
  python3 tests/proxy/tls_trap.py "$2.crt" "$2.key" 127.0.93.21 8443 >"$T/$1.log" 2>&1 &
  TRAP=$!; PIDS+=($TRAP); wait_port 127.0.93.21 8443
  proxy "$1" "{\"url\":\"https://127.0.93.21:8443\",\"tls\":{\"ca\":$ca_json},
    \"secret_header\":{\"name\":\"X-Czctl-Tunnel-Secret\",\"value\":\"$secret\"}}"
}
tls_case other_ca "$T/other/edge"
is "$(ask /a)" "200 original 0" "an endpoint whose certificate is of another CA: the request goes to the in-cluster version"
check "... and the endpoint got no request, so no secret" sh -c "! grep -q GOT '$T/other_ca.log'"
like "$(cat "$T/other_ca/error.log")" "upstream SSL certificate verify error" "... NGINX says why: the certificate does not verify"
stop_pids "$TRAP"
tls_case other_name "$T/wrongname"
is "$(ask /a)" "200 original 0" "an endpoint with a certificate of the right CA for another name: the in-cluster version answers"
check "... and the endpoint got no request" sh -c "! grep -q GOT '$T/other_name.log'"
like "$(cat "$T/other_name/error.log")" 'upstream SSL certificate does not match "127.0.93.21"' "... because the name does not match"
stop_pids "$TRAP"
tls_case right "$T/right"
curl -s --max-time 5 -H 'X-C6O-INTERCEPT: yes' http://127.0.93.10:8080/a >/dev/null
like "$(cat "$T/right.log")" "^GOT GET /a HTTP/1.1 .*x-czctl-tunnel-secret" "the endpoint with the right CA and name gets the request, with the secret"
check "the proxy's nginx.conf names neither the tunnel nor the secret (they are in the route's files)" \
  sh -c "! grep -q -e '127.0.93.21' -e '$secret' '$T/right/nginx.conf'"
stop_pids "$TRAP"

# ---------------------------------------------------------------- the direct tunnel's landing
landing() {  # TARGET_PORT -> starts a landing driver; its facts in FACTS, fds in LAND
  coproc LANDING { exec "$CZCTL" run tests/proxy/landing_driver.lua 127.0.93.21 "$1" 2>>"$T/landing.err"; }
  LAND_OUT=${LANDING[0]} LAND_IN=${LANDING[1]}
  PIDS+=("$LANDING_PID")
  FACTS=""; read -r -t 20 FACTS <&"$LAND_OUT"
}
landing "$APP"
proxy direct "$(upstream_of "$FACTS")"
is "$(ask /a)" "200 local 0" "direct: an intercepted request reaches the app through the landing (mutual TLS)"
for i in 1 2 3 4 5; do ask /a >/dev/null; done
echo stats >&"$LAND_IN"; read -r -t 5 st <&"$LAND_OUT"
is "$(json accepted "$st")" 1 "direct: six requests, one TLS connection to the landing (kept alive)"
is "$(ask -X POST --data-binary @"$BIG" -H 'Transfer-Encoding: chunked' /up)" "200 local 3000000" \
  "direct: a 3 MB chunked POST reaches the app whole"
for s in 404 500; do
  is "$(curl -s --max-time 5 -H 'X-C6O-INTERCEPT: yes' -o /dev/null -w '%{http_code}' http://127.0.93.10:8080/__status/$s)" \
    "$s" "direct: the app's own $s passes through unchanged"
done
exec {LAND_IN}>&-; wait "$LANDING_PID" 2>/dev/null
# the landing is gone: the tunnel's port refuses
for req in "GET|/a|0" "POST 14 bytes|-X POST --data-binary 0123456789abcd /a|14" \
           "POST 3 MB chunked|-X POST --data-binary @$BIG -H Transfer-Encoding:chunked /a|3000000"; do
  IFS='|' read -r what args len <<<"$req"
  # shellcheck disable=SC2086  # args are words
  is "$(ask $args)" "200 original $len" "direct, the landing gone (connection refused): $what is answered by the in-cluster version"
done
landing "$DOWN"
proxy direct_app_down "$(upstream_of "$FACTS")"
is "$(ask /a)" "200 original 0" "direct, the app down (the landing resets): GET is answered by the in-cluster version"
is "$(ask -X POST --data-binary @"$BIG" -H 'Transfer-Encoding: chunked' /a)" "200 original 3000000" \
  "direct, the app down: a 3 MB chunked POST reaches the in-cluster version whole"
exec {LAND_IN}>&-; wait "$LANDING_PID" 2>/dev/null

# ---------------------------------------------------------------- ngrok
test_cert "$T" edge 127.0.93.30 "IP:127.0.93.30"
ngrok() {  # LOCAL_PORT -> starts the stand-in agent (edge on 127.0.93.30); FACTS, AGENT
  coproc DRV { FAKE_NGROK_EDGE_ADDR=127.0.93.30 FAKE_NGROK_CERT=$T/edge.crt FAKE_NGROK_KEY=$T/edge.key \
    FAKE_NGROK_EDGE_LINGER=60 TUNNEL_CA=$T/ca.crt PATH="$ROOT/tests/fake-ngrok:$PATH" \
    exec "$CZCTL" run tests/proxy/ngrok_driver.lua ngrok "$1" 20 2>>"$T/driver.err"; }
  DRV_IN=${DRV[1]}
  PIDS+=("$DRV_PID")
  FACTS=""; read -r -t 30 FACTS <&"${DRV[0]}"
  AGENT=$(json pid "$FACTS")
}
ngrok "$APP"
proxy ngrok "$(upstream_of "$FACTS")"
is "$(ask /a)" "200 local 0" "ngrok: an intercepted request reaches the app"
for s in 404 500; do
  curl -s --max-time 5 -H 'X-C6O-INTERCEPT: yes' -D "$T/h" -o "$T/b" http://127.0.93.10:8080/__status/$s >/dev/null
  is "$(head -1 "$T/h" | cut -d' ' -f2) $(json backend "$(cat "$T/b")")" "$s local" \
    "ngrok: the app's own $s passes through unchanged, body included"
done
check "ngrok: no X-Accel-Redirect reaches the caller" sh -c "! grep -qi x-accel '$T/h'"
is "$(ask -X POST --data-binary @"$BIG" -H 'Transfer-Encoding: chunked' /up)" "200 local 3000000" \
  "ngrok: a 3 MB chunked POST reaches the app whole"
kill -KILL "$AGENT"
# the edge outlives the agent and answers "endpoint offline" (ERR_NGROK_3200)
is "$(curl -s --max-time 5 --cacert "$T/ca.crt" -o /dev/null -w '%{http_code}' -D - "$(json url "$FACTS")/" | tr -d '\r' | grep -i '^ngrok-error-code')" \
  "ngrok-error-code: ERR_NGROK_3200" "ngrok: with the agent killed its edge answers ERR_NGROK_3200 (endpoint offline)"
for req in "GET|/a|0" "POST 14 bytes|-X POST --data-binary 0123456789abcd /a|14" \
           "POST 3 MB chunked|-X POST --data-binary @$BIG -H Transfer-Encoding:chunked /a|3000000"; do
  IFS='|' read -r what args len <<<"$req"
  # shellcheck disable=SC2086
  is "$(ask $args)" "200 original $len" "ngrok, endpoint offline (ERR_NGROK_3200): $what is answered by the in-cluster version"
done
exec {DRV_IN}>&-; wait "$DRV_PID" 2>/dev/null
ngrok "$DOWN"
proxy ngrok_app_down "$(upstream_of "$FACTS")"
for req in "GET|/a|0" "POST 3 MB chunked|-X POST --data-binary @$BIG -H Transfer-Encoding:chunked /a|3000000"; do
  IFS='|' read -r what args len <<<"$req"
  # shellcheck disable=SC2086
  is "$(ask $args)" "200 original $len" "ngrok, the app down (ERR_NGROK_8012): $what is answered by the in-cluster version"
done
# shellcheck disable=SC2046
stop_pids $(cat "$FAKE_NGROK_PIDFILE")
is "$(ask -X POST --data-binary 0123456789abcd /a)" "200 original 14" \
  "ngrok, its edge unreachable too (connection refused): a POST is answered by the in-cluster version"
exec {DRV_IN}>&-; wait "$DRV_PID" 2>/dev/null

# ---------------------------------------------------------------- one proxy, several sessions
# alice's route lands through the direct landing, bob's through the ngrok
# stand-in, carol's on a port nothing listens on; one nginx.conf names them
# by id, each route's files in route_dir/<id>/ as the shared proxy mounts them.
python3 tests/proxy/backend.py bob "127.0.0.1:$((APP + 1))" >/dev/null 2>&1 & PIDS+=($!)
wait_port 127.0.0.1 "$((APP + 1))" || fail "bob's app starts"
landing "$APP"; alice=$(upstream_of "$FACTS")
# (bash warns that the landing's coproc still exists: both run on purpose)
ngrok "$((APP + 1))" 2>/dev/null; bob=$(upstream_of "$FACTS")
d=$T/shared
mkdir -p "$d"
[ -n "$NGINX_PID" ] && stop_pids "$NGINX_PID"
python3 - "$alice" "$bob" "$d" "$DOWN" >"$d/spec.json" <<'EOF'
import json, sys
alice, bob, d, down = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
def dev(v): return {"header": {"name": "X-Dev", "equals": v}}
print(json.dumps({"runtime_dir": d, "route_dir": d, "listen_address": "127.0.93.10",
                  "ports": [{"name": "http", "port": 80, "listen": 8080, "original": "127.0.93.2:8000"}],
                  "routes": [{"id": "alice1", "port": 80, "rule": dev("alice"), "tunnel_upstream": alice},
                             {"id": "bob2", "port": 80, "rule": dev("bob"), "tunnel_upstream": bob},
                             {"id": "carol3", "port": 80, "rule": dev("carol"),
                              "tunnel_upstream": {"url": "http://127.0.0.1:" + down}}]}))
EOF
"$CZCTL" run tests/proxy/render.lua "$d/spec.json" >"$d/nginx.conf" 2>"$d/render.err" || fail "render the shared proxy"
"$NGINX" -p "$d" -c "$d/nginx.conf" -e stderr -g 'daemon off;' >/dev/null 2>"$d/error.log" & NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port 127.0.93.10 8080 || fail "the shared proxy starts"
dev() {  # VALUE [CURL ARGS...]: "STATUS BACKEND BODY_LEN" of a request with X-Dev: VALUE (none for "")
  local v=$1; shift
  curl -s --max-time 20 ${v:+-H "X-Dev: $v"} -o "$T/body" -w '%{http_code}' "$@" http://127.0.93.10:8080/a
  echo " $(sed -n 's/.*"backend": "\([a-z]*\)", "body_len": \([0-9]*\),.*/\1 \2/p' "$T/body")"
}
is "$(dev alice)" "200 local 0" "shared proxy: alice's header reaches her app through her landing (mutual TLS)"
is "$(dev bob -X POST --data-binary 0123456789abcd)" "200 bob 14" "shared proxy: bob's header reaches his app through ngrok"
is "$(dev '')" "200 original 0" "shared proxy: no header: the in-cluster version"
is "$(dev carol)" "200 original 0" "shared proxy: carol's tunnel refuses: her request is answered in the cluster"
check "shared proxy: nginx.conf names no tunnel, no secret, no key (each route's files are apart)" \
  sh -c "! grep -q -e '127.0.93.21' -e '127.0.93.30' -e 'X-Czctl-Tunnel-Secret' -e 'PRIVATE KEY' '$d/nginx.conf' &&
         grep -q 'include $d/bob2/tunnel-location.conf;' '$d/nginx.conf'"
kill -KILL "$AGENT"
is "$(dev bob -X POST --data-binary 0123456789abcd)" "200 original 14" \
  "shared proxy: bob's agent killed (ERR_NGROK_3200): his POST is answered by the in-cluster version"
is "$(dev alice)" "200 local 0" "shared proxy: ... while alice's route still reaches her app"
exec {LAND_IN}>&-; exec {DRV_IN}>&-; wait "$LANDING_PID" "$DRV_PID" 2>/dev/null

done_testing
