#!/bin/sh
# The job's test command, run by `czctl service intercept ... -- CMD` while
# the intercept is live: a request that carries the job's header must reach
# the local build (it answers with its name, $1); one without it must not.
# A real job runs its test suite here, sending $CZCTL_HEADER with the
# requests that should reach the pull request's build.
#
# Where the Service is: $CZCTL_SERVICE_URL (its in-cluster DNS name), or,
# with USE_CLUSTER_IP=1, its ClusterIP (a runner on the cluster's network
# without its DNS, such as this project's sandbox).
set -eu
expected=$1
# the session id, for a cleanup step that runs even if czctl was killed
if [ -n "${SESSION_FILE:-}" ]; then echo "$CZCTL_SESSION" >"$SESSION_FILE"; fi
base=$CZCTL_SERVICE_URL
if [ "${USE_CLUSTER_IP:-}" = 1 ]; then base="http://$CZCTL_CLUSTER_IP:$CZCTL_SERVICE_PORT"; fi

with_header=$(curl -sS --max-time 10 -H "$CZCTL_HEADER" "$base/")
if [ "$with_header" != "$expected" ]; then
  echo "FAIL: a request with '$CZCTL_HEADER' got '$with_header', not '$expected'" >&2
  exit 1
fi
echo "ok - a request with '$CZCTL_HEADER' reached the local build"

without=$(curl -sS --max-time 10 "$base/")
if [ "$without" = "$expected" ]; then
  echo "FAIL: a request without the header reached the local build too" >&2
  exit 1
fi
echo "ok - a request without the header reached the in-cluster version"
