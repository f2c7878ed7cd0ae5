"""Server-side printing (meta.k8s.io/v1 Table) like the apiserver's printers for kubectl get."""
import datetime


def _ts(s):
    if not s:
        return None
    try:
        return datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def human_duration(seconds):
    """apimachinery duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 60 * 2:
        return "%ds" % s
    m = s // 60
    if m < 10:
        r = s % 60
        return "%dm" % m if r == 0 else "%dm%ds" % (m, r)
    if m < 60 * 3:
        return "%dm" % m
    h = s // 3600
    if h < 8:
        r = m % 60
        return "%dh" % h if r == 0 else "%dh%dm" % (h, r)
    if h < 48:
        return "%dh" % h
    if h < 24 * 8:
        r = h % 24
        return "%dd" % (h // 24) if r == 0 else "%dd%dh" % (h // 24, r)
    if h < 24 * 365 * 2:
        return "%dd" % (h // 24)
    if h < 24 * 365 * 8:
        dy = (h // 24) % 365
        return "%dy" % (h // 24 // 365) if dy == 0 else "%dy%dd" % (h // 24 // 365, dy)
    return "%dy" % (h // 24 // 365)


def age(ts):
    t = _ts(ts)
    if t is None:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())


def col(name, typ="string", desc="", priority=0, fmt=""):
    return {"name": name, "type": typ, "format": fmt, "description": desc, "priority": priority}


NAME = col("Name", fmt="name", desc="Name must be unique within a namespace.")
AGE = col("Age", desc="CreationTimestamp is a timestamp representing the server time when this object was created.")


def _sel_string(sel):
    if not sel:
        return "<none>"
    return ",".join("%s=%s" % (k, sel[k]) for k in sorted(sel))


def _label_selector_string(ls):
    if ls is None:
        return "<none>"
    parts = ["%s=%s" % (k, v) for k, v in sorted((ls.get("matchLabels") or {}).items())]
    for e in ls.get("matchExpressions") or []:
        op = e.get("operator")
        if op == "In":
            parts.append("%s in (%s)" % (e["key"], ",".join(sorted(e.get("values") or []))))
        elif op == "NotIn":
            parts.append("%s notin (%s)" % (e["key"], ",".join(sorted(e.get("values") or []))))
        elif op == "Exists":
            parts.append(e["key"])
        elif op == "DoesNotExist":
            parts.append("!" + e["key"])
    return ",".join(parts) if parts else "<none>"


def _containers(spec):
    cs = (spec or {}).get("containers") or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def pod_row(o):
    md, spec, st = o["metadata"], o.get("spec") or {}, o.get("status") or {}
    total = len(spec.get("containers") or [])
    ready = restarts = 0
    reason = st.get("reason") or st.get("phase") or "Unknown"
    last_restart = None
    init = False
    for i, cs in enumerate(st.get("initContainerStatuses") or []):
        state = cs.get("state") or {}
        restarts += cs.get("restartCount", 0)
        if state.get("terminated", {}).get("exitCode", 1) == 0 and "terminated" in state:
            continue
        if "terminated" in state:
            t = state["terminated"]
            reason = "Init:" + (t.get("reason") or ("Signal:%d" % t["signal"] if t.get("signal") else "ExitCode:%d" % t.get("exitCode", 0)))
        elif "waiting" in state and state["waiting"].get("reason") and state["waiting"]["reason"] != "PodInitializing":
            reason = "Init:" + state["waiting"]["reason"]
        else:
            reason = "Init:%d/%d" % (i, len(spec.get("initContainers") or []))
        init = True
        break
    if not init:
        has_running = False
        for cs in reversed(st.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            lt = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
            if lt and (last_restart is None or lt > last_restart):
                last_restart = lt
            state = cs.get("state") or {}
            if state.get("waiting", {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated", {}).get("reason"):
                reason = state["terminated"]["reason"]
            elif "terminated" in state:
                t = state["terminated"]
                reason = "Signal:%d" % t["signal"] if t.get("signal") else "ExitCode:%d" % t.get("exitCode", 0)
            elif "running" in state and cs.get("ready"):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running"
    if md.get("deletionTimestamp"):
        reason = "Terminating"
    rs = str(restarts)
    if last_restart:
        rs = "%d (%s ago)" % (restarts, age(last_restart))
    ips = st.get("podIP") or "<none>"
    return [md["name"], "%d/%d" % (ready, total), reason, rs, age(md.get("creationTimestamp")),
            ips, spec.get("nodeName") or "<none>", st.get("nominatedNodeName") or "<none>",
            "<none>" if not spec.get("readinessGates") else "0/%d" % len(spec["readinessGates"])]


POD_COLS = [NAME, col("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
            col("Status", desc="The aggregate status of the containers in this pod."),
            col("Restarts", desc="The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            AGE, col("IP", priority=1, desc="IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            col("Node", priority=1, desc="NodeName is a request to schedule this pod onto a specific node."),
            col("Nominated Node", priority=1, desc="nominatedNodeName is set only when this pod preempts other pods on the node."),
            col("Readiness Gates", priority=1, desc="If specified, all readiness gates will be evaluated for pod readiness.")]


def svc_row(o):
    md, spec, st = o["metadata"], o.get("spec") or {}, o.get("status") or {}
    typ = spec.get("type", "ClusterIP")
    ext = "<none>"
    if typ == "ExternalName":
        ext = spec.get("externalName") or "<none>"
    elif spec.get("externalIPs"):
        ext = ",".join(spec["externalIPs"])
    elif typ == "LoadBalancer":
        ing = [i.get("ip") or i.get("hostname") for i in (st.get("loadBalancer") or {}).get("ingress") or []]
        ext = ",".join(ing) if ing else "<pending>"
    ports = []
    for p in spec.get("ports") or []:
        if p.get("nodePort"):
            ports.append("%d:%d/%s" % (p["port"], p["nodePort"], p.get("protocol", "TCP")))
        else:
            ports.append("%d/%s" % (p["port"], p.get("protocol", "TCP")))
    return [md["name"], typ, spec.get("clusterIP") or "<none>", ext, ",".join(ports) if ports else "<none>",
            age(md.get("creationTimestamp")), _sel_string(spec.get("selector"))]


SVC_COLS = [NAME, col("Type", desc="type determines how the Service is exposed."),
            col("Cluster-IP", desc="clusterIP is the IP address of the service."),
            col("External-IP", desc="externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            col("Port(s)", desc="The list of ports that are exposed by this service."), AGE,
            col("Selector", priority=1, desc="Route service traffic to pods with label keys and values matching this selector.")]


def deploy_row(o):
    md, spec, st = o["metadata"], o.get("spec") or {}, o.get("status") or {}
    c, i = _containers((spec.get("template") or {}).get("spec"))
    return [md["name"], "%d/%d" % (st.get("readyReplicas", 0), spec.get("replicas", 0)),
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), age(md.get("creationTimestamp")),
            c, i, _label_selector_string(spec.get("selector"))]


DEPLOY_COLS = [NAME, col("Ready", desc="Number of the pod with ready state"),
               col("Up-to-date", "integer", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
               col("Available", "integer", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
               AGE, col("Containers", priority=1, desc="Names of each container in the template."),
               col("Images", priority=1, desc="Images referenced by each container in the template."),
               col("Selector", priority=1, desc="Label selector for pods.")]


def rs_row(o):
    md, spec, st = o["metadata"], o.get("spec") or {}, o.get("status") or {}
    c, i = _containers((spec.get("template") or {}).get("spec"))
    return [md["name"], spec.get("replicas", 0), st.get("replicas", 0), st.get("readyReplicas", 0),
            age(md.get("creationTimestamp")), c, i, _label_selector_string(spec.get("selector"))]


RS_COLS = [NAME, col("Desired", "integer", "Replicas is the number of desired pods."),
           col("Current", "integer", "Replicas is the most recently observed number of replicas."),
           col("Ready", "integer", "The number of ready replicas for this replica set."), AGE,
           col("Containers", priority=1, desc="Names of each container in the template."),
           col("Images", priority=1, desc="Images referenced by each container in the template."),
           col("Selector", priority=1, desc="Selector is a label query over pods that should match the replica count.")]


def ep_row(o):
    addrs = []
    for ss in o.get("subsets") or []:
        ports = ss.get("ports") or []
        for a in ss.get("addresses") or []:
            if ports:
                for p in ports:
                    addrs.append("%s:%d" % (a.get("ip"), p.get("port", 0)))
            else:
                addrs.append(a.get("ip"))
    if not addrs:
        s = "<none>"
    elif len(addrs) > 3:
        s = ",".join(addrs[:3]) + " + %d more..." % (len(addrs) - 3)
    else:
        s = ",".join(addrs)
    return [o["metadata"]["name"], s, age(o["metadata"].get("creationTimestamp"))]


def ns_row(o):
    return [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), age(o["metadata"].get("creationTimestamp"))]


def event_row(o):
    io = o.get("involvedObject") or {}
    last = o.get("lastTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp")
    first = o.get("firstTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp")
    obj = "%s/%s" % ((io.get("kind") or "").lower(), io.get("name", ""))
    src = (o.get("source") or {}).get("component") or o.get("reportingComponent") or ""
    host = (o.get("source") or {}).get("host")
    if host:
        src += ", " + host
    count = o.get("count") or 1
    last_s = age(last)
    if count > 1:
        last_s = "%s (x%d over %s)" % (age(last), count, age(first))
    return [last_s, o.get("type", ""), o.get("reason", ""), obj, io.get("fieldPath", ""), src,
            (o.get("message") or "").strip(), age(first), count, o["metadata"]["name"]]


EVENT_COLS = [col("Last Seen"), col("Type"), col("Reason"), col("Object"),
              col("Subobject", priority=1), col("Source", priority=1), col("Message"),
              col("First Seen", priority=1), col("Count", "integer", priority=1), col("Name", priority=1)]


def simple(extra):
    def row(o):
        return [o["metadata"]["name"]] + [f(o) for _, f in extra] + [age(o["metadata"].get("creationTimestamp"))]
    return [NAME] + [col(n) for n, _ in extra] + [AGE], row


def rb_row(o):
    subs = o.get("subjects") or []
    pick = lambda k: ", ".join(s.get("name", "") if k != "ServiceAccount" else "%s/%s" % (s.get("namespace", ""), s.get("name", ""))
                               for s in subs if s.get("kind") == k)
    ref = o.get("roleRef") or {}
    return [o["metadata"]["name"], "%s/%s" % (ref.get("kind", ""), ref.get("name", "")),
            age(o["metadata"].get("creationTimestamp")), pick("User"), pick("Group"), pick("ServiceAccount")]


_CM_COLS, _cm_row = simple([("Data", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}))])
_CM_COLS[1]["type"] = "integer"
_SEC_COLS, _sec_row = simple([("Type", lambda o: o.get("type", "")), ("Data", lambda o: len(o.get("data") or {}))])
_SEC_COLS[2]["type"] = "integer"
_SA_COLS, _sa_row = simple([("Secrets", lambda o: len(o.get("secrets") or []))])
_LEASE_COLS, _lease_row = simple([("Holder", lambda o: (o.get("spec") or {}).get("holderIdentity", ""))])

def eps_row(o):
    ports = o.get("ports")
    if not ports:
        ps = "<unset>"
    else:
        ps = ",".join(str(p.get("port", "*")) if p.get("port") is not None else "*" for p in ports)
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    if not addrs:
        es = "<none>"
    elif len(addrs) > 3:
        es = ",".join(addrs[:3]) + " + %d more..." % (len(addrs) - 3)
    else:
        es = ",".join(addrs)
    return [o["metadata"]["name"], o.get("addressType", ""), ps, es, age(o["metadata"].get("creationTimestamp"))]


def node_row(o):
    """printNode: status from the Ready condition (+SchedulingDisabled), roles from node-role labels."""
    st = o.get("status") or {}
    ready = next((c.get("status") for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
    status = {"True": "Ready", "False": "NotReady"}.get(ready, "Unknown")
    if (o.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    labels = o["metadata"].get("labels") or {}
    roles = sorted({k[len("node-role.kubernetes.io/"):] for k in labels if k.startswith("node-role.kubernetes.io/")}
                   | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set()))
    addr = lambda t: next((a["address"] for a in st.get("addresses") or [] if a.get("type") == t), "<none>")
    info = st.get("nodeInfo") or {}
    return [o["metadata"]["name"], status, ",".join(roles) or "<none>", age(o["metadata"].get("creationTimestamp")),
            info.get("kubeletVersion", ""), addr("InternalIP"), addr("ExternalIP"), info.get("osImage", "<unknown>"),
            info.get("kernelVersion", "<unknown>"), info.get("containerRuntimeVersion", "<unknown>")]


NODE_COLS = [NAME, col("Status", desc="The status of the node"), col("Roles", desc="The roles of the node"), AGE,
             col("Version", desc="Kubelet Version reported by the node."),
             col("Internal-IP", priority=1, desc="List of internal IPs for the node."),
             col("External-IP", priority=1, desc="List of external IPs for the node."),
             col("OS-Image", priority=1, desc="OS image reported by the node from /etc/os-release (e.g. Debian "
                 "GNU/Linux 7 (wheezy))."),
             col("Kernel-Version", priority=1, desc="Kernel Version reported by the node from 'uname -r' (e.g. "
                 "3.16.0-0.bpo.4-amd64)."),
             col("Container-Runtime", priority=1, desc="Container runtime version reported by the node through "
                 "runtime remote API (e.g. containerd://1.4.2).")]


PRINTERS = {
    "nodes": (NODE_COLS, node_row),
    "endpointslices": ([NAME, col("AddressType"), col("Ports"), col("Endpoints"), AGE], eps_row),
    "pods": (POD_COLS, pod_row),
    "services": (SVC_COLS, svc_row),
    "deployments": (DEPLOY_COLS, deploy_row),
    "replicasets": (RS_COLS, rs_row),
    "endpoints": ([NAME, col("Endpoints", desc="Endpoints of the service"), AGE], ep_row),
    "namespaces": ([NAME, col("Status", desc="The status of the namespace"), AGE], ns_row),
    "events": (EVENT_COLS, event_row),
    "configmaps": (_CM_COLS, _cm_row),
    "secrets": (_SEC_COLS, _sec_row),
    "serviceaccounts": (_SA_COLS, _sa_row),
    "leases": (_LEASE_COLS, _lease_row),
    "roles": ([NAME, col("Created At", fmt="date")],
              lambda o: [o["metadata"]["name"], o["metadata"].get("creationTimestamp", "")]),
    "rolebindings": ([NAME, col("Role"), AGE, col("Users", priority=1), col("Groups", priority=1),
                      col("ServiceAccounts", priority=1)], rb_row),
}


def partial(o, include):
    if include == "None":
        return None
    if include == "Object":
        return o
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}


def table(resource, objs, rv, cont=None, include="Metadata", with_columns=True, remaining=None):
    cols, row = PRINTERS.get(resource, ([NAME, AGE], lambda o: [o["metadata"]["name"], age(o["metadata"].get("creationTimestamp"))]))
    md = {"resourceVersion": rv} if rv else {}
    if cont:
        md["continue"] = cont
    if remaining is not None:
        md["remainingItemCount"] = remaining
    t = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md}
    if with_columns:
        t["columnDefinitions"] = cols
    rows = []
    for o in objs:
        r = {"cells": row(o)}
        p = partial(o, include)
        if p is not None:
            r["object"] = p
        rows.append(r)
    t["rows"] = rows
    return t
