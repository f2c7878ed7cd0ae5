#!/usr/bin/env bash
# Sandbox speed (issue 3, acceptance 8; issue 8, acceptance 8): medians of N
# interleaved rounds, each round on fresh sandboxes:
#   - `tests/sandbox/sandbox up DIR` wall time (goal < 2 s),
#   - default timing: nginx Deployment created (POST) -> Available=True
#     (goal < 1 s), then a bare nginx Pod created -> Ready, 3 times (goal
#     < 0.3 s: the node's own pod start: sandbox, container, listener),
#     each next to a baseline: this machine's nginx started by hand on
#     loopback until it accepts (the part of a pod start that is NGINX's own;
#     the ratio says what the node adds, whatever the machine's load),
#   - SANDBOX_TIMING=realistic: nginx Deployment created -> Available on a
#     node that never pulled the image, then a second one (image cached):
#     what a user of a real cluster waits for (README "Timing").
# Everything is read through the API, as a client would see it.
# Usage: bench/sandbox.sh [N]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
exec python3 - "$N" <<'PY'
import os, shutil, statistics, subprocess, sys, tempfile, time
sys.dont_write_bytecode = True
sys.path.insert(0, "tests/sandbox/tests")
import nodelib as nl

n = int(sys.argv[1])
R = {k: [] for k in ("up", "available", "pod", "nginx", "real_first", "real_cached")}
NGINX_CONF = """pid %(d)s/nginx.pid; error_log stderr; daemon off; events {}
http { access_log off; client_body_temp_path %(d)s/b; proxy_temp_path %(d)s/p; fastcgi_temp_path %(d)s/f;
       uwsgi_temp_path %(d)s/u; scgi_temp_path %(d)s/s; server { listen 127.0.78.1:%(port)d; } }
"""


def nginx_alone():
    """Baseline: start this machine's nginx with a minimal config, until it accepts."""
    import socket
    d = tempfile.mkdtemp(prefix="bench-nginx-")
    s = socket.socket()
    s.bind(("127.0.78.1", 0))
    port = s.getsockname()[1]
    s.close()
    with open(d + "/nginx.conf", "w") as f:
        f.write(NGINX_CONF % {"d": d, "port": port})
    t0 = time.monotonic()
    p = subprocess.Popen(["/usr/sbin/nginx", "-p", d, "-c", d + "/nginx.conf"], stderr=subprocess.DEVNULL)

    def up():
        try:
            socket.create_connection(("127.0.78.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    until(up, "nginx listening")
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


def until(fn, what, limit=60):
    t0 = time.monotonic()
    while not fn():
        if time.monotonic() - t0 > limit:
            sys.exit(what + " never happened")
        time.sleep(0.002)
    return time.monotonic() - t0


def deployment_available(api, name):
    api.create("/apis/apps/v1/namespaces/default/deployments", nl.deployment(name, "nginx:1.27"))
    t0 = time.monotonic()

    def ok():
        s = api.get("/apis/apps/v1/namespaces/default/deployments/" + name).get("status") or {}
        conds = {c["type"]: c["status"] for c in s.get("conditions") or []}
        return conds.get("Available") == "True" and (s.get("availableReplicas") or 0) >= 1
    until(ok, name + " Available")
    return time.monotonic() - t0


def pod_ready(api, name):
    api.create("/api/v1/namespaces/default/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]}})
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
goal = lambda v, g: "met" if v < g else "MISSED"
print("median of %d rounds: sandbox up %.3f s (goal < 2 s: %s), nginx Deployment -> Available %.3f s (goal < 1 s: %s), "
      "pod -> Ready %.3f s (goal < 0.3 s: %s)" % (n, m["up"], goal(m["up"], 2), m["available"], goal(m["available"], 1),
                                                  m["pod"], goal(m["pod"], 0.3)))
print("baseline: this machine's nginx alone, started until it accepts %.3f s; pod -> Ready / nginx alone: %.1f"
      % (m["nginx"], m["pod"] / m["nginx"]))
print("SANDBOX_TIMING=realistic: nginx Deployment -> Available %.3f s on a node without the image, %.3f s with it"
      % (m["real_first"], m["real_cached"]))
print("load average at the end: %s" % open("/proc/loadavg").read().split()[0])
PY
