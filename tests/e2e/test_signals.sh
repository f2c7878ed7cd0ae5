#!/usr/bin/env bash
# Acceptance 3 (second half) and 5: a signal in the middle of setup rolls
# everything back. A sandbox fault stalls one request of the setup; the
# signal arrives while czctl waits for it.
source "$(dirname "$0")/lib/common.sh"
export PATH="$E2E_ROOT/tests/fake-ngrok:$PATH"

sandbox_up
deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
snapshot "$WORK/before.json"
svc_before=$(service_in "$WORK/before.json" demo)
PORT=$(local_server laptop)
NS=/api/v1/namespaces/default
APPS=/apis/apps/v1/namespaces/default

# interrupt_at NAME SIGNAL CODE TUNNEL METHOD PATH [QUERY]
interrupt_at() {
  local name=$1 sig=$2 code=$3 tunnel=$4 method=$5 path=$6 query=$7
  local rule="sig-$RANDOM"
  stall_next "$rule" "$method" "$path" "$query" 2
  local before_audit
  before_audit=$(audit_count "$method" "$path")
  "$CZCTL" service intercept demo -l "$PORT" --tunnel "$tunnel" >"$WORK/sig.out" 2>"$WORK/sig.err" &
  local pid=$!
  if ! wait_for_cmd 30 fault_fired "$rule"; then
    fail "$name: the stalled request was reached"; sed 's/^/# /' "$WORK/sig.err"
    kill -KILL "$pid" 2>/dev/null; faults '[]'; return
  fi
  local keeper
  keeper=$(python3 -c 'import json,sys,glob; f=[x for x in glob.glob(sys.argv[1]+"/*.json") if not x.endswith(".tunnel.json")]; print(json.load(open(f[0])).get("keeper_pid") or "")' \
    "$XDG_STATE_HOME/czctl/sessions" 2>/dev/null)
  kill -"$sig" "$pid"; wait "$pid"; local rc=$?
  faults '[]'
  is "$rc" "$code" "$name: exits $code"
  like "$(tail -1 "$WORK/sig.err")" "interrupted \\(SIG$sig\\), rolled back" "$name: says it was interrupted and rolled back"
  # the stalled request completes on the server after czctl gave up on it
  wait_for_cmd 10 audit_grew "$method" "$path" "$before_audit"
  # an object created by the stalled request after the rollback is not ours
  # to miss: the rollback deleted by name, so only a late create could remain
  snapshot "$WORK/after.json"
  is "$(service_in "$WORK/after.json" demo)" "$svc_before" "$name: the Service is unchanged"
  is "$(leftovers_in "$WORK/after.json")" "" "$name: nothing the session created is left"
  same_snapshot "$WORK/before.json" "$WORK/after.json" "$name: the cluster equals the snapshot from before"
  is "$(session_ids)" "" "$name: no local session file is left"
  if [ -n "$keeper" ]; then
    check "$name: the keeper is gone" wait_for_cmd 10 sh -c "! kill -0 $keeper 2>/dev/null"
  fi
}

interrupt_at "SIGINT while the Deployment is being created" INT 130 direct POST "^$APPS/deployments\$"
interrupt_at "SIGINT while waiting for the proxy" INT 130 direct GET "^$APPS/deployments\$" watch
interrupt_at "SIGTERM while the Service is being patched" TERM 143 direct PATCH "^$NS/services/demo\$"
interrupt_at "SIGINT with the ngrok keeper running" INT 130 ngrok POST "^$NS/configmaps\$"

# --wait: the waiting process runs setup in a child. SIGTERM sent to it alone
# during setup: the setup finishes, is cleaned up at once, exit 143.
rule="sig-wait-$RANDOM"
stall_next "$rule" POST "^$APPS/deployments\$" "" 2
"$CZCTL" service intercept demo -l "$PORT" --tunnel direct --wait >"$WORK/wait.out" 2>"$WORK/wait.err" &
pid=$!
if wait_for_cmd 30 fault_fired "$rule"; then
  kill -TERM "$pid"; wait "$pid"; rc=$?
  is "$rc" 143 "--wait with SIGTERM during setup: exits 143 after cleaning up"
  [ "$rc" -eq 143 ] || tail -5 "$WORK/wait.err" | sed 's/^/# /'
else
  fail "--wait with SIGTERM during setup: the stalled request was reached"; kill -KILL "$pid"
fi
faults '[]'
snapshot "$WORK/after.json"
same_snapshot "$WORK/before.json" "$WORK/after.json" "--wait with SIGTERM during setup: the cluster equals the snapshot from before"
is "$(session_ids)" "" "--wait with SIGTERM during setup: no local session file is left"
done_testing
