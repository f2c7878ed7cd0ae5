#!/usr/bin/env python3
"""The cluster network (issue 8, acceptance 1 and 2): pods live in their own
network namespaces behind a cluster namespace; this machine reaches the cluster
only through the API server and `sandbox exec`; pods reach this machine only at
the host gateway; cluster DNS at the kube-dns Service. (Clean-up, acceptance 6:
test_node_cleanup.py.)"""
import errno
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nodelib as nl  # noqa: E402
import tap  # noqa: E402
from k8s import network  # noqa: E402

SB = None
SERVERS = []
NGINX_CONF = """
server {
    listen 8080;
    location /loopback/ { proxy_pass http://127.0.0.1:%(lo)d/; }
    location /gateway/  { proxy_pass http://%(gw)s:%(gwport)d/; }
    location /late/ {
        resolver %(dns)s valid=1s ipv6=off;
        set $backend late.default.svc.cluster.local;
        proxy_pass http://$backend:80;
    }
}
"""


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("this machine, %s\n" % self.server.server_address[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def serve(addr):
    """An HTTP server of this machine (playing the developer's laptop) on addr; returns its port."""
    srv = http.server.ThreadingHTTPServer((addr, 0), Answer)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    SERVERS.append(srv)
    return srv.server_address[1]


def setUpModule():
    global SB
    SB = nl.Sandbox().start()
    SB.ports = {"lo": serve("127.0.0.1"), "gw": serve(SB.net["hostGateway"]), "any": serve("0.0.0.0")}
    SB.apply(nl.deployment("echo", "sandbox/echo:1", replicas=2, ports=[{"containerPort": 8080}]))
    SB.apply(nl.service("echo", {"app": "echo"}, [{"port": 80, "targetPort": 8080}]))
    SB.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo-headless"},
              "spec": {"clusterIP": "None", "selector": {"app": "echo"}, "ports": [{"port": 8080}]}})
    SB.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nobody-home"},
              "spec": {"clusterIP": "None", "selector": {"app": "nothing"}, "ports": [{"port": 80}]}})
    SB.kubectl("create", "namespace", "other")
    SB.apply(dict(nl.service("echo-elsewhere", {"app": "echo"}, [{"port": 80}]),
                  metadata={"name": "echo-elsewhere", "namespace": "other"}))
    SB.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "edge"},
              "data": {"default.conf": NGINX_CONF % {"lo": SB.ports["lo"], "gw": SB.net["hostGateway"],
                                                     "gwport": SB.ports["gw"], "dns": SB.net["dnsIP"]}}})
    SB.apply(nl.deployment("edge", "nginx:1.27", ports=[{"containerPort": 8080}],
                           volumes=[{"name": "conf", "configMap": {"name": "edge"}}],
                           mounts=[{"name": "conf", "mountPath": "/etc/nginx/conf.d"}]))
    SB.apply(nl.service("edge", {"app": "edge"}, [{"port": 80, "targetPort": 8080}]))
    SB.wait_available("echo")
    SB.wait_available("edge")


def tearDownModule():
    for srv in SERVERS:
        srv.shutdown()
        srv.server_close()
    if SB is not None:
        SB.stop()


def in_cluster(*cmd, ns=None, check=True):
    """Run a command with `sandbox exec` (inside the cluster network)."""
    argv = [nl.SANDBOX, "exec", SB.dir] + (["-n", ns] if ns else []) + ["--"] + list(cmd)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError("%s: exit %d: %s%s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
    return r


def curl(url, ns=None):
    r = in_cluster("curl", "-s", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}", url, ns=ns, check=False)
    body, _, code = r.stdout.rpartition("\n")
    return code, body


def dig(name):
    """(status, sorted A records) from a real DNS client inside the cluster."""
    r = in_cluster("dig", "+time=2", "+tries=1", "+noall", "+comments", "+answer", name)
    status = re.search(r"status: (\w+)", r.stdout).group(1)
    return status, sorted(ln.split()[-1] for ln in r.stdout.splitlines() if re.search(r"\sIN\s+A\s", ln))


def ready_ips(svc):
    ep = SB.api.get("/api/v1/namespaces/default/endpoints/%s" % svc)
    return sorted(a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or [])


def host_addresses():
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    return sorted({ln.split()[3].split("/")[0] for ln in out.splitlines()})


class Isolation(unittest.TestCase):
    """Acceptance 1."""

    def test_a_pod_cannot_reach_this_machines_loopback(self):
        code, _ = curl("http://edge.default.svc.cluster.local/loopback/")
        self.assertEqual(code, "502", "127.0.0.1 inside the pod is the pod itself")
        logs = SB.kubectl("logs", "deployment/edge").stdout
        self.assertIn('connect() failed (111: Connection refused) while connecting to upstream', logs)

    def test_a_pod_reaches_this_machine_at_the_host_gateway(self):
        code, body = curl("http://edge.default.svc.cluster.local/gateway/")
        self.assertEqual((code, body), ("200", "this machine, %s\n" % SB.net["hostGateway"]))

    def test_the_host_gateway_has_a_cluster_dns_name(self):
        self.assertEqual(dig(network.HOST_GATEWAY_NAME), ("NOERROR", [SB.net["hostGateway"]]))
        code, _ = curl("http://%s:%d/" % (network.HOST_GATEWAY_NAME, SB.ports["any"]))
        self.assertEqual(code, "200")

    def test_the_host_gateway_is_the_only_address_of_this_machine_pods_reach(self):
        port = SB.ports["any"]     # a server of this machine on every address
        reached = []
        for addr in host_addresses():
            try:
                nl.connect((addr, port), timeout=2).close()
                reached.append(addr)
            except TimeoutError:
                pass   # not reached: dropped (another sandbox's host link), or its ICMP unreachable rate-limited
            except OSError as e:
                self.assertIn(e.errno, (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH), (addr, e))
        self.assertEqual(reached, [SB.net["hostGateway"]])

    def test_this_machine_cannot_connect_to_pod_or_cluster_ips(self):
        pod_ip = SB.pods(prefix="echo-")[0]["status"]["podIP"]
        for ip, port in ((pod_ip, 8080), (SB.cluster_ip("echo"), 80), (SB.net["dnsIP"], 53)):
            with self.subTest(ip=ip):
                # the route lookup fails: nothing is sent anywhere
                r = subprocess.run(["ip", "route", "get", ip], capture_output=True, text=True)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertIn("No route to host", r.stderr)
                s = socket.socket()
                s.settimeout(5)
                try:
                    err = s.connect_ex((ip, port))
                finally:
                    s.close()
                self.assertEqual(err, errno.EHOSTUNREACH, os.strerror(err))

    def test_kubectl_exec_and_port_forward_work_inside_the_pod(self):
        pod = SB.pods(prefix="echo-")[0]["metadata"]["name"]
        probe = ("import socket,sys\nfor p in sys.argv[1:]:\n try:\n  socket.create_connection(('127.0.0.1',int(p)),3)"
                 ".close(); print(p,'open')\n except OSError as e: print(p,e.errno)")
        r = SB.kubectl("exec", pod, "--", "python3", "-c", probe, "8080", str(SB.ports["lo"]))
        self.assertEqual(r.stdout.split("\n")[:2], ["8080 open", "%d %d" % (SB.ports["lo"], errno.ECONNREFUSED)],
                         "127.0.0.1 in the pod is the pod's: its own server, not this machine's")
        pf = subprocess.Popen(["kubectl", "port-forward", "--address", "127.0.0.1", "pod/" + pod, ":8080"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, KUBECONFIG=SB.kubeconfig))
        try:
            line = pf.stdout.readline()
            local = int(re.search(r"127\.0\.0\.1:(\d+) -> 8080", line).group(1))
            with socket.create_connection(("127.0.0.1", local), 5) as s:
                s.sendall(b"GET /pf HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b"".join(iter(lambda: s.recv(65536), b""))
            self.assertEqual(json.loads(data.split(b"\r\n\r\n", 1)[1])["pod"], pod,
                             "port-forward reaches the pod through the API server, from this machine")
        finally:
            pf.kill()
            pf.wait()

    def test_the_node_address_is_found_by_route_lookup_from_this_machine(self):
        r = subprocess.run(["ip", "route", "get", SB.net["nodeIP"]], capture_output=True, text=True, check=True)
        self.assertIn("src %s" % SB.net["hostGateway"], r.stdout)
        self.assertEqual(SB.pods(prefix="echo-")[0]["status"]["hostIP"], SB.net["nodeIP"])


class Bridge(unittest.TestCase):
    """The pods' gateway keeps its MAC address while pods come and go."""

    def test_a_port_with_a_lower_mac_joining_and_leaving_the_bridge_changes_nothing(self):
        ns = os.path.basename(SB.net["clusterNetns"])

        def ip(*args):
            return subprocess.run(["ip", "-n", ns] + list(args), capture_output=True, text=True, check=True).stdout

        def bridge_mac():
            return re.search(r"link/ether (\S+)", ip("link", "show", network.BRIDGE)).group(1)

        before = bridge_mac()
        self.assertEqual(before, "0a:58:0a:f4:00:01", "set from the bridge IP, as CNI's bridge plugin does")
        # a pod's veth with the lowest MAC there can be; Linux would make it the bridge's
        ip("link", "add", "vlowmac", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "vlowmacp")
        try:
            ip("link", "set", "vlowmac", "master", network.BRIDGE, "up")
            joined = bridge_mac()
        finally:
            ip("link", "del", "vlowmac")
        self.assertEqual((joined, bridge_mac()), (before, before))
        code, _ = curl("http://%s/" % SB.cluster_ip("echo"))
        self.assertEqual(code, "200", "the cluster network answers at once afterwards")


class DNS(unittest.TestCase):
    """Acceptance 2."""

    def test_curl_by_service_name_reaches_a_pod(self):
        for url in ("http://echo.default.svc.cluster.local:80/", "http://echo/", "http://echo.default/",
                    "http://echo.default.svc/"):
            with self.subTest(url=url):
                code, body = curl(url)
                self.assertEqual(code, "200", body)
                self.assertTrue(json.loads(body)["pod"].startswith("echo-"))

    def test_search_path_follows_the_namespace(self):
        ip = SB.cluster_ip("echo-elsewhere", "other")
        r = in_cluster("getent", "hosts", "echo-elsewhere", ns="other")
        self.assertEqual(r.stdout.split()[:2], [ip, "echo-elsewhere.other.svc.cluster.local"])
        r = in_cluster("getent", "hosts", "echo-elsewhere", check=False)
        self.assertEqual(r.returncode, 2, "not found from namespace default")

    def test_a_cluster_ip_service_has_one_a_record(self):
        self.assertEqual(dig("echo.default.svc.cluster.local"), ("NOERROR", [SB.cluster_ip("echo")]))
        self.assertEqual(dig("kube-dns.kube-system.svc.cluster.local"), ("NOERROR", [SB.net["dnsIP"]]))

    def test_a_headless_service_answers_with_its_ready_endpoints(self):
        ips = ready_ips("echo-headless")
        self.assertEqual(len(ips), 2)
        self.assertEqual(dig("echo-headless.default.svc.cluster.local"), ("NOERROR", ips))

    def test_unknown_names_are_nxdomain(self):
        for name in ("nope.default.svc.cluster.local", "echo.nowhere.svc.cluster.local",
                     "nobody-home.default.svc.cluster.local", "example.com"):
            with self.subTest(name=name):
                self.assertEqual(dig(name), ("NXDOMAIN", []))

    def test_kube_dns_service_is_where_a_real_cluster_has_it(self):
        svc = SB.api.get("/api/v1/namespaces/kube-system/services/kube-dns")
        self.assertEqual(svc["spec"]["clusterIP"], "10.96.0.10")
        self.assertEqual(sorted((p["port"], p["protocol"]) for p in svc["spec"]["ports"]),
                         [(53, "TCP"), (53, "UDP"), (9153, "TCP")])

    def test_pods_get_a_cluster_first_resolv_conf(self):
        pod = SB.pods(prefix="edge-")[0]["metadata"]["name"]
        self.assertEqual(SB.kubectl("exec", pod, "--", "cat", "/etc/resolv.conf").stdout,
                         "search default.svc.cluster.local svc.cluster.local cluster.local\n"
                         "nameserver 10.96.0.10\noptions ndots:5\n")

    def test_nginx_resolver_finds_a_service_created_after_it_started(self):
        code, _ = curl("http://edge/late/")
        self.assertEqual(code, "502", "no Service named late yet")
        SB.apply(nl.service("late", {"app": "echo"}, [{"port": 80, "targetPort": 8080}]))

        def routed():
            code, body = curl("http://edge/late/")
            return code == "200" and json.loads(body)["pod"].startswith("echo-")
        SB.wait_for(routed, timeout=10, what="NGINX resolving late.default.svc.cluster.local at request time")


if __name__ == "__main__":
    tap.main()
