# The NGINX configurations the proxy benchmarks compare, written into
# directories under $T (sourced by bench/proxy.sh and bench/proxy-cost.sh;
# needs T, ROOT and CZCTL set). Each function writes DIR/nginx.conf and
# starts nothing.
# shellcheck shell=bash

# conf_head DIR WORKERS KEEPALIVE_REQUESTS: the top of every hand-written
# config, up to the inside of http {} (no access log, temp files in DIR)
conf_head() {
  cat <<CONF
worker_processes $2;
pid $1/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests $3;
    client_body_temp_path $1/client_temp;
    proxy_temp_path $1/proxy_temp;
    fastcgi_temp_path $1/fastcgi_temp;
    uwsgi_temp_path $1/uwsgi_temp;
    scgi_temp_path $1/scgi_temp;
CONF
}

# write_app DIR NAME ADDR PORT: an app, nginx answering "hello from NAME\n"
# with one worker (it must not be the bottleneck of a proxy benchmark)
write_app() {
  mkdir -p "$1"
  { conf_head "$1" 1 1000000; cat <<CONF
    server {
        listen $3:$4;
        location / { default_type text/plain; return 200 "hello from $2\n"; }
    }
}
CONF
  } >"$1/nginx.conf"
}

# czctl_spec DIR LISTEN_ADDR FLAGS_JSON PORT_JSON TUNNEL_URL [EXTRA_JSON]: render
# the proxy as czctl does (lua/czctl/proxy/nginx.lua) for one intercepted port
# on LISTEN_ADDR:8080 (health on :8079)
czctl_spec() {
  mkdir -p "$1"
  cat >"$1/spec.json" <<SPEC
{ "flags": $3, "session": "bench", "runtime_dir": "$1", "route_dir": "$1", "listen_address": "$2", "health_port": 8079,
  "ports": [ $4 ], "tunnel_upstream": {"url": "$5"} ${6:-} }
SPEC
  "$CZCTL" run "$ROOT/tests/proxy/render.lua" "$1/spec.json" >"$1/nginx.conf"
}

# write_czctl DIR LISTEN_ADDR ORIGINAL TUNNEL_URL [EXTRA_JSON]: the HTTP/1.1
# proxy, default rule (X-C6O-INTERCEPT: yes)
write_czctl() {
  czctl_spec "$1" "$2" '{}' '{"name": "http", "port": 80, "listen": 8080, "original": "'"$3"'", "intercept": true}' "$4" "${5:-}"
}

# write_minimal DIR LISTEN_ADDR:PORT ORIGINAL WORKERS: a minimal hand-written
# keep-alive reverse proxy with no routing, no headers of its own, no log
write_minimal() {
  mkdir -p "$1"
  { conf_head "$1" "$4" 10000; cat <<CONF
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
  } >"$1/nginx.conf"
}

# write_grpc_backend DIR NAME ADDR:PORT: a gRPC server's answers from NGINX,
# one worker, HTTP/2 with prior knowledge: it reads the call's message, then
# answers 200 application/grpc, a DATA frame (NAME) and trailers grpc-status 0
# (answering before reading makes NGINX reset the stream's late DATA, which a
# grpc_pass proxy reports as "upstream sent frame for unknown stream")
write_grpc_backend() {
  mkdir -p "$1"
  { conf_head "$1" 1 1000000; cat <<CONF
    server {
        listen $3 http2;
        location / {
            mirror /read;
            mirror_request_body on;
            default_type application/grpc;
            add_trailer grpc-status 0;
            return 200 "$2";
        }
        location = /read { internal; return 204; }
    }
}
CONF
  } >"$1/nginx.conf"
}

# write_czctl_grpc DIR LISTEN_ADDR ORIGINAL TUNNEL_URL: the proxy for an h2c
# port (gRPC), rule x-tenant: acme (gRPC metadata)
write_czctl_grpc() {
  czctl_spec "$1" "$2" '{"header": "x-tenant:acme"}' \
    '{"name": "grpc", "port": 50051, "listen": 8080, "original": "'"$3"'", "intercept": true, "mode": "h2c"}' "$4"
}

# write_grpc_minimal DIR LISTEN_ADDR:PORT BACKEND WORKERS: a minimal
# hand-written gRPC proxy: an HTTP/2 listener, grpc_pass to a keep-alive upstream
write_grpc_minimal() {
  mkdir -p "$1"
  { conf_head "$1" "$4" 10000; cat <<CONF
    upstream backend { server $3; keepalive 64; }
    server {
        listen $2 http2;
        location / { grpc_pass grpc://backend; }
    }
}
CONF
  } >"$1/nginx.conf"
}

# workers_of CONF: the worker_processes value of an nginx.conf
workers_of() {
  awk '$1 == "worker_processes" { sub(/;$/, "", $2); print $2; exit }' "$1"
}
