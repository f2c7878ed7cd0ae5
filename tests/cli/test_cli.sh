#!/usr/bin/env bash
# The czctl command line end to end through ./czctl (issue 2, acceptance 1,
# 6 and 7): the built-in commands work from another directory, a script
# blocked in wait_signal rolls back in reverse on SIGTERM/SIGINT and exits
# 143/130, and bad input gives one line and exit 1 or 2 without a traceback.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
source tests/lib/tap.sh
CZCTL="$ROOT/czctl"
[ -x "$CZCTL" ] || { fail "czctl is built (run make)"; done_testing; exit 1; }

WORK=$(mktemp -d)
BGPID=""
cleanup() {
  [ -n "$BGPID" ] && kill -KILL "$BGPID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
export XDG_CONFIG_HOME="$WORK/config" HOME="$WORK/home"
unset CZCTL_RECIPE_PATH KUBECONFIG
mkdir -p "$WORK/recipes" "$WORK/home" "$WORK/config"

# run CMD...: sets OUT, ERR, RC (run from $WORK, not the repository)
run() {
  (cd "$WORK" && "$@") >"$WORK/.out" 2>"$WORK/.err"
  RC=$?
  OUT=$(cat "$WORK/.out"); ERR=$(cat "$WORK/.err")
}
lines() { if [ -z "$1" ]; then echo 0; else printf '%s\n' "$1" | wc -l; fi; }

# ---- acceptance 1: built-in commands from another directory ---------------
run "$CZCTL" help
is "$RC" 0 "help exits 0 from another directory"
like "$OUT" "Built-in commands:" "help lists the built-in commands"
like "$OUT" "service intercept" "help lists the built-in recipes as commands"

run "$CZCTL" version
is "$RC" 0 "version exits 0"
like "$OUT" "^czctl [0-9]+\.[0-9]+\.[0-9]+" "version prints czctl and its version"

run "$CZCTL" recipe list
is "$RC" 0 "recipe list exits 0"
like "$OUT" "service-intercept +built-in" "recipe list shows the built-in intercept recipe"

run "$CZCTL" recipe show service-intercept
is "$RC" 0 "recipe show exits 0"
if [ "$OUT" = "$(cat "$ROOT/recipes/service-intercept.lua")" ]; then
  ok "recipe show prints the built-in recipe's exact source"
else
  fail "recipe show prints the built-in recipe's exact source"
fi

run "$CZCTL" help service intercept
is "$RC" 0 "help COMMAND exits 0"
like "$OUT" "--local-port" "help COMMAND shows the recipe's flags"
run "$CZCTL" service intercept --help
HELP2=$OUT
run "$CZCTL" help service intercept
is "$HELP2" "$OUT" "COMMAND --help and help COMMAND print the same help"

mkdir -p "$WORK/scripts/lib"
cat >"$WORK/scripts/lib/helper.lua" <<'LUA'
return { twice = function(s) return s .. s end }
LUA
cat >"$WORK/scripts/plain.lua" <<'LUA'
local helper = require "lib.helper"
leaked_global = true
print(helper.twice(arg[1]), select("#", ...), arg[0]:match("plain%.lua$"), rawget(_G, "leaked_global"))
return 7
LUA
run "$CZCTL" run scripts/plain.lua ab cd
is "$RC" 7 "run returns the script's exit code"
is "$OUT" "abab	2	plain.lua	nil" "run passes arg and ..., finds sibling modules, leaks no global"

cat >"$WORK/scripts/greet.lua" <<'LUA'
return {
  summary = "Greet someone",
  args = { { name = "name", required = true } },
  flags = { { name = "greeting", short = "g", default = "hello" }, { name = "times", type = "integer", default = 1 } },
  run = function(ctx)
    for _ = 1, ctx.flags.times do ctx.out:print("%s, %s", ctx.flags.greeting, ctx.args.name) end
  end,
}
LUA
run "$CZCTL" run scripts/greet.lua world -g hi --times=2
is "$OUT" "hi, world
hi, world" "run parses a returned recipe's flags from ARGS"
run "$CZCTL" run scripts/greet.lua --help
like "$OUT" "czctl run scripts/greet.lua NAME \[flags\]" "run FILE --help shows the script recipe's help"

# the spec runner: TAP lines, failures explained, exit status
cat >"$WORK/scripts/mixed_spec.lua" <<'LUA'
describe("group", function()
  local n = 0
  before_each(function() n = n + 1 end)
  it("passes", function() assert.equal(1, n) end)
  it("fails", function() assert.same({ a = 1 }, { a = 2 }) end)
  pending("later")
end)
LUA
run "$CZCTL" run "$ROOT/tests/lib/spec.lua" scripts/mixed_spec.lua
is "$RC" 1 "the spec runner exits 1 when a test fails"
like "$OUT" "^ok 1 - group passes" "the spec runner prints ok lines"
like "$OUT" "not ok 2 - group fails" "the spec runner prints not ok lines"
like "$OUT" "# scripts/mixed_spec.lua:5: tables differ at a" "the spec runner says where and why a test failed"
like "$OUT" "ok 3 - group later # SKIP pending" "the spec runner reports pending tests"
sed -i '/fails/d' "$WORK/scripts/mixed_spec.lua"
run "$CZCTL" run "$ROOT/tests/lib/spec.lua" scripts/mixed_spec.lua
is "$RC" 0 "the spec runner exits 0 when every test passes"

# a user recipe overrides the built-in of the same name
mkdir -p "$WORK/config/czctl/recipes"
printf 'return { summary = "mine", run = function(ctx) ctx.out:print("user version") end }\n' \
  >"$WORK/config/czctl/recipes/service-intercept.lua"
run "$CZCTL" service intercept
is "$OUT" "user version" "a recipe in ~/.config/czctl/recipes overrides the built-in"
printf 'return { summary = "path", run = function(ctx) ctx.out:print("path version") end }\n' \
  >"$WORK/recipes/service-intercept.lua"
CZCTL_RECIPE_PATH="$WORK/recipes" run "$CZCTL" service intercept
is "$OUT" "path version" "CZCTL_RECIPE_PATH overrides ~/.config/czctl/recipes"
rm -f "$WORK/config/czctl/recipes/service-intercept.lua" "$WORK/recipes/service-intercept.lua"

# the documented example recipe
run "$CZCTL" run "$ROOT/examples/recipes/hello.lua" world --loud -t 2
is "$OUT" "HELLO, WORLD
HELLO, WORLD" "examples/recipes/hello.lua runs through czctl run"
run "$CZCTL" run "$ROOT/examples/recipes/hello.lua" world --output json
if printf '%s' "$OUT" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["greeting"]=="hello, world"' 2>/dev/null; then
  ok "the example recipe prints one JSON document with --output json"
else
  fail "the example recipe prints one JSON document with --output json"; echo "# $OUT"
fi
cp "$ROOT/examples/recipes/hello.lua" "$WORK/config/czctl/recipes/hello.lua"
HELLO_TIMES=2 run "$CZCTL" hello you -g hi
is "$OUT" "hi, you
hi, you" "the example recipe installed in ~/.config/czctl/recipes runs as czctl hello, env default applied"
run "$CZCTL" recipe list
like "$OUT" "hello +$WORK/config/czctl/recipes/hello.lua +Say hello" "recipe list shows the installed user recipe"
rm -f "$WORK/config/czctl/recipes/hello.lua"

# ---- acceptance 6: SIGTERM while blocked in wait_signal -------------------
cat >"$WORK/scripts/waiter.lua" <<'LUA'
local signal = require "czctl.signal"
return {
  summary = "defer three steps, then wait for a signal",
  args = { { name = "log", required = true } },
  run = function(ctx)
    for i = 1, 3 do
      ctx.undo:defer("step " .. i, function()
        local f = assert(io.open(ctx.args.log, "a")); f:write("undo ", i, "\n"); f:close()
      end)
    end
    io.stdout:write("ready\n"); io.stdout:flush()
    signal.wait()
    signal.check()
    return 0
  end,
}
LUA
cat >"$WORK/scripts/waiter_plain.lua" <<'LUA'
-- top-level code: the runner's ctx.undo is available to plain scripts too
for i = 1, 2 do
  ctx.undo:defer("step " .. i, function()
    local f = assert(io.open(arg[1], "a")); f:write("undo ", i, "\n"); f:close()
  end)
end
io.stdout:write("ready\n"); io.stdout:flush()
require("czctl.core.sys").wait_signal()
LUA

# start_bg SCRIPT LOG: starts czctl run in the background, waits for "ready"
start_bg() {
  : >"$WORK/bg.out"
  (cd "$WORK" && exec "$CZCTL" run "$1" "$2") >"$WORK/bg.out" 2>"$WORK/bg.err" &
  BGPID=$!
  for _ in $(seq 1 200); do grep -q ready "$WORK/bg.out" && return 0; sleep 0.02; done
  return 1
}

for case in "TERM 143 SIGTERM scripts/waiter.lua 3" "INT 130 SIGINT scripts/waiter.lua 3" \
            "TERM 143 SIGTERM scripts/waiter_plain.lua 2" "HUP 129 SIGHUP scripts/waiter_plain.lua 2"; do
  set -- $case
  sig=$1 code=$2 name=$3 script=$4 steps=$5
  rm -f "$WORK/undo.log"
  if start_bg "$script" "$WORK/undo.log"; then
    kill -"$sig" "$BGPID"
    wait "$BGPID"; rc=$?; BGPID=""
    is "$rc" "$code" "$script exits $code after $name"
    want=$(for i in $(seq "$steps" -1 1); do echo "undo $i"; done)
    is "$(cat "$WORK/undo.log" 2>/dev/null)" "$want" "$script runs its $steps undo steps in reverse on $name"
    like "$(tail -n 1 "$WORK/bg.err")" "^czctl: interrupted \($name\), rolled back $steps steps$" \
      "$script reports the interrupt in one line"
  else
    fail "$script became ready"; kill -KILL "$BGPID" 2>/dev/null; BGPID=""
  fi
done

# ---- acceptance 7: bad input ---------------------------------------------
export CZCTL_RECIPE_PATH="$WORK/recipes"
cat >"$WORK/recipes/my-thing.lua" <<'LUA'
return {
  summary = "has a bug",
  flags = { { name = "localPort", short = "l", type = "number" } },
  run = function(ctx)
    local service = nil
    return service.name
  end,
}
LUA
printf 'return {\n  summary = "broken"\n  run = function() end,\n}\n' >"$WORK/recipes/broken.lua"
cat >"$WORK/recipes/kube-check.lua" <<'LUA'
return {
  summary = "connects to the cluster",
  flags = {
    { name = "kubeconfig", short = "k", env = "KUBECONFIG" },
    { name = "context" },
  },
  run = function(ctx)
    local client = ctx.kube()
    ctx.out:print("connected to %s", client:info().server)
  end,
}
LUA

# check_one_line NAME WANT_RC REGEX: one stderr line, no traceback
check_one_line() {
  is "$RC" "$2" "$1: exit $2"
  is "$(lines "$ERR")" 1 "$1: exactly one line on stderr"
  like "$ERR" "$3" "$1: the line says what is wrong"
  if printf '%s' "$ERR" | grep -q "stack traceback"; then fail "$1: no traceback"; else ok "$1: no traceback"; fi
}

run "$CZCTL" my thing --locl-port 80
check_one_line "a misspelled flag" 2 \
  '^czctl: unknown flag "--locl-port" for "my thing"; did you mean "--local-port"\? \(see czctl my thing --help\)$'
run "$CZCTL" my thing --localPort abc
check_one_line "a number flag given text" 2 'invalid value "abc" for flag --localPort: expected a number'
run "$CZCTL" servce intercept
check_one_line "an unknown command" 2 '^czctl: unknown command "servce intercept"; did you mean "service intercept"\?'
run "$CZCTL" my thing
check_one_line "a Lua error in a user recipe" 1 \
  "^czctl: error in recipe my-thing \($WORK/recipes/my-thing.lua:6\): attempt to index a nil value"
run "$CZCTL" --debug my thing
like "$ERR" "stack traceback" "--debug adds the traceback"
run "$CZCTL" broken
check_one_line "a syntax error in a user recipe" 1 "^czctl: syntax error in recipe broken \($WORK/recipes/broken.lua:3\): "
run "$CZCTL" run "$WORK/missing.lua"
check_one_line "run with a file that does not exist" 1 "^czctl: error: cannot read $WORK/missing.lua: No such file or directory$"
run "$CZCTL" run "$WORK"
check_one_line "run with a directory" 1 "^czctl: error: cannot read $WORK: "
printf 'local x = = 1\n' >"$WORK/syntax.lua"
run "$CZCTL" run syntax.lua
check_one_line "run with a syntax error" 1 "^czctl: syntax error in script syntax.lua \(syntax.lua:1\): "

# kubeconfig problems reach the user through ctx.kube()
printf 'apiVersion: v1\nclusters: [\n  - name: x\n' >"$WORK/malformed.yaml"
cat >"$WORK/nocontext.yaml" <<'YAML'
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: secret-token-value}}]
contexts: [{name: ctx, context: {cluster: c, user: u}}]
current-context: ctx
YAML
cat >"$WORK/wrongtype.yaml" <<'YAML'
apiVersion: v1
kind: Config
clusters: "not a list"
YAML
run "$CZCTL" kube check --kubeconfig "$WORK/malformed.yaml"
check_one_line "a malformed kubeconfig" 1 "^czctl: error: .*malformed.yaml"
run "$CZCTL" kube check -k "$WORK/nocontext.yaml" --context missing
check_one_line "a missing context" 1 '^czctl: error: .*missing'
run "$CZCTL" kube check -k "$WORK/wrongtype.yaml"
check_one_line "a kubeconfig with wrong types" 1 "^czctl: error: .*wrongtype.yaml"
run "$CZCTL" kube check -k "$WORK/absent.yaml"
check_one_line "an explicit kubeconfig that does not exist" 1 "^czctl: error: .*absent.yaml"
KUBECONFIG="$WORK/nocontext.yaml" run "$CZCTL" kube check --context missing --verbose
check_one_line "a missing context from \$KUBECONFIG" 1 '^czctl: error: .*missing'
if printf '%s%s' "$OUT" "$ERR" | grep -q secret-token-value; then
  fail "no token in the output, even with --verbose"
else
  ok "no token in the output, even with --verbose"
fi

done_testing
