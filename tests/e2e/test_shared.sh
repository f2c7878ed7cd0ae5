#!/usr/bin/env bash
# Several developers on one Service (issue 9, acceptance 1, 3, 7): three
# developers (three state directories, three users) intercept the demo
# Service with three rules, each gets only their requests and everyone else
# the pods, they leave in every order and the Service ends as it started;
# rules that would take the same requests are refused naming the holder;
# changes others made survive the close. The holder and load:
# test_shared_holder.sh; every order of leaving: test_shared_orders*.sh.
set -u
source "$(dirname "$0")/lib/common.sh"

source "$E2E_LIB/devs.sh"
devs_cluster

# --- acceptance 1: three developers, three rules, one Service ----------------------
join alice; is "$?" 0 "alice intercepts demo with X-Dev: alice"
join bob; is "$?" 0 "bob intercepts the same Service and port with X-Dev: bob"
join carol; is "$?" 0 "carol intercepts it with a cookie rule from the Lua API"
is "$(routes)" "alice bob carol pods pods" \
  "each developer gets only their requests; others (another value, no header) reach the pods"
is "$(kubectl get deploy -l app.kubernetes.io/managed-by=czctl -o name)" "deployment.apps/czctl-proxy-demo" \
  "the three sessions share one proxy Deployment"
list=$(dev bob session list)
like "$list" '^SESSION +NAMESPACE +SERVICE +PORT +RULE +OWNER +STATE +AGE' "session list shows owner and state columns"
like "$list" "X-Dev: bob +bob@[^ ]+ \\(you\\) +active" "session list marks bob's own session"
like "$list" "X-Dev: alice +alice@[^ ]+ +active" "and shows alice's as hers, not bob's"
is "$(dev carol session list -o json | python3 -c 'import json,sys
print(sorted((s["owner"]["user"], s["mine"], s["state"]) for s in json.load(sys.stdin)["items"]))')" \
  "[('alice', False, 'active'), ('bob', False, 'active'), ('carol', True, 'active')]" \
  "session list -o json has each owner, which is mine, and the state"

leave bob; is "$?" 0 "bob leaves first"
is "$(routes)" "alice pods carol pods pods" "after bob leaves, alice and carol keep their routes; bob's header reaches the pods"
join bob; is "$?" 0 "bob joins again while alice and carol are there"
is "$(routes)" "alice bob carol pods pods" "his route is back, the others unchanged"

leave carol; leave alice; leave bob
is "$(service_state demo)" "$svc_before" "after all three left the Service is as it started (every order: test_shared_orders*.sh)"
is "$(route "Cookie: team=carol")" pods "right after the last one left, a request with their cookie reaches the pods"

# --- acceptance 3: rules that would take the same requests are refused ---------------
join alice
out=$(dev bob service intercept demo -x X-Dev:alice -l "${LPORT[bob]}" --tunnel direct -q 2>&1); rc=$?
is "$rc" 1 "bob cannot take alice's header and value"
aid=$(dev alice session list -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
like "$out" "session $aid of alice@[^ ]+ already routes X-Dev: alice" "the error names alice's session and alice"
is "$(printf '%s\n' "$out" | grep -c .)" 1 "with -q the refusal is one line"
out=$(dev bob service intercept demo -x x-dev:alice -l "${LPORT[bob]}" --tunnel direct 2>&1)
is "$?" 1 "header names match in any case: x-dev:alice is refused too"
out=$(dev dave service intercept demo -a -l "${LPORT[dave]}" --tunnel direct 2>&1); rc=$?
is "$rc" 1 "--all is refused while alice holds the port"
like "$out" "session $aid of alice@[^ ]+ holds it with X-Dev: alice, so --all would take its requests" \
  "the --all refusal names alice's session"
leave alice
join dave; is "$?" 0 "dave takes every request with --all on a free Service"
did=$(dev dave session list -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
out=$(dev alice service intercept demo -x X-Dev:alice -l "${LPORT[alice]}" --tunnel direct 2>&1); rc=$?
is "$rc" 1 "a rule is refused while dave holds the port with --all"
like "$out" "session $did of dave@[^ ]+ routes every request \\(--all\\)" "the refusal names dave's session"
is "$(route "X-Dev: alice") $(route -)" "dave dave" "dave still gets every request"
leave dave
is "$(service_state demo)" "$svc_before" "the Service is restored after the refusals"

# --- acceptance 7: a port added and a label changed by someone else survive close ------
join alice
kubectl patch service demo --type=json -p \
  '[{"op":"add","path":"/spec/ports/-","value":{"name":"metrics","port":9090,"targetPort":9090,"protocol":"TCP"}}]' >/dev/null
kubectl label service demo team=blue >/dev/null
kubectl annotate service demo example.com/owner=payments >/dev/null
leave alice
is "$(kubectl get service demo -o json | python3 -c 'import json,sys
o = json.load(sys.stdin)
print(json.dumps([o["spec"]["selector"], [(p["port"], p["targetPort"]) for p in o["spec"]["ports"]],
                  o["metadata"]["labels"].get("team"), o["metadata"]["annotations"].get("example.com/owner"),
                  sorted(k for k in o["metadata"]["annotations"] if k.startswith("czctl.io/"))]))')" \
  '[{"app": "demo"}, [[80, "http"], [9090, 9090]], "blue", "payments", []]' \
  "close restores czctl's selector and target port, keeps the added port, label and annotation"
kubectl apply -f "$E2E_ROOT/examples/demo-app.yaml" >/dev/null
kubectl patch service demo --type=json -p '[{"op":"remove","path":"/spec/ports/1"}]' >/dev/null
kubectl label service demo team- >/dev/null; kubectl annotate service demo example.com/owner- >/dev/null
is "$(service_state demo)" "$svc_before" "(the Service is back to its start for what follows)"

is "$(service_state demo)" "$svc_before" "the Service ends as it started"
done_testing
