/*
 * test_wire_corpus.c: runs the port-forward wire fuzz targets
 * (fuzz/fuzz_websocket.c, fuzz_spdy.c, fuzz_upgrade.c) once over every
 * input of their seed corpus, fuzz/corpus/<name>/, so `make test` (and
 * `make sanitize`, under ASan and UBSan) checks that no input ever found
 * breaks again; a violated property aborts.
 *
 * Temporary: the fuzz/ layout and its standalone runner come with the core
 * branch (wip/core: fuzz/standalone.c built as tests/c/test_fuzz_<name>).
 * Once that is merged this file goes and those runners take over.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"

#define LLVMFuzzerTestOneInput fuzz_websocket
#include "../../fuzz/fuzz_websocket.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_spdy
#include "../../fuzz/fuzz_spdy.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_upgrade
#include "../../fuzz/fuzz_upgrade.c"
#undef LLVMFuzzerTestOneInput

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs target over every file of fuzz/corpus/<name>; the count, or -1. */
static long run_corpus(const char *name, int (*target)(const uint8_t *, size_t))
{
    const char *root = getenv("CZCTL_ROOT");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fuzz/corpus/%s", root && *root ? root : ".", name);
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char *names[1024];
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d)) && count < 1024)
        if (e->d_name[0] != '.' && asprintf(&names[count], "%s/%s", dir, e->d_name) >= 0)
            count++;
    closedir(d);
    qsort(names, count, sizeof *names, by_name);
    long ran = 0;
    for (size_t i = 0; i < count; i++) {
        FILE *f = fopen(names[i], "rb");
        struct stat st;
        if (f && fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode)) {
            size_t n = (size_t)st.st_size;
            uint8_t *buf = malloc(n ? n : 1);   /* exact size: ASan sees a read past the end */
            if (buf && fread(buf, 1, n, f) == n) {
                target(buf, n);
                ran++;
            }
            free(buf);
        }
        if (f)
            fclose(f);
        free(names[i]);
    }
    return ran;
}

int main(void)
{
    static const struct {
        const char *name;
        int (*target)(const uint8_t *, size_t);
    } targets[] = {
        {"websocket", fuzz_websocket},
        {"spdy", fuzz_spdy},
        {"upgrade", fuzz_upgrade},
    };
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
        long ran = run_corpus(targets[i].name, targets[i].target);
        char name[200];
        snprintf(name, sizeof name, "fuzz/corpus/%s: %ld inputs ran without a crash or a broken property",
                 targets[i].name, ran);
        t_ok(ran > 0, name, "no corpus found (run from the repository or set CZCTL_ROOT)");
    }
    return t_done();
}
