#!/usr/bin/env python3
"""czctl.core.portforward against the sandbox API server (issue 11: the port-forward
client): a local port forwarded to a pod's port over kubectl 1.32's default protocol
(SPDY/3.1 tunnelled in WebSocket) and over plain SPDY; HTTP requests, 50 MB both ways
byte for byte, 100 concurrent streams on one connection; the fallback to SPDY when the
server refuses the WebSocket request; the error stream and refused upgrades as one-line
errors; reconnecting by itself when the laptop's network comes back."""
import concurrent.futures
import json
import os
import tempfile
import threading
import unittest
import urllib.parse

import tunnellib as tl
import tap  # noqa: E402

SB = None
POD = None


def setUpModule():
    global SB, POD
    SB = tl.apilib.Sandbox().start()
    POD = tl.echo_pod(SB)


def tearDownModule():
    tl.stop_all()
    SB.stop()


def forward(port, **opts):
    return tl.Driver("forward", SB.kubeconfig, namespace="default", pod=opts.pop("pod", POD), port=port, **opts)


def portforward_upgrades():
    """(method, status) of every port-forward request in the audit log, in order."""
    return [(a["method"], a["status"]) for a in SB.audit() if a["path"].endswith("/portforward")]


class A_Forward(unittest.TestCase):
    def test_1_http_request_reaches_the_pods_port(self):
        "an HTTP request through the forwarded port is answered by the pod's port, over each protocol"
        for protocol, wire in (("auto", "websocket"), ("websocket", "websocket"), ("spdy", "spdy")):
            with self.subTest(protocol=protocol), forward(8080, protocol=protocol) as d:
                status, body = tl.http_get(d.port(), "/hello?x=1")
                self.assertEqual(status, b"HTTP/1.1 200 OK\r\n")
                got = json.loads(body)
                self.assertEqual((got["pod"], got["port"], got["path"]), (POD, 8080, "/hello?x=1"))
                d.wait(lambda d: d.stats.get("protocol") == wire and d.stats.get("state") == "up", what="state up")

    def test_2_fifty_megabytes_both_ways(self):
        "50 MB go to the pod and come back byte for byte while still being sent, over each protocol"
        with tl.PodProcess(SB, POD, ["python3", "-c", tl.POD_ECHO]) as echo:
            port = int(echo.first.split()[1])
            for protocol, seed in (("websocket", 1), ("spdy", 2)):
                with self.subTest(protocol=protocol), forward(port, protocol=protocol) as d:
                    body = tl.pattern(tl.BIG, seed)
                    back = tl.roundtrip(d.port(), body, raw=True)
                    self.assertEqual(len(back), tl.BIG)
                    self.assertEqual(tl.sha(back), tl.sha(body))

    def test_3_hundred_concurrent_streams_share_one_connection(self):
        "100 connections at once, each its own pair of streams on one API server connection"
        before = len(portforward_upgrades())
        with forward(8080) as d:
            port = d.port()
            start = threading.Barrier(100)

            def one(i):
                start.wait(30)
                return tl.http_get(port, "/c%d" % i)
            with concurrent.futures.ThreadPoolExecutor(100) as ex:
                res = list(ex.map(one, range(100)))
            self.assertEqual([json.loads(b)["path"] for _, b in res], ["/c%d" % i for i in range(100)])
            d.wait(lambda d: d.stats.get("requests", 0) >= 100, what="100 requests")
            self.assertEqual(d.stats["connections"], 1)
        self.assertEqual(portforward_upgrades()[before:], [("GET", 101)], "one upgrade, over WebSocket")

    def test_4_falls_back_to_spdy_when_websocket_is_refused(self):
        "a server that refuses the WebSocket request (any status) gets the SPDY upgrade instead, like kubectl"
        st, _ = SB.curl("PUT", "/sandbox/faults", {"rules": [
            {"method": "GET", "path": "/portforward$", "status": 400, "message": "no websockets here"}]})
        self.assertEqual(st, 200)
        try:
            before = len(portforward_upgrades())
            with forward(8080) as d:
                status, body = tl.http_get(d.port(), "/after-fallback")
                self.assertEqual(json.loads(body)["path"], "/after-fallback")
                self.assertEqual(d.stats.get("protocol"), "spdy")
            self.assertEqual(portforward_upgrades()[before:], [("GET", 400), ("POST", 101)])
        finally:
            SB.curl("DELETE", "/sandbox/faults")


    def test_5_retarget(self):
        "retarget: later connections go to another pod on a new connection"
        other = tl.echo_pod(SB, "web2")
        control = os.path.join(tempfile.mkdtemp(), "control")
        with forward(8080, control=control) as d:
            port = d.port()
            self.assertEqual(json.loads(tl.http_get(port, "/a")[1])["pod"], POD)
            with open(control + ".tmp", "w") as f:
                f.write("retarget %s\n" % other)
            os.rename(control + ".tmp", control)
            d.wait(lambda d: d.stats.get("pod") == other and d.stats.get("connections") == 2, what="a new connection")
            self.assertEqual(json.loads(tl.http_get(port, "/b")[1])["pod"], other)


class B_Errors(unittest.TestCase):
    def test_1_error_stream_becomes_one_line(self):
        "a port nothing listens on: the local connection is reset without a byte and the runtime's text is one line"
        with forward(9999) as d:
            self.assertEqual(tl.closed_without_answer(d.port()), "reset")
            _, msg = d.event("error", "port 9999")
            self.assertNotIn("\n", msg)
            self.assertRegex(msg, r"^port-forward to pod default/%s port 9999: error forwarding port 9999 to pod "
                                  r"[0-9a-f]{64}, uid : .*connect: connection refused$" % POD)
            # the next connection to the same pod port fails the same way
            self.assertEqual(tl.closed_without_answer(d.port()), "reset")
            self.assertEqual(d.stats["state"], "up", "one refused port does not end the connection")

    def test_2_refused_upgrades_become_one_line(self):
        "a missing pod and a user without pods/portforward: the API server's Status message, one line"
        with forward(8080, pod="nope") as d:
            _, msg = d.event("down", "nope")
            self.assertEqual(msg, 'port-forward to pod default/nope: pods "nope" not found (HTTP 404)')
            self.assertEqual(tl.closed_without_answer(d.port()), "reset", "a waiting client is not left hanging")
        with forward(8080, context="restricted") as d:
            _, msg = d.event("down", "forbidden")
            self.assertRegex(msg, r'^port-forward to pod default/\S+: pods "\S+" is forbidden: User "\S+" cannot '
                                  r'create resource "pods/portforward".* \(HTTP 403\)$')

    def test_3_bad_arguments_raise(self):
        "misuse raises with the option's name; nothing is started"
        for opts, word in ((dict(pod="a/b"), "pod"), (dict(pod=POD, protocol="h2"), "protocol"),
                           (dict(pod=POD, port=0), "port")):
            args = dict(port=8080)
            args.update(opts)
            d = tl.Driver("forward", SB.kubeconfig, namespace="default", **args)
            d.wait(lambda d: d.p.poll() is not None, what="exit")
            self.assertNotEqual(d.p.returncode, 0)
            self.assertIn(word, d.p.stderr.read())


class C_Reconnect(unittest.TestCase):
    def setUp(self):
        server = urllib.parse.urlsplit(SB.server)
        self.proxy = tl.CutProxy(server.hostname, server.port)
        self.tmp = tempfile.mkdtemp()
        self.kc = self.proxy.kubeconfig(SB.kubeconfig, os.path.join(self.tmp, "kubeconfig"))

    def tearDown(self):
        self.proxy.close()

    def test_1_reconnects_after_the_network_comes_back(self):
        "the network goes (connections reset, new ones refused) and comes back: czctl reconnects by itself"
        with tl.Driver("forward", self.kc, namespace="default", pod=POD, port=8080) as d:
            port = d.port()
            self.assertEqual(json.loads(tl.http_get(port, "/before")[1])["path"], "/before")
            n = len(d.events)
            self.proxy.cut()
            _, msg = d.event("down", "lost", after=n)
            self.assertEqual(tl.closed_without_answer(port), "reset")
            self.proxy.resume()
            d.event("up", after=n)
            self.assertEqual(json.loads(tl.http_get(port, "/after")[1])["path"], "/after")
            self.assertGreaterEqual(d.stats["reconnects"], 1)

    def test_2_a_silent_network_is_noticed_by_pings(self):
        "the network goes silent (nothing closes): pings stop being answered and czctl reconnects"
        with tl.Driver("forward", self.kc, namespace="default", pod=POD, port=8080, ping_interval=0.2) as d:
            port = d.port()
            self.assertEqual(tl.http_get(port, "/a")[0], b"HTTP/1.1 200 OK\r\n")
            n = len(d.events)
            self.proxy.blackhole()
            _, msg = d.event("down", "no answer to a ping", after=n)
            self.proxy.resume()
            d.event("up", after=n)
            self.assertEqual(json.loads(tl.http_get(port, "/b")[1])["path"], "/b")


if __name__ == "__main__":
    tap.main()
