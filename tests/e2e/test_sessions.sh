#!/usr/bin/env bash
# Sessions: already intercepted (same header: report, exit 0; other: error
# naming the session and the close command), --clean alone and with an
# intercept, idempotent close, close without the local file (another
# machine), session list (table and JSON), --wait ended by SIGTERM
# (acceptance 3, first half) and JSON output.
source "$(dirname "$0")/lib/common.sh"

sandbox_up
deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
snapshot "$WORK/before.json"
PORT=$(local_server laptop)
IP=$(cluster_ip demo)
svc_before=$(service_state demo)

# --- JSON output ------------------------------------------------------------
json=$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct --output json 2>"$WORK/err"); rc=$?
is "$rc" 0 "intercept --output json exits 0"
id=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["session"])' 2>/dev/null)
like "$id" '^[a-z0-9]{10}$' "--output json prints one JSON document with the session id"
like "$(printf '%s' "$json" | python3 -c 'import json,sys; o=json.load(sys.stdin); print(o["tunnel_url"], o["curl"], o["header"])' 2>/dev/null)" \
  "^http://127.0.0.1:$PORT curl -H .*X-C6O-INTERCEPT:yes$" "the JSON carries the tunnel URL, curl example and header"
is "$(stat -c %a "$XDG_STATE_HOME/czctl/sessions/$id.json" 2>/dev/null)" 600 "the session file is mode 0600"

# --- already intercepted ----------------------------------------------------
out=$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct 2>&1); rc=$?
is "$rc" 0 "intercepting again with the same header exits 0"
like "$out" "already intercepts.*" "it reports the existing session"
like "$out" "$id" "the report names the session"
out=$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct -x X-Other:1 2>&1); rc=$?
is "$rc" 1 "intercepting with another header exits 1"
like "$out" "already intercepted by session $id.*czctl session close $id -n default" \
  "the error names the session and the command that closes it"
out=$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct -x X-Other:1 -q 2>&1)
is "$(echo "$out" | wc -l)" 1 "with -q the error is the only output, on one line"

# --- session list -------------------------------------------------------------
list=$("$CZCTL" session list)
like "$(echo "$list" | head -1)" '^SESSION +NAMESPACE +SERVICE +PORT +HEADER +AGE +LOCAL$' "session list prints a table header"
like "$list" "$id +default +demo +80 +X-C6O-INTERCEPT:yes +[0-9]+s +\\*" "session list shows the session, marked local"
jl=$("$CZCTL" session list -o json | python3 -c 'import json,sys; s=json.load(sys.stdin)["sessions"]; print(len(s), s[0]["session"], s[0]["local"])')
is "$jl" "1 $id True" "session list --output json has the session"

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

# --- close from another machine: no local file -----------------------------------
mv "$XDG_STATE_HOME" "$WORK/state-moved"
out=$("$CZCTL" session close 2>&1); rc=$?
is "$rc" 0 "session close without a local file exits 0"
like "$out" "Closed session $new" "it finds the session in the cluster"
is "$(service_state demo)" "$svc_before" "the Service is restored exactly from the cluster alone"
is "$(czctl_leftovers)" "" "the objects are deleted from the cluster alone"
mv "$WORK/state-moved" "$XDG_STATE_HOME"
out=$("$CZCTL" session close "$new" 2>&1); rc=$?
is "$rc" 0 "closing the same session again exits 0 (idempotent)"
is "$(session_ids)" "" "closing again removes the stale local file"
out=$("$CZCTL" session close 2>&1); rc=$?
is "$rc" 0 "session close with nothing to close exits 0"
like "$out" "No session to close" "and says there was nothing to close"
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
done_testing
