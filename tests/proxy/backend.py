#!/usr/bin/env python3
"""A test backend for the proxy tests: says which backend answered.

    backend.py NAME IP:PORT

Every request gets a JSON answer: {"backend", "method", "path", "headers"
(names lower-cased), "body_len", "body_sha256", "connection"} where
"connection" numbers the TCP connection the request came on. GET /__stats
answers {"connections": N, "requests": N}, so a test can tell whether the
proxy reused upstream connections; /__status/NNN answers with status NNN. A WebSocket upgrade (RFC 6455) is accepted
and each text frame is echoed back as "NAME:payload". Request bodies are read
as they arrive (Content-Length or chunked) and hashed, never held whole.
HTTP/1.1 keep-alive. Standard library only.
"""
import base64
import hashlib
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
LOCK = threading.Lock()
STATS = {"connections": 0, "requests": 0}


def read_exact(f, n):
    data = f.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


def ws_read_frame(f):
    b1, b2 = read_exact(f, 2)
    opcode = b1 & 0x0F
    n = b2 & 0x7F
    if n == 126:
        n = int.from_bytes(read_exact(f, 2), "big")
    elif n == 127:
        n = int.from_bytes(read_exact(f, 8), "big")
    mask = read_exact(f, 4) if b2 & 0x80 else None
    payload = read_exact(f, n) if n else b""
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def ws_frame(opcode, payload):
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "czctl-test-backend"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with LOCK:
            STATS["connections"] += 1
            self.conn_id = STATS["connections"]

    def read_body(self):
        h = hashlib.sha256()
        total = 0

        def take(left):
            # hash `left` body bytes as they stream in, never holding them all
            nonlocal total
            while left:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    raise EOFError
                h.update(chunk)
                total += len(chunk)
                left -= len(chunk)

        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                take(size)
                self.rfile.readline()
        else:
            take(int(self.headers.get("Content-Length") or 0))
        return total, h.hexdigest()

    def answer(self, code, obj):
        body = (json.dumps(obj, sort_keys=True) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        try:
            while True:
                opcode, payload = ws_read_frame(self.rfile)
                if opcode == 8:
                    self.wfile.write(ws_frame(8, payload[:2]))
                    break
                if opcode == 9:
                    self.wfile.write(ws_frame(10, payload))
                elif opcode in (1, 2):
                    self.wfile.write(ws_frame(opcode, NAME.encode() + b":" + payload))
                self.wfile.flush()
        except (EOFError, OSError):
            pass
        self.close_connection = True

    def handle_any(self):
        with LOCK:
            STATS["requests"] += 1
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        if self.path == "/__stats":
            with LOCK:
                stats = dict(STATS)
            return self.answer(200, stats)
        try:
            total, digest = self.read_body()
        except (EOFError, ValueError):
            self.close_connection = True
            return
        # /__status/NNN answers with that status (the body as usual)
        code = 200
        if self.path.startswith("/__status/") and self.path[10:13].isdigit():
            code = int(self.path[10:13])
        self.answer(code, {
            "backend": NAME,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_len": total,
            "body_sha256": digest,
            "connection": self.conn_id,
        })

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


if __name__ == "__main__":
    NAME = sys.argv[1]
    host, port = sys.argv[2].rsplit(":", 1)
    srv = Server((host, int(port)), Handler)
    print("listening", flush=True)
    srv.serve_forever()
