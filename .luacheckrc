-- luacheck configuration: `luacheck .` (tests/lint/test_luacheck.sh runs it
-- in make test). Lua 5.4; no line-length limit (the code has none, and long
-- annotation and table lines read better whole).
std = "lua54"
max_line_length = false
codes = true
exclude_files = { "build/**", "tests/sandbox/**" }
-- Spec files run under tests/lib/spec.lua, which provides busted's globals.
files["**/*_spec.lua"] = { std = "+busted" }
files["tests/lib/spec.lua"] = { globals = { "describe", "it", "pending", "before_each", "after_each", "assert" } }
-- Test scripts reuse result variables from check to check and take callback
-- arguments they do not need.
files["tests/**"] = { ignore = { "311", "212" } }
