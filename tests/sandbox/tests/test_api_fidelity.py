#!/usr/bin/env python3
"""The Node object, `kubectl auth whoami`, and the fidelity gaps an independent client found
(issue 8, acceptance 4 and 5): each answered as a real API server answers it."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apilib  # noqa: E402
import tap  # noqa: E402

SB = None
CM = "/api/v1/namespaces/default/configmaps"


def setUpModule():
    global SB
    SB = apilib.Sandbox().start()


def tearDownModule():
    SB.stop()


def kc(*a, **kw):
    return SB.kubectl(*a, **kw)


class A_Node(unittest.TestCase):
    def test_get_nodes(self):
        "kubectl get nodes (and -o wide) shows the one Ready node with its address, OS and version"
        out = kc("get", "nodes").stdout.splitlines()
        self.assertEqual(out[0].split(), ["NAME", "STATUS", "ROLES", "AGE", "VERSION"])
        self.assertEqual(out[1].split()[:3] + out[1].split()[4:], ["sandbox", "Ready", "control-plane", "v1.32.4"])
        wide = kc("get", "nodes", "-o", "wide").stdout.splitlines()
        self.assertEqual(wide[0].split()[5:], ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION",
                                               "CONTAINER-RUNTIME"])
        node = json.loads(kc("get", "node", "sandbox", "-o", "json").stdout)
        addrs = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        self.assertEqual(addrs["Hostname"], "sandbox")
        self.assertIn(addrs["InternalIP"], wide[1].split())
        self.assertEqual({c["type"]: c["status"] for c in node["status"]["conditions"]},
                         {"MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False", "Ready": "True"})
        cap, alloc = node["status"]["capacity"], node["status"]["allocatable"]
        self.assertEqual(cap["cpu"], str(os.cpu_count()))
        self.assertEqual(cap["pods"], "110")
        self.assertLess(int(alloc["memory"][:-2]), int(cap["memory"][:-2]), "allocatable keeps the eviction reserve")
        self.assertEqual(node["status"]["nodeInfo"]["kubeletVersion"], "v1.32.4")

    def test_describe_node(self):
        "kubectl describe node lists addresses, conditions, capacity and the pods running on it"
        kc("create", "deployment", "on-node", "--image=sandbox/echo:1")
        kc("rollout", "status", "deployment/on-node", "--timeout=30s")
        out = kc("describe", "node", "sandbox").stdout
        for want in ("Roles:              control-plane", "Ready            True", "KubeletReady",
                     "Hostname:    sandbox", "Capacity:", "Allocatable:", "Kubelet Version:            v1.32.4",
                     "HolderIdentity:  sandbox", "default                     on-node-"):
            self.assertIn(want, out)


class B_Whoami(unittest.TestCase):
    def test_whoami(self):
        "kubectl auth whoami names each user and its groups (SelfSubjectReview)"
        for ctx, user, groups in ((None, "admin", "[system:masters system:authenticated]"),
                                  ("restricted", "restricted", "[system:authenticated]")):
            with self.subTest(user=user):
                out = kc("auth", "whoami", context=ctx).stdout.splitlines()
                self.assertEqual(out[1].split(), ["Username", user])
                self.assertEqual(out[2].split(None, 1), ["Groups", groups])


class C_QueryBooleans(unittest.TestCase):
    def test_watch_values(self):
        "watch= is true for every value but 0 and false (any case), as the server's conversion says"
        for value, watch in (("true", True), ("True", True), ("1", True), ("t", True), ("yes", True),
                             ("", True), ("false", False), ("FALSE", False), ("0", False)):
            with self.subTest(watch=value):
                events, conn = SB.admin.stream(CM + "?watch=" + value)
                try:
                    first = next(events)     # a watch sends the current objects as ADDED at once
                finally:
                    conn.close()
                if watch:
                    self.assertEqual(first["type"], "ADDED")
                else:
                    self.assertEqual(first["kind"], "ConfigMapList")


class D_Accept(unittest.TestCase):
    def test_yaml(self):
        "Accept: application/yaml answers the YAML kubectl -o yaml prints"
        st, body = SB.curl("GET", CM + "/kube-root-ca.crt", extra=["-H", "Accept: application/yaml"])
        self.assertEqual(st, 200)
        self.assertEqual(body.rstrip("\n"), kc("get", "configmap", "kube-root-ca.crt", "-o", "yaml").stdout.rstrip("\n"))

    def test_negotiation(self):
        "JSON for json, wildcards and protobuf-with-json fallbacks; 406 with the real Status otherwise"
        for accept in ("application/json", "*/*", "application/vnd.kubernetes.protobuf, application/json",
                       "application/yaml;q=0.5, application/json"):
            with self.subTest(accept=accept):
                st, body = SB.curl("GET", CM, extra=["-H", "Accept: " + accept])
                self.assertEqual((st, body["kind"]), (200, "ConfigMapList"))
        for accept in ("application/vnd.kubernetes.protobuf", "text/plain"):
            with self.subTest(accept=accept):
                st, body = SB.curl("GET", CM, extra=["-H", "Accept: " + accept])
                self.assertEqual(st, 406)
                self.assertEqual(body, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                        "message": "only the following media types are accepted: "
                                                   "application/json, application/yaml",
                                        "reason": "NotAcceptable", "code": 406})


class E_SizeLimit(unittest.TestCase):
    def test_one_mebibyte(self):
        "a ConfigMap or Secret of 1 MiB is stored, one byte more is refused with the real 422"
        path = os.path.join(SB.dir, "blob")
        for size, ok in ((1 << 20, True), ((1 << 20) + 1, False)):
            with open(path, "wb") as f:
                f.write(b"x" * size)
            for kind, name, msg in (("configmap", "cm%d" % size, 'ConfigMap "cm%d" is invalid: []: Too long: '
                                     'may not be more than 1048576 bytes' % size),
                                    ("secret", "s%d" % size, 'Secret "s%d" is invalid: data: Too long: may not be '
                                     'more than 1048576 bytes' % size)):
                with self.subTest(kind=kind, size=size):
                    args = ["create", kind] + (["generic"] if kind == "secret" else []) + [name, "--from-file=blob=" + path]
                    r = kc(*args, check=False)
                    if ok:
                        self.assertEqual(r.returncode, 0, r.stderr)
                    else:
                        self.assertEqual(r.returncode, 1)
                        self.assertIn(msg, r.stderr)


class F_Namespace(unittest.TestCase):
    def test_terminating(self):
        "a deleted namespace is Terminating and refuses new content until its content is gone"
        kc("create", "namespace", "doomed")
        # content that outlives the namespace's deletion until its finalizer is removed
        SB.admin.create("/api/v1/namespaces/doomed/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
        kc("delete", "namespace", "doomed", "--wait=false")
        ns = SB.admin.get("/api/v1/namespaces/doomed")
        self.assertEqual(ns["status"]["phase"], "Terminating")
        self.assertIn("deletionTimestamp", ns["metadata"])
        self.assertEqual(kc("get", "namespace", "doomed").stdout.split()[-2], "Terminating")
        r = kc("create", "configmap", "late", "-n", "doomed", check=False)
        self.assertIn('configmaps "late" is forbidden: unable to create new content in namespace doomed because it '
                      'is being terminated', r.stderr)
        kc("patch", "configmap", "held", "-n", "doomed", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
        kc("wait", "--for=delete", "namespace/doomed", "--timeout=30s")


class G_Subresources(unittest.TestCase):
    def test_subresources(self):
        "eviction is served; other real subresources answer with Status bodies; unknown ones 404 as on a real server"
        kc("create", "deployment", "ev", "--image=sandbox/echo:1")
        kc("rollout", "status", "deployment/ev", "--timeout=30s")
        pod = kc("get", "pod", "-l", "app=ev", "-o", "jsonpath={.items[0].metadata.name}").stdout
        base = "/api/v1/namespaces/default/pods/" + pod
        st, body = SB.curl("GET", base + "/eviction")
        self.assertEqual((st, body["reason"], body["code"]), (405, "MethodNotAllowed", 405))
        st, body = SB.curl("GET", base + "/attach?stdout=true")
        self.assertEqual((st, body["kind"], body["reason"]), (503, "Status", "ServiceUnavailable"))
        st, body = SB.curl("GET", base + "/no-such-thing")
        self.assertEqual((st, body), (404, "404 page not found\n"))
        st, body = SB.curl("POST", base + "/eviction", {"apiVersion": "policy/v1", "kind": "Eviction",
                                                         "metadata": {"name": pod, "namespace": "default"}})
        self.assertEqual((st, body["status"], body["code"]), (201, "Success", 201))
        gone = SB.admin.get(base, missing=None)
        self.assertTrue(gone is None or "deletionTimestamp" in gone["metadata"])


class H_Timing(unittest.TestCase):
    def test_realistic_latency(self):
        "SANDBOX_TIMING=realistic makes each API request take at least a real server's time"
        sb = apilib.Sandbox(env={"SANDBOX_TIMING": "realistic", "SANDBOX_NO_NODE": "1"}).start()
        try:
            sb.curl("GET", CM)
            sb.curl("POST", CM, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"}})
            got = {a["method"]: a["durationMs"] for a in sb.audit_until(lambda a: a["path"] == CM, count=2)
                   if a["path"] == CM}
            self.assertGreaterEqual(got["GET"], 5.0)
            self.assertGreaterEqual(got["POST"], 15.0)
        finally:
            sb.stop()


if __name__ == "__main__":
    tap.main()
