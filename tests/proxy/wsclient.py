#!/usr/bin/env python3
"""Minimal WebSocket client for the proxy tests.

    wsclient.py HOST:PORT PATH MESSAGE [Header:Value ...]

Performs the RFC 6455 handshake through the proxy, sends MESSAGE as a masked
text frame, prints the text frame that comes back, then closes cleanly.
Exit status 1 (with the reason on stderr) when the upgrade or echo fails.
"""
import base64
import os
import socket
import sys


def main():
    hostport, path, message = sys.argv[1:4]
    host, port = hostport.rsplit(":", 1)
    extra = sys.argv[4:]
    key = base64.b64encode(os.urandom(16)).decode()
    s = socket.create_connection((host, int(port)), timeout=10)
    req = ["GET %s HTTP/1.1" % path, "Host: %s" % hostport, "Upgrade: websocket", "Connection: Upgrade",
           "Sec-WebSocket-Key: %s" % key, "Sec-WebSocket-Version: 13"] + extra
    s.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
    f = s.makefile("rb")
    status = f.readline().decode().strip()
    if " 101 " not in status + " ":
        sys.stderr.write("no upgrade: %s\n" % status)
        return 1
    while f.readline() not in (b"\r\n", b""):
        pass
    payload = message.encode()
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(frame)
    b1, b2 = f.read(2)
    n = b2 & 0x7F
    if n == 126:
        n = int.from_bytes(f.read(2), "big")
    data = f.read(n)
    print(data.decode())
    s.sendall(bytes([0x88, 0x82]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"\x03\xe8")))
    s.close()
    return 0 if (b1 & 0x0F) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
