#!/usr/bin/env bash
# The conventions of a well-packaged command line (issue 13, acceptance 3 and
# 4): --version and `version -o json|yaml` with the library versions and the
# commit; one JSON/YAML style (apiVersion, kind, camelCase keys); errors as a
# Status document on stderr under -o json/yaml; shell completion generated
# from the declarations (bash exercised through complete/compgen, zsh and
# fish syntax-checked by the shells); the man page renders with man -l;
# make install DESTDIR=... and make uninstall.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
source tests/lib/tap.sh
CZCTL="$ROOT/czctl"
WORK=$(mktemp -d)
SILENT_PID=""
cleanup() { [ -n "$SILENT_PID" ] && kill -KILL "$SILENT_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
export HOME="$WORK/home" XDG_CONFIG_HOME="$WORK/config" XDG_STATE_HOME="$WORK/state"
unset CZCTL_RECIPE_PATH KUBECONFIG
mkdir -p "$HOME"

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
yaml() { python3 -c "import yaml,sys; d=yaml.safe_load(sys.stdin); print($1)"; }

# --- version ------------------------------------------------------------------
is "$("$CZCTL" --version)" "$("$CZCTL" version)" "--version prints what version prints"
is "$("$CZCTL" --version >/dev/null; echo $?)" 0 "--version exits 0"
like "$("$CZCTL" version | head -1)" '^czctl [0-9]+\.[0-9]+\.[0-9]+ \(commit [0-9a-f]{7,}|unknown\)' \
  "version names czctl's version and commit"
is "$("$CZCTL" version -o json | json '(d["apiVersion"], d["kind"], sorted(d))')" \
  "('czctl.io/v1', 'Version', ['apiVersion', 'cjson', 'commit', 'czctl', 'features', 'kind', 'libyaml', 'lua'])" \
  "version -o json: kind Version with czctl, commit, Lua, libyaml, cjson and features (libcurl is not loaded)"
like "$("$CZCTL" version -o json | json '" ".join(d["features"])')" '(^| )intercept-command( |$)' \
  "version -o json: features lists what this build supports (intercept-command: -- CMD)"
like "$("$CZCTL" version -o json | json 'd["lua"], d["libyaml"], d["cjson"]')" \
  '^Lua 5\.4\.[0-9]+ [0-9]+\.[0-9.]+ [0-9]+\.[0-9.]+$' "the library versions are real version numbers"
like "$("$CZCTL" version --verbose -o json | json 'd["libcurl"]')" '^[0-9]+\.[0-9]+\.[0-9]+$' \
  "version --verbose loads libcurl and shows its version"
is "$("$CZCTL" version -o yaml | yaml 'd["kind"], d["commit"] == "'"$("$CZCTL" version -o json | json 'd["commit"]')"'"')" \
  "Version True" "version -o yaml is the same document as YAML"

# --- errors as documents under -o json / -o yaml ----------------------------------
"$CZCTL" session list -o json --bogus >"$WORK/out" 2>"$WORK/err"; rc=$?
is "$rc" 2 "a usage error under -o json exits 2"
is "$(cat "$WORK/out")" "" "nothing on stdout"
is "$(json '(d["kind"], d["status"], d["reason"], d["code"])' <"$WORK/err")" "('Status', 'Failure', 'Usage', 2)" \
  "the usage error is one Status document on stderr"
like "$(json 'd["message"]' <"$WORK/err")" 'unknown flag "--bogus"' "its message is the one-line error"
printf 'apiVersion: v1\nclusters: [\n' >"$WORK/bad.yaml"
"$CZCTL" session list -k "$WORK/bad.yaml" -o yaml >"$WORK/out" 2>"$WORK/err"; rc=$?
is "$rc" 1 "a failure under -o yaml exits 1"
is "$(yaml '(d["kind"], d["reason"], d["code"])' <"$WORK/err")" "('Status', 'Failed', 1)" \
  "the failure is a Status document (YAML) on stderr"
out=$("$CZCTL" version -o xml 2>&1); rc=$?
is "$rc" 2 "an output format outside the choices is a usage error"
like "$out" 'expected one of text, json, yaml' "it lists the choices"
out=$("$CZCTL" session list -o xml 2>&1)
like "$out" 'invalid value "xml" for flag -o: expected one of text, json, yaml' "recipes check -o by its choices too"

# --- recipe list as a List ------------------------------------------------------------
is "$("$CZCTL" recipe list -o json | json '(d["kind"], [i["name"] for i in d["items"]][:2])')" \
  "('RecipeList', ['config-view', 'service-env'])" "recipe list -o json is a RecipeList of items"

# --- completion -----------------------------------------------------------------------
"$CZCTL" completion bash >"$WORK/czctl.bash"
# complete WORDS...: what bash offers for the last word (after `complete -F`).
complete_words() {
  bash -c 'source "$1"; shift
    COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
    spec=$(complete -p czctl); fn=${spec#*-F }; fn=${fn%% *}
    "$fn" czctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf "%s\n" "${COMPREPLY[@]}" | sort | paste -sd" " -' _ "$WORK/czctl.bash" "$@"
}
like "$(bash -c 'source "$1"; complete -p czctl' _ "$WORK/czctl.bash")" '^complete .*-F _czctl czctl$' \
  "the bash script registers a completion function for czctl"
is "$(complete_words czctl se)" "service session" "bash: command nouns"
is "$(complete_words czctl session "")" "close list" "bash: the verbs of a noun"
is "$(complete_words czctl recipe "")" "copy list show" "bash: the verbs of a built-in noun"
is "$(complete_words czctl service intercept --tun)" "--tunnel --tunnel-ca --tunnel-host --tunnelCa --tunnelHost" "bash: the flags of a command"
is "$(complete_words czctl service intercept demo -o "")" "json text yaml" "bash: the choices of a flag"
is "$(complete_words czctl completion "")" "bash fish zsh" "bash: the choices of an argument"
is "$(complete_words czctl session list -q --cont)" "--context" "bash: flags after other flags"
check "bash: hidden flags are not offered" bash -c '! grep -q -- "--held-by" "$1"' _ "$WORK/czctl.bash"
# names from a cluster that does not answer: nothing, and no hang (the request gives up)
python3 -c 'import socket,time; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(5); print(s.getsockname()[1], flush=True); time.sleep(60)' >"$WORK/silent.port" &
SILENT_PID=$!
disown "$SILENT_PID"
for _ in $(seq 100); do [ -s "$WORK/silent.port" ] && break; sleep 0.02; done
cat >"$WORK/silent.yaml" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:$(cat "$WORK/silent.port")", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
YAML
is "$("$CZCTL" __complete services -- service intercept -k "$WORK/silent.yaml"; echo "rc=$?")" "rc=0" \
  "service names from a cluster that does not answer: none, exit 0"
"$CZCTL" completion zsh >"$WORK/_czctl"
check "zsh: the script parses (zsh -n)" zsh -n "$WORK/_czctl"
check "zsh: it defines _czctl" grep -q '^_czctl()' "$WORK/_czctl"
"$CZCTL" completion fish >"$WORK/czctl.fish"
check "fish: the script parses (fish --no-execute)" fish --no-execute "$WORK/czctl.fish"
like "$(grep -c '^complete -c czctl' "$WORK/czctl.fish")" '^[0-9]{2,}$' "fish: one complete line per command, verb and flag"

# --- man page --------------------------------------------------------------------------
"$CZCTL" __man >"$WORK/czctl.1"
man -l -P cat "$WORK/czctl.1" >"$WORK/man.txt" 2>"$WORK/man.err"
is "$?" 0 "man -l renders the man page"
is "$(grep -c 'warning' "$WORK/man.err")" 0 "without warnings"
for want in "czctl service intercept SERVICE" "--tunnel-host" "one of text, json, yaml" "NO_COLOR" "EXIT STATUS"; do
  check "the man page documents $want" grep -qF -- "$want" "$WORK/man.txt"
done

# --- make install / uninstall ----------------------------------------------------------------
make -s install DESTDIR="$WORK/root" PREFIX=/usr >"$WORK/install.log" 2>&1
is "$?" 0 "make install DESTDIR=... PREFIX=/usr"
for f in bin/czctl share/man/man1/czctl.1 share/bash-completion/completions/czctl share/zsh/vendor-completions/_czctl \
         share/fish/vendor_completions.d/czctl.fish share/doc/czctl/README.md share/doc/czctl/lua-api.md \
         share/doc/czctl/examples/team-routing.lua share/doc/czctl/examples/recipes/hello.lua; do
  check "installed: $f" test -s "$WORK/root/usr/$f"
done
like "$(file "$WORK/root/usr/bin/czctl")" "stripped" "the installed binary is stripped"
check "(not 'not stripped')" bash -c '! file "$1" | grep -q "not stripped"' _ "$WORK/root/usr/bin/czctl"
is "$("$WORK/root/usr/bin/czctl" version | head -1)" "$("$CZCTL" version | head -1)" "the installed binary runs"
make -s uninstall DESTDIR="$WORK/root" PREFIX=/usr >"$WORK/uninstall.log" 2>&1
is "$?" 0 "make uninstall"
is "$(find "$WORK/root" -type f | wc -l)" 0 "make uninstall removes every installed file"
check "and the documentation directory" test ! -e "$WORK/root/usr/share/doc/czctl"

done_testing
