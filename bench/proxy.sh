#!/usr/bin/env bash
# Throughput and latency of the czctl intercept proxy (the NGINX config that
# lua/czctl/proxy/nginx.lua renders), against the app directly, a minimal
# hand-written keep-alive reverse proxy, and the czctl config without upstream
# keep-alive. Everything runs as local nginx processes on loopback, so the
# figures are NGINX's, not the sandbox's: the sandbox pod path adds the
# sandbox's Python ClusterIP forwarder, which is not what we measure here.
#
#   bench/proxy.sh [ROUNDS]        (default 9; BENCH_SECONDS per run, default 2)
#
# Configurations (all interleaved round by round; medians reported):
#   a  direct         wrk -> app nginx
#   b  minimal        wrk -> hand-written keep-alive proxy (no routing) -> app
#   c  czctl-original wrk -> czctl proxy (no header: original route) -> app
#   d  czctl-intercept wrk -> czctl proxy (X-C6O-INTERCEPT: yes, direct tunnel) -> local app
#   e  czctl-nokeep   wrk -> czctl proxy rendered with upstream_keepalive = 0 -> app
# Throughput: wrk -t2 -c64. Latency: wrk -t1 -c1 --latency, the 50th percentile.
# Results are appended (or replaced) under "Proxy throughput and latency" in
# bench/RESULTS.md, with the commands.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
ROUNDS=${1:-9}
SECS=${BENCH_SECONDS:-2}
CZCTL=${CZCTL:-$ROOT/czctl}
NGINX=${NGINX:-/usr/sbin/nginx}
case "$ROUNDS$SECS" in *[!0-9]*) echo "bench/proxy.sh: ROUNDS and BENCH_SECONDS must be whole numbers" >&2; exit 2 ;; esac
command -v wrk >/dev/null || { echo "bench/proxy.sh: wrk is not installed" >&2; exit 1; }
[ -x "$CZCTL" ] || { echo "bench/proxy.sh: build czctl first (make)" >&2; exit 1; }

# Other work on the machine (test suites) makes throughput swing by tens of
# percent; when allowed (root), run everything of ours at a higher priority.
# Every process measured gets the same priority, so comparisons stay fair.
NICE_NOTE="normal priority"
renice -n -10 -p $$ >/dev/null 2>&1 && NICE_NOTE="nice -10 (all bench processes)"

T=$(mktemp -d /tmp/czctl-proxy-bench.XXXXXX)
chmod 755 "$T"
source tests/lib/procs.sh   # PIDS, wait_port, stop_pids, on_exit: the same as tests/proxy
cleanup() {
  stop_pids "${PIDS[@]}"
  rm -rf "$T"
}
on_exit cleanup
source bench/lib/measure.sh   # run_nginx, MASTER, cpu_ticks, TICK_US, median, ratio, goal

source bench/lib/proxy-configs.sh
# a/a': the two apps; c/d/e: the rendered czctl proxy (as shipped), and
# without upstream keep-alive; b: the minimal hand-written keep-alive proxy.
# The minimal proxy runs as many worker processes as the czctl config, so
# the two differ only in what the comparison is about: routing, headers, log.
write_app "$T/app" app 127.0.79.1 8000
write_app "$T/localapp" localapp 127.0.79.2 3000
write_czctl "$T/czctl" 127.0.79.12 127.0.79.1:8000 http://127.0.79.2:3000 || exit 1
write_czctl "$T/nokeep" 127.0.79.13 127.0.79.1:8000 http://127.0.79.2:3000 ', "upstream_keepalive": 0' || exit 1
WORKERS=$(workers_of "$T/czctl/nginx.conf")
[ -n "$WORKERS" ] || { echo "bench/proxy.sh: no worker_processes in the rendered config" >&2; exit 1; }
write_minimal "$T/minimal" 127.0.79.11:8080 127.0.79.1:8000 "$WORKERS"
for d in app localapp minimal czctl nokeep; do run_nginx "$T/$d"; done

for a in 127.0.79.1:8000 127.0.79.2:3000 127.0.79.11:8080 127.0.79.12:8080 127.0.79.13:8080; do
  wait_port "${a%:*}" "${a#*:}" || { echo "bench/proxy.sh: nothing listens on $a" >&2; exit 1; }
done

HDR='X-C6O-INTERCEPT: yes'
# sanity: each configuration reaches the app it should
check_body() {  # URL WANT [HEADER]
  local got
  got=$(curl -sS --max-time 5 ${3:+-H "$3"} "$1")
  [ "$got" = "$2" ] || { echo "bench/proxy.sh: $1 answered '$got', want '$2'" >&2; exit 1; }
}
check_body http://127.0.79.1:8000/ "hello from app"
check_body http://127.0.79.11:8080/ "hello from app"
check_body http://127.0.79.12:8080/ "hello from app"
check_body http://127.0.79.12:8080/ "hello from localapp" "$HDR"
check_body http://127.0.79.13:8080/ "hello from app"

declare -A URL=( [direct]=http://127.0.79.1:8000/ [minimal]=http://127.0.79.11:8080/
                 [czctl-original]=http://127.0.79.12:8080/ [czctl-intercept]=http://127.0.79.12:8080/
                 [czctl-nokeep]=http://127.0.79.13:8080/ [direct-local]=http://127.0.79.2:3000/ )
CONFIGS=(direct minimal czctl-original czctl-intercept czctl-nokeep)
LAT_CONFIGS=(direct direct-local minimal czctl-original czctl-intercept)

# nginx instance serving each configuration (for its CPU time)
declare -A SERVER=( [direct]=app [minimal]=minimal [czctl-original]=czctl [czctl-intercept]=czctl
                    [czctl-nokeep]=nokeep )
LAST_CPU=""
wrk_rps() {  # CONFIG: prints req/s; sets LAST_CPU to the server's CPU microseconds per request
  local h=(); [ "$1" = czctl-intercept ] && h=(-H "$HDR")
  local pid=${MASTER[${SERVER[$1]}]} t0 t1 out
  t0=$(cpu_ticks "$pid")
  out=$(wrk -t2 -c64 -d"${SECS}s" "${h[@]}" "${URL[$1]}" 2>&1)
  t1=$(cpu_ticks "$pid")
  LAST_CPU=$(printf '%s\n' "$out" | awk -v t=$((t1 - t0)) -v us="$TICK_US" '/ requests in / {printf "%.2f", t * us / $1}')
  printf '%s\n' "$out" | awk '/^Requests\/sec:/ {print $2}'
}
wrk_p50_ms() {  # CONFIG: median latency in ms at one connection
  local h=(); [ "$1" = czctl-intercept ] && h=(-H "$HDR")
  wrk -t1 -c1 -d"${SECS}s" --latency "${h[@]}" "${URL[$1]}" 2>&1 | awk '
    /^ +50%/ { v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
               if (u=="us") v=v/1000; else if (u=="s") v=v*1000; printf "%.4f\n", v }'
}

# warm-up (connection pools, page cache)
for c in "${CONFIGS[@]}"; do wrk -t1 -c8 -d1s ${c/czctl-intercept/} "${URL[$c]}" >/dev/null 2>&1; done

# The machine's speed drifts by tens of percent over seconds (shared CPUs), so
# besides medians of each configuration, ratios are taken within each round
# (runs seconds apart) and the median of those per-round ratios is reported.
declare -A RPS LAT CUR_RPS CUR_LAT CPU
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
R_MIN="" R_MIN_I="" R_NOK="" A_O="" A_I="" A_M=""
for r in $(seq "$ROUNDS"); do
  # rotate the order each round so no configuration always runs first
  n=${#CONFIGS[@]}
  for i in $(seq 0 $((n - 1))); do
    c=${CONFIGS[$(((i + r) % n))]}
    wrk_rps "$c" >"$T/rps"; v=$(cat "$T/rps")
    [ -n "$v" ] || { echo "bench/proxy.sh: wrk measured nothing for $c" >&2; exit 1; }
    RPS[$c]+="$v "; CUR_RPS[$c]=$v; CPU[$c]+="$LAST_CPU "
    echo "round $r throughput $c: $v req/s" >&2
  done
  n=${#LAT_CONFIGS[@]}
  for i in $(seq 0 $((n - 1))); do
    c=${LAT_CONFIGS[$(((i + r) % n))]}
    v=$(wrk_p50_ms "$c"); [ -n "$v" ] || { echo "bench/proxy.sh: wrk measured no latency for $c" >&2; exit 1; }
    LAT[$c]+="$v "; CUR_LAT[$c]=$v
    echo "round $r latency $c: $v ms" >&2
  done
  R_MIN+="$(awk -v a="${CUR_RPS[czctl-original]}" -v b="${CUR_RPS[minimal]}" 'BEGIN{printf "%.4f", a/b}') "
  R_MIN_I+="$(awk -v a="${CUR_RPS[czctl-intercept]}" -v b="${CUR_RPS[minimal]}" 'BEGIN{printf "%.4f", a/b}') "
  R_NOK+="$(awk -v a="${CUR_RPS[czctl-original]}" -v b="${CUR_RPS[czctl-nokeep]}" 'BEGIN{printf "%.4f", a/b}') "
  A_O+="$(awk -v a="${CUR_LAT[czctl-original]}" -v b="${CUR_LAT[direct]}" 'BEGIN{printf "%.4f", a-b}') "
  A_I+="$(awk -v a="${CUR_LAT[czctl-intercept]}" -v b="${CUR_LAT[direct-local]}" 'BEGIN{printf "%.4f", a-b}') "
  A_M+="$(awk -v a="${CUR_LAT[minimal]}" -v b="${CUR_LAT[direct]}" 'BEGIN{printf "%.4f", a-b}') "
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
med_rps() { printf '%s\n' ${RPS[$1]} | median; }
med_cpu() { printf '%s\n' ${CPU[$1]} | median; }
med_lat() { printf '%s\n' ${LAT[$1]} | median; }
diffms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

med3() { printf '%s\n' $1 | median | awk '{printf "%.3f", $1}'; }
r_min=$(med3 "$R_MIN"); r_min_i=$(med3 "$R_MIN_I"); r_nok=$(med3 "$R_NOK")
add_o=$(med3 "$A_O"); add_i=$(med3 "$A_I"); add_m=$(med3 "$A_M")

section=$(mktemp)
{
  echo "## Proxy throughput and latency"
  echo
  echo "Command: \`bench/proxy.sh $ROUNDS\` (BENCH_SECONDS=$SECS): $ROUNDS interleaved rounds, medians."
  echo "Machine: $(nproc) CPUs, $(uname -r), $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')."
  echo "Everything is a local nginx process on 127.0.79.0/24 (the app: nginx returning a"
  echo "14-byte body, 1 worker; every proxy: \`worker_processes $WORKERS\`, as czctl renders it). The sandbox pod path is"
  echo "not used: it adds the sandbox's Python ClusterIP forwarder, which is not what we measure."
  echo "wrk shares the 2 CPUs with the proxy and the app, so absolute numbers are low; the ratios"
  echo "are what matter."
  echo
  echo "- throughput: \`wrk -t2 -c64 -d${SECS}s URL\` (intercept: \`-H '$HDR'\`)"
  echo "- latency: \`wrk -t1 -c1 -d${SECS}s --latency URL\`, the 50% line"
  echo
  echo "| configuration | median req/s | median p50 latency at 1 connection | server CPU per request |"
  echo "|---|---|---|---|"
  echo "| a. app directly | $(med_rps direct) | $(med_lat direct) ms | $(med_cpu direct) µs (app) |"
  echo "| a'. local app directly (intercept target) | – | $(med_lat direct-local) ms | – |"
  echo "| b. minimal keep-alive proxy, no routing | $(med_rps minimal) | $(med_lat minimal) ms | $(med_cpu minimal) µs |"
  echo "| c. czctl proxy, original route | $(med_rps czctl-original) | $(med_lat czctl-original) ms | $(med_cpu czctl-original) µs |"
  echo "| d. czctl proxy, intercept route (direct tunnel) | $(med_rps czctl-intercept) | $(med_lat czctl-intercept) ms | $(med_cpu czctl-intercept) µs |"
  echo "| e. czctl proxy without upstream keep-alive | $(med_rps czctl-nokeep) | – | $(med_cpu czctl-nokeep) µs |"
  echo
  echo "Load average (1/5/15 min) before the runs: $LOAD_BEFORE; after: $LOAD_AFTER; run at $NICE_NOTE. The proxy's CPU"
  echo "time per request (master + workers, from /proc, over each throughput run) is much less"
  echo "sensitive to other load on the machine than req/s: minimal/czctl CPU per request ="
  echo "$(ratio "$(med_cpu minimal)" "$(med_cpu czctl-original)") (original route), $(ratio "$(med_cpu minimal)" "$(med_cpu czctl-intercept)") (intercept route)."
  echo
  echo "Ratios and added latencies are medians of the per-round values (each round runs every"
  echo "configuration seconds apart), which cancels the machine's drift better than a ratio of medians."
  echo
  echo "- czctl/minimal throughput: original route **$r_min**, intercept route **$r_min_i** (goal ≥ 0.95): $(goal "$r_min" ">=" 0.95) / $(goal "$r_min_i" ">=" 0.95)"
  echo "- czctl/no-keep-alive throughput: **$r_nok** (goal ≥ 3): $(goal "$r_nok" ">=" 3)"
  echo "- median latency added over direct at one connection: original route **$add_o ms**, intercept route **$add_i ms** (goal ≤ 0.15 ms): $(goal "$add_o" "<=" 0.15) / $(goal "$add_i" "<=" 0.15); the minimal proxy adds $add_m ms"
  echo
  echo "Raw per-round figures (req/s; ms):"
  echo
  echo '```'
  for c in "${CONFIGS[@]}"; do echo "throughput $c: ${RPS[$c]}"; done
  for c in "${LAT_CONFIGS[@]}"; do echo "latency $c: ${LAT[$c]}"; done
  for c in "${CONFIGS[@]}"; do echo "cpu us/request $c: ${CPU[$c]}"; done
  echo "ratio czctl-original/minimal: $R_MIN"
  echo "ratio czctl-intercept/minimal: $R_MIN_I"
  echo "ratio czctl-original/czctl-nokeep: $R_NOK"
  echo "added ms czctl-original - direct: $A_O"
  echo "added ms czctl-intercept - direct-local: $A_I"
  echo "added ms minimal - direct: $A_M"
  echo '```'
} >"$section"
cat "$section"

# Replace our section in bench/RESULTS.md (other sections are left alone).
python3 "$ROOT/bench/lib/results.py" "$ROOT/bench/RESULTS.md" <"$section"
rm -f "$section"
