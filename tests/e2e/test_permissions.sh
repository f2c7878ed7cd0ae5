#!/usr/bin/env bash
# The minimal Role (issue 15, acceptance 3 and 4): the sandbox's restricted
# user, bound to exactly examples/czctl-developer-role.yaml, can run every
# command (intercept with --env-file, session list, service env, session
# close, also from another machine); with any one verb of any rule removed,
# kubectl auth can-i says no, and `service intercept` refuses up front with
# a one-line error naming exactly that permission (and so does -c, closing
# a session first, for the ones closing needs), having written nothing
# (the audit log shows no request but the access reviews) and left the
# Service as it was; `service env` refuses the same way for the ones it needs.
source "$(dirname "$0")/lib/common.sh"

ROLE="$E2E_ROOT/examples/czctl-developer-role.yaml"
sandbox_up
deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata: {name: envapp}
data: {MODE: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: envapp}
stringData: {TOKEN: t0ken}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: envapp}
spec:
  selector: {matchLabels: {app: envapp}}
  template:
    metadata: {labels: {app: envapp}}
    spec:
      containers:
        - name: app
          image: sandbox/echo
          env:
            - {name: MODE, valueFrom: {configMapKeyRef: {name: envapp, key: MODE}}}
            - {name: TOKEN, valueFrom: {secretKeyRef: {name: envapp, key: TOKEN}}}
---
apiVersion: v1
kind: Service
metadata: {name: envapp}
spec:
  selector: {app: envapp}
  ports: [{port: 80, targetPort: 8080}]
EOF
kubectl rollout status deployment/envapp --timeout=60s >/dev/null || { fail "the env app deploys"; exit 1; }
PORT=$(local_server laptop)
svc_before=$(service_state demo)
AS=(--context restricted)
# A Role cannot list Nodes (cluster-scoped), which --tunnel direct reads to
# find this machine's address: give it, as docs/permissions.md says.
node_ip=$(kubectl get node sandbox -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
HOST=$(ip -o route get "$node_ip" | sed -n 's/.* src \([0-9.]*\).*/\1/p')
TUNNEL=(--tunnel direct --tunnel-host "$HOST")

# The example Role and its RoleBinding, bound to the sandbox's restricted
# user: $WORK/role.yaml as it is, and $WORK/role-N.json without the Nth verb
# (listed in $WORK/perms as "RESOURCE VERB GROUP"); one Python run for all.
python3 - "$ROLE" "$WORK" <<'PY'
import copy, json, sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
for d in docs:
    if d["kind"] == "RoleBinding":
        d["subjects"] = [{"kind": "User", "name": "restricted", "apiGroup": "rbac.authorization.k8s.io"}]
role = next(d for d in docs if d["kind"] == "Role")
yaml.safe_dump_all(docs, open(sys.argv[2] + "/role.yaml", "w"))
perms = open(sys.argv[2] + "/perms", "w")
n = 0
for i, rule in enumerate(role["rules"]):
    for verb in rule["verbs"]:
        n += 1
        perms.write("%s %s %s\n" % (rule["resources"][0], verb, rule["apiGroups"][0]))
        variant = copy.deepcopy(docs)
        r = next(d for d in variant if d["kind"] == "Role")
        r["rules"][i]["verbs"] = [v for v in rule["verbs"] if v != verb]
        r["rules"] = [x for x in r["rules"] if x["verbs"]]   # a rule with no verb left is no rule
        r["metadata"]["namespace"] = "default"
        json.dump(r, open("%s/role-%d.json" % (sys.argv[2], n), "w"))
PY
# apply_role [N]: the Role and binding as they are (kubectl apply), or the
# Nth variant of the Role (one PUT with curl: much faster than kubectl).
apply_role() {
  if [ -z "${1:-}" ]; then kubectl apply -n default -f "$WORK/role.yaml" >/dev/null; return; fi
  local server token
  server=$(sed -n 's/^ *server: *//p' "$KUBECONFIG" | head -1)
  token=$(sed -n 's/^ *token: *//p' "$KUBECONFIG" | head -1)
  curl -sf -o /dev/null --cacert "$CLUSTER/ca.crt" -H "Authorization: Bearer $token" -H "Content-Type: application/json" \
    -X PUT --data-binary @"$WORK/role-$1.json" "$server/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/czctl-developer"
}

# --- before the Role: refused up front, naming everything -----------------------
out=$("$CZCTL" service intercept demo "${AS[@]}" "${TUNNEL[@]}" -l "$PORT" 2>&1); rc=$?
like "$rc $out" '^1 .*needs permissions you do not have in namespace "default": get services, patch services' \
  "without the Role, service intercept refuses up front and lists what is missing"

# --- with exactly the Role: every command works -----------------------------------
apply_role
is "$(kubectl "${AS[@]}" auth can-i get secrets -n default)" yes "kubectl auth can-i agrees the Role is bound"
out=$("$CZCTL" service intercept demo "${AS[@]}" "${TUNNEL[@]}" -l "$PORT" --env-file "$WORK/demo.env" 2>&1); rc=$?
is "$rc" 0 "service intercept --env-file works with the Role"; [ "$rc" = 0 ] || echo "$out" | sed 's/^/# /'
like "$(who "http://$(cluster_ip demo)/" -H 'X-C6O-INTERCEPT: yes')" '^laptop$' "the intercept routes to this machine"
is "$(stat -c %a "$WORK/demo.env" 2>/dev/null)" 600 "--env-file wrote a 0600 file"
id=$(session_ids)
like "$("$CZCTL" session list -n default "${AS[@]}" 2>&1)" "$id +default +demo" "session list -n works with the Role"
like "$("$CZCTL" service env envapp "${AS[@]}" --show-secrets 2>&1)" "TOKEN='t0ken'" "service env works with the Role"
"$CZCTL" session close "${AS[@]}" -q; is "$?" 0 "session close works with the Role"
is "$(service_state demo)" "$svc_before" "the Service is restored"
is "$(czctl_leftovers)" "" "nothing is left behind"
"$CZCTL" service intercept demo "${AS[@]}" "${TUNNEL[@]}" -l "$PORT" -q; is "$?" 0 "a second intercept works"
mv "$XDG_STATE_HOME" "$WORK/state-elsewhere"
"$CZCTL" session close -n default "${AS[@]}" -q; is "$?" 0 "session close from another machine (no local record) works with the Role"
is "$(service_state demo)" "$svc_before" "the Service is restored again"
is "$(czctl_leftovers)" "" "nothing is left behind again"

# --- --tunnel kube: refused up front without its Role, works with both -------------
mark=$(wc -l <"$CLUSTER/audit.jsonl")
out=$("$CZCTL" service intercept demo "${AS[@]}" -l "$PORT" --tunnel kube 2>&1); rc=$?
is "$rc:$(printf '%s\n' "$out" | wc -l)" "1:1" "--tunnel kube with only the developer Role fails with one line"
like "$out" 'needs permissions you do not have in namespace "default": create networkpolicies.networking.k8s.io, delete networkpolicies.networking.k8s.io, list networkpolicies.networking.k8s.io, create pods/portforward \(see docs/permissions.md' \
  "... naming exactly what examples/czctl-kube-tunnel-role.yaml grants"
is "$(tail -n +"$((mark + 1))" "$CLUSTER/audit.jsonl" | grep '"user":"restricted"' | grep -v '"method":"GET"' \
      | grep -v '"path":"/apis/authorization.k8s.io/')" "" "... having written nothing"
sed 's/developer@example.com/restricted/' "$E2E_ROOT/examples/czctl-kube-tunnel-role.yaml" | kubectl apply -n default -f - >/dev/null
is "$(kubectl "${AS[@]}" auth can-i create pods --subresource=portforward -n default)" yes "kubectl auth can-i agrees the kube tunnel Role is bound"
out=$("$CZCTL" service intercept demo "${AS[@]}" -l "$PORT" --tunnel kube -q 2>&1); rc=$?
is "$rc" 0 "with both Roles, service intercept --tunnel kube works"; [ "$rc" = 0 ] || echo "$out" | sed 's/^/# /'
like "$(who "http://$(cluster_ip demo)/" -H 'X-C6O-INTERCEPT: yes')" '^laptop$' "... and routes to this machine through the API server"
"$CZCTL" session close "${AS[@]}" -q; is "$?" 0 "... and its session closes with them"
is "$(service_state demo)" "$svc_before" "the Service is restored"
is "$(czctl_leftovers; kubectl get networkpolicies -A -l app.kubernetes.io/managed-by=czctl -o name)" "" "nothing is left behind (the relay included)"
kubectl delete -n default role/czctl-kube-tunnel rolebinding/czctl-kube-tunnel >/dev/null

# --- each verb of each rule removed in turn --------------------------------------
# A session (the admin's) holds the Service meanwhile, so that `-c` (close
# it first) has something to close.
env_needs=" get/services list/pods get/configmaps get/secrets "
close_needs=" get/services patch/services delete/services list/services list/pods create/secrets delete/secrets list/secrets get/deployments patch/deployments delete/deployments list/deployments watch/deployments delete/leases list/leases "
"$CZCTL" service intercept demo --tunnel direct -l "$PORT" -q; is "$?" 0 "the admin intercepts the Service meanwhile"
held=$(service_state demo)
n=0
while read -r resource verb group; do
  n=$((n + 1))
  name="$verb $resource${group:+.$group}"
  apply_role "$n" || fail "the Role without '$name' is applied"
  is "$(kubectl "${AS[@]}" auth can-i "$verb" "$resource${group:+.$group}" -n default)" no "without '$name', kubectl auth can-i says no"
  mark=$(wc -l <"$CLUSTER/audit.jsonl")
  out=$("$CZCTL" service intercept demo "${AS[@]}" "${TUNNEL[@]}" -l "$PORT" --env-file "$WORK/x.env" 2>&1); rc=$?
  is "$rc:$(printf '%s\n' "$out" | wc -l)" "1:1" "without '$name', service intercept fails with one line"
  like "$out" "needs permissions you do not have in namespace \"default\": $name \(see docs/permissions.md" \
    "the error names exactly '$name'"
  if [[ $close_needs == *" $verb/$resource "* ]]; then
    out=$("$CZCTL" service intercept demo -c "${AS[@]}" 2>&1); rc=$?
    like "$rc $out" "^1 .*needs permissions .*: $name \(" "without '$name', service intercept -c refuses up front naming it"
  fi
  if [[ $env_needs == *" $verb/$resource "* ]]; then
    out=$("$CZCTL" service env envapp "${AS[@]}" 2>&1); rc=$?
    like "$rc $out" "^1 .*czctl service env needs permissions .*: $name \(" "without '$name', service env refuses up front naming it"
  fi
  writes=$(tail -n +"$((mark + 1))" "$CLUSTER/audit.jsonl" | grep '"user":"restricted"' | grep -v '"method":"GET"' \
           | grep -v '"path":"/apis/authorization.k8s.io/')
  is "$writes" "" "without '$name', nothing was written (only access reviews were asked)"
  check "without '$name', no env file is left" test ! -e "$WORK/x.env"
done <"$WORK/perms"
is "$n" 27 "the Role has 27 verbs, each removed once"
is "$(service_state demo)" "$held" "after all these refusals the Service is as it was (still held by the admin's session)"
"$CZCTL" session close -q; is "$?" 0 "the admin's session closes"
is "$(service_state demo)" "$svc_before" "the Service is restored"
is "$(czctl_leftovers)" "" "nothing of czctl is in the cluster"

done_testing
