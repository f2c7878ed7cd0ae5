#!/usr/bin/env bash
# Sessions: already intercepted (same header: report, exit 0; another
# header: a second session), --clean alone and with an intercept, idempotent
# close, close without the local state (another machine), session list
# (table and JSON), --wait ended by SIGTERM and JSON output. Owners,
# namespaces and PIDs: test_sessions_owner.sh.
source "$(dirname "$0")/lib/common.sh"

sandbox_up
deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
snapshot "$WORK/before.json"
PORT=$(local_server laptop)
IP=$(cluster_ip demo)
svc_before=$(service_state demo)

# no_files DIR: DIR is empty or missing (a condition for wait_for_cmd).
no_files() { [ -z "$(ls -A "$1" 2>/dev/null)" ]; }

# --- JSON output ------------------------------------------------------------
json=$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct --output json 2>"$WORK/err"); rc=$?
is "$rc" 0 "intercept --output json exits 0"
id=$(printf '%s' "$json" | python3 -c 'import json,sys; o=json.load(sys.stdin); print(o["id"] if (o["apiVersion"], o["kind"]) == ("czctl.io/v1", "Session") else "")' 2>/dev/null)
like "$id" '^[a-z0-9]{10}$' "--output json prints one JSON document with the session id"
like "$(printf '%s' "$json" | python3 -c 'import json,sys; o=json.load(sys.stdin); print(o["tunnelUrl"], o["curl"], o["header"])' 2>/dev/null)" \
  "^https://$(host_gateway):[0-9]+ curl -H .*X-C6O-INTERCEPT: yes$" \
  "the JSON carries the tunnel URL (the landing on the detected host gateway), curl example and header"
is "$(stat -c %a "$XDG_STATE_HOME/czctl/sessions/$id.json" 2>/dev/null)" 600 "the session file is mode 0600"

# --- already intercepted ----------------------------------------------------
out=$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct 2>&1); rc=$?
is "$rc" 0 "intercepting again with the same header exits 0"
like "$out" "already intercepts.*" "it reports the existing session"
like "$out" "$id" "the report names the session"
second=$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct -x X-Other:1 -o json 2>/dev/null | \
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null)
like "$second" '^[a-z0-9]{10}$' "intercepting with another header starts a second session on the same Service"
check "the second session is not the first" test "$second" != "$id"
like "$(who "http://$IP/" -H 'X-Other: 1')" '^laptop$' "the second session's header is routed"
like "$(who "http://$IP/" -H 'X-C6O-INTERCEPT: yes')" '^laptop$' "and the first one's still is"
"$CZCTL" session close "$second" -q; is "$?" 0 "closing the second session by id"

# --- session list -------------------------------------------------------------
list=$("$CZCTL" session list)
like "$(echo "$list" | head -1)" '^SESSION +NAMESPACE +SERVICE +PORT +RULE +OWNER +STATE +AGE$' "session list prints a table header"
like "$list" "$id +default +demo +80 +X-C6O-INTERCEPT: yes +[^ ]+@[^ ]+ \\(you\\) +active +[0-9]+s" \
  "session list shows the session, its owner marked as you, active"
jl=$("$CZCTL" session list -o json | python3 -c 'import json,sys; d=json.load(sys.stdin); s=d["items"]; print(d["kind"], len(s), s[0]["id"], s[0]["local"], s[0]["mine"], s[0]["state"])')
is "$jl" "SessionList 1 $id True True active" "session list --output json is a SessionList holding the session"

# --- --clean alone ------------------------------------------------------------
out=$("$CZCTL" service intercept demo -c 2>&1); rc=$?
is "$rc" 0 "--clean alone exits 0"
like "$out" "Closed session $id" "--clean alone closes the session and says so"
is "$(service_state demo)" "$svc_before" "--clean restores the Service exactly"
is "$(czctl_leftovers)" "" "--clean deletes the session's objects"

# --- --clean with an intercept: closes, then intercepts again ------------------
"$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q; is "$?" 0 "a new session starts"
old=$(session_ids)
"$CZCTL" service intercept demo -c -l "$PORT" --tunnel direct -x X-Dev:me -q; is "$?" 0 "--clean with -l/-x exits 0"
new=$(session_ids)
check "--clean replaced the old session with a new one" test -n "$new" -a "$new" != "$old"
like "$(who "http://$IP/" -H 'X-Dev: me')" '^laptop$' "the new session routes its header"

# --- close after the local state directory is gone -----------------------------------
mv "$XDG_STATE_HOME" "$WORK/state-moved"
out=$("$CZCTL" session close 2>&1); rc=$?
is "$rc" 0 "session close without the local state directory exits 0"
like "$out" "Closed session $new" "it finds your session in the cluster by its owner"
is "$(service_state demo)" "$svc_before" "the Service is restored exactly from the cluster alone"
is "$(czctl_leftovers)" "" "the objects are deleted from the cluster alone"
mv "$WORK/state-moved" "$XDG_STATE_HOME"
out=$("$CZCTL" session close "$new" 2>&1); rc=$?
is "$rc" 0 "closing the same session again exits 0 (idempotent)"
is "$(session_ids)" "" "closing again removes the stale local file"
out=$("$CZCTL" session close 2>&1); rc=$?
is "$rc" 0 "session close with nothing to close exits 0"
like "$out" "No session of yours to close in namespace default" "and says there was nothing to close"
snapshot "$WORK/after.json"
same_snapshot "$WORK/before.json" "$WORK/after.json" "after these sessions the cluster equals the snapshot from before"

# --- --wait + SIGTERM -------------------------------------------------------------
"$CZCTL" service intercept demo -l "$PORT" --tunnel direct --wait >"$WORK/wait.out" 2>"$WORK/wait.err" &
wpid=$!
E2E_PIDS+=($wpid)
check "--wait: the session becomes live" wait_for_cmd 60 grep -q '^Session' "$WORK/wait.out"
like "$(who "http://$IP/" -H 'X-C6O-INTERCEPT: yes')" '^laptop$' "--wait: the header reaches the local server"
check "--wait: the process is still running" kill -0 "$wpid"
kill -TERM "$wpid"; wait "$wpid"; rc=$?
is "$rc" 0 "--wait ended by SIGTERM cleans up and exits 0"
is "$(service_state demo)" "$svc_before" "--wait + SIGTERM: the Service is restored exactly"
snapshot "$WORK/after-wait.json"
same_snapshot "$WORK/before.json" "$WORK/after-wait.json" "--wait + SIGTERM: the cluster equals the snapshot from before"
is "$(session_ids)" "" "--wait + SIGTERM: the local session file is removed"

# --- a Service managed by Helm / Argo CD / Flux gets a warning ----------------------
for managed in "label|app.kubernetes.io/managed-by=Helm|Helm" \
               "annotate|argocd.argoproj.io/tracking-id=demo:/Service:default/demo|Argo CD" \
               "label|kustomize.toolkit.fluxcd.io/name=apps|Flux"; do
  IFS='|' read -r verb kv tool <<<"$managed"
  kubectl "$verb" service demo "$kv" --overwrite >/dev/null
  "$CZCTL" service intercept demo -l "$PORT" --tunnel direct >/dev/null 2>"$WORK/err"; rc=$?
  is "$rc" 0 "a Service managed by $tool can still be intercepted"
  like "$(cat "$WORK/err")" "warning: Service demo looks managed by $tool, which may revert" "it warns that $tool may revert the change"
  "$CZCTL" session close -q
  kubectl "$verb" service demo "${kv%%=*}-" >/dev/null
done
# unlike GOT REGEX NAME: ok when GOT does not match REGEX
unlike() { if printf '%s' "$1" | grep -qE -- "$2"; then fail "$3"; echo "#   got:  $1"; echo "#   must not match: $2"; else ok "$3"; fi; }

# --- intercepting again with other flags: an error suggesting -c; same flags: report ---
"$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q; is "$?" 0 "a session for the re-intercept checks starts"
sid=$(session_ids)
for variant in "-l $((PORT + 1)) --tunnel direct|another local port" "-l $PORT|another tunnel (ngrok)" \
               "-l $PORT --tunnel direct -a|another rule (--all)"; do
  IFS='|' read -r args what <<<"$variant"
  # shellcheck disable=SC2086
  out=$("$CZCTL" service intercept demo $args 2>&1); rc=$?
  is "$rc" 1 "intercepting again with $what exits 1"
  case $what in
    *--all*) like "$out" "session $sid of .* holds it with X-C6O-INTERCEPT: yes, so --all would take its requests" \
               "with $what the error names the session that holds the port" ;;
    *) like "$out" "already intercepted by your session $sid .*localhost:$PORT.*run again with -c" \
         "with $what the error names the session and suggests -c" ;;
  esac
done
out=$("$CZCTL" service intercept demo --tunnel direct 2>/dev/null); rc=$?
is "$rc" 0 "intercepting again with the same tunnel and rule (no -l) exits 0"
like "$out" "already intercepts" "and reports the existing session"
is "$(session_ids)" "$sid" "a refused re-intercept leaves the one session"
out=$("$CZCTL" session close 2>/dev/null)
like "$out" "^Closed session $sid in default \\(Service demo restored\\)$" "a real close says the Service was restored"

# --- -c with a mistyped Service or namespace is the not-found error ------------------
out=$("$CZCTL" service intercept nosuch -c 2>&1); rc=$?
is "$rc" 1 "-c on an unknown Service exits 1"
like "$out" 'Service "nosuch" not found in namespace "default"' "-c on an unknown Service says it is not found"
out=$("$CZCTL" service intercept demo -c -n nosuchns 2>&1); rc=$?
is "$rc" 1 "-c in an unknown namespace exits 1"
like "$out" 'namespace "nosuchns" not found' "-c in an unknown namespace says it is not found"

# --- JSON: empty lists are [] ------------------------------------------------------
is "$("$CZCTL" session list -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"] == [])')" True \
  "session list -o json with no session prints \"items\": []"
is "$("$CZCTL" session close -o json | python3 -c 'import json,sys; o=json.load(sys.stdin); print(o["closed"] == [], o["failed"] == [])')" \
  "True True" "session close -o json with nothing to close prints \"closed\": [] and \"failed\": []"

# --- a local session closed from another machine is pruned here ----------------------
"$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q
sid=$(session_ids)
XDG_STATE_HOME="$WORK/other-machine" USER=someone-else "$CZCTL" session close "$sid" --force -q
is "$?" 0 "another machine closes the session by id with --force"
out=$("$CZCTL" session list 2>&1)
is "$out" "No intercept sessions in namespace default." "session list no longer shows the session closed elsewhere"
check "the session's keeper notices and removes the local record" wait_for_cmd 10 no_files "$XDG_STATE_HOME/czctl/sessions"
"$CZCTL" session close -q; is "$(session_ids)" "" "session close has nothing left to remove"
XDG_STATE_HOME="$WORK/fresh-state" "$CZCTL" session list >/dev/null
check "session list on a machine with no sessions creates no state directory" test ! -e "$WORK/fresh-state"
"$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q
sid=$(session_ids)
# the keeper would notice and remove the record itself: stop it first
kill -KILL "$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["keeper_pid"]))' \
  "$XDG_STATE_HOME/czctl/sessions/$sid.json")" 2>/dev/null
XDG_STATE_HOME="$WORK/other-machine" USER=someone-else "$CZCTL" session close "$sid" --force -q
out=$("$CZCTL" session close 2>/dev/null); rc=$?
is "$rc" 0 "session close of a session closed elsewhere exits 0"
like "$out" "^Removed the local record of session $sid in default \\(it was already closed in the cluster\\)$" \
  "session close says it only removed the local record (nothing restored)"
is "$(session_ids)" "" "session close removes the stale local file"
is "$(service_state demo)" "$svc_before" "the Service is still as before"

# --- sessions of another cluster: not listed or closed here; gone cluster: --forget ----
C2="$WORK/c2"
if "$SANDBOX" up "$C2" >"$WORK/c2-up.log" 2>&1; then
  KUBECONFIG="$C2/kubeconfig" deploy "$E2E_ROOT/examples/demo-app.yaml" demo || fail "demo app deploys on the second cluster"
  KUBECONFIG="$C2/kubeconfig" "$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q
  is "$?" 0 "a session starts on the second cluster"
  c2id=$(session_ids)
  c2server=$(sed -n 's/^ *server: *//p' "$C2/kubeconfig" | head -1)
  is "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["server"])' \
        "$XDG_STATE_HOME/czctl/sessions/$c2id.json" 2>/dev/null)" "$c2server" "the session file records the cluster's server URL"
  is "$("$CZCTL" session list 2>&1)" "No intercept sessions in namespace default." "session list on the first cluster does not show it"
  out=$("$CZCTL" session close 2>&1); rc=$?
  is "$rc" 0 "session close on the first cluster exits 0"
  unlike "$out" "$c2id" "session close on the first cluster leaves the second cluster's session alone"
  like "$(KUBECONFIG="$C2/kubeconfig" "$CZCTL" session list 2>&1)" "$c2id +default +demo +80 .*\\(you\\)" \
    "the session is still live and local on its own cluster"
  "$SANDBOX" down "$C2" >/dev/null 2>&1
  out=$("$CZCTL" session close "$c2id" 2>&1); rc=$?
  is "$rc" 1 "closing a session whose cluster is down exits 1"
  like "$out" "cannot reach the cluster at $c2server.*czctl session close $c2id --forget" \
    "the error says the cluster cannot be reached and how to discard the local record"
  is "$(printf '%s\n' "$out" | wc -l)" 1 "that error is one line"
  rm -rf "$C2"
  out=$("$CZCTL" session close 2>&1); rc=$?
  is "$rc" 0 "once that cluster is deleted, session close on the first cluster still exits 0"
  unlike "$out" "$c2id" "and does not touch the other cluster's session"
  out=$("$CZCTL" session close -k "$KUBECONFIG" 2>&1); rc=$?
  is "$rc" 0 "session close -k FIRST exits 0"
  unlike "$out" "restored" "session close -k FIRST does not run the other session's cleanup"
  out=$("$CZCTL" session close "$c2id" 2>&1); rc=$?
  is "$rc" 1 "closing the gone cluster's session by id exits 1"
  like "$out" "cannot reach the cluster of session $c2id.*--forget" "the error names the session and --forget"
  is "$(printf '%s\n' "$out" | wc -l)" 1 "that error is one line"
  out=$("$CZCTL" session close "$c2id" -k "$KUBECONFIG" 2>&1); rc=$?
  is "$rc" 1 "closing it by id against another cluster (-k) exits 1"
  like "$out" "session $c2id was started on the cluster at $c2server.*--forget" "the error says which cluster it belongs to"
  out=$("$CZCTL" session close "$c2id" --forget 2>&1); rc=$?
  is "$rc" 0 "session close ID --forget exits 0"
  like "$out" "Forgot the local record of session $c2id" "--forget says what it did"
  is "$(session_ids)" "" "--forget removes the local session file"
  is "$(service_state demo)" "$svc_before" "the first cluster's Service was never touched"
else
  fail "a second sandbox cluster starts"; sed 's/^/# /' "$WORK/c2-up.log"
fi
"$SANDBOX" down "$C2" >/dev/null 2>&1

# --- the ngrok agent's log lives with the session; close kills an orphaned agent --------
FAKE="$E2E_ROOT/tests/fake-ngrok"
export FAKE_NGROK_PIDFILE="$WORK/ngrok.pids"
: >"$FAKE_NGROK_PIDFILE"
PATH="$FAKE:$PATH" "$CZCTL" service intercept demo -l "$PORT" -q; is "$?" 0 "an ngrok session starts"
nid=$(session_ids)
check "the agent's log is in the session's state directory" test -s "$XDG_STATE_HOME/czctl/sessions/$nid.ngrok.log"
keeper=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("keeper_pid") or "")' \
  "$XDG_STATE_HOME/czctl/sessions/$nid.json" 2>/dev/null)
agent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tunnel"].get("pid") or "")' \
  "$XDG_STATE_HOME/czctl/sessions/$nid.json" 2>/dev/null)
check "the session file has the agent's pid" test -n "$agent"
[ -n "$keeper" ] && kill -KILL "$keeper"
check "after kill -9 of the keeper the agent is still running" kill -0 "$agent"
"$CZCTL" session close -q; is "$?" 0 "session close after the keeper's SIGKILL exits 0"
check "session close kills the orphaned agent" wait_for_cmd 10 sh -c "! kill -0 $agent 2>/dev/null"
check "session close removes the agent's log" test ! -e "$XDG_STATE_HOME/czctl/sessions/$nid.ngrok.log"
is "$(ls -A "$XDG_STATE_HOME/czctl/sessions")" "" "no file of the session is left"

# --- --wait: the agent killed by SIGKILL is reported once, as killed -----------------
: >"$WORK/wait.out"; : >"$WORK/wait.err"   # (the wait below must not find an earlier session's lines)
PATH="$FAKE:$PATH" "$CZCTL" service intercept demo -l "$PORT" --wait >"$WORK/wait.out" 2>"$WORK/wait.err" &
wpid=$!
E2E_PIDS+=($wpid)
check "--wait with ngrok: the session becomes live" wait_for_cmd 60 grep -q '^Session' "$WORK/wait.out"
wid=$(session_ids)
agent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tunnel"].get("pid") or "")' \
  "$XDG_STATE_HOME/czctl/sessions/$wid.json" 2>/dev/null)
[ -n "$agent" ] && kill -KILL "$agent"
wait_for_cmd 30 sh -c "! kill -0 $wpid" || kill -KILL "$wpid"
wait "$wpid"; is "$?" 1 "--wait: the agent killed ends the session with exit 1"
is "$(grep -c 'tunnel stopped' "$WORK/wait.err")" 1 "the tunnel's death is reported once"
like "$(tail -1 "$WORK/wait.err")" "the session ended because the tunnel stopped: ngrok exited because it was killed \\(SIGKILL\\)" \
  "it says the agent was killed (SIGKILL), not a status number"
is "$(service_state demo)" "$svc_before" "the Service is restored after the tunnel died"

# --- the demo colours its headings only on a terminal ------------------------------
"$E2E_ROOT/scripts/demo" >"$WORK/demo.out" 2>&1; rc=$?
is "$rc" 0 "the demo runs to the end with stdout on a file"
like "$(cat "$WORK/demo.out")" "^== Start a sandbox" "its headings are there"
is "$(grep -c $'\033' "$WORK/demo.out")" 0 "the demo writes no ANSI escapes to a file"
python3 "$E2E_LIB/on_tty.py" "$E2E_ROOT/scripts/demo" >"$WORK/demo.tty" 2>&1
is "$(grep -c $'\033\\[1m== Start a sandbox' "$WORK/demo.tty")" 1 "on a terminal the headings are bold"
done_testing
