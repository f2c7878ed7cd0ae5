/*
 * test_kube_text.c: the text rules of the Kubernetes client
 * (core/kube_text.c): which header values may be sent (Go's rule), which
 * API paths may be requested (client-go's path segment names, kubectl's
 * messages), where a URL keeps its secret, and how a watch stream splits
 * into event lines whatever chunks it arrives in.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "harness.h"
#include "kubeconfig.h"

static void test_header_values(void)
{
    static const struct {
        const char *v;
        int ok;
    } cases[] = {
        {"Bearer abc", 1},          {"tok\tx", 1},   {"", 1}, {"caf\xc3\xa9", 1},
        {"tok\r\nX-Injected: yes", 0}, {"tok\nX: y", 0}, {"tok\r", 0}, {"a\x7f", 0}, {"a\x01", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        t_ok(czctl_header_value_ok(cases[i].v) == cases[i].ok,
             cases[i].ok ? "a header value Go sends is accepted" : "a control character (but tab) is refused",
             cases[i].v);
}

static void test_api_paths(void)
{
    static const struct {
        const char *path, *err;   /* err NULL: accepted */
    } cases[] = {
        {"/api/v1/namespaces/default/services/web", NULL},
        {"/apis/apps/v1/namespaces/default/deployments/web/scale", NULL},
        {"/api/v1/namespaces/default/services/web?labelSelector=a%3Db&x=..", NULL},
        {"/api/v1/namespaces/kube-system/serviceaccounts/system%3Aadmin", NULL},
        {"/", NULL},
        {"/version", NULL},
        {"/api/v1/namespaces/../services/..", "invalid namespace \"..\": [may not be '..']"},
        {"/api/v1/namespaces/default/services/..", "invalid resource name \"..\": [may not be '..']"},
        {"/api/v1/namespaces/default/services/.", "invalid resource name \".\": [may not be '.']"},
        {"/api/v1/namespaces/%2e%2E/services/x", "invalid namespace \"..\": [may not be '..']"},
        {"/api/v1/namespaces/default/services/a%2Fb", "invalid resource name \"a/b\": [may not contain '/']"},
        {"/api/v1/namespaces/default/services/a%25b", "invalid resource name \"a%b\": [may not contain '%']"},
        {"/api/v1/namespaces/default/services/a%b", "invalid resource name \"a%b\": [may not contain '%']"},
        {"/api/v1/namespaces/default/services/%2F%25",
         "invalid resource name \"/%\": [may not contain '/' may not contain '%']"},
        {"/api/v1/namespaces/default/services/", "resource name may not be empty"},
        {"/api/v1/namespaces//services/x", "namespace may not be empty"},
        {"/api/v1/namespaces/..", "invalid resource name \"..\": [may not be '..']"},
        {"/api/v1/namespaces/default/services/a%22%0Ab", NULL},
        {"/api/v1/namespaces/default/services/a%22%0A%01%25", "invalid resource name \"a\\\"\\n\\x01%\": [may not contain '%']"},
        {"api/v1", "invalid API path (it must start with '/')"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *err = NULL;
        int rc = kube_check_api_path(cases[i].path, &err);
        int pass = cases[i].err ? rc == -1 && err && !strcmp(err, cases[i].err) : rc == 0 && !err;
        char diag[512];
        snprintf(diag, sizeof diag, "%s -> %s", cases[i].path, err ? err : "accepted");
        t_ok(pass, cases[i].err ? "an API path client-go would not build is refused" : "an API path is accepted",
             diag);
        free(err);
    }
}

static void test_url_secrets(void)
{
    static const struct {
        const char *url, *secret;   /* NULL: none */
    } cases[] = {
        {"https://alice:s3cret@127.0.0.1:6443/x", "s3cret"},
        {"http://tok3n@proxy:3128", "tok3n"},
        {"https://127.0.0.1:6443/a@b", NULL},
        {"https://a:b:c@host", "b:c"},
        {"https://a@b@host/x", "a@b"},
        {"not a url at all", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t from = 0, to = 0;
        int has = kube_url_secret_span(cases[i].url, &from, &to);
        int pass = cases[i].secret ? has && to - from == strlen(cases[i].secret) &&
                                         !memcmp(cases[i].url + from, cases[i].secret, to - from)
                                   : !has;
        t_ok(pass, "the secret of a URL is found for redaction", cases[i].url);
    }
}

/* The event lines of stream when it arrives in chunks of n bytes, joined by '|'. */
static char *lines_in_chunks(const char *stream, size_t len, size_t n)
{
    czctl_buf b = {0}, out = {0};
    const char *line;
    size_t ln;
    for (size_t off = 0; off < len; off += n) {
        czctl_buf_add(&b, stream + off, len - off < n ? len - off : n);
        while ((line = kube_watch_line(&b, 0, &ln))) {
            czctl_buf_add(&out, line, ln);
            czctl_buf_add(&out, "|", 1);
        }
    }
    while ((line = kube_watch_line(&b, 1, &ln))) {
        czctl_buf_add(&out, line, ln);
        czctl_buf_add(&out, "|", 1);
    }
    czctl_buf_free(&b);
    return czctl_buf_take(&out, NULL);
}

static void test_watch_lines(void)
{
    static const char stream[] = "{\"type\":\"ADDED\"}\r\n\n  \r\n{\"type\":\"MODIFIED\"} \n{\"type\":\"BOOKMARK\"}\n"
                                 "{\"type\":\"ERROR\",\"object\":{\"code\":410}}";
    static const char want[] = "{\"type\":\"ADDED\"}|{\"type\":\"MODIFIED\"}|{\"type\":\"BOOKMARK\"}|"
                               "{\"type\":\"ERROR\",\"object\":{\"code\":410}}|";
    int all = 1;
    char diag[256] = "";
    for (size_t n = 1; n <= sizeof stream; n++) {
        char *got = lines_in_chunks(stream, sizeof stream - 1, n);
        if (!got || strcmp(got, want)) {
            all = 0;
            snprintf(diag, sizeof diag, "chunks of %zu: %s", n, got ? got : "(null)");
        }
        free(got);
    }
    t_ok(all, "a watch stream split at every byte gives the same event lines (CR and blank keep-alives dropped)",
         diag);
}

int main(void)
{
    test_header_values();
    test_api_paths();
    test_url_secrets();
    test_watch_lines();
    return t_done();
}
