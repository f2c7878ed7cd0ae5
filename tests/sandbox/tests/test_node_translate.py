#!/usr/bin/env python3
"""NGINX configuration translation rules (README "Node: NGINX translation"),
image name handling and the echo server, without a cluster."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import nodelib  # noqa: E402,F401  (puts tests/lib on sys.path)
import tap  # noqa: E402
from k8s import images  # noqa: E402
from k8s import kubelet  # noqa: E402

POD_IP = "127.1.200.7"
SERVICES = {"web": "127.2.0.9", "web.default": "127.2.0.9", "web.default.svc": "127.2.0.9",
            "web.default.svc.cluster.local": "127.2.0.9"}


class TranslateTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="translate-")
        images.populate_nginx_root(self.root, "nginx")

    def tearDown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def tr(self, text, run_as_root=True):
        t = images.NginxTranslator(self.root, POD_IP, resolve=SERVICES.get, run_as_root=run_as_root)
        return t.translate(text), t

    def test_listen_forms_become_the_pod_ip(self):
        cases = [
            ("listen 80;", "listen %s:80;" % POD_IP),
            ("listen *:8080 default_server;", "listen %s:8080 default_server;" % POD_IP),
            ("listen 0.0.0.0:81;", "listen %s:81;" % POD_IP),
            # a pod has its own loopback (its network namespace): a listen
            # there stays inside the pod, as on a real node
            ("listen 127.0.0.1:82;", "listen 127.0.0.1:82;"),
            ("listen localhost:83;", "listen %s:83;" % POD_IP),
            ("listen 8443 ssl;", "listen %s:8443 ssl;" % POD_IP),
        ]
        for src, want in cases:
            with self.subTest(src=src):
                out, t = self.tr("events {} http { server { %s } }" % src)
                self.assertIn(want, out)

    def test_ipv6_listens_are_dropped(self):
        out, t = self.tr("events {} http { server { listen 80; listen [::]:80 ipv6only=on; } }")
        self.assertNotIn("[::]", out)
        self.assertEqual(t.listens, {80})

    def test_server_without_listen_gets_the_default_port(self):
        out, t = self.tr("events {} http { server { server_name x; } }")
        self.assertIn("listen %s:80;" % POD_IP, out)
        out, t = self.tr("events {} http { server { server_name x; } }", run_as_root=False)
        self.assertIn("listen %s:8000;" % POD_IP, out)

    def test_absolute_paths_are_rerooted_and_dev_paths_kept(self):
        out, _ = self.tr("pid /tmp/nginx.pid; error_log /dev/stderr; events {} http { "
                         "access_log /var/log/nginx/x.log main; client_body_temp_path /tmp/cb; "
                         "server { listen 80; root /srv/www; location /a { alias /data/a/; } } }")
        for want in ("pid %s/tmp/nginx.pid;" % self.root, "error_log /dev/stderr;",
                     "access_log %s/var/log/nginx/x.log main;" % self.root,
                     "client_body_temp_path %s/tmp/cb;" % self.root, "root %s/srv/www;" % self.root,
                     "alias %s/data/a/;" % self.root):
            self.assertIn(want, out)

    def test_includes_are_inlined_and_translated(self):
        out, t = self.tr(open(os.path.join(self.root, "etc/nginx/nginx.conf")).read())
        self.assertNotIn("include", out)
        self.assertIn("listen %s:80;" % POD_IP, out)       # from conf.d/default.conf
        self.assertIn("text/html", out)                      # from mime.types
        self.assertIn("root %s/usr/share/nginx/html;" % self.root, out)

    def test_user_directive_is_replaced_and_daemon_forced_off(self):
        out, _ = self.tr("user nginx; daemon on; events {} http {}")
        self.assertNotIn("user nginx", out)
        self.assertIn("user root root;", out)
        self.assertIn("daemon off;", out)
        self.assertNotIn("daemon on", out)
        out, _ = self.tr("user nginx; events {} http {}", run_as_root=False)
        self.assertNotIn("user", out)

    def test_service_names_in_upstreams_resolve_to_cluster_ips(self):
        out, _ = self.tr("events {} http { upstream orig { server web:8080; server web.default.svc:81; } "
                         "server { listen 80; location / { proxy_pass http://orig; } "
                         "location /b { proxy_pass http://web.default.svc.cluster.local:8080/x; } "
                         "location /c { proxy_pass http://localhost:9000; } "
                         "location /d { proxy_pass http://127.0.0.1:7000; } } }")
        self.assertIn("server 127.2.0.9:8080;", out)
        self.assertIn("server 127.2.0.9:81;", out)
        self.assertIn("proxy_pass http://orig;", out)
        self.assertIn("proxy_pass http://127.2.0.9:8080/x;", out)
        self.assertIn("proxy_pass http://%s:9000;" % POD_IP, out)
        self.assertIn("proxy_pass http://127.0.0.1:7000;", out)

    def test_unknown_host_names_fail_like_nginx_without_dns(self):
        with self.assertRaises(images.UnresolvedHost):
            self.tr("events {} http { server { listen 80; location / { proxy_pass http://nowhere.example:80; } } }")

    def test_resolver_addresses_are_kept_and_service_names_mapped(self):
        out, _ = self.tr("events {} http { resolver 10.96.0.10 valid=10s; server { listen 80; } }")
        self.assertIn("resolver 10.96.0.10 valid=10s;", out)
        out, _ = self.tr("events {} http { resolver web.default.svc.cluster.local:53; server { listen 80; } }")
        self.assertIn("resolver 127.2.0.9:53;", out)

    def test_translated_default_config_passes_nginx_t(self):
        out, _ = self.tr(open(os.path.join(self.root, "etc/nginx/nginx.conf")).read())
        path = os.path.join(self.root, "t.conf")
        open(path, "w").write(out)
        r = subprocess.run([images.NGINX_BIN, "-t", "-p", self.root + "/etc/nginx/", "-e", "stderr", "-c", path],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("test is successful", r.stderr)

    def test_stream_block_loads_the_module_and_listens_on_the_pod_ip(self):
        conf = ("events {} http { server { listen 8080; } }\n"
                "stream { server { listen 8081 reuseport; proxy_pass web:443; }\n"
                "         server { listen 0.0.0.0:8082 udp reuseport; proxy_pass 127.2.0.9:53; } }")
        out, t = self.tr(conf)
        if images.stream_is_dynamic():
            self.assertTrue(out.startswith("load_module %s;\n" % images.STREAM_MODULE), out)
        else:
            self.assertNotIn("load_module", out)
        self.assertIn("listen %s:8081 reuseport;" % POD_IP, out)
        self.assertIn("listen %s:8082 udp reuseport;" % POD_IP, out)
        self.assertIn("proxy_pass 127.2.0.9:443;", out)
        self.assertEqual(t.listens, {8080, 8081}, "UDP listens are not waited for as TCP")
        path = os.path.join(self.root, "t.conf")
        open(path, "w").write(out)
        r = subprocess.run([images.NGINX_BIN, "-t", "-p", self.root + "/etc/nginx/", "-e", "stderr", "-c", path],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        out2, _ = self.tr("load_module modules/ngx_stream_module.so;\nevents {}\nstream { server { listen 81; proxy_pass 127.2.0.9:1; } }")
        self.assertEqual(out2.count("ngx_stream_module"), 1, out2)
        out3, _ = self.tr("events {} http { server { listen 80; } }")
        self.assertNotIn("load_module", out3, "no stream block, no module")

    def test_nginx_command_and_args(self):
        self.assertEqual(images.nginx_command(None, None), ("/etc/nginx/nginx.conf", "daemon off;\n"))
        self.assertEqual(images.nginx_command(["nginx"], ["-c", "/cfg/n.conf", "-g", "daemon off;"]),
                         ("/cfg/n.conf", "daemon off;\n"))
        with self.assertRaises(ValueError):
            images.nginx_command(["sh", "-c", "sleep 1"], None)


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
        ipam = kubelet.IPAM()
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
        proc = subprocess.Popen([sys.executable, "-I", kubelet.ECHO_PY, "--ip", "127.1.250.1", "--port", "18081",
                                 "--port", "18082", "--container", "c1"], env=env, stdout=subprocess.PIPE)
        try:
            proc.stdout.readline()
            for port in (18081, 18082):
                s = socket.create_connection(("127.1.250.1", port), timeout=3)
                s.sendall(b"POST /a HTTP/1.1\r\nHost: h\r\nX-One: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabc\r\n0\r\n\r\n")
                f = s.makefile("rb")
                self.assertIn(b"200 OK", f.readline())
                n = 0
                while True:
                    line = f.readline().strip()
                    if not line:
                        break
                    if line.lower().startswith(b"content-length"):
                        n = int(line.split(b":")[1])
                doc = json.loads(f.read(n))
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
