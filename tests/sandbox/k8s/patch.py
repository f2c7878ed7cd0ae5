"""JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.

Strategic merge uses the merge keys of the Kubernetes Go types (patchMergeKey /
patchStrategy tags): containers/initContainers/ephemeralContainers/volumes/env/
imagePullSecrets by name, container ports by containerPort, Service ports by
port, volumeMounts by mountPath, ownerReferences by uid, conditions by type;
finalizers merge as a set; volumes and Deployment strategy honour $retainKeys.
Directives: $patch (merge|replace|delete), $retainKeys, $setElementOrder/<f>,
$deleteFromPrimitiveList/<f>.
"""
import copy
import json

from . import errors as E
from . import schema   # _json_kind: the kind names Go's unmarshal errors use


class PatchError(Exception):
    pass


# ---- JSON patch ---------------------------------------------------------------------------

def _unescape(tok):
    return tok.replace("~1", "/").replace("~0", "~")


def _split(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError('JSON pointer must start with "/": %s' % path)
    return [_unescape(t) for t in path[1:].split("/")]


def _container(doc, toks, op, path):
    cur = doc
    for t in toks[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                i = int(t)
                cur = cur[i]
            except (ValueError, IndexError):
                raise PatchError('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))
        else:
            raise PatchError('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))
    return cur


def _get(doc, path):
    cur = doc
    for t in _split(path):
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError):
                raise KeyError(path)
        else:
            raise KeyError(path)
    return cur


def _add(doc, path, value, op="add"):
    toks = _split(path)
    if not toks:
        return value
    parent = _container(doc, toks, op, path)
    last = toks[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise PatchError("%s operation does not apply: doc is missing path: \"%s\": missing value" % (op, path))
            if i < 0 or i > len(parent):
                raise PatchError("add operation does not apply: doc is missing path: \"%s\": missing value" % path)
            parent.insert(i, value)
    else:
        raise PatchError('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))
    return doc


def _remove(doc, path, op="remove"):
    toks = _split(path)
    parent = _container(doc, toks, op, path)
    last = toks[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))
        return parent.pop(last)
    if isinstance(parent, list):
        try:
            i = int(last)
            if i < 0:
                raise IndexError
            return parent.pop(i)
        except (ValueError, IndexError):
            raise PatchError('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))
    raise PatchError('%s operation does not apply: doc is missing path: "%s": missing value' % (op, path))


def json_patch(doc, ops):
    if not isinstance(ops, list):
        raise E.bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    try:
        for o in ops:
            if not isinstance(o, dict):
                raise PatchError("invalid operation")
            kind = o.get("op")
            path = o.get("path")
            if kind not in ("add", "remove", "replace", "move", "copy", "test"):
                raise PatchError("Unexpected kind: %s" % kind)
            if not isinstance(path, str):
                raise PatchError("%s operation missing path" % kind)
            if kind == "add":
                if "value" not in o:
                    raise PatchError("add operation missing value")
                doc = _add(doc, path, copy.deepcopy(o["value"]))
            elif kind == "remove":
                _remove(doc, path)
            elif kind == "replace":
                if "value" not in o:
                    raise PatchError("replace operation missing value")
                try:
                    _get(doc, path)
                except KeyError:
                    raise PatchError("replace operation does not apply: doc is missing key: %s: missing value" % path)
                if path == "":
                    doc = copy.deepcopy(o["value"])
                else:
                    _remove(doc, path, "replace")
                    doc = _add(doc, path, copy.deepcopy(o["value"]), "replace")
            elif kind == "move":
                frm = o.get("from")
                v = _remove(doc, frm, "move")
                doc = _add(doc, path, v, "move")
            elif kind == "copy":
                frm = o.get("from")
                try:
                    v = copy.deepcopy(_get(doc, frm))
                except KeyError:
                    raise PatchError('copy operation does not apply: doc is missing from path: "%s": missing value' % frm)
                doc = _add(doc, path, v, "copy")
            elif kind == "test":
                try:
                    v = _get(doc, path)
                except KeyError:
                    v = None
                if v != o.get("value"):
                    raise PatchError("testing value %s failed: test failed" % path)
    except PatchError as e:
        raise E.ApiError(422, "Invalid", "the server rejected our request due to an error in our request",
                         {"causes": [{"reason": "FieldValueInvalid", "message": str(e), "field": "patch"}]})
    return doc


# ---- JSON merge patch ---------------------------------------------------------------------

def merge_patch(doc, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = merge_patch(out.get(k), v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ---- strategic merge patch ----------------------------------------------------------------

_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def list_strategy(ctx):
    """(strategy, mergeKey) for the list at field path ctx (tuple of field names)."""
    if not ctx:
        return None, None
    last = ctx[-1]
    parent = ctx[-2] if len(ctx) > 1 else None
    if last in _CONTAINER_LISTS:
        return "merge", "name"
    if last == "ports":
        if parent in _CONTAINER_LISTS:
            return "merge", "containerPort"
        if ctx[-2:] == ("spec", "ports"):
            return "merge", "port"
        return None, None
    if parent in _CONTAINER_LISTS:
        if last == "env":
            return "merge", "name"
        if last == "volumeMounts":
            return "merge", "mountPath"
        if last == "volumeDevices":
            return "merge", "devicePath"
        if last == "resizePolicy":
            return None, None
    if last == "volumes" and "spec" in ctx:
        return "merge", "name"
    if last == "imagePullSecrets":
        return "merge", "name"
    if last == "hostAliases":
        return "merge", "ip"
    if last == "topologySpreadConstraints":
        return "merge", "topologyKey"
    if last == "ownerReferences" and parent == "metadata":
        return "merge", "uid"
    if last == "finalizers" and parent == "metadata":
        return "merge", None
    if last == "conditions" and parent == "status":
        return "merge", "type"
    return None, None


def _retain_keys_field(ctx):
    return (ctx and ctx[-1] == "volumes") or ctx[-2:] == ("spec", "strategy")


def strategic_merge(doc, patch, ctx=()):
    if not isinstance(patch, dict):
        raise E.bad_request("json: cannot unmarshal %s into Go value of type map[string]interface {}" % schema._json_kind(patch))
    return _smp_map(doc if isinstance(doc, dict) else {}, patch, ctx)


def _smp_map(orig, patch, ctx):
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip({k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise E.bad_request("Unknown patch type: %s in map: %s" % (directive, json.dumps(patch)))
    out = copy.deepcopy(orig)
    retain = patch.get("$retainKeys")
    orders = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k[len("$setElementOrder/"):]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            f = k[len("$deleteFromPrimitiveList/"):]
            if isinstance(out.get(f), list) and isinstance(v, list):
                out[f] = [x for x in out[f] if x not in v]
            continue
        sub = ctx + (k,)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            r = _smp_map(out.get(k) if isinstance(out.get(k), dict) else {}, v, sub)
            if r is None:
                out.pop(k, None)
            else:
                out[k] = r
        elif isinstance(v, list):
            strategy, key = list_strategy(sub)
            if strategy == "merge" and isinstance(out.get(k), list):
                out[k] = _smp_list(out[k], v, sub, key)
            elif strategy == "merge":
                out[k] = _smp_list([], v, sub, key)
            else:
                out[k] = _strip(v)
        else:
            out[k] = v
    for f, order in orders.items():
        if isinstance(out.get(f), list) and isinstance(order, list):
            out[f] = _apply_order(out[f], order, list_strategy(ctx + (f,))[1])
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _smp_list(orig, patch, ctx, key):
    # list-level directives: an element {"$patch": "replace"} replaces the whole list
    if any(isinstance(e, dict) and e.get("$patch") == "replace" and len(e) == 1 for e in patch):
        return _strip([e for e in patch if not (isinstance(e, dict) and e.get("$patch") == "replace")])
    if key is None:
        out = list(orig)
        for e in patch:
            if e not in out:
                out.append(e)
        return out
    out = copy.deepcopy(orig)
    for e in patch:
        if not isinstance(e, dict):
            raise E.bad_request("unable to find api field in struct for the list element %r" % (e,))
        kv = e.get(key)
        if kv is None and e.get("$patch") != "delete":
            # the real server refuses elements without their merge key
            raise E.bad_request("map: %s does not contain declared merge key: %s" % (_go_map(e), key))
        idx = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == kv), None)
        if e.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(_strip(e))
        else:
            out[idx] = _smp_map(out[idx], e, ctx)
    return out


def _go_map(d):
    return "map[%s]" % " ".join("%s:%s" % (k, v) for k, v in sorted(d.items()))


def _apply_order(lst, order, key):
    def ident(e):
        return e.get(key) if (key and isinstance(e, dict)) else e
    pos = {}
    for i, o in enumerate(order):
        pos[json.dumps(ident(o) if isinstance(o, dict) else o, sort_keys=True)] = i
    indexed = list(enumerate(lst))
    indexed.sort(key=lambda ie: (pos.get(json.dumps(ident(ie[1]), sort_keys=True), len(order) + ie[0])))
    return [e for _, e in indexed]


def _strip(v):
    """Remove directives from newly added content."""
    if isinstance(v, dict):
        if v.get("$patch") == "delete":
            return None
        return {k: _strip(x) for k, x in v.items()
                if not k.startswith("$setElementOrder/") and not k.startswith("$deleteFromPrimitiveList/")
                and k not in ("$patch", "$retainKeys")}
    if isinstance(v, list):
        return [_strip(x) for x in v if not (isinstance(x, dict) and x.get("$patch") == "delete")]
    return v
