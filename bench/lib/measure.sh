# What the proxy benchmarks share (sourced by bench/proxy.sh and
# bench/grpc.sh): starting nginx instances whose CPU time is counted, and the
# arithmetic of their reports. Needs PIDS (tests/lib/procs.sh) and NGINX.
# shellcheck shell=bash

# run_nginx DIR: nginx -t, then start DIR/nginx.conf in the foreground; its
# master's pid is MASTER[basename DIR]
declare -A MASTER
run_nginx() {
  "$NGINX" -t -q -p "$1" -c "$1/nginx.conf" -e "$1/test.err" || { cat "$1/test.err" >&2; exit 1; }
  "$NGINX" -p "$1" -c "$1/nginx.conf" -e stderr -g 'daemon off;' >/dev/null 2>"$1/error.log" &
  PIDS+=($!)
  MASTER[$(basename "$1")]=$!
}

# cpu_ticks PID: CPU time (clock ticks) used so far by an nginx master and
# its workers; TICK_US microseconds a tick
cpu_ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# median: of the numbers on stdin ("nan" for none)
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2}'; }
# ratio A B: A/B with three decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
# goal VALUE >=|<= GOAL: "met" or "NOT met"
goal() { awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= g : v <= g; print ok ? "met" : "NOT met" }'; }
