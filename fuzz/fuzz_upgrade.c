/*
 * fuzz_upgrade.c: what answers a port-forward's upgrade request, as
 * core/upgrade.c reads it: the response head, its headers, and a refusal's
 * body made into one line. The input is copied into an exact-size
 * allocation. Properties: a head's length is within the input and its
 * status in 100..599; header copies are NUL-terminated within their buffer;
 * one-line messages hold no control character, no leading or trailing
 * blank, and fit their buffer.
 */
#include <string.h>

#include "fuzz.h"
#include "upgrade.h"

static void check_line(const char *s, size_t cap)
{
    size_t n = strlen(s);
    FUZZ_CHECK(n < cap);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] != 0x7F);
    FUZZ_CHECK(n == 0 || (s[0] != ' ' && s[n - 1] != ' '));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size ? size : 1);
    if (!in)
        return 0;
    memcpy(in, data, size);
    int status = 0;
    const char *why = NULL;
    long hl = up_parse_head(in, size, &status, &why);
    FUZZ_CHECK(hl >= -1 && hl <= (long)size);
    if (hl < 0)
        FUZZ_CHECK(why != NULL);
    if (hl > 0) {
        FUZZ_CHECK(status >= 100 && status <= 599);
        static const char *names[] = {"Upgrade", "Connection", "Sec-WebSocket-Accept", "Content-Length"};
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
            char v[40];
            memset(v, 'x', sizeof v);
            up_header(in, (size_t)hl, names[i], v, sizeof v);
            FUZZ_CHECK(memchr(v, '\0', sizeof v) != NULL);
            up_has_token(v, "upgrade");
        }
    }
    char line[96];
    up_refusal_message(in, size, line, sizeof line);
    check_line(line, sizeof line);
    up_one_line(in, size, line, 7);
    check_line(line, 7);
    free(in);
    return 0;
}
