-- czctl.cli.man: the czctl(1) manual page, generated from the same command
-- declarations as help and completion (`make man` runs `czctl __man` with no
-- user recipes, so it documents the built-ins). roff, man(7) macros.
local util = require "czctl.util"
local help = require "czctl.cli.help"
local flagmod = require "czctl.cli.flags"

local M = {}

-- Escape text for roff: backslashes, and a leading dot or quote.
local function esc(s)
  s = tostring(s or ""):gsub("\\", "\\e"):gsub("%-", "\\-")
  return (s:gsub("\n([.'])", "\n\\&%1"):gsub("^([.'])", "\\&%1"))
end

local function flag_item(d)
  local left = "\\fB\\-\\-" .. esc(util.kebab(d.name)) .. "\\fR"
  if d.short then left = "\\fB\\-" .. d.short .. "\\fR, " .. left end
  if d.type ~= "boolean" then left = left .. " \\fI" .. esc(d.metavar or (d.type == "list" and "string" or d.type)) .. "\\fR" end
  local notes = {}
  if d.choices then notes[#notes + 1] = "one of " .. table.concat(d.choices, ", ") end
  if d.type == "list" then notes[#notes + 1] = "repeatable" end
  if d.required then notes[#notes + 1] = "required" end
  local dt = help.default_text(d)
  if dt then notes[#notes + 1] = dt end
  local text = d.help or ""
  if #notes > 0 then text = text .. (text ~= "" and " " or "") .. "(" .. table.concat(notes, "; ") .. ")" end
  return ".TP\n" .. left .. "\n" .. esc(text)
end

local function usage_of(c)
  if c.usage then return c.usage end
  local words = {}
  for _, a in ipairs(c.args or {}) do
    local w = flagmod.arg_label(a) .. (a.variadic and "..." or "")
    words[#words + 1] = a.required and w or "[" .. w .. "]"
  end
  return table.concat(words, " ")
end

--- The manual page as roff.
---@param commands table[] from czctl.cli.builtins.commands
---@return string
function M.page(commands)
  local version = require("czctl.core.embed").version
  local L = {}
  local function add(s) L[#L + 1] = s end
  add('.TH CZCTL 1 "" "czctl ' .. version .. '" "User Commands"')
  add(".SH NAME")
  add("czctl \\- intercept traffic to a Kubernetes Service and send it to your machine")
  add(".SH SYNOPSIS")
  add("\\fBczctl\\fR \\fICOMMAND\\fR [\\fIARGS\\fR...] [\\fIflags\\fR]")
  add(".SH DESCRIPTION")
  add(esc("czctl takes over part of the traffic of a Kubernetes Service and sends it to a port on this "
    .. "machine, while everyone else keeps using the in-cluster version. Every command is a Lua recipe "
    .. "(built in, or NAME.lua in a recipe directory) or one of the built-in commands below."))
  add(".SH COMMANDS")
  for _, c in ipairs(commands) do
    add(".SS \\fBczctl " .. esc(c.name) .. "\\fR " .. esc(usage_of(c)))
    if c.summary then add(esc(c.summary) .. ".") end
    if c.description then add(".PP"); add(esc(util.trim(c.description))) end
    local own = {}
    for _, d in ipairs(c.flags or {}) do if not d.global and not d.hidden then own[#own + 1] = d end end
    if #own > 0 then
      add(".PP"); add("Flags:")
      for _, d in ipairs(own) do add(flag_item(d)) end
    end
  end
  add(".SH GLOBAL FLAGS")
  for _, d in ipairs(flagmod.GLOBAL_FLAGS) do add(flag_item(d)) end
  add(".TP\n\\fB\\-\\-version\\fR\nprint the versions of czctl and its libraries (the same as \\fBczctl version\\fR)")
  add(".PP")
  add(esc("Flags also accept camelCase spellings (--localPort for --local-port), --flag=value, bundled "
    .. "short flags (-aq) and --no-FLAG for booleans; -- ends the flags."))
  add(".SH OUTPUT")
  add(esc("With -o json or -o yaml a command prints one document on stdout (kubectl's style: apiVersion "
    .. "czctl.io/v1, a kind, camelCase keys; lists as kind ...List with items) and, when it fails, a "
    .. "Status document on stderr."))
  add(".SH ENVIRONMENT")
  local env = {
    { "KUBECONFIG", "kubeconfig files, merged as kubectl does (default ~/.kube/config)" },
    { "CZCTL_RECIPE_PATH", "colon-separated directories searched for NAME.lua before the built-in recipes" },
    { "XDG_CONFIG_HOME", "czctl/recipes under it holds your recipes (default ~/.config)" },
    { "XDG_STATE_HOME", "czctl/sessions under it holds this machine's session records (default ~/.local/state)" },
    { "NO_COLOR", "when set to a non-empty value, no colour" },
    { "CZCTL_DEBUG", "when set (not 0), internal errors carry a Lua traceback" },
  }
  for _, e in ipairs(env) do add(".TP\n\\fB" .. e[1] .. "\\fR\n" .. esc(e[2])) end
  add(".SH EXIT STATUS")
  add(esc("0 success; 1 failure; 2 usage error; 128+N interrupted by signal N (130 SIGINT, 143 SIGTERM, "
    .. "129 SIGHUP), after the rollback."))
  add(".SH FILES")
  add(".TP\n\\fI~/.config/czctl/recipes/NAME.lua\\fR\n" .. esc("a user recipe; `czctl recipe copy NAME` starts one from a built-in"))
  add(".TP\n\\fI~/.local/state/czctl/sessions/\\fR\n" .. esc("this machine's session records (mode 0600)"))
  add(".SH SEE ALSO")
  add("\\fBkubectl\\fR(1); the README and docs/ of czctl (installed under share/doc/czctl)")
  return table.concat(L, "\n") .. "\n"
end

return M
