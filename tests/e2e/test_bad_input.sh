#!/usr/bin/env bash
# Acceptance 6: bad input gets a one-line error, exit 1 or 2, and nothing in
# the cluster changes (snapshots compared): unknown Service or namespace, a
# port the Service does not have, a malformed header, a Service without a
# selector, an ExternalName Service, a refused permission (restricted user).
source "$(dirname "$0")/lib/common.sh"

sandbox_up
deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
deploy "$E2E_ROOT/examples/multi-port-app.yaml" multi || { fail "multi-port app deploys"; exit 1; }
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: default}
spec:
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: default}
spec:
  type: ExternalName
  externalName: example.invalid
YAML
snapshot "$WORK/before.json"

# bad_input NAME REGEX CODES ARGS...: with -q, one line on stderr matching REGEX, an
# exit code among CODES, nothing on stdout, the cluster unchanged.
bad_input() {
  local name=$1 regex=$2 codes=$3; shift 3
  local out err rc
  out=$("$CZCTL" "$@" -q 2>"$WORK/err"); rc=$?
  err=$(cat "$WORK/err")
  like "$rc" "^($codes)\$" "$name: exit code $codes"
  like "$err" "$regex" "$name: the error says what is wrong"
  is "$(printf '%s\n' "$err" | wc -l)" 1 "$name: the error is one line"
  snapshot "$WORK/now.json"
  same_snapshot "$WORK/before.json" "$WORK/now.json" "$name: nothing changed in the cluster"
}

bad_input "unknown Service" 'Service "nope" not found in namespace "default"' 1 \
  service intercept nope -l 3000 --tunnel direct
bad_input "unknown namespace" 'namespace "nowhere" not found' 1 \
  service intercept demo -n nowhere -l 3000 --tunnel direct
bad_input "a port the Service does not have" 'has no port 81 \(its ports: 80 \(http\)\)' '1|2' \
  service intercept demo -r 81 -l 3000 --tunnel direct
bad_input "no -r on a two-port Service" 'has 2 ports: pick one with -r \(80 \(web\), 9090 \(admin\)\)' '1|2' \
  service intercept multi -l 3000 --tunnel direct
bad_input "a malformed header" 'invalid --header "no-colon"' 2 \
  service intercept demo -x no-colon -l 3000 --tunnel direct
bad_input "a header with an empty name" 'invalid --header ":yes"' 2 \
  service intercept demo -x :yes -l 3000 --tunnel direct
bad_input "a Service without a selector" 'Service "manual" has no selector' 1 \
  service intercept manual -l 3000 --tunnel direct
bad_input "an ExternalName Service" 'Service "external" is of type ExternalName' 1 \
  service intercept external -l 3000 --tunnel direct
bad_input "an unknown tunnel provider" 'unknown tunnel provider "carrier-pigeon"' 2 \
  service intercept demo -l 3000 --tunnel carrier-pigeon
bad_input "a refused permission (restricted user)" 'needs permissions you do not have in namespace "default": get services, ' 1 \
  service intercept demo -l 3000 --tunnel direct --context restricted
bad_input "a header value longer than 1024 bytes" 'X-Dev value is 4100 bytes long; at most 1024 are allowed' 2 \
  service intercept demo -x "X-Dev:$(printf 'a%.0s' $(seq 4100))" -l 3000 --tunnel direct
bad_input "a header name as long" 'header name is 300 characters long; at most 256 are allowed' 2 \
  service intercept demo -x "$(printf 'a%.0s' $(seq 300)):yes" -l 3000 --tunnel direct
bad_input "a header name with a space" "invalid header name \"X Team\": only letters, digits, '-' and '_' are allowed" 2 \
  service intercept demo -x 'X Team:v' -l 3000 --tunnel direct
bad_input "a header name with a dot" "\"X.Team\" contains \".\", which NGINX ignores.*only letters, digits, '-' and '_' are allowed" 2 \
  service intercept demo -x 'X.Team:v' -l 3000 --tunnel direct
bad_input "-c on an unknown Service" 'Service "nope" not found in namespace "default"' 1 \
  service intercept nope -c
bad_input "-c in an unknown namespace" 'namespace "nowhere" not found' 1 \
  service intercept demo -n nowhere -c
# --tunnel direct: the address pods reach is this machine's on a Node's
# network; 127.0.0.1 is the pod itself there, and another machine's address
# cannot be listened on; who may not list Nodes must say where.
bad_input "--tunnel-host on the loopback" \
  "^czctl: error: --tunnel-host 127\\.0\\.0\\.1 is this machine's loopback, which pods cannot reach; give the address of this machine that the cluster reaches with --tunnel-host ADDRESS$" 1 \
  service intercept demo -l 3000 --tunnel direct --tunnel-host 127.0.0.1
bad_input "--tunnel-host of another machine" "^czctl: error: --tunnel-host 192\\.0\\.2\\.254 is not an address of this machine" 1 \
  service intercept demo -l 3000 --tunnel direct --tunnel-host 192.0.2.254
# (the restricted user has the Role czctl needs in the namespace: docs/permissions.md)
sed 's/name: developer@example.com/name: restricted/' "$E2E_ROOT/examples/czctl-developer-role.yaml" \
  | kubectl apply -n default -f - >/dev/null
bad_input "--tunnel direct when the Nodes cannot be listed" \
  "cannot tell which address of this machine the cluster reaches: cannot list the cluster's nodes \\(nodes is forbidden.*\\); give the address of this machine that the cluster reaches with --tunnel-host ADDRESS$" 1 \
  service intercept demo -l 3000 --tunnel direct --context restricted
sed 's/^\( *token:\).*/\1 not-the-token-4711/' "$KUBECONFIG" >"$WORK/badtoken.kubeconfig"
bad_input "rejected credentials (401)" \
  'Unauthorized: the cluster rejected the credentials of user "admin" \(context "sandbox"\); refresh them or check the kubeconfig' 1 \
  service intercept demo -l 3000 --tunnel direct -k "$WORK/badtoken.kubeconfig"
unlike_token=$(grep -c 'not-the-token-4711' "$WORK/err")
is "$unlike_token" 0 "the 401 error does not show the token"
sed 's#^\( *server:\).*#\1 https://127.0.0.1:1#' "$KUBECONFIG" >"$WORK/nocluster.kubeconfig"
bad_input "an unreachable cluster" \
  "cannot reach the cluster at https://127.0.0.1:1: .*; check that it is running and the kubeconfig's server" 1 \
  service intercept demo -l 3000 --tunnel direct -k "$WORK/nocluster.kubeconfig"

# Without -q, on a pipe: a failed step prints no line of its own; the error is the one line.
"$CZCTL" service intercept nope -l 3000 --tunnel direct >/dev/null 2>"$WORK/err"; rc=$?
is "$rc" 1 "unknown Service without -q: exit 1"
is "$(grep -c . "$WORK/err")" 1 "unknown Service without -q: stderr on a pipe is one line"
like "$(cat "$WORK/err")" '^czctl: error: Service "nope" not found' "that line is the error"
is "$(session_ids)" "" "no local session file is left by any failure"
done_testing
