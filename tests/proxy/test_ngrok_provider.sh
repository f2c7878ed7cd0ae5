#!/usr/bin/env bash
# The ngrok tunnel provider (lua/czctl/tunnel/ngrok.lua) against the stand-in
# agent in tests/fake-ngrok: the URL and inspector are learned, traffic
# through the "public" endpoint reaches the local server, the rendered proxy
# sends intercepted requests into the tunnel with the tunnel's Host and
# ngrok-skip-browser-warning, and every failure gives its one-line message and
# leaves no agent running. Only the proxy may use the tunnel: the agent's
# traffic policy refuses a request without the session's secret, and the
# proxy verifies the tunnel's certificate (a CA this test makes). Also the
# direct provider (mutual TLS), and "not installed".
# tests/run: alone
source "$(dirname "$0")/lib.sh"
FAKE_DIR=$ROOT/tests/fake-ngrok

T=$(mktemp -d /tmp/czctl-ngrok-test.XXXXXX)
chmod 755 "$T"
source tests/lib/procs.sh   # PIDS, wait_port, stop_pids, on_exit
source tests/proxy/testca.sh  # test_ca, test_cert
test_ca "$T" && test_cert "$T" edge 127.0.0.1 "IP:127.0.0.1" || { echo "Bail out! openssl cannot make the test CA"; exit 1; }
export FAKE_NGROK_CERT=$T/edge.crt FAKE_NGROK_KEY=$T/edge.key TUNNEL_CA=$T/ca.crt
stop_all_on_exit "$T"
agents_alive() {  # how many stand-in agents started by this test still run
  local n=0 p
  for p in $(cat "$FAKE_NGROK_PIDFILE"); do kill -0 "$p" 2>/dev/null && n=$((n + 1)); done
  echo "$n"
}
json() {  # FIELD JSON
  python3 -c 'import json,sys; v=json.loads(sys.argv[2])
for k in sys.argv[1].split("."): v=v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$1" "$2"
}

python3 tests/proxy/backend.py original 127.0.78.1:8000 >/dev/null 2>&1 & PIDS+=($!)
python3 tests/proxy/backend.py local 127.0.0.1:28111 >/dev/null 2>&1 & PIDS+=($!)
wait_port 127.0.78.1 8000 && wait_port 127.0.0.1 28111 || { fail "test backends start"; done_testing; exit 1; }

# ---------------------------------------------------------------- the happy path
# Keep 4040 busy so the agent moves its web service, as the real one does:
# the provider must read the address from the agent's log, not assume 4040.
python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 4040)); s.listen(1); time.sleep(120)' 2>/dev/null & PIDS+=($!)
wait_port 127.0.0.1 4040 || fail "port 4040 is held for the test"

coproc DRV { PATH="$FAKE_DIR:$PATH" exec "$CZCTL" run tests/proxy/ngrok_driver.lua ngrok 28111 10 2>"$T/driver.err"; }
# bash forgets DRV and DRV_PID as soon as the coprocess ends: keep copies
drv_out=${DRV[0]} drv_in=${DRV[1]} dpid=$DRV_PID
PIDS+=($dpid)
read -r -t 15 facts <&"$drv_out" || facts=""
url=$(json url "$facts")
like "$url" '^https://127\.0\.0\.1:[0-9]+$' "the provider learns the public URL from the agent"
inspector=$(json inspector "$facts")
like "$inspector" '^http://localhost:40[4-9][0-9]$' "the provider reports the inspector URL"
if [ "$(ss -ltnH 'sport = :4040' 2>/dev/null | wc -l)" -ge 1 ] && [ "$inspector" != "http://localhost:4040" ]; then
  ok "the inspector address comes from the agent's log (4040 was busy: $inspector)"
else
  fail "the inspector address comes from the agent's log (got $inspector)"
fi
is "$(curl -sS --max-time 5 "${inspector/localhost/127.0.0.1}/api/tunnels" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tunnels"][0]["public_url"])' 2>/dev/null)" \
  "$url" "the agent API at the inspector address lists the same URL"
pid=$(json pid "$facts")
check "the handle names the agent's pid, which is running" kill -0 "${pid:-0}"
is "$(json upstream.url "$facts")" "$url" "the proxy upstream is the public URL"
is "$(json upstream.host_header "$facts")" "${url#https://}" "the proxy sends the tunnel's own Host (ngrok routes by Host)"
is "$(json upstream.extra_headers.ngrok-skip-browser-warning "$facts")" 1 "the proxy adds ngrok-skip-browser-warning"
like "$(cat "$T/driver.err")" "ngrok tunnel $url -> localhost:28111" "the provider logs the tunnel through opts.log"

stats() { curl -s --max-time 5 http://127.0.0.1:28111/__stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }
before=$(stats)
is "$(curl -s --cacert "$T/ca.crt" --max-time 5 -o /dev/null -w '%{http_code}' "$url/hello")" 403 \
  "a request to the public URL without the secret is refused by the agent (403)"
is "$(curl -s --cacert "$T/ca.crt" --max-time 5 -o /dev/null -w '%{http_code}' -H 'X-Czctl-Tunnel-Secret: guess' \
  -X POST -d x "$url/admin")" 403 "a POST with a wrong secret is refused too"
is "$(stats)" "$((before + 1))" "neither reached the local server (only the /__stats request did)"
secret=$(json upstream.secret_header.value "$facts")
like "$secret" '^[a-z0-9]{48}$' "the session's secret is 48 random letters and digits, for the proxy alone"
is "$(json upstream.secret_header.name "$facts")" X-Czctl-Tunnel-Secret "the proxy sends it as X-Czctl-Tunnel-Secret"
check "the secret is in no argument of the agent" sh -c "! tr '\\0' ' ' </proc/$(json pid "$facts")/cmdline | grep -q '$secret'"
check "nor in the driver's log nor the agent's log" sh -c "! grep -rq '$secret' '$T/driver.err' /tmp/tmp.* 2>/dev/null"
pfile=$(tr '\0' '\n' </proc/"$(json pid "$facts")"/cmdline | sed -n '/^--traffic-policy-file$/{n;p}')
check "the policy file is removed once the agent has read it" test ! -e "$pfile"
got=$(curl -s --cacert "$T/ca.crt" --max-time 5 -H "X-Czctl-Tunnel-Secret: $secret" "$url/hello")
is "$(json backend "$got")" local "with the secret a request reaches the local server"
is "$(json headers.x-czctl-tunnel-secret "$got")" "" "the agent removes the secret before the app sees the request"

# The rendered proxy, sending intercepted traffic into the tunnel.
mkdir -p "$T/proxy"
python3 - "$facts" "$T/proxy" >"$T/proxy/spec.json" <<'EOF'
import json, sys
facts, d = json.loads(sys.argv[1]), sys.argv[2]
print(json.dumps({"flags": {}, "session": "ngrok-test", "runtime_dir": d, "listen_address": "127.0.78.10",
                  "route_dir": d,
                  "ports": [{"name": "http", "port": 80, "listen": 8080, "original": "127.0.78.1:8000", "intercept": True}],
                  "tunnel_upstream": facts["upstream"]}))
EOF
"$CZCTL" run tests/proxy/render.lua "$T/proxy/spec.json" >"$T/proxy/nginx.conf" 2>"$T/proxy/render.err"
check "nginx -t accepts the config rendered for the ngrok tunnel" \
  "$NGINX" -t -q -p "$T/proxy" -c "$T/proxy/nginx.conf" -e "$T/proxy/test.err"
"$NGINX" -p "$T/proxy" -c "$T/proxy/nginx.conf" -e stderr -g 'daemon off;' >/dev/null 2>"$T/proxy/error.log" &
PIDS+=($!)
wait_port 127.0.78.10 8080
answer=$(curl -sS --max-time 5 -H 'Host: shop.example.com' -H 'X-C6O-INTERCEPT: yes' http://127.0.78.10:8080/p)
is "$(json backend "$answer")" local "an intercepted request goes through the proxy and the tunnel to the local server"
is "$(json headers.ngrok-skip-browser-warning "$answer")" 1 "requests into the tunnel carry ngrok-skip-browser-warning"
is "$(json headers.x-forwarded-host "$answer")" shop.example.com "the original Host arrives in X-Forwarded-Host"
is "$(json headers.host "$answer")" "${url#https://}" "the tunnel gets its own Host, so its edge can route the request"
is "$(json headers.x-czctl-tunnel-secret "$answer")" "" "the proxy's secret is removed before the request reaches the app"
check "the proxy's nginx.conf names neither the tunnel nor the secret" \
  sh -c "! grep -q -e '${url#https://}' -e '$secret' '$T/proxy/nginx.conf'"
answer=$(curl -sS --max-time 5 -H 'Host: shop.example.com' http://127.0.78.10:8080/p)
is "$(json backend "$answer")" original "a request without the header still reaches the original"
is "$(json headers.ngrok-skip-browser-warning "$answer")" "" "the original route gets no ngrok header"
is "$(python3 tests/proxy/wsclient.py 127.0.78.10:8080 /ws through-ngrok 'X-C6O-INTERCEPT: yes' 2>&1)" \
  "local:through-ngrok" "a WebSocket round trip works through the proxy and the tunnel"

echo healthy >&"$drv_in"; read -r -t 10 h <&"$drv_out" || h=""
is "$h" healthy "healthy() is true while the agent runs and lists the tunnel"
kill -KILL "$pid" 2>/dev/null
sleep 0.2
echo healthy >&"$drv_in"; read -r -t 10 h <&"$drv_out" || h=""
like "$h" '^unhealthy: ngrok exited because it was killed \(SIGKILL\)' "healthy() reports an agent that died (killed: by its signal)"
echo stop >&"$drv_in"; read -r -t 10 h <&"$drv_out" || h=""
is "$h" stopped "stop() is idempotent"
exec {drv_in}>&-
wait "$dpid" 2>/dev/null

# stop() of a running agent: TERM, reaped.
coproc DRV { PATH="$FAKE_DIR:$PATH" exec "$CZCTL" run tests/proxy/ngrok_driver.lua ngrok 28111 10 2>/dev/null; }
drv_out=${DRV[0]} drv_in=${DRV[1]} dpid=$DRV_PID
PIDS+=($dpid)
read -r -t 15 facts <&"$drv_out" || facts=""
pid=$(json pid "$facts")
echo stop >&"$drv_in"; read -r -t 10 h <&"$drv_out" || h=""
if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && ! [ -e "/proc/$pid" ]; then
  ok "stop() ends the agent and reaps it"
else
  fail "stop() ends the agent and reaps it (pid ${pid:-none})"
fi
exec {drv_in}>&-
wait "$dpid" 2>/dev/null

# ---------------------------------------------------------------- other ways to learn the URL
out=$(FAKE_NGROK_MODE=api-only PATH="$FAKE_DIR:$PATH" "$CZCTL" run tests/proxy/ngrok_driver.lua ngrok 28111 10 </dev/null 2>/dev/null | head -1)
like "$(json url "$out")" '^https://127\.0\.0\.1:' "the URL is learned from /api/tunnels when the log does not carry it"
out=$(FAKE_NGROK_MODE=slow FAKE_NGROK_DELAY=1.5 PATH="$FAKE_DIR:$PATH" "$CZCTL" run tests/proxy/ngrok_driver.lua ngrok 28111 10 </dev/null 2>/dev/null | head -1)
like "$(json url "$out")" '^https://127\.0\.0\.1:' "a slow agent is waited for"
# (each driver stops its agent once its stdin ends, after `head` took the
# line: wait for that rather than a fixed time, which a loaded machine outlasts)
for _ in $(seq 200); do [ "$(agents_alive)" = 0 ] && break; sleep 0.05; done
is "$(agents_alive)" 0 "no agent is left running after the handles are stopped"

# ---------------------------------------------------------------- failures
fails() {  # MODE TIMEOUT WANT_REGEX NAME
  local out rc
  : >"$FAKE_NGROK_PIDFILE.before"
  out=$(FAKE_NGROK_MODE=$1 PATH="$FAKE_DIR:$PATH" "$CZCTL" run tests/proxy/ngrok_driver.lua ngrok 28111 "$2" </dev/null 2>/dev/null)
  rc=$?
  is "$rc" 1 "$4: the start fails"
  like "$out" "$3" "$4: one clear line"
  is "$(printf '%s\n' "$out" | wc -l)" 1 "$4: the message is a single line"
  is "$(agents_alive)" 0 "$4: no agent is left running"
}
fails no-authtoken 10 '^error: ngrok needs an authtoken: run "ngrok config add-authtoken <TOKEN>" \(ERR_NGROK_4018\)$' \
  "no authtoken"
fails exit-early 10 '^error: ngrok exited \(status 1\): failed to start tunnel: Your account is limited to 1 simultaneous ngrok agent sessions\. ERR_NGROK_108$' \
  "an agent that exits early reports its last log line"
fails no-url 1.5 '^error: ngrok did not report a public URL within 1\.5s \(last log line: [a-z ]+\)$' \
  "an agent that never reports a URL"

out=$(PATH=/usr/bin:/bin "$CZCTL" run tests/proxy/ngrok_driver.lua ngrok 28111 5 </dev/null 2>/dev/null)
is "$out" "error: ngrok is not installed: install it from https://ngrok.com/download, or use --tunnel kube (through the Kubernetes API: no account, nothing public) or --tunnel direct" \
  "ngrok not installed: how to install it, or use the kube or direct tunnel"

# ---------------------------------------------------------------- direct, and the registry
# Docker Desktop's name lands on this machine's loopback: portable, so the
# landing is tested here; the detected host is tested on the sandbox (tests/e2e).
coproc DRV { exec "$CZCTL" run tests/proxy/ngrok_driver.lua direct 28111 "" host.docker.internal 2>"$T/direct.err"; }
out=""; read -r -t 20 out <&"${DRV[0]}"
url=$(json url "$out"); lport=${url##*:}
like "$url" '^https://host\.docker\.internal:[0-9]+$' "direct: the URL is the cluster's name for this machine and the landing's port"
is "$(json pid "$out")$(json inspector "$out")" "" "direct: no agent process and no inspector (the landing runs in the session's holder)"
for k in ca client_cert client_key; do json "upstream.tls.$k" "$out" >"$T/direct-$k.pem"; done
chmod 600 "$T"/direct-*.pem
mtls=(--cacert "$T/direct-ca.pem" --cert "$T/direct-client_cert.pem" --key "$T/direct-client_key.pem"
      --resolve "host.docker.internal:$lport:127.0.0.1")
got=$(curl -s --max-time 5 "${mtls[@]}" "https://host.docker.internal:$lport/hello" | python3 -c 'import json,sys; print(json.load(sys.stdin)["backend"])' 2>/dev/null)
is "$got" local "direct: the landing forwards to the local port a peer with the proxy's certificate"
curl -s --max-time 5 --cacert "$T/direct-ca.pem" --resolve "host.docker.internal:$lport:127.0.0.1" \
  "https://host.docker.internal:$lport/hello" >/dev/null
rc=$?
check "direct: a TLS client without the proxy's certificate gets nothing (curl exit $rc)" test "$rc" -ne 0
is "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$lport/hello")" 000 \
  "direct: plain HTTP gets nothing"
echo stop >&"${DRV[1]}"; line=""; read -r -t 10 line <&"${DRV[0]}"
is "$line" stopped "direct: stop (twice) answers"
curl -s --max-time 2 "http://127.0.0.1:$lport/" >/dev/null; is "$?" 7 "direct: after stop the landing is closed"
exec {DRV[1]}>&-; wait "$DRV_PID" 2>/dev/null
like "$(cat "$T/direct.err")" 'log: landing 127\.0\.0\.1:[0-9]+ -> 127\.0\.0\.1:28111' "direct: the landing is logged through opts.log"
check "direct: no warning when something listens" sh -c "! grep -q warning '$T/direct.err'"
out=$("$CZCTL" run tests/proxy/ngrok_driver.lua direct 28119 "" host.docker.internal </dev/null 2>"$T/direct.err" | head -1)
like "$(json url "$out")" '^https://host\.docker\.internal:[0-9]+$' "direct: starts even when nothing listens yet"
like "$(cat "$T/direct.err")" 'warning: nothing listens on 127\.0\.0\.1:28119 yet' "direct: warns when nothing listens yet"
out=$("$CZCTL" run tests/proxy/ngrok_driver.lua direct 28111 "" 127.0.0.1 </dev/null 2>/dev/null)
is "$out" "error: --tunnel-host 127.0.0.1 is this machine's loopback, which pods cannot reach; give the address of this machine that the cluster reaches with --tunnel-host ADDRESS" \
  "direct: the loopback is refused, with what to give instead"
out=$("$CZCTL" run tests/proxy/ngrok_driver.lua direct 28111 "" 192.0.2.254 </dev/null 2>/dev/null)
like "$out" "^error: --tunnel-host 192\.0\.2\.254 is not an address of this machine" "direct: an address of another machine is refused"
out=$("$CZCTL" run tests/proxy/ngrok_driver.lua nosuch 28111 </dev/null 2>/dev/null)
like "$out" '^error: unknown tunnel provider "nosuch" \(built in: ngrok, direct' "an unknown provider is named with the built-in ones"

# A user's provider on package.path (here: the script's directory).
mkdir -p "$T/user/czctl/tunnel"
cat >"$T/user/czctl/tunnel/mine.lua" <<'EOF'
local M = {}
function M.start(opts)
  local url = "http://127.0.0.1:" .. opts.local_port
  return { url = url, upstream = { url = url }, stop = function() return true end,
           healthy = function() return true end }
end
return M
EOF
cp tests/proxy/ngrok_driver.lua "$T/user/driver.lua"
out=$("$CZCTL" run "$T/user/driver.lua" mine 28111 </dev/null 2>/dev/null | head -1)
is "$(json url "$out")" "http://127.0.0.1:28111" "a user's provider module on package.path is found by name"

done_testing
