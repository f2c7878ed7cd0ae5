#!/usr/bin/env python3
"""Test hooks (issue 3, acceptance 6): fault injection (endpoint and faults.json) and the audit log, as the README says."""
import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apilib  # noqa: E402
import tap  # noqa: E402

SB = None
CMS = "/api/v1/namespaces/default/configmaps"


def setUpModule():
    global SB
    SB = apilib.Sandbox(env={"SANDBOX_NO_NODE": "1"}).start()


def tearDownModule():
    SB.stop()


def set_faults(rules):
    st, body, _ = SB.admin.request("PUT", "/sandbox/faults", {"rules": rules})
    assert st == 200, body
    return body


class Faults(unittest.TestCase):
    def tearDown(self):
        SB.admin.request("DELETE", "/sandbox/faults")
        try:
            os.unlink(os.path.join(SB.dir, "faults.json"))
        except FileNotFoundError:
            pass

    def test_nth_occurrence_fails_with_status(self):
        "a rule with nth fails only that matching request, with a proper Status body"
        set_faults([{"method": "GET", "path": "^/api/v1/namespaces/default/configmaps$", "nth": 2,
                     "action": "fail", "status": 503, "message": "etcd is sad"}])
        codes = [SB.admin.request("GET", CMS)[0] for _ in range(4)]
        self.assertEqual(codes, [200, 503, 200, 200])
        set_faults([{"method": "GET", "path": "/configmaps$", "nth": 1, "status": 500, "reason": "InternalError",
                     "message": "boom"}])
        code, body = SB.curl("GET", CMS)
        self.assertEqual((code, body), (500, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                              "message": "boom", "reason": "InternalError", "code": 500}))
        self.assertEqual(SB.admin.request("GET", "/api/v1/namespaces")[0], 200, "other paths are untouched")

    def test_probability_and_times(self):
        "probability 1 with times limits the number of failures; query substrings narrow the match"
        set_faults([{"path": "/configmaps", "query": "limit=7", "probability": 1.0, "times": 2, "status": 429}])
        self.assertEqual(SB.admin.request("GET", CMS)[0], 200)
        codes = [SB.admin.request("GET", CMS + "?limit=7")[0] for _ in range(3)]
        self.assertEqual(codes, [429, 429, 200])
        state = SB.admin.get("/sandbox/faults")
        self.assertEqual((state["rules"][0]["seen"], state["rules"][0]["fired"]), (3, 2))
        set_faults([{"path": "/configmaps", "probability": 0.0, "status": 500}])
        self.assertEqual([SB.admin.request("GET", CMS)[0] for _ in range(5)], [200] * 5)

    def test_user_agent(self):
        "a userAgent rule fails only the requests of that client (one command's), as the audit log records them"
        set_faults([{"path": "/configmaps$", "userAgent": "session-keep", "status": 503}])
        before = len(SB.audit())
        mine = SB.curl("GET", CMS, extra=("-A", "czctl/0.1.0 (linux/x86_64) session-keep"))[0]
        other = SB.curl("GET", CMS, extra=("-A", "czctl/0.1.0 (linux/x86_64) service-intercept"))[0]
        self.assertEqual((mine, other), (503, 200))
        # (the previous test's clean-up request may be logged after `before` was read)
        mine = lambda r: r["path"] == CMS and r["method"] == "GET"  # noqa: E731
        recs = [r for r in SB.audit_until(mine, since=before, count=2) if mine(r)]
        self.assertEqual([r["userAgent"] for r in recs], ["czctl/0.1.0 (linux/x86_64) session-keep",
                                                          "czctl/0.1.0 (linux/x86_64) service-intercept"])

    def test_stall(self):
        "a stall rule delays the matching request, then it is served"
        set_faults([{"method": "GET", "path": "/configmaps$", "nth": 1, "action": "stall", "seconds": 0.5}])
        t0 = time.monotonic()
        code = SB.admin.request("GET", CMS)[0]
        self.assertEqual(code, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.45)

    def test_drop_connection(self):
        "a drop rule closes the connection without an answer"
        set_faults([{"method": "GET", "path": "/configmaps$", "nth": 1, "action": "drop"}])
        r = subprocess.run(["curl", "-sS", "--cacert", SB.ca, "-H", "Authorization: Bearer " + SB.admin_token,
                            SB.server + CMS], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Empty reply from server", r.stderr)

    def test_drop_watches(self):
        "POST /sandbox/drop-watches ends every open watch stream"
        events, conn = SB.admin.stream(CMS + "?watch=1", timeout=20)
        SB.wait_for(lambda: [a for a in SB.audit() if a.get("watch")], what="watch open")
        done = threading.Event()

        def drain():
            try:
                for _ in events:
                    pass
            except Exception:
                pass
            done.set()
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        st, body, _ = SB.admin.request("POST", "/sandbox/drop-watches", {})
        self.assertEqual(st, 200)
        self.assertGreaterEqual(body["dropped"], 1)
        self.assertTrue(done.wait(5), "the watch stream ended")
        conn.close()

    def test_faults_file(self):
        "DIR/faults.json is re-read when it changes"
        path = os.path.join(SB.dir, "faults.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"rules": [{"method": "GET", "path": "/configmaps$", "status": 504, "message": "slow"}]}, f)
        os.rename(path + ".tmp", path)
        SB.wait_for(lambda: SB.admin.request("GET", CMS)[0] == 504, what="file rule active")
        os.unlink(path)
        SB.wait_for(lambda: SB.admin.request("GET", CMS)[0] == 200, what="file rule gone")
        with open(path, "w") as f:
            f.write("{not json")
        SB.wait_for(lambda: SB.admin.get("/sandbox/faults")["fileError"], what="file error reported")

    def test_admin_only(self):
        "the fault endpoint is admin-only, and bad rules are refused"
        st, body, _ = SB.restricted.request("GET", "/sandbox/faults")
        self.assertEqual((st, body["reason"]), (403, "Forbidden"))
        st, body, _ = SB.admin.request("PUT", "/sandbox/faults", {"rules": [{"action": "explode"}]})
        self.assertEqual((st, body["reason"]), (400, "BadRequest"))


class Audit(unittest.TestCase):
    def test_one_line_per_request(self):
        "audit.jsonl has one line per request with time, user, method, path, query, content type, status, duration"
        before = len(SB.audit())
        SB.admin.request("GET", CMS + "?limit=3")
        SB.admin.create(CMS, {"metadata": {"name": "audited"}})
        SB.restricted.request("GET", CMS)
        SB.curl("GET", CMS, token="bad")
        recs = SB.audit_until(lambda r: True, since=before, count=4)
        self.assertEqual(len(recs), 4)
        a, b, c, d = recs
        self.assertEqual((a["user"], a["method"], a["path"], a["query"], a["status"]),
                         ("admin", "GET", CMS, "limit=3", 200))
        self.assertEqual((b["method"], b["contentType"], b["status"]), ("POST", "application/json", 201))
        self.assertEqual((c["user"], c["status"]), ("restricted", 403))
        self.assertEqual((d["user"], d["status"]), (None, 401))
        for r in recs:
            self.assertRegex(r["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")
            self.assertIsInstance(r["durationMs"], (int, float))

    def test_watch_logged_at_start(self):
        "a watch is logged when it starts (watch: true), before it ends"
        events, conn = SB.admin.stream(CMS + "?watch=1&timeoutSeconds=5&labelSelector=x%3Dy")
        SB.wait_for(lambda: [r for r in SB.audit() if r.get("watch") and "labelSelector=x%3Dy" in r["query"]],
                    timeout=3, what="watch audit line")
        conn.close()

    def test_kubectl_call_count(self):
        "the audit log counts kubectl's API calls"
        before = len(SB.audit())
        SB.kubectl("get", "configmaps")
        recs = SB.audit_until(lambda r: r["path"] == CMS and r["method"] == "GET", since=before)
        self.assertTrue(any(r["path"] == CMS and r["method"] == "GET" for r in recs))


if __name__ == "__main__":
    tap.main()
