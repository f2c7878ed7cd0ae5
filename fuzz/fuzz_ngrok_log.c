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
    L = fuzz_lua_state();
    if (luaL_dostring(L, check_lua) != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        abort();
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.check");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_settop(L, 0);
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.check");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_ngrok_log: %s\n", lua_tostring(L, -1));
        FUZZ_CHECK(!"the check itself raised");
    }
    if (!lua_isnil(L, -1))
        fprintf(stderr, "fuzz_ngrok_log: %s\n", lua_tostring(L, -1));
    FUZZ_CHECK(lua_isnil(L, -1));
    lua_settop(L, 0);
    return 0;
}
