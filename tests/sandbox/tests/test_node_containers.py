#!/usr/bin/env python3
"""Containers as a runtime runs them (issue 8, acceptance 3): the proxy's own
securityContext (uid 101, read-only root, no capabilities) on
nginxinc/nginx-unprivileged, an NGINX configuration that writes outside its
writable volumes failing as on a real node, memory limits and OOMKilled with
back-off, the pod's hostname, runAsNonRoot, ConfigMap updates reaching a
running pod, exec probes, preStop hooks and the termination grace period."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nodelib as nl  # noqa: E402
import tap  # noqa: E402

SB = None
PROXY_SPEC = None   # the pod template czctl deploys as its proxy (lua/czctl/session/shared.lua)

# czctl's proxy Deployment, as the CLI renders it
RENDER_PROXY = """
local cjson = require "cjson"
local intercept = require "czctl.intercept"
local shared = require "czctl.session.shared"
io.write(cjson.encode(shared.deployment{namespace = "default", service = "web", image = intercept.DEFAULT_IMAGE,
  ports = {{name = "http", port = 80, listen = 8080, protocol = "TCP"}}, secret = "czctl-proxy-web-acc3", version = 1}))
"""

# What the proxy needs of NGINX (pid and temp files in its /tmp emptyDir, a
# health port), answering with its $hostname.
PROXY_CONF = """
pid /tmp/nginx.pid;
events {}
http {
    client_body_temp_path /tmp/client_temp;
    proxy_temp_path /tmp/proxy_temp;
    fastcgi_temp_path /tmp/fastcgi_temp;
    uwsgi_temp_path /tmp/uwsgi_temp;
    scgi_temp_path /tmp/scgi_temp;
    access_log off;
    server { listen 8080; location / { default_type text/plain; return 200 "$hostname\\n"; } }
    server { listen %d; location /healthz { return 200 "ok\\n"; } }
}
"""


def render_proxy():
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(RENDER_PROXY)
    try:
        r = subprocess.run([os.path.join(nl.ROOT, "czctl"), "run", f.name], capture_output=True, text=True, timeout=30)
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        raise RuntimeError("rendering the proxy Deployment failed: " + r.stderr)
    return json.loads(r.stdout)


def proxy_pod(name, conf_name):
    """A pod with the proxy's spec (securityContext, limits, probes, volumes)
    whose config volume holds ConfigMap conf_name."""
    spec = json.loads(json.dumps(PROXY_SPEC))
    for v in spec["volumes"]:
        if v.get("configMap") is not None or v.get("secret") is not None:   # the configuration
            v.pop("secret", None)
            v["configMap"] = {"name": conf_name}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"test": name}}, "spec": spec}


def health_port():
    c = PROXY_SPEC["containers"][0]
    return next(p["containerPort"] for p in c["ports"] if p["name"] == "health")


def pod(name):
    return SB.api.get("/api/v1/namespaces/default/pods/" + name, missing=None)


def status(name, container=None):
    p = pod(name) or {}
    for cs in (p.get("status") or {}).get("containerStatuses") or []:
        if container is None or cs["name"] == container:
            return cs
    return None


def pod_get(name, port, path):
    """An HTTP GET to a pod's port, as another pod of the cluster would send it."""
    return nl.http_get(pod(name)["status"]["podIP"], port, path)


def wait_ready(name, timeout=20):
    return SB.wait_for(lambda: (status(name) or {}).get("ready"), timeout, "pod %s ready" % name)


def logs(name, container=None, previous=False):
    args = ["logs", name] + (["-c", container] if container else []) + (["--previous"] if previous else [])
    return SB.kubectl(*args, check=False).stdout


def setUpModule():
    global SB, PROXY_SPEC
    PROXY_SPEC = render_proxy()["spec"]["template"]["spec"]
    SB = nl.Sandbox().start()
    SB.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "proxy-ok"},
              "data": {"nginx.conf": PROXY_CONF % health_port()}})
    SB.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "proxy-writes-root"},
              "data": {"nginx.conf": PROXY_CONF.replace("pid /tmp/nginx.pid;", "pid /var/run/nginx.pid;")
                       % health_port()}})
    SB.apply(proxy_pod("proxy-ok", "proxy-ok"))
    SB.apply(proxy_pod("proxy-writes-root", "proxy-writes-root"))


def tearDownModule():
    if SB is not None:
        SB.stop()


class SecurityContextTest(unittest.TestCase):
    def test_proxy_security_context_runs_as_101_with_a_read_only_root(self):
        c = PROXY_SPEC["containers"][0]
        self.assertEqual((c["securityContext"]["runAsUser"], c["securityContext"]["readOnlyRootFilesystem"]),
                         (101, True), "the proxy's own securityContext")
        wait_ready("proxy-ok")
        self.assertEqual(pod_get("proxy-ok", 8080, "/"), (200, b"proxy-ok\n"), "$hostname is the pod's name")
        # What a shell exec'd into the proxy sees (the image has sh, touch, grep)
        r = SB.kubectl("exec", "proxy-ok", "--", "sh", "-c",
                       "id -u; id -g; hostname; touch /etc/nginx/x 2>&1; touch /tmp/ok && echo tmp-ok; "
                       "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; cat /tmp/nginx.pid")
        for want in ("101\n101\nproxy-ok\n", "touch: cannot touch '/etc/nginx/x': Read-only file system",
                     "tmp-ok", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1"):
            self.assertIn(want, r.stdout)
        self.assertRegex(r.stdout, r"\n\d+\n$", "nginx's pid file in the /tmp emptyDir")
        r = SB.kubectl("exec", "proxy-ok", "--", "no-such-tool", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('exec: "no-such-tool": executable file not found in $PATH', r.stderr)

    def test_on_the_node_nginx_runs_as_101_within_its_limits(self):
        p = wait_ready("proxy-ok") and pod("proxy-ok")
        pids = nl.pids_of_pod(SB.dir, p)
        self.assertGreaterEqual(len(pids), 2, "master and worker")
        for pid in pids:
            with open("/proc/%d/status" % pid) as f:
                uids = [line.split()[1:] for line in f if line.startswith(("Uid:", "Gid:"))]
            self.assertEqual(uids, [["101"] * 4, ["101"] * 4], "pid %d" % pid)
            with open("/proc/%d/mountinfo" % pid) as f:
                root = next(line.split() for line in f if line.split()[4] == "/")
            self.assertTrue(root[5].startswith("ro"), root)
        with open("/proc/%d/cgroup" % pids[0]) as f:
            cg = dict(line.strip().split(":", 2)[1:] for line in f)
        with open("/sys/fs/cgroup/memory%s/memory.limit_in_bytes" % cg["memory"]) as f:
            self.assertEqual(int(f.read()), 64 << 20)
        with open("/sys/fs/cgroup/cpu%s/cpu.cfs_quota_us" % (cg.get("cpu") or cg.get("cpu,cpuacct"))) as f:
            self.assertEqual(int(f.read()), 50000, "limits.cpu 500m")

    def test_config_writing_outside_writable_volumes_fails_as_on_a_node(self):
        cs = SB.wait_for(lambda: (lambda s: s if s and s.get("restartCount", 0) >= 1 else None)(
            status("proxy-writes-root")), what="the failing proxy to be restarted")
        term = cs["lastState"]["terminated"]
        self.assertEqual((term["reason"], term["exitCode"]), ("Error", 1))
        out = logs("proxy-writes-root") + logs("proxy-writes-root", previous=True)
        self.assertIn('nginx: [emerg] open() "/var/run/nginx.pid" failed (30: Read-only file system)', out)
        self.assertFalse(cs["ready"])

    def test_run_as_non_root_refuses_an_image_that_runs_as_root(self):
        SB.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rootful"},
                  "spec": {"securityContext": {"runAsNonRoot": True},
                           "containers": [{"name": "main", "image": "nginx:1.27"}]}})
        cs = SB.wait_for(lambda: (lambda s: s if s and "waiting" in s["state"] and
                                  s["state"]["waiting"].get("reason") == "CreateContainerConfigError" else None)(
            status("rootful")), what="CreateContainerConfigError")
        uid = pod("rootful")["metadata"]["uid"]
        self.assertEqual(cs["state"]["waiting"]["message"],
                         'container has runAsNonRoot and image will run as root (pod: "rootful_default(%s)", '
                         'container: main)' % uid)


class LimitsTest(unittest.TestCase):
    def test_memory_past_the_limit_ends_oom_killed_and_restarts_with_back_off(self):
        SB.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hungry"},
                  "spec": {"containers": [{"name": "main", "image": "nginx:1.27", "command": ["tail", "/dev/zero"],
                                           "resources": {"limits": {"memory": "16Mi"}}}]}})
        cs = SB.wait_for(lambda: (lambda s: s if s and (s["state"].get("waiting") or {}).get("reason") ==
                                  "CrashLoopBackOff" else None)(status("hungry")), timeout=30,
                         what="CrashLoopBackOff after OOM kills")
        term = cs["lastState"]["terminated"]
        self.assertEqual((term["reason"], term["exitCode"]), ("OOMKilled", 137))
        self.assertGreaterEqual(cs["restartCount"], 1)
        uid = pod("hungry")["metadata"]["uid"]
        self.assertEqual(cs["state"]["waiting"]["message"],
                         "back-off 10s restarting failed container=main pod=hungry_default(%s)" % uid)


class VolumeTest(unittest.TestCase):
    def test_configmap_changes_reach_a_running_pod_but_not_a_subpath(self):
        SB.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "live"},
                  "data": {"value.txt": "one\n"}})
        SB.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "live-conf"},
                  "data": {"default.conf": "server { listen 8080; location /full/ { alias /etc/live/; } "
                                           "location /sub/ { alias /etc/sub/; } }"}})
        SB.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
                  "spec": {"containers": [{"name": "main", "image": "nginx:1.27",
                                           "ports": [{"containerPort": 8080}],
                                           "volumeMounts": [{"name": "live", "mountPath": "/etc/live"},
                                                            {"name": "live", "mountPath": "/etc/sub/value.txt",
                                                             "subPath": "value.txt"},
                                                            {"name": "conf", "mountPath": "/etc/nginx/conf.d"}]}],
                           "volumes": [{"name": "live", "configMap": {"name": "live"}},
                                       {"name": "conf", "configMap": {"name": "live-conf"}}]}})
        wait_ready("reader")
        self.assertEqual(pod_get("reader", 8080, "/full/value.txt"), (200, b"one\n"))
        SB.api.merge_patch("/api/v1/namespaces/default/configmaps/live", {"data": {"value.txt": "two\n"}})
        SB.wait_for(lambda: pod_get("reader", 8080, "/full/value.txt") == (200, b"two\n"),
                    what="the update in the mounted volume")
        self.assertEqual(pod_get("reader", 8080, "/sub/value.txt"), (200, b"one\n"), "subPath mounts never update")


    def test_entrypoint_renders_templates_with_the_containers_environment(self):
        SB.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tpl"},
                  "data": {"default.conf.template": 'server { listen 80; location / { '
                                                    'return 200 "greeting=${GREETING}\\n"; } }'}})
        SB.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "templated"},
                  "spec": {"containers": [{"name": "main", "image": "nginx:1.27",
                                           "env": [{"name": "GREETING", "value": "hello"}],
                                           "volumeMounts": [{"name": "t", "mountPath": "/etc/nginx/templates"}]}],
                           "volumes": [{"name": "t", "configMap": {"name": "tpl"}}]}})
        wait_ready("templated")
        self.assertEqual(pod_get("templated", 80, "/"), (200, b"greeting=hello\n"))
        self.assertIn("20-envsubst-on-templates.sh: Running envsubst on /etc/nginx/templates/default.conf.template "
                      "to /etc/nginx/conf.d/default.conf", logs("templated"))


class ProbeAndHookTest(unittest.TestCase):
    def test_exec_readiness_probe_runs_in_the_container(self):
        SB.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "execprobe"},
                  "spec": {"containers": [{
                      "name": "main", "image": "nginx:1.27",
                      "command": ["sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 60"],
                      "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1}}]}})
        wait_ready("execprobe")
        events = SB.kubectl("get", "events", "--field-selector", "involvedObject.name=execprobe", "-o", "json").stdout
        unhealthy = [e["message"] for e in json.loads(events)["items"] if e["reason"] == "Unhealthy"]
        self.assertTrue(unhealthy and all(m.startswith("Readiness probe failed: cat: /tmp/ready: No such file")
                                          for m in unhealthy), unhealthy)

    def test_pre_stop_runs_before_the_stop_signal_within_the_grace_period(self):
        # main's preStop hook outlives the grace period: it is cut short and
        # the stop signal (SIGQUIT, the nginx image's) still comes; main logs
        # it and keeps running until the SIGKILL. The sidecar prints what
        # happens; its own preStop (cut short too) and ignoring its stop
        # signal keep it up until that SIGKILL.
        main = "trap 'echo stop-signal >> /shared/events' QUIT; while :; do sleep 0.1; done"
        SB.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hooked"},
                  "spec": {"terminationGracePeriodSeconds": 3,
                           "containers": [
                               {"name": "main", "image": "nginx:1.27", "command": ["sh", "-c", main],
                                "lifecycle": {"preStop": {"exec": {"command": [
                                    "sh", "-c", "echo prestop-$(hostname) >> /shared/events; sleep 30"]}}},
                                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
                               {"name": "watch", "image": "nginx:1.27",
                                "command": ["sh", "-c", "trap '' QUIT; touch /shared/events; "
                                                        "exec tail -f /shared/events"],
                                "lifecycle": {"preStop": {"sleep": {"seconds": 30}}},
                                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}],
                           "volumes": [{"name": "shared", "emptyDir": {}}]}})
        SB.wait_for(lambda: all(c["ready"] for c in (pod("hooked") or {}).get("status", {}).get(
            "containerStatuses", [{"ready": False}])), what="both containers running")
        SB.kubectl("delete", "pod", "hooked", "--wait=false")
        out = SB.wait_for(lambda: (lambda t: t if "stop-signal" in t else None)(logs("hooked", "watch")),
                          what="the stop signal after the hook")
        self.assertEqual(out.split(), ["prestop-hooked", "stop-signal"])
        SB.kubectl("wait", "--for=delete", "pod/hooked", "--timeout=30s")


if __name__ == "__main__":
    tap.main()
