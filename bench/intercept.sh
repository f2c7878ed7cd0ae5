#!/usr/bin/env bash
# Intercept setup and cleanup: czctl against bench/baseline-kubectl.sh (the
# same steps with kubectl), interleaved on one sandbox; API requests per
# setup and per cleanup from the sandbox audit log; czctl's memory while it
# waits in --wait mode. Appends/replaces the "Intercept setup and cleanup"
# section of bench/RESULTS.md; with SANDBOX_TIMING=realistic in the
# environment (the sandbox node takes a real node's time, tests/sandbox/README.md
# "Timing") the section "Intercept setup and cleanup (SANDBOX_TIMING=realistic)",
# which also times, interleaved on the same sandbox, a bare Deployment of the
# proxy's image from creation to Available (what any rollout costs there).
#
#   bench/intercept.sh [RUNS]     (default 10; needs ./czctl built)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-10}
CZCTL="$ROOT/czctl"
WORK=$(mktemp -d /tmp/czctl-bench.XXXXXX)
export KUBECONFIG="$WORK/cluster/kubeconfig" XDG_STATE_HOME="$WORK/state"
WAIT_PID=""
cleanup() {
  [ -n "$WAIT_PID" ] && kill -TERM "$WAIT_PID" 2>/dev/null && wait "$WAIT_PID" 2>/dev/null
  "$ROOT/tests/sandbox/sandbox" down "$WORK/cluster" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)   # the machine is shared: absolute times depend on it
"$ROOT/tests/sandbox/sandbox" up "$WORK/cluster" >/dev/null
kubectl apply -f "$ROOT/examples/demo-app.yaml" >/dev/null
kubectl rollout status deployment/demo --timeout=60s >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
AUDIT="$WORK/cluster/audit.jsonl"

now_ms() { date +%s%3N; }
lines() { wc -l <"$AUDIT"; }
# timed FILE CMD...: run CMD, append its wall time in ms to FILE
timed() { local f=$1; shift; local t0 t1; t0=$(now_ms); "$@" >/dev/null; t1=$(now_ms); echo $((t1 - t0)) >>"$f"; }

: >"$WORK/cz-setup"; : >"$WORK/cz-cleanup"; : >"$WORK/bl-setup"; : >"$WORK/bl-cleanup"
: >"$WORK/cz-setup-req"; : >"$WORK/cz-cleanup-req"; : >"$WORK/deploy"
PROXY_IMAGE=$("$CZCTL" run /dev/stdin <<<'io.write(require("czctl.intercept").DEFAULT_IMAGE)')
deploy_available() {
  kubectl create deployment "$1" --image="$PROXY_IMAGE" >/dev/null &&
    kubectl wait --for=condition=Available "deployment/$1" --timeout=120s >/dev/null
}
for i in $(seq "$RUNS"); do
  a=$(lines)
  timed "$WORK/cz-setup" "$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q
  b=$(lines)
  timed "$WORK/cz-cleanup" "$CZCTL" session close -q
  c=$(lines)
  echo $((b - a)) >>"$WORK/cz-setup-req"; echo $((c - b)) >>"$WORK/cz-cleanup-req"
  timed "$WORK/bl-setup" "$ROOT/bench/baseline-kubectl.sh" setup demo "$PORT" "b$i"
  timed "$WORK/bl-cleanup" "$ROOT/bench/baseline-kubectl.sh" cleanup demo "b$i"
  if [ -n "${SANDBOX_TIMING:-}" ]; then
    timed "$WORK/deploy" deploy_available "plain-$i"
    kubectl delete deployment "plain-$i" --wait=false >/dev/null
  fi
done
# which requests one czctl setup and cleanup make (the last run)
a=$(lines); "$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q; b=$(lines)
"$CZCTL" session close -q; c=$(lines)
requests() { sed -n "$1,$2p" "$AUDIT" | python3 -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l); print("%s %s%s" % (r["method"], r["path"], " (watch)" if r.get("watch") or "watch=" in (r.get("query") or "") else ""))'; }
setup_list=$(requests $((a + 1)) "$b")
cleanup_list=$(requests $((b + 1)) "$c")

# memory while waiting
: >"$WORK/wait.out"
"$CZCTL" service intercept demo -l "$PORT" --tunnel direct --wait >"$WORK/wait.out" 2>&1 &
WAIT_PID=$!
for _ in $(seq 600); do grep -q '^Session' "$WORK/wait.out" && break; sleep 0.05; done
sleep 2
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$WAIT_PID/status"); rss=$(awk '/VmRSS/ {print $2}' "/proc/$WAIT_PID/status")
anon=$(awk '/RssAnon/ {print $2}' "/proc/$WAIT_PID/status"); pss=$(awk '/^Pss:/ {print $2}' "/proc/$WAIT_PID/smaps_rollup")
libs=$(awk '/^[0-9a-f]+-/ {name=$6} /^Rss:/ {rss[name]+=$2} END {for (n in rss) if (rss[n] >= 400) printf "%s %.1f MiB\n", n, rss[n]/1024}' "/proc/$WAIT_PID/smaps" | sort -k2 -rn | sed 's|.*/||' | paste -sd, - | sed 's/,/, /g')
kill -TERM "$WAIT_PID"; wait "$WAIT_PID" || true; WAIT_PID=""

median() { sort -n "$1" | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
cs=$(median "$WORK/cz-setup"); cc=$(median "$WORK/cz-cleanup")
bs=$(median "$WORK/bl-setup"); bc=$(median "$WORK/bl-cleanup")
rs=$(median "$WORK/cz-setup-req"); rc=$(median "$WORK/cz-cleanup-req")
ratio() { python3 -c "print('%.3f' % ($1 / $2))"; }
verdict() { python3 -c "print('met' if $1 else 'NOT met')"; }
sr=$(ratio "$cs" "$bs"); cr=$(ratio "$cc" "$bc")
side_by_side=""
if [ -n "${SANDBOX_TIMING:-}" ]; then
  side_by_side="
Side by side, the same rounds (medians, what a user of a real cluster waits for):
\`kubectl create deployment\` of the proxy image (\`$PROXY_IMAGE\`) until \`kubectl wait
--for=condition=Available\` returns **$(median "$WORK/deploy") ms**; a whole \`czctl service intercept\`
**${cs} ms**; \`czctl session close\` **${cc} ms**. The first setup pulls the proxy image (3 s), the
median rounds find it on the node.
"
fi
mib() { python3 -c "print('%.1f' % ($1 / 1024))"; }
hwm_mib=$(mib "$hwm"); rss_mib=$(mib "$rss"); anon_mib=$(mib "$anon"); pss_mib=$(mib "$pss")

MODE=${SANDBOX_TIMING:+ (SANDBOX_TIMING=$SANDBOX_TIMING)}
section=$(cat <<EOT
## Intercept setup and cleanup$MODE

Command: \`${SANDBOX_TIMING:+SANDBOX_TIMING=$SANDBOX_TIMING }bench/intercept.sh $RUNS\` ($RUNS interleaved rounds on one sandbox: czctl setup,
czctl cleanup, baseline setup, baseline cleanup; medians). czctl: \`czctl service intercept demo
-l PORT --tunnel direct -q\` and \`czctl session close -q\`; baseline: \`bench/baseline-kubectl.sh\`
(the same objects and steps with kubectl, \`kubectl rollout status\`, \`kubectl delete --wait\`).
Machine: $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%d), load average before the runs $LOAD (the machine is shared;
the ratios, taken on interleaved runs, are what the goals are about).

| step | czctl median | kubectl baseline median | ratio (goal <= 0.1${MODE:+ with the default timing}) |
|---|---|---|---|
| setup | ${cs} ms | ${bs} ms | **${sr}** ${MODE:-($(verdict "$sr <= 0.1"))} |
| cleanup | ${cc} ms | ${bc} ms | **${cr}** ${MODE:-($(verdict "$cr <= 0.1"))} |
${side_by_side}
API requests (sandbox audit log, median per run): setup **${rs}** (goal <= 10: $(verdict "$rs <= 10")),
cleanup **${rc}** (goal <= 8: $(verdict "$rc <= 8")). One setup:

\`\`\`
${setup_list}
\`\`\`

One cleanup:

\`\`\`
${cleanup_list}
\`\`\`

czctl memory while waiting in \`--wait\` mode (the waiting process, which runs the setup as a
child command and loads the Kubernetes client only to close the session; 2 s after setup,
/proc/PID/status): VmHWM
**${hwm_mib} MiB**, VmRSS ${rss_mib} MiB (goal < 8 MiB: $(verdict "$hwm < 8192")). Of the RSS, ${anon_mib} MiB is
anonymous (Lua heap) and the rest shared pages of libraries (PSS ${pss_mib} MiB); the
largest: ${libs}.
EOT
)
printf '%s\n' "$section"
printf '%s\n' "$section" | python3 "$ROOT/bench/lib/results.py" "$ROOT/bench/RESULTS.md"
