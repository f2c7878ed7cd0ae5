"""Decode Kubernetes protobuf request bodies (application/vnd.kubernetes.protobuf).

kubectl's typed clients (create deployment/configmap/secret/namespace/..., run)
POST protobuf. This decodes the envelope (magic "k8s\\0" + runtime.Unknown) and
the message into the same JSON object a JSON client would have sent, following
the field numbers of k8s.io/api generated.proto and Go's omitempty rules
(non-pointer zero scalars are dropped; pointer fields, marked "*", are kept).
"""
import base64

MAGIC = b"k8s\x00"


class ProtoError(ValueError):
    pass


def _varint(b, i):
    shift = result = 0
    while True:
        if i >= len(b):
            raise ProtoError("truncated varint")
        c = b[i]
        i += 1
        result |= (c & 0x7F) << shift
        if not c & 0x80:
            return result, i
        shift += 7


def fields(b):
    """Yield (fieldnum, wiretype, value) of a message."""
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 2:
            n, i = _varint(b, i)
            v = b[i:i + n]
            if len(v) != n:
                raise ProtoError("truncated field")
            i += n
        elif wt == 1:
            v = b[i:i + 8]
            i += 8
        elif wt == 5:
            v = b[i:i + 4]
            i += 4
        else:
            raise ProtoError("unsupported wire type %d" % wt)
        yield num, wt, v


# (json name, type, flags) ; flags: "*" pointer, "[]" repeated
M = {
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    "ObjectMeta": {1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
                   4: ("selfLink", "string"), 5: ("uid", "string"), 6: ("resourceVersion", "string"),
                   7: ("generation", "int"), 8: ("creationTimestamp", "Time"), 9: ("deletionTimestamp", "Time*"),
                   10: ("deletionGracePeriodSeconds", "int*"), 11: ("labels", "map:string"),
                   12: ("annotations", "map:string"), 13: ("ownerReferences", "[]OwnerReference"),
                   14: ("finalizers", "[]string")},
    "OwnerReference": {1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"),
                       5: ("apiVersion", "string"), 6: ("controller", "bool*"), 7: ("blockOwnerDeletion", "bool*")},
    "LabelSelector": {1: ("matchLabels", "map:string"), 2: ("matchExpressions", "[]LabelSelectorRequirement")},
    "LabelSelectorRequirement": {1: ("key", "string"), 2: ("operator", "string"), 3: ("values", "[]string")},
    "Deployment": {1: ("metadata", "ObjectMeta"), 2: ("spec", "DeploymentSpec"), 3: ("status", "Empty")},
    "DeploymentSpec": {1: ("replicas", "int*"), 2: ("selector", "LabelSelector*"), 3: ("template", "PodTemplateSpec"),
                       4: ("strategy", "DeploymentStrategy"), 5: ("minReadySeconds", "int"),
                       6: ("revisionHistoryLimit", "int*"), 7: ("paused", "bool"),
                       9: ("progressDeadlineSeconds", "int*")},
    "DeploymentStrategy": {1: ("type", "string"), 2: ("rollingUpdate", "RollingUpdateDeployment*")},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "IntOrString*"), 2: ("maxSurge", "IntOrString*")},
    "ReplicaSet": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ReplicaSetSpec"), 3: ("status", "Empty")},
    "ReplicaSetSpec": {1: ("replicas", "int*"), 2: ("selector", "LabelSelector*"), 3: ("template", "PodTemplateSpec"),
                       4: ("minReadySeconds", "int")},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "Pod": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec"), 3: ("status", "Empty")},
    "PodSpec": {1: ("volumes", "[]Volume"), 2: ("containers", "[]Container"), 3: ("restartPolicy", "string"),
                4: ("terminationGracePeriodSeconds", "int*"), 5: ("activeDeadlineSeconds", "int*"),
                6: ("dnsPolicy", "string"), 7: ("nodeSelector", "map:string"), 8: ("serviceAccountName", "string"),
                9: ("serviceAccount", "string"), 10: ("nodeName", "string"), 11: ("hostNetwork", "bool"),
                12: ("hostPID", "bool"), 13: ("hostIPC", "bool"), 14: ("securityContext", "PodSecurityContext*"),
                15: ("imagePullSecrets", "[]LocalObjectReference"), 16: ("hostname", "string"),
                17: ("subdomain", "string"), 19: ("schedulerName", "string"), 20: ("initContainers", "[]Container"),
                21: ("automountServiceAccountToken", "bool*"), 22: ("tolerations", "[]Toleration"),
                24: ("priorityClassName", "string"), 25: ("priority", "int*"), 27: ("shareProcessNamespace", "bool*"),
                29: ("runtimeClassName", "string*"), 30: ("enableServiceLinks", "bool*"),
                31: ("preemptionPolicy", "string*"), 35: ("setHostnameAsFQDN", "bool*"), 37: ("hostUsers", "bool*")},
    "Container": {1: ("name", "string"), 2: ("image", "string"), 3: ("command", "[]string"), 4: ("args", "[]string"),
                  5: ("workingDir", "string"), 6: ("ports", "[]ContainerPort"), 7: ("env", "[]EnvVar"),
                  8: ("resources", "ResourceRequirements"), 9: ("volumeMounts", "[]VolumeMount"),
                  10: ("livenessProbe", "Probe*"), 11: ("readinessProbe", "Probe*"),
                  13: ("terminationMessagePath", "string"), 14: ("imagePullPolicy", "string"),
                  15: ("securityContext", "SecurityContext*"), 16: ("stdin", "bool"), 17: ("stdinOnce", "bool"),
                  18: ("tty", "bool"), 19: ("envFrom", "[]EnvFromSource"), 20: ("terminationMessagePolicy", "string"),
                  22: ("startupProbe", "Probe*"), 24: ("restartPolicy", "string*")},
    "ContainerPort": {1: ("name", "string"), 2: ("hostPort", "int"), 3: ("containerPort", "int"),
                      4: ("protocol", "string"), 5: ("hostIP", "string")},
    "EnvVar": {1: ("name", "string"), 2: ("value", "string"), 3: ("valueFrom", "EnvVarSource*")},
    "EnvVarSource": {1: ("fieldRef", "ObjectFieldSelector*"), 3: ("configMapKeyRef", "KeySelector*"),
                     4: ("secretKeyRef", "SecretKeySelector*")},
    "ObjectFieldSelector": {1: ("apiVersion", "string"), 2: ("fieldPath", "string")},
    "KeySelector": {1: ("localObjectReference", "Inline"), 2: ("key", "string"), 3: ("optional", "bool*")},
    "SecretKeySelector": {1: ("localObjectReference", "Inline"), 2: ("key", "string"), 3: ("optional", "bool*")},
    "EnvFromSource": {1: ("prefix", "string"), 2: ("configMapRef", "RefOptional*"), 3: ("secretRef", "RefOptional*")},
    "RefOptional": {1: ("localObjectReference", "Inline"), 2: ("optional", "bool*")},
    "LocalObjectReference": {1: ("name", "string")},
    "ResourceRequirements": {1: ("limits", "map:Quantity"), 2: ("requests", "map:Quantity")},
    "VolumeMount": {1: ("name", "string"), 2: ("readOnly", "bool"), 3: ("mountPath", "string"),
                    4: ("subPath", "string"), 5: ("mountPropagation", "string*"), 6: ("subPathExpr", "string")},
    "Probe": {1: ("handler", "ProbeHandler-inline"), 2: ("initialDelaySeconds", "int"), 3: ("timeoutSeconds", "int"),
              4: ("periodSeconds", "int"), 5: ("successThreshold", "int"), 6: ("failureThreshold", "int"),
              7: ("terminationGracePeriodSeconds", "int*")},
    "ProbeHandler": {1: ("exec", "ExecAction*"), 2: ("httpGet", "HTTPGetAction*"), 3: ("tcpSocket", "TCPSocketAction*")},
    "ExecAction": {1: ("command", "[]string")},
    "HTTPGetAction": {1: ("path", "string"), 2: ("port", "IntOrString"), 3: ("host", "string"), 4: ("scheme", "string")},
    "TCPSocketAction": {1: ("port", "IntOrString"), 2: ("host", "string")},
    "SecurityContext": {1: ("capabilities", "Capabilities*"), 2: ("privileged", "bool*"),
                        4: ("runAsUser", "int*"), 5: ("runAsNonRoot", "bool*"), 6: ("readOnlyRootFilesystem", "bool*"),
                        7: ("allowPrivilegeEscalation", "bool*"), 8: ("runAsGroup", "int*"), 9: ("procMount", "string*"),
                        11: ("seccompProfile", "SeccompProfile*")},
    "PodSecurityContext": {2: ("runAsUser", "int*"), 3: ("runAsNonRoot", "bool*"), 4: ("supplementalGroups", "[]int"),
                           5: ("fsGroup", "int*"), 6: ("runAsGroup", "int*"), 9: ("seccompProfile", "SeccompProfile*")},
    "Capabilities": {1: ("add", "[]string"), 2: ("drop", "[]string")},
    "SeccompProfile": {1: ("type", "string"), 2: ("localhostProfile", "string*")},
    "Toleration": {1: ("key", "string"), 2: ("operator", "string"), 3: ("value", "string"), 4: ("effect", "string"),
                   5: ("tolerationSeconds", "int*")},
    "Volume": {1: ("name", "string"), 2: ("volumeSource", "VolumeSource-inline")},
    "VolumeSource": {1: ("hostPath", "HostPathVolumeSource*"), 2: ("emptyDir", "EmptyDirVolumeSource*"),
                     6: ("secret", "SecretVolumeSource*"), 19: ("configMap", "ConfigMapVolumeSource*")},
    "HostPathVolumeSource": {1: ("path", "string"), 2: ("type", "string*")},
    "EmptyDirVolumeSource": {1: ("medium", "string"), 2: ("sizeLimit", "Quantity*")},
    "SecretVolumeSource": {1: ("secretName", "string"), 2: ("items", "[]KeyToPath"), 3: ("defaultMode", "int*"),
                           4: ("optional", "bool*")},
    "ConfigMapVolumeSource": {1: ("localObjectReference", "Inline"), 2: ("items", "[]KeyToPath"),
                              3: ("defaultMode", "int*"), 4: ("optional", "bool*")},
    "KeyToPath": {1: ("key", "string"), 2: ("path", "string"), 3: ("mode", "int*")},
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec"), 3: ("status", "Empty")},
    "ServiceSpec": {1: ("ports", "[]ServicePort"), 2: ("selector", "map:string"), 3: ("clusterIP", "string"),
                    4: ("type", "string"), 5: ("externalIPs", "[]string"), 7: ("sessionAffinity", "string"),
                    8: ("loadBalancerIP", "string"), 9: ("loadBalancerSourceRanges", "[]string"),
                    10: ("externalName", "string"), 11: ("externalTrafficPolicy", "string"),
                    12: ("healthCheckNodePort", "int"), 13: ("publishNotReadyAddresses", "bool"),
                    17: ("ipFamilyPolicy", "string*"), 18: ("clusterIPs", "[]string"), 19: ("ipFamilies", "[]string"),
                    20: ("allocateLoadBalancerNodePorts", "bool*"), 21: ("loadBalancerClass", "string*"),
                    22: ("internalTrafficPolicy", "string*")},
    "ServicePort": {1: ("name", "string"), 2: ("protocol", "string"), 3: ("port", "int"),
                    4: ("targetPort", "IntOrString"), 5: ("nodePort", "int"), 6: ("appProtocol", "string*")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "map:string"), 3: ("binaryData", "map:bytes"),
                  4: ("immutable", "bool*")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "map:bytes"), 3: ("type", "string"),
               4: ("stringData", "map:string"), 5: ("immutable", "bool*")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec"), 3: ("status", "Empty")},
    "NamespaceSpec": {1: ("finalizers", "[]string")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta"), 2: ("secrets", "[]ObjectReference"),
                       3: ("imagePullSecrets", "[]LocalObjectReference"), 4: ("automountServiceAccountToken", "bool*")},
    "ObjectReference": {1: ("kind", "string"), 2: ("namespace", "string"), 3: ("name", "string"), 4: ("uid", "string"),
                        5: ("apiVersion", "string"), 6: ("resourceVersion", "string"), 7: ("fieldPath", "string")},
    "Role": {1: ("metadata", "ObjectMeta"), 2: ("rules", "[]PolicyRule")},
    "PolicyRule": {1: ("verbs", "[]string"), 2: ("apiGroups", "[]string"), 3: ("resources", "[]string"),
                   4: ("resourceNames", "[]string"), 5: ("nonResourceURLs", "[]string")},
    "RoleBinding": {1: ("metadata", "ObjectMeta"), 2: ("subjects", "[]Subject"), 3: ("roleRef", "RoleRef")},
    "Subject": {1: ("kind", "string"), 2: ("apiGroup", "string"), 3: ("name", "string"), 4: ("namespace", "string")},
    "RoleRef": {1: ("apiGroup", "string"), 2: ("kind", "string"), 3: ("name", "string")},
    "Lease": {1: ("metadata", "ObjectMeta"), 2: ("spec", "LeaseSpec")},
    "LeaseSpec": {1: ("holderIdentity", "string*"), 2: ("leaseDurationSeconds", "int*"), 5: ("leaseTransitions", "int*")},
    "Scale": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ScaleSpec"), 3: ("status", "Empty")},
    "ScaleSpec": {1: ("replicas", "int")},
    "DeleteOptions": {1: ("gracePeriodSeconds", "int*"), 2: ("preconditions", "Preconditions*"),
                      3: ("orphanDependents", "bool*"), 4: ("propagationPolicy", "string*"), 5: ("dryRun", "[]string")},
    "Preconditions": {1: ("uid", "string*"), 2: ("resourceVersion", "string*")},
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SelfSubjectAccessReviewSpec"),
                                3: ("status", "Empty")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes*"),
                                    2: ("nonResourceAttributes", "NonResourceAttributes*")},
    "ResourceAttributes": {1: ("namespace", "string"), 2: ("verb", "string"), 3: ("group", "string"),
                           4: ("version", "string"), 5: ("resource", "string"), 6: ("subresource", "string"),
                           7: ("name", "string")},
    "NonResourceAttributes": {1: ("path", "string"), 2: ("verb", "string")},
    "SelfSubjectRulesReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SelfSubjectRulesReviewSpec"),
                               3: ("status", "Empty")},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "string")},
    "SelfSubjectReview": {1: ("metadata", "ObjectMeta"), 2: ("status", "Empty")},
    "Empty": {},
}

_INLINE_NAME = {"ConfigMapVolumeSource": "LocalObjectReference", "KeySelector": "LocalObjectReference",
                "SecretKeySelector": "LocalObjectReference", "RefOptional": "LocalObjectReference"}


def _signed64(v):
    return v - (1 << 64) if v >= (1 << 63) else v


def _time(b):
    secs = nanos = 0
    for num, wt, v in fields(b):
        if num == 1:
            secs = _signed64(v)
        elif num == 2:
            nanos = v
    if secs == 0 and nanos == 0:
        return None
    import datetime
    return datetime.datetime.fromtimestamp(secs, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _intstr(b):
    typ = 0
    iv = 0
    sv = ""
    for num, wt, v in fields(b):
        if num == 1:
            typ = v
        elif num == 2:
            iv = _signed64(v) if v >= (1 << 63) else v
            if iv >= (1 << 31):
                iv -= 1 << 32
        elif num == 3:
            sv = v.decode()
    return sv if typ == 1 else iv


def _quantity(b):
    for num, wt, v in fields(b):
        if num == 1:
            return v.decode()
    return "0"


def decode_message(b, typ):
    sch = M.get(typ)
    if sch is None:
        raise ProtoError("no protobuf schema for %s" % typ)
    out = {}
    for num, wt, v in fields(b):
        f = sch.get(num)
        if f is None:
            continue   # a field the sandbox does not model: dropped
        name, t = f
        pointer = t.endswith("*")
        t = t.rstrip("*")
        if t.endswith("-inline"):
            out.update(decode_message(v, t[:-len("-inline")]))
            continue
        if t == "Inline":
            out.update(decode_message(v, _INLINE_NAME.get(typ, "LocalObjectReference")))
            continue
        if t.startswith("[]"):
            et = t[2:]
            if et == "int" and wt == 2:
                # packed
                i, vals = 0, []
                while i < len(v):
                    x, i = _varint(v, i)
                    vals.append(_signed64(x))
                out.setdefault(name, []).extend(vals)
            else:
                out.setdefault(name, []).append(_scalar(v, et, wt))
            continue
        if t.startswith("map:"):
            vt = t[4:]
            k = val = None
            for n2, w2, v2 in fields(v):
                if n2 == 1:
                    k = v2.decode()
                elif n2 == 2:
                    val = v2
            m = out.setdefault(name, {})
            if vt == "string":
                m[k or ""] = (val or b"").decode()
            elif vt == "bytes":
                m[k or ""] = base64.b64encode(val or b"").decode()
            elif vt == "Quantity":
                m[k or ""] = _quantity(val or b"")
            continue
        val = _scalar(v, t, wt)
        if not pointer and val in ("", 0, False) and not isinstance(val, dict) and t != "IntOrString":
            continue
        out[name] = val
    return out


def _scalar(v, t, wt):
    if t == "string":
        return v.decode()
    if t == "bytes":
        return base64.b64encode(v).decode()
    if t == "int":
        return _signed64(v)
    if t == "bool":
        return bool(v)
    if t == "Time":
        return _time(v)
    if t == "IntOrString":
        return _intstr(v)
    if t == "Quantity":
        return _quantity(v)
    return decode_message(v, t)


def decode(body):
    """Return the JSON-equivalent object of a k8s protobuf body."""
    if not body.startswith(MAGIC):
        raise ProtoError("provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]")
    api_version = kind = ""
    raw = b""
    for num, wt, v in fields(body[4:]):
        if num == 1:
            tm = decode_message(v, "TypeMeta")
            api_version, kind = tm.get("apiVersion", ""), tm.get("kind", "")
        elif num == 2:
            raw = v
    obj = {"kind": kind, "apiVersion": api_version}
    obj.update(decode_message(raw, kind))
    return obj
