#!/usr/bin/env bash
# The intercept route into a TLS tunnel endpoint, as czctl renders it now
# (verified TLS, the secret header, the inner server that recognises ngrok's
# errors, kept connections), on local NGINX processes:
#   1. latency through a user-space relay adding 20 ms each way
#      (bench/lib/delay_relay.py, standing for the internet): the p50 the
#      intercept route adds over calling the same endpoint directly on a
#      reused connection (goal <= 2 ms: no handshake per request);
#   2. how long a caller waits when the tunnel is down before the in-cluster
#      version answers, over a plain request to the in-cluster version
#      (goal <= 50 ms for a refused connection);
#   3. throughput of the intercept route with the secret check against
#      today's route (BASELINE's lua/czctl/proxy/nginx.lua, default main's,
#      rendering the same tunnel; goal >= 0.95), and the same route as one of
#      two sessions of a shared proxy (its files in route_dir/<id>, reached
#      through the port's map and `error_page 418 = $czctl_route_<port>`).
# Runs are interleaved round by round; medians and ratios of the same script.
#
#   bench/tunnel.sh [ROUNDS]   (default 7; REQUESTS per latency run, default 20;
#                               BENCH_SECONDS per throughput run, default 3;
#                               BASELINE: the git revision of today's route, default main)
# Results replace the section "Tunnel trust" of bench/RESULTS.md.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
ROUNDS=${1:-7}
REQS=${REQUESTS:-20}
SECS=${BENCH_SECONDS:-3}
CZCTL=${CZCTL:-$ROOT/czctl}
BASELINE=${BASELINE:-main}
NGINX=${NGINX:-/usr/sbin/nginx}
case "$ROUNDS$REQS$SECS" in *[!0-9]*) echo "bench/tunnel.sh: ROUNDS, REQUESTS, BENCH_SECONDS are whole numbers" >&2; exit 2 ;; esac
command -v wrk >/dev/null || { echo "bench/tunnel.sh: wrk is not installed (scripts/deps --bench)" >&2; exit 1; }
[ -x "$CZCTL" ] || { echo "bench/tunnel.sh: build czctl first (make)" >&2; exit 1; }
T=$(mktemp -d /tmp/czctl-bench-tunnel.XXXXXX)
# NGINX's workers (nobody, when the master runs as root) reach the inner
# servers' Unix sockets in it
chmod 755 "$T"
source tests/lib/procs.sh
source tests/proxy/testca.sh
source bench/lib/proxy-configs.sh
on_exit 'stop_pids "${PIDS[@]}"; [ -n "${KEEP_T:-}" ] || rm -rf "$T"'

EP=127.0.93.41:8443 RELAY=127.0.93.42:8443 ORIG=127.0.93.43:8000 CLOSED=127.0.93.44:8443
test_ca "$T" && test_cert "$T" ep 127.0.93.42 "IP:127.0.93.42" || { echo "openssl failed" >&2; exit 1; }
# The endpoint (the developer's side of the tunnel): TLS, a small answer.
mkdir -p "$T/ep"
cat >"$T/ep/nginx.conf" <<CONF
worker_processes 1;
pid $T/ep/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $T/ep/c; proxy_temp_path $T/ep/p; fastcgi_temp_path $T/ep/f;
    uwsgi_temp_path $T/ep/u; scgi_temp_path $T/ep/s;
    server {
        listen $EP ssl;
        ssl_certificate $T/ep.crt;
        ssl_certificate_key $T/ep.key;
        location / { default_type text/plain; return 200 "hello from laptop\n"; }
    }
}
CONF
write_app "$T/orig" original "${ORIG%:*}" "${ORIG#*:}"
for d in ep orig; do "$NGINX" -p "$T/$d" -c "$T/$d/nginx.conf" -e stderr -g 'daemon off;' 2>"$T/$d.err" & PIDS+=($!); done
python3 bench/lib/delay_relay.py "${RELAY%:*}" "${RELAY#*:}" "${EP%:*}" "${EP#*:}" 20 >/dev/null & PIDS+=($!)
wait_port "${EP%:*}" "${EP#*:}" && wait_port "${ORIG%:*}" "${ORIG#*:}" && wait_port "${RELAY%:*}" "${RELAY#*:}" ||
  { echo "bench/tunnel.sh: endpoints did not start" >&2; exit 1; }

ca_json=$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$T/ca.crt")
secret=benchbenchbenchbenchbenchbenchbenchbench
trust() {  # URL -> the tunnel_upstream of an ngrok-like route with every check
  # (the endpoint's certificate names the relay's address: the name checked)
  echo "{\"url\":\"$1\",\"tls\":{\"ca\":$ca_json,\"name\":\"${RELAY%:*}\"},\"secret_header\":{\"name\":\"X-Czctl-Tunnel-Secret\",\"value\":\"$secret\"},
         \"fallback_on\":{\"header\":\"ngrok-error-code\",\"values\":[\"ERR_NGROK_3200\",\"ERR_NGROK_8012\"]},
         \"extra_headers\":{\"ngrok-skip-browser-warning\":\"1\"}}"
}
# write_route DIR LISTEN UPSTREAM_JSON: the proxy as czctl renders it now
write_route() {
  mkdir -p "$1"
  cat >"$1/spec.json" <<SPEC
{ "flags": {}, "session": "bench", "runtime_dir": "$1", "route_dir": "$1", "listen_address": "$2",
  "health_port": 8079, "access_log": false,
  "ports": [ {"name": "http", "port": 80, "listen": 8080, "original": "$ORIG", "intercept": true} ],
  "tunnel_upstream": $3 }
SPEC
  "$CZCTL" run tests/proxy/render.lua "$1/spec.json" >"$1/nginx.conf"
}
write_route "$T/relay" 127.0.93.51 "$(trust "https://$RELAY")"
write_route "$T/down" 127.0.93.52 "$(trust "https://$CLOSED")"
write_route "$T/new" 127.0.93.53 "$(trust "https://$EP")"
# the same without ngrok's error recognition (no inner server): the secret
# header and verified TLS alone, as a route to a landing pays them
write_route "$T/nofb" 127.0.93.55 "$(trust "https://$EP" | python3 -c 'import json,sys; u=json.load(sys.stdin); del u["fallback_on"]; print(json.dumps(u))')"
# the same route as the second of two sessions on one shared proxy
mkdir -p "$T/shared"
python3 - "$(trust "https://$EP")" "$T/shared" "$ORIG" >"$T/shared/spec.json" <<'SPEC'
import json, sys
up, d, orig = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
def dev(n, v): return {"header": {"name": n, "equals": v}}
print(json.dumps({"runtime_dir": d, "route_dir": d, "listen_address": "127.0.93.56", "health_port": 8079,
                  "access_log": False,
                  "ports": [{"name": "http", "port": 80, "listen": 8080, "original": orig}],
                  "routes": [{"id": "other1", "port": 80, "rule": dev("X-Dev", "other"), "tunnel_upstream": up},
                             {"id": "bench2", "port": 80, "rule": dev("X-C6O-INTERCEPT", "yes"), "tunnel_upstream": up}]}))
SPEC
"$CZCTL" run tests/proxy/render.lua "$T/shared/spec.json" >"$T/shared/nginx.conf" || exit 1
# today's route for the same tunnel: BASELINE's renderer (on main before issue
# 10: no verification, no secret, no inner server; keep-alive to an address as now)
git show "$BASELINE:lua/czctl/proxy/nginx.lua" >"$T/main_nginx.lua" || { echo "no revision $BASELINE" >&2; exit 1; }
mkdir -p "$T/old"
sed -e "s|\"$T/new\"|\"$T/old\"|g" -e 's|"access_log": false,||' "$T/new/spec.json" |
  python3 -c 'import json,sys; s=json.load(sys.stdin); s["listen_address"]="127.0.93.54"; s["access_log"]=False
s["tunnel_upstream"]={"url": s["tunnel_upstream"]["url"], "extra_headers": {"ngrok-skip-browser-warning": "1"}}
print(json.dumps(s))' >"$T/old/spec.json"
"$CZCTL" run bench/lib/render_main.lua "$T/old/spec.json" "$T/main_nginx.lua" >"$T/old/nginx.conf" || exit 1
for d in relay down new nofb old shared; do
  "$NGINX" -p "$T/$d" -c "$T/$d/nginx.conf" -e stderr -g 'daemon off;' 2>"$T/$d.err" & PIDS+=($!)
done
for a in 51 52 53 54 55 56; do wait_port "127.0.93.$a" 8080 || { echo "proxy .$a did not start" >&2; cat "$T"/*.err >&2; exit 1; }; done

# times URL [CURL ARGS]: per-request seconds of REQS+1 requests on one
# connection (curl reuses it), the first (the handshake) dropped
times() {
  local url=$1; shift
  local args=() i
  for i in $(seq $((REQS + 1))); do args+=(-o /dev/null "$url"); done
  curl -s -w '%{time_total}\n' "$@" "${args[@]}" | tail -n +2
}
: >"$T/lat-direct" >"$T/lat-route" >"$T/lat-fallback" >"$T/lat-orig" >"$T/rps-new" >"$T/rps-old" >"$T/rps-nofb" \
  >"$T/rps-shared"
for r in $(seq "$ROUNDS"); do
  times "https://$RELAY/" --cacert "$T/ca.crt" >>"$T/lat-direct"
  times http://127.0.93.51:8080/ -H 'X-C6O-INTERCEPT: yes' >>"$T/lat-route"
  times http://127.0.93.52:8080/ -H 'X-C6O-INTERCEPT: yes' >>"$T/lat-fallback"
  times http://127.0.93.52:8080/ >>"$T/lat-orig"
  for v in new nofb old shared; do
    case $v in new) a=53 ;; old) a=54 ;; nofb) a=55 ;; shared) a=56 ;; esac
    wrk -t2 -c32 -d"${SECS}s" -H 'X-C6O-INTERCEPT: yes' "http://127.0.93.$a:8080/" 2>/dev/null |
      awk '/^Requests\/sec/ {print $2}' >>"$T/rps-$v"
  done
  echo "round $r/$ROUNDS done" >&2
done
# sanity: the routes answered from where they should
answers=""
for a in 51 52 53 54 55 56; do answers="$answers$(curl -s -H 'X-C6O-INTERCEPT: yes' "http://127.0.93.$a:8080/");"; done
[ "$answers" = "hello from laptop;hello from original;hello from laptop;hello from laptop;hello from laptop;hello from laptop;" ] ||
  { echo "bench/tunnel.sh: unexpected answers: $answers" >&2; exit 1; }

load=$(cut -d' ' -f1 /proc/loadavg)
python3 - "$T" "$ROUNDS" "$REQS" "$SECS" "$load" "$BASELINE" "$(git rev-parse --short "$BASELINE")" <<'EOF' | tee "$T/section.md"
import statistics as st, sys
t, rounds, reqs, secs, load, base, base_rev = sys.argv[1:8]
def ms(name):
    return [float(x) * 1000 for x in open("%s/%s" % (t, name)) if x.strip()]
def num(name):
    return [float(x) for x in open("%s/%s" % (t, name)) if x.strip()]
d, r, f, o = (st.median(ms(n)) for n in ("lat-direct", "lat-route", "lat-fallback", "lat-orig"))
new, old, nofb = st.median(num("rps-new")), st.median(num("rps-old")), st.median(num("rps-nofb"))
shared = st.median(num("rps-shared"))
print("## Tunnel trust: latency through a 20 ms relay, fallback, throughput\n")
print("`BASELINE=%s bench/tunnel.sh %s` (REQUESTS=%s, BENCH_SECONDS=%s; today's route: %s at %s), nginx 1.22,"
      % (base, rounds, reqs, secs, base, base_rev))
print("load average %s at the end. Medians of" % load)
print("interleaved runs; each latency run is %s requests on one kept client connection (its first request dropped)." % reqs)
print()
print("| measure | median | goal |")
print("|---|---|---|")
print("| direct call to the TLS endpoint through the 20 ms relay, reused connection | %.1f ms | |" % d)
print("| the same through the intercept route (secret header, verified TLS, inner server) | %.1f ms | |" % r)
print("| **added by the intercept route** | **%.1f ms** | <= 2 ms |" % (r - d))
print("| request to the in-cluster version, no header | %.2f ms | |" % o)
print("| intercepted request, tunnel port refusing, answered by the in-cluster version | %.2f ms | |" % f)
print("| **wait added by the tunnel being down (refused)** | **%.2f ms** | <= 50 ms |" % (f - o))
print("| throughput, today's route (%s's renderer, same tunnel; wrk -t2 -c32, %ss) | %.0f req/s | |" % (base, secs, old))
print("| throughput, the secret header and verified TLS (no inner server) | %.0f req/s | |" % nofb)
print("| **ratio secret check / today** | **%.3f** | >= 0.95 |" % (nofb / old))
print("| throughput, the full ngrok route (plus the inner server that recognises ngrok's errors) | %.0f req/s | |" % new)
print("| ratio full ngrok route / today | %.3f | (the price of fail-open on ngrok's errors) |" % (new / old))
print("| throughput, the full ngrok route as the 2nd of 2 sessions on a shared proxy | %.0f req/s | |" % shared)
print("| ratio shared-proxy route / today | %.3f | |" % (shared / old))
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] && python3 bench/lib/results.py bench/RESULTS.md <"$T/section.md"
