#!/usr/bin/env python3
"""Deployments, ReplicaSets and pods through their life: rollout, scale, kubectl
rollout status / wait / logs, image pull failures, crash loops, readiness
probes, Pod Security failures and garbage collection (issue 3, acceptance 5)."""
import json
import os
import sys
import time
import unittest

sys.dont_write_bytecode = True

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nodelib as nl  # noqa: E402
import tap  # noqa: E402

SB = None


def setUpModule():
    global SB
    SB = nl.Sandbox().start()


def tearDownModule():
    if SB is not None:
        SB.stop()


def container_status(prefix):
    pods = SB.pods(prefix=prefix)
    if not pods or not pods[0].get("status", {}).get("containerStatuses"):
        return None
    return pods[0]["status"]["containerStatuses"][0]


def conditions(obj):
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


class LifecycleTest(unittest.TestCase):
    def test_deployment_creates_replicaset_and_pods_with_owner_references(self):
        SB.apply(nl.deployment("owned", "sandbox/echo", replicas=2))
        SB.kubectl("rollout", "status", "deployment/owned", "--timeout=20s")
        d = SB.api.get("/apis/apps/v1/namespaces/default/deployments/owned")
        rss = [r for r in SB.api.get("/apis/apps/v1/namespaces/default/replicasets")["items"]
               if r["metadata"]["name"].startswith("owned-")]
        self.assertEqual(len(rss), 1)
        rs = rss[0]
        h = rs["metadata"]["labels"]["pod-template-hash"]
        self.assertEqual(rs["metadata"]["name"], "owned-" + h)
        self.assertEqual(rs["spec"]["selector"]["matchLabels"], {"app": "owned", "pod-template-hash": h})
        ref = rs["metadata"]["ownerReferences"][0]
        self.assertEqual((ref["kind"], ref["name"], ref["uid"], ref["controller"], ref["blockOwnerDeletion"]),
                         ("Deployment", "owned", d["metadata"]["uid"], True, True))
        self.assertEqual(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1")
        self.assertEqual(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1")
        self.assertEqual(rs["status"]["readyReplicas"], 2)
        pods = SB.pods(prefix="owned-%s-" % h)
        self.assertEqual(len(pods), 2)
        for p in pods:
            self.assertRegex(p["metadata"]["name"], r"^owned-%s-[bcdfghjklmnpqrstvwxz2456789]{5}$" % h)
            self.assertEqual(p["metadata"]["ownerReferences"][0]["uid"], rs["metadata"]["uid"])
        self.assertEqual(len({p["status"]["podIP"] for p in pods}), 2, "pod IPs are unique")
        c = conditions(d)
        self.assertEqual((c["Available"]["status"], c["Available"]["reason"]), ("True", "MinimumReplicasAvailable"))
        self.assertEqual((c["Progressing"]["status"], c["Progressing"]["reason"]), ("True", "NewReplicaSetAvailable"))
        self.assertEqual(d["status"]["observedGeneration"], d["metadata"]["generation"])

    def test_kubectl_wait_available_and_logs(self):
        SB.apply(nl.deployment("waited", "sandbox/echo"))
        r = SB.kubectl("wait", "--for=condition=Available", "deployment/waited", "--timeout=20s")
        self.assertIn("condition met", r.stdout)
        r = SB.kubectl("logs", "deployment/waited")
        self.assertRegex(r.stdout, r"\(10\.244\.\d+\.\d+\) listening on 0\.0\.0\.0 ")

    def test_template_change_rolls_out_a_new_replicaset(self):
        SB.apply(nl.deployment("roll", "sandbox/echo", replicas=3))
        SB.kubectl("rollout", "status", "deployment/roll", "--timeout=20s")
        old = {p["metadata"]["name"] for p in SB.pods(prefix="roll-")}
        SB.kubectl("set", "env", "deployment/roll", "COLOR=green")
        r = SB.kubectl("rollout", "status", "deployment/roll", "--timeout=30s")
        self.assertIn('successfully rolled out', r.stdout)
        rss = {r["metadata"]["name"]: r for r in SB.api.get("/apis/apps/v1/namespaces/default/replicasets")["items"]
               if r["metadata"]["name"].startswith("roll-")}
        self.assertEqual(len(rss), 2)
        revs = sorted((r["metadata"]["annotations"]["deployment.kubernetes.io/revision"], r["spec"]["replicas"])
                      for r in rss.values())
        self.assertEqual(revs, [("1", 0), ("2", 3)])
        SB.wait_for(lambda: not old & {p["metadata"]["name"] for p in SB.pods(prefix="roll-")},
                    what="old pods gone")
        d = SB.api.get("/apis/apps/v1/namespaces/default/deployments/roll")
        self.assertEqual(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2")
        self.assertEqual((d["status"]["updatedReplicas"], d["status"]["availableReplicas"]), (3, 3))

    def test_scale_changes_the_number_of_pods(self):
        SB.apply(nl.deployment("scaled", "sandbox/echo", replicas=1))
        SB.wait_available("scaled")
        SB.kubectl("scale", "deployment/scaled", "--replicas=3")
        SB.wait_available("scaled", replicas=3)
        SB.kubectl("scale", "deployment/scaled", "--replicas=1")
        SB.wait_available("scaled", replicas=1)
        SB.wait_for(lambda: len(SB.pods(prefix="scaled-")) == 1, what="scaled down to one pod")

    def test_deleting_a_deployment_removes_replicasets_pods_and_processes(self):
        SB.apply(nl.deployment("doomed", "sandbox/echo", replicas=2))
        SB.apply(nl.deployment("doomed-nginx", "nginx", replicas=1, labels={"app": "doomed-nginx"}))
        SB.wait_available("doomed")
        SB.wait_available("doomed-nginx")

        def processes():
            # a pod without a readiness probe is Ready once its process runs:
            # NGINX's workers may come a moment later
            found = [nl.pids_of_pod(SB.dir, p) for p in SB.pods(prefix="doomed-")]
            return all(found) and len(sum(found, [])) >= 2 + 2 and sum(found, [])
        pids = SB.wait_for(processes, what="echo x2, NGINX's master and at least one worker")
        SB.kubectl("delete", "deployment", "doomed", "doomed-nginx", "--wait=true", "--timeout=30s")

        def gone():
            rs = [r for r in SB.api.get("/apis/apps/v1/namespaces/default/replicasets")["items"]
                  if r["metadata"]["name"].startswith("doomed-")]
            return not rs and not SB.pods(prefix="doomed-") and not [p for p in pids if nl.alive(p)]
        SB.wait_for(gone, timeout=20, what="replicasets, pods and processes gone")

    def test_foreground_deletion_waits_for_the_pods_graceful_termination(self):
        "kubectl delete --cascade=foreground: the pod runs its preStop hook, the Deployment stays until it is gone"
        SB.apply(nl.deployment("fg-slow", "sandbox/echo", container={
            "lifecycle": {"preStop": {"sleep": {"seconds": 2}}}}))
        SB.wait_available("fg-slow")
        SB.kubectl("delete", "deployment", "fg-slow", "--cascade=foreground", "--wait=false")
        path = "/apis/apps/v1/namespaces/default/deployments/fg-slow"
        seen = set()

        def deployment_gone():
            d = SB.api.get(path, missing=None)
            pods = SB.pods(prefix="fg-slow-")
            terminating = bool(pods) and all("deletionTimestamp" in p["metadata"] for p in pods)
            seen.add((d is not None, bool(pods), terminating))
            return d is None
        SB.wait_for(deployment_gone, timeout=20, what="the Deployment gone")
        self.assertIn((True, True, True), seen, "the pod was seen terminating (its preStop hook) under its Deployment")
        self.assertNotIn((False, True, True), seen, "the Deployment never went before its pod")
        self.assertEqual(SB.pods(prefix="fg-slow-"), [])

    def test_unknown_image_stays_pending_with_image_pull_back_off(self):
        SB.apply(nl.deployment("ghost", "example.invalid/ghost:v1"))
        SB.wait_for(lambda: (container_status("ghost-") or {}).get("state", {}).get("waiting", {})
                    .get("reason") == "ImagePullBackOff", what="ImagePullBackOff")
        pod = SB.pods(prefix="ghost-")[0]
        self.assertEqual(pod["status"]["phase"], "Pending")
        w = pod["status"]["containerStatuses"][0]["state"]["waiting"]
        self.assertIn('Back-off pulling image "example.invalid/ghost:v1"', w["message"])
        events = SB.kubectl("get", "events", "--field-selector", "involvedObject.name=" + pod["metadata"]["name"],
                            "-o", "json")
        msgs = [e["message"] for e in json.loads(events.stdout)["items"]]
        self.assertTrue(any(m.startswith('Failed to pull image "example.invalid/ghost:v1": ') for m in msgs), msgs)
        d = SB.api.get("/apis/apps/v1/namespaces/default/deployments/ghost")
        self.assertEqual(conditions(d)["Available"]["reason"], "MinimumReplicasUnavailable")

    def test_crashing_container_restarts_with_back_off(self):
        SB.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "broken"},
                  "data": {"nginx.conf": "events {}\nhttp { server { listen 80; no_such_directive on; } }\n"}})
        SB.apply(nl.deployment("crasher", "nginx", volumes=[{"name": "c", "configMap": {"name": "broken"}}],
                               mounts=[{"name": "c", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf"}]))
        cs = SB.wait_for(lambda: (lambda s: s if s and s["state"].get("waiting", {}).get("reason") ==
                                  "CrashLoopBackOff" else None)(container_status("crasher-")),
                         what="CrashLoopBackOff")
        self.assertGreaterEqual(cs["restartCount"], 1)
        self.assertRegex(cs["state"]["waiting"]["message"],
                         r"^back-off 10s restarting failed container=main pod=crasher-")
        term = cs["lastState"]["terminated"]
        self.assertEqual((term["exitCode"], term["reason"]), (1, "Error"))
        pod = SB.pods(prefix="crasher-")[0]["metadata"]["name"]
        r = SB.kubectl("logs", pod, check=False)
        self.assertIn('unknown directive "no_such_directive"', r.stdout + r.stderr)

    def test_readiness_probe_gates_endpoints(self):
        SB.apply(nl.deployment("gated", "sandbox/echo", ports=[{"containerPort": 8080}],
                               container={"readinessProbe": {"tcpSocket": {"port": 9999}, "periodSeconds": 1,
                                                             "failureThreshold": 1}}))
        SB.apply(nl.service("gated", {"app": "gated"}, [{"port": 80, "targetPort": 8080}]))

        def not_ready():
            ep = SB.api.get("/api/v1/namespaces/default/endpoints/gated", missing=None) or {}
            subs = ep.get("subsets") or []
            cs = container_status("gated-") or {}
            return (subs and not subs[0].get("addresses") and subs[0].get("notReadyAddresses")
                    and "running" in cs.get("state", {}))
        SB.wait_for(not_ready, what="pod running and listed as not ready")
        cs = container_status("gated-")
        self.assertEqual((cs["ready"], "running" in cs["state"]), (False, True))
        # A probe on the port the echo server listens on makes the pod ready.
        SB.kubectl("patch", "deployment", "gated", "--type", "json", "-p", json.dumps([
            {"op": "replace", "path": "/spec/template/spec/containers/0/readinessProbe/tcpSocket/port",
             "value": 8080}]))
        SB.kubectl("rollout", "status", "deployment/gated", "--timeout=30s")

        def ready():
            ep = SB.api.get("/api/v1/namespaces/default/endpoints/gated")
            subs = ep.get("subsets") or []
            return subs and len(subs[0].get("addresses") or []) == 1 and not subs[0].get("notReadyAddresses")
        SB.wait_for(ready, what="pod listed as ready")

    def test_liveness_probe_failure_restarts_the_container(self):
        SB.apply(nl.deployment("unlively", "sandbox/echo", ports=[{"containerPort": 8080}],
                               container={"livenessProbe": {"httpGet": {"path": "/", "port": 7777},
                                                            "periodSeconds": 1, "failureThreshold": 1}}))
        cs = SB.wait_for(lambda: (lambda s: s if s and s["restartCount"] >= 1 else None)(container_status("unlively-")),
                         what="restart after failed liveness probe")
        self.assertIn("terminated", cs["lastState"])

    def test_missing_configmap_holds_the_pod_until_it_appears(self):
        SB.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "waits-for-cm"},
                  "spec": {"containers": [{"name": "main", "image": "nginx",
                                           "volumeMounts": [{"name": "c", "mountPath": "/usr/share/nginx/html"}]}],
                           "volumes": [{"name": "c", "configMap": {"name": "late"}}]}})
        SB.wait_for(lambda: (container_status("waits-for-cm") or {}).get("state", {}).get("waiting", {})
                    .get("reason") == "ContainerCreating", what="ContainerCreating")
        r = SB.kubectl("get", "events", "--field-selector", "involvedObject.name=waits-for-cm", "-o", "json")
        msgs = [e["message"] for e in json.loads(r.stdout)["items"] if e["reason"] == "FailedMount"]
        self.assertIn('MountVolume.SetUp failed for volume "c" : configmap "late" not found', msgs)
        SB.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"},
                  "data": {"index.html": "late but here\n"}})
        SB.kubectl("wait", "--for=condition=Ready", "pod/waits-for-cm", "--timeout=20s")
        ip = SB.api.get("/api/v1/namespaces/default/pods/waits-for-cm")["status"]["podIP"]
        self.assertEqual(nl.http_get(ip, 80, "/"), (200, b"late but here\n"))

    def test_changing_a_pod_image_restarts_its_container(self):
        SB.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reimaged"},
                  "spec": {"containers": [{"name": "main", "image": "sandbox/echo:1"}]}})
        SB.kubectl("wait", "--for=condition=Ready", "pod/reimaged", "--timeout=20s")
        SB.kubectl("set", "image", "pod/reimaged", "main=sandbox/echo:2")
        cs = SB.wait_for(lambda: (lambda s: s if s and s["image"].endswith("echo:2") and s["ready"] else None)(
            container_status("reimaged")), what="new image running")
        self.assertEqual(cs["restartCount"], 1)
        self.assertIn("terminated", cs["lastState"])

    def test_pod_security_refusal_is_reported_as_replica_failure(self):
        SB.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": "locked", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
        d = nl.deployment("rooty", "nginx")
        d["metadata"]["namespace"] = "locked"
        SB.apply(d)

        def failed():
            dep = SB.api.get("/apis/apps/v1/namespaces/locked/deployments/rooty")
            return conditions(dep).get("ReplicaFailure")
        c = SB.wait_for(failed, what="ReplicaFailure condition")
        self.assertEqual((c["status"], c["reason"]), ("True", "FailedCreate"))
        self.assertIn('violates PodSecurity "restricted:latest"', c["message"])
        self.assertEqual(SB.pods(ns="locked"), [])


if __name__ == "__main__":
    tap.main()
