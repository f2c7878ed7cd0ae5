#!/usr/bin/env python3
"""Raw error shapes with curl (issue 3, acceptance 2): full Status bodies as a real API server sends them."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apilib  # noqa: E402
import tap  # noqa: E402

SB = None
NS = "/api/v1/namespaces/default"
APPS = "/apis/apps/v1/namespaces/default"

DNS1123_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                 "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1123_SUB = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
               "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
               "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
DNS1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
           "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
           "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
               "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
               "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
NAME_PART = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
             "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
             "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")


def setUpModule():
    global SB
    SB = apilib.Sandbox().start()
    SB.admin.create(APPS + "/deployments", apilib.deployment("web"))
    SB.admin.create(NS + "/services", {"metadata": {"name": "web"},
                                       "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})


def tearDownModule():
    SB.stop()


def status(code, reason, message, details=None):
    b = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
         "reason": reason}
    if details is not None:
        b["details"] = details
    b["code"] = code
    return b


def invalid(kind, group, name, causes):
    qk = kind + ("." + group if group else "")
    msgs = ["%s: %s" % (f, m) for r, m, f in causes]
    text = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    d = {"name": name}
    if group:
        d["group"] = group
    d["kind"] = kind
    d["causes"] = [{"reason": r, "message": m, "field": f} for r, m, f in causes]
    return status(422, "Invalid", '%s "%s" is invalid: %s' % (qk, name, text), d)


def pod(name, **sc):
    c = {"name": "c", "image": "sandbox/echo:1"}
    if sc:
        c["securityContext"] = sc
    return {"metadata": {"name": name}, "spec": {"containers": [c]}}


class Errors(unittest.TestCase):
    def check(self, method, path, body, code, want, token="admin", ctype="application/json"):
        got_code, got = SB.curl(method, path, body, token=token, ctype=ctype)
        self.assertEqual((got_code, got), (code, want))

    def test_401(self):
        "401 Unauthorized for a wrong and for a missing token"
        want = status(401, "Unauthorized", "Unauthorized")
        self.check("GET", NS + "/services", None, 401, want, token="not-a-token")
        self.check("GET", "/api", None, 401, want, token="")

    def test_403(self):
        "403 Forbidden for the restricted user, with the RBAC message"
        self.check("GET", NS + "/services/web", None, 403, status(
            403, "Forbidden", 'services "web" is forbidden: User "restricted" cannot get resource "services" in API '
            'group "" in the namespace "default"', {"name": "web", "kind": "services"}), token="restricted")
        self.check("GET", APPS + "/deployments", None, 403, status(
            403, "Forbidden", 'deployments.apps is forbidden: User "restricted" cannot list resource "deployments" in '
            'API group "apps" in the namespace "default"', {"group": "apps", "kind": "deployments"}), token="restricted")

    def test_404(self):
        "404 NotFound for a missing object and for an unknown namespace on create"
        self.check("GET", APPS + "/deployments/nope", None, 404, status(
            404, "NotFound", 'deployments.apps "nope" not found', {"name": "nope", "group": "apps", "kind": "deployments"}))
        self.check("POST", "/api/v1/namespaces/nope/configmaps", {"metadata": {"name": "x"}}, 404, status(
            404, "NotFound", 'namespaces "nope" not found', {"name": "nope", "kind": "namespaces"}))

    def test_409_already_exists(self):
        "409 AlreadyExists"
        self.check("POST", NS + "/services", {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}, 409,
                   status(409, "AlreadyExists", 'services "web" already exists', {"name": "web", "kind": "services"}))

    def test_409_conflict(self):
        "409 Conflict for a stale resourceVersion"
        cm = SB.admin.create(NS + "/configmaps", {"metadata": {"name": "cf"}, "data": {"a": "1"}})
        cm["data"]["a"] = "2"
        st, _, _ = SB.admin.request("PUT", NS + "/configmaps/cf", cm)
        self.assertEqual(st, 200)
        self.check("PUT", NS + "/configmaps/cf", cm, 409, status(
            409, "Conflict", 'Operation cannot be fulfilled on configmaps "cf": the object has been modified; please '
            'apply your changes to the latest version and try again', {"name": "cf", "kind": "configmaps"}))

    def test_400_wrong_type(self):
        "400 BadRequest for a wrong JSON type"
        d = apilib.deployment("typed")
        d["spec"]["replicas"] = "3"
        self.check("POST", APPS + "/deployments", d, 400, status(
            400, "BadRequest", 'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal '
            'string into Go struct field DeploymentSpec.spec.replicas of type int32'))
        self.check("POST", NS + "/services", {"metadata": {"name": "t"}, "spec": {"ports": "80"}}, 400, status(
            400, "BadRequest", 'Service in version "v1" cannot be handled as a Service: json: cannot unmarshal string '
            'into Go struct field ServiceSpec.spec.ports of type []v1.ServicePort'))

    def test_415_patch_type(self):
        "415 for an unsupported patch content type (server-side apply is not served)"
        code, body = SB.curl("PATCH", NS + "/configmaps/cf?fieldManager=x", "{}", ctype="application/apply-patch+yaml")
        self.assertEqual(code, 415)
        self.assertEqual(body["reason"], "UnsupportedMediaType")


class Invalid(unittest.TestCase):
    maxDiff = None

    def check(self, method, path, body, want):
        got_code, got = SB.curl(method, path, body)
        self.assertEqual((got_code, got), (422, want))

    def test_missing_containers(self):
        "422: pod without containers"
        self.check("POST", NS + "/pods", {"metadata": {"name": "p"}, "spec": {}}, invalid("Pod", "", "p", [
            ("FieldValueRequired", "Required value", "spec.containers")]))

    def test_missing_image(self):
        "422: container without image"
        d = apilib.deployment("noimg")
        del d["spec"]["template"]["spec"]["containers"][0]["image"]
        self.check("POST", APPS + "/deployments", d, invalid("Deployment", "apps", "noimg", [
            ("FieldValueRequired", "Required value", "spec.template.spec.containers[0].image")]))

    def test_service_ports(self):
        "422: Service without ports, and with port 0"
        self.check("POST", NS + "/services", {"metadata": {"name": "np"}, "spec": {"selector": {"a": "b"}}},
                   invalid("Service", "", "np", [("FieldValueRequired", "Required value", "spec.ports")]))
        self.check("POST", NS + "/services", {"metadata": {"name": "p0"}, "spec": {"ports": [{"port": 0, "targetPort": 80}]}},
                   invalid("Service", "", "p0", [("FieldValueInvalid",
                                                  "Invalid value: 0: must be between 1 and 65535, inclusive",
                                                  "spec.ports[0].port")]))

    def test_names(self):
        "422: DNS-1035 Service names, DNS-1123 subdomain names, DNS-1123 label Namespace names"
        self.check("POST", NS + "/services", {"metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}},
                   invalid("Service", "", "1web", [("FieldValueInvalid", 'Invalid value: "1web": ' + DNS1035,
                                                    "metadata.name")]))
        self.check("POST", NS + "/configmaps", {"metadata": {"name": "Bad_Name"}},
                   invalid("ConfigMap", "", "Bad_Name", [("FieldValueInvalid", 'Invalid value: "Bad_Name": ' + DNS1123_SUB,
                                                         "metadata.name")]))
        self.check("POST", "/api/v1/namespaces", {"metadata": {"name": "a.b"}},
                   invalid("Namespace", "", "a.b", [("FieldValueInvalid", 'Invalid value: "a.b": ' + DNS1123_LABEL,
                                                    "metadata.name")]))

    def test_labels(self):
        "422: invalid label key and value"
        self.check("POST", NS + "/configmaps", {"metadata": {"name": "l", "labels": {"bad key": "ok", "k": "-v"}}},
                   invalid("ConfigMap", "", "l", [
                       ("FieldValueInvalid", 'Invalid value: "bad key": ' + NAME_PART, "metadata.labels"),
                       ("FieldValueInvalid", 'Invalid value: "-v": ' + LABEL_VALUE, "metadata.labels")]))

    def test_selector_mismatch(self):
        "422: Deployment selector that does not match the template labels"
        d = apilib.deployment("mm")
        d["spec"]["template"]["metadata"]["labels"] = {"app": "other", "tier": "x"}
        self.check("POST", APPS + "/deployments", d, invalid("Deployment", "apps", "mm", [
            ("FieldValueInvalid", 'Invalid value: map[string]string{"app":"other", "tier":"x"}: `selector` does not '
             'match template `labels`', "spec.template.metadata.labels")]))

    def test_immutable_selector(self):
        "422: changing a Deployment selector"
        cur = SB.admin.get(APPS + "/deployments/web")
        cur["spec"]["selector"] = {"matchLabels": {"app": "web", "v": "2"}}
        cur["spec"]["template"]["metadata"]["labels"] = {"app": "web", "v": "2"}
        self.check("PUT", APPS + "/deployments/web", cur, invalid("Deployment", "apps", "web", [
            ("FieldValueInvalid", 'Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web", "v":"2"}, '
             'MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable', "spec.selector")]))

    def test_immutable_cluster_ip(self):
        "422: changing a Service clusterIP"
        cur = SB.admin.get(NS + "/services/web")
        ip = cur["spec"]["clusterIP"]
        new = "10.96.200.1" if ip != "10.96.200.1" else "10.96.200.2"
        cur["spec"]["clusterIP"] = new
        cur["spec"]["clusterIPs"] = [new]
        self.check("PUT", NS + "/services/web", cur, invalid("Service", "", "web", [
            ("FieldValueInvalid", 'Invalid value: []string{"%s"}: may not change once set' % new, "spec.clusterIPs[0]")]))
        # leaving clusterIP empty on update keeps the allocated one (as the real registry does)
        cur = SB.admin.get(NS + "/services/web")
        cur["spec"].pop("clusterIP")
        cur["spec"].pop("clusterIPs")
        st, out, _ = SB.admin.request("PUT", NS + "/services/web", cur)
        self.assertEqual((st, out["spec"]["clusterIP"]), (200, ip))


class Rbac(unittest.TestCase):
    def test_role_binding_with_resource_names(self):
        "Roles and RoleBindings grant the restricted user verbs on resources, subresources and resourceNames"
        SB.admin.create("/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", {
            "metadata": {"name": "svc-web"},
            "rules": [{"apiGroups": [""], "resources": ["services"], "resourceNames": ["web"],
                       "verbs": ["get", "patch"]},
                      {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "watch"]},
                      {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]})
        SB.admin.create("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", {
            "metadata": {"name": "svc-web"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "svc-web"},
            "subjects": [{"kind": "User", "name": "restricted"}]})
        r = SB.restricted
        self.assertEqual(r.request("GET", NS + "/services/web")[0], 200)
        self.assertEqual(r.request("PATCH", NS + "/services/web", {"metadata": {"labels": {"x": "y"}}},
                                   ctype="application/merge-patch+json")[0], 200)
        st, body, _ = r.request("DELETE", NS + "/services/web")
        self.assertEqual((st, body["message"]), (403, 'services "web" is forbidden: User "restricted" cannot delete '
                                                      'resource "services" in API group "" in the namespace "default"'))
        st, body, _ = r.request("GET", NS + "/services/other")
        self.assertEqual(st, 403)
        self.assertEqual(r.request("GET", APPS + "/deployments")[0], 200)
        st, body, _ = r.request("GET", APPS + "/deployments/web")
        self.assertEqual(st, 403)
        st, body, _ = r.request("GET", NS + "/pods/x")
        self.assertEqual(body["message"], 'pods "x" is forbidden: User "restricted" cannot get resource "pods" in API '
                                          'group "" in the namespace "default"')
        st, body, _ = r.request("GET", NS + "/pods/x/log")
        self.assertEqual((st, body["reason"]), (404, "NotFound"))
        out = SB.kubectl("get", "deployments", context="restricted").stdout
        self.assertIn("web", out)
        # kubectl auth can-i (SelfSubjectAccessReview / SelfSubjectRulesReview, protobuf bodies)
        can = lambda *a: SB.kubectl("auth", "can-i", *a, context="restricted", check=False)
        self.assertEqual((can("get", "services/web").stdout.strip(), can("get", "services/web").returncode), ("yes", 0))
        self.assertEqual(can("delete", "services/web").stdout.strip(), "no")
        self.assertEqual(can("get", "services/other").stdout.strip(), "no")
        self.assertEqual(can("get", "pods", "--subresource=log").stdout.strip(), "yes")
        self.assertEqual(can("get", "services/web", "-n", "kube-system").stdout.strip(), "no")
        self.assertEqual(SB.kubectl("auth", "can-i", "delete", "nodes").stdout.strip(), "yes")
        lst = can("--list").stdout
        self.assertRegex(lst, r"(?m)^services\s+\[\]\s+\[web\]\s+\[get patch\]$")


class PodSecurity(unittest.TestCase):
    MSG = ('violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "c" must set '
           'securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "c" must set '
           'securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "c" must set '
           'securityContext.runAsNonRoot=true), seccompProfile (pod or container "c" must set '
           'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')

    @classmethod
    def setUpClass(cls):
        SB.admin.create("/api/v1/namespaces", {"metadata": {"name": "locked", "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})

    def test_pod_refused(self):
        "a pod violating the restricted profile is refused with the real message"
        code, body = SB.curl("POST", "/api/v1/namespaces/locked/pods", pod("x"))
        self.assertEqual((code, body), (403, status(403, "Forbidden", 'pods "x" is forbidden: ' + self.MSG,
                                                    {"name": "x", "kind": "pods"})))

    def test_service_account_admission(self):
        "pods get the kube-api-access projected volume and mount; a missing service account is refused"
        code, body = SB.curl("POST", NS + "/pods", dict(pod("sa1"), spec=dict(pod("sa1")["spec"], serviceAccountName="nope")))
        self.assertEqual((code, body["message"]), (403, 'pods "sa1" is forbidden: error looking up service account '
                                                        'default/nope: serviceaccount "nope" not found'))
        out = SB.admin.create(NS + "/pods", pod("sa2"))
        vol = out["spec"]["volumes"][0]
        self.assertRegex(vol["name"], r"^kube-api-access-[a-z0-9]{5}$")
        self.assertEqual([list(s)[0] for s in vol["projected"]["sources"]],
                         ["serviceAccountToken", "configMap", "downwardAPI"])
        self.assertEqual(out["spec"]["containers"][0]["volumeMounts"],
                         [{"name": vol["name"], "readOnly": True,
                           "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}])
        p = pod("sa3")
        p["spec"]["automountServiceAccountToken"] = False
        self.assertNotIn("volumes", SB.admin.create(NS + "/pods", p)["spec"])

    def test_compliant_pod_admitted(self):
        "a compliant pod is admitted"
        p = pod("ok", allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]}, runAsNonRoot=True,
                seccompProfile={"type": "RuntimeDefault"})
        code, body = SB.curl("POST", "/api/v1/namespaces/locked/pods", p)
        self.assertEqual(code, 201, body)

    def test_deployment_warns_and_replicaset_fails(self):
        "a violating Deployment is admitted with a warning; its ReplicaSet cannot create pods"
        d = apilib.deployment("bad")
        d["spec"]["template"]["spec"]["containers"][0]["name"] = "c"
        st, _, resp = SB.admin.request("POST", "/apis/apps/v1/namespaces/locked/deployments", d)
        self.assertEqual(st, 201)
        self.assertEqual(resp.getheader("Warning"), '299 - "would ' + self.MSG.replace('"', '\\"') + '"')
        r = SB.kubectl("apply", "-n", "locked", "-f", "-", stdin=json.dumps(dict(d, metadata={"name": "bad2"})))
        self.assertIn('Warning: would ' + self.MSG, r.stderr)

        def failed():
            evs = SB.admin.get("/api/v1/namespaces/locked/events")["items"]
            return [e for e in evs if e.get("reason") == "FailedCreate"]
        evs = SB.wait_for(failed, what="FailedCreate event")
        self.assertIn("Error creating: pods", evs[0]["message"])
        self.assertIn(self.MSG, evs[0]["message"])


if __name__ == "__main__":
    tap.main()
