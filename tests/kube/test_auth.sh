#!/usr/bin/env bash
# Client authentication and TLS settings against a small HTTPS server
# (fixtures/auth_server.py) that reports who it saw: client certificates from
# files and from -data (held in memory only), exec plugins answering a client
# certificate, basic auth, bearer tokens, proxy-url (HTTP CONNECT), CA
# verification, insecure-skip-tls-verify, and HTTP/2 when the server offers
# it (nginx with http2).
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
source tests/lib/tap.sh
CZCTL=${CZCTL:-$ROOT/czctl}
D=$(mktemp -d)
srv_pid=""
trap '[ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null; [ -f "$D/nginx.pid" ] && kill "$(cat "$D/nginx.pid")" 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
cd "$D" || exit 1
ossl() { openssl "$@" >/dev/null 2>&1 || { echo "Bail out! openssl $1 failed"; exit 1; }; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other-ca.key -out other-ca.crt -days 2 -subj /CN=other-ca
ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr -subj /CN=server
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > server.ext
ossl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext
mkdir -p certs
ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout certs/alice.key -out alice.csr -subj /CN=alice
ossl x509 -req -in alice.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out certs/alice.crt -days 2
python3 "$ROOT/tests/kube/fixtures/auth_server.py" "$D" 2>"$D/server.log" &
srv_pid=$!
for _ in $(seq 100); do [ -f "$D/ports" ] && break; sleep 0.05; done
read -r port pport < "$D/ports" || { echo "Bail out! server did not start"; exit 1; }
cp "$ROOT/tests/kubeconfig/fixtures/exec-plugin.sh" "$D/plugin"
b64() { base64 -w0 "$1"; }
cat > kubeconfig <<YAML
apiVersion: v1
kind: Config
clusters:
- {name: good, cluster: {server: "https://127.0.0.1:$port", certificate-authority: ca.crt}}
- {name: gooddata, cluster: {server: "https://127.0.0.1:$port", certificate-authority-data: $(b64 ca.crt)}}
- {name: wrongca, cluster: {server: "https://127.0.0.1:$port", certificate-authority: other-ca.crt}}
- {name: insecure, cluster: {server: "https://127.0.0.1:$port", insecure-skip-tls-verify: true}}
- {name: cainsecure, cluster: {server: "https://127.0.0.1:$port", certificate-authority: other-ca.crt, insecure-skip-tls-verify: true}}
- {name: proxied, cluster: {server: "https://127.0.0.1:$port", certificate-authority: ca.crt, proxy-url: "http://127.0.0.1:$pport"}}
- {name: userinfo, cluster: {server: "https://bob:s3cret@127.0.0.1:$port", certificate-authority: ca.crt}}
- {name: badscheme, cluster: {server: "ftp://bob:s3cret@127.0.0.1:$port/x"}}
- {name: badurl, cluster: {server: "https://bob:s3cret@127.0.0.1:port?"}}
users:
- {name: anon, user: {}}
- {name: certfiles, user: {client-certificate: certs/alice.crt, client-key: ./certs/alice.key}}
- {name: certdata, user: {client-certificate-data: $(b64 certs/alice.crt), client-key-data: $(b64 certs/alice.key)}}
- {name: basic, user: {username: bob, password: s3cret}}
- {name: bearer, user: {token: tok3n}}
- name: execcert
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ./plugin
      interactiveMode: Never
      env:
      - {name: PLUGIN_COUNT, value: "$D/plugin.count"}
      - {name: PLUGIN_CERT, value: "$D/certs/alice.crt"}
      - {name: PLUGIN_KEY, value: "$D/certs/alice.key"}
contexts:
- {name: certfiles, context: {cluster: good, user: certfiles}}
- {name: certdata, context: {cluster: gooddata, user: certdata}}
- {name: basic, context: {cluster: good, user: basic}}
- {name: bearer, context: {cluster: good, user: bearer}}
- {name: execcert, context: {cluster: good, user: execcert}}
- {name: wrongca, context: {cluster: wrongca, user: bearer}}
- {name: insecure, context: {cluster: insecure, user: bearer}}
- {name: cainsecure, context: {cluster: cainsecure, user: bearer}}
- {name: proxied, context: {cluster: proxied, user: bearer}}
- {name: userinfo, context: {cluster: userinfo, user: anon}}
- {name: badscheme, context: {cluster: badscheme, user: anon}}
- {name: badurl, context: {cluster: badurl, user: anon}}
YAML
mkdir -p "$D/tmp" "$D/home"
who() { (cd / && env TMPDIR="$D/tmp" HOME="$D/home" "$CZCTL" run "$ROOT/tests/kube/fixtures/whoami.lua" "$D/kubeconfig" "$@" 2>>"$D/stderr"); }
field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get(sys.argv[2]))' "$1" "$2" 2>/dev/null || echo "?"; }

out=$(who certfiles); is "$(field "$out" cn)" alice "client-certificate/client-key files (relative paths) authenticate as alice"
out=$(who certdata); is "$(field "$out" cn)" alice "client-certificate-data/client-key-data authenticate as alice"
out=$(who execcert 5); is "$(field "$out" cn)" alice "an exec plugin's clientCertificateData/clientKeyData authenticate as alice"
is "$(wc -l < "$D/plugin.count" | tr -d ' ')" 1 "the exec plugin ran once for 5 requests"
out=$(who basic); is "$(field "$out" basic_user) $(field "$out" basic_ok)" "bob True" "username/password: basic auth"
out=$(who userinfo); is "$(field "$out" basic_user) $(field "$out" basic_ok)" "bob True" \
  "user:password in the server URL: basic auth (and never logged, see the last check)"
out=$(who badscheme); is "$out" 'error cluster "badscheme": unsupported scheme in server URL "ftp://bob:xxxxx@127.0.0.1:'"$port"'/x"' \
  "a server URL with another scheme is refused, its password not shown"
out=$(who badurl); is "$out" 'error cluster "badurl": invalid server URL "https://bob:xxxxx@127.0.0.1:port?"' \
  "an invalid server URL is refused, its password not shown"
out=$(who bearer); is "$(field "$out" bearer_ok) $(field "$out" cn)" "True None" "token: bearer auth, no client certificate"
out=$(who wrongca); like "$out" '^error GET https://127.0.0.1:[0-9]+/whoami: .*(certificate|SSL)' "a server certificate from another CA is refused"
out=$(who insecure); is "$(field "$out" bearer_ok)" True "insecure-skip-tls-verify accepts it"
out=$(who cainsecure)
like "$out" '^error cluster "cainsecure": specifying a root certificates file with the insecure flag is not allowed' \
  "a CA together with insecure-skip-tls-verify is refused"
like "$(kubectl --kubeconfig "$D/kubeconfig" --context cainsecure get --raw /whoami 2>&1)" \
  'specifying a root certificates file with the insecure flag is not allowed' "kubectl refuses it the same way"
out=$(who proxied 3); is "$(field "$out" bearer_ok)" True "proxy-url: the request goes through the proxy"
is "$(cat "$D/proxy.count" 2>/dev/null)" 1 "proxy-url: one CONNECT for 3 requests (connection reused)"
# HTTP/2 when offered: nginx (http2 on TLS) answering a fixed JSON body
h2port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > nginx.conf <<NGINX
daemon on;
pid $D/nginx.pid;
error_log $D/nginx.err;
events {}
http {
  access_log off;
  client_body_temp_path $D/ngx; proxy_temp_path $D/ngx; fastcgi_temp_path $D/ngx; uwsgi_temp_path $D/ngx; scgi_temp_path $D/ngx;
  server {
    listen 127.0.0.1:$h2port ssl http2;
    ssl_certificate $D/server.crt; ssl_certificate_key $D/server.key;
    location / { default_type application/json; return 200 '{"h2":true}'; }
  }
}
NGINX
cat >> kubeconfig <<YAML
- {name: h2, context: {cluster: h2, user: bearer}}
YAML
sed -i "s|^clusters:|clusters:\n- {name: h2, cluster: {server: \"https://127.0.0.1:$h2port\", certificate-authority: ca.crt}}|" kubeconfig
if nginx -c "$D/nginx.conf" -e "$D/nginx.err" 2>>"$D/nginx.err"; then
  for _ in $(seq 50); do [ -s "$D/nginx.pid" ] && break; sleep 0.05; done
  : > "$D/stderr.h2"
  out=$(cd / && "$CZCTL" run "$ROOT/tests/kube/fixtures/whoami.lua" "$D/kubeconfig" h2 3 2>"$D/stderr.h2")
  is "$out" '{"h2":true}' "requests to an HTTP/2 server succeed"
  is "$(grep -c 'HTTP/2' "$D/stderr.h2") $(grep -c 'new connection' "$D/stderr.h2")" "3 1" \
     "HTTP/2 is used when offered, over one connection"
else
  fail "nginx did not start: $(tail -1 "$D/nginx.err")"
fi

written=$(cd "$D" && find tmp home -mindepth 1)
is "$written" "" "nothing written to TMPDIR or HOME (keys stay in memory)"
check "no secret in verbose output" bash -c "! grep -qE 's3cret|tok3n|PRIVATE KEY' '$D/stderr'"
done_testing
