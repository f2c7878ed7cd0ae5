/*
 * standalone.c: a main() for the fuzz targets without libFuzzer: runs the
 * target once over every file of its corpus, so `make test` checks that no
 * input ever found (fuzz/corpus/<name>/, crashes included once fixed)
 * breaks again. Built with the normal compiler (no clang runtime needed).
 *
 *   tests/c/test_fuzz_<name> [-v] [FILE|DIR]...
 * <name> comes from the program's own name. Without arguments:
 * $CZCTL_ROOT/fuzz/corpus/<name> (or ./fuzz/corpus/<name>).
 * Prints TAP: one test per directory or file given. -v names each input on
 * stderr before running it; a crash also names the input it was running.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "fuzz.h"

/* libFuzzer's optional hook; targets without one leave it NULL. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));
/* Present in sanitizer builds only. */
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static const char *current;

static void name_current(void)
{
    if (current) {
        static const char msg[] = "# fuzz regression: crashed on input ";
        ssize_t r = write(2, msg, sizeof msg - 1);
        r = write(2, current, strlen(current));
        r = write(2, "\n", 1);
        (void)r;
    }
}

static void on_fatal(int sig)
{
    name_current();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs one file; 0 or -1 when it cannot be read. */
static int run_file(const char *path, int verbose)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    czctl_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (czctl_buf_add(&b, chunk, n) < 0) {
            fclose(f);
            czctl_buf_free(&b);
            return -1;
        }
    fclose(f);
    /* an exact-size copy, so ASan sees a read past the input's end */
    uint8_t *copy = malloc(b.len ? b.len : 1);
    if (!copy) {
        czctl_buf_free(&b);
        return -1;
    }
    if (b.len)
        memcpy(copy, b.data, b.len);
    size_t len = b.len;
    czctl_buf_free(&b);
    current = path;
    if (verbose)
        fprintf(stderr, "# %s\n", path);
    LLVMFuzzerTestOneInput(copy, len);
    current = NULL;
    free(copy);
    return 0;
}

/* Runs every regular file of dir in name order; the count, or -1. */
static long run_dir(const char *dir, int verbose)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char **names = NULL;
    size_t count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 256;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn)
                abort();
            names = nn;
        }
        if (asprintf(&names[count], "%s/%s", dir, e->d_name) < 0)
            abort();
        count++;
    }
    closedir(d);
    if (count)
        qsort(names, count, sizeof *names, by_name);
    long ran = 0;
    for (size_t i = 0; i < count; i++) {
        struct stat st;
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode) && run_file(names[i], verbose) == 0)
            ran++;
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    const char *self = strrchr(argv[0], '/');
    self = self ? self + 1 : argv[0];
    const char *name = strncmp(self, "test_fuzz_", 10) ? self : self + 10;
    int verbose = argc > 1 && !strcmp(argv[1], "-v");
    if (verbose) {
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(name_current);
    static const int fatal[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
    for (size_t i = 0; i < sizeof fatal / sizeof *fatal; i++)
        signal(fatal[i], on_fatal);
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);

    char *deflt = NULL;
    if (argc < 2) {
        const char *root = getenv("CZCTL_ROOT");
        if (asprintf(&deflt, "%s/fuzz/corpus/%s", root && root[0] ? root : ".", name) < 0)
            return 1;
    }
    int failed = 0, n = 0;
    for (int i = 1; i < (deflt ? 2 : argc); i++) {
        const char *p = deflt ? deflt : argv[i];
        struct stat st;
        long ran = -1;
        if (stat(p, &st) == 0)
            ran = S_ISDIR(st.st_mode) ? run_dir(p, verbose) : run_file(p, verbose) == 0;
        n++;
        if (ran > 0) {
            printf("ok %d - %s: %ld input%s of %s ran without a crash or a broken property\n", n, name, ran,
                   ran == 1 ? "" : "s", p);
        } else {
            failed = 1;
            printf("not ok %d - %s: no input in %s\n", n, name, p);
        }
    }
    printf("1..%d\n", n);
    free(deflt);
    return failed;
}
