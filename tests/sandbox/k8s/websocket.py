"""RFC 6455 WebSocket, server side, over a Transport (see streams.py).

Only what the Kubernetes streaming endpoints need: the opening handshake
(Sec-WebSocket-Accept, subprotocol choice), frames in both directions
(client frames must be masked, server frames are not), fragmented messages
reassembled, ping answered with pong, close answered with close. Message
boundaries are kept: read_message() returns one whole message.

It must not know about Kubernetes channels or SPDY: streams.py builds those
on top (channel byte prefix, the SPDY tunnel byte stream).
"""
import base64
import hashlib
import re
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

NORMAL_CLOSURE = 1000
PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009

# A message larger than this is refused (close 1009): the clients we serve send
# at most a few tens of KiB per message (client-go writes 32 KiB copies).
MAX_MESSAGE = 64 << 20

_UPGRADE = re.compile(r"(^|.*,\s*)upgrade($|\s*,)")


def is_websocket_request(headers):
    """As wsstream.IsWebSocketRequest: Upgrade: websocket and a Connection header naming upgrade."""
    if (headers.get("Upgrade") or "").lower() != "websocket":
        return False
    return bool(_UPGRADE.match((headers.get("Connection") or "").lower()))


def subprotocols(headers):
    """The client's Sec-WebSocket-Protocol values, in its order of preference."""
    out = []
    for h in headers.get_all("Sec-WebSocket-Protocol") or []:
        out += [p.strip() for p in h.split(",") if p.strip()]
    return out


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.strip().encode() + GUID).digest()).decode()


def handshake_headers(headers, protocol):
    """The 101 response headers for this request, choosing `protocol` (None: none)."""
    out = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
           ("Sec-WebSocket-Accept", accept_key(headers.get("Sec-WebSocket-Key") or ""))]
    if protocol:
        out.append(("Sec-WebSocket-Protocol", protocol))
    return out


def bad_handshake(headers):
    """Why the upgrade request is not a valid RFC 6455 handshake, or None."""
    if (headers.get("Sec-WebSocket-Version") or "").strip() != "13":
        return "websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header"
    key = headers.get("Sec-WebSocket-Key") or ""
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        return "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length"
    return None


class ProtocolError(Exception):
    def __init__(self, message, code=PROTOCOL_ERROR):
        super().__init__(message)
        self.code = code


def _unmask(data, mask):
    n = len(data)
    if not n:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def frame(opcode, payload=b"", fin=True):
    """One unmasked (server) frame."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


class Conn:
    """A server-side WebSocket connection over a Transport (read_exact, write, close)."""

    def __init__(self, transport, protocol=None):
        self.t = transport
        self.protocol = protocol
        self.closed_by_peer = False
        self.close_sent = False

    def _read_frame(self):
        b0, b1 = self.t.read_exact(2)
        fin, rsv, opcode = b0 & 0x80, b0 & 0x70, b0 & 0x0F
        masked, n = b1 & 0x80, b1 & 0x7F
        if rsv:
            raise ProtocolError("reserved bits set")
        if not masked:
            raise ProtocolError("client frame not masked")
        if n == 126:
            n = struct.unpack("!H", self.t.read_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.t.read_exact(8))[0]
        if opcode >= 0x8 and (n > 125 or not fin):
            raise ProtocolError("bad control frame")
        if n > MAX_MESSAGE:
            raise ProtocolError("message too big", MESSAGE_TOO_BIG)
        mask = self.t.read_exact(4)
        return bool(fin), opcode, _unmask(self.t.read_exact(n), mask)

    def read_message(self):
        """(opcode, payload) of the next TEXT or BINARY message; None once the
        peer has closed (its close frame is answered). Pings are answered here."""
        parts, opcode = [], None
        while True:
            fin, op, data = self._read_frame()
            if op == PING:
                self.send(PONG, data)
                continue
            if op == PONG:
                continue
            if op == CLOSE:
                self.closed_by_peer = True
                code = data[:2] if len(data) >= 2 else struct.pack("!H", NORMAL_CLOSURE)
                self.close(struct.unpack("!H", code)[0] if code else NORMAL_CLOSURE)
                return None
            if op == CONT:
                if opcode is None:
                    raise ProtocolError("continuation without a message")
            elif op in (TEXT, BINARY):
                if opcode is not None:
                    raise ProtocolError("new message inside a fragmented one")
                opcode = op
            else:
                raise ProtocolError("unknown opcode %d" % op)
            parts.append(data)
            if sum(map(len, parts)) > MAX_MESSAGE:
                raise ProtocolError("message too big", MESSAGE_TOO_BIG)
            if fin:
                return opcode, b"".join(parts)

    def send(self, opcode, payload=b""):
        if self.close_sent:
            raise BrokenPipeError("websocket close already sent")
        self.t.write(frame(opcode, payload))

    def send_binary(self, payload):
        self.send(BINARY, payload)

    def close(self, code=NORMAL_CLOSURE, reason=""):
        """Send the close frame once (the TCP connection stays for the caller to end)."""
        if self.close_sent:
            return
        try:
            self.t.write(frame(CLOSE, struct.pack("!H", code) + reason.encode()[:120]))
        except OSError:
            pass
        self.close_sent = True


class ByteStream:
    """The payload of consecutive BINARY messages as one byte stream, as
    client-go's TunnelingConnection reads it (message boundaries carry no
    meaning; a TEXT message is an error); writes go out one BINARY message
    per write() call."""

    def __init__(self, conn):
        self.c = conn
        self.buf = bytearray()
        self.eof = False

    def read_exact(self, n):
        while len(self.buf) < n:
            if self.eof:
                raise EOFError("websocket closed")
            m = self.c.read_message()
            if m is None:
                self.eof = True
                continue
            if m[0] != BINARY:
                raise ProtocolError("invalid message type received")
            self.buf += m[1]
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def write(self, data):
        self.c.send_binary(data)
