#!/usr/bin/env bash
# The kube tunnel against the direct tunnel (issue 11, acceptance 6), on the
# same sandbox and the same app: two copies of the demo app (Services demo
# and demo2), one session each (demo: --tunnel direct, demo2: --tunnel kube),
# both sending intercepted requests to one local nginx on 127.0.0.1 (a
# 22-byte answer, 1 worker). wrk runs inside the cluster network (sandbox
# exec), as a pod would.
#
#   throughput: wrk -t2 -c16 -d${BENCH_SECONDS}s -H 'X-C6O-INTERCEPT: yes' http://SERVICE/
#   latency:    bench/lib/alternate_latency.py: one kept-alive connection to each
#               Service, LAT_REQUESTS (default 500) requests each, direct and kube
#               in alternation request by request (the load of the shared machine
#               swings within seconds); p50 of each and the median per-pair difference
#   memory:     the session holders (keepers) from /proc/PID/smaps_rollup: RSS, PSS and
#               private (USS), idle (after the rounds settle) and the highest seen every
#               0.1 s while the kube throughput runs are under way; and where the kube
#               holder's memory goes (bench/lib/smaps_breakdown.py), after the load
#
# Rounds are interleaved (direct and kube alternate, their order swapped
# every round); ratios and added latencies are medians of per-round values.
# Usage: bench/kube-tunnel.sh [ROUNDS] (default 5); BENCH_SECONDS (default 3).
# Writes its section into bench/RESULTS.md and prints it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Debian's python3 (scripts/deps), not a version manager's shim (see tests/run)
if [ -x /usr/bin/python3 ]; then
  mkdir -p "$ROOT/build/pybin" && ln -sf /usr/bin/python3 "$ROOT/build/pybin/python3"
  export PATH="$ROOT/build/pybin:$PATH"
fi
ROUNDS=${1:-5}
SECS=${BENCH_SECONDS:-3}
CZCTL="$ROOT/czctl"
SANDBOX="$ROOT/tests/sandbox/sandbox"
WORK=$(mktemp -d /tmp/czctl-bench-kube.XXXXXX)
export KUBECONFIG="$WORK/cluster/kubeconfig" XDG_STATE_HOME="$WORK/state"
NGINX_PID="" SAMPLER=""
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  "$CZCTL" session close -q >/dev/null 2>&1 || true
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
  "$SANDBOX" down "$WORK/cluster" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for tool in wrk perf; do
  command -v "$tool" >/dev/null || { echo "bench/kube-tunnel.sh: $tool is missing (scripts/deps --bench)" >&2; exit 1; }
done
renice -n -10 -p $$ >/dev/null 2>&1 || true
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

"$SANDBOX" up "$WORK/cluster" >/dev/null
kubectl apply -f "$ROOT/examples/demo-app.yaml" >/dev/null
sed 's/demo/demo2/g' "$ROOT/examples/demo-app.yaml" | kubectl apply -f - >/dev/null
kubectl rollout status deployment/demo --timeout=60s >/dev/null
kubectl rollout status deployment/demo2 --timeout=60s >/dev/null

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $WORK/nginx/error.log;
pid $WORK/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx;
    server {
        listen 127.0.0.1:$PORT;
        location / { default_type text/plain; return 200 "hello from the laptop\n"; }
    }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!

"$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q
"$CZCTL" service intercept demo2 -l "$PORT" --tunnel kube -q
keeper_of() {
  python3 - "$XDG_STATE_HOME/czctl/sessions" "$1" <<'PY'
import glob, json, sys
for f in glob.glob(sys.argv[1] + "/*.json"):
    if not f.endswith(".tunnel.json"):
        s = json.load(open(f))
        if s.get("service") == sys.argv[2]:
            print(s["keeper_pid"])
PY
}
KEEP_DIRECT=$(keeper_of demo)
KEEP_KUBE=$(keeper_of demo2)
H='X-C6O-INTERCEPT: yes'
# the answer must come from the laptop through each tunnel before measuring
for svc in demo demo2; do
  "$SANDBOX" exec "$WORK/cluster" -- curl -s -H "$H" "http://$svc/" | grep -q 'hello from the laptop' ||
    { echo "bench/kube-tunnel.sh: $svc is not routed to the local app" >&2; exit 1; }
done

mem() {  # mem PID -> "RSS PSS USS" in KiB
  awk '/^Rss:/{r=$2} /^Pss:/{p=$2} /^Private_(Clean|Dirty):/{u+=$2} END{print r, p, u}' "/proc/$1/smaps_rollup"
}
thr() {
  "$SANDBOX" exec "$WORK/cluster" -- wrk -t2 -c16 -d"${SECS}s" -H "$H" "http://$1/" |
    awk '/^Requests\/sec:/{print $2}'
}
lat() {  # "P50_DIRECT P50_KUBE ADDED" in ms
  "$SANDBOX" exec "$WORK/cluster" -- python3 "$ROOT/bench/lib/alternate_latency.py" demo demo2 \
    "${LAT_REQUESTS:-500}" "$H"
}
# the highest RSS/PSS/USS of the kube holder, sampled while the file $WORK/sampling exists
sample_kube() {
  local best_r=0 best_p=0 best_u=0 r p u
  while [ -e "$WORK/sampling" ]; do
    read -r r p u < <(mem "$KEEP_KUBE")
    [ "$r" -gt "$best_r" ] && best_r=$r
    [ "$p" -gt "$best_p" ] && best_p=$p
    [ "$u" -gt "$best_u" ] && best_u=$u
    sleep 0.1
  done
  echo "$best_r $best_p $best_u" >"$WORK/peak"
}

sleep 2
read -r IDLE_K_R IDLE_K_P IDLE_K_U < <(mem "$KEEP_KUBE")
read -r IDLE_D_R IDLE_D_P IDLE_D_U < <(mem "$KEEP_DIRECT")
declare -a T_D T_K L_D L_K RATIO ADDED
touch "$WORK/sampling"
sample_kube &
SAMPLER=$!
# The relay's process (its pod's cgroup names the pod's uid) and the sandbox's
# (API server, kubelet, port-forward: one Python process): their CPU time
# during each throughput run says which one bounds it.
RELAY_UID=$(kubectl get pods -l app.kubernetes.io/component=relay -o jsonpath='{.items[0].metadata.uid}')
RELAY_PID=$(grep -l "$RELAY_UID" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3 | while read -r p; do
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = czctl-relay ] && echo "$p"; done | head -1 || true)
# (grep says 2 when a process it was reading ended meanwhile)
SANDBOX_PID=$(cat "$WORK/cluster/server.pid")
ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | paste -sd' '; }
pct() { python3 -c "print('%.0f' % (($2 - $1) * 100 / $(getconf CLK_TCK) / $SECS))"; }
declare -a C_HOLDER C_RELAY C_SANDBOX_K C_SANDBOX_D
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then order="direct kube"; else order="kube direct"; fi
  for which in $order; do
    svc=demo; [ "$which" = kube ] && svc=demo2
    read -r h0 r0 s0 < <(ticks "$KEEP_KUBE" "$RELAY_PID" "$SANDBOX_PID")
    v=$(thr "$svc")
    read -r h1 r1 s1 < <(ticks "$KEEP_KUBE" "$RELAY_PID" "$SANDBOX_PID")
    if [ "$which" = kube ]; then
      T_K+=("$v"); C_HOLDER+=("$(pct "$h0" "$h1")"); C_RELAY+=("$(pct "$r0" "$r1")")
      C_SANDBOX_K+=("$(pct "$s0" "$s1")")
    else
      T_D+=("$v"); C_SANDBOX_D+=("$(pct "$s0" "$s1")")
    fi
  done
  read -r ld lk la < <(lat)
  L_D+=("$ld"); L_K+=("$lk"); ADDED+=("$la")
  i=$((r - 1))
  RATIO+=("$(python3 -c "print('%.3f' % (${T_K[$i]} / ${T_D[$i]}))")")
done
rm -f "$WORK/sampling"
wait "$SAMPLER"; SAMPLER=""
read -r PEAK_K_R PEAK_K_P PEAK_K_U <"$WORK/peak"
sleep 2
read -r AFTER_K_R AFTER_K_P AFTER_K_U < <(mem "$KEEP_KUBE")
BREAKDOWN=$(python3 "$ROOT/bench/lib/smaps_breakdown.py" "$KEEP_KUBE" 10)

# Where a kube request's time goes: the holder's and the relay's own share per
# request (read to forwarding write, both ways), from perf trace while HOPS_REQUESTS
# requests pass one at a time; beyond the holder is the local app, beyond the
# relay the API server's and kubelet's port-forward (the sandbox's, Python).
API_PORT=$(sed -n 's/^ *server: *https:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$KUBECONFIG" | head -1)
hops() {  # hops PID IN_PORT OUT_PORT -> "N MEDIAN_US P90_US OUTSIDE_US" of one traced run
  perf trace -o "$WORK/trace.$1" -p "$1" -e read,write,recvfrom,sendto,readv,writev 2>/dev/null &
  local tr=$!
  sleep 1
  "$SANDBOX" exec "$WORK/cluster" -- python3 "$ROOT/bench/lib/alternate_latency.py" demo2 demo2 \
    "${HOPS_REQUESTS:-200}" "$H" >/dev/null
  kill -INT "$tr"; wait "$tr" 2>/dev/null || true
  python3 "$ROOT/bench/lib/hop_time.py" "$WORK/trace.$1" "$1" "$2" "$3"
}
read -r HOLDER_N HOLDER_MED HOLDER_P90 HOLDER_OUT < <(hops "$KEEP_KUBE" "$API_PORT" "$PORT")
read -r RELAY_N RELAY_MED RELAY_P90 RELAY_OUT < <(hops "$RELAY_PID" 9000 9001)
PLAIN_K=$(lat | cut -d' ' -f2)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mib() { python3 -c "print('%.1f' % ($1 / 1024))"; }
MR=$(median "${RATIO[@]}")
MA=$(median "${ADDED[@]}")
met() { python3 -c "print('met' if $1 else 'not met')"; }
section=$(cat <<EOF
## Kube tunnel vs direct tunnel

Command: \`bench/kube-tunnel.sh $ROUNDS\` (BENCH_SECONDS=$SECS): $ROUNDS interleaved rounds, medians.
Machine: $(nproc) CPUs, $(uname -r), $(nginx -v 2>&1 | sed 's/.*: //'), wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null).
The sandbox (its API server, port-forward and Service proxy are Python), the proxy (NGINX), the relay,
the session holders, the local app (nginx, 1 worker) and wrk share the CPUs; load average
before: $LOAD_BEFORE, after: $LOAD_AFTER. Both sessions run at once, on two copies of the demo app.

- throughput: \`wrk -t2 -c16 -d${SECS}s -H 'X-C6O-INTERCEPT: yes'\` from inside the cluster (sandbox exec)
- latency: \`bench/lib/alternate_latency.py\` in the cluster: ${LAT_REQUESTS:-500} requests per round on one
  kept-alive connection to each Service, same header, direct and kube alternating request by request

| tunnel | median req/s | median p50 at 1 connection |
|---|---|---|
| direct (landing on the host gateway) | $(median "${T_D[@]}") | $(median "${L_D[@]}") ms |
| kube (relay + port-forward through the API server) | $(median "${T_K[@]}") | $(median "${L_K[@]}") ms |

- kube/direct throughput: **$MR** (goal ≥ 0.5): $(met "$MR >= 0.5")
- CPU during the throughput runs (median % of one CPU): kube holder $(median "${C_HOLDER[@]}") %,
  relay $(median "${C_RELAY[@]}") %, the sandbox's process $(median "${C_SANDBOX_K[@]}") % (direct runs: $(median "${C_SANDBOX_D[@]}") %)
- p50 added by the kube tunnel at one connection (median over rounds of the per-request-pair median): **$MA ms** (goal ≤ 1 ms): $(met "$MA <= 1")

Memory of the session holders (KiB → MiB; RSS counts shared library pages, PSS shares them
among the processes mapping them, USS is the process's own):

| holder | when | RSS | PSS | USS |
|---|---|---|---|---|
| kube (pool of port-forward streams) | idle | $(mib "$IDLE_K_R") | $(mib "$IDLE_K_P") | $(mib "$IDLE_K_U") |
| kube | highest under load | $(mib "$PEAK_K_R") | $(mib "$PEAK_K_P") | $(mib "$PEAK_K_U") |
| kube | idle after the load | $(mib "$AFTER_K_R") | $(mib "$AFTER_K_P") | $(mib "$AFTER_K_U") |
| direct (landing) | idle | $(mib "$IDLE_D_R") | $(mib "$IDLE_D_P") | $(mib "$IDLE_D_U") |

Goal < 8 MiB for the kube holder: PSS under load $(mib "$PEAK_K_P") MiB: $(met "$PEAK_K_P < 8192"); RSS under load $(mib "$PEAK_K_R") MiB: $(met "$PEAK_K_R < 8192").

Where the kube holder's memory goes, after the load (\`python3 bench/lib/smaps_breakdown.py PID\`):

$BREAKDOWN

Where a kube request's time goes (\`perf trace\` of one process's socket calls while ${HOPS_REQUESTS:-200}
requests pass one at a time on kept-alive connections, \`bench/lib/hop_time.py\`: from the end of the read
that brought a request or an answer to the start of the write that forwards it, both ways added):

| process | requests | its share, median | p90 | beyond it, median |
|---|---|---|---|---|
| kube holder (czctl, this machine): API server socket ⇄ local app | $HOLDER_N | $HOLDER_MED µs | $HOLDER_P90 µs | $HOLDER_OUT µs (the local app) |
| relay (czctl-relay, in the cluster): proxy ⇄ laptop stream | $RELAY_N | $RELAY_MED µs | $RELAY_P90 µs | $RELAY_OUT µs (port-forward: API server, kubelet, holder, app) |

Untraced, the kube route's p50 at one connection was then $PLAIN_K ms.

Raw per-round figures (req/s; ms):

\`\`\`
throughput direct: ${T_D[*]}
throughput kube:   ${T_K[*]}
p50 direct:        ${L_D[*]}
p50 kube:          ${L_K[*]}
ratio kube/direct: ${RATIO[*]}
added p50:         ${ADDED[*]}
\`\`\`
EOF
)
printf '%s\n' "$section" | python3 "$ROOT/bench/lib/results.py" "$ROOT/bench/RESULTS.md"
printf '%s\n' "$section"
