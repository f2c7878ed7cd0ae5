#!/usr/bin/env python3
"""The kube tunnel's relay (relay/czctl-relay.c) and its pairing protocol
(core/relay_proto.h), issue 11 "An in-cluster relay".

A: the relay as a local process between a fake proxy and fake laptop streams
written from relay_proto.h: pairing, bytes both ways untouched, the reset when no
laptop stream is idle (the proxy's fallback), the one replay, 'R', pings, timeouts,
probes, its command line.
B: the whole path on the sandbox: czctl's pool of port-forward streams on this machine,
the relay in a pod, a fake proxy reaching the relay through its own port-forward; the
laptop going away (the proxy's connections are turned away) and coming back."""
import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import tunnellib as tl
import tap  # noqa: E402


class Relay:
    """czctl-relay on 127.0.0.1 with free ports (and extra flags)."""

    def __init__(self, *flags):
        self.p = tl.spawn([tl.RELAY, "--proxy-listen", "127.0.0.1:0", "--laptop-listen", "127.0.0.1:0",
                           "--health-listen", "127.0.0.1:0"] + list(flags),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ports = {k: int(v) for k, v in re.findall(r"(\w+)=[\d.]+:(\d+)", self.p.stdout.readline())}
        self.proxy, self.laptop, self.health = ports["proxy"], ports["laptop"], ports["health"]

    def stats(self):
        s = socket.create_connection(("127.0.0.1", self.health), timeout=5)
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
        s.close()
        return json.loads(data.split(b"\r\n\r\n", 1)[1])

    def wait_stats(self, pred, what):
        """The relay's stats once pred holds for them."""
        return tl.wait_for(lambda: (lambda st: st if pred(st) else None)(self.stats()), 10, what)

    def stop(self):
        self.p.terminate()
        self.p.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


class Laptop:
    """A laptop stream as relay_proto.h describes it, over plain TCP."""

    def __init__(self, relay, hello=b"CZT1"):
        self.s = socket.create_connection(("127.0.0.1", relay.laptop), timeout=5)
        self.s.sendall(hello)

    def read(self, n):
        """Up to n bytes; fewer when the relay ended the stream (FIN or reset)."""
        data = b""
        while len(data) < n:
            try:
                d = self.s.recv(n - len(data))
            except ConnectionResetError:
                d = b""
            if not d:
                break
            data += d
        return data

    def hello(self):
        return self.read(6)

    def wait_connect(self):
        """Reads until 'C', answering pings; returns the pings seen."""
        pings = 0
        while True:
            b = self.read(1)
            if b == b"P":
                pings += 1
                self.s.sendall(b"p")
                continue
            if b != b"C":
                raise AssertionError("expected C, got %r" % b)
            return pings

    def answer_pings(self):
        """In a thread: answers pings until the stream ends."""
        def run():
            try:
                self.wait_connect()
            except (AssertionError, OSError):
                pass
        threading.Thread(target=run, daemon=True).start()

    def close(self):
        self.s.close()


def idle_laptops(relay, n, **flags):
    """n laptop streams past their hello, idle at the relay (last one heard from last)."""
    laps = []
    for _ in range(n):
        laps.append(Laptop(relay))
        laps[-1].hello()
    relay.wait_stats(lambda s: s["idle"] == n, "%d idle streams" % n)
    return laps


def proxy_conn(relay):
    return socket.create_connection(("127.0.0.1", relay.proxy), timeout=5)


def recv_all(s, n):
    data = b""
    while len(data) < n:
        d = s.recv(min(65536, n - len(data)))
        if not d:
            break
        data += d
    return data


def ended_by_reset(s):
    """True when the connection ends with a reset and no byte (the proxy's cue to fall back)."""
    try:
        s.recv(1)
        return False
    except ConnectionResetError:
        return True


def refused_at_once(relay):
    """A proxy connection that is reset without a byte: during the connect
    itself (the relay accepted and reset it before the handshake finished
    here) or at the first read."""
    try:
        s = proxy_conn(relay)
    except ConnectionResetError:
        return True
    try:
        return ended_by_reset(s)
    finally:
        s.close()


def tearDownModule():
    tl.stop_all()


class A_Local(unittest.TestCase):
    def test_01_no_laptop_stream_resets_the_proxy(self):
        "with no idle laptop stream a proxy connection is reset at once, without a byte"
        with Relay() as r:
            self.assertTrue(refused_at_once(r))
            st = r.stats()
            self.assertEqual((st["accepted"], st["refused"], st["idle"]), (1, 1, 0))

    def test_02_hello_and_pings(self):
        "a laptop stream says CZT1, the relay answers CZT1 and its ping interval, then pings it; pongs keep it"
        with Relay("--ping-interval", "1") as r:
            lap = Laptop(r)
            self.assertEqual(lap.hello(), b"CZT1\x00\x01")
            r.wait_stats(lambda s: s["idle"] == 1, "an idle stream")
            for _ in range(2):
                self.assertEqual(lap.read(1), b"P")
                lap.s.sendall(b"p")
            self.assertEqual(r.stats()["idle"], 1)
            lap.answer_pings()
            silent = Laptop(r)
            silent.hello()
            self.assertEqual(silent.read(1), b"P")   # and no pong: it is dropped at the next ping
            self.assertEqual(silent.read(1), b"", "a stream that stops answering is closed")
            self.assertEqual(r.stats()["idle"], 1)
            lap.close()
            silent.close()

    def test_03_pairs_and_passes_bytes_untouched(self):
        "a proxy connection gets C and the proxy's bytes on an idle stream; after A, bytes flow both ways untouched"
        with Relay() as r:
            lap, = idle_laptops(r, 1)
            p = proxy_conn(r)
            p.sendall(b"client hello")
            lap.wait_connect()
            self.assertEqual(lap.read(12), b"client hello")
            lap.s.sendall(b"pA" + b"server hello")     # a stray pong before A is dropped
            self.assertEqual(recv_all(p, 12), b"server hello")
            up, down = tl.pattern(1 << 20, 3), tl.pattern(1 << 20, 4)
            t = threading.Thread(target=lap.s.sendall, args=(down,))
            t.start()
            p.sendall(up)
            self.assertEqual(recv_all(p, len(down)), down)
            t.join()
            self.assertEqual(lap.read(len(up)), up)
            p.shutdown(socket.SHUT_WR)                 # the proxy's end reaches the laptop
            self.assertEqual(lap.read(1), b"")
            lap.s.sendall(b"last words")               # and the laptop can still answer
            lap.s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_all(p, 100), b"last words")
            st = r.wait_stats(lambda s: s["pairs"] == 0, "the pair closed")
            self.assertEqual((st["paired"], st["refused"], st["idle"]), (1, 0, 0))
            p.close()
            lap.close()

    def test_04_one_replay_on_another_stream(self):
        "a laptop stream that ends before A: the proxy's bytes go again, once, to another idle stream"
        with Relay() as r:
            first, second = idle_laptops(r, 2)
            p = proxy_conn(r)
            p.sendall(b"hello once")
            lapses = {}

            def watch(name, lap):
                try:
                    lap.wait_connect()
                    lapses[name] = lap
                except (AssertionError, OSError):
                    pass
            ws = [threading.Thread(target=watch, args=(n, l)) for n, l in (("first", first), ("second", second))]
            for w in ws:
                w.start()
            tl.wait_for(lambda: lapses, 5, "a paired stream")
            chosen = next(iter(lapses.values()))
            self.assertEqual(chosen.read(10), b"hello once")
            chosen.close()                                # gone before A
            tl.wait_for(lambda: len(lapses) == 2, 5, "the replay")
            other = [l for l in lapses.values() if l is not chosen][0]
            self.assertEqual(other.read(10), b"hello once")
            other.s.sendall(b"Aanswer")
            self.assertEqual(recv_all(p, 6), b"answer")
            self.assertEqual(r.stats()["replayed"], 1)
            p.close()
            other.close()

    def test_05_refused_by_the_laptop(self):
        "R: the laptop cannot reach its landing; the proxy connection is reset at once and no other stream is tried"
        with Relay() as r:
            lap, spare = idle_laptops(r, 2)
            p = proxy_conn(r)
            p.sendall(b"x")
            # the most recently heard-from stream is paired: the spare one, which said hello last
            spare.wait_connect()
            spare.s.sendall(b"R")
            self.assertTrue(ended_by_reset(p))
            st = r.wait_stats(lambda s: s["landing_refused"] == 1, "the refusal counted")
            self.assertEqual((st["replayed"], st["idle"]), (0, 1))
            for s in (p, lap, spare):
                s.close() if isinstance(s, socket.socket) else s.close()

    def test_06_pairing_timeout(self):
        "a laptop stream that does not answer C within --pair-timeout: the proxy connection is reset"
        with Relay("--pair-timeout", "0.3") as r:
            lap, = idle_laptops(r, 1)
            p = proxy_conn(r)
            p.sendall(b"x")
            lap.wait_connect()                           # and says nothing
            self.assertTrue(ended_by_reset(p))
            self.assertEqual(lap.read(2), b"x", "the laptop stream is closed too")
            p.close()
            lap.close()

    def test_07_not_the_protocol(self):
        "a stream that does not start with CZT1, or a byte outside the protocol, is closed"
        with Relay() as r:
            bad = Laptop(r, hello=b"GET / HTTP/1.1\r\n\r\n")
            self.assertEqual(bad.read(1), b"")
            lap = Laptop(r)
            lap.hello()
            lap.s.sendall(b"x")
            self.assertEqual(lap.read(1), b"")
            self.assertEqual(r.stats()["idle"], 0)

    def test_08_probes(self):
        "GET /healthz answers 200 for the kubelet's probes; other paths 404"
        with Relay() as r:
            for path, want in (("/healthz", b"HTTP/1.1 200 OK"), ("/readyz", b"HTTP/1.1 200 OK"),
                               ("/nope", b"HTTP/1.1 404 Not Found")):
                s = socket.create_connection(("127.0.0.1", r.health), timeout=5)
                s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
                self.assertTrue(recv_all(s, 100).startswith(want), path)
                s.close()

    def test_09_command_line(self):
        "a bad command line is a one-line error and exit 2; --version names the version"
        for args, word in ((["--proxy-listen", "nowhere"], "--proxy-listen"), (["--ping-interval", "0"], "--ping-interval"),
                           (["--bogus"], "--bogus"), (["--max-idle"], "--max-idle")):
            r = subprocess.run([tl.RELAY] + args, capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 2, args)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1)
            self.assertIn(word, r.stderr)
        r = subprocess.run([tl.RELAY, "--version"], capture_output=True, text=True, timeout=10)
        self.assertRegex(r.stdout, r"^czctl-relay \d+\.\d+\.\d+")


    def test_10_image_build_step(self):
        "relay/Dockerfile's compile step makes a static binary that needs nothing but itself (FROM scratch)"
        steps = [l for l in open(os.path.join(tl.ROOT, "relay", "Dockerfile")) if l.startswith("RUN gcc")]
        self.assertEqual(len(steps), 1)
        with tempfile.TemporaryDirectory() as d:
            for f in ("core/relay_proto.h", "relay/czctl-relay.c"):     # the image's COPY lines
                os.makedirs(os.path.join(d, os.path.dirname(f)), exist_ok=True)
                shutil.copy(os.path.join(tl.ROOT, f), os.path.join(d, f))
            cmd = steps[0][4:].strip().replace("-o /czctl-relay", "-o " + os.path.join(d, "out"))
            r = subprocess.run(["sh", "-c", cmd], cwd=d, capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, VERSION="9.8.7"))
            self.assertEqual(r.returncode, 0, r.stderr)
            ldd = subprocess.run(["ldd", os.path.join(d, "out")], capture_output=True, text=True)
            self.assertIn("not a dynamic executable", ldd.stdout + ldd.stderr)
            v = subprocess.run([os.path.join(d, "out"), "--version"], capture_output=True, text=True, env={})
            self.assertEqual(v.stdout, "czctl-relay 9.8.7\n")

    def test_11_czctl_renders_the_reference_manifests(self):
        "czctl.tunnel.kube renders relay/kubernetes.yaml (session example, Service example-service), namespace aside"
        import yaml
        want = [d for d in yaml.safe_load_all(open(os.path.join(tl.ROOT, "relay", "kubernetes.yaml"))) if d]
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
            f.write('print(require("cjson").encode(require("czctl.tunnel.kube").objects{ namespace = "ns", '
                    'id = "example", service = "example-service" }))')
            f.flush()
            r = subprocess.run([tl.CZCTL, "run", f.name], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)
        for o in got:
            self.assertEqual(o["metadata"].pop("namespace"), "ns")
        self.assertEqual(got, want)


class B_Sandbox(unittest.TestCase):
    """The relay in a pod of its image (the sandbox runs ghcr.io/czctl/czctl-relay
    as the binary built here, in the container runtime), czctl's pool on this
    machine, and a fake proxy that reaches the relay's proxy port through its own
    port-forward."""

    @classmethod
    def setUpClass(cls):
        cls.sb = tl.apilib.Sandbox().start()
        cls.pod = tl.relay_pod(cls.sb)
        cls.ports = {"proxy": 9000, "laptop": 9001}
        cls.app = tl.App()

    @classmethod
    def tearDownClass(cls):
        tl.stop_all()
        cls.app.close()
        cls.sb.stop()

    def pool(self, size=4, **opts):
        return tl.Driver("pool", self.sb.kubeconfig, namespace="default", pod=self.pod, port=self.ports["laptop"],
                         target_port=self.app.port, size=size, **opts)

    def proxy(self):
        return tl.Driver("forward", self.sb.kubeconfig, namespace="default", pod=self.pod, port=self.ports["proxy"])

    def test_1_requests_reach_the_laptop(self):
        "through the relay: HTTP to an app on 127.0.0.1 here, 100 concurrent requests, 50 MB both ways"
        with self.pool() as pool, self.proxy() as proxy:
            pool.wait(lambda d: d.stats.get("idle") == 4 and d.stats.get("state") == "up", what="4 idle streams")
            port = proxy.port()
            self.assertEqual(tl.http_get(port, "/hello"), (b"HTTP/1.1 200 OK\r\n", b"hello from the laptop"))
            with concurrent.futures.ThreadPoolExecutor(100) as ex:
                res = list(ex.map(lambda i: tl.http_get(port, "/bytes/%d/%d" % (1000 + i, i)), range(100)))
            self.assertEqual([b for _, b in res], [tl.pattern(1000 + i, i) for i in range(100)])
            body = tl.pattern(tl.BIG, 5)
            back = tl.roundtrip(port, body)
            self.assertEqual((len(back), tl.sha(back)), (tl.BIG, tl.sha(body)))
            self.assertGreaterEqual(pool.stats["paired"], 102)
            pool.wait(lambda d: d.stats.get("idle") == 4, what="the pool refilled")

    def test_4_idle_streams_are_replaced_before_they_age(self):
        "idle streams older than max_idle are replaced, and requests keep reaching the laptop meanwhile"
        with self.pool(size=2, max_idle=1) as pool, self.proxy() as proxy:
            port = proxy.port()
            pool.wait(lambda d: d.stats.get("requests", 0) >= 8, timeout=30, what="streams replaced three times")
            for i in range(5):
                self.assertEqual(tl.http_get(port, "/hello")[1], b"hello from the laptop")
            self.assertEqual(pool.stats["failed"], 0)
            pool.wait(lambda d: d.stats.get("idle") == 2, what="2 idle streams")

    def test_3_relay_pod_passes_restricted(self):
        "relay/kubernetes.yaml's pod is admitted in a namespace that enforces the restricted Pod Security Standard"
        ns = "restricted-relay"
        self.sb.kubectl("create", "namespace", ns)
        self.sb.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
        self.sb.kubectl("apply", "-n", ns, "-f", os.path.join(tl.ROOT, "relay", "kubernetes.yaml"))
        self.sb.wait_for(lambda: self.sb.kubectl("get", "pods", "-n", ns, "-l", "app.kubernetes.io/component=relay",
                                                 "-o", "name").stdout.strip(), what="the relay pod created")
        bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root-relay"},
               "spec": {"containers": [{"name": "relay", "image": "ghcr.io/czctl/czctl-relay:0.1.0"}]}}
        r = self.sb.kubectl("apply", "-n", ns, "--dry-run=server", "-f", "-", stdin=json.dumps(bad), check=False)
        self.assertNotEqual(r.returncode, 0, "the namespace really enforces restricted")
        self.assertIn('violates PodSecurity "restricted', r.stderr)

    def test_2_laptop_goes_away_and_comes_back(self):
        "the laptop's side is killed: proxy connections are turned away without an answer; started again, they reach it"
        with self.proxy() as proxy:
            port = proxy.port()
            pool = self.pool(size=2)
            pool.wait(lambda d: d.stats.get("idle") == 2, what="2 idle streams")
            self.assertEqual(tl.http_get(port, "/hello")[1], b"hello from the laptop")
            pool.kill()                                  # SIGKILL: the holder is gone, nothing says goodbye
            tl.wait_for(lambda: tl.closed_without_answer(port) in ("reset", "eof"), 10,
                        "proxy connections turned away")
            served = self.app.requests
            self.assertIn(tl.closed_without_answer(port), ("reset", "eof"))
            self.assertEqual(self.app.requests, served, "nothing reached the app meanwhile")
            with self.pool(size=2) as again:
                again.wait(lambda d: d.stats.get("idle") == 2, what="the new pool's idle streams")
                self.assertEqual(tl.http_get(port, "/hello")[1], b"hello from the laptop")


if __name__ == "__main__":
    tap.main()
