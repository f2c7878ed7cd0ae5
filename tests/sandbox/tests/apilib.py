"""Helpers for the API tests: a sandbox per test module, kubectl, curl and a raw HTTPS client."""
import http.client
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.parse

import sandboxlib  # noqa: E402  (also puts tests/lib on sys.path for `import tap`)

HERE, ROOT, SANDBOX = sandboxlib.HERE, sandboxlib.ROOT, sandboxlib.SANDBOX


class Sandbox(sandboxlib.Sandbox):
    """The sandbox with an admin and a restricted keep-alive client, and curl."""

    def __init__(self, env=None):
        super().__init__(env, prefix="sandbox-api-")

    def connect(self):
        cfg = open(self.kubeconfig).read()
        self.server = [ln.split()[1] for ln in cfg.splitlines() if "server:" in ln][0]
        toks = [ln.split()[1] for ln in cfg.splitlines() if ln.strip().startswith("token:")]
        self.admin_token, self.restricted_token = toks[0], toks[1]
        self.ca = os.path.join(self.dir, "ca.crt")
        self.admin = Api(self.server, self.ca, self.admin_token)
        self.restricted = Api(self.server, self.ca, self.restricted_token)

    def curl(self, method, path, body=None, token="admin", ctype="application/json", extra=()):
        """Returns (status, parsed-or-raw body)."""
        tok = {"admin": self.admin_token, "restricted": self.restricted_token}.get(token, token)
        cmd = ["curl", "-sS", "--cacert", self.ca, "-X", method, "-w", "\n%{http_code}", self.server + path]
        if tok:
            cmd += ["-H", "Authorization: Bearer " + tok]
        if body is not None:
            cmd += ["-H", "Content-Type: " + ctype, "--data-binary", body if isinstance(body, str) else json.dumps(body)]
        cmd += list(extra)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError("curl failed: %s" % r.stderr)
        out, _, code = r.stdout.rpartition("\n")
        try:
            return int(code), json.loads(out)
        except ValueError:
            return int(code), out

    def audit(self):
        # a last line without its newline is still being written by the server
        with open(os.path.join(self.dir, "audit.jsonl")) as f:
            return [json.loads(ln) for ln in f if ln.endswith("\n") and ln.strip()]

    def audit_until(self, pred, since=0, count=1, timeout=5):
        """The audit records after the first `since`, once `count` of them match `pred`.

        Like kube-apiserver's ResponseComplete stage, the sandbox logs a request after
        its answer is sent, so a client that has its answer may not see the line yet."""
        deadline = time.monotonic() + timeout
        while True:
            recs = self.audit()[since:]
            if sum(1 for r in recs if pred(r)) >= count or time.monotonic() > deadline:
                return recs
            time.sleep(0.02)


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__("HTTP %d: %s" % (status, body))
        self.status, self.body = status, body


class Api:
    """A keep-alive HTTPS client for the sandbox API."""

    def __init__(self, server, ca, token):
        u = urllib.parse.urlsplit(server)
        self.host, self.port = u.hostname, u.port
        self.ctx = ssl.create_default_context(cafile=ca)
        self.token = token
        self.conn = None

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=30)
        return self.conn

    def request(self, method, path, body=None, ctype="application/json", headers=None):
        h = {"Authorization": "Bearer " + self.token, "Accept": "application/json"}
        h.update(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h["Content-Type"] = ctype
        for attempt in (0, 1):
            try:
                c = self._conn()
                c.request(method, path, body=data, headers=h)
                r = c.getresponse()
                raw = r.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt:
                    raise
        try:
            obj = json.loads(raw) if raw else None
        except ValueError:
            obj = raw.decode(errors="replace")
        return r.status, obj, r

    def get(self, path, missing=False):
        st, obj, _ = self.request("GET", path)
        if st == 404 and missing is not False:
            return missing
        if st >= 300:
            raise ApiError(st, obj)
        return obj

    def create(self, path, obj):
        st, out, _ = self.request("POST", path, obj)
        if st >= 300:
            raise ApiError(st, out)
        return out

    def stream(self, path, timeout=10):
        """Open a watch; returns an iterator of events (dicts) and the connection (close it)."""
        c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)
        c.request("GET", path, headers={"Authorization": "Bearer " + self.token})
        r = c.getresponse()
        if r.status != 200:
            raise ApiError(r.status, r.read())

        def it():
            while True:
                line = r.readline()
                if not line:
                    return
                yield json.loads(line)
        return it(), c


def deployment(name, labels=None, image="sandbox/echo:1", replicas=1, port=8080):
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": image,
                                                           "ports": [{"containerPort": port}]}]}}}}
