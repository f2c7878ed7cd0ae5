#!/usr/bin/env bash
# czctl.kube against the sandbox cluster: get/list/create/patch/delete/watch,
# Status errors (404, 409 AlreadyExists, 409 Conflict, 422, 401, 403, 410),
# tls-server-name, connection reuse (tests/kube/client_checks.lua), no token
# in --verbose output or error messages, and names client-go refuses
# (".", "..", '/', '%') refused before any request, in kubectl's words.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
source tests/lib/tap.sh
CZCTL=${CZCTL:-$ROOT/czctl}
source tests/lib/sandbox.sh
sandbox_up   # sets D (cluster in $D/sb) and SANDBOX_SERVER; stopped on exit
KC="$D/sb/kubeconfig"
k() { kubectl --kubeconfig "$KC" "$@" >/dev/null; }
server=$SANDBOX_SERVER
k config set-credentials bad --token=not-the-token
k config set-context bad --cluster=sandbox --user=bad
k config set-cluster sni-good --server="$server" --certificate-authority="$D/sb/ca.crt" --tls-server-name=localhost
k config set-context sni-good --cluster=sni-good --user=admin
k config set-cluster sni-bad --server="$server" --certificate-authority="$D/sb/ca.crt" --tls-server-name=wrong.example
k config set-context sni-bad --cluster=sni-bad --user=admin

"$CZCTL" run tests/kube/client_checks.lua "$KC" >"$D/out" 2>"$D/err"
rc=$?
cat "$D/out"
if [ $rc -ne 0 ] && ! grep -q '^not ok' "$D/out"; then
  fail "client checks exited with $rc"; sed 's/^/#   /' "$D/err" | tail -5
fi
# in-cluster configuration: nothing configured, service account files + env
mkdir -p "$D/sa" "$D/emptyhome"
kubectl --kubeconfig "$KC" config view --raw -o jsonpath='{.users[?(@.name=="admin")].user.token}' > "$D/sa/token"
cp "$D/sb/ca.crt" "$D/sa/ca.crt"
echo kube-system > "$D/sa/namespace"
port=${server##*:}
cat > "$D/incluster.lua" <<'LUA'
local kube = require "czctl.kube"
local c, err = kube.connect{}
if not c then print("error " .. tostring(err)) return end
local ns, gerr = c:get("Namespace", c.namespace)
print(c:info().in_cluster, c.namespace, c:info().auth, ns and ns.metadata.name or tostring(gerr))
LUA
out=$(env -u KUBECONFIG HOME="$D/emptyhome" KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$port" \
      CZCTL_SERVICEACCOUNT_DIR="$D/sa" "$CZCTL" run "$D/incluster.lua" 2>&1)
is "$out" "$(printf 'true\tkube-system\ttokenFile\tkube-system')" "in-cluster config (token file, CA, namespace file) reaches the API server"

# signals interrupt blocking calls at once: a watch waiting for events, and a
# request the server stalls (fault injection) for 20 s
cat > "$D/block.lua" <<'LUA'
local kube = require "czctl.kube"
local c = assert(kube.connect{ kubeconfig = arg[1] })
io.stdout:write("ready\n"); io.stdout:flush()
local obj, err
if arg[2] == "watch" then
  obj, err = c:watch("ConfigMap", {}, function() return false end)
else
  obj, err = c:get("Namespace", "default")
end
io.stderr:write("interrupted=", tostring(kube.interrupted(err)), "\n")
error(err, 0)
LUA
interrupt() { # what signal -> "rc seconds"
  local fifo="$D/fifo.$1" t0 t1 pid rc
  mkfifo "$fifo"
  "$CZCTL" run "$D/block.lua" "$KC" "$1" >"$fifo" 2>"$D/block.$1.err" &
  pid=$!
  read -r _ <"$fifo"
  sleep 0.5
  t0=$(date +%s%N); kill -"$2" "$pid"; wait "$pid"; rc=$?; t1=$(date +%s%N)
  echo "$rc $(( (t1 - t0) / 1000000 ))"
}
"$CZCTL" run /dev/stdin "$KC" <<'LUA' >/dev/null
local ckube = require "czctl.core.kube"
local cfg = assert(ckube.load_config{ kubeconfig = arg[1] })
local c = assert(ckube.client(cfg))
assert(c:request{ method = "POST", path = "/sandbox/faults", content_type = "application/json",
  body = '[{"method":"GET","path":"/api/v1/namespaces/default$","action":"stall","seconds":20,"times":1}]' } == 200)
LUA
read -r rc ms <<<"$(interrupt watch TERM)"
is "$rc" 143 "SIGTERM during a watch: exit 143"
check "the watch returned within a second of the signal (${ms} ms)" [ "$ms" -lt 1000 ]
like "$(cat "$D/block.watch.err")" 'interrupted=true' "the watch returned the interrupt error"
read -r rc ms <<<"$(interrupt get INT)"
is "$rc" 130 "SIGINT during a stalled request: exit 130"
check "the request returned within a second of the signal (${ms} ms)" [ "$ms" -lt 1000 ]

# Names that are not valid path segments never reach an API path (libcurl
# would resolve "/namespaces/../services/.." into "/api/v1/"): czctl refuses
# them with kubectl's own message, before any request.
while IFS='|' read -r name ns; do
  want=$(kubectl --kubeconfig "$KC" get service "$name" -n "$ns" 2>&1 | sed 's/^error: //')
  # (counted by the command's User-Agent: an earlier, stalled request is logged when it completes)
  before=$(grep -c 'czctl/[^"]* service-intercept"' "$D/sb/audit.jsonl")
  out=$("$CZCTL" service intercept "$name" -n "$ns" --kubeconfig "$KC" 2>&1); rc=$?
  is "$rc $out" "1 czctl: error: $want" "service intercept '$name' -n '$ns': refused as kubectl refuses it ($want)"
  is "$(grep -c 'czctl/[^"]* service-intercept"' "$D/sb/audit.jsonl")" "$before" "... and no request reached the API server"
done <<'NAMES'
..|..
web|..
..|default
.|default
a%b|default
x|a/b
x|a%b
NAMES
# (the count above sees the command's requests: a valid name does reach the API server)
before=$(grep -c 'czctl/[^"]* service-intercept"' "$D/sb/audit.jsonl")
"$CZCTL" service intercept nosuch --kubeconfig "$KC" >/dev/null 2>&1
for _ in $(seq 50); do   # (a line is written once its answer is sent)
  [ "$(grep -c 'czctl/[^"]* service-intercept"' "$D/sb/audit.jsonl")" -gt "$before" ] && break; sleep 0.1
done
check "... while a valid name's requests are counted" \
  test "$(grep -c 'czctl/[^"]* service-intercept"' "$D/sb/audit.jsonl")" -gt "$before"

check "verbose mode logs each request (method, URL, status)" grep -qE '^kube: GET https://127\.0\.0\.1:[0-9]+/api/v1/namespaces/default/configmaps/[^ ]+ -> 200' "$D/err"
leaks=0
for user in admin restricted; do
  tok=$(kubectl --kubeconfig "$KC" config view --raw -o jsonpath="{.users[?(@.name==\"$user\")].user.token}")
  [ -n "$tok" ] || { leaks=1; echo "# no token for $user"; continue; }
  grep -qF "$tok" "$D/out" "$D/err" && leaks=1
done
grep -qF "not-the-token" "$D/out" "$D/err" && leaks=1
check "no token appears in verbose output or error messages" [ $leaks -eq 0 ]
done_testing
