"""The sandbox's cluster network, as a kind node has one (README "Cluster network").

    net = Network(state_dir).start()     # cluster namespace, bridge, host link, routes
    path, ip = net.add_pod(uid)          # a pod's own namespace, one veth on the bridge
    net.remove_pod(path, ip)
    net.stop()                           # everything above removed

Every name carries the per-sandbox id (`czsb-XXXXXX`), so sandboxes run side by
side: the cluster namespace `czsb-XXXXXX` (the node: bridge `cbr0`, the
Service range as a local route, the proxy and DNS sockets, the link to this
machine), pod namespaces `czsb-XXXXXX-<uid>`, the `sandbox exec` namespace
`czsb-XXXXXX-exec`, and the host link `czsb-XXXXXX` in this machine's
namespace. This machine's namespace gets only the host link's /30 and the
`unreachable` routes for the pod and Service ranges, shared by every running
sandbox (the first `up` adds them, the last `down` removes them; the users are
files under /run/czctl-sandbox/users, taken under a lock). A sandbox whose
process died without cleaning up is cleaned by the next `up` or by `down`.

It must not know about pods beyond an id and an address: the kubelet asks it
for a namespace and hands that to whatever starts the containers."""
import fcntl
import ipaddress
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time

from . import netns
from .rtnl import Rtnl

POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")
BRIDGE_IP = "10.244.0.1"          # the pods' default gateway (the node on the pod network)
EXEC_IP = "10.244.0.2"            # the `sandbox exec` namespace, a debug pod's address
DNS_IP = "10.96.0.10"             # the kube-dns Service, as kubeadm and kind number it
CLUSTER_DOMAIN = "cluster.local"
# One /30 per sandbox between this machine (.1, the host gateway) and the node
# (.2, its InternalIP). Chosen, under the lock, as the first /30 of the pool
# that overlaps no route of this machine.
HOST_LINK_POOL = ipaddress.ip_network("10.250.0.0/16")
HOST_GATEWAY_NAME = "host.sandbox.internal"
BRIDGE = "cbr0"
# fixed, derived from BRIDGE_IP as CNI's bridge plugin does (0a:58 + the IPv4 bytes)
BRIDGE_MAC = bytes([0x0a, 0x58]) + ipaddress.ip_address(BRIDGE_IP).packed
ID_PREFIX = "czsb-"
STATE = "/run/czctl-sandbox"
ROUTE_TYPES = ("unicast", "local", "broadcast", "multicast", "unreachable", "blackhole", "prohibit", "throw",
               "nat", "anycast")


class NetworkError(Exception):
    pass


def _ip(args):
    """Run `ip ARGS`; raise NetworkError with ip's message."""
    argv = ["ip"] + list(args)
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise NetworkError("%s: %s" % (" ".join(argv), (r.stderr or r.stdout).strip()))
    return r.stdout


def _proc_start(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(user):
    start = _proc_start(user.get("pid") or 0)
    return start is not None and start == user.get("start")


class _Lock:
    """The machine-wide lock around the shared state (users, routes, host links)."""

    def __enter__(self):
        os.makedirs(os.path.join(STATE, "users"), exist_ok=True)
        self.fd = os.open(os.path.join(STATE, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
        return False


def _users():
    d = os.path.join(STATE, "users")
    out = {}
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return out
    for n in names:
        if not n.endswith(".json"):
            continue
        try:
            with open(os.path.join(d, n)) as f:
                out[n[:-5]] = json.load(f)
        except (OSError, ValueError):
            out[n[:-5]] = {}
    return out


def _routes():
    """[(network, type, line)] of every IPv4 route of this machine's namespace (all tables)."""
    out = []
    for line in _ip(["-4", "-o", "route", "show", "table", "all"]).splitlines():
        words = line.split()
        if not words:
            continue
        kind = "unicast"
        if words[0] in ROUTE_TYPES:
            kind = words.pop(0)
        if not words or words[0] == "default":
            continue
        try:
            out.append((ipaddress.ip_network(words[0], strict=False), kind, line.strip()))
        except ValueError:
            continue
    return out


def cluster_routes_present(routes=None):
    """Whether this machine's namespace has the sandbox's unreachable routes."""
    routes = _routes() if routes is None else routes
    have = {(net, kind) for net, kind, _ in routes}
    return [str(n) for n in (POD_CIDR, SERVICE_CIDR) if (n, "unreachable") in have]


def _check_cluster_ranges(routes):
    for net, kind, line in routes:
        for cidr in (POD_CIDR, SERVICE_CIDR):
            if net.overlaps(cidr) and not (net == cidr and kind == "unreachable"):
                raise NetworkError("this machine has a route that overlaps the sandbox's %s range %s (%s); the "
                                   "sandbox cannot isolate its cluster addresses from it" % (
                                       "pod" if cidr == POD_CIDR else "Service", cidr, line))


def _free_link(routes):
    taken = [net for net, _, _ in routes]
    for sub in HOST_LINK_POOL.subnets(new_prefix=30):
        if not any(sub.overlaps(t) for t in taken):
            hosts = list(sub.hosts())
            return sub, str(hosts[0]), str(hosts[1])
    raise NetworkError("no free /30 left in %s for the host link" % HOST_LINK_POOL)


def _mounts_with(marker):
    """Mount points whose path contains marker, deepest first."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if marker in mp:
                    out.append(mp)
    except OSError:
        pass
    return sorted(set(out), key=len, reverse=True)


def _cgroups_with(marker):
    """cgroup directories (v1 and v2 hierarchies) whose name contains marker,
    with everything below them (the containers' pod and container cgroups),
    deepest first."""
    out = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        if marker in top:
            out += [os.path.join(top, d) for d in dirs]
            continue
        for d in dirs:
            if marker in d:
                out.append(os.path.join(top, d))
    return sorted(set(out), key=len, reverse=True)


def _netns_with(marker):
    try:
        return sorted(n for n in os.listdir(netns.NETNS_DIR) if n.startswith(marker))
    except FileNotFoundError:
        return []


def _links_with(marker):
    """Interfaces of this machine's namespace whose name starts with marker."""
    try:
        return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(marker))
    except OSError:
        return []


def _pids_in(inodes):
    """Processes whose network namespace is one of these inodes."""
    found = []
    if not inodes:
        return found
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ino = os.stat("/proc/%s/ns/net" % d).st_ino
        except OSError:
            continue
        if ino in inodes:
            found.append(int(d))
    return found


def leftovers(sid):
    """Everything of sandbox `sid` still on this machine, as printable lines:
    namespaces, interfaces, mounts, cgroups (anything named with the id) and
    processes inside its namespaces."""
    marker = sid
    out = ["netns %s" % n for n in _netns_with(marker)]
    out += ["interface %s" % n for n in _links_with(marker)]
    out += ["mount %s" % m for m in _mounts_with(marker)]
    out += ["cgroup %s" % c for c in _cgroups_with(marker)]
    inodes = {netns.inode(netns.path_of(n)) for n in _netns_with(marker)} - {None}
    out += ["process %d in a namespace of %s" % (p, sid) for p in _pids_in(inodes)]
    return out


def cleanup(sid):
    """Remove everything of sandbox `sid` (idempotent; the caller holds the lock):
    kill the processes inside its namespaces and cgroups, unmount what carries its
    id, delete its namespaces, host link and cgroups."""
    inodes = {netns.inode(netns.path_of(n)) for n in _netns_with(sid)} - {None}
    for pid in _pids_in(inodes):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for cg in _cgroups_with(sid):
        try:
            with open(os.path.join(cg, "cgroup.procs")) as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except OSError:
                        pass
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while _pids_in(inodes) and time.monotonic() < deadline:
        time.sleep(0.01)   # killed, still exiting: gone before cleanup returns
    for mp in _mounts_with(sid):
        try:
            netns.umount(mp)
        except OSError:
            pass
    for n in _netns_with(sid):
        netns.remove(netns.path_of(n))
    with Rtnl() as nl:
        for link in _links_with(sid):
            try:
                nl.del_link(link)
            except OSError:
                pass   # gone meanwhile with its namespace
    deadline = time.monotonic() + 2
    for cg in _cgroups_with(sid):
        while True:
            try:
                os.rmdir(cg)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)   # its last processes are still exiting
    try:
        os.unlink(os.path.join(STATE, "users", sid + ".json"))
    except FileNotFoundError:
        pass


def _prune_stale():
    """Clean up sandboxes whose process is gone (the caller holds the lock)."""
    users = _users()
    for sid, user in users.items():
        if not _alive(user):
            cleanup(sid)
    live = {sid for sid, user in users.items() if _alive(user)}
    orphans = {n[:len(ID_PREFIX) + 6] for n in _netns_with(ID_PREFIX)} | set(_links_with(ID_PREFIX))
    for sid in orphans - live:
        cleanup(sid)


def _sync_routes(routes=None):
    """Unreachable routes for the cluster ranges exactly while some sandbox is
    registered (the caller holds the lock)."""
    have = cluster_routes_present(routes)
    want = bool(_users())
    with Rtnl() as nl:
        for cidr in (POD_CIDR, SERVICE_CIDR):
            try:
                if want and str(cidr) not in have:
                    nl.add_unreachable(str(cidr))
                elif not want and str(cidr) in have:
                    nl.del_unreachable(str(cidr))
            except OSError:
                if want:
                    raise


def release(sid):
    """Forget sandbox `sid` and remove everything it left: what `down` runs after
    the cluster process is gone (it cleans up itself when it can)."""
    with _Lock():
        cleanup(sid)
        _sync_routes()


class _ns_fd:
    """`with _ns_fd(path) as fd`: an fd on a namespace file, closed afterwards."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def __enter__(self):
        return self.fd

    def __exit__(self, *exc):
        os.close(self.fd)
        return False


class IPAM:
    """Addresses from a range, unique while allocated, handed out round robin so
    that a freed address is not reused at once."""

    def __init__(self, net=POD_CIDR, reserved=(BRIDGE_IP, EXEC_IP)):
        self.lock = threading.Lock()
        self.first = int(net.network_address) + 1
        self.last = int(net.broadcast_address) - 1
        self.next = self.first
        self.used = {int(ipaddress.ip_address(ip)) for ip in reserved}
        self.net = net

    def allocate(self):
        with self.lock:
            for _ in range(self.last - self.first + 1):
                ip = self.next
                self.next = self.first if self.next >= self.last else self.next + 1
                if ip in self.used or (ip & 0xff) in (0, 255):
                    continue
                self.used.add(ip)
                return str(ipaddress.ip_address(ip))
        raise NetworkError("pod IP range %s exhausted" % self.net)

    def release(self, ip):
        if ip:
            with self.lock:
                self.used.discard(int(ipaddress.ip_address(ip)))


def resolv_conf(namespace):
    """A pod's /etc/resolv.conf, as the kubelet writes it for dnsPolicy ClusterFirst."""
    d = CLUSTER_DOMAIN
    return "search %s.svc.%s svc.%s %s\nnameserver %s\noptions ndots:5\n" % (namespace, d, d, d, DNS_IP)


class Network:
    def __init__(self, state_dir, sid=None):
        self.state_dir = os.path.abspath(state_dir)
        self.id = sid or ID_PREFIX + secrets.token_hex(3)
        self.cluster_netns = netns.path_of(self.id)
        self.exec_netns = netns.path_of(self.id + "-exec")
        self.ipam = IPAM()
        self.host_gateway = self.node_ip = self.link_net = None
        self.started = False

    def info(self):
        """What DIR/network.json says (README "Cluster network")."""
        return {"id": self.id, "clusterNetns": self.cluster_netns, "execNetns": self.exec_netns,
                "podCIDR": str(POD_CIDR), "serviceCIDR": str(SERVICE_CIDR), "clusterDomain": CLUSTER_DOMAIN,
                "dnsIP": DNS_IP, "bridgeIP": BRIDGE_IP, "execIP": EXEC_IP, "nodeIP": self.node_ip,
                "hostGateway": self.host_gateway, "hostGatewayName": HOST_GATEWAY_NAME,
                "hostLink": self.id, "hostLinkCIDR": str(self.link_net)}

    def start(self):
        if os.geteuid() != 0:
            raise NetworkError("the sandbox node needs root (network namespaces); run it as root")
        with _Lock():
            _prune_stale()
            routes = _routes()
            _check_cluster_ranges(routes)
            self.link_net, self.host_gateway, self.node_ip = _free_link(routes)
            with open(os.path.join(STATE, "users", self.id + ".json"), "w") as f:
                json.dump({"pid": os.getpid(), "start": _proc_start(os.getpid()), "dir": self.state_dir}, f)
            try:
                self._build()
                _sync_routes(routes)
            except BaseException:
                cleanup(self.id)
                _sync_routes()
                raise
        self.started = True
        path = os.path.join(self.state_dir, "network.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.info(), f, indent=1)
        os.rename(path + ".tmp", path)
        with open(os.path.join(self.state_dir, "resolv.conf"), "w") as f:
            f.write(resolv_conf("default"))
        return self

    def _build(self):
        sid, prefix = self.id, self.link_net.prefixlen
        netns.create(sid)
        netns.create(sid + "-exec")
        # addrgenmode none: no IPv6 link-local chatter on the link to this machine
        with Rtnl() as nl:
            with _ns_fd(self.cluster_netns) as fd:
                nl.add_veth(sid, "eth0", fd)
            nl.set_link(sid, no_ipv6_ll=True)
            nl.add_addr(sid, self.host_gateway, prefix)
            nl.set_link(sid, up=True)
        with Rtnl(self.cluster_netns) as nl:
            nl.set_link("lo", up=True)
            nl.set_link("eth0", no_ipv6_ll=True)
            nl.add_addr("eth0", self.node_ip, prefix)
            nl.set_link("eth0", up=True)
            nl.add_bridge(BRIDGE, BRIDGE_MAC)
            nl.add_addr(BRIDGE, BRIDGE_IP, POD_CIDR.prefixlen)
            nl.set_link(BRIDGE, up=True)
            nl.add_local_route(str(SERVICE_CIDR))
        self._attach(self.exec_netns, "vexec", EXEC_IP)
        netns.write_sysctl(self.cluster_netns, "net.ipv4.ip_forward", 1)
        try:
            # br_netfilter (when loaded) would pass traffic between pods on the
            # bridge through the forward filter below: it is switched, not routed
            netns.write_sysctl(self.cluster_netns, "net.bridge.bridge-nf-call-iptables", 0)
        except FileNotFoundError:
            pass
        # Pods reach this machine only at the host gateway, masqueraded to the
        # node's address as kind's node does; nothing else is forwarded.
        rules = ("table ip czsb {\n"
                 " chain postrouting { type nat hook postrouting priority srcnat; policy accept;\n"
                 "  oifname \"eth0\" ip saddr %s masquerade; }\n"
                 " chain forward { type filter hook forward priority filter; policy drop;\n"
                 "  ct state established,related accept;\n"
                 "  iifname \"%s\" oifname \"eth0\" ip daddr %s accept; }\n"
                 "}\n" % (POD_CIDR, BRIDGE, self.host_gateway))
        r = subprocess.run(["nsenter", "--net=" + self.cluster_netns, "nft", "-f", "-"], input=rules,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise NetworkError("nft in the cluster namespace: %s" % (r.stderr.strip() or r.returncode))

    def _attach(self, path, veth, ip):
        """A veth from the bridge into the namespace at path (its eth0, with ip)."""
        with Rtnl(self.cluster_netns) as nl, _ns_fd(path) as fd:
            nl.add_veth(veth, "eth0", fd)
            nl.set_link(veth, up=True, master=BRIDGE)
        with Rtnl(path) as nl:
            nl.set_link("lo", up=True)
            nl.add_addr("eth0", ip, POD_CIDR.prefixlen)
            nl.set_link("eth0", up=True)
            nl.add_route("0.0.0.0/0", gateway=BRIDGE_IP)

    def add_pod(self, uid):
        """A network namespace for pod `uid` with one veth on the bridge:
        returns (namespace path, pod IP)."""
        ip = self.ipam.allocate()
        short = re.sub(r"[^0-9a-f]", "", (uid or "").lower())[:12] or secrets.token_hex(6)
        name = "%s-%s" % (self.id, short)
        try:
            path = netns.create(name)
        except BaseException:
            self.ipam.release(ip)
            raise
        try:
            self._attach(path, "v" + short, ip)
        except BaseException:
            netns.remove(path)
            self.ipam.release(ip)
            raise
        return path, ip

    def remove_pod(self, path, ip):
        """The pod's namespace goes (its veth with it, once its last process has
        exited) and its address is free again."""
        if path:
            netns.remove(path)
        self.ipam.release(ip)

    def stop(self):
        """Remove everything this sandbox made; the node's sockets must be closed first."""
        if not self.started:
            return
        self.started = False
        with _Lock():
            cleanup(self.id)
            _sync_routes()
