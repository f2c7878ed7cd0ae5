"""EndpointSlices: keeps discovery.k8s.io/v1 EndpointSlices in step with core/v1 Endpoints.

kubectl describe service (v1.32) reads EndpointSlices labelled
kubernetes.io/service-name=<svc>. For each Service that has Endpoints: one
slice per Endpoints subset, named <svc>-<5 random chars>, owned by the Service,
managed-by the EndpointSlice controller (Services with a selector) or the
mirroring controller (Services without one), as in a real cluster.
When a Service is deleted, its Endpoints are deleted too (the real endpoints
controller's job; the node's endpoints controller leaves it to the API side).
"""
import queue
import threading

from . import errors as E

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"


class Mirror:
    def __init__(self, store):
        self.store = store
        self.q = queue.Queue()
        self._stop = False
        store.subscribe(self._on_event)
        self._t = threading.Thread(target=self._run, name="endpointslices", daemon=True)
        self._t.start()

    def _on_event(self, typ, resource, obj):
        if resource in ("endpoints", "services"):
            md = obj["metadata"]
            self.q.put((md.get("namespace"), md["name"], typ == "DELETED" and resource == "services"))

    def stop(self):
        self._stop = True
        self.q.put(None)
        self._t.join(2)

    def _run(self):
        while not self._stop:
            item = self.q.get()
            if item is None:
                return
            try:
                ns, name, service_gone = item
                if service_gone and self.store.get("services", ns, name) is None:
                    # as the endpoints controller does: the Endpoints go with their Service
                    self.store.delete("endpoints", ns, name)
                self.sync(ns, name)
            except E.ApiError:
                pass
            except Exception:
                import traceback
                traceback.print_exc()

    def desired(self, ns, name):
        ep = self.store.get("endpoints", ns, name)
        svc = self.store.get("services", ns, name)
        if ep is None or svc is None:
            return None     # slices exist for Services only
        slices = []
        subsets = ep.get("subsets") or [{}]
        for ss in subsets:
            eps = []
            for a, ready in [(a, True) for a in ss.get("addresses") or []] + \
                            [(a, False) for a in ss.get("notReadyAddresses") or []]:
                e = {"addresses": [a.get("ip")], "conditions": {"ready": ready, "serving": ready, "terminating": False}}
                if a.get("nodeName"):
                    e["nodeName"] = a["nodeName"]
                if a.get("targetRef"):
                    e["targetRef"] = {k: v for k, v in a["targetRef"].items()
                                      if k in ("kind", "name", "namespace", "uid")}
                eps.append(e)
            ports = None
            if ss.get("ports"):
                ports = [{k: p[k] for k in ("name", "port", "protocol", "appProtocol") if k in p}
                         for p in ss["ports"]]
                for p in ports:
                    p.setdefault("name", "")
            slices.append({"addressType": "IPv4", "endpoints": eps, "ports": ports})
        labels = {"kubernetes.io/service-name": name,
                  MANAGED_BY: "endpointslice-controller.k8s.io" if (svc.get("spec") or {}).get("selector")
                  else "endpointslicemirroring-controller.k8s.io"}
        owner = [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc["metadata"]["uid"],
                  "controller": True, "blockOwnerDeletion": True}]
        return slices, labels, owner

    def sync(self, ns, name):
        st = self.store
        have = [s for s in st.list("endpointslices", ns, {"kubernetes.io/service-name": name})
                if (s["metadata"].get("labels") or {}).get(MANAGED_BY, "").startswith("endpointslice")]
        want = self.desired(ns, name)
        if want is None:
            for s in have:
                st.delete("endpointslices", ns, s["metadata"]["name"])
            return
        slices, labels, owner = want
        for i, body in enumerate(slices):
            if i < len(have):
                cur = have[i]
                new = dict(cur)
                new["metadata"] = dict(cur["metadata"], labels=labels, ownerReferences=owner)
                new.update(body)
                if body["ports"] is None:
                    new.pop("ports", None)
                if new != cur:
                    st.update("endpointslices", ns, new)
            else:
                md = {"generateName": name + "-", "labels": labels,
                      "annotations": {"endpoints.kubernetes.io/last-change-trigger-time":
                                      __import__("datetime").datetime.now(__import__("datetime").timezone.utc)
                                      .strftime("%Y-%m-%dT%H:%M:%SZ")}}
                md["ownerReferences"] = owner
                obj = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": md}
                obj.update({k: v for k, v in body.items() if v is not None})
                st.create("endpointslices", ns, obj)
        for s in have[len(slices):]:
            st.delete("endpointslices", ns, s["metadata"]["name"])
