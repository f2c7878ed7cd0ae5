/*
 * test_upgrade.c: core/upgrade.c, the HTTP/1.1 Upgrade handshake of a
 * port-forward: Sec-WebSocket-Key/Accept (RFC 6455's own example), the
 * response head and its headers, and refusals turned into one line.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "upgrade.h"

struct head_case {
    const char *name;
    const char *text;
    long want;   /* -1 malformed, 0 incomplete, 1 complete (its whole length) */
    int status;
};

struct msg_case {
    const char *name;
    const char *body;
    const char *want;
};

int main(void)
{
    char accept[29];
    t_ok(up_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", accept) == 0, "up_ws_accept succeeds", "");
    t_ok(!strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "Sec-WebSocket-Accept of RFC 6455's example key", accept);

    unsigned char d[20];
    char hex[41];
    up_sha1("abc", 3, d);
    for (int i = 0; i < 20; i++)
        sprintf(hex + 2 * i, "%02x", d[i]);
    int sha_ok = !strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    up_sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, d);
    for (int i = 0; i < 20; i++)
        sprintf(hex + 2 * i, "%02x", d[i]);
    sha_ok &= !strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    t_ok(sha_ok, "SHA-1 of FIPS 180 test vectors (one block, two blocks)", hex);

    char k1[25], k2[25];
    t_ok(up_ws_key(k1) == 0 && up_ws_key(k2) == 0 && strlen(k1) == 24 && k1[22] == '=' && k1[23] == '=' &&
             strcmp(k1, k2) != 0,
         "Sec-WebSocket-Key is the base64 of 16 fresh random bytes", k1);

    static const struct head_case heads[] = {
        {"a 101 with headers", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
         1, 101},
        {"a 403 with an empty reason", "HTTP/1.1 403\r\nContent-Length: 0\r\n\r\n", 1, 403},
        {"bare LF line ends", "HTTP/1.1 400 Bad Request\nContent-Length: 2\n\n", 1, 400},
        {"a head without its empty line", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n", 0, 0},
        {"half a status line", "HTTP/1.", 0, 0},
        {"a status line that is not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", -1, 0},
        {"garbage before any line end", "\x16\x03\x01\x02", -1, 0},
        {"a status code out of range", "HTTP/1.1 999 Nope\r\n\r\n", -1, 0},
        {"a folded header line", "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", -1, 0},
        {"a header line without a colon", "HTTP/1.1 200 OK\r\nnocolon\r\n\r\n", -1, 0},
        {"a space in a header name", "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", -1, 0},
        {"a control character in a value", "HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n", -1, 0},
    };
    for (size_t i = 0; i < sizeof heads / sizeof *heads; i++) {
        int status = 0;
        const char *why = NULL;
        size_t len = strlen(heads[i].text);
        long got = up_parse_head(heads[i].text, len, &status, &why);
        long want = heads[i].want == 1 ? (long)len : heads[i].want;
        char name[200], diag[200];
        snprintf(name, sizeof name, "response head: %s -> %s", heads[i].name,
                 want > 0 ? "complete" : want == 0 ? "incomplete" : "refused");
        snprintf(diag, sizeof diag, "got %ld status %d (%s)", got, status, why ? why : "");
        t_ok(got == want && (want <= 0 || status == heads[i].status), name, diag);
    }
    static char longhead[UP_MAX_HEAD + 100];
    memcpy(longhead, "HTTP/1.1 200 OK\r\n", 17);
    for (size_t i = 17; i < sizeof longhead - 1; i += 10)
        memcpy(longhead + i, "X-A: bbb\r\n", sizeof longhead - 1 - i < 10 ? sizeof longhead - 1 - i : 10);
    int st;
    const char *why;
    t_ok(up_parse_head(longhead, sizeof longhead - 1, &st, &why) == -1 && strstr(why, "too long"),
         "a response head longer than 16 KiB is refused", NULL);

    const char *h = "HTTP/1.1 101 Switching Protocols\r\nupgrade:  WebSocket \r\nX-A: 1\r\nx-a: 2\r\n"
                    "Connection: keep-alive, Upgrade\r\n\r\n";
    char v[64];
    int hdr_ok = up_header(h, strlen(h), "Upgrade", v, sizeof v) && !strcmp(v, "WebSocket");
    hdr_ok &= up_header(h, strlen(h), "X-A", v, sizeof v) && !strcmp(v, "1, 2");
    hdr_ok &= !up_header(h, strlen(h), "Sec-WebSocket-Accept", v, sizeof v) && v[0] == '\0';
    hdr_ok &= up_header(h, strlen(h), "Connection", v, sizeof v) && up_has_token(v, "upgrade") &&
              !up_has_token(v, "upgrad");
    hdr_ok &= up_header(h, strlen(h), "X-A", v, 3) && !strcmp(v, "1,");
    t_ok(hdr_ok, "headers: case-insensitive names, trimmed values, repeats joined, tokens, bounded copies", v);

    static const struct msg_case msgs[] = {
        {"a Status's message",
         "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
         "\"message\":\"pods \\\"x\\\" not found\",\"reason\":\"NotFound\",\"code\":404}",
         "pods \"x\" not found"},
        {"the top-level message, not a cause's",
         "{\"details\":{\"causes\":[{\"message\":\"inner\"}]},\"message\":\"outer\"}", "outer"},
        {"escapes in the message", "{\"message\":\"a\\nb\\tc \\u00e9\\u0041\"}", "a b c \xc3\xa9" "A"},
        {"plain text on several lines", "unable to upgrade:\n  unable to negotiate protocol\r\n", "unable to upgrade: unable to negotiate protocol"},
        {"JSON without a message", "{\"kind\":\"Status\"}", "{\"kind\":\"Status\"}"},
        {"an unterminated JSON string", "{\"message\":\"cut off", "cut off"},
        {"an empty body", "", ""},
    };
    for (size_t i = 0; i < sizeof msgs / sizeof *msgs; i++) {
        char out[256], name[200];
        up_refusal_message(msgs[i].body, strlen(msgs[i].body), out, sizeof out);
        snprintf(name, sizeof name, "refusal message: %s", msgs[i].name);
        t_ok(!strcmp(out, msgs[i].want), name, out);
    }
    char small[8];
    up_one_line("abc d\xc3\xa9" "fgh", 11, small, sizeof small);
    t_ok(!strcmp(small, "abc d\xc3\xa9"), "one line is cut at the limit, never inside a UTF-8 sequence", small);
    up_one_line("abcd\xc3\xa9", 6, small, 6);
    t_ok(!strcmp(small, "abcd"), "a UTF-8 sequence that does not fit is left out whole", small);
    up_one_line("abcdef ghi", 10, small, 8);
    t_ok(!strcmp(small, "abcdef"), "a line cut right after a blank does not end with it", small);
    return t_done();
}
