/*
 * fuzz_spdy.c: SPDY/3.1 frames and header blocks as core/spdy.c reads them
 * for the port-forward client, and header blocks it writes.
 *
 * First input byte: bit 7 set, round trip: the rest becomes up to three
 * header pairs (names forced to lower case), written as SYN_STREAMs by one
 * spdy_conn and read back by another, which must give them back unchanged.
 * Otherwise the low six bits pick piece sizes (1..64 bytes, each piece in an
 * exact-size allocation) and the rest is read as a server's byte stream.
 * Properties: nothing consumed beyond the input, DATA pieces inside their
 * piece, header names non-empty and lower case, at most SPDY_MAX_HEADERS
 * pairs, and after an error the parser refuses everything.
 */
#include <string.h>

#include "fuzz.h"
#include "spdy.h"

static void round_trip(const uint8_t *data, size_t size)
{
    spdy_conn w, r;
    if (spdy_init(&w) != 0)
        return;
    if (spdy_init(&r) != 0) {
        spdy_free(&w);
        return;
    }
    char names[3][64];
    spdy_header h[3];
    size_t nh = 0, off = 0;
    while (nh < 3 && off + 2 <= size) {
        size_t nl = 1 + data[off] % 32, vl = data[off + 1] % 48;
        off += 2;
        if (off + nl + vl > size)
            break;
        for (size_t i = 0; i < nl; i++) {
            char c = (char)data[off + i];
            names[nh][i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        h[nh].name = names[nh];
        h[nh].name_len = nl;
        h[nh].value = (const char *)data + off + nl;
        h[nh].value_len = vl;
        off += nl + vl;
        int dup = 0;
        for (size_t j = 0; j < nh; j++)
            dup |= h[j].name_len == nl && !memcmp(h[j].name, names[nh], nl);
        if (!dup)
            nh++;
    }
    uint8_t frame[2048];
    for (uint32_t id = 1; id < 8; id += 2) {
        size_t n = spdy_syn_stream(&w, frame, sizeof frame, id, 0, h, nh);
        FUZZ_CHECK(n > 0);
        spdy_event ev;
        size_t used = spdy_parse(&r, frame, n, &ev);
        FUZZ_CHECK(used == n && ev.type == SPDY_EV_CONTROL && ev.control == SPDY_SYN_STREAM && ev.stream == id);
        FUZZ_CHECK(ev.nheaders == nh);
        for (size_t i = 0; i < nh; i++)
            FUZZ_CHECK(ev.headers[i].name_len == h[i].name_len && ev.headers[i].value_len == h[i].value_len &&
                       !memcmp(ev.headers[i].name, h[i].name, h[i].name_len) &&
                       !memcmp(ev.headers[i].value, h[i].value, h[i].value_len));
    }
    spdy_free(&w);
    spdy_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 128) {
        round_trip(data + 1, size - 1);
        return 0;
    }
    size_t step = (size_t)(data[0] & 63) + 1;
    data++;
    size--;
    spdy_conn s;
    if (spdy_init(&s) != 0)
        return 0;
    int failed = 0;
    for (size_t off = 0; off < size && !failed;) {
        size_t n = size - off < step ? size - off : step;
        uint8_t *piece = malloc(n);
        if (!piece)
            break;
        memcpy(piece, data + off, n);
        size_t used = 0;
        for (;;) {
            spdy_event ev;
            size_t u = spdy_parse(&s, piece + used, n - used, &ev);
            FUZZ_CHECK(u <= n - used);
            used += u;
            if (ev.type == SPDY_EV_NONE) {
                FUZZ_CHECK(used == n);
                break;
            }
            if (ev.type == SPDY_EV_ERROR) {
                FUZZ_CHECK(ev.error != NULL);
                spdy_event again;
                FUZZ_CHECK(spdy_parse(&s, piece, n, &again) == 0 && again.type == SPDY_EV_ERROR);
                failed = 1;
                break;
            }
            if (ev.type == SPDY_EV_DATA) {
                FUZZ_CHECK(ev.stream != 0);
                FUZZ_CHECK(ev.len == 0 || (ev.data >= piece && ev.data + ev.len <= piece + used));
            } else {
                FUZZ_CHECK(ev.nheaders <= SPDY_MAX_HEADERS);
                for (size_t i = 0; i < ev.nheaders; i++) {
                    FUZZ_CHECK(ev.headers[i].name_len > 0);
                    for (size_t j = 0; j < ev.headers[i].name_len; j++)
                        FUZZ_CHECK(!(ev.headers[i].name[j] >= 'A' && ev.headers[i].name[j] <= 'Z'));
                }
            }
        }
        free(piece);
        off += n;
    }
    spdy_free(&s);
    return 0;
}
