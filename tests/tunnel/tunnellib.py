"""Helpers for the kube tunnel tests: the czctl.core.portforward driver, a
cuttable TCP path to the API server (the laptop's network), an app on this
machine, processes in pods, and the relay binary.

Every process started here ends with its context manager or with stop_all(),
which tearDownModule calls even when a test failed.
"""
import hashlib
import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sandbox", "tests"))
import apilib  # noqa: E402  (also puts tests/lib on sys.path)

# CZCTL_BUILD=build/san runs both under the sanitizers (make sanitize builds them there)
BUILD = os.path.join(ROOT, os.environ.get("CZCTL_BUILD", "build"))
CZCTL = os.path.join(BUILD, "czctl") if os.environ.get("CZCTL_BUILD") else os.path.join(ROOT, "czctl")
RELAY = os.path.join(BUILD, "czctl-relay")
DRIVER = os.path.join(HERE, "driver.lua")
BIG = 50 * 1000 * 1000

_procs = []


def stop_all():
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    del _procs[:]


def finish(p, timeout):
    """Waits up to timeout for process p (already asked to end), then kills it."""
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    _procs.append(p)
    return p


def wait_for(fn, timeout=15, what="condition"):
    """fn's first true value within timeout seconds (the sandbox tests' wait, which needs no sandbox)."""
    return apilib.sandboxlib.Sandbox.wait_for(None, fn, timeout, what)


class Driver:
    """tests/tunnel/driver.lua: one forward or pool handle; its READY, EVENT and
    STATS lines parsed as they come."""

    def __init__(self, mode, kubeconfig, **opts):
        argv = [CZCTL, "run", DRIVER, mode, "kubeconfig=" + kubeconfig]
        argv += ["%s=%s" % kv for kv in opts.items()]
        self.p = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events, self.stats, self.ready, self.failed = [], {}, None, None
        self.lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            kind, _, rest = line.rstrip("\n").partition(" ")
            with self.lock:
                if kind == "READY":
                    self.ready = rest.split()
                elif kind == "FAILED":
                    self.failed = rest
                elif kind == "EVENT":
                    k, _, msg = rest.partition(" ")
                    self.events.append((k, msg))
                elif kind == "STATS":
                    self.stats = json.loads(rest)
                self.lock.notify_all()
        with self.lock:
            self.lock.notify_all()

    def wait(self, pred, timeout=20, what="condition"):
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                v = pred(self)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0 or self.p.poll() is not None and not v:
                    raise AssertionError("timed out waiting for %s; events %r, stats %r, failed %r, stderr %s" %
                                         (what, self.events[-5:], self.stats, self.failed,
                                          self.p.stderr.read() if self.p.poll() is not None else ""))
                self.lock.wait(min(left, 0.2))

    def port(self):
        self.wait(lambda d: d.ready or d.failed, what="READY")
        if self.failed:
            raise AssertionError("driver failed: %s" % self.failed)
        return int(self.ready[1])

    def event(self, kind, contains="", after=0, timeout=20):
        """The first event of kind whose message contains the text, from index after on."""
        def find(d):
            for k, m in d.events[after:]:
                if k == kind and contains in m:
                    return (k, m)
            return None
        return self.wait(find, timeout, "event %s %r" % (kind, contains))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            finish(self.p, 15)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


class Listener:
    """A server on 127.0.0.1 (a free port): each connection goes to self.serve
    in a thread of its own."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(256)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def close(self):
        self.ls.close()


class CutProxy(Listener):
    """A TCP path from this machine to the API server that a test can cut
    (connections reset, new ones refused: the laptop lost its network),
    blackhole (bytes vanish, nothing is closed: a silent network), or resume."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.mode = "up"
        self.conns = []
        self.lock = threading.Lock()
        super().__init__()

    def serve(self, c):
        with self.lock:
            if self.mode != "up":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
                return
            try:
                u = socket.create_connection(self.target)
            except OSError:
                c.close()
                return
            self.conns.append((c, u))
        threading.Thread(target=self._pipe, args=(u, c), daemon=True).start()
        self._pipe(c, u)

    def _pipe(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    b.shutdown(socket.SHUT_WR)
                    return
                if self.mode == "up":
                    b.sendall(d)
        except OSError:
            # a reset (the laptop's process killed with unread data) ends the
            # other side too, as the kernel's RST would on a direct connection
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def kubeconfig(self, src, dst):
        """A copy of kubeconfig src whose server goes through this proxy."""
        text = open(src).read()
        text = re.sub(r"(server: https://127\.0\.0\.1:)\d+", r"\g<1>%d" % self.port, text)
        with open(dst, "w") as f:
            f.write(text)
        os.chmod(dst, 0o600)
        return dst

    def cut(self):
        with self.lock:
            self.mode = "cut"
            for c, u in self.conns:
                for s in (c, u):
                    try:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        s.close()
                    except OSError:
                        pass
            self.conns = []

    def blackhole(self):
        with self.lock:
            self.mode = "blackhole"

    def resume(self):
        with self.lock:
            self.mode = "up"

    def close(self):
        self.cut()
        super().close()


def pattern(n, seed):
    return random.Random(seed).randbytes(n)


def read_head(f):
    """Reads an HTTP head from file f: (first line, Content-Length or 0)."""
    first, length = f.readline(), 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            return first, length
        if h.lower().startswith(b"content-length:"):
            length = int(h.split(b":")[1])


class App(Listener):
    """The developer's app on 127.0.0.1: HTTP/1.1 with keep-alive.
    GET /hello -> "hello from the laptop"; GET /bytes/N/SEED -> N bytes of
    pattern(N, SEED); POST /echo -> the body back, streamed as it arrives."""

    def __init__(self):
        self.requests = 0
        super().__init__()

    def serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                line, length = read_head(f)
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                self.requests += 1
                if method == "POST" and path == "/echo":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length)
                    while length:
                        d = f.read1(min(length, 65536))
                        if not d:
                            return
                        c.sendall(d)
                        length -= len(d)
                    continue
                f.read(length)
                m = re.match(r"^/bytes/(\d+)/(\d+)$", path)
                body = pattern(int(m.group(1)), int(m.group(2))) if m else b"hello from the laptop"
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except (OSError, ValueError):
            pass
        finally:
            c.close()


def http_get(port, path, timeout=30):
    """One GET on its own connection: (status line, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        f = s.makefile("rb")
        status, n = read_head(f)
        return status, f.read(n)
    finally:
        s.close()


def roundtrip(port, body, path="/echo", raw=False, timeout=120):
    """Sends body (as an HTTP POST, or raw bytes) while reading the answer;
    returns what came back (the HTTP body, or len(body) raw bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    data = body if raw else b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(body)) + body
    sender = threading.Thread(target=s.sendall, args=(data,), daemon=True)
    sender.start()
    f = s.makefile("rb")
    try:
        if raw:
            return f.read(len(body))
        _, n = read_head(f)
        return f.read(n)
    finally:
        sender.join(timeout)
        s.close()


def closed_without_answer(port, timeout=10):
    """Connects, sends a request, and returns how the connection ended
    without a byte of answer: "reset" or "eof"; None if an answer came."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        d = s.recv(1)
        return None if d else "eof"
    except ConnectionResetError:
        return "reset"
    finally:
        s.close()


def sha(b):
    return hashlib.sha256(b).hexdigest()


# A raw TCP echo server run in a pod (through kubectl exec): listens on every
# address of the pod on a free port, prints "PORT n", echoes each connection's
# bytes back as they come and passes its end on; ends with its stdin.
POD_ECHO = r'''
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 0)); s.listen(256)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d:
            c.shutdown(socket.SHUT_WR)
            return
        c.sendall(d)
def accept():
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
print("PORT", s.getsockname()[1], flush=True)
sys.stdin.read()
'''


class PodProcess:
    """A command run in a pod with `kubectl exec -i`; its first output line is
    kept (ports). Ends when its stdin is closed (or is killed)."""

    def __init__(self, sb, pod, argv):
        self.p = spawn(["kubectl", "exec", "-i", pod, "--"] + argv, stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=dict(os.environ, KUBECONFIG=sb.kubeconfig))
        self.first = self.p.stdout.readline()
        if not self.first:
            raise AssertionError("%s in pod %s ended: %s" % (argv[0], pod, self.p.stderr.read()))

    def ports(self):
        return {k: int(v) for k, v in re.findall(r"(\w+)=[\d.]+:(\d+)", self.first)}

    def stop(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        finish(self.p, 10)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


def relay_pod(sb, name="relay"):
    """A Deployment of the relay's image as czctl runs it (proxy port 9000 on every
    address, laptop port 9001 on the pod's loopback, health 9002), rolled out; its
    pod name."""
    sb.kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
         "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
             "metadata": {"labels": {"app": name}},
             "spec": {"containers": [{
                 "name": "relay", "image": "ghcr.io/czctl/czctl-relay:test",
                 "args": ["--proxy-listen", "0.0.0.0:9000", "--laptop-listen", "127.0.0.1:9001",
                          "--health-listen", "0.0.0.0:9002"],
                 "ports": [{"containerPort": 9000}, {"containerPort": 9002}],
                 "readinessProbe": {"httpGet": {"path": "/healthz", "port": 9002}, "periodSeconds": 1}}]}}}}))
    sb.kubectl("rollout", "status", "deployment/" + name, "--timeout=30s")
    return sb.kubectl("get", "pod", "-l", "app=" + name, "-o", "jsonpath={.items[0].metadata.name}").stdout


def echo_pod(sb, name="web"):
    """A Deployment of the sandbox echo image (ports 8080), rolled out; its pod name."""
    sb.kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
         "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
             "metadata": {"labels": {"app": name}},
             "spec": {"containers": [{"name": "main", "image": "sandbox/echo:1",
                                      "ports": [{"containerPort": 8080}]}]}}}}))
    sb.kubectl("rollout", "status", "deployment/" + name, "--timeout=30s")
    return sb.kubectl("get", "pod", "-l", "app=" + name, "-o", "jsonpath={.items[0].metadata.name}").stdout
