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


def forbidden(store, user, verb, group, resource, subresource, namespace, name):
    reason = authorize(store, user, verb, group, resource, subresource, namespace, name)
    if reason is None:
        return None
    return E.forbidden(resource, group, name, reason)
