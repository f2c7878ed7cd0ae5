/*
 * fuzz_kubeconfig.c: kubeconfig loading (core/kubeconfig.c, core/kc_yaml.c)
 * from arbitrary files, exactly as `czctl --kubeconfig FILE` and
 * KUBECONFIG=a:b load them.
 *
 * The input is one file, or several separated by lines "#---file---"
 * (merged through KUBECONFIG, first file wins). Files are memfds, named by
 * /proc/self/fd/N paths, so nothing touches the disk. Properties:
 *   - a load either succeeds with a complete configuration (context,
 *     cluster, server, namespace, auth set) or fails with a one-line error;
 *   - the bearer token of a loaded configuration is exactly its token field;
 *   - the header check (czctl_header_value_ok) agrees with a byte-by-byte
 *     definition of Go's rule.
 * Certificate, key and token files the input names are never read.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "czctl.h"
#include "fuzz.h"
#include "kubeconfig.h"

#define MAX_FILES 4
#define SEP "#---file---\n"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    unsetenv("KUBECONFIG");
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    setenv("HOME", "/nonexistent-fuzz-home", 1);
    return 0;
}

static int memfile(const uint8_t *p, size_t n)
{
    int fd = memfd_create("kubeconfig", MFD_CLOEXEC);
    if (fd < 0)
        abort();
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            abort();
        p += w;
        n -= (size_t)w;
    }
    return fd;
}

static void check_loaded(const kc_config *c)
{
    FUZZ_CHECK(c->context && c->cluster && c->user && c->namespace && c->namespace[0] && c->source);
    FUZZ_CHECK(c->server && c->server[0]);
    FUZZ_CHECK(c->auth);
    if (c->exec) {
        FUZZ_CHECK(c->exec->command && c->exec->api_version && c->exec->interactive_mode);
    }
    if (!c->token_file) {
        char *err = NULL;
        char *tok = kubeconfig_bearer_token(c, &err);
        FUZZ_CHECK(!err);
        FUZZ_CHECK((tok == NULL) == (c->token == NULL));
        FUZZ_CHECK(!tok || !strcmp(tok, c->token));
        if (tok) {
            int go_ok = 1;   /* Go's httpguts.ValidHeaderFieldValue */
            for (const char *p = tok; *p; p++)
                if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
                    go_ok = 0;
            FUZZ_CHECK(czctl_header_value_ok(tok) == go_ok);
        }
        free(tok);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fds[MAX_FILES], nfiles = 0;
    const uint8_t *p = data, *end = data + size;
    while (nfiles < MAX_FILES) {
        const uint8_t *sep = nfiles < MAX_FILES - 1 ? memmem(p, (size_t)(end - p), SEP, strlen(SEP)) : NULL;
        const uint8_t *stop = sep ? sep : end;
        fds[nfiles++] = memfile(p, (size_t)(stop - p));
        if (!sep)
            break;
        p = sep + strlen(SEP);
    }
    char list[MAX_FILES * 32] = "", path[32];
    for (int i = 0; i < nfiles; i++) {
        snprintf(path, sizeof path, "%s/proc/self/fd/%d", i ? ":" : "", fds[i]);
        strcat(list, path);
    }
    kc_options opts = {0};
    if (nfiles == 1)
        opts.kubeconfig = list;
    else
        setenv("KUBECONFIG", list, 1);

    kc_config *c = NULL;
    char *err = NULL;
    if (kubeconfig_load(&opts, &c, &err) == 0) {
        FUZZ_CHECK(c && !err);
        check_loaded(c);
    } else {
        FUZZ_CHECK(!c && err && err[0] && !strchr(err, '\n'));
    }
    kubeconfig_free(c);
    free(err);
    unsetenv("KUBECONFIG");
    for (int i = 0; i < nfiles; i++)
        close(fds[i]);
    return 0;
}
