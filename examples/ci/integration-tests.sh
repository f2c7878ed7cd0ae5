#!/bin/sh
# The job's test command, run by `czctl service intercept ... -- CMD` while
# the intercept is live: a request that carries the job's header must reach
# the local build (it answers with its name, $1); one without it must not.
# A real job runs its test suite here, sending $CZCTL_HEADER with the
# requests that should reach the pull request's build.
#
# The requests go to $CZCTL_SERVICE_URL (the Service's in-cluster URL), so
# the runner must be inside the cluster's network (a self-hosted runner in
# the cluster, a VPN with the cluster's DNS), or CLUSTER_EXEC names a
# command prefix that runs curl there (e.g. "kubectl exec -i debug --", or
# this project's sandbox: "tests/sandbox/sandbox exec DIR --").
set -eu
expected=$1
# the session id, for a cleanup step that runs even if czctl was killed
if [ -n "${SESSION_FILE:-}" ]; then echo "$CZCTL_SESSION" >"$SESSION_FILE"; fi
in_cluster=${CLUSTER_EXEC:-}

# shellcheck disable=SC2086 # the prefix is words
with_header=$($in_cluster curl -sS --max-time 10 -H "$CZCTL_HEADER" "$CZCTL_SERVICE_URL/")
if [ "$with_header" != "$expected" ]; then
  echo "FAIL: a request with '$CZCTL_HEADER' got '$with_header', not '$expected'" >&2
  exit 1
fi
echo "ok - a request with '$CZCTL_HEADER' reached the local build"

# shellcheck disable=SC2086
without=$($in_cluster curl -sS --max-time 10 "$CZCTL_SERVICE_URL/")
if [ "$without" = "$expected" ]; then
  echo "FAIL: a request without the header reached the local build too" >&2
  exit 1
fi
echo "ok - a request without the header reached the in-cluster version"
