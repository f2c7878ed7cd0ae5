"""The kinds the sandbox serves: plural -> metadata used by store, discovery and auth."""


class Res:
    def __init__(self, plural, kind, group, version, namespaced, short=(), singular=None,
                 subresources=(), categories=(), generation=False, return_deleted=False, verbs=None):
        self.plural = plural
        self.kind = kind
        self.group = group
        self.version = version
        self.namespaced = namespaced
        self.short = list(short)
        self.singular = singular or kind.lower()
        self.subresources = list(subresources)
        self.categories = list(categories)
        self.generation = generation          # metadata.generation tracked (bumped on spec change)
        self.return_deleted = return_deleted  # DELETE answers with the object, not a Status
        self.verbs = verbs                    # None: every verb; else a virtual, create-only kind

    @property
    def api_version(self):
        return self.version if not self.group else "%s/%s" % (self.group, self.version)

    @property
    def group_version(self):
        return self.api_version


VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

_ALL = [
    Res("namespaces", "Namespace", "", "v1", False, ["ns"], subresources=["status", "finalize"]),
    Res("nodes", "Node", "", "v1", False, ["no"], subresources=["status"]),
    Res("services", "Service", "", "v1", True, ["svc"], subresources=["status"], categories=["all"],
        return_deleted=True),
    Res("endpoints", "Endpoints", "", "v1", True, ["ep"], singular="endpoints"),
    Res("pods", "Pod", "", "v1", True, ["po"], subresources=["status", "log", "exec", "portforward", "eviction"], categories=["all"],
        return_deleted=True),
    Res("configmaps", "ConfigMap", "", "v1", True, ["cm"]),
    Res("secrets", "Secret", "", "v1", True),
    Res("serviceaccounts", "ServiceAccount", "", "v1", True, ["sa"], return_deleted=True),
    Res("events", "Event", "", "v1", True, ["ev"]),
    Res("deployments", "Deployment", "apps", "v1", True, ["deploy"], subresources=["status", "scale"],
        categories=["all"], generation=True),
    Res("replicasets", "ReplicaSet", "apps", "v1", True, ["rs"], subresources=["status", "scale"],
        categories=["all"], generation=True),
    Res("endpointslices", "EndpointSlice", "discovery.k8s.io", "v1", True),
    Res("leases", "Lease", "coordination.k8s.io", "v1", True),
    Res("selfsubjectaccessreviews", "SelfSubjectAccessReview", "authorization.k8s.io", "v1", False,
        verbs=["create"]),
    Res("selfsubjectrulesreviews", "SelfSubjectRulesReview", "authorization.k8s.io", "v1", False,
        verbs=["create"]),
    Res("selfsubjectreviews", "SelfSubjectReview", "authentication.k8s.io", "v1", False, verbs=["create"]),
    Res("roles", "Role", "rbac.authorization.k8s.io", "v1", True),
    Res("rolebindings", "RoleBinding", "rbac.authorization.k8s.io", "v1", True),
]

BY_PLURAL = {r.plural: r for r in _ALL}
ALL = list(_ALL)


def lookup(group, version, plural):
    r = BY_PLURAL.get(plural)
    if r is None or r.group != group or r.version != version:
        return None
    return r


def get(plural):
    r = BY_PLURAL.get(plural)
    if r is None:
        raise KeyError("unknown resource %r" % plural)
    return r


def groups():
    """Ordered named groups: [(group, version)]."""
    seen = []
    for r in _ALL:
        if r.group and (r.group, r.version) not in seen:
            seen.append((r.group, r.version))
    return seen
