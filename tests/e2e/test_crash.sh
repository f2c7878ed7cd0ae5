#!/usr/bin/env bash
# Acceptance 4 and 5: czctl killed with SIGKILL at each point of the setup
# (after the tunnel starts, after each object is created, after the wait,
# after the Service patch); then `czctl session close`, once with and once
# without the local session file, restores the Service exactly, deletes
# everything the session created, and the keeper (and tunnel) are gone.
#
# The kill points are exact: a sandbox fault stalls the NEXT request, and the
# kill happens once that stalled request is in flight (the fault has fired).
source "$(dirname "$0")/lib/common.sh"
export PATH="$E2E_ROOT/tests/fake-ngrok:$PATH"

demo_cluster

# crash_at NAME METHOD PATH_REGEX QUERY MODE [NTH [SECONDS]]
# Stall METHOD PATH (the NTH such request, default the first, for SECONDS,
# default 1: the request
# after the kill point), start an intercept
# through the ngrok stand-in, SIGKILL it when the stalled request is in
# flight, then close with ("file") or without ("nofile") the session file.
crash_at() {
  local name=$1 method=$2 path=$3 query=$4 mode=$5 nth=${6:-1} secs=${7:-1}
  local rule="crash-$RANDOM"
  faults "[{\"name\":\"$rule\",\"method\":\"$method\",\"path\":\"$path\",\"query\":\"$query\",\"action\":\"stall\",\"seconds\":$secs,\"nth\":$nth,\"times\":1}]"
  wait_for_cmd 10 fault_loaded "$rule"
  local before_audit
  before_audit=$(audit_count "$method" "$path")
  "$CZCTL" service intercept demo -l "$PORT" --tunnel ngrok -q >"$WORK/crash.out" 2>&1 &
  local pid=$!
  if ! wait_for_cmd 30 fault_fired "$rule"; then
    fail "$name ($mode): the stalled request was reached"; sed 's/^/# /' "$WORK/crash.out"
    kill -KILL "$pid" 2>/dev/null; faults '[]'; return
  fi
  check "$name ($mode): czctl is killed while the next request is in flight" kill -KILL "$pid"
  wait "$pid" 2>/dev/null
  faults '[]'
  # let the stalled request finish on the server (it may still create its object)
  wait_for_cmd 10 audit_grew "$method" "$path" "$before_audit"
  local id keeper tunnel
  id=$(session_ids)
  keeper=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("keeper_pid") or "")' \
    "$XDG_STATE_HOME/czctl/sessions/$id.json" 2>/dev/null)
  tunnel=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("pid") or "")' \
    "$XDG_STATE_HOME/czctl/sessions/$id.tunnel.json" 2>/dev/null)
  [ "$mode" = nofile ] && rm -rf "$XDG_STATE_HOME/czctl/sessions"
  # a session-file write cut short by SIGKILL leaves a temporary file beside it
  [ "$mode" = file ] && [ -n "$id" ] && : >"$XDG_STATE_HOME/czctl/sessions/$id.json.tmp.Xy12Ab"
  local out rc
  out=$("$CZCTL" session close 2>&1); rc=$?
  is "$rc" 0 "$name ($mode): session close exits 0"
  [ "$rc" -eq 0 ] || echo "$out" | sed 's/^/# /'
  snapshot "$WORK/after.json"
  is "$(service_in "$WORK/after.json" demo)" "$svc_before" "$name ($mode): the Service spec and annotations equal those before"
  is "$(leftovers_in "$WORK/after.json")" "" "$name ($mode): nothing the session created is left"
  same_snapshot "$WORK/before.json" "$WORK/after.json" "$name ($mode): the cluster equals the snapshot from before"
  if [ -n "$keeper" ]; then
    check "$name ($mode): the keeper is gone" wait_for_cmd 10 sh -c "! kill -0 $keeper 2>/dev/null"
  fi
  if [ -n "$tunnel" ]; then
    check "$name ($mode): the tunnel process is gone" wait_for_cmd 10 sh -c "! kill -0 $tunnel 2>/dev/null"
  fi
  is "$(session_ids)" "" "$name ($mode): no local session file is left"
  if [ "$mode" = file ]; then
    is "$(ls -A "$XDG_STATE_HOME/czctl/sessions" 2>/dev/null)" "" \
      "$name ($mode): no file of the session is left, temporary ones included"
  fi
}

for mode in file nofile; do
  crash_at "killed after the tunnel started (joining)"  PATCH "^$NS/services/demo\$" "" $mode
  crash_at "killed after joining the Service"            POST "^$NS/services\$" "" $mode
  crash_at "killed after the copy Service was created"   POST "^$NS/secrets\$" "" $mode
  crash_at "killed after the configuration Secret was created" POST "^$APPS/deployments\$" "" $mode
  crash_at "killed after the Deployment was created"     GET "^$APPS/deployments\$" "watch" $mode
  # the last request of the setup: stalled longer, so a loaded machine still kills it in flight
  crash_at "killed after the wait (routing the Service)" PATCH "^$NS/services/demo\$" "" $mode 2 3
done

# After the Service patch there is no further request: kill a --wait session
# while it waits (the direct tunnel, so no tunnel process is left behind).
for mode in file nofile; do
  : >"$WORK/wait.out"   # (the wait below must not find a previous run's result)
  "$CZCTL" service intercept demo -l "$PORT" --tunnel direct --wait >"$WORK/wait.out" 2>&1 &
  pid=$!
  if wait_for_cmd 60 grep -q '^Session' "$WORK/wait.out"; then
    like "$(who "http://$(cluster_ip demo)/" -H 'X-C6O-INTERCEPT: yes')" '^laptop$' "killed after the Service patch ($mode): the session was live"
  else
    fail "killed after the Service patch ($mode): the session was live"
  fi
  kill -KILL "$pid"; wait "$pid" 2>/dev/null
  [ "$mode" = nofile ] && rm -rf "$XDG_STATE_HOME/czctl/sessions"
  out=$("$CZCTL" session close 2>&1); rc=$?
  is "$rc" 0 "killed after the Service patch ($mode): session close exits 0"
  snapshot "$WORK/after.json"
  is "$(service_in "$WORK/after.json" demo)" "$svc_before" "killed after the Service patch ($mode): the Service equals the one before"
  same_snapshot "$WORK/before.json" "$WORK/after.json" "killed after the Service patch ($mode): the cluster equals the snapshot"
  out=$("$CZCTL" session close 2>&1); rc=$?
  is "$rc" 0 "killed after the Service patch ($mode): a second close exits 0 (idempotent)"
done
done_testing
