#!/usr/bin/env bash
# Issue 10 on the sandbox: only the session's proxy may use the tunnel, and a
# teammate never sees the developer's absence.
#   1. ngrok: a request to the public URL without the session's secret is
#      refused by the agent and never reaches the local app; the proxy's
#      requests arrive, without the secret; the secret is in no output,
#      process argument, the proxy's configuration, the Service's
#      annotations, log or world-readable file (it is in the session's own
#      Secret czctl-route-<id>, mounted into the Service's shared proxy).
#   2. direct: a connection to the landing without the proxy's certificate
#      is refused (from inside the cluster too).
#   4. fail open: with the app stopped, with the agent killed (its edge says
#      ERR_NGROK_3200), requests with the header are answered by the
#      in-cluster version, GET and POST with a body; the app's own 404/500 pass.
#   5. the holder renews a heartbeat Lease: session list shows "tunnel down"
#      with since when (from the Lease, on any machine); `session close
#      --stale` closes only the sessions whose holder is gone;
#   6. a hostile tunnel URL from a custom provider is refused in one line,
#      -l on the agent's own port is refused, the missing-listener warning
#      appears for ngrok too.
source "$(dirname "$0")/lib/common.sh"
FAKE="$E2E_ROOT/tests/fake-ngrok"
export FAKE_NGROK_PIDFILE="$WORK/ngrok.pids" FAKE_NGROK_EDGE_LINGER=120
: >"$FAKE_NGROK_PIDFILE"
stop_fakes() {
  local p
  for p in $(cat "$FAKE_NGROK_PIDFILE" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
}
trap 'stop_fakes; e2e_cleanup' EXIT

sandbox_up
deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
snapshot "$WORK/before.json"
IP=$(cluster_ip demo)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
app_start() {
  python3 "$E2E_ROOT/tests/proxy/backend.py" laptop "127.0.0.1:$PORT" >/dev/null 2>&1 &
  APP_PID=$!; E2E_PIDS+=("$APP_PID")
  wait_for_cmd 20 curl -s -o /dev/null "http://127.0.0.1:$PORT/__stats"
}
app_requests() { curl -s "http://127.0.0.1:$PORT/__stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }
field() { python3 -c 'import json,sys; v=json.loads(sys.argv[2])
for k in sys.argv[1].split("."): v=v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$1" "$2"; }
# ask [CURL ARGS...]: from inside the cluster, with the header: "STATUS WHO"
# (WHO: laptop, demo for an in-cluster pod, - for no JSON answer)
ask() {
  local out code body who
  out=$(in_cluster curl -s --max-time 20 -w '\n%{http_code}' -H 'X-C6O-INTERCEPT: yes' "$@" 2>/dev/null)
  code=${out##*$'\n'} body=${out%$'\n'*}
  who=$(printf '%s' "$body" | python3 -c 'import json,sys
try: d=json.load(sys.stdin); print(d.get("backend") or d.get("pod"))
except Exception: print("-")')
  echo "$code ${who/#demo-*/demo}"
}
app_start

# --- 1. ngrok: only the proxy gets in ---------------------------------------
out=$(PATH="$FAKE:$PATH" "$CZCTL" service intercept demo -l "$PORT" -o json 2>"$WORK/err"); rc=$?
is "$rc" 0 "intercept with ngrok exits 0"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$WORK/err"
id=$(field id "$out"); url=$(field tunnelUrl "$out")
secret=$(kubectl get secret "czctl-route-$id" -o jsonpath='{.data.tunnel-location\.conf}' | base64 -d |
         sed -n 's/^proxy_set_header X-Czctl-Tunnel-Secret "\([a-z0-9]*\)";$/\1/p')
like "$secret" '^[a-z0-9]{48}$' "the session's Secret czctl-route-$id holds the tunnel's secret"
conf=$(kubectl get deployment czctl-proxy-demo -o jsonpath='{.spec.template.spec.volumes[?(@.name=="config")].secret.secretName}')
kubectl get secret "$conf" -o jsonpath='{.data.nginx\.conf}' | base64 -d >"$WORK/nginx.conf"
like "$(grep -c "include /etc/czctl-session/$id/tunnel-location.conf;" "$WORK/nginx.conf")" '^[1-9]' \
  "the shared proxy's configuration includes the route by the session's id"
kubectl get service demo -o yaml >"$WORK/svc.yaml"
check "neither the configuration nor the Service's annotations hold the secret or the tunnel's URL" \
  sh -c "! grep -q -e '$secret' -e '${url#https://}' '$WORK/nginx.conf' '$WORK/svc.yaml'"
check "the secret is in no output of the command" sh -c "! grep -q '$secret' '$WORK/err' && ! printf '%s' '$out' | grep -q '$secret'"
check "nor in any process's arguments" sh -c "! ps -eo args | grep -v grep | grep -q '$secret'"
kubectl logs deployment/czctl-proxy-demo >"$WORK/proxy.log" 2>&1
check "nor in the keeper's, the agent's or the proxy's log" \
  sh -c "! grep -rq '$secret' '$XDG_STATE_HOME'/czctl/sessions/*.log '$WORK/proxy.log'"
is "$(find "$XDG_STATE_HOME/czctl/sessions" -type f -perm /077 | wc -l)" 0 "every local session file is 0600"
is "$("$CZCTL" session list -o json | grep -c "$secret")" 0 "session list does not show it"

before=$(app_requests)
is "$(curl -s --max-time 10 --cacert "$WORK/ca.crt" -o /dev/null -w '%{http_code}' "$url/")" 403 \
  "a request to the public URL without the secret is refused by the agent"
is "$(curl -s --max-time 10 --cacert "$WORK/ca.crt" -o /dev/null -w '%{http_code}' -X POST -d x "$url/admin")" 403 \
  "a POST /admin to the public URL is refused too"
is "$(app_requests)" "$((before + 1))" "neither reached the local app (only this check's own request did)"
answer=$(in_cluster curl -s --max-time 10 -H 'X-C6O-INTERCEPT: yes' "http://$IP/")
is "$(field backend "$answer")" laptop "the proxy's request with the header reaches the local app"
is "$(field headers.x-czctl-tunnel-secret "$answer")" "" "... without the secret"
for s in 404 500; do
  is "$(ask "http://$IP/__status/$s")" "$s laptop" "the app's own $s passes through unchanged"
done

# --- 4. fail open ----------------------------------------------------------
kill -TERM "$APP_PID"; wait "$APP_PID" 2>/dev/null
is "$(ask "http://$IP/")" "200 demo" "the local app stopped (ERR_NGROK_8012): a GET with the header is answered in the cluster"
is "$(ask -X POST --data-binary 0123456789abcd "http://$IP/post")" "200 demo" \
  "the local app stopped: a POST with a body is answered in the cluster"
app_start
is "$(ask "http://$IP/")" "200 laptop" "the app is back: requests reach it again"
agent=$(head -1 "$FAKE_NGROK_PIDFILE")
kill -KILL "$agent"
is "$(curl -s --max-time 10 --cacert "$WORK/ca.crt" -D - -o /dev/null "$url/" | tr -d '\r' | grep -i '^ngrok-error-code')" \
  "ngrok-error-code: ERR_NGROK_3200" "the agent killed: its edge answers endpoint offline (ERR_NGROK_3200)"
is "$(ask "http://$IP/")" "200 demo" "the agent killed: a GET with the header is answered in the cluster"
is "$(ask -X POST --data-binary 0123456789abcd "http://$IP/post")" "200 demo" \
  "the agent killed: a POST with a body is answered in the cluster"
"$CZCTL" session close -q; is "$?" 0 "session close exits 0"
stop_fakes

# --- 2. direct: the landing admits only the proxy ---------------------------
out=$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct -o json 2>"$WORK/err"); rc=$?
is "$rc" 0 "intercept with the direct tunnel exits 0"
landing=$(field tunnelUrl "$out")
like "$landing" "^https://$(host_gateway):[0-9]+$" "the landing speaks TLS"
in_cluster curl -sk --max-time 10 "$landing/" >/dev/null; rc=$?
check "from inside the cluster, a connection without the proxy's certificate is refused (curl exit $rc)" test "$rc" -ne 0
in_cluster curl -s --max-time 10 "http://${landing#https://}/" >/dev/null; rc=$?
check "... and so is plain HTTP (curl exit $rc)" test "$rc" -ne 0
is "$(ask "http://$IP/")" "200 laptop" "the proxy's requests reach the local app"
is "$(ask "http://$IP/__status/500")" "500 laptop" "the app's own 500 passes through"
kill -TERM "$APP_PID"; wait "$APP_PID" 2>/dev/null
is "$(ask -X POST --data-binary 0123456789abcd "http://$IP/post")" "200 demo" \
  "the local app stopped: a POST with the header is answered in the cluster"
app_start
"$CZCTL" session close -q; is "$?" 0 "session close exits 0"

# --- 6. refusals and warnings ------------------------------------------------
mkdir -p "$WORK/lua/czctl/tunnel"
cat >"$WORK/lua/czctl/tunnel/hostile.lua" <<'EOF'
local M = { needs_process = false }
function M.start()
  local url = "https://a.example;\n        add_header X-Injected yes"
  return { url = url, upstream = { url = url }, stop = function() return true end,
           healthy = function() return true end }
end
return M
EOF
LUA_PATH="$WORK/lua/?.lua;;" "$CZCTL" service intercept demo -l "$PORT" --tunnel hostile -q >/dev/null 2>"$WORK/err"; rc=$?
is "$rc" 1 "a custom provider's hostile tunnel URL: exit 1"
like "$(cat "$WORK/err")" 'tunnel URL "https://a\.example;\\n.*has an invalid host' "... refused, naming what is wrong"
is "$(grep -c . "$WORK/err")" 1 "... in one line"
mkdir -p "$WORK/home/.config/ngrok"
web=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: "3"\nagent:\n  web_addr: 127.0.0.1:%s\n' "$web" >"$WORK/home/.config/ngrok/ngrok.yml"
HOME=$WORK/home PATH="$FAKE:$PATH" "$CZCTL" service intercept demo -l "$web" -q >/dev/null 2>"$WORK/err"; rc=$?
is "$rc" 1 "-l on the ngrok agent's own port: exit 1"
like "$(cat "$WORK/err")" "local port $web is the ngrok agent's own port" "... refused, saying why"
is "$(grep -c . "$WORK/err")" 1 "... in one line"
free=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PATH="$FAKE:$PATH" "$CZCTL" service intercept demo -l "$free" >/dev/null 2>"$WORK/err"; rc=$?
is "$rc" 0 "ngrok with nothing listening on the local port still starts"
like "$(cat "$WORK/err")" "nothing listens on 127\.0\.0\.1:$free yet" "... and warns that nothing listens there"
"$CZCTL" session close -q
stop_fakes
# --- 5. heartbeat: tunnel down, --stale ---------------------------------------
sed 's/demo/other/g' "$E2E_ROOT/examples/demo-app.yaml" >"$WORK/other.yaml"
deploy "$WORK/other.yaml" other || fail "a second app deploys"
snapshot "$WORK/before5.json"
a=$(field id "$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct -o json 2>/dev/null)")
b=$(field id "$("$CZCTL" service intercept other -l "$PORT" --tunnel direct -o json 2>/dev/null)")
check "each session's holder creates its heartbeat Lease" \
  wait_for_cmd 30 sh -c "kubectl get lease czctl-$a czctl-$b -o name >/dev/null 2>&1"
like "$("$CZCTL" session list | grep "^$a")" ' active ' "session list: a session whose holder renews its Lease is active"
kill -TERM "$APP_PID"; wait "$APP_PID" 2>/dev/null
check "with the local app stopped, session list shows the tunnel down with since when" \
  wait_for_cmd 60 sh -c "'$CZCTL' session list | grep '^$a' | grep -Eq 'tunnel down since [0-9]{2}:[0-9]{2}:[0-9]{2}Z'"
is "$("$CZCTL" session list -o json | python3 -c 'import json,sys
s=next(s for s in json.load(sys.stdin)["items"] if s["id"]==sys.argv[1]); print(s["state"], bool(s.get("tunnelDownSince")))' "$a")" \
  "tunnel down True" "... and -o json says tunnel down, with tunnelDownSince"
check "... which its holder writes into its heartbeat Lease at the next renewal (other machines see it)" \
  wait_for_cmd 30 sh -c "kubectl get lease czctl-$a -o jsonpath='{.metadata.annotations.czctl\.io/tunnel-down-since}' |
                         grep -Eq '^20[0-9-]+T[0-9:]+Z$'"
app_start
# session b's holder goes away: its keeper is killed, its Lease is left as
# it was last renewed (here: renewed long ago, as after a minute of silence)
keeper=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["keeper_pid"])' "$XDG_STATE_HOME/czctl/sessions/$b.json")
kill -KILL "$keeper"
kubectl patch lease "czctl-$b" --type merge -p '{"spec":{"renewTime":"2020-01-01T00:00:00.000000Z"}}' >/dev/null
like "$("$CZCTL" session list | grep "^$b")" ' holder gone ' "session list shows b's holder gone"
out=$("$CZCTL" session close --stale 2>&1); rc=$?
is "$rc" 0 "session close --stale exits 0"
like "$out" "Closed session $b" "--stale closes the session whose holder is gone"
check "... and only that one: a's Service still routes through its proxy" \
  sh -c "kubectl get service demo -o jsonpath='{.metadata.annotations}' | grep -q '$a'"
check "b's Service is restored and its objects are gone" \
  sh -c "! kubectl get lease/czctl-$b secret/czctl-route-$b deployment/czctl-proxy-other 2>/dev/null | grep -q czctl"
"$CZCTL" session close -q "$a"; is "$?" 0 "session close a exits 0"
snapshot "$WORK/after5.json"
same_snapshot "$WORK/before5.json" "$WORK/after5.json" "after the heartbeat sessions the cluster equals the snapshot"
kubectl delete -f "$WORK/other.yaml" --wait=true >/dev/null 2>&1

snapshot "$WORK/after.json"
same_snapshot "$WORK/before.json" "$WORK/after.json" "after every session the cluster equals the snapshot"
done_testing
