#!/usr/bin/env bash
# Every Lua file of the project passes luacheck (Debian's lua-check) with the
# project's .luacheckrc: no globals, no unused or shadowed locals, no
# unreachable code. One TAP line per file.
set -u
cd "$(dirname "$0")/../.." || exit 1
if ! command -v luacheck >/dev/null; then
  echo "not ok - luacheck is installed (scripts/deps installs lua-check)"; exit 1
fi
luacheck --formatter TAP --no-color .
