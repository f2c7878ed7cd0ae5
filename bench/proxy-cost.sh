#!/usr/bin/env bash
# What the czctl proxy costs per request, in CPU instructions, against the
# minimal keep-alive proxy: each proxy runs as one NGINX process under
# valgrind's callgrind, instrumented only while wrk drives a fixed load
# through it, and the instructions it executed (user space) are divided by
# the requests wrk completed. Unlike req/s on a shared machine this count
# barely moves between runs, so it shows what each part of the config costs.
# (Kernel time, the same for every configuration, is not counted: see
# bench/proxy.sh for throughput and latency.)
#
#   bench/proxy-cost.sh             (BENCH_SECONDS per measurement, default 3)
#
# Configurations: the minimal proxy; czctl, original route; czctl, intercept
# route; czctl, intercept route with access_log = false (what the access log
# costs). Results replace the "Proxy cost in instructions" section of
# bench/RESULTS.md.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
SECS=${BENCH_SECONDS:-3}
CZCTL=${CZCTL:-$ROOT/czctl}
NGINX=${NGINX:-/usr/sbin/nginx}
case "$SECS" in ''|*[!0-9]*) echo "bench/proxy-cost.sh: BENCH_SECONDS must be a whole number" >&2; exit 2 ;; esac
for t in wrk valgrind callgrind_control callgrind_annotate; do
  command -v "$t" >/dev/null || { echo "bench/proxy-cost.sh: $t is not installed (apt-get install wrk valgrind)" >&2; exit 1; }
done
[ -x "$CZCTL" ] || { echo "bench/proxy-cost.sh: build czctl first (make)" >&2; exit 1; }

T=$(mktemp -d /tmp/czctl-proxy-cost.XXXXXX)
chmod 755 "$T"
source tests/lib/procs.sh        # PIDS, wait_port, stop_pids, on_exit
source bench/lib/proxy-configs.sh
cleanup() {
  stop_pids "${PIDS[@]}"
  rm -rf "$T"
}
on_exit cleanup

HDR='X-C6O-INTERCEPT: yes'
write_app "$T/app" app 127.0.78.1 8000
"$NGINX" -p "$T/app" -c "$T/app/nginx.conf" -e stderr -g 'daemon off;' >/dev/null 2>"$T/app/error.log" &
PIDS+=($!)
wait_port 127.0.78.1 8000 || { echo "bench/proxy-cost.sh: the app did not start" >&2; exit 1; }

# measure NAME CONF_DIR ADDR [HEADER]: prints instructions per request
measure() {
  local name=$1 dir=$2 addr=$3 hdr=${4:-} vg n out reqs ir
  "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/test.err" || { cat "$dir/test.err" >&2; exit 1; }
  rm -f "$dir"/callgrind.out*
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e stderr -g 'daemon off; master_process off;' \
    >/dev/null 2>"$dir/valgrind.log" &
  vg=$!
  PIDS+=($vg)
  wait_port "$addr" 8080 || { echo "bench/proxy-cost.sh: $name did not start under valgrind" >&2; cat "$dir/valgrind.log" >&2; exit 1; }
  # warm up the upstream pools uninstrumented, then count over a fixed load
  wrk -t1 -c8 -d1s ${hdr:+-H "$hdr"} "http://$addr:8080/" >/dev/null 2>&1
  callgrind_control -i on "$vg" >/dev/null 2>&1
  out=$(wrk -t1 -c8 -d"${SECS}s" ${hdr:+-H "$hdr"} "http://$addr:8080/" 2>&1)
  callgrind_control -i off "$vg" >/dev/null 2>&1
  callgrind_control -d "$vg" >/dev/null 2>&1
  stop_pids "$vg"
  reqs=$(printf '%s\n' "$out" | awk '/ requests in / {print $1}')
  ir=$(for f in "$dir"/callgrind.out*; do callgrind_annotate "$f" 2>/dev/null; done |
       awk '/PROGRAM TOTALS/ { gsub(",", "", $1); s += $1 } END { print s + 0 }')
  [ -n "$reqs" ] && [ "$reqs" -gt 0 ] && [ "$ir" -gt 0 ] ||
    { echo "bench/proxy-cost.sh: no measurement for $name (requests: ${reqs:-none})" >&2; exit 1; }
  echo $((ir / reqs))
}

write_czctl "$T/czctl" 127.0.78.12 127.0.78.1:8000 http://127.0.78.1:8000 || exit 1
write_czctl "$T/nolog" 127.0.78.13 127.0.78.1:8000 http://127.0.78.1:8000 ', "access_log": false' || exit 1
write_minimal "$T/minimal" 127.0.78.11:8080 127.0.78.1:8000 "$(workers_of "$T/czctl/nginx.conf")"

declare -A IR
IR[minimal]=$(measure minimal "$T/minimal" 127.0.78.11) || exit 1
IR[original]=$(measure czctl-original "$T/czctl" 127.0.78.12) || exit 1
IR[intercept]=$(measure czctl-intercept "$T/czctl" 127.0.78.12 "$HDR") || exit 1
IR[nolog]=$(measure czctl-intercept-nolog "$T/nolog" 127.0.78.13 "$HDR") || exit 1
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (a - b) * 100 / b }'; }

section=$(mktemp)
{
  echo "## Proxy cost in instructions"
  echo
  echo "Command: \`bench/proxy-cost.sh\` (BENCH_SECONDS=$SECS). Each proxy is one NGINX process"
  echo "(\`master_process off\`) under \`valgrind --tool=callgrind\`, instrumented only while"
  echo "\`wrk -t1 -c8 -d${SECS}s\` runs through it (after a 1 s warm-up); user-space instructions"
  echo "divided by the requests completed. $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(valgrind --version)."
  echo "The app behind every proxy is the same nginx (one worker, 14-byte body)."
  echo
  echo "| configuration | instructions per request | vs minimal |"
  echo "|---|---|---|"
  echo "| minimal keep-alive proxy, no routing | ${IR[minimal]} | – |"
  echo "| czctl proxy, original route | ${IR[original]} | $(pct "${IR[original]}" "${IR[minimal]}") |"
  echo "| czctl proxy, intercept route (direct tunnel) | ${IR[intercept]} | $(pct "${IR[intercept]}" "${IR[minimal]}") |"
  echo "| czctl proxy, intercept route, access_log = false | ${IR[nolog]} | $(pct "${IR[nolog]}" "${IR[minimal]}") |"
  echo
  echo "The original route's extra instructions are the rule's map and \`if\`, the"
  echo "\`Upgrade\`/\`Connection\` pair, keeping a load balancer's \`X-Forwarded-Proto\`"
  echo "and \`X-Forwarded-For\`; the intercept route adds the hand-over to \`@czctl_tunnel\`"
  echo "and, unless turned off, its access-log line ($((IR[intercept] - IR[nolog])) instructions)."
  echo "User space is about 30% of the proxy's CPU time per request (perf); the rest is the"
  echo "kernel's (the same socket calls for every configuration)."
} >"$section"
cat "$section"

python3 "$ROOT/bench/lib/results.py" "$ROOT/bench/RESULTS.md" <"$section"
rm -f "$section"
