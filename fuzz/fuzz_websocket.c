/*
 * fuzz_websocket.c: server frames as core/websocket.c reads them for the
 * port-forward client. The first input byte picks how the rest is cut into
 * pieces (1..64 bytes, each in its own exact-size allocation, so a read past
 * a piece is caught) and the data frame limit. Properties: the parser never
 * consumes more than it is given, data pieces point inside the piece they
 * came from, control payloads are at most 125 bytes, the data delivered is
 * never more than the input, and after an error it refuses everything.
 */
#include <string.h>

#include "fuzz.h"
#include "websocket.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] & 63) + 1;
    ws_parser p;
    ws_parser_init(&p, data[0] & 64 ? 1000 : 64u << 20);
    data++;
    size--;
    size_t delivered = 0;
    int failed = 0;
    for (size_t off = 0; off < size;) {
        size_t n = size - off < step ? size - off : step;
        uint8_t *piece = malloc(n);
        if (!piece)
            return 0;
        memcpy(piece, data + off, n);
        size_t used = 0;
        for (;;) {
            ws_event ev;
            size_t u = ws_parse(&p, piece + used, n - used, &ev);
            FUZZ_CHECK(u <= n - used);
            if (failed)
                FUZZ_CHECK(u == 0 && ev.type == WS_EV_ERROR);
            used += u;
            if (ev.type == WS_EV_NONE) {
                FUZZ_CHECK(used == n);
                break;
            }
            if (ev.type == WS_EV_ERROR) {
                FUZZ_CHECK(ev.error && (ev.code == WS_PROTOCOL_ERROR || ev.code == WS_TOO_BIG));
                failed = 1;
                break;
            }
            if (ev.type == WS_EV_DATA) {
                FUZZ_CHECK(ev.opcode == WS_TEXT || ev.opcode == WS_BINARY);
                FUZZ_CHECK(ev.len == 0 || (ev.data >= piece && ev.data + ev.len <= piece + used));
                delivered += ev.len;
            } else {
                FUZZ_CHECK(ev.len <= WS_MAX_CONTROL);
            }
        }
        free(piece);
        off += n;
    }
    FUZZ_CHECK(delivered <= size);
    return 0;
}
