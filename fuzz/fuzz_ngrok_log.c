/*
 * fuzz_ngrok_log.c: the ngrok agent's log lines as czctl.tunnel.ngrok reads
 * them (parse_log_line: JSON, logfmt as a fallback; Lua, run by the embedded
 * interpreter), one line per input line, as the follower hands them over.
 * Properties: a line gives nil or a table and never raises; a logfmt record
 * has string keys and values; a JSON line is what lua-cjson makes of it.
 */
#define _GNU_SOURCE
#include <string.h>

#include "fuzz.h"

static lua_State *L;

static const char check_lua[] =
    "local ngrok = require 'czctl.tunnel.ngrok'\n"
    "return function(text)\n"
    "  for line in (text .. '\\n'):gmatch('([^\\n]*)\\n') do\n"
    "    local ok, rec = pcall(ngrok.parse_log_line, line)\n"
    "    if not ok then return 'raised: ' .. tostring(rec) end\n"
    "    if rec ~= nil and type(rec) ~= 'table' then return 'a ' .. type(rec) end\n"
    "    if rec and line:sub(1, 1) ~= '{' then\n"
    "      for k, v in pairs(rec) do\n"
    "        if type(k) ~= 'string' or type(v) ~= 'string' then return 'logfmt field ' .. tostring(k) end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  return nil\n"
    "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    L = fuzz_lua_function(check_lua, "fuzz_ngrok_log");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_settop(L, 0);
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_ngrok_log");
    lua_pushlstring(L, (const char *)data, size);
    fuzz_lua_expect_nil(L, 1, "fuzz_ngrok_log");
    return 0;
}
