/*
 * relay_proto.h: the pairing protocol between the kube tunnel's two ends:
 * the laptop side (core/portforward.c, a pool of port-forward streams) and
 * the in-cluster relay (relay/czctl-relay.c). docs/decisions.md section 6
 * says why it is shaped so; this is the wire format both must agree on.
 *
 * A laptop stream is one TCP connection to the relay's laptop port (made by
 * the kubelet for a port-forward stream). Before pairing, only these bytes
 * flow on it:
 *
 *   laptop -> relay   "CZT1"                     hello, once, first
 *   relay  -> laptop  "CZT1" + 2 bytes           hello: the relay's ping interval in
 *                                                seconds (big-endian); the stream is idle
 *   relay  -> laptop  'P'                        ping (every interval, on idle streams)
 *   laptop -> relay   'p'                        pong
 *   relay  -> laptop  'C'                        paired: from the next byte on, the
 *                                                proxy's bytes, untouched
 *   laptop -> relay   'A'                        connected to the landing: from the
 *                                                next byte on, the landing's bytes
 *   laptop -> relay   'R'                        (instead of 'A') the landing cannot be
 *                                                reached: reset the proxy connection, do
 *                                                not try another stream; the stream ends
 *
 * After 'C' the relay sends nothing of its own; until 'A' it drops the
 * laptop's stray pongs. A stream that ends before 'A' or 'R' was never
 * used (the laptop was replacing it, or went away): the relay replays what
 * the proxy sent so far on one other idle stream, once.
 * Anything else is a protocol error and ends the stream. The pairing bytes
 * carry no secret: the proxy and the landing speak mutual TLS through them.
 */
#ifndef CZCTL_RELAY_PROTO_H
#define CZCTL_RELAY_PROTO_H

#define RELAY_MAGIC "CZT1"
#define RELAY_MAGIC_LEN 4
#define RELAY_HELLO_LEN 6     /* the relay's hello: magic + ping interval */

enum {
    RELAY_PING = 'P',
    RELAY_PONG = 'p',
    RELAY_CONNECT = 'C',
    RELAY_ACCEPTED = 'A',
    RELAY_REFUSED = 'R',
};

#endif
