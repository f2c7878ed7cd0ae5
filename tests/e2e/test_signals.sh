#!/usr/bin/env bash
# Acceptance 3 (second half) and 5: a signal in the middle of setup rolls
# everything back. A sandbox fault stalls one request of the setup; the
# signal arrives while czctl waits for it.
# tests/run: alone
source "$(dirname "$0")/lib/common.sh"
export PATH="$E2E_ROOT/tests/fake-ngrok:$PATH"

demo_cluster

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
  # sed, not python: the signal must land while the request is stalled (2 s),
  # and a python start-up can take most of that on a loaded machine
  keeper=$(sed -n 's/^ *"keeper_pid": *\([0-9][0-9]*\).*/\1/p' "$XDG_STATE_HOME"/czctl/sessions/*.json 2>/dev/null | head -1)
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
interrupt_at "SIGINT with the ngrok keeper running" INT 130 ngrok POST "^$NS/secrets\$"

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
# A second signal during the rollback (Ctrl-C pressed twice: each one goes to
# the whole process group) must not abort it. setsid: czctl leads its own
# group, as in a terminal. The rollback's first DELETE (UNDO_PATH) is stalled
# so the second SIGINT surely arrives while czctl waits on it.
# double_interrupt NAME FIRST CODE METHOD PATH QUERY UNDO_PATH
double_interrupt() {
  local name=$1 first=$2 code=$3 method=$4 path=$5 query=$6 undo_path=$7
  local rule="dbl-$RANDOM" urule="dbl-undo-$RANDOM"
  faults "[{\"name\":\"$rule\",\"method\":\"$method\",\"path\":\"$path\",\"query\":\"$query\",\"action\":\"stall\",\"seconds\":2,\"times\":1},
           {\"name\":\"$urule\",\"method\":\"DELETE\",\"path\":\"$undo_path\",\"action\":\"stall\",\"seconds\":1,\"times\":1}]"
  wait_for_cmd 10 fault_loaded "$urule"
  setsid "$CZCTL" service intercept demo -l "$PORT" --tunnel direct >"$WORK/dbl.out" 2>"$WORK/dbl.err" &
  local pid=$!
  if ! wait_for_cmd 30 fault_fired "$rule"; then
    fail "$name: the stalled request was reached"; kill -KILL "$pid" 2>/dev/null; faults '[]'; return
  fi
  kill -"$first" -- -"$pid"
  if wait_for_cmd 30 fault_fired "$urule"; then
    kill -INT -- -"$pid"; sleep 0.02; kill -INT -- -"$pid" 2>/dev/null
  else
    fail "$name: the rollback reached the stalled DELETE"
  fi
  wait "$pid"; local rc=$?
  faults '[]'
  is "$rc" "$code" "$name: exits $code (the first signal)"
  like "$(tail -1 "$WORK/dbl.err")" "interrupted \\(SIG$first\\), rolled back [0-9]+ steps\$" \
    "$name: says it rolled back, with no failed step"
  grep -q 'failed' "$WORK/dbl.err" && sed 's/^/# /' "$WORK/dbl.err"
  snapshot "$WORK/after.json"
  is "$(leftovers_in "$WORK/after.json")" "" "$name: nothing the session created is left"
  same_snapshot "$WORK/before.json" "$WORK/after.json" "$name: the cluster equals the snapshot from before"
  is "$(session_ids)" "" "$name: no local session file is left"
}

double_interrupt "two SIGINTs, the second during the configuration Secret's undo" INT 130 \
  POST "^$APPS/deployments\$" "" "^$NS/secrets/czctl-proxy-"
double_interrupt "two SIGINTs, the second during the Deployment's undo" INT 130 \
  GET "^$APPS/deployments\$" watch "^$APPS/deployments/czctl-proxy-"
double_interrupt "SIGTERM then SIGINT during the Service copy's undo" TERM 143 \
  POST "^$APPS/deployments\$" "" "^$NS/services/czctl-proxy-.*-original\$"

# The same without stalling the rollback: two SIGINTs 20 ms apart, sent
# once the Nth step has finished (as a user presses Ctrl-C twice).
for n in 3 5 6; do
  name="two SIGINTs 20 ms apart after step $n"
  : >"$WORK/dbl.out"; : >"$WORK/dbl.err"   # (the wait below must not count the previous run's steps)
  setsid "$CZCTL" service intercept demo -l "$PORT" --tunnel direct >"$WORK/dbl.out" 2>"$WORK/dbl.err" &
  pid=$!
  wait_for_cmd 30 sh -c "[ \$(grep -c '^✓' '$WORK/dbl.err') -ge $n ]"
  kill -INT -- -"$pid" 2>/dev/null; sleep 0.02; kill -INT -- -"$pid" 2>/dev/null
  wait "$pid"; rc=$?
  # too late to interrupt (the setup finished and printed its result first)
  # is not what this tests: then close the session
  if grep -q '^Session' "$WORK/dbl.out"; then
    "$CZCTL" session close -q >"$WORK/dbl-close.out" 2>&1
    check "$name: finished first, closed" test $? -eq 0
  else
    is "$rc" 130 "$name: exits 130"
  fi
  is "$(grep -c 'failed' "$WORK/dbl.err")" 0 "$name: no undo step failed"
  snapshot "$WORK/after.json"
  same_snapshot "$WORK/before.json" "$WORK/after.json" "$name: the cluster equals the snapshot from before"
  is "$(session_ids)" "" "$name: no local session file is left"
done

# --wait, Ctrl-C twice: the cleanup child (czctl session close) gets the
# second SIGINT too and still finishes; the waiting process keeps waiting for
# it. Its first DELETE is stalled so the second SIGINT lands mid-cleanup.
wait_double() {
  local name=$1 gap=$2 stall=$3
  local urule="dbl-wait-$RANDOM"
  if [ -n "$stall" ]; then
    faults "[{\"name\":\"$urule\",\"method\":\"DELETE\",\"path\":\"^$APPS/deployments/czctl-proxy-\",\"action\":\"stall\",\"seconds\":1,\"times\":1}]"
    wait_for_cmd 10 fault_loaded "$urule"
  fi
  # (emptied first: the background job opens them later, and the wait below
  # must not find the previous call's "Stop" line)
  : >"$WORK/dw.out"; : >"$WORK/dw.err"
  setsid "$CZCTL" service intercept demo -l "$PORT" --tunnel direct --wait >"$WORK/dw.out" 2>"$WORK/dw.err" &
  local pid=$!
  # the setup child prints the result just before it exits: a signal before
  # its exit is one during setup (exit 130, by design), not what this tests
  if ! wait_for_cmd 60 grep -q '^Stop' "$WORK/dw.out" || ! wait_for_cmd 30 sh -c "! pgrep -P $pid >/dev/null"; then
    fail "$name: the session starts"; sed 's/^/# /' "$WORK/dw.err"; kill -KILL -- -"$pid"; faults '[]'; return
  fi
  kill -INT -- -"$pid"
  if [ -n "$stall" ]; then
    wait_for_cmd 30 fault_fired "$urule" || fail "$name: the cleanup reached the stalled DELETE"
  else
    sleep "$gap"
  fi
  kill -INT -- -"$pid" 2>/dev/null
  wait "$pid"; local rc=$?
  faults '[]'
  is "$rc" 0 "$name: exits 0 after cleaning up"
  [ "$rc" -eq 0 ] || tail -5 "$WORK/dw.err" | sed 's/^/# /'
  snapshot "$WORK/after.json"
  same_snapshot "$WORK/before.json" "$WORK/after.json" "$name: the cluster equals the snapshot from before"
  is "$(session_ids)" "" "$name: no local session file is left"
}
# An undo step that fails anyway (the API server refuses the DELETE): the
# local session file stays and the last line says how to finish; running
# that command restores the snapshot.
name="a failing undo step"
faults "[{\"name\":\"rf-stall\",\"method\":\"POST\",\"path\":\"^$APPS/deployments\$\",\"action\":\"stall\",\"seconds\":2,\"times\":1},
         {\"name\":\"rf-fail\",\"method\":\"DELETE\",\"path\":\"^$NS/secrets/czctl-proxy-\",\"status\":500,\"times\":20}]"
wait_for_cmd 10 fault_loaded rf-fail
"$CZCTL" service intercept demo -l "$PORT" --tunnel direct >"$WORK/rf.out" 2>"$WORK/rf.err" &
pid=$!
if wait_for_cmd 30 fault_fired rf-stall; then
  kill -INT "$pid"; wait "$pid"; rc=$?
  is "$rc" 130 "$name: exits 130"
  last=$(tail -1 "$WORK/rf.err")
  like "$last" "interrupted \\(SIGINT\\), rolled back [0-9]+ steps? \\(1 failed\\); finish the cleanup with: czctl session close [a-z0-9]+ -n default\$" \
    "$name: the last line says to run czctl session close"
  id=$(printf '%s' "$last" | sed -n 's/.*czctl session close \([a-z0-9]*\) -n default$/\1/p')
  is "$(session_ids)" "$id" "$name: the local session file is kept"
  faults '[]'
  for _ in $(seq 200); do fault_loaded rf-fail || break; sleep 0.05; done # the sandbox polls faults.json
  "$CZCTL" session close "$id" -n default >"$WORK/rf-close.out" 2>&1
  is "$?" 0 "$name: the suggested command finishes the cleanup"
  snapshot "$WORK/after.json"
  same_snapshot "$WORK/before.json" "$WORK/after.json" "$name: then the cluster equals the snapshot from before"
  is "$(session_ids)" "" "$name: then no local session file is left"
else
  fail "$name: the stalled request was reached"; kill -KILL "$pid"
fi
faults '[]'

wait_double "--wait, second SIGINT while the cleanup waits on a DELETE" 0 stall
for gap in 0.01 0.05 0.2; do wait_double "--wait, two SIGINTs ${gap}s apart" "$gap" ""; done
done_testing
