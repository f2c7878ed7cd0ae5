"""Garbage collector and namespace finalizer.

Runs in one thread, woken by store events (debounced). Each pass:
- background: a dependent whose every ownerReference names a uid that no longer
  exists is deleted (Background); dangling refs among live owners are removed;
- foreground: an owner with deletionTimestamp + finalizer foregroundDeletion gets
  its dependents deleted (Foreground when they have dependents themselves, else
  Background: pods terminate gracefully); when no dependent with
  blockOwnerDeletion is left the finalizer is removed;
- orphan: an owner with finalizer orphan gets its uid removed from its dependents'
  ownerReferences, then the finalizer is removed;
- namespaces being deleted have their content deleted, then the namespace goes.
"""
import threading

from . import errors as E


class GarbageCollector:
    def __init__(self, store):
        self.store = store
        self._wake = threading.Event()
        self._stop = False
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gc", daemon=True)
        store.subscribe(self._on_event)
        self._thread.start()

    def _on_event(self, typ, resource, obj):
        md = obj.get("metadata") or {}
        if typ == "DELETED" or md.get("deletionTimestamp") or md.get("ownerReferences"):
            self._idle.clear()
            self._wake.set()

    def stop(self):
        self._stop = True
        self._wake.set()
        self._thread.join(2)

    def wait_idle(self, timeout=5):
        return self._idle.wait(timeout)

    def _run(self):
        while not self._stop:
            self._wake.wait(1.0)
            if self._stop:
                return
            self._wake.clear()
            try:
                again = self.sweep()
            except Exception:
                import traceback
                traceback.print_exc()
                again = True
            if again:
                self._wake.set()
            else:
                self._idle.set()

    def sweep(self):
        """One pass. Returns True if something changed (so another pass may be needed)."""
        st = self.store
        metas = st.snapshot_meta()
        uids = {m["uid"]: (r, ns, name, m) for r, ns, name, m in metas}
        deps = {}
        for r, ns, name, m in metas:
            for ref in m.get("ownerReferences") or []:
                deps.setdefault(ref.get("uid"), []).append((r, ns, name, m, ref))
        changed = False
        for r, ns, name, m in metas:
            refs = m.get("ownerReferences") or []
            if not refs or m.get("deletionTimestamp"):
                continue
            alive = []
            for ref in refs:
                owner = uids.get(ref.get("uid"))
                # an owner must be in the same namespace (or cluster-scoped) to count
                if owner is not None and (owner[1] is None or owner[1] == ns):
                    alive.append(ref)
            if not alive:
                changed |= self._delete(r, ns, name, "Background")
            elif len(alive) != len(refs):
                keep = {a.get("uid") for a in alive}
                changed |= self._strip_refs(r, ns, name, keep)
        for r, ns, name, m in metas:
            if not m.get("deletionTimestamp"):
                continue
            fins = m.get("finalizers") or []
            mine = deps.get(m["uid"], [])
            if "orphan" in fins:
                for dr, dns, dname, dm, ref in mine:
                    keep = {x.get("uid") for x in dm.get("ownerReferences") or [] if x.get("uid") != m["uid"]}
                    changed |= self._strip_refs(dr, dns, dname, keep)
                changed |= self._remove_finalizer(r, ns, name, "orphan")
            elif "foregroundDeletion" in fins:
                blocking = False
                for dr, dns, dname, dm, ref in mine:
                    if not dm.get("deletionTimestamp"):
                        # as the real collector (attemptToDeleteItem): Foreground
                        # for a dependent that has dependents of its own, else
                        # Background, so a pod is deleted gracefully (preStop, grace
                        # period) and stays, blocking its owner, until the kubelet
                        # removes it
                        changed |= self._delete(dr, dns, dname, "Foreground" if deps.get(dm["uid"]) else "Background")
                    if ref.get("blockOwnerDeletion"):
                        blocking = True
                if not blocking:
                    changed |= self._remove_finalizer(r, ns, name, "foregroundDeletion")
            if r == "namespaces":
                content = [(cr, cns, cname, cm) for cr, cns, cname, cm in metas if cns == name and cr != "namespaces"]
                for cr, cns, cname, cm in content:
                    if not cm.get("deletionTimestamp"):
                        changed |= self._delete(cr, cns, cname, "Background")
                if not content:
                    changed |= self._finalize_namespace(name)
        return changed

    def _delete(self, r, ns, name, prop):
        try:
            self.store.delete_ex(r, ns, name, prop)
            return True
        except E.ApiError:
            return False

    def _filter_metadata_list(self, r, ns, name, field, keep):
        """Keeps the items of metadata[field] for which keep(item) holds, dropping the
        field when none is left (as the API server does for an empty list); True when
        the object was written, False when it is gone or the write was refused."""
        def fn(o):
            kept = [x for x in o["metadata"].get(field) or [] if keep(x)]
            if kept:
                o["metadata"][field] = kept
            else:
                o["metadata"].pop(field, None)
            o["metadata"].pop("resourceVersion", None)
        try:
            self.store.modify(r, ns, name, fn)
            return True
        except E.ApiError:
            return False

    def _strip_refs(self, r, ns, name, keep_uids):
        return self._filter_metadata_list(r, ns, name, "ownerReferences", lambda ref: ref.get("uid") in keep_uids)

    def _remove_finalizer(self, r, ns, name, fin):
        return self._filter_metadata_list(r, ns, name, "finalizers", lambda f: f != fin)

    def _finalize_namespace(self, name):
        try:
            self.store.finalize_namespace(name)
            return True
        except E.ApiError:
            return False
