#!/usr/bin/env bash
# Sessions belong to someone (issue 9, acceptance 4, 5, 8): a bare close,
# -c, a close by id, --force, --all with and without --yes and on a
# terminal, an unknown id; the namespace is taken the same way by
# intercept, list and close, with a context namespace set and unset; a
# recorded PID that now belongs to another process is never signalled.
source "$(dirname "$0")/lib/common.sh"

sandbox_up
deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
PORT=$(local_server laptop)
svc_before=$(service_state demo)

# no_files DIR: DIR is empty or missing (a condition for wait_for_cmd).
no_files() { [ -z "$(ls -A "$1" 2>/dev/null)" ]; }

# --- sessions belong to someone (issue 9, acceptance 4) ------------------------------
alice() { USER=alice XDG_STATE_HOME="$WORK/state-alice" "$CZCTL" "$@"; }
bob() { USER=bob XDG_STATE_HOME="$WORK/state-bob" "$CZCTL" "$@"; }
alice service intercept demo -l "$PORT" --tunnel direct -x X-Dev:alice -q; is "$?" 0 "alice intercepts demo"
aid=$(alice session list -o json | python3 -c 'import json,sys; print([s["id"] for s in json.load(sys.stdin)["items"] if s["mine"]][0])')
out=$(bob session close 2>&1); rc=$?
is "$rc" 0 "bob's bare session close exits 0"
like "$out" "No session of yours to close in namespace default\\. Others': $aid \\(default/demo, alice@" \
  "it closes nothing of alice's and says whose sessions are there"
out=$(bob service intercept demo -c 2>&1); rc=$?
is "$rc" 0 "bob's intercept -c exits 0"
like "$(alice session list)" "$aid .*alice@[^ ]+ \\(you\\) +active" "alice's session survives bob's bare close and -c"
# a Service whose czctl annotation was edited by hand hides no one else's session
kubectl create service clusterip mangled --tcp=80 >/dev/null &&
  kubectl annotate service mangled czctl.io/sessions='not json' >/dev/null
out=$(alice session list 2>"$WORK/list.err"); rc=$?
is "$rc" 0 "session list exits 0 with one unreadable Service in the namespace"
like "$out" "$aid .*alice@[^ ]+ \\(you\\) +active" "... lists the other sessions as usual"
like "$out" "- +default +mangled +- +- +- +unreadable" "... and shows the unreadable Service as such"
like "$(cat "$WORK/list.err")" "warning: Service default/mangled: its czctl.io/sessions annotation is not .*kubectl edit service mangled" \
  "... with a warning saying how to repair it"
out=$(bob session close 2>&1); rc=$?
is "$rc" 0 "a bare close still works beside it"
kubectl delete service mangled >/dev/null
out=$(bob session close "$aid" 2>&1); rc=$?
is "$rc" 1 "bob closing alice's session by id alone exits 1"
like "$out" "session $aid belongs to alice@[^ ]+, not to you; to close it anyway: czctl session close $aid -n default --force" \
  "the error says whose it is and the flag that closes it anyway"
out=$(bob session close nosuchid 2>&1); rc=$?
is "$rc" 1 "an unknown session id exits 1"
like "$out" "no session nosuchid in namespace default; the sessions there: $aid \\(default/demo, alice@" \
  "the error lists the sessions that exist"
is "$(printf '%s\n' "$out" | grep -c .)" 1 "that error is one line"
out=$(bob session close "$aid" --force 2>&1); rc=$?
is "$rc" 0 "bob closes alice's session with its id and --force"
like "$out" "Closed session $aid in default \\(Service demo restored\\), which belonged to alice@" "and is told whose it was"
check "alice's keeper notices: her local record goes" wait_for_cmd 10 no_files "$WORK/state-alice/czctl/sessions"
is "$(service_state demo)" "$svc_before" "the Service is restored"
alice service intercept demo -l "$PORT" --tunnel direct -x X-Dev:alice -q
bob service intercept demo -l "$PORT" --tunnel direct -x X-Dev:bob -q
out=$(bob session close --all 2>&1); rc=$?
is "$rc" 1 "--all without a terminal and without --yes exits 1"
like "$out" "--all would close 2 session\\(s\\) in namespace default \\(1 of others: .*alice@.*\\); to confirm without a terminal, add --yes" \
  "it lists what it would close and asks for --yes"
is "$(bob session list -o json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')" 2 \
  "nothing was closed"
USER=bob XDG_STATE_HOME="$WORK/state-bob" python3 "$E2E_LIB/on_tty.py" --answer '[y/N]=y' \
  "$CZCTL" session close --all >"$WORK/all-tty.out" 2>&1
like "$(cat "$WORK/all-tty.out")" "This closes 2 session" "--all on a terminal lists what it will close"
like "$(cat "$WORK/all-tty.out")" "Close them\\? \\[y/N\\]" "and asks"
like "$(tail -1 "$WORK/all-tty.out")" "^exit 0" "answered y, it closes them and exits 0"
is "$(service_state demo)" "$svc_before" "the Service is restored after --all"
alice service intercept demo -l "$PORT" --tunnel direct -x X-Dev:alice -q
out=$(bob session close --all --yes 2>&1); rc=$?
is "$rc" 0 "--all --yes closes without asking"
like "$out" "Closed session .*which belonged to alice@" "and says whose sessions it closed"

# --- the namespace: -n, else the context's, else default, for every command ----------
kubectl create namespace team-a >/dev/null
sed 's/namespace: default/namespace: team-a/' "$E2E_ROOT/examples/demo-app.yaml" | kubectl apply -f - >/dev/null &&
  kubectl rollout status -n team-a deployment/demo --timeout=60s >/dev/null || fail "the demo app deploys in team-a"
cp "$KUBECONFIG" "$WORK/kc-team-a"
KUBECONFIG="$WORK/kc-team-a" kubectl config set-context --current --namespace=team-a >/dev/null
tsvc_before=$(service_state demo team-a)
ns=$(KUBECONFIG="$WORK/kc-team-a" "$CZCTL" service intercept demo -l "$PORT" --tunnel direct -o json 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["namespace"])')
is "$ns" team-a "with the context's namespace team-a, intercept takes demo in team-a"
is "$(service_state demo)" "$svc_before" "default/demo is untouched"
like "$(KUBECONFIG="$WORK/kc-team-a" "$CZCTL" session list)" " team-a +demo +80 " "session list looks in team-a"
is "$("$CZCTL" session list)" "No intercept sessions in namespace default." "without the context's namespace it looks in default"
like "$("$CZCTL" session list -n team-a)" " team-a +demo " "-n team-a finds it from the default context"
like "$("$CZCTL" session list -A)" " team-a +demo " "-A lists every namespace"
out=$(KUBECONFIG="$WORK/kc-team-a" "$CZCTL" session close 2>&1); rc=$?
is "$rc" 0 "a bare close with the team-a context exits 0"
like "$out" "Closed session [a-z0-9]+ in team-a \\(Service demo restored\\)" "it closes the session in team-a"
is "$(service_state demo team-a)" "$tsvc_before" "team-a/demo is restored"
KUBECONFIG="$WORK/kc-team-a" "$CZCTL" service intercept demo -n default -l "$PORT" --tunnel direct -q
is "$(service_state demo team-a)" "$tsvc_before" "-n default wins over the context's namespace"
like "$("$CZCTL" session list)" " default +demo " "the session is in default"
out=$("$CZCTL" session close 2>&1)
like "$out" "in default \\(Service demo restored\\)" "and a bare close from the default context closes it"
# a session record knows its namespace: closed from another context by its id
KUBECONFIG="$WORK/kc-team-a" "$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q
tid=$(session_ids)
out=$("$CZCTL" session close "$tid" 2>&1); rc=$?
is "$rc" 0 "closing by id from the default context exits 0"
like "$out" "Closed session $tid in team-a" "the id finds the session in its own namespace"
is "$(service_state demo team-a)" "$tsvc_before" "team-a/demo is restored"

# --- a recorded PID reused by another process is never signalled (acceptance 8) -------
"$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q
pid_sid=$(session_ids)
rec="$XDG_STATE_HOME/czctl/sessions/$pid_sid.json"
keeper=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["keeper_pid"]))' "$rec")
kill -KILL "$keeper"
sleep 600 &
other=$!
E2E_PIDS+=($other)
# the keeper's PID now "belongs" to another process: the record says so, its start time does not
python3 - "$rec" "$other" <<'PY'
import json, sys
rec = json.load(open(sys.argv[1]))
rec["keeper_pid"] = int(sys.argv[2])
rec["tunnel"]["pid"] = int(sys.argv[2])
json.dump(rec, open(sys.argv[1], "w"))
PY
is "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["keeper_start"] != open("/proc/%s/stat" % sys.argv[2]).read().rsplit(")", 1)[1].split()[19])' "$rec" "$other")" \
  True "the recorded start time is not the other process's"
out=$("$CZCTL" session close 2>&1); rc=$?
is "$rc" 0 "session close exits 0"
check "the process that now has the recorded PID was not signalled" kill -0 "$other"
is "$(service_state demo)" "$svc_before" "the session was closed all the same"
kill "$other" 2>/dev/null

done_testing
