-- czctl.proxy.rules: routing rules as data. Validation, the rule the CLI
-- flags describe, a description and an example request for users, and the
-- compilation of a rule to an NGINX condition and `map` blocks (see
-- czctl.proxy.nginx for the configuration around it). Pure functions: no
-- I/O, no processes, no Kubernetes.
--
-- How a rule is compiled:
--   * every leaf rule becomes one `map` producing "1" or "" from one request
--     variable, always through an anchored, escaped regular expression, because
--     NGINX `map` string keys match case-insensitively and header values must
--     match exactly;
--   * `any` / `every` / `not` are maps over the concatenation of their
--     children's variables ("$a$b" matched by ~1 / ~^11$ / ~1 negated);
--   * the CLI's rule (one header, one value without '$') needs no map: it is
--     the condition `$http_NAME = "VALUE"` (exact and case-sensitive).
local M = {}

M.DEFAULT_HEADER = "X-C6O-INTERCEPT:yes"


-- RFC 9110 token characters.
local TCHAR = "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$"

local function fail(fmt, ...)
  return nil, string.format(fmt, ...)
end

--- Whether a string holds a control character (never valid in a request or the config).
---@param s string
---@return boolean
function M.has_control(s)
  return s:find("[%z\1-\8\10-\31\127]") ~= nil
end

---------------------------------------------------------------------------
-- Escaping
---------------------------------------------------------------------------

--- Escape a literal string for a PCRE pattern: alphanumerics stay, other
--- printable ASCII gets a backslash, everything else becomes \xHH.
---@param s string
---@return string
function M.pcre_escape(s)
  return (s:gsub("[^%w]", function(c)
    local b = c:byte()
    if b >= 0x20 and b <= 0x7e then return "\\" .. c end
    return string.format("\\x%02x", b)
  end))
end

--- Quote a string as one NGINX configuration token (double quotes). The NGINX
--- parser turns \\ into \ and \" into ", and keeps any other backslash pair
--- as is, so escaping those two is enough; control characters are refused
--- by validation before they get here.
---@param s string
---@return string
function M.nginx_quote(s)
  return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

---------------------------------------------------------------------------
-- Rules
---------------------------------------------------------------------------

local LEAVES = { header = true, cookie = true, path_prefix = true, all = true }
local GROUPS = { any = true, every = true }

local function rule_kind(rule)
  local kind
  for k in pairs(rule) do
    if LEAVES[k] or GROUPS[k] or k == "not" then
      if kind then return nil, "a rule has exactly one of header, cookie, path_prefix, all, any, every, not (got " .. kind .. " and " .. k .. ")" end
      kind = k
    else
      return nil, string.format("unknown rule key %q", tostring(k))
    end
  end
  if not kind then return nil, "empty rule: use one of header, cookie, path_prefix, all, any, every, not" end
  return kind
end

--- Check a header name (NGINX only sees names of letters, digits, - and _).
---@param name string
---@param warnings? string[] collects a warning for names with "_"
---@return boolean|nil ok
---@return string|nil err
function M.check_header_name(name, warnings)
  if type(name) ~= "string" or name == "" then return fail("header name is empty") end
  if #name > M.MAX_NAME then
    return fail("header name is %d characters long; at most %d are allowed", #name, M.MAX_NAME)
  end
  if not name:find(TCHAR) then
    return fail("invalid header name %q: only letters, digits, '-' and '_' are allowed", name)
  end
  local bad = name:match("[^%w%-_]")
  if bad then
    return fail("header name %q contains %q, which NGINX ignores in header names: only letters, digits, '-' and '_' are allowed", name, bad)
  end
  if name:find("_", 1, true) and warnings then
    warnings[#warnings + 1] = string.format(
      "header name %q contains '_': the proxy enables underscores_in_headers, so %q and %q are the same header to it",
      name, name, (name:gsub("_", "-")))
  end
  return true
end

-- Lengths a rule may use. NGINX reads each configuration parameter into a
-- 4096-byte buffer ("too long parameter" ends the proxy at start, a crash
-- loop the user would only see as CrashLoopBackOff); a value is quoted and
-- may be escaped (each byte at most doubled), so 1024 bytes always fit. A
-- request header line longer than NGINX's 8k header buffer never arrives,
-- so no longer value could ever match anyway.
M.MAX_NAME = 256
M.MAX_VALUE = 1024

local function check_value(what, v)
  if type(v) ~= "string" then return fail("%s must be a string", what) end
  if v == "" then return fail("%s is empty", what) end
  if #v > M.MAX_VALUE then
    return fail("%s is %d bytes long; at most %d are allowed", what, #v, M.MAX_VALUE)
  end
  if M.has_control(v) then return fail("%s contains a control character, which cannot appear in a request", what) end
  return true
end

local function validate(rule, warnings, path)
  if type(rule) ~= "table" then return fail("%s: a rule must be a table", path) end
  local kind, err = rule_kind(rule)
  if not kind then return fail("%s: %s", path, err) end
  local v = rule[kind]
  if kind == "all" then
    if v ~= true then return fail("%s: all must be true", path) end
  elseif kind == "path_prefix" then
    local ok, e = check_value("path_prefix", v)
    if not ok then return fail("%s: %s", path, e) end
    if v:sub(1, 1) ~= "/" then return fail("%s: path_prefix %q must start with '/'", path, v) end
  elseif kind == "header" or kind == "cookie" then
    if type(v) ~= "table" then return fail("%s: %s must be a table { name=, equals= }", path, kind) end
    for k in pairs(v) do
      if k ~= "name" and k ~= "equals" and not (kind == "header" and k == "matches") then
        return fail("%s: unknown %s field %q", path, kind, tostring(k))
      end
    end
    if kind == "header" then
      local ok, e = M.check_header_name(v.name, warnings)
      if not ok then return fail("%s: %s", path, e) end
    else
      if type(v.name) ~= "string" or v.name == "" then return fail("%s: cookie name is empty", path) end
      if not v.name:find(TCHAR) then return fail("%s: invalid cookie name %q", path, v.name) end
      if #v.name > M.MAX_NAME then
        return fail("%s: cookie name is %d characters long; at most %d are allowed", path, #v.name, M.MAX_NAME)
      end
    end
    if (v.equals == nil) == (v.matches == nil) then
      return fail("%s: %s needs exactly one of equals= or matches=", path, kind)
    end
    local ok, e = check_value(v.equals and "value" or "regular expression", v.equals or v.matches)
    if not ok then return fail("%s: %s %s", path, v.name, e) end
  elseif kind == "not" then
    return validate(v, warnings, path .. ".not")
  else -- any / every
    if type(v) ~= "table" or #v == 0 then return fail("%s: %s needs a non-empty list of rules", path, kind) end
    for i, child in ipairs(v) do
      local ok, e = validate(child, warnings, string.format("%s.%s[%d]", path, kind, i))
      if not ok then return nil, e end
    end
  end
  return true
end

--- Check a routing rule. Returns true and a list of warnings, or nil and a
--- one-line message naming the offending part ("rule.every[2]: ...").
---@param rule table
---@return boolean|nil ok
---@return string[]|string warnings_or_error
function M.validate(rule)
  local warnings = {}
  local ok, err = validate(rule, warnings, "rule")
  if not ok then return nil, err end
  return true, warnings
end

--- Build the rule the CLI flags describe: --all routes everything, otherwise
--- --header NAME:VALUE (split at the first colon, whitespace around the
--- value trimmed; default X-C6O-INTERCEPT:yes).
---@param flags {header?: string, all?: boolean}
---@return table|nil rule
---@return string|nil err  one line, suitable for a usage error
-- A user's value as error messages show it: at most 60 bytes.
local function shown(v)
  if #v <= 60 then return v end
  return v:sub(1, 57) .. "..."
end

function M.from_flags(flags)
  flags = flags or {}
  if flags.all then return { all = true } end
  local spec = flags.header
  if spec == nil or spec == "" then spec = M.DEFAULT_HEADER end
  if type(spec) ~= "string" then return fail("--header must be NAME:VALUE") end
  local colon = spec:find(":", 1, true)
  if not colon then
    return fail("invalid --header %q: expected NAME:VALUE, for example %s", shown(spec), M.DEFAULT_HEADER)
  end
  local name = spec:sub(1, colon - 1):match("^%s*(.-)%s*$")
  local value = spec:sub(colon + 1):match("^%s*(.-)%s*$")
  if name == "" then return fail("invalid --header %q: the header name before ':' is empty", shown(spec)) end
  if value == "" then return fail("invalid --header %q: the value after ':' is empty", shown(spec)) end
  local rule = { header = { name = name, equals = value } }
  local ok, err = M.validate(rule)
  if not ok then return fail("invalid --header %q: %s", shown(spec), (err:gsub("^rule: ", ""))) end
  return rule
end

--- A short human description of a rule, for output ("X-C6O-INTERCEPT: yes").
---@param rule table
---@return string
function M.describe(rule)
  local kind = rule_kind(rule)
  local v = rule[kind]
  if kind == "all" then return "all requests" end
  if kind == "path_prefix" then return "path starts with " .. v end
  if kind == "header" then
    if v.equals then return v.name .. ": " .. v.equals end
    return v.name .. " matches /" .. v.matches .. "/"
  end
  if kind == "cookie" then return "cookie " .. v.name .. "=" .. v.equals end
  if kind == "not" then return "not (" .. M.describe(v) .. ")" end
  local parts = {}
  for i, child in ipairs(v) do parts[i] = "(" .. M.describe(child) .. ")" end
  return table.concat(parts, kind == "any" and " or " or " and ")
end

--- A request that a rule routes to the tunnel, for the ready-to-paste
--- example: headers to send and a path. The first alternative of `any` that
--- has one, every part of `every` (their paths must nest), nothing for `not`
--- (not sending a header is how to avoid it). nil when fixed headers and a
--- path cannot satisfy the rule (a regular expression, paths that conflict).
---@param rule table
---@return {headers: string[], path: string}|nil
function M.example_request(rule)
  local kind = rule_kind(rule)
  local v = rule[kind]
  if kind == "all" or kind == "not" then return { headers = {}, path = "/" } end
  if kind == "header" then
    return v.equals and { headers = { v.name .. ": " .. v.equals }, path = "/" } or nil
  end
  if kind == "cookie" then return { headers = { "Cookie: " .. v.name .. "=" .. v.equals }, path = "/" } end
  if kind == "path_prefix" then return { headers = {}, path = v } end
  if kind == "any" then
    for _, child in ipairs(v) do
      local r = M.example_request(child)
      if r then return r end
    end
    return nil
  end
  local out = { headers = {}, path = "/" }
  for _, child in ipairs(v) do
    local r = M.example_request(child)
    if not r then return nil end
    for _, h in ipairs(r.headers) do out.headers[#out.headers + 1] = h end
    if r.path ~= "/" then
      if out.path ~= "/" and out.path:sub(1, #r.path) ~= r.path and r.path:sub(1, #out.path) ~= out.path then
        return nil
      end
      if #r.path > #out.path then out.path = r.path end
    end
  end
  return out
end

--- The header a rule asks for, "Name: value", when the rule is exactly one
--- header with one value (the CLI's --header); nil otherwise.
---@param rule table
---@return string|nil
function M.example_header(rule)
  local h = rule.header
  if h and h.equals and next(rule, next(rule)) == nil then return h.name .. ": " .. h.equals end
  return nil
end

--- The NGINX variable holding a request header ($http_x_c6o_intercept).
---@param name string
---@return string
function M.header_variable(name)
  return "$http_" .. name:lower():gsub("[-]", "_")
end

---------------------------------------------------------------------------
-- Rule compilation: a list of `map` blocks and the expression that is "1"
-- when the rule matches.
---------------------------------------------------------------------------

local function compile(rule, maps)
  local kind = rule_kind(rule)
  local v = rule[kind]
  if kind == "all" then return "1" end
  local var = string.format("$czctl_rule_%d", #maps + 1)
  local source, key, comment
  if kind == "header" then
    source = M.header_variable(v.name)
    if v.equals then
      key = "~^" .. M.pcre_escape(v.equals) .. "$"
      comment = string.format("header %s equals %q (name case-insensitive, value exact)", v.name, v.equals)
    else
      key = "~" .. v.matches
      comment = string.format("header %s matches the regular expression %s", v.name, v.matches)
    end
  elseif kind == "cookie" then
    -- $cookie_NAME compares names case-insensitively and only knows names made
    -- of variable characters, so match the raw Cookie header instead.
    source = "$http_cookie"
    key = "~(?:^|;)\\s*" .. M.pcre_escape(v.name) .. "=" .. M.pcre_escape(v.equals) .. "\\s*(?:;|$)"
    comment = string.format("cookie %s equals %q (exact)", v.name, v.equals)
  elseif kind == "path_prefix" then
    -- $uri is decoded and normalised ("//", "/./", "/../" resolved), so a
    -- prefix cannot be dodged by spelling the path differently.
    source = "$uri"
    key = "~^" .. M.pcre_escape(v)
    comment = string.format("path starts with %s", v)
  else
    local children = {}
    local parts = rule[kind]
    if kind == "not" then parts = { v } end
    for i, child in ipairs(parts) do children[i] = compile(child, maps) end
    var = string.format("$czctl_rule_%d", #maps + 1)
    source = table.concat(children)
    if kind == "any" then
      key, comment = "~1", "any of: " .. table.concat(children, " ")
    elseif kind == "every" then
      key, comment = "~^" .. string.rep("1", #children) .. "$", "every one of: " .. table.concat(children, " ")
    else
      key, comment = "~1", "not " .. children[1]
    end
    if kind == "not" then
      maps[#maps + 1] = string.format("# %s\nmap %s %s {\n    default 1;\n    %s \"\";\n}",
        comment, M.nginx_quote(source), var, M.nginx_quote(key))
      return var
    end
  end
  maps[#maps + 1] = string.format("# %s\nmap %s %s {\n    default \"\";\n    %s 1;\n}",
    comment:gsub("\n", " "), source:find("^%$[%w_]+$") and source or M.nginx_quote(source), var,
    M.nginx_quote(key))
  return var
end

--- Compile a rule to the condition of an NGINX `if` and the maps it needs
--- (exposed for tests and for users who want to embed the rule in their own
--- configuration).
---
--- The CLI's rule, one header equal to one value, needs no map: `if`'s `=`
--- compares bytes exactly (case-sensitive, as a value must be) and costs the
--- original route less than a map with a regular expression. A value holding
--- '$' would be read as a variable there, so it goes through a map.
---@param rule table
---@return string|nil condition  "1" (every request), "$czctl_rule_N" or "$http_NAME = \"VALUE\""
---@return string[]|string maps_or_error
function M.compile(rule)
  local ok, err = M.validate(rule)
  if not ok then return nil, err end
  local h = rule.header
  if h and h.equals and not h.equals:find("$", 1, true) then
    return string.format("%s = %s", M.header_variable(h.name), M.nginx_quote(h.equals)), {}
  end
  local maps = {}
  return compile(rule, maps), maps
end

--- Compile a rule to one NGINX variable that is "1" when the rule matches
--- and "" otherwise, with its maps; every variable it defines starts with
--- `$czctl_<prefix>_`, so the rules of several sessions live side by side in
--- one configuration (czctl.proxy.nginx's routes).
---@param rule table
---@param prefix string letters, digits and "_" only
---@return string|nil variable  "$czctl_<prefix>_rule_N", or "1" for {all = true}
---@return string[]|string maps_or_error
function M.compile_variable(rule, prefix)
  local ok, err = M.validate(rule)
  if not ok then return nil, err end
  if type(prefix) ~= "string" or not prefix:find("^[%w_]+$") then
    return nil, "rule prefix must be letters, digits and '_'"
  end
  local maps = {}
  local var = compile(rule, maps)
  local function rename(s) return (s:gsub("%$czctl_rule_", "$czctl_" .. prefix .. "_rule_")) end
  for i, m in ipairs(maps) do maps[i] = rename(m) end
  return rename(var), maps
end

--- Whether a rule names a header with "_" (NGINX must be told to keep those).
---@param rule table
---@return boolean
function M.uses_underscore_header(rule)
  local kind = rule_kind(rule)
  local v = rule[kind]
  if kind == "header" then return v.name:find("_", 1, true) ~= nil end
  if kind == "not" then return M.uses_underscore_header(v) end
  if kind == "any" or kind == "every" then
    for _, child in ipairs(v) do
      if M.uses_underscore_header(child) then return true end
    end
  end
  return false
end

return M
