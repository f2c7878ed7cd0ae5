#!/usr/bin/env python3
"""kubectl commands that need the node's controllers: rollout status, wait Available, logs (issue 3, acceptance 1)."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apilib  # noqa: E402
import tap  # noqa: E402

SB = None


def setUpModule():
    global SB
    SB = apilib.Sandbox().start()


def tearDownModule():
    SB.stop()


def kc(*a, **kw):
    return SB.kubectl(*a, **kw)


class Rollout(unittest.TestCase):
    def test_1_rollout_status_and_wait_available(self):
        "rollout status and wait --for=condition=Available follow a new Deployment and a template change"
        kc("apply", "-f", "-", stdin=json.dumps(apilib.deployment("web", replicas=2)))
        r = kc("rollout", "status", "deployment/web", "--timeout=30s", timeout=60)
        self.assertIn('deployment "web" successfully rolled out', r.stdout)
        r = kc("wait", "--for=condition=Available", "deployment/web", "--timeout=30s", timeout=60)
        self.assertIn("deployment.apps/web condition met", r.stdout)
        kc("set", "env", "deployment/web", "COLOUR=blue")
        r = kc("rollout", "status", "deployment/web", "--timeout=30s", timeout=60)
        self.assertIn('deployment "web" successfully rolled out', r.stdout)
        d = json.loads(kc("get", "deployment", "web", "-o", "json").stdout)
        self.assertEqual(d["status"]["observedGeneration"], d["metadata"]["generation"])
        self.assertEqual(d["status"]["updatedReplicas"], 2)

    def test_2_logs(self):
        "logs of a pod and of a deployment, with --tail"
        pods = json.loads(kc("get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
        self.assertTrue(pods)
        name = pods[0]["metadata"]["name"]
        out = kc("logs", name).stdout
        self.assertTrue(out.strip(), "pod log is not empty")
        out2 = kc("logs", "deployment/web", "--tail=1").stdout
        self.assertEqual(len(out2.strip().splitlines()), 1)
        r = kc("logs", name, "-c", "nope", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("container nope is not valid for pod %s" % name, r.stderr)

    def test_3_graceful_pod_deletion(self):
        "deleting a running pod sets deletionTimestamp and the grace period; the kubelet then removes it"
        kc("run", "grace", "--image=sandbox/echo:1")
        kc("wait", "--for=condition=Ready", "pod/grace", "--timeout=30s", timeout=60)
        st, body, _ = SB.admin.request("DELETE", "/api/v1/namespaces/default/pods/grace")
        self.assertEqual(st, 200)
        self.assertEqual(body["metadata"]["deletionGracePeriodSeconds"], 30)
        self.assertIn("deletionTimestamp", body["metadata"])
        SB.wait_for(lambda: SB.admin.get("/api/v1/namespaces/default/pods/grace", missing=None) is None,
                    what="pod removed by the kubelet")

    def test_4_delete_deployment_removes_pods(self):
        "delete --wait of a Deployment removes its ReplicaSets and pods (garbage collection)"
        kc("delete", "deployment", "web", "--wait", "--timeout=30s", timeout=60)
        SB.wait_for(lambda: not json.loads(kc("get", "rs,pods", "-l", "app=web", "-o", "json").stdout)["items"],
                    what="replicasets and pods gone")


if __name__ == "__main__":
    tap.main()
