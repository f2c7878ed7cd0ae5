/*
 * fuzz.h: what every fuzz target in fuzz/ shares.
 *
 * A target is fuzz/fuzz_<name>.c defining LLVMFuzzerTestOneInput (and,
 * when it needs one-time set-up, LLVMFuzzerInitialize). Each is built two
 * ways (see the Makefile and docs/fuzzing.md):
 *   - `make fuzz`: with clang's libFuzzer, ASan and UBSan, into
 *     build/fuzz/bin/<name>, for coverage-guided runs;
 *   - with the normal compiler and fuzz/standalone.c as main, into
 *     tests/c/test_fuzz_<name>, which runs every input of
 *     fuzz/corpus/<name>/ once: the regression check of `make test`.
 * A target must free everything it allocates for one input, must not write
 * outside memory it owns (no files except memfds), and states the
 * properties it checks with FUZZ_CHECK: a violated property aborts like a
 * crash, so the fuzzer keeps the input.
 */
#ifndef CZCTL_FUZZ_H
#define CZCTL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* One Lua state for the whole run, made in LLVMFuzzerInitialize: standard
 * libraries and every czctl module preloaded (as in czctl), closed at exit
 * (so leak checkers see nothing), its Lua lines counted as coverage under
 * `make fuzz` (below). Aborts when it cannot be made. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
void czctl_preload_all(lua_State *L);

static lua_State *fuzz_lua;

#ifdef CZCTL_FUZZ_LUA_LINES
/* Coverage of the Lua source. Debian's liblua5.4.a is not instrumented, so
 * libFuzzer sees nothing of the Lua code a target runs (a Lua target would
 * reach "cov: 3" and shrink its corpus to one byte). `make fuzz` defines
 * CZCTL_FUZZ_LUA_LINES: a line hook then counts each pair (previous line,
 * this line) of Lua source executed in libFuzzer's extra counters (a
 * section libFuzzer reads and clears around every input, as it does its
 * own counters), so a new path through the Lua code is new coverage. */
#define FUZZ_LUA_COUNTERS (1u << 16)
static uint8_t fuzz_lua_counters[FUZZ_LUA_COUNTERS]
    __attribute__((section("__libfuzzer_extra_counters"), used));
static uintptr_t fuzz_lua_prev;

static void fuzz_lua_line(lua_State *L, lua_Debug *ar)
{
    if (!lua_getinfo(L, "S", ar))
        return;
    /* a chunk's source string lives as long as its functions: its address
     * names the file */
    uintptr_t here = (uintptr_t)ar->source * 31u + (uintptr_t)ar->currentline * 2654435761u;
    size_t i = (size_t)((here ^ (fuzz_lua_prev >> 1)) & (FUZZ_LUA_COUNTERS - 1));
    fuzz_lua_prev = here;
    if (fuzz_lua_counters[i] < 255)
        fuzz_lua_counters[i]++;
}
#define FUZZ_LUA_HOOK(L) lua_sethook((L), fuzz_lua_line, LUA_MASKLINE, 0)
#else
#define FUZZ_LUA_HOOK(L) ((void)(L))
#endif

static void fuzz_lua_close(void)
{
    lua_close(fuzz_lua);
}

static __attribute__((unused)) lua_State *fuzz_lua_state(void)
{
    if (!fuzz_lua) {
        if (!(fuzz_lua = luaL_newstate()))
            abort();
        luaL_openlibs(fuzz_lua);
        czctl_preload_all(fuzz_lua);
        FUZZ_LUA_HOOK(fuzz_lua);
        atexit(fuzz_lua_close);
    }
    return fuzz_lua;
}

#define FUZZ_CHECK(cond)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

/* Runs chunk, a Lua chunk returning a function, in the state of
 * fuzz_lua_state and keeps that function in the registry under key (so a
 * target's checks are written in Lua once, at initialisation). Aborts when
 * the chunk fails. Returns the state. */
static __attribute__((unused)) lua_State *fuzz_lua_function(const char *chunk, const char *key)
{
    lua_State *L = fuzz_lua_state();
    if (luaL_dostring(L, chunk) != LUA_OK) {
        fprintf(stderr, "%s: %s\n", key, lua_tostring(L, -1));
        abort();
    }
    lua_setfield(L, LUA_REGISTRYINDEX, key);
    return L;
}

/* Calls the function kept under key with the nargs values on top of the
 * stack (pushed after lua_getfield(L, LUA_REGISTRYINDEX, key)) and states
 * the property "it returns nil": a problem it returns, or an error it
 * raises, is printed and aborts. Leaves the stack empty. */
static __attribute__((unused)) void fuzz_lua_expect_nil(lua_State *L, int nargs, const char *key)
{
    int rc = lua_pcall(L, nargs, 1, 0);
    if (rc != LUA_OK || !lua_isnil(L, -1))
        fprintf(stderr, "%s: %s%s\n", key, rc != LUA_OK ? "the check raised: " : "", lua_tostring(L, -1));
    FUZZ_CHECK(rc == LUA_OK && lua_isnil(L, -1));
    lua_settop(L, 0);
}


#endif
