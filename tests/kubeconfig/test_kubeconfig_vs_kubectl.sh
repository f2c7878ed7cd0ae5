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
  ARGS=() KCENV="" HOMEDIR="" PATHBASE=""
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

# The corpus must cover at least 15 cases.
n=$(ls -d tests/kubeconfig/cases/*/ | wc -l)
check "corpus has at least 15 cases ($n)" [ "$n" -ge 15 ]
done_testing
