#!/usr/bin/env python3
"""SANDBOX_TIMING=realistic (README "Timing"): image pulls on first use, one
at a time, and a registry check for imagePullPolicy Always; a changed
ConfigMap reaches a running pod only on the kubelet's periodic pod sync; a
changed Service reaches the data path only after the proxy's lag.
The figures are shortened here (one override each) so the test stays quick;
the behaviour, not the duration, is what is checked."""
import json
import os
import re
import sys
import unittest

sys.dont_write_bytecode = True

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nodelib as nl  # noqa: E402
import tap  # noqa: E402

PULL = 1.0
SB = None


def setUpModule():
    global SB
    SB = nl.Sandbox(env={"SANDBOX_TIMING": "realistic,image_pull=%g,image_check=0.2,pod_sandbox=0.1,"
                                           "container_start=0.1,volume_sync=3,endpoints_lag=3" % PULL}).start()


def tearDownModule():
    if SB is not None:
        SB.stop()


def events(pod, reason):
    r = SB.kubectl("get", "events", "--field-selector", "involvedObject.name=" + pod, "-o", "json")
    return [e["message"] for e in json.loads(r.stdout)["items"] if e["reason"] == reason]


def pod(name, image, policy=None, **spec):
    c = {"name": "main", "image": image}
    if policy:
        c["imagePullPolicy"] = policy
    c.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": dict({"containers": [c]}, **spec)}


def ready(name):
    def ok():
        p = SB.api.get("/api/v1/namespaces/default/pods/" + name, missing=None) or {}
        return any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))
    return SB.wait_for(ok, 30, "pod %s ready" % name)


class PullTest(unittest.TestCase):
    def test_first_use_of_an_image_pulls_it_one_pull_at_a_time(self):
        SB.kubectl("apply", "-f", "-", stdin="\n".join(json.dumps(p) for p in (
            pod("first-a", "nginx:1.27"), pod("first-b", "nginxinc/nginx-unprivileged:1.27"))))
        ready("first-a")
        ready("first-b")
        waited = []
        for name, image in (("first-a", "nginx:1.27"), ("first-b", "nginxinc/nginx-unprivileged:1.27")):
            self.assertEqual(events(name, "Pulling"), ['Pulling image "%s"' % image])
            (msg,) = events(name, "Pulled")
            m = re.match(r'^Successfully pulled image "%s" in ([0-9.]+)s \(([0-9.]+)s including waiting\)\. '
                         r'Image size: \d+ bytes\.$' % re.escape(image), msg)
            self.assertTrue(m, msg)
            self.assertEqual(float(m.group(1)), PULL)
            waited.append(float(m.group(2)))
        self.assertGreater(max(waited), PULL, "the second pull waited for the first (serialized pulls)")
        # the image is on the node now
        SB.apply(pod("second-a", "nginx:1.27"))
        ready("second-a")
        self.assertEqual(events("second-a", "Pulled"), ['Container image "nginx:1.27" already present on machine'])
        self.assertEqual(events("second-a", "Pulling"), [])

    def test_pull_policy_always_checks_the_registry_each_start(self):
        SB.apply(pod("warm", "sandbox/echo:1"))
        ready("warm")
        SB.apply(pod("always", "sandbox/echo:1", "Always"))
        ready("always")
        self.assertEqual(events("always", "Pulling"), ['Pulling image "sandbox/echo:1"'])
        self.assertRegex(events("always", "Pulled")[0], r'^Successfully pulled image "sandbox/echo:1" in 0\.200s')


class VolumeSyncTest(unittest.TestCase):
    def test_configmap_change_lands_on_the_pods_periodic_sync(self):
        SB.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "slow"},
                  "data": {"index.html": "old\n"}})
        # Ready once NGINX answers (without a probe a pod is Ready as soon as its process starts)
        SB.apply(pod("slow-reader", "nginx:1.27", container={
            "volumeMounts": [{"name": "html", "mountPath": "/usr/share/nginx/html"}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1}},
            volumes=[{"name": "html", "configMap": {"name": "slow"}}]))
        ready("slow-reader")
        ip = SB.api.get("/api/v1/namespaces/default/pods/slow-reader")["status"]["podIP"]
        self.assertEqual(nl.http_get(ip, 80, "/"), (200, b"old\n"))
        SB.api.merge_patch("/api/v1/namespaces/default/configmaps/slow", {"data": {"index.html": "new\n"}})
        self.assertEqual(nl.http_get(ip, 80, "/"), (200, b"old\n"), "not at once: the kubelet's sync is periodic")
        SB.wait_for(lambda: nl.http_get(ip, 80, "/") == (200, b"new\n"), 10, "the next pod sync")


class DataPathTest(unittest.TestCase):
    def test_a_selector_change_reaches_the_data_path_after_the_proxys_lag(self):
        for v in ("a", "b"):
            p = pod("lag-" + v, "sandbox/echo:2", container={"ports": [{"containerPort": 8080}]})
            p["metadata"]["labels"] = {"lag": v}
            SB.apply(p)
        SB.apply(nl.service("lagged", {"lag": "a"}, [{"port": 80, "targetPort": 8080}]))
        ready("lag-a")
        ready("lag-b")
        ip = SB.cluster_ip("lagged")

        def served_by(name):
            try:
                status, body = nl.http_get(ip, 80, "/")
            except OSError:
                return False
            return status == 200 and json.loads(body)["pod"] == name
        SB.wait_for(lambda: served_by("lag-a"), 15, "the Service routing to lag-a")
        SB.api.merge_patch("/api/v1/namespaces/default/services/lagged", {"spec": {"selector": {"lag": "b"}}})
        self.assertTrue(served_by("lag-a"), "not at once: the proxy programs the change after its lag")
        SB.wait_for(lambda: served_by("lag-b"), 15, "the new selector in the data path")


if __name__ == "__main__":
    tap.main()
