/*
 * upgrade.c: the HTTP/1.1 Upgrade handshake of a port-forward (see
 * upgrade.h). It must stay pure (no I/O, no Lua, no allocation) and never
 * read past the bytes it is given: it parses what a server, or whatever
 * answers in its place, sends.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <errno.h>

#include "buf.h"

#include "upgrade.h"

/* ---- response head --------------------------------------------------------- */

static int up_is_tchar(unsigned char c)
{
    return c > 0x20 && c < 0x7F && !strchr("()<>@,;:\\\"/[]?={}", c);
}

/* The next line of buf[pos..end): its end (before CR LF or LF) in *eol and
 * the start of the following line in *next; 0 when there is no LF. */
static int up_line(const char *buf, size_t pos, size_t end, size_t *eol, size_t *next)
{
    const char *nl = memchr(buf + pos, '\n', end - pos);
    if (!nl)
        return 0;
    size_t e = (size_t)(nl - buf);
    *next = e + 1;
    if (e > pos && buf[e - 1] == '\r')
        e--;
    *eol = e;
    return 1;
}

long up_parse_head(const char *buf, size_t len, int *status, const char **why)
{
    size_t end = len < UP_MAX_HEAD ? len : UP_MAX_HEAD, eol, next;
    *why = NULL;
    if (!up_line(buf, 0, end, &eol, &next)) {
        if (len >= UP_MAX_HEAD) {
            *why = "response head too long";
            return -1;
        }
        /* refuse early what cannot become a status line */
        if (memcmp(buf, "HTTP/1.", len < 7 ? len : 7) != 0) {
            *why = "not an HTTP/1.x response";
            return -1;
        }
        return 0;
    }
    const char *s = buf;
    if (eol < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ' ||
        s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9' ||
        (eol > 12 && s[12] != ' ')) {
        *why = "not an HTTP/1.x response";
        return -1;
    }
    for (size_t i = 12; i < eol; i++)
        if ((unsigned char)s[i] < 0x20 && s[i] != '\t') {
            *why = "control character in the status line";
            return -1;
        }
    *status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    for (size_t pos = next;;) {
        if (!up_line(buf, pos, end, &eol, &next)) {
            if (len >= UP_MAX_HEAD) {
                *why = "response head too long";
                return -1;
            }
            return 0;
        }
        if (eol == pos)
            return (long)next;   /* the empty line */
        if (buf[pos] == ' ' || buf[pos] == '\t') {
            *why = "folded header line";
            return -1;
        }
        size_t colon = pos;
        while (colon < eol && buf[colon] != ':') {
            if (!up_is_tchar((unsigned char)buf[colon])) {
                *why = "malformed header name";
                return -1;
            }
            colon++;
        }
        if (colon == eol || colon == pos) {
            *why = "header line without a name and a colon";
            return -1;
        }
        for (size_t i = colon + 1; i < eol; i++)
            if (((unsigned char)buf[i] < 0x20 && buf[i] != '\t') || buf[i] == 0x7F) {
                *why = "control character in a header value";
                return -1;
            }
        pos = next;
    }
}

int up_header(const char *head, size_t len, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name), eol, next, w = 0, pos;
    int found = 0;
    if (cap == 0)
        return 0;
    out[0] = '\0';
    if (!up_line(head, 0, len, &eol, &next))
        return 0;
    for (pos = next; up_line(head, pos, len, &eol, &next) && eol > pos; pos = next) {
        if (eol - pos <= nlen || head[pos + nlen] != ':' || strncasecmp(head + pos, name, nlen) != 0)
            continue;
        size_t v = pos + nlen + 1, ve = eol;
        while (v < ve && (head[v] == ' ' || head[v] == '\t'))
            v++;
        while (ve > v && (head[ve - 1] == ' ' || head[ve - 1] == '\t'))
            ve--;
        if (found && ve > v) {
            for (const char *sep = ", "; *sep && w + 1 < cap; sep++)
                out[w++] = *sep;
        }
        for (size_t i = v; i < ve && w + 1 < cap; i++)
            out[w++] = head[i];
        found = 1;
    }
    out[w] = '\0';
    return found;
}

int up_has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
            return 1;
        p = e;
    }
    return 0;
}

/* ---- Sec-WebSocket-Key / Accept ---------------------------------------------- */

static uint32_t rol(uint32_t x, int n)
{
    return x << n | x >> (32 - n);
}

static void sha1_block(uint32_t h[5], const unsigned char *b)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (bb & c) | (~bb & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = bb ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (bb & c) | (bb & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = bb ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(bb, 30);
        bb = a;
        a = t;
    }
    h[0] += a;
    h[1] += bb;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void up_sha1(const void *data, size_t n, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const unsigned char *p = data;
    unsigned char block[64];
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        sha1_block(h, p + i);
    size_t rest = n - i;
    memset(block, 0, sizeof block);
    memcpy(block, p + i, rest);
    block[rest] = 0x80;
    if (rest >= 56) {
        sha1_block(h, block);
        memset(block, 0, sizeof block);
    }
    uint64_t bits = (uint64_t)n * 8;
    for (int j = 0; j < 8; j++)
        block[63 - j] = (unsigned char)(bits >> (8 * j));
    sha1_block(h, block);
    for (int j = 0; j < 5; j++) {
        out[4 * j] = (unsigned char)(h[j] >> 24);
        out[4 * j + 1] = (unsigned char)(h[j] >> 16);
        out[4 * j + 2] = (unsigned char)(h[j] >> 8);
        out[4 * j + 3] = (unsigned char)h[j];
    }
}

/* The base64 of n bytes into out (cap bytes, NUL-terminated): the core's
 * one encoder (buf.h). 0, or -1 (errno ENOMEM, or ERANGE when it does not fit). */
static int base64_into(const void *in, size_t n, char *out, size_t cap)
{
    czctl_buf b = {0};
    int r = czctl_buf_add_base64(&b, in, n);
    if (r == 0 && czctl_buf_unread(&b) >= cap) {
        errno = ERANGE;
        r = -1;
    }
    if (r == 0)
        memcpy(out, b.data + b.start, czctl_buf_unread(&b) + 1);
    czctl_buf_free(&b);
    return r;
}

int up_ws_key(char out[25])
{
    unsigned char raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return -1;
    return base64_into(raw, sizeof raw, out, 25);
}

int up_ws_accept(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[128];
    size_t kl = strnlen(key, sizeof buf - sizeof guid);
    memcpy(buf, key, kl);
    memcpy(buf + kl, guid, sizeof guid - 1);
    unsigned char d[20];
    up_sha1(buf, kl + sizeof guid - 1, d);
    return base64_into(d, sizeof d, out, 29);
}

/* ---- refusal messages ------------------------------------------------------------ */

void up_one_line(const char *in, size_t len, char *out, size_t cap)
{
    size_t w = 0;
    int space = 0;
    if (cap == 0)
        return;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x20 || c == 0x7F || c == ' ') {
            space = w > 0;
            continue;
        }
        if (space) {
            if (w + 1 >= cap)
                break;
            out[w++] = ' ';
            space = 0;
        }
        if (w + 1 >= cap)
            break;
        out[w++] = (char)c;
    }
    /* never end inside a UTF-8 sequence */
    if (w + 1 >= cap && w > 0 && ((unsigned char)out[w - 1] & 0x80)) {
        size_t k = w;
        while (k > 0 && ((unsigned char)out[k - 1] & 0xC0) == 0x80)
            k--;
        if (k > 0 && ((unsigned char)out[k - 1] & 0xC0) == 0xC0) {
            unsigned char lead = (unsigned char)out[k - 1];
            size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
            if (w - (k - 1) < need)
                w = k - 1;   /* the last sequence was cut */
        }
    }
    while (w > 0 && out[w - 1] == ' ')
        w--;   /* the limit fell after a blank (found by fuzz_upgrade) */
    out[w] = '\0';
}

/* The end of the JSON string starting after the quote at s[i]; len when unterminated. */
static size_t json_string_end(const char *s, size_t len, size_t i)
{
    while (i < len && s[i] != '"')
        i += s[i] == '\\' ? 2 : 1;
    return i < len ? i : len;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes the JSON string s[from..to) into out (cap bytes, NUL-terminated). */
static size_t json_decode(const char *s, size_t from, size_t to, char *out, size_t cap)
{
    size_t w = 0;
    for (size_t i = from; i < to && w + 4 < cap; i++) {
        char c = s[i];
        if (c != '\\' || i + 1 >= to) {
            out[w++] = c;
            continue;
        }
        c = s[++i];
        switch (c) {
        case 'n': case 'r': case 't': case 'b': case 'f': out[w++] = ' '; break;
        case 'u': {
            unsigned v = 0;
            int ok = i + 4 < to;
            for (int k = 1; ok && k <= 4; k++) {
                int h = hexval(s[i + k]);
                ok = h >= 0;
                v = v << 4 | (unsigned)(h < 0 ? 0 : h);
            }
            if (!ok) {
                out[w++] = '?';
                break;
            }
            i += 4;
            if (v < 0x80) {
                out[w++] = (char)v;
            } else if (v < 0x800) {
                out[w++] = (char)(0xC0 | v >> 6);
                out[w++] = (char)(0x80 | (v & 0x3F));
            } else if (v >= 0xD800 && v <= 0xDFFF) {
                out[w++] = '?';
            } else {
                out[w++] = (char)(0xE0 | v >> 12);
                out[w++] = (char)(0x80 | ((v >> 6) & 0x3F));
                out[w++] = (char)(0x80 | (v & 0x3F));
            }
            break;
        }
        default: out[w++] = c; break;
        }
    }
    out[w] = '\0';
    return w;
}

/* The top-level "message" string of a JSON object: 1 and out set, or 0. */
static int json_message(const char *s, size_t len, char *out, size_t cap)
{
    unsigned long long objects = 0;   /* bit d: the container at depth d+1 is an object */
    int depth = 0, expect_key = 0;
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    if (i >= len || s[i] != '{')
        return 0;
    for (; i < len; i++) {
        char c = s[i];
        if (c == '"') {
            size_t end = json_string_end(s, len, i + 1);
            if (depth == 1 && expect_key && end - (i + 1) == 7 && !memcmp(s + i + 1, "message", 7)) {
                size_t j = end + 1;
                while (j < len && (s[j] == ' ' || s[j] == ':' || s[j] == '\t' || s[j] == '\r' || s[j] == '\n'))
                    j++;
                if (j < len && s[j] == '"') {
                    json_decode(s, j + 1, json_string_end(s, len, j + 1), out, cap);
                    return 1;
                }
            }
            expect_key = 0;
            i = end;
        } else if (c == '{' || c == '[') {
            if (depth < 64 && c == '{')
                objects |= 1ULL << depth;
            else if (depth < 64)
                objects &= ~(1ULL << depth);
            depth++;
            expect_key = c == '{';
        } else if (c == '}' || c == ']') {
            if (--depth <= 0)
                return 0;
        } else if (c == ',') {
            expect_key = depth <= 64 && (objects >> (depth - 1) & 1);
        }
    }
    return 0;
}

void up_refusal_message(const char *body, size_t len, char *out, size_t cap)
{
    char msg[1024];
    if (cap == 0)
        return;
    if (json_message(body, len, msg, sizeof msg) && msg[0])
        up_one_line(msg, strlen(msg), out, cap);
    else
        up_one_line(body, len, out, cap);
}
