# Shared setup for the end-to-end tests: source it from tests/e2e/test_*.sh.
# Each test file gets its own sandbox cluster and state directory in a temp
# dir; the EXIT trap stops every process it started and the sandbox.
# shellcheck shell=bash
E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# shellcheck source=../../lib/tap.sh
source "$E2E_ROOT/tests/lib/tap.sh"
CZCTL="$E2E_ROOT/czctl"
SANDBOX="$E2E_ROOT/tests/sandbox/sandbox"
E2E_LIB="$E2E_ROOT/tests/e2e/lib"
WORK=$(mktemp -d /tmp/czctl-e2e.XXXXXX)
CLUSTER="$WORK/cluster"
export KUBECONFIG="$CLUSTER/kubeconfig"
export XDG_STATE_HOME="$WORK/state"
export CZCTL_ROOT="$E2E_ROOT"
E2E_PIDS=()

e2e_cleanup() {
  local p
  for p in "${E2E_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  # keepers of sessions left behind by a failing test
  for f in "$XDG_STATE_HOME"/czctl/sessions/*.json; do
    [ -e "$f" ] || continue
    python3 - "$f" <<'PY' 2>/dev/null
import json, os, signal, sys
try:
    s = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
for k in ("keeper_pid",):
    pid = s.get(k)
    if pid and pid != os.getpid():
        try: os.kill(pid, signal.SIGKILL)
        except OSError: pass
PY
  done
  "$SANDBOX" down "$CLUSTER" >/dev/null 2>&1
  if [ -n "${E2E_KEEP:-}" ]; then echo "# kept $WORK"; else rm -rf "$WORK"; fi
}
trap e2e_cleanup EXIT

# sandbox_up: start the cluster or bail out (the whole file fails).
# The stand-in ngrok's "internet" endpoint goes where pods can reach it: the
# host gateway (tests/fake-ngrok/README.md).
sandbox_up() {
  if ! "$SANDBOX" up "$CLUSTER" >"$WORK/sandbox-up.log" 2>&1; then
    fail "sandbox starts"; sed 's/^/# /' "$WORK/sandbox-up.log"; exit 1
  fi
  FAKE_NGROK_EDGE_ADDR=$(host_gateway)
  export FAKE_NGROK_EDGE_ADDR
  # The proxy verifies the tunnel's certificate: the stand-in's edge shows one
  # for its address from a CA this test makes, which czctl is told to trust.
  # shellcheck source=../../proxy/testca.sh
  source "$E2E_ROOT/tests/proxy/testca.sh"
  test_ca "$WORK" && test_cert "$WORK" edge "$FAKE_NGROK_EDGE_ADDR" "IP:$FAKE_NGROK_EDGE_ADDR" ||
    { fail "the test CA is made"; exit 1; }
  export FAKE_NGROK_CERT=$WORK/edge.crt FAKE_NGROK_KEY=$WORK/edge.key CZCTL_TUNNEL_CA=$WORK/ca.crt
}

# demo_cluster: the starting point of the fault-injection tests: a sandbox
# with the demo app, a snapshot of it ($WORK/before.json, the demo Service in
# $svc_before), a local server on $PORT, and the API paths $NS and $APPS.
demo_cluster() {
  sandbox_up
  deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
  snapshot "$WORK/before.json"
  svc_before=$(service_in "$WORK/before.json" demo)
  PORT=$(local_server laptop)
  NS=/api/v1/namespaces/default
  APPS=/apis/apps/v1/namespaces/default
}

# deploy FILE DEPLOYMENT...: apply a manifest and wait for its deployments.
deploy() {
  local file=$1; shift
  kubectl apply -f "$file" >/dev/null || return 1
  local d
  for d in "$@"; do kubectl rollout status "deployment/$d" --timeout=60s >/dev/null || return 1; done
}

# local_server NAME: start the echo app on a free loopback port as "pod"
# NAME; prints the port. Answers JSON with {"pod": NAME, ...}, WebSocket too.
local_server() {
  local name=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  POD_NAME=$name POD_NAMESPACE=laptop python3 -I "$E2E_ROOT/tests/sandbox/k8s/echo.py" \
    --ip 127.0.0.1 --port "$port" --container laptop >"$WORK/local-$name.log" 2>&1 &
  E2E_PIDS+=($!)
  local i
  for i in $(seq 200); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
    sleep 0.02
  done
  echo "$port"
}

cluster_ip() { kubectl get service "$1" -n "${2:-default}" -o jsonpath='{.spec.clusterIP}'; }

# in_cluster CMD...: run CMD inside the cluster network, as from a debug pod
# (this machine has no route to ClusterIPs or pod IPs, as a laptop has none).
in_cluster() { "$SANDBOX" exec "$CLUSTER" -- "$@"; }

# host_gateway: the address of this machine that pods reach (the sandbox's host gateway).
host_gateway() { "$SANDBOX" info "$CLUSTER" | python3 -c 'import json,sys; print(json.load(sys.stdin)["hostGateway"])'; }

# who URL [curl args...]: the pod name that answered (the echo app's JSON),
# asked from inside the cluster.
who() {
  local url=$1; shift
  local body rc
  body=$(in_cluster curl -sS --max-time 10 "$@" "$url" 2>"$WORK/who.err"); rc=$?
  printf '%s' "$body" | python3 -c 'import json,sys
try: print(json.load(sys.stdin)["pod"])
except Exception: print("(no answer: curl exit %s: %s)" % (sys.argv[1], open(sys.argv[2]).read().strip()))' "$rc" "$WORK/who.err"
}

# snapshot FILE: the normalised state of the cluster (kubectl get all,cm,secret -A).
snapshot() {
  kubectl get all,cm,secret -A -o json | python3 "$E2E_LIB/normalise.py" >"$1"
}

# same_snapshot A B NAME: ok when equal, else the diff as comments.
same_snapshot() {
  if diff -u "$1" "$2" >"$WORK/snapshot.diff"; then ok "$3"
  else fail "$3"; head -40 "$WORK/snapshot.diff" | sed 's/^/# /'; fi
}

# service_state NAME: the Service's spec and annotations, normalised.
service_state() {
  kubectl get service "$1" -n "${2:-default}" -o json | python3 -c 'import json,sys
o=json.load(sys.stdin); print(json.dumps({"spec":o["spec"],"annotations":o["metadata"].get("annotations"),"labels":o["metadata"].get("labels")},sort_keys=True))'
}

# czctl_leftovers: objects labelled by czctl (proxy, copy Service, its
# configuration Secrets, sessions' Leases), across namespaces (empty = none).
czctl_leftovers() {
  kubectl get deploy,rs,pods,cm,secret,lease,svc -A -l app.kubernetes.io/managed-by=czctl -o name 2>/dev/null
}

# session_ids: ids of the local session files.
session_ids() {
  local f
  for f in "$XDG_STATE_HOME"/czctl/sessions/*.json; do
    [ -e "$f" ] || continue
    case "$f" in *.tunnel.json) continue ;; esac
    basename "$f" .json
  done
}

# wait_for_cmd TIMEOUT CMD...: run CMD until it succeeds (every 50 ms).
wait_for_cmd() {
  local t=$1; shift
  local end=$((SECONDS + t))
  while [ $SECONDS -le $end ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  return 1
}

# faults JSON: replace the sandbox's file fault rules ('[]' clears them).
faults() { printf '%s\n' "$1" >"$CLUSTER/faults.json.tmp" && mv "$CLUSTER/faults.json.tmp" "$CLUSTER/faults.json"; }

# sandbox_get PATH: GET a path of the sandbox API as admin (curl: much
# faster to start than kubectl, for polling).
sandbox_get() {
  local server token
  server=$(sed -n 's/^ *server: *//p' "$KUBECONFIG" | head -1)
  token=$(sed -n 's/^ *token: *//p' "$KUBECONFIG" | head -1)
  curl -s --max-time 5 --cacert "$CLUSTER/ca.crt" -H "Authorization: Bearer $token" "$server$1"
}

# fault_fired NAME / fault_loaded NAME: the file fault rule NAME has fired
# (a stalled request is in flight) / is loaded. grep, not python: these
# poll while a stall runs, so they must answer fast even on a busy machine.
fault_loaded() { sandbox_get /sandbox/faults | tr -d ' \n' | grep -q "\"name\":\"$1\""; }
fault_fired() { sandbox_get /sandbox/faults | tr -d ' \n' | grep -qE "\"name\":\"$1\"[^}]*\"fired\":[1-9]"; }

# stall_next NAME METHOD PATH_REGEX [QUERY] [SECONDS]: make the sandbox stall
# the next matching request (once) and wait until the rule is loaded.
stall_next() {
  faults "[{\"name\":\"$1\",\"method\":\"$2\",\"path\":\"$3\",\"query\":\"${4:-}\",\"action\":\"stall\",\"seconds\":${5:-2},\"times\":1}]"
  wait_for_cmd 10 fault_loaded "$1"
}

# audit_count METHOD PATH_REGEX: how many requests the audit log has recorded.
audit_count() {
  python3 - "$CLUSTER/audit.jsonl" "$1" "$2" <<'PY'
import json, re, sys
n = 0
try:
    for line in open(sys.argv[1]):
        try: r = json.loads(line)
        except ValueError: continue
        if r.get("method") == sys.argv[2] and re.search(sys.argv[3], r.get("path", "")):
            n += 1
except FileNotFoundError:
    pass
print(n)
PY
}

# service_in SNAPSHOT NAME: a Service's spec and annotations from a snapshot file.
service_in() {
  python3 -c 'import json,sys
for o in json.load(open(sys.argv[1])):
    if o["kind"] == "Service" and o["metadata"]["name"] == sys.argv[2] and o["metadata"].get("namespace") == "default":
        print(json.dumps({"spec": o["spec"], "annotations": o["metadata"].get("annotations")}, sort_keys=True))' "$1" "$2"
}

# leftovers_in SNAPSHOT: objects labelled app.kubernetes.io/managed-by=czctl (or
# pods/ReplicaSets of a czctl proxy) in a snapshot file, one per line.
leftovers_in() {
  python3 -c 'import json,sys
for o in json.load(open(sys.argv[1])):
    l = o["metadata"].get("labels") or {}
    if l.get("app.kubernetes.io/managed-by") == "czctl" or "czctl.io/proxy" in l:
        print(o["kind"] + "/" + o["metadata"]["name"])' "$1"
}

# audit_grew METHOD PATH_REGEX N: the audit log has more than N such requests.
audit_grew() { [ "$(audit_count "$1" "$2")" -gt "$3" ]; }
