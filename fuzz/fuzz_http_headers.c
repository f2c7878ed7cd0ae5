/*
 * fuzz_http_headers.c: response header blocks as czctl_push_headers
 * (core/net.c) turns them into the { lower-cased name = value } table both
 * the Kubernetes client and czctl.core.net return (Retry-After, Warning,
 * Content-Type...). Properties: names are lower case, never empty, never
 * contain ':' or a line feed; values have no line feed and no leading or
 * trailing blanks (nor a trailing CR).
 */
#define _GNU_SOURCE
#include <string.h>

#include "czctl.h"
#include "fuzz.h"

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    L = fuzz_lua_state();
    return 0;
}

static int push(lua_State *Ls)
{
    size_t n;
    const char *raw = lua_tolstring(Ls, 1, &n);
    czctl_push_headers(Ls, raw, n);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_settop(L, 0);
    lua_pushcfunction(L, push);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        abort();
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        size_t kl, vl;
        FUZZ_CHECK(lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING);
        const char *k = lua_tolstring(L, -2, &kl), *v = lua_tolstring(L, -1, &vl);
        FUZZ_CHECK(kl > 0 && !memchr(k, ':', kl) && !memchr(k, '\n', kl));
        for (size_t i = 0; i < kl; i++)
            FUZZ_CHECK(!(k[i] >= 'A' && k[i] <= 'Z'));
        FUZZ_CHECK(!memchr(v, '\n', vl));
        FUZZ_CHECK(vl == 0 || (v[0] != ' ' && v[0] != '\t' && v[vl - 1] != ' ' && v[vl - 1] != '\t' && v[vl - 1] != '\r'));
        lua_pop(L, 1);
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
