# The NGINX configurations the proxy benchmarks compare, written into
# directories under $T (sourced by bench/proxy.sh and bench/proxy-cost.sh;
# needs T, ROOT and CZCTL set). Each function writes DIR/nginx.conf and
# starts nothing.
# shellcheck shell=bash

# write_app DIR NAME ADDR PORT: an app, nginx answering "hello from NAME\n"
# with one worker (it must not be the bottleneck of a proxy benchmark)
write_app() {
  mkdir -p "$1"
  cat >"$1/nginx.conf" <<CONF
worker_processes 1;
pid $1/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $1/client_temp;
    proxy_temp_path $1/proxy_temp;
    fastcgi_temp_path $1/fastcgi_temp;
    uwsgi_temp_path $1/uwsgi_temp;
    scgi_temp_path $1/scgi_temp;
    server {
        listen $3:$4;
        location / { default_type text/plain; return 200 "hello from $2\n"; }
    }
}
CONF
}

# write_czctl DIR LISTEN_ADDR ORIGINAL TUNNEL_URL [EXTRA_JSON]: the proxy as
# czctl renders it (lua/czctl/proxy/nginx.lua), default rule, one intercepted port
# on LISTEN_ADDR:8080, health on :8079
write_czctl() {
  mkdir -p "$1"
  cat >"$1/spec.json" <<SPEC
{ "flags": {}, "session": "bench", "runtime_dir": "$1", "route_dir": "$1", "listen_address": "$2", "health_port": 8079,
  "ports": [ {"name": "http", "port": 80, "listen": 8080, "original": "$3", "intercept": true} ],
  "tunnel_upstream": {"url": "$4"} ${5:-} }
SPEC
  "$CZCTL" run "$ROOT/tests/proxy/render.lua" "$1/spec.json" >"$1/nginx.conf"
}

# write_minimal DIR LISTEN_ADDR:PORT ORIGINAL WORKERS: a minimal hand-written
# keep-alive reverse proxy with no routing, no headers of its own, no log
write_minimal() {
  mkdir -p "$1"
  cat >"$1/nginx.conf" <<CONF
worker_processes $4;
pid $1/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000;
    client_body_temp_path $1/client_temp;
    proxy_temp_path $1/proxy_temp;
    fastcgi_temp_path $1/fastcgi_temp;
    uwsgi_temp_path $1/uwsgi_temp;
    scgi_temp_path $1/scgi_temp;
    upstream app { server $3; keepalive 64; }
    server {
        listen $2;
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }
    }
}
CONF
}

# workers_of CONF: the worker_processes value of an nginx.conf
workers_of() {
  awk '$1 == "worker_processes" { sub(/;$/, "", $2); print $2; exit }' "$1"
}
