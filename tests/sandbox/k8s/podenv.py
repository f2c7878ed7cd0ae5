"""A container's environment as the kubelet builds it (pkg/kubelet/kubelet_pods.go
makeEnvironmentVariables): envFrom sources first, in order, every key with its prefix
(kubelets since 1.30 no longer skip keys that are not C-style names: KEP-4369, relaxed
environment variable names); then env in order, each entry overriding; `value` expanded with $(VAR)
over what is defined so far (third_party/forked/golang/expansion: $$ is $, an
undefined reference is kept as written); valueFrom never expanded; optional refs to a
missing ConfigMap, Secret or key leave the variable unset, required ones fail the
container (CreateContainerConfigError); resourceFieldRef is ceil(quantity / divisor),
a missing limit defaulting to the node's allocatable. Secret bytes are kept exactly
(decoded with surrogateescape, so the process gets the same bytes)."""
import base64
import math
import re
from fractions import Fraction

_SUFFIX = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
           "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
           "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
           "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60)}


def expand(value, lookup):
    """On bytes, as Go's expansion.Expand: string(input[0]) turns a byte after $ into the
    code point of that value, so a non-ASCII byte there comes out re-encoded."""
    enc = lambda t: t.encode("utf-8", "surrogateescape")
    data, out, i = enc(value), [], 0
    n = len(data)
    while i < n:
        c = data[i:i + 1]
        if c == b"$" and i + 1 < n:
            nxt = data[i + 1]
            if nxt == 0x24:
                out.append(b"$")
                i += 2
            elif nxt == 0x28:
                close = data.find(b")", i + 2)
                if close < 0:
                    out.append(b"$(")
                    i += 2
                else:
                    name = data[i + 2:close].decode("utf-8", "surrogateescape")
                    v = lookup(name)
                    out.append(enc(v) if v is not None else b"$(" + data[i + 2:close] + b")")
                    i = close + 1
            else:
                out.append(b"$" + chr(nxt).encode("utf-8"))
                i += 2
        else:
            out.append(c)
            i += 1
    return b"".join(out).decode("utf-8", "surrogateescape")


def quantity(s):
    """resource.Quantity as an exact Fraction."""
    m = re.match(r"^([+-]?[0-9.]+)(?:([eE][+-]?[0-9]+)|([a-zA-Z]*))$", str(s))
    if not m:
        raise ValueError("bad quantity %r" % s)
    v = Fraction(m.group(1))
    if m.group(2):
        return v * Fraction(10) ** int(m.group(2)[1:])
    return v * _SUFFIX[m.group(3)]


def _ceil_scaled(q, scale):
    return math.ceil(q * scale)


def resource_value(container, ref, allocatable):
    kind, _, name = (ref.get("resource") or "").partition(".")
    if kind not in ("limits", "requests"):
        raise ValueError("unsupported container resource : %s" % ref.get("resource"))
    res = (container.get("resources") or {}).get(kind) or {}
    q = res.get(name)
    if q is None and kind == "limits":
        q = (allocatable or {}).get(name, "0")
    q = quantity(q if q is not None else "0")
    div = quantity(ref.get("divisor") or "1")
    if div == 0:
        div = Fraction(1)
    scale = 1000 if name == "cpu" else 1   # MilliValue for cpu, Value otherwise (both round up)
    return str(math.ceil(float(_ceil_scaled(q, scale)) / float(_ceil_scaled(div, scale))))


def _data(kind, obj):
    data = obj.get("data") or {}
    if kind == "secrets":
        return {k: base64.b64decode(v).decode("utf-8", "surrogateescape") for k, v in data.items()}
    return dict(data)


def _source(store, namespace, kind, ref, config_error):
    """The ConfigMap or Secret a reference names; None when it is missing and optional."""
    obj = store.get(kind, namespace, ref.get("name"))
    if obj is None and not ref.get("optional"):
        raise config_error('%s "%s" not found' % ("configmap" if kind == "configmaps" else "secret", ref.get("name")))
    return obj


def container_env(store, namespace, pod, container, field, allocatable, config_error):
    """(env dict, warnings). field(ref) resolves a fieldRef; allocatable() the node's;
    config_error(msg) is raised for what fails the container."""
    env, warnings = {}, []
    for ef in container.get("envFrom") or []:
        prefix = ef.get("prefix") or ""
        for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = ef.get(key)
            if ref is None:
                continue
            obj = _source(store, namespace, kind, ref, config_error)
            if obj is None:
                continue
            for k, v in _data(kind, obj).items():
                env[prefix + k] = v
    for e in container.get("env") or []:
        name = e.get("name")
        value = e.get("value") or ""
        vf = e.get("valueFrom")
        if value:
            value = expand(value, env.get)
        elif vf:
            if vf.get("fieldRef"):
                value = field(vf["fieldRef"])
            elif vf.get("resourceFieldRef"):
                ref = vf["resourceFieldRef"]
                target = container
                if ref.get("containerName"):
                    target = next((c for c in (pod.get("spec") or {}).get("containers") or []
                                   if c.get("name") == ref["containerName"]), container)
                value = resource_value(target, ref, allocatable())
            elif vf.get("configMapKeyRef") or vf.get("secretKeyRef"):
                kind, ref = (("configmaps", vf["configMapKeyRef"]) if vf.get("configMapKeyRef")
                             else ("secrets", vf["secretKeyRef"]))
                obj = _source(store, namespace, kind, ref, config_error)
                if obj is None:
                    continue
                data = _data(kind, obj)
                if ref.get("key") not in data:
                    if ref.get("optional"):
                        continue
                    raise config_error("couldn't find key %s in %s %s/%s" % (ref.get("key"), "ConfigMap" if kind ==
                                       "configmaps" else "Secret", namespace, ref.get("name")))
                value = data[ref["key"]]
        env[name] = value
    return env, warnings
