"""Label and field selectors (apimachinery pkg/labels, pkg/fields semantics).

Not named selectors.py: that would shadow the standard library module for any
script run from this directory."""
import re

from . import errors

_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class Requirement:
    def __init__(self, key, op, values=()):
        self.key, self.op, self.values = key, op, list(values)

    def matches(self, labels):
        has = self.key in labels
        v = labels.get(self.key)
        op = self.op
        if op in ("=", "==", "in"):
            return has and v in self.values
        if op in ("!=", "notin"):
            return not has or v not in self.values
        if op == "exists":
            return has
        if op == "!":
            return not has
        if op in ("gt", "lt"):
            if not has:
                return False
            try:
                lv = int(v)
            except ValueError:
                return False
            n = int(self.values[0])
            return lv > n if op == "gt" else lv < n
        return False


class Selector:
    def __init__(self, reqs):
        self.reqs = reqs

    def matches(self, labels):
        labels = labels or {}
        return all(r.matches(labels) for r in self.reqs)

    def empty(self):
        return not self.reqs


EVERYTHING = Selector([])

_TOKEN_RE = re.compile(r"\s*(\(|\)|,|==|=|!=|!|[^\s(),=!<>]+|>|<)")


def _tokens(s):
    pos, out = 0, []
    s = s.rstrip()
    while pos < len(s):
        m = _TOKEN_RE.match(s, pos)
        if not m:
            raise ValueError("unable to parse requirement: found '%s', expected: identifier" % s[pos:].strip())
        out.append(m.group(1))
        pos = m.end()
    return out


def parse_label_selector(s):
    """Parse a selector string; raises ValueError with a labels.Parse-like message."""
    if s is None:
        return EVERYTHING
    toks = _tokens(s)
    reqs = []
    i = 0

    def peek(j=0):
        return toks[i + j] if i + j < len(toks) else ""

    while i < len(toks):
        t = peek()
        if t == "!":
            i += 1
            key = peek()
            if not key or key in "(),=!":
                raise ValueError("unable to parse requirement: found '%s', expected: identifier" % key)
            i += 1
            _check_key(key)
            reqs.append(Requirement(key, "!"))
        else:
            key = t
            if key in ("(", ")", ",", "=", "==", "!="):
                raise ValueError("unable to parse requirement: found '%s', expected: !, identifier, or 'end of string'" % key)
            _check_key(key)
            i += 1
            op = peek()
            if op in ("", ","):
                reqs.append(Requirement(key, "exists"))
            elif op in ("=", "==", "!="):
                i += 1
                val = peek()
                if val in (",", ""):
                    val = ""
                else:
                    if val in ("(", ")", "=", "==", "!="):
                        raise ValueError("unable to parse requirement: found '%s', expected: identifier" % val)
                    i += 1
                _check_value(key, val)
                reqs.append(Requirement(key, op, [val]))
            elif op in ("in", "notin"):
                i += 1
                if peek() != "(":
                    raise ValueError("unable to parse requirement: found '%s', expected: '('" % peek())
                i += 1
                vals, cur, seen = [], None, False
                while True:
                    v = peek()
                    if v == "":
                        raise ValueError("unable to parse requirement: found '', expected: ',', ')' or identifier")
                    i += 1
                    if v == ")":
                        if seen or cur is not None:
                            vals.append(cur or "")
                        break
                    if v == ",":
                        vals.append(cur or "")
                        cur, seen = None, True
                        continue
                    if cur is not None or v in ("(", "=", "==", "!=", "!"):
                        raise ValueError("unable to parse requirement: found '%s', expected: ',', or ')'" % v)
                    cur = v
                if not vals:
                    raise ValueError("unable to parse requirement: values: Invalid value: \"\": for 'in', 'notin' operators, values set can't be empty")
                for v in vals:
                    _check_value(key, v)
                reqs.append(Requirement(key, op, vals))
            elif op in (">", "<"):
                i += 1
                val = peek()
                i += 1
                if not re.match(r"^-?\d+$", val or ""):
                    raise ValueError("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer")
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", [val]))
            else:
                raise ValueError("unable to parse requirement: found '%s', expected: in, notin, =, ==, !=, gt, lt" % op)
        if i < len(toks):
            if peek() != ",":
                raise ValueError("found '%s', expected: ',' or 'end of string'" % peek())
            i += 1
            if i >= len(toks):
                raise ValueError("found '', expected: identifier after ','")
    return Selector(reqs)


def _check_key(key):
    from . import validation
    msgs = validation.label_key_errors(key)
    if msgs:
        raise ValueError('unable to parse requirement: key: Invalid value: %s: %s'
                         % (errors.go_quote(key), "; ".join(msgs)))


def _check_value(key, val):
    from . import validation
    msgs = validation.label_value_errors(val)
    if msgs:
        raise ValueError('unable to parse requirement: values[0][%s]: Invalid value: %s: %s'
                         % (key, errors.go_quote(val), "; ".join(msgs)))


def from_dict(d):
    return Selector([Requirement(k, "=", [v]) for k, v in sorted((d or {}).items())])


def from_label_selector(ls):
    """metav1.LabelSelector -> Selector. None matches nothing; {} matches everything."""
    if ls is None:
        return None
    reqs = [Requirement(k, "=", [v]) for k, v in sorted((ls.get("matchLabels") or {}).items())]
    for e in ls.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(e.get("operator"))
        if op is None:
            raise ValueError("%q is not a valid label selector operator" % e.get("operator"))
        reqs.append(Requirement(e.get("key"), op, e.get("values") or []))
    return Selector(reqs)


def coerce(sel):
    if sel is None:
        return EVERYTHING
    if isinstance(sel, Selector):
        return sel
    if isinstance(sel, dict):
        return from_dict(sel)
    return parse_label_selector(sel)


# ---- field selectors -------------------------------------------------------------------

_POD_FIELDS = {
    "metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace",
    "spec.nodeName": "spec.nodeName", "spec.restartPolicy": "spec.restartPolicy",
    "spec.schedulerName": "spec.schedulerName", "spec.serviceAccountName": "spec.serviceAccountName",
    "spec.hostNetwork": "spec.hostNetwork", "status.phase": "status.phase",
    "status.podIP": "status.podIP", "status.podIPs": "status.podIP",
    "status.nominatedNodeName": "status.nominatedNodeName",
}
_EVENT_FIELDS = {
    "metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace",
    "involvedObject.kind": "involvedObject.kind", "involvedObject.namespace": "involvedObject.namespace",
    "involvedObject.name": "involvedObject.name", "involvedObject.uid": "involvedObject.uid",
    "involvedObject.apiVersion": "involvedObject.apiVersion",
    "involvedObject.resourceVersion": "involvedObject.resourceVersion",
    "involvedObject.fieldPath": "involvedObject.fieldPath", "reason": "reason",
    "reportingComponent": "reportingComponent", "source": "source.component", "type": "type",
}
CUSTOM_FIELDS = {
    "pods": _POD_FIELDS,
    "events": _EVENT_FIELDS,
    "secrets": {"metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace", "type": "type"},
    "namespaces": {"metadata.name": "metadata.name", "status.phase": "status.phase"},
    "replicasets": {"metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace",
                    "status.replicas": "status.replicas"},
}


class FieldSelector:
    def __init__(self, reqs):
        self.reqs = reqs  # [(path, op, value)]

    def matches(self, obj):
        for path, op, value in self.reqs:
            cur = obj
            for part in path.split("."):
                cur = cur.get(part) if isinstance(cur, dict) else None
            if cur is None:
                cur = ""
            if isinstance(cur, bool):
                cur = "true" if cur else "false"
            cur = str(cur)
            if (op == "=") != (cur == value):
                return False
        return True

    def single_name(self):
        for path, op, value in self.reqs:
            if path == "metadata.name" and op == "=":
                return value
        return None


def parse_field_selector(s, resource):
    """Parse `a=b,c!=d`; raises errors.ApiError 400 like the apiserver."""
    if not s:
        return FieldSelector([])
    reqs = []
    for part in _split_unescaped(s):
        part = part.strip()
        if not part:
            continue
        for op in ("!=", "==", "="):
            idx = part.find(op)
            if idx >= 0:
                break
        else:
            raise errors.bad_request("invalid selector: '%s'; can't understand '%s'" % (s, part))
        label, value = part[:idx].strip(), part[idx + len(op):]
        value = value.replace("\\,", ",").replace("\\=", "=").replace("\\\\", "\\")
        custom = CUSTOM_FIELDS.get(resource)
        if custom is not None:
            if label not in custom:
                raise errors.bad_request("field label not supported: %s" % label)
            path = custom[label]
        else:
            if label not in ("metadata.name", "metadata.namespace"):
                raise errors.bad_request('"%s" is not a known field selector: only "metadata.name", "metadata.namespace"' % label)
            path = label
        reqs.append((path, "!=" if op == "!=" else "=", value))
    return FieldSelector(reqs)


def _split_unescaped(s):
    out, cur, esc = [], [], False
    for ch in s:
        if esc:
            cur.append("\\" + ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out
