#!/usr/bin/env python3
"""Images (what each holds, how its command line is built), the timing
switch, pod IPs and the echo server, without a cluster."""
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import nodelib  # noqa: E402  (also puts tests/lib on sys.path)
import tap  # noqa: E402
from k8s import images  # noqa: E402
from k8s import network  # noqa: E402
from k8s import nodeutil  # noqa: E402
from k8s import timing  # noqa: E402

LOAD_STREAM = ["-g", "load_module modules/ngx_stream_module.so;"] if images.stream_is_dynamic() else []


class CommandTest(unittest.TestCase):
    def test_command_and_args_replace_entrypoint_and_cmd(self):
        g = "load_module modules/ngx_stream_module.so; " if LOAD_STREAM else ""
        cases = [
            # (kind, command, args) -> (argv, entrypoint step)
            (("nginx", None, None), (["nginx", "-p", "/etc/nginx/", "-g", g + "daemon off;"], "nginx")),
            (("nginx", None, ["nginx-debug", "-g", "daemon off;"]),
             (["nginx", "-p", "/etc/nginx/", "-g", g + "daemon off;"], "nginx")),
            (("nginx-unprivileged", ["nginx", "-e", "/dev/stderr", "-c", "/etc/czctl/nginx.conf", "-g", "daemon off;"],
              None), (["nginx", "-p", "/etc/nginx/", "-e", "/dev/stderr", "-c", "/etc/czctl/nginx.conf", "-g",
                       g + "daemon off;"], None)),
            (("nginx", ["/docker-entrypoint.sh"], ["nginx", "-c", "/x.conf"]),
             (["nginx", "-p", "/etc/nginx/", "-c", "/x.conf"] + LOAD_STREAM, "nginx")),
            (("nginx", ["sh", "-c"], ["echo $(POD) $$(POD) $(NOPE)"]), (["sh", "-c", "echo p1 $(POD) $(NOPE)"], None)),
            (("echo", None, ["ignored"]), (["python3", "-I", "/sandbox-echo/echo.py"], None)),
            (("echo", ["sleep"], ["5"]), (["sleep", "5"], None)),
        ]
        for (kind, command, args), want in cases:
            with self.subTest(kind=kind, command=command, args=args):
                self.assertEqual(images.container_argv(kind, command, args, {"POD": "p1"}), want)

    def test_nginx_layers_are_owned_as_in_the_images(self):
        for kind, owner, mode in (("nginx", (0, 0), 0o755), ("nginx-unprivileged", (101, 0), 0o775)):
            with self.subTest(kind=kind):
                d = tempfile.mkdtemp(prefix="layer-")
                try:
                    images.populate(os.path.join(d, "root"), os.path.join(d, "usr"), kind)
                    for path in ("etc/nginx", "var/cache/nginx"):
                        st = os.stat(os.path.join(d, "root", path))
                        self.assertEqual(((st.st_uid, st.st_gid), stat.S_IMODE(st.st_mode)), (owner, mode), path)
                    self.assertEqual(os.readlink(os.path.join(d, "root/var/log/nginx/access.log")), "/dev/stdout")
                    self.assertEqual(os.readlink(os.path.join(d, "root/var/lib/nginx")), "/var/cache/nginx")
                    self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, "root/tmp")).st_mode), 0o1777)
                    self.assertIn("nginx:x:101:101:", open(os.path.join(d, "root/etc/passwd")).read())
                    self.assertIn("Welcome to nginx!", open(os.path.join(d, "usr/share/nginx/html/index.html")).read())
                    conf = open(os.path.join(d, "root/etc/nginx/nginx.conf")).read()
                    self.assertEqual("user  nginx;" in conf, kind == "nginx")
                    self.assertIn("pid        /tmp/nginx.pid;" if kind != "nginx" else "pid        /var/run/nginx.pid;",
                                  conf)
                finally:
                    shutil.rmtree(d, ignore_errors=True)
        self.assertEqual(images.user_entry("nginx-unprivileged", 101), (101, "/nonexistent"))
        self.assertEqual(images.user_entry("echo", 101), None)
        self.assertEqual(images.config("nginx-unprivileged")["user"], (101, 101))


class TimingTest(unittest.TestCase):
    def test_sandbox_timing_values(self):
        self.assertEqual(timing.parse(""), (False, {k: 0.0 for k in timing.REALISTIC}))
        self.assertEqual(timing.parse("realistic"), (True, timing.REALISTIC))
        realistic, fig = timing.parse("realistic,volume_sync=2,image_pull=0.5")
        self.assertTrue(realistic)
        self.assertEqual((fig["volume_sync"], fig["image_pull"], fig["pod_sandbox"]),
                         (2.0, 0.5, timing.REALISTIC["pod_sandbox"]))
        for bad in ("slow", "realistic,nope=1", "realistic,image_pull=x", "realistic,image_pull=-1"):
            with self.subTest(bad=bad):
                with self.assertRaises(timing.TimingError):
                    timing.parse(bad)

    def test_kubelet_resync_and_proxy_lag(self):
        try:
            timing.configure("realistic,volume_sync=60,endpoints_lag=0.3,proxy_min_sync=1")
            for _ in range(20):
                self.assertTrue(60 <= timing.pod_resync_interval() <= 90)
            self.assertEqual(timing.datapath_due(100.0, None), 100.3)
            self.assertEqual(timing.datapath_due(100.0, 99.5), 100.5)
            self.assertEqual(timing.image_pull(False, False), timing.REALISTIC["image_pull"])
            self.assertEqual(timing.image_pull(True, False), 0.0)
            timing.configure("")
            self.assertIsNone(timing.pod_resync_interval())
            self.assertEqual(timing.datapath_due(100.0, 99.9), 100.0)
        finally:
            timing.configure(os.environ.get(timing.ENV, ""))

    def test_probe_schedule_as_the_kubelets_prober(self):
        try:
            timing.configure("")
            first, after = timing.probe_schedule(100.0, 2, 5)
            self.assertEqual((first, after(103.0)), (102.0, 108.0), "fast: at initialDelaySeconds, then every period")
            timing.configure("realistic,pleg_relist=1")
            for _ in range(50):
                first, after = timing.probe_schedule(100.0, 0, 1)
                # no delay: the status sync after the PLEG relist that sees it running
                self.assertTrue(100.0 <= first <= 101.0, first)
                second = after(first)
                self.assertTrue(first < second <= first + 1.0 + 1e-9, "then the worker's 1 s ticks")
                self.assertAlmostEqual(after(second) - second, 1.0)
                first, after = timing.probe_schedule(100.0, 3, 2)
                # a delay: the first tick once it has passed (ticks keep their phase)
                self.assertTrue(103.0 <= first < 105.0, first)
                self.assertAlmostEqual(after(first) - first, 2.0)
        finally:
            timing.configure(os.environ.get(timing.ENV, ""))

    def test_quantities(self):
        for q, want in (("64Mi", 64 << 20), ("500m", 0.5), ("1", 1), ("129e6", 129e6), ("1Gi", 1 << 30),
                        ("123M", 123e6), ("x", None), (None, None)):
            with self.subTest(q=q):
                self.assertEqual(nodeutil.parse_quantity(q), want)


class ImageTest(unittest.TestCase):
    def test_image_kinds(self):
        for image, kind in [("nginx", "nginx"), ("nginx:1.27-alpine", "nginx"), ("docker.io/library/nginx", "nginx"),
                            ("nginxinc/nginx-unprivileged:stable", "nginx-unprivileged"),
                            ("sandbox/echo", "echo"), ("sandbox/echo:v2", "echo"),
                            ("busybox", None), ("quay.io/nginx/nginx-unprivileged", None), ("", None)]:
            with self.subTest(image=image):
                self.assertEqual(images.kind_of(image), kind)
        self.assertEqual(images.normalized("nginx"), "docker.io/library/nginx:latest")

    def test_ipam_hands_out_unique_pod_addresses(self):
        ipam = network.IPAM()
        a = [ipam.allocate() for _ in range(300)]
        self.assertEqual(len(set(a)), 300)
        self.assertTrue(all(ip.startswith("10.244.") and not ip.endswith(".0") and not ip.endswith(".255")
                            for ip in a))
        self.assertNotIn("10.244.0.1", a, "the bridge (pods' gateway) is not handed out")
        self.assertNotIn("10.244.0.2", a, "the sandbox exec address is not handed out")
        ipam.release(a[0])
        self.assertNotEqual(ipam.allocate(), a[0], "a freed address is not reused at once")


class EchoTest(unittest.TestCase):
    def test_echo_reports_pod_port_and_headers(self):
        env = dict(os.environ, POD_NAME="p1", POD_NAMESPACE="ns1")
        proc = subprocess.Popen([sys.executable, "-I", images.ECHO_PY, "--ip", "127.1.250.1", "--port", "18081",
                                 "--port", "18082", "--container", "c1"], env=env, stdout=subprocess.PIPE)
        try:
            proc.stdout.readline()
            for port in (18081, 18082):
                s = socket.create_connection(("127.1.250.1", port), timeout=3)
                s.sendall(b"POST /a HTTP/1.1\r\nHost: h\r\nX-One: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabc\r\n0\r\n\r\n")
                status, doc = nodelib.read_json_response(s.makefile("rb"))
                self.assertIn(b"200 OK", status)
                s.close()
                self.assertEqual((doc["pod"], doc["namespace"], doc["container"], doc["port"]),
                                 ("p1", "ns1", "c1", port))
                self.assertEqual(doc["headers"]["X-One"], "1")
                self.assertEqual(doc["body"]["length"], 3)
        finally:
            proc.terminate()
            proc.wait(5)


if __name__ == "__main__":
    tap.main()
