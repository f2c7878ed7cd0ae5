#!/usr/bin/env python3
"""kubectl v1.32 (default flags) against the sandbox: the API-only commands of issue 3, acceptance 1."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apilib  # noqa: E402
import tap  # noqa: E402

SB = None

MANIFEST = """apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  greeting: %(greeting)s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: %(replicas)d
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: sandbox/echo:1
        ports:
        - containerPort: 8080
        env:
        - {name: A, value: "1"}
        - {name: B, value: "2"}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"""


def setUpModule():
    global SB
    SB = apilib.Sandbox().start()
    write_manifest("hello", 1)


def tearDownModule():
    SB.stop()


def write_manifest(greeting, replicas):
    path = os.path.join(SB.dir, "app.yaml")
    with open(path, "w") as f:
        f.write(MANIFEST % {"greeting": greeting, "replicas": replicas})
    return path


def kc(*a, **kw):
    return SB.kubectl(*a, **kw)


def getj(*a):
    return json.loads(kc("get", "-o", "json", *a).stdout)


class A_Apply(unittest.TestCase):
    def test_1_apply_creates_with_default_flags(self):
        "apply -f creates a Deployment, Service and ConfigMap with kubectl's default (strict) validation"
        r = kc("apply", "-f", write_manifest("hello", 1))
        self.assertIn("configmap/web-config created", r.stdout)
        self.assertIn("deployment.apps/web created", r.stdout)
        self.assertIn("service/web created", r.stdout)
        svc = getj("service", "web")
        self.assertRegex(svc["spec"]["clusterIP"], r"^10\.96\.\d+\.\d+$")
        self.assertEqual(svc["spec"]["ports"][0], {"port": 80, "protocol": "TCP", "targetPort": 8080})
        self.assertEqual(svc["spec"]["type"], "ClusterIP")
        self.assertEqual(svc["spec"]["sessionAffinity"], "None")
        d = getj("deployment", "web")
        self.assertEqual(d["metadata"]["generation"], 1)
        self.assertEqual(d["spec"]["strategy"], {"type": "RollingUpdate",
                                                 "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        self.assertEqual(d["spec"]["revisionHistoryLimit"], 10)
        self.assertEqual(d["spec"]["progressDeadlineSeconds"], 600)
        c = d["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(c["imagePullPolicy"], "IfNotPresent")
        self.assertEqual(c["terminationMessagePath"], "/dev/termination-log")
        self.assertIn("kubectl.kubernetes.io/last-applied-configuration", d["metadata"]["annotations"])
        strict = lambda a: a["method"] == "POST" and "fieldValidation=Strict" in a["query"]  # noqa: E731
        posts = [a for a in SB.audit_until(strict, count=3) if strict(a)]
        self.assertGreaterEqual(len(posts), 3, "kubectl sent fieldValidation=Strict (server-side validation)")

    def test_2_apply_updates(self):
        "apply -f again configures changed objects, leaves unchanged ones and bumps generation on spec change"
        r = kc("apply", "-f", write_manifest("bonjour", 2))
        self.assertIn("configmap/web-config configured", r.stdout)
        self.assertIn("deployment.apps/web configured", r.stdout)
        self.assertIn("service/web unchanged", r.stdout)
        self.assertEqual(getj("configmap", "web-config")["data"], {"greeting": "bonjour"})
        d = getj("deployment", "web")
        self.assertEqual(d["spec"]["replicas"], 2)
        self.assertEqual(d["metadata"]["generation"], 2)
        patch = lambda a: a["method"] == "PATCH" and a["path"].endswith("/deployments/web")  # noqa: E731
        patches = [a for a in SB.audit_until(patch, count=1) if patch(a)]
        self.assertEqual(patches[-1]["contentType"], "application/strategic-merge-patch+json")

    def test_3_apply_unknown_field_is_refused(self):
        "apply with an unknown field fails with the server's strict decoding error"
        path = os.path.join(SB.dir, "bad.yaml")
        with open(path, "w") as f:
            f.write("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  colour: red\ndata: {a: b}\n")
        r = kc("apply", "-f", path, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
                      'unknown field "metadata.colour"', r.stderr)
        r = kc("apply", "--validate=warn", "-f", path)
        self.assertIn('Warning: unknown field "metadata.colour"', r.stderr)
        self.assertNotIn("colour", getj("configmap", "bad")["metadata"])


class B_Get(unittest.TestCase):
    def test_table_output(self):
        "get prints the server-side table columns of a real cluster"
        out = kc("get", "deployment", "web").stdout.splitlines()
        self.assertEqual(out[0].split(), ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"])
        self.assertTrue(out[1].startswith("web "))
        out = kc("get", "service", "web").stdout.splitlines()
        self.assertEqual(out[0].split(), ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"])
        self.assertIn("80/TCP", out[1])
        out = kc("get", "configmap", "web-config").stdout.splitlines()
        self.assertEqual(out[0].split(), ["NAME", "DATA", "AGE"])
        self.assertEqual(out[1].split()[:2], ["web-config", "1"])
        out = kc("get", "namespaces").stdout
        for ns in ("default", "kube-system", "kube-public"):
            self.assertRegex(out, r"(?m)^%s\s+Active" % ns)

    def test_wide_output(self):
        "get -o wide adds the priority columns"
        out = kc("get", "deployment", "web", "-o", "wide").stdout.splitlines()
        self.assertEqual(out[0].split(), ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES",
                                          "SELECTOR"])
        self.assertEqual(out[1].split()[-3:], ["web", "sandbox/echo:1", "app=web"])
        out = kc("get", "service", "web", "-o", "wide").stdout.splitlines()
        self.assertEqual(out[0].split()[-1], "SELECTOR")
        self.assertEqual(out[1].split()[-1], "app=web")

    def test_json_and_yaml(self):
        "get -o json and -o yaml print the full object; lists are v1 Lists"
        d = getj("deployment", "web")
        self.assertEqual((d["kind"], d["apiVersion"]), ("Deployment", "apps/v1"))
        self.assertTrue(d["metadata"]["uid"])
        self.assertRegex(d["metadata"]["creationTimestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        lst = getj("configmaps")
        self.assertEqual(lst["kind"], "List")
        self.assertIn("web-config", [i["metadata"]["name"] for i in lst["items"]])
        y = kc("get", "service", "web", "-o", "yaml").stdout
        self.assertIn("kind: Service", y)
        self.assertIn("clusterIP: 10.96.", y)

    def test_describe(self):
        "describe deployment and service"
        out = kc("describe", "deployment", "web").stdout
        self.assertRegex(out, r"(?m)^Name:\s+web$")
        self.assertRegex(out, r"(?m)^Selector:\s+app=web$")
        self.assertRegex(out, r"(?m)^StrategyType:\s+RollingUpdate$")
        out = kc("describe", "service", "web").stdout
        self.assertRegex(out, r"(?m)^Type:\s+ClusterIP$")
        self.assertRegex(out, r"(?m)^IP:\s+10\.96\.")
        self.assertRegex(out, r"(?m)^TargetPort:\s+8080/TCP$")
        out = kc("describe", "configmap", "web-config").stdout
        self.assertIn("greeting", out)


class C_Patch(unittest.TestCase):
    def test_json_patch(self):
        "patch --type json"
        r = kc("patch", "configmap", "web-config", "--type", "json",
               "-p", '[{"op":"add","path":"/data/extra","value":"x"}]')
        self.assertIn("configmap/web-config patched", r.stdout)
        self.assertEqual(getj("configmap", "web-config")["data"]["extra"], "x")
        r = kc("patch", "configmap", "web-config", "--type", "json",
               "-p", '[{"op":"test","path":"/data/extra","value":"nope"}]', check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("testing value /data/extra failed", r.stderr)

    def test_merge_patch(self):
        "patch --type merge replaces lists and deletes keys with null"
        kc("patch", "configmap", "web-config", "--type", "merge", "-p", '{"data":{"extra":null,"m":"1"}}')
        data = getj("configmap", "web-config")["data"]
        self.assertNotIn("extra", data)
        self.assertEqual(data["m"], "1")

    def test_strategic_patch_merges_by_name(self):
        "patch (strategic, the default) merges containers and env by name"
        r = kc("patch", "deployment", "web", "-p",
               '{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"B","value":"20"},'
               '{"name":"C","value":"3"}]}]}}}}')
        self.assertIn("deployment.apps/web patched", r.stdout)
        c = getj("deployment", "web")["spec"]["template"]["spec"]["containers"]
        self.assertEqual(len(c), 1)
        self.assertEqual(c[0]["image"], "sandbox/echo:1")
        self.assertEqual(c[0]["env"], [{"name": "A", "value": "1"}, {"name": "B", "value": "20"},
                                       {"name": "C", "value": "3"}])
        r = kc("patch", "deployment", "web", "-p",
               '{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"C","$patch":"delete"}]}]}}}}')
        c = getj("deployment", "web")["spec"]["template"]["spec"]["containers"]
        self.assertEqual([e["name"] for e in c[0]["env"]], ["A", "B"])
        # a patch that changes nothing writes nothing (a ConfigMap: no controller touches it meanwhile)
        kc("patch", "configmap", "web-config", "-p", '{"data":{"same":"1"}}')
        rv = getj("configmap", "web-config")["metadata"]["resourceVersion"]
        r = kc("patch", "configmap", "web-config", "-p", '{"data":{"same":"1"}}')
        self.assertIn("configmap/web-config patched (no change)", r.stdout)
        self.assertEqual(getj("configmap", "web-config")["metadata"]["resourceVersion"], rv)

    def test_strategic_patch_service_ports_by_port(self):
        "strategic patch merges Service ports by port"
        kc("patch", "service", "web", "-p", '{"spec":{"ports":[{"port":80,"name":"http"},{"port":81,"name":"b","targetPort":9000}]}}')
        ports = getj("service", "web")["spec"]["ports"]
        self.assertEqual([(p["port"], p["targetPort"], p["name"]) for p in ports], [(80, 8080, "http"), (81, 9000, "b")])

    def test_patch_immutable_selector(self):
        "patching a Deployment selector is refused as immutable"
        r = kc("patch", "deployment", "web", "--type", "merge",
               "-p", '{"spec":{"selector":{"matchLabels":{"app":"other"}},'
               '"template":{"metadata":{"labels":{"app":"other"}}}}}', check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('The Deployment "web" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:'
                      'map[string]string{"app":"other"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: '
                      'field is immutable', r.stderr)


class D_LabelScale(unittest.TestCase):
    def test_label_and_annotate(self):
        "label and annotate (and --overwrite for an existing key)"
        self.assertIn("deployment.apps/web labeled", kc("label", "deployment", "web", "tier=frontend").stdout)
        r = kc("label", "deployment", "web", "tier=backend", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("already has a value (frontend), and --overwrite is false", r.stderr)
        kc("label", "deployment", "web", "tier=backend", "--overwrite")
        self.assertIn("deployment.apps/web annotated", kc("annotate", "deployment", "web", "owner=me").stdout)
        md = getj("deployment", "web")["metadata"]
        self.assertEqual(md["labels"]["tier"], "backend")
        self.assertEqual(md["annotations"]["owner"], "me")
        out = kc("get", "deployments", "-l", "tier=backend", "-o", "name").stdout.split()
        self.assertEqual(out, ["deployment.apps/web"])
        kc("label", "deployment", "web", "tier-")
        self.assertNotIn("tier", getj("deployment", "web")["metadata"]["labels"])
        r = kc("label", "deployment", "web", "bad key=x", check=False)
        self.assertNotEqual(r.returncode, 0)

    def test_scale(self):
        "scale changes spec.replicas through the scale subresource"
        self.assertIn("deployment.apps/web scaled", kc("scale", "deployment", "web", "--replicas=3").stdout)
        self.assertEqual(getj("deployment", "web")["spec"]["replicas"], 3)
        scaled = lambda a: a["path"].endswith("/deployments/web/scale")  # noqa: E731
        self.assertTrue(any(scaled(a) for a in SB.audit_until(scaled)))
        kc("scale", "deployment", "web", "--replicas=1")


class E_CreateExposeDelete(unittest.TestCase):
    def test_create_deployment_and_expose(self):
        "create deployment (protobuf body) and expose make the objects kubectl --dry-run=client shows"
        want = json.loads(kc("create", "deployment", "d2", "--image=sandbox/echo:1", "--port=8080",
                             "--replicas=2", "--dry-run=client", "-o", "json").stdout)
        self.assertIn("deployment.apps/d2 created",
                      kc("create", "deployment", "d2", "--image=sandbox/echo:1", "--port=8080", "--replicas=2").stdout)
        got = getj("deployment", "d2")
        self.assertEqual(got["spec"]["selector"], want["spec"]["selector"])
        self.assertEqual(got["spec"]["replicas"], 2)
        self.assertEqual(got["spec"]["template"]["spec"]["containers"][0]["ports"],
                         [{"containerPort": 8080, "protocol": "TCP"}])
        self.assertIn("service/d2 exposed", kc("expose", "deployment", "d2", "--port=80", "--target-port=8080").stdout)
        svc = getj("service", "d2")
        self.assertEqual(svc["spec"]["selector"], {"app": "d2"})
        self.assertEqual(svc["spec"]["ports"][0]["port"], 80)
        self.assertEqual(svc["spec"]["ports"][0]["targetPort"], 8080)

    def test_delete_wait_and_wait_for_delete(self):
        "delete --wait returns when the object is gone; wait --for=delete on a deleted object succeeds"
        kc("create", "configmap", "gone", "--from-literal=a=b")
        r = kc("delete", "configmap", "gone", "--wait")
        self.assertIn('configmap "gone" deleted', r.stdout)
        self.assertIsNone(SB.admin.get("/api/v1/namespaces/default/configmaps/gone", missing=None))
        kc("create", "configmap", "gone2", "--from-literal=a=b")
        kc("delete", "configmap", "gone2", "--wait=false")
        kc("wait", "--for=delete", "configmap/gone2", "--timeout=10s")
        kc("create", "deployment", "d3", "--image=sandbox/echo:1")
        r = kc("delete", "deployment", "d3", "--wait", "--cascade=foreground", timeout=60)
        self.assertIn('deployment.apps "d3" deleted', r.stdout)
        self.assertIsNone(SB.admin.get("/apis/apps/v1/namespaces/default/deployments/d3", missing=None))

    def test_restricted_context(self):
        "the restricted context is refused with the real Forbidden message"
        r = kc("get", "service", "web", context="restricted", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('Error from server (Forbidden): services "web" is forbidden: User "restricted" cannot get '
                      'resource "services" in API group "" in the namespace "default"', r.stderr)


if __name__ == "__main__":
    tap.main()
