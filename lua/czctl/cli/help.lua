-- czctl.cli.help: the help text of commands, generated from their
-- declarations (summary, usage, description, arguments, flags with their
-- spellings, choices and defaults). Hidden flags are left out. Pure text.
local util = require "czctl.util"
local flagmod = require "czctl.cli.flags"

local M = {}

local spellings, arg_label = flagmod.spellings, flagmod.arg_label

---@param d table
---@return string|nil
function M.default_text(d)
  local parts = {}
  if d.env then parts[#parts + 1] = "$" .. d.env end
  local v = d.default
  if v ~= nil and not (d.type == "boolean" and v == false) then
    if type(v) == "table" then
      local items = {}
      for _, x in ipairs(v) do items[#items + 1] = string.format("%q", tostring(x)) end
      parts[#parts + 1] = "[" .. table.concat(items, ", ") .. "]"
    elseif type(v) == "string" then
      parts[#parts + 1] = string.format("%q", v)
    else
      parts[#parts + 1] = tostring(v)
    end
  end
  if #parts == 0 then return nil end
  return "default " .. table.concat(parts, ", else ")
end

---@param decls table[]
---@return string[][] rows {left, text}
function M.flag_rows(decls)
  local rows = {}
  for _, d in ipairs(decls) do
    if not d.hidden then
      local left = (d.short and ("-" .. d.short .. ", ") or "    ") .. "--" .. util.kebab(d.name)
      if d.type ~= "boolean" then
        left = left .. " " .. (d.metavar or (d.type == "list" and "string" or d.type))
      end
      local notes = {}
      local alts = {}
      for _, s in ipairs(spellings(d)) do
        if s ~= util.kebab(d.name) then alts[#alts + 1] = "--" .. s end
      end
      if #alts > 0 then notes[#notes + 1] = "also " .. table.concat(alts, ", ") end
      if d.type == "list" then notes[#notes + 1] = "repeatable" end
      if d.choices then notes[#notes + 1] = "one of " .. table.concat(d.choices, ", ") end
      if d.required then notes[#notes + 1] = "required" end
      local dt = M.default_text(d)
      if dt then notes[#notes + 1] = dt end
      local text = d.help or ""
      if #notes > 0 then text = text .. (text ~= "" and " " or "") .. "(" .. table.concat(notes, "; ") .. ")" end
      rows[#rows + 1] = { left, text }
    end
  end
  return rows
end

---@param rows string[][]
---@return string
function M.format_rows(rows)
  local width = 0
  for _, r in ipairs(rows) do width = math.max(width, utf8.len(r[1]) or #r[1]) end
  local lines = {}
  for _, r in ipairs(rows) do
    local pad = string.rep(" ", width - (utf8.len(r[1]) or #r[1]) + 3)
    lines[#lines + 1] = ("  " .. r[1] .. (r[2] ~= "" and pad .. r[2] or "")):gsub("%s+$", "")
  end
  return table.concat(lines, "\n")
end

---@param recipe table
---@param arg_decls table[]
---@return string
function M.usage_words(recipe, arg_decls)
  if recipe.usage then return recipe.usage end
  local words = {}
  for _, a in ipairs(arg_decls) do
    local w = arg_label(a) .. (a.variadic and "..." or "")
    words[#words + 1] = a.required and w or "[" .. w .. "]"
  end
  return table.concat(words, " ")
end

--- Help text generated from a recipe's declarations.
---@param command string e.g. "service intercept"
---@param recipe table
---@return string
function M.help_text(command, recipe)
  local flags, args = flagmod.prepare_spec(recipe, command)
  local out = {}
  if recipe.summary then out[#out + 1] = recipe.summary .. "\n" end
  local usage = M.usage_words(recipe, args)
  if not usage:find("flags", 1, true) then usage = util.trim(usage .. " [flags]") end
  out[#out + 1] = "Usage:\n  czctl " .. command .. " " .. usage .. "\n"
  if recipe.description then out[#out + 1] = util.trim(recipe.description) .. "\n" end
  if #args > 0 then
    local rows = {}
    for _, a in ipairs(args) do
      local notes = {}
      if a.required then notes[#notes + 1] = "required" end
      if a.default ~= nil then notes[#notes + 1] = string.format("default %q", tostring(a.default)) end
      local text = a.help or ""
      if #notes > 0 then text = text .. (text ~= "" and " " or "") .. "(" .. table.concat(notes, "; ") .. ")" end
      rows[#rows + 1] = { arg_label(a) .. (a.variadic and "..." or ""), text }
    end
    if recipe.command then rows[#rows + 1] = { "-- CMD [ARGS...]", recipe.command.help or "" } end
    out[#out + 1] = "Arguments:\n" .. M.format_rows(rows) .. "\n"
  end
  local own, global = {}, {}
  for _, d in ipairs(flags) do
    if d.global then global[#global + 1] = d else own[#own + 1] = d end
  end
  if #own > 0 then out[#out + 1] = "Flags:\n" .. M.format_rows(M.flag_rows(own)) .. "\n" end
  out[#out + 1] = "Global flags:\n" .. M.format_rows(M.flag_rows(global)) .. "\n"
  if recipe.examples and #recipe.examples > 0 then
    local ex = {}
    for _, e in ipairs(recipe.examples) do ex[#ex + 1] = "  " .. e end
    out[#out + 1] = "Examples:\n" .. table.concat(ex, "\n") .. "\n"
  end
  return table.concat(out, "\n")
end

return M
