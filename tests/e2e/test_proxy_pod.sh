#!/usr/bin/env bash
# The proxy pod: it passes the `restricted` Pod Security Standard (the
# namespace enforces it), and a proxy that cannot start (an image that does
# not exist) ends the setup with the pod's reason, not a silent timeout,
# leaving nothing behind.
source "$(dirname "$0")/lib/common.sh"

sandbox_up
kubectl create namespace secure >/dev/null
sed 's/namespace: default/namespace: secure/' "$E2E_ROOT/examples/demo-app.yaml" | kubectl apply -f - >/dev/null
kubectl rollout status deployment/demo -n secure --timeout=60s >/dev/null || { fail "demo app deploys"; exit 1; }
# enforced from now on: only the proxy pod is created under it
kubectl label namespace secure pod-security.kubernetes.io/enforce=restricted >/dev/null
snapshot "$WORK/before.json"
PORT=$(local_server laptop)
IP=$(cluster_ip demo secure)

"$CZCTL" service intercept demo -n secure -l "$PORT" --tunnel direct -q 2>"$WORK/err"; rc=$?
is "$rc" 0 "the proxy is admitted in a namespace enforcing the restricted Pod Security Standard"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$WORK/err"
like "$(who "http://$IP/" -H 'X-C6O-INTERCEPT: yes')" '^laptop$' "the restricted proxy routes the header to the local server"
like "$(who "http://$IP/")" '^demo-' "the restricted proxy passes other requests to the in-cluster pod"
sc=$(kubectl get deploy -n secure -l app.kubernetes.io/managed-by=czctl -o json | python3 -c 'import json,sys
d = json.load(sys.stdin)["items"][0]["spec"]["template"]["spec"]; c = d["containers"][0]
print(d["securityContext"]["runAsNonRoot"], d["securityContext"]["seccompProfile"]["type"],
      c["securityContext"]["allowPrivilegeEscalation"], c["securityContext"]["capabilities"]["drop"],
      c["securityContext"]["readOnlyRootFilesystem"], c["image"])')
like "$sc" "^True RuntimeDefault False \\['ALL'\\] True nginxinc/nginx-unprivileged:[0-9]" \
  "the proxy runs as non-root, RuntimeDefault seccomp, no privilege escalation, no capabilities, read-only root, pinned image"
"$CZCTL" session close -n secure -q; is "$?" 0 "session close exits 0"

"$CZCTL" service intercept demo -n secure -l "$PORT" --tunnel direct --image registry.invalid/no/such:1 -q 2>"$WORK/err"; rc=$?
is "$rc" 1 "a proxy image that cannot be pulled fails the setup (exit 1)"
like "$(cat "$WORK/err")" "proxy pod .* is failing: (ErrImagePull|ImagePullBackOff)" "the error names the pod's failure"
is "$(grep -c . "$WORK/err")" 1 "the error is one line"
snapshot "$WORK/after.json"
same_snapshot "$WORK/before.json" "$WORK/after.json" "after both sessions the cluster equals the snapshot from before"
done_testing
