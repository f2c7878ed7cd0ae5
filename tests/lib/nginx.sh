# Running a configuration czctl rendered on this machine's nginx, for the
# proxy tests (sourced by tests/proxy/test_routing.sh and test_protocols.sh;
# needs NGINX, PIDS from tests/lib/procs.sh, and tap.sh).
# shellcheck shell=bash

# Debian's nginx has the stream module as a dynamic module (libnginx-mod-stream);
# the official images have it built in.
NGINX_G=""
if "$NGINX" -V 2>&1 | grep -q -- '--with-stream=dynamic'; then
  NGINX_G="load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
fi

# start_rendered DIR ADDR TEST_NAME: nginx -t on DIR/nginx.conf (TEST_NAME is
# its TAP line), then start it (access log DIR/access.log, errors
# DIR/error.log) and wait for its health port ADDR:8079
start_rendered() {
  local dir=$1 addr=$2
  if "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/test.err" ${NGINX_G:+-g "$NGINX_G"} 2>>"$dir/test.err"; then
    ok "$3"
  else
    fail "$3"; sed 's/^/#   /' "$dir/test.err"; return 1
  fi
  "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e stderr -g "daemon off; $NGINX_G" >"$dir/access.log" 2>"$dir/error.log" &
  PIDS+=($!)
  wait_port "$addr" 8079 || { fail "the proxy in $dir starts"; sed 's/^/#   /' "$dir/error.log"; return 1; }
}
