"""Network namespaces from Python 3.11 (which has no os.setns): libc's setns,
unshare and mount through ctypes.

A network namespace belongs to a *thread*: setns(CLONE_NEWNET) moves only the
calling thread, and a socket lives in the namespace of the thread that created
it, whichever thread uses it later. The node uses that: its threads (kubelet
pod workers and probes, the Service proxy, cluster DNS) enter the cluster
namespace once when they start, while the API server's threads stay in this
machine's namespace. Namespaces are kept by bind mounts under /run/netns, as
`ip netns add` keeps them, so `ip -n NAME` and `nsenter --net=PATH` work on
them. Nothing here knows about Kubernetes."""
import ctypes
import errno
import os
import socket
import threading

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETNS_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_dir_lock = threading.Lock()
_dir_ready = False


def _check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def _b(s):
    return None if s is None else os.fsencode(s)


def mount(src, dst, fstype, flags):
    _check(_libc.mount(_b(src), _b(dst), _b(fstype), flags, None), "mount %s" % dst)


def umount(path):
    """Lazy unmount; a path that is not mounted is not an error."""
    rc = _libc.umount2(_b(path), MNT_DETACH)
    if rc != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        _check(rc, "umount %s" % path)


def setns(fd, nstype=CLONE_NEWNET):
    _check(_libc.setns(fd, nstype), "setns")


def unshare(flags):
    _check(_libc.unshare(flags), "unshare")


def path_of(name):
    return os.path.join(NETNS_DIR, name)


def current():
    """An fd on the calling thread's network namespace (the caller closes it)."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def enter(path):
    """Move the calling thread into the namespace at path, for the rest of its life."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
    finally:
        os.close(fd)


class entered:
    """`with entered(path):` runs the block in that namespace, then returns the
    thread to the namespace it was in (also when the block raises)."""

    def __init__(self, path):
        self.path = path
        self.back = None

    def __enter__(self):
        self.back = current()
        try:
            enter(self.path)
        except BaseException:
            os.close(self.back)
            raise
        return self

    def __exit__(self, *exc):
        try:
            setns(self.back)
        finally:
            os.close(self.back)
        return False


def _prepare_dir():
    """/run/netns as `ip netns add` leaves it: a shared mount point, so that
    namespace mounts made later are seen in mount namespaces made earlier
    (and their removal too)."""
    global _dir_ready
    with _dir_lock:
        if _dir_ready:
            return
        os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
        try:
            mount("none", NETNS_DIR, None, MS_SHARED | MS_REC)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            mount(NETNS_DIR, NETNS_DIR, "none", MS_BIND | MS_REC)
            mount("none", NETNS_DIR, None, MS_SHARED | MS_REC)
        _dir_ready = True


def create(name):
    """A new, empty network namespace kept at /run/netns/NAME; returns the path.
    Made on the calling thread, which is back in its own namespace afterwards."""
    _prepare_dir()
    path = path_of(name)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    back = current()
    try:
        unshare(CLONE_NEWNET)
        try:
            mount("/proc/thread-self/ns/net", path, "none", MS_BIND)
        finally:
            setns(back)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    finally:
        os.close(back)
    return path


def remove(path):
    """Unmount and delete a namespace file; the namespace itself ends when no
    process, socket or mount holds it any more. Idempotent."""
    umount(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def inode(path):
    """The namespace's inode number (as /proc/PID/ns/net shows it), or None."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def socket_in(path, family=socket.AF_INET, type=socket.SOCK_STREAM, proto=0):
    """A socket that lives in the namespace at path."""
    with entered(path):
        return socket.socket(family, type, proto)


def connect(path, addr, timeout, family=socket.AF_INET):
    """A TCP connection made from inside the namespace at path (its timeout stays set)."""
    s = socket_in(path, family)
    s.settimeout(timeout)
    try:
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


def write_sysctl(path, key, value):
    """Set a net.* sysctl inside the namespace at path (/proc/sys/net is
    per namespace, seen through the opening thread)."""
    with entered(path):
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(str(value))
