/*
 * test_websocket.c: core/websocket.c, the client side of RFC 6455 framing:
 * headers and masks it writes, frames it reads in pieces of any size, and
 * every frame a server must not send refused with the right close code.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "websocket.h"

/* Parses all of in (fed in pieces of `step` bytes) and describes the events
 * as text: "D2:hello|" (opcode, payload, '|' = end of message), "P:x",
 * "O:x" (pong), "C1000:bye", "E1002:why". */
static void run(const uint8_t *in, size_t n, size_t step, char *out, size_t cap)
{
    ws_parser p;
    ws_parser_init(&p, 1000);
    size_t w = 0;
    out[0] = '\0';
    for (size_t off = 0; off < n;) {
        size_t piece = n - off < step ? n - off : step, used = 0;
        while (used < piece || piece == 0) {
            ws_event ev;
            size_t u = ws_parse(&p, in + off + used, piece - used, &ev);
            used += u;
            if (ev.type == WS_EV_NONE)
                break;
            int m = 0;
            if (ev.type == WS_EV_DATA)
                m = snprintf(out + w, cap - w, "D%d:%.*s%s", ev.opcode, (int)ev.len, ev.data, ev.fin ? "|" : "");
            else if (ev.type == WS_EV_PING || ev.type == WS_EV_PONG)
                m = snprintf(out + w, cap - w, "%c:%.*s", ev.type == WS_EV_PING ? 'P' : 'O', (int)ev.len, ev.data);
            else if (ev.type == WS_EV_CLOSE)
                m = snprintf(out + w, cap - w, "C%u:%.*s", ev.code, (int)ev.len, ev.data);
            else
                m = snprintf(out + w, cap - w, "E%u:%s", ev.code, ev.error);
            w += (size_t)m;
            if (ev.type == WS_EV_ERROR)
                return;
        }
        off += piece;
    }
}

/* Data frames with contiguous payload pieces join up: "D2:he" "D2:llo|" is
 * the same message as "D2:hello|"; joins them for comparison. */
static void joined(const char *events, char *out)
{
    size_t w = 0;
    int last_op = -1;
    for (const char *s = events; *s;) {
        if (*s == 'D') {
            int op = s[1] - '0';
            const char *p = s + 3;
            if (op != last_op) {
                w += (size_t)sprintf(out + w, "D%d:", op);
                last_op = op;
            }
            while (*p && *p != '|' && *p != 'D' && *p != 'P' && *p != 'O' && *p != 'C' && *p != 'E')
                out[w++] = *p++;
            if (*p == '|') {
                out[w++] = '|';
                p++;
                last_op = -1;
            }
            s = p;
        } else {
            out[w++] = *s++;
            last_op = -1;
        }
    }
    out[w] = '\0';
}

struct ok_case {
    const char *name;
    const char *bytes;   /* C string with escapes; len given */
    size_t len;
    const char *want;
};

struct bad_case {
    const char *name;
    const char *bytes;
    size_t len;
    unsigned code;
};

#define B(s) s, sizeof(s) - 1

int main(void)
{
    /* ---- headers we write ------------------------------------------------ */
    static const struct { uint64_t len; size_t size; } sizes[] = {
        {0, 6}, {125, 6}, {126, 8}, {65535, 8}, {65536, 14}, {1ULL << 40, 14},
    };
    int all = 1;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        uint8_t h[WS_MAX_HEADER], mask[4] = {1, 2, 3, 4};
        size_t got = ws_header(h, WS_BINARY, 1, sizes[i].len, mask);
        all &= got == sizes[i].size && h[0] == 0x82 && (h[1] & 0x80) && !memcmp(h + got - 4, mask, 4);
    }
    t_ok(all, "client headers are masked, FIN|opcode first, and use the shortest length form", NULL);

    uint8_t data[37], copy[37], mask[4] = {0xA1, 0x02, 0xF3, 0x44};
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = copy[i] = (uint8_t)(i * 7);
    ws_mask(copy, sizeof copy, mask);
    int masked = 1;
    for (size_t i = 0; i < sizeof data; i++)
        masked &= copy[i] == (data[i] ^ mask[i % 4]);
    ws_mask(copy, sizeof copy, mask);
    t_ok(masked && !memcmp(copy, data, sizeof data), "masking XORs byte i with mask[i % 4] and undoes itself", NULL);

    /* ---- frames we read ---------------------------------------------------- */
    static const struct ok_case oks[] = {
        {"a binary frame", B("\x82\x05hello"), "D2:hello|"},
        {"a text frame", B("\x81\x02hi"), "D1:hi|"},
        {"an empty frame", B("\x82\x00"), "D2:|"},
        {"a message in three fragments keeps its opcode",
         B("\x02\x03" "one" "\x00\x03" "two" "\x80\x05" "three"), "D2:onetwothree|"},
        {"a ping between fragments", B("\x01\x01" "a" "\x89\x01" "x" "\x80\x01" "b"), "D1:aP:xD1:b|"},
        {"pong and close with code and reason", B("\x8a\x00\x88\x05\x03\xe8" "bye"), "O:C1000:bye"},
        {"a close without a code", B("\x88\x00"), "C1005:"},
        {"a 16-bit length", B("\x82\x7e\x00\x03" "abc"), "D2:abc|"},
        {"a 64-bit length", B("\x82\x7f\x00\x00\x00\x00\x00\x00\x00\x02" "ok"), "D2:ok|"},
    };
    for (size_t i = 0; i < sizeof oks / sizeof *oks; i++) {
        char whole[512], one[512], j1[512], j2[512], name[200];
        run((const uint8_t *)oks[i].bytes, oks[i].len, oks[i].len, whole, sizeof whole);
        run((const uint8_t *)oks[i].bytes, oks[i].len, 1, one, sizeof one);
        joined(whole, j1);
        joined(one, j2);
        snprintf(name, sizeof name, "reads %s, whole or byte by byte", oks[i].name);
        char diag[1200];
        snprintf(diag, sizeof diag, "whole %s, byte by byte %s, want %s", j1, j2, oks[i].want);
        t_ok(!strcmp(j1, oks[i].want) && !strcmp(j2, oks[i].want), name, diag);
    }

    /* ---- frames a server must not send ------------------------------------- */
    static const struct bad_case bads[] = {
        {"reserved bits without an extension", B("\xc2\x00"), 1002},
        {"an unknown opcode", B("\x83\x00"), 1002},
        {"a masked frame", B("\x82\x81\x00\x00\x00\x00" "a"), 1002},
        {"a fragmented ping", B("\x09\x00"), 1002},
        {"a control frame over 125 bytes", B("\x89\x7e\x00\x7e"), 1002},
        {"a continuation outside a message", B("\x80\x01" "a"), 1002},
        {"a new message inside a fragmented one", B("\x02\x01" "a" "\x82\x01" "b"), 1002},
        {"a 64-bit length with its top bit set", B("\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00"), 1002},
        {"a data frame over the limit", B("\x82\x7e\x03\xe9"), 1009},
        {"a close with a one-byte payload", B("\x88\x01\x03"), 1002},
        {"a close with code 1005 on the wire", B("\x88\x02\x03\xed"), 1002},
        {"a close with code 999", B("\x88\x02\x03\xe7"), 1002},
    };
    for (size_t i = 0; i < sizeof bads / sizeof *bads; i++) {
        char out[512], name[200], want[16];
        run((const uint8_t *)bads[i].bytes, bads[i].len, bads[i].len, out, sizeof out);
        snprintf(want, sizeof want, "E%u:", bads[i].code);
        snprintf(name, sizeof name, "refuses %s with close code %u", bads[i].name, bads[i].code);
        t_ok(strstr(out, want) != NULL, name, out);
    }

    ws_parser p;
    ws_parser_init(&p, 1000);
    ws_event ev;
    ws_parse(&p, (const uint8_t *)"\x83\x00", 2, &ev);
    size_t used = ws_parse(&p, (const uint8_t *)"\x82\x01" "a", 3, &ev);
    t_ok(used == 0 && ev.type == WS_EV_ERROR, "after an error the parser refuses everything", NULL);

    ws_parser_init(&p, 1000);
    used = ws_parse(&p, (const uint8_t *)"\x82\x7e\x00", 3, &ev);
    t_ok(used == 3 && ev.type == WS_EV_NONE, "a truncated header is kept for the next bytes, nothing invented", NULL);
    return t_done();
}
