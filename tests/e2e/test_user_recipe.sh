#!/usr/bin/env bash
# A user customises the intercept the way the README says (issue 13,
# acceptance 2 and 3): the README's own lines, run as they are, write a short
# recipe that passes hooks to the built-in; `czctl service intercept` then
# creates the proxy Deployment with the label and toleration, routes the
# extra cookie as well as the header, and cleans up as usual. Also: `recipe
# copy`, and empty or broken user recipes reported naming the file.
set -u
source "$(dirname "$0")/lib/common.sh"

export HOME="$WORK/home"
unset XDG_CONFIG_HOME CZCTL_RECIPE_PATH
mkdir -p "$HOME"
RECIPES="$HOME/.config/czctl/recipes"

demo_cluster

# --- the README's lines, literally --------------------------------------------
sed -n '/^<!-- user-recipe:/,/^<!-- end user-recipe -->/p' "$E2E_ROOT/README.md" \
  | sed -n '/^```bash$/,/^```$/p' | sed '1d;$d' >"$WORK/readme-lines.sh"
like "$(wc -l <"$WORK/readme-lines.sh")" '^[0-9]+$' "the README has the user-recipe lines"
( cd "$WORK" && PATH="$E2E_ROOT:$PATH" bash -e "$WORK/readme-lines.sh" ) >"$WORK/readme.out" 2>&1
is "$?" 0 "the README's lines run"
recipe_lines=$(wc -l <"$RECIPES/service-intercept.lua")
check "the user recipe is under 30 lines ($recipe_lines)" test "$recipe_lines" -lt 30
like "$("$CZCTL" recipe list)" "service-intercept +$RECIPES/service-intercept.lua \\(overrides built-in\\)" \
  "recipe list shows the user recipe overriding the built-in"

# --- czctl service intercept uses it --------------------------------------------
json=$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct -o json 2>"$WORK/err"); rc=$?
is "$rc" 0 "service intercept with the user recipe exits 0"
[ "$rc" -eq 0 ] || sed 's/^/# /' "$WORK/err"
id=$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null)
pod_spec=$(kubectl get deployment czctl-proxy-demo -o json | python3 -c 'import json,sys
t = json.load(sys.stdin)["spec"]["template"]
print(t["metadata"]["labels"].get("team"), json.dumps(t["spec"].get("tolerations"), sort_keys=True))')
is "$pod_spec" 'blue [{"effect": "NoSchedule", "key": "dedicated", "operator": "Equal", "value": "blue"}]' \
  "the proxy Deployment carries the hook's label and toleration"
is "$(kubectl get pods -l czctl.io/proxy=demo -o jsonpath='{.items[0].metadata.labels.team}')" blue \
  "the proxy pod carries the label"
IP=$(cluster_ip demo)
is "$(who "http://$IP/" -H 'Cookie: team=blue')" laptop "the hook's extra rule (cookie team=blue) reaches this machine"
is "$(who "http://$IP/" -H 'X-C6O-INTERCEPT: yes')" laptop "the header still reaches this machine"
like "$(who "http://$IP/")" '^demo-' "a request with neither reaches the cluster"
like "$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rule"])')" \
  'X-C6O-INTERCEPT: yes.* or .*cookie team=blue' "the session's rule is the hook's"
# shell completion asks the cluster for Service and session names
"$CZCTL" completion bash >"$WORK/czctl.bash"
complete_words() {
  bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _czctl
    printf "%s\n" "${COMPREPLY[@]}" | sort | paste -sd" " -' _ "$WORK/czctl.bash" "$@"
}
like "$(complete_words czctl service intercept de)" '^demo$' "bash completes SERVICE with the cluster's Service names"
is "$(complete_words czctl session close "")" "$id" "bash completes SESSION with the cluster's session ids"
kubectl create namespace other >/dev/null && kubectl create service clusterip other-svc --tcp=80 -n other >/dev/null
is "$(complete_words czctl service intercept -n other "")" "other-svc" "-n on the command line picks the namespace"
kubectl delete namespace other --wait=true >/dev/null
"$CZCTL" session close -q; is "$?" 0 "session close closes it"
snapshot "$WORK/after.json"
same_snapshot "$WORK/before.json" "$WORK/after.json" "the cluster equals the snapshot from before"

# --- recipe copy ----------------------------------------------------------------
out=$("$CZCTL" recipe copy service-intercept 2>&1); rc=$?
is "$rc" 1 "recipe copy refuses to overwrite an existing file"
like "$out" "$RECIPES/service-intercept.lua exists; overwrite it with --force" "it names the file and --force"
rm -rf "$HOME/.config"
out=$("$CZCTL" recipe copy service intercept 2>&1); rc=$?
is "$rc" 0 "recipe copy creates the directory and copies"
cmp -s "$RECIPES/service-intercept.lua" "$E2E_ROOT/recipes/service-intercept.lua"
is "$?" 0 "the copy is the built-in's exact source"
is "$(stat -c %a "$RECIPES")" 700 "the recipe directory is created 0700"
echo '-- mine' >"$RECIPES/service-intercept.lua"
"$CZCTL" recipe copy service-intercept --force >/dev/null; is "$?" 0 "--force overwrites"
cmp -s "$RECIPES/service-intercept.lua" "$E2E_ROOT/recipes/service-intercept.lua"
is "$?" 0 "--force restores the built-in's source"
out=$("$CZCTL" recipe copy nosuch 2>&1); is "$?" 2 "recipe copy of an unknown recipe is a usage error"

# --- empty and broken user recipes name their file --------------------------------
: >"$RECIPES/service-intercept.lua"
out=$("$CZCTL" service intercept demo -l "$PORT" --tunnel direct 2>&1); rc=$?
is "$rc" 1 "an empty user recipe fails"
is "$out" "czctl: error: $RECIPES/service-intercept.lua is empty: a recipe file returns a table with a run function; remove it to use the built-in, or start again with: czctl recipe copy service-intercept --force" \
  "an empty user recipe is reported in one line naming the file and the fix"
printf 'return {\n  run = function(ctx)\n' >"$RECIPES/service-intercept.lua"
out=$("$CZCTL" service intercept demo 2>&1); rc=$?
is "$rc" 1 "a broken user recipe fails"
like "$out" "^czctl: syntax error in recipe service-intercept \\($RECIPES/service-intercept.lua:3\\)" \
  "a broken user recipe is reported naming the file and line"
printf 'return 42\n' >"$RECIPES/service-intercept.lua"
like "$("$CZCTL" service intercept demo 2>&1)" "recipe service-intercept must return a table with a run function \\(got number\\)" \
  "a user recipe of the wrong shape says what it must return"
rm -f "$RECIPES/service-intercept.lua"
snapshot "$WORK/after2.json"
same_snapshot "$WORK/before.json" "$WORK/after2.json" "the failures changed nothing in the cluster"

done_testing
