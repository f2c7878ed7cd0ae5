# Developers on one Service, for the shared-clusters tests (test_shared.sh,
# test_shared_holder.sh, test_shared_orders*.sh): source after common.sh,
# then call devs_cluster.

# devs_cluster: a sandbox with the demo app, its snapshot ($WORK/before.json),
# the demo Service's state (svc_before) and ClusterIP (IP), and a local
# server per developer (LPORT: developer -> local port).
devs_cluster() {
  sandbox_up
  deploy "$E2E_ROOT/examples/demo-app.yaml" demo || { fail "demo app deploys"; exit 1; }
  snapshot "$WORK/before.json"
  svc_before=$(service_state demo)
  IP=$(cluster_ip demo)
  declare -gA LPORT
  local d
  for d in alice bob carol dave; do LPORT[$d]=$(local_server "$d"); done
}

# Conditions for wait_for_cmd (evaluated at each try).
no_files() { [ -z "$(ls -A "$1" 2>/dev/null)" ]; }
service_restored() { [ "$(service_state demo)" = "$svc_before" ]; }
nothing_left() { [ -z "$(czctl_leftovers)" ]; }

# dev NAME ARGS...: czctl as developer NAME (own user and state directory).
dev() { local who=$1; shift; USER=$who XDG_STATE_HOME="$WORK/state-$who" "$CZCTL" "$@"; }
# join NAME [ARGS...]: NAME intercepts demo with their own rule:
#   alice -x X-Dev:alice, bob -x X-Dev:bob, carol the cookie team=carol (or
#   an X-Team: carol header; the Lua API's rule, examples/team-routing.lua),
#   dave --all.
join() {
  local who=$1; shift
  case $who in
    carol) dev carol run "$E2E_ROOT/examples/team-routing.lua" demo --team carol --path-prefix / \
             -l "${LPORT[carol]}" --tunnel direct -q "$@" ;;
    dave) dev dave service intercept demo -a -l "${LPORT[dave]}" --tunnel direct -q "$@" ;;
    *) dev "$who" service intercept demo -x "X-Dev:$who" -l "${LPORT[$who]}" --tunnel direct -q "$@" ;;
  esac
}
leave() { dev "$1" session close -q; }
# route HEADER: who answers a request with HEADER ("-" for none): the local
# server's name, or "pods" for the in-cluster version.
route() {
  local args=()
  [ "$1" != "-" ] && args=(-H "$1")
  local pod
  pod=$(in_cluster curl -s --max-time 10 "${args[@]}" "http://$IP/" | python3 -c 'import json,sys
try: print(json.load(sys.stdin)["pod"])
except Exception: print("(no answer)")')
  case $pod in demo-*) echo pods ;; *) echo "$pod" ;; esac
}
REQUESTS=("X-Dev: alice" "X-Dev: bob" "Cookie: team=carol" "X-Dev: dave" "-")
# routes: who answers each of REQUESTS, space-separated.
routes() { local r out=(); for r in "${REQUESTS[@]}"; do out+=("$(route "$r")"); done; echo "${out[*]}"; }
