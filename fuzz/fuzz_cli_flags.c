/*
 * fuzz_cli_flags.c: the command-line parser (czctl.cli.flags, Lua, run by
 * the embedded interpreter exactly as czctl runs it) over arbitrary argv.
 *
 * The input is argv, its words separated by NUL bytes. The declarations are
 * those of a recipe like service-intercept: the shared kube and output
 * sets (czctl.flags) plus flags of every type (integer with a short letter,
 * number, boolean, list, string with choices and an alias, a required one
 * half the time) and a required and a variadic argument. Properties: parse
 * either returns flags, args, positional and sources, every flag of its
 * declared type and every source "flag", "env" or "default", or raises a
 * usage error (one line, exit 2 for czctl); any other Lua error (an
 * internal error a user would see) is a finding.
 */
#define _GNU_SOURCE
#include <string.h>

#include "fuzz.h"

static lua_State *L;

/* check(argv_table, required) -> nil | problem: runs parse, checks its result */
static const char check_lua[] =
    "local flags = require 'czctl.cli.flags'\n"
    "local shared = require 'czctl.flags'\n"
    "local errors = require 'czctl.cli.errors'\n"
    "local function spec(required)\n"
    "  local recipe = { run = function() end,\n"
    "    flags = shared.join({\n"
    "      { name = 'remote-port', short = 'r', type = 'integer' },\n"
    "      { name = 'ratio', type = 'number', default = 0.5 },\n"
    "      { name = 'wait', short = 'w', type = 'boolean' },\n"
    "      { name = 'header', short = 'x', type = 'list', env = 'FUZZ_HEADERS' },\n"
    "      { name = 'tunnel', type = 'string', choices = { 'ngrok', 'direct' }, aliases = { 'via' } },\n"
    "      { name = 'localPort', short = 'l', type = 'integer', required = required },\n"
    "    }, shared.kube{ namespace_default = 'default' }, shared.output()),\n"
    "    args = { { name = 'service', required = true }, { name = 'rest', variadic = true } } }\n"
    "  return flags.prepare_spec(recipe, 'recipe fuzz')\n"
    "end\n"
    "local want = { string = 'string', number = 'number', integer = 'number', boolean = 'boolean', list = 'table' }\n"
    "return function(argv, required)\n"
    "  local decls, args = spec(required)\n"
    "  local ok, r = pcall(flags.parse, decls, args, argv, { command = 'fuzz', getenv = function() return nil end })\n"
    "  if not ok then\n"
    "    if errors.is_usage_error(r) then\n"
    "      if type(r.message) ~= 'string' or r.message == '' then return 'a usage error without a message' end\n"
    "      return nil\n"
    "    end\n"
    "    return 'not a usage error: ' .. errors.text(r)\n"
    "  end\n"
    "  if type(r) ~= 'table' or type(r.flags) ~= 'table' or type(r.args) ~= 'table' then return 'no result' end\n"
    "  for _, d in ipairs(decls) do\n"
    "    local v, src = r.flags[d.name], r.sources[d.name]\n"
    "    if v ~= nil and type(v) ~= want[d.type] then return d.name .. ' has type ' .. type(v) end\n"
    "    if d.type == 'integer' and v ~= nil and math.type(v) ~= 'integer' then return d.name .. ' not an integer' end\n"
    "    if src ~= nil and src ~= 'flag' and src ~= 'env' and src ~= 'default' then return 'source ' .. tostring(src) end\n"
    "    if d.required and v == nil then return 'required ' .. d.name .. ' missing' end\n"
    "    if d.choices and type(v) == 'string' then\n"
    "      local found = false\n"
    "      for _, c in ipairs(d.choices) do found = found or c == v end\n"
    "      if not found then return d.name .. ' = ' .. v .. ' not a choice' end\n"
    "    end\n"
    "  end\n"
    "  if type(r.args.service) ~= 'string' then return 'service missing' end\n"
    "  return nil\n"
    "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    L = fuzz_lua_function(check_lua, "fuzz_cli_flags");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    lua_settop(L, 0);
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_cli_flags");
    lua_newtable(L);
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    for (lua_Integer i = 1; p <= end; i++) {
        const char *nul = memchr(p, '\0', (size_t)(end - p));
        const char *stop = nul ? nul : end;
        if (stop == end && p == end && i > 1)
            break;
        lua_pushlstring(L, p, (size_t)(stop - p));
        lua_rawseti(L, -2, i);
        p = stop + 1;
    }
    lua_pushboolean(L, data[0] & 1);
    fuzz_lua_expect_nil(L, 2, "fuzz_cli_flags");
    return 0;
}
