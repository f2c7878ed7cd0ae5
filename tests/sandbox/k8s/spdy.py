"""SPDY/3.1 server sessions, as the kubelet (moby/spdystream) runs them.

A Session reads frames from a byte transport (a TLS connection, or the byte
stream of a WebSocket tunnel) and calls on_stream(stream) for each SYN_STREAM
the client opens. on_stream returns None to accept (the session answers
SYN_REPLY with an empty header block, then calls on_open(stream)) or an error
text to refuse (RST_STREAM CANCEL, as spdystream's Reset does). What the
client sends on a stream goes to the consumer given to stream.attach(), its
FIN or RST to the end callback.

What spdystream does and so what this does: client streams are odd and
increasing (anything else: RST_STREAM PROTOCOL_ERROR); PINGs with the
client's parity (odd ids) are echoed; SETTINGS, WINDOW_UPDATE and HEADERS are
read and ignored (no flow control: spdystream neither sends nor honours
WINDOW_UPDATE); GOAWAY from the client ends the session; close() sends
GOAWAY(last stream, OK). Header blocks are zlib streams (one per direction
for the whole connection, each block ending with a sync flush) over the
SPDY/3 dictionary below.

It must not know about port-forward or exec: streams.py pairs the streams.
"""
import struct
import threading
import zlib

VERSION = 3

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01

# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION, CANCEL, INTERNAL_ERROR = 1, 2, 3, 4, 5, 6

# Largest DATA payload we send in one frame (spdystream sends each Write as one
# frame; the protocol allows 2^24-1).
MAX_DATA = 1 << 16


def _dictionary():
    """The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1):
    length-prefixed names and values, then a run of common value fragments.
    1423 bytes; sha256 51d27341...07f02, the bytes moby/spdystream uses."""
    words = ("options head post put delete trace accept accept-charset accept-encoding accept-language "
             "accept-ranges age allow authorization cache-control connection content-base content-encoding "
             "content-language content-length content-location content-md5 content-range content-type date "
             "etag expect expires from host if-match if-modified-since if-none-match if-range "
             "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
             "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
             "user-agent vary via warning www-authenticate method get status").split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = (b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
            b"203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
            b"401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
            b"503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
            b"Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
            b"application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
            b"gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail


DICTIONARY = _dictionary()


class FrameError(Exception):
    """A frame the session cannot go on after (the connection is closed)."""


def encode_headers(headers):
    """Uncompressed name/value block: count, then (len, name, len, value) with
    32-bit big-endian lengths; several values of one name joined by NUL."""
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        v = "\0".join(value) if isinstance(value, (list, tuple)) else value
        n, vb = name.lower().encode(), v.encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(vb)), vb]
    return b"".join(out)


def decode_headers(block):
    """{name: [values]}; raises FrameError on a truncated block."""
    try:
        (count,), pos, out = struct.unpack_from(">I", block, 0), 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4:pos + 4 + n].decode("latin-1").lower()
            pos += 4 + n
            (m,) = struct.unpack_from(">I", block, pos)
            value = block[pos + 4:pos + 4 + m].decode("latin-1")
            pos += 4 + m
            if pos > len(block):
                raise struct.error
            out.setdefault(name, []).extend(value.split("\0"))
        return out
    except struct.error:
        raise FrameError("truncated header block")


def control(ftype, flags, payload):
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def data_frame(stream_id, data, fin=False):
    return struct.pack(">II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


class Stream:
    """One client-opened stream. What the client sends is kept until attach()
    names the consumer (data may arrive before the consumer is ready)."""

    def __init__(self, session, sid, headers, fin):
        self.session = session
        self.id = sid
        self.headers = headers
        self.remote_closed = fin     # the client sent FIN (or RST)
        self.local_closed = False    # we sent FIN (or RST)
        self._lock = threading.Lock()
        self._data_fn = None
        self._end_fn = None
        self._pending = []
        self._ended = False

    def attach(self, on_data, on_end=None):
        """Deliver data to on_data(bytes) and the client's end to on_end(),
        starting with whatever already arrived."""
        with self._lock:
            for d in self._pending:
                on_data(d)
            self._pending = []
            self._data_fn, self._end_fn = on_data, on_end
            if self._ended and on_end:
                on_end()

    def on_data(self, data):
        with self._lock:
            if self._data_fn is None:
                self._pending.append(data)
                return
        self._data_fn(data)

    def on_end(self):
        with self._lock:
            self._ended = True
            fn = self._end_fn
        if fn:
            fn()

    def header(self, name):
        v = self.headers.get(name.lower())
        return v[0] if v else ""

    def write(self, data):
        """Send data (split into frames of at most MAX_DATA); False once closed."""
        if self.local_closed:
            return False
        mv = memoryview(data)
        for i in range(0, len(mv), MAX_DATA):
            self.session.send(data_frame(self.id, bytes(mv[i:i + MAX_DATA])))
        return True

    def close(self):
        """Half-close our side: an empty DATA frame with FIN."""
        if not self.local_closed:
            self.local_closed = True
            try:
                self.session.send(data_frame(self.id, b"", fin=True))
            except OSError:
                pass
        self.session._forget(self)

    def reset(self, status=CANCEL):
        if not self.local_closed:
            self.local_closed = True
            try:
                self.session.send(control(RST_STREAM, 0, struct.pack(">II", self.id, status)))
            except OSError:
                pass
        self.session._end(self)


class Session:
    """The server end of one SPDY/3.1 connection. run() reads until the client
    goes away; send() is safe from any thread."""

    def __init__(self, transport, on_stream, on_open=None):
        self.t = transport
        self.on_stream = on_stream
        self.on_open = on_open or (lambda stream: None)
        self.streams = {}
        self.last_id = 0          # highest stream id accepted
        self.gone = False
        self.lock = threading.Lock()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def send(self, frame):
        self.t.write(frame)

    def _headers_block(self, compressed):
        try:
            raw = self._inflate.decompress(compressed)
        except zlib.error as e:
            raise FrameError("header decompression failed: %s" % e)
        return decode_headers(raw)

    def reply(self, stream):
        with self.lock:    # one compressor: blocks must go out in the order compressed
            block = self._deflate.compress(encode_headers({})) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
            self.send(control(SYN_REPLY, 0, struct.pack(">I", stream.id) + block))

    def run(self):
        """Serve frames until EOF, a GOAWAY or a fatal error; then every open
        stream gets on_end(). Returns the reason (for logs)."""
        reason = "eof"
        try:
            while not self.gone:
                head = self.t.read_exact(8)
                w0, w1 = struct.unpack(">II", head)
                flags, length = w1 >> 24, w1 & 0xFFFFFF
                payload = self.t.read_exact(length) if length else b""
                if w0 & 0x80000000:
                    self._control((w0 >> 16) & 0x7FFF, w0 & 0xFFFF, flags, payload)
                else:
                    self._data(w0 & 0x7FFFFFFF, flags, payload)
            reason = "goaway"
        except (EOFError, OSError) as e:
            reason = "closed: %s" % e
        except FrameError as e:
            reason = "protocol error: %s" % e
        finally:
            self.gone = True
            for s in list(self.streams.values()):
                self._end(s)
        return reason

    def _end(self, s):
        """The client's side of s is over (FIN, RST, or the connection ended)."""
        if not s.remote_closed:
            s.remote_closed = True
            try:
                s.on_end()
            except Exception:
                pass
        self._forget(s)

    def _forget(self, s):
        if s.remote_closed and s.local_closed:
            self.streams.pop(s.id, None)

    def _control(self, version, ftype, flags, payload):
        if version != VERSION:
            raise FrameError("unsupported SPDY version %d" % version)
        if ftype == SYN_STREAM:
            if len(payload) < 10:
                raise FrameError("short SYN_STREAM")
            sid = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            headers = self._headers_block(payload[10:])
            if sid == 0 or sid % 2 == 0 or sid <= self.last_id:
                self.send(control(RST_STREAM, 0, struct.pack(">II", sid, PROTOCOL_ERROR)))
                return
            self.last_id = sid
            s = Stream(self, sid, headers, False)
            err = self.on_stream(s)
            if err is not None:
                s.remote_closed = True
                s.reset(CANCEL)
                return
            self.streams[sid] = s
            self.reply(s)
            self.on_open(s)     # after SYN_REPLY: nothing may be sent on s before it
            if flags & FLAG_FIN:
                self._end(s)
        elif ftype == RST_STREAM:
            sid = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF if len(payload) >= 4 else 0
            s = self.streams.get(sid)
            if s is not None:
                s.local_closed = True     # nothing more may be sent on a reset stream
                self._end(s)
        elif ftype == PING:
            if len(payload) == 4 and struct.unpack(">I", payload)[0] % 2 == 1:
                self.send(control(PING, 0, payload))
        elif ftype == GOAWAY:
            self.gone = True
        elif ftype in (SYN_REPLY, HEADERS):
            if len(payload) >= 4:
                self._headers_block(payload[4:])   # keeps the shared zlib stream in step
        # SETTINGS, WINDOW_UPDATE and unknown types: ignored, as spdystream does

    def _data(self, sid, flags, payload):
        s = self.streams.get(sid)
        if s is None or s.remote_closed:
            return      # spdystream drops data for unknown or finished streams
        if payload:
            s.on_data(payload)
        if flags & FLAG_FIN:
            self._end(s)

    def close(self):
        """GOAWAY(last accepted stream, OK), as spdystream's Connection.Close."""
        try:
            self.send(control(GOAWAY, 0, struct.pack(">II", self.last_id, 0)))
        except OSError:
            pass
