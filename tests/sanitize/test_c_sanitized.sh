#!/usr/bin/env bash
# The C unit tests, built again with AddressSanitizer and
# UndefinedBehaviorSanitizer (into build/san, as `make sanitize` does), pass
# without any sanitizer report (scripts/run-sanitized). `make sanitize` also
# runs the Lua specs with that build; here only the C tests, to keep
# `make test` short.
set -u
cd "$(dirname "$0")/../.." || exit 1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! make --no-print-directory -s BUILD=build/san \
     SANFLAGS='-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined' \
     CFLAGS='-O1 -g' all ctests >"$log" 2>&1; then
  echo "not ok - the sanitizer build compiles"; sed 's/^/# /' "$log" | tail -20; exit 1
fi
echo "ok - the sanitizer build compiles"
scripts/run-sanitized build/san build/san/tests/c/
