"""The sandbox kubelet: pods as containers (k8s/runtime.py), each pod in its
own network namespace (k8s/network.py gives it one, with its own IP on the
cluster bridge).

One PodWorker thread per pod owns that pod's containers and writes its status;
process exits and probe results wake it. Its threads run in the cluster
namespace, as a kubelet runs on its node: probes and start checks reach pod IPs
as the node does. See README "Node: kubelet"."""
import base64
import copy
import datetime
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from . import images
from . import netns
from . import network as network_mod
from . import podenv
from . import nodeutil as u
from . import runtime
from . import timing

BACKOFF_BASE = 10.0        # CrashLoopBackOff / ImagePullBackOff, as the real kubelet
BACKOFF_MAX = 300.0
START_TIMEOUT = 10.0       # how long a container may take to open its listeners
MIN_GRACE = 2              # kubelet minimumGracePeriodInSeconds: TERM -> KILL at least this long
CLUSTER_DOMAIN = network_mod.CLUSTER_DOMAIN
API_DATA_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")   # always mounted read-only
HOSTS_HEADER = "# Kubernetes-managed hosts file.\n"
HOSTS_DEFAULTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
                  "fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")


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
        self.after = None        # timing.probe_schedule: the next probe after one that ended
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
        self.cgroup = None         # runtime.Cgroup of the current instance
        self.runtime_spec = None   # what the runtime started it with (also the exec context's)
        self.pull_done_at = None   # realistic timing: when the image pull ends
        self.start_at = None       # realistic timing: when create+start ends
        self.stopping = False      # a stop (hook, signal) is in progress

    def image_config(self):
        return images.config(self.kind)


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
        self.netns = None          # the pod's network namespace (path); its containers enter it
        self.uts_fd = None         # the pod's UTS namespace (hostname), shared by its containers
        self.hostname = None
        self.sandbox_ready_at = None
        self.term_deadline = None  # monotonic time of SIGKILL for a pod being deleted
        self.volumes_ready = False
        self.volume_error = None
        self.volume_hashes = {}    # volume name -> hash of what was written (changes are rewritten)
        self.volumes_dirty = False
        self.next_resync = None    # realistic timing: the pod's next periodic sync
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
                old = u.meta(self.pod)
                new = u.meta(pod)
                if (old.get("labels"), old.get("annotations")) != (new.get("labels"), new.get("annotations")):
                    self.volumes_dirty = True   # downward API volumes follow them
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
            self._kill_all(time.monotonic() + self.shutdown_grace, hooks=False)
            self._teardown()
            return True
        if self.deleted or u.meta(self.pod).get("deletionTimestamp"):
            grace = u.meta(self.pod).get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            if self.term_deadline is None:
                self.term_deadline = time.monotonic() + max(0, grace)
            self._kill_all(self.term_deadline, hooks=grace > 0)
            self._teardown()
            if not self.deleted:
                try:
                    self.store.delete("pods", self.ns, self.name)
                except Exception as e:
                    if u.api_error_code(e) != 404:
                        raise
            shutil.rmtree(os.path.join(self.dir, "containers"), ignore_errors=True)
            shutil.rmtree(os.path.join(self.dir, "volumes"), ignore_errors=True)
            return True
        phase = (self.pod.get("status") or {}).get("phase")
        nowm = time.monotonic()
        if self.ip is None:
            if phase in ("Succeeded", "Failed"):
                return False   # a finished pod from before: nothing to run
            self.netns, self.ip = self.kubelet.network.add_pod(self.uid)
            self.start_time = u.now_rfc3339()
            self._bind()
            os.makedirs(self.dir, exist_ok=True)
            self._create_sandbox()
            nowm = time.monotonic()
        if not self.volumes_ready:
            try:
                self._setup_volumes()
                self.volumes_ready = True
                self.volume_error = None
                self.volumes_dirty = False
            except VolumeError as e:
                if str(e) != self.volume_error:
                    u.record_event(self.store, self._ref(), "Warning", "FailedMount", str(e), "kubelet")
                self.volume_error = str(e)
                self._schedule(time.monotonic() + 2.0)
        elif self._resync_due(nowm):
            self._refresh_volumes()
        if self.volumes_ready and nowm < self.sandbox_ready_at:
            self._schedule(self.sandbox_ready_at)
        elif self.volumes_ready:
            specs = {s.get("name"): s for s in (self.pod.get("spec") or {}).get("containers") or []}
            for c in self.containers:
                new = specs.get(c.name)
                if new is not None and (new.get("image") or "") != c.image:
                    self._change_image(c, new)
                self._sync_container(c)
        self._write_status()
        return False

    def _create_sandbox(self):
        """What RunPodSandbox makes: the pod's hostname (UTS namespace) and the
        /etc/hosts, /etc/resolv.conf and /etc/hostname its containers get."""
        spec = self.pod.get("spec") or {}
        self.hostname = (spec.get("hostname") or self.name)[:63].rstrip("-.")
        self.uts_fd = runtime.new_uts_namespace(self.hostname)
        etc = os.path.join(self.dir, "etc")
        os.makedirs(etc, exist_ok=True)
        for name, text in (("hosts", self._etc_hosts()), ("resolv.conf", self._resolv_conf()),
                           ("hostname", self.hostname + "\n")):
            with open(os.path.join(etc, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(etc, name), 0o644)
        self.sandbox_ready_at = time.monotonic() + timing.figure("pod_sandbox")
        interval = timing.pod_resync_interval()
        self.next_resync = None if interval is None else time.monotonic() + interval

    def _etc_hosts(self):
        spec = self.pod.get("spec") or {}
        out = HOSTS_HEADER + HOSTS_DEFAULTS
        if spec.get("subdomain"):
            out += "%s\t%s.%s.%s.svc.%s\t%s\n" % (self.ip, self.hostname, spec["subdomain"], self.ns,
                                                   CLUSTER_DOMAIN, self.hostname)
        else:
            out += "%s\t%s\n" % (self.ip, self.hostname)
        aliases = spec.get("hostAliases") or []
        if aliases:
            out += "\n# Entries added by HostAliases.\n"
            for a in aliases:
                out += "%s\t%s\n" % (a.get("ip"), "\t".join(a.get("hostnames") or []))
        return out

    def _resolv_conf(self):
        """The pod's /etc/resolv.conf as a kubelet writes it for its dnsPolicy
        (ClusterFirst by default) and dnsConfig."""
        spec = self.pod.get("spec") or {}
        policy = spec.get("dnsPolicy") or "ClusterFirst"
        servers, searches, options = [], [], []
        if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
            d = CLUSTER_DOMAIN
            servers = [network_mod.DNS_IP]
            searches = ["%s.svc.%s" % (self.ns, d), "svc.%s" % d, d]
            options = ["ndots:5"]
        elif policy == "Default":
            # the node's resolver; pods cannot reach it (the cluster namespace forwards
            # only to the host gateway): nothing leaves the machine
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

    def _teardown(self):
        """After the containers are gone: the pod's cgroups, hostname, IP."""
        for c in self.containers:
            if c.cgroup is not None:
                c.cgroup.remove()
                c.cgroup = None
        if self.uts_fd is not None:
            os.close(self.uts_fd)
            self.uts_fd = None
        if self.ip is not None:
            self.kubelet.network.remove_pod(self.netns, self.ip)
            self.netns = self.ip = None

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
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        for v in spec.get("volumes") or []:
            name = v.get("name")
            path = os.path.join(vroot, name)
            if v.get("emptyDir") is not None:
                if not os.path.isdir(path):
                    os.makedirs(path)
                    # kubelet: emptyDir is 0777; fsGroup owns it, setgid
                    os.chmod(path, 0o2777 if fs_group is not None else 0o777)
                    if fs_group is not None:
                        os.chown(path, -1, int(fs_group))
                continue
            files = self._volume_files(v)
            if files is None:
                continue
            self._write_atomic(name, path, files, fs_group)

    def _write_atomic(self, name, path, files, fs_group):
        """The kubelet's AtomicWriter: the files live in a timestamped directory,
        `..data` points at it and each top-level name is a link through `..data`,
        so an update (a new directory, then one rename of `..data`) is seen
        whole by a running container. Unchanged content is not rewritten."""
        digest = hashlib.sha256(repr(sorted((k, v[0], v[1]) for k, v in files.items())).encode()).hexdigest()
        if self.volume_hashes.get(name) == digest and os.path.isdir(path):
            return False
        os.makedirs(path, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.")
        ts = tempfile.mkdtemp(prefix=stamp, dir=path)
        os.chmod(ts, 0o755)
        for rel, (data, mode) in files.items():
            rel = os.path.normpath(rel).lstrip("/")
            if rel.startswith(".."):
                continue
            p = os.path.join(ts, rel)
            os.makedirs(os.path.dirname(p), mode=0o755, exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
            os.chmod(p, (mode if mode is not None else 0o644) & 0o777)
        if fs_group is not None:   # SetVolumeOwnership for a read-only volume
            for dirpath, dirs, fnames in os.walk(ts):
                for n in [dirpath] + [os.path.join(dirpath, f) for f in fnames]:
                    os.lchown(n, -1, int(fs_group))
                    st = os.lstat(n)
                    extra = 0o2550 if os.path.isdir(n) else 0o440
                    os.chmod(n, (st.st_mode & 0o7777) | extra)
        tmp = os.path.join(path, "..data_tmp")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.basename(ts), tmp)
        old = os.readlink(os.path.join(path, "..data")) if os.path.islink(os.path.join(path, "..data")) else None
        os.rename(tmp, os.path.join(path, "..data"))
        top = {os.path.normpath(rel).lstrip("/").split("/")[0] for rel in files}
        for entry in os.listdir(path):
            if entry.startswith(".."):
                continue
            if entry not in top:
                os.unlink(os.path.join(path, entry))
        for entry in top:
            link = os.path.join(path, entry)
            if not os.path.lexists(link):
                os.symlink(os.path.join("..data", entry), link)
        if old:
            shutil.rmtree(os.path.join(path, old), ignore_errors=True)
        self.volume_hashes[name] = digest
        return True

    def _resync_due(self, nowm):
        """Whether this sync should bring ConfigMap/Secret/downward API volumes
        up to date: at once after a change (fast), on the pod's periodic sync
        (realistic: every 60-90 s, as the kubelet's syncFrequency)."""
        if self.next_resync is None:
            due = self.volumes_dirty
        else:
            due = nowm >= self.next_resync
            if due:
                self.next_resync = nowm + timing.pod_resync_interval()
            self._schedule(self.next_resync)
        self.volumes_dirty = False
        return due

    def _refresh_volumes(self):
        spec = self.pod.get("spec") or {}
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        for v in spec.get("volumes") or []:
            if v.get("emptyDir") is not None:
                continue
            try:
                files = self._volume_files(v)
            except VolumeError as e:
                # the kubelet keeps what is mounted and reports the failed update
                u.record_event(self.store, self._ref(), "Warning", "FailedMount", str(e), "kubelet")
                continue
            if files is not None:
                self._write_atomic(v.get("name"), os.path.join(self.dir, "volumes", v.get("name")), files, fs_group)

    def uses(self, kind, name):
        """Whether a volume or env source of this pod refers to ConfigMap/Secret `name`."""
        key = "configMap" if kind == "configmaps" else "secret"
        ref = "name" if kind == "configmaps" else "secretName"
        for v in (self.pod.get("spec") or {}).get("volumes") or []:
            if (v.get(key) or {}).get(ref) == name:
                return True
            for src in (v.get("projected") or {}).get("sources") or []:
                if (src.get(key) or {}).get("name") == name:
                    return True
        return False

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

    def _mounts(self, c, readonly_root):
        """The container's mounts, as the runtime gets them: /etc/hosts,
        resolv.conf and hostname of the pod, the image's own /usr files, then
        the volumes (shortest path first; subPath resolved now, as the kubelet
        does, so a subPath never sees later updates). ConfigMap, Secret,
        downward API and projected volumes are always read-only."""
        out = [{"source": os.path.join(self.dir, "etc", n), "target": "/etc/" + n, "file": True,
                "readonly": readonly_root} for n in ("hosts", "resolv.conf", "hostname")]
        if os.path.isdir("/etc/ssl/certs"):
            out.append({"source": "/etc/ssl/certs", "target": "/etc/ssl/certs", "readonly": True})
        for src, dst in images.usr_mounts(c.kind, self._usr(c)):
            out.append({"source": src, "target": dst, "readonly": readonly_root})
        spec = self.pod.get("spec") or {}
        vols = {v.get("name"): v for v in spec.get("volumes") or []}
        mounts = sorted(c.spec.get("volumeMounts") or [], key=lambda m: len(m.get("mountPath", "")))
        for m in mounts:
            v = vols.get(m.get("name"))
            if v is None:
                raise ConfigError('cannot find volume "%s" to mount into container "%s"' % (m.get("name"), c.name))
            if v.get("hostPath") is not None:
                src = os.path.join(self.kubelet.state_dir, "hostpath", (v["hostPath"].get("path") or "").lstrip("/"))
                os.makedirs(src, exist_ok=True)
            else:
                src = os.path.join(self.dir, "volumes", m.get("name"))
            if m.get("subPath"):
                base = os.path.realpath(src)
                src = os.path.realpath(os.path.join(src, m["subPath"]))
                if src != base and not src.startswith(base + "/"):
                    raise ConfigError('failed to prepare subPath for volumeMount "%s" of container "%s"'
                                      % (m.get("name"), c.name))
                if not os.path.exists(src):
                    os.makedirs(src, exist_ok=True)   # kubelet creates a missing subPath as a directory
            readonly = bool(m.get("readOnly")) or any(v.get(k) is not None for k in API_DATA_VOLUMES)
            out.append({"source": src, "target": "/" + (m.get("mountPath") or "/").strip("/"),
                        "file": os.path.isfile(src), "readonly": readonly})
        return out

    # -- containers -----------------------------------------------------------
    def _env(self, c):
        env = dict(c.image_config()["env"])
        env["HOSTNAME"] = self.hostname or self.name
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

    def _cdir(self, c):
        return os.path.join(self.dir, "containers", c.name)

    def _root(self, c):
        """The container's layer: its writable root filesystem (read-only with readOnlyRootFilesystem)."""
        return os.path.join(self._cdir(c), "rootfs")

    def _usr(self, c):
        """The image's own files under /usr (bound over this machine's /usr)."""
        return os.path.join(self._cdir(c), "usr")

    def _grace(self):
        return (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)

    def _change_image(self, c, spec):
        """A pod update changed the image (the only container field that may
        change): the kubelet kills the container and starts the new image."""
        message = "Container %s definition changed, will be restarted" % c.name
        c.probe_gen += 1
        if c.proc is not None:
            proc = c.proc
            self._stop_container(c, time.monotonic() + self._grace(), hooks=True, message=message)
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
        if c.proc is not None or c.stopping:
            return
        if c.state == "terminated":
            return   # not restarted (restartPolicy)
        if nowm < c.next_start:
            self._schedule(c.next_start)
            return
        if not self._pull(c, nowm):
            return
        if c.start_at is None:
            c.start_at = nowm + timing.figure("container_start")
        if nowm < c.start_at:
            self._schedule(c.start_at)
            return
        c.start_at = None
        self._start(c)

    def _pull(self, c, nowm):
        """EnsureImageExists before each start: instant in fast mode (the image
        is on the node); in realistic mode the first use of an image on the
        node (and every start with imagePullPolicy Always) waits for a pull,
        one pull at a time, as the kubelet's serialized puller. True once the
        image is there for this start."""
        if c.pulled:
            return True
        if c.pull_done_at is None:
            always = (c.spec.get("imagePullPolicy") or "IfNotPresent") == "Always"
            done, secs = self.kubelet.pull(c.image, always)
            if done is None:
                c.pulled = True
                u.record_event(self.store, self._ref(), "Normal", "Pulled",
                               'Container image "%s" already present on machine' % c.image, "kubelet")
                return True
            u.record_event(self.store, self._ref(), "Normal", "Pulling", 'Pulling image "%s"' % c.image, "kubelet")
            c.pull_done_at, c.pull_secs, c.pull_began = done, secs, nowm
        if nowm < c.pull_done_at:
            self._schedule(c.pull_done_at)
            return False
        took = nowm - c.pull_began
        u.record_event(self.store, self._ref(), "Normal", "Pulled",
                       'Successfully pulled image "%s" in %.3fs (%.3fs including waiting). Image size: %d bytes.'
                       % (c.image, c.pull_secs, took, c.image_config()["size"]), "kubelet")
        c.pull_done_at = None
        c.pulled = True
        return True

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

    def _security(self, c):
        """User, groups, capabilities and the rest of the securityContext, as
        the kubelet and containerd resolve them (container over pod over image)."""
        spec = self.pod.get("spec") or {}
        psc = spec.get("securityContext") or {}
        csc = c.spec.get("securityContext") or {}
        img_uid, _ = c.image_config()["user"]
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        explicit = uid is not None
        uid = img_uid if uid is None else int(uid)
        entry = images.user_entry(c.kind, uid)
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        if gid is None:   # containerd: the user's group in the image's /etc/passwd, else 0
            gid = entry[0] if entry else 0
        gid = int(gid)
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) and uid == 0:
            pod = "%s_%s(%s)" % (self.name, self.ns, self.uid)
            if explicit:
                raise ConfigError("container's runAsUser breaks non-root policy (pod: \"%s\", container: %s)"
                                  % (pod, c.name))
            raise ConfigError("container has runAsNonRoot and image will run as root (pod: \"%s\", container: %s)"
                              % (pod, c.name))
        groups = [gid]
        for g in list(psc.get("supplementalGroups") or []) + (
                [psc["fsGroup"]] if psc.get("fsGroup") is not None else []):
            if int(g) not in groups:
                groups.append(int(g))
        return {"uid": uid, "gid": gid, "groups": groups, "caps": runtime.capabilities(csc),
                "home": entry[1] if entry else "/",
                "no_new_privs": csc.get("allowPrivilegeEscalation") is False,
                "readonly_root": bool(csc.get("readOnlyRootFilesystem"))}

    def _limits(self, c):
        res = c.spec.get("resources") or {}
        lim, req = res.get("limits") or {}, res.get("requests") or {}
        mem = u.parse_quantity(lim.get("memory"))
        cpu = u.parse_quantity(lim.get("cpu"))
        cpu_req = u.parse_quantity(req.get("cpu")) or cpu
        return (int(mem) if mem else None, cpu * 1000 if cpu else None, cpu_req * 1000 if cpu_req else None)

    def _start(self, c):
        c.pulled = False   # the next start ensures the image again
        logp = self._log_path(c)
        if c.ever_started and os.path.exists(logp):
            os.replace(logp, os.path.join(self.dir, "%s.previous.log" % c.name))
        c.container_id = "containerd://" + os.urandom(32).hex()
        if c.ever_started:
            c.restart_count += 1
        try:
            env = self._env(c)
            sec = self._security(c)
            env.setdefault("HOME", sec["home"])   # runc: the user's home from the image's /etc/passwd
            argv, entrypoint = images.container_argv(c.kind, c.spec.get("command"), c.spec.get("args"), env)
            cdir = self._cdir(c)
            shutil.rmtree(cdir, ignore_errors=True)
            os.makedirs(self._root(c))
            images.populate(self._root(c), self._usr(c), c.kind)
            mounts = self._mounts(c, sec["readonly_root"])
        except ConfigError as e:
            c.state, c.waiting_reason, c.waiting_message = "waiting", "CreateContainerConfigError", str(e)
            u.record_event(self.store, self._ref(), "Warning", "Failed", "Error: %s" % e, "kubelet")
            self._schedule(time.monotonic() + 2.0)
            return
        ports = [p.get("containerPort") for p in c.spec.get("ports") or []
                 if (p.get("protocol") or "TCP") == "TCP" and p.get("containerPort")]
        if c.kind == "echo" and not c.spec.get("command"):
            ports = ports or [8080]
            # every address of its own network namespace, as a container's app does
            argv += ["--ip", self.ip, "--listen", "0.0.0.0", "--container", c.name]
            for p in ports:
                argv += ["--port", str(p)]
        if c.cgroup is None:
            c.cgroup = runtime.Cgroup(self.kubelet.network.id, self.uid, c.name)
        c.cgroup.create(*self._limits(c))
        spec = {"root": self._root(c), "readonly_root": sec["readonly_root"], "mounts": mounts,
                "netns": self.netns, "uts_fd": self.uts_fd,
                "cgroup_procs": c.cgroup.procs_files(), "uid": sec["uid"], "gid": sec["gid"],
                "groups": sec["groups"], "caps": sec["caps"], "no_new_privs": sec["no_new_privs"],
                "env": env, "cwd": c.spec.get("workingDir") or c.image_config()["workdir"], "argv": argv,
                "entrypoint": entrypoint}
        c.runtime_spec = spec
        logf = open(logp, "ab")
        try:
            proc = runtime.launch(spec, logf, logf)
        except runtime.StartFailure as e:
            msg = e.message
            if e.before_exec and c.cgroup.oom_killed():
                msg = runtime.RUN_PREFIX + ": container init was OOM-killed (memory limit too low?): unknown"
            logf.write((msg + "\n").encode())
            self._record_failed_start(c, StartError("StartError", msg, 128))
            return
        finally:
            logf.close()
        c.proc = proc
        c.pgid = proc.pid
        c.exited = False
        c.started_at = u.now_rfc3339()
        c.run_started_mono = time.monotonic()
        c.ever_started = True
        self.kubelet.track(proc.pid)
        threading.Thread(target=self._wait_proc, args=(c, proc, c.cgroup), daemon=True,
                         name="wait-%s/%s/%s" % (self.ns, self.name, c.name)).start()
        u.record_event(self.store, self._ref(), "Normal", "Created", "Created container %s" % c.name, "kubelet")
        u.record_event(self.store, self._ref(), "Normal", "Started", "Started container %s" % c.name, "kubelet")
        # Running once every listener accepts (or the process died trying).
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(ports)
        while pending and time.monotonic() < deadline and proc.poll() is None and self.shutdown_grace is None \
                and not self.deleted:
            try:
                self.kubelet.connect(self, pending[0], 0.5).close()
                pending.pop(0)
            except OSError:
                time.sleep(0.003)
        if proc.poll() is not None:
            c.exited = True
            self._on_exit(c)
            return
        if not self._post_start(c):
            return
        c.state = "running"
        c.waiting_reason = c.waiting_message = None
        self._start_probes(c)

    def _post_start(self, c):
        """A postStart hook: the container is not running until it returns; if
        it fails the container is killed (FailedPostStartHook) and restarts."""
        hook = (c.spec.get("lifecycle") or {}).get("postStart")
        if not hook:
            return True
        ok, msg = self._run_hook(c, hook, self._grace() or 30, "PostStart")
        if ok:
            return True
        u.record_event(self.store, self._ref(), "Warning", "FailedPostStartHook", msg, "kubelet")
        self._stop_container(c, time.monotonic() + self._grace(), hooks=True,
                             message="FailedPostStartHook")
        c.exited = True
        self._on_exit(c)
        return False

    def _record_failed_start(self, c, e):
        """A container whose process exits at once (bad config) as nginx would."""
        c.started_at = u.now_rfc3339()
        c.ever_started = True
        c.proc = None
        c.exit_code = e.code
        c.term_reason = e.reason
        c.term_message = e.message if e.reason == "StartError" else None
        self._terminated(c)

    def _wait_proc(self, c, proc, cgroup):
        proc.wait()
        # The container's init is gone: so is everything else in it (a runtime's
        # PID namespace ends); exec'd processes and nginx workers included.
        cgroup.kill_all()
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
        if rc == -signal.SIGKILL and c.cgroup is not None and c.cgroup.oom_killed():
            c.exit_code, c.term_reason = 137, "OOMKilled"
        else:
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
            p.next_due, p.after = timing.probe_schedule(start, p.initial, p.period)
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
                p.next_due = p.after(time.monotonic())
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
                self._kill_for_restart(c, "Container %s failed startup probe, will be restarted" % c.name, p.spec)
        elif p.kind == "livenessProbe" and not p.result:
            self._kill_for_restart(c, "Container %s failed liveness probe, will be restarted" % c.name, p.spec)
        self.wake()

    def _kill_for_restart(self, c, message, probe=None):
        c.probe_gen += 1
        c.ready = False
        if c.proc is None:
            return
        grace = (probe or {}).get("terminationGracePeriodSeconds")
        if grace is None:
            grace = self._grace()
        threading.Thread(target=self._stop_container, args=(c, time.monotonic() + grace, True, message),
                         daemon=True, name="kill-%s/%s/%s" % (self.ns, self.name, c.name)).start()

    # -- lifecycle hooks and stopping --------------------------------------------
    def _exec_context(self, c):
        proc = c.proc
        if proc is None or c.runtime_spec is None:
            return None
        return runtime.ExecContext(c.runtime_spec, proc.pid)

    def _exec(self, c, argv, timeout):
        """Run argv in the container as ExecSync does: (exit code or None on
        timeout, combined output, error text when it could not start)."""
        ctx = self._exec_context(c)
        if ctx is None:
            return None, b"", "container is not running"
        try:
            p = ctx.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except runtime.StartFailure as e:
            return None, b"", e.message
        try:
            out, _ = p.communicate(timeout=max(0.001, timeout))
            return p.returncode, out, None
        except subprocess.TimeoutExpired:
            # left running, as the kubelet leaves a hook or probe it stopped waiting for;
            # it ends with the container (it is in its cgroup)
            threading.Thread(target=p.communicate, daemon=True).start()
            return None, b"", None

    def _run_hook(self, c, hook, timeout, kind):
        """Run a lifecycle hook (exec, httpGet, sleep) for at most `timeout`
        seconds; (ok, message for the Failed<kind>Hook event)."""
        pod = "%s_%s(%s)" % (self.name, self.ns, self.uid)
        if hook.get("exec") is not None:
            cmd = list((hook["exec"] or {}).get("command") or [])
            code, out, err = self._exec(c, cmd, timeout)
            if err is None and code in (0, None):
                return True, ""
            text = out.decode(errors="replace")
            if err is None:
                err = "command '%s' exited with %d: %s" % (" ".join(cmd), code, text)
            return False, 'Exec lifecycle hook ([%s]) for Container "%s" in Pod "%s" failed - error: %s, message: "%s"' % (
                " ".join(cmd), c.name, pod, err, text)
        if hook.get("httpGet") is not None:
            g = hook["httpGet"]
            ok, msg = self._http_get(c, g, timeout)
            if ok:
                return True, ""
            return False, 'HTTP lifecycle hook (%s) for Container "%s" in Pod "%s" failed - error: %s' % (
                g.get("path") or "/", c.name, pod, msg)
        if hook.get("sleep") is not None:
            time.sleep(max(0.0, min(float(hook["sleep"].get("seconds") or 0), timeout)))
            return True, ""
        return False, "%s hook of container %s has no handler" % (kind, c.name)

    def _stop_container(self, c, deadline, hooks=True, message=None):
        """killContainer: the preStop hook (for at most what is left of the
        grace period), then the image's stop signal (SIGQUIT for NGINX images)
        to the container's process, SIGKILL when the rest of the grace period
        (at least MIN_GRACE seconds) has passed; nothing of it survives."""
        proc = c.proc
        if proc is None or proc.poll() is not None:
            return
        c.stopping = True
        try:
            u.record_event(self.store, self._ref(), "Normal", "Killing",
                           message or "Stopping container %s" % c.name, "kubelet")
            hook = (c.spec.get("lifecycle") or {}).get("preStop")
            left = deadline - time.monotonic()
            if hooks and hook and left > 0:
                ok, msg = self._run_hook(c, hook, left, "PreStop")
                if not ok:
                    u.record_event(self.store, self._ref(), "Warning", "FailedPreStopHook", msg, "kubelet")
            grace = max(deadline - time.monotonic(), MIN_GRACE)
            try:
                os.kill(proc.pid, c.image_config()["stop_signal"] if c.kind else signal.SIGTERM)
            except OSError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            if c.cgroup is not None:
                c.cgroup.kill_all()
        finally:
            c.stopping = False
            self.wake()   # the worker skipped this container while it was being stopped

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
                self.kubelet.connect(self, port, timeout, host=t.get("host")).close()
                return True, ""
            except OSError as e:
                return False, "dial tcp %s:%d: connect: %s" % (host, port, e.strerror or e)
        if spec.get("httpGet") is not None:
            return self._http_get(c, spec["httpGet"], timeout)
        if spec.get("exec") is not None:
            cmd = list((spec["exec"] or {}).get("command") or [])
            code, out, err = self._exec(c, cmd, timeout)
            if err is not None:
                return False, err
            if code is None:
                return False, "command %r timed out" % " ".join(cmd)
            return code == 0, out.decode(errors="replace").strip()
        return False, "probe type not supported by the sandbox kubelet"

    def _http_get(self, c, g, timeout):
        """An httpGet probe or hook (host defaults to the pod IP, success 200-399),
        over a connection from Kubelet.connect (the pod network seam)."""
        port = self._probe_port(c, g.get("port"))
        host = g.get("host") or self.ip
        if port is None:
            return False, "invalid port %r" % g.get("port")
        path = g.get("path") or "/"
        https = (g.get("scheme") or "HTTP").upper() == "HTTPS"
        url = "%s://%s:%d%s" % ("https" if https else "http", host, port, path)
        try:
            sock = self.kubelet.connect(self, port, timeout, host=g.get("host"))
            if https:
                import ssl
                sock = ssl._create_unverified_context().wrap_socket(sock, server_hostname=host)
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            conn.sock = sock
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

    # -- termination --------------------------------------------------------------
    def _kill_all(self, deadline, hooks=True):
        """Stop every container at once (each with its preStop hook when
        `hooks`), SIGKILL at `deadline` (never sooner than MIN_GRACE after its
        stop signal)."""
        for c in self.containers:
            c.probe_gen += 1
        threads = [threading.Thread(target=self._stop_container, args=(c, deadline, hooks), daemon=True,
                                    name="stop-%s/%s/%s" % (self.ns, self.name, c.name))
                   for c in self.containers if c.proc is not None]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in self.containers:
            if c.proc is not None:
                _kill_group(c.proc.pid, signal.SIGKILL)   # anything left in its process group
            if c.cgroup is not None:
                c.cgroup.kill_all()
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
        self.images = {}       # normalized image -> monotonic time its pull ends (realistic timing)
        self.pull_busy_until = 0.0

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
            md = u.meta(obj)
            with self.lock:
                ws = [w for w in self.workers.values() if w.ns == md.get("namespace")]
            for w in ws:
                if not w.volumes_ready:
                    w.wake()
                elif w.uses(resource, md.get("name")):
                    # fast timing: into the pod's volume at once; realistic: on its next periodic sync
                    w.volumes_dirty = True
                    w.wake()

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
        # the containers' cgroups go with the rest of the sandbox (network.cleanup)

    # -- runtime services ---------------------------------------------------------
    def pull(self, image, always):
        """Start pulling `image` (realistic timing): (monotonic end, seconds)
        of its pull, or (None, 0) when no pull is needed. One pull at a time
        (serializeImagePulls); a pod waiting for an image another pod is
        pulling waits for that pull."""
        key = images.normalized(image)
        nowm = time.monotonic()
        with self.lock:
            done = self.images.get(key)
            if done is not None and done > nowm:
                return done, done - nowm
            secs = timing.image_pull(done is not None, always)
            if secs <= 0:
                self.images[key] = min(done or nowm, nowm)
                return None, 0.0
            begin = max(nowm, self.pull_busy_until)
            self.pull_busy_until = self.images[key] = begin + secs
            return begin + secs, secs

    def connect(self, worker, port, timeout, host=None):
        """A TCP connection from the node to a pod's port (start checks, tcpSocket
        and httpGet probes, httpGet hooks), made in the cluster namespace as a
        kubelet connects from its node to the pod IP."""
        return netns.connect(self.network.cluster_netns, (host or worker.ip, port), timeout)
