#!/usr/bin/env bash
# kubeconfig resolution agrees with kubectl: every case in cases/ is resolved
# by `czctl config view -o json` and `kubectl config view --minify --raw -o
# json`; context, cluster, user, namespace, server, auth method, TLS settings
# and resolved file paths must match, or both tools must fail.
#
# A case is a directory with the kubeconfig files and a `case` file (bash):
#   ARGS=(...)   extra flags for both tools (--kubeconfig, --context)
#   KCENV=...    KUBECONFIG value (unset when absent)
#   HOMEDIR=...  HOME relative to the case (default: an empty directory)
#   PATHBASE=... directory (relative to the case) of the file that defines
#                the cluster/user, to resolve kubectl's raw relative paths
#   WANT_ERROR=... both tools must fail with an error matching this ERE
#   SECRET=...   a string of the kubeconfig czctl must never print
#
# Where kubectl itself reveals resolved paths (using a config whose
# certificate files are missing makes it print "unable to read client-cert
# /abs/path ..."), those are compared with czctl's paths too.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
source tests/lib/tap.sh
CZCTL=${CZCTL:-$ROOT/czctl}
CANON="$ROOT/tests/kubeconfig/canon.py"
EMPTY_HOME=$(mktemp -d)
trap 'rm -rf "$EMPTY_HOME"' EXIT
unset KUBERNETES_SERVICE_HOST KUBERNETES_SERVICE_PORT

for dir in tests/kubeconfig/cases/*/; do
  name=$(basename "$dir")
  ARGS=() KCENV="" HOMEDIR="" PATHBASE="" WANT_ERROR="" SECRET=""
  unset KCENV_SET
  # shellcheck disable=SC1091
  source "$dir/case"
  grep -q '^KCENV=' "$dir/case" && KCENV_SET=1
  home=$EMPTY_HOME
  [ -n "$HOMEDIR" ] && home="$ROOT/$dir$HOMEDIR"
  run() { # tool args... ; runs in the case directory with the case's env
    ( cd "$dir" || exit 1
      export HOME="$home"
      if [ -n "${KCENV_SET:-}" ]; then export KUBECONFIG="$KCENV"; else unset KUBECONFIG; fi
      "$@" )
  }
  k_out=$(run kubectl config view --minify --raw -o json "${ARGS[@]}" 2>&1); k_rc=$?
  c_out=$(run "$CZCTL" config view -o json "${ARGS[@]}" 2>&1); c_rc=$?
  if [ -n "$SECRET" ] || [ -n "$WANT_ERROR" ]; then
    c_txt=$(run "$CZCTL" config view "${ARGS[@]}" 2>&1)   # the error as text (-o json wraps it in a Status)
  fi
  if [ -n "$SECRET" ]; then
    check "$name: czctl never prints the kubeconfig's secret" bash -c '! grep -qF -- "$1" <<<"$2"' _ "$SECRET" "$c_out$c_txt"
  fi
  if [ -n "$WANT_ERROR" ]; then
    like "$k_out" "$WANT_ERROR" "$name: kubectl fails with the expected error"
    like "$c_txt" "$WANT_ERROR" "$name: czctl fails with the same error"
  fi
  if [ $k_rc -ne 0 ] || [ $c_rc -ne 0 ]; then
    if [ $k_rc -ne 0 ] && [ $c_rc -ne 0 ]; then
      lines=$(printf '%s\n' "$c_out" | wc -l)
      if [ "$lines" -eq 1 ] && [ $c_rc -eq 1 ]; then
        ok "$name: both fail (czctl: $c_out)"
      else
        fail "$name: both fail, but czctl's error is not one line with exit 1 (rc $c_rc)"
        printf '#   %s\n' "$c_out"
      fi
    else
      fail "$name: kubectl rc=$k_rc czctl rc=$c_rc"
      printf '#   kubectl: %s\n#   czctl: %s\n' "$(echo "$k_out" | head -3)" "$(echo "$c_out" | head -3)"
    fi
    continue
  fi
  want=$(printf '%s' "$k_out" | python3 "$CANON" kubectl "$ROOT/$dir$PATHBASE") || { fail "$name: cannot read kubectl output"; continue; }
  keys=$(printf '%s\n' "$want" | cut -d= -f1)
  got=$(printf '%s' "$c_out" | python3 "$CANON" czctl | grep -E "^($(echo $keys | tr ' ' '|'))=") ||
    { fail "$name: cannot read czctl output"; continue; }
  if [ "$got" = "$want" ]; then
    ok "$name: $(printf '%s\n' "$want" | grep -E '^(context|server|auth)=' | tr '\n' ' ')"
  else
    fail "$name: czctl and kubectl disagree"
    diff <(printf '%s\n' "$want") <(printf '%s\n' "$got") | sed 's/^/#   /'
  fi
  # kubectl's own resolution, when it shows it: missing certificate files
  k_use=$(run timeout 20 kubectl get --raw /version --request-timeout=2s "${ARGS[@]}" 2>&1)
  if printf '%s' "$k_use" | grep -q 'unable to read'; then
    shown=$(printf '%s\n' "$k_use" | sed -nE 's/.*unable to read (client-cert|client-key|certificate-authority) (\/[^ ]+) for .*/\1=\2/p' |
            sed -e 's/^client-cert=/client_certificate=/' -e 's/^client-key=/client_key=/' \
                -e 's/^certificate-authority=/certificate_authority=/' | sort -u)
    mine=$(printf '%s' "$c_out" | python3 "$CANON" czctl | grep -E "^($(printf '%s\n' "$shown" | cut -d= -f1 | paste -sd'|'))=" | sort -u)
    is "$mine" "$shown" "$name: resolved paths equal the ones kubectl reads"
  fi
done

# A password in a URL (proxy-url) is never shown, in text or JSON.
shown=$(cd tests/kubeconfig/cases/21-proxy-password && "$CZCTL" config view --kubeconfig config 2>&1
        "$CZCTL" config view --kubeconfig config -o json 2>&1)
like "$shown" 'proxy_url: +http://alice:xxxxx@127\.0\.0\.1:3128' "config view shows a proxy URL with its password redacted"
check "the proxy password appears nowhere in config view" bash -c '! grep -qF proxy-s3cr3t <<<"$1"' _ "$shown"

# Nesting: kubectl refuses a document nested deeper than its limit at once
# ("yaml: exceeded max depth of 10000"); czctl refuses beyond 1000 levels (a
# real kubeconfig has fewer than 10), so that its parse stays linear. A
# 200 KB "[[[..." file took czctl 36 s before (quadratic, deaf to signals).
T=$(mktemp -d)
trap 'rm -rf "$EMPTY_HOME" "$T"' EXIT
python3 -c 'import sys; n=100000; sys.stdout.write("clusters: " + "["*n + "]"*n + "\n")' > "$T/deep"
k_out=$(kubectl config view --kubeconfig "$T/deep" 2>&1)
like "$k_out" 'exceeded max depth of 10000' "a 200 KB nested kubeconfig: kubectl refuses it (max depth)"
c_out=$("$CZCTL" config view --kubeconfig "$T/deep" 2>&1); c_rc=$?
like "$c_out" '^czctl: error: error loading config file ".*": line 1: yaml: exceeded max depth of 1000$' \
  "a 200 KB nested kubeconfig: czctl refuses it the same way"
is "$c_rc" 1 "... with exit status 1"
python3 -c 'import sys; d=990; sys.stdout.write("clusters:\n- name: ok\n  cluster: {server: \"https://x:1\", extensions: [{name: e, extension: " + "["*d + "]"*d + "}]}\n")' > "$T/deep-ok"
c_out=$("$CZCTL" config view --kubeconfig "$T/deep-ok" 2>&1)
like "$c_out" 'current-context is not set' "nesting up to the limit is read (the file is then used as usual)"

# Signals during a parse: the largest document the limits allow (one million
# nodes, each 999 levels deep) takes seconds to parse; SIGINT once czctl has
# read the file ends it at once, exit 130, as for any other blocking call.
python3 -c 'import sys; sys.stdout.write("clusters:\n" + ("- " + "["*998 + "]"*998 + "\n")*8000)' > "$T/slow"
size=$(stat -c %s "$T/slow")
"$CZCTL" config view --kubeconfig "$T/slow" >"$T/slow.out" 2>&1 & pid=$!
for _ in $(seq 2000); do   # until czctl has read the whole file (it parses next)
  r=$(awk '/^rchar/ {print $2}' "/proc/$pid/io" 2>/dev/null) || break
  [ "${r:-0}" -ge "$size" ] && break
  sleep 0.005
done
kill -INT "$pid" 2>/dev/null
for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$pid" 2>/dev/null; then
  fail "SIGINT during a kubeconfig parse ends czctl (still running 10 s later)"; kill -KILL "$pid"; wait "$pid"
else
  wait "$pid"; rc=$?
  is "$rc $(cat "$T/slow.out")" "130 czctl: interrupted (SIGINT)" "SIGINT during a kubeconfig parse ends czctl: exit 130"
fi

# The corpus must cover at least 15 cases.
n=$(ls -d tests/kubeconfig/cases/*/ | wc -l)
check "corpus has at least 15 cases ($n)" [ "$n" -ge 15 ]
done_testing
