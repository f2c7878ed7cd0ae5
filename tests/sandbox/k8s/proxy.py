"""The sandbox service proxy (kube-proxy's job): ClusterIP:port -> a ready endpoint.

It runs in the cluster namespace (its threads enter it when they start): the
Service range is a local route there, so it can listen on any ClusterIP, and
pods reach it through their default route; this machine's namespace has no
route to it. An acceptor thread multiplexes every listener with a selector; each accepted
connection goes to the next ready endpoint of its Service port (round robin).
One copy thread (epoll) connects to the endpoint without blocking and moves
bytes in both directions with non-blocking splice(2) through a pipe per
direction (zero copy, no thread per connection), TCP_NODELAY on both sides,
half-close passed on, a reset on one side reset on the other. A connection
to a port with no ready endpoint (or whose endpoint refuses) is reset at
once, as kube-proxy's REJECT rule does. The routing table follows Service and
Endpoints events, so a new selector or targetPort takes effect for the next
connection. With SANDBOX_TIMING=realistic a change reaches the routing table
as late as a real kube-proxy programs its data path (k8s/timing.py
`datapath_due`: the Endpoints-to-rules lag, at most one sync per
minSyncPeriod); at once by default."""
import errno
import fcntl
import os
import select
import selectors
import socket
import struct
import threading
import time

from . import netns
from . import nodeutil as u
from . import timing

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20
CHUNK = 1 << 20
SPLICE_FLAGS = os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE


def _rst_close(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Half:
    """One direction of a proxied connection: src -> pipe -> dst."""
    __slots__ = ("src", "dst", "r", "w", "pending", "eof", "done")

    def __init__(self, src, dst):
        self.src, self.dst = src, dst
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.w, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass
        self.pending = 0      # bytes in the pipe not yet written to dst
        self.eof = False      # src said FIN
        self.done = False     # FIN passed on to dst


class _Pair:
    __slots__ = ("client", "backend", "halves", "connecting", "closed", "parked")

    def __init__(self, client, backend):
        self.client, self.backend = client, backend
        self.halves = ()
        self.connecting = True
        self.closed = False
        self.parked = set()   # fds taken out of epoll: hung up, nothing to do on them yet


class _Loop:
    """All proxied connections, copied by one epoll thread with non-blocking
    splice(2): no thread per connection and no GIL hand-off per read."""

    def __init__(self, netns_path=None):
        self.netns_path = netns_path
        self.ep = select.epoll()
        self.fds = {}
        self.lock = threading.Lock()
        self.incoming = []
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ep.register(self.wake_r, select.EPOLLIN)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="proxy-copy", daemon=True)

    def start(self):
        self.thread.start()

    def add(self, client, target):
        with self.lock:
            self.incoming.append((client, target))
        os.write(self.wake_w, b"x")

    def stop(self):
        self.stopping = True
        os.write(self.wake_w, b"x")
        if self.thread.ident is not None:
            self.thread.join(5)

    def _start(self, client, target):
        client.setblocking(False)
        backend = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        backend.setblocking(False)
        err = backend.connect_ex(target)
        if err not in (0, errno.EINPROGRESS):
            backend.close()
            _rst_close(client)
            return
        p = _Pair(client, backend)
        self.fds[client.fileno()] = p
        self.fds[backend.fileno()] = p
        self.ep.register(client.fileno(), 0)
        self.ep.register(backend.fileno(), select.EPOLLOUT)

    def _connected(self, p):
        err = p.backend.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._close(p, True)
            return
        p.connecting = False
        for s in (p.client, p.backend):
            try:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        p.halves = (_Half(p.client, p.backend), _Half(p.backend, p.client))

    def _mask(self, p, sock):
        if p.connecting:
            return select.EPOLLOUT if sock is p.backend else 0
        m = 0
        for h in p.halves:
            if h.done:
                continue
            if h.src is sock and not h.eof and h.pending == 0:
                m |= select.EPOLLIN
            if h.dst is sock and h.pending > 0:
                m |= select.EPOLLOUT
        return m

    def _flush(self, h):
        while h.pending > 0:
            try:
                n = os.splice(h.r, h.dst.fileno(), h.pending, flags=SPLICE_FLAGS)
            except BlockingIOError:
                return
            h.pending -= n
        if h.eof and not h.done:
            h.done = True
            try:
                h.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _close(self, p, reset):
        if p.closed:
            return
        p.closed = True
        for s in (p.client, p.backend):
            self.fds.pop(s.fileno(), None)
            if s.fileno() not in p.parked:
                try:
                    self.ep.unregister(s.fileno())
                except (OSError, ValueError):
                    pass
            if reset:
                _rst_close(s)
            else:
                s.close()
        for h in p.halves:
            os.close(h.r)
            os.close(h.w)

    def _event(self, p, fd, ev):
        if p.connecting:
            if fd == p.backend.fileno() and ev & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                self._connected(p)
            elif ev & (select.EPOLLERR | select.EPOLLHUP):
                self._close(p, True)
            return True
        progress = False
        for h in p.halves:
            if h.done:
                continue
            if h.dst.fileno() == fd and h.pending:
                before = h.pending
                self._flush(h)
                progress = progress or h.pending != before or h.done
            if h.src.fileno() == fd and not h.eof and h.pending == 0:
                try:
                    n = os.splice(fd, h.w, CHUNK, flags=SPLICE_FLAGS)
                except BlockingIOError:
                    continue
                progress = True
                if n == 0:
                    h.eof = True
                h.pending += n
                self._flush(h)
        if all(h.done for h in p.halves):
            self._close(p, False)
        elif not progress and ev & select.EPOLLERR:
            sock = p.client if fd == p.client.fileno() else p.backend
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._close(p, True)
        return progress

    def _rearm(self, p, hung):
        """Set each socket's interest. A socket that hung up keeps reporting
        EPOLLHUP whatever the mask, so while there is nothing to do on it (its
        data waits for the other side to drain) it leaves epoll, and comes back
        when there is."""
        for s in (p.client, p.backend):
            fd = s.fileno()
            m = self._mask(p, s)
            try:
                if fd in p.parked:
                    if m:
                        self.ep.register(fd, m)
                        p.parked.discard(fd)
                elif fd == hung and not m:
                    self.ep.unregister(fd)
                    p.parked.add(fd)
                else:
                    self.ep.modify(fd, m)
            except (OSError, ValueError):
                pass

    def _run(self):
        if self.netns_path:
            netns.enter(self.netns_path)   # the endpoint sockets live in the cluster namespace
        while not self.stopping:
            try:
                events = self.ep.poll()
            except InterruptedError:
                continue
            for fd, ev in events:
                if fd == self.wake_r:
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                    with self.lock:
                        inc, self.incoming = self.incoming, []
                    for client, target in inc:
                        self._start(client, target)
                    continue
                p = self.fds.get(fd)
                if p is None or p.closed:
                    continue
                try:
                    progress = self._event(p, fd, ev)
                except OSError as e:
                    # a reset on one side resets the other; anything else just closes
                    self._close(p, e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNREFUSED))
                    continue
                if not p.closed:
                    self._rearm(p, fd if not progress and ev & (select.EPOLLHUP | select.EPOLLERR) else None)
        for p in list({id(p): p for p in self.fds.values()}.values()):
            self._close(p, True)
        self.ep.close()
        os.close(self.wake_r)
        os.close(self.wake_w)


class ServiceProxy:
    def __init__(self, store, netns_path=None, reserved=()):
        """netns_path: the namespace it serves in (None: the caller's);
        reserved: ClusterIPs served by something else (cluster DNS)."""
        self.store = store
        self.netns_path = netns_path
        self.reserved = set(reserved)
        self.last_applied = None   # monotonic time of the last routing change (realistic timing)
        self.lock = threading.Lock()
        self.routes = {}        # (ip, port) -> (ns, svc, port name)
        self.backends = {}      # (ns, svc, port name) -> [(ip, port), ...]
        self.rr = {}
        self.listeners = {}     # (ip, port) -> socket
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.pending = []
        self.stopping = False
        self.loop = _Loop(netns_path)
        self.worker = u.Worker("service-proxy", self.sync)
        self.thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)

    def start(self):
        for s in self.store.list("services"):
            self.worker.queue.add(u.key_of(s))
        self.loop.start()
        self.worker.start()
        self.thread.start()

    def on_event(self, etype, resource, obj):
        if resource in ("services", "endpoints"):
            now = time.monotonic()
            with self.lock:
                due = timing.datapath_due(now, self.last_applied)
            self.worker.queue.add_after(u.key_of(obj), due - now)

    # -- table ---------------------------------------------------------------------
    def sync(self, key):
        ns, name = key
        svc = self.store.get("services", ns, name)
        ep = self.store.get("endpoints", ns, name)
        want = {}
        backends = {}
        if svc is not None:
            spec = svc.get("spec") or {}
            ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")])
                   if ip and ip != "None" and ip not in self.reserved]
            if spec.get("type") != "ExternalName":
                for p in spec.get("ports") or []:
                    if (p.get("protocol") or "TCP") != "TCP":
                        continue
                    for ip in ips:
                        want[(ip, p.get("port"))] = (ns, name, p.get("name") or "")
        for sub in (ep or {}).get("subsets") or []:
            for port in sub.get("ports") or []:
                if (port.get("protocol") or "TCP") != "TCP":
                    continue
                lst = backends.setdefault((ns, name, port.get("name") or ""), [])
                for a in sub.get("addresses") or []:
                    lst.append((a.get("ip"), port.get("port")))
        with self.lock:
            for k in [k for k in self.backends if k[:2] == (ns, name)]:
                del self.backends[k]
            self.backends.update(backends)
            old = {addr for addr, r in self.routes.items() if r[:2] == (ns, name)}
            for addr in old - set(want):
                del self.routes[addr]
                self.pending.append(("close", addr))
            for addr, r in want.items():
                if addr not in self.routes or self.routes[addr] != r:
                    if addr not in old:
                        self.pending.append(("open", addr))
                    self.routes[addr] = r
            self.last_applied = time.monotonic()
        os.write(self.wake_w, b"x")

    def pick(self, addr):
        with self.lock:
            route = self.routes.get(addr)
            if route is None:
                return None
            lst = self.backends.get(route) or []
            if not lst:
                return None
            i = self.rr.get(route, 0)
            self.rr[route] = i + 1
            return lst[i % len(lst)]

    # -- sockets ---------------------------------------------------------------
    def _apply_pending(self):
        with self.lock:
            pending, self.pending = self.pending, []
        for op, addr in pending:
            if op == "open" and addr not in self.listeners:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(addr)
                    s.listen(4096)
                except OSError as e:
                    u.log.warning("service proxy: cannot listen on %s:%d: %s", addr[0], addr[1], e)
                    s.close()
                    continue
                s.setblocking(False)
                self.listeners[addr] = s
                self.sel.register(s, selectors.EVENT_READ, addr)
            elif op == "close" and addr in self.listeners:
                s = self.listeners.pop(addr)
                self.sel.unregister(s)
                s.close()

    def _accept_loop(self):
        if self.netns_path:
            netns.enter(self.netns_path)   # listeners are made here, in the cluster namespace
        while not self.stopping:
            for key, _ in self.sel.select():
                if key.data is None:
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                ls = key.fileobj
                while True:
                    try:
                        client, _ = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    self._handle(client, key.data)
            self._apply_pending()
        for s in self.listeners.values():
            s.close()
        self.listeners.clear()

    def _handle(self, client, addr):
        target = self.pick(addr)
        if target is None:
            _rst_close(client)
            return
        self.loop.add(client, target)

    def listening(self):
        with self.lock:
            return sorted(self.routes)

    def stop(self):
        self.worker.stop()
        self.stopping = True
        os.write(self.wake_w, b"x")
        if self.thread.ident is not None:
            self.thread.join(5)
        self.loop.stop()
        try:
            self.sel.close()
        except Exception:
            pass
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
