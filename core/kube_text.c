/*
 * kube_text.c: the text rules the Kubernetes client applies before anything
 * reaches libcurl: which API paths may be requested, where a URL keeps its
 * secret, and how a watch stream splits into event lines.
 *
 * Kept apart from kube.c (no libcurl, no Lua) so each rule is unit tested
 * and fuzzed on its own (tests/c/test_kube_text.c, fuzz/fuzz_text.c). Each
 * follows Go or client-go, so czctl refuses what kubectl refuses; messages
 * quote names as Go's %q does and never contain a credential.
 */
#define _GNU_SOURCE
#include "kubeconfig.h"
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* s[0..n) quoted as Go's %q quotes it (ASCII only), malloc'd or NULL. */
static char *go_quote(const char *s, size_t n)
{
    char *out = malloc(n * 4 + 3), *w = out;
    if (!out)
        return NULL;
    *w++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *w++ = '\\';
            *w++ = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            const char *named = strchr("\a\b\f\n\r\t\v", ch);
            if (ch && named) {
                *w++ = '\\';
                *w++ = "abfnrtv"[named - "\a\b\f\n\r\t\v"];
            } else {
                w += sprintf(w, "\\x%02x", ch);
            }
        } else {
            *w++ = (char)ch;
        }
    }
    *w++ = '"';
    *w = '\0';
    return out;
}

/* client-go's validation.IsValidPathSegmentName, its messages joined as Go
 * prints a []string ("[a b]"); "" when the name is valid. */
static const char *segment_problems(const char *name, size_t n)
{
    if (n == 1 && name[0] == '.')
        return "[may not be '.']";
    if (n == 2 && name[0] == '.' && name[1] == '.')
        return "[may not be '..']";
    int slash = memchr(name, '/', n) != NULL, pct = memchr(name, '%', n) != NULL;
    if (slash && pct)
        return "[may not contain '/' may not contain '%']";
    if (slash)
        return "[may not contain '/']";
    if (pct)
        return "[may not contain '%']";
    return "";
}

int kube_check_api_path(const char *path, char **err)
{
    *err = NULL;
    size_t plen = strcspn(path, "?");
    if (plen == 0 || path[0] != '/') {
        *err = kc_errf("invalid API path (it must start with '/')");
        return -1;
    }
    if (plen == 1)
        return 0;
    char *name = malloc(plen);   /* a decoded segment is never longer */
    if (!name) {
        *err = kc_errf("out of memory");
        return -1;
    }
    const char *prev = NULL;
    size_t prevlen = 0;
    for (const char *seg = path + 1; seg <= path + plen;) {
        const char *end = memchr(seg, '/', (size_t)(path + plen - seg));
        if (!end)
            end = path + plen;
        size_t n = 0;
        for (const char *p = seg; p < end; p++) {
            int hi, lo;
            if (*p == '%' && end - p >= 3 && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0) {
                name[n++] = (char)(hi * 16 + lo);
                p += 2;
            } else {
                name[n++] = *p;
            }
        }
        int is_ns = prev && prevlen == 10 && !memcmp(prev, "namespaces", 10) && end < path + plen;
        const char *problems = segment_problems(name, n);
        if (n == 0) {
            *err = kc_errf(is_ns ? "namespace may not be empty" : "resource name may not be empty");
        } else if (problems[0]) {
            char *q = go_quote(name, n);
            *err = q ? kc_errf("invalid %s %s: %s", is_ns ? "namespace" : "resource name", q, problems)
                     : kc_errf("out of memory");
            free(q);
        }
        if (*err) {
            free(name);
            return -1;
        }
        prev = seg;
        prevlen = (size_t)(end - seg);
        seg = end + 1;
    }
    free(name);
    return 0;
}

int kube_url_secret_span(const char *url, size_t *from, size_t *to)
{
    const char *authority = strstr(url, "://");
    authority = authority ? authority + 3 : url;
    const char *at = memrchr(authority, '@', strcspn(authority, "/?#"));
    if (!at)
        return 0;
    const char *colon = memchr(authority, ':', (size_t)(at - authority));
    *from = (size_t)((colon ? colon + 1 : authority) - url);
    *to = (size_t)(at - url);
    return 1;
}

const char *kube_watch_line(czctl_buf *b, int at_end, size_t *n)
{
    const char *line;
    while ((line = czctl_buf_line(b, at_end, n))) {
        while (*n > 0 && (line[*n - 1] == '\r' || line[*n - 1] == ' '))
            (*n)--;
        if (*n > 0)
            return line;   /* else a keep-alive blank line */
    }
    return NULL;
}
