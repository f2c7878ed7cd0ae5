"""Pod I/O for the API server's streaming endpoints: what a kubelet and its
container runtime do for `pods/portforward` and `pods/exec`.

The interface (kept narrow: the node's owners adapt the bodies, not the callers):

    dial(kubelet, namespace, pod, port, timeout) -> socket.socket
        A TCP connection to `port` as the runtime's port-forward makes it: a
        real runtime connects to localhost:PORT inside the pod's network
        namespace. Raises DialError(message): the message is the runtime's
        text, which streams.py wraps as the kubelet does ("error forwarding
        port P to pod SANDBOX, uid : MESSAGE") into the error stream.

    check_running(kubelet, namespace, pod, container)
        Raises NotRunning(message) unless the container runs (checked before
        the upgrade, as the kubelet finds the container first).

    exec_process(kubelet, namespace, pod, container, argv, tty, stdin) -> Process
        Starts argv in the container as `kubectl exec` runs it. Raises
        NotRunning(message) when there is no running container of that name
        (the kubelet refuses the upgrade) and ExecError(message) when the
        runtime cannot start the command (the exec ends with an
        InternalError status). Process has:
            stdin   writable binary file object, or None (stdin False)
            stdout  readable binary file object (the pty master with tty)
            stderr  readable binary file object, or None with tty
            wait() -> exit code (128+N when killed by signal N)
            kill()
            resize(cols, rows)   (ignored without tty)

exec_process() runs argv through the kubelet's exec context (k8s/runtime.py
ExecContext): in the container's network, UTS and mount namespaces, its
cgroups, user, capabilities and environment; it ends with the container, as
everything in the container's cgroup does. dial() makes its socket in the
pod's network namespace (netns.socket_in) and connects to localhost there.
"""
import fcntl
import hashlib
import os
import socket
import struct
import subprocess
import termios

from . import netns
from . import runtime


class DialError(Exception):
    pass


class NotRunning(Exception):
    pass


class ExecError(Exception):
    pass


def sandbox_id(uid):
    """The pod sandbox id a CRI runtime names the pod by (64 hex digits)."""
    return hashlib.sha256(("sandbox/" + (uid or "")).encode()).hexdigest()


def _worker(kubelet, namespace, pod):
    if kubelet is None:
        return None
    with kubelet.lock:
        for w in kubelet.workers.values():
            if w.ns == namespace and w.name == pod:
                return w
    return None


def _why(e):
    if isinstance(e, socket.timeout):
        return "i/o timeout"
    return "connect: " + (os.strerror(e.errno).lower() if e.errno else str(e))


def dial(kubelet, namespace, pod, port, timeout=5.0):
    """localhost:port inside the pod's network namespace, IPv4 then IPv6, as
    containerd's port-forward does."""
    w = _worker(kubelet, namespace, pod)
    uid = w.uid if w is not None else ""
    path = w.netns if w is not None else None

    def refused(err4, err6):
        return DialError('failed to execute portforward in network namespace "%s": failed to connect to '
                         'localhost:%d inside namespace "%s", IPv4: dial tcp4 127.0.0.1:%d: %s IPv6 dial tcp6 '
                         '[::1]:%d: %s ' % (path or "", port, sandbox_id(uid), port, err4, port, err6))
    if path is None:
        raise refused("connect: connection refused", "connect: connection refused")
    try:
        s = netns.connect(path, ("127.0.0.1", port), timeout)
    except OSError as e4:
        try:
            s = netns.connect(path, ("::1", port), timeout, socket.AF_INET6)
        except OSError as e6:
            raise refused(_why(e4), _why(e6))
    s.settimeout(None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Process:
    def __init__(self, kubelet, popen, stdin, stdout, stderr, master=None):
        self.kubelet = kubelet
        self.popen = popen
        kubelet.track(popen.pid)    # killed with the node if still running then
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.master = master

    def wait(self):
        rc = self.popen.wait()
        self.kubelet.untrack(self.popen.pid)
        return 128 - rc if rc < 0 else rc

    def kill(self):
        try:
            os.killpg(self.popen.pid, 9)
        except OSError:
            pass

    def resize(self, cols, rows):
        if self.master is not None:
            try:
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            except OSError:
                pass


def check_running(kubelet, namespace, pod, container):
    """(worker, container) of a running container, or NotRunning (the kubelet
    refuses the exec upgrade with it)."""
    w = _worker(kubelet, namespace, pod)
    c = next((x for x in (w.containers if w is not None else []) if x.name == container), None)
    if c is None or c.proc is None or c.proc.poll() is not None or c.state != "running":
        raise NotRunning('container not found ("%s")' % container)
    return w, c


def exec_process(kubelet, namespace, pod, container, argv, tty, stdin):
    w, c = check_running(kubelet, namespace, pod, container)
    ctx = w._exec_context(c)
    if ctx is None:
        raise NotRunning('container not found ("%s")' % container)
    master = slave = None
    try:
        if tty:
            master, slave = os.openpty()
            p = ctx.spawn(argv, stdin=slave, stdout=slave, stderr=slave, tty=True)
        else:
            p = ctx.spawn(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, bufsize=0)
    except runtime.StartFailure as e:
        if master is not None:
            os.close(master)
        raise ExecError('failed to exec in container: failed to start exec "%s": %s'
                        % (os.urandom(32).hex(), e.message))
    finally:
        if slave is not None:
            os.close(slave)
    if tty:
        out = os.fdopen(master, "rb", buffering=0)
        inp = os.fdopen(os.dup(master), "wb", buffering=0) if stdin else None
        return Process(kubelet, p, inp, out, None, master)
    return Process(kubelet, p, p.stdin, p.stdout, p.stderr)
