/*
 * main.c: the czctl executable.
 *
 * Creates the Lua state, registers the C modules and the embedded Lua sources
 * as package.preload loaders, installs the signal handlers and runs
 * require("czctl.cli").main(args) under lua_pcall. cli.main owns every
 * user-facing message and returns the exit code; this file reports only
 * internal errors (a Lua error escaping cli.main), with a traceback when
 * CZCTL_DEBUG=1 or --debug is given. It must not grow command-line logic.
 */
#define _GNU_SOURCE   /* pipe2, O_CLOEXEC, getrandom, ... */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "czctl.h"

/* Message handler: keeps the message, appends the traceback. */
static int main_msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Runs under lua_pcall so that memory errors while setting up are caught. */
static int main_run(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    luaL_openlibs(L);
    czctl_preload_all(L);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "czctl.cli");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc > 1 ? argc - 1 : 0, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_call(L, 1, 1);
    return 1;
}

static int want_debug(int argc, char **argv)
{
    const char *env = getenv("CZCTL_DEBUG");
    if (env && *env && strcmp(env, "0") != 0)
        return 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--debug") == 0)
            return 1;
    }
    return 0;
}

/* A closed 0, 1 or 2 would be reused by the next pipe or socket and then
 * clobbered when a child's stdio is set up; point them at /dev/null. */
static void main_fix_stdio(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            continue;
        int nfd = open("/dev/null", O_RDWR);
        if (nfd >= 0 && nfd != fd)
            close(nfd);   /* cannot happen: open returns the lowest free fd */
    }
}

int main(int argc, char **argv)
{
    main_fix_stdio();
    if (czctl_signal_init() != 0) {
        perror("czctl: internal error: signal set-up");
        return 1;
    }
    lua_State *L = luaL_newstate();
    if (!L) {
        fputs("czctl: internal error: cannot create Lua state\n", stderr);
        return 1;
    }
    int code;
    lua_pushcfunction(L, main_msghandler);
    lua_pushcfunction(L, main_run);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    if (lua_pcall(L, 2, 1, 1) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (!msg)
            msg = "(no message)";
        if (want_debug(argc, argv)) {
            fprintf(stderr, "czctl: internal error: %s\n", msg);
        } else {
            /* first line only: the traceback starts after it */
            const char *nl = strstr(msg, "\nstack traceback:");
            int len = nl ? (int)(nl - msg) : (int)strlen(msg);
            fprintf(stderr, "czctl: internal error: %.*s\n", len, msg);
        }
        code = 1;
    } else if (lua_isinteger(L, -1)) {
        lua_Integer n = lua_tointeger(L, -1);
        code = n < 0 || n > 255 ? 1 : (int)n;
    } else if (lua_isnumber(L, -1)) {
        lua_Number n = lua_tonumber(L, -1);
        code = n < 0 || n > 255 ? 1 : (int)n;
    } else if (lua_isboolean(L, -1)) {
        code = lua_toboolean(L, -1) ? 0 : 1;
    } else {
        code = 0;   /* nil: success */
    }
    fflush(stdout);
    lua_close(L);
    czctl_curl_cleanup();
    return code;
}
