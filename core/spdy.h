/*
 * spdy.h: SPDY/3.1 framing and header compression, the client side of what
 * moby/spdystream speaks for the kubelet and the API server (port-forward
 * and exec streams), for core/portforward.c.
 *
 * Pure C over zlib: no I/O, no Lua. One spdy_conn per connection holds the
 * two zlib streams (one per direction, for the whole connection, over the
 * SPDY/3 dictionary) and the frame parser. The parser takes bytes in pieces
 * of any size and hands back one event at a time; DATA payloads are
 * pointers into the caller's input, control frames are collected in the
 * parser (bounded). Malformed, truncated or oversized frames and header
 * blocks are error events; after one the parser refuses everything.
 */
#ifndef CZCTL_SPDY_H
#define CZCTL_SPDY_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

enum {
    SPDY_SYN_STREAM = 1, SPDY_SYN_REPLY = 2, SPDY_RST_STREAM = 3, SPDY_SETTINGS = 4,
    SPDY_PING = 6, SPDY_GOAWAY = 7, SPDY_HEADERS = 8, SPDY_WINDOW_UPDATE = 9,
};
#define SPDY_FLAG_FIN 0x01

/* RST_STREAM status codes. */
enum { SPDY_PROTOCOL_ERROR = 1, SPDY_INVALID_STREAM = 2, SPDY_REFUSED_STREAM = 3, SPDY_CANCEL = 5 };

#define SPDY_DATA_HEADER 8
#define SPDY_MAX_LENGTH 0xFFFFFF      /* the 24-bit length field */
#define SPDY_MAX_CONTROL (64u * 1024) /* largest control frame accepted */
#define SPDY_MAX_HEADER_BLOCK (16u * 1024) /* largest decompressed header block */
#define SPDY_MAX_HEADERS 64

/* The SPDY/3 header dictionary (draft 3, section 2.6.10.1). */
extern const unsigned char spdy_dictionary[];
extern const size_t spdy_dictionary_len;

typedef struct spdy_header {
    const char *name, *value;  /* not NUL-terminated */
    size_t name_len, value_len;
} spdy_header;

typedef enum { SPDY_EV_NONE, SPDY_EV_DATA, SPDY_EV_CONTROL, SPDY_EV_ERROR } spdy_event_type;

typedef struct spdy_event {
    spdy_event_type type;
    int control;            /* CONTROL: the frame type (an unknown type is skipped, never reported) */
    int flags;
    uint32_t stream;        /* DATA, SYN_*, RST, HEADERS, WINDOW_UPDATE: the stream; GOAWAY: last good
                             * stream; PING: the ping id */
    uint32_t value;         /* RST and GOAWAY: the status; WINDOW_UPDATE: the delta */
    const uint8_t *data;    /* DATA: a piece of the payload, into the input */
    size_t len;
    int fin;                /* DATA: the piece ends the frame and the frame carries FIN */
    const spdy_header *headers; /* SYN_STREAM, SYN_REPLY, HEADERS: valid until the next call */
    size_t nheaders;
    const char *error;      /* ERROR: what was wrong (static text) */
} spdy_event;

typedef struct spdy_conn {
    z_stream inflate, deflate;
    int inflate_ready, deflate_ready, inflate_ended;
    uint8_t hdr[8];          /* the frame header being collected */
    size_t hlen;
    int in_payload;
    int is_control, ctype, flags;
    uint32_t stream, length, remaining;
    uint8_t *ctl;            /* control payload (malloc'd, SPDY_MAX_CONTROL) */
    size_t ctl_len;
    uint8_t *block;          /* decompressed header block (malloc'd, SPDY_MAX_HEADER_BLOCK) */
    spdy_header headers[SPDY_MAX_HEADERS];
    const char *failed;
} spdy_conn;

/* 0, or -1 when out of memory (nothing to free then). */
int spdy_init(spdy_conn *s);
/* Frees what spdy_init allocated; idempotent. */
void spdy_free(spdy_conn *s);

/* Consumes bytes of in[0..n) and fills *ev with the next event; returns how
 * many bytes it used. ev->type is SPDY_EV_NONE when every byte was used and
 * more are needed. Never reads past n. */
size_t spdy_parse(spdy_conn *s, const uint8_t *in, size_t n, spdy_event *ev);

/* Encoders: each writes one frame into out (cap bytes) and returns its size,
 * or 0 when it does not fit (or the header block could not be compressed). */
size_t spdy_syn_stream(spdy_conn *s, uint8_t *out, size_t cap, uint32_t stream, int flags,
                       const spdy_header *h, size_t nh);
size_t spdy_rst_stream(uint8_t *out, size_t cap, uint32_t stream, uint32_t status);
size_t spdy_ping(uint8_t *out, size_t cap, uint32_t id);
size_t spdy_goaway(uint8_t *out, size_t cap, uint32_t last_good, uint32_t status);
/* The 8-byte header of a DATA frame of len bytes (len <= SPDY_MAX_LENGTH). */
void spdy_data_header(uint8_t out[SPDY_DATA_HEADER], uint32_t stream, int flags, size_t len);

#endif
