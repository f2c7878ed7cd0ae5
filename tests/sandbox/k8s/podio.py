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
everything in the container's cgroup does. Today pods share this machine's
network namespace, each with a pod IP on lo: dial() connects to the pod IP;
once pods have their own network namespaces it connects inside them.
"""
import fcntl
import hashlib
import os
import socket
import struct
import subprocess
import termios

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


def netns_path(uid):
    """Where the runtime says the pod's network namespace is (a CNI-style name)."""
    h = hashlib.sha256(("netns/" + (uid or "")).encode()).hexdigest()
    return "/var/run/netns/cni-%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:32])


def _worker(kubelet, namespace, pod):
    if kubelet is None:
        return None
    with kubelet.lock:
        for w in kubelet.workers.values():
            if w.ns == namespace and w.name == pod:
                return w
    return None


def dial(kubelet, namespace, pod, port, timeout=5.0):
    w = _worker(kubelet, namespace, pod)
    uid = w.uid if w is not None else ""
    ip = w.ip if w is not None else None

    def refused(err4):
        return DialError('failed to execute portforward in network namespace "%s": failed to connect to '
                         'localhost:%d inside namespace "%s", IPv4: dial tcp4 127.0.0.1:%d: %s IPv6 dial tcp6 '
                         '[::1]:%d: connect: connection refused '
                         % (netns_path(uid), port, sandbox_id(uid), port, err4, port))
    if ip is None:
        raise refused("connect: connection refused")
    try:
        s = socket.create_connection((ip, port), timeout=timeout)
    except socket.timeout:
        raise refused("i/o timeout")
    except OSError as e:
        raise refused("connect: " + (os.strerror(e.errno).lower() if e.errno else str(e)))
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
