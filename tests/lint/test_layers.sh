#!/usr/bin/env bash
# The layers are one way: core (C) -> lua/czctl library -> recipes -> CLI
# (issue 13, acceptance 1). Nothing but the CLI requires czctl.cli; recipes
# and examples use only the library (czctl.*), never czctl.core.*; the
# library requires the always-preloaded core modules plainly (no pcall); the
# intercept recipe's steps are listed in order at its top.
set -u
cd "$(dirname "$0")/../.." || exit 1
source tests/lib/tap.sh

# requires NAME-PATTERN FILES...: the lines of FILES that require a module matching the pattern
requires() {
  local pattern=$1; shift
  grep -nE "require[ (]*[\"']$pattern" "$@" 2>/dev/null
}

out=$(requires 'czctl\.cli' $(find lua recipes examples -name '*.lua' -not -path 'lua/czctl/cli/*'))
is "$out" "" "no require of czctl.cli outside lua/czctl/cli/"
out=$(requires 'czctl\.core\.' recipes/*.lua $(find examples -name '*.lua'))
is "$out" "" "no recipe or example requires czctl.core.*"
out=$(grep -rn 'pcall(require, *"czctl\.core' lua)
is "$out" "" "the library does not pcall(require) the always-preloaded core modules"
out=$(grep -rnE 'os\.getenv\("CZCTL_(WAIT|SESSION|PROXY)' lua recipes)
is "$out" "" "no environment variables pass state between czctl processes"
out=$(grep -rn 'title:find\|description:find' lua recipes)
is "$out" "" "no step is picked by matching its display title"

# The intercept recipe: its STEPS list comes before any other code, and the
# steps it names are the workflow's methods.
first_code=$(grep -nvE '^\s*(--.*)?$' recipes/service-intercept.lua | head -1 | cut -d: -f2-)
is "$first_code" "local STEPS = {" "the intercept recipe starts with its list of steps"
steps=$(sed -n '/^local STEPS = {/,/^}/p' recipes/service-intercept.lua | grep -oE '^  "[a-z_]+"' | tr -d ' "')
is "$(echo "$steps" | wc -l)" 11 "it lists eleven steps"
for s in $steps; do
  check "step $s is a method of czctl.intercept.workflow" grep -q "^function Run:$s()" lua/czctl/intercept/workflow.lua
done
lines=$(wc -l <recipes/service-intercept.lua)
check "the intercept recipe is short ($lines lines)" test "$lines" -lt 60

done_testing
