/*
 * harness.h: TAP output and a Lua state for the C unit tests in tests/c.
 *
 * Each test is a Lua chunk run in a state with every czctl module preloaded,
 * so the tests drive the C code through the same bindings recipes use. A
 * chunk returns true, or false plus a diagnostic. Process-level facts (fds,
 * zombies) are checked from C through /proc.
 */
#ifndef CZCTL_TEST_HARNESS_H
#define CZCTL_TEST_HARNESS_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "czctl.h"

static int t_count, t_failed;

#define T_UNUSED __attribute__((unused))

static T_UNUSED void t_ok(int pass, const char *name, const char *diag)
{
    t_count++;
    if (!pass)
        t_failed++;
    printf("%sok %d - %s\n", pass ? "" : "not ", t_count, name);
    if (!pass && diag)
        printf("#   %s\n", diag);
    fflush(stdout);
}

static T_UNUSED int t_done(void)
{
    printf("1..%d\n", t_count);
    return t_failed ? 1 : 0;
}

static lua_State *t_state(void)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        puts("Bail out! cannot create a Lua state");
        exit(1);
    }
    luaL_openlibs(L);
    czctl_preload_all(L);
    return L;
}

/* Runs a Lua chunk as one TAP test: it passes when the chunk returns true. */
static T_UNUSED void t_lua(lua_State *L, const char *name, const char *code)
{
    int top = lua_gettop(L);
    const char *diag = NULL;
    int pass = 0;
    if (luaL_loadbuffer(L, code, strlen(code), name) != LUA_OK ||
        lua_pcall(L, 0, 2, 0) != LUA_OK) {
        diag = lua_tostring(L, -1);
    } else {
        pass = lua_toboolean(L, -2);
        if (!pass)
            diag = lua_isnoneornil(L, -1) ? "returned false" : luaL_tolstring(L, -1, NULL);
    }
    t_ok(pass, name, diag);
    lua_settop(L, top);
}

/* Runs a Lua chunk for its side effects; aborts the test program on error. */
static T_UNUSED void t_setup(lua_State *L, const char *code)
{
    if (luaL_dostring(L, code) != LUA_OK) {
        printf("Bail out! %s\n", lua_tostring(L, -1));
        exit(1);
    }
    lua_settop(L, 0);
}

/* Number of entries in /proc/<pid>/fd ("self" for this process), or -1. */
static T_UNUSED int t_count_fds(const char *pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/fd", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return strcmp(pid, "self") == 0 ? n - 1 : n;   /* minus opendir's own fd */
}

/* Number of this process's children in state Z (zombies). */
static T_UNUSED int t_count_zombies(void)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *rp = strrchr(buf, ')');
        char state;
        int ppid;
        if (rp && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 && ppid == (int)getpid() &&
            state == 'Z')
            n++;
    }
    closedir(d);
    return n;
}

#define LUA(...) #__VA_ARGS__

/*
 * A state for the tests that spawn processes or write files: globals proc and
 * sys (czctl.core.proc, czctl.core.sys) and tmp, a fresh directory that
 * t_remove_tmp deletes. Exits the program (Bail out!) when it cannot be made.
 */
static T_UNUSED lua_State *t_state_tmp(void)
{
    lua_State *L = t_state();
    t_setup(L, LUA(
        proc = require "czctl.core.proc"
        sys = require "czctl.core.sys"
        tmp = os.tmpname(); os.remove(tmp); assert(sys.mkdir_p(tmp))
    ));
    return L;
}

/* Deletes tmp and collects garbage, so that handles the tests dropped are
 * closed (their __gc) before the fd and zombie counts that follow. */
static T_UNUSED void t_remove_tmp(lua_State *L)
{
    t_setup(L, LUA(os.execute("rm -rf " .. tmp); collectgarbage(); collectgarbage()));
}

/* One test: this process holds as many fds as it did when fds_before was counted. */
static T_UNUSED void t_no_fd_leak(int fds_before, const char *name)
{
    int fds_after = t_count_fds("self");
    char diag[64];
    snprintf(diag, sizeof diag, "fds before %d, after %d", fds_before, fds_after);
    t_ok(fds_after == fds_before, name, diag);
}

#endif
