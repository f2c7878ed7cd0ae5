#!/usr/bin/env bash
# The kube tunnel (issue 11): intercepted requests reach an app that listens
# only on this machine's 127.0.0.1, over port-forward streams czctl opens
# through the API server to the session's relay, while the sandbox's pods
# cannot reach this machine at all (acceptance 1); many requests, 50 MB both
# ways, WebSocket and server-sent events, byte-exact (2); the laptop side
# killed or cut off: the in-cluster version answers, and routing resumes
# without a new session (3); the relay's pod under the restricted Pod
# Security Standard, and nothing of it left after `session close` (5); a
# relay left by a close that died half-way is listed as orphaned and removed
# by `session close` of its session and by `session close --stale`.
source "$(dirname "$0")/lib/common.sh"

sandbox_up
NS=kube-restricted
# The demo app itself is not restricted: the namespace enforces the standard
# from after its start on (Kubernetes checks new pods; running ones stay).
kubectl create namespace "$NS" >/dev/null &&
  sed "s/namespace: default/namespace: $NS/" "$E2E_ROOT/examples/demo-app.yaml" | kubectl apply -n "$NS" -f - >/dev/null &&
  kubectl rollout status -n "$NS" deployment/demo --timeout=60s >/dev/null &&
  kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=restricted >/dev/null 2>&1 ||
  { fail "demo app deploys in $NS"; exit 1; }
snapshot "$WORK/before.json"
svc_ns_before=$(service_state demo "$NS")
python3 "$E2E_LIB/laptop_app.py" >"$WORK/app.port" 2>"$WORK/app.log" &
E2E_PIDS+=($!)
wait_for_cmd 10 test -s "$WORK/app.port"
PORT=$(cat "$WORK/app.port")
HOST=demo.$NS
H='X-C6O-INTERCEPT:yes'
# czctl talks to the cluster through the cuttable path (below)
cz() { KUBECONFIG="$WORK/kubeconfig-cut" "$CZCTL" "$@"; }
client() { in_cluster python3 "$E2E_LIB/kube_client.py" "$@"; }
keeper_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["keeper_pid"])' "$XDG_STATE_HOME/czctl/sessions/$1.json"; }
list_field() { cz session list -n "$NS" -o json | python3 -c 'import json,sys
s=[x for x in json.load(sys.stdin)["items"] if x["id"] == sys.argv[1]]
print(" ".join(str(s[0].get(k)) for k in sys.argv[2:]) if s else "(no session)")' "$@"; }
tunnel_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]))' "$XDG_STATE_HOME/czctl/sessions/$1.tunnel.json" "$2" 2>/dev/null; }

# The laptop's network to the API server goes through a path the test can cut.
python3 "$E2E_LIB/cutproxy.py" "$KUBECONFIG" "$WORK/kubeconfig-cut" >"$WORK/cut.out" 2>"$WORK/cut.err" &
CUT=$!
E2E_PIDS+=($CUT)
wait_for_cmd 10 grep -q ready "$WORK/cut.out" || { fail "the cuttable path starts"; cat "$WORK/cut.err" | sed 's/^/# /'; exit 1; }

# --- 1: routing to 127.0.0.1 while pods cannot reach this machine ----------
out=$(cz service intercept demo -n "$NS" -l "$PORT" --tunnel kube 2>"$WORK/err"); rc=$?
is "$rc" 0 "intercept --tunnel kube exits 0 in a namespace that enforces restricted"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$WORK/err"
ID=$(printf '%s\n' "$out" | sed -n 's/^Session  *//p')
like "$out" "Tunnel +http://czctl-relay-$ID\\.$NS\\.svc\\.cluster\\.local:9000 \\(kube\\)" "the tunnel is the session's relay Service"
like "$(who "http://$HOST/" -H "$H")" '^laptop$' "a request with the header reaches the app on this machine's 127.0.0.1"
like "$(who "http://$HOST/")" '^demo-' "a request without the header reaches the in-cluster pod"
like "$(in_cluster curl -sS --max-time 5 "http://127.0.0.1:$PORT/" 2>&1)" 'Failed to connect|Connection refused' \
  "from the cluster, 127.0.0.1:$PORT is the pod's own loopback: the app is not there"
GW=$(host_gateway)
like "$(in_cluster curl -sS --max-time 5 "http://$GW:$PORT/" 2>&1)" '(Failed to connect|Connection refused|timed out|No route)' \
  "from the cluster, this machine's host gateway $GW:$PORT does not reach the app (it listens on 127.0.0.1 only)"
APISERVER=$(sed -n 's/^ *server: *https:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$KUBECONFIG" | head -1)
POD=$(kubectl get pods -n "$NS" -l app=demo -o jsonpath='{.items[0].metadata.name}')
reach=$(kubectl exec -n "$NS" "$POD" -- python3 -c '
import socket, sys
for host, port in (("127.0.0.1", int(sys.argv[1])), (sys.argv[2], int(sys.argv[1])), (sys.argv[2], int(sys.argv[3])), ("10.255.255.53", 53)):
    try:
        socket.create_connection((host, port), 2).close(); print("reached", host, port)
    except OSError as e:
        print("not", host, port, type(e).__name__)' "$PORT" "$GW" "$APISERVER" 2>&1 | tr '\n' ' ')
like "$reach" "^not 127.0.0.1 $PORT.*not $GW $PORT.*not $GW $APISERVER.*not 10.255.255.53 53" \
  "a pod of the cluster reaches neither the app, nor the API server's port, nor another address of this machine"
KEEPER=$(keeper_of "$ID")
is "$(ss -ltnpH | grep -c "pid=$KEEPER,")" 0 "the holder of the kube tunnel listens on no port"
like "$(cz session list -n "$NS")" "$ID +$NS +demo +80 .* active " "session list shows the session active"
route_file() { kubectl get secret -n "$NS" "czctl-route-$ID" -o jsonpath="{.data.tunnel-$1\\.conf}" | base64 -d; }
like "$(route_file http)" "server czctl-relay-$ID\\.$NS\\.svc\\.cluster\\.local:9000;" \
  "the session's route Secret czctl-route-$ID holds its upstream: the relay's Service"
is "$(route_file location | grep -c 'proxy_ssl\|X-Czctl-Tunnel-Secret')" 0 \
  "the relay hop has no TLS and no secret header (inside the cluster, behind the relay's NetworkPolicy)"
is "$(kubectl get svc demo -n "$NS" -o yaml | grep -c "czctl-relay")" 0 "the Service's annotations do not name the relay"
is "$(grep -c 'gives no secret' "$WORK/err")" 0 "no warning about a tunnel without secret (the relay is in the cluster)"
is "$(list_field "$ID" tunnel tunnelState)" "kube up" "session list -o json shows the kube tunnel up"

# --- several sessions on the Service's one proxy, each with its own relay ----
python3 "$E2E_LIB/laptop_app.py" laptop2 >"$WORK/app2.port" 2>"$WORK/app2.log" &
E2E_PIDS+=($!)
wait_for_cmd 10 test -s "$WORK/app2.port"
out=$(cz service intercept demo -n "$NS" -l "$(cat "$WORK/app2.port")" -x X-C6O-INTERCEPT:two --tunnel kube 2>"$WORK/err"); rc=$?
is "$rc" 0 "a second kube session joins the Service's proxy"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$WORK/err"
ID2=$(printf '%s\n' "$out" | sed -n 's/^Session  *//p')
is "$(kubectl get deploy -n "$NS" -l app.kubernetes.io/managed-by=czctl -o name | sort | tr '\n' ' ')" \
  "$(printf '%s\n' czctl-proxy-demo "czctl-relay-$ID" "czctl-relay-$ID2" | sort | sed 's|^|deployment.apps/|' | tr '\n' ' ')" \
  "one shared proxy, one relay per session"
is "$(who "http://$HOST/" -H "$H") $(who "http://$HOST/" -H X-C6O-INTERCEPT:two) $(who "http://$HOST/" | cut -c1-5)" \
  "laptop laptop2 demo-" "each session's requests reach its own app through its own relay, the rest the cluster"

# --- relays left behind: closes that die half-way --------------------------
out=$(cz service intercept demo -n "$NS" -l "$(cat "$WORK/app2.port")" -x X-C6O-INTERCEPT:three --tunnel kube 2>"$WORK/err"); rc=$?
is "$rc" 0 "a third kube session joins"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$WORK/err"
ID3=$(printf '%s\n' "$out" | sed -n 's/^Session  *//p')
K2=$(keeper_of "$ID2") K3=$(keeper_of "$ID3")
# The API server fails both closes' deletes of the relay Deployments: each
# close has taken its session off the Service, then stops with an error.
faults '[{"name":"relay-delete","method":"DELETE","path":"/deployments/czctl-relay-","userAgent":"session-close","action":"fail","status":500,"times":2}]'
wait_for_cmd 10 fault_loaded relay-delete
out=$(cz session close "$ID2" -n "$NS" 2>&1); rc=$?
like "$rc/$(printf '%s\n' "$out" | tail -1)" "^1/.*run czctl session close again" \
  "a close whose relay delete fails exits 1 and says to run it again"
cz session close "$ID3" -n "$NS" -q >/dev/null 2>&1
faults '[]'
is "$(kubectl get deploy -n "$NS" "czctl-relay-$ID2" "czctl-relay-$ID3" -o name 2>/dev/null | wc -l)" 2 \
  "both relays are left in the cluster, their sessions on no Service"
gone() { ! ps -o stat= -p "$1" | grep -qv '^Z'; }
wait_for_cmd 40 gone "$K2" && wait_for_cmd 40 gone "$K3"
list=$(cz session list -n "$NS")
like "$list" "$ID2 +$NS +demo +- +- .* orphaned " "session list shows a left relay as orphaned"
like "$list" "$ID2: relay czctl-relay-$ID2 \\(Deployment, Service, NetworkPolicy\\) belongs to no live session; remove it with: czctl session close --stale -n $NS" \
  "and says how to remove it"
other() { XDG_STATE_HOME="$WORK/elsewhere" cz "$@"; }
is "$(other session list -n "$NS" | grep -c orphaned)" 0 \
  "another machine does not take a relay younger than 5 minutes for an orphan (an intercept there may be starting)"
out=$(other session close "$ID3" -n "$NS" 2>&1); rc=$?
like "$rc/$(printf '%s\n' "$out" | tail -1)" "^1/.*session $ID3 is on no Service, but .* may belong to an intercept still starting .* --force$" \
  "and its session close there asks for --force"
out=$(cz session close "$ID3" -n "$NS" 2>&1); rc=$?
is "$rc" 0 "running the close again exits 0"
like "$out" "Deleted relay czctl-relay-$ID3 in $NS, left by session $ID3, which is closed" "it deletes the relay left behind"
is "$(kubectl get deploy,rs,pods,svc,networkpolicy -n "$NS" -l "czctl.io/session=$ID3" -o name)" "" \
  "nothing of that relay is left"
out=$(cz session close --stale -n "$NS" 2>&1); rc=$?
is "$rc" 0 "session close --stale exits 0"
like "$out" "Deleted relay czctl-relay-$ID2 in $NS, left by session $ID2, which is closed" "it deletes the other left relay"
is "$(kubectl get deploy,rs,pods,svc,networkpolicy -n "$NS" -l "czctl.io/session=$ID2" -o name)" "" \
  "nothing of that relay is left"
is "$(cz session list -n "$NS" | grep -c orphaned)/$(ls "$XDG_STATE_HOME/czctl/sessions" | grep -c "$ID2\|$ID3")" 0/0 \
  "session list shows no orphan any more, and no local record of either session is left"
like "$(who "http://$HOST/" -H "$H")" '^laptop$' "--stale left the live session alone: its route still reaches its app"

# --- 2: load, size, WebSocket, SSE, byte-exact ---------------------------
is "$(client many "$HOST" "$H" 100)" "laptop=100 other=0 errors=0" "100 concurrent requests all reach the app"
is "$(client upload "$HOST" "$H" 50000000 7)" ok "a 50 MB upload reaches the app byte-exact"
is "$(client download "$HOST" "$H" 50000000 8)" ok "a 50 MB download comes back byte-exact"
like "$(in_cluster python3 "$E2E_LIB/wsclient.py" "$HOST" 80 hello X-C6O-INTERCEPT:yes 2>&1)" '^laptop: hello$' \
  "a WebSocket echo round-trips through the app"
is "$(client sse "$HOST" "$H" 4)" "text/event-stream event 0,event 1,event 2,event 3" \
  "server-sent events arrive one by one (each acknowledged before the app sends the next)"

# --- 3: the laptop side goes away and comes back ---------------------------
# (a) the holder is killed: every request is answered, by the cluster
client watch "$HOST" "$H" "$WORK/stop-watch" >"$WORK/watch1" 2>&1 &
E2E_PIDS+=($!); W1=$!
wait_for_cmd 20 grep -q ' laptop$' "$WORK/watch1"
kill -KILL "$KEEPER"; KILLED=$(date +%s.%N)
wait_for_cmd 20 grep -q ' demo-' "$WORK/watch1"
touch "$WORK/stop-watch"; wait "$W1"; rm -f "$WORK/stop-watch"
read -r first errors < <(python3 - "$WORK/watch1" "$KILLED" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if len(l.split()) == 2]
t0 = float(sys.argv[2])
after = [(float(t), p) for t, p in rows if float(t) > t0]
first = next((t for t, p in after if p.startswith("demo-")), None)
print("%.3f" % (first - t0) if first else "none", sum(1 for _, p in rows if not (p == "laptop" or p.startswith("demo-"))))
PY
)
is "$errors" 0 "while the holder is killed no request fails (each is answered by the app or the cluster)"
ok_if() { if [ "$1" = yes ]; then ok "$2"; else fail "$2"; fi; }
ok_if "$(python3 -c "print('yes' if '$first' != 'none' and float('$first') <= 1.0 else 'no')")" \
  "the in-cluster version answers within 1 s of the kill (${first} s)"
is "$(list_field "$ID" state tunnelState)" "holder gone stopped" "session list shows the holder gone and the tunnel stopped"
# (b) the same command again restarts the holder: routing resumes, same session
out=$(cz service intercept demo -n "$NS" -l "$PORT" --tunnel kube 2>&1); rc=$?
is "$rc" 0 "the intercept command again exits 0"
like "$out" "Restart the session keeper" "it restarts the session's keeper"
like "$out" "Session +$ID" "it keeps the session"
like "$(who "http://$HOST/" -H "$H")" '^laptop$' "routing to the app resumes"
# (c) the laptop's network to the API server is cut, then back: czctl reconnects by itself
KEEPER=$(keeper_of "$ID")
before=$(tunnel_field "$ID" reconnects)
kill -USR1 "$CUT"
wait_for_cmd 30 sh -c "[ \"\$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(\"state\"))' '$XDG_STATE_HOME/czctl/sessions/$ID.tunnel.json')\" != up ]"
like "$(who "http://$HOST/" -H "$H")" '^demo-' "cut off: a request with the header gets the in-cluster answer"
kill -USR2 "$CUT"
wait_for_cmd 30 sh -c "[ \"\$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(\"state\"))' '$XDG_STATE_HOME/czctl/sessions/$ID.tunnel.json')\" = up ]"
like "$(who "http://$HOST/" -H "$H")" '^laptop$' "network back: routing resumes without a new session"
like "$(tunnel_field "$ID" reconnects)" '^[1-9]' "the holder reports the reconnect (reconnects was $before)"
like "$(sed -n '/kube tunnel down: /,$p' "$XDG_STATE_HOME/czctl/sessions/$ID.log" | tr '\n' ' ')" 'kube tunnel down: .* kube tunnel up' \
  "the holder's log says the tunnel went down and came back"
is "$(keeper_of "$ID")" "$KEEPER" "the same holder process reconnected"
# (d) the relay's pod is replaced: the holder follows the new pod
old=$(kubectl get pods -n "$NS" -l "czctl.io/session=$ID,app.kubernetes.io/component=relay" -o name)
kubectl delete -n "$NS" "$old" --wait=false >/dev/null
wait_for_cmd 30 sh -c "[ \"\$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get(\"state\"), d.get(\"pod\"))' '$XDG_STATE_HOME/czctl/sessions/$ID.tunnel.json')\" != 'up ${old#pod/}' ] && [ \"\$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(\"state\"))' '$XDG_STATE_HOME/czctl/sessions/$ID.tunnel.json')\" = up ]"
isnt() { if [ "$1" != "$2" ]; then ok "$3"; else fail "$3"; fi; }
isnt "$(tunnel_field "$ID" pod)" "${old#pod/}" "a replaced relay pod is followed (no new session)"
like "$(who "http://$HOST/" -H "$H")" '^laptop$' "routing through the new relay pod works"

# --- 5: restricted, the NetworkPolicy, nothing left -----------------------
is "$(kubectl get pods -n "$NS" -l "czctl.io/session=$ID,app.kubernetes.io/component=relay" -o jsonpath='{.items[*].status.phase}')" Running \
  "the relay pod runs in a namespace that enforces the restricted Pod Security Standard"
RELAY_IP=$(kubectl get pods -n "$NS" -l "czctl.io/session=$ID,app.kubernetes.io/component=relay" -o jsonpath='{.items[0].status.podIP}')
like "$(in_cluster curl -sS --max-time 5 "http://$RELAY_IP:9001/" 2>&1)" 'Failed to connect|Connection refused' \
  "the relay's laptop port is not reachable from the cluster (it listens on the pod's loopback: only port-forward gets there)"
relay_sel=$(kubectl get networkpolicy -n "$NS" "czctl-relay-$ID" -o json | python3 -c 'import json,sys
p=json.load(sys.stdin)["spec"]; print(",".join("%s=%s" % kv for kv in sorted(p["podSelector"]["matchLabels"].items())))')
is "$(kubectl get pods -n "$NS" -l "$relay_sel" -o name | sed 's/-[a-z0-9]*-[a-z0-9]*$//')" "pod/czctl-relay-$ID" \
  "the NetworkPolicy applies to the relay pod (and no other)"
from=$(kubectl get networkpolicy -n "$NS" "czctl-relay-$ID" -o json | python3 -c 'import json,sys
r=json.load(sys.stdin)["spec"]["ingress"]
print(" ".join(str(p["port"]) for x in r for p in x["ports"]), ";".join(",".join("%s=%s" % kv for kv in sorted(f["podSelector"]["matchLabels"].items())) for x in r for f in x["from"]))')
is "${from%% *}" 9000 "the NetworkPolicy admits traffic to the proxy port only"
admitted=""
IFS=';' read -ra sels <<<"${from#* }"
for s in "${sels[@]}"; do admitted+=$(kubectl get pods -n "$NS" -l "$s" -o name); done
is "$(printf '%s\n' "$admitted" | sed 's/-[a-z0-9]*-[a-z0-9]*$//' | sort -u)" "pod/czctl-proxy-demo" \
  "the NetworkPolicy admits the Service's shared proxy pod and no other pod"
cz session close "$ID" -n "$NS" -q; is "$?" 0 "session close exits 0"
is "$(kubectl get deploy,rs,pods,svc,cm,networkpolicy -A -l "czctl.io/session=$ID" -o name 2>/dev/null)" "" \
  "session close leaves nothing of the relay (Deployment, ReplicaSet, pod, Service, NetworkPolicy)"
# (a process that ended but was not yet reaped by its parent counts as ended)
if ps -o stat= -p "$KEEPER" | grep -qv '^Z'; then fail "the holder has ended"; else ok "the holder has ended"; fi
snapshot "$WORK/after.json"
same_snapshot "$WORK/before.json" "$WORK/after.json" "after the session the cluster equals the snapshot from before"
like "$(who "http://$HOST/" -H "$H")" '^demo-' "after close the header no longer reaches the app"

# --- bad input -----------------------------------------------------------
out=$(cz service intercept demo -n "$NS" -l "$PORT" --tunnel direct --relay-image x/y:1 2>&1); rc=$?
is "$rc/$out" "2/czctl: --relay-image is for --tunnel kube only (see czctl service intercept --help)" \
  "--relay-image with another tunnel is a usage error"
out=$(cz service intercept demo -n "$NS" -l "$PORT" --tunnel kube --relay-image 'a b' 2>&1); rc=$?
like "$rc/$out" '^2/czctl: --relay-image "a b" is not an image reference' "a --relay-image that is no image reference is a usage error"
out=$(cz service intercept demo -n "$NS" -l "$PORT" --tunnel kube --relay-image registry.invalid/czctl-relay:1 2>&1); rc=$?
is "$rc" 1 "a relay image that cannot be pulled fails the intercept"
like "$out" "relay cannot start: relay pod czctl-relay-[a-z0-9]+-[a-z0-9]+-[a-z0-9]+: (ErrImagePull|ImagePullBackOff)" \
  "the error names the relay pod and why it cannot start"
is "$(kubectl get deploy,rs,pods,svc,cm,networkpolicy -A -l app.kubernetes.io/managed-by=czctl -o name 2>/dev/null)" "" \
  "the failed intercept leaves nothing behind (relay and proxy rolled back)"
is "$(service_state demo "$NS")" "$svc_ns_before" "the Service is as before"
done_testing
