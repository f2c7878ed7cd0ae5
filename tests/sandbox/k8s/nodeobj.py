"""The Node object the sandbox's one node registers, as a kubelet does at start.

Addresses, pod CIDR and name come from the node itself (the cluster network's
node address and pod range, nodeutil.NODE_NAME): the network part of the node
decides them, this file only reports them. Capacity is this machine's (CPUs, memory,
the state directory's file system); allocatable subtracts the kubelet's
default hard eviction thresholds (memory.available<100Mi,
nodefs.available<10%), as a kubelet without reservations reports.
"""
import os
import platform

from . import discovery
from . import nodeutil as u

MAX_PODS = 110    # the kubelet's default --max-pods


def _os_image():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _mem_kib():
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def build(state_dir, net):
    name = u.NODE_NAME
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    mem = _mem_kib()
    st = os.statvfs(state_dir)
    disk_kib = st.f_blocks * st.f_frsize // 1024
    now = u.now_rfc3339()
    cap = {"cpu": str(os.cpu_count() or 1), "ephemeral-storage": "%dKi" % disk_kib, "hugepages-1Gi": "0",
           "hugepages-2Mi": "0", "memory": "%dKi" % mem, "pods": str(MAX_PODS)}
    alloc = dict(cap, memory="%dKi" % max(0, mem - 100 * 1024),
                 **{"ephemeral-storage": str(disk_kib * 1024 * 9 // 10)})

    def cond(t, status, reason, message):
        return {"type": t, "status": status, "lastHeartbeatTime": now, "lastTransitionTime": now,
                "reason": reason, "message": message}
    cidr = net.info()["podCIDR"]
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "beta.kubernetes.io/arch": arch, "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "node-role.kubernetes.io/control-plane": ""},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {
            "capacity": cap, "allocatable": alloc,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")],
            "addresses": [{"type": "InternalIP", "address": net.node_ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"), "systemUUID": _read("/sys/class/dmi/id/product_uuid",
                                                                            _read("/etc/machine-id")),
                "bootID": _read("/proc/sys/kernel/random/boot_id"), "kernelVersion": platform.release(),
                "osImage": _os_image(), "containerRuntimeVersion": "sandbox://" + discovery.VERSION["gitVersion"],
                "kubeletVersion": discovery.VERSION["gitVersion"], "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": arch},
        },
    }


def register(store, state_dir, net):
    """Create the Node (or refresh its status) and its Lease in kube-node-lease."""
    node = build(state_dir, net)
    if store.get("nodes", None, node["metadata"]["name"]) is None:
        store.create("nodes", None, node)     # status is ignored on create, as for any kind

    def fn(o):
        o["status"] = node["status"]
    store.patch_status("nodes", None, node["metadata"]["name"], fn)
    if store.get("leases", "kube-node-lease", u.NODE_NAME) is None:
        store.create("leases", "kube-node-lease", {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": u.NODE_NAME, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": u.NODE_NAME, "leaseDurationSeconds": 40,
                     "renewTime": u.now_rfc3339().replace("Z", ".000000Z")}})
