"""The sandbox node's container runtime: what runc and containerd do for a container.

    launch(spec, stdout, stderr, pass_fds) -> Popen     # start one container
    ExecContext(spec, pid).spawn(argv, ...)             # a further process inside it
    Cgroup(sandbox_id, pod_uid, name)                   # cgroup v1 memory + cpu
    new_uts_namespace(hostname) -> fd                   # the pod's hostname, shared by its containers
    capabilities(security_context) -> [int]             # the bounding set a container keeps

A container's process is forked from the cluster process (subprocess with a
preexec function: no interpreter to start, so a start costs a fork and the
mounts) and, before it execs the command, the child:
  - joins the pod's network namespace (spec["netns"], the path the cluster
    network gave the pod; the runtime's own tests give none and stay in the
    caller's) and UTS namespace (the pod's hostname),
  - makes a mount namespace of its own (private propagation, so nothing
    reaches this machine's mounts) whose root is the image's layer directory
    bound on itself, with this machine's /usr (binaries and libraries) bound
    read-only, a fresh /proc, a small /dev, /sys read-only, the pod's
    /etc/hosts, /etc/resolv.conf and /etc/hostname, and the volumes at their
    mount paths; `readOnlyRootFilesystem` remounts the root read-only;
    pivot_root into it,
  - joins the container's cgroups, gives its stdout/stderr to the container
    user (as runc does), drops capabilities outside the bounding set, sets
    groups, gid and uid, no_new_privs, and execs the command (subprocess
    searches the container's $PATH, in the container's root).
The child of a multi-threaded process may only run code that takes no lock
another thread could hold: no imports, no logging, nothing but os calls,
libc calls through ctypes (loaded before the fork) and plain objects.
"""
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
TIOCSCTTY = 0x540E
SIGKILL = 9
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)

CAP_NAMES = ("CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
             "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO "
             "SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG "
             "MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM "
             "BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE").split()
CAPS = {n: i for i, n in enumerate(CAP_NAMES)}
# containerd's default set (oci/spec.go defaultUnixCaps).
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")

CGROUP_ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "cpu")
CFS_PERIOD_US = 100000
# What a container sees of this machine (read-only binds); /bin, /lib, /lib64
# and /sbin are symlinks into /usr in the image layer (merged /usr, as Debian).
HOST_RO = ("/usr",)
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


class StartFailure(Exception):
    """The container's process could not be started (its message is runc's);
    `before_exec` when it never ran the command."""

    def __init__(self, message, before_exec=False):
        super().__init__(message)
        self.message = message
        self.before_exec = before_exec


def cap_last():
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(CAP_NAMES) - 1


def capabilities(sc):
    """Capability numbers a container keeps (its bounding set), from its
    securityContext: containerd's defaults, or all when privileged; then
    `drop` (ALL drops everything), then `add`."""
    sc = sc or {}
    if sc.get("privileged"):
        return list(range(cap_last() + 1))
    keep = set(DEFAULT_CAPS)
    caps = sc.get("capabilities") or {}

    def plain(name):   # "CAP_NET_RAW", "net_raw" -> "NET_RAW"
        name = name.upper()
        return name[4:] if name.startswith("CAP_") else name
    for name in map(plain, caps.get("drop") or []):
        if name == "ALL":
            keep = set()
        else:
            keep.discard(name)
    for name in map(plain, caps.get("add") or []):
        if name == "ALL":
            keep = set(CAP_NAMES)
        elif name in CAPS:
            keep.add(name)
    return sorted(CAPS[n] for n in keep if CAPS[n] <= cap_last())


# ---------------------------------------------------------------------------
# cgroups (v1: memory and cpu controllers)

def cgroup_base(sandbox_id, controller):
    """The sandbox's cgroup in one controller, named by the sandbox's id (the
    cluster network's, k8s/network.py), so that its clean-up finds it."""
    return os.path.join(CGROUP_ROOT, controller, sandbox_id)


class Cgroup:
    """One container's cgroups: CGROUP_ROOT/{memory,cpu}/<sandbox id>/pod<uid>/<container>."""

    def __init__(self, sandbox_id, pod_uid, name):
        self.paths = {c: os.path.join(cgroup_base(sandbox_id, c), "pod" + pod_uid, name) for c in CONTROLLERS}
        self.oom_base = 0

    def create(self, memory_bytes=None, cpu_millis=None, cpu_request_millis=None):
        for c, p in self.paths.items():
            os.makedirs(p, exist_ok=True)
        mem = self.paths["memory"]
        limit = str(int(memory_bytes)) if memory_bytes else "-1"
        # memsw must stay >= the memory limit: lower it last, raise it first.
        memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
        has_memsw = os.path.exists(memsw)
        if has_memsw and limit == "-1":
            _write(memsw, "-1")
        _write(os.path.join(mem, "memory.limit_in_bytes"), limit)
        if has_memsw and limit != "-1":
            _write(memsw, limit)
        _write(os.path.join(mem, "memory.swappiness"), "0", missing_ok=True)
        cpu = self.paths["cpu"]
        _write(os.path.join(cpu, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
        quota = int(cpu_millis * CFS_PERIOD_US / 1000) if cpu_millis else -1
        _write(os.path.join(cpu, "cpu.cfs_quota_us"), str(max(quota, 1000) if quota != -1 else -1))
        # kubelet: shares = request millicores * 1024 / 1000, at least 2
        shares = max(2, int((cpu_request_millis or cpu_millis or 0) * 1024 / 1000)) if (
            cpu_request_millis or cpu_millis) else 1024
        _write(os.path.join(cpu, "cpu.shares"), str(shares))
        self.oom_base = self.oom_kills()
        return self

    def procs_files(self):
        return [os.path.join(p, "cgroup.procs") for p in self.paths.values()]

    def oom_kills(self):
        """The memory controller's OOM kill counter (kernel >= 4.13)."""
        try:
            with open(os.path.join(self.paths["memory"], "memory.oom_control")) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "oom_kill":
                        return int(v)
        except (OSError, ValueError):
            pass
        return 0

    def oom_killed(self):
        return self.oom_kills() > self.oom_base

    def pids(self):
        out = set()
        for f in self.procs_files():
            try:
                with open(f) as fh:
                    out.update(int(x) for x in fh.read().split())
            except (OSError, ValueError):
                pass
        return out

    def kill_all(self):
        """SIGKILL every process left in the container (a runtime does this when
        the container's init exits: its PID namespace ends)."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, SIGKILL)
                except OSError:
                    pass
            _sleep(0.01)
        return not self.pids()

    def remove(self):
        self.kill_all()
        for p in self.paths.values():
            _rmdir_tree(p)
            try:
                os.rmdir(os.path.dirname(p))   # the pod's level, once its last container is gone
            except OSError:
                pass


def _rmdir_tree(path):
    """rmdir a cgroup directory and its children, deepest first; True when gone."""
    if not os.path.isdir(path):
        return True
    for dirpath, dirnames, _ in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
    return not os.path.isdir(path)


def _write(path, text, missing_ok=False):
    try:
        with open(path, "w") as f:
            f.write(text)
    except FileNotFoundError:
        if not missing_ok:
            raise


def _sleep(s):
    import time
    time.sleep(s)


# ---------------------------------------------------------------------------
# libc

_libc = None
_ctypes = None


def libc():
    """libc through ctypes (load it before forking a child that uses it)."""
    global _libc, _ctypes
    if _libc is None:
        import ctypes
        _ctypes = ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
        _libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
        _libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
        _libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
        _libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_int)
    return _libc


def _check(rc, what):
    if rc != 0:
        e = _ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def _b(s):
    return s.encode() if isinstance(s, str) else s


def mount(src, target, fstype, flags, data=None):
    _check(libc().mount(_b(src), _b(target), _b(fstype), flags, _b(data)), "mount %s" % target)


def setns(fd, nstype):
    _check(libc().setns(fd, nstype), "setns")


def unshare(flags):
    _check(libc().unshare(flags), "unshare")


def new_uts_namespace(hostname):
    """A UTS namespace whose hostname is `hostname`, as an open fd (the pod's,
    shared by its containers: they setns to /proc/<this pid>/fd/<fd>). Made by
    a short-lived thread (namespaces are per thread; no process is needed),
    so it lives exactly as long as the fd."""
    import threading
    out = {}

    def make():
        try:
            unshare(CLONE_NEWUTS)
            name = _b(hostname)
            _check(libc().sethostname(name, len(name)), "sethostname")
            out["fd"] = os.open("/proc/thread-self/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            out["error"] = e
    t = threading.Thread(target=make, name="uts-" + hostname)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["fd"]


# ---------------------------------------------------------------------------
# starting a container, exec in a running one

RUN_PREFIX = ("failed to create containerd task: failed to create shim task: OCI runtime create failed: "
              "runc create failed: unable to start container process")
EXEC_PREFIX = "OCI runtime exec failed: exec failed: unable to start container process"


def _exec_error(prefix, argv, e):
    """runc's message for a command exec(2) could not run."""
    if isinstance(e, FileNotFoundError):
        reason = "no such file or directory" if "/" in argv[0] else "executable file not found in $PATH"
    elif isinstance(e, PermissionError):
        reason = "permission denied"
    else:
        reason = (e.strerror or str(e)).lower()
    return '%s: exec: "%s": %s: unknown' % (prefix, argv[0], reason)


def _popen(prefix, argv, child, open_fds, **kw):
    """subprocess.Popen with `child` run in the forked child before exec;
    raises StartFailure with runc's message when the child or exec fails."""
    import subprocess
    libc()
    r, w = os.pipe()
    failed = []

    def preexec():
        try:
            child()
        except BaseException as e:   # reported by the parent, from the pipe
            os.write(w, ("%s: %s: unknown" % (prefix, e)).encode())
            raise
    try:
        return subprocess.Popen(argv, preexec_fn=preexec, close_fds=True, **kw)
    except subprocess.SubprocessError:
        os.close(w)
        w = None
        failed.append(os.read(r, 65536).decode(errors="replace") or "%s: the process was killed" % prefix)
    except OSError as e:
        failed.append(_exec_error(prefix, argv, e))
    finally:
        for fd in [r, w] + list(open_fds):
            if fd is not None:
                os.close(fd)
    raise StartFailure(failed[0], before_exec=True)


def launch(spec, stdout, stderr, pass_fds=(), before_exec=None):
    """Start the container `spec` describes (see the kubelet's _start); returns
    its Popen once the command runs, or raises StartFailure. `before_exec` runs
    in the container's child last (as the container user, in its root)."""
    import subprocess
    if not spec.get("argv"):
        raise StartFailure("%s: no command specified: unknown" % RUN_PREFIX)
    spec = dict(spec, cap_last=cap_last())
    cgroup_fds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in spec.get("cgroup_procs") or []]
    netns = os.open(spec["netns"], os.O_RDONLY | os.O_CLOEXEC) if spec.get("netns") else None
    uts = spec.get("uts_fd")

    def child():
        if netns is not None:
            setns(netns, CLONE_NEWNET)
        if uts is not None:
            setns(uts, CLONE_NEWUTS)
        unshare(CLONE_NEWNS)
        cwd = _setup_rootfs(spec)
        _become(spec, cgroup_fds)
        os.chdir(cwd)
        if spec.get("entrypoint") == "nginx":
            _nginx_entrypoint(spec.get("env") or {}, lambda line: os.write(1, (line + "\n").encode()))
        if before_exec is not None:
            before_exec()
    return _popen(RUN_PREFIX, spec["argv"], child, cgroup_fds + ([netns] if netns is not None else []),
                  env=spec.get("env") or {}, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                  pass_fds=tuple(pass_fds), process_group=0)


class ExecContext:
    """How to run a further process in a running container: its network, UTS
    and mount namespaces (those of its process `pid`), its cgroups, user,
    groups, capabilities, no_new_privs, environment and working directory
    (from the spec it was started with)."""

    def __init__(self, spec, pid):
        self.spec = spec
        self.pid = pid

    def spawn(self, argv, stdin=None, stdout=None, stderr=None, tty=False, bufsize=-1):
        """Popen of `argv` inside the container, in a session of its own
        (raises StartFailure when it cannot be started, e.g. `exec: "x":
        executable file not found in $PATH`). With tty=True, stdin should be a
        terminal (a pty's slave): it becomes the controlling terminal."""
        if not argv:
            raise StartFailure("%s: no command given: unknown" % EXEC_PREFIX)
        spec = dict(self.spec, cap_last=cap_last())
        fds = [(os.open("/proc/%d/ns/%s" % (self.pid, ns), os.O_RDONLY | os.O_CLOEXEC), flag)
               for ns, flag in (("net", CLONE_NEWNET), ("uts", CLONE_NEWUTS), ("mnt", CLONE_NEWNS))]
        cgroup_fds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in spec.get("cgroup_procs") or []]

        def child():
            for fd, flag in fds:
                setns(fd, flag)
            if tty:
                _check(libc().ioctl(0, TIOCSCTTY, 0), "controlling terminal")
            _become(spec, cgroup_fds)
            try:
                os.chdir(spec.get("cwd") or "/")
            except OSError:
                os.chdir("/")
        return _popen(EXEC_PREFIX, list(argv), child, cgroup_fds + [fd for fd, _ in fds],
                      env=spec.get("env") or {}, stdin=stdin, stdout=stdout, stderr=stderr,
                      start_new_session=True, bufsize=bufsize)


# ---------------------------------------------------------------------------
# in the forked child (see the module's docstring: no imports, no locks)

def _bind(src, dst, readonly, recursive=False):
    mount(src, dst, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | (MS_NOSUID | MS_NODEV if recursive else 0))


def _mountpoint(path, is_file):
    """Create what a mount needs to exist at path in the layer (as a runtime does)."""
    if os.path.lexists(path) and not os.path.isdir(path) and not os.path.isfile(path):
        os.unlink(path)   # a symlink the image had there: the mount hides it
    if is_file:
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
    else:
        os.makedirs(path, exist_ok=True)


def _setup_rootfs(spec):
    root = spec["root"].rstrip("/")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount(root, root, None, MS_BIND)
    for h in HOST_RO:
        _mountpoint(root + h, False)
        _bind(h, root + h, True, recursive=True)
    for m in spec.get("mounts") or []:
        dst = root + m["target"]
        _mountpoint(dst, m.get("file", False))
        _bind(m["source"], dst, m.get("readonly", False), recursive=True)
    _mountpoint(root + "/proc", False)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    dev = root + "/dev"
    _mountpoint(dev, False)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for n in DEV_NODES:
        p = dev + "/" + n
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o666))
        mount("/dev/" + n, p, None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")):
        os.symlink(target, dev + "/" + name)
    os.mkdir(dev + "/pts")
    os.mkdir(dev + "/shm")
    mount("shm", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    _mountpoint(root + "/sys", False)
    _bind("/sys", root + "/sys", True)
    cwd = spec.get("cwd") or "/"
    if not spec.get("readonly_root"):
        os.makedirs(root + cwd, exist_ok=True)
    else:
        mount(None, root, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    os.chdir(root)
    _check(libc().syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(libc().umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    return cwd


def _become(spec, cgroup_fds):
    """Join the cgroups (last, so that little is charged to the container
    before exec), hand stdout/stderr to the user, drop capabilities, switch user."""
    uid, gid = int(spec.get("uid", 0)), int(spec.get("gid", 0))
    for fd in (1, 2):
        try:
            os.fchown(fd, uid, gid)
        except OSError:
            pass
    keep = set(spec.get("caps", []))
    for cap in range(spec.get("cap_last", len(CAP_NAMES) - 1) + 1):
        if cap not in keep:
            _check(libc().prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop capability %d" % cap)
    for fd in cgroup_fds:
        os.write(fd, b"%d" % os.getpid())
    os.setgroups([int(g) for g in spec.get("groups") or []])
    os.setgid(gid)
    os.setuid(uid)
    if spec.get("no_new_privs"):
        _check(libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.umask(0o022)


def _envsubst(text, env):
    """envsubst restricted to defined variables: ${VAR} replaced, anything else kept."""
    out, i = [], 0
    while True:
        j = text.find("${", i)
        k = text.find("}", j + 2) if j >= 0 else -1
        if k < 0:
            out.append(text[i:])
            return "".join(out)
        name = text[j + 2:k]
        ok = name and (name[0].isalpha() or name[0] == "_") and all(ch.isalnum() or ch == "_" for ch in name)
        out.append(text[i:j])
        out.append(env[name] if ok and name in env else text[j:k + 1])
        i = k + 1


def _nginx_entrypoint(env, log):
    """The official NGINX images' 20-envsubst-on-templates.sh, run as the container user:
    /etc/nginx/templates/**/*.template -> /etc/nginx/conf.d/**, ${VAR} of defined variables."""
    tdir = env.get("NGINX_ENVSUBST_TEMPLATE_DIR", "/etc/nginx/templates")
    suffix = env.get("NGINX_ENVSUBST_TEMPLATE_SUFFIX", ".template")
    out_dir = env.get("NGINX_ENVSUBST_OUTPUT_DIR", "/etc/nginx/conf.d")
    me = "20-envsubst-on-templates.sh"
    if not os.path.isdir(tdir):
        return
    if not os.access(out_dir, os.W_OK):
        log("%s: ERROR: %s exists, but %s is not writable" % (me, tdir, out_dir))
        return
    for dirpath, _, files in os.walk(tdir, followlinks=True):
        for f in sorted(files):
            if not f.endswith(suffix) or f.startswith(".."):
                continue
            src = os.path.join(dirpath, f)
            rel = os.path.relpath(src, tdir)[:-len(suffix)]
            dst = os.path.join(out_dir, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            log("%s: Running envsubst on %s to %s" % (me, src, dst))
            with open(src, errors="replace") as fh:
                text = fh.read()
            with open(dst, "w") as fh:
                fh.write(_envsubst(text, env))
