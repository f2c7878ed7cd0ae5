"""Cluster DNS: what CoreDNS's kubernetes plugin answers, at the kube-dns
Service's ClusterIP (README "Cluster DNS").

Served over UDP and TCP on DNS_IP:53 inside the cluster namespace. Answers are
read from the store at query time, so a new Service or endpoint is visible to
the next query:
- SVC.NS.svc.cluster.local: A = the ClusterIP; for a headless Service one A per
  ready endpoint address (NXDOMAIN while it has none, as CoreDNS and the DNS
  specification since kubernetes/dns#245 say); an ExternalName Service is a CNAME.
- A-B-C-D.NS.pod.cluster.local: A = A.B.C.D (CoreDNS `pods insecure`, kubeadm's default).
- the host gateway's name: A = this machine's address on the host link.
- everything else: NXDOMAIN (there is no upstream resolver: nothing may leave
  the machine), with the zone's SOA for negative caching.
Existing names have no AAAA (the cluster is IPv4 only): NOERROR without answers."""
import socket
import struct
import threading

from . import netns
from . import network as N
from . import nodeutil as u

TTL = 30                  # kubeadm's Corefile: kubernetes ... { ttl 30 }
NEGATIVE_TTL = 5
A, NS_, CNAME, SOA, AAAA, OPT, ANY = 1, 2, 5, 6, 28, 41, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4
UDP_MAX = 512


class FormatError(Exception):
    pass


def _read_name(msg, off):
    labels, jumps, end = [], 0, None
    while True:
        if off >= len(msg):
            raise FormatError("name runs past the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg) or jumps > 10:
                raise FormatError("bad compression pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            continue
        if n == 0:
            return ".".join(labels), (end if end is not None else off + 1)
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n


def _name(s):
    out = b""
    for label in s.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii", "replace")
    return out + b"\0"


def _rr(name, rtype, ttl, rdata):
    return (name if isinstance(name, bytes) else _name(name)) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def _soa():
    d = N.CLUSTER_DOMAIN
    rdata = _name("ns.dns." + d) + _name("hostmaster." + d) + struct.pack("!IIIII", 1, 7200, 1800, 86400, NEGATIVE_TTL)
    return _rr(d, SOA, NEGATIVE_TTL, rdata)


class Resolver:
    """Names to records from the store (no sockets: the server and tests use it)."""

    def __init__(self, store, host_gateway=None):
        self.store = store
        self.host_gateway = host_gateway

    def lookup(self, name):
        """(rcode, [(type, value)]) for a name; value is an IPv4 string or a name for CNAME."""
        name = name.rstrip(".").lower()
        if name == N.HOST_GATEWAY_NAME and self.host_gateway:
            return NOERROR, [(A, self.host_gateway)]
        d = "." + N.CLUSTER_DOMAIN
        if name == N.CLUSTER_DOMAIN:
            return NOERROR, []
        if name.endswith(".svc" + d):
            parts = name[:-len(".svc" + d)].split(".")
            if len(parts) == 2:
                return self._service(parts[1], parts[0])
            return NXDOMAIN, []
        if name.endswith(".pod" + d):
            parts = name[:-len(".pod" + d)].split(".")
            if len(parts) == 2:
                octets = parts[0].split("-")
                if len(octets) == 4 and all(o.isdigit() and int(o) < 256 for o in octets):
                    return NOERROR, [(A, ".".join(str(int(o)) for o in octets))]
            return NXDOMAIN, []
        return NXDOMAIN, []

    def _service(self, ns, name):
        svc = self.store.get("services", ns, name)
        if svc is None:
            return NXDOMAIN, []
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName" and spec.get("externalName"):
            return NOERROR, [(CNAME, spec["externalName"])]
        ip = spec.get("clusterIP")
        if ip and ip != "None":
            return NOERROR, [(A, ip)]
        ep = self.store.get("endpoints", ns, name) or {}
        ips = []
        for sub in ep.get("subsets") or []:
            for a in sub.get("addresses") or []:
                if a.get("ip") and a["ip"] not in ips:
                    ips.append(a["ip"])
        if not ips:
            return NXDOMAIN, []
        return NOERROR, [(A, i) for i in ips]

    def answer(self, query, limit=UDP_MAX):
        """The response message for a query message (None if it is not worth one)."""
        if len(query) < 12:
            return None
        qid, flags, qd, _, _, ar = struct.unpack("!HHHHHH", query[:12])
        if flags & 0x8000:
            return None   # a response, not a query
        opcode = (flags >> 11) & 0xF
        rd = flags & 0x0100

        def reply(rcode, question=b"", answers=(), authority=(), additional=(), tc=False):
            f = 0x8000 | (opcode << 11) | 0x0400 | rd | 0x0080 | rcode | (0x0200 if tc else 0)
            return struct.pack("!HHHHHH", qid, f, 1 if question else 0, len(answers), len(authority),
                               len(additional)) + question + b"".join(answers) + b"".join(authority) + \
                b"".join(additional)
        if opcode != 0:
            return reply(NOTIMP)
        if qd != 1:
            return reply(FORMERR)
        try:
            qname, off = _read_name(query, 12)
            qtype, qclass = struct.unpack("!HH", query[off:off + 4])
        except (FormatError, struct.error):
            return reply(FORMERR)
        question = query[12:off + 4]
        additional = []
        if ar:
            # EDNS(0): answer with our own OPT record, and the client's UDP size
            try:
                _, aoff = _read_name(query, off + 4)
                atype, size = struct.unpack("!HH", query[aoff:aoff + 4])
                if atype == OPT:
                    additional.append(b"\0" + struct.pack("!HHIH", OPT, 1232, 0, 0))
                    limit = max(limit, min(size, 1232))
            except (FormatError, struct.error):
                pass
        if qclass not in (1, 255):
            return reply(NOTIMP, question)
        rcode, records = self.lookup(qname)
        answers = []
        for rtype, value in records:
            if rtype == CNAME:
                answers.append(_rr(b"\xc0\x0c", CNAME, TTL, _name(value)))
            elif rtype == A and qtype in (A, ANY):
                answers.append(_rr(b"\xc0\x0c", A, TTL, socket.inet_aton(value)))
        authority = [] if answers else [_soa()]
        msg = reply(rcode, question, answers, authority, additional)
        if len(msg) > limit:
            msg = reply(rcode, question, (), (), additional, tc=True)
        return msg


class Server:
    """The kube-dns Service's address, served from the cluster namespace."""

    def __init__(self, store, net):
        self.resolver = Resolver(store, net.host_gateway)
        self.net = net
        self.stopping = False
        self.udp = self.tcp = None
        self.threads = []

    def start(self):
        with netns.entered(self.net.cluster_netns):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.udp.bind((N.DNS_IP, 53))
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((N.DNS_IP, 53))
        self.tcp.listen(64)
        for target, name in ((self._serve_udp, "dns-udp"), (self._serve_tcp, "dns-tcp")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _serve_udp(self):
        while not self.stopping:
            try:
                data, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            try:
                out = self.resolver.answer(data)
            except Exception as e:   # one bad query must not stop DNS
                u.log.warning("dns: %r", e, exc_info=True)
                continue
            if out:
                try:
                    self.udp.sendto(out, peer)
                except OSError:
                    pass

    def _serve_tcp(self):
        while not self.stopping:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True, name="dns-tcp-conn").start()

    def _tcp_conn(self, conn):
        conn.settimeout(5)
        try:
            f = conn.makefile("rb")
            while True:
                head = f.read(2)
                if len(head) < 2:
                    return
                data = f.read(struct.unpack("!H", head)[0])
                out = self.resolver.answer(data, limit=65535)
                if out:
                    conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopping = True
        for s in (self.udp, self.tcp):
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self.threads:
            t.join(2)


KUBE_DNS = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "kube-dns", "namespace": "kube-system",
                 "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                            "kubernetes.io/name": "CoreDNS"},
                 "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
    "spec": {"selector": {"k8s-app": "kube-dns"}, "clusterIP": N.DNS_IP, "clusterIPs": [N.DNS_IP],
             "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                       {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                       {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]},
}


def publish_service(store):
    """The kube-dns Service in kube-system, as kubeadm (and kind) create it."""
    import copy
    try:
        store.create("services", "kube-system", copy.deepcopy(KUBE_DNS))
    except Exception as e:
        if u.api_error_code(e) != 409:
            raise
