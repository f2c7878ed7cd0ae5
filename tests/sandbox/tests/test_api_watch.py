#!/usr/bin/env python3
"""Watch semantics, label/field selectors, limit/continue, garbage collection and propagation (issue 3)."""
import json
import os
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apilib  # noqa: E402
import tap  # noqa: E402

SB = None
NS = "/api/v1/namespaces/default"
APPS = "/apis/apps/v1/namespaces/default"


def setUpModule():
    global SB
    # short bookmark interval and a small event history so that 410 is reachable
    SB = apilib.Sandbox(env={"SANDBOX_BOOKMARK_INTERVAL": "0.2", "SANDBOX_WATCH_HISTORY": "50",
                             "SANDBOX_NO_NODE": "1"}).start()


def tearDownModule():
    SB.stop()


def cm(name, labels=None):
    return SB.admin.create(NS + "/configmaps", {"metadata": {"name": name, "labels": labels or {}}})


class Watch(unittest.TestCase):
    def test_events_from_resource_version(self):
        "watch from a resourceVersion delivers ADDED/MODIFIED/DELETED in order, with the deleted object's last state"
        lst = SB.admin.get(NS + "/configmaps")
        rv = lst["metadata"]["resourceVersion"]
        a = cm("w1", {"k": "v"})
        SB.admin.request("PATCH", NS + "/configmaps/w1", {"data": {"x": "1"}}, ctype="application/merge-patch+json")
        SB.admin.request("DELETE", NS + "/configmaps/w1")
        events, conn = SB.admin.stream(NS + "/configmaps?watch=1&resourceVersion=%s&timeoutSeconds=1" % rv)
        got = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
        conn.close()
        self.assertEqual(got, [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")])

    def test_timeout_and_bookmarks(self):
        "timeoutSeconds ends the stream; allowWatchBookmarks sends periodic BOOKMARKs carrying only the resourceVersion"
        t0 = time.monotonic()
        rv = SB.admin.get(NS + "/configmaps")["metadata"]["resourceVersion"]
        events, conn = SB.admin.stream(NS + "/configmaps?watch=true&allowWatchBookmarks=true&timeoutSeconds=1"
                                       "&resourceVersion=" + rv)
        evs = list(events)
        conn.close()
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        marks = [e for e in evs if e["type"] == "BOOKMARK"]
        self.assertGreaterEqual(len(marks), 2)
        self.assertEqual(marks[0]["object"], {"kind": "ConfigMap", "apiVersion": "v1",
                                              "metadata": {"resourceVersion": marks[0]["object"]["metadata"]["resourceVersion"]}})
        events, conn = SB.admin.stream(NS + "/configmaps?watch=true&timeoutSeconds=1&resourceVersion=" + rv)
        self.assertEqual([e for e in events if e["type"] == "BOOKMARK"], [])
        conn.close()

    def test_too_old_resource_version(self):
        "a watch from a resourceVersion older than the event history gets a 410 Expired ERROR event"
        old = SB.admin.get(NS + "/configmaps")["metadata"]["resourceVersion"]
        for i in range(60):
            cm("old-%d" % i)
        events, conn = SB.admin.stream(NS + "/configmaps?watch=1&resourceVersion=%s" % old)
        evs = list(events)
        conn.close()
        self.assertEqual(len(evs), 1)
        self.assertEqual(evs[0]["type"], "ERROR")
        st = evs[0]["object"]
        self.assertEqual((st["kind"], st["code"], st["reason"], st["status"]), ("Status", 410, "Expired", "Failure"))
        self.assertRegex(st["message"], r"^too old resource version: %s \(\d+\)$" % old)

    def test_watch_without_version_sends_current_state(self):
        "a watch without resourceVersion starts with ADDED events for the current objects"
        cm("now-1", {"set": "now"})
        events, conn = SB.admin.stream(NS + "/configmaps?watch=1&labelSelector=set%3Dnow&timeoutSeconds=1")
        self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in events], [("ADDED", "now-1")])
        conn.close()

    def test_watchlist(self):
        "sendInitialEvents=true: ADDED for existing objects then a BOOKMARK annotated initial-events-end"
        cm("wl-1", {"set": "wl"})
        cm("wl-2", {"set": "wl"})
        events, conn = SB.admin.stream(NS + "/configmaps?watch=1&sendInitialEvents=true&allowWatchBookmarks=true"
                                       "&resourceVersionMatch=NotOlderThan&labelSelector=set%3Dwl&timeoutSeconds=1")
        evs = list(events)
        conn.close()
        self.assertEqual([(e["type"], e["object"]["metadata"].get("name")) for e in evs[:3]],
                         [("ADDED", "wl-1"), ("ADDED", "wl-2"), ("BOOKMARK", None)])
        self.assertEqual(evs[2]["object"]["metadata"]["annotations"], {"k8s.io/initial-events-end": "true"})
        code, body = SB.curl("GET", NS + "/configmaps?watch=1&sendInitialEvents=true")
        self.assertEqual(code, 422)
        self.assertEqual(body["details"]["kind"], "ListOptions")

    def test_kubectl_with_watchlist_client(self):
        "kubectl with the WatchList client feature (default in newer kubectl) waits through sendInitialEvents"
        cm("wlc")
        env = {"KUBE_FEATURE_WatchListClient": "true"}
        r = SB.kubectl("wait", "--for=jsonpath={.metadata.name}=wlc", "configmap/wlc", "--timeout=5s", "-v=6", env=env)
        self.assertIn("condition met", r.stdout)
        self.assertIn("sendInitialEvents=true", r.stderr)
        r = SB.kubectl("delete", "configmap", "wlc", "--wait", "--timeout=5s", env=env)
        self.assertIn('configmap "wlc" deleted', r.stdout)

    def test_selector_transitions(self):
        "a watch with a label selector sees objects entering (ADDED) and leaving (DELETED) the selection"
        rv = SB.admin.get(NS + "/configmaps")["metadata"]["resourceVersion"]
        cm("tr", {"stage": "a"})
        SB.admin.request("PATCH", NS + "/configmaps/tr", {"metadata": {"labels": {"stage": "b"}}},
                         ctype="application/merge-patch+json")
        SB.admin.request("PATCH", NS + "/configmaps/tr", {"metadata": {"labels": {"stage": "a"}}},
                         ctype="application/merge-patch+json")
        events, conn = SB.admin.stream(NS + "/configmaps?watch=1&labelSelector=stage%3Da&timeoutSeconds=1"
                                       "&resourceVersion=" + rv)
        self.assertEqual([e["type"] for e in events], ["ADDED", "DELETED", "ADDED"])
        conn.close()

    def test_kubectl_get_watch(self):
        "kubectl get -w prints changes as they happen"
        cm("kw")
        import subprocess
        env = dict(os.environ, KUBECONFIG=SB.kubeconfig)
        p = subprocess.Popen(["kubectl", "get", "configmap", "kw", "-w", "--request-timeout=3s"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = p.stdout.readline()
            self.assertTrue(first.startswith("NAME"), first)
            self.assertTrue(p.stdout.readline().startswith("kw "))
            # kubectl prints the row, then starts its watch: change the object only once the watch is open
            SB.wait_for(lambda: [a for a in SB.audit() if a.get("watch") and "metadata.name%3Dkw" in a["query"]],
                        what="kubectl's watch request")
            SB.admin.request("PATCH", NS + "/configmaps/kw", {"data": {"a": "b"}}, ctype="application/merge-patch+json")
            line = p.stdout.readline()
            if not line:
                p.wait()
                self.fail("kubectl exited: %s" % p.stderr.read())
            self.assertRegex(line, r"^kw\s+1\s+")
        finally:
            p.kill()
            p.wait()


ROOT_CA = "kube-root-ca.crt"   # published in every namespace, as on a real cluster

SELECTOR_CASES = [
    ("env=prod", ["a", "b"]),
    ("env==prod", ["a", "b"]),
    ("env!=prod", ["c", "d"]),
    ("env in (prod,dev)", ["a", "b", "c"]),
    ("env notin (prod)", ["c", "d"]),
    ("tier", ["a", "c"]),
    ("!tier", ["b", "d"]),
    ("env=prod,tier=web", ["a"]),
    ("env=prod,!tier", ["b"]),
    ("env in (prod), tier notin (db)", ["a", "b"]),
    ("env in (prod),tier in (web,db)", ["a"]),
    ("", ["a", "b", "c", "d"]),
]


class Selectors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        SB.admin.create("/api/v1/namespaces", {"metadata": {"name": "sel"}})
        for name, labels in (("a", {"env": "prod", "tier": "web"}), ("b", {"env": "prod"}),
                             ("c", {"env": "dev", "tier": "db"}), ("d", {})):
            SB.admin.create("/api/v1/namespaces/sel/configmaps", {"metadata": {"name": name, "labels": labels}})

    def test_label_selector_table(self):
        "label selectors: =, ==, !=, in, notin, exists, !exists, and AND with commas"
        wrong = []
        for sel, want in SELECTOR_CASES:
            got = SB.admin.get("/api/v1/namespaces/sel/configmaps?labelSelector=" + urllib.parse.quote(sel))
            names = sorted(i["metadata"]["name"] for i in got["items"] if i["metadata"]["name"] != ROOT_CA)
            if names != want:
                wrong.append((sel, names, want))
        self.assertEqual(wrong, [])

    def test_bad_selector_is_400(self):
        "an unparsable label selector and an unsupported field selector are 400 BadRequest"
        code, body = SB.curl("GET", "/api/v1/namespaces/sel/configmaps?labelSelector=" + urllib.parse.quote("env in (a"))
        self.assertEqual((code, body["reason"]), (400, "BadRequest"))
        code, body = SB.curl("GET", "/api/v1/namespaces/sel/configmaps?fieldSelector=spec.x%3D1")
        self.assertEqual((code, body["message"]), (400, '"spec.x" is not a known field selector: only '
                                                        '"metadata.name", "metadata.namespace"'))
        code, body = SB.curl("GET", "/api/v1/pods?fieldSelector=spec.x%3D1")
        self.assertEqual((code, body["message"]), (400, "field label not supported: spec.x"))

    def test_field_selector(self):
        "fieldSelector metadata.name and metadata.namespace"
        got = SB.admin.get("/api/v1/configmaps?fieldSelector=metadata.name%3Db,metadata.namespace%3Dsel")
        self.assertEqual([(i["metadata"]["namespace"], i["metadata"]["name"]) for i in got["items"]], [("sel", "b")])
        got = SB.admin.get("/api/v1/namespaces/sel/configmaps?fieldSelector=metadata.name!%3Db")
        self.assertEqual(sorted(i["metadata"]["name"] for i in got["items"]), ["a", "c", "d", ROOT_CA])

    def test_limit_continue(self):
        "limit/continue pages through a list; a bad continue token is refused"
        names, tok, pages = [], None, 0
        while True:
            q = "?limit=3" + ("&continue=" + tok if tok else "")
            page = SB.admin.get("/api/v1/namespaces/sel/configmaps" + q)
            pages += 1
            names += [i["metadata"]["name"] for i in page["items"]]
            tok = page["metadata"].get("continue")
            if not tok:
                break
            self.assertEqual(page["metadata"]["remainingItemCount"], 2)
        self.assertEqual((names, pages), (["a", "b", "c", "d", ROOT_CA], 2))
        code, body = SB.curl("GET", "/api/v1/namespaces/sel/configmaps?limit=1&continue=%%%")
        self.assertEqual((code, body["reason"]), (400, "BadRequest"))

    def test_continue_is_consistent(self):
        "pages after the first show the list as of the first page's resourceVersion"
        SB.admin.create("/api/v1/namespaces", {"metadata": {"name": "snap"}})
        for n in ("a", "b", "c"):
            SB.admin.create("/api/v1/namespaces/snap/configmaps", {"metadata": {"name": n}})
        p1 = SB.admin.get("/api/v1/namespaces/snap/configmaps?limit=1")
        SB.admin.request("DELETE", "/api/v1/namespaces/snap/configmaps/c")
        SB.admin.create("/api/v1/namespaces/snap/configmaps", {"metadata": {"name": "bb"}})
        SB.admin.request("PATCH", "/api/v1/namespaces/snap/configmaps/b", {"data": {"new": "1"}},
                         ctype="application/merge-patch+json")
        p2 = SB.admin.get("/api/v1/namespaces/snap/configmaps?limit=5&continue=" + p1["metadata"]["continue"])
        self.assertEqual([i["metadata"]["name"] for i in p2["items"]], ["b", "c", ROOT_CA])
        self.assertNotIn("data", p2["items"][0])
        self.assertEqual(p2["metadata"]["resourceVersion"], p1["metadata"]["resourceVersion"])

    def test_continue_token_expires(self):
        "a continue token older than the event history is 410 Expired"
        page = SB.admin.get("/api/v1/namespaces/sel/configmaps?limit=1")
        tok = page["metadata"]["continue"]
        for i in range(60):
            SB.admin.create(NS + "/configmaps", {"metadata": {"generateName": "churn-"}})
        code, body = SB.curl("GET", "/api/v1/namespaces/sel/configmaps?limit=1&continue=" + tok)
        self.assertEqual((code, body["reason"], body["code"]), (410, "Expired", 410))
        self.assertTrue(body["message"].startswith("The provided continue parameter is too old"))


class GarbageCollection(unittest.TestCase):
    def owned(self, owner, kind, api_version, name, block=True):
        return SB.admin.create(NS + "/configmaps", {"metadata": {"name": name, "ownerReferences": [{
            "apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": block}]}})

    def gone(self, path):
        return SB.admin.get(path, missing=None) is None

    def test_background(self):
        "background deletion removes the owner at once and the dependents soon after"
        owner = cm("own-bg")
        self.owned(owner, "ConfigMap", "v1", "dep-bg")
        st, body, _ = SB.admin.request("DELETE", NS + "/configmaps/own-bg")
        self.assertEqual((st, body["status"], body["details"]["uid"]), (200, "Success", owner["metadata"]["uid"]))
        SB.wait_for(lambda: self.gone(NS + "/configmaps/dep-bg"), what="dependent deleted")

    def test_foreground(self):
        "foreground deletion keeps the owner (foregroundDeletion finalizer) until its dependents are gone"
        owner = SB.admin.create(APPS + "/deployments", apilib.deployment("fg"))
        self.owned(owner, "Deployment", "apps/v1", "dep-fg")
        st, body, _ = SB.admin.request("DELETE", APPS + "/deployments/fg",
                                       {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"})
        self.assertEqual(st, 200)
        self.assertEqual(body["metadata"]["finalizers"], ["foregroundDeletion"])
        self.assertIn("deletionTimestamp", body["metadata"])
        SB.wait_for(lambda: self.gone(NS + "/configmaps/dep-fg") and self.gone(APPS + "/deployments/fg"),
                    what="dependent then owner deleted")

    def test_orphan(self):
        "orphan deletion leaves the dependents, without the ownerReference"
        owner = cm("own-or")
        self.owned(owner, "ConfigMap", "v1", "dep-or")
        st, _, _ = SB.admin.request("DELETE", NS + "/configmaps/own-or?propagationPolicy=Orphan")
        self.assertEqual(st, 200)
        SB.wait_for(lambda: self.gone(NS + "/configmaps/own-or"), what="owner deleted")
        dep = SB.admin.get(NS + "/configmaps/dep-or")
        self.assertNotIn("ownerReferences", dep["metadata"])

    def test_preconditions(self):
        "delete preconditions: a wrong uid or resourceVersion is 409 Conflict"
        c = cm("pre")
        code, body = SB.curl("DELETE", NS + "/configmaps/pre", {"preconditions": {"uid": "nope"}})
        self.assertEqual((code, body["reason"]), (409, "Conflict"))
        self.assertEqual(body["message"], 'Operation cannot be fulfilled on configmaps "pre": Precondition failed: UID in '
                                          'precondition: nope, UID in object meta: %s' % c["metadata"]["uid"])
        code, body = SB.curl("DELETE", NS + "/configmaps/pre", {"preconditions": {"resourceVersion": "1"}})
        self.assertEqual((code, body["reason"]), (409, "Conflict"))
        code, body = SB.curl("DELETE", NS + "/configmaps/pre", {"preconditions": {"uid": c["metadata"]["uid"]}})
        self.assertEqual(code, 200)

    def test_namespace_deletion(self):
        "deleting a namespace removes its content, then the namespace (Terminating meanwhile)"
        SB.admin.create("/api/v1/namespaces", {"metadata": {"name": "doomed"}})
        SB.admin.create("/api/v1/namespaces/doomed/configmaps", {"metadata": {"name": "x"}})
        st, body, _ = SB.admin.request("DELETE", "/api/v1/namespaces/doomed")
        self.assertEqual((st, body["status"]["phase"]), (200, "Terminating"))
        SB.wait_for(lambda: self.gone("/api/v1/namespaces/doomed"), what="namespace gone")
        self.assertEqual(SB.admin.get("/api/v1/namespaces/doomed/configmaps")["items"], [])

    def test_root_ca_published(self):
        "every namespace gets the kube-root-ca.crt ConfigMap, and it comes back when deleted"
        SB.admin.create("/api/v1/namespaces", {"metadata": {"name": "fresh"}})
        cm = SB.admin.get("/api/v1/namespaces/fresh/configmaps/" + ROOT_CA)
        self.assertEqual(cm["data"]["ca.crt"], open(SB.ca).read())
        SB.admin.request("DELETE", "/api/v1/namespaces/fresh/configmaps/" + ROOT_CA)
        again = SB.admin.get("/api/v1/namespaces/fresh/configmaps/" + ROOT_CA)
        self.assertNotEqual(again["metadata"]["uid"], cm["metadata"]["uid"])


class Semantics(unittest.TestCase):
    def test_generate_name_and_metadata(self):
        "generateName, uid, resourceVersion as a growing counter, creationTimestamp, default ServiceAccount"
        a = SB.admin.create(NS + "/configmaps", {"metadata": {"generateName": "gen-"}})
        b = SB.admin.create(NS + "/configmaps", {"metadata": {"generateName": "gen-"}})
        self.assertRegex(a["metadata"]["name"], r"^gen-[bcdfghjklmnpqrstvwxz2456789]{5}$")
        self.assertNotEqual(a["metadata"]["uid"], b["metadata"]["uid"])
        self.assertLess(int(a["metadata"]["resourceVersion"]), int(b["metadata"]["resourceVersion"]))
        self.assertIsNotNone(SB.admin.get(NS + "/serviceaccounts/default"))

    def test_status_and_generation(self):
        "status is ignored on main-resource writes and spec on /status writes; generation follows spec only"
        d = SB.admin.create(APPS + "/deployments", apilib.deployment("gen"))
        self.assertEqual(d["metadata"]["generation"], 1)
        st, d2, _ = SB.admin.request("PATCH", APPS + "/deployments/gen", {"status": {"replicas": 9}, "metadata": {"labels": {"a": "b"}}},
                                     ctype="application/merge-patch+json")
        self.assertEqual((d2["metadata"]["generation"], d2["status"].get("replicas")), (1, None))
        st, d3, _ = SB.admin.request("PATCH", APPS + "/deployments/gen/status",
                                     {"status": {"replicas": 9}, "spec": {"replicas": 5}},
                                     ctype="application/merge-patch+json")
        self.assertEqual((st, d3["status"]["replicas"], d3["spec"]["replicas"], d3["metadata"]["generation"]),
                         (200, 9, 1, 1))
        st, d4, _ = SB.admin.request("PATCH", APPS + "/deployments/gen", {"spec": {"replicas": 2}},
                                     ctype="application/merge-patch+json")
        self.assertEqual(d4["metadata"]["generation"], 2)

    def test_node_ports(self):
        "NodePort Services get nodePorts from 30000-32767, kept on update and dropped with the type"
        s = SB.admin.create(NS + "/services", {"metadata": {"name": "np"},
                                               "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
        n = s["spec"]["ports"][0]["nodePort"]
        self.assertTrue(30000 <= n <= 32767)
        self.assertEqual(s["spec"]["externalTrafficPolicy"], "Cluster")
        st, s2, _ = SB.admin.request("PATCH", NS + "/services/np", {"spec": {"ports": [{"port": 80, "targetPort": 81}]}},
                                     ctype="application/merge-patch+json")
        self.assertEqual((st, s2["spec"]["ports"][0]["nodePort"]), (200, n))
        code, body = SB.curl("POST", NS + "/services", {"metadata": {"name": "np2"}, "spec": {
            "type": "NodePort", "ports": [{"port": 80, "nodePort": n}]}})
        self.assertEqual((code, body["details"]["causes"][0]["message"]),
                         (422, "Invalid value: %d: provided port is already allocated" % n))
        st, s3, _ = SB.admin.request("PATCH", NS + "/services/np", {"spec": {"type": "ClusterIP"}},
                                     ctype="application/merge-patch+json")
        self.assertEqual(st, 200)
        self.assertNotIn("nodePort", s3["spec"]["ports"][0])

    def test_endpointslices_mirror_endpoints(self):
        "an EndpointSlice owned by the Service mirrors its Endpoints; both go with the Service"
        svc = SB.admin.create(NS + "/services", {"metadata": {"name": "mir"}, "spec": {"ports": [{"port": 80}]}})
        SB.admin.create(NS + "/endpoints", {"metadata": {"name": "mir"}, "subsets": [{
            "addresses": [{"ip": "10.244.9.9"}], "notReadyAddresses": [{"ip": "10.244.9.10"}],
            "ports": [{"port": 8080, "protocol": "TCP"}]}]})
        path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dmir"
        sl = SB.wait_for(lambda: SB.admin.get(path)["items"], what="endpointslice")[0]
        self.assertEqual(sl["metadata"]["ownerReferences"][0]["uid"], svc["metadata"]["uid"])
        self.assertEqual([(e["addresses"], e["conditions"]["ready"]) for e in sl["endpoints"]],
                         [(["10.244.9.9"], True), (["10.244.9.10"], False)])
        self.assertEqual(sl["ports"], [{"name": "", "port": 8080, "protocol": "TCP"}])
        out = SB.kubectl("describe", "service", "mir").stdout
        self.assertRegex(out, r"(?m)^Endpoints:\s+10\.244\.9\.9:8080$")
        SB.admin.request("DELETE", NS + "/services/mir")
        SB.wait_for(lambda: not SB.admin.get(path)["items"], what="endpointslice garbage-collected")
        SB.wait_for(lambda: SB.admin.get(NS + "/endpoints/mir", missing=None) is None,
                    what="Endpoints deleted with their Service")

    def test_cluster_ips_are_unique(self):
        "Services get distinct ClusterIPs from 10.96.0.0/16; headless Services keep None"
        ips = set()
        for i in range(5):
            s = SB.admin.create(NS + "/services", {"metadata": {"name": "ip%d" % i}, "spec": {"ports": [{"port": 80}]}})
            ips.add(s["spec"]["clusterIP"])
            self.assertTrue(s["spec"]["clusterIP"].startswith("10.96."))
        self.assertEqual(len(ips), 5)
        h = SB.admin.create(NS + "/services", {"metadata": {"name": "headless"},
                                               "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})
        self.assertEqual(h["spec"]["clusterIPs"], ["None"])
        code, body = SB.curl("POST", NS + "/services", {"metadata": {"name": "dup"},
                                                        "spec": {"clusterIP": sorted(ips)[0], "ports": [{"port": 80}]}})
        self.assertEqual((code, body["details"]["causes"][0]["field"]), (422, "spec.clusterIPs"))
        self.assertIn("provided IP is already allocated", body["message"])


if __name__ == "__main__":
    tap.main()
