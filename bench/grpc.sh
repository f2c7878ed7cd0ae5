#!/usr/bin/env bash
# gRPC unary throughput and latency through the czctl proxy on an h2c port
# (listen ... http2, grpc_pass to both routes: lua/czctl/proxy/nginx.lua),
# on the original route and on the intercept route (metadata x-tenant: acme,
# direct tunnel), against a minimal hand-written grpc_pass NGINX proxy, all
# in the same run. Local nginx processes on loopback (127.0.92.0/24), as
# bench/proxy.sh does for HTTP/1.1.
#
#   bench/grpc.sh [ROUNDS]     (default 7; BENCH_REQUESTS per throughput run, default 20000)
#
# The backends answer every call as a gRPC server does (read the message,
# then HEADERS 200 application/grpc, a DATA frame, trailers grpc-status 0)
# from NGINX itself, so the proxies, not a Python server, bound the
# throughput. Configurations, interleaved round by round (medians):
#   a  direct            h2load -> backend
#   b  minimal           h2load -> grpc_pass proxy (no routing) -> backend
#   c  czctl-original    h2load -> czctl proxy (no metadata) -> backend
#   d  czctl-intercept   h2load -> czctl proxy (x-tenant: acme) -> local backend
# Throughput: h2load -c8 -m8 (8 connections, 8 concurrent streams each).
# Latency: h2load -c1 -m1, the median of its per-request log.
# A real gRPC client (tests/lib/grpc_app.py) first checks both routes.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
ROUNDS=${1:-7}
N=${BENCH_REQUESTS:-20000}
CZCTL=${CZCTL:-$ROOT/czctl}
NGINX=${NGINX:-/usr/sbin/nginx}
case "$ROUNDS$N" in *[!0-9]*) echo "bench/grpc.sh: ROUNDS and BENCH_REQUESTS must be whole numbers" >&2; exit 2 ;; esac
command -v h2load >/dev/null || { echo "bench/grpc.sh: h2load is not installed (scripts/deps --bench)" >&2; exit 1; }
[ -x "$CZCTL" ] || { echo "bench/grpc.sh: build czctl first (make)" >&2; exit 1; }
# Debian's python3, which has python3-grpcio (scripts/deps), not a version
# manager's shim earlier on the PATH (as tests/run does)
python3() { if [ -x /usr/bin/python3 ]; then /usr/bin/python3 "$@"; else command python3 "$@"; fi; }
NICE_NOTE="normal priority"
renice -n -10 -p $$ >/dev/null 2>&1 && NICE_NOTE="nice -10 (all bench processes)"

T=$(mktemp -d /tmp/czctl-grpc-bench.XXXXXX)
chmod 755 "$T"
source tests/lib/procs.sh
cleanup() { stop_pids "${PIDS[@]}"; [ -n "${BENCH_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"; }
on_exit cleanup
source bench/lib/measure.sh         # run_nginx, MASTER, cpu_ticks, TICK_US, median, ratio, goal
source bench/lib/proxy-configs.sh   # write_grpc_backend, write_czctl_grpc, write_grpc_minimal, workers_of


write_grpc_backend "$T/app" app 127.0.92.1:8000
write_grpc_backend "$T/localapp" localapp 127.0.92.2:3000
write_czctl_grpc "$T/czctl" 127.0.92.12 127.0.92.1:8000 http://127.0.92.2:3000 || exit 1
WORKERS=$(workers_of "$T/czctl/nginx.conf")
write_grpc_minimal "$T/minimal" 127.0.92.11:8080 127.0.92.1:8000 "$WORKERS"
for d in app localapp minimal czctl; do run_nginx "$T/$d"; done
for a in 127.0.92.1:8000 127.0.92.2:3000 127.0.92.11:8080 127.0.92.12:8080; do
  wait_port "${a%:*}" "${a#*:}" || { echo "bench/grpc.sh: nothing listens on $a" >&2; exit 1; }
done

# The czctl proxy routes real gRPC calls: the Python client against the
# Python server behind it, on both routes (a sanity check, not measured).
python3 tests/lib/grpc_app.py serve g-original 127.0.92.3:7000 >/dev/null 2>&1 & PIDS+=($!)
python3 tests/lib/grpc_app.py serve g-local 127.0.92.4:7000 >/dev/null 2>&1 & PIDS+=($!)
write_czctl_grpc "$T/check" 127.0.92.13 127.0.92.3:7000 http://127.0.92.4:7000 && run_nginx "$T/check"
wait_port 127.0.92.3 7000 && wait_port 127.0.92.4 7000 && wait_port 127.0.92.13 8080 || exit 1
[ "$(python3 tests/lib/grpc_app.py unary 127.0.92.13:8080 3 x-tenant=acme)" = '{"g-local": 3}' ] &&
  [ "$(python3 tests/lib/grpc_app.py unary 127.0.92.13:8080 3)" = '{"g-original": 3}' ] ||
  { echo "bench/grpc.sh: the czctl proxy does not route gRPC calls as expected" >&2; exit 1; }

# One gRPC message: compressed flag 0, length 5, "hello".
printf '\x00\x00\x00\x00\x05hello' >"$T/message"
H=(-H 'content-type: application/grpc' -H 'te: trailers' -d "$T/message")
declare -A URL=( [direct]=http://127.0.92.1:8000/czctl.Test/Unary [minimal]=http://127.0.92.11:8080/czctl.Test/Unary
                 [czctl-original]=http://127.0.92.12:8080/czctl.Test/Unary
                 [czctl-intercept]=http://127.0.92.12:8080/czctl.Test/Unary
                 [direct-local]=http://127.0.92.2:3000/czctl.Test/Unary )
CONFIGS=(direct minimal czctl-original czctl-intercept)
LAT_CONFIGS=(direct direct-local minimal czctl-original czctl-intercept)
meta() { [ "$1" = czctl-intercept ] && echo "x-tenant: acme" || echo "x-none: 1"; }

declare -A FAILED SERVER=( [direct]=app [minimal]=minimal [czctl-original]=czctl [czctl-intercept]=czctl )
h2_rps() {  # CONFIG: req/s of N calls (in $T/rps), the server's CPU µs per call (in $T/cpu);
            # calls not answered 200 are counted in FAILED
  local out bad pid=${MASTER[${SERVER[$1]}]} t0 t1
  t0=$(cpu_ticks "$pid")
  out=$(h2load -n "$N" -c 8 -m 8 "${H[@]}" -H "$(meta "$1")" "${URL[$1]}" 2>&1)
  t1=$(cpu_ticks "$pid")
  awk -v t=$((t1 - t0)) -v us="$TICK_US" -v n="$N" 'BEGIN {printf "%.2f\n", t * us / n}' >"$T/cpu"
  bad=$(printf '%s\n' "$out" | awk '/^requests:/ {print $2 - $8}')
  [ -n "$bad" ] && [ "$bad" -le $((N / 100)) ] || { printf '%s\n' "$out" >&2; return 1; }
  FAILED[$1]=$(( ${FAILED[$1]:-0} + bad ))
  printf '%s\n' "$out" | awk '/^finished in/ {gsub(",", ""); print $4}' >"$T/rps"
}
h2_p50_ms() {  # CONFIG: median latency of 2000 calls on one connection, one at a time
  h2load -n 2000 -c 1 -m 1 "${H[@]}" -H "$(meta "$1")" --log-file="$T/lat.log" "${URL[$1]}" >/dev/null 2>&1 || return 1
  awk '$2 == 200 {print $3 / 1000}' "$T/lat.log" | median
}

for c in "${CONFIGS[@]}"; do h2load -n 2000 -c 8 -m 8 "${H[@]}" -H "$(meta "$c")" "${URL[$c]}" >/dev/null 2>&1; done

declare -A RPS LAT CUR_RPS CUR_LAT CPU
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
R_O="" R_I="" A_O="" A_I="" A_M=""
for r in $(seq "$ROUNDS"); do
  n=${#CONFIGS[@]}
  for i in $(seq 0 $((n - 1))); do
    c=${CONFIGS[$(((i + r) % n))]}
    h2_rps "$c" || { echo "bench/grpc.sh: more than 1% of the calls failed for $c" >&2; exit 1; }
    v=$(cat "$T/rps")
    RPS[$c]+="$v "; CUR_RPS[$c]=$v; CPU[$c]+="$(cat "$T/cpu") "
    echo "round $r throughput $c: $v req/s" >&2
  done
  n=${#LAT_CONFIGS[@]}
  for i in $(seq 0 $((n - 1))); do
    c=${LAT_CONFIGS[$(((i + r) % n))]}
    v=$(h2_p50_ms "$c") || { echo "bench/grpc.sh: latency run failed for $c" >&2; exit 1; }
    LAT[$c]+="$v "; CUR_LAT[$c]=$v
    echo "round $r latency $c: $v ms" >&2
  done
  R_O+="$(awk -v a="${CUR_RPS[czctl-original]}" -v b="${CUR_RPS[minimal]}" 'BEGIN{printf "%.4f", a/b}') "
  R_I+="$(awk -v a="${CUR_RPS[czctl-intercept]}" -v b="${CUR_RPS[minimal]}" 'BEGIN{printf "%.4f", a/b}') "
  A_O+="$(awk -v a="${CUR_LAT[czctl-original]}" -v b="${CUR_LAT[direct]}" 'BEGIN{printf "%.4f", a-b}') "
  A_I+="$(awk -v a="${CUR_LAT[czctl-intercept]}" -v b="${CUR_LAT[direct-local]}" 'BEGIN{printf "%.4f", a-b}') "
  A_M+="$(awk -v a="${CUR_LAT[minimal]}" -v b="${CUR_LAT[direct]}" 'BEGIN{printf "%.4f", a-b}') "
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

med() { printf '%s\n' $1 | median | awk '{printf "%.3f", $1}'; }
r_o=$(med "$R_O"); r_i=$(med "$R_I"); add_o=$(med "$A_O"); add_i=$(med "$A_I"); add_m=$(med "$A_M")

section=$(mktemp)
{
  echo "## gRPC through the proxy (h2c port)"
  echo
  echo "Command: \`bench/grpc.sh $ROUNDS\` (BENCH_REQUESTS=$N): $ROUNDS interleaved rounds, medians."
  echo "Machine: $(nproc) CPUs, $(uname -r), $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(h2load --version 2>&1 | head -1)."
  echo "Local nginx processes on 127.0.92.0/24. The backends answer every call as a gRPC server does"
  echo "(200, application/grpc, one DATA frame, trailers grpc-status 0) from NGINX, 1 worker, so the proxies bound"
  echo "the throughput; the minimal proxy is \`listen ... http2; grpc_pass\` to a keep-alive upstream, with the"
  echo "czctl config's \`worker_processes $WORKERS\`. czctl's proxy: rule \`x-tenant: acme\` (gRPC metadata), direct tunnel."
  echo "Before measuring, real gRPC calls (tests/lib/grpc_app.py, python3-grpcio) went through it on both routes."
  echo
  echo "- throughput: \`h2load -n $N -c 8 -m 8 -H 'content-type: application/grpc' -H 'te: trailers' -d MESSAGE URL\` (a call counts when answered 200)"
  echo "- latency: \`h2load -n 2000 -c 1 -m 1 ... --log-file\`, the median of the per-call times"
  echo
  echo "| configuration | median calls/s | median p50 at 1 connection | server CPU per call |"
  echo "|---|---|---|---|"
  echo "| a. backend directly | $(med "${RPS[direct]}") | $(med "${LAT[direct]}") ms | $(med "${CPU[direct]}") µs (backend) |"
  echo "| a'. local backend directly (intercept target) | – | $(med "${LAT[direct-local]}") ms | – |"
  echo "| b. minimal grpc_pass proxy | $(med "${RPS[minimal]}") | $(med "${LAT[minimal]}") ms | $(med "${CPU[minimal]}") µs |"
  echo "| c. czctl proxy, original route | $(med "${RPS[czctl-original]}") | $(med "${LAT[czctl-original]}") ms | $(med "${CPU[czctl-original]}") µs |"
  echo "| d. czctl proxy, intercept route | $(med "${RPS[czctl-intercept]}") | $(med "${LAT[czctl-intercept]}") ms | $(med "${CPU[czctl-intercept]}") µs |"
  echo
  echo "Load average before: $LOAD_BEFORE; after: $LOAD_AFTER; $NICE_NOTE. Ratios and added latencies are medians of"
  echo "per-round values (each round runs every configuration seconds apart)."
  echo
  echo "- czctl/minimal throughput: original route **$r_o**, intercept route **$r_i** (goal ≥ 0.9): $(goal "$r_o" ">=" 0.9) / $(goal "$r_i" ">=" 0.9)"
  c_o=$(ratio "$(med "${CPU[minimal]}")" "$(med "${CPU[czctl-original]}")")
  c_i=$(ratio "$(med "${CPU[minimal]}")" "$(med "${CPU[czctl-intercept]}")")
  echo "- minimal/czctl CPU per call (the throughput one CPU gives, less sensitive to the machine's other load):"
  echo "  original route **$c_o**, intercept route **$c_i** (goal ≥ 0.9): $(goal "$c_o" ">=" 0.9) / $(goal "$c_i" ">=" 0.9)"
  echo "- calls not answered 200, of $((ROUNDS * N)) per configuration: backend ${FAILED[direct]:-0}, minimal ${FAILED[minimal]:-0}, czctl original ${FAILED[czctl-original]:-0}, czctl intercept ${FAILED[czctl-intercept]:-0}"
  echo "  (NGINX's error log: \"upstream sent frame for unknown stream\", a late frame of the NGINX stand-in backend on"
  echo "  a reused upstream connection; grpc_pass answers that call 502, whichever proxy runs it)"
  echo "- p50 added at one connection: original route **$add_o ms** (over the backend), intercept route **$add_i ms** (over the local backend); the minimal proxy adds $add_m ms"
} >"$section"
python3 bench/lib/results.py bench/RESULTS.md <"$section"
cat "$section"
rm -f "$section"
