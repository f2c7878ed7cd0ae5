#!/usr/bin/env python3
"""The `sandbox/echo` image: an HTTP/1.1 server that answers every request with JSON.

    echo.py --ip POD_IP [--listen ADDR] --port 8080 [--port 9090 ...] --container NAME

Environment: POD_NAME, POD_NAMESPACE (set by the kubelet).

Every request is answered `200` with a JSON object:
  {"pod", "namespace", "container", "ip", "port", "method", "path", "httpVersion",
   "headers": {name: value, ...} (as received; repeated headers joined with ", "),
   "body": {"length": N, "sha256": "..."}, "remote": "ip:port"}
Bodies of any size (Content-Length or chunked) are read and hashed, keep-alive
is the HTTP/1.1 default, `Connection: close` is honoured, HEAD has no body.

A WebSocket upgrade (RFC 6455) is accepted on any path; every text or binary
message is echoed back prefixed with "<pod name>: "; ping gets pong; close is
answered with close.
"""
import argparse
import base64
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import threading

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
MAX_HEADER = 64 * 1024

POD = os.environ.get("POD_NAME", "")
NAMESPACE = os.environ.get("POD_NAMESPACE", "")
CONTAINER = ""
IP = ""


class Conn:
    def __init__(self, sock, port):
        self.sock = sock
        self.port = port
        self.buf = b""

    def fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise EOFError
        self.buf += data

    def read_until(self, sep, limit=MAX_HEADER):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out, self.buf = self.buf[:i], self.buf[i + len(sep):]
                return out
            if len(self.buf) > limit:
                raise ValueError("header too large")
            self.fill()

    def read_exact(self, n, sink=None):
        """Read n bytes; with sink, feed them to sink(bytes) instead of returning them."""
        out = []
        while n > 0:
            if not self.buf:
                self.fill()
            chunk, self.buf = self.buf[:n], self.buf[n:]
            n -= len(chunk)
            if sink:
                sink(chunk)
            else:
                out.append(chunk)
        return b"".join(out)


def send_response(sock, status, reason, headers, body, head=False):
    lines = ["HTTP/1.1 %d %s" % (status, reason)]
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    lines.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    sock.sendall(data if head else data + body)


def handle(sock, addr, port):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c = Conn(sock, port)
    try:
        while True:
            try:
                head = c.read_until(b"\r\n\r\n")
            except EOFError:
                return
            lines = head.decode("latin-1").split("\r\n")
            while lines and lines[0] == "":
                lines.pop(0)
            if not lines:
                continue
            parts = lines[0].split(" ")
            if len(parts) != 3:
                send_response(sock, 400, "Bad Request", [("Connection", "close")], b"bad request\n")
                return
            method, path, version = parts
            headers = {}
            raw = []
            for line in lines[1:]:
                if ":" not in line:
                    continue
                k, v = line.split(":", 1)
                k, v = k.strip(), v.strip()
                raw.append((k, v))
                headers[k] = headers[k] + ", " + v if k in headers else v
            lower = {k.lower(): v for k, v in raw}
            h = hashlib.sha256()
            length = [0]

            def sink(b):
                h.update(b)
                length[0] += len(b)
            if "chunked" in lower.get("transfer-encoding", "").lower():
                while True:
                    size_line = c.read_until(b"\r\n").split(b";")[0].strip()
                    size = int(size_line or b"0", 16)
                    if size == 0:
                        while c.read_until(b"\r\n") != b"":
                            pass
                        break
                    c.read_exact(size, sink)
                    c.read_exact(2)
            elif lower.get("content-length"):
                c.read_exact(int(lower["content-length"]), sink)
            if lower.get("upgrade", "").lower() == "websocket" and lower.get("sec-websocket-key"):
                accept = base64.b64encode(hashlib.sha1(
                    (lower["sec-websocket-key"] + WS_GUID).encode()).digest()).decode()
                resp = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                        "Sec-WebSocket-Accept: " + accept]
                proto = lower.get("sec-websocket-protocol")
                if proto:
                    resp.append("Sec-WebSocket-Protocol: " + proto.split(",")[0].strip())
                sock.sendall(("\r\n".join(resp) + "\r\n\r\n").encode())
                websocket(c)
                return
            doc = {"pod": POD, "namespace": NAMESPACE, "container": CONTAINER, "ip": IP, "port": port,
                   "method": method, "path": path, "httpVersion": version, "headers": headers,
                   "body": {"length": length[0], "sha256": h.hexdigest()},
                   "remote": "%s:%d" % addr[:2]}
            body = (json.dumps(doc, indent=2) + "\n").encode()
            close = lower.get("connection", "").lower() == "close" or version == "HTTP/1.0" and \
                lower.get("connection", "").lower() != "keep-alive"
            hdrs = [("Content-Type", "application/json"), ("X-Sandbox-Pod", POD)]
            if close:
                hdrs.append(("Connection", "close"))
            elif version == "HTTP/1.0":
                hdrs.append(("Connection", "keep-alive"))
            send_response(sock, 200, "OK", hdrs, body, head=(method == "HEAD"))
            if close:
                return
    except (OSError, ValueError, EOFError):
        return
    finally:
        try:
            sock.close()
        except OSError:
            pass


def ws_send(sock, opcode, payload):
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    sock.sendall(hdr + payload)


def websocket(c):
    prefix = (POD + ": ").encode()
    message, msg_op = b"", None
    while True:
        b1, b2 = c.read_exact(2)
        fin, opcode = b1 & 0x80, b1 & 0x0F
        masked, n = b2 & 0x80, b2 & 0x7F
        if n == 126:
            n = struct.unpack("!H", c.read_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", c.read_exact(8))[0]
        mask = c.read_exact(4) if masked else None
        payload = c.read_exact(n)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if opcode == 0x8:
            ws_send(c.sock, 0x8, payload[:2])
            return
        if opcode == 0x9:
            ws_send(c.sock, 0xA, payload)
            continue
        if opcode == 0xA:
            continue
        if opcode in (0x1, 0x2):
            message, msg_op = payload, opcode
        elif opcode == 0x0:
            message += payload
        if fin and msg_op is not None:
            ws_send(c.sock, msg_op, prefix + message)
            message, msg_op = b"", None


def listen(ip, port):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, port))
    ls.listen(1024)
    return ls


def serve(ls, port):
    while True:
        s, addr = ls.accept()
        threading.Thread(target=handle, args=(s, addr, port), daemon=True).start()


def main():
    global CONTAINER, IP
    ap = argparse.ArgumentParser()
    ap.add_argument("--ip", required=True)
    ap.add_argument("--listen", help="the address to listen on (default: --ip)")
    ap.add_argument("--port", type=int, action="append", default=[])
    ap.add_argument("--container", default="")
    a = ap.parse_args()
    CONTAINER, IP = a.container, a.ip
    # Every thread blocks TERM/INT (new threads inherit the mask) and the main
    # thread waits for them: a Python handler would miss a signal that the
    # kernel delivers to a thread blocked in accept().
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    ports = a.port or [8080]
    addr = a.listen or a.ip
    listeners = []
    for p in ports:
        try:
            listeners.append((listen(addr, p), p))
        except OSError as e:  # a bind error ends the container, as for a real app
            print("echo: listen %s:%d: %s" % (addr, p, e), file=sys.stderr, flush=True)
            sys.exit(1)
    for ls, p in listeners:
        threading.Thread(target=serve, args=(ls, p), daemon=True).start()
    print("echo: pod %s/%s container %s (%s) listening on %s port(s) %s"
          % (NAMESPACE, POD, CONTAINER, a.ip, addr, ",".join(map(str, ports))), flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    os._exit(0)


if __name__ == "__main__":
    main()
