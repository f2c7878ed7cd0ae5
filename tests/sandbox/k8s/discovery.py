"""Legacy JSON discovery (/api, /apis, /api/v1, /apis/<g>/<v>), /version and a minimal OpenAPI v3.

The OpenAPI v3 documents carry, per kind, the PATCH operation with its
x-kubernetes-group-version-kind and the fieldValidation query parameter: kubectl
then sends fieldValidation=Strict and leaves validation to the server (which
does it, see schema.py). They carry no component schemas and no PATCH request
body, so kubectl apply computes strategic merge patches from its compiled-in
types. /openapi/v2 answers 404 (kubectl only needs it when v3 is missing).
"""
import hashlib
import json

from . import resources as R

VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4",
    "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335",
    "gitTreeState": "clean",
    "buildDate": "2025-04-22T16:02:27Z",
    "goVersion": "go1.23.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_SUB_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "log": ["get"],
    "finalize": ["update"],
    "exec": ["create", "get"],
    "portforward": ["create", "get"],
    "eviction": ["create"],
}


def _hash(s):
    return hashlib.sha256(s.encode()).hexdigest()[:16]


def api_versions(server_address):
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def api_group_list():
    groups = []
    for g, v in R.groups():
        gv = {"groupVersion": "%s/%s" % (g, v), "version": v}
        groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group):
    for g, v in R.groups():
        if g == group:
            gv = {"groupVersion": "%s/%s" % (g, v), "version": v}
            return {"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv], "preferredVersion": gv}
    return None


def resource_list(group, version):
    rs = [r for r in R.ALL if r.group == group and r.version == version]
    if not rs:
        return None
    out = []
    for r in rs:
        verbs = list(r.verbs or R.VERBS)
        if r.plural == "namespaces":
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        e = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
             "verbs": verbs}
        if r.short:
            e["shortNames"] = r.short
        if r.categories:
            e["categories"] = r.categories
        e["storageVersionHash"] = _hash(r.api_version + r.kind)[:11]
        out.append(e)
        for sub in r.subresources:
            se = {"name": "%s/%s" % (r.plural, sub), "singularName": "", "namespaced": r.namespaced,
                  "kind": r.kind, "verbs": _SUB_VERBS[sub]}
            if sub == "scale":
                se.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            elif sub == "log":
                se["kind"] = "Pod"
            elif sub == "exec":
                se["kind"] = "PodExecOptions"
            elif sub == "portforward":
                se["kind"] = "PodPortForwardOptions"
            elif sub == "eviction":
                se.update({"group": "policy", "version": "v1", "kind": "Eviction"})
            out.append(se)
    gv = version if not group else "%s/%s" % (group, version)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}


# ---- OpenAPI v3 -----------------------------------------------------------------------

def _gv_path(group, version):
    return "api/%s" % version if not group else "apis/%s/%s" % (group, version)


def _gv_doc(group, version):
    paths = {}
    params = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
              for n in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")]
    for r in R.ALL:
        if r.group != group or r.version != version or r.verbs:
            continue
        base = "/" + _gv_path(group, version)
        item = base + ("/namespaces/{namespace}/%s/{name}" % r.plural if r.namespaced else "/%s/{name}" % r.plural)
        gvk = {"group": group, "version": version, "kind": r.kind}
        op = lambda verb: {"operationId": "%s%s" % (verb, r.kind), "x-kubernetes-action": verb,
                           "x-kubernetes-group-version-kind": gvk,
                           "parameters": params if verb in ("patch", "put", "post") else [],
                           "responses": {"200": {"description": "OK"}}}
        paths[item] = {"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}
        coll = base + ("/namespaces/{namespace}/%s" % r.plural if r.namespaced else "/%s" % r.plural)
        paths[coll] = {"get": op("list"), "post": op("post")}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
            "paths": paths, "components": {"schemas": {}}}


_DOCS = {}
_INDEX = None


def openapi_v3_index():
    global _INDEX
    if _INDEX is None:
        paths = {}
        gvs = [("", "v1")] + R.groups()
        for g, v in gvs:
            p = _gv_path(g, v)
            body = json.dumps(_gv_doc(g, v), separators=(",", ":")).encode()
            h = hashlib.sha512(body).hexdigest()[:128].upper()
            _DOCS[p] = (body, h)
            paths[p] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (p, h)}
        _INDEX = {"paths": paths}
    return _INDEX


def openapi_v3_doc(path):
    openapi_v3_index()
    return _DOCS.get(path)
