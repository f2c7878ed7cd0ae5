#!/usr/bin/env bash
# Acceptance 2: the ngrok provider end to end through the intercept, with the
# stand-in agent (tests/fake-ngrok); each failure mode gives its clear
# message and leaves nothing behind (cluster snapshot, processes, files).
source "$(dirname "$0")/lib/common.sh"
FAKE="$E2E_ROOT/tests/fake-ngrok"
export FAKE_NGROK_PIDFILE="$WORK/ngrok.pids"

sandbox_up
deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
snapshot "$WORK/before.json"
PORT=$(local_server laptop)
IP=$(cluster_ip demo)

ngrok_alive() {
  local p
  for p in $(cat "$FAKE_NGROK_PIDFILE" 2>/dev/null); do kill -0 "$p" 2>/dev/null && return 0; done
  return 1
}

# --- end to end ---------------------------------------------------------------
out=$(PATH="$FAKE:$PATH" "$CZCTL" service intercept demo -l "$PORT" 2>"$WORK/err"); rc=$?
is "$rc" 0 "intercept with the default (ngrok) tunnel exits 0"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$WORK/err"
like "$out" "Tunnel +https://${FAKE_NGROK_EDGE_ADDR//./\\.}:[0-9]+ \\(ngrok\\)" "the result shows the ngrok URL"
like "$out" "Inspector +http://localhost:[0-9]+" "the result shows the ngrok inspector"
check "the command returned and the agent keeps running (held by the keeper)" ngrok_alive
answer=$(in_cluster curl -s --max-time 10 -H 'X-C6O-INTERCEPT: yes' "http://$IP/")
is "$(printf '%s' "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pod"])' 2>/dev/null)" laptop \
  "a request with the header reaches the local server through the ngrok tunnel"
like "$(printf '%s' "$answer" | python3 -c 'import json,sys; h={k.lower():v for k,v in json.load(sys.stdin)["headers"].items()}; print(h.get("ngrok-skip-browser-warning"), h.get("x-forwarded-host"))' 2>/dev/null)" \
  "^1 $IP" "requests into the tunnel carry ngrok-skip-browser-warning and the original host"
like "$(who "http://$IP/")" '^demo-' "a request without the header stays in the cluster"
like "$(in_cluster python3 "$E2E_LIB/wsclient.py" "$IP" 80 hi X-C6O-INTERCEPT:yes 2>&1)" '^laptop: hi$' "a WebSocket passes through the ngrok tunnel"
"$CZCTL" session close -q; is "$?" 0 "session close exits 0"
check "session close stops the ngrok agent and the keeper" wait_for_cmd 10 sh -c "! { $(declare -f ngrok_alive); FAKE_NGROK_PIDFILE=$FAKE_NGROK_PIDFILE ngrok_alive; }"
snapshot "$WORK/after.json"
same_snapshot "$WORK/before.json" "$WORK/after.json" "after the ngrok session the cluster equals the snapshot"

# --- --wait with ngrok: SIGTERM ends it (exit 0); the agent dying ends it (exit 1) ---
ngrok_wait() {
  : >"$FAKE_NGROK_PIDFILE"
  : >"$WORK/wait.out"; : >"$WORK/wait.err"   # (the wait below must not find an earlier session's lines)
  PATH="$FAKE:$PATH" "$CZCTL" service intercept demo -l "$PORT" --wait >"$WORK/wait.out" 2>"$WORK/wait.err" &
  WAIT_PID=$!
  wait_for_cmd 60 grep -q '^Session' "$WORK/wait.out"
}
ngrok_wait
like "$(who "http://$IP/" -H 'X-C6O-INTERCEPT: yes')" '^laptop$' "--wait with ngrok: the header reaches the local server"
kill -TERM "$WAIT_PID"; wait "$WAIT_PID"; is "$?" 0 "--wait with ngrok ended by SIGTERM exits 0"
check "--wait with ngrok: the agent is stopped" wait_for_cmd 10 sh -c "! { $(declare -f ngrok_alive); FAKE_NGROK_PIDFILE=$FAKE_NGROK_PIDFILE ngrok_alive; }"

ngrok_wait
check "--wait with ngrok: the agent's pid is known" wait_for_cmd 10 ngrok_alive
agent_pid=$(head -1 "$FAKE_NGROK_PIDFILE")
[ -n "$agent_pid" ] && kill -KILL "$agent_pid"
wait_for_cmd 30 sh -c "! kill -0 $WAIT_PID" || kill -KILL "$WAIT_PID"
wait "$WAIT_PID"; is "$?" 1 "--wait with ngrok: the agent dying ends the session with exit 1"
like "$(tail -1 "$WORK/wait.err")" "the session ended because the tunnel stopped: ngrok exited" "it says the tunnel stopped and why"

ngrok_wait
kill -KILL "$WAIT_PID"; wait "$WAIT_PID" 2>/dev/null
check "--wait with ngrok killed by SIGKILL: the agent does not outlive it" wait_for_cmd 10 sh -c "! { $(declare -f ngrok_alive); FAKE_NGROK_PIDFILE=$FAKE_NGROK_PIDFILE ngrok_alive; }"
"$CZCTL" session close -q; is "$?" 0 "session close after the SIGKILL exits 0"
snapshot "$WORK/after-wait.json"
same_snapshot "$WORK/before.json" "$WORK/after-wait.json" "after the --wait sessions the cluster equals the snapshot"

# --- failure modes ---------------------------------------------------------------
# ngrok_failure NAME REGEX ENV...: the intercept fails with one line matching
# REGEX (with -q, the only output), exit 1, and leaves no object, file or process.
ngrok_failure() {
  local name=$1 regex=$2; shift 2
  : >"$FAKE_NGROK_PIDFILE"
  local err rc
  env "$@" "$CZCTL" service intercept demo -l "$PORT" -q >/dev/null 2>"$WORK/err"; rc=$?
  err=$(cat "$WORK/err")
  is "$rc" 1 "$name: exits 1"
  like "$err" "$regex" "$name: the error explains it"
  is "$(grep -c . "$WORK/err")" 1 "$name: the error is one line"
  snapshot "$WORK/now.json"
  same_snapshot "$WORK/before.json" "$WORK/now.json" "$name: nothing changed in the cluster"
  is "$(session_ids)" "" "$name: no session file is left"
  check "$name: no ngrok process is left" wait_for_cmd 10 sh -c "! { $(declare -f ngrok_alive); FAKE_NGROK_PIDFILE=$FAKE_NGROK_PIDFILE ngrok_alive; }"
}
ngrok_failure "ngrok not installed" 'ngrok is not installed: install it from https://ngrok.com/download' \
  PATH="/usr/bin:/bin"
ngrok_failure "no authtoken" 'ngrok config add-authtoken.*ERR_NGROK_4018' \
  PATH="$FAKE:$PATH" FAKE_NGROK_MODE=no-authtoken
ngrok_failure "agent exits early" 'ERR_NGROK_108|simultaneous ngrok agent' \
  PATH="$FAKE:$PATH" FAKE_NGROK_MODE=exit-early
done_testing
