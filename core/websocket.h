/*
 * websocket.h: the client side of RFC 6455 framing, as czctl's port-forward
 * client (core/portforward.c) speaks it to a Kubernetes API server.
 *
 * Pure C: no I/O, no Lua, no allocation. The parser takes bytes as they
 * arrive, in pieces of any size, and hands back one event at a time; data
 * payloads are pointers into the caller's input (no copy), control payloads
 * (at most 125 bytes) are kept in the parser. Anything RFC 6455 forbids a
 * server to send is an error event carrying the close code the client
 * answers with; after one, the parser refuses everything.
 */
#ifndef CZCTL_WEBSOCKET_H
#define CZCTL_WEBSOCKET_H

#include <stddef.h>
#include <stdint.h>

enum { WS_CONT = 0x0, WS_TEXT = 0x1, WS_BINARY = 0x2, WS_CLOSE = 0x8, WS_PING = 0x9, WS_PONG = 0xA };

/* Close codes (RFC 6455 section 7.4.1). */
enum { WS_NORMAL = 1000, WS_PROTOCOL_ERROR = 1002, WS_NO_STATUS = 1005, WS_TOO_BIG = 1009 };

#define WS_MAX_HEADER 14    /* 2 + 8 (64-bit length) + 4 (mask) */
#define WS_MAX_CONTROL 125

typedef enum { WS_EV_NONE, WS_EV_DATA, WS_EV_PING, WS_EV_PONG, WS_EV_CLOSE, WS_EV_ERROR } ws_event_type;

typedef struct ws_event {
    ws_event_type type;
    int opcode;          /* WS_EV_DATA: WS_TEXT or WS_BINARY (the message's, also for continuations) */
    int fin;             /* WS_EV_DATA: this piece ends the message */
    const uint8_t *data; /* DATA: into the input; PING, PONG, CLOSE (reason): into the parser */
    size_t len;
    unsigned code;       /* CLOSE: the server's code (WS_NO_STATUS when none); ERROR: the code to answer */
    const char *error;   /* ERROR: what was wrong (static text) */
} ws_event;

typedef struct ws_parser {
    uint8_t hdr[WS_MAX_HEADER];
    size_t hlen;           /* header bytes collected */
    uint64_t remaining;    /* payload bytes left in the current frame */
    uint64_t max_frame;    /* largest data frame accepted */
    int in_payload;
    int opcode, fin;       /* of the current frame */
    int message;           /* opcode of the fragmented message in progress, 0 when none */
    uint8_t ctl[WS_MAX_CONTROL];
    size_t ctl_len;
    const char *failed;    /* set once an error was reported */
    unsigned failed_code;
} ws_parser;

/* A parser for a server's frames; data frames over max_frame bytes are refused. */
void ws_parser_init(ws_parser *p, uint64_t max_frame);

/*
 * Consumes bytes of in[0..n) and fills *ev with the next event; returns how
 * many bytes it consumed. ev->type is WS_EV_NONE when every byte was used
 * and more are needed. A data frame's payload comes as one or more DATA
 * events (a zero-length frame as one empty event). Never reads past n.
 */
size_t ws_parse(ws_parser *p, const uint8_t *in, size_t n, ws_event *ev);

/* Writes a masked client frame header for a payload of len bytes and returns
 * its size (6, 8 or 14). The payload must then be masked with ws_mask. */
size_t ws_header(uint8_t out[WS_MAX_HEADER], int opcode, int fin, uint64_t len, const uint8_t mask[4]);

/* XORs n bytes with the mask, as if they started at offset 0 of a payload. */
void ws_mask(uint8_t *p, size_t n, const uint8_t mask[4]);

#endif
