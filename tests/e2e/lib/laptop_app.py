#!/usr/bin/env python3
"""The developer's app for the kube tunnel tests: listens on 127.0.0.1 only
(prints its port), HTTP/1.1 with keep-alive, one thread per connection. Its
name ("pod" in the answers) is the first argument, default "laptop".

  GET /bytes/N/SEED   N bytes of pattern(N, SEED) (Content-Length)
  POST ANY            {"pod": NAME, "body": {"length", "sha256"}} once the body is read
  GET /sse/K          K server-sent events "data: event i" (with X-Accel-Buffering: no, as
                      SSE apps behind NGINX send); event i+1 is sent only once
                      GET /ack/i arrived (on another connection): proves each event
                      crossed the tunnel before the next existed
  WebSocket upgrade   every message echoed back as "laptop: MESSAGE"
  anything else       {"pod": NAME, "path": ..., "headers": {...}}
"""
import base64
import hashlib
import json
import random
import socket
import struct
import sys
import threading

NAME = sys.argv[1] if len(sys.argv) > 1 else "laptop"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
acks = threading.Condition()
acked = set()


def pattern(n, seed):
    return random.Random(seed).randbytes(n)


def read_head(f):
    first = f.readline()
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            return first, headers
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()


def reply(c, doc):
    body = (json.dumps(doc) + "\n").encode()
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def websocket(c, f):
    while True:
        b0, b1 = f.read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", f.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", f.read(8))[0]
        mask = f.read(4) if b1 & 0x80 else b"\0\0\0\0"
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(n)))
        op = b0 & 0x0F
        if op == 8:
            c.sendall(b"\x88\x00")
            return
        if op in (1, 2):
            out = NAME.encode() + b": " + data
            head = bytes([0x80 | op]) + (bytes([len(out)]) if len(out) < 126 else b"\x7e" + struct.pack("!H", len(out)))
            c.sendall(head + out)


def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = c.makefile("rb")
    try:
        while True:
            first, h = read_head(f)
            if not first:
                return
            method, path, _ = first.decode().split(" ", 2)
            if h.get("upgrade", "").lower() == "websocket":
                accept = base64.b64encode(hashlib.sha1((h["sec-websocket-key"] + WS_GUID).encode()).digest())
                c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                return websocket(c, f)
            length = int(h.get("content-length", "0"))
            sha, seen = hashlib.sha256(), 0
            while seen < length:
                d = f.read1(min(length - seen, 1 << 20))
                if not d:
                    return
                sha.update(d)
                seen += len(d)
            parts = path.split("/")
            if method == "GET" and parts[1] == "bytes":
                n, seed = int(parts[2]), int(parts[3])
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                c.sendall(pattern(n, seed))
            elif method == "GET" and parts[1] == "sse":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                          b"X-Accel-Buffering: no\r\nConnection: close\r\n\r\n")
                for i in range(int(parts[2])):
                    c.sendall(b"data: event %d\n\n" % i)
                    with acks:
                        if not acks.wait_for(lambda: i in acked, 30):
                            return
                return
            elif method == "GET" and parts[1] == "ack":
                with acks:
                    acked.add(int(parts[2]))
                    acks.notify_all()
                reply(c, {"pod": NAME, "ack": int(parts[2])})
            elif method == "POST":
                reply(c, {"pod": NAME, "body": {"length": seen, "sha256": sha.hexdigest()}})
            else:
                reply(c, {"pod": NAME, "path": path, "headers": h})
    except (OSError, ValueError, IndexError):
        pass
    finally:
        c.close()


def main():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(512)
    print(ls.getsockname()[1], flush=True)
    sys.stdout.close()
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
