"""In-process object store: the single source of truth of the sandbox cluster.

Thread-safe; every method returns deep copies. create/update run the same
defaulting, validation and admission as the HTTP API (the API handlers call
these methods). Watchers (the HTTP watch handler) and subscribers (controllers)
see every change in resourceVersion order.
"""
import base64
import collections
import datetime
import ipaddress
import json
import queue
import random
import threading
import uuid

from . import errors as E
from . import resources as R
from . import selection as selectors
from . import validation as V


def deepcopy(o):
    if isinstance(o, dict):
        return {k: deepcopy(v) for k, v in o.items()}
    if isinstance(o, list):
        return [deepcopy(v) for v in o]
    return o


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(n=5):
    return "".join(random.choice(_GEN_CHARS) for _ in range(n))


class Watcher:
    """A registered watch: events are put on .queue as (type, obj, prev_obj)."""

    def __init__(self, resource, namespace):
        self.resource = resource
        self.namespace = namespace
        self.queue = queue.Queue()
        self.closed = False

    def close(self):
        self.closed = True
        self.queue.put(None)


class Store:
    CLUSTER_IP_NET = ipaddress.ip_network("10.96.0.0/16")
    # Addresses left for Services that ask for one (kube-dns is 10.96.0.10), as
    # the real allocator's static band (KEP-3070: min(max(16, size/16), 256)).
    STATIC_BAND = 256

    def __init__(self, history=1000):
        self._lock = threading.RLock()
        self._depth = 0
        self._tls = threading.local()
        self._objs = {r.plural: {} for r in R.ALL}
        self._rv = 1
        self._history = collections.deque()
        self._history_max = history
        self._history_floor = 1          # watches from an RV below this are too old
        self._watchers = []
        self._subs = []
        self._ips = set()
        # random start in the dynamic band, like the real allocator
        self._next_ip = int(self.CLUSTER_IP_NET.network_address) + self.STATIC_BAND + random.randrange(
            self.CLUSTER_IP_NET.num_addresses - self.STATIC_BAND - 1)
        self.warnings_hook = None
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # ---- locking and event delivery -------------------------------------------------------

    def _enter(self):
        self._lock.acquire()
        self._depth += 1
        if self._depth == 1:
            self._pending = []

    def _exit(self):
        pending = None
        if self._depth == 1:
            pending = self._pending
            self._pending = []
        self._depth -= 1
        self._lock.release()
        if pending:
            for ev in pending:
                for cb in list(self._subs):
                    try:
                        cb(ev[0], ev[1], deepcopy(ev[2]))
                    except Exception:  # a subscriber bug must not break writers
                        import traceback
                        traceback.print_exc()

    def _emit(self, typ, resource, obj, prev):
        """Record a change (under the lock): history, watchers, pending callbacks."""
        rv = int(obj["metadata"]["resourceVersion"])
        snap = deepcopy(obj)
        self._history.append((rv, typ, resource, snap, prev))
        while len(self._history) > self._history_max:
            old = self._history.popleft()
            self._history_floor = old[0]
        for w in self._watchers:
            if w.resource == resource and (w.namespace is None or w.namespace == obj["metadata"].get("namespace")):
                w.queue.put((typ, snap, prev))
        self._pending.append((typ, resource, snap))

    def _next_rv(self):
        self._rv += 1
        return str(self._rv)

    def current_rv(self):
        with self._lock:
            return str(self._rv)

    def subscribe(self, callback):
        self._subs.append(callback)

    def unsubscribe(self, callback):
        try:
            self._subs.remove(callback)
        except ValueError:
            pass

    # ---- reads ------------------------------------------------------------------------------

    @staticmethod
    def _res(resource):
        try:
            return R.get(resource)
        except KeyError:
            raise E.not_found(resource, "", "")

    def _key(self, res, namespace, name):
        return (namespace if res.namespaced else None, name)

    def get(self, resource, namespace, name):
        res = self._res(resource)
        with self._lock:
            o = self._objs[resource].get(self._key(res, namespace, name))
            return deepcopy(o) if o is not None else None

    def list(self, resource, namespace=None, label_selector=None):
        return self.list_rv(resource, namespace, label_selector)[0]

    def list_rv(self, resource, namespace=None, label_selector=None, field_selector=None):
        """List (sorted by namespace/name) plus the list resourceVersion."""
        res = self._res(resource)
        sel = selectors.coerce(label_selector)
        with self._lock:
            items = [o for (ns, _), o in self._objs[resource].items()
                     if (namespace is None or not res.namespaced or ns == namespace)
                     and sel.matches(o["metadata"].get("labels"))
                     and (field_selector is None or field_selector.matches(o))]
            items = [deepcopy(o) for o in items]
            rv = str(self._rv)
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items, rv

    def list_at(self, resource, namespace, rv, label_selector=None, field_selector=None):
        """The list as it was at resourceVersion rv (for continue tokens): current state with the
        later events undone. Raises 410 Expired if rv is older than the event history."""
        res = self._res(resource)
        sel = selectors.coerce(label_selector)
        with self._lock:
            if rv < self._history_floor:
                raise E.expired("too old resource version: %d (%d)" % (rv, self._history_floor))
            state = dict(self._objs[resource])
            for ev_rv, typ, r, obj, prev in reversed(self._history):
                if ev_rv <= rv:
                    break
                if r != resource:
                    continue
                md = obj["metadata"]
                key = self._key(res, md.get("namespace"), md["name"])
                if typ == "ADDED":
                    state.pop(key, None)
                elif prev is not None:
                    state[key] = prev
            items = [deepcopy(o) for (ns, _), o in state.items()
                     if (namespace is None or not res.namespaced or ns == namespace)
                     and sel.matches(o["metadata"].get("labels"))
                     and (field_selector is None or field_selector.matches(o))]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items

    # ---- watch --------------------------------------------------------------------------

    def watch(self, resource, namespace, resource_version):
        """Register a watcher. Returns (watcher, replay_events) where replay holds the events
        after resource_version (or synthetic ADDED events for the current state when
        resource_version is None/"0"). Raises ApiError 410 Expired if too old."""
        self._res(resource)
        w = Watcher(resource, namespace)
        with self._lock:
            replay = []
            if resource_version in (None, "", "0"):
                for (ns, _), o in sorted(self._objs[resource].items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
                    if namespace is None or ns == namespace:
                        replay.append(("ADDED", deepcopy(o), None))
            else:
                try:
                    rv = int(resource_version)
                except ValueError:
                    raise E.bad_request('invalid resource version: strconv.ParseUint: parsing %s: invalid syntax'
                                        % E.go_quote(resource_version))
                if rv < self._history_floor:
                    raise E.expired("too old resource version: %d (%d)" % (rv, self._history_floor))
                for ev in self._history:
                    if ev[0] > rv and ev[2] == resource and (
                            namespace is None or ev[3]["metadata"].get("namespace") == namespace):
                        replay.append((ev[1], ev[3], ev[4]))
            self._watchers.append(w)
        return w, replay

    def watch_initial(self, resource, namespace):
        """WatchList: current objects as ADDED events and the RV they are consistent with."""
        self._res(resource)
        w = Watcher(resource, namespace)
        with self._lock:
            replay = [("ADDED", deepcopy(o), None)
                      for (ns, _), o in sorted(self._objs[resource].items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
                      if namespace is None or ns == namespace]
            self._watchers.append(w)
            rv = str(self._rv)
        return w, replay, rv

    def bookmark_rv(self, w):
        """The current RV if the watcher has nothing pending (so a bookmark is truthful), else None."""
        with self._lock:
            if w.queue.empty():
                return str(self._rv)
            return None

    def unwatch(self, w):
        with self._lock:
            if w in self._watchers:
                self._watchers.remove(w)

    def drop_watches(self):
        with self._lock:
            ws, self._watchers = self._watchers, []
        for w in ws:
            w.close()
        return len(ws)

    # ---- writes -------------------------------------------------------------------------

    def _prepare(self, res, namespace, obj):
        if not isinstance(obj, dict):
            raise E.bad_request("Object 'Kind' is missing in '%s'" % json.dumps(obj))
        src = obj
        obj = {"kind": res.kind, "apiVersion": res.api_version, "metadata": deepcopy(src.get("metadata"))}
        for k, v in src.items():
            if k not in ("kind", "apiVersion", "metadata", "status"):
                obj[k] = deepcopy(v)
        if "status" in src:
            obj["status"] = deepcopy(src["status"])
        md = obj.get("metadata")
        if not isinstance(md, dict):
            md = obj["metadata"] = {}
        # Go's omitempty: an emptied map or list is not kept (a merge patch that
        # removes the last annotation leaves no "annotations": {} behind).
        for f in ("labels", "annotations", "finalizers", "ownerReferences"):
            if f in md and md[f] in ({}, [], None):
                del md[f]
        if res.namespaced:
            if md.get("namespace") and namespace and md["namespace"] != namespace:
                raise E.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            if namespace:
                md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        return obj

    def _invalid(self, res, obj, errs):
        return E.invalid_object(res.kind, res.group, obj["metadata"].get("name") or "", errs)

    def create(self, resource, namespace, obj, dry_run=False, warnings=None):
        res = self._res(resource)
        obj = self._prepare(res, namespace, obj)
        md = obj["metadata"]
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + random_suffix()
        # server-managed fields are not taken from the client
        for f in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "selfLink", "managedFields"):
            md.pop(f, None)
        if resource not in _NO_STATUS:
            obj["status"] = {}
        self._convert_string_data(resource, obj)
        V.apply_defaults(resource, obj)
        self._enter()
        try:
            if res.namespaced:
                nso = self._objs["namespaces"].get((None, md.get("namespace")))
                if md.get("namespace") and nso is None:
                    raise E.not_found("namespaces", "", md["namespace"])
                if nso is not None and nso["metadata"].get("deletionTimestamp"):
                    raise E.forbidden(resource, res.group, md.get("name"),
                                      "unable to create new content in namespace %s because it is being terminated"
                                      % md["namespace"])
            if resource == "pods":
                self._admit_service_account(obj)
            errs = V.validate(resource, obj, res.namespaced)
            if resource == "services":
                errs += self._check_cluster_ip(obj)
                errs += self._check_node_ports(obj.get("spec") or {})
            if errs:
                raise self._invalid(res, obj, errs)
            self._admit_pod_security(res, obj, nso if res.namespaced else None, warnings)
            key = self._key(res, md.get("namespace"), md["name"])
            if key in self._objs[resource]:
                raise E.already_exists(resource, res.group, md["name"])
            if dry_run:
                md["uid"] = str(uuid.uuid4())
                md["creationTimestamp"] = now_rfc3339()
                return deepcopy(obj)
            if resource == "services":
                self._allocate_cluster_ip(obj)
            md["uid"] = str(uuid.uuid4())
            md["creationTimestamp"] = now_rfc3339()
            if res.generation:
                md["generation"] = 1
            self._init_status(resource, obj)
            md["resourceVersion"] = self._next_rv()
            self._objs[resource][key] = obj
            self._emit("ADDED", resource, obj, None)
            if resource == "namespaces":
                self._ensure_default_sa(md["name"])
                self._ensure_root_ca(md["name"])
            return deepcopy(obj)
        finally:
            self._exit()

    ROOT_CA_CM = "kube-root-ca.crt"
    SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

    def publish_root_ca(self, pem):
        """Like the root-ca-cert-publisher: ConfigMap kube-root-ca.crt (ca.crt) in every namespace."""
        self._enter()
        try:
            self._root_ca = pem
            for (_, ns) in list(self._objs["namespaces"]):
                self._ensure_root_ca(ns)
        finally:
            self._exit()

    def _ensure_root_ca(self, ns):
        pem = getattr(self, "_root_ca", None)
        if pem is None or (ns, self.ROOT_CA_CM) in self._objs["configmaps"]:
            return
        cm = {"kind": "ConfigMap", "apiVersion": "v1",
              "metadata": {"name": self.ROOT_CA_CM, "namespace": ns, "uid": str(uuid.uuid4()),
                           "creationTimestamp": now_rfc3339(),
                           "annotations": {"kubernetes.io/description": (
                               "Contains a CA bundle that can be used to verify the kube-apiserver when using "
                               "internal endpoints such as the internal service IP or kubernetes.default.svc. No "
                               "other usage is guaranteed across distributions of Kubernetes clusters.")}},
              "data": {"ca.crt": pem}}
        cm["metadata"]["resourceVersion"] = self._next_rv()
        self._objs["configmaps"][(ns, self.ROOT_CA_CM)] = cm
        self._emit("ADDED", "configmaps", cm, None)

    def _admit_service_account(self, pod):
        """The ServiceAccount admission plugin: the pod's service account must exist, and unless
        automounting is off a kube-api-access-<x> projected volume is mounted in every container."""
        spec = pod.get("spec")
        if not isinstance(spec, dict):
            return
        md = pod["metadata"]
        ns = md.get("namespace")
        sa_name = spec.get("serviceAccountName") or "default"
        sa = self._objs["serviceaccounts"].get((ns, sa_name))
        if sa is None:
            raise E.forbidden("pods", "", md.get("name"), 'error looking up service account %s/%s: serviceaccount '
                              '"%s" not found' % (ns, sa_name, sa_name))
        auto = spec.get("automountServiceAccountToken")
        if auto is None:
            auto = sa.get("automountServiceAccountToken")
        if auto is False:
            return
        containers = [c for k in ("initContainers", "containers") for c in spec.get(k) or [] if isinstance(c, dict)]
        if any(vm.get("mountPath") == self.SA_MOUNT for c in containers for vm in c.get("volumeMounts") or []):
            return
        vname = "kube-api-access-" + random_suffix()
        spec.setdefault("volumes", []).append({"name": vname, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": self.ROOT_CA_CM, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
        for c in containers:
            c.setdefault("volumeMounts", []).append({"name": vname, "readOnly": True, "mountPath": self.SA_MOUNT})

    def _ensure_default_sa(self, ns):
        key = (ns, "default")
        if key in self._objs["serviceaccounts"]:
            return
        sa = {"apiVersion": "v1", "kind": "ServiceAccount",
              "metadata": {"name": "default", "namespace": ns, "uid": str(uuid.uuid4()),
                           "creationTimestamp": now_rfc3339()}}
        sa["metadata"]["resourceVersion"] = self._next_rv()
        self._objs["serviceaccounts"][key] = sa
        self._emit("ADDED", "serviceaccounts", sa, None)

    @staticmethod
    def _init_status(resource, obj):
        if resource == "pods":
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj.get("spec") or {})}
        elif resource == "services":
            obj["status"] = {"loadBalancer": {}}
        elif resource == "namespaces":
            obj["status"] = {"phase": "Active"}
        elif resource == "replicasets":
            obj["status"] = {"replicas": 0}
        elif resource == "deployments":
            obj["status"] = {}

    @staticmethod
    def _convert_string_data(resource, obj):
        if resource == "secrets" and isinstance(obj.get("stringData"), dict):
            data = obj.setdefault("data", {}) or {}
            obj["data"] = data
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(str(v).encode()).decode()

    def _admit_pod_security(self, res, obj, nso, warnings):
        if res.plural not in ("pods", "deployments", "replicasets"):
            return
        spec = obj.get("spec") if res.plural == "pods" else ((obj.get("spec") or {}).get("template") or {}).get("spec")
        for mode in ("enforce", "warn"):
            lvl, ver = V.pod_security_level(nso, mode)
            if not lvl:
                continue
            v = V.pod_security_violations(spec, lvl)
            if not v:
                continue
            text = 'violates PodSecurity "%s:%s": %s' % (lvl, ver, ", ".join(v))
            if res.plural == "pods" and mode == "enforce":
                raise E.forbidden("pods", "", obj["metadata"].get("name"), text)
            if res.plural != "pods" or mode == "warn":
                if warnings is not None:
                    w = "would " + text
                    if w not in warnings:
                        warnings.append(w)
        # audit mode: nothing visible to the client

    # ---- cluster IPs ----------------------------------------------------------------------

    def _check_cluster_ip(self, obj):
        spec = obj.get("spec") or {}
        ip = spec.get("clusterIP")
        ips = spec.get("clusterIPs")
        if spec.get("type") == "ExternalName":
            return []
        if ips and ip and ips[0] != ip:
            return [E.invalid("spec.clusterIPs", list(ips), "element [0] must match `spec.clusterIP`")]
        if not ip and ips:
            ip = ips[0]
        if ip and ip != "None":
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return [E.invalid("spec.clusterIPs[0]", ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]
            if addr not in self.CLUSTER_IP_NET or ip in (str(self.CLUSTER_IP_NET.network_address),
                                                         str(self.CLUSTER_IP_NET.broadcast_address)):
                return [E.invalid("spec.clusterIPs", [ip], "failed to allocate IP %s: the provided IP (%s) is not in the valid range. "
                                  "The range of valid IPs is %s" % (ip, ip, self.CLUSTER_IP_NET))]
            if ip in self._ips:
                return [E.invalid("spec.clusterIPs", [ip], "failed to allocate IP %s: provided IP is already allocated" % ip)]
        return []

    def _allocate_cluster_ip(self, obj):
        spec = obj.setdefault("spec", {})
        if spec.get("type") == "ExternalName":
            return
        ip = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
        if ip == "None":
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
        else:
            if not ip:
                first = int(self.CLUSTER_IP_NET.network_address) + self.STATIC_BAND
                last = int(self.CLUSTER_IP_NET.broadcast_address) - 1
                n = self._next_ip
                for _ in range(last - first + 1):
                    cand = str(ipaddress.ip_address(n))
                    n = n + 1 if n < last else first
                    if cand not in self._ips:
                        ip = cand
                        break
                else:
                    raise E.internal("failed to allocate a serviceIP: range is full")
                self._next_ip = n
            self._ips.add(ip)
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        self._allocate_node_ports(spec)

    NODE_PORTS = (30000, 32767)

    def _node_ports_in_use(self, skip=None):
        used = set()
        for key, o in self._objs["services"].items():
            if key == skip:
                continue
            for p in (o.get("spec") or {}).get("ports") or []:
                if p.get("nodePort"):
                    used.add(p["nodePort"])
        return used

    def _check_node_ports(self, spec, skip=None, old_spec=None):
        errs = []
        if spec.get("type") not in ("NodePort", "LoadBalancer"):
            for i, p in enumerate(spec.get("ports") or []):
                if p.get("nodePort"):
                    errs.append(E.forbidden_field("spec.ports[%d].nodePort" % i,
                                                  "may not be used when `type` is '%s'" % spec.get("type")))
            return errs
        used = self._node_ports_in_use(skip)
        lo, hi = self.NODE_PORTS
        mine = {p.get("nodePort") for p in (old_spec or {}).get("ports") or []}
        for i, p in enumerate(spec.get("ports") or []):
            n = p.get("nodePort")
            if not n or n in mine:
                continue
            if not (lo <= n <= hi):
                errs.append(E.invalid("spec.ports[%d].nodePort" % i, n, "provided port is not in the valid range. "
                                      "The range of valid ports is %d-%d" % (lo, hi)))
            elif n in used:
                errs.append(E.invalid("spec.ports[%d].nodePort" % i, n, "provided port is already allocated"))
        return errs

    def _allocate_node_ports(self, spec, skip=None):
        if spec.get("type") not in ("NodePort", "LoadBalancer"):
            return
        spec.setdefault("externalTrafficPolicy", "Cluster")
        if spec.get("type") == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        used = self._node_ports_in_use(skip)
        lo, hi = self.NODE_PORTS
        for p in spec.get("ports") or []:
            if not p.get("nodePort"):
                while True:
                    n = random.randint(lo, hi)
                    if n not in used:
                        break
                p["nodePort"] = n
            used.add(p["nodePort"])

    # ---- update ---------------------------------------------------------------------------

    def update(self, resource, namespace, obj, subresource=None, dry_run=False, warnings=None):
        res = self._res(resource)
        obj = self._prepare(res, namespace, obj)
        name = obj["metadata"].get("name")
        self._enter()
        try:
            cur = self._objs[resource].get(self._key(res, namespace, name))
            if cur is None:
                raise E.not_found(resource, res.group, name)
            self._check_preconditions(resource, res, name, cur, obj)
            return self._update_locked(res, cur, obj, subresource, dry_run, warnings)
        finally:
            self._exit()

    @staticmethod
    def _check_preconditions(resource, res, name, cur, obj):
        """A resourceVersion or uid the writer sends must match the stored object's
        (optimistic concurrency), for PUT and for patches alike; raises 409 Conflict."""
        rv = obj["metadata"].get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise E.conflict(resource, res.group, name)
        uid = obj["metadata"].get("uid")
        if uid and uid != cur["metadata"]["uid"]:
            raise E.conflict(resource, res.group, name,
                             "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                             % (cur["metadata"]["uid"], uid))

    def _update_locked(self, res, cur, obj, subresource, dry_run=False, warnings=None):
        resource = res.plural
        if subresource == "status":
            new = deepcopy(cur)
            if "status" in obj:
                new["status"] = obj["status"]
        else:
            new = obj
            md, cmd = new["metadata"], cur["metadata"]
            for f in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
                      "namespace"):
                if f in cmd:
                    md[f] = cmd[f]
                else:
                    md.pop(f, None)
            md.pop("managedFields", None)
            if "status" in cur:
                new["status"] = deepcopy(cur["status"])
            elif resource not in _NO_STATUS:
                new.pop("status", None)
            if resource == "services":
                self._carry_cluster_ip(new, cur)
                key0 = self._key(res, cur["metadata"].get("namespace"), cur["metadata"]["name"])
                nspec, ospec = new.get("spec") or {}, cur.get("spec") or {}
                # nodePorts left out of an update are kept (patchAllocatedValues), then checked and allocated
                oldports = {(p.get("port"), p.get("protocol")): p.get("nodePort") for p in ospec.get("ports") or []}
                if nspec.get("type") not in ("NodePort", "LoadBalancer") and \
                        ospec.get("type") in ("NodePort", "LoadBalancer"):
                    # dropTypeDependentFields: unchanged nodePorts go with the type
                    for p in nspec.get("ports") or []:
                        if p.get("nodePort") and p["nodePort"] == oldports.get((p.get("port"), p.get("protocol", "TCP"))):
                            del p["nodePort"]
                    if nspec.get("externalTrafficPolicy") == ospec.get("externalTrafficPolicy"):
                        nspec.pop("externalTrafficPolicy", None)
                if nspec.get("type") != "LoadBalancer" and \
                        nspec.get("allocateLoadBalancerNodePorts") == ospec.get("allocateLoadBalancerNodePorts"):
                    nspec.pop("allocateLoadBalancerNodePorts", None)
                if nspec.get("type") in ("NodePort", "LoadBalancer"):
                    for p in nspec.get("ports") or []:
                        if not p.get("nodePort") and oldports.get((p.get("port"), p.get("protocol", "TCP"))):
                            p["nodePort"] = oldports[(p.get("port"), p.get("protocol", "TCP"))]
                nperrs = self._check_node_ports(nspec, key0, ospec)
                if nperrs:
                    raise self._invalid(res, new, nperrs)
                self._allocate_node_ports(nspec, key0)
            self._convert_string_data(resource, new)
            V.apply_defaults(resource, new)
            if resource == "namespaces":
                new["spec"] = deepcopy(cur.get("spec"))
            errs = V.validate_update(resource, new, cur, res.namespaced)
            if errs:
                raise self._invalid(res, new, errs)
            if resource in ("deployments", "replicasets"):
                nso = self._objs["namespaces"].get((None, md.get("namespace")))
                self._admit_pod_security(res, new, nso, warnings)
            if res.generation and new.get("spec") != cur.get("spec"):
                md["generation"] = cmd.get("generation", 1) + 1
        new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        if new == cur:
            return deepcopy(cur)   # no-op update: nothing written, resourceVersion unchanged
        if dry_run:
            return deepcopy(new)
        key = self._key(res, cur["metadata"].get("namespace"), cur["metadata"]["name"])
        md = new["metadata"]
        if md.get("deletionTimestamp") and not md.get("finalizers") and not (
                resource == "namespaces" and (new.get("spec") or {}).get("finalizers")):
            # last finalizer removed: the object goes away now
            return self._remove_locked(res, key, new)
        md["resourceVersion"] = self._next_rv()
        self._objs[resource][key] = new
        self._emit("MODIFIED", resource, new, deepcopy(cur))
        return deepcopy(new)

    def _carry_cluster_ip(self, new, cur):
        ns, cs = new.setdefault("spec", {}), cur.get("spec") or {}
        if ns.get("type") == "ExternalName" or cs.get("type") == "ExternalName":
            return
        if not ns.get("clusterIP") and not ns.get("clusterIPs"):
            ns["clusterIP"] = cs.get("clusterIP")
            ns["clusterIPs"] = deepcopy(cs.get("clusterIPs"))
        elif ns.get("clusterIP") and not ns.get("clusterIPs"):
            ns["clusterIPs"] = [ns["clusterIP"]]
        elif ns.get("clusterIPs") and not ns.get("clusterIP"):
            ns["clusterIP"] = ns["clusterIPs"][0]
        elif ns.get("clusterIP") != cs.get("clusterIP") and ns.get("clusterIPs") == cs.get("clusterIPs"):
            ns["clusterIPs"] = [ns["clusterIP"]]
        for f in ("ipFamilies", "ipFamilyPolicy"):
            if f not in ns and f in cs:
                ns[f] = deepcopy(cs[f])

    def modify(self, resource, namespace, name, fn, subresource=None, dry_run=False, warnings=None,
               precondition_rv=None):
        """Read-modify-write under the lock: fn(copy) returns the new object (or mutates and returns None)."""
        res = self._res(resource)
        self._enter()
        try:
            cur = self._objs[resource].get(self._key(res, namespace, name))
            if cur is None:
                raise E.not_found(resource, res.group, name)
            work = deepcopy(cur)
            out = fn(work)
            new = work if out is None else out
            new = self._prepare(res, namespace, new)
            if new["metadata"].get("name") != name:
                raise E.bad_request('the name of the object (%s) does not match the name on the URL (%s)'
                                    % (new["metadata"].get("name"), name))
            self._check_preconditions(resource, res, name, cur, new)
            return self._update_locked(res, cur, new, subresource, dry_run, warnings)
        finally:
            self._exit()

    def patch_status(self, resource, namespace, name, fn):
        def f(o):
            o.setdefault("status", {})
            fn(o)
            o["metadata"].pop("resourceVersion", None)
            return o
        return self.modify(resource, namespace, name, f, subresource="status")

    # ---- delete ---------------------------------------------------------------------------

    def delete(self, resource, namespace, name, propagation="Background", preconditions=None):
        try:
            obj, _ = self.delete_ex(resource, namespace, name, propagation, preconditions)
            return obj
        except E.ApiError as e:
            if e.code == 404:
                return None
            raise

    def delete_ex(self, resource, namespace, name, propagation="Background", preconditions=None, dry_run=False,
                  grace=None, api=False):
        """Returns (object, deleted_now). Raises NotFound / Conflict (preconditions).

        Pods bound to the node are deleted gracefully, as the real registry does:
        the first delete sets deletionTimestamp (now + grace) and
        deletionGracePeriodSeconds; the kubelet stops the containers and deletes
        again, which removes the pod. From the API a second delete only shortens
        the grace period (grace 0 removes at once); a store.delete() (the node's
        call) of a terminating pod removes it."""
        res = self._res(resource)
        propagation = propagation or "Background"
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise E.invalid_object("DeleteOptions", "", "",
                                   [E.not_supported("propagationPolicy", propagation, ["Foreground", "Background", "Orphan", "nil"])])
        self._enter()
        try:
            key = self._key(res, namespace, name)
            cur = self._objs[resource].get(key)
            if cur is None:
                raise E.not_found(resource, res.group, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
                raise E.conflict(resource, res.group, name,
                                 "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                                 % (pre["uid"], cur["metadata"]["uid"]))
            if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
                raise E.conflict(resource, res.group, name,
                                 "Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s"
                                 % (pre["resourceVersion"], cur["metadata"]["resourceVersion"]))
            if dry_run:
                return deepcopy(cur), True
            new = deepcopy(cur)
            md = new["metadata"]
            if resource == "pods" and not (cur["metadata"].get("finalizers")) and propagation == "Background":
                spec = cur.get("spec") or {}
                phase = (cur.get("status") or {}).get("phase")
                g = grace if grace is not None else spec.get("terminationGracePeriodSeconds", 30)
                if g is None or g < 0:
                    g = 30
                graceful = bool(spec.get("nodeName")) and phase not in ("Succeeded", "Failed") and g > 0
                if md.get("deletionTimestamp"):
                    old_g = md.get("deletionGracePeriodSeconds") or 0
                    if not api or g == 0 or not graceful:
                        return self._remove_locked(res, key, new), True
                    if g >= old_g:
                        return deepcopy(cur), False
                    graceful = True
                if graceful:
                    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=g)
                    md["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
                    md["deletionGracePeriodSeconds"] = g
                    md["resourceVersion"] = self._next_rv()
                    self._objs[resource][key] = new
                    self._emit("MODIFIED", resource, new, deepcopy(cur))
                    return deepcopy(new), False
                return self._remove_locked(res, key, new), True
            fins = list(md.get("finalizers") or [])
            if propagation == "Foreground" and "foregroundDeletion" not in fins:
                fins.append("foregroundDeletion")
            elif propagation == "Orphan" and "orphan" not in fins:
                fins.append("orphan")
            if resource == "namespaces":
                if name in ("default", "kube-system", "kube-public"):
                    raise E.forbidden("namespaces", "", name, "this namespace may not be deleted")
                if not md.get("deletionTimestamp"):
                    md["deletionTimestamp"] = now_rfc3339()
                    md["deletionGracePeriodSeconds"] = 0
                    new["status"] = {"phase": "Terminating"}
                    if fins:
                        md["finalizers"] = fins
                    md["resourceVersion"] = self._next_rv()
                    self._objs[resource][key] = new
                    self._emit("MODIFIED", resource, new, deepcopy(cur))
                    return deepcopy(new), False
                return deepcopy(cur), False
            if fins:
                if md.get("deletionTimestamp") and fins == (md.get("finalizers") or []):
                    return deepcopy(cur), False
                md["finalizers"] = fins
                md.setdefault("deletionTimestamp", now_rfc3339())
                md.setdefault("deletionGracePeriodSeconds", 0)
                md["resourceVersion"] = self._next_rv()
                self._objs[resource][key] = new
                self._emit("MODIFIED", resource, new, deepcopy(cur))
                return deepcopy(new), False
            return self._remove_locked(res, key, new), True
        finally:
            self._exit()

    def _remove_locked(self, res, key, last):
        resource = res.plural
        prev = self._objs[resource].pop(key, None)
        if resource == "services":
            ip = (last.get("spec") or {}).get("clusterIP")
            if ip and ip != "None":
                self._ips.discard(ip)
        last = deepcopy(last)
        last["metadata"]["resourceVersion"] = self._next_rv()
        self._emit("DELETED", resource, last, deepcopy(prev) if prev else None)
        if resource == "configmaps" and key[1] == self.ROOT_CA_CM:
            nso = self._objs["namespaces"].get((None, key[0]))
            if nso is not None and not nso["metadata"].get("deletionTimestamp"):
                self._ensure_root_ca(key[0])    # the publisher puts it back
        return deepcopy(last)

    def finalize_namespace(self, name):
        """Namespace content is gone: drop spec.finalizers and remove it if nothing else holds it."""
        res = self._res("namespaces")
        self._enter()
        try:
            key = (None, name)
            cur = self._objs["namespaces"].get(key)
            if cur is None:
                raise E.not_found("namespaces", "", name)
            if not cur["metadata"].get("deletionTimestamp"):
                return deepcopy(cur)
            new = deepcopy(cur)
            new.setdefault("spec", {})["finalizers"] = []
            if not new["metadata"].get("finalizers"):
                return self._remove_locked(res, key, new)
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._objs["namespaces"][key] = new
            self._emit("MODIFIED", "namespaces", new, deepcopy(cur))
            return deepcopy(new)
        finally:
            self._exit()

    # ---- helpers for the garbage collector --------------------------------------------------

    def snapshot_meta(self):
        """[(resource, namespace, name, metadata-copy)] of every object (for the GC)."""
        with self._lock:
            out = []
            for resource, objs in self._objs.items():
                for (ns, name), o in objs.items():
                    out.append((resource, ns, name, deepcopy(o["metadata"])))
            return out


_NO_STATUS = ("configmaps", "secrets", "serviceaccounts", "roles", "rolebindings", "leases", "events", "endpoints",
              "endpointslices")


def _qos_class(spec):
    reqs = lims = False
    guaranteed = True
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        r = (c.get("resources") or {}) if isinstance(c, dict) else {}
        rq, lm = r.get("requests") or {}, r.get("limits") or {}
        if rq:
            reqs = True
        if lm:
            lims = True
        for k in ("cpu", "memory"):
            if k not in lm or (k in rq and rq[k] != lm[k]):
                guaranteed = False
    if not reqs and not lims:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
