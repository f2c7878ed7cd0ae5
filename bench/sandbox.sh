#!/usr/bin/env bash
# Sandbox speed (issue 3, acceptance 8): median of N interleaved runs of
#   - `tests/sandbox/sandbox up DIR` wall time (goal < 2 s), and
#   - time from creating an nginx Deployment (POST) to its Available=True
#     condition as seen through the API (goal < 1 s).
# Each run: up -> create Deployment -> wait Available -> down.
# Usage: bench/sandbox.sh [N]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
exec python3 - "$N" <<'PY'
import json, os, shutil, statistics, subprocess, sys, tempfile, time
sys.dont_write_bytecode = True
sys.path.insert(0, "tests/sandbox/tests")
import nodelib as nl

n = int(sys.argv[1])
ups, avail = [], []
for i in range(n):
    d = tempfile.mkdtemp(prefix="bench-sandbox-")
    try:
        t0 = time.monotonic()
        r = subprocess.run(["tests/sandbox/sandbox", "up", d], capture_output=True, text=True)
        t_up = time.monotonic() - t0
        if r.returncode != 0:
            sys.exit("sandbox up failed: " + r.stdout + r.stderr)
        api = nl.Api(os.path.join(d, "kubeconfig"))
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
        ups.append(t_up); avail.append(t_av)
        print("run %d: sandbox up %.3f s, nginx Deployment Available %.3f s" % (i + 1, t_up, t_av), flush=True)
    finally:
        subprocess.run(["tests/sandbox/sandbox", "down", d], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
mu, ma = statistics.median(ups), statistics.median(avail)
print("median of %d: sandbox up %.3f s (goal < 2 s: %s), nginx Deployment -> Available %.3f s (goal < 1 s: %s)"
      % (n, mu, "met" if mu < 2 else "MISSED", ma, "met" if ma < 1 else "MISSED"))
PY
