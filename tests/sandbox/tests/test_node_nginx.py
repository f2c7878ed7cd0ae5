#!/usr/bin/env python3
"""NGINX images in the sandbox: the real nginx with ConfigMap and Secret volumes
(issue 3, acceptance 4), running its configuration as written in its pod's
network namespace (issue 8), logs."""
import json
import os
import sys
import unittest

sys.dont_write_bytecode = True

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nodelib as nl  # noqa: E402
import tap  # noqa: E402

SB = None

PROXY_CONF = """
server {
    listen 8080;
    listen [::]:8080;
    location / {
        proxy_set_header X-Via-Nginx $hostname;
        proxy_pass http://echo.default.svc.cluster.local:8080;
    }
    location = /static {
        default_type text/plain;
        return 200 "static from configmap\\n";
    }
    location /secret/ {
        alias /etc/secret/;
    }
}
"""


def setUpModule():
    global SB
    SB = nl.Sandbox().start()
    SB.apply(nl.deployment("echo", "sandbox/echo", ports=[{"containerPort": 8080}]))
    SB.apply(nl.service("echo", {"app": "echo"}, [{"port": 8080}]))
    SB.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "proxy-conf"},
              "data": {"default.conf": PROXY_CONF, "unused.txt": "x"}})
    SB.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
              "stringData": {"token.txt": "s3cret-value\n", "other": "not mounted"}})
    SB.apply(nl.deployment(
        "proxy", "nginxinc/nginx-unprivileged:1.27-alpine", ports=[{"name": "http", "containerPort": 8080}],
        volumes=[{"name": "conf", "configMap": {"name": "proxy-conf", "items": [{"key": "default.conf",
                                                                                   "path": "default.conf"}]}},
                 {"name": "creds", "secret": {"secretName": "creds", "items": [{"key": "token.txt",
                                                                                 "path": "token.txt"}]}}],
        mounts=[{"name": "conf", "mountPath": "/etc/nginx/conf.d"},
                {"name": "creds", "mountPath": "/etc/secret", "readOnly": True}],
        container={"readinessProbe": {"httpGet": {"path": "/static", "port": "http"}, "periodSeconds": 1}}))
    SB.apply(nl.service("proxy", {"app": "proxy"}, [{"name": "http", "port": 80, "targetPort": "http"}]))
    SB.apply(nl.deployment("plain", "nginx:1.27"))
    SB.apply(nl.service("plain", {"app": "plain"}, [{"port": 80}]))
    for d in ("echo", "proxy", "plain"):
        SB.wait_available(d)


def tearDownModule():
    if SB is not None:
        SB.stop()


class NginxTest(unittest.TestCase):
    def test_configmap_config_serves_through_the_service(self):
        SB.wait_for(lambda: SB.api.get("/api/v1/namespaces/default/endpoints/proxy").get("subsets"),
                    what="proxy endpoints")
        status, body = nl.http_get(SB.cluster_ip("proxy"), 80, "/static")
        self.assertEqual((status, body), (200, b"static from configmap\n"))

    def test_proxy_pass_to_a_service_name_reaches_the_echo_pod(self):
        status, body = nl.http_get(SB.cluster_ip("proxy"), 80, "/through/nginx")
        self.assertEqual(status, 200, body)
        doc = json.loads(body)
        self.assertTrue(doc["pod"].startswith("echo-"), doc)
        self.assertEqual(doc["path"], "/through/nginx")
        self.assertIn("X-Via-Nginx", doc["headers"])

    def test_secret_volume_items_are_materialised_at_the_mount_path(self):
        status, body = nl.http_get(SB.cluster_ip("proxy"), 80, "/secret/token.txt")
        self.assertEqual((status, body), (200, b"s3cret-value\n"))
        status, _ = nl.http_get(SB.cluster_ip("proxy"), 80, "/secret/other")
        self.assertEqual(status, 404)

    def test_nginx_runs_its_configuration_as_written_in_its_pod_network(self):
        pod = SB.pods(prefix="proxy-")[0]
        name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
        self.assertTrue(ip.startswith("10.244."), ip)
        status, body = nl.http_get(ip, 8080, "/static")
        self.assertEqual(status, 200)
        self.assertEqual(SB.kubectl("exec", name, "--", "cat", "/etc/nginx/conf.d/default.conf").stdout, PROXY_CONF)
        for url in ("http://127.0.0.1:8080/static", "http://[::1]:8080/static", "http://localhost:8080/static"):
            with self.subTest(url=url):
                r = SB.kubectl("exec", name, "--", "curl", "-sS", "--max-time", "5", url)
                self.assertEqual(r.stdout, "static from configmap\n", "the pod's own loopback is the pod: " + r.stderr)
        with open(os.path.join(SB.dir, "network.json")) as f:
            sid = json.load(f)["id"]
        pod_netns = os.stat("/run/netns/%s-%s" % (sid, pod["metadata"]["uid"].replace("-", "")[:12])).st_ino
        masters = [p for p in nl.pids_of_pod(SB.dir, pod)
                   if open("/proc/%d/cmdline" % p, "rb").read().startswith(b"nginx: master process")]
        self.assertEqual(len(masters), 1)
        cmdline = open("/proc/%d/cmdline" % masters[0], "rb").read().rstrip(b"\0")
        self.assertNotIn(b"-c", cmdline.replace(b"\0", b" ").split(b" "), "NGINX reads the image's own /etc/nginx/nginx.conf: " + repr(cmdline))
        self.assertEqual(os.stat("/proc/%d/ns/net" % masters[0]).st_ino, pod_netns, "NGINX runs in the pod's netns")

    def test_official_image_serves_its_default_page_on_port_80(self):
        status, body = nl.http_get(SB.cluster_ip("plain"), 80, "/")
        self.assertEqual(status, 200)
        self.assertIn(b"Welcome to nginx!", body)

    def test_access_log_reaches_kubectl_logs(self):
        nl.http_get(SB.cluster_ip("plain"), 80, "/logged-path")
        SB.wait_for(lambda: "/logged-path" in SB.kubectl("logs", "deployment/plain").stdout,
                    what="access log line in kubectl logs")
        out = SB.kubectl("logs", "deployment/plain").stdout
        self.assertIn('"GET /logged-path HTTP/1.1" 404', out)

    def test_pod_status_reports_ready_running_container(self):
        pod = SB.pods(prefix="plain-")[0]
        self.assertEqual(pod["spec"]["nodeName"], "sandbox")
        self.assertEqual(pod["status"]["phase"], "Running")
        self.assertEqual(pod["status"]["hostIP"], SB.net["nodeIP"], "the node's InternalIP")
        self.assertEqual(pod["status"]["podIPs"], [{"ip": pod["status"]["podIP"]}])
        cs = pod["status"]["containerStatuses"][0]
        self.assertEqual((cs["name"], cs["ready"], cs["started"], cs["restartCount"]), ("main", True, True, 0))
        self.assertEqual(cs["image"], "docker.io/library/nginx:1.27")
        self.assertIn("running", cs["state"])
        conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            self.assertEqual(conds[t], "True", t)


if __name__ == "__main__":
    tap.main()
