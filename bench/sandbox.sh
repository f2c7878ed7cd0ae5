#!/usr/bin/env bash
# Sandbox speed (issue 3 acceptance 8, issue 8 acceptance 8): median of N
# interleaved runs of
#   - `tests/sandbox/sandbox up DIR` wall time, cluster network included (goal < 2 s),
#   - a pod start: creating an nginx Pod (POST) to its Ready=True condition,
#     its network namespace and veth included (goal < 0.3 s), and
#   - creating an nginx Deployment (POST) to its Available=True condition as
#     seen through the API (goal < 1 s).
# Each run: up -> Pod -> wait Ready -> Deployment -> wait Available -> down.
# Writes the "Sandbox start and readiness" section of bench/RESULTS.md.
# Usage: bench/sandbox.sh [N]   (default 8)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-8}
exec python3 - "$N" <<'PY'
import json, os, shutil, statistics, subprocess, sys, tempfile, time
sys.dont_write_bytecode = True
sys.path.insert(0, "tests/sandbox/tests")
sys.path.insert(0, "bench/lib")
import nodelib as nl
from results import write_section

n = int(sys.argv[1])
LOAD = open("/proc/loadavg").read().split()[:3]
ups, pods, avail = [], [], []


def wait(what, path, done):
    t0 = time.monotonic()
    while True:
        obj = api.get(path)
        if done(obj):
            return
        if time.monotonic() - t0 > 30:
            sys.exit(what + " never happened")
        time.sleep(0.002)


for i in range(n):
    d = tempfile.mkdtemp(prefix="bench-sandbox-")
    try:
        t0 = time.monotonic()
        r = subprocess.run(["tests/sandbox/sandbox", "up", d], capture_output=True, text=True)
        t_up = time.monotonic() - t0
        if r.returncode != 0:
            sys.exit("sandbox up failed: " + r.stdout + r.stderr)
        api = nl.Api(os.path.join(d, "kubeconfig"))
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod-%d" % i},
               "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]}}
        t0 = time.monotonic()
        api.create("/api/v1/namespaces/default/pods", pod)
        wait("pod Ready", "/api/v1/namespaces/default/pods/pod-%d" % i, lambda o: any(
            c["type"] == "Ready" and c["status"] == "True" for c in (o.get("status") or {}).get("conditions") or []))
        t_pod = time.monotonic() - t0
        name = "bench-%d" % i
        dep = nl.deployment(name, "nginx:1.27", replicas=1)
        t0 = time.monotonic()
        api.create("/apis/apps/v1/namespaces/default/deployments", dep)
        while True:
            obj = api.get("/apis/apps/v1/namespaces/default/deployments/" + name)
            conds = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}
            if conds.get("Available") == "True" and (obj["status"].get("availableReplicas") or 0) >= 1:
                break
            if time.monotonic() - t0 > 30:
                sys.exit("deployment never became Available")
            time.sleep(0.002)
        t_av = time.monotonic() - t0
        ups.append(t_up); pods.append(t_pod); avail.append(t_av)
        print("run %d: sandbox up %.3f s, nginx Pod Ready %.3f s, nginx Deployment Available %.3f s"
              % (i + 1, t_up, t_pod, t_av), flush=True)
    finally:
        subprocess.run(["tests/sandbox/sandbox", "down", d], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
mu, mp, ma = statistics.median(ups), statistics.median(pods), statistics.median(avail)
verdict = lambda v, goal: "met" if v < goal else "MISSED"
print("median of %d: sandbox up %.3f s (goal < 2 s: %s), nginx Pod -> Ready %.3f s (goal < 0.3 s: %s), "
      "nginx Deployment -> Available %.3f s (goal < 1 s: %s)"
      % (n, mu, verdict(mu, 2), mp, verdict(mp, 0.3), ma, verdict(ma, 1)))
write_section("bench/RESULTS.md", """## Sandbox start and readiness

Command: `bench/sandbox.sh %d` (%d runs, each: `sandbox up`, create an nginx Pod and wait for
Ready, create an nginx Deployment and wait for Available, all through the API, `sandbox down`),
%s, %d CPUs, load average before the runs %s (the machine is shared). The node is the strict one
of issue 8: `up` builds the cluster network (namespaces, bridge, host link, routes, nftables,
cluster DNS); a pod start includes its network namespace and veth.

| measure | median | min | max | goal |
|---|---|---|---|---|
| `tests/sandbox/sandbox up DIR` | %.3f s | %.3f s | %.3f s | < 2 s (%s) |
| nginx Pod created -> Ready | %.3f s | %.3f s | %.3f s | < 0.3 s (%s) |
| nginx Deployment created -> Available | %.3f s | %.3f s | %.3f s | < 1 s (%s) |
""" % (n, n, time.strftime("%Y-%m-%d"), os.cpu_count(), " ".join(LOAD),
       mu, min(ups), max(ups), verdict(mu, 2), mp, min(pods), max(pods), verdict(mp, 0.3),
       ma, min(avail), max(avail), verdict(ma, 1)))
PY
