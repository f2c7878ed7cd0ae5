#!/usr/bin/env python3
"""Service proxy and Endpoints: echo Deployments behind a Service's ClusterIP
(issue 3, acceptance 3)."""
import base64
import hashlib
import json
import os
import socket
import struct
import sys
import time
import unittest

sys.dont_write_bytecode = True

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nodelib as nl  # noqa: E402
import tap  # noqa: E402

SB = None


def setUpModule():
    global SB
    SB = nl.Sandbox().start()
    for name in ("blue", "green"):
        SB.apply(nl.deployment(name, "sandbox/echo:1", replicas=2, labels={"app": "echo", "color": name},
                               ports=[{"name": "http", "containerPort": 8080},
                                      {"name": "alt", "containerPort": 9090}]))
    SB.apply(nl.service("echo", {"app": "echo", "color": "blue"},
                        [{"name": "web", "port": 80, "targetPort": "http"}]))
    SB.wait_available("blue")
    SB.wait_available("green")


def tearDownModule():
    if SB is not None:
        SB.stop()


def ask(ip, port, path="/", headers=None):
    status, body = nl.http_get(ip, port, path, headers)
    assert status == 200, (status, body)
    return json.loads(body)


def _try(fn, *args):
    try:
        return fn(*args)
    except OSError:
        return None


def ready_endpoints(name):
    ep = SB.api.get("/api/v1/namespaces/default/endpoints/%s" % name, missing=None) or {}
    return sorted((a["targetRef"]["name"], p["port"]) for s in ep.get("subsets") or []
                  for a in s.get("addresses") or [] for p in s.get("ports") or [])


class ServiceProxyTest(unittest.TestCase):
    def setUp(self):
        # every test starts from the blue selector and the named targetPort
        SB.api.merge_patch("/api/v1/namespaces/default/services/echo",
                           {"spec": {"selector": {"app": "echo", "color": "blue"},
                                     "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}})
        blue = sorted(p["metadata"]["name"] for p in SB.pods(prefix="blue-"))
        SB.wait_for(lambda: [n for n, _ in ready_endpoints("echo")] == blue, what="blue endpoints")

    def test_endpoints_list_ready_pods_with_named_target_port_resolved(self):
        blue = SB.pods(prefix="blue-")
        ep = SB.api.get("/api/v1/namespaces/default/endpoints/echo")
        self.assertEqual(len(ep["subsets"]), 1)
        sub = ep["subsets"][0]
        self.assertEqual(sub["ports"], [{"name": "web", "port": 8080, "protocol": "TCP"}])
        self.assertEqual(sorted(a["ip"] for a in sub["addresses"]), sorted(p["status"]["podIP"] for p in blue))
        for a in sub["addresses"]:
            self.assertEqual(a["nodeName"], "sandbox")
            self.assertEqual(a["targetRef"]["kind"], "Pod")
            self.assertEqual(a["targetRef"]["namespace"], "default")

    def test_echo_answers_through_the_cluster_ip_round_robin(self):
        ip = SB.cluster_ip("echo")
        self.assertTrue(ip.startswith("10.96."), ip)
        seen = set()
        for _ in range(6):
            r = ask(ip, 80, "/hello?x=1", {"X-Test": "yes"})
            self.assertEqual(r["namespace"], "default")
            self.assertEqual(r["container"], "main")
            self.assertEqual(r["port"], 8080)
            self.assertEqual(r["path"], "/hello?x=1")
            self.assertEqual(r["headers"].get("X-Test"), "yes")
            seen.add(r["pod"])
        self.assertEqual(seen, {p["metadata"]["name"] for p in SB.pods(prefix="blue-")})

    def test_selector_change_moves_new_connections_within_100ms(self):
        ip = SB.cluster_ip("echo")
        self.assertTrue(ask(ip, 80)["pod"].startswith("blue-"))
        SB.api.merge_patch("/api/v1/namespaces/default/services/echo",
                           {"spec": {"selector": {"app": "echo", "color": "green"}}})
        t0 = time.monotonic()
        moved = None
        while time.monotonic() - t0 < 5:
            if ask(ip, 80)["pod"].startswith("green-"):
                moved = time.monotonic() - t0
                break
            time.sleep(0.005)
        self.assertIsNotNone(moved, "connections never moved to green")
        self.assertLess(moved, 0.1, "first connection to the new selector after %.3f s" % moved)
        for _ in range(4):
            self.assertTrue(ask(ip, 80)["pod"].startswith("green-"))

    def test_target_port_change_takes_effect_for_new_connections(self):
        ip = SB.cluster_ip("echo")
        self.assertEqual(ask(ip, 80)["port"], 8080)
        SB.api.merge_patch("/api/v1/namespaces/default/services/echo",
                           {"spec": {"ports": [{"name": "web", "port": 80, "targetPort": "alt"}]}})
        SB.wait_for(lambda: ask(ip, 80)["port"] == 9090, timeout=2, what="port 9090 answering")

    def test_body_of_any_size_is_read_and_hashed(self):
        ip = SB.cluster_ip("echo")
        body = os.urandom(3 * 1024 * 1024 + 7)
        s = nl.connect((ip, 80), timeout=5)
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        status, doc = nl.read_json_response(s.makefile("rb"))
        self.assertIn(b"200", status)
        s.close()
        self.assertEqual(doc["body"], {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    def test_keep_alive_connection_serves_several_requests(self):
        conn = nl.HTTPConnection(SB.cluster_ip("echo"), 80, timeout=3)
        pods = set()
        for i in range(3):
            conn.request("GET", "/k%d" % i)
            r = conn.getresponse()
            doc = json.loads(r.read())
            self.assertEqual(doc["path"], "/k%d" % i)
            pods.add(doc["pod"])
        conn.close()
        self.assertEqual(len(pods), 1, "one TCP connection stays on one pod")

    def test_websocket_round_trip_through_the_cluster_ip(self):
        s = nl.connect((SB.cluster_ip("echo"), 80), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET /ws HTTP/1.1\r\nHost: echo\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
        f = s.makefile("rb")
        self.assertIn(b"101", f.readline())
        headers = {}
        while True:
            line = f.readline().strip()
            if not line:
                break
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC11B85").encode()).digest())
        self.assertEqual(headers["sec-websocket-accept"], want.decode())
        for msg in (b"hello", b"x" * 70000):
            mask = os.urandom(4)
            n = len(msg)
            hdr = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else (
                struct.pack("!BBH", 0x81, 0x80 | 126, n) if n < 65536 else struct.pack("!BBQ", 0x81, 0x80 | 127, n))
            s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
            b1, b2 = f.read(2)
            self.assertEqual(b1, 0x81)
            ln = b2 & 0x7F
            if ln == 126:
                ln = struct.unpack("!H", f.read(2))[0]
            elif ln == 127:
                ln = struct.unpack("!Q", f.read(8))[0]
            payload = f.read(ln)
            pod, _, echoed = payload.partition(b": ")
            self.assertTrue(pod.startswith(b"blue-"), payload[:40])
            self.assertEqual(echoed, msg)
        s.close()

    def test_port_without_ready_endpoints_resets_the_connection(self):
        SB.api.merge_patch("/api/v1/namespaces/default/services/echo",
                           {"spec": {"selector": {"app": "nothing-matches"}}})
        SB.wait_for(lambda: ready_endpoints("echo") == [], timeout=2, what="empty endpoints")
        ip = SB.cluster_ip("echo")
        s = None
        try:
            with self.assertRaises((ConnectionResetError, BrokenPipeError)):
                # the reset may already be seen by connect() itself
                s = nl.connect((ip, 80), timeout=2)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                data = s.recv(100)
                self.fail("connection not reset (read %r)" % data)
        finally:
            if s is not None:
                s.close()

    def test_selectorless_service_uses_manual_endpoints_with_half_close_and_reset(self):
        import threading
        big = os.urandom(16 << 20)
        ls = nl.listen()     # an endpoint inside the cluster that is no pod
        addr, port = ls.getsockname()

        def serve():
            for _ in range(2):
                c, _ = ls.accept()
                got = b""
                while True:           # read until the client's FIN arrives through the proxy
                    d = c.recv(65536)
                    if not d:
                        break
                    got += d
                c.sendall(hashlib.sha256(got).hexdigest().encode() + b"\n" + (big if got == b"big" else b""))
                c.close()
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            SB.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "manual"},
                      "spec": {"ports": [{"port": 7000, "targetPort": port}]}})
            SB.apply({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual"},
                      "subsets": [{"addresses": [{"ip": addr}], "ports": [{"port": port}]},
                                  ]})
            ip = SB.cluster_ip("manual")

            def exchange(payload):
                s = nl.connect((ip, 7000), timeout=10)
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                out = b""
                while True:
                    d = s.recv(1 << 20)
                    if not d:
                        break
                    out += d
                s.close()
                return out
            out = SB.wait_for(lambda: (lambda o: o if o else None)(_try(exchange, b"big")), timeout=5,
                              what="proxy routing to the manual endpoint")
            head, _, body = out.partition(b"\n")
            self.assertEqual(head, hashlib.sha256(b"big").hexdigest().encode())
            self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(big).digest())
            self.assertEqual(exchange(b"x" * 100000).strip(), hashlib.sha256(b"x" * 100000).hexdigest().encode())
        finally:
            ls.close()
        # the endpoint now refuses: the client is reset
        s = None
        with self.assertRaises((ConnectionResetError, BrokenPipeError)):
            s = nl.connect((ip, 7000), timeout=2)
            s.sendall(b"hello")
            s.recv(10)
            self.fail("not reset")
        if s is not None:
            s.close()
        SB.kubectl("delete", "service", "manual")

    def test_deleted_service_stops_listening(self):
        SB.apply(nl.service("temp", {"app": "echo", "color": "blue"}, [{"port": 81, "targetPort": 8080}]))
        SB.wait_for(lambda: len(ready_endpoints("temp")) == 2, what="temp endpoints")
        ip = SB.cluster_ip("temp")
        self.assertTrue(ask(ip, 81)["pod"].startswith("blue-"))
        SB.kubectl("delete", "service", "temp")

        def refused():
            try:
                nl.connect((ip, 81), timeout=1).close()
                return False
            except ConnectionRefusedError:
                return True
        SB.wait_for(refused, timeout=2, what="listener closed")


if __name__ == "__main__":
    tap.main()
