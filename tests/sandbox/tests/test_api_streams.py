#!/usr/bin/env python3
"""kubectl exec and kubectl port-forward against the sandbox, with kubectl's default
protocols (WebSocket: v5.channel.k8s.io, SPDY/3.1+portforward.k8s.io) and their SPDY
fallbacks (issue 8, acceptance 4)."""
import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apilib  # noqa: E402
import tap  # noqa: E402

SB = None
POD = None
WS = {}                                                      # kubectl 1.32's defaults
SPDY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}
BIG = 50 * 1000 * 1000

# A small HTTP server run inside the pod with `kubectl exec -i`: answers each request
# with its own body (so a body crosses the port-forward both ways), and exits when
# its stdin closes (the exec session's stdin EOF). It listens on every address of
# the pod: port-forward connects to localhost inside the pod, as a runtime does.
POD_SERVER = r'''
import os, socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen(16)
def serve(c):
    f = c.makefile("rb")
    while True:
        line = f.readline()
        if not line:
            break
        n = 0
        while True:
            h = f.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            if h.lower().startswith(b"content-length:"):
                n = int(h.split(b":")[1])
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
        while n:
            d = f.read(min(n, 1 << 16))
            c.sendall(d)
            n -= len(d)
    c.close()
def accept():
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
print("listening", flush=True)
sys.stdin.read()
'''


def setUpModule():
    global SB, POD
    SB = apilib.Sandbox().start()
    for obj in [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
         "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
             "metadata": {"labels": {"app": "web"}},
             "spec": {"containers": [{"name": "main", "image": "sandbox/echo:1",
                                      "ports": [{"containerPort": 8080}, {"containerPort": 8081}],
                                      "env": [{"name": "POD_IP",
                                               "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "big"},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 9000}]}}]:
        kc("apply", "-f", "-", stdin=json.dumps(obj))
    kc("rollout", "status", "deployment/web", "--timeout=30s")
    POD = kc("get", "pod", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}").stdout


def tearDownModule():
    SB.stop()


def kc(*a, **kw):
    return SB.kubectl(*a, **kw)


def kenv(env):
    return dict(os.environ, KUBECONFIG=SB.kubeconfig, **env)


class PortForward:
    """`kubectl port-forward TARGET :PORT...` on random local ports; .local[remote] -> local port."""

    def __init__(self, target, *ports, env=WS):
        self.p = subprocess.Popen(["kubectl", "port-forward", "--address", "127.0.0.1", target]
                                  + [":%d" % p for p in ports], env=kenv(env), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.local = {}
        while len(self.local) < len(ports):
            line = self.p.stdout.readline()
            if not line:
                raise AssertionError("port-forward ended: %s" % self.p.stderr.read())
            m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", line)
            if m:
                self.local[int(m.group(2))] = int(m.group(1))

    def get(self, remote, path="/", body=None, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", self.local[remote], timeout=timeout)
        c.request("POST" if body is not None else "GET", path, body=body)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def roundtrip(self, remote, body, timeout=120):
        """POST body to the pod server and read its answer while the body is still
        being sent (it echoes as it reads, as a streaming proxy would)."""
        sock = socket.create_connection(("127.0.0.1", self.local[remote]), timeout=timeout)
        sender = threading.Thread(target=sock.sendall, args=(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d"
                                                                b"\r\n\r\n" % len(body) + body,), daemon=True)
        sender.start()
        f = sock.makefile("rb")
        status = f.readline()
        n = 0
        while True:
            h = f.readline()
            if h in (b"\r\n", b""):
                break
            if h.lower().startswith(b"content-length:"):
                n = int(h.split(b":")[1])
        back = f.read(n)
        sender.join(timeout)
        sock.close()
        return status, back

    def stop(self):
        self.p.kill()
        out, err = self.p.communicate(timeout=10)
        return self.p.returncode, err

    def __enter__(self):
        return self

    def __exit__(self, *a):
        if self.p.poll() is None:
            self.stop()


class PodServer:
    """POD_SERVER running in the pod through `kubectl exec -i` (ends when we close its stdin)."""

    def __enter__(self):
        self.p = subprocess.Popen(["kubectl", "exec", "-i", POD, "--", "python3", "-c", POD_SERVER],
                                  env=kenv(WS), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        line = self.p.stdout.readline()
        if line != b"listening\n":
            raise AssertionError("pod server: %r %r" % (line, self.p.stderr.read()))
        return self

    def __exit__(self, *a):
        self.p.stdin.close()          # stdin EOF reaches the process: it exits, and so does kubectl
        try:
            self.rc = self.p.wait(timeout=20)
        finally:
            if self.p.poll() is None:
                self.p.kill()


def big_body(seed):
    return random.Random(seed).randbytes(BIG)


class A_Exec(unittest.TestCase):
    def test_1_stdin_stdout_stderr_exit_code(self):
        "exec -i passes stdin with its EOF, keeps stdout and stderr apart and returns the exit code (both protocols)"
        for name, env in (("websocket", WS), ("spdy", SPDY)):
            with self.subTest(protocol=name):
                r = kc("exec", "-i", POD, "--", "sh", "-c", "wc -l; echo oops >&2; exit 3",
                       stdin="a\nb\nc\n", check=False, env=env)
                self.assertEqual(r.returncode, 3)
                self.assertEqual(r.stdout.strip(), "3")
                self.assertIn("oops\n", r.stderr)
                self.assertIn("command terminated with exit code 3", r.stderr)
                r = kc("exec", POD, "--", "sh", "-c", "echo ok", env=env)
                self.assertEqual(r.stdout, "ok\n")
        upgraded = lambda a: a["path"].endswith("/exec") and a["status"] == 101  # noqa: E731
        methods = {a["method"] for a in SB.audit_until(lambda a: upgraded(a) and a["method"] == "POST") if upgraded(a)}
        self.assertEqual(methods, {"GET", "POST"}, "WebSocket (GET) and SPDY (POST) were both upgraded")

    def test_2_stdin_is_byte_exact(self):
        "4 MB of binary stdin come back byte for byte through `cat` (both protocols)"
        data = random.Random(1).randbytes(4 << 20)
        for name, env in (("websocket", WS), ("spdy", SPDY)):
            with self.subTest(protocol=name):
                r = subprocess.run(["kubectl", "exec", "-i", POD, "--", "cat"], input=data, capture_output=True,
                                   env=kenv(env), timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), hashlib.sha256(data).hexdigest())

    def test_4_older_websocket_protocols(self):
        "exec over v4.channel.k8s.io and base64.channel.k8s.io, as the README describes them"
        path = "/api/v1/namespaces/default/pods/%s/exec?command=sh&command=-c&command=echo%%20out;echo%%20err%%20%%3E%%262;" \
               "exit%%207&stdout=true&stderr=true" % POD
        for proto, enc, dec in (("v4.channel.k8s.io", lambda ch: bytes([ch]), lambda m: (m[0], m[1:])),
                                ("base64.channel.k8s.io", None, lambda m: (m[0] - 48, base64.b64decode(m[1:])))):
            with self.subTest(protocol=proto):
                ws = RawWebSocket(path, proto)
                self.assertEqual(ws.headers["sec-websocket-protocol"], proto)
                got = {}
                while True:
                    op, m = ws.recv()
                    if op == 8:
                        break
                    ch, data = dec(m)
                    got[ch] = got.get(ch, b"") + data
                ws.close()
                self.assertEqual((got.get(1), got.get(2)), (b"out\n", b"err\n"))
                if proto.startswith("v4."):
                    status = json.loads(got[3])
                    self.assertEqual(status["reason"], "NonZeroExitCode")
                    self.assertEqual(status["details"]["causes"], [{"reason": "ExitCode", "message": "7"}])
                else:
                    self.assertEqual(got[3], b"command terminated with non-zero exit code: error executing command "
                                             b"[sh -c echo out;echo err >&2;exit 7], exit code 7")

    def test_5_tty_and_resize(self):
        "exec with tty=true runs on a terminal that takes the client's size from the resize channel (v5)"
        path = ("/api/v1/namespaces/default/pods/%s/exec?command=sh&command=-c&command=read%%20x;stty%%20size"
                "&stdin=true&stdout=true&tty=true" % POD)
        ws = RawWebSocket(path, "v5.channel.k8s.io")
        self.assertEqual(ws.recv(), (2, b"\x01"), "the empty stdout message that says the session is up")
        ws.send(b"\x04" + json.dumps({"Width": 100, "Height": 40}).encode())
        ws.send(b"\x00go\n")
        got = {}
        while True:
            op, m = ws.recv()
            if op == 8:
                break
            got[m[0]] = got.get(m[0], b"") + m[1:]
        ws.close()
        self.assertEqual(got[1].replace(b"\r", b""), b"go\n40 100\n")
        self.assertNotIn(2, got, "no stderr channel with a tty")
        self.assertEqual(json.loads(got[3]), {"metadata": {}, "status": "Success"})

    def test_3_errors(self):
        "a missing command, a wrong container and a denied user fail as on a real cluster"
        r = kc("exec", POD, "--", "no-such-command", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('error: Internal error occurred: error executing command in container: failed to exec in '
                      'container: failed to start exec', r.stderr)
        self.assertIn('exec: "no-such-command": executable file not found in $PATH: unknown', r.stderr)
        r = kc("exec", POD, "-c", "nope", "--", "true", check=False)
        self.assertIn("container nope is not valid for pod %s" % POD, r.stderr)
        kc("create", "role", "pod-reader", "--verb=get,list", "--resource=pods")
        kc("create", "rolebinding", "pod-reader", "--role=pod-reader", "--user=restricted")
        r = kc("exec", POD, "--", "true", context="restricted", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('Error from server (Forbidden): pods "%s" is forbidden: User "restricted" cannot create '
                      'resource "pods/exec" in API group "" in the namespace "default"' % POD, r.stderr)


class RawWebSocket:
    """A minimal RFC 6455 client written from the README's protocol section (what a
    non-Go client such as czctl's does), for the protocols kubectl does not use."""

    def __init__(self, path, protocol):
        u = SB.server.split("://", 1)[1]
        host, port = u.rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=SB.ca)
        self.s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=20), server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\n"
                        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Protocol: %s\r\n\r\n" % (path, u, SB.admin_token, key, protocol)).encode())
        self.f = self.s.makefile("rb")
        self.status = self.f.readline()
        self.headers = {}
        while True:
            line = self.f.readline().decode().strip()
            if not line:
                break
            k, v = line.split(":", 1)
            self.headers[k.lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        assert self.headers.get("sec-websocket-accept") == want.decode(), self.headers

    def send(self, payload, opcode=2):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0xFE]) + struct.pack("!H", n)
                                         if n < 65536 else bytes([0xFF]) + struct.pack("!Q", n))
        self.s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self):
        """(opcode, payload) of the next message; pings answered."""
        while True:
            b0, b1 = self.f.read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self.f.read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.f.read(8))[0]
            data = self.f.read(n)
            if b0 & 0x0F == 9:
                self.send(data, 10)
                continue
            return b0 & 0x0F, data

    def close(self):
        self.s.close()


class B_PortForward(unittest.TestCase):
    def test_1_http_through_pod(self):
        "port-forward to a pod carries HTTP requests, several ports and concurrent connections (both protocols)"
        for name, env in (("websocket", WS), ("spdy", SPDY)):
            with self.subTest(protocol=name), PortForward("pod/" + POD, 8080, 8081, env=env) as pf:
                for port in (8080, 8081):
                    st, body = pf.get(port, "/hello?x=1")
                    self.assertEqual(st, 200)
                    got = json.loads(body)
                    self.assertEqual((got["pod"], got["port"], got["path"]), (POD, port, "/hello?x=1"))
                with concurrent.futures.ThreadPoolExecutor(8) as ex:
                    res = list(ex.map(lambda i: pf.get(8080, "/c%d" % i), range(24)))
                self.assertEqual([json.loads(b)["path"] for _, b in res], ["/c%d" % i for i in range(24)])

    def test_2_big_bodies_through_pod_and_service(self):
        "50 MB cross a pod and a Service port-forward both ways, byte for byte"
        with PodServer() as srv:
            for target, port, env, seed in (("pod/" + POD, 9000, WS, 2), ("svc/big", 80, SPDY, 3)):
                with self.subTest(target=target):
                    body = big_body(seed)
                    with PortForward(target, port, env=env) as pf:
                        # a Service port is forwarded to its targetPort on one of its pods
                        self.assertEqual(list(pf.local), [9000])
                        status, back = pf.roundtrip(9000, body)
                    self.assertEqual(status, b"HTTP/1.1 200 OK\r\n")
                    self.assertEqual(len(back), BIG)
                    self.assertEqual(hashlib.sha256(back).digest(), hashlib.sha256(body).digest())
        self.assertEqual(srv.rc, 0, "the pod server saw stdin EOF and exited; kubectl exec returned 0")

    def test_4_kubelet_websocket_protocol(self):
        "port-forward over v4.channel.k8s.io with ?ports=: the port prefix, data both ways, the error channel"
        ws = RawWebSocket("/api/v1/namespaces/default/pods/%s/portforward?ports=8080,9999" % POD, "v4.channel.k8s.io")
        first = [ws.recv()[1] for _ in range(4)]
        self.assertEqual(sorted(first), sorted([b"\x00\x90\x1f", b"\x01\x90\x1f", b"\x02\x0f\x27",
                                                b"\x03\x0f\x27"]))
        ws.send(b"\x00GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = {}
        while True:
            op, m = ws.recv()
            if op == 8:
                break
            got[m[0]] = got.get(m[0], b"") + m[1:]
        ws.close()
        self.assertIn(b'"path": "/ws"', got[0])
        self.assertIn(b"error forwarding port 9999 to pod ", got[3])
        self.assertIn(b"connect: connection refused", got[3])

    def test_3_connection_refused(self):
        "a port nothing listens on in the pod: kubectl reports the runtime's error and stops"
        pf = PortForward("pod/" + POD, 9999)
        try:
            c = http.client.HTTPConnection("127.0.0.1", pf.local[9999], timeout=10)
            with self.assertRaises((http.client.RemoteDisconnected, ConnectionResetError)):
                c.request("GET", "/")
                c.getresponse()
            rc = pf.p.wait(timeout=15)
        finally:
            if pf.p.poll() is None:
                pf.p.kill()
        err = pf.p.stderr.read()
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"an error occurred forwarding \d+ -> 9999: error forwarding port 9999 to pod "
                              r"[0-9a-f]{64}, uid : failed to execute portforward in network namespace "
                              r"\\\"/run/netns/czsb-[0-9a-f]{6}-[0-9a-f]{12}\\\": failed to connect to localhost:9999 inside "
                              r"namespace \\\"[0-9a-f]{64}\\\", IPv4: dial tcp4 127.0.0.1:9999: connect: "
                              r"connection refused IPv6 dial tcp6 \[::1\]:9999: connect: connection refused")
        self.assertIn("error: lost connection to pod", err)


if __name__ == "__main__":
    tap.main()
