#!/usr/bin/env python3
"""Backends and clients that are not plain HTTP, for the pass-through ports.

    rawbackend.py https NAME IP:PORT CERT KEY   HTTPS server: every GET answers "NAME"
    rawbackend.py banner NAME IP:PORT           TCP, the server speaks first: sends
                                                "NAME ready\\r\\n", then echoes
                                                each line as "NAME:line"
    rawbackend.py udp NAME IP:PORT              UDP: answers each datagram with
                                                "NAME:payload"
    rawbackend.py banner-client IP:PORT LINE    prints the banner (sent before the
                                                client says anything), then the echo
    rawbackend.py udp-client IP:PORT PAYLOAD    prints the answer to one datagram

Standard library only. Clients time out after 5 s (exit 1).
"""
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def hostport(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def serve_https(name, addr, cert, key):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(hostport(addr), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    httpd.serve_forever()


def serve_banner(name, addr):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(hostport(addr))
    srv.listen(64)

    def handle(c):
        with c:
            c.sendall(("%s ready\r\n" % name).encode())
            f = c.makefile("rb")
            for line in f:
                c.sendall(b"%s:%s\r\n" % (name.encode(), line.rstrip(b"\r\n")))

    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def serve_udp(name, addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(hostport(addr))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(name.encode() + b":" + data, peer)


def banner_client(addr, line):
    c = socket.create_connection(hostport(addr), timeout=5)
    f = c.makefile("rb")
    print(f.readline().decode().rstrip("\r\n"))   # before sending anything
    c.sendall(line.encode() + b"\r\n")
    print(f.readline().decode().rstrip("\r\n"))
    c.close()


def udp_client(addr, payload):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(payload.encode(), hostport(addr))
    data, _ = s.recvfrom(65535)
    print(data.decode())


def main(argv):
    mode = argv[1]
    try:
        if mode == "https":
            serve_https(argv[2], argv[3], argv[4], argv[5])
        elif mode == "banner":
            serve_banner(argv[2], argv[3])
        elif mode == "udp":
            serve_udp(argv[2], argv[3])
        elif mode == "banner-client":
            banner_client(argv[2], argv[3])
        elif mode == "udp-client":
            udp_client(argv[2], argv[3])
        else:
            print("unknown mode %s" % mode, file=sys.stderr)
            return 2
    except (OSError, IndexError) as e:
        print("rawbackend: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
