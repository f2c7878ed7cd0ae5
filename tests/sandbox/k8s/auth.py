"""Bearer-token authentication and RBAC authorization (Roles/RoleBindings)."""
import hmac

from . import errors as E


class Authenticator:
    def __init__(self, tokens):
        # tokens: {token: user}
        self._tokens = dict(tokens)

    def user(self, header):
        if not header:
            return None
        parts = header.split(" ", 1)
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return None
        tok = parts[1].strip()
        for t, u in self._tokens.items():
            if hmac.compare_digest(t.encode(), tok.encode()):
                return u
        return None


ADMINS = {"admin"}


def groups(user):
    """The groups a token user is in (admin: system:masters, as a cluster-admin token's user)."""
    return (["system:masters"] if user in ADMINS else []) + ["system:authenticated"]


def self_review(user):
    """SelfSubjectReview (authentication.k8s.io/v1): who the caller is (kubectl auth whoami)."""
    return {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "status": {"userInfo": {"username": user, "groups": groups(user)}}}


def _rule_allows(rule, verb, group, resource, subresource, name):
    verbs = rule.get("verbs") or []
    if "*" not in verbs and verb not in verbs:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and group not in groups:
        return False
    combined = resource + ("/" + subresource if subresource else "")
    ok = False
    for r in rule.get("resources") or []:
        if r == "*" or r == combined:
            ok = True
            break
        if subresource and r == "*/" + subresource:
            ok = True
            break
    if not ok:
        return False
    names = rule.get("resourceNames") or []
    if names and name not in names:
        return False
    return True


def authorize(store, user, verb, group, resource, subresource, namespace, name):
    """Return None if allowed, else the RBAC denial reason text."""
    if user in ADMINS:
        return None
    if namespace:
        for rb in store.list("rolebindings", namespace):
            if not any(s.get("kind") == "User" and s.get("name") == user for s in rb.get("subjects") or []):
                continue
            ref = rb.get("roleRef") or {}
            if ref.get("kind") != "Role":
                continue
            role = store.get("roles", namespace, ref.get("name"))
            if role is None:
                continue
            for rule in role.get("rules") or []:
                if _rule_allows(rule, verb, group, resource, subresource, name):
                    return None
    combined = resource + ("/" + subresource if subresource else "")
    where = ('in the namespace "%s"' % namespace) if namespace else "at the cluster scope"
    return 'User "%s" cannot %s resource "%s" in API group "%s" %s' % (user, verb, combined, group, where)


def access_review(store, user, review):
    """SelfSubjectAccessReview: fill status.allowed (and the RBAC reason) for the caller."""
    spec = review.get("spec") or {}
    ra = spec.get("resourceAttributes")
    out = {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
           "metadata": {"creationTimestamp": None}, "spec": spec}
    if ra is None:
        # non-resource URLs: discovery, version and health are open to every authenticated user
        path = (spec.get("nonResourceAttributes") or {}).get("path", "")
        ok = user in ADMINS or path.startswith(("/api", "/apis", "/version", "/openapi", "/healthz", "/readyz",
                                                 "/livez"))
        out["status"] = {"allowed": ok}
        return out
    if user in ADMINS:
        out["status"] = {"allowed": True}
        return out
    reason = authorize(store, user, ra.get("verb", ""), ra.get("group", ""), ra.get("resource", ""),
                       ra.get("subresource", ""), ra.get("namespace", ""), ra.get("name", ""))
    out["status"] = {"allowed": reason is None}
    if reason is None:
        out["status"]["reason"] = "RBAC: allowed by a RoleBinding in namespace %s" % ra.get("namespace", "")
    return out


_BASIC_RULES = [
    {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
     "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
]
_DISCOVERY = {"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                                   "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]}


def rules_review(store, user, review):
    """SelfSubjectRulesReview: the caller's rules in spec.namespace."""
    spec = review.get("spec") or {}
    ns = spec.get("namespace") or ""
    out = {"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
           "metadata": {"creationTimestamp": None}, "spec": spec}
    if user in ADMINS:
        out["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                         "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
        return out
    rules = list(_BASIC_RULES)
    if ns:
        for rb in store.list("rolebindings", ns):
            if not any(s.get("kind") == "User" and s.get("name") == user for s in rb.get("subjects") or []):
                continue
            ref = rb.get("roleRef") or {}
            role = store.get("roles", ns, ref.get("name")) if ref.get("kind") == "Role" else None
            for r in (role or {}).get("rules") or []:
                rules.append({k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if r.get(k)})
    out["status"] = {"resourceRules": rules, "nonResourceRules": [_DISCOVERY], "incomplete": False}
    return out


def forbidden(store, user, verb, group, resource, subresource, namespace, name):
    reason = authorize(store, user, verb, group, resource, subresource, namespace, name)
    if reason is None:
        return None
    return E.forbidden(resource, group, name, reason)
