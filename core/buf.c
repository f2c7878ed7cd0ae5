/*
 * buf.c: the growable byte buffer and base64 (see buf.h).
 *
 * Must not know what the bytes are; must not raise, log or abort.
 */
#define _GNU_SOURCE   /* explicit_bzero */
#include "buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void wipe(czctl_buf *b, size_t from, size_t to)
{
    if (b->secret && b->data && to > from)
        explicit_bzero(b->data + from, to - from);
}

/* Drops the consumed prefix. */
static void compact(czctl_buf *b)
{
    if (b->start == 0)
        return;
    size_t unread = b->len - b->start;
    memmove(b->data, b->data + b->start, unread);
    wipe(b, unread, b->len);
    b->len = unread;
    b->start = 0;
    b->data[b->len] = '\0';
}

char *czctl_buf_reserve(czctl_buf *b, size_t n)
{
    size_t unread = b->len - b->start;
    if (n > SIZE_MAX / 2 - unread || (b->limit && unread + n > b->limit)) {
        errno = b->limit ? EFBIG : ENOMEM;
        return NULL;
    }
    if (b->len + n + 1 > b->cap)
        compact(b);
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *nd;
        if (b->secret) {   /* never leave a copy behind in freed memory */
            nd = malloc(cap);
            if (nd && b->data) {
                memcpy(nd, b->data, b->len + 1);
                explicit_bzero(b->data, b->cap);
                free(b->data);
            }
        } else {
            nd = realloc(b->data, cap);
        }
        if (!nd) {
            errno = ENOMEM;
            return NULL;
        }
        if (!b->data)
            nd[0] = '\0';
        b->data = nd;
        b->cap = cap;
    }
    return b->data + b->len;
}

void czctl_buf_commit(czctl_buf *b, size_t n)
{
    b->len += n;
    b->data[b->len] = '\0';
}

int czctl_buf_add(czctl_buf *b, const void *p, size_t n)
{
    char *dst = czctl_buf_reserve(b, n);
    if (!dst)
        return -1;
    if (n)
        memcpy(dst, p, n);
    czctl_buf_commit(b, n);
    return 0;
}

int czctl_buf_addstr(czctl_buf *b, const char *s)
{
    return czctl_buf_add(b, s, strlen(s));
}

void czctl_buf_consume(czctl_buf *b, size_t n)
{
    b->scanned = b->scanned > n ? b->scanned - n : 0;
    b->start += n;
    if (b->start >= b->len) {
        wipe(b, 0, b->len);
        b->start = b->len = 0;
        if (b->data)
            b->data[0] = '\0';
    }
}

size_t czctl_buf_unread(const czctl_buf *b)
{
    return b->len - b->start;
}

int czctl_buf_has_line(czctl_buf *b)
{
    size_t unread = b->len - b->start;
    if (b->scanned >= unread)
        return 0;
    const char *nl = memchr(b->data + b->start + b->scanned, '\n', unread - b->scanned);
    b->scanned = nl ? (size_t)(nl - (b->data + b->start)) : unread;
    return nl != NULL;
}

const char *czctl_buf_line(czctl_buf *b, int at_end, size_t *n)
{
    size_t unread = b->len - b->start;
    if (!czctl_buf_has_line(b) && !(at_end && unread))
        return NULL;
    const char *line = b->data + b->start;
    int nl = b->scanned < unread;   /* scanned stops at the '\n' */
    *n = nl ? b->scanned : unread;
    /* consumed without the reset of czctl_buf_consume: the line must stay */
    b->start += *n + nl;
    b->scanned = 0;
    return line;
}

void czctl_buf_reset(czctl_buf *b)
{
    wipe(b, 0, b->len);
    b->start = b->len = b->scanned = 0;
    if (b->data)
        b->data[0] = '\0';
}

void czctl_buf_free(czctl_buf *b)
{
    if (b->data) {
        wipe(b, 0, b->cap);
        free(b->data);
    }
    b->data = NULL;
    b->start = b->len = b->cap = b->scanned = 0;
}

char *czctl_buf_take(czctl_buf *b, size_t *len)
{
    if (!b->data && !czctl_buf_reserve(b, 0))
        return NULL;
    compact(b);
    char *d = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->start = b->len = b->cap = b->scanned = 0;
    return d;
}

/* ---- base64 ------------------------------------------------------------- */

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int czctl_buf_add_base64(czctl_buf *b, const void *p, size_t n)
{
    const unsigned char *d = p;
    if (n > SIZE_MAX / 2)
        return errno = ENOMEM, -1;
    char *out = czctl_buf_reserve(b, (n + 2) / 3 * 4);
    if (!out)
        return -1;
    size_t w = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n)
            v |= d[i + 2];
        out[w++] = b64_alphabet[(v >> 18) & 63];
        out[w++] = b64_alphabet[(v >> 12) & 63];
        out[w++] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        out[w++] = i + 2 < n ? b64_alphabet[v & 63] : '=';
    }
    czctl_buf_commit(b, w);
    return 0;
}

static int b64_value(unsigned char c)
{
    const char *p = c ? memchr(b64_alphabet, c, 64) : NULL;
    return p ? (int)(p - b64_alphabet) : -1;
}

int czctl_base64_decode(czctl_buf *out, const char *in, size_t n)
{
    size_t before = out->len;
    char *dst = czctl_buf_reserve(out, n / 4 * 3 + 3);
    if (!dst)
        return -1;
    size_t w = 0;
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad)
            goto bad;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            dst[w++] = (char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (bits >= 6 || pad > 2)
        goto bad;
    czctl_buf_commit(out, w);
    return 0;
bad:
    if (out->secret)
        explicit_bzero(dst, w);
    out->data[before] = '\0';
    errno = EINVAL;
    return -1;
}
