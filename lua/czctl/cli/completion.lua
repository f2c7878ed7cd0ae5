-- czctl.cli.completion: shell completion generated from the command
-- declarations (commands, verbs, flags and their choices, arguments), for
-- bash, zsh and fish. Names that live in the cluster (Services, sessions,
-- namespaces) are asked at TAB time through `czctl __complete KIND WORDS...`,
-- (the words after --), which gives up after a second so a slow cluster
-- never blocks the shell.
--
-- A declaration's `complete` field names where its values come from:
-- "services", "sessions", "namespaces", "recipes", "commands",
-- "files"; `choices` lists fixed values.
local util = require "czctl.util"

local M = {}

-- How long __complete waits for the cluster, in seconds.
M.CLUSTER_TIMEOUT = 1

-- Shell-safe key of a command name: "service intercept" -> "service_intercept".
local function key(name) return (name:gsub("[^%w]", "_")) end

local function spellings(d)
  local list = { "--" .. util.kebab(d.name) }
  if util.camel(d.name) ~= util.kebab(d.name) then list[#list + 1] = "--" .. util.camel(d.name) end
  if d.short then list[#list + 1] = "-" .. d.short end
  return list
end

-- What a flag's value is: "bool", "choice:a b", a completion kind, or "value".
local function flag_kind(d)
  if d.type == "boolean" then return "bool" end
  if d.choices then return "choice:" .. table.concat(d.choices, " ") end
  return d.complete or "value"
end

local function arg_kind(a)
  if a.choices then return "choice:" .. table.concat(a.choices, " ") end
  return a.complete or ""
end

-- The command tree: top-level words, and verbs per noun.
local function tree(commands)
  local top, verbs, seen = {}, {}, {}
  for _, c in ipairs(commands) do
    local noun, verb = c.name:match("^(%S+) (%S+)$")
    noun = noun or c.name
    if not seen[noun] then seen[noun] = true; top[#top + 1] = noun end
    if verb then
      verbs[noun] = verbs[noun] or {}
      table.insert(verbs[noun], verb)
    end
  end
  return top, verbs
end

local function visible(list)
  local out = {}
  for _, d in ipairs(list or {}) do if not d.hidden then out[#out + 1] = d end end
  return out
end

-- The data functions shared by bash and zsh (POSIX `case`, nothing else).
local function data_functions(commands)
  local top, verbs = tree(commands)
  local L = {}
  local function add(s, ...) L[#L + 1] = select("#", ...) > 0 and s:format(...) or s end
  add("_czctl_top() { echo %s; }", util.shell_quote(table.concat(top, " ")))
  add("_czctl_verbs() {")
  add("  case $1 in")
  for _, noun in ipairs(top) do
    if verbs[noun] then add("    %s) echo %s ;;", util.shell_quote(noun), util.shell_quote(table.concat(verbs[noun], " "))) end
  end
  add("  esac")
  add("}")
  add("_czctl_flags() {")
  add("  case $1 in")
  for _, c in ipairs(commands) do
    local words = {}
    for _, d in ipairs(visible(c.flags)) do
      for _, s in ipairs(spellings(d)) do words[#words + 1] = s end
    end
    add("    %s) echo %s ;;", key(c.name), util.shell_quote(table.concat(words, " ")))
  end
  add("    *) echo '--help --verbose --debug --version' ;;")
  add("  esac")
  add("}")
  add("_czctl_flagkind() {")
  add("  case $1:$2 in")
  for _, c in ipairs(commands) do
    for _, d in ipairs(visible(c.flags)) do
      local pats = {}
      for _, s in ipairs(spellings(d)) do pats[#pats + 1] = key(c.name) .. ":" .. s end
      add("    %s) echo %s ;;", table.concat(pats, "|"), util.shell_quote(flag_kind(d)))
    end
  end
  add("    *) echo bool ;;")
  add("  esac")
  add("}")
  add("_czctl_argkind() {")
  add("  case $1:$2 in")
  for _, c in ipairs(commands) do
    for i, a in ipairs(c.args or {}) do
      local kind = arg_kind(a)
      if kind ~= "" then
        add("    %s:%s) echo %s ;;", key(c.name), a.variadic and "*" or tostring(i), util.shell_quote(kind))
      end
    end
  end
  add("  esac")
  add("}")
  return table.concat(L, "\n")
end

-- The engine, in the syntax bash and zsh share: walks the words typed so far
-- (arrays given as arguments) and sets CZCTL_KIND (what to offer) and
-- CZCTL_CMD.
local ENGINE = [[
_czctl_state() {
  CZCTL_CMD="" CZCTL_KIND=""
  local w kind pos=0 skip=0 noun=""
  while [ $# -gt 1 ]; do
    w=$1; shift
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case $w in
      --) ;;
      -*=*) ;;
      -*) kind=$(_czctl_flagkind "$CZCTL_CMD" "$w"); [ "$kind" != bool ] && skip=1 ;;
      *)
        if [ -z "$noun" ]; then
          noun=$w
          if [ -z "$(_czctl_verbs "$w")" ]; then CZCTL_CMD=$w; fi
        elif [ -z "$CZCTL_CMD" ]; then
          CZCTL_CMD="${noun}_$w"
        else
          pos=$((pos + 1))
        fi ;;
    esac
  done
  local cur=$1
  if [ "$skip" = 1 ]; then
    CZCTL_KIND=$(_czctl_flagkind "$CZCTL_CMD" "$w")
  elif [ -z "$noun" ]; then
    case $cur in -*) CZCTL_KIND=flags ;; *) CZCTL_KIND="choice:$(_czctl_top)" ;; esac
  elif [ -z "$CZCTL_CMD" ]; then
    CZCTL_KIND="choice:$(_czctl_verbs "$noun")"
  else
    case $cur in
      -*) CZCTL_KIND=flags ;;
      *) CZCTL_KIND=$(_czctl_argkind "$CZCTL_CMD" $((pos + 1))) ;;
    esac
  fi
}]]

local function bash(commands)
  return table.concat({
    "# bash completion for czctl, generated by `czctl completion bash` from the",
    "# declarations of czctl's commands and recipes. Install:",
    "#   czctl completion bash > ~/.local/share/bash-completion/completions/czctl",
    data_functions(commands),
    ENGINE,
    [[
_czctl() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  _czctl_state "${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur"
  case $CZCTL_KIND in
    flags) COMPREPLY=($(compgen -W "$(_czctl_flags "$CZCTL_CMD")" -- "$cur")) ;;
    choice:*) COMPREPLY=($(compgen -W "${CZCTL_KIND#choice:}" -- "$cur")) ;;
    files) COMPREPLY=($(compgen -f -- "$cur")) ;;
    ""|value|bool) COMPREPLY=() ;;
    *) COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" __complete "$CZCTL_KIND" -- "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)" -- "$cur")) ;;
  esac
}
complete -o default -F _czctl czctl
]],
  }, "\n")
end

local function zsh(commands)
  return table.concat({
    "#compdef czctl",
    "# zsh completion for czctl, generated by `czctl completion zsh` from the",
    "# declarations of czctl's commands and recipes. Install as _czctl on $fpath.",
    data_functions(commands),
    ENGINE,
    [[
_czctl() {
  local cur=${words[CURRENT]}
  _czctl_state "${(@)words[2,CURRENT-1]}" "$cur"
  case $CZCTL_KIND in
    flags) compadd -- ${=$(_czctl_flags "$CZCTL_CMD")} ;;
    choice:*) compadd -- ${=CZCTL_KIND#choice:} ;;
    files) _files ;;
    ""|value|bool) ;;
    *) compadd -- ${(f)"$(${words[1]} __complete "$CZCTL_KIND" -- "${(@)words[2,CURRENT-1]}" 2>/dev/null)"} ;;
  esac
}
if [ "$funcstack[1]" = "_czctl" ]; then _czctl "$@"; else compdef _czctl czctl; fi
]],
  }, "\n")
end

local function fish_quote(s) return "'" .. tostring(s):gsub("\\", "\\\\"):gsub("'", "\\'") .. "'" end

local function fish(commands)
  local top, verbs = tree(commands)
  local L = {}
  local function add(s, ...) L[#L + 1] = select("#", ...) > 0 and s:format(...) or s end
  add("# fish completion for czctl, generated by `czctl completion fish` from the")
  add("# declarations of czctl's commands and recipes. Install:")
  add("#   czctl completion fish > ~/.config/fish/completions/czctl.fish")
  add("complete -c czctl -f")
  -- __czctl_is CMD: the words typed so far name command CMD ("service intercept").
  add("function __czctl_is")
  add("    set -l t (commandline -opc | string match -v -- '-*')")
  add("    set -l want (string split ' ' -- $argv[1])")
  add("    test (count $t) -gt (count $want); or return 1")
  add("    for i in (seq (count $want))")
  add("        test \"$t[(math $i + 1)]\" = \"$want[$i]\"; or return 1")
  add("    end")
  add("end")
  add("function __czctl_bare")
  add("    test (count (commandline -opc | string match -v -- '-*')) -eq 1")
  add("end")
  add("function __czctl_noun")
  add("    set -l t (commandline -opc | string match -v -- '-*')")
  add("    test (count $t) -eq 2; and test \"$t[2]\" = $argv[1]")
  add("end")
  add("function __czctl_names")
  add("    set -l t (commandline -opc)")
  add("    $t[1] __complete $argv[1] -- $t[2..-1] 2>/dev/null")
  add("end")
  local summaries = {}
  for _, c in ipairs(commands) do summaries[c.name] = c.summary end
  for _, noun in ipairs(top) do
    add("complete -c czctl -n __czctl_bare -a %s -d %s", fish_quote(noun),
        fish_quote(summaries[noun] or (verbs[noun] and ("commands: " .. table.concat(verbs[noun], ", ")) or "")))
    for _, verb in ipairs(verbs[noun] or {}) do
      add("complete -c czctl -n %s -a %s -d %s", fish_quote("__czctl_noun " .. noun), fish_quote(verb),
          fish_quote(summaries[noun .. " " .. verb] or ""))
    end
  end
  for _, c in ipairs(commands) do
    local cond = fish_quote("__czctl_is " .. fish_quote(c.name))
    for _, d in ipairs(visible(c.flags)) do
      local parts = { "complete -c czctl -n " .. cond, "-l " .. util.kebab(d.name) }
      if d.short then parts[#parts + 1] = "-s " .. d.short end
      local kind = flag_kind(d)
      if kind:find("^choice:") then
        parts[#parts + 1] = "-x -a " .. fish_quote(kind:sub(8))
      elseif kind == "files" then
        parts[#parts + 1] = "-r -F"
      elseif kind ~= "bool" and kind ~= "value" then
        parts[#parts + 1] = "-x -a " .. fish_quote("(__czctl_names " .. kind .. ")")
      elseif kind == "value" then
        parts[#parts + 1] = "-x"
      end
      parts[#parts + 1] = "-d " .. fish_quote(d.help or "")
      add(table.concat(parts, " "))
    end
    for _, a in ipairs(c.args or {}) do
      local kind = arg_kind(a)
      if kind:find("^choice:") then
        add("complete -c czctl -n %s -a %s", cond, fish_quote(kind:sub(8)))
      elseif kind == "files" then
        add("complete -c czctl -n %s -F", cond)
      elseif kind ~= "" then
        add("complete -c czctl -n %s -a %s", cond, fish_quote("(__czctl_names " .. kind .. ")"))
      end
    end
  end
  return table.concat(L, "\n") .. "\n"
end

--- The completion script for a shell.
---@param shell "bash"|"zsh"|"fish"
---@param commands table[] from czctl.cli.builtins.commands
---@return string
function M.script(shell, commands)
  if shell == "bash" then return bash(commands) end
  if shell == "zsh" then return zsh(commands) end
  return fish(commands)
end

-- The value of -n/-k/--context among typed words.
local function typed_flag(words, long, short)
  local value
  for i, w in ipairs(words) do
    if w == "--" .. long or (short and w == "-" .. short) then value = words[i + 1]
    else
      local v = w:match("^%-%-" .. long .. "=(.*)$") or (short and w:match("^%-" .. short .. "=?(.+)$"))
      if v then value = v end
    end
  end
  return value
end

local function kube_names(kind, words)
  local kube = require "czctl.kube"
  local kubeconfig = typed_flag(words, "kubeconfig", "k")
  local context = typed_flag(words, "context")
  local namespace = typed_flag(words, "namespace", "n")
  local client = kube.connect{ kubeconfig = kubeconfig, context = context, timeout = M.CLUSTER_TIMEOUT,
                               connect_timeout = M.CLUSTER_TIMEOUT, component = "completion" }
  if not client then return {} end
  local names = {}
  if kind == "sessions" then
    local sessions = require("czctl.session").discover(client, { namespace = namespace,
                                                                   all_namespaces = namespace == nil })
    for _, s in ipairs(sessions or {}) do if s.id ~= "-" then names[#names + 1] = s.id end end
  else
    local resource = kind == "services" and "Service" or "Namespace"
    local list = client:list(resource, { namespace = resource == "Service" and (namespace or client.namespace) or nil })
    for _, item in ipairs(list and list.items or {}) do
      if not (item.metadata.labels and item.metadata.labels["app.kubernetes.io/managed-by"] == "czctl") then
        names[#names + 1] = item.metadata.name
      end
    end
  end
  return names
end

--- Names for a completion kind, given the words typed so far. Cluster kinds
--- give up after CLUSTER_TIMEOUT seconds and return nothing.
---@param kind string
---@param words string[]
---@return string[]
function M.names(kind, words)
  words = words or {}
  if kind == "services" or kind == "sessions" or kind == "namespaces" then
    local ok, names = pcall(kube_names, kind, words)
    return ok and names or {}
  end
  if kind == "recipes" then
    local names = {}
    for _, r in ipairs(require("czctl.recipes").new():list()) do names[#names + 1] = r.name end
    return names
  end
  if kind == "commands" then
    local names = {}
    for _, c in ipairs(require("czctl.cli.builtins").commands(require("czctl.recipes").new())) do
      names[#names + 1] = (c.name:match("^%S+"))
    end
    return names
  end
  return {}
end

return M
