#!/usr/bin/env bash
# Sandbox speed (issue 3, acceptance 8; issue 8, acceptance 8): medians of N
# interleaved rounds, each round on fresh sandboxes:
#   - `tests/sandbox/sandbox up DIR` wall time, cluster network included
#     (goal < 2 s),
#   - default timing: nginx Deployment created (POST) -> Available=True
#     (goal < 1 s), then a bare nginx Pod created -> Ready, 3 times (goal
#     < 0.3 s: the node's own pod start: network namespace and veth, UTS
#     namespace, layer, mount namespace, cgroups, container, listener),
#     each next to a baseline: this machine's nginx started by hand on
#     loopback until it accepts (the part of a pod start that is NGINX's own;
#     the ratio says what the node adds, whatever the machine's load),
#   - SANDBOX_TIMING=realistic: nginx Deployment created -> Available on a
#     node that never pulled the image, then a second one (image cached):
#     what a user of a real cluster waits for (tests/sandbox/README.md "Timing").
# Everything is read through the API, as a client would see it.
# Writes the "Sandbox start and readiness" section of bench/RESULTS.md.
# Usage: bench/sandbox.sh [N]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
exec python3 - "$N" <<'PY'
import os, shutil, socket, statistics, subprocess, sys, tempfile, time
sys.dont_write_bytecode = True
sys.path.insert(0, "tests/sandbox/tests")
sys.path.insert(0, "bench/lib")
import nodelib as nl
from results import write_section

n = int(sys.argv[1])
LOAD = open("/proc/loadavg").read().split()[:3]
# The declared port makes the kubelet wait until NGINX accepts before the
# container counts as running (without it, Ready comes when the process runs).
PORTS = [{"containerPort": 80}]
R = {k: [] for k in ("up", "available", "pod", "nginx", "real_first", "real_cached")}
NGINX_CONF = """pid %(d)s/nginx.pid; error_log stderr; daemon off; events {}
http { access_log off; client_body_temp_path %(d)s/b; proxy_temp_path %(d)s/p; fastcgi_temp_path %(d)s/f;
       uwsgi_temp_path %(d)s/u; scgi_temp_path %(d)s/s; server { listen 127.0.78.1:%(port)d; } }
"""


def until(fn, what, limit=60):
    t0 = time.monotonic()
    while not fn():
        if time.monotonic() - t0 > limit:
            sys.exit(what + " never happened")
        time.sleep(0.002)
    return time.monotonic() - t0


def nginx_alone():
    """Baseline: start this machine's nginx with a minimal config, until it accepts."""
    d = tempfile.mkdtemp(prefix="bench-nginx-")
    s = socket.socket()
    s.bind(("127.0.78.1", 0))
    port = s.getsockname()[1]
    s.close()
    with open(d + "/nginx.conf", "w") as f:
        f.write(NGINX_CONF % {"d": d, "port": port})
    t0 = time.monotonic()
    p = subprocess.Popen(["/usr/sbin/nginx", "-p", d, "-c", d + "/nginx.conf"], stderr=subprocess.DEVNULL)

    def accepts():
        try:
            socket.create_connection(("127.0.78.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    until(accepts, "nginx listening")
    took = time.monotonic() - t0
    p.terminate()
    p.wait()
    shutil.rmtree(d, ignore_errors=True)
    return took


def up(env):
    d = tempfile.mkdtemp(prefix="bench-sandbox-")
    t0 = time.monotonic()
    r = subprocess.run(["tests/sandbox/sandbox", "up", d], capture_output=True, text=True,
                       env=dict(os.environ, **env))
    took = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit("sandbox up failed: " + r.stdout + r.stderr)
    return d, nl.Api(os.path.join(d, "kubeconfig")), took


def down(d):
    subprocess.run(["tests/sandbox/sandbox", "down", d], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def deployment_available(api, name):
    api.create("/apis/apps/v1/namespaces/default/deployments", nl.deployment(name, "nginx:1.27", ports=PORTS))
    t0 = time.monotonic()

    def ok():
        s = api.get("/apis/apps/v1/namespaces/default/deployments/" + name).get("status") or {}
        conds = {c["type"]: c["status"] for c in s.get("conditions") or []}
        return conds.get("Available") == "True" and (s.get("availableReplicas") or 0) >= 1
    until(ok, name + " Available")
    return time.monotonic() - t0


def pod_ready(api, name):
    api.create("/api/v1/namespaces/default/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "main", "image": "nginx:1.27", "ports": PORTS}]}})
    t0 = time.monotonic()

    def ok():
        p = api.get("/api/v1/namespaces/default/pods/" + name)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])
    until(ok, name + " Ready")
    return time.monotonic() - t0


for i in range(n):
    d, api, took = up({})
    try:
        R["up"].append(took)
        R["available"].append(deployment_available(api, "bench-%d" % i))
        pods = []
        for k in range(3):
            pods.append(pod_ready(api, "pod-%d-%d" % (i, k)))
            R["nginx"].append(nginx_alone())
        R["pod"].extend(pods)
    finally:
        down(d)
    d, api, _ = up({"SANDBOX_TIMING": "realistic"})
    try:
        R["real_first"].append(deployment_available(api, "first-%d" % i))
        R["real_cached"].append(deployment_available(api, "cached-%d" % i))
    finally:
        down(d)
    print("round %d: up %.3f s, Deployment->Available %.3f s, pod->Ready %s s; realistic: first %.3f s, cached %.3f s"
          % (i + 1, R["up"][-1], R["available"][-1], " ".join("%.3f" % p for p in pods), R["real_first"][-1],
             R["real_cached"][-1]), flush=True)
m = {k: statistics.median(v) for k, v in R.items()}
lo = {k: min(v) for k, v in R.items()}
hi = {k: max(v) for k, v in R.items()}
goal = lambda v, g: "met" if v < g else "MISSED"
END_LOAD = open("/proc/loadavg").read().split()[:3]
print("median of %d rounds: sandbox up %.3f s (goal < 2 s: %s), nginx Deployment -> Available %.3f s (goal < 1 s: %s), "
      "pod -> Ready %.3f s (goal < 0.3 s: %s)" % (n, m["up"], goal(m["up"], 2), m["available"], goal(m["available"], 1),
                                                  m["pod"], goal(m["pod"], 0.3)))
print("baseline: this machine's nginx alone, started until it accepts %.3f s; pod -> Ready / nginx alone: %.1f"
      % (m["nginx"], m["pod"] / m["nginx"]))
print("SANDBOX_TIMING=realistic: nginx Deployment -> Available %.3f s on a node without the image, %.3f s with it"
      % (m["real_first"], m["real_cached"]))
row = lambda k: "%.3f s | %.3f s | %.3f s" % (m[k], lo[k], hi[k])
write_section("bench/RESULTS.md", """## Sandbox start and readiness

Command: `bench/sandbox.sh %d` (%d rounds, each: `sandbox up`, an nginx Deployment created and
waited for Available through the API, then three bare nginx Pods created one after the other
and waited for Ready, each followed by the baseline: this machine's nginx started by hand on
loopback until it accepts; the nginx containers declare port 80, so Ready means NGINX accepts
on it; then a sandbox with `SANDBOX_TIMING=realistic`, an nginx
Deployment on a node without the image, then a second one), %s, %d CPUs, load average %s
before and %s after (the machine is shared). The node is the strict one of issue 8: `up` builds
the cluster network (namespaces, bridge, host link, routes, nftables, cluster DNS); a pod start
includes its network namespace and veth, and each container is run by k8s/runtime.py (UTS and
mount namespaces, image layer, cgroups, user, capabilities).

| measure | median | min | max | goal |
|---|---|---|---|---|
| `tests/sandbox/sandbox up DIR` | %s | < 2 s (%s) |
| nginx Deployment created -> Available | %s | < 1 s (%s) |
| nginx Pod created -> Ready | %s | < 0.3 s (%s) |
| baseline: this machine's nginx alone, started until it accepts | %s | - |
| pod -> Ready / nginx alone (medians) | %.1f | | | - (what the node adds) |
| `SANDBOX_TIMING=realistic`: nginx Deployment -> Available, image not on the node | %s | - (what a user waits for) |
| `SANDBOX_TIMING=realistic`: nginx Deployment -> Available, image on the node | %s | - |
""" % (n, n, time.strftime("%Y-%m-%d"), os.cpu_count(), " ".join(LOAD), " ".join(END_LOAD),
       row("up"), goal(m["up"], 2), row("available"), goal(m["available"], 1), row("pod"), goal(m["pod"], 0.3),
       row("nginx"), m["pod"] / m["nginx"], row("real_first"), row("real_cached")))
PY
