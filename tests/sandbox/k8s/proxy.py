"""The sandbox service proxy (kube-proxy's job): ClusterIP:port -> a ready endpoint.

One acceptor thread multiplexes every listener with a selector; each accepted
connection is connected to the next ready endpoint of its Service port (round
robin) and copied in both directions by two threads with os.splice through a
pipe (zero copy, the GIL released), TCP_NODELAY on both sides. A connection to a
port with no ready endpoint is reset at once, as kube-proxy's REJECT rule does.
The routing table changes on Service and Endpoints events, so a new selector
or targetPort takes effect for the next connection."""
import errno
import fcntl
import os
import selectors
import socket
import struct
import threading

from . import nodeutil as u

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20
CHUNK = 1 << 20


def _rst_close(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Conn:
    def __init__(self, proxy, client, backend):
        self.proxy = proxy
        self.client = client
        self.backend = backend
        self.lock = threading.Lock()
        self.open = 2
        self.reset = False

    def run(self):
        """Copy both ways: backend->client in a new thread, client->backend in this one."""
        threading.Thread(target=self._pump, args=(self.backend, self.client), daemon=True).start()
        self._pump(self.client, self.backend)

    def _pump(self, src, dst):
        r = w = None
        try:
            r, w = os.pipe()
            try:
                fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass
            sfd, dfd = src.fileno(), dst.fileno()
            while True:
                n = os.splice(sfd, w, CHUNK)
                if n == 0:
                    break
                while n > 0:
                    n -= os.splice(r, dfd, n)
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except OSError as e:
            # A reset on one side resets the other; anything else just closes.
            with self.lock:
                self.reset = self.reset or e.errno in (errno.ECONNRESET, errno.EPIPE)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            for fd in (r, w):
                if fd is not None:
                    os.close(fd)
            with self.lock:
                self.open -= 1
                last = self.open == 0
            if last:
                self.proxy._forget(self)
                if self.reset:
                    _rst_close(self.client)
                    _rst_close(self.backend)
                else:
                    self.client.close()
                    self.backend.close()

    def kill(self):
        for s in (self.client, self.backend):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ServiceProxy:
    def __init__(self, store):
        self.store = store
        self.lock = threading.Lock()
        self.routes = {}        # (ip, port) -> (ns, svc, port name)
        self.backends = {}      # (ns, svc, port name) -> [(ip, port), ...]
        self.rr = {}
        self.listeners = {}     # (ip, port) -> socket
        self.conns = set()
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.pending = []
        self.stopping = False
        self.worker = u.Worker("service-proxy", self.sync)
        self.thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)

    def start(self):
        for s in self.store.list("services"):
            self.worker.queue.add(u.key_of(s))
        self.worker.start()
        self.thread.start()

    def on_event(self, etype, resource, obj):
        if resource in ("services", "endpoints"):
            self.worker.queue.add(u.key_of(obj))

    # -- table ---------------------------------------------------------------------
    def sync(self, key):
        ns, name = key
        svc = self.store.get("services", ns, name)
        ep = self.store.get("endpoints", ns, name)
        want = {}
        backends = {}
        if svc is not None:
            spec = svc.get("spec") or {}
            ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
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
        client.setblocking(True)
        target = self.pick(addr)
        if target is None:
            _rst_close(client)
            return
        threading.Thread(target=self._connect, args=(client, target), daemon=True).start()

    def _connect(self, client, target):
        try:
            backend = socket.create_connection(target, timeout=5)
        except OSError:
            _rst_close(client)
            return
        backend.settimeout(None)
        for s in (client, backend):
            try:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        c = _Conn(self, client, backend)
        with self.lock:
            if self.stopping:
                _rst_close(client)
                backend.close()
                return
            self.conns.add(c)
        c.run()

    def _forget(self, c):
        with self.lock:
            self.conns.discard(c)

    def listening(self):
        with self.lock:
            return sorted(self.routes)

    def stop(self):
        self.worker.stop()
        self.stopping = True
        os.write(self.wake_w, b"x")
        self.thread.join(5)
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.kill()
        try:
            self.sel.close()
        except Exception:
            pass
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
