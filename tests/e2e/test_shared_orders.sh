#!/usr/bin/env bash
# Several developers on one Service (issue 9, acceptance 1): three
# developers with three rules leave in every order; each order ends with the
# Service exactly as it started, and the last one out deletes the proxy, its
# Secrets, the copy Service and the heartbeats. (The routes, the refusals and
# others' changes: test_shared.sh; each leave waits for the proxy's old pods
# to drain, so the orders have a file, and a sandbox, of their own.)
set -u
source "$(dirname "$0")/lib/common.sh"

sandbox_up
deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
snapshot "$WORK/before.json"
svc_before=$(service_state demo)
IP=$(cluster_ip demo)
declare -A LPORT
for d in alice bob carol dave; do LPORT[$d]=$(local_server "$d"); done
source "$E2E_LIB/devs.sh"

for order in "alice bob carol" "alice carol bob" "bob alice carol" "bob carol alice" "carol alice bob" "carol bob alice"; do
  # (they join at once: the API server serialises their patches)
  join alice -q & a=$!; join bob -q & b=$!; join carol -q & c=$!
  wait $a && wait $b && wait $c || fail "the three join ($order)"
  for who in $order; do leave "$who" || fail "$who leaves ($order)"; done
  is "$(service_state demo)" "$svc_before" "leaving in the order $order restores the Service exactly"
done
is "$(czctl_leftovers)" "" "the last one out deleted the proxy, its Secrets and the copy Service"
is "$(kubectl get secret,lease -l app.kubernetes.io/managed-by=czctl -o name)" "" "no Secret or Lease of czctl is left"
snapshot "$WORK/after.json"
same_snapshot "$WORK/before.json" "$WORK/after.json" "after every order of leaving the cluster equals the snapshot from before"
done_testing
