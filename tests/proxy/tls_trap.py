#!/usr/bin/env python3
"""A TLS endpoint that must get nothing: it serves CERT/KEY on ADDR:PORT and
prints one line per HTTP request head it ever receives ("GOT <request line>
<header names>"), so a test can tell that a proxy which refuses its
certificate sent it no request (and no secret).

    tls_trap.py CERT KEY ADDR PORT
"""
import socket
import ssl
import sys
import threading


def serve(conn):
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        names = sorted(line.split(":", 1)[0].lower() for line in head[1:])
        print("GOT %s %s" % (head[0], " ".join(names)), flush=True)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\ntrap\n")
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


def main():
    cert, key, addr, port = sys.argv[1:5]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(16)
    print("READY", flush=True)
    while True:
        c, _ = s.accept()
        try:
            c = ctx.wrap_socket(c, server_side=True)
        except (OSError, ssl.SSLError):
            c.close()
            continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
