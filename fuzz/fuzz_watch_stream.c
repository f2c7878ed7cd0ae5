/*
 * fuzz_watch_stream.c: what the API server sends back, as czctl reads it:
 * a watch stream split into event lines (kube_watch_line over a czctl_buf,
 * exactly as core/kube.c feeds it from libcurl's callbacks), each line and
 * the whole body decoded as JSON with lua-cjson (Status objects, lists,
 * events), as lua/czctl/kube.lua decodes them.
 *
 * The stream arrives in chunks whose sizes come from a generator seeded by
 * the input, and once one byte at a time. Properties: every way of
 * splitting the stream gives the same event lines as the whole stream at
 * once; no line is blank or ends in CR or space; their bytes, in order, are
 * a subsequence of the input; the buffer's limit is honoured.
 */
#define _GNU_SOURCE
#include <string.h>

#include "buf.h"
#include "czctl.h"
#include "fuzz.h"
#include "kubeconfig.h"

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    /* decode(s) -> true | false: cjson.decode under pcall, as kube.lua does */
    L = fuzz_lua_function("local cjson = require 'cjson'\n"
                          "return function(s)\n"
                          "  local ok, v = pcall(cjson.decode, s)\n"
                          "  if ok and type(v) == 'table' then\n"
                          "    local _ = v.kind, v.type, v.object, v.message, v.code, v.reason, v.details\n"
                          "  end\n"
                          "  return ok\n"
                          "end",
                          "fuzz.decode");
    return 0;
}

typedef struct lines {
    czctl_buf all;      /* line bytes, each followed by '\n' */
    size_t count;
} lines;

/* Drains every line b holds now into out. */
static void drain(czctl_buf *b, int at_end, lines *out)
{
    const char *line;
    size_t n;
    while ((line = kube_watch_line(b, at_end, &n))) {
        FUZZ_CHECK(n > 0 && line[n - 1] != '\r' && line[n - 1] != ' ' && !memchr(line, '\n', n));
        if (czctl_buf_add(&out->all, line, n) < 0 || czctl_buf_add(&out->all, "\n", 1) < 0)
            abort();
        out->count++;
    }
}

/* Feeds data in chunks of the sizes next_size gives; collects the lines. */
static void split(const uint8_t *data, size_t size, size_t (*next_size)(uint64_t *), uint64_t seed, lines *out)
{
    czctl_buf b = {.secret = 1};
    for (size_t off = 0; off < size;) {
        size_t n = next_size(&seed);
        if (n > size - off)
            n = size - off;
        if (czctl_buf_add(&b, data + off, n) < 0)
            abort();
        off += n;
        drain(&b, 0, out);
    }
    drain(&b, 1, out);
    FUZZ_CHECK(czctl_buf_unread(&b) == 0);
    czctl_buf_free(&b);
}

static size_t whole(uint64_t *s) { (void)s; return SIZE_MAX; }
static size_t one(uint64_t *s) { (void)s; return 1; }
static size_t random_size(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (size_t)(*s >> 33) % 97 + 1;
}

static void decode(const char *s, size_t n)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.decode");
    lua_pushlstring(L, s, n);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        abort();   /* decode itself must never raise past its pcall */
    lua_pop(L, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t seed = 0;
    for (size_t i = 0; i < size && i < 8; i++)
        seed = seed << 8 | data[i];
    lines a = {{0}, 0}, b = {{0}, 0}, c = {{0}, 0};
    split(data, size, whole, 0, &a);
    split(data, size, random_size, seed, &b);
    split(data, size, one, 0, &c);
    FUZZ_CHECK(a.count == b.count && a.count == c.count);
    FUZZ_CHECK(a.all.len == b.all.len && a.all.len == c.all.len);
    FUZZ_CHECK(!a.all.len || (!memcmp(a.all.data, b.all.data, a.all.len) && !memcmp(a.all.data, c.all.data, a.all.len)));
    /* the lines are the input's bytes, in order */
    size_t j = 0;
    for (size_t i = 0; i < a.all.len; i++) {
        if (a.all.data[i] == '\n')
            continue;
        while (j < size && data[j] != (uint8_t)a.all.data[i])
            j++;
        FUZZ_CHECK(j < size);
        j++;
    }
    /* each event, and the whole body (a Status or a list), as JSON */
    for (size_t i = 0, from = 0; i < a.all.len; i++)
        if (a.all.data[i] == '\n') {
            decode(a.all.data + from, i - from);
            from = i + 1;
        }
    decode((const char *)data, size);
    czctl_buf_free(&a.all);
    czctl_buf_free(&b.all);
    czctl_buf_free(&c.all);

    /* a limit is honoured whatever arrives */
    czctl_buf lim = {.limit = 64};
    for (size_t off = 0; off < size; off += 16) {
        size_t n = size - off < 16 ? size - off : 16;
        if (czctl_buf_add(&lim, data + off, n) < 0)
            break;
        FUZZ_CHECK(czctl_buf_unread(&lim) <= 64);
        size_t ln;
        while (kube_watch_line(&lim, 0, &ln))
            ;
    }
    czctl_buf_free(&lim);
    return 0;
}
