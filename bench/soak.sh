#!/usr/bin/env bash
# Soak (issue 14): open and close intercept sessions in a loop for DURATION
# seconds, with traffic on both routes during each session (requests with the
# header must reach the local server, requests without it the pod), and
# report the memory (RSS) and open file descriptors of the processes that
# live through the whole run, at start and at end (goal: flat), and failures
# (goal: 0). The long-lived processes: the sandbox's cluster process (API
# server, node, service proxy, DNS) and the local server; czctl's own
# processes live one command or one session each, so for them the figures
# are those of each session's keeper (its first and its last).
# Replaces the "Soak" section of bench/RESULTS.md.
#
#   bench/soak.sh [DURATION_SECONDS] [REQUESTS_PER_ROUTE]   (default 600, 20; needs ./czctl built)
set -euo pipefail
DURATION=${1:-600}
N=${2:-20}
# shellcheck source=lib/demo-sandbox.sh
source "$(dirname "$0")/lib/demo-sandbox.sh"
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
demo_sandbox soak
SERVER_PID=$(cat "$WORK/cluster/server.pid")

# usage PID: "RSS_KiB FDS"
usage() { echo "$(awk '/^VmRSS/ {print $2}' "/proc/$1/status") $(ls "/proc/$1/fd" | wc -l)"; }
keeper_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("keeper_pid") or "")' "$1"; }

sessions=0 ok=0 failed=0 setup_failed=0 close_failed=0
first_keeper="" last_keeper=""
server_start=""; local_start=""
t_end=$(( $(date +%s) + DURATION ))
while [ "$(date +%s)" -lt "$t_end" ]; do
  if ! "$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q >"$WORK/setup.err" 2>&1; then
    setup_failed=$((setup_failed + 1)); sed 's/^/# setup: /' "$WORK/setup.err" >&2
    "$CZCTL" session close -q >/dev/null 2>&1 || true
    continue
  fi
  sessions=$((sessions + 1))
  f=$(ls "$XDG_STATE_HOME"/czctl/sessions/*.json | grep -v tunnel.json | head -1)
  kp=$(keeper_of "$f")
  if [ -n "$kp" ] && [ -d "/proc/$kp" ]; then
    [ -z "$first_keeper" ] && first_keeper=$(usage "$kp")
    last_keeper=$(usage "$kp")
  fi
  # the long-lived processes' start figures, once everything has warmed up
  [ -z "$server_start" ] && server_start=$(usage "$SERVER_PID") && local_start=$(usage "$LOCAL_PID")
  read -r o f < <("$SANDBOX" exec "$WORK/cluster" -- python3 "$ROOT/bench/lib/soak_client.py" \
                    demo.default.svc.cluster.local "$N" X-C6O-INTERCEPT yes || echo "0 $((2 * N))")
  ok=$((ok + o)); failed=$((failed + f))
  "$CZCTL" session close -q >"$WORK/close.err" 2>&1 || { close_failed=$((close_failed + 1)); sed 's/^/# close: /' "$WORK/close.err" >&2; }
done
server_end=$(usage "$SERVER_PID"); local_end=$(usage "$LOCAL_PID")
# after the loop: nothing of czctl may be left in the cluster
left=$(kubectl get all,cm,secret -A -l app.kubernetes.io/managed-by=czctl -o name 2>/dev/null | wc -l)
svc=$(kubectl get service demo -o jsonpath='{.spec.selector}')

mib() { python3 -c "print('%.1f' % ($1 / 1024))"; }
row() {  # NAME "RSS FDS" "RSS FDS"
  local name=$1; read -r r1 f1 <<<"$2"; read -r r2 f2 <<<"$3"
  printf '| %s | %s MiB | %s MiB | %s | %s |\n' "$name" "$(mib "$r1")" "$(mib "$r2")" "$f1" "$f2"
}
section=$(cat <<EOT
## Soak

Command: \`bench/soak.sh $DURATION $N\`: for $DURATION s, sessions opened and closed in a loop
(\`czctl service intercept demo --tunnel direct -q\`, then \`czctl session close -q\`), each with
$N requests with the header and $N without, from inside the cluster on kept-alive connections.
Machine: 2 CPUs, $(uname -r), $(date -u +%F), load average at start $LOAD.

Sessions: **$sessions**; requests answered by the right side: $ok; failed: **$failed** (goal 0);
setups failed: **$setup_failed**; closes failed: **$close_failed**; czctl objects left in the
cluster after the run: **$left**; the Service's selector at the end: \`$svc\`.

| process | RSS at start | RSS at end | open fds at start | open fds at end |
|---|---|---|---|---|
$(row "sandbox cluster process (API server, node, proxy, DNS)" "$server_start" "$server_end")
$(row "local server (the developer's app)" "$local_start" "$local_end")
$(row "czctl session keeper (first session, last session)" "$first_keeper" "$last_keeper")
EOT
)
printf '%s\n' "$section"
python3 "$ROOT/bench/lib/results.py" "$ROOT/bench/RESULTS.md" <<<"$section"
