"""The node half of the sandbox: controllers, kubelet, service proxy and cluster
DNS as threads, over the cluster network (k8s/network.py).

    handle = node.start(store, state_dir)
    ...
    handle.stop()   # kills every pod process (TERM, KILL after 2 s), closes listeners, joins
                    # threads, then removes the cluster network

Everything is driven by store.subscribe events; the callback only enqueues."""
import os
import queue
import threading

from . import controllers
from . import dns as dns_mod
from . import network as network_mod
from . import nodeobj
from . import kubelet as kubelet_mod
from . import proxy as proxy_mod
from . import nodeutil as u


class Node:
    def __init__(self, store, state_dir):
        self.store = store
        self.state_dir = os.path.abspath(state_dir)
        os.makedirs(os.path.join(self.state_dir, "pods"), exist_ok=True)
        self.rs = controllers.ReplicaSetController(store)
        self.deploy = controllers.DeploymentController(store)
        self.endpoints = controllers.EndpointsController(store)
        self.network = network_mod.Network(self.state_dir)
        self.kubelet = kubelet_mod.Kubelet(store, self.state_dir, self.network)
        self.proxy = proxy_mod.ServiceProxy(store, self.network.cluster_netns, reserved=[network_mod.DNS_IP])
        self.dns = None
        self.components = [self.kubelet, self.rs, self.deploy, self.endpoints, self.proxy]
        self._events = queue.SimpleQueue()
        self._dispatcher = threading.Thread(target=self._dispatch, name="node-events", daemon=True)
        self._stopped = False

    def _on_event(self, etype, resource, obj):
        # Called by the store on the writer's thread: only enqueue.
        if not self._stopped:
            self._events.put((etype, resource, obj))

    def _dispatch(self):
        while True:
            ev = self._events.get()
            if ev is None:
                return
            for c in self.components:
                try:
                    c.on_event(*ev)
                except Exception as e:  # one component's bug must not starve the others
                    u.log.warning("node: %s.on_event failed: %r", type(c).__name__, e, exc_info=True)

    def start(self):
        self.network.start()
        try:
            # the kubelet registers its Node first (its InternalIP: the node's host-link address)
            nodeobj.register(self.store, self.state_dir, self.network)
            self.dns = dns_mod.Server(self.store, self.network).start()
            dns_mod.publish_service(self.store)
        except BaseException:
            self.network.stop()
            raise
        self.store.subscribe(self._on_event)
        self._dispatcher.start()
        self.proxy.start()
        self.endpoints.start()
        self.kubelet.start()
        self.rs.start()
        self.deploy.start()
        return self

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        unsub = getattr(self.store, "unsubscribe", None)
        if unsub:
            unsub(self._on_event)
        self._events.put(None)
        self._dispatcher.join(5)
        try:
            for c in (self.deploy, self.rs, self.endpoints):
                c.stop()
            self.kubelet.stop(grace=2.0)
            self.proxy.stop()
            if self.dns is not None:
                self.dns.stop()
        finally:
            self.network.stop()   # whatever failed above, nothing of the network stays

    def pids(self):
        """Processes the kubelet started and that are still running."""
        with self.kubelet.lock:
            return sorted(self.kubelet.pids)


def start(store, state_dir):
    return Node(store, state_dir).start()
