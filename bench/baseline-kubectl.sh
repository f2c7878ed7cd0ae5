#!/usr/bin/env bash
# The baseline for bench/intercept.sh: the same setup and cleanup steps as
# `czctl service intercept SERVICE --tunnel direct` and `czctl session close`,
# done with kubectl the way a careful script would.
#
#   bench/baseline-kubectl.sh setup   SERVICE LOCAL_PORT ID   (KUBECONFIG, NAMESPACE)
#   bench/baseline-kubectl.sh cleanup SERVICE ID
#
# setup: read the Service, create the copy Service (original selector and
# ports), a ConfigMap with the NGINX config (header routing to
# http://127.0.0.1:LOCAL_PORT, everything else to the copy), the proxy
# Deployment (restricted PSS), `kubectl rollout status`, then one merge patch
# of the Service guarded by its resourceVersion with the original saved in an
# annotation. cleanup: restore the Service from the annotation, delete the
# Deployment (foreground, waiting), the ConfigMap and the copy Service.
# Single-port Services only (what the benchmark uses).
set -euo pipefail
NS=${NAMESPACE:-default}
IMAGE=${IMAGE:-nginxinc/nginx-unprivileged:1.27.4}
cmd=${1:?setup or cleanup}
# field JSON EXPR: a value of a JSON document (compact JSON, or the plain string)
field() {
  printf '%s' "$1" | python3 -c 'import json,sys
o = json.load(sys.stdin); v = eval(sys.argv[1])
print(v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))' "$2"
}
svc=${2:?SERVICE}

setup() {
  local port=$1 id=$2 name="bl-$2"
  local json selector ports rv svc_port
  json=$(kubectl get service "$svc" -n "$NS" -o json)
  selector=$(field "$json" 'o["spec"]["selector"]')
  ports=$(field "$json" 'o["spec"]["ports"]')
  rv=$(field "$json" 'o["metadata"]["resourceVersion"]')
  svc_port=$(field "$json" 'o["spec"]["ports"][0]["port"]')

  local copy_ip
  copy_ip=$(kubectl create -n "$NS" -o jsonpath='{.spec.clusterIP}' -f - <<EOT
{"apiVersion":"v1","kind":"Service","metadata":{"name":"$name-original","labels":{"app.kubernetes.io/managed-by":"baseline","czctl.io/session":"$id"}},
 "spec":{"selector":$selector,"ports":$ports}}
EOT
)
  kubectl create configmap "$name" -n "$NS" --from-file=nginx.conf=/dev/stdin >/dev/null <<EOT
pid /tmp/nginx.pid;
error_log stderr notice;
events { worker_connections 1024; }
http {
  client_body_temp_path /tmp/client_temp; proxy_temp_path /tmp/proxy_temp;
  fastcgi_temp_path /tmp/fastcgi_temp; uwsgi_temp_path /tmp/uwsgi_temp; scgi_temp_path /tmp/scgi_temp;
  map \$http_upgrade \$conn { default upgrade; "" ""; }
  map \$http_x_c6o_intercept \$target { default http://original; "~^yes\$" http://laptop; }
  upstream original { server $copy_ip:$svc_port; keepalive 64; }
  upstream laptop { server 127.0.0.1:$port; keepalive 64; }
  server {
    listen 8080;
    location / {
      proxy_http_version 1.1;
      proxy_set_header Host \$http_host;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$conn;
      proxy_pass \$target;
    }
  }
  server { listen 8079; location = /healthz { return 200 "ok\n"; } }
}
EOT
  kubectl create -n "$NS" -f - >/dev/null <<EOT
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"$name","labels":{"czctl.io/session":"$id"}},
 "spec":{"replicas":1,"selector":{"matchLabels":{"czctl.io/proxy":"$id"}},
  "template":{"metadata":{"labels":{"czctl.io/proxy":"$id"}},
   "spec":{"automountServiceAccountToken":false,"terminationGracePeriodSeconds":5,
    "securityContext":{"runAsNonRoot":true,"runAsUser":101,"seccompProfile":{"type":"RuntimeDefault"}},
    "containers":[{"name":"proxy","image":"$IMAGE",
      "command":["nginx","-e","/dev/stderr","-c","/etc/czctl/nginx.conf","-g","daemon off;"],
      "ports":[{"containerPort":8080},{"containerPort":8079}],
      "readinessProbe":{"httpGet":{"path":"/healthz","port":8079},"periodSeconds":1},
      "securityContext":{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"capabilities":{"drop":["ALL"]}},
      "volumeMounts":[{"name":"config","mountPath":"/etc/czctl"},{"name":"tmp","mountPath":"/tmp"}]}],
    "volumes":[{"name":"config","configMap":{"name":"$name"}},{"name":"tmp","emptyDir":{}}]}}}}
EOT
  kubectl rollout status "deployment/$name" -n "$NS" --timeout=120s >/dev/null
  local patch
  patch=$(printf '%s' "$json" | python3 -c 'import json,sys
o = json.load(sys.stdin)
sel = {k: None for k in o["spec"]["selector"]}
sel["czctl.io/proxy"] = sys.argv[1]
ports = [dict(p, targetPort=8080) for p in o["spec"]["ports"]]
saved = json.dumps({"selector": o["spec"]["selector"], "ports": o["spec"]["ports"]})
print(json.dumps({"metadata": {"resourceVersion": o["metadata"]["resourceVersion"],
                               "annotations": {"baseline/intercept": saved}},
                  "spec": {"selector": sel, "ports": ports}}))' "$id")
  kubectl patch service "$svc" -n "$NS" --type merge -p "$patch" >/dev/null
}
cleanup() {
  local id=$1 name="bl-$1"
  local json original rv current nulls
  json=$(kubectl get service "$svc" -n "$NS" -o json)
  local patch
  patch=$(printf '%s' "$json" | python3 -c 'import json,sys
o = json.load(sys.stdin)
saved = (o["metadata"].get("annotations") or {}).get("baseline/intercept")
if saved:
    orig = json.loads(saved)
    sel = {k: None for k in o["spec"]["selector"]}
    sel.update(orig["selector"])
    print(json.dumps({"metadata": {"resourceVersion": o["metadata"]["resourceVersion"],
                                   "annotations": {"baseline/intercept": None}},
                      "spec": {"selector": sel, "ports": orig["ports"]}}))')
  if [ -n "$patch" ]; then
    kubectl patch service "$svc" -n "$NS" --type merge -p "$patch" >/dev/null
  fi
  kubectl delete deployment "$name" -n "$NS" --cascade=foreground --wait=true --ignore-not-found >/dev/null
  kubectl delete configmap "$name" -n "$NS" --ignore-not-found >/dev/null
  kubectl delete service "$name-original" -n "$NS" --ignore-not-found >/dev/null
}

case "$cmd" in
  setup) setup "${3:?LOCAL_PORT}" "${4:?ID}" ;;
  cleanup) cleanup "${3:?ID}" ;;
  *) echo "usage: $0 setup SERVICE LOCAL_PORT ID | cleanup SERVICE ID" >&2; exit 2 ;;
esac
