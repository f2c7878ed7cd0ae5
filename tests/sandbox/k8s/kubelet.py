"""The sandbox kubelet: pods as local processes, each pod in its own network
namespace (k8s/network.py gives it one, with its own IP on the cluster bridge).

One PodWorker thread per pod owns that pod's containers and writes its status;
process exits and probe results wake it. Its threads run in the cluster
namespace, as a kubelet runs on its node: probes and start checks reach pod IPs
as the node does. See README "Node: kubelet"."""
import base64
import copy
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from . import images
from . import netns
from . import network as network_mod
from . import podenv
from . import nodeutil as u

IPAM = network_mod.IPAM
ECHO_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo.py")
BACKOFF_BASE = 10.0        # CrashLoopBackOff / ImagePullBackOff, as the real kubelet
BACKOFF_MAX = 300.0
START_TIMEOUT = 10.0       # how long a container may take to open its listeners


class VolumeError(Exception):
    pass


class ConfigError(Exception):
    """CreateContainerConfigError (env from a missing ConfigMap or Secret)."""


def _kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def _group_alive(pgid):
    return _kill_group(pgid, 0)


def _proc_stat_pgrp_members(pgid):
    """pids whose process group is pgid (from /proc), for stragglers after the leader died."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return out


class Probe:
    """Probe state for one container and one probe kind."""

    def __init__(self, kind, spec):
        self.kind = kind
        self.spec = spec
        self.initial = spec.get("initialDelaySeconds", 0) or 0
        self.period = spec.get("periodSeconds", 10) or 10
        self.timeout = spec.get("timeoutSeconds", 1) or 1
        self.failure_threshold = spec.get("failureThreshold", 3) or 3
        self.success_threshold = spec.get("successThreshold", 1) or 1
        self.successes = 0
        self.failures = 0
        self.result = None       # None until the first decision, then True/False
        self.next_due = None
        self.last_message = ""


class Container:
    def __init__(self, spec, index):
        self.spec = spec
        self.name = spec.get("name")
        self.index = index
        self.image = spec.get("image") or ""
        self.kind = images.kind_of(self.image)
        self.proc = None
        self.pgid = None
        self.exited = False
        self.state = "waiting"
        self.waiting_reason = "ContainerCreating"
        self.waiting_message = None
        self.started_at = None
        self.finished_at = None
        self.exit_code = None
        self.term_reason = None
        self.term_message = None
        self.last_state = {}
        self.restart_count = 0
        self.ready = False
        self.started = False
        self.container_id = None
        self.next_start = 0.0
        self.backoff = 0.0
        self.pull_backoff = 0.0
        self.next_pull = 0.0
        self.pulled = False
        self.pull_shown_until = 0.0
        self.terminated = {}
        self.probes = {}
        self.probe_gen = 0
        self.kill_reason = None
        self.ever_started = False
        self.run_started_mono = None


class PodWorker:
    def __init__(self, kubelet, pod):
        self.kubelet = kubelet
        self.store = kubelet.store
        self.pod = pod
        md = u.meta(pod)
        self.ns, self.name, self.uid = md.get("namespace"), md.get("name"), md.get("uid")
        self.dir = os.path.join(kubelet.state_dir, "pods", self.ns, self.name)
        self.cv = threading.Condition()
        self.pending = True
        self.deleted = False
        self.shutdown_grace = None
        self.ip = None
        self.netns = None          # the pod's network namespace (path); containers enter it
        self.resolv_conf = os.path.join(self.dir, "resolv.conf")   # the pod's /etc/resolv.conf
        self.volumes_ready = False
        self.volume_error = None
        self.containers = [Container(c, i) for i, c in enumerate((pod.get("spec") or {}).get("containers") or [])]
        self.start_time = None
        self.wake_at = None
        self.conds = {}
        self.last_status = None
        self.thread = threading.Thread(target=self._run, name="pod-%s/%s" % (self.ns, self.name), daemon=True)

    # -- signalling ---------------------------------------------------------
    def update(self, pod=None, deleted=False):
        with self.cv:
            if pod is not None:
                self.pod = pod
            self.deleted = self.deleted or deleted
            self.pending = True
            self.cv.notify()

    def wake(self):
        self.update()

    def stop(self, grace):
        with self.cv:
            self.shutdown_grace = grace
            self.pending = True
            self.cv.notify()

    def _schedule(self, at):
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at

    def _run(self):
        try:
            netns.enter(self.kubelet.network.cluster_netns)
            while True:
                with self.cv:
                    while not self.pending:
                        timeout = None if self.wake_at is None else max(0.0, self.wake_at - time.monotonic())
                        if timeout == 0.0:
                            break
                        self.cv.wait(timeout)
                    self.pending = False
                    self.wake_at = None
                try:
                    if self.sync():
                        return
                except Exception as e:
                    u.log.warning("kubelet: pod %s/%s sync failed: %r", self.ns, self.name, e, exc_info=True)
                    self._schedule(time.monotonic() + 1.0)
        finally:
            self.kubelet._worker_done(self)

    # -- main loop ------------------------------------------------------------
    def sync(self):
        """One pass; returns True when the worker is finished."""
        if self.shutdown_grace is not None:
            self._kill_all(self.shutdown_grace)
            self._release_network()
            return True
        if self.deleted or u.meta(self.pod).get("deletionTimestamp"):
            grace = u.meta(self.pod).get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            self._kill_all(grace)
            self._release_network()
            if not self.deleted:
                try:
                    self.store.delete("pods", self.ns, self.name)
                except Exception as e:
                    if u.api_error_code(e) != 404:
                        raise
            shutil.rmtree(os.path.join(self.dir, "root"), ignore_errors=True)
            shutil.rmtree(os.path.join(self.dir, "volumes"), ignore_errors=True)
            return True
        phase = (self.pod.get("status") or {}).get("phase")
        if self.ip is None:
            if phase in ("Succeeded", "Failed"):
                return False   # a finished pod from before: nothing to run
            self.netns, self.ip = self.kubelet.network.add_pod(self.uid)
            self.start_time = u.now_rfc3339()
            self._bind()
            os.makedirs(self.dir, exist_ok=True)
            with open(self.resolv_conf, "w") as f:
                f.write(self._resolv_conf_text())
        if not self.volumes_ready:
            try:
                self._setup_volumes()
                self.volumes_ready = True
                self.volume_error = None
            except VolumeError as e:
                if str(e) != self.volume_error:
                    u.record_event(self.store, self._ref(), "Warning", "FailedMount", str(e), "kubelet")
                self.volume_error = str(e)
                self._schedule(time.monotonic() + 2.0)
        if self.volumes_ready:
            specs = {s.get("name"): s for s in (self.pod.get("spec") or {}).get("containers") or []}
            for c in self.containers:
                new = specs.get(c.name)
                if new is not None and (new.get("image") or "") != c.image:
                    self._change_image(c, new)
                self._sync_container(c)
        self._write_status()
        return False

    def _release_network(self):
        if self.ip is not None:
            self.kubelet.network.remove_pod(self.netns, self.ip)
            self.netns = self.ip = None

    def _resolv_conf_text(self):
        """The pod's /etc/resolv.conf as a kubelet writes it for its dnsPolicy
        (ClusterFirst by default) and dnsConfig."""
        spec = self.pod.get("spec") or {}
        policy = spec.get("dnsPolicy") or "ClusterFirst"
        servers, searches, options = [], [], []
        if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
            d = network_mod.CLUSTER_DOMAIN
            servers = [network_mod.DNS_IP]
            searches = ["%s.svc.%s" % (self.ns, d), "svc.%s" % d, d]
            options = ["ndots:5"]
        elif policy == "Default":
            # the node's resolver; pods have no route to it: nothing leaves the machine
            try:
                with open("/etc/resolv.conf") as f:
                    for line in f:
                        w = line.split()
                        if w and w[0] == "nameserver":
                            servers += w[1:2]
                        elif w and w[0] in ("search", "domain"):
                            searches += w[1:]
                        elif w and w[0] == "options":
                            options += w[1:]
            except OSError:
                pass
        cfg = spec.get("dnsConfig") or {}
        servers = (servers + [x for x in cfg.get("nameservers") or [] if x not in servers])[:3]
        searches = (searches + [x for x in cfg.get("searches") or [] if x not in searches])[:32]
        for o in cfg.get("options") or []:
            name = o.get("name")
            options = [x for x in options if x.split(":")[0] != name]
            options.append(name if o.get("value") is None else "%s:%s" % (name, o["value"]))
        lines = []
        if searches:
            lines.append("search " + " ".join(searches))
        lines += ["nameserver " + x for x in servers]
        if options:
            lines.append("options " + " ".join(options))
        return "\n".join(lines) + "\n"

    def _ref(self):
        p = copy.deepcopy(self.pod)
        p.setdefault("kind", "Pod")
        p.setdefault("apiVersion", "v1")
        return p

    def _bind(self):
        if (self.pod.get("spec") or {}).get("nodeName"):
            return
        try:
            bind = getattr(self.store, "bind", None)
            if bind is not None:
                bind(self.ns, self.name, u.NODE_NAME)
            else:
                _bind_fallback(self.store, self.ns, self.name, u.NODE_NAME)
        except Exception as e:
            if u.api_error_code(e) != 404:
                u.log.warning("kubelet: binding %s/%s: %r", self.ns, self.name, e)
        u.record_event(self.store, self._ref(), "Normal", "Scheduled",
                       "Successfully assigned %s/%s to %s" % (self.ns, self.name, u.NODE_NAME), "default-scheduler")

    # -- volumes ------------------------------------------------------------
    def _setup_volumes(self):
        vroot = os.path.join(self.dir, "volumes")
        spec = self.pod.get("spec") or {}
        for v in spec.get("volumes") or []:
            name = v.get("name")
            path = os.path.join(vroot, name)
            if v.get("emptyDir") is not None:
                os.makedirs(path, exist_ok=True)
                continue
            files = self._volume_files(v)
            if files is None:
                continue
            tmp = path + ".new"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            for rel, (data, mode) in files.items():
                p = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(data)
                if mode is not None:
                    os.chmod(p, mode & 0o777)
            shutil.rmtree(path, ignore_errors=True)
            os.rename(tmp, path)

    def _key_files(self, kind, obj_name, items, default_mode, optional, vname):
        obj = self.store.get(kind, self.ns, obj_name)
        singular = "configmap" if kind == "configmaps" else "secret"
        if obj is None:
            if optional:
                return {}
            raise VolumeError('MountVolume.SetUp failed for volume "%s" : %s "%s" not found'
                              % (vname, singular, obj_name))
        data = {}
        if kind == "configmaps":
            for k, val in (obj.get("data") or {}).items():
                data[k] = val.encode()
            for k, val in (obj.get("binaryData") or {}).items():
                data[k] = base64.b64decode(val)
        else:
            for k, val in (obj.get("data") or {}).items():
                data[k] = base64.b64decode(val)
        out = {}
        if items:
            for it in items:
                k = it.get("key")
                if k not in data:
                    if optional:
                        continue
                    raise VolumeError('MountVolume.SetUp failed for volume "%s" : configmap references non-existent '
                                      'config key: %s' % (vname, k) if kind == "configmaps" else
                                      'MountVolume.SetUp failed for volume "%s" : references non-existent secret '
                                      'key: %s' % (vname, k))
                out[it.get("path") or k] = (data[k], it.get("mode", default_mode))
        else:
            for k, val in data.items():
                out[k] = (val, default_mode)
        return out

    def _volume_files(self, v):
        name = v.get("name")
        if v.get("configMap") is not None:
            c = v["configMap"]
            return self._key_files("configmaps", c.get("name"), c.get("items"), c.get("defaultMode", 0o644),
                                   c.get("optional"), name)
        if v.get("secret") is not None:
            s = v["secret"]
            return self._key_files("secrets", s.get("secretName"), s.get("items"), s.get("defaultMode", 0o644),
                                   s.get("optional"), name)
        if v.get("downwardAPI") is not None:
            d = v["downwardAPI"]
            return {it.get("path"): (self._field(it.get("fieldRef") or {}).encode(), it.get("mode", d.get("defaultMode")))
                    for it in d.get("items") or [] if it.get("fieldRef")}
        if v.get("projected") is not None:
            p = v["projected"]
            out = {}
            for src in p.get("sources") or []:
                if src.get("configMap") is not None:
                    c = src["configMap"]
                    out.update(self._key_files("configmaps", c.get("name"), c.get("items"), p.get("defaultMode", 0o644),
                                               c.get("optional"), name))
                elif src.get("secret") is not None:
                    s = src["secret"]
                    out.update(self._key_files("secrets", s.get("name"), s.get("items"), p.get("defaultMode", 0o644),
                                               s.get("optional"), name))
                elif src.get("downwardAPI") is not None:
                    for it in src["downwardAPI"].get("items") or []:
                        if it.get("fieldRef"):
                            out[it.get("path")] = (self._field(it["fieldRef"]).encode(), None)
            return out
        if v.get("hostPath") is not None:
            return None
        raise VolumeError('MountVolume.SetUp failed for volume "%s" : the sandbox supports configMap, secret, '
                          'emptyDir, downwardAPI and projected volumes only' % name)

    def _field(self, ref):
        path = ref.get("fieldPath", "")
        md = u.meta(self.pod)
        m = re.match(r"^metadata\.(labels|annotations)\['(.*)'\]$", path)
        if m:
            return (md.get(m.group(1)) or {}).get(m.group(2), "")
        return {
            "metadata.name": md.get("name"), "metadata.namespace": md.get("namespace"),
            "metadata.uid": md.get("uid"), "status.podIP": self.ip, "status.hostIP": self.kubelet.network.node_ip,
            "spec.nodeName": u.NODE_NAME, "spec.serviceAccountName":
                (self.pod.get("spec") or {}).get("serviceAccountName", "default"),
            "status.podIPs": self.ip, "status.hostIPs": self.kubelet.network.node_ip,
        }.get(path, "") or ""

    def _mount(self, c, root):
        spec = self.pod.get("spec") or {}
        vols = {v.get("name"): v for v in spec.get("volumes") or []}
        mounts = sorted(c.spec.get("volumeMounts") or [], key=lambda m: len(m.get("mountPath", "")))
        for m in mounts:
            v = vols.get(m.get("name"))
            if v is None:
                continue
            if v.get("hostPath") is not None:
                src = os.path.join(self.kubelet.state_dir, "hostpath", (v["hostPath"].get("path") or "").lstrip("/"))
                os.makedirs(src, exist_ok=True)
            else:
                src = os.path.join(self.dir, "volumes", m.get("name"))
            if m.get("subPath"):
                src = os.path.join(src, m["subPath"])
                if not os.path.exists(src):
                    os.makedirs(src, exist_ok=True)   # kubelet creates a missing subPath as a directory
            dst = os.path.join(root, m.get("mountPath", "/").lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.islink(dst) or os.path.isfile(dst):
                os.unlink(dst)
            elif os.path.isdir(dst):
                shutil.rmtree(dst)
            os.symlink(src, dst)

    # -- containers -----------------------------------------------------------
    def _env(self, c):
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOSTNAME": self.name}
        if c.kind == "echo":
            env["POD_NAME"] = self.name
            env["POD_NAMESPACE"] = self.ns
        spec_env, _ = podenv.container_env(self.store, self.ns, self.pod, c.spec, self._field, self._allocatable,
                                           ConfigError)
        env.update(spec_env)
        return env

    def _allocatable(self):
        node = self.store.get("nodes", None, u.NODE_NAME) or {}
        return (node.get("status") or {}).get("allocatable") or {}

    def _log_path(self, c):
        return os.path.join(self.dir, "%s.log" % c.name)

    def _root(self, c):
        return os.path.join(self.dir, "root" if c.index == 0 else "root-%s" % c.name)

    def _change_image(self, c, spec):
        """A pod update changed the image (the only container field that may
        change): the kubelet kills the container and starts the new image."""
        u.record_event(self.store, self._ref(), "Normal", "Killing",
                       "Container %s definition changed, will be restarted" % c.name, "kubelet")
        proc = c.proc
        c.probe_gen += 1
        if proc is not None:
            grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            self._term_then_kill(proc, grace)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            c.exited = False
            c.proc = None
            rc = proc.returncode if proc.returncode is not None else -9
            c.exit_code = 128 - rc if rc < 0 else rc
            c.finished_at = u.now_rfc3339()
            c.last_state = {"terminated": {"exitCode": c.exit_code, "reason": "Completed" if c.exit_code == 0
                                           else "Error", "startedAt": c.started_at, "finishedAt": c.finished_at,
                                           "containerID": c.container_id}}
        c.spec = spec
        c.image = spec.get("image") or ""
        c.kind = images.kind_of(c.image)
        c.state, c.waiting_reason, c.waiting_message = "waiting", "ContainerCreating", None
        c.ready = c.started = False
        c.next_start = c.next_pull = 0.0
        c.pull_backoff = 0.0
        c.pulled = False

    def _sync_container(self, c):
        nowm = time.monotonic()
        if c.kind is None:
            self._sync_pull_failure(c, nowm)
            return
        if c.exited and c.proc is not None:
            self._on_exit(c)
        if c.proc is not None:
            return
        if c.state == "terminated":
            return   # not restarted (restartPolicy)
        if nowm < c.next_start:
            self._schedule(c.next_start)
            return
        self._start(c)

    def _sync_pull_failure(self, c, nowm):
        if nowm < c.next_pull:
            if c.waiting_reason == "ErrImagePull" and nowm >= c.pull_shown_until:
                c.waiting_reason = "ImagePullBackOff"
                c.waiting_message = 'Back-off pulling image "%s": ErrImagePull: %s' % (c.image, images.pull_error(c.image))
                u.record_event(self.store, self._ref(), "Normal", "BackOff", 'Back-off pulling image "%s"' % c.image,
                               "kubelet")
                u.record_event(self.store, self._ref(), "Warning", "Failed", "Error: ImagePullBackOff", "kubelet")
            else:
                self._schedule(min(c.next_pull, c.pull_shown_until) if c.waiting_reason == "ErrImagePull"
                               else c.next_pull)
            return
        u.record_event(self.store, self._ref(), "Normal", "Pulling", 'Pulling image "%s"' % c.image, "kubelet")
        msg = 'Failed to pull image "%s": %s' % (c.image, images.pull_error(c.image))
        u.record_event(self.store, self._ref(), "Warning", "Failed", msg, "kubelet")
        u.record_event(self.store, self._ref(), "Warning", "Failed", "Error: ErrImagePull", "kubelet")
        c.state = "waiting"
        c.waiting_reason = "ErrImagePull"
        c.waiting_message = msg
        c.pull_backoff = BACKOFF_BASE if not c.pull_backoff else min(c.pull_backoff * 2, BACKOFF_MAX)
        c.next_pull = nowm + c.pull_backoff
        c.pull_shown_until = nowm + 1.0
        self._schedule(c.pull_shown_until)

    def _argv(self, c, root, env):
        if c.kind == "echo":
            ports = [p.get("containerPort") for p in c.spec.get("ports") or []
                     if (p.get("protocol") or "TCP") == "TCP" and p.get("containerPort")]
            ports = ports or [8080]
            # every address of its own network namespace, as a container's app does
            argv = [sys.executable, "-I", ECHO_PY, "--ip", self.ip, "--listen", "0.0.0.0", "--container", c.name]
            for p in ports:
                argv += ["--port", str(p)]
            return argv, ports
        # nginx
        try:
            conf, extra = images.nginx_command(c.spec.get("command"), c.spec.get("args"))
        except ValueError as e:
            raise StartError("StartError", 'failed to create containerd task: failed to create shim task: OCI runtime '
                             'create failed: runc create failed: unable to start container process: exec: "%s": '
                             'the sandbox runs only nginx in this image' % e.args[0], 128)
        if not (c.spec.get("command") or []) or os.path.basename((c.spec.get("command") or [""])[0]) in (
                "/docker-entrypoint.sh", "docker-entrypoint.sh"):
            images.envsubst_templates(root, env)
        tr = images.NginxTranslator(root, self.ip, resolve=lambda h: self.kubelet.resolve(h, self.ns))
        try:
            with open(tr.reroot(conf), errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise StartError("Error", 'nginx: [emerg] open() "%s" failed (%d: %s)' % (conf, e.errno, e.strerror), 1)
        try:
            out = tr.translate(text, extra)
        except (images.ConfigError, ValueError, OSError) as e:
            raise StartError("Error", "nginx: [emerg] %s" % e, 1)
        except images.UnresolvedHost as e:
            raise StartError("Error", 'nginx: [emerg] host not found in upstream "%s"' % e.args[0], 1)
        path = os.path.join(self.dir, "%s.nginx.conf" % c.name)
        with open(path, "w") as f:
            f.write(out)
        return [images.NGINX_BIN, "-p", tr.reroot("/etc/nginx") + "/", "-e", "stderr", "-c", path], \
            sorted(tr.listens)

    def _start(self, c):
        root = self._root(c)
        logp = self._log_path(c)
        if c.ever_started and os.path.exists(logp):
            os.replace(logp, os.path.join(self.dir, "%s.previous.log" % c.name))
        c.container_id = "containerd://" + os.urandom(32).hex()
        if c.ever_started:
            c.restart_count += 1
        if not c.pulled:
            c.pulled = True
            u.record_event(self.store, self._ref(), "Normal", "Pulled",
                           'Container image "%s" already present on machine' % c.image, "kubelet")
        try:
            env = self._env(c)
        except ConfigError as e:
            c.state, c.waiting_reason, c.waiting_message = "waiting", "CreateContainerConfigError", str(e)
            u.record_event(self.store, self._ref(), "Warning", "Failed", "Error: %s" % e, "kubelet")
            self._schedule(time.monotonic() + 2.0)
            return
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        if c.kind != "echo":
            images.populate_nginx_root(root, c.kind)
        self._mount(c, root)
        logf = open(logp, "ab")
        try:
            try:
                argv, ports = self._argv(c, root, env)
            except StartError as e:
                logf.write((e.message + "\n").encode())
                self._record_failed_start(c, e)
                return
            # The simplest way into the pod's network namespace (nsenter execs, so
            # the pid stays the container's); a container runtime replaces this.
            argv = ["nsenter", "--net=" + self.netns, "--"] + argv
            c.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                                      cwd=root, process_group=0, close_fds=True)
        finally:
            logf.close()
        c.pgid = c.proc.pid
        c.exited = False
        c.started_at = u.now_rfc3339()
        c.run_started_mono = time.monotonic()
        c.ever_started = True
        self.kubelet.track(c.proc.pid)
        proc = c.proc
        threading.Thread(target=self._wait_proc, args=(c, proc), daemon=True,
                         name="wait-%s/%s/%s" % (self.ns, self.name, c.name)).start()
        u.record_event(self.store, self._ref(), "Normal", "Created", "Created container %s" % c.name, "kubelet")
        # Running once every listener accepts (or the process died trying).
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(ports)
        while pending and time.monotonic() < deadline and proc.poll() is None and self.shutdown_grace is None \
                and not self.deleted:
            port = pending[0]
            try:
                s = socket.create_connection((self.ip, port), timeout=0.5)
                s.close()
                pending.pop(0)
            except OSError:
                time.sleep(0.003)
        if proc.poll() is not None:
            c.exited = True
            self._on_exit(c)
            return
        c.state = "running"
        c.waiting_reason = c.waiting_message = None
        u.record_event(self.store, self._ref(), "Normal", "Started", "Started container %s" % c.name, "kubelet")
        self._start_probes(c)

    def _record_failed_start(self, c, e):
        """A container whose process exits at once (bad config) as nginx would."""
        c.started_at = u.now_rfc3339()
        c.ever_started = True
        c.proc = None
        c.exit_code = e.code
        c.term_reason = e.reason
        c.term_message = e.message if e.reason == "StartError" else None
        self._terminated(c)

    def _wait_proc(self, c, proc):
        proc.wait()
        # reap stragglers of the process group (nginx workers after a KILL of the master)
        _kill_group(proc.pid, signal.SIGKILL)
        self.kubelet.untrack(proc.pid)
        if c.proc is proc:
            c.exited = True
            self.wake()

    def _on_exit(self, c):
        rc = c.proc.returncode
        c.proc = None
        c.exited = False
        c.probe_gen += 1
        c.exit_code = 128 - rc if rc < 0 else rc
        c.term_reason = "Completed" if c.exit_code == 0 else "Error"
        c.term_message = None
        self._terminated(c)

    def _terminated(self, c):
        c.finished_at = u.now_rfc3339()
        c.ready = False
        c.started = False
        term = {"exitCode": c.exit_code, "reason": c.term_reason, "startedAt": c.started_at,
                "finishedAt": c.finished_at}
        if c.term_message:
            term["message"] = c.term_message
        if c.container_id:
            term["containerID"] = c.container_id
        policy = (self.pod.get("spec") or {}).get("restartPolicy", "Always")
        restart = policy == "Always" or (policy == "OnFailure" and c.exit_code != 0)
        if not restart:
            c.state = "terminated"
            c.terminated = term
            return
        c.last_state = {"terminated": term}
        nowm = time.monotonic()
        ran = nowm - (c.run_started_mono or nowm)
        if ran > 2 * BACKOFF_MAX:
            c.backoff = 0.0
        if c.backoff == 0.0:
            delay = 0.0
            c.backoff = BACKOFF_BASE
        else:
            delay = c.backoff
            c.backoff = min(c.backoff * 2, BACKOFF_MAX)
        c.next_start = nowm + delay
        c.state = "waiting"
        if delay > 0:
            c.waiting_reason = "CrashLoopBackOff"
            c.waiting_message = "back-off %ds restarting failed container=%s pod=%s_%s(%s)" % (
                delay, c.name, self.name, self.ns, self.uid)
            u.record_event(self.store, self._ref(), "Warning", "BackOff",
                           "Back-off restarting failed container %s in pod %s_%s(%s)" % (
                               c.name, self.name, self.ns, self.uid), "kubelet")
            self._schedule(c.next_start)
        else:
            c.waiting_reason, c.waiting_message = "ContainerCreating", None
            self.pending = True

    # -- probes -----------------------------------------------------------------
    def _start_probes(self, c):
        c.probe_gen += 1
        gen = c.probe_gen
        c.probes = {}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if c.spec.get(kind):
                c.probes[kind] = Probe(kind, c.spec[kind])
        c.started = "startupProbe" not in c.probes
        c.ready = c.started and "readinessProbe" not in c.probes
        if c.probes:
            threading.Thread(target=self._probe_loop, args=(c, gen), daemon=True,
                             name="probe-%s/%s/%s" % (self.ns, self.name, c.name)).start()

    def _probe_loop(self, c, gen):
        netns.enter(self.kubelet.network.cluster_netns)   # probes come from the node, as a kubelet's do
        start = time.monotonic()
        for p in c.probes.values():
            p.next_due = start + p.initial
        while c.probe_gen == gen and self.shutdown_grace is None and not self.deleted:
            nowm = time.monotonic()
            active = [p for p in c.probes.values()
                      if p.kind == "startupProbe" and not c.started or p.kind != "startupProbe" and c.started]
            if not active:
                time.sleep(0.05)
                continue
            due = min(p.next_due for p in active)
            if due > nowm:
                time.sleep(min(due - nowm, 0.1))
                continue
            for p in active:
                if p.next_due > nowm or c.probe_gen != gen:
                    continue
                ok, msg = self._probe_once(c, p.spec, p.timeout)
                p.next_due = time.monotonic() + p.period
                self._probe_result(c, p, ok, msg, gen)

    def _probe_result(self, c, p, ok, msg, gen):
        if c.probe_gen != gen:
            return
        changed = False
        if ok:
            p.failures = 0
            p.successes += 1
            if p.result is not True and p.successes >= (p.success_threshold if p.kind == "readinessProbe" else 1):
                p.result = True
                changed = True
        else:
            p.successes = 0
            p.failures += 1
            if p.failures in (1, p.failure_threshold) or p.failures % 10 == 0:
                u.record_event(self.store, self._ref(), "Warning", "Unhealthy", "%s probe failed: %s" % (
                    {"readinessProbe": "Readiness", "livenessProbe": "Liveness", "startupProbe": "Startup"}[p.kind], msg),
                    "kubelet")
            if p.failures >= p.failure_threshold and p.result is not False:
                p.result = False
                changed = True
            elif p.failures >= p.failure_threshold and p.kind != "readinessProbe":
                changed = True
        if not changed:
            return
        if p.kind == "readinessProbe":
            c.ready = bool(p.result)
        elif p.kind == "startupProbe":
            if p.result:
                c.started = True
                c.ready = "readinessProbe" not in c.probes
            else:
                self._kill_for_restart(c, "Container %s failed startup probe, will be restarted" % c.name)
        elif p.kind == "livenessProbe" and not p.result:
            self._kill_for_restart(c, "Container %s failed liveness probe, will be restarted" % c.name)
        self.wake()

    def _kill_for_restart(self, c, message):
        u.record_event(self.store, self._ref(), "Normal", "Killing", message, "kubelet")
        c.probe_gen += 1
        c.ready = False
        proc = c.proc
        if proc is None:
            return
        grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        threading.Thread(target=self._term_then_kill, args=(proc, grace), daemon=True).start()

    @staticmethod
    def _term_then_kill(proc, grace):
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)

    def _probe_port(self, c, port):
        if isinstance(port, int):
            return port
        if isinstance(port, str) and port.isdigit():
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return p.get("containerPort")
        return None

    def _probe_once(self, c, spec, timeout):
        if spec.get("tcpSocket") is not None:
            t = spec["tcpSocket"]
            port = self._probe_port(c, t.get("port"))
            host = t.get("host") or self.ip
            if port is None:
                return False, "invalid port %r" % t.get("port")
            try:
                s = socket.create_connection((host, port), timeout=timeout)
                s.close()
                return True, ""
            except OSError as e:
                return False, "dial tcp %s:%d: connect: %s" % (host, port, e.strerror or e)
        if spec.get("httpGet") is not None:
            g = spec["httpGet"]
            port = self._probe_port(c, g.get("port"))
            host = g.get("host") or self.ip
            if port is None:
                return False, "invalid port %r" % g.get("port")
            path = g.get("path") or "/"
            url = "%s://%s:%d%s" % ((g.get("scheme") or "HTTP").lower(), host, port, path)
            try:
                if (g.get("scheme") or "HTTP").upper() == "HTTPS":
                    import ssl
                    conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                       context=ssl._create_unverified_context())
                else:
                    conn = http.client.HTTPConnection(host, port, timeout=timeout)
                headers = {"User-Agent": "kube-probe/1.32", "Accept": "*/*", "Connection": "close"}
                for h in g.get("httpHeaders") or []:
                    headers[h.get("name")] = h.get("value")
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read(10240)
                conn.close()
                if 200 <= resp.status < 400:
                    return True, ""
                return False, "HTTP probe failed with statuscode: %d" % resp.status
            except socket.timeout:
                return False, 'Get "%s": context deadline exceeded (Client.Timeout exceeded while awaiting headers)' % url
            except OSError as e:
                return False, 'Get "%s": dial tcp %s:%d: connect: %s' % (url, host, port, e.strerror or e)
            except http.client.HTTPException as e:
                return False, 'Get "%s": %s' % (url, e)
        if spec.get("exec") is not None:
            return False, "exec probes are not supported by the sandbox kubelet"
        return False, "probe type not supported by the sandbox kubelet"

    # -- termination --------------------------------------------------------------
    def _kill_all(self, grace):
        procs = [c.proc for c in self.containers if c.proc is not None]
        for c in self.containers:
            c.probe_gen += 1
        for p in procs:
            _kill_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + max(0, grace or 0)
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            if p.poll() is None:
                _kill_group(p.pid, signal.SIGKILL)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
            _kill_group(p.pid, signal.SIGKILL)   # workers left in the group
            for pid in _proc_stat_pgrp_members(p.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for c in self.containers:
            c.proc = None

    # -- status -------------------------------------------------------------------
    def _container_status(self, c):
        st = {"name": c.name, "image": images.normalized(c.image) if c.kind else c.image,
              "imageID": images.image_id(c.image) if c.kind and c.ever_started else "",
              "lastState": copy.deepcopy(c.last_state), "ready": bool(c.ready and c.state == "running"),
              "restartCount": c.restart_count, "started": bool(c.started and c.state == "running")}
        if c.container_id and c.kind:
            st["containerID"] = c.container_id
        if c.state == "running":
            st["state"] = {"running": {"startedAt": c.started_at}}
        elif c.state == "terminated":
            st["state"] = {"terminated": copy.deepcopy(getattr(c, "terminated", {}))}
        else:
            w = {"reason": c.waiting_reason or "ContainerCreating"}
            if c.waiting_message:
                w["message"] = c.waiting_message
            st["state"] = {"waiting": w}
            if c.waiting_reason == "ContainerCreating" and not c.ever_started:
                st.pop("containerID", None)
        return st

    def _set_cond(self, ctype, status, reason=None, message=None):
        old = self.conds.get(ctype)
        ts = u.now_rfc3339()
        if old is not None and old["status"] == status:
            ts = old["lastTransitionTime"]
        c = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": ts}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        self.conds[ctype] = c

    def _write_status(self):
        statuses = [self._container_status(c) for c in self.containers]
        if all(c.state == "terminated" for c in self.containers) and self.containers:
            phase = "Failed" if any(c.exit_code for c in self.containers) else "Succeeded"
        elif any(c.ever_started for c in self.containers):
            phase = "Running"
        else:
            phase = "Pending"
        self._set_cond("PodReadyToStartContainers", "True" if self.ip else "False")
        self._set_cond("Initialized", "True")
        unready = [c.name for c in self.containers if not (c.ready and c.state == "running")]
        if phase == "Succeeded":
            self._set_cond("Ready", "False", "PodCompleted")
            self._set_cond("ContainersReady", "False", "PodCompleted")
        elif unready:
            msg = "containers with unready status: [%s]" % " ".join(unready)
            self._set_cond("Ready", "False", "ContainersNotReady", msg)
            self._set_cond("ContainersReady", "False", "ContainersNotReady", msg)
        else:
            self._set_cond("Ready", "True")
            self._set_cond("ContainersReady", "True")
        self._set_cond("PodScheduled", "True")
        conds = [self.conds[t] for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                                         "PodScheduled")]
        host_ip = self.kubelet.network.node_ip
        mine = {"conditions": conds, "containerStatuses": statuses, "hostIP": host_ip,
                "hostIPs": [{"ip": host_ip}], "phase": phase, "podIP": self.ip, "podIPs": [{"ip": self.ip}],
                "startTime": self.start_time}
        if u.canon(mine) == u.canon(self.last_status):
            return

        def apply(obj):
            st = obj.setdefault("status", {})
            st.update(copy.deepcopy(mine))
        try:
            self.store.patch_status("pods", self.ns, self.name, apply)
            self.last_status = mine
        except Exception as e:
            if u.api_error_code(e) == 404:
                return
            raise


class StartError(Exception):
    def __init__(self, reason, message, code):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.code = code


def _bind_fallback(store, ns, name, node):
    """Set spec.nodeName as the pods/binding subresource does (the store's update
    path refuses pod spec changes, like the real API)."""
    store._enter()
    try:
        key = (ns, name)
        cur = store._objs["pods"].get(key)
        if cur is None or (cur.get("spec") or {}).get("nodeName"):
            return
        import copy as _c
        new = _c.deepcopy(cur)
        new.setdefault("spec", {})["nodeName"] = node
        new["metadata"]["resourceVersion"] = store._next_rv()
        store._objs["pods"][key] = new
        store._emit("MODIFIED", "pods", new, _c.deepcopy(cur))
    finally:
        store._exit()


class Kubelet:
    def __init__(self, store, state_dir, network):
        self.store = store
        self.state_dir = state_dir
        self.network = network
        self.lock = threading.Lock()
        self.workers = {}      # uid -> PodWorker
        self.pids = set()
        self.stopping = False
        self.hosts = {}

    def start(self):
        for p in self.store.list("pods"):
            self.on_event("ADDED", "pods", p)

    def track(self, pid):
        with self.lock:
            self.pids.add(pid)

    def untrack(self, pid):
        with self.lock:
            self.pids.discard(pid)

    def _worker_done(self, w):
        with self.lock:
            if self.workers.get(w.uid) is w:
                del self.workers[w.uid]

    def on_event(self, etype, resource, obj):
        if resource == "pods":
            uid = u.meta(obj).get("uid")
            with self.lock:
                if self.stopping:
                    return
                w = self.workers.get(uid)
                if etype == "DELETED":
                    if w is not None:
                        w.update(obj, deleted=True)
                    return
                if w is None:
                    node = (obj.get("spec") or {}).get("nodeName")
                    if node and node != u.NODE_NAME:
                        return
                    w = PodWorker(self, obj)
                    self.workers[uid] = w
                    w.thread.start()
                else:
                    w.update(obj)
        elif resource in ("configmaps", "secrets"):
            ns = u.meta(obj).get("namespace")
            with self.lock:
                ws = [w for w in self.workers.values() if w.ns == ns and not w.volumes_ready]
            for w in ws:
                w.wake()

    def resolve(self, host, namespace):
        """Service DNS names -> ClusterIP (name, name.ns, name.ns.svc, name.ns.svc.cluster.local)
        and the sandbox hosts file DIR/hosts; None when unknown."""
        h = host.rstrip(".").lower()
        ip = self._hosts_file().get(h)
        if ip:
            return ip
        parts = h.split(".")
        if h.endswith(".svc.cluster.local"):
            parts = parts[:-3]
        elif h.endswith(".svc"):
            parts = parts[:-1]
        if len(parts) == 1:
            name, ns = parts[0], namespace
        elif len(parts) == 2:
            name, ns = parts
        else:
            return None
        svc = self.store.get("services", ns, name)
        if svc is None:
            return None
        ip = (svc.get("spec") or {}).get("clusterIP")
        if ip and ip != "None":
            return ip
        ep = self.store.get("endpoints", ns, name)
        for s in (ep or {}).get("subsets") or []:
            for a in s.get("addresses") or []:
                return a.get("ip")
        return None

    def _hosts_file(self):
        out = {}
        try:
            with open(os.path.join(self.state_dir, "hosts")) as f:
                for line in f:
                    line = line.split("#", 1)[0].split()
                    if len(line) >= 2:
                        for n in line[1:]:
                            out[n.lower()] = line[0]
        except OSError:
            pass
        return out

    def stop(self, grace=2.0):
        with self.lock:
            self.stopping = True
            workers = list(self.workers.values())
        for w in workers:
            w.stop(grace)
        for w in workers:
            w.thread.join(grace + 8)
        # Anything still tracked (a worker stuck somewhere): kill its group.
        with self.lock:
            pids = list(self.pids)
        for pid in pids:
            _kill_group(pid, signal.SIGKILL)
