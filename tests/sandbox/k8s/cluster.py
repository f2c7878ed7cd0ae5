"""The sandbox cluster process: store + garbage collector + API server + node.

Run as `python3 -m k8s.cluster DIR` (by `sandbox up`). Reads DIR/server.json,
binds 127.0.0.1 on a free port, starts the node (k8s.node.start(store, DIR),
if that module exists), then writes DIR/ready (JSON: port, pid). SIGTERM stops
everything: watches end, the node stops (its pods are killed), sockets close.
"""
import json
import os
import signal
import ssl
import sys
import threading

from . import audit
from . import endpointslices
from . import auth
from . import faults
from . import gc
from . import server
from . import store as S


class Cluster:
    def __init__(self, state_dir):
        self.state_dir = os.path.abspath(state_dir)
        with open(os.path.join(self.state_dir, "server.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        self.cfg = cfg
        self.bookmark_interval = float(cfg.get("bookmarkInterval", 2.0))
        self.stopping = threading.Event()
        self.store = S.Store(history=int(cfg.get("watchHistory", 1000)))
        with open(os.path.join(self.state_dir, "ca.crt"), encoding="utf-8") as f:
            self.store.publish_root_ca(f.read())
        self.gc = gc.GarbageCollector(self.store)
        self.slices = endpointslices.Mirror(self.store)
        self.authn = auth.Authenticator(cfg["tokens"])
        self.audit = audit.Audit(os.path.join(self.state_dir, "audit.jsonl"))
        self.faults = faults.Faults(os.path.join(self.state_dir, "faults.json"))
        self._conns = set()
        self._conns_lock = threading.Lock()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(os.path.join(self.state_dir, "server.crt"), os.path.join(self.state_dir, "server.key"))
        ctx.set_alpn_protocols(["http/1.1"])
        self.httpd = server.ApiServer(("127.0.0.1", int(cfg.get("port", 0))), ctx, self)
        self.port = self.httpd.server_address[1]
        self.address = "127.0.0.1:%d" % self.port
        self.node = None

    def track(self, sock):
        with self._conns_lock:
            self._conns.add(sock)

    def untrack(self, sock):
        with self._conns_lock:
            self._conns.discard(sock)

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="apiserver", daemon=True)
        self._thread.start()
        here = os.path.dirname(os.path.abspath(__file__))
        if os.path.exists(os.path.join(here, "node.py")) and not self.cfg.get("noNode"):
            from . import node
            self.node = node.start(self.store, self.state_dir)

    def stop(self):
        self.stopping.set()
        self.faults.stop()
        self.store.drop_watches()
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(2)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        if self.node is not None:
            try:
                self.node.stop()
            except Exception:
                import traceback
                traceback.print_exc()
        self.gc.stop()
        self.slices.stop()
        self.audit.close()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(argv):
    if len(argv) != 2:
        print("usage: python3 -m k8s.cluster DIR", file=sys.stderr)
        return 2
    state_dir = argv[1]
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    c = Cluster(state_dir)
    c.start()
    ready = os.path.join(c.state_dir, "ready")
    tmp = ready + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"port": c.port, "pid": os.getpid()}, f)
    os.rename(tmp, ready)
    owner = c.cfg.get("ownerPid")
    while not done.wait(1.0):
        if owner and not _alive(owner):
            print("sandbox: owner process %d is gone; stopping" % owner, file=sys.stderr)
            break
    try:
        os.unlink(ready)
    except OSError:
        pass
    c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
