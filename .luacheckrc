-- luacheck configuration (make test runs `luacheck .` through tests/lint).
std = "lua54"
max_line_length = 130
codes = true
exclude_files = { "build/**", "tests/sandbox/**" }
-- Spec files run under tests/lib/spec.lua, which provides busted's globals.
files["**/*_spec.lua"] = { std = "+busted" }
files["tests/lib/spec.lua"] = { globals = { "describe", "it", "pending", "before_each", "after_each", "assert" } }
