"""The sandbox node's container runtime: what runc and containerd do for a container.

Library side (imported by the kubelet, in the cluster process):
    launch(spec, spec_path, log_fd) -> Container      # start one container
    ExecContext(spec_path, pid).spawn(argv, ...)       # a further process inside it
    Cgroup(sandbox_id, pod_uid, name)                  # cgroup v1 memory + cpu
    new_uts_namespace(hostname) -> fd                  # the pod's hostname, shared by its containers
    capabilities(security_context) -> [int]            # the bounding set a container keeps
    remove_cgroups(sandbox_id)                         # `sandbox down`: whatever a dead cluster left

Launcher side: `python3 -I -S runtime.py run SPEC STATUS_FD` and
`... exec SPEC PID STATUS_FD TTY ARGV...` (the process becomes the container's
process with exec(2), so the kubelet's child *is* the container):
  - joins the pod's network namespace (a path, from the pod network; none:
    this machine's namespace) and UTS namespace (the pod's hostname),
  - a mount namespace of its own (private propagation, so nothing reaches
    this machine's mounts) whose root is the image's layer directory bound on
    itself, with this machine's /usr (binaries and libraries) bound read-only,
    a fresh /proc, a small /dev, /sys read-only, the pod's /etc/hosts,
    /etc/resolv.conf and /etc/hostname, and the volumes at their mount paths;
    `readOnlyRootFilesystem` remounts the root read-only; pivot_root into it,
  - joins the container's cgroups, gives its stdout/stderr to the container
    user (as runc does), drops capabilities outside the bounding set,
    sets groups, gid and uid, no_new_privs, and execs the command.
The status fd is close-on-exec: the launcher writes "." just before exec(2)
and an error text after it if exec failed, so EOF after "." means the command
runs, and EOF with nothing means the launcher died first (e.g. OOM-killed).

This file must stay importable without the sandbox package (the launcher runs
it as a script) and cheap to start: the launcher imports only os, sys, marshal
(the spec's format: no json, whose `re` import alone doubles the start) and
ctypes; everything else is imported where the library side needs it.
"""
import marshal
import os
import sys

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
    """The container's process could not be started; `before_exec` when the
    launcher died before exec (killed, e.g. by the OOM killer)."""

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
    for name in caps.get("drop") or []:
        name = name.upper().replace("CAP_", "", 1) if name.upper().startswith("CAP_") else name.upper()
        if name == "ALL":
            keep = set()
        else:
            keep.discard(name)
    for name in caps.get("add") or []:
        name = name.upper()[4:] if name.upper().startswith("CAP_") else name.upper()
        if name == "ALL":
            keep = set(CAP_NAMES)
        elif name in CAPS:
            keep.add(name)
    return sorted(CAPS[n] for n in keep if CAPS[n] <= cap_last())


# ---------------------------------------------------------------------------
# cgroups (v1: memory and cpu controllers)

def cgroup_base(sandbox_id, controller):
    return os.path.join(CGROUP_ROOT, controller, "czctl-sandbox-" + sandbox_id)


class Cgroup:
    """One container's cgroups: CGROUP_ROOT/{memory,cpu}/czctl-sandbox-<id>/pod<uid>/<container>."""

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


def remove_cgroups(sandbox_id):
    """Remove every cgroup of a sandbox (its processes are killed first).
    Returns the directories that could not be removed."""
    left = []
    for c in CONTROLLERS:
        base = cgroup_base(sandbox_id, c)
        if not os.path.isdir(base):
            continue
        for dirpath, _, _ in os.walk(base):
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        try:
                            os.kill(int(pid), SIGKILL)
                        except (OSError, ValueError):
                            pass
            except OSError:
                pass
        for _ in range(50):
            if _rmdir_tree(base):
                break
            _sleep(0.02)
        if os.path.isdir(base):
            left.append(base)
    return left


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


def libc():
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
        _libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
        _libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
        _libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    return _libc


def _check(rc, what):
    if rc != 0:
        import ctypes
        e = ctypes.get_errno()
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
# library side: starting a container, exec in a running one

def _interpreter():
    return [sys.executable, "-I", "-S", os.path.abspath(__file__)]


def write_spec(path, spec):
    """The launcher's spec (marshal: str, int, bool, None, list and dict only)."""
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        marshal.dump(spec, f)
    os.replace(path + ".tmp", path)


def read_spec(path):
    with open(path, "rb") as f:
        return marshal.load(f)


def _read_status(fd, proc, timeout):
    """Read the launcher's status pipe to EOF: raises StartFailure unless exec succeeded."""
    import select
    import time
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StartFailure("the container runtime did not start the process within %ds" % timeout)
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if data == b".":
        return
    if not data:
        raise StartFailure("the container process was killed before it started", before_exec=True)
    raise StartFailure(data.lstrip(b".").decode(errors="replace").strip())


def launch(spec_path, stdout, stderr, pass_fds=(), timeout=10.0):
    """Start the container described by the spec file; returns its Popen once
    its command runs (raises StartFailure otherwise; the process is reaped)."""
    import subprocess
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(_interpreter() + ["run", spec_path, str(w)], stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr, pass_fds=(w,) + tuple(pass_fds), close_fds=True,
                                process_group=0, cwd="/")
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    os.close(w)
    try:
        _read_status(r, proc, timeout)
    except StartFailure:
        try:
            proc.kill()
        except OSError:
            pass
        proc.wait()
        raise
    return proc


class ExecContext:
    """How to run a further process in a running container: its network, UTS
    and mount namespaces (those of its process `pid`), its cgroups, user,
    groups, capabilities, no_new_privs and environment (from its spec file)."""

    def __init__(self, spec_path, pid):
        self.spec_path = spec_path
        self.pid = pid

    def spawn(self, argv, stdin=None, stdout=None, stderr=None, tty=False, timeout=10.0):
        """Popen of `argv` inside the container (raises StartFailure when it
        cannot be started, e.g. `exec: "x": executable file not found in $PATH`).
        With tty=True, stdin should be a terminal (pty slave): it becomes the
        controlling terminal of a new session."""
        import subprocess
        if not argv:
            raise StartFailure("no command given")
        r, w = os.pipe()
        try:
            proc = subprocess.Popen(_interpreter() + ["exec", self.spec_path, str(self.pid), str(w),
                                                      "1" if tty else "0", "--"] + list(argv),
                                    stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=(w,), close_fds=True,
                                    cwd="/")
        except BaseException:
            os.close(r)
            os.close(w)
            raise
        os.close(w)
        try:
            _read_status(r, proc, timeout)
        except StartFailure:
            try:
                proc.kill()
            except OSError:
                pass
            proc.wait()
            raise
        return proc


# ---------------------------------------------------------------------------
# launcher side (runs as a script, single-threaded, as root)

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
            open(path, "a").close()
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
        open(p, "a").close()
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
    """Join the cgroups, hand stdout/stderr to the user, drop capabilities, switch user."""
    for fd in cgroup_fds:
        os.write(fd, b"%d" % os.getpid())
        os.close(fd)
    uid, gid = int(spec.get("uid", 0)), int(spec.get("gid", 0))
    for fd in (1, 2):
        try:
            os.fchown(fd, uid, gid)
        except OSError:
            pass
    keep = set(spec.get("caps", []))
    for cap in range(cap_last() + 1):
        if cap not in keep:
            _check(libc().prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop capability %d" % cap)
    os.setgroups([int(g) for g in spec.get("groups") or []])
    os.setgid(gid)
    os.setuid(uid)
    if spec.get("no_new_privs"):
        _check(libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.umask(0o022)


def _envsubst(text, env):
    """envsubst restricted to defined variables: ${VAR} replaced, anything else kept
    (no `re`: nothing can be imported once the container's root is in place)."""
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
            text = _envsubst(text, env)
            with open(dst, "w") as fh:
                fh.write(text)


def _lookup(cmd, env):
    """The file exec(2) runs for cmd, searched in the container's $PATH as runc does."""
    if "/" in cmd:
        return cmd, "no such file or directory"
    for d in (env.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        p = os.path.join(d or ".", cmd)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p, None
    return None, "executable file not found in $PATH"


def _exec(argv, env, status_fd, prefix):
    """exec(2) the command; on failure report the runtime's message on the status fd."""
    path, reason = _lookup(argv[0], env)
    if path is not None:
        os.write(status_fd, b".")
        try:
            os.execve(path, argv, env)
        except OSError as e:
            reason = ("no such file or directory" if isinstance(e, FileNotFoundError)
                      else "permission denied" if isinstance(e, PermissionError) else e.strerror.lower())
    os.write(status_fd, ('.%s: exec: "%s": %s: unknown' % (prefix, argv[0], reason)).encode())
    os._exit(127)


RUN_PREFIX = ("failed to create containerd task: failed to create shim task: OCI runtime create failed: "
              "runc create failed: unable to start container process")
EXEC_PREFIX = "OCI runtime exec failed: exec failed: unable to start container process"


def _open_cgroups(spec):
    return [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in spec.get("cgroup_procs") or []]


def main_run(spec_path, status_fd):
    status_fd = int(status_fd)
    os.set_inheritable(status_fd, False)
    try:
        spec = read_spec(spec_path)
        cgroup_fds = _open_cgroups(spec)
        if spec.get("netns"):
            fd = os.open(spec["netns"], os.O_RDONLY | os.O_CLOEXEC)
            setns(fd, CLONE_NEWNET)
            os.close(fd)
        if spec.get("utsns"):
            fd = os.open(spec["utsns"], os.O_RDONLY | os.O_CLOEXEC)
            setns(fd, CLONE_NEWUTS)
            os.close(fd)
        unshare(CLONE_NEWNS)
        cwd = _setup_rootfs(spec)
        env = spec.get("env") or {}
        _become(spec, cgroup_fds)
        os.chdir(cwd)
        if spec.get("entrypoint") == "nginx":
            _nginx_entrypoint(env, lambda line: os.write(1, (line + "\n").encode()))
    except Exception as e:   # the kubelet reports it as the container's start error
        os.write(status_fd, ("%s: %s: unknown" % (RUN_PREFIX, e)).encode())
        os._exit(128)
    _exec(spec["argv"], env, status_fd, RUN_PREFIX)


def main_exec(spec_path, pid, status_fd, tty, argv):
    status_fd = int(status_fd)
    os.set_inheritable(status_fd, False)
    try:
        spec = read_spec(spec_path)
        cgroup_fds = _open_cgroups(spec)
        libc()   # loaded before the container's root hides this machine's libraries
        fds = [(os.open("/proc/%s/ns/%s" % (pid, ns), os.O_RDONLY | os.O_CLOEXEC), flag)
               for ns, flag in (("net", CLONE_NEWNET), ("uts", CLONE_NEWUTS), ("mnt", CLONE_NEWNS))]
        for fd, flag in fds:
            setns(fd, flag)
            os.close(fd)
        if tty == "1":
            os.setsid()
            _check(libc().ioctl(0, TIOCSCTTY, 0), "controlling terminal")
        _become(spec, cgroup_fds)
        try:
            os.chdir(spec.get("cwd") or "/")
        except OSError:
            os.chdir("/")
    except Exception as e:
        os.write(status_fd, ("%s: %s: unknown" % (EXEC_PREFIX, e)).encode())
        os._exit(126)
    _exec(argv, spec.get("env") or {}, status_fd, EXEC_PREFIX)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "run":
        main_run(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 7 and sys.argv[1] == "exec" and sys.argv[6] == "--":
        main_exec(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[7:])
    else:
        sys.stderr.write("usage: runtime.py run SPEC STATUS_FD | exec SPEC PID STATUS_FD TTY -- ARGV...\n")
        sys.exit(2)
