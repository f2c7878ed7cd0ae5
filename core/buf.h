/*
 * buf.h: the one growable byte buffer of core/, and base64 (one alphabet,
 * one encoder, one decoder).
 *
 * Pure C, no Lua, nothing here raises: every C file that accumulates bytes
 * of unknown size (HTTP bodies and headers, watch streams, process output,
 * files, exec plugin output, generated JSON) uses a czctl_buf, so size
 * limits, the consumed-prefix compaction and the wiping of secrets are
 * written once. A zeroed czctl_buf is empty and ready:
 *
 *     czctl_buf b = {0};              // or {.limit = 4 << 20, .secret = 1}
 *     if (czctl_buf_add(&b, p, n) < 0) ... errno: ENOMEM, or EFBIG over limit
 *     use b.data[b.start .. b.len)    // always NUL-terminated once non-empty
 *     czctl_buf_free(&b);
 *
 * With secret set, memory is wiped before it is freed or moved by a growth
 * (no copy of a token or key is left behind in the heap).
 */
#ifndef CZCTL_BUF_H
#define CZCTL_BUF_H

#include <stddef.h>

typedef struct czctl_buf {
    char *data;     /* malloc'd, NUL-terminated at len; NULL while nothing was added */
    size_t start;   /* consumed prefix: the unread bytes are data[start..len) */
    size_t len;
    size_t cap;
    size_t limit;   /* most unread bytes it may hold; 0: no limit but memory */
    size_t scanned; /* unread bytes already known to hold no '\n' (czctl_buf_line) */
    int secret;     /* wipe on free, reset and growth */
} czctl_buf;

/* Appends n bytes. 0, or -1 with errno ENOMEM or EFBIG (over limit); the
 * buffer is unchanged on failure. */
int czctl_buf_add(czctl_buf *b, const void *p, size_t n);
/* Appends a NUL-terminated string (without the NUL). */
int czctl_buf_addstr(czctl_buf *b, const char *s);
/* Room for n more bytes after len, compacting the consumed prefix first.
 * Returns data + len (write there, then czctl_buf_commit), or NULL with
 * errno as czctl_buf_add. */
char *czctl_buf_reserve(czctl_buf *b, size_t n);
/* Counts n bytes written after czctl_buf_reserve. */
void czctl_buf_commit(czctl_buf *b, size_t n);
/* Marks n unread bytes as consumed (an empty buffer starts over at 0). */
void czctl_buf_consume(czctl_buf *b, size_t n);
/* Unread bytes. */
size_t czctl_buf_unread(const czctl_buf *b);
/* The next complete line of the unread bytes, consumed: returns its start
 * and sets *n to its length without the '\n'; NULL while there is none.
 * With at_end, unread bytes without a '\n' are the last line. The line
 * stays valid until the buffer is next changed. Each byte is scanned once
 * however the line arrives (no quadratic rescans of a long line). */
const char *czctl_buf_line(czctl_buf *b, int at_end, size_t *n);
/* Is a complete line waiting? */
int czctl_buf_has_line(czctl_buf *b);
/* Empties the buffer, keeping its memory. */
void czctl_buf_reset(czctl_buf *b);
/* Frees the memory; the buffer is empty and reusable (limit and secret kept). */
void czctl_buf_free(czctl_buf *b);
/* Hands the malloc'd data to the caller (NUL-terminated, *len bytes before
 * the NUL; a buffer that never held anything gives an empty string), and
 * leaves the buffer empty. NULL with errno ENOMEM. Consumed bytes are
 * dropped first. */
char *czctl_buf_take(czctl_buf *b, size_t *len);

/* Appends the standard base64 encoding (with padding) of n bytes. */
int czctl_buf_add_base64(czctl_buf *b, const void *p, size_t n);
/* Appends the decoding of standard base64 text: padding optional, ASCII
 * whitespace ignored, anything else (or data after padding) refused.
 * 0, or -1 with errno EINVAL (bad input; the buffer is unchanged), ENOMEM
 * or EFBIG. */
int czctl_base64_decode(czctl_buf *out, const char *in, size_t n);

#endif
