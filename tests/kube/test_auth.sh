#!/usr/bin/env bash
# Client authentication and TLS settings against a small HTTPS server
# (fixtures/auth_server.py) that reports who it saw: client certificates from
# files and from -data (held in memory only), exec plugins answering a client
# certificate, basic auth, bearer tokens, proxy-url (HTTP CONNECT), CA
# verification, insecure-skip-tls-verify, and HTTP/2 when the server offers
# it (nginx with http2). Refused as kubectl refuses them, with nothing sent:
# credentials holding control characters (a CR LF in a token would inject
# request headers) and server certificates without subjectAltName.
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
# the same CA, a Common Name that matches, but no subjectAltName
ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server-nosan.key -out nosan.csr -subj /CN=127.0.0.1
ossl x509 -req -in nosan.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server-nosan.crt -days 2
mkdir -p certs
ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout certs/alice.key -out alice.csr -subj /CN=alice
ossl x509 -req -in alice.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out certs/alice.crt -days 2
python3 "$ROOT/tests/kube/fixtures/auth_server.py" "$D" 2>"$D/server.log" &
srv_pid=$!
for _ in $(seq 100); do [ -f "$D/ports" ] && break; sleep 0.05; done
read -r port pport nport < "$D/ports" || { echo "Bail out! server did not start"; exit 1; }
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
- {name: nosan, cluster: {server: "https://127.0.0.1:$nport", certificate-authority: ca.crt}}
- {name: nosan-sni, cluster: {server: "https://127.0.0.1:$nport", certificate-authority: ca.crt, tls-server-name: localhost}}
- {name: nosan-insecure, cluster: {server: "https://127.0.0.1:$nport", insecure-skip-tls-verify: true}}
- {name: crlf-userinfo, cluster: {server: "https://bob:s3cret%0D%0AX-Injected:%20yes@127.0.0.1:$port", certificate-authority: ca.crt}}
users:
- {name: anon, user: {}}
- {name: certfiles, user: {client-certificate: certs/alice.crt, client-key: ./certs/alice.key}}
- {name: certdata, user: {client-certificate-data: $(b64 certs/alice.crt), client-key-data: $(b64 certs/alice.key)}}
- {name: basic, user: {username: bob, password: s3cret}}
- {name: bearer, user: {token: tok3n}}
- {name: crlf-token, user: {token: "tok3n\r\nX-Injected: yes"}}
- {name: lf-token, user: {token: "tok3n\nX-Injected: yes"}}
- {name: tab-token, user: {token: "tok3n\tx"}}
- {name: crlf-tokenfile, user: {tokenFile: crlf.token}}
- {name: spaced-tokenfile, user: {tokenFile: spaced.token}}
- {name: crlf-basic, user: {username: bob, password: "s3cret\r\nX-Injected: yes"}}
- name: crlf-exec
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: ./crlf-plugin, interactiveMode: Never}
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
- {name: nosan, context: {cluster: nosan, user: bearer}}
- {name: nosan-sni, context: {cluster: nosan-sni, user: bearer}}
- {name: nosan-insecure, context: {cluster: nosan-insecure, user: bearer}}
- {name: crlf-token, context: {cluster: good, user: crlf-token}}
- {name: lf-token, context: {cluster: good, user: lf-token}}
- {name: tab-token, context: {cluster: good, user: tab-token}}
- {name: crlf-tokenfile, context: {cluster: good, user: crlf-tokenfile}}
- {name: spaced-tokenfile, context: {cluster: good, user: spaced-tokenfile}}
- {name: crlf-basic, context: {cluster: good, user: crlf-basic}}
- {name: crlf-exec, context: {cluster: good, user: crlf-exec}}
- {name: crlf-userinfo, context: {cluster: crlf-userinfo, user: anon}}
YAML
printf 'tok3n\r\nX-Injected: yes\n' > crlf.token
printf '  tok3n \n\n' > spaced.token
cat > crlf-plugin <<'PLUGIN'
#!/bin/sh
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"tok3n\\r\\nX-Injected: yes"}}\n'
PLUGIN
chmod +x crlf-plugin
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
# Control characters in a credential: Go refuses to send such a header
# ("net/http: invalid header field value for \"Authorization\""), so kubectl
# does; czctl says the same, names the credential (never its value), and
# sends nothing. A tab is a valid header character: sent by both.
requests() { wc -l < "$D/requests.log" 2>/dev/null || echo 0; }
kget() { (cd "$D" && kubectl --kubeconfig "$D/kubeconfig" --context "$1" get --raw /whoami 2>&1); }
for ctx in crlf-token lf-token crlf-tokenfile crlf-exec; do
  before=$(requests)
  out=$(who "$ctx")
  like "$out" '^error invalid header field value for "Authorization": the token (in the kubeconfig|in the tokenFile|from the exec plugin) of user "'"$ctx"'" contains a control character' \
    "$ctx: czctl refuses the token"
  like "$(kget "$ctx")" 'net/http: invalid header field value for "Authorization"' "$ctx: kubectl refuses it too"
  is "$(requests)" "$before" "$ctx: no request reached the server"
done
check "no X-Injected header ever reached the server" bash -c "! grep -v ' -\$' '$D/requests.log'"
# basic auth and URL userinfo are base64-encoded into the header, so Go sends
# them; czctl refuses a control character in them all the same (a password
# with a CR or LF is a paste error, never a password)
out=$(who crlf-basic)
like "$out" '^error invalid header field value for "Authorization": the username or password of user "crlf-basic" contains a control character' \
  "a CR LF in a basic-auth password is refused"
out=$(who crlf-userinfo)
like "$out" '^error invalid header field value for "Authorization": the user:password in the server URL of cluster "crlf-userinfo" contains a control character' \
  "a CR LF in the server URL's user:password is refused"
check "neither error shows the password" bash -c "! grep -q s3cret <<<\"\$1\"" _ "$(who crlf-basic; who crlf-userinfo)"
out=$(who tab-token); is "$(field "$out" scheme) $(field "$out" bearer_ok)" "Bearer False" "a tab in a token is sent (a valid header character)"
like "$(kget tab-token)" '"scheme": "Bearer"' "kubectl sends it too"
out=$(who spaced-tokenfile); is "$(field "$out" bearer_ok)" True "a tokenFile is trimmed of surrounding whitespace, as client-go trims it"
like "$(kget spaced-tokenfile)" '"bearer_ok": true' "kubectl reads the same token from it"
: > "$D/empty.token"
sed -i 's|tokenFile: spaced.token|tokenFile: empty.token|' "$D/kubeconfig"
like "$(who spaced-tokenfile)" "^error read empty token from file \"$D/empty.token\"" "an empty tokenFile is an error, as in client-go"
check "kubectl does not authenticate with it either" bash -c '! grep -q "\"bearer_ok\": true" <<<"$1"' _ "$(kget spaced-tokenfile)"
sed -i 's|tokenFile: empty.token|tokenFile: spaced.token|' "$D/kubeconfig"

# A server certificate without subjectAltName: Go (kubectl) no longer falls
# back to the Common Name, so czctl refuses it too, in the handshake: the
# server sees no request (and no credential).
before=$(grep -c '^nosan ' "$D/requests.log")
out=$(who nosan)
like "$out" '^error GET https://127.0.0.1:[0-9]+/whoami: x509: certificate relies on legacy Common Name field, use SANs instead$' \
  "a certificate without subjectAltName (its Common Name matching) is refused"
like "$(kget nosan)" 'x509: certificate relies on legacy Common Name field, use SANs instead' "kubectl refuses it the same way"
out=$(who nosan-sni)
like "$out" 'x509: certificate is not valid for any names, but wanted to match localhost$' \
  "with tls-server-name: refused, naming the name wanted"
like "$(kget nosan-sni)" 'x509: certificate is not valid for any names, but wanted to match localhost' "kubectl says the same"
is "$(grep -c '^nosan ' "$D/requests.log")" "$before" "the server without subjectAltName never received a request"
out=$(who nosan-insecure); is "$(field "$out" bearer_ok)" True "insecure-skip-tls-verify still accepts it"

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
