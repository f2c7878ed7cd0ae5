#!/usr/bin/env bash
# What a CI job does with czctl, as a shell script (see docs/ci.md):
#   1. start the pull request's build on the runner (here: local-build.py),
#   2. intercept the Service with a header unique to this job,
#   3. run the test command (integration-tests.sh) against the cluster,
#   4. close the session when it exits, whatever happens; exit with its code.
#
# Settings (environment): SERVICE (demo), NAMESPACE (default), LOCAL_PORT
# (8080), TUNNEL (direct: the cluster reaches the runner; ngrok otherwise),
# TUNNEL_HOST (with direct: the runner's address as the cluster sees it),
# CI_JOB_ID (default: GitHub's run id and job name), CZCTL (czctl),
# CLUSTER_EXEC (see integration-tests.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SERVICE=${SERVICE:-demo}
NAMESPACE=${NAMESPACE:-default}
LOCAL_PORT=${LOCAL_PORT:-8080}
TUNNEL=${TUNNEL:-direct}
CZCTL=${CZCTL:-czctl}
job=${CI_JOB_ID:-${GITHUB_RUN_ID:-local}-${GITHUB_JOB:-job}}
# a header value is a token: keep the job id's letters, digits, - and .
job=$(printf '%s' "$job" | tr -c 'A-Za-z0-9.-' '-')
name="local build $job"

# 1. the local build, stopped when this script ends
python3 "$here/local-build.py" --port "$LOCAL_PORT" --name "$name" &
build=$!
trap 'kill "$build" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -s --max-time 1 "http://127.0.0.1:$LOCAL_PORT/" >/dev/null && break
  sleep 0.1
done

# 2-4. One command: czctl closes the session when the tests exit and exits
# with their code. A cancelled job signals this script (GitHub Actions sends
# SIGINT, then SIGTERM, to the step's shell only): pass it on to czctl, which
# passes it to the tests, closes the session and exits 128+N.
"$CZCTL" service intercept "$SERVICE" -n "$NAMESPACE" -l "$LOCAL_PORT" -x "X-CI-Job: $job" \
  --tunnel "$TUNNEL" ${TUNNEL_HOST:+--tunnel-host "$TUNNEL_HOST"} \
  -- sh "$here/integration-tests.sh" "$name" &
czctl=$!
trap 'kill -INT "$czctl" 2>/dev/null || true' INT
trap 'kill -TERM "$czctl" 2>/dev/null || true' TERM
status=0
wait "$czctl" || status=$?
# a trapped signal interrupts wait: wait again until czctl has finished
while kill -0 "$czctl" 2>/dev/null; do wait "$czctl" || status=$?; done
exit "$status"
