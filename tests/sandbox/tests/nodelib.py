"""Helpers for the node tests: a sandbox per module, kubectl, a small API client,
condition waits (no fixed sleeps) and process lookups.

In-cluster traffic (to ClusterIPs, pod IPs, cluster DNS) goes out of the
sandbox's exec namespace, where `sandbox exec` runs commands: `connect`,
`listen` and `HTTPConnection` make their sockets there. This machine's own
namespace has no route to the cluster."""
import base64
import http.client
import json
import os
import re
import socket
import ssl
import sys

import sandboxlib  # noqa: E402  (also puts tests/lib on sys.path for `import tap`)

HERE, ROOT, SANDBOX = sandboxlib.HERE, sandboxlib.ROOT, sandboxlib.SANDBOX
sys.path.insert(0, os.path.dirname(HERE))
from k8s import netns  # noqa: E402

EXEC = {}   # the running sandbox's exec namespace: {"netns": path, "ip": address}


class Sandbox(sandboxlib.Sandbox):
    """The sandbox with an admin client (Api) and waits on pods and Deployments."""

    def __init__(self, env=None):
        super().__init__(env, prefix="sandbox-node-")

    def connect(self):
        self.api = Api(self.kubeconfig)
        with open(os.path.join(self.dir, "network.json")) as f:
            self.net = json.load(f)
        EXEC.update(netns=self.net["execNetns"], ip=self.net["execIP"])

    def apply(self, obj):
        return self.kubectl("apply", "-f", "-", stdin=json.dumps(obj))

    def pods(self, ns="default", prefix=""):
        return [p for p in self.api.get("/api/v1/namespaces/%s/pods" % ns)["items"]
                if p["metadata"]["name"].startswith(prefix)]

    def cluster_ip(self, name, ns="default"):
        """The ClusterIP the sandbox gave a Service (reachable from inside the cluster only)."""
        return self.api.get("/api/v1/namespaces/%s/services/%s" % (ns, name))["spec"]["clusterIP"]

    def wait_available(self, name, ns="default", replicas=None, timeout=15):
        def ok():
            d = self.api.get("/apis/apps/v1/namespaces/%s/deployments/%s" % (ns, name), missing=None)
            if d is None:
                return False
            s = d.get("status") or {}
            want = d["spec"].get("replicas", 1) if replicas is None else replicas
            return (s.get("observedGeneration", 0) >= d["metadata"]["generation"]
                    and s.get("updatedReplicas", 0) == want and s.get("availableReplicas", 0) == want
                    and s.get("replicas", 0) == want) and d
        return self.wait_for(ok, timeout, "deployment %s/%s available" % (ns, name))


class Api:
    """Just enough of a Kubernetes client for test set-up and waits (admin token)."""

    def __init__(self, kubeconfig):
        text = open(kubeconfig).read()
        self.server = re.search(r"server:\s*(\S+)", text).group(1).strip("'\"")
        m = re.search(r"-\s*name:\s*admin\s+user:\s+token:\s*(\S+)", text)
        self.token = (m or re.search(r"token:\s*(\S+)", text)).group(1).strip("'\"")
        ctx = ssl.create_default_context()
        m = re.search(r"certificate-authority-data:\s*(\S+)", text)
        if m:
            ctx.load_verify_locations(cadata=base64.b64decode(m.group(1)).decode())
        else:
            m = re.search(r"certificate-authority:\s*(\S+)", text)
            ctx.load_verify_locations(cafile=m.group(1).strip("'\""))
        self.ctx = ctx
        hp = self.server.split("://", 1)[1].rstrip("/")
        self.host, self.port = hp.rsplit(":", 1)

    def request(self, method, path, body=None, content_type="application/json"):
        conn = http.client.HTTPSConnection(self.host, int(self.port), context=self.ctx, timeout=30)
        headers = {"Authorization": "Bearer " + self.token, "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        out = r.read()
        conn.close()
        return r.status, (json.loads(out) if out else None)

    def get(self, path, missing=KeyError):
        code, body = self.request("GET", path)
        if code == 404 and missing is not KeyError:
            return missing
        if code != 200:
            raise AssertionError("GET %s: %d %s" % (path, code, body))
        return body

    def create(self, path, obj):
        code, body = self.request("POST", path, obj)
        if code != 201:
            raise AssertionError("POST %s: %d %s" % (path, code, body))
        return body

    def merge_patch(self, path, patch):
        code, body = self.request("PATCH", path, patch, "application/merge-patch+json")
        if code != 200:
            raise AssertionError("PATCH %s: %d %s" % (path, code, body))
        return body

    def delete(self, path):
        code, body = self.request("DELETE", path)
        if code not in (200, 202):
            raise AssertionError("DELETE %s: %d %s" % (path, code, body))
        return body


def deployment(name, image, replicas=1, ports=None, labels=None, volumes=None, mounts=None, container=None):
    labels = labels or {"app": name}
    c = {"name": "main", "image": image}
    if ports:
        c["ports"] = ports
    if mounts:
        c["volumeMounts"] = mounts
    c.update(container or {})
    spec = {"containers": [c]}
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)}, "spec": spec}}}


def service(name, selector, ports):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, "ports": ports}}


def connect(addr, timeout=3):
    """A TCP connection from inside the cluster (the exec namespace)."""
    return netns.connect(EXEC["netns"], addr, timeout)


def listen(backlog=8):
    """A listening socket on the exec namespace's address (an endpoint inside the cluster)."""
    s = netns.socket_in(EXEC["netns"])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((EXEC["ip"], 0))
    s.listen(backlog)
    return s


class HTTPConnection(http.client.HTTPConnection):
    """http.client from inside the cluster."""

    def connect(self):
        self.sock = connect((self.host, self.port), self.timeout)


def http_get(host, port, path="/", headers=None, timeout=3):
    conn = HTTPConnection(host, port, timeout=timeout)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def read_json_response(f):
    """(status line, JSON body) of one HTTP/1.1 response read from file object f
    (a Content-Length body, as echo answers)."""
    status = f.readline()
    length = 0
    while True:
        line = f.readline().strip()
        if not line:
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, json.loads(f.read(length))


def pids_of_pod(sandbox_dir, pod):
    """Processes of a pod (nginx workers and exec'd processes included): the
    members of its containers' cgroups, as a runtime knows them."""
    with open(os.path.join(sandbox_dir, "network.json")) as f:
        sid = json.load(f)["id"]
    base = "/sys/fs/cgroup/memory/%s/pod%s" % (sid, pod["metadata"]["uid"])
    found = set()
    for dirpath, _, files in os.walk(base):
        if "cgroup.procs" in files:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                found.update(int(x) for x in f.read().split())
    return sorted(found)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        return st[st.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return False
