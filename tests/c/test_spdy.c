/*
 * test_spdy.c: core/spdy.c: the SPDY/3 dictionary, frames written and read
 * back (header blocks through one zlib stream per direction), frames read
 * in pieces of any size, and every malformed, truncated or oversized frame
 * or header block refused.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "harness.h"
#include "spdy.h"

/* A header block compressed as a server's first block is: a fresh zlib
 * stream over the dictionary (dict: the one to use), sync-flushed. */
static size_t compress_block(const uint8_t *raw, size_t n, uint8_t *out, size_t cap, const uint8_t *dict,
                             size_t dlen, int level)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit(&z, level);
    deflateSetDictionary(&z, dict, (uInt)dlen);
    z.next_in = (Bytef *)raw;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    deflate(&z, Z_SYNC_FLUSH);
    size_t len = cap - z.avail_out;
    deflateEnd(&z);
    return len;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A SYN_REPLY for stream 1 carrying the given compressed block. */
static size_t syn_reply(uint8_t *out, const uint8_t *block, size_t blen)
{
    out[0] = 0x80;
    out[1] = 3;
    out[2] = 0;
    out[3] = SPDY_SYN_REPLY;
    put32(out + 4, (uint32_t)(4 + blen));
    out[4] = 0;
    put32(out + 8, 1);
    memcpy(out + 12, block, blen);
    return 12 + blen;
}

/* The first event (or error) of parsing in at once. */
static spdy_event parse_one(spdy_conn *s, const uint8_t *in, size_t n)
{
    spdy_event ev;
    size_t used = 0;
    do {
        used += spdy_parse(s, in + used, n - used, &ev);
    } while (ev.type == SPDY_EV_NONE && used < n);
    return ev;
}

struct bad {
    const char *name;
    const uint8_t *frame;
    size_t len;
    const char *why;
};

int main(void)
{
    t_ok(spdy_dictionary_len == 1423 && adler32(1, spdy_dictionary, (uInt)spdy_dictionary_len) == 0xe3c6a7c2,
         "the SPDY/3 dictionary is spdystream's: 1423 bytes, Adler-32 e3c6a7c2", NULL);

    /* ---- written and read back ----------------------------------------------- */
    spdy_conn w, r;
    spdy_init(&w);
    spdy_init(&r);
    uint8_t buf[4096];
    int roundtrip = 1;
    for (int i = 0; i < 3; i++) {   /* one zlib stream across frames */
        char port[16];
        snprintf(port, sizeof port, "%d", 8080 + i);
        spdy_header h[3] = {{"streamtype", "data", 10, 4}, {"port", port, 4, strlen(port)}, {"requestid", "7", 9, 1}};
        size_t n = spdy_syn_stream(&w, buf, sizeof buf, (uint32_t)(1 + 4 * i), 0, h, 3);
        spdy_event ev = parse_one(&r, buf, n);
        roundtrip &= n > 18 && ev.type == SPDY_EV_CONTROL && ev.control == SPDY_SYN_STREAM &&
                     ev.stream == (uint32_t)(1 + 4 * i) && ev.nheaders == 3 && ev.headers[1].value_len == 4 &&
                     !memcmp(ev.headers[1].value, port, 4) && !memcmp(ev.headers[0].name, "streamtype", 10);
    }
    t_ok(roundtrip, "SYN_STREAM header blocks share one zlib stream and read back", NULL);

    size_t n = 0;
    n += spdy_rst_stream(buf + n, sizeof buf - n, 3, SPDY_CANCEL);
    n += spdy_ping(buf + n, sizeof buf - n, 5);
    n += spdy_goaway(buf + n, sizeof buf - n, 9, 0);
    spdy_data_header(buf + n, 3, SPDY_FLAG_FIN, 5);
    memcpy(buf + n + 8, "hello", 5);
    n += 13;
    /* byte by byte: every event and the same payload */
    char seen[256] = "", payload[16] = "";
    size_t pl = 0;
    for (size_t i = 0; i < n; i++) {
        spdy_event ev;
        size_t u = 0;
        do {
            u += spdy_parse(&r, buf + i + u, 1 - u, &ev);
            char e[48] = "";
            if (ev.type == SPDY_EV_CONTROL)
                snprintf(e, sizeof e, "c%d/%u/%u ", ev.control, ev.stream, ev.value);
            else if (ev.type == SPDY_EV_DATA) {
                memcpy(payload + pl, ev.data, ev.len);
                pl += ev.len;
                if (ev.fin)
                    snprintf(e, sizeof e, "fin%u ", ev.stream);
            }
            strcat(seen, e);
        } while (ev.type != SPDY_EV_NONE && u < 1);
    }
    payload[pl] = '\0';
    t_ok(!strcmp(seen, "c3/3/5 c6/5/0 c7/9/0 fin3 ") && !strcmp(payload, "hello"),
         "RST_STREAM, PING, GOAWAY and DATA with FIN read back byte by byte", seen);
    spdy_free(&w);
    spdy_free(&r);

    /* ---- refused -------------------------------------------------------------- */
    uint8_t raw[8192], comp[8192], f[16][256];
    size_t fl[16];
    /* a header block with 65 pairs */
    size_t rl = 4;
    put32(raw, 65);
    for (int i = 0; i < 65; i++) {
        put32(raw + rl, 2);
        raw[rl + 4] = 'h';
        raw[rl + 5] = (uint8_t)('a' + i % 26);
        put32(raw + rl + 6, 0);
        rl += 10;
    }
    fl[0] = syn_reply(f[0], comp, compress_block(raw, rl, comp, sizeof comp, spdy_dictionary, spdy_dictionary_len, 9));
    /* count 2, one pair only */
    uint8_t trunc[] = {0, 0, 0, 2, 0, 0, 0, 1, 'a', 0, 0, 0, 1, 'b'};
    fl[1] = syn_reply(f[1], comp, compress_block(trunc, sizeof trunc, comp, sizeof comp, spdy_dictionary,
                                                 spdy_dictionary_len, 9));
    uint8_t upper[] = {0, 0, 0, 1, 0, 0, 0, 4, 'P', 'o', 'r', 't', 0, 0, 0, 1, '1'};
    fl[2] = syn_reply(f[2], comp, compress_block(upper, sizeof upper, comp, sizeof comp, spdy_dictionary,
                                                 spdy_dictionary_len, 9));
    uint8_t dup[] = {0, 0, 0, 2, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 0, 0};
    fl[3] = syn_reply(f[3], comp, compress_block(dup, sizeof dup, comp, sizeof comp, spdy_dictionary,
                                                 spdy_dictionary_len, 9));
    uint8_t empty_name[] = {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 'x'};
    fl[4] = syn_reply(f[4], comp, compress_block(empty_name, sizeof empty_name, comp, sizeof comp,
                                                 spdy_dictionary, spdy_dictionary_len, 9));
    uint8_t zero_pairs[] = {0, 0, 0, 0};
    fl[5] = syn_reply(f[5], comp, compress_block(zero_pairs, sizeof zero_pairs, comp, sizeof comp,
                                                 (const uint8_t *)"another dictionary", 18, 9));
    /* a block that inflates to more than the limit (a zlib bomb) */
    static uint8_t zeros[SPDY_MAX_HEADER_BLOCK + 100];
    put32(zeros, 1);
    put32(zeros + 4, 1);
    zeros[8] = 'a';
    put32(zeros + 9, SPDY_MAX_HEADER_BLOCK);
    static uint8_t bomb[SPDY_MAX_HEADER_BLOCK];
    size_t bl = compress_block(zeros, sizeof zeros, bomb, sizeof bomb, spdy_dictionary, spdy_dictionary_len, 9);
    static uint8_t bombframe[SPDY_MAX_HEADER_BLOCK + 64];
    size_t bfl = syn_reply(bombframe, bomb, bl);
    fl[6] = syn_reply(f[6], (const uint8_t *)"not zlib at all", 15);
    static const uint8_t v2[] = {0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1};
    static const uint8_t big[] = {0x80, 3, 0, 4, 0, 0x01, 0x00, 0x01};
    static const uint8_t rst7[] = {0x80, 3, 0, 3, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0};
    static const uint8_t rst0[] = {0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0};
    static const uint8_t rsts0[] = {0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5};
    static const uint8_t pingf[] = {0x80, 3, 0, 6, 1, 0, 0, 4, 0, 0, 0, 1};
    static const uint8_t ping0[] = {0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 0};
    static const uint8_t data0[] = {0, 0, 0, 0, 0, 0, 0, 1, 'x'};
    static const uint8_t settings[] = {0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1};
    static const uint8_t reply3[] = {0x80, 3, 0, 2, 0, 0, 0, 3, 0, 0, 0};
    static const uint8_t goaway4[] = {0x80, 3, 0, 7, 0, 0, 0, 4, 0, 0, 0, 1};
    const struct bad bads[] = {
        {"a control frame of SPDY/2", v2, sizeof v2, "another SPDY version"},
        {"a control frame longer than the limit", big, sizeof big, "larger than the limit"},
        {"a RST_STREAM of 7 bytes", rst7, sizeof rst7, "does not fit its type"},
        {"a RST_STREAM with status 0", rst0, sizeof rst0, "status 0"},
        {"a RST_STREAM for stream 0", rsts0, sizeof rsts0, "stream 0"},
        {"a PING with flags", pingf, sizeof pingf, "PING with flags"},
        {"a PING with id 0", ping0, sizeof ping0, "id 0"},
        {"a DATA frame for stream 0", data0, sizeof data0, "stream 0"},
        {"a SETTINGS count that does not match its length", settings, sizeof settings, "does not match"},
        {"a SYN_REPLY too short for its stream id", reply3, sizeof reply3, "does not fit its type"},
        {"a GOAWAY without a status", goaway4, sizeof goaway4, "does not fit its type"},
        {"a header block of 65 pairs", f[0], fl[0], "too many headers"},
        {"a truncated header block", f[1], fl[1], "truncated"},
        {"an upper-case header name", f[2], fl[2], "upper-case"},
        {"a repeated header name", f[3], fl[3], "repeated header"},
        {"an empty header name", f[4], fl[4], "empty header name"},
        {"a block compressed with another dictionary", f[5], fl[5], "another dictionary"},
        {"a block that inflates past 16 KiB", bombframe, bfl, "larger than the limit"},
        {"a block that is not zlib", f[6], fl[6], "corrupt header block"},
    };
    for (size_t i = 0; i < sizeof bads / sizeof *bads; i++) {
        spdy_conn s;
        spdy_init(&s);
        spdy_event ev = parse_one(&s, bads[i].frame, bads[i].len);
        char name[200];
        snprintf(name, sizeof name, "refuses %s", bads[i].name);
        t_ok(ev.type == SPDY_EV_ERROR && strstr(ev.error, bads[i].why), name,
             ev.type == SPDY_EV_ERROR ? ev.error : "no error");
        spdy_event again;
        size_t used = spdy_parse(&s, (const uint8_t *)"\x00\x00\x00\x01\x00\x00\x00\x00", 8, &again);
        if (i == 0)
            t_ok(used == 0 && again.type == SPDY_EV_ERROR, "after an error the parser refuses everything", NULL);
        spdy_free(&s);
    }

    spdy_conn s;
    spdy_init(&s);
    static const uint8_t unknown_then_ping[] = {0x80, 3, 0, 5, 0, 0, 0, 2, 'x', 'y', 0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2};
    spdy_event ev = parse_one(&s, unknown_then_ping, sizeof unknown_then_ping);
    t_ok(ev.type == SPDY_EV_CONTROL && ev.control == SPDY_PING && ev.stream == 2,
         "an unknown control type is skipped, as SPDY/3 says", NULL);
    spdy_free(&s);

    spdy_init(&s);
    size_t used = spdy_parse(&s, (const uint8_t *)"\x80\x03\x00\x02\x00\x00\x00\x10\x00\x00", 10, &ev);
    t_ok(used == 10 && ev.type == SPDY_EV_NONE, "a truncated frame waits for more bytes, nothing invented", NULL);
    spdy_free(&s);
    spdy_free(&s);
    t_ok(1, "spdy_free is idempotent", NULL);
    return t_done();
}
