# A sandbox with the demo app and a local echo server, for the benchmarks
# that open sessions (soak.sh, ci-cancel.sh). Source it after setting
# set -euo pipefail; then call demo_sandbox NAME. Sets ROOT, CZCTL, SANDBOX,
# WORK (a temp dir, removed at exit), KUBECONFIG and XDG_STATE_HOME
# (exported), PORT (the local server's) and LOCAL_PID; the EXIT trap closes
# what is left, stops the server and the sandbox.
# shellcheck shell=bash
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CZCTL="$ROOT/czctl"
SANDBOX="$ROOT/tests/sandbox/sandbox"
LOCAL_PID=""

demo_sandbox_cleanup() {
  "$CZCTL" session close -q >/dev/null 2>&1 || true
  [ -n "$LOCAL_PID" ] && kill "$LOCAL_PID" 2>/dev/null
  "$SANDBOX" down "$WORK/cluster" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}

# demo_sandbox NAME: the sandbox (in /tmp/czctl-NAME.XXXXXX), the demo app
# rolled out, the echo server on 127.0.0.1:$PORT.
demo_sandbox() {
  WORK=$(mktemp -d "/tmp/czctl-$1.XXXXXX")
  export KUBECONFIG="$WORK/cluster/kubeconfig" XDG_STATE_HOME="$WORK/state"
  trap demo_sandbox_cleanup EXIT
  trap 'exit 130' INT TERM
  "$SANDBOX" up "$WORK/cluster" >/dev/null
  kubectl apply -f "$ROOT/examples/demo-app.yaml" >/dev/null
  kubectl rollout status deployment/demo --timeout=60s >/dev/null
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  POD_NAME=laptop POD_NAMESPACE=laptop python3 -I "$ROOT/tests/sandbox/k8s/echo.py" \
    --ip 127.0.0.1 --port "$PORT" --container laptop >/dev/null 2>&1 &
  LOCAL_PID=$!
}
