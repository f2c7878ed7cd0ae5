"""Just enough rtnetlink (what `ip link/addr/route` send) for the sandbox's
cluster network, so that a pod start costs no `ip` process.

    with Rtnl(netns_path) as nl:          # a NETLINK_ROUTE socket made in that namespace
        nl.add_veth("vabc", "eth0", peer_netns_fd)
        nl.set_link("vabc", up=True, master="cbr0")
        nl.add_addr("eth0", "10.244.0.7", 16)
        nl.add_route("0.0.0.0/0", gateway="10.244.0.1")

Every request asks for an acknowledgement; a refusal raises OSError with the
kernel's errno. Interface names resolve in the namespace the calls run in
(the thread enters it for the duration of the `with`). IPv4 only."""
import ipaddress
import os
import socket
import struct

from . import netns

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR = 20
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_AF_SPEC, IFLA_NET_NS_FD = 1, 3, 10, 18, 26, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_INET6_ADDR_GEN_MODE = 8
IN6_ADDR_GEN_MODE_NONE = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RT_TABLE_LOCAL = 254, 255
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE, RT_SCOPE_HOST = 0, 254
RTN_UNICAST, RTN_LOCAL, RTN_UNREACHABLE = 1, 2, 7


def _attr(kind, data):
    if isinstance(data, str):
        data = data.encode() + b"\0"
    n = 4 + len(data)
    return struct.pack("HH", n, kind) + data + b"\0" * ((4 - n % 4) % 4)


def _ifinfo(index=0, flags=0, change=0):
    return struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


class Rtnl:
    def __init__(self, path=None):
        self.path = path
        self.seq = 0
        self.sock = None
        self._ctx = None

    def __enter__(self):
        if self.path:
            self._ctx = netns.entered(self.path)
            self._ctx.__enter__()
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
            self.sock.bind((0, 0))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)
        return False

    def _request(self, mtype, flags, body):
        self.seq += 1
        msg = struct.pack("IHHII", 16 + len(body), mtype, flags | NLM_F_REQUEST | NLM_F_ACK, self.seq, 0) + body
        self.sock.send(msg)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, rtype, _, seq, _ = struct.unpack_from("IHHII", data, off)
                if rtype == NLMSG_ERROR and seq == self.seq:
                    err = -struct.unpack_from("i", data, off + 16)[0]
                    if err:
                        raise OSError(err, "%s (rtnetlink %d)" % (os.strerror(err), mtype))
                    return
                off += max(length, 16)

    @staticmethod
    def index(name):
        return socket.if_nametoindex(name)

    def add_bridge(self, name, mac):
        """A bridge whose MAC address is `mac` (6 bytes). Without one set, Linux
        gives a bridge the lowest MAC of its ports, so it changes whenever a pod's
        veth comes or goes, and every neighbour's cached gateway address goes
        stale (kubernetes/kubernetes#30783; CNI's bridge plugin sets it)."""
        self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                      _ifinfo() + _attr(IFLA_IFNAME, name) + _attr(IFLA_ADDRESS, mac)
                      + _attr(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, "bridge")))

    def add_veth(self, name, peer, peer_netns_fd=None):
        """A veth pair: `name` here, `peer` here or in the namespace of peer_netns_fd."""
        peer_attrs = _attr(IFLA_IFNAME, peer)
        if peer_netns_fd is not None:
            peer_attrs += _attr(IFLA_NET_NS_FD, struct.pack("I", peer_netns_fd))
        info = _attr(IFLA_INFO_KIND, "veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, _ifinfo() + peer_attrs))
        self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                      _ifinfo() + _attr(IFLA_IFNAME, name) + _attr(IFLA_LINKINFO, info))

    def set_link(self, name, up=None, master=None, no_ipv6_ll=False):
        """Link changes in one request: up, bridge port of `master`, and no IPv6
        link-local address (addrgenmode none; before up to have effect)."""
        attrs = b""
        if master is not None:
            attrs += _attr(IFLA_MASTER, struct.pack("I", self.index(master)))
        if no_ipv6_ll:
            attrs += _attr(IFLA_AF_SPEC, _attr(socket.AF_INET6, _attr(IFLA_INET6_ADDR_GEN_MODE,
                                                                       bytes([IN6_ADDR_GEN_MODE_NONE]))))
        flags = IFF_UP if up else 0
        change = IFF_UP if up is not None else 0
        self._request(RTM_NEWLINK, 0, _ifinfo(self.index(name), flags, change) + attrs)

    def del_link(self, name):
        self._request(RTM_DELLINK, 0, _ifinfo(self.index(name)))

    def add_addr(self, dev, address, prefix):
        a = socket.inet_aton(address)
        body = struct.pack("BBBBI", socket.AF_INET, prefix, 0, RT_SCOPE_UNIVERSE, self.index(dev))
        self._request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body + _attr(IFA_LOCAL, a) + _attr(IFA_ADDRESS, a))

    def _route(self, mtype, flags, cidr, rtype, table, scope, gateway=None, dev=None):
        net = ipaddress.ip_network(cidr)
        body = struct.pack("BBBBBBBBI", socket.AF_INET, net.prefixlen, 0, 0, table, RTPROT_BOOT, scope, rtype, 0)
        if net.prefixlen:
            body += _attr(RTA_DST, net.network_address.packed)
        if gateway:
            body += _attr(RTA_GATEWAY, socket.inet_aton(gateway))
        if dev:
            body += _attr(RTA_OIF, struct.pack("I", self.index(dev)))
        self._request(mtype, flags, body)

    def add_route(self, cidr, gateway=None, dev=None):
        self._route(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, cidr, RTN_UNICAST, RT_TABLE_MAIN, RT_SCOPE_UNIVERSE,
                    gateway, dev)

    def add_local_route(self, cidr, dev="lo"):
        """Every address of cidr is local here (`ip route add local CIDR dev lo`)."""
        self._route(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, cidr, RTN_LOCAL, RT_TABLE_LOCAL, RT_SCOPE_HOST,
                    dev=dev)

    def add_unreachable(self, cidr):
        self._route(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, cidr, RTN_UNREACHABLE, RT_TABLE_MAIN,
                    RT_SCOPE_UNIVERSE)

    def del_unreachable(self, cidr):
        self._route(RTM_DELROUTE, 0, cidr, RTN_UNREACHABLE, RT_TABLE_MAIN, RT_SCOPE_UNIVERSE)
