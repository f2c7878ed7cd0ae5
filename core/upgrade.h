/*
 * upgrade.h: the HTTP/1.1 Upgrade handshake a port-forward starts with
 * (WebSocket, RFC 6455 section 4, and SPDY/3.1 as Kubernetes uses it), for
 * core/portforward.c: the response head, its headers, the
 * Sec-WebSocket-Key/Accept pair, and the one-line message of a refusal.
 *
 * Pure C: no I/O, no Lua, no allocation. Everything works on the caller's
 * bytes and bounded output buffers.
 */
#ifndef CZCTL_UPGRADE_H
#define CZCTL_UPGRADE_H

#include <stddef.h>

#define UP_MAX_HEAD (16u * 1024)   /* a response head longer than this is refused */

/*
 * Looks for a complete response head ("HTTP/1.x NNN reason\r\n", header
 * lines, an empty line) at the start of buf. Returns its length (up to and
 * including the empty line) with *status set, 0 while it is incomplete, or
 * -1 when it is malformed or longer than UP_MAX_HEAD (*why says which).
 * Bare LF line ends are accepted, as Go's reader accepts them.
 */
long up_parse_head(const char *buf, size_t len, int *status, const char **why);

/*
 * The value of header name (case-insensitive) in a head that up_parse_head
 * accepted, blanks trimmed, repeated headers joined with ", ", copied into
 * out (NUL-terminated, truncated to cap - 1). Returns 1 when present.
 */
int up_header(const char *head, size_t len, const char *name, char *out, size_t cap);

/* Does the comma-separated list value hold token (case-insensitive)? */
int up_has_token(const char *value, const char *token);

/* A fresh Sec-WebSocket-Key: base64 of 16 random bytes. 0, or -1 (errno)
 * when the kernel gave no randomness. */
int up_ws_key(char out[25]);

/* The Sec-WebSocket-Accept a server must answer for key. 0, or -1 (errno
 * ENOMEM). */
int up_ws_accept(const char *key, char out[29]);

/* SHA-1 of n bytes (for the accept value; not for anything secret). */
void up_sha1(const void *data, size_t n, unsigned char out[20]);


/*
 * One line for a refusal body: the "message" of a Kubernetes Status in
 * JSON, else the text itself; control characters become spaces, runs of
 * blanks one space, the ends trimmed; at most cap - 1 bytes.
 */
void up_refusal_message(const char *body, size_t len, char *out, size_t cap);

/* Text as one line (as up_refusal_message does with plain text). */
void up_one_line(const char *in, size_t len, char *out, size_t cap);

#endif
