"""Defaulting, validation (422 Invalid with causes) and Pod Security admission.

Messages follow apimachinery pkg/util/validation and kubernetes
pkg/apis/core/validation, pkg/apis/apps/validation, pod-security-admission.
"""
import re

from . import errors as E
from . import selection as selectors

# ---- name and label rules (apimachinery pkg/util/validation/validation.go) ---------------

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + "(\\." + DNS1123_LABEL_FMT + ")*"
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE_FMT = "(" + QUALIFIED_NAME_FMT + ")?"
CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"

_re = lambda f: re.compile("^" + f + "$")
_DNS1123_LABEL = _re(DNS1123_LABEL_FMT)
_DNS1123_SUB = _re(DNS1123_SUBDOMAIN_FMT)
_DNS1035 = _re(DNS1035_LABEL_FMT)
_QNAME = _re(QUALIFIED_NAME_FMT)
_LVALUE = _re(LABEL_VALUE_FMT)
_CONFIG_KEY = _re(CONFIG_KEY_FMT)
_IANA_SVC = re.compile("^[-a-z0-9]+$")
_ALPHA = re.compile("[a-z]")


def regex_error(msg, fmt, *examples):
    if not examples:
        return msg + " (regex used for validation is '" + fmt + "')"
    msg += " (e.g. "
    for i, ex in enumerate(examples):
        if i > 0:
            msg += " or "
        msg += "'" + ex + "', "
    return msg + "regex used for validation is '" + fmt + "')"


def max_len(n):
    return "must be no more than %d characters" % n


DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                     "and must start and end with an alphanumeric character")
DNS1123_SUB_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                   "and must start and end with an alphanumeric character")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
               "start with an alphabetic character, and end with an alphanumeric character")
QNAME_MSG = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
LVALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
              "and must start and end with an alphanumeric character")


def _dns1123_label_msg():
    return (DNS1123_LABEL_MSG + " (e.g. 'my-name',  or '123-abc', regex used for validation is '"
            + DNS1123_LABEL_FMT + "')")


def dns1123_label_errors(v):
    errs = []
    if len(v) > 63:
        errs.append(max_len(63))
    if not _DNS1123_LABEL.match(v):
        errs.append(_dns1123_label_msg())
    return errs


def dns1123_subdomain_errors(v):
    errs = []
    if len(v) > 253:
        errs.append(max_len(253))
    if not _DNS1123_SUB.match(v):
        errs.append(DNS1123_SUB_MSG + " (e.g. 'example.com', regex used for validation is '"
                    + DNS1123_SUBDOMAIN_FMT + "')")
    return errs


def dns1035_label_errors(v):
    errs = []
    if len(v) > 63:
        errs.append(max_len(63))
    if not _DNS1035.match(v):
        errs.append(DNS1035_MSG + " (e.g. 'my-name',  or 'abc-123', regex used for validation is '"
                    + DNS1035_LABEL_FMT + "')")
    return errs


def label_key_errors(k):
    """IsQualifiedName."""
    parts = k.split("/")
    errs = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += ["prefix part " + m for m in dns1123_subdomain_errors(prefix)]
    else:
        return ["a qualified name " + regex_error(QNAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
                .replace("'MyName', or", "'MyName',  or").replace("'my.name', or", "'my.name',  or")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + max_len(63))
    if name and not _QNAME.match(name):
        errs.append("name part " + QNAME_MSG + " (e.g. 'MyName',  or 'my.name',  or '123-abc', "
                    "regex used for validation is '" + QUALIFIED_NAME_FMT + "')")
    return errs


def label_value_errors(v):
    errs = []
    if len(v) > 63:
        errs.append(max_len(63))
    if not _LVALUE.match(v):
        errs.append(LVALUE_MSG + " (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '"
                    + LABEL_VALUE_FMT + "')")
    return errs


def port_num_errors(p):
    if not isinstance(p, int) or p < 1 or p > 65535:
        return ["must be between 1 and 65535, inclusive"]
    return []


def port_name_errors(name):
    errs = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not _IANA_SVC.match(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if not _ALPHA.search(name):
        errs.append("must contain at least one letter (a-z)")
    if name.startswith("-") or name.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


# ---- object meta ------------------------------------------------------------------------

NAME_RULES = {"services": dns1035_label_errors, "namespaces": dns1123_label_errors}


def validate_labels(labels, path):
    errs = []
    for k in sorted(labels or {}):
        v = labels[k]
        for m in label_key_errors(k):
            errs.append(E.invalid(path, k, m))
        if isinstance(v, str):
            for m in label_value_errors(v):
                errs.append(E.invalid(path, v, m))
    return errs


def validate_annotations(ann, path):
    errs = []
    total = 0
    for k in sorted(ann or {}):
        for m in label_key_errors(k):
            errs.append(E.invalid(path, k, m))
        total += len(k) + len(ann[k] or "")
    if total > 262144:
        errs.append(E.FieldError("TooLong", path, None, "may not be more than 262144 bytes"))
    return errs


def validate_meta(resource, meta, namespaced):
    errs = []
    name_fn = NAME_RULES.get(resource, dns1123_subdomain_errors)
    gen = meta.get("generateName") or ""
    if gen:
        # generateName is checked with prefix semantics (trailing '-' allowed)
        trial = gen[:-1] if gen.endswith("-") else gen
        for m in name_fn(trial) if trial else []:
            errs.append(E.invalid("metadata.generateName", gen, m))
    name = meta.get("name") or ""
    if not name:
        errs.append(E.required("metadata.name", "name or generateName is required"))
    else:
        for m in name_fn(name):
            errs.append(E.invalid("metadata.name", name, m))
    if namespaced:
        if not meta.get("namespace"):
            errs.append(E.required("metadata.namespace", ""))
    elif meta.get("namespace"):
        errs.append(E.forbidden_field("metadata.namespace", "not allowed on this type"))
    errs += validate_labels(meta.get("labels"), "metadata.labels")
    errs += validate_annotations(meta.get("annotations"), "metadata.annotations")
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        p = "metadata.ownerReferences[%d]" % i
        for f in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(f):
                errs.append(E.invalid(p + "." + f, ref.get(f) or "", "%s must not be empty" % {
                    "apiVersion": "version", "kind": "kind", "name": "name", "uid": "uid"}[f]))
    return errs


# ---- defaults ---------------------------------------------------------------------------

def _default_probe(p):
    if not isinstance(p, dict):
        return
    p.setdefault("timeoutSeconds", 1)
    p.setdefault("periodSeconds", 10)
    p.setdefault("successThreshold", 1)
    p.setdefault("failureThreshold", 3)
    if isinstance(p.get("httpGet"), dict):
        p["httpGet"].setdefault("path", "/")
        p["httpGet"].setdefault("scheme", "HTTP")


def _default_container(c):
    img = c.get("image") or ""
    if "imagePullPolicy" not in c:
        last = img.rsplit("/", 1)[-1]
        if "@" in last:
            c["imagePullPolicy"] = "IfNotPresent"
        elif ":" not in last or last.endswith(":latest"):
            c["imagePullPolicy"] = "Always"
        else:
            c["imagePullPolicy"] = "IfNotPresent"
    c.setdefault("resources", {})
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(probe))
    for e in c.get("env") or []:
        vf = e.get("valueFrom") if isinstance(e, dict) else None
        if isinstance(vf, dict) and isinstance(vf.get("fieldRef"), dict):
            vf["fieldRef"].setdefault("apiVersion", "v1")


def default_pod_spec(spec):
    if not isinstance(spec, dict):
        return
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _default_container(c)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        for src in ("configMap", "secret"):
            if isinstance(v.get(src), dict):
                v[src].setdefault("defaultMode", 420)
        if "emptyDir" in v and v["emptyDir"] is None:
            v["emptyDir"] = {}
    if spec.get("serviceAccountName") and not spec.get("serviceAccount"):
        spec["serviceAccount"] = spec["serviceAccountName"]


def _default_pod_template(t):
    if not isinstance(t, dict):
        return
    md = t.setdefault("metadata", {})
    if isinstance(md, dict):
        md.setdefault("creationTimestamp", None)
    default_pod_spec(t.get("spec"))


def apply_defaults(resource, obj):
    spec = obj.get("spec")
    if resource == "pods":
        if isinstance(spec, dict):
            default_pod_spec(spec)
            spec.setdefault("enableServiceLinks", True)
            spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
            spec.setdefault("priority", 0)
            if not spec.get("serviceAccountName"):
                spec["serviceAccountName"] = "default"
                spec["serviceAccount"] = "default"
            tol = spec.setdefault("tolerations", [])
            keys = {t.get("key") for t in tol if isinstance(t, dict)}
            for k in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
                if k not in keys:
                    tol.append({"key": k, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    elif resource in ("deployments", "replicasets"):
        if isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10) if resource == "deployments" else None
            if resource == "deployments":
                spec.setdefault("progressDeadlineSeconds", 600)
                st = spec.setdefault("strategy", {})
                if isinstance(st, dict):
                    st.setdefault("type", "RollingUpdate")
                    if st["type"] == "RollingUpdate":
                        ru = st.setdefault("rollingUpdate", {})
                        if isinstance(ru, dict):
                            ru.setdefault("maxUnavailable", "25%")
                            ru.setdefault("maxSurge", "25%")
            _default_pod_template(spec.get("template"))
    elif resource == "services":
        if isinstance(spec, dict):
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec.get("type") in ("ClusterIP", "NodePort", "LoadBalancer"):
                spec.setdefault("internalTrafficPolicy", "Cluster")
            for p in spec.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
                    if p.get("targetPort") in (None, 0, ""):
                        if "port" in p:
                            p["targetPort"] = p["port"]
    elif resource == "namespaces":
        obj.setdefault("spec", {})
        if isinstance(obj["spec"], dict):
            obj["spec"].setdefault("finalizers", ["kubernetes"])
        labels = obj.setdefault("metadata", {}).setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"].get("name", "")
    elif resource == "secrets":
        obj.setdefault("type", "Opaque")
    elif resource == "rolebindings":
        for s in obj.get("subjects") or []:
            if isinstance(s, dict) and s.get("kind") in ("User", "Group"):
                s.setdefault("apiGroup", "rbac.authorization.k8s.io")


# ---- per-kind validation ----------------------------------------------------------------

def _validate_container(c, path, vol_names, names):
    errs = []
    name = c.get("name") or ""
    if not name:
        errs.append(E.required(path + ".name", ""))
    else:
        for m in dns1123_label_errors(name):
            errs.append(E.invalid(path + ".name", name, m))
        if name in names:
            errs.append(E.duplicate(path + ".name", name))
        names.add(name)
    if not c.get("image"):
        errs.append(E.required(path + ".image", ""))
    pp = c.get("imagePullPolicy")
    if pp and pp not in ("Always", "IfNotPresent", "Never"):
        errs.append(E.not_supported(path + ".imagePullPolicy", pp, ["Always", "IfNotPresent", "Never"]))
    for i, p in enumerate(c.get("ports") or []):
        pth = "%s.ports[%d]" % (path, i)
        cp = p.get("containerPort", 0)
        if not cp:
            errs.append(E.required(pth + ".containerPort", ""))
        else:
            for m in port_num_errors(cp):
                errs.append(E.invalid(pth + ".containerPort", cp, m))
        if p.get("name"):
            for m in port_name_errors(p["name"]):
                errs.append(E.invalid(pth + ".name", p["name"], m))
        if p.get("protocol") not in ("TCP", "UDP", "SCTP"):
            errs.append(E.not_supported(pth + ".protocol", p.get("protocol") or "", ["SCTP", "TCP", "UDP"]))
    for i, e in enumerate(c.get("env") or []):
        if not e.get("name"):
            errs.append(E.required("%s.env[%d].name" % (path, i), ""))
    mounts = set()
    for i, vm in enumerate(c.get("volumeMounts") or []):
        pth = "%s.volumeMounts[%d]" % (path, i)
        if not vm.get("name"):
            errs.append(E.required(pth + ".name", ""))
        elif vm["name"] not in vol_names:
            errs.append(E.FieldError("NotFound", pth + ".name", vm["name"]))
        mp = vm.get("mountPath") or ""
        if not mp:
            errs.append(E.required(pth + ".mountPath", ""))
        elif mp in mounts:
            errs.append(E.invalid(pth + ".mountPath", mp, "must be unique"))
        mounts.add(mp)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        pr = c.get(probe)
        if isinstance(pr, dict):
            handlers = [h for h in ("exec", "httpGet", "tcpSocket", "grpc") if pr.get(h) is not None]
            if not handlers:
                errs.append(E.required("%s.%s" % (path, probe), "must specify a handler type"))
            elif len(handlers) > 1:
                errs.append(E.forbidden_field("%s.%s.%s" % (path, probe, handlers[1]), "may not specify more than 1 handler type"))
    return errs


def validate_pod_spec(spec, path, template=False):
    errs = []
    if not isinstance(spec, dict):
        spec = {}
    vol_names = set()
    for i, v in enumerate(spec.get("volumes") or []):
        pth = "%s.volumes[%d]" % (path, i)
        n = v.get("name") or ""
        if not n:
            errs.append(E.required(pth + ".name", ""))
        else:
            for m in dns1123_label_errors(n):
                errs.append(E.invalid(pth + ".name", n, m))
            if n in vol_names:
                errs.append(E.duplicate(pth + ".name", n))
            vol_names.add(n)
        sources = [k for k in v if k != "name"]
        if not sources:
            errs.append(E.required(pth, "must specify a volume type"))
        for src, key in (("configMap", "name"), ("secret", "secretName")):
            if isinstance(v.get(src), dict) and src == "configMap" and not v[src].get(key):
                errs.append(E.required("%s.%s.%s" % (pth, src, key), ""))
    names = set()
    if not spec.get("containers"):
        errs.append(E.required(path + ".containers", ""))
    for i, c in enumerate(spec.get("containers") or []):
        errs += _validate_container(c, "%s.containers[%d]" % (path, i), vol_names, names)
    for i, c in enumerate(spec.get("initContainers") or []):
        errs += _validate_container(c, "%s.initContainers[%d]" % (path, i), vol_names, names)
    rp = spec.get("restartPolicy")
    if template:
        if rp != "Always":
            errs.append(E.not_supported(path + ".restartPolicy", rp or "", ["Always"]))
    elif rp not in ("Always", "OnFailure", "Never"):
        errs.append(E.not_supported(path + ".restartPolicy", rp or "", ["Always", "OnFailure", "Never"]))
    dp = spec.get("dnsPolicy")
    if dp not in ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"):
        errs.append(E.not_supported(path + ".dnsPolicy", dp or "",
                                    ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]))
    tg = spec.get("terminationGracePeriodSeconds")
    if isinstance(tg, int) and tg < 0:
        errs.append(E.invalid(path + ".terminationGracePeriodSeconds", tg, "must be greater than or equal to 0"))
    return errs


def _label_selector_repr(sel):
    ml = sel.get("matchLabels")
    mls = "map[string]string(nil)" if ml is None else E.go_value(dict(ml))
    me = sel.get("matchExpressions")
    if not me:
        mes = "[]v1.LabelSelectorRequirement(nil)"
    else:
        items = []
        for e in me:
            vals = e.get("values")
            vs = "[]string(nil)" if vals is None else E.go_value(list(vals))
            items.append('v1.LabelSelectorRequirement{Key:%s, Operator:%s, Values:%s}'
                         % (E.go_quote(e.get("key", "")), E.go_quote(e.get("operator", "")), vs))
        mes = "[]v1.LabelSelectorRequirement{%s}" % ", ".join(items)
    return E.GoRepr("v1.LabelSelector{MatchLabels:%s, MatchExpressions:%s}" % (mls, mes))


def _validate_label_selector(sel, path):
    errs = []
    for i, e in enumerate(sel.get("matchExpressions") or []):
        p = "%s.matchExpressions[%d]" % (path, i)
        op = e.get("operator")
        if op in ("In", "NotIn"):
            if not e.get("values"):
                errs.append(E.required(p + ".values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if e.get("values"):
                errs.append(E.forbidden_field(p + ".values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            errs.append(E.invalid(p + ".operator", op or "", "not a valid selector operator"))
        for m in label_key_errors(e.get("key") or ""):
            errs.append(E.invalid(p + ".key", e.get("key") or "", m))
    errs += validate_labels(sel.get("matchLabels"), path + ".matchLabels")
    return errs


def _validate_workload(obj, kind):
    errs = []
    spec = obj.get("spec") or {}
    sel = spec.get("selector")
    tmpl = spec.get("template") or {}
    tlabels = (tmpl.get("metadata") or {}).get("labels") or {}
    if sel is None:
        errs.append(E.required("spec.selector", ""))
    else:
        errs += _validate_label_selector(sel, "spec.selector")
        if not sel.get("matchLabels") and not sel.get("matchExpressions"):
            errs.append(E.invalid("spec.selector", _label_selector_repr(sel),
                                  "empty selector is invalid for %s" % kind))
    r = spec.get("replicas")
    if isinstance(r, int) and r < 0:
        errs.append(E.invalid("spec.replicas", r, "must be greater than or equal to 0"))
    errs += validate_labels(tlabels, "spec.template.metadata.labels")
    if sel is not None and (sel.get("matchLabels") or sel.get("matchExpressions")):
        try:
            s = selectors.from_label_selector(sel)
        except ValueError:
            s = None
        if s is not None and not s.matches(tlabels):
            errs.append(E.invalid("spec.template.metadata.labels", dict(tlabels),
                                  "`selector` does not match template `labels`"))
    errs += validate_pod_spec(tmpl.get("spec"), "spec.template.spec", template=True)
    if kind == "deployment":
        st = spec.get("strategy") or {}
        t = st.get("type")
        if t not in ("Recreate", "RollingUpdate"):
            errs.append(E.not_supported("spec.strategy.type", t or "", ["Recreate", "RollingUpdate"]))
        elif t == "Recreate" and st.get("rollingUpdate") is not None:
            errs.append(E.forbidden_field("spec.strategy.rollingUpdate",
                                          "may not be specified when strategy `type` is 'Recreate'"))
        for f in ("revisionHistoryLimit", "progressDeadlineSeconds", "minReadySeconds"):
            v = spec.get(f)
            if isinstance(v, int) and v < 0:
                errs.append(E.invalid("spec." + f, v, "must be greater than or equal to 0"))
    return errs


def _validate_service(obj):
    errs = []
    spec = obj.get("spec") or {}
    typ = spec.get("type")
    if typ not in ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"):
        errs.append(E.not_supported("spec.type", typ or "", ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]))
    headless = spec.get("clusterIP") == "None"
    ports = spec.get("ports") or []
    if typ == "ExternalName":
        en = spec.get("externalName") or ""
        if not en:
            errs.append(E.required("spec.externalName", ""))
        else:
            for m in dns1123_subdomain_errors(en.rstrip(".")):
                errs.append(E.invalid("spec.externalName", en, m))
        if spec.get("clusterIP") not in (None, ""):
            errs.append(E.forbidden_field("spec.clusterIPs", "may not be set for ExternalName services"))
    if not ports and not headless and typ != "ExternalName":
        errs.append(E.required("spec.ports", ""))
    seen = set()
    names = set()
    for i, p in enumerate(ports):
        pth = "spec.ports[%d]" % i
        name = p.get("name") or ""
        if len(ports) > 1 and not name:
            errs.append(E.required(pth + ".name", ""))
        elif name:
            for m in dns1123_label_errors(name):
                errs.append(E.invalid(pth + ".name", name, m))
            if name in names:
                errs.append(E.duplicate(pth + ".name", name))
            names.add(name)
        port = p.get("port", 0)
        for m in port_num_errors(port):
            errs.append(E.invalid(pth + ".port", port, m))
        proto = p.get("protocol")
        if proto not in ("TCP", "UDP", "SCTP"):
            errs.append(E.not_supported(pth + ".protocol", proto or "", ["SCTP", "TCP", "UDP"]))
        tp = p.get("targetPort")
        if isinstance(tp, int):
            for m in port_num_errors(tp):
                errs.append(E.invalid(pth + ".targetPort", tp, m))
        elif isinstance(tp, str):
            for m in port_name_errors(tp):
                errs.append(E.invalid(pth + ".targetPort", tp, m))
        key = (port, proto)
        if key in seen:
            errs.append(E.duplicate(pth, E.GoRepr('core.ServicePort{Name:%s, Protocol:%s, Port:%d}'
                                                  % (E.go_quote(name), E.go_quote(proto or ""), port if isinstance(port, int) else 0))))
        seen.add(key)
    sa = spec.get("sessionAffinity")
    if sa not in ("ClientIP", "None"):
        errs.append(E.not_supported("spec.sessionAffinity", sa or "", ["ClientIP", "None"]))
    errs += validate_labels(spec.get("selector"), "spec.selector")
    return errs


def _validate_configmap_keys(obj, fields):
    errs = []
    for f in fields:
        for k in sorted(obj.get(f) or {}):
            if len(k) > 253 or not _CONFIG_KEY.match(k):
                errs.append(E.invalid("%s[%s]" % (f, k), k,
                                      "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                                      "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '"
                                      + CONFIG_KEY_FMT + "')"))
    return errs


def _validate_rbac_role(obj):
    errs = []
    for i, r in enumerate(obj.get("rules") or []):
        p = "rules[%d]" % i
        if not r.get("verbs"):
            errs.append(E.required(p + ".verbs", "verbs must contain at least one value"))
        if not r.get("nonResourceURLs"):
            if r.get("apiGroups") is None or not r.get("resources"):
                if r.get("apiGroups") is None:
                    errs.append(E.required(p + ".apiGroups", "resource rules must supply at least one api group"))
                if not r.get("resources"):
                    errs.append(E.required(p + ".resources", "resource rules must supply at least one resource"))
    return errs


def _validate_rolebinding(obj):
    errs = []
    ref = obj.get("roleRef") or {}
    if ref.get("kind") not in ("Role", "ClusterRole"):
        errs.append(E.not_supported("roleRef.kind", ref.get("kind") or "", ["Role", "ClusterRole"]))
    if ref.get("apiGroup") != "rbac.authorization.k8s.io":
        errs.append(E.not_supported("roleRef.apiGroup", ref.get("apiGroup") or "", ["rbac.authorization.k8s.io"]))
    if not ref.get("name"):
        errs.append(E.required("roleRef.name", ""))
    for i, s in enumerate(obj.get("subjects") or []):
        if s.get("kind") not in ("ServiceAccount", "User", "Group"):
            errs.append(E.not_supported("subjects[%d].kind" % i, s.get("kind") or "", ["ServiceAccount", "User", "Group"]))
        if not s.get("name"):
            errs.append(E.required("subjects[%d].name" % i, ""))
    return errs


MAX_SECRET_SIZE = 1024 * 1024    # api.MaxSecretSize, also the ConfigMap limit


def _b64_len(v):
    """Length of the bytes a base64 value stands for."""
    v = str(v or "")
    return len(v) * 3 // 4 - v[-2:].count("=")


def validate(resource, obj, namespaced):
    """Create-time validation: list of FieldErrors."""
    errs = validate_meta(resource, obj.get("metadata") or {}, namespaced)
    if resource == "pods":
        errs += validate_pod_spec(obj.get("spec"), "spec")
    elif resource == "deployments":
        errs += _validate_workload(obj, "deployment")
    elif resource == "replicasets":
        errs += _validate_workload(obj, "replicaset")
    elif resource == "services":
        errs += _validate_service(obj)
    elif resource == "configmaps":
        errs += _validate_configmap_keys(obj, ("data", "binaryData"))
        dup = set(obj.get("data") or {}) & set(obj.get("binaryData") or {})
        for k in sorted(dup):
            errs.append(E.invalid("data[%s]" % k, k, "duplicate of key present in binaryData"))
        size = sum(len(str(v).encode()) for v in (obj.get("data") or {}).values()) + \
            sum(_b64_len(v) for v in (obj.get("binaryData") or {}).values())
        if size > MAX_SECRET_SIZE:     # ValidateConfigMap: the whole data, on the path ""
            errs.append(E.FieldError("TooLong", "[]", None, "may not be more than %d bytes" % MAX_SECRET_SIZE))
    elif resource == "secrets":
        errs += _validate_configmap_keys(obj, ("data",))
        if sum(_b64_len(v) for v in (obj.get("data") or {}).values()) > MAX_SECRET_SIZE:
            errs.append(E.FieldError("TooLong", "data", None, "may not be more than %d bytes" % MAX_SECRET_SIZE))
    elif resource == "roles":
        errs += _validate_rbac_role(obj)
    elif resource == "endpointslices":
        at = obj.get("addressType")
        if not at:
            errs.append(E.required("addressType", ""))
        elif at not in ("IPv4", "IPv6", "FQDN"):
            errs.append(E.not_supported("addressType", at, ["IPv4", "IPv6", "FQDN"]))
    elif resource == "rolebindings":
        errs += _validate_rolebinding(obj)
    elif resource == "events":
        if not (obj.get("involvedObject") or {}).get("namespace") and obj.get("metadata", {}).get("namespace") not in (None, "default"):
            pass
    return errs


def validate_update(resource, new, old, namespaced):
    errs = validate(resource, new, namespaced)
    if resource == "deployments" or resource == "replicasets":
        ns, os_ = (new.get("spec") or {}).get("selector"), (old.get("spec") or {}).get("selector")
        if ns != os_:
            errs.append(E.invalid("spec.selector", _label_selector_repr(ns or {}), "field is immutable"))
    elif resource == "services":
        ospec, nspec = old.get("spec") or {}, new.get("spec") or {}
        oips, nips = ospec.get("clusterIPs") or [], nspec.get("clusterIPs") or []
        if "ExternalName" not in (ospec.get("type"), nspec.get("type")):
            if oips and nips and oips[0] != nips[0]:
                errs.append(E.invalid("spec.clusterIPs[0]", list(nips), "may not change once set"))
    elif resource in ("configmaps", "secrets"):
        if old.get("immutable"):
            fields = ("data", "binaryData") if resource == "configmaps" else ("data",)
            for f in fields:
                if new.get(f) != old.get(f):
                    errs.append(E.forbidden_field(f, "field is immutable when `immutable` is set"))
            if new.get("immutable") is not True:
                errs.append(E.forbidden_field("immutable", "field is immutable when `immutable` is set"))
        if resource == "secrets" and new.get("type") != old.get("type"):
            errs.append(E.invalid("type", new.get("type") or "", "field is immutable"))
    elif resource == "rolebindings":
        if new.get("roleRef") != old.get("roleRef"):
            r = new.get("roleRef") or {}
            errs.append(E.invalid("roleRef", E.GoRepr("rbac.RoleRef{APIGroup:%s, Kind:%s, Name:%s}" % (
                E.go_quote(r.get("apiGroup", "")), E.go_quote(r.get("kind", "")), E.go_quote(r.get("name", "")))),
                "cannot change roleRef"))
    elif resource == "pods":
        errs += _pod_update_errors(new, old)
    return errs


def _pod_update_errors(new, old):
    # Pod spec is immutable except container images, activeDeadlineSeconds, tolerations additions
    ospec, nspec = dict(old.get("spec") or {}), dict(new.get("spec") or {})
    for s in (ospec, nspec):
        s.pop("activeDeadlineSeconds", None)
        s.pop("tolerations", None)
        s["containers"] = [dict(c, image="") for c in s.get("containers") or []]
        s["initContainers"] = [dict(c, image="") for c in s.get("initContainers") or []]
    if ospec != nspec:
        return [E.forbidden_field("spec", "pod updates may not change fields other than `spec.containers[*].image`,"
                                  "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                                  "`spec.tolerations` (only additions to existing tolerations),"
                                  "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")]
    return []


# ---- Pod Security admission (restricted / baseline) -------------------------------------

def _plural(names, singular, plural):
    return "%s %s" % (singular if len(names) == 1 else plural, ", ".join('"%s"' % n for n in names))


def pod_security_violations(spec, level):
    """Return the list of 'check (detail)' strings for the given level ('baseline'|'restricted')."""
    if not isinstance(spec, dict):
        return []
    out = []
    psc = spec.get("securityContext") or {}
    containers = [c for key in ("initContainers", "containers") for c in (spec.get(key) or []) if isinstance(c, dict)]
    sc = lambda c: c.get("securityContext") or {}

    if level == "restricted":
        bad = [c.get("name", "") for c in containers if sc(c).get("allowPrivilegeEscalation") is not False]
        if bad:
            out.append("allowPrivilegeEscalation != false (%s must set securityContext.allowPrivilegeEscalation=false)"
                       % _plural(bad, "container", "containers"))
    # capabilities
    base_allowed = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
    bad_add = []
    for c in containers:
        for cap in (sc(c).get("capabilities") or {}).get("add") or []:
            if cap not in base_allowed:
                bad_add.append((c.get("name", ""), cap))
    if level == "restricted":
        nodrop = [c.get("name", "") for c in containers
                  if "ALL" not in ((sc(c).get("capabilities") or {}).get("drop") or [])]
        addbad = []
        for c in containers:
            for cap in (sc(c).get("capabilities") or {}).get("add") or []:
                if cap != "NET_BIND_SERVICE" and c.get("name", "") not in addbad:
                    addbad.append(c.get("name", ""))
        parts = []
        if nodrop:
            parts.append('%s must set securityContext.capabilities.drop=["ALL"]' % _plural(nodrop, "container", "containers"))
        if addbad:
            caps = sorted({cap for c in containers for cap in ((sc(c).get("capabilities") or {}).get("add") or [])
                           if cap != "NET_BIND_SERVICE"})
            parts.append('%s must not include %s in securityContext.capabilities.add'
                         % (_plural(addbad, "container", "containers"), ", ".join('"%s"' % x for x in caps)))
        if parts:
            out.append("unrestricted capabilities (%s)" % "; ".join(parts))
    elif bad_add:
        names = []
        for n, _ in bad_add:
            if n not in names:
                names.append(n)
        out.append("non-default capabilities (%s must not include %s in securityContext.capabilities.add)"
                   % (_plural(names, "container", "containers"), ", ".join('"%s"' % c for _, c in bad_add)))
    hn = [f for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]
    if hn:
        out.append("host namespaces (%s)" % ", ".join("%s=true" % f for f in hn))
    hp = [v.get("name", "") for v in spec.get("volumes") or [] if isinstance(v, dict) and "hostPath" in v]
    if hp:
        out.append("hostPath volumes (%s)" % _plural(hp, "volume", "volumes"))
    ports = []
    pnames = []
    for c in containers:
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                ports.append(str(p["hostPort"]))
                if c.get("name", "") not in pnames:
                    pnames.append(c.get("name", ""))
    if ports:
        out.append("hostPort (%s %s %s)" % (_plural(pnames, "container", "containers"),
                                            "uses hostPort" if len(ports) == 1 else "use hostPorts", ", ".join(ports)))
    priv = [c.get("name", "") for c in containers if sc(c).get("privileged")]
    if priv:
        out.append("privileged (%s must not set securityContext.privileged=true)" % _plural(priv, "container", "containers"))
    if level == "restricted":
        allowed_vol = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret", "name"}
        bad_vols, bad_types = [], []
        for v in spec.get("volumes") or []:
            if not isinstance(v, dict):
                continue
            for k in v:
                if k not in allowed_vol:
                    if v.get("name", "") not in bad_vols:
                        bad_vols.append(v.get("name", ""))
                    if k not in bad_types:
                        bad_types.append(k)
        if bad_vols:
            out.append("restricted volume types (%s %s %s)" % (
                _plural(bad_vols, "volume", "volumes"),
                "uses restricted volume type" if len(bad_vols) == 1 else "use restricted volume types",
                ", ".join('"%s"' % t for t in bad_types)))
        pod_nonroot = psc.get("runAsNonRoot")
        bad_false = [c.get("name", "") for c in containers if sc(c).get("runAsNonRoot") is False]
        unset = [c.get("name", "") for c in containers if sc(c).get("runAsNonRoot") is None]
        parts = []
        if pod_nonroot is False:
            parts.append("pod must not set securityContext.runAsNonRoot=false")
        if bad_false:
            parts.append("%s must not set securityContext.runAsNonRoot=false" % _plural(bad_false, "container", "containers"))
        if pod_nonroot is not True and unset and pod_nonroot is not False:
            parts.append("pod or %s must set securityContext.runAsNonRoot=true" % _plural(unset, "container", "containers"))
        if parts:
            out.append("runAsNonRoot != true (%s)" % "; ".join(parts))
        root = [c.get("name", "") for c in containers if sc(c).get("runAsUser") == 0]
        if psc.get("runAsUser") == 0 or root:
            parts = []
            if psc.get("runAsUser") == 0:
                parts.append("pod must not set runAsUser=0")
            if root:
                parts.append("%s must not set runAsUser=0" % _plural(root, "container", "containers"))
            out.append("runAsUser=0 (%s)" % "; ".join(parts))
        pod_sp = (psc.get("seccompProfile") or {}).get("type")
        okt = ("RuntimeDefault", "Localhost")
        cbad = [c.get("name", "") for c in containers
                if (sc(c).get("seccompProfile") or {}).get("type") not in okt + (None,)]
        cunset = [c.get("name", "") for c in containers if (sc(c).get("seccompProfile") or {}).get("type") is None]
        parts = []
        if pod_sp is not None and pod_sp not in okt:
            parts.append('pod must not set securityContext.seccompProfile.type to "%s"' % pod_sp)
        if cbad:
            parts.append('%s must not set securityContext.seccompProfile.type to "Unconfined"'
                         % _plural(cbad, "container", "containers"))
        if pod_sp is None and cunset:
            parts.append('pod or %s must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"'
                         % _plural(cunset, "container", "containers"))
        if parts:
            out.append("seccompProfile (%s)" % "; ".join(parts))
    return out


def pod_security_level(ns_obj, mode="enforce"):
    labels = ((ns_obj or {}).get("metadata") or {}).get("labels") or {}
    lvl = labels.get("pod-security.kubernetes.io/" + mode)
    if lvl in ("baseline", "restricted"):
        ver = labels.get("pod-security.kubernetes.io/%s-version" % mode) or "latest"
        return lvl, ver
    return None, None
