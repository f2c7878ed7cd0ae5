"""pods/exec and pods/portforward: the upgrade and the sessions behind it.

server.py hands a request for one of these subresources to serve(). After
the checks a real API server makes before upgrading (pod, container, RBAC
verb from the HTTP method, options), the connection is taken over:

  exec (and the same options for every protocol)
    WebSocket v5.channel.k8s.io          API server's stream translator (kubectl 1.32's default)
    WebSocket v4.channel.k8s.io, v4.base64.channel.k8s.io, channel.k8s.io,
              base64.channel.k8s.io, none   the runtime's WebSocket server (older clients)
    SPDY/3.1 with X-Stream-Protocol-Version v4/v3/v2.channel.k8s.io, channel.k8s.io
  portforward
    WebSocket SPDY/3.1+portforward.k8s.io  SPDY tunnelled in binary messages (kubectl 1.32's default)
    WebSocket v4.channel.k8s.io, v4.base64.channel.k8s.io, none, with ?ports=
    SPDY/3.1 with X-Stream-Protocol-Version portforward.k8s.io

tests/sandbox/README.md ("Streaming: exec and port-forward") describes the
wire formats; pod I/O goes through podio.py only.
"""
import base64
import json
import queue
import select
import socket
import ssl
import struct
import threading
import urllib.parse

from . import errors as E
from . import podio
from . import spdy
from . import websocket as WS

EXEC_SPDY = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"]
EXEC_WS = ["v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io",
           "base64.channel.k8s.io"]
PF_SPDY = ["portforward.k8s.io"]
PF_TUNNEL = "SPDY/3.1+portforward.k8s.io"
PF_WS = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io"]

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255
STREAM_CREATION_TIMEOUT = 30.0   # kubelet's default
FINISH_TIMEOUT = 60.0            # how long we wait for the client to close after the status


def qbool(values):
    """A bool query parameter as the API server converts it (Convert_Slice_string_To_bool):
    absent is false, "0" and "false" (any case) are false, anything else is true."""
    if not values:
        return False
    return not (values[0] == "0" or values[0].lower() == "false")


# ---- transport ----------------------------------------------------------------------------

class Transport:
    """The upgraded TLS connection, shared by one reader and any number of
    writers. OpenSSL objects must not be used by two threads at once, so every
    SSL call holds `lock`; the socket is non-blocking and waits happen in
    select() outside the lock."""

    def __init__(self, sock, initial=b""):
        self.sock = sock
        self.buf = bytearray(initial)
        self.lock = threading.Lock()
        self.wlock = threading.Lock()
        self.closed = False
        sock.setblocking(False)

    def _wait(self, r, w):
        if self.closed:
            raise EOFError("connection closed")
        select.select([self.sock] if r else [], [self.sock] if w else [], [], 0.5)

    def recv(self):
        while True:
            want_w = False
            with self.lock:
                try:
                    d = self.sock.recv(1 << 18)
                    if not d:
                        raise EOFError("peer closed")
                    return d
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLWantWriteError:
                    want_w = True
                except ssl.SSLZeroReturnError:
                    raise EOFError("peer closed")
            self._wait(not want_w, want_w)

    def read_exact(self, n):
        while len(self.buf) < n:
            self.buf += self.recv()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def write(self, data):
        mv = memoryview(data)
        with self.wlock:
            while len(mv):
                want_r = False
                with self.lock:
                    try:
                        k = self.sock.send(mv[:1 << 20])
                        mv = mv[k:]
                        continue
                    except ssl.SSLWantWriteError:
                        pass
                    except ssl.SSLWantReadError:
                        want_r = True
                if self.closed:
                    raise BrokenPipeError("connection closed")
                select.select([self.sock] if want_r else [], [] if want_r else [self.sock], [], 0.5)

    def close(self):
        self.closed = True
        with self.lock:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _pump(src, write, done=None, size=65536):
    """Copy a readable file object into write(bytes) until EOF; then done()."""
    try:
        while True:
            d = src.read1(size) if hasattr(src, "read1") else src.read(size)
            if not d:
                break
            if write(d) is False:
                break
    except (OSError, ValueError, EOFError):
        pass
    if done:
        done()


def _thread(fn, *args):
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


# ---- entry point --------------------------------------------------------------------------

def serve(h, req, method):
    """Handle GET/POST on pods/NAME/{exec,portforward} for handler h (server.Handler)."""
    if method not in ("GET", "POST"):
        raise E.method_not_allowed()
    st = h.C.store
    pod = st.get("pods", req.namespace, req.name)
    if pod is None:
        raise E.not_found("pods", "", req.name)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query, keep_blank_values=True)
    spec = pod.get("spec") or {}
    if req.sub == "exec":
        container = _container(pod, req.name, (query.get("container") or [""])[0])
        opts = {k: qbool(query.get(k)) for k in ("stdin", "stdout", "stderr", "tty")}
        if opts["tty"]:
            opts["stderr"] = False     # the kubelet bypasses stderr with a tty
        if not (opts["stdin"] or opts["stdout"] or opts["stderr"]):
            raise E.bad_request("you must specify at least 1 of stdin, stdout, stderr")
        command = query.get("command") or []
        if not command:
            raise E.invalid_object("PodExecOptions", "", "", [E.required("command", "")])
    else:
        container = None
        ports = []
        for v in query.get("ports") or []:
            for p in v.split(","):
                try:
                    n = int(p)
                    if not 0 < n < 65536:
                        raise ValueError
                except ValueError:
                    raise E.bad_request('unable to parse "%s" as a port: strconv.ParseUint: parsing "%s": '
                                        'invalid syntax' % (v, p))
                ports.append(n)
    if not spec.get("nodeName"):
        raise E.bad_request("pod %s does not have a host assigned" % req.name)
    kubelet = h.C.node.kubelet if h.C.node is not None else None
    if req.sub == "exec":
        # the kubelet finds the container before it upgrades; a 500 Status otherwise
        try:
            podio.check_running(kubelet, req.namespace, req.name, container)
        except podio.NotRunning as e:
            raise E.internal(str(e))
    ws = WS.is_websocket_request(h.headers)
    if ws:
        bad = WS.bad_handshake(h.headers)
        if bad:
            raise E.PlainError(400, bad + "\n")
        offered = WS.subprotocols(h.headers)
        supported = EXEC_WS if req.sub == "exec" else [PF_TUNNEL] + PF_WS
        chosen = next((p for p in offered if p in supported), None)
        if chosen is None and offered:
            # wsstream's handshake refuses it; x/net/websocket answers 403 with no body
            raise E.PlainError(403, "")
        if req.sub == "portforward" and chosen != PF_TUNNEL and not ports:
            raise E.bad_request('query parameter "port" is required')
        t = _upgrade(h, 101, WS.handshake_headers(h.headers, chosen))
        conn = WS.Conn(t, chosen)
        try:
            if req.sub == "exec":
                ExecSession(kubelet, req.namespace, req.name, container, command, opts).serve_ws(conn, chosen)
            elif chosen == PF_TUNNEL:
                PortForward(kubelet, req.namespace, req.name, pod).serve_spdy(WS.ByteStream(conn))
            else:
                PortForward(kubelet, req.namespace, req.name, pod).serve_ws(conn, chosen, ports)
        finally:
            conn.close()
            t.close()
        return
    # SPDY/3.1 upgrade
    upgrade = (h.headers.get("Upgrade") or "").lower()
    if "upgrade" not in (h.headers.get("Connection") or "").lower() or "spdy/3.1" not in upgrade:
        raise E.PlainError(400, "unable to upgrade: missing upgrade headers in request: %s\n"
                           % _go_header_map(h.headers))
    offered = []
    for v in h.headers.get_all("X-Stream-Protocol-Version") or []:
        offered += [p.strip() for p in v.split(",") if p.strip()]
    supported = EXEC_SPDY if req.sub == "exec" else PF_SPDY
    if not offered:
        raise E.PlainError(400, "unable to upgrade: X-Stream-Protocol-Version is required\n")
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        raise E.PlainError(403, "unable to upgrade: unable to negotiate protocol: client supports %s, server "
                           "accepts %s\n" % (_go_list(offered), _go_list(supported)),
                           headers=[("X-Accepted-Stream-Protocol-Versions", p) for p in supported])
    t = _upgrade(h, 101, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", chosen)])
    try:
        if req.sub == "exec":
            ExecSession(kubelet, req.namespace, req.name, container, command, opts).serve_spdy(t, chosen)
        else:
            PortForward(kubelet, req.namespace, req.name, pod).serve_spdy(t)
    finally:
        t.close()


def _go_list(xs):
    return "[" + " ".join(xs) + "]"


def _go_header_map(headers):
    return "http.Header{%s}" % ", ".join('"%s":[]string{"%s"}' % (k, v) for k, v in headers.items()
                                         if k.lower() != "authorization")


def _container(pod, name, container):
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    inits = [c.get("name") for c in spec.get("initContainers") or []]
    if not container:
        if len(names) == 1:
            return names[0]
        if not names:
            raise E.bad_request("a container name must be specified for pod %s" % name)
        msg = "a container name must be specified for pod %s, choose one of: [%s]" % (name, " ".join(names))
        if inits:
            msg += " or one of the init containers: [%s]" % " ".join(inits)
        raise E.bad_request(msg)
    if container not in names and container not in inits:
        raise E.bad_request("container %s is not valid for pod %s" % (container, name))
    return container


def _upgrade(h, code, headers):
    """Send the 101 and take the connection over from the HTTP handler."""
    h.status = code
    h.watching = True      # no HTTP answer after this; the audit line is written now
    h.close_connection = True
    h.send_response_only(code)
    for k, v in headers:
        h.send_header(k, v)
    h.end_headers()
    h.wfile.flush()
    h.C.audit.log(h.user, h.command, urllib.parse.urlsplit(h.path).path, urllib.parse.urlsplit(h.path).query,
                  h.headers.get("Content-Type"), code, 0, watch=True, user_agent=h.headers.get("User-Agent"))
    sock = h.connection
    sock.setblocking(False)
    initial = b""
    try:
        initial = h.rfile.read1(1 << 16) or b""   # bytes the client sent after its headers, if buffered
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, TypeError):
        pass
    return Transport(sock, initial)


class Channels:
    """The Kubernetes channel framing over a WebSocket: a channel byte then the
    payload in BINARY messages, or ('0'+channel, base64 payload) in TEXT messages
    for the base64 protocols. send() is safe from any thread."""

    def __init__(self, conn, protocol):
        self.conn = conn
        self.b64 = protocol is not None and "base64" in protocol
        self.lock = threading.Lock()

    def send(self, ch, data):
        with self.lock:
            if self.b64:
                self.conn.send(WS.TEXT, bytes([48 + ch]) + base64.b64encode(data))
            else:
                self.conn.send_binary(bytes([ch]) + data)

    def messages(self):
        """(channel, payload) of each message until the client closes or breaks the connection."""
        try:
            while True:
                m = self.conn.read_message()
                if m is None:
                    return
                data = m[1]
                if not data:
                    continue
                if self.b64:
                    yield data[0] - 48, base64.b64decode(data[1:])
                else:
                    yield data[0], data[1:]
        except (EOFError, OSError, WS.ProtocolError, ValueError):
            return


# ---- exec ---------------------------------------------------------------------------------

def _status_success():
    return {"metadata": {}, "status": "Success"}


def _status_exit(code, how):
    return {"metadata": {}, "status": "Failure", "message": "command terminated with non-zero exit code: %s" % how,
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def _status_internal(msg):
    e = E.internal(msg)
    b = e.body()
    b.pop("kind", None)
    b.pop("apiVersion", None)
    return b


class ExecSession:
    def __init__(self, kubelet, ns, pod, container, command, opts):
        self.kubelet, self.ns, self.pod, self.container = kubelet, ns, pod, container
        self.command, self.opts = command, opts
        self.proc = None
        # stdin goes through a bounded queue to one writer thread: the client may send
        # stdin before the process exists, and a reader that blocks on a full pipe must
        # not hold up the output (cat with more input than a pipe holds)
        self.stdin_q = queue.Queue(64)
        self.stdin_closed = False

    def start(self):
        """Start the process (None), or the Status to report when it cannot start."""
        try:
            self.proc = podio.exec_process(self.kubelet, self.ns, self.pod, self.container, self.command,
                                           self.opts["tty"], self.opts["stdin"])
        except (podio.ExecError, podio.NotRunning) as e:
            _thread(self._stdin_writer)      # only drains what the client still sends
            self.close_stdin()
            return _status_internal("error executing command in container: %s" % e)
        _thread(self._stdin_writer)
        return None

    def _stdin_writer(self):
        broken = self.proc is None or self.proc.stdin is None
        while True:
            d = self.stdin_q.get()
            if d is None:
                break
            if not broken:
                try:
                    self.proc.stdin.write(d)
                except (OSError, ValueError):
                    broken = True     # keep draining so that the reader never blocks
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def feed_stdin(self, data):
        if not self.stdin_closed:
            self.stdin_q.put(data)

    def close_stdin(self):
        if not self.stdin_closed:
            self.stdin_closed = True
            self.stdin_q.put(None)

    def resize(self, data):
        for line in data.decode(errors="replace").splitlines() or [""]:
            try:
                sz = json.loads(line) if line.strip() else None
            except ValueError:
                continue
            if isinstance(sz, dict) and self.proc is not None:
                self.proc.resize(int(sz.get("Width") or 0), int(sz.get("Height") or 0))

    def run(self, out, err, translated=False):
        """Copy the process' output with out(bytes)/err(bytes) until it exits; the final
        Status. `translated`: the API server's v5 translator re-wraps the kubelet's
        exit error (client-go's text), the other protocols carry the runtime's."""
        threads = [_thread(_pump, self.proc.stdout, out)]
        if self.proc.stderr is not None:
            threads.append(_thread(_pump, self.proc.stderr, err))
        code = self.proc.wait()
        for t in threads:
            t.join()
        if code == 0:
            return _status_success()
        if translated:
            return _status_exit(code, "command terminated with exit code %d" % code)
        return _status_exit(code, "error executing command [%s], exit code %d" % (" ".join(self.command), code))

    # -- WebSocket ------------------------------------------------------------------------
    def serve_ws(self, conn, protocol):
        chans = Channels(conn, protocol)
        send = chans.send
        # an empty message on the lowest writable channel tells the client the connection is up
        first = STDOUT if self.opts["stdout"] else STDERR if self.opts["stderr"] else ERROR
        send(first, b"")
        status = self.start()
        reader = _thread(self._ws_reader, chans, protocol)
        if status is None:
            status = self.run(lambda d: send(STDOUT, d) if self.opts["stdout"] else None,
                              lambda d: send(STDERR, d) if self.opts["stderr"] else None,
                              translated=protocol == "v5.channel.k8s.io")
        if protocol in ("v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"):
            send(ERROR, json.dumps(status, separators=(",", ":")).encode())
        elif status.get("status") != "Success":
            send(ERROR, status["message"].encode())
        self.close_stdin()
        conn.close()
        reader.join(FINISH_TIMEOUT)

    def _ws_reader(self, chans, protocol):
        for ch, payload in chans.messages():
            if protocol == "v5.channel.k8s.io" and ch == CLOSE_SIGNAL:
                if len(payload) == 1 and payload[0] == STDIN:
                    self.close_stdin()
            elif ch == STDIN and self.opts["stdin"]:
                self.feed_stdin(payload)
            elif ch == RESIZE:
                self.resize(payload)
        self.close_stdin()

    # -- SPDY -----------------------------------------------------------------------------
    def serve_spdy(self, transport, protocol):
        want = {"error"}
        for k in ("stdin", "stdout", "stderr"):
            if self.opts[k]:
                want.add(k)
        if self.opts["tty"] and protocol in ("v4.channel.k8s.io", "v3.channel.k8s.io"):
            want.add("resize")
        streams = {}
        ready = threading.Event()

        def on_stream(s):
            t = s.header("streamType")
            if t in ("error", "stdin", "stdout", "stderr", "resize"):
                streams[t] = s
                if t == "stdin":
                    s.attach(self.feed_stdin, self.close_stdin)
                elif t == "resize":
                    s.attach(self.resize)
            return None

        def on_open(s):
            if want <= set(streams):
                ready.set()
        session = spdy.Session(transport, on_stream, on_open)
        reader = _thread(session.run)
        if not ready.wait(STREAM_CREATION_TIMEOUT) or session.gone and not want <= set(streams):
            session.close()
            return
        status = self.start()
        if status is None:
            if protocol == "channel.k8s.io" and "stdin" in streams:
                streams["stdin"].close()    # v1 closes its stdin stream at once, as the kubelet does
            status = self.run(streams["stdout"].write if "stdout" in streams else (lambda d: None),
                              streams["stderr"].write if "stderr" in streams else (lambda d: None))
        for k in ("stdout", "stderr"):
            if k in streams:
                streams[k].close()
        if protocol == "v4.channel.k8s.io":
            streams["error"].write(json.dumps(status, separators=(",", ":")).encode())
        elif status.get("status") != "Success":
            streams["error"].write(status["message"].encode())
        streams["error"].close()
        self.close_stdin()
        session.close()
        reader.join(FINISH_TIMEOUT)


# ---- port-forward -------------------------------------------------------------------------

class PortForward:
    def __init__(self, kubelet, ns, pod, pod_obj):
        self.kubelet, self.ns, self.pod = kubelet, ns, pod
        self.uid = (pod_obj.get("metadata") or {}).get("uid", "")
        self.sandbox = podio.sandbox_id(self.uid)

    def error_text(self, port, err):
        # the kubelet's wrapping of the runtime's error; uid is empty on the CRI path
        return "error forwarding port %d to pod %s, uid : %s" % (port, self.sandbox, err)

    # -- SPDY (direct, or tunnelled in WebSocket binary messages) --------------------------
    def serve_spdy(self, transport):
        pairs = {}
        lock = threading.Lock()
        timers = []

        def on_stream(s):
            port = s.header("port")
            if not port:
                return '"port" header is required'
            try:
                n = int(port)
                if not 0 < n < 65536:
                    raise ValueError
            except ValueError:
                return "invalid port"
            t = s.header("streamType")
            if t not in ("error", "data"):
                return "invalid stream type %r" % t
            return None

        def on_open(s):
            rid = s.header("requestID")
            if not rid:   # an old client: pair by stream id (error n, data n+2)
                rid = str(s.id if s.header("streamType") == "error" else s.id - 2)
            with lock:
                p = pairs.setdefault(rid, {})
                kind = s.header("streamType")
                if kind in p:
                    s.write(("error processing stream for request %s: %s stream already assigned"
                             % (rid, kind)).encode())
                    return
                p[kind] = s
                if len(p) == 1:
                    tm = threading.Timer(STREAM_CREATION_TIMEOUT, self._timeout, (pairs, lock, rid))
                    tm.daemon = True
                    tm.start()
                    timers.append(tm)
                    return
                del pairs[rid]
            _thread(self._forward, int(p["data"].header("port")), p["data"], p["error"])
        session = spdy.Session(transport, on_stream, on_open)
        session.run()
        for tm in timers:
            tm.cancel()
        session.close()

    def _timeout(self, pairs, lock, rid):
        with lock:
            p = pairs.pop(rid, None)
        if p and "error" in p:
            p["error"].write(("(conn=spdy, request=%s) timed out waiting for streams" % rid).encode())
            p["error"].close()

    def _forward(self, port, data, error):
        try:
            sock = podio.dial(self.kubelet, self.ns, self.pod, port)
        except podio.DialError as e:
            error.write(self.error_text(port, e).encode())
            error.close()
            data.close()
            return
        done = threading.Event()

        def to_pod(d):
            try:
                sock.sendall(d)
            except OSError:
                pass

        def client_done():
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        data.attach(to_pod, client_done)
        _pump(sock.makefile("rb", buffering=0), data.write, done.set)
        data.close()
        error.close()
        sock.close()

    # -- WebSocket (the kubelet's protocol: two channels per port in ?ports=) --------------
    def serve_ws(self, conn, protocol, ports):
        chans = Channels(conn, protocol)
        send = chans.send
        socks = {}
        for i, port in enumerate(ports):
            send(2 * i, struct.pack("<H", port))
            send(2 * i + 1, struct.pack("<H", port))
        workers = []
        for i, port in enumerate(ports):
            try:
                socks[i] = podio.dial(self.kubelet, self.ns, self.pod, port)
            except podio.DialError as e:
                send(2 * i + 1, self.error_text(port, e).encode())
                continue
            workers.append(_thread(_pump, socks[i].makefile("rb", buffering=0),
                                   lambda d, ch=2 * i: send(ch, d)))
        reader = _thread(self._ws_reader, chans, socks)
        for w in workers:
            w.join()
        conn.close()
        reader.join(FINISH_TIMEOUT)
        for s in socks.values():
            s.close()

    def _ws_reader(self, chans, socks):
        for ch, payload in chans.messages():
            s = socks.get(ch // 2) if ch % 2 == 0 else None
            if s is not None and payload:
                try:
                    s.sendall(payload)
                except OSError:
                    pass
        for s in socks.values():
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
