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
 * (so leak checkers see nothing). Aborts when it cannot be made. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
void czctl_preload_all(lua_State *L);

static lua_State *fuzz_lua;

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

#endif
