/*
 * websocket.c: RFC 6455 framing for czctl's port-forward client (see
 * websocket.h). It must stay pure: no I/O, no allocation, no Lua; the
 * handshake that comes before the frames is in core/upgrade.c.
 *
 * What a client must refuse from a server (RFC 6455 section 5): reserved
 * bits without an extension, unknown opcodes, masked frames, fragmented or
 * over-long control frames, a continuation outside a message or a new
 * message inside one, a 64-bit length with its top bit set, a close frame
 * with a one-byte payload or an invalid code. Data frames over the
 * caller's limit are refused with 1009 (message too big).
 */
#include <string.h>

#include "websocket.h"

void ws_parser_init(ws_parser *p, uint64_t max_frame)
{
    memset(p, 0, sizeof *p);
    p->max_frame = max_frame;
}

static size_t ws_fail(ws_parser *p, ws_event *ev, const char *why, unsigned code, size_t used)
{
    p->failed = why;
    p->failed_code = code;
    ev->type = WS_EV_ERROR;
    ev->error = why;
    ev->code = code;
    return used;
}

static int ws_valid_close_code(unsigned c)
{
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

/* The header's total size once its first two bytes are known. */
static size_t ws_header_size(const ws_parser *p)
{
    unsigned len7 = p->hdr[1] & 0x7F;
    return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
}

/* Checks the first two header bytes; NULL when acceptable. */
static const char *ws_check_start(ws_parser *p, unsigned *code)
{
    unsigned b0 = p->hdr[0], b1 = p->hdr[1];
    int op = (int)(b0 & 0x0F), fin = (b0 & 0x80) != 0;
    *code = WS_PROTOCOL_ERROR;
    if (b0 & 0x70)
        return "reserved bits set in a frame header";
    if (op != WS_CONT && op != WS_TEXT && op != WS_BINARY && op != WS_CLOSE && op != WS_PING && op != WS_PONG)
        return "unknown opcode";
    if (b1 & 0x80)
        return "masked frame from the server";
    if (op >= WS_CLOSE) {
        if (!fin)
            return "fragmented control frame";
        if ((b1 & 0x7F) > WS_MAX_CONTROL)
            return "control frame longer than 125 bytes";
    } else if (op == WS_CONT && !p->message) {
        return "continuation frame outside a message";
    } else if (op != WS_CONT && p->message) {
        return "new data frame inside a fragmented message";
    }
    p->opcode = op;
    p->fin = fin;
    return NULL;
}

/* Emits the finished control frame in p->ctl. */
static size_t ws_control(ws_parser *p, ws_event *ev, size_t used)
{
    p->in_payload = 0;
    p->hlen = 0;
    if (p->opcode == WS_PING || p->opcode == WS_PONG) {
        ev->type = p->opcode == WS_PING ? WS_EV_PING : WS_EV_PONG;
        ev->data = p->ctl;
        ev->len = p->ctl_len;
        return used;
    }
    if (p->ctl_len == 1)
        return ws_fail(p, ev, "close frame with a one-byte payload", WS_PROTOCOL_ERROR, used);
    ev->type = WS_EV_CLOSE;
    ev->code = WS_NO_STATUS;
    ev->data = p->ctl;
    ev->len = 0;
    if (p->ctl_len >= 2) {
        ev->code = (unsigned)p->ctl[0] << 8 | p->ctl[1];
        if (!ws_valid_close_code(ev->code))
            return ws_fail(p, ev, "close frame with an invalid code", WS_PROTOCOL_ERROR, used);
        ev->data = p->ctl + 2;
        ev->len = p->ctl_len - 2;
    }
    return used;
}

size_t ws_parse(ws_parser *p, const uint8_t *in, size_t n, ws_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->type = WS_EV_NONE;
    if (p->failed)
        return ws_fail(p, ev, p->failed, p->failed_code, 0);
    size_t used = 0;
    if (!p->in_payload) {
        size_t need = p->hlen >= 2 ? ws_header_size(p) : 2;
        while (p->hlen < need) {
            if (used == n)
                return used;
            p->hdr[p->hlen++] = in[used++];
            if (p->hlen == 2) {
                unsigned code;
                const char *why = ws_check_start(p, &code);
                if (why)
                    return ws_fail(p, ev, why, code, used);
                need = ws_header_size(p);
            }
        }
        uint64_t len = p->hdr[1] & 0x7F;
        if (len == 126) {
            len = (uint64_t)p->hdr[2] << 8 | p->hdr[3];
        } else if (len == 127) {
            len = 0;
            for (int i = 2; i < 10; i++)
                len = len << 8 | p->hdr[i];
            if (len >> 63)
                return ws_fail(p, ev, "frame length with its top bit set", WS_PROTOCOL_ERROR, used);
        }
        if (p->opcode < WS_CLOSE && len > p->max_frame)
            return ws_fail(p, ev, "data frame larger than the limit", WS_TOO_BIG, used);
        p->remaining = len;
        p->in_payload = 1;
        p->ctl_len = 0;
        if (p->opcode < WS_CLOSE && p->opcode != WS_CONT)
            p->message = p->opcode;
    }
    if (p->opcode >= WS_CLOSE) {
        size_t take = n - used < p->remaining ? n - used : (size_t)p->remaining;
        memcpy(p->ctl + p->ctl_len, in + used, take);
        p->ctl_len += take;
        p->remaining -= take;
        used += take;
        return p->remaining ? used : ws_control(p, ev, used);
    }
    size_t take = n - used < p->remaining ? n - used : (size_t)p->remaining;
    if (take == 0 && p->remaining)
        return used;   /* more payload to come */
    ev->type = WS_EV_DATA;
    ev->opcode = p->message;
    ev->data = in + used;
    ev->len = take;
    p->remaining -= take;
    used += take;
    if (p->remaining == 0) {
        ev->fin = p->fin;
        p->in_payload = 0;
        p->hlen = 0;
        if (p->fin)
            p->message = 0;
    }
    return used;
}

size_t ws_header(uint8_t out[WS_MAX_HEADER], int opcode, int fin, uint64_t len, const uint8_t mask[4])
{
    size_t h = 2;
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    if (len < 126) {
        out[1] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        out[1] = 0x80 | 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        h = 4;
    } else {
        out[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        h = 10;
    }
    memcpy(out + h, mask, 4);
    return h + 4;
}

void ws_mask(uint8_t *p, size_t n, const uint8_t mask[4])
{
    uint8_t m8[8];
    uint64_t m;
    for (int i = 0; i < 8; i++)
        m8[i] = mask[i & 3];
    memcpy(&m, m8, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        v ^= m;
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] ^= mask[i & 3];
}
