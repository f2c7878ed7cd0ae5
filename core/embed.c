/*
 * embed.c: serves the Lua sources compiled into the binary.
 *
 * czctl_preload_all() fills package.preload with the C modules, cjson and
 * one loader per embedded Lua module, so `require` finds everything without
 * touching the file system and nothing is loaded before it is required
 * (startup stays lean). czctl.core.embed lets cli.lua list and read the
 * built-in modules and recipes. This file must not run any Lua code at
 * startup.
 */
#define _GNU_SOURCE   /* pipe2, O_CLOEXEC, getrandom, RTLD_NOLOAD, ... */
#include <dlfcn.h>
#include <link.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lua5.4/lua-cjson.h>
#include <yaml.h>

#include "czctl.h"
#include "embed.h"

#ifndef CZCTL_VERSION
#define CZCTL_VERSION "0.0.0-dev"
#endif
#ifndef CZCTL_COMMIT
#define CZCTL_COMMIT "unknown"
#endif

static const struct czctl_embedded *embed_find(char kind, const char *name)
{
    size_t lo = 0, hi = czctl_embedded_count;
    while (lo < hi) {   /* sorted by kind, then name */
        size_t mid = lo + (hi - lo) / 2;
        const struct czctl_embedded *e = &czctl_embedded_files[mid];
        int c = e->kind != kind ? (e->kind < kind ? -1 : 1) : strcmp(e->name, name);
        if (c == 0)
            return e;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* package.preload loader for one embedded module: upvalue 1 is its index.
 * Raises the chunk's syntax error (with file:line) like a file loader. */
static int embed_loader(lua_State *L)
{
    const struct czctl_embedded *e =
        &czctl_embedded_files[lua_tointeger(L, lua_upvalueindex(1))];
    if (luaL_loadbufferx(L, (const char *)e->data, e->len, e->chunkname, "t") != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, e->name);
    lua_pushstring(L, e->chunkname + 1);
    lua_call(L, 2, 1);
    return 1;
}

static int embed_names(lua_State *L, char kind)
{
    lua_newtable(L);
    lua_Integer n = 0;
    for (size_t i = 0; i < czctl_embedded_count; i++) {
        if (czctl_embedded_files[i].kind != kind)
            continue;
        lua_pushstring(L, czctl_embedded_files[i].name);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static int embed_source(lua_State *L, char kind)
{
    const char *name = luaL_checkstring(L, 1);
    const struct czctl_embedded *e = embed_find(kind, name);
    if (!e) {
        luaL_pushfail(L);
        lua_pushfstring(L, "no built-in %s named '%s'",
                        kind == 'm' ? "module" : "recipe", name);
        return 2;
    }
    lua_pushlstring(L, (const char *)e->data, e->len);
    lua_pushstring(L, e->chunkname);
    return 2;
}

/* embed.modules() -> sorted list of built-in module names */
static int embed_modules(lua_State *L) { return embed_names(L, 'm'); }
/* embed.recipes() -> sorted list of built-in recipe names */
static int embed_recipes(lua_State *L) { return embed_names(L, 'r'); }
/* embed.module_source(name) -> source, chunkname | nil, msg */
static int embed_module_source(lua_State *L) { return embed_source(L, 'm'); }
/* embed.recipe_source(name) -> source, chunkname | nil, msg */
static int embed_recipe_source(lua_State *L) { return embed_source(L, 'r'); }

/* dl_iterate_phdr callback: stops (returns 1) at a loaded libcurl. */
static int embed_curl_loaded(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    return info->dlpi_name && strstr(info->dlpi_name, "/libcurl.so") != NULL;
}

/*
 * embed.versions([load_curl]) -> { lua =, libyaml =, commit =, libcurl = }
 * The versions of the libraries built in, and of libcurl only when it is
 * already loaded (core/curl_lazy.c loads it on first use, and `czctl
 * version` must not pay for its ~30 libraries) or when load_curl is true.
 * libcurl is absent from the table when it is not loaded or cannot be.
 */
static int embed_versions(lua_State *L)
{
    int load_curl = lua_toboolean(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushliteral(L, LUA_RELEASE);
    lua_setfield(L, -2, "lua");
    lua_pushstring(L, yaml_get_version_string());
    lua_setfield(L, -2, "libyaml");
    lua_pushliteral(L, CZCTL_COMMIT);
    lua_setfield(L, -2, "commit");
    /* Asked without dlopen when not loading: even an RTLD_NOLOAD lookup
     * would search for the library. */
    void *curl = NULL;
    if (load_curl || dl_iterate_phdr(embed_curl_loaded, NULL))
        curl = dlopen("libcurl.so.4", RTLD_LAZY | RTLD_LOCAL);
    if (curl) {
        char *(*version)(void);
        *(void **)&version = dlsym(curl, "curl_version");
        if (version) {
            /* "libcurl/7.88.1 OpenSSL/3.0.11 ...": the first word's number */
            const char *v = version();
            const char *slash = v ? strchr(v, '/') : NULL;
            size_t n = slash ? strcspn(slash + 1, " ") : 0;
            if (n > 0) {
                lua_pushlstring(L, slash + 1, n);
                lua_setfield(L, -2, "libcurl");
            }
        }
        dlclose(curl);
    }
    return 1;
}

static const luaL_Reg embed_funcs[] = {
    {"module_source", embed_module_source},
    {"modules", embed_modules},
    {"recipe_source", embed_recipe_source},
    {"recipes", embed_recipes},
    {"versions", embed_versions},
    {NULL, NULL},
};

int luaopen_czctl_core_embed(lua_State *L)
{
    luaL_newlib(L, embed_funcs);
    lua_pushliteral(L, CZCTL_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}

void czctl_preload_all(lua_State *L)
{
    static const luaL_Reg cmods[] = {
        {"cjson", luaopen_cjson},
        {"czctl.core.embed", luaopen_czctl_core_embed},
        {"czctl.core.kube", luaopen_czctl_core_kube},
        {"czctl.core.landing", luaopen_czctl_core_landing},
        {"czctl.core.net", luaopen_czctl_core_net},
        {"czctl.core.proc", luaopen_czctl_core_proc},
        {"czctl.core.sys", luaopen_czctl_core_sys},
        {NULL, NULL},
    };
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const luaL_Reg *m = cmods; m->name; m++) {
        lua_pushcfunction(L, m->func);
        lua_setfield(L, -2, m->name);
    }
    for (size_t i = 0; i < czctl_embedded_count; i++) {
        if (czctl_embedded_files[i].kind != 'm')
            continue;
        lua_pushinteger(L, (lua_Integer)i);
        lua_pushcclosure(L, embed_loader, 1);
        lua_setfield(L, -2, czctl_embedded_files[i].name);
    }
    lua_pop(L, 1);
}
