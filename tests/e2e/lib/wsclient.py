#!/usr/bin/env python3
"""Minimal WebSocket client for the tests: ws_client.py HOST PORT MESSAGE [HEADER:VALUE...]
Opens ws://HOST:PORT/ws, sends MESSAGE as a text frame, prints the reply."""
import base64
import os
import socket
import struct
import sys

host, port, message = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
extra = sys.argv[4:]
s = socket.create_connection((host, port), 10)
s.settimeout(10)
key = base64.b64encode(os.urandom(16)).decode()
req = ["GET /ws HTTP/1.1", "Host: %s:%d" % (host, port), "Upgrade: websocket", "Connection: Upgrade",
       "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
for h in extra:
    name, value = h.split(":", 1)
    req.append("%s: %s" % (name, value.strip()))
s.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit("closed during handshake")
    buf += chunk
head, buf = buf.split(b"\r\n\r\n", 1)
if b" 101 " not in head.split(b"\r\n")[0]:
    sys.exit("no upgrade: " + head.split(b"\r\n")[0].decode())
mask = os.urandom(4)
payload = bytes(b ^ mask[i % 4] for i, b in enumerate(message))
s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + payload)


def read(n):
    global buf
    while len(buf) < n:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("closed")
        buf += chunk
    out, buf = buf[:n], buf[n:]
    return out


b0, b1 = read(2)
ln = b1 & 0x7F
if ln == 126:
    ln = struct.unpack(">H", read(2))[0]
elif ln == 127:
    ln = struct.unpack(">Q", read(8))[0]
print(read(ln).decode())
