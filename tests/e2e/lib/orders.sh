# Several developers on one Service (issue 9, acceptance 1), for
# test_shared_orders*.sh: source after common.sh, then leave_orders ORDER...
# (each ORDER "alice bob carol" or another permutation). The three join
# (alice -x X-Dev:alice, bob -x X-Dev:bob, carol a cookie rule), leave in that
# order, and each order ends with the Service exactly as it started; at the
# end the last one out has deleted the proxy, its Secrets, the copy Service
# and the heartbeats, and the cluster equals its snapshot from before.
# (Every leave waits for the proxy's old pods to drain: the six orders are
# split over two files, each with a sandbox of its own.)
leave_orders() {
  local order who
  source "$E2E_LIB/devs.sh"
  devs_cluster
  for order in "$@"; do
    join alice -q && join bob -q && join carol -q || fail "the three join ($order)"
    for who in $order; do leave "$who" || fail "$who leaves ($order)"; done
    is "$(service_state demo)" "$svc_before" "leaving in the order $order restores the Service exactly"
  done
  is "$(czctl_leftovers)" "" "the last one out deleted the proxy, its Secrets and the copy Service"
  is "$(kubectl get secret,lease -l app.kubernetes.io/managed-by=czctl -o name)" "" "no Secret or Lease of czctl is left"
  snapshot "$WORK/after.json"
  same_snapshot "$WORK/before.json" "$WORK/after.json" "after these orders of leaving the cluster equals the snapshot from before"
}
