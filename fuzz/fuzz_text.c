/*
 * fuzz_text.c: the small text parsers of the core, one per first byte of
 * the input (the rest is the text):
 *   0 base64 (core/buf.c): decoding never writes past its buffer, refuses
 *     cleanly, and decode(encode(x)) == x;
 *   1 RFC 3339 timestamps (kc_parse_rfc3339, exec credential expiry);
 *   2 paths (kc_path_clean, kc_path_resolve): Go's filepath.Clean is
 *     idempotent, absolute stays absolute, no "//", "/./" or trailing '/';
 *   3 API paths (kube_check_api_path): a path it accepts has no segment
 *     that libcurl would resolve ("." or "..", also percent-encoded);
 *   4 URLs (kube_url_secret_span): the span lies inside the URL and, for
 *     "scheme://user:password@host", covers exactly the password;
 *   5 header values (czctl_header_value_ok) against Go's definition.
 */
#define _GNU_SOURCE
#include <string.h>

#include "buf.h"
#include "czctl.h"
#include "fuzz.h"
#include "kubeconfig.h"

static void fuzz_base64(const char *s, size_t n)
{
    czctl_buf d = {0}, e = {0}, d2 = {0};
    if (czctl_base64_decode(&d, s, n) == 0) {
        FUZZ_CHECK(d.len <= n / 4 * 3 + 3);
        FUZZ_CHECK(czctl_buf_add_base64(&e, d.data ? d.data : "", d.len) == 0);
        FUZZ_CHECK(czctl_base64_decode(&d2, e.data ? e.data : "", e.len) == 0);
        FUZZ_CHECK(d2.len == d.len && (!d.len || !memcmp(d.data, d2.data, d.len)));
    } else {
        FUZZ_CHECK(d.len == 0);
    }
    czctl_buf_reset(&e);
    FUZZ_CHECK(czctl_buf_add_base64(&e, s, n) == 0);
    czctl_buf_reset(&d2);
    FUZZ_CHECK(czctl_base64_decode(&d2, e.data ? e.data : "", e.len) == 0);
    FUZZ_CHECK(d2.len == n && (!n || !memcmp(d2.data, s, n)));
    czctl_buf_free(&d);
    czctl_buf_free(&e);
    czctl_buf_free(&d2);
}

static void fuzz_path(const char *s)
{
    char *c = kc_path_clean(s);
    if (!c)
        return;
    char *cc = kc_path_clean(c);
    FUZZ_CHECK(cc && !strcmp(c, cc));
    FUZZ_CHECK(c[0] != '\0');
    FUZZ_CHECK((s[0] == '/') == (c[0] == '/'));
    FUZZ_CHECK(!strstr(c, "//") && !strstr(c, "/./"));
    size_t n = strlen(c);
    FUZZ_CHECK(n == 1 || c[n - 1] != '/');
    FUZZ_CHECK(strcmp(c, "/..") && strncmp(c, "/../", 4));
    char *r = kc_path_resolve("/base/dir", s);
    FUZZ_CHECK(r && r[0] == '/');
    free(r);
    free(cc);
    free(c);
}

static int hexv(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void fuzz_api_path(const char *s)
{
    char *err = NULL;
    if (kube_check_api_path(s, &err) == 0) {
        FUZZ_CHECK(!err && s[0] == '/');
        size_t plen = strcspn(s, "?");
        if (plen > 1) {
            /* every segment, decoded here independently, is a valid name */
            for (const char *seg = s + 1; seg <= s + plen;) {
                const char *end = memchr(seg, '/', (size_t)(s + plen - seg));
                if (!end)
                    end = s + plen;
                char name[4096];
                size_t n = 0;
                for (const char *q = seg; q < end && n < sizeof name; q++) {
                    if (*q == '%' && end - q >= 3 && hexv(q[1]) >= 0 && hexv(q[2]) >= 0) {
                        name[n++] = (char)(hexv(q[1]) * 16 + hexv(q[2]));
                        q += 2;
                    } else {
                        name[n++] = *q;
                    }
                }
                FUZZ_CHECK(n > 0);
                FUZZ_CHECK(!(n == 1 && name[0] == '.') && !(n == 2 && name[0] == '.' && name[1] == '.'));
                FUZZ_CHECK(!memchr(name, '/', n) && !memchr(name, '%', n));
                seg = end + 1;
            }
        }
    } else {
        FUZZ_CHECK(err && err[0] && !strchr(err, '\n'));
    }
    free(err);
}

static void fuzz_url(const char *s)
{
    size_t from, to, n = strlen(s);
    if (kube_url_secret_span(s, &from, &to)) {
        FUZZ_CHECK(from <= to && to <= n && s[to] == '@');
    }
    const char *sep = strstr(s, "://");
    if (sep && !strpbrk(sep + 3, "/?#@")) {
        /* no '@' in the authority: nothing to hide */
        FUZZ_CHECK(!kube_url_secret_span(s, &from, &to));
    }
    /* scheme://user:password@host with plain parts: exactly the password */
    const char *user = sep ? sep + 3 : NULL;
    const char *colon = user ? strchr(user, ':') : NULL;
    const char *at = colon ? strchr(colon, '@') : NULL;
    if (at && !memchr(user, '@', (size_t)(colon - user)) && !strpbrk(at + 1, "@") &&
        strcspn(user, "/?#") > (size_t)(at - user)) {
        FUZZ_CHECK(kube_url_secret_span(s, &from, &to));
        FUZZ_CHECK(from == (size_t)(colon + 1 - s) && to == (size_t)(at - s));
    }
}

static void fuzz_header(const char *s, size_t n)
{
    int go_ok = 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        if ((b < 0x20 && b != '\t') || b == 0x7f)
            go_ok = 0;
    }
    FUZZ_CHECK(czctl_header_value_ok(s) == go_ok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t n = size - 1;
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, data + 1, n);
    s[n] = '\0';
    size_t sn = strlen(s);   /* the C-string parsers see up to the first NUL */
    time_t t;
    switch (data[0] % 6) {
    case 0: fuzz_base64(s, n); break;
    case 1: (void)kc_parse_rfc3339(s, &t); break;
    case 2: fuzz_path(s); break;
    case 3: fuzz_api_path(s); break;
    case 4: fuzz_url(s); break;
    case 5: fuzz_header(s, sn); break;
    }
    free(s);
    return 0;
}
