# A sandbox cluster for one shell test file: sandbox_up starts it in a fresh
# temporary directory and arranges that it is stopped, and the directory
# removed, when the test exits for any reason (failure, INT, TERM). Source it
# after tap.sh with ROOT set to the repository. It must not decide anything
# about the tests themselves: callers add their own contexts and users.
# shellcheck shell=bash
source "$ROOT/tests/lib/procs.sh"

# sandbox_down: stop the cluster and remove $D; safe to call twice.
sandbox_down() {
  [ -n "${D:-}" ] || return 0
  "$ROOT/tests/sandbox/sandbox" down "$D/sb" >/dev/null 2>&1
  rm -rf "$D"
}

# sandbox_up: sets D (the temporary directory; the cluster lives in $D/sb
# with $D/sb/kubeconfig and $D/sb/ca.crt) and SANDBOX_SERVER (the API URL).
# When the cluster does not come up it reports one failed test with the log,
# ends the plan and exits 1.
sandbox_up() {
  D=$(mktemp -d)
  on_exit sandbox_down
  if ! "$ROOT/tests/sandbox/sandbox" up "$D/sb" >"$D/up.log" 2>&1; then
    fail "sandbox up"; sed 's/^/#   /' "$D/up.log"; done_testing; exit 1
  fi
  SANDBOX_SERVER=$(kubectl --kubeconfig "$D/sb/kubeconfig" config view \
    -o jsonpath='{.clusters[?(@.name=="sandbox")].cluster.server}')
}
