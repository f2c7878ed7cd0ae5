#!/usr/bin/env bash
# Acceptance 1 and 5: routing through the Service's ClusterIP while a
# session runs (header, -x, --all, multi-port with a named targetPort,
# WebSocket, 5 MiB uploads on both routes), and the cluster exactly as
# before once each session is closed.
source "$(dirname "$0")/lib/common.sh"
source "$E2E_LIB/upload.sh"

sandbox_up
deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
# created, not applied: this Service has no annotations at all, so a restore
# must not leave an empty annotations map behind
kubectl create -f "$E2E_ROOT/examples/multi-port-app.yaml" >/dev/null &&
  kubectl rollout status deployment/multi --timeout=60s >/dev/null || { fail "multi-port app deploys"; exit 1; }
snapshot "$WORK/before.json"
PORT=$(local_server laptop)
IP=$(cluster_ip demo)

# --- default header -------------------------------------------------------
out=$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct 2>"$WORK/err") ; rc=$?
is "$rc" 0 "intercept demo with the default header exits 0"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$WORK/err"
like "$out" "X-C6O-INTERCEPT" "the result names the header to send"
like "$out" "curl -H" "the result has a curl example"
try=$(printf '%s\n' "$out" | sed -n 's/^Try  *//p')
like "$try" "# from inside the cluster$" "the curl example says where to run it"
like "$(in_cluster sh -c "$try" 2>"$WORK/try.err" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pod"])' 2>&1)" '^laptop$' \
  "the curl example, run inside the cluster as printed, reaches the local server"
tunnel=$(printf '%s\n' "$out" | sed -n 's/^Tunnel  *\(https:[^ ]*\) (direct)$/\1/p')
like "$tunnel" "^https://$(host_gateway):[0-9]+$" "the direct tunnel lands on the detected host gateway (TLS)"
curl -sk --max-time 5 "$tunnel/" >/dev/null; rc=$?
# reset at once: curl sees it during its connect (7), while sending (55), its TLS handshake (35) or its first read (56)
like "$rc" '^(7|35|55|56)$' "the landing resets a connection from this machine itself (it admits the cluster's side only)"
like "$(who "http://$IP/" -H 'X-C6O-INTERCEPT: yes')" '^laptop$' "a request with the header reaches the local server"
like "$(who "http://$IP/")" '^demo-' "a request without the header reaches the in-cluster pod"
like "$(who "http://$IP/" -H 'x-c6o-intercept: yes')" '^laptop$' "the header name matches case-insensitively"
like "$(who "http://$IP/" -H 'X-C6O-INTERCEPT: YES')" '^demo-' "the header value matches exactly (YES is not yes)"
host=$(in_cluster curl -s -H 'X-C6O-INTERCEPT: yes' "http://$IP/" | python3 -c 'import json,sys; h=json.load(sys.stdin)["headers"]; print(h.get("Host") or h.get("host"))')
is "$host" "$IP" "the local server sees the original Host header"
like "$(in_cluster python3 "$E2E_LIB/wsclient.py" "$IP" 80 hello X-C6O-INTERCEPT:yes 2>&1)" '^laptop: hello$' \
  "a WebSocket with the header round-trips through the local server"
like "$(in_cluster python3 "$E2E_LIB/wsclient.py" "$IP" 80 hello 2>&1)" '^demo-.*: hello$' \
  "a WebSocket without the header round-trips through the in-cluster pod"
read -r sent seen len pod < <(upload_check "http://$IP/upload" -H 'X-C6O-INTERCEPT: yes')
is "$seen/$len/$pod" "$sent/5242880/laptop" "a 5 MiB upload with the header arrives intact at the local server"
read -r sent seen len pod < <(upload_check "http://$IP/upload")
like "$seen/$len/$pod" "^$sent/5242880/demo-" "a 5 MiB upload without the header arrives intact in the cluster"
list=$("$CZCTL" session list)
like "$list" "demo +80 +X-C6O-INTERCEPT: yes" "session list shows the session"
"$CZCTL" session close -q; is "$?" 0 "session close exits 0"
like "$(who "http://$IP/" -H 'X-C6O-INTERCEPT: yes')" '^demo-' "after close the header no longer reaches the local server"
snapshot "$WORK/after1.json"
same_snapshot "$WORK/before.json" "$WORK/after1.json" "after the session the cluster equals the snapshot from before"

# --- -x custom header -----------------------------------------------------
"$CZCTL" service intercept demo -l "$PORT" --tunnel direct -x 'X-Dev: alice' -q; is "$?" 0 "intercept with -x exits 0"
like "$(who "http://$IP/" -H 'X-Dev: alice')" '^laptop$' "-x: the custom header reaches the local server"
like "$(who "http://$IP/" -H 'X-Dev: bob')" '^demo-' "-x: another value reaches the in-cluster pod"
like "$(who "http://$IP/" -H 'X-C6O-INTERCEPT: yes')" '^demo-' "-x: the default header no longer routes"
"$CZCTL" session close -q; is "$?" 0 "session close after -x exits 0"

# --- --all ----------------------------------------------------------------
"$CZCTL" service intercept demo -l "$PORT" --tunnel direct --all -q; is "$?" 0 "intercept with --all exits 0"
like "$(who "http://$IP/")" '^laptop$' "--all: a request without any header reaches the local server"
like "$(who "http://$IP/" -H 'X-C6O-INTERCEPT: no')" '^laptop$' "--all: any header reaches the local server"
"$CZCTL" session close -q; is "$?" 0 "session close after --all exits 0"
snapshot "$WORK/after2.json"
same_snapshot "$WORK/before.json" "$WORK/after2.json" "after -x and --all sessions the cluster equals the snapshot"

# --- a scripted rule: examples/team-routing.lua ------------------------------
"$CZCTL" run "$E2E_ROOT/examples/team-routing.lua" demo --team blue -l "$PORT" --tunnel direct -q
is "$?" 0 "the team-routing example script starts a session"
like "$(who "http://$IP/api/orders" -H 'Cookie: a=1; team=blue')" '^laptop$' "team-routing: cookie team=blue under /api/ reaches the local server"
like "$(who "http://$IP/api/orders" -H 'X-Team: blue-2')" '^laptop$' "team-routing: header X-Team matching the regex reaches the local server"
like "$(who "http://$IP/other" -H 'Cookie: team=blue')" '^demo-' "team-routing: outside the path prefix stays in the cluster"
like "$(who "http://$IP/api/orders" -H 'X-Team: red')" '^demo-' "team-routing: another team stays in the cluster"
"$CZCTL" session close -q; is "$?" 0 "session close after the team-routing script exits 0"

# --- multi-port Service, named targetPort, only -r routed ------------------
MIP=$(cluster_ip multi)
"$CZCTL" service intercept multi -r web -l "$PORT" --tunnel direct -q 2>"$WORK/err"; rc=$?
is "$rc" 0 "intercept port web of a two-port Service exits 0"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$WORK/err"
like "$(who "http://$MIP:80/" -H 'X-C6O-INTERCEPT: yes')" '^laptop$' "multi-port: the intercepted port routes the header to the local server"
like "$(who "http://$MIP:80/")" '^multi-' "multi-port: the intercepted port without the header reaches the pod (named targetPort)"
port_seen=$(in_cluster curl -s "http://$MIP:9090/" -H 'X-C6O-INTERCEPT: yes' | python3 -c 'import json,sys; o=json.load(sys.stdin); print(o["pod"].split("-")[0], o["port"])')
is "$port_seen" "multi 9090" "multi-port: the other port passes through to the original, header or not"
like "$(in_cluster python3 "$E2E_LIB/wsclient.py" "$MIP" 9090 hi 2>&1)" '^multi-.*: hi$' "multi-port: WebSocket on the other port reaches the original"
"$CZCTL" session close -q; is "$?" 0 "session close of the multi-port session exits 0"
snapshot "$WORK/after3.json"
same_snapshot "$WORK/before.json" "$WORK/after3.json" "after the multi-port session the cluster equals the snapshot"
# --- routed when the command returns ------------------------------------------
# The command waits until the Service's Endpoints list only the proxy, so the
# very first request with the header after it returns is already routed (the
# sandbox's default timing programs its service proxy at once; a real
# kube-proxy follows a moment later, as the README says).
firsts=""
eps_before=$(audit_count GET '^/api/v1/namespaces/default/endpoints$')
for i in $(seq 10); do
  "$CZCTL" service intercept demo -l "$PORT" --tunnel direct -q 2>"$WORK/err" || sed 's/^/# /' "$WORK/err"
  firsts+="$(who "http://$IP/" -H 'X-C6O-INTERCEPT: yes') "
  "$CZCTL" session close -q
done
is "$firsts" "$(printf 'laptop %.0s' $(seq 10))" \
  "the first request with the header right after the command returns reaches the local server (10 sessions)"
eps_after=$(audit_count GET '^/api/v1/namespaces/default/endpoints$')
like "$((eps_after - eps_before))" '^([1-9][0-9]+)$' "each setup waits on the Service's Endpoints (10 sessions, >= 10 requests)"

# --- a Service with an HTTP port and a TLS port ----------------------------------
# Only the HTTP port is intercepted; the TLS port must pass through untouched
# (the pod's own certificate, TLS not terminated), during and after the session.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=tls-app.default" \
  -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >/dev/null 2>&1
cat >"$WORK/default.conf" <<'EOF_CONF'
server {
    listen 8080;
    location / { return 200 "tls-app-http\n"; }
}
server {
    listen 8443 ssl;
    ssl_certificate     /etc/tls/tls.crt;
    ssl_certificate_key /etc/tls/tls.key;
    location / { return 200 "tls-app-https\n"; }
}
EOF_CONF
kubectl create secret tls tls-app-cert --cert "$WORK/tls.crt" --key "$WORK/tls.key" >/dev/null &&
  kubectl create configmap tls-app-conf --from-file=default.conf="$WORK/default.conf" >/dev/null &&
  kubectl create -f - >/dev/null <<'EOF_YAML' &&
apiVersion: apps/v1
kind: Deployment
metadata: {name: tls-app, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: tls-app}}
  template:
    metadata: {labels: {app: tls-app}}
    spec:
      containers:
        - name: nginx
          image: nginxinc/nginx-unprivileged:1.27.4
          ports: [{name: http, containerPort: 8080}, {name: https, containerPort: 8443}]
          readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 1}
          volumeMounts:
            - {name: conf, mountPath: /etc/nginx/conf.d, readOnly: true}
            - {name: tls, mountPath: /etc/tls, readOnly: true}
      volumes:
        - {name: conf, configMap: {name: tls-app-conf}}
        - {name: tls, secret: {secretName: tls-app-cert}}
---
apiVersion: v1
kind: Service
metadata: {name: tls, namespace: default}
spec:
  selector: {app: tls-app}
  ports:
    - {name: http, port: 80, targetPort: http}
    - {name: https, port: 443, targetPort: https}
    - {name: dns, port: 53, targetPort: 8053, protocol: UDP}
EOF_YAML
  kubectl rollout status deployment/tls-app --timeout=60s >/dev/null || { fail "the TLS app deploys"; done_testing; exit 1; }
TIP=$(cluster_ip tls)
subject() { in_cluster openssl s_client -connect "$TIP:443" </dev/null 2>/dev/null | openssl x509 -noout -subject 2>/dev/null; }
is "$(in_cluster curl -sk --max-time 10 "https://$TIP/")" tls-app-https "TLS app: the TLS port answers before the intercept"
"$CZCTL" service intercept tls -r http -l "$PORT" --tunnel direct -q 2>"$WORK/err"; rc=$?
is "$rc" 0 "intercept the HTTP port of a Service that also has a TLS port exits 0"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$WORK/err"
like "$(who "http://$TIP/" -H 'X-C6O-INTERCEPT: yes')" '^laptop$' "TLS app: the HTTP port routes the header to the local server"
is "$(in_cluster curl -s --max-time 10 "http://$TIP/")" tls-app-http "TLS app: the HTTP port without the header reaches the pod"
is "$(in_cluster curl -sk --max-time 10 "https://$TIP/" -H 'X-C6O-INTERCEPT: yes')" tls-app-https \
  "TLS app: the TLS port works through the ClusterIP during the intercept"
like "$(subject)" "CN ?= ?tls-app.default" "TLS app: clients see the pod's own certificate during the intercept"
conf=$(kubectl get secret -l app.kubernetes.io/managed-by=czctl,czctl.io/service=tls -o jsonpath='{.items[0].data.nginx\.conf}' | base64 -d)
like "$conf" "listen 8082 udp reuseport;" "TLS app: the UDP port passes through on a UDP listener of the (ready) proxy"
like "$(printf '%s' "$conf" | grep -c 'listen 808[0-9]')" '^3$' "TLS app: the proxy listens once per Service port"
"$CZCTL" session close -q; is "$?" 0 "session close of the TLS app session exits 0"
is "$(in_cluster curl -sk --max-time 10 "https://$TIP/")" tls-app-https "TLS app: the TLS port works after the session is closed"
is "$(in_cluster curl -s --max-time 10 "http://$TIP/" -H 'X-C6O-INTERCEPT: yes')" tls-app-http \
  "TLS app: after close the header no longer reaches the local server"

is "$(czctl_leftovers)" "" "nothing labelled managed-by=czctl is left"
is "$(session_ids)" "" "no local session file is left"
done_testing
