"""One sandbox per test module, shared by apilib (API tests) and nodelib (node
tests): starting and stopping the cluster, kubectl against it and condition
waits. Each lib adds its own API client on top (see Sandbox.connect); this
file must not know about either client."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SANDBOX = os.path.join(os.path.dirname(HERE), "sandbox")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))


class Sandbox:
    def __init__(self, env=None, prefix="sandbox-"):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        self.env = env or {}
        self.up = False

    def connect(self):
        """Called once the cluster is up; subclasses build their API clients here."""

    def start(self):
        # SANDBOX_OWNER_PID: the cluster stops itself if this test process dies without tearDownModule
        r = subprocess.run([SANDBOX, "up", self.dir], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, SANDBOX_OWNER_PID=str(os.getpid()), **self.env))
        if r.returncode != 0:
            raise RuntimeError("sandbox up failed: %s%s" % (r.stdout, r.stderr))
        self.up = True
        self.connect()
        return self

    def stop(self):
        r = None
        if self.up:
            r = subprocess.run([SANDBOX, "down", self.dir], capture_output=True, text=True, timeout=60)
            self.up = False
            if r.returncode != 0:
                sys.stderr.write("sandbox down failed: %s%s" % (r.stdout, r.stderr))
        shutil.rmtree(self.dir, ignore_errors=True)
        return r

    def kubectl(self, *args, check=True, timeout=60, stdin=None, context=None, env=None):
        base = dict(os.environ, KUBECONFIG=self.kubeconfig)
        base.pop("KUBE_FEATURE_WatchListClient", None)   # the sandbox must work with kubectl's defaults
        env = dict(base, **(env or {}))
        cmd = ["kubectl"] + (["--context", context] if context else []) + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, input=stdin)
        if check and r.returncode != 0:
            raise AssertionError("kubectl %s failed (%d): %s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def wait_for(self, fn, timeout=15, what="condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = fn()
            if last:
                return last
            time.sleep(0.02)
        raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))
