"""Typed decoding checks: wrong JSON types (400) and unknown fields (fieldValidation).

A compact description of the Go types the sandbox serves. Each struct maps a
JSON field to a type: a struct name, "string", "int32", "int64", "bool",
"intstr", "quantity", "time", "any", "bytes" (base64 string), ["T"] (slice),
{"map": "T"} (map[string]T).
"""
from . import errors as E

_META = {
    "name": "string", "generateName": "string", "namespace": "string", "selfLink": "string", "uid": "string",
    "resourceVersion": "string", "generation": "int64", "creationTimestamp": "time", "deletionTimestamp": "time",
    "deletionGracePeriodSeconds": "int64", "labels": {"map": "string"}, "annotations": {"map": "string"},
    "ownerReferences": ["OwnerReference"], "finalizers": ["string"], "managedFields": ["any"],
}

S = {
    "ObjectMeta": _META,
    "OwnerReference": {"apiVersion": "string", "kind": "string", "name": "string", "uid": "string",
                       "controller": "bool", "blockOwnerDeletion": "bool"},
    "LabelSelector": {"matchLabels": {"map": "string"}, "matchExpressions": ["LabelSelectorRequirement"]},
    "LabelSelectorRequirement": {"key": "string", "operator": "string", "values": ["string"]},
    # core
    "PodTemplateSpec": {"metadata": "ObjectMeta", "spec": "PodSpec"},
    "PodSpec": {
        "volumes": ["Volume"], "initContainers": ["Container"], "containers": ["Container"],
        "ephemeralContainers": ["any"], "restartPolicy": "string", "terminationGracePeriodSeconds": "int64",
        "activeDeadlineSeconds": "int64", "dnsPolicy": "string", "nodeSelector": {"map": "string"},
        "serviceAccountName": "string", "serviceAccount": "string", "automountServiceAccountToken": "bool",
        "nodeName": "string", "hostNetwork": "bool", "hostPID": "bool", "hostIPC": "bool",
        "shareProcessNamespace": "bool", "securityContext": "PodSecurityContext",
        "imagePullSecrets": ["LocalObjectReference"], "hostname": "string", "subdomain": "string",
        "affinity": "any", "schedulerName": "string", "tolerations": ["Toleration"], "hostAliases": ["any"],
        "priorityClassName": "string", "priority": "int32", "dnsConfig": "any", "readinessGates": ["any"],
        "runtimeClassName": "string", "enableServiceLinks": "bool", "preemptionPolicy": "string",
        "overhead": {"map": "quantity"}, "topologySpreadConstraints": ["any"], "setHostnameAsFQDN": "bool",
        "os": "any", "hostUsers": "bool", "schedulingGates": ["any"], "resourceClaims": ["any"], "resources": "any",
    },
    "LocalObjectReference": {"name": "string"},
    "Toleration": {"key": "string", "operator": "string", "value": "string", "effect": "string",
                   "tolerationSeconds": "int64"},
    "Container": {
        "name": "string", "image": "string", "command": ["string"], "args": ["string"], "workingDir": "string",
        "ports": ["ContainerPort"], "envFrom": ["any"], "env": ["EnvVar"], "resources": "ResourceRequirements",
        "resizePolicy": ["any"], "restartPolicy": "string", "volumeMounts": ["VolumeMount"], "volumeDevices": ["any"],
        "livenessProbe": "Probe", "readinessProbe": "Probe", "startupProbe": "Probe", "lifecycle": "any",
        "terminationMessagePath": "string", "terminationMessagePolicy": "string", "imagePullPolicy": "string",
        "securityContext": "SecurityContext", "stdin": "bool", "stdinOnce": "bool", "tty": "bool",
    },
    "ContainerPort": {"name": "string", "hostPort": "int32", "containerPort": "int32", "protocol": "string",
                      "hostIP": "string"},
    "EnvVar": {"name": "string", "value": "string", "valueFrom": "any"},
    "ResourceRequirements": {"limits": {"map": "quantity"}, "requests": {"map": "quantity"}, "claims": ["any"]},
    "VolumeMount": {"name": "string", "readOnly": "bool", "recursiveReadOnly": "string", "mountPath": "string",
                    "subPath": "string", "mountPropagation": "string", "subPathExpr": "string"},
    "Probe": {"exec": "any", "httpGet": "HTTPGetAction", "tcpSocket": "TCPSocketAction", "grpc": "any",
              "initialDelaySeconds": "int32", "timeoutSeconds": "int32", "periodSeconds": "int32",
              "successThreshold": "int32", "failureThreshold": "int32", "terminationGracePeriodSeconds": "int64"},
    "HTTPGetAction": {"path": "string", "port": "intstr", "host": "string", "scheme": "string", "httpHeaders": ["any"]},
    "TCPSocketAction": {"port": "intstr", "host": "string"},
    "SecurityContext": {"capabilities": "Capabilities", "privileged": "bool", "seLinuxOptions": "any",
                        "windowsOptions": "any", "runAsUser": "int64", "runAsGroup": "int64", "runAsNonRoot": "bool",
                        "readOnlyRootFilesystem": "bool", "allowPrivilegeEscalation": "bool", "procMount": "string",
                        "seccompProfile": "SeccompProfile", "appArmorProfile": "any"},
    "PodSecurityContext": {"seLinuxOptions": "any", "windowsOptions": "any", "runAsUser": "int64",
                           "runAsGroup": "int64", "runAsNonRoot": "bool", "supplementalGroups": ["int64"],
                           "supplementalGroupsPolicy": "string", "fsGroup": "int64", "sysctls": ["any"],
                           "fsGroupChangePolicy": "string", "seccompProfile": "SeccompProfile",
                           "appArmorProfile": "any", "seLinuxChangePolicy": "string"},
    "Capabilities": {"add": ["string"], "drop": ["string"]},
    "SeccompProfile": {"type": "string", "localhostProfile": "string"},
    "Volume": {"name": "string", "configMap": "ConfigMapVolumeSource", "secret": "SecretVolumeSource",
               "emptyDir": "any", "hostPath": "any", "projected": "any", "downwardAPI": "any",
               "persistentVolumeClaim": "any", "csi": "any", "ephemeral": "any", "nfs": "any", "image": "any"},
    "ConfigMapVolumeSource": {"name": "string", "items": ["KeyToPath"], "defaultMode": "int32", "optional": "bool"},
    "SecretVolumeSource": {"secretName": "string", "items": ["KeyToPath"], "defaultMode": "int32", "optional": "bool"},
    "KeyToPath": {"key": "string", "path": "string", "mode": "int32"},
    "PodStatus": "any",
    "Pod": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "spec": "PodSpec", "status": "any"},
    "Service": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "spec": "ServiceSpec",
                "status": "any"},
    "ServiceSpec": {"ports": ["ServicePort"], "selector": {"map": "string"}, "clusterIP": "string",
                    "clusterIPs": ["string"], "type": "string", "externalIPs": ["string"],
                    "sessionAffinity": "string", "loadBalancerIP": "string", "loadBalancerSourceRanges": ["string"],
                    "externalName": "string", "externalTrafficPolicy": "string", "healthCheckNodePort": "int32",
                    "publishNotReadyAddresses": "bool", "sessionAffinityConfig": "any", "ipFamilies": ["string"],
                    "ipFamilyPolicy": "string", "allocateLoadBalancerNodePorts": "bool",
                    "loadBalancerClass": "string", "internalTrafficPolicy": "string", "trafficDistribution": "string"},
    "ServicePort": {"name": "string", "protocol": "string", "appProtocol": "string", "port": "int32",
                    "targetPort": "intstr", "nodePort": "int32"},
    "ConfigMap": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "immutable": "bool",
                  "data": {"map": "string"}, "binaryData": {"map": "bytes"}},
    "Secret": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "immutable": "bool",
               "data": {"map": "bytes"}, "stringData": {"map": "string"}, "type": "string"},
    "ServiceAccount": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "secrets": ["any"],
                       "imagePullSecrets": ["LocalObjectReference"], "automountServiceAccountToken": "bool"},
    "Namespace": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta",
                  "spec": {"finalizers": ["string"]}, "status": "any"},
    "Endpoints": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "subsets": ["EndpointSubset"]},
    "EndpointSubset": {"addresses": ["EndpointAddress"], "notReadyAddresses": ["EndpointAddress"],
                       "ports": ["EndpointPort"]},
    "EndpointAddress": {"ip": "string", "hostname": "string", "nodeName": "string", "targetRef": "any"},
    "EndpointPort": {"name": "string", "port": "int32", "protocol": "string", "appProtocol": "string"},
    "Event": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "involvedObject": "any",
              "reason": "string", "message": "string", "source": "any", "firstTimestamp": "time",
              "lastTimestamp": "time", "count": "int32", "type": "string", "eventTime": "any", "series": "any",
              "action": "string", "related": "any", "reportingComponent": "string", "reportingInstance": "string"},
    "EndpointSlice": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "addressType": "string",
                      "endpoints": ["any"], "ports": ["any"]},
    "SelfSubjectAccessReview": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta",
                                "spec": {"resourceAttributes": "any", "nonResourceAttributes": "any"},
                                "status": "any"},
    "SelfSubjectRulesReview": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta",
                               "spec": {"namespace": "string"}, "status": "any"},
    # apps
    "Deployment": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "spec": "DeploymentSpec",
                   "status": "any"},
    "DeploymentSpec": {"replicas": "int32", "selector": "LabelSelector", "template": "PodTemplateSpec",
                       "strategy": "DeploymentStrategy", "minReadySeconds": "int32",
                       "revisionHistoryLimit": "int32", "paused": "bool", "progressDeadlineSeconds": "int32"},
    "DeploymentStrategy": {"type": "string", "rollingUpdate": {"maxUnavailable": "intstr", "maxSurge": "intstr"}},
    "ReplicaSet": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "spec": "ReplicaSetSpec",
                   "status": "any"},
    "ReplicaSetSpec": {"replicas": "int32", "minReadySeconds": "int32", "selector": "LabelSelector",
                       "template": "PodTemplateSpec"},
    "Lease": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta",
              "spec": {"holderIdentity": "string", "leaseDurationSeconds": "int32", "acquireTime": "any",
                       "renewTime": "any", "leaseTransitions": "int32", "strategy": "string",
                       "preferredHolder": "string"}},
    "NetworkPolicy": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta",
                      "spec": {"podSelector": "LabelSelector", "policyTypes": ["string"],
                               "ingress": ["NetworkPolicyIngressRule"], "egress": ["any"]}},
    "NetworkPolicyIngressRule": {"from": ["NetworkPolicyPeer"], "ports": ["NetworkPolicyPort"]},
    "NetworkPolicyPeer": {"podSelector": "LabelSelector", "namespaceSelector": "LabelSelector", "ipBlock": "any"},
    "NetworkPolicyPort": {"protocol": "string", "port": "intstr", "endPort": "int32"},
    "Role": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "rules": ["PolicyRule"]},
    "PolicyRule": {"verbs": ["string"], "apiGroups": ["string"], "resources": ["string"],
                   "resourceNames": ["string"], "nonResourceURLs": ["string"]},
    "RoleBinding": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta", "subjects": ["Subject"],
                    "roleRef": "RoleRef"},
    "Subject": {"kind": "string", "apiGroup": "string", "name": "string", "namespace": "string"},
    "RoleRef": {"apiGroup": "string", "kind": "string", "name": "string"},
    "Scale": {"apiVersion": "string", "kind": "string", "metadata": "ObjectMeta",
              "spec": {"replicas": "int32"}, "status": "any"},
}

# Go struct names as they appear in unmarshal errors, per (struct, field) parent
_GO_NAME = {"DeploymentSpec": "DeploymentSpec", "PodSpec": "PodSpec"}

_GO_TYPES = {"string": "string", "int32": "int32", "int64": "int64", "bool": "bool", "bytes": "[]uint8",
             "time": "v1.Time", "quantity": "resource.Quantity", "intstr": "intstr.IntOrString"}


def _json_kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _go_type(t):
    if isinstance(t, list):
        inner = t[0]
        return "[]" + ("v1." + inner if inner in S else _GO_TYPES.get(inner, "interface {}"))
    if isinstance(t, dict):
        if "map" in t:
            return "map[string]" + _GO_TYPES.get(t["map"], "interface {}")
        return "struct"
    if t in S:
        return "v1." + t
    return _GO_TYPES.get(t, "interface {}")


class TypeError_(Exception):
    def __init__(self, got, struct, path, typ):
        self.text = "json: cannot unmarshal %s into Go struct field %s.%s of type %s" % (got, struct, path, typ)


def check(kind, obj):
    """Returns the list of unknown field paths. Raises TypeError_ on the first wrong type."""
    unknown = []
    _walk(obj, kind, kind, "", unknown)
    return unknown


def _walk(v, t, struct, path, unknown):
    if v is None or t == "any":
        return
    if isinstance(t, str) and t in S:
        sch = S[t]
        if sch == "any":
            return
        if not isinstance(v, dict):
            raise TypeError_(_json_kind(v), struct, path.lstrip("."), _go_type(t))
        for k, x in v.items():
            if k not in sch:
                unknown.append((path + "." + k).lstrip("."))
                continue
            _walk(x, sch[k], t, path + "." + k, unknown)
        return
    if isinstance(t, dict) and "map" not in t:
        if not isinstance(v, dict):
            raise TypeError_(_json_kind(v), struct, path.lstrip("."), "struct")
        for k, x in v.items():
            if k not in t:
                unknown.append((path + "." + k).lstrip("."))
                continue
            _walk(x, t[k], struct, path + "." + k, unknown)
        return
    if isinstance(t, dict):
        if not isinstance(v, dict):
            raise TypeError_(_json_kind(v), struct, path.lstrip("."), _go_type(t))
        for k, x in v.items():
            if x is None:
                continue
            _walk(x, t["map"], struct, path, unknown)
        return
    if isinstance(t, list):
        if not isinstance(v, list):
            raise TypeError_(_json_kind(v), struct, path.lstrip("."), _go_type(t))
        for i, x in enumerate(v):
            _walk(x, t[0], struct, path, unknown)
            # unknown fields inside list elements are reported with their index
        return
    jk = _json_kind(v)
    ok = {"string": jk == "string", "bytes": jk == "string", "time": jk == "string",
          "bool": jk == "bool",
          "int32": jk == "number" and isinstance(v, int), "int64": jk == "number" and isinstance(v, int),
          "intstr": jk in ("string", "number"), "quantity": jk in ("string", "number")}.get(t, True)
    if not ok:
        if jk == "number" and t in ("int32", "int64"):
            jk = "number %s" % v
        raise TypeError_(jk, struct, path.lstrip("."), _go_type(t))
    if t == "int32" and not (-2 ** 31 <= v < 2 ** 31):
        raise TypeError_("number %d" % v, struct, path.lstrip("."), "int32")
    if t == "bytes":
        import base64
        import binascii
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise _Base64Error(v)


class _Base64Error(Exception):
    def __init__(self, v):
        import base64
        import binascii
        pos = 0
        s = v
        # find the first byte that breaks decoding, like Go's encoding/base64
        valid = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
        for i, ch in enumerate(s.encode()):
            if ch not in valid:
                pos = i
                break
        else:
            pos = len(s) - (len(s) % 4 or 4)
        self.text = "illegal base64 data at input byte %d" % pos


def decode(res, obj, mode, baseline=None):
    """Check obj for kind res; returns (obj, warnings). mode: Strict|Warn|Ignore.

    baseline: the stored object a patch was applied to; fields unknown to this
    schema that it already had (written by the node) are not the client's."""
    try:
        unknown = check(res.kind, obj)
        if baseline is not None and unknown:
            try:
                known_before = set(check(res.kind, baseline))
            except (TypeError_, _Base64Error):
                known_before = set()
            unknown = [u for u in unknown if u not in known_before]
            if not unknown:
                return obj, []
    except TypeError_ as e:
        raise E.bad_request('%s in version "%s" cannot be handled as a %s: %s'
                            % (res.kind, res.version, res.kind, e.text))
    except _Base64Error as e:
        raise E.bad_request('%s in version "%s" cannot be handled as a %s: %s'
                            % (res.kind, res.version, res.kind, e.text))
    warnings = []
    if unknown:
        if mode == "Strict":
            raise E.bad_request('%s in version "%s" cannot be handled as a %s: strict decoding error: %s'
                                % (res.kind, res.version, res.kind,
                                   ", ".join('unknown field "%s"' % u for u in unknown)))
        if mode == "Warn":
            warnings = ['unknown field "%s"' % u for u in unknown]
        _drop(obj, res.kind)
    return obj, warnings


def _drop(v, t):
    if v is None or t == "any":
        return
    if isinstance(t, str) and t in S:
        sch = S[t]
        if sch == "any" or not isinstance(v, dict):
            return
        for k in list(v):
            if k not in sch:
                del v[k]
            else:
                _drop(v[k], sch[k])
    elif isinstance(t, dict) and "map" not in t and isinstance(v, dict):
        for k in list(v):
            if k not in t:
                del v[k]
            else:
                _drop(v[k], t[k])
    elif isinstance(t, list) and isinstance(v, list):
        for x in v:
            _drop(x, t[0])


def go_json_error(text, exc):
    """The message Go's encoding/json gives for the syntax error Python's json module found."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    msg = getattr(exc, "msg", str(exc))
    pos = getattr(exc, "pos", len(text))
    if pos >= len(text.rstrip()) or msg.startswith("Unterminated string"):
        return "unexpected end of JSON input"
    ch = text[pos]
    q = "'\\''" if ch == "'" else "'%s'" % ch
    if msg.startswith("Expecting value"):
        return "invalid character %s looking for beginning of value" % q
    if msg.startswith("Expecting property name"):
        return "invalid character %s looking for beginning of object key string" % q
    if msg.startswith("Expecting ':'"):
        return "invalid character %s after object key" % q
    if msg.startswith("Expecting ',' delimiter"):
        depth = []
        in_str = esc = False
        for c in text[:pos]:
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c in "[{":
                depth.append(c)
            elif c in "]}" and depth:
                depth.pop()
        if depth and depth[-1] == "[":
            return "invalid character %s after array element" % q
        return "invalid character %s after object key:value pair" % q
    if msg.startswith("Extra data"):
        return "invalid character %s after top-level value" % q
    return "invalid character %s looking for beginning of value" % q
